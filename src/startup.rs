//! Builds the application from settings — used by `main` and by the tests alike — and runs it.

use std::net::TcpListener;

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::api;
use crate::auth::{dev, jwt::Verifier};
use crate::config::Settings;
use crate::fhir::profile::Profiles;
use crate::middleware::envelope;
use crate::state::{AppState, Clock};
use crate::store::Store;

/// Opens the store, loads the profiles and the trusted keys. Refuses to start without keys
/// unless in dev mode.
pub fn build_state(settings: Settings, clock: Clock) -> Result<AppState, String> {
    let profiles = Profiles::load()?;
    let mut verifier = Verifier::new(
        settings.auth.leeway_secs,
        settings.auth.max_token_lifetime_secs,
    );
    if let (Some(file), Some(issuer)) = (&settings.auth.public_key_file, &settings.auth.issuer) {
        let pem = std::fs::read(file).map_err(|e| {
            format!("configuration: `auth.public_key_file` (CPIS_AUTH_PUBLIC_KEY_FILE): cannot read {}: {e}", file.display())
        })?;
        verifier
            .add_key(
                &pem,
                settings.auth.algorithm,
                issuer,
                &settings.auth.audience,
                settings.auth.kid.clone(),
            )
            .map_err(|e| format!("configuration: `auth.public_key_file`: {e}"))?;
    }
    if settings.dev {
        let pem = dev::ensure_key(&settings.data_dir)?;
        verifier.add_key(
            &pem,
            dev::DEV_ALGORITHM,
            dev::DEV_ISSUER,
            &settings.auth.audience,
            Some(dev::DEV_KID.to_owned()),
        )?;
    }
    if verifier.is_empty() {
        return Err(
            "no token verification key is configured: set auth.public_key_file and auth.issuer \
             (CPIS_AUTH_PUBLIC_KEY_FILE, CPIS_AUTH_ISSUER), or run with --dev for local use"
                .into(),
        );
    }
    if Store::needs_data_dir(&settings.database_url) {
        std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
            format!(
                "cannot create the data directory {}: {e}",
                settings.data_dir.display()
            )
        })?;
    }
    let store = Store::open(&settings.database_url, settings.db_read_pool_size)?;
    let capability = crate::fhir::capability::statement(&settings.base_url);
    let lifecycle = match settings.lifecycle_interval {
        Some(every) => {
            let alive = std::sync::Arc::new(());
            let rules = crate::lifecycle::Rules::of(&settings);
            crate::lifecycle::start_scheduler(
                store.clone(),
                rules,
                clock.clone(),
                every,
                std::sync::Arc::downgrade(&alive),
            )?;
            Some(alive)
        }
        None => None,
    };
    let notifier = crate::notify::Notifier::new(store.clone(), clock.clone(), &settings);
    let notify = match settings.notify_interval {
        Some(every) => {
            let alive = std::sync::Arc::new(());
            crate::notify::start(notifier.clone(), every, std::sync::Arc::downgrade(&alive))?;
            Some(alive)
        }
        None => None,
    };
    let refusals = std::sync::Arc::new(crate::audit::refusals::Refusals::new(
        settings.auth.failure_fold_secs,
    ));
    // Like the notification worker, the flusher runs on its own only when background work is
    // on; tests step it through the refusals themselves.
    if let (Some(every), Some(alive)) = (settings.notify_interval, &notify) {
        crate::audit::refusals::start_flusher(
            refusals.clone(),
            store.clone(),
            clock.clone(),
            every.max(std::time::Duration::from_secs(1)),
            std::sync::Arc::downgrade(alive),
        )?;
    }
    let budget = crate::limits::Budget::new(
        settings.limits.bodies_in_flight,
        settings.limits.parsed_in_flight,
        settings.limits.wait,
    );
    Ok(AppState {
        budget,
        store,
        verifier,
        profiles,
        settings,
        clock,
        capability,
        _lifecycle: lifecycle,
        notifier,
        _notify: notify,
        refusals,
    })
}

/// The largest `POST …/_search` form body read.
pub const SEARCH_FORM_LIMIT: usize = 16 * 1024;

/// A bound, not yet running, server.
pub struct Application {
    pub port: u16,
    server: actix_web::dev::Server,
}

impl Application {
    /// Binds the listener and builds the server over `state`.
    pub fn build(state: AppState, listener: TcpListener) -> std::io::Result<Self> {
        let port = listener.local_addr()?.port();
        let workers = state.settings.workers;
        let max_connections = state.settings.limits.max_connections;
        let data = web::Data::new(state);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                // The only bodies read whole by an extractor are `_search` forms: a few
                // parameters (resource bodies are read by `api::http::receive`).
                .app_data(web::PayloadConfig::new(SEARCH_FORM_LIMIT))
                .wrap(from_fn(envelope))
                .configure(api::configure)
                .default_service(web::to(api::not_found))
        })
        .workers(workers)
        .max_connections(max_connections)
        .listen(listener)?
        .run();
        Ok(Self { port, server })
    }

    pub fn server(self) -> actix_web::dev::Server {
        self.server
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
