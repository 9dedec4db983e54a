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

/// Why the server cannot start (each says what to fix; `main` prints it and exits 1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the FHIR profiles cannot be loaded: {0}")]
    Profiles(String),
    /// No usable token verification key (a missing or unreadable key file or JWKS).
    #[error("{0}")]
    Keys(String),
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    #[error("configuration: {0}")]
    BasePath(String),
    #[error(transparent)]
    Task(#[from] crate::tasks::TaskError),
}

impl From<StartError> for String {
    fn from(e: StartError) -> Self {
        e.to_string()
    }
}

/// Opens the store, loads the profiles and the trusted keys. Refuses to start without keys
/// unless in dev mode.
pub fn build_state(settings: Settings, clock: Clock) -> Result<AppState, StartError> {
    if let Some(why) = settings
        .base_paths
        .iter()
        .find_map(|b| api::base_path_clash(b))
    {
        return Err(StartError::BasePath(why));
    }
    let profiles = Profiles::load().map_err(StartError::Profiles)?;
    let verifier = Verifier::new(
        settings.auth.leeway_secs,
        settings.auth.max_token_lifetime_secs,
    );
    let dev_key = if settings.dev {
        Some((
            dev::ensure_key(&settings.data_dir).map_err(StartError::Keys)?,
            settings.auth.audiences.clone(),
        ))
    } else {
        None
    };
    let trust =
        crate::auth::jwks::Trust::load(&settings.auth.issuers, dev_key, settings.auth.leeway_secs)
            .map_err(StartError::Keys)?;
    let keys = trust.key_set().map_err(StartError::Keys)?;
    if keys.is_empty() && !trust.fetches() {
        return Err(StartError::Keys(
            "no token verification key is configured: set auth.public_key_file and auth.issuer \
             (CPIS_AUTH_PUBLIC_KEY_FILE, CPIS_AUTH_ISSUER), or run with --dev for local use"
                .into(),
        ));
    }
    verifier.replace_keys(keys);
    if Store::needs_data_dir(&settings.database_url) {
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartError::DataDir {
            path: settings.data_dir.clone(),
            source,
        })?;
    }
    let mut background = crate::tasks::Tasks::new();
    let migrations = if settings.migrate {
        crate::store::Migrations::Run
    } else {
        crate::store::Migrations::Check
    };
    let store = Store::open_in(
        &settings.database_url,
        settings.db_read_pool_size,
        settings.db_writers,
        migrations,
        &mut background,
    )?;
    let capability = crate::api::capability::statement(&settings.base_url);
    let notifier = crate::notify::Notifier::new(store.clone(), clock.clone(), &settings);
    let refusals = std::sync::Arc::new(crate::audit::refusals::Refusals::new(
        settings.auth.failure_fold_secs,
    ));
    let budget = crate::limits::Budget::new(
        settings.limits.bodies_in_flight,
        settings.limits.parsed_in_flight,
        settings.limits.wait,
    );
    let settings_limits = settings.limits.clone();
    // One thread per core: the lane may use every core the look-ups leave idle.
    let bulk = crate::lane::BulkLane::start(
        std::thread::available_parallelism().map_or(2, |n| n.get()),
        settings.bulk_low_priority,
    )?;
    Ok(AppState {
        bulk,
        budget,
        store,
        verifier: std::sync::Arc::new(verifier),
        profiles,
        settings,
        clock,
        capability,
        notifier,
        refusals,
        background,
        trust: std::sync::Arc::new(trust),
        draining: std::sync::Arc::default(),
        readiness: Default::default(),
        watch: crate::audit::watch::Watch::new(crate::audit::watch::WatchSettings {
            per_user_per_minute: settings_limits.lookups_per_user_per_minute,
            per_org_per_minute: settings_limits.lookups_per_org_per_minute,
            fishing_threshold: settings_limits.fishing_distinct_people,
            fishing_window_secs: settings_limits.fishing_window_secs,
        }),
    })
}

/// Starts the background work the settings turn on, on `tasks`: the record lifecycle, the
/// notification worker and, with it, the refused-authentication flusher. (Tests turn them off
/// and step the notifier and the refusals themselves.)
fn start_background(state: &AppState, tasks: &mut crate::tasks::Tasks) -> std::io::Result<()> {
    let settings = &state.settings;
    let failed = |e: crate::tasks::TaskError| std::io::Error::other(e.to_string());
    if let Some(every) = settings.lifecycle_interval {
        let (store, rules, clock) = (
            state.store.clone(),
            state.lifecycle_rules(),
            state.clock.clone(),
        );
        tasks
            .spawn("lifecycle", move |stop| {
                crate::records::lifecycle::run_scheduler(stop, store, rules, clock, every)
            })
            .map_err(failed)?;
    }
    if settings.refresh_keys && state.trust.fetches() {
        let (trust, verifier) = (state.trust.clone(), state.verifier.clone());
        tasks
            .spawn("jwks", move |stop| {
                crate::auth::jwks::run_refresher(stop, trust, verifier)
            })
            .map_err(failed)?;
    }
    if let Some(every) = settings.notify_interval {
        let notifier = state.notifier.clone();
        let wake = state.notifier.wake.clone();
        tasks
            .spawn("notify", move |stop| {
                crate::notify::run_worker(stop, notifier, every)
            })
            .map_err(failed)?;
        tasks.on_stop(move || wake.wake());
        let (refusals, store, clock) = (
            state.refusals.clone(),
            state.store.clone(),
            state.clock.clone(),
        );
        tasks
            .spawn("refusals", move |stop| {
                crate::audit::refusals::run_flusher(
                    stop,
                    refusals,
                    store,
                    clock,
                    every.max(std::time::Duration::from_secs(1)),
                )
            })
            .map_err(failed)?;
    }
    Ok(())
}

