//! The operators' surface beside the FHIR API: `GET /health/live`, `GET /health/ready` and
//! `GET /metrics` (README "Running it in production").
//!
//! None of these needs a bearer token or speaks FHIR: a load balancer or an orchestrator probes
//! health in plain JSON (shaped after the IETF draft "Health Check Response Format for HTTP
//! APIs": a top-level `status` of `pass` or `fail` and one entry per check), and Prometheus
//! scrapes metrics in its text format. Neither answer holds personal data. Metrics need the
//! configured scrape token, or come only to callers on the loopback interface.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use crate::middleware::NotFhir;
use crate::state::AppState;

/// The longest a readiness check waits on the database or the writer before it fails: a load
/// balancer probes every few seconds and must get an answer within its own timeout.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the notification worker may go without finishing a round before it counts as
/// stalled: a round may wait out a council's 60-second post timeout and then record it.
const NOTIFIER_STALL: Duration = Duration::from_secs(180);

fn plain(status: StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    let mut res = HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .body(body);
    res.extensions_mut().insert(NotFhir);
    res
}

fn health(status: StatusCode, body: Value) -> HttpResponse {
    plain(status, "application/health+json", body.to_string())
}

/// `GET /health/live`: the process is up and its HTTP workers answer. Nothing else is checked:
/// an orchestrator restarts a process that fails this, and a database outage is not cured by a
/// restart.
pub async fn live() -> HttpResponse {
    health(StatusCode::OK, json!({"status": "pass"}))
}

fn check(ok: bool, extra: Value) -> (bool, Value) {
    let mut v = Map::new();
    v.insert("status".into(), json!(if ok { "pass" } else { "fail" }));
    if let Value::Object(m) = extra {
        v.extend(m);
    }
    (ok, Value::Object(v))
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// `GET /health/ready`: whether this replica should be sent traffic — 200 when every check
/// passes, 503 otherwise, each check named with what it observed.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    // Anyone may probe, and a probe costs a read and a commit: answers are reused for a second,
    // so a flood of probes costs one check a second (a draining server answers at once).
    let draining = state.draining.load(std::sync::atomic::Ordering::SeqCst);
    if !draining {
        if let Some((status, body)) = state.readiness.fresh(PROBE_REUSE) {
            return health(status, body);
        }
    }
    let (status, body) = check_readiness(&state).await;
    state.readiness.keep(status, body.clone());
    health(status, body)
}

/// How long a readiness answer is reused.
const PROBE_REUSE: Duration = Duration::from_secs(1);

