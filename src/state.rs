//! What every request handler shares: the store, the token verifier, the profiles, the settings
//! and the clock (injected so date rules can be tested at their boundaries).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::auth::jwt::Verifier;
use crate::config::Settings;
use crate::fhir::profile::Profiles;
use crate::store::Store;

pub use crate::domain::{system_clock, Clock};

pub struct AppState {
    pub store: Store,
    /// What request bodies may hold at once (see `limits`).
    pub budget: crate::limits::Budget,
    /// Shared with the request extractor (`auth::caller_of`); its keys can be replaced at
    /// run time.
    pub verifier: Arc<Verifier>,
    pub profiles: Profiles,
    pub settings: Settings,
    pub clock: Clock,
    /// The CapabilityStatement: fixed for the life of the server, so built once.
    pub capability: serde_json::Value,
    /// The notification worker (stepped by tests; run by its own thread otherwise).
    pub notifier: crate::notify::Notifier,
    /// Refused authentications, folded before they are audited.
    pub refusals: Arc<crate::audit::refusals::Refusals>,
    /// Background work started with the state (the SQLite checkpointer); `Application` takes
    /// it over, adds the rest and stops it all at shutdown.
    pub background: crate::tasks::Tasks,
    /// The trusted issuers and their keys (refreshed from JWKS URLs by a background task).
    pub trust: Arc<crate::auth::jwks::Trust>,
    /// The look-up limits and the misuse watch.
    pub watch: crate::audit::watch::Watch,
    /// Set once the server has been told to stop: readiness answers 503 while it drains.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// The last readiness answer, reused for a second.
    pub readiness: Readiness,
    /// Where Bundles are read, checked and answered, and reports built (`lane`).
    pub bulk: crate::lane::BulkLane,
}

impl AppState {
    /// The lifecycle's windows, from the settings.
    pub fn lifecycle_rules(&self) -> crate::records::lifecycle::Rules {
        crate::records::lifecycle::Rules::of(&self.settings)
    }
}

impl AppState {
    /// Where this server's audited reads are written (see `audit::disclose`).
    pub fn trail(&self) -> crate::audit::Trail<'_> {
        crate::audit::Trail {
            store: &self.store,
            clock: &self.clock,
            wake: &self.notifier.wake,
            watch: &self.watch,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }
}

/// The last readiness answer and when it was made.
#[derive(Default)]
pub struct Readiness(
    std::sync::Mutex<
        Option<(
            std::time::Instant,
            actix_web::http::StatusCode,
            serde_json::Value,
        )>,
    >,
);

impl Readiness {
    pub fn fresh(
        &self,
        within: std::time::Duration,
    ) -> Option<(actix_web::http::StatusCode, serde_json::Value)> {
        let kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.as_ref()
            .filter(|(at, _, _)| at.elapsed() < within)
            .map(|(_, s, b)| (*s, b.clone()))
    }

    pub fn keep(&self, status: actix_web::http::StatusCode, body: serde_json::Value) {
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *kept = Some((std::time::Instant::now(), status, body));
    }
}
