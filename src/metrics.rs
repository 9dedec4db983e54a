//! The process's operational metrics, served by `GET /metrics` in the Prometheus text
//! exposition format (issue "a server operators can run"; format: prometheus.io "Exposition
//! formats", text 0.0.4).
//!
//! One process-wide set of instruments, because Prometheus scrapes a process: every layer
//! records into it without being handed anything (the writer its batches, the audit trail its
//! disclosures, the notifier its posts). Labels come from closed sets only — the matched route
//! pattern (never the path: paths carry NHS numbers), the method among the standard ones, the
//! status code, a refusal reason's code — so no label can carry personal data and no caller can
//! grow the set of series.
//!
//! Figures that live in the database (the notification backlog and its lag) are read when
//! scraped, by the handler, and set into gauges here just before rendering.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every instrument, registered once.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    writer_batch_jobs: Histogram,
    writer_commit_seconds: Histogram,
    writer_conflicts: IntCounterVec,
    disclosures: IntCounterVec,
    refusals: IntCounterVec,
    notifications: IntCounterVec,
    lifecycle_runs: IntCounterVec,
    bulk_jobs: IntCounterVec,
    bulk_queued: IntGauge,
    /// Set at scrape time.
    pub notification_backlog: IntGaugeVec,
    pub notification_lag_seconds: IntGaugeVec,
    pub subscriptions: IntGaugeVec,
    pub resident_bytes: IntGauge,
}

/// Latency buckets from half a millisecond (a look-up's p50) to ten seconds (a large Bundle).
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| match Metrics::new() {
    Ok(m) => Some(m),
    Err(e) => {
        // Only a programming error (a duplicate or malformed name) gets here; the server
        // serves without metrics rather than not at all.
        log::error!("metrics are off: {e}");
        None
    }
});

