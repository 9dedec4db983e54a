//! The delivery worker for councils' subscriptions (issue "Council notifications"; DESIGN.md
//! "The disclosure path": a durable outbox delivered at least once, in order, surviving
//! restarts; Subscriptions R5 Backport IG for R4: handshake, heartbeat, event-notification).
//!
//! One [`Notifier::step`] does all the work there is right now, and is what the tests call:
//! 1. numbers the outbox rows into per-subscription events (the outbox row was written by the
//!    same statement as the AuditEvent, so nothing committed is missed);
//! 2. switches off subscriptions past their `end`, and leases those with work (a handshake due,
//!    undelivered events, a heartbeat due) to this worker — a lease, not a lock, so a crashed
//!    worker's subscriptions are taken over when it expires;
//! 3. posts one signed notification per leased subscription, concurrently, each with the next
//!    events in number order (at most the subscription's max-count);
//! 4. records each outcome: acknowledged events are done; a failure keeps every event and
//!    schedules the next attempt with exponential back-off (persisted, so a restart keeps it);
//!    after `error_after` failures in a row the status is `error`, and the next success makes it
//!    `active` again. Nothing is dropped until the council turns the subscription off or its
//!    `end` passes, and even then the events stay readable through `$events`.
//!
//! [`start`] runs steps on a thread of its own: soon after a look-up reports a new notifiable
//! access ([`Wake`]; accesses gather for 20 ms so a busy server posts in batches), otherwise
//! every `interval` (retries and heartbeats).

pub mod endpoint;
pub mod signature;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{join_all, select, Either};

use crate::config::Settings;
use crate::domain::Clock;
use crate::fhir::subscription::{self as payload, Kind, SIGNATURE_HEADER};
use crate::store::subscriptions::{self, Attempt, Claimed};
use crate::store::StoreError;
use crate::store::{micros, Store};

/// Outbox rows numbered per writer job.
const FAN_OUT_BATCH: i64 = 2_000;
/// A lease lasts the subscription's own post timeout (1–60 s) and this much more, for the
/// recording after the post: long enough that a live worker never loses it mid-delivery, short
/// enough that a replica killed mid-delivery holds its subscriptions up for well under a minute
/// (another worker then sends the same events again; receivers de-duplicate by event number).
const LEASE_MARGIN_MICROS: i64 = 30 * 1_000_000;

/// Subscriptions leased per step.
const CLAIM_BATCH: i64 = 256;
/// After a wake-up, how long the worker lets accesses gather before it steps: under load this
/// turns one step (and one webhook post) per look-up into one per council per 20 ms, for 20 ms
/// of added lag.
const GATHER: Duration = Duration::from_millis(20);

/// Lets the look-up wake the worker as soon as it has committed a notifiable access.
#[derive(Clone, Default)]
pub struct Wake(Arc<tokio::sync::Notify>);

impl Wake {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Back-off and error thresholds, from the settings.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Failures in a row after which the subscription shows `error`.
    pub error_after: i64,
}

impl Policy {
    pub fn of(settings: &Settings) -> Self {
        Self {
            backoff_base: settings.notify_backoff_base,
            backoff_cap: settings.notify_backoff_cap,
            error_after: settings.notify_error_after,
        }
    }

    /// The wait before attempt `failures + 1`: base × 2^(failures − 1), at most the cap.
    pub fn delay(&self, failures: i64) -> Duration {
        let exp = u32::try_from(failures.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.backoff_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.backoff_cap)
    }
}

/// What one step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Outbox rows numbered into events.
    pub fanned_out: usize,
    /// Notifications acknowledged by their endpoints (handshakes and heartbeats included).
    pub delivered: usize,
    /// Events those notifications carried.
    pub events_delivered: usize,
    pub failed: usize,
}

#[derive(Clone)]
pub struct Notifier {
    store: Store,
    clock: Clock,
    base_url: String,
    policy: Policy,
    endpoints: endpoint::EndpointRule,
    /// This worker's lease owner id: unique per process and start.
    owner: String,
    pub wake: Wake,
    /// Beats after every round that reached the database: readiness reports a worker that
    /// has stopped beating as stalled.
    pub heartbeat: crate::tasks::Heartbeat,
}

impl Notifier {
    pub fn new(store: Store, clock: Clock, settings: &Settings) -> Self {
        Self {
            store,
            clock,
            base_url: settings.base_url.clone(),
            policy: Policy::of(settings),
            endpoints: endpoint::EndpointRule::of(settings),
            owner: uuid::Uuid::new_v4().to_string(),
            wake: Wake::default(),
            heartbeat: crate::tasks::Heartbeat::default(),
        }
    }

    /// A second worker over the same store (another thread or, over PostgreSQL, another
    /// replica would be one): it has its own lease owner id.
    pub fn another(&self) -> Self {
        Self {
            owner: uuid::Uuid::new_v4().to_string(),
            heartbeat: crate::tasks::Heartbeat::default(),
            ..self.clone()
        }
    }

    /// The HTTP client the worker posts with (per thread: awc clients are not `Send`).
    pub fn client() -> awc::Client {
        awc::Client::builder()
            .disable_redirects()
            .timeout(Duration::from_secs(60))
            .finish()
    }

    fn now(&self) -> i64 {
        micros((self.clock)())
    }