async fn check_readiness(state: &AppState) -> (StatusCode, Value) {
    let mut checks = Map::new();
    let mut all = true;
    let mut warned = false;
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        all = false;
        checks.insert(
            "draining".into(),
            json!({"status": "fail", "output": "stopping: send this replica no new requests"}),
        );
    }
    let mut put = |name: &str, (ok, v): (bool, Value)| {
        all &= ok;
        checks.insert(name.to_owned(), v);
    };

    let started = std::time::Instant::now();
    match actix_web::rt::time::timeout(CHECK_TIMEOUT, state.store.probe_read()).await {
        Ok(Ok(pending)) => {
            put(
                "database",
                check(true, json!({"timeMs": millis(started.elapsed())})),
            );
            put(
                "migrations",
                check(
                    !pending,
                    if pending {
                        json!({"output": "migrations are pending: run `cpis-fhir migrate`"})
                    } else {
                        json!({})
                    },
                ),
            );
        }
        Ok(Err(e)) => {
            log::warn!("readiness: the database check failed: {e}");
            put(
                "database",
                check(
                    false,
                    json!({"output": "the database did not answer a read"}),
                ),
            );
            put(
                "migrations",
                check(false, json!({"output": "unknown: no database"})),
            );
        }
        Err(_) => {
            put(
                "database",
                check(
                    false,
                    json!({"output": format!("no answer within {} s", CHECK_TIMEOUT.as_secs())}),
                ),
            );
            put(
                "migrations",
                check(false, json!({"output": "unknown: no database"})),
            );
        }
    }

    let started = std::time::Instant::now();
    let writer = match actix_web::rt::time::timeout(CHECK_TIMEOUT, state.store.probe_writer()).await
    {
        Ok(Ok(())) => check(true, json!({"timeMs": millis(started.elapsed())})),
        Ok(Err(e)) => {
            log::warn!("readiness: the writer check failed: {e}");
            check(false, json!({"output": "the writer could not commit"}))
        }
        Err(_) => check(
            false,
            json!({"output": format!("no commit within {} s", CHECK_TIMEOUT.as_secs())}),
        ),
    };
    put("writer", writer);

    let keys = state.verifier.key_count();
    let issuers = state.trust.status();
    let keyless: Vec<String> = issuers
        .iter()
        .filter(|i| !i.has_keys)
        .map(|i| match &i.failure {
            Some(f) => format!("{} ({f})", i.issuer),
            None => i.issuer.clone(),
        })
        .collect();
    let stale: Vec<String> = issuers
        .iter()
        .filter(|i| i.has_keys)
        .filter_map(|i| i.failure.as_ref().map(|f| format!("{}: {f}", i.issuer)))
        .collect();
    let (ok, mut v) = check(
        keys > 0 && keyless.is_empty(),
        json!({"observedValue": keys, "observedUnit": "trusted keys"}),
    );
    if !keyless.is_empty() {
        v["output"] = json!(format!("no keys for {}", keyless.join(", ")));
    } else if !stale.is_empty() {
        // Still serving with the last good keys: healthy, with a concern.
        v["status"] = json!("warn");
        warned = true;
        v["output"] = json!(format!(
            "refresh failing, last good keys kept: {}",
            stale.join("; ")
        ));
    }
    put("keys", (ok, v));

    let notifier = match state.settings.notify_interval {
        None => check(true, json!({"output": "off (notify_interval_ms = 0)"})),
        Some(every) => {
            let beat = &state.notifier.heartbeat;
            let ago = beat.since().unwrap_or_else(|| beat.age());
            let limit = NOTIFIER_STALL + every * 3;
            let (ok, v) = check(
                ago <= limit,
                json!({
                    "observedValue": ago.as_secs(),
                    "observedUnit": "s since its last round",
                }),
            );
            let mut v = v;
            if !ok {
                v["output"] = json!(format!("no round finished for over {} s", limit.as_secs()));
            }
            (ok, v)
        }
    };
    put("notifier", notifier);

    let status = if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = match (all, warned) {
        (false, _) => "fail",
        (true, true) => "warn",
        (true, false) => "pass",
    };
    (
        status,
        json!({"status": word, "time": chrono::Utc::now().to_rfc3339(), "checks": checks}),
    )
}

/// Whether the caller may read metrics: the configured scrape token, compared in constant
/// time; without one configured, callers on the loopback interface only.
fn may_scrape(req: &HttpRequest, token: Option<&str>) -> Result<(), (StatusCode, &'static str)> {
    let refuse = |status, why: &'static str| (status, why);
    match token {
        Some(expected) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .unwrap_or_default()
                .as_bytes();
            let ok =
                given.len() == expected.len() && openssl::memcmp::eq(given, expected.as_bytes());
            if ok {
                Ok(())
            } else {
                Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "metrics need the configured scrape token (metrics_token) as a bearer token",
                ))
            }
        }
        None if req.peer_addr().is_some_and(|a| a.ip().is_loopback()) => Ok(()),
        None => Err(refuse(
            StatusCode::FORBIDDEN,
            "metrics are served to loopback callers only unless metrics_token is configured",
        )),
    }
}