/// The largest `POST …/_search` form body read.
pub const SEARCH_FORM_LIMIT: usize = 16 * 1024;

/// A bound server and the background work it owns.
///
/// SIGTERM or Ctrl-C (or [`Application::handle`]'s `stop(true)`) stops it gracefully: actix
/// stops accepting connections and lets requests in flight finish (up to `shutdown_grace_secs`,
/// default 30 s) — each one's writer job committed before its answer — then the background
/// tasks are stopped between steps (the notifier's current post finished) and joined, within
/// the same grace again; past it they are named in the log and left to the process's end.
pub struct Application {
    pub port: u16,
    server: actix_web::dev::Server,
    tasks: crate::tasks::Tasks,
    grace: std::time::Duration,
    /// Readiness's "draining" flag, and how long to drain before stopping.
    draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
    drain: std::time::Duration,
}

impl Application {
    /// Binds the listener, builds the server over `state` and starts its background work.
    pub fn build(mut state: AppState, listener: TcpListener) -> std::io::Result<Self> {
        let port = listener.local_addr()?.port();
        let mut tasks = std::mem::take(&mut state.background);
        start_background(&state, &mut tasks)?;
        let workers = state.settings.workers;
        let grace = state.settings.shutdown_grace;
        let (draining, drain) = (state.draining.clone(), state.settings.shutdown_drain);
        let max_connections = state.settings.limits.max_connections;
        let verifier = web::Data::from(std::sync::Arc::clone(&state.verifier));
        let tls = state.settings.tls.clone();
        let bindings = web::Data::new(crate::tls::Bindings(
            tls.as_ref().map(|t| t.bindings.clone()).unwrap_or_default(),
        ));
        let base_paths = state.settings.base_paths.clone();
        let data = web::Data::new(state);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(verifier.clone())
                .app_data(bindings.clone())
                // The only bodies read whole by an extractor are `_search` forms: a few
                // parameters (resource bodies are read by `api::http::receive`).
                .app_data(web::PayloadConfig::new(SEARCH_FORM_LIMIT))
                .wrap(from_fn(envelope))
                .configure(|cfg| api::configure(cfg, &base_paths))
                .default_service(web::to(api::not_found))
        })
        .workers(workers)
        .max_connections(max_connections)
        .shutdown_timeout(grace.as_secs())
        // Signals are the process's business (`stop_on_signals`): actix's own handling would
        // stop at once on Ctrl-C, dropping requests in flight.
        .disable_signals()
        // A connection's verified client certificate (mutual TLS), for its requests.
        .on_connect(|conn, ext| {
            if let Some(cert) = crate::tls::client_cert_of(conn) {
                ext.insert(cert);
            }
        });
        let server = match &tls {
            Some(t) => {
                let acceptor = crate::tls::acceptor(t).map_err(std::io::Error::other)?;
                server.listen_openssl(listener, acceptor)?
            }
            None => server.listen(listener)?,
        }
        .run();
        Ok(Self {
            port,
            server,
            tasks,
            grace,
            draining,
            drain,
        })
    }

    /// Stops the server from elsewhere (tests, tools).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// SIGTERM and SIGINT (Ctrl-C) stop the server gracefully: requests in flight finish, the
    /// background tasks finish their current step. A second signal changes nothing; the
    /// graceful stop is bounded anyway (the grace period for requests, and again for tasks).
    pub fn stop_on_signals(&self) {
        let handle = self.handle();
        let (draining, drain) = (self.draining.clone(), self.drain);
        actix_web::rt::spawn(async move {
            let signal = stop_signal().await;
            if !drain.is_zero() {
                draining.store(true, std::sync::atomic::Ordering::SeqCst);
                log::info!(
                    "{signal} received: draining for {} s (still serving; /health/ready answers 503)",
                    drain.as_secs()
                );
                actix_web::rt::time::sleep(drain).await;
            }
            log::info!("{signal} received: stopping gracefully (requests in flight finish first)");
            handle.stop(true).await;
        });
    }

    /// Serves until stopped, then stops and joins the background tasks.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        log::info!("server stopped; stopping background tasks");
        let (tasks, grace) = (self.tasks, self.grace);
        let late = actix_web::rt::task::spawn_blocking(move || tasks.shutdown(grace))
            .await
            .unwrap_or_default();
        if late.is_empty() {
            log::info!("stopped");
        } else {
            log::warn!(
                "stopped; background tasks still running: {}",
                late.join(", ")
            );
        }
        served
    }
}

/// Waits for SIGTERM or SIGINT and names it.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use actix_web::rt::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                let ctrl_c = actix_web::rt::signal::ctrl_c();
                futures_util::pin_mut!(ctrl_c);
                let term = term.recv();
                futures_util::pin_mut!(term);
                match futures_util::future::select(term, ctrl_c).await {
                    futures_util::future::Either::Left(_) => "SIGTERM",
                    futures_util::future::Either::Right(_) => "SIGINT",
                }
            }
            Err(e) => {
                log::warn!(
                    "cannot listen for SIGTERM ({e}); only Ctrl-C stops the server gracefully"
                );
                let _ = actix_web::rt::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = actix_web::rt::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