    /// Does all the work there is now (see the module documentation).
    pub async fn step(&self, client: &awc::Client) -> Result<Report, StoreError> {
        let mut report = Report::default();
        loop {
            let waiting = self
                .store
                .read(|c| Ok::<_, StoreError>(subscriptions::outbox_waiting(c)?))
                .await?;
            if !waiting {
                break;
            }
            let n = self
                .store
                .write(|c| Ok::<_, StoreError>(subscriptions::fan_out(c, FAN_OUT_BATCH)?))
                .await?;
            report.fanned_out += n;
            if n < FAN_OUT_BATCH as usize {
                break;
            }
        }
        let now = self.now();
        let due = self
            .store
            .read(move |c| Ok::<_, StoreError>(subscriptions::any_due(c, now)?))
            .await?;
        if !due {
            return Ok(report);
        }
        let owner = self.owner.clone();
        let claimed = self
            .store
            .write(move |c| {
                Ok::<_, StoreError>(subscriptions::claim(
                    c,
                    &owner,
                    now,
                    LEASE_MARGIN_MICROS,
                    CLAIM_BATCH,
                )?)
            })
            .await?;
        if claimed.is_empty() {
            return Ok(report);
        }
        let outcomes = join_all(claimed.into_iter().map(|c| self.deliver(client, c))).await;
        let done = self.now();
        for (claimed, attempt) in &outcomes {
            match attempt {
                Attempt::Delivered { .. } => {
                    crate::metrics::notification(true);
                    report.delivered += 1;
                    report.events_delivered += claimed.events.len();
                }
                Attempt::Failed { error, .. } => {
                    crate::metrics::notification(false);
                    report.failed += 1;
                    log::warn!(
                        "notification to subscription {} failed: {error}",
                        claimed.row.id
                    );
                }
            }
        }
        let owner = self.owner.clone();
        self.store
            .write(move |c| {
                for (claimed, attempt) in &outcomes {
                    subscriptions::record(c, &claimed.row, &owner, done, attempt)?;
                }
                Ok::<_, StoreError>(())
            })
            .await?;
        Ok(report)
    }

    /// Posts one notification and says how it went.
    async fn deliver(&self, client: &awc::Client, claimed: Claimed) -> (Claimed, Attempt) {
        let row = &claimed.row;
        let kind = if subscriptions::needs_handshake(row) {
            Kind::Handshake
        } else if claimed.events.is_empty() {
            Kind::Heartbeat
        } else {
            Kind::EventNotification
        };
        let now = self.now();
        let body = payload::notification(
            &self.base_url,
            row,
            kind,
            &claimed.events,
            &row.content,
            now,
        );
        let result = self.post(client, row, &body).await;
        let attempt = match result {
            Ok(()) => Attempt::Delivered {
                through: claimed.events.last().map_or(0, |e| e.event_number),
            },
            Err(error) => {
                let failures = row.attempts + 1;
                let wait =
                    i64::try_from(self.policy.delay(failures).as_micros()).unwrap_or(i64::MAX);
                Attempt::Failed {
                    error: format!("{} notification: {error}", kind.code()),
                    retry_at: now.saturating_add(wait),
                    give_error: failures >= self.policy.error_after,
                }
            }
        };
        (claimed, attempt)
    }

    async fn post(
        &self,
        client: &awc::Client,
        row: &subscriptions::SubscriptionRow,
        body: &serde_json::Value,
    ) -> Result<(), String> {
        // Stored under the rule of its day; posted only where today's allows.
        endpoint::check(&row.endpoint, self.endpoints)
            .map_err(|why| format!("the endpoint is not allowed: {why}"))?;
        let bytes = serde_json::to_vec(body).map_err(|e| format!("cannot render: {e}"))?;
        let signature =
            signature::sign(&row.secret, &bytes).map_err(|e| format!("cannot sign: {e}"))?;
        let mut req = client
            .post(&row.endpoint)
            .timeout(Duration::from_secs(
                u64::try_from(row.timeout_secs).unwrap_or(10),
            ))
            .insert_header(("Content-Type", "application/fhir+json"))
            .insert_header((SIGNATURE_HEADER, signature));
        for h in row.headers.iter() {
            if let Some((name, value)) = h.split_once(':') {
                req = req.insert_header((name.trim(), value.trim()));
            }
        }
        let mut res = req
            .send_body(bytes)
            .await
            .map_err(|e| format!("the endpoint could not be reached: {e}"))?;
        // Read (a bounded part of) the answer so the connection can be reused.
        let _ = res.body().limit(64 * 1024).await;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "the endpoint answered HTTP {}",
                res.status().as_u16()
            ))
        }
    }
}

/// The notification worker's thread: delivers until `stop` is set, between rounds — a post in
/// progress is finished (or times out) first. Wake it with [`Wake::wake`] after setting `stop`.
pub fn run_worker(stop: crate::tasks::Stop, notifier: Notifier, interval: Duration) {
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let client = Notifier::client();
        while !stop.is_set() {
            let busy = match notifier.step(&client).await {
                Ok(r) => {
                    notifier.heartbeat.beat();
                    r.fanned_out > 0 || r.delivered > 0
                }
                Err(e) => {
                    log::error!("notification worker: {e}");
                    false
                }
            };
            if stop.is_set() {
                return;
            }
            if !busy {
                let woken = notifier.wake.0.notified();
                let sleep = actix_web::rt::time::sleep(interval);
                futures_util::pin_mut!(woken, sleep);
                match select(woken, sleep).await {
                    Either::Left(_) | Either::Right(_) => {}
                }
            }
            actix_web::rt::time::sleep(GATHER).await;
        }
    });
}
