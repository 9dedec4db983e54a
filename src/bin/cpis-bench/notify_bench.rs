//! The notification side of the look-up benchmark: a webhook receiver for every council.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use cpis_fhir::api::subscription::new_row;
use cpis_fhir::error::ApiError;
use cpis_fhir::fhir::subscription::SubscriptionInput;
use cpis_fhir::store::{self, subscriptions, Store};

/// What the receiver saw: per event, the lag from the look-up's commit to receipt (µs).
#[derive(Default)]
struct Seen {
    lags: Vec<i64>,
    posts: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

pub struct Receiver {
    seen: Arc<Mutex<Seen>>,
    since: i64,
}

pub struct Figures {
    events: usize,
    expected: i64,
    posts: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Figures {
    pub fn print(&self) {
        println!(
            "notifications expected {} (an event per notifiable look-up per council)",
            self.expected
        );
        println!(
            "notifications received {} in {} webhook posts",
            self.events, self.posts
        );
        println!("notifications/s        {:.0}", self.per_second);
        println!("notification lag p50   {:.1} ms", self.p50_ms);
        println!("notification lag p99   {:.1} ms", self.p99_ms);
        println!("notification lag max   {:.1} ms", self.max_ms);
        println!(
            "all delivered          {}",
            if self.events as i64 == self.expected {
                "yes"
            } else {
                "NO"
            }
        );
    }
}

/// Subscribes every council (replacing earlier bench subscriptions) to a receiver on
/// 127.0.0.1:`port`, started here.
pub fn subscribe_all(db: &str, port: u16) -> Result<Receiver, String> {
    let store = Store::open(db, 1)?;
    let now = store::micros(chrono::Utc::now());
    store
        .write_blocking(move |c| {
            for s in subscriptions::list(c, None)? {
                subscriptions::delete(c, &s.id)?;
            }
            for council in store::councils::all(c)? {
                let input = SubscriptionInput {
                    status: cpis_fhir::domain::SubscriptionStatus::Requested,
                    reason: "benchmark".into(),
                    end_at: None,
                    council: Some(council.ods_code.clone()),
                    endpoint: format!("http://127.0.0.1:{port}/{}", council.ods_code),
                    headers: Vec::new(),
                    content: "id-only".into(),
                    heartbeat_secs: None,
                    timeout_secs: 10,
                    max_count: 100,
                    secret: None,
                };
                let row = new_row(
                    uuid::Uuid::new_v4().to_string(),
                    council.ods_code,
                    input,
                    "b".repeat(64),
                    now,
                );
                subscriptions::insert(c, &row)?;
            }
            Ok::<_, ApiError>(())
        })
        .map_err(|e| e.to_string())?;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let sink = seen.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        let result = system.block_on(async move {
            let server = HttpServer::new(move || {
                let sink = sink.clone();
                App::new()
                    .app_data(web::PayloadConfig::new(16 << 20))
                    .default_service(web::to(move |body: web::Bytes| {
                        let sink = sink.clone();
                        async move {
                            record(&sink, &body);
                            HttpResponse::Ok().finish()
                        }
                    }))
            })
            .workers(1)
            .bind(("127.0.0.1", port))?
            .run();
            let _ = ready_tx.send(());
            server.await
        });
        if let Err(e) = result {
            eprintln!("notification receiver: {e}");
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the notification receiver did not start".to_owned())?;
    Ok(Receiver { seen, since: now })
}

fn record(seen: &Mutex<Seen>, body: &[u8]) {
    let received = store::micros(chrono::Utc::now());
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let mut lags = Vec::new();
    for p in v["entry"][0]["resource"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if p["name"] != "notification-event" {
            continue;
        }
        let at = p["part"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["name"] == "timestamp")
            .and_then(|x| x["valueInstant"].as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros());
        if let Some(at) = at {
            lags.push(received - at);
        }
    }
    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
    s.posts += 1;
    if !lags.is_empty() {
        let now = Instant::now();
        s.first.get_or_insert(now);
        s.last = Some(now);
        s.lags.extend(lags);
    }
}

impl Receiver {
    /// Waits (at most `limit`) until every event given out has been received, then reports.
    pub fn drain(self, db: &str, limit: Duration) -> Result<Figures, String> {
        let store = Store::open(db, 1)?;
        let deadline = Instant::now() + limit;
        let expected = loop {
            let (pending, given) = store
                .read_blocking(|c| {
                    let pending = subscriptions::outbox_len(c)?;
                    // Counted from the audit trail, not from the worker's own numbering.
                    let given: i64 = store::audit::listed_councils_since(c, self.since)?
                        .iter()
                        .map(|cs| cs.split_whitespace().count() as i64)
                        .sum();
                    Ok((pending, given))
                })
                .map_err(|e: store::StoreError| e.to_string())?;
            let received = self
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .lags
                .len() as i64;
            if (pending == 0 && received >= given) || Instant::now() > deadline {
                break given;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut lags = s.lags.clone();
        lags.sort_unstable();
        let pct = |p: f64| -> f64 {
            let idx = ((lags.len() as f64 - 1.0) * p).round() as usize;
            lags.get(idx).copied().unwrap_or(0) as f64 / 1000.0
        };
        let span = match (s.first, s.last) {
            (Some(a), Some(b)) => (b - a).as_secs_f64().max(1e-3),
            _ => 1.0,
        };
        Ok(Figures {
            events: lags.len(),
            expected,
            posts: s.posts,
            per_second: lags.len() as f64 / span,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
        })
    }
}