/// The process's instruments (none if they could not be registered, which the log says).
pub fn get() -> Option<&'static Metrics> {
    METRICS.as_ref()
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> prometheus::Result<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let r = Registry::new_custom(Some("cpis".into()), None)?;
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from a request's arrival to its response, by route pattern.",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
            &["route"],
        )?;
        r.register(Box::new(http_seconds.clone()))?;
        let resident_bytes = IntGauge::new(
            "process_resident_memory_bytes",
            "Resident memory of the server process.",
        )?;
        r.register(Box::new(resident_bytes.clone()))?;
        let bulk_queued = IntGauge::new(
            "bulk_lane_jobs_waiting",
            "Bulk lane jobs (Bundles being read, checked or answered; access reports) queued or running.",
        )?;
        r.register(Box::new(bulk_queued.clone()))?;
        Ok(Self {
            bulk_jobs: counter(
                &r,
                "bulk_lane_jobs_total",
                "Bulk lane jobs finished, by the priority their thread ran at (lowest, or normal where it could not be lowered or bulk_low_priority is false).",
                &["priority"],
            )?,
            bulk_queued,
            http_requests: counter(
                &r,
                "http_requests_total",
                "Requests answered, by route pattern, method and status.",
                &["route", "method", "status"],
            )?,
            http_seconds,
            writer_batch_jobs: histogram(
                &r,
                "writer_batch_jobs",
                "Jobs committed together in one writer transaction (group commit).",
                BATCH_BUCKETS,
            )?,
            writer_commit_seconds: histogram(
                &r,
                "writer_commit_seconds",
                "Time the writer's COMMIT took (the durable flush).",
                SECONDS_BUCKETS,
            )?,
            writer_conflicts: counter(
                &r,
                "writer_conflict_retries_total",
                "Writes run again after losing a conflict with a concurrent transaction (a PostgreSQL deadlock or serialisation failure).",
                &[],
            )?,
            disclosures: counter(
                &r,
                "audited_disclosures_total",
                "Audited reads of children's records, by purpose and whether a plan was shown.",
                &["purpose", "found"],
            )?,
            refusals: counter(
                &r,
                "auth_refusals_total",
                "Refused authentications, by reason.",
                &["reason"],
            )?,
            notifications: counter(
                &r,
                "notifications_total",
                "Notification posts to councils, by outcome (delivered, failed).",
                &["outcome"],
            )?,
            lifecycle_runs: counter(
                &r,
                "lifecycle_runs_total",
                "Record lifecycle runs, by trigger and outcome (changed, unchanged, skipped, failed).",
                &["trigger", "outcome"],
            )?,
            notification_backlog: gauge(
                &r,
                "notification_backlog_events",
                "Events not yet acknowledged by the subscribing council, by subscription status (outbox rows not yet numbered under status \"outbox\").",
                &["status"],
            )?,
            notification_lag_seconds: gauge(
                &r,
                "notification_lag_seconds",
                "Age of the oldest event not yet acknowledged, by subscription status.",
                &["status"],
            )?,
            subscriptions: gauge(
                &r,
                "subscriptions",
                "Subscriptions, by status.",
                &["status"],
            )?,
            resident_bytes,
            registry: r,
        })
    }

    /// Everything, in the text exposition format.
    pub fn render(&self) -> Result<String, String> {
        if let Some(rss) = resident_bytes() {
            self.resident_bytes.set(rss);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

/// A method label from a closed set: a caller may send any token as a method.
fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("OTHER")
}

/// One answered request. `route` is the matched pattern (`/Flag/{id}`), never the path.
pub fn http(route: &str, method: &str, status: u16, took: Duration) {
    if let Some(m) = get() {
        m.http_requests
            .with_label_values(&[route, method_label(method), &status.to_string()])
            .inc();
        m.http_seconds
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }
}

/// One committed (or failed) writer batch.
pub fn writer_batch(jobs: usize, commit: Duration) {
    if let Some(m) = get() {
        m.writer_batch_jobs.observe(jobs as f64);
        m.writer_commit_seconds.observe(commit.as_secs_f64());
    }
}

/// A write run again after it lost a conflict.
pub fn writer_conflict() {
    if let Some(m) = get() {
        m.writer_conflicts.with_label_values(&[] as &[&str]).inc();
    }
}

/// One audited disclosure (an unscheduled or a scheduled read; whether it showed a plan).
pub fn disclosure(unscheduled: bool, found: bool) {
    if let Some(m) = get() {
        m.disclosures
            .with_label_values(&[
                if unscheduled {
                    "unscheduled"
                } else {
                    "scheduled"
                },
                if found { "true" } else { "false" },
            ])
            .inc();
    }
}

/// One refused authentication; `reason` is the refusal's code (a fixed set).
pub fn refusal(reason: &'static str) {
    if let Some(m) = get() {
        m.refusals.with_label_values(&[reason]).inc();
    }
}

/// One notification post.
pub fn notification(delivered: bool) {
    if let Some(m) = get() {
        m.notifications
            .with_label_values(&[if delivered { "delivered" } else { "failed" }])
            .inc();
    }
}

/// Jobs handed to the bulk lane (+1), or taken back because it had stopped (−1).
pub fn bulk_waiting(change: i64) {
    if let Some(m) = get() {
        m.bulk_queued.add(change);
    }
}

/// A bulk lane job finished on a thread running at `priority` (`lowest` or `normal`).
pub fn bulk_finished(priority: &'static str) {
    if let Some(m) = get() {
        m.bulk_queued.dec();
        m.bulk_jobs.with_label_values(&[priority]).inc();
    }
}

/// One lifecycle run.
pub fn lifecycle_run(trigger: &'static str, outcome: &'static str) {
    if let Some(m) = get() {
        m.lifecycle_runs
            .with_label_values(&[trigger, outcome])
            .inc();
    }
}

/// The process's resident set, from `/proc` (Linux); none elsewhere.
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_outside_the_standard_set_is_counted_as_other() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PROPFIND"), "OTHER");
        assert_eq!(method_label("get"), "OTHER");
    }

    #[test]
    fn the_rendering_names_every_instrument_with_the_cpis_prefix() {
        http("/Flag", "GET", 200, Duration::from_millis(1));
        writer_batch(3, Duration::from_millis(2));
        let text = get().unwrap().render().unwrap();
        assert!(
            text.contains(
                "cpis_http_requests_total{method=\"GET\",route=\"/Flag\",status=\"200\"}"
            ),
            "{text}"
        );
        assert!(text.contains("cpis_writer_batch_jobs_bucket"), "{text}");
        assert!(
            text.contains("# TYPE cpis_http_request_duration_seconds histogram"),
            "{text}"
        );
    }
}
