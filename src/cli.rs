//! The `cpis-fhir` command line: `serve`, `token`, `migrate`, `purge`, `load`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::auth::dev::{self, TokenRequest};
use crate::config::{CliOverrides, Settings};
use crate::domain::{OdsCode, Role};
use crate::records::lifecycle;
use crate::startup::{build_state, Application};
use crate::state::system_clock;
use crate::store::Store;
use crate::{demo, load};

#[derive(Parser, Debug)]
#[command(name = "cpis-fhir", version, about = "CP-IS FHIR R4 server")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print a JWT signed with the data directory's dev key (local use and tests only).
    Token(TokenArgs),
    /// Run database migrations and exit (under a lock, so replicas can be started meanwhile).
    /// With replicas, run this first and start them with `serve --no-migrate`.
    Migrate(CommonArgs),
    /// Local certificates and keys for trying HTTPS, mutual TLS and a JWKS issuer on this
    /// machine (development only): the dev CA and server certificate, client certificates
    /// issued by that CA, and the dev signing key as a JWKS (`dev-jwks.json`).
    DevPki(DevPkiArgs),
    /// Write a consistent copy of the embedded SQLite database while the server serves
    /// (PostgreSQL: use pg_dump). Restore by starting a server on the copy.
    Backup(BackupArgs),
    /// Apply the record lifecycle now (plans ended at 18, ended plans made inactive, records
    /// past retention removed) and print what it did. The server does this by itself on a
    /// schedule; this is for operators.
    Purge(PurgeArgs),
    /// Convert a council's case-system CSV extract into batch Bundles and submit them (or only
    /// write them), with a per-record report.
    Load(LoadArgs),
    /// The access report for the audit team: per user, distinct people looked up (and per day),
    /// accesses out of hours, repeated silent reads, look-ups that found nothing; refused
    /// authentications per client. Read from the database directly (no server needed).
    AuditReport(AuditReportArgs),
}

#[derive(Args, Debug)]
struct AuditReportArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The period's first day (YYYY-MM-DD, UTC).
    #[arg(long)]
    start: String,
    /// The period's last day (YYYY-MM-DD, UTC, included).
    #[arg(long)]
    end: String,
    /// Only accesses to this council's records (ODS code).
    #[arg(long)]
    council: Option<String>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Csv)]
    format: ReportFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ReportFormat {
    Csv,
    Json,
}

#[derive(Args, Debug)]
struct DevPkiArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Issue a client certificate with this common name (repeatable).
    #[arg(long)]
    client: Vec<String>,
}

#[derive(Args, Debug)]
struct BackupArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Where to write the copy (must not exist).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct PurgeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Apply the rules as of this date (YYYY-MM-DD) instead of today.
    #[arg(long)]
    now: Option<String>,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// The submitting council's ODS code (the author of every plan in the file).
    #[arg(long)]
    council: String,
    /// The CSV extract (columns in the README).
    #[arg(long)]
    csv: PathBuf,
    /// Submit to this server's base URL.
    #[arg(long, required_unless_present = "bundle_out")]
    server: Option<String>,
    /// The council's bearer token (or --token-file).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the bearer token (keeps it out of the process list).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Only write the Bundles into this directory; submit nothing.
    #[arg(long, conflicts_with = "server")]
    bundle_out: Option<PathBuf>,
    /// Where to write the per-record report (default: next to the CSV, `<name>.report.csv`).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Rows per Bundle (each row is two entries).
    #[arg(long, default_value_t = 500)]
    rows_per_bundle: usize,
    /// `Flag.identifier.system` of the plan references (default: one per council).
    #[arg(long)]
    plan_system: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct CommonArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Database: a SQLite file path (or sqlite://path) or a postgres:// URL.
    #[arg(long)]
    database: Option<String>,
    /// Directory for the embedded database and dev keys.
    #[arg(long)]
    data_dir: Option<String>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address and port to listen on.
    #[arg(long)]
    listen: Option<String>,
    /// Development mode: create and trust a local signing key, load demo data, print tokens.
    #[arg(long)]
    dev: bool,
    /// Do not run migrations: refuse to start if the schema is older than this version (for
    /// replicas, after `cpis-fhir migrate`).
    #[arg(long)]
    no_migrate: bool,
    /// With --dev: serve HTTPS with a local CA and server certificate made once in the data
    /// directory (`dev-ca.pem` is the CA to trust).
    #[arg(long, requires = "dev")]
    tls: bool,
}

#[derive(Args, Debug)]
struct TokenArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// clinician | clinician-scheduled | council | auditor | admin
    #[arg(long)]
    role: String,
    /// The caller's organisation ODS code.
    #[arg(long)]
    org: String,
    /// User id (the token subject).
    #[arg(long, default_value = "dev-user")]
    user: String,
    /// Display name of the user.
    #[arg(long)]
    name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

