//! What every request handler shares: the store, the token verifier, the profiles, the settings
//! and the clock (injected so date rules can be tested at their boundaries).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::auth::jwt::Verifier;
use crate::config::Settings;
use crate::fhir::profile::Profiles;
use crate::store::Store;

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub struct AppState {
    pub store: Store,
    /// What request bodies may hold at once (see `limits`).
    pub budget: crate::limits::Budget,
    pub verifier: Verifier,
    pub profiles: Profiles,
    pub settings: Settings,
    pub clock: Clock,
    /// The CapabilityStatement: fixed for the life of the server, so built once.
    pub capability: serde_json::Value,
    /// The lifecycle scheduler runs while this is held (it stops with the server).
    pub _lifecycle: Option<Arc<()>>,
    /// The notification worker (stepped by tests; run by its own thread otherwise).
    pub notifier: crate::notify::Notifier,
    /// The notification worker's thread runs while this is held.
    pub _notify: Option<Arc<()>>,
    /// Refused authentications, folded before they are audited.
    pub refusals: Arc<crate::audit::refusals::Refusals>,
}

impl AppState {
    /// The lifecycle's windows, from the settings.
    pub fn lifecycle_rules(&self) -> crate::lifecycle::Rules {
        crate::lifecycle::Rules::of(&self.settings)
    }
}

impl AppState {
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }
}

/// The real clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}