/// `GET /metrics`: the Prometheus text format (see `crate::metrics`).
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err((status, why)) = may_scrape(&req, state.settings.metrics_token.as_deref()) {
        return plain(status, "text/plain; charset=utf-8", format!("{why}\n"));
    }
    let Some(m) = crate::metrics::get() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "metrics are off (see the log)\n".into(),
        );
    };
    match state
        .store
        .read(|c| Ok::<_, crate::store::StoreError>(crate::store::subscriptions::backlog(c)?))
        .await
    {
        Ok(rows) => {
            let now = crate::store::micros(state.now());
            m.notification_backlog.reset();
            m.notification_lag_seconds.reset();
            m.subscriptions.reset();
            for b in rows {
                m.notification_backlog
                    .with_label_values(&[&b.status])
                    .set(b.events);
                let lag = b.oldest.map_or(0, |t| (now - t).max(0) / 1_000_000);
                m.notification_lag_seconds
                    .with_label_values(&[&b.status])
                    .set(lag);
                if b.status != "outbox" {
                    m.subscriptions
                        .with_label_values(&[&b.status])
                        .set(b.subscriptions);
                }
            }
        }
        // The process's own figures are still worth serving; the backlog's are left out.
        Err(e) => log::warn!("metrics: cannot read the notification backlog: {e}"),
    }
    match m.render() {
        Ok(text) => plain(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            text,
        ),
        Err(e) => {
            log::error!("metrics: cannot render: {e}");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "metrics could not be rendered\n".into(),
            )
        }
    }
}

/// `GET /.well-known/smart-configuration` (SMART App Launch v2 §2.4 "Conformance"): what this
/// resource server accepts. It issues no tokens: they come from the configured issuers, named
/// here (`issuers`, an extension) with the scopes and algorithms they may use.
pub async fn smart_configuration(state: web::Data<AppState>) -> HttpResponse {
    let issuers: Vec<Value> = state
        .settings
        .auth
        .issuers
        .iter()
        .map(|i| {
            json!({
                "issuer": i.issuer,
                "signingAlgorithms": i.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
                "jwks_uri": match &i.keys {
                    crate::config::KeySource::JwksUrl { url, .. } => Some(url.as_str()),
                    _ => None,
                },
            })
        })
        .collect();
    let body = json!({
        "capabilities": ["permission-v1", "permission-v2", "client-confidential-asymmetric"],
        "scopes_supported": [
            "user/Flag.rs", "user/Patient.rs", "user/AuditEvent.rs", "user/Organization.rs",
            "system/Flag.cruds", "system/Patient.cruds", "system/Organization.cru",
            "system/AuditEvent.rs", "system/Subscription.cruds"
        ],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "issuers": issuers,
        "notes": "Scopes only narrow what the token's role allows; a token without SMART resource scopes is decided by its role alone. Clinicians need user/ scopes (access to children's records is user-present only); patient/ scopes grant nothing (no launch context).",
    });
    let mut res = HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(body.to_string());
    res.extensions_mut().insert(NotFhir);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(peer: &str) -> HttpRequest {
        actix_web::test::TestRequest::default()
            .peer_addr(peer.parse().unwrap())
            .to_http_request()
    }

    #[test]
    fn without_a_scrape_token_only_loopback_callers_may_read_metrics() {
        assert!(may_scrape(&from("127.0.0.1:5000"), None).is_ok());
        assert!(may_scrape(&from("[::1]:5000"), None).is_ok());
        let refused = may_scrape(&from("10.1.2.3:5000"), None).unwrap_err();
        assert_eq!(refused.0, StatusCode::FORBIDDEN);
    }

    #[test]
    fn a_scrape_token_of_another_length_is_refused_without_comparing() {
        let req = actix_web::test::TestRequest::default()
            .insert_header(("Authorization", "Bearer short"))
            .to_http_request();
        let refused = may_scrape(&req, Some("a-much-longer-token")).unwrap_err();
        assert_eq!(refused.0, StatusCode::UNAUTHORIZED);
    }
}