fn overrides(c: &CommonArgs, listen: Option<String>, dev: bool) -> CliOverrides {
    CliOverrides {
        config_file: c.config.clone(),
        listen,
        database_url: c.database.clone(),
        data_dir: c.data_dir.clone(),
        dev,
        no_migrate: false,
    }
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        Command::Serve(a) => serve(a),
        Command::Token(a) => token(a),
        Command::Migrate(a) => migrate(a),
        Command::Backup(a) => backup(a),
        Command::DevPki(a) => dev_pki(a),
        Command::Purge(a) => purge(a),
        Command::Load(a) => return load(a),
        Command::AuditReport(a) => audit_report(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cpis-fhir: {e}");
            ExitCode::FAILURE
        }
    }
}

fn migrate(a: CommonArgs) -> Result<(), String> {
    let settings = Settings::load(&overrides(&a, None, false)).map_err(|e| e.to_string())?;
    if Store::needs_data_dir(&settings.database_url) {
        std::fs::create_dir_all(&settings.data_dir).map_err(|e| e.to_string())?;
    }
    Store::open(&settings.database_url, 1)?;
    println!("database is up to date");
    Ok(())
}

fn dev_pki(a: DevPkiArgs) -> Result<(), String> {
    let settings = Settings::load(&overrides(&a.common, None, false)).map_err(|e| e.to_string())?;
    let dir = &settings.data_dir;
    crate::tls::ensure_dev_certificates(dir)?;
    println!(
        "development CA (trust it):   {}",
        dir.join("dev-ca.pem").display()
    );
    println!(
        "server certificate and key:  {}, {}",
        dir.join("dev-server.pem").display(),
        dir.join("dev-server.key").display()
    );
    for cn in &a.client {
        let (cert, key) = crate::tls::issue_dev_client(dir, cn)?;
        println!(
            "client certificate {cn}:  {}, {}",
            cert.display(),
            key.display()
        );
    }
    let jwks = dir.join("dev-jwks.json");
    let text = serde_json::to_string_pretty(&dev::dev_jwks(dir)?).map_err(|e| e.to_string())?;
    std::fs::write(&jwks, text).map_err(|e| format!("cannot write {}: {e}", jwks.display()))?;
    println!(
        "dev signing key as a JWKS:   {} (issuer {}, kid {})",
        jwks.display(),
        dev::DEV_ISSUER,
        dev::DEV_KID
    );
    Ok(())
}

fn backup(a: BackupArgs) -> Result<(), String> {
    let settings = Settings::load(&overrides(&a.common, None, false)).map_err(|e| e.to_string())?;
    if crate::store::Backend::of_url(&settings.database_url) == crate::store::Backend::Sqlite
        && !std::path::Path::new(&settings.database_url.trim_start_matches("sqlite://")).exists()
    {
        return Err(format!(
            "there is no database at {} to back up",
            settings.database_url
        ));
    }
    let store = Store::open(&settings.database_url, 1)?;
    let started = std::time::Instant::now();
    let s = store.backup_to(&a.out).map_err(|e| e.to_string())?;
    println!(
        "backup written to {} in {:.1} s and checked: {} patients, {} flags, {} audit events, {} subscriptions",
        a.out.display(),
        started.elapsed().as_secs_f64(),
        s.patients,
        s.flags,
        s.audit_events,
        s.subscriptions
    );
    Ok(())
}

fn purge(a: PurgeArgs) -> Result<(), String> {
    let settings = Settings::load(&overrides(&a.common, None, false)).map_err(|e| e.to_string())?;
    let now = match &a.now {
        None => chrono::Utc::now(),
        Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| format!("--now '{d}' is not a date (YYYY-MM-DD)"))?
            .and_hms_opt(12, 0, 0)
            .map(|t| t.and_utc())
            .ok_or("--now is not a valid date")?,
    };
    let store = Store::open(&settings.database_url, 1)?;
    let rules = lifecycle::Rules::of(&settings);
    let report = store
        .write_blocking(move |conn| lifecycle::run(conn, rules, now, &lifecycle::Trigger::Command))
        .map_err(|e| e.to_string())?;
    lifecycle::index_audit(&store, now, &|| false).map_err(|e| e.to_string())?;
    println!("record lifecycle as of {}:", now.date_naive());
    for (name, n) in report.counts.named() {
        println!("  {name:<20} {n}");
    }
    match report.audit_event {
        Some(id) => println!("recorded as AuditEvent/{id}"),
        None => println!("nothing to do; nothing changed"),
    }
    Ok(())
}

fn audit_report(a: AuditReportArgs) -> Result<(), String> {
    let settings = Settings::load(&overrides(&a.common, None, false)).map_err(|e| e.to_string())?;
    let day = |flag: &str, d: &str| {
        chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| format!("--{flag} '{d}' is not a date (YYYY-MM-DD)"))
    };
    let start = day("start", &a.start)?;
    let end = day("end", &a.end)? + chrono::Duration::days(1);
    if start >= end {
        return Err("--end is before --start".into());
    }
    let council = match &a.council {
        Some(c) => Some(
            crate::domain::OdsCode::parse(c)
                .ok_or_else(|| format!("--council '{c}' is not an ODS code"))?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    let micros = |d: chrono::NaiveDate| {
        crate::store::micros(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
    };
    let (from, to) = (micros(start), micros(end));
    let store = Store::open(&settings.database_url, 1)?;
    let thresholds = settings.audit.clone();
    let report = store
        .read_blocking(|c| {
            let mut read = |f: &_, after: Option<&str>| crate::audit::report::batch(c, f, after);
            crate::audit::report::build(&mut read, from, to, council, &thresholds)
        })
        .map_err(|e| e.to_string())?;
    match a.format {
        ReportFormat::Csv => print!("{}", report.to_csv()?),
        ReportFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).map_err(|e| e.to_string())?
        ),
    }
    Ok(())
}

fn load(a: LoadArgs) -> ExitCode {
    match run_load(a) {
        Ok((summary, report)) => {
            println!(
                "{} rows: {} accepted, {} refused by the server, {} invalid (not sent), {} written to Bundles; {} Bundle(s)",
                summary.rows, summary.accepted, summary.refused, summary.invalid, summary.written, summary.bundles
            );
            println!("per-record report: {}", report.display());
            if summary.refused + summary.invalid > 0 {
                // Some rows need the council's attention: a script must be able to tell.
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("cpis-fhir load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_load(a: LoadArgs) -> Result<(load::Summary, PathBuf), String> {
    let council = OdsCode::parse(&a.council)
        .ok_or("--council must be an ODS code (3 to 10 upper-case letters and digits)")?;
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read --token-file: {e}"))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let server = match (a.server, token) {
        (Some(s), Some(t)) => Some((s.trim_end_matches('/').to_owned(), t)),
        (Some(_), None) => return Err("--server needs --token or --token-file".into()),
        (None, _) => None,
    };
    let report = a
        .report
        .unwrap_or_else(|| a.csv.with_extension("report.csv"));
    let job = load::Job {
        plan_system: a
            .plan_system
            .unwrap_or_else(|| load::Job::default_plan_system(&council)),
        council,
        csv: a.csv,
        server,
        bundle_out: a.bundle_out,
        report: report.clone(),
        rows_per_bundle: a.rows_per_bundle,
        attempts: 3,
    };
    load::run(&job)
        .map(|s| (s, report))
        .map_err(|e| e.to_string())
}

fn token(a: TokenArgs) -> Result<(), String> {
    let settings = Settings::load(&overrides(&a.common, None, true)).map_err(|e| e.to_string())?;
    let role = Role::parse(&a.role).ok_or_else(|| {
        format!(
            "--role must be one of: {}",
            Role::ALL.map(Role::as_str).join(", ")
        )
    })?;
    let org = OdsCode::parse(&a.org)
        .ok_or("--org must be an ODS code (3 to 10 upper-case letters and digits)")?;
    let token = dev::mint(
        &settings.data_dir,
        &TokenRequest {
            role,
            org,
            user: a.user,
            name: a.name,
            ttl_secs: a.ttl,
            audience: settings.auth.audience,
        },
    )?;
    println!("{token}");
    Ok(())
}

fn serve(a: ServeArgs) -> Result<(), String> {
    let mut cli = overrides(&a.common, a.listen, a.dev);
    cli.no_migrate = a.no_migrate;
    let mut settings = Settings::load(&cli).map_err(|e| e.to_string())?;
    if a.tls {
        settings.tls = Some(crate::tls::ensure_dev_certificates(&settings.data_dir)?);
        if let Some(rest) = settings.base_url.strip_prefix("http://") {
            settings.base_url = format!("https://{rest}");
        }
    }
    let listen = settings.listen;
    let dev_mode = settings.dev;
    let state = build_state(settings, system_clock())?;
    let banner = if dev_mode {
        let records = demo::load(&state.store, state.now()).map_err(|e| e.to_string())?;
        Some(demo::banner::banner(&state.settings, &records)?)
    } else {
        None
    };
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(state, listener).map_err(|e| e.to_string())?;
        if let Some(b) = banner {
            println!("{b}");
        }
        log::info!("listening on {listen}");
        app.stop_on_signals();
        app.run_until_stopped().await.map_err(|e| e.to_string())
    })
}
