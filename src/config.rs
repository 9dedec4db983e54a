//! Typed settings: a TOML file, then `CPIS_*` environment variables (the environment wins), then
//! command-line flags. Every key is listed once in [`KEYS`]; an unknown key or a bad value is a
//! start-up error that names the key, never a silent default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jsonwebtoken::Algorithm;

/// Every setting: its dotted name in the TOML file and what it means. The environment variable
/// is `CPIS_` + the name upper-cased with `.` replaced by `_` (for example `CPIS_AUTH_ISSUER`).
pub const KEYS: &[KeyDoc] = &[
    ("listen", "address and port to listen on (default 127.0.0.1:8080)"),
    ("data_dir", "directory for the SQLite database and dev keys (default ./cpis-data)"),
    ("database_url", "sqlite file path or sqlite://path, or postgres://… (default <data_dir>/cpis.db)"),
    ("base_url", "public base URL used in Location headers and Bundle links (default http://<listen>)"),
    ("base_paths", "path prefixes under which the whole FHIR API is served as well as at the root, so an EPR configured for a national API's base path works unchanged; a list (in the environment, comma-separated) (default /cpis/FHIR/R4, the national CP-IS API's; [] for none)"),
    ("body_limit", "largest accepted request body in bytes (default 10485760 = 10 MiB)"),
    ("allow_test_nhs_numbers", "accept NHS test numbers 999 000 0000–999 999 9999 (default false; true with --dev)"),
    ("workers", "HTTP worker threads (default: one per core)"),
    ("db_read_pool_size", "database read connections (default 8)"),
    ("db_writers", "writer connections on PostgreSQL, each committing its own batches (default 2, or 1 where the process may use only one core; SQLite always has one writer)"),
    ("retention_months", "months a record stays visible after its plan ends (default 12)"),
    ("max_page_size", "largest _count a search may ask for (default 100)"),
    ("max_bundle_entries", "most entries in one transaction or batch Bundle; more is refused with 413 (default 10000)"),
    ("bulk_slice_ms", "milliseconds a batch Bundle writes before it makes way for a waiting request such as a look-up, then goes on in a later database transaction; a batch runs unsliced while nothing waits (default 2)"),
    ("bulk_low_priority", "run the CPU work of councils' Bundles (reading, checking, answering), bulk exports and the access report on threads of the lowest scheduling priority (SCHED_IDLE on Linux, else nice 19), so look-ups never queue for a core behind them; when look-ups leave cores idle that work still uses them all (default true)"),
    ("bundle_body_limit", "largest accepted Bundle body in bytes (default 33554432 = 32 MiB; a 10,000-entry Bundle is about 7–15 MB)"),
    ("audit_retention_months", "months an AuditEvent is kept (default 96 = 8 years)"),
    ("lifecycle_interval_secs", "seconds between runs of the record lifecycle (ended plans, age 18, removals); 0 turns the scheduler off (default 900)"),
    ("notify_interval_ms", "milliseconds between the notification worker's rounds when no look-up wakes it (retries, heartbeats); 0 turns the worker off (default 1000)"),
    ("notify_backoff_base_secs", "wait after a subscription's first failed delivery; doubled after each further failure (default 10)"),
    ("notify_backoff_cap_secs", "longest wait between delivery attempts (default 3600)"),
    ("notify_error_after", "failed deliveries in a row after which a subscription shows status error; it keeps being retried (default 3)"),
    ("notify_allow_http_loopback", "let subscriptions use plain http to 127.0.0.1, [::1] or localhost (default false; true with --dev)"),
    ("migrate", "run pending database migrations at start-up, under a lock replicas share (default true; false, or serve --no-migrate, refuses to start on an old schema: run `cpis-fhir migrate` first)"),
    ("shutdown_grace_secs", "seconds a stopping server (SIGTERM, Ctrl-C) lets requests in flight finish, and then its background tasks theirs (default 30)"),
    ("shutdown_drain_secs", "on SIGTERM, seconds the server keeps serving while /health/ready answers 503, so a load balancer stops sending it requests before it stops accepting them (default 0)"),
    ("metrics_token", "bearer token a scraper must present on GET /metrics; unset, only loopback callers may scrape"),
    ("allow_plain_http", "serve plain HTTP on an address other than loopback, for a deployment behind a TLS-terminating proxy (default false: without tls.cert_file the server listens on 127.0.0.1 or ::1 only)"),
    ("tls.cert_file", "PEM certificate chain of the server (with tls.key_file: the server speaks HTTPS only, TLS 1.2 or 1.3, HTTP/2 and HTTP/1.1)"),
    ("tls.key_file", "PEM private key of that certificate"),
    ("tls.client_ca_file", "PEM CA certificates whose client certificates identify calling systems (mutual TLS)"),
    ("tls.client_auth", "with tls.client_ca_file: `optional` (default; a certificate, if sent, must verify) or `required` (no certificate, no handshake)"),
    ("limits.body_max_depth", "deepest nesting of objects/arrays (JSON) or elements (XML) a body may have; deeper is refused with 400 before parsing (default 32)"),
    ("limits.bodies_in_flight", "bytes of request bodies all requests together may be receiving at once (default 33554432 = 32 MiB; at least bundle_body_limit)"),
    ("limits.parsed_in_flight", "estimated bytes the parsed bodies of all requests together may hold at once (default 100663296 = 96 MiB)"),
    ("limits.wait_secs", "seconds a request waits for room in those budgets before it is answered 503 with Retry-After (default 10)"),
    ("limits.body_timeout_secs", "seconds a request body may take to arrive; slower is answered 408 (default 60)"),
    ("limits.max_url_bytes", "longest path and query string accepted; longer is answered 414 (default 8192)"),
    ("limits.max_query_params", "most query parameters a request may carry; more is answered 400 (default 64)"),
    ("limits.lookups_per_user_per_minute", "audited look-ups one user (token subject) may make in a minute; more are answered 429 with Retry-After and audited; 0 for no limit (default 120; counted per replica)"),
    ("limits.lookups_per_org_per_minute", "audited look-ups all users of one organisation (ODS) may make in a minute (default 6000; 0 for no limit; per replica)"),
    ("limits.fishing_distinct_people", "a warning AuditEvent (type 110113) when one user looks up more distinct people than this within limits.fishing_window_secs (default 50; 0 turns it off)"),
    ("limits.fishing_window_secs", "the window of limits.fishing_distinct_people (default 28800 = 8 h, a shift)"),
    ("audit.export_dir", "directory for bulk exports' NDJSON files; replicas behind one load balancer must share it (default <data_dir>/exports)"),
    ("audit.export_expiry_secs", "seconds an export's files may be downloaded after it completes; then they are deleted (default 86400)"),
    ("audit.exports_at_once", "bulk exports running at once across the service; more are answered 429 with Retry-After (default 2)"),
    ("audit.working_hours", "the working day in UK time, HH:MM-HH:MM, Monday to Friday; the access report counts accesses outside it (default 08:00-18:00)"),
    ("audit.report_distinct_people_per_day", "the access report flags a user who looked up more distinct people than this in one day (default 30)"),
    ("audit.report_silent_reads", "the access report flags a user who read one person silently (scheduled) more often than this in the period (default 5)"),
    ("audit.report_probe_misses", "the access report flags a user whose look-ups found nothing for more distinct NHS numbers than this in the period (default 20)"),
    ("audit.report_refusals", "the access report flags a client address with more refused authentications than this in the period (default 20)"),
    ("audit.report_max_days", "the longest period one access report over HTTP may cover, in days; its tallies are held in memory, so a longer period is refused with 400 (the audit-report command has no limit) (default 93)"),
    ("limits.max_connections", "most open connections per HTTP worker; more wait to be accepted (default 1024)"),
    ("auth.issuer", "expected `iss` of bearer tokens signed by auth.public_key_file"),
    ("auth.audience", "accepted `aud` of bearer tokens: one, or a list (in the environment, comma-separated) (default cpis-fhir)"),
    ("auth.public_key_file", "PEM public key that verifies bearer tokens"),
    ("auth.algorithm", "signature algorithm of that key: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 (default RS512)"),
    ("auth.kid", "key id expected in the token header for that key (optional)"),
    ("auth.leeway_secs", "clock skew allowed when checking a token's exp, nbf and iat (default 30)"),
    ("auth.max_token_lifetime_secs", "longest token lifetime accepted (exp − iat, or exp − now without iat); longer is refused (default 43200 = 12 h)"),
    ("auth.failure_fold_secs", "refused authentications with the same reason, source and claimed user within this many seconds are audited as one AuditEvent with a count (default 60)"),
];

/// Settings that hold a list of tables (`[[auth.issuers]]` in TOML): the list's name, its
/// tables' keys, and what the list is for. Lists of tables are set in the file only.
/// A setting's name and what it means.
pub type KeyDoc = (&'static str, &'static str);

pub const TABLE_LISTS: &[(&str, &[KeyDoc], &str)] = &[(
    "tls.client_bindings",
    &[
        ("subject", "a client certificate's subject common name or DNS subject alternative name (required)"),
        ("ods", "the ODS code of the council whose tokens are accepted only over a connection with that certificate (required)"),
    ],
    "client certificates bound to councils: a council token over a connection without its bound certificate, or a bound certificate carrying another organisation's token, is refused 403 and audited",
), (
    "auth.issuers",
    &[
        ("issuer", "the `iss` its tokens carry (required)"),
        (
            "public_key_file",
            "PEM public key that verifies its tokens (one of public_key_file, jwks_file, jwks_url is required)",
        ),
        (
            "jwks_file",
            "a JSON Web Key Set file holding its public keys (read at start-up)",
        ),
        (
            "jwks_url",
            "https:// URL of its JSON Web Key Set: fetched at start-up, refreshed every jwks_refresh_secs and when a token names an unknown kid (at most once a minute)",
        ),
        (
            "jwks_refresh_secs",
            "seconds between refreshes of jwks_url (default 3600)",
        ),
        (
            "jwks_ca_file",
            "PEM CA certificates trusted for jwks_url besides the system's (a private CA)",
        ),
        (
            "algorithm",
            "signature algorithm(s) its tokens may use, one or a list, never taken from the token (default RS512 for public_key_file, RS256 for a JWKS)",
        ),
        ("kid", "key id expected in the token header, for public_key_file (optional)"),
        (
            "audience",
            "accepted `aud`, one or a list (default: auth.audience)",
        ),
        (
            "user_claim",
            "the claim naming the user (default: `sub`; `uid`, else `sub`, for cis2)",
        ),
        (
            "name_claim",
            "the claim holding the user's display name (default `name`)",
        ),
        (
            "claims",
            "where the caller's role and organisation are read: `cpis` (`role`, `org`; default) or `cis2` (`selected_roleid` in `nhsid_nrbac_roles`: activity B0107 → clinician, B0170 → clinician-scheduled, job role R0001 → auditor; its `org_code`)",
        ),
    ],
    "trusted token issuers, one table each; used beside auth.issuer/auth.public_key_file",
)];

/// Writer connections on PostgreSQL unless configured (`db_writers`). Measured with
/// PostgreSQL on the same 2 cores (`cpis-bench --database postgres://…`, medians of interleaved
/// runs): 2 writers 8,770 audited look-ups/s (p99 4.4 ms), 3 writers 8,450, 4 writers 7,740
/// (p99 5.6 ms), 1 writer 3,700; bulk submission 13,800 resources/s with 2 against 13,400 with 4.
/// More writers commit smaller batches, each paying its own WAL flush.
pub const DEFAULT_POSTGRES_WRITERS: u32 = 2;

/// `db_writers` unless configured: [`DEFAULT_POSTGRES_WRITERS`], but no more than the cores this
/// process may use (its CPU affinity or container quota, as `workers` follows). A replica given
/// one core of a shared host commits on one connection: two replicas of 1 HTTP worker and 1
/// writer each served 8,956 / 9,593 look-ups/s where two of 1 worker and 2 writers served
/// 8,366 / 7,422 (PostgreSQL on the same 2 cores, interleaved).
pub fn default_db_writers(cores: usize) -> u32 {
    u32::try_from(cores)
        .unwrap_or(u32::MAX)
        .clamp(1, DEFAULT_POSTGRES_WRITERS)
}

/// The national CP-IS API's base path (Consumer guide's examples: `…/cpis/FHIR/R4/CareTeam`).
pub const NATIONAL_BASE_PATH: &str = "/cpis/FHIR/R4";

/// `base_paths`: each `/segment[/segment…]` of URL-safe characters, not the root, no trailing
/// slash (that it names no path the API serves itself is checked at start-up, by `api`).
fn base_paths(listed: Option<String>) -> Result<Vec<String>, String> {
    let Some(listed) = listed else {
        return Ok(vec![NATIONAL_BASE_PATH.to_owned()]);
    };
    let mut out = Vec::new();
    for p in listed.lines().map(str::trim).filter(|p| !p.is_empty()) {
        let segments_ok = p.strip_prefix('/').is_some_and(|rest| {
            !rest.is_empty()
                && rest.split('/').all(|seg| {
                    !seg.is_empty()
                        && seg
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                })
        });
        if !segments_ok {
            return Err(format!(
                "'{p}' is not a path like /cpis/FHIR/R4 (segments of letters, digits, - . _ ~)"
            ));
        }
        if !out.iter().any(|o| o == p) {
            out.push(p.to_owned());
        }
    }
    Ok(out)
}

/// Settings that may hold a list of strings (TOML arrays; comma-separated in the environment).
const STRING_LISTS: &[&str] = &["auth.audience", "base_paths"];

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

fn env_name(key: &str) -> String {
    format!("CPIS_{}", key.to_ascii_uppercase().replace('.', "_"))
}

fn bad(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("`{key}` ({}): {why}", env_name(key)))
}

/// Where an issuer's public keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    PemFile(PathBuf),
    JwksFile(PathBuf),
    JwksUrl {
        url: String,
        refresh: std::time::Duration,
        ca_file: Option<PathBuf>,
    },
}

/// Whether a TLS listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Optional,
    Required,
}

/// The server's TLS configuration (`tls.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Mutual TLS: the CAs of calling systems' certificates, and whether one is required.
    pub client_ca: Option<(PathBuf, ClientAuth)>,
    /// Client certificate subjects bound to councils' ODS codes.
    pub bindings: Vec<(String, String)>,
}

/// Where a token's role, organisation, user id and name are read (see `auth::claims`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStyle {
    /// `role`, `org`, `sub`, `name`: this service's own tokens.
    Cpis,
    /// NHS CIS2: the selected role profile (`selected_roleid`) among `nhsid_nrbac_roles`.
    Cis2,
}

/// One trusted issuer of bearer tokens and the keys that verify them.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerSettings {
    pub issuer: String,
    pub keys: KeySource,
    /// The algorithms its tokens may be signed with (never empty; never the token's choice).
    pub algorithms: Vec<Algorithm>,
    pub kid: Option<String>,
    /// Accepted `aud` values (never empty).
    pub audiences: Vec<String>,
    pub claims: ClaimStyle,
    /// Where the user id and display name are read, when not the style's defaults.
    pub user_claim: Option<String>,
    pub name_claim: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub issuer: Option<String>,
    /// The first accepted audience (the one `token` mints for).
    pub audience: String,
    /// Every accepted audience.
    pub audiences: Vec<String>,
    /// Trusted issuers: `auth.issuers`, then `auth.issuer` with `auth.public_key_file`.
    pub issuers: Vec<IssuerSettings>,
    pub public_key_file: Option<PathBuf>,
    pub algorithm: Algorithm,
    pub kid: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// Longest `exp − iat` accepted.
    pub max_token_lifetime_secs: u64,
    /// Window in which identical refused authentications are folded into one AuditEvent.
    pub failure_fold_secs: u64,
}

/// Bounds on what one request, and all requests together, may cost (README "Limits").
#[derive(Debug, Clone)]
pub struct Limits {
    pub lookups_per_user_per_minute: u32,
    pub lookups_per_org_per_minute: u32,
    pub fishing_distinct_people: u32,
    pub fishing_window_secs: u64,
    pub body_max_depth: usize,
    pub bodies_in_flight: usize,
    pub parsed_in_flight: usize,
    pub wait: std::time::Duration,
    pub body_timeout: std::time::Duration,
    pub max_url_bytes: usize,
    pub max_query_params: usize,
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub base_url: String,
    /// Where the FHIR API is served besides the root (see `api::configure`).
    pub base_paths: Vec<String>,
    pub body_limit: usize,
    pub allow_test_nhs_numbers: bool,
    pub workers: usize,
    pub db_read_pool_size: u32,
    pub db_writers: u32,
    /// DOMAIN.md "Retention": visible for this many months after the plan ends.
    pub retention_months: u32,
    pub max_page_size: usize,
    pub max_bundle_entries: usize,
    /// How long a batch Bundle's slice holds the writer while others wait (`api::transaction`).
    pub bulk_slice: std::time::Duration,
    /// Whether the bulk lane's threads are lowered (`lane`).
    pub bulk_low_priority: bool,
    pub bundle_body_limit: usize,
    /// The audit trail's own, longer retention (DOMAIN.md "Retention").
    pub audit_retention_months: u32,
    /// How often the lifecycle runs inside the server; `None` when it is off.
    pub lifecycle_interval: Option<std::time::Duration>,
    /// How often the notification worker looks for work unwoken; `None` when it is off.
    pub notify_interval: Option<std::time::Duration>,
    pub notify_backoff_base: std::time::Duration,
    pub notify_backoff_cap: std::time::Duration,
    pub notify_error_after: i64,
    /// Subscriptions may post over plain http to this machine (development, tests).
    pub notify_allow_loopback: bool,
    pub auth: AuthSettings,
    pub limits: Limits,
    /// Run pending migrations at start-up (else refuse to start on an old schema).
    pub migrate: bool,
    pub shutdown_grace: std::time::Duration,
    /// How long a stopping server keeps serving as "not ready" first.
    pub shutdown_drain: std::time::Duration,
    /// The bearer token `GET /metrics` requires; none: loopback callers only.
    pub metrics_token: Option<String>,
    /// HTTPS (and mutual TLS) when configured; plain HTTP otherwise.
    pub tls: Option<TlsSettings>,
    /// Whether the server refreshes JWKS URLs by itself (always, but for tests, which step
    /// `Trust` themselves).
    pub refresh_keys: bool,
    /// Development mode: trust the data directory's dev key and load demo data.
    pub dev: bool,
    /// The audit team's exports and report.
    pub audit: AuditSettings,
}

/// The audit team's bulk exports and access report (see `audit::export`, `audit::report`).
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub export_dir: PathBuf,
    pub export_expiry: std::time::Duration,
    pub exports_at_once: i64,
    /// Minutes after midnight (UK time) the working day starts and ends.
    pub working_hours: (u32, u32),
    pub distinct_people_per_day: u64,
    pub silent_reads: u64,
    pub probe_misses: u64,
    pub refusals: u64,
    /// The longest period, in days, one access report over HTTP may cover.
    pub report_max_days: i64,
}

/// `HH:MM-HH:MM` as minutes after midnight.
fn working_hours(v: &str) -> Option<(u32, u32)> {
    let minutes = |t: &str| {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && m.to_string().len() <= 2).then_some(h * 60 + m)
    };
    let (a, b) = v.split_once('-')?;
    let (a, b) = (minutes(a)?, minutes(b)?);
    (a < b).then_some((a, b))
}

/// Values given on the command line; they win over file and environment.
#[derive(Debug, Default, Clone)]
pub struct CliOverrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub data_dir: Option<String>,
    pub dev: bool,
    /// `serve --no-migrate`.
    pub no_migrate: bool,
}

/// A configuration file, flattened: scalars and string lists by dotted key, and the tables of
/// each list of tables.
#[derive(Debug, Default)]
struct Raw {
    values: BTreeMap<String, String>,
    tables: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

fn scalar(key: &str, v: &toml::Value) -> Result<String, ConfigError> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(ConfigError(format!(
            "`{key}`: use a string, a number or true/false"
        ))),
    }
}

/// A list of strings kept as one value, its items separated by newlines (which no item may hold).
fn joined_list(key: &str, items: &[toml::Value]) -> Result<String, ConfigError> {
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let item = scalar(&format!("{key}[{i}]"), v)?;
        if item.contains('\n') || item.trim().is_empty() {
            return Err(ConfigError(format!(
                "`{key}[{i}]`: an item must be one non-empty line"
            )));
        }
        out.push(item);
    }
    Ok(out.join("\n"))
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Raw) -> Result<(), ConfigError> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out)?,
            toml::Value::Array(items) => {
                if let Some((_, item_keys, _)) = TABLE_LISTS.iter().find(|(n, _, _)| *n == key) {
                    let mut tables = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let here = format!("{key}[{i}]");
                        let toml::Value::Table(t) = item else {
                            return Err(ConfigError(format!(
                                "`{here}`: must be a table ([[{key}]])"
                            )));
                        };
                        let mut fields = BTreeMap::new();
                        for (field, value) in t {
                            if !item_keys.iter().any(|(n, _)| n == field) {
                                return Err(ConfigError(format!(
                                    "unknown key `{here}.{field}`; known keys of {key}: {}",
                                    item_keys
                                        .iter()
                                        .map(|(n, _)| *n)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )));
                            }
                            let text = match value {
                                toml::Value::Array(list) => {
                                    joined_list(&format!("{here}.{field}"), list)?
                                }
                                other => scalar(&format!("{here}.{field}"), other)?,
                            };
                            fields.insert(field.clone(), text);
                        }
                        tables.push(fields);
                    }
                    out.tables.insert(key, tables);
                } else if STRING_LISTS.contains(&key.as_str()) {
                    out.values.insert(key.clone(), joined_list(&key, items)?);
                } else {
                    return Err(ConfigError(format!("`{key}`: takes one value, not a list")));
                }
            }
            other => {
                let text = scalar(&key, other)?;
                out.values.insert(key, text);
            }
        }
    }
    Ok(())
}

impl Settings {
    /// Loads settings from the process environment and an optional file.
    pub fn load(cli: &CliOverrides) -> Result<Self, ConfigError> {
        Self::load_from(cli, std::env::vars())
    }

    /// Loads settings from the given environment (tests pass their own).
    pub fn load_from(
        cli: &CliOverrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut file = Raw::default();
        if let Some(path) = &cli.config_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read the configuration file: {e}")))?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| {
                ConfigError(format!("the configuration file is not valid TOML: {e}"))
            })?;
            flatten("", &table, &mut file)?;
            if let Some(unknown) = file
                .values
                .keys()
                .find(|k| !KEYS.iter().any(|(n, _)| n == k))
            {
                return Err(ConfigError(format!(
                    "unknown key `{unknown}` in the configuration file; known keys: {}",
                    KEYS.iter()
                        .map(|(k, _)| *k)
                        .chain(TABLE_LISTS.iter().map(|(k, _, _)| *k))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let Raw {
            values: mut raw,
            tables,
        } = file;
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for (key, _) in KEYS {
            if let Some(v) = env.get(&env_name(key)) {
                let v = if STRING_LISTS.contains(key) {
                    v.split(',').map(str::trim).collect::<Vec<_>>().join("\n")
                } else {
                    v.clone()
                };
                raw.insert((*key).to_owned(), v);
            }
        }
        if let Some((key, _, _)) = TABLE_LISTS
            .iter()
            .find(|(k, _, _)| env.contains_key(&env_name(k)))
        {
            return Err(ConfigError(format!(
                "{} cannot be set in the environment: `{key}` is a list of tables; set it in the configuration file ([[{key}]])",
                env_name(key)
            )));
        }
        if let Some(unknown) = env
            .keys()
            .filter(|k| k.starts_with("CPIS_") && !k.starts_with("CPIS_TEST_"))
            .find(|k| !KEYS.iter().any(|(n, _)| env_name(n) == **k))
        {
            return Err(ConfigError(format!(
                "unknown environment variable {unknown}"
            )));
        }
        for (key, v) in [
            ("listen", &cli.listen),
            ("database_url", &cli.database_url),
            ("data_dir", &cli.data_dir),
        ] {
            if let Some(v) = v {
                raw.insert(key.to_owned(), v.clone());
            }
        }
        if cli.no_migrate {
            raw.insert("migrate".to_owned(), "false".to_owned());
        }
        Self::from_raw(&raw, &tables, cli.dev)
    }

    fn from_raw(
        raw: &BTreeMap<String, String>,
        tables: &BTreeMap<String, Vec<BTreeMap<String, String>>>,
        dev: bool,
    ) -> Result<Self, ConfigError> {
        let get = |k: &str| {
            raw.get(k)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let parse_bool = |k: &str, default: bool| -> Result<bool, ConfigError> {
            match get(k).as_deref() {
                None => Ok(default),
                Some("true" | "1" | "yes") => Ok(true),
                Some("false" | "0" | "no") => Ok(false),
                Some(v) => Err(bad(k, format!("'{v}' is not true or false"))),
            }
        };
        let parse_num = |k: &str, default: u64, min: u64| -> Result<u64, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n >= min => Ok(n),
                    _ => Err(bad(
                        k,
                        format!("'{v}' is not a whole number of at least {min}"),
                    )),
                },
            }
        };
        let listen_text = get("listen").unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            bad(
                "listen",
                format!("'{listen_text}' is not an address:port such as 127.0.0.1:8080"),
            )
        })?;
        let data_dir = PathBuf::from(get("data_dir").unwrap_or_else(|| "./cpis-data".to_owned()));
        let database_url = get("database_url")
            .unwrap_or_else(|| data_dir.join("cpis.db").to_string_lossy().into_owned());
        let base_url = get("base_url")
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(bad("base_url", "must start with http:// or https://"));
        }
        let base_paths = base_paths(get("base_paths")).map_err(|why| bad("base_paths", why))?;
        let algorithm = algorithm(get("auth.algorithm").as_deref().unwrap_or("RS512"))
            .map_err(|why| bad("auth.algorithm", why))?;
        let public_key_file = get("auth.public_key_file").map(PathBuf::from);
        let issuer = get("auth.issuer");
        if public_key_file.is_some() && issuer.is_none() {
            return Err(bad(
                "auth.issuer",
                "is required when auth.public_key_file is set",
            ));
        }
        let audiences: Vec<String> = match get("auth.audience") {
            Some(list) => list
                .lines()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
            None => vec!["cpis-fhir".to_owned()],
        };
        let mut issuers = issuer_tables(tables, &audiences)?;
        if let (Some(file), Some(iss)) = (&public_key_file, &issuer) {
            issuers.push(IssuerSettings {
                issuer: iss.clone(),
                keys: KeySource::PemFile(file.clone()),
                algorithms: vec![algorithm],
                kid: get("auth.kid"),
                audiences: audiences.clone(),
                claims: ClaimStyle::Cpis,
                user_claim: None,
                name_claim: None,
            });
        }
        let tls = match (get("tls.cert_file"), get("tls.key_file")) {
            (Some(cert), Some(key)) => Some(TlsSettings {
                cert_file: PathBuf::from(cert),
                key_file: PathBuf::from(key),
                client_ca: match (get("tls.client_ca_file"), get("tls.client_auth").as_deref()) {
                    (None, None) => None,
                    (None, Some(_)) => {
                        return Err(bad("tls.client_auth", "needs tls.client_ca_file"))
                    }
                    (Some(ca), None | Some("optional")) => {
                        Some((PathBuf::from(ca), ClientAuth::Optional))
                    }
                    (Some(ca), Some("required")) => Some((PathBuf::from(ca), ClientAuth::Required)),
                    (Some(_), Some(other)) => {
                        return Err(bad(
                            "tls.client_auth",
                            format!("'{other}' is neither optional nor required"),
                        ))
                    }
                },
                bindings: binding_tables(tables)?,
            }),
            (None, None) => {
                if get("tls.client_ca_file").is_some() || tables.contains_key("tls.client_bindings")
                {
                    return Err(bad(
                        "tls.client_ca_file",
                        "mutual TLS needs tls.cert_file and tls.key_file",
                    ));
                }
                None
            }
            (Some(_), None) => return Err(bad("tls.key_file", "is required with tls.cert_file")),
            (None, Some(_)) => return Err(bad("tls.cert_file", "is required with tls.key_file")),
        };
        if let Some(t) = &tls {
            if !t.bindings.is_empty() && t.client_ca.is_none() {
                return Err(bad(
                    "tls.client_ca_file",
                    "client certificate bindings need the CA that issues those certificates",
                ));
            }
        }
        let base_url = match (&tls, get("base_url")) {
            (Some(_), None) => format!("https://{listen}"),
            _ => base_url,
        };
        if tls.is_none() && !listen.ip().is_loopback() && !parse_bool("allow_plain_http", false)? {
            return Err(bad(
                "allow_plain_http",
                format!(
                    "{listen} is not a loopback address: configure tls.cert_file and tls.key_file, \
                     or set allow_plain_http = true behind a TLS-terminating proxy"
                ),
            ));
        }
        let size = |k: &str, default: u64, min: u64| -> Result<usize, ConfigError> {
            usize::try_from(parse_num(k, default, min)?).map_err(|_| bad(k, "too large"))
        };
        let bundle_body_limit = size("bundle_body_limit", 32 * 1024 * 1024, 1024)?;
        let count32 = |k: &str, default: u64| -> Result<u32, ConfigError> {
            u32::try_from(parse_num(k, default, 0)?).map_err(|_| bad(k, "too large"))
        };
        let limits = Limits {
            lookups_per_user_per_minute: count32("limits.lookups_per_user_per_minute", 120)?,
            lookups_per_org_per_minute: count32("limits.lookups_per_org_per_minute", 6000)?,
            fishing_distinct_people: count32("limits.fishing_distinct_people", 50)?,
            fishing_window_secs: parse_num("limits.fishing_window_secs", 28_800, 60)?,
            body_max_depth: size("limits.body_max_depth", 32, 8)?,
            bodies_in_flight: size("limits.bodies_in_flight", 32 * 1024 * 1024, 1024)?,
            parsed_in_flight: size("limits.parsed_in_flight", 96 * 1024 * 1024, 1024)?,
            wait: std::time::Duration::from_secs(parse_num("limits.wait_secs", 10, 1)?),
            body_timeout: std::time::Duration::from_secs(parse_num(
                "limits.body_timeout_secs",
                60,
                1,
            )?),
            max_url_bytes: size("limits.max_url_bytes", 8192, 256)?,
            max_query_params: size("limits.max_query_params", 64, 8)?,
            max_connections: size("limits.max_connections", 1024, 16)?,
        };
        if limits.bodies_in_flight < bundle_body_limit {
            return Err(bad(
                "limits.bodies_in_flight",
                "must be at least bundle_body_limit, or no Bundle of that size could ever be received",
            ));
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let export_dir = get("audit.export_dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("exports"));
        Ok(Settings {
            listen,
            data_dir,
            database_url,
            base_url,
            base_paths,
            body_limit: usize::try_from(parse_num("body_limit", 10 * 1024 * 1024, 1024)?)
                .map_err(|_| bad("body_limit", "too large"))?,
            allow_test_nhs_numbers: parse_bool("allow_test_nhs_numbers", dev)?,
            // One per core: measured on 2 cores, 2 workers beat 1 (look-ups 8,400–8,900/s against
            // 7,100–7,500/s; bulk load 27,900 against 25,200 resources/s) though the writer
            // thread shares them; 3 or 4 gained nothing.
            workers: usize::try_from(parse_num("workers", cores.max(1) as u64, 1)?)
                .map_err(|_| bad("workers", "too large"))?,
            db_read_pool_size: u32::try_from(parse_num("db_read_pool_size", 8, 1)?)
                .map_err(|_| bad("db_read_pool_size", "too large"))?,
            db_writers: u32::try_from(parse_num(
                "db_writers",
                u64::from(default_db_writers(cores)),
                1,
            )?)
            .map_err(|_| bad("db_writers", "too large"))?,
            retention_months: u32::try_from(parse_num("retention_months", 12, 1)?)
                .map_err(|_| bad("retention_months", "too large"))?,
            max_page_size: usize::try_from(parse_num("max_page_size", 100, 1)?)
                .map_err(|_| bad("max_page_size", "too large"))?,
            max_bundle_entries: usize::try_from(parse_num("max_bundle_entries", 10_000, 1)?)
                .map_err(|_| bad("max_bundle_entries", "too large"))?,
            bulk_slice: std::time::Duration::from_millis(parse_num("bulk_slice_ms", 2, 0)?),
            bulk_low_priority: parse_bool("bulk_low_priority", true)?,
            bundle_body_limit,
            audit_retention_months: u32::try_from(parse_num("audit_retention_months", 96, 1)?)
                .map_err(|_| bad("audit_retention_months", "too large"))?,
            lifecycle_interval: match parse_num("lifecycle_interval_secs", 900, 0)? {
                0 => None,
                n => Some(std::time::Duration::from_secs(n)),
            },
            notify_interval: match parse_num("notify_interval_ms", 1000, 0)? {
                0 => None,
                n => Some(std::time::Duration::from_millis(n)),
            },
            notify_backoff_base: std::time::Duration::from_secs(parse_num(
                "notify_backoff_base_secs",
                10,
                1,
            )?),
            notify_backoff_cap: std::time::Duration::from_secs(parse_num(
                "notify_backoff_cap_secs",
                3600,
                1,
            )?),
            notify_error_after: i64::try_from(parse_num("notify_error_after", 3, 1)?)
                .map_err(|_| bad("notify_error_after", "too large"))?,
            notify_allow_loopback: parse_bool("notify_allow_http_loopback", dev)?,
            auth: AuthSettings {
                issuer,
                audience: audiences
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "cpis-fhir".to_owned()),
                audiences,
                issuers,
                public_key_file,
                algorithm,
                kid: get("auth.kid"),
                leeway_secs: parse_num("auth.leeway_secs", 30, 0)?,
                max_token_lifetime_secs: parse_num("auth.max_token_lifetime_secs", 43_200, 60)?,
                failure_fold_secs: parse_num("auth.failure_fold_secs", 60, 0)?,
            },
            limits,
            migrate: parse_bool("migrate", true)?,
            shutdown_grace: std::time::Duration::from_secs(parse_num(
                "shutdown_grace_secs",
                30,
                1,
            )?),
            shutdown_drain: std::time::Duration::from_secs(parse_num("shutdown_drain_secs", 0, 0)?),
            metrics_token: match get("metrics_token") {
                Some(t) if t.trim().len() < 16 => {
                    return Err(bad("metrics_token", "must be at least 16 characters"))
                }
                other => other.map(|t| t.trim().to_owned()),
            },
            refresh_keys: true,
            tls,
            dev,
            audit: AuditSettings {
                export_dir,
                export_expiry: std::time::Duration::from_secs(parse_num(
                    "audit.export_expiry_secs",
                    86_400,
                    1,
                )?),
                exports_at_once: i64::try_from(parse_num("audit.exports_at_once", 2, 1)?)
                    .map_err(|_| bad("audit.exports_at_once", "too large"))?,
                working_hours: match get("audit.working_hours") {
                    None => (8 * 60, 18 * 60),
                    Some(v) => working_hours(&v).ok_or_else(|| {
                        bad(
                            "audit.working_hours",
                            "must be HH:MM-HH:MM, the start before the end (for example 08:00-18:00)",
                        )
                    })?,
                },
                distinct_people_per_day: parse_num("audit.report_distinct_people_per_day", 30, 1)?,
                silent_reads: parse_num("audit.report_silent_reads", 5, 1)?,
                probe_misses: parse_num("audit.report_probe_misses", 20, 1)?,
                refusals: parse_num("audit.report_refusals", 20, 1)?,
                report_max_days: i64::try_from(parse_num("audit.report_max_days", 93, 1)?)
                    .map_err(|_| bad("audit.report_max_days", "too large"))?,
            },
        })
    }

    /// Settings for tests and tools: defaults over the given data directory.
    pub fn for_data_dir(data_dir: &Path, dev: bool) -> Result<Self, ConfigError> {
        let mut raw = BTreeMap::new();
        raw.insert(
            "data_dir".to_owned(),
            data_dir.to_string_lossy().into_owned(),
        );
        Self::from_raw(&raw, &BTreeMap::new(), dev)
    }
}

/// A public-key signature algorithm by its JOSE name (RFC 7518 §3.1).
fn algorithm(name: &str) -> Result<Algorithm, String> {
    Ok(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        other => return Err(format!("'{other}' is not a supported public-key algorithm")),
    })
}

/// The `[[tls.client_bindings]]` tables: (certificate subject, ODS code).
fn binding_tables(
    tables: &BTreeMap<String, Vec<BTreeMap<String, String>>>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, t) in tables
        .get("tls.client_bindings")
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = |name: &str| {
            t.get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    ConfigError(format!("`tls.client_bindings[{i}].{name}`: is required"))
                })
        };
        let (subject, ods) = (field("subject")?, field("ods")?.to_ascii_uppercase());
        if !ods.bytes().all(|b| b.is_ascii_alphanumeric()) || ods.len() > 10 {
            return Err(ConfigError(format!(
                "`tls.client_bindings[{i}].ods`: '{ods}' is not an ODS code"
            )));
        }
        out.push((subject, ods));
    }
    Ok(out)
}

/// The `[[auth.issuers]]` tables, each checked, with the key that names a bad value.
fn issuer_tables(
    tables: &BTreeMap<String, Vec<BTreeMap<String, String>>>,
    default_audiences: &[String],
) -> Result<Vec<IssuerSettings>, ConfigError> {
    let mut out = Vec::new();
    for (i, t) in tables.get("auth.issuers").into_iter().flatten().enumerate() {
        let here = |field: &str| format!("auth.issuers[{i}].{field}");
        let field = |name: &str| {
            t.get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let required = |name: &str| {
            field(name).ok_or_else(|| ConfigError(format!("`{}`: is required", here(name))))
        };
        let issuer = required("issuer")?;
        let keys = match (
            field("public_key_file"),
            field("jwks_file"),
            field("jwks_url"),
        ) {
            (Some(pem), None, None) => KeySource::PemFile(PathBuf::from(pem)),
            (None, Some(file), None) => KeySource::JwksFile(PathBuf::from(file)),
            (None, None, Some(url)) => {
                if !url.starts_with("https://") {
                    return Err(ConfigError(format!(
                        "`{}`: must be an https:// URL (keys fetched in the clear could be replaced on the way)",
                        here("jwks_url")
                    )));
                }
                let refresh = match field("jwks_refresh_secs") {
                    None => 3600,
                    Some(v) => v.parse::<u64>().ok().filter(|n| *n >= 60).ok_or_else(|| {
                        ConfigError(format!(
                            "`{}`: '{v}' is not a whole number of at least 60",
                            here("jwks_refresh_secs")
                        ))
                    })?,
                };
                KeySource::JwksUrl {
                    url,
                    refresh: std::time::Duration::from_secs(refresh),
                    ca_file: field("jwks_ca_file").map(PathBuf::from),
                }
            }
            (None, None, None) => {
                return Err(ConfigError(format!(
                    "`{}`: is required (or jwks_file, or jwks_url)",
                    here("public_key_file")
                )))
            }
            _ => {
                return Err(ConfigError(format!(
                    "`{}`: give one of public_key_file, jwks_file and jwks_url",
                    here("issuer")
                )))
            }
        };
        let default_algorithm = match keys {
            KeySource::PemFile(_) => "RS512",
            _ => "RS256",
        };
        let algorithms = field("algorithm")
            .unwrap_or_else(|| default_algorithm.to_owned())
            .lines()
            .map(|a| algorithm(a.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| ConfigError(format!("`{}`: {why}", here("algorithm"))))?;
        if matches!(keys, KeySource::PemFile(_)) && algorithms.len() > 1 {
            return Err(ConfigError(format!(
                "`{}`: a PEM key is pinned to one algorithm",
                here("algorithm")
            )));
        }
        let claims = match field("claims").as_deref() {
            None | Some("cpis") => ClaimStyle::Cpis,
            Some("cis2") => ClaimStyle::Cis2,
            Some(other) => {
                return Err(ConfigError(format!(
                    "`{}`: '{other}' is neither cpis nor cis2",
                    here("claims")
                )))
            }
        };
        let audiences = match field("audience") {
            Some(list) => list
                .lines()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
            None => default_audiences.to_vec(),
        };
        if out
            .iter()
            .any(|o: &IssuerSettings| o.issuer == issuer && o.kid == field("kid"))
        {
            return Err(ConfigError(format!(
                "`{}`: issuer '{issuer}' is listed twice with the same kid",
                here("issuer")
            )));
        }
        out.push(IssuerSettings {
            issuer,
            keys,
            algorithms,
            kid: field("kid"),
            audiences,
            claims,
            user_claim: field("user_claim"),
            name_claim: field("name_claim"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)], cli: CliOverrides) -> Result<Settings, ConfigError> {
        Settings::load_from(
            &cli,
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn a_process_given_one_core_commits_on_one_writer_connection_and_a_larger_one_on_two() {
        assert_eq!(default_db_writers(0), 1);
        assert_eq!(default_db_writers(1), 1);
        assert_eq!(default_db_writers(2), 2);
        assert_eq!(default_db_writers(64), 2);
    }

    #[test]
    fn defaults_listen_on_loopback_with_sqlite_in_the_data_dir() {
        let s = load(&[], CliOverrides::default()).ok();
        let s = s.as_ref();
        assert_eq!(
            s.map(|s| s.listen.to_string()),
            Some("127.0.0.1:8080".to_owned())
        );
        assert!(s.is_some_and(|s| s.database_url.ends_with("cpis.db")));
        assert_eq!(s.map(|s| s.body_limit), Some(10 * 1024 * 1024));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let e = load(&[("CPIS_BODY_LIMIT", "lots")], CliOverrides::default()).err();
        assert!(e.is_some_and(|e| e.to_string().contains("body_limit")));
    }

    #[test]
    fn an_unknown_variable_is_refused() {
        let e = load(&[("CPIS_LISTN", "x")], CliOverrides::default()).err();
        assert!(e.is_some_and(|e| e.to_string().contains("CPIS_LISTN")));
    }

    #[test]
    fn the_environment_wins_over_the_file_and_flags_win_over_both() {
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir else { return };
        let file = dir.path().join("c.toml");
        let _ = std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\n[auth]\naudience = \"file\"\n",
        );
        let cli = CliOverrides {
            config_file: Some(file.clone()),
            ..Default::default()
        };
        let s = load(&[("CPIS_AUTH_AUDIENCE", "env")], cli).ok();
        assert_eq!(s.as_ref().map(|s| s.auth.audience.as_str()), Some("env"));
        assert_eq!(s.map(|s| s.listen.port()), Some(1));
        let cli = CliOverrides {
            config_file: Some(file),
            listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let s = load(&[("CPIS_LISTEN", "127.0.0.1:3")], cli).ok();
        assert_eq!(s.map(|s| s.listen.port()), Some(2));
    }

    #[test]
    fn an_unknown_file_key_is_refused() {
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir else { return };
        let file = dir.path().join("c.toml");
        let _ = std::fs::write(&file, "lisen = \"x\"\n");
        let cli = CliOverrides {
            config_file: Some(file),
            ..Default::default()
        };
        let e = load(&[], cli).err();
        assert!(e.is_some_and(|e| e.to_string().contains("lisen")));
    }

    fn load_file(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError(e.to_string()))?;
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text).map_err(|e| ConfigError(e.to_string()))?;
        load(
            env,
            CliOverrides {
                config_file: Some(file),
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_list_of_issuers_is_read_from_tables_with_defaults_and_the_single_key_form_still_works() {
        let s = load_file(
            "[auth]\naudience = [\"cpis-fhir\", \"cpis-next\"]\nissuer = \"https://old\"\npublic_key_file = \"old.pem\"\n\n\
             [[auth.issuers]]\nissuer = \"https://idp-a\"\npublic_key_file = \"a.pem\"\nalgorithm = \"PS256\"\nkid = \"k1\"\n\n\
             [[auth.issuers]]\nissuer = \"https://idp-b\"\npublic_key_file = \"b.pem\"\naudience = \"b-only\"\n",
            &[],
        )
        .unwrap();
        let iss: Vec<_> = s.auth.issuers.iter().map(|i| i.issuer.as_str()).collect();
        assert_eq!(iss, ["https://idp-a", "https://idp-b", "https://old"]);
        assert_eq!(s.auth.issuers[0].algorithms, [Algorithm::PS256]);
        assert_eq!(s.auth.issuers[0].kid.as_deref(), Some("k1"));
        assert_eq!(s.auth.issuers[0].audiences, ["cpis-fhir", "cpis-next"]);
        assert_eq!(s.auth.issuers[1].algorithms, [Algorithm::RS512]);
        assert_eq!(s.auth.issuers[1].audiences, ["b-only"]);
        assert_eq!(s.auth.audience, "cpis-fhir");
    }

    #[test]
    fn an_issuer_may_publish_its_keys_as_a_jwks_with_its_algorithms_and_claim_style() {
        let s = load_file(
            "[[auth.issuers]]\nissuer = \"https://cis2\"\njwks_url = \"https://cis2/jwks\"\n\
             algorithm = [\"RS256\", \"PS256\"]\nclaims = \"cis2\"\njwks_refresh_secs = 600\n\n\
             [[auth.issuers]]\nissuer = \"https://local\"\njwks_file = \"keys.json\"\n",
            &[],
        )
        .unwrap();
        let cis2 = &s.auth.issuers[0];
        assert_eq!(cis2.algorithms, [Algorithm::RS256, Algorithm::PS256]);
        assert_eq!(cis2.claims, ClaimStyle::Cis2);
        assert!(
            matches!(&cis2.keys, KeySource::JwksUrl { refresh, .. } if refresh.as_secs() == 600)
        );
        assert_eq!(s.auth.issuers[1].algorithms, [Algorithm::RS256]);
        assert_eq!(s.auth.issuers[1].claims, ClaimStyle::Cpis);
        for (bad, named) in [
            ("jwks_url = \"http://cis2/jwks\"", "jwks_url"),
            ("jwks_url = \"https://a\"\njwks_file = \"b\"", "issuer"),
            ("jwks_url = \"https://a\"\nclaims = \"ldap\"", "claims"),
            (
                "jwks_url = \"https://a\"\njwks_refresh_secs = 5",
                "jwks_refresh_secs",
            ),
            (
                "public_key_file = \"a\"\nalgorithm = [\"RS256\", \"PS256\"]",
                "algorithm",
            ),
        ] {
            let e = load_file(&format!("[[auth.issuers]]\nissuer = \"x\"\n{bad}\n"), &[]);
            assert!(
                e.as_ref()
                    .is_err_and(|e| e.to_string().contains(&format!("auth.issuers[0].{named}"))),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn plain_http_is_only_for_loopback_unless_allowed_and_tls_needs_both_files() {
        let e = load(&[("CPIS_LISTEN", "0.0.0.0:8080")], CliOverrides::default());
        assert!(e.is_err_and(|e| e.to_string().contains("allow_plain_http")));
        let s = load(
            &[
                ("CPIS_LISTEN", "0.0.0.0:8080"),
                ("CPIS_ALLOW_PLAIN_HTTP", "true"),
            ],
            CliOverrides::default(),
        );
        assert!(s.is_ok());
        let s = load(
            &[
                ("CPIS_LISTEN", "0.0.0.0:8443"),
                ("CPIS_TLS_CERT_FILE", "c.pem"),
                ("CPIS_TLS_KEY_FILE", "k.pem"),
            ],
            CliOverrides::default(),
        )
        .unwrap();
        assert_eq!(s.base_url, "https://0.0.0.0:8443");
        assert!(s.tls.is_some_and(|t| t.client_ca.is_none()));
        let e = load(&[("CPIS_TLS_CERT_FILE", "c.pem")], CliOverrides::default());
        assert!(e.is_err_and(|e| e.to_string().contains("tls.key_file")));
        let e = load(
            &[
                ("CPIS_TLS_CERT_FILE", "c"),
                ("CPIS_TLS_KEY_FILE", "k"),
                ("CPIS_TLS_CLIENT_CA_FILE", "ca"),
                ("CPIS_TLS_CLIENT_AUTH", "sometimes"),
            ],
            CliOverrides::default(),
        );
        assert!(e.is_err_and(|e| e.to_string().contains("tls.client_auth")));
        let e = load_file(
            "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\n[[tls.client_bindings]]\nsubject = \"la901\"\nods = \"LA901\"\n",
            &[],
        );
        assert!(e.is_err_and(|e| e.to_string().contains("tls.client_ca_file")));
    }

    #[test]
    fn a_bad_key_or_value_inside_a_list_is_named_by_its_place() {
        let e = load_file(
            "[[auth.issuers]]\nissuer = \"x\"\npublic_key_file = \"a\"\ncolour = \"blue\"\n",
            &[],
        );
        assert!(e.is_err_and(|e| e.to_string().contains("auth.issuers[0].colour")));
        let e = load_file(
            "[[auth.issuers]]\nissuer = \"x\"\npublic_key_file = \"a\"\n[[auth.issuers]]\nissuer = \"y\"\npublic_key_file = \"b\"\nalgorithm = \"HS256\"\n",
            &[],
        );
        assert!(e.is_err_and(|e| e.to_string().contains("auth.issuers[1].algorithm")));
        let e = load_file("[[auth.issuers]]\nissuer = \"x\"\n", &[]);
        assert!(e.is_err_and(|e| e.to_string().contains("auth.issuers[0].public_key_file")));
        let e = load_file("listen = [\"a\", \"b\"]\n", &[]);
        assert!(e.is_err_and(|e| e.to_string().contains("`listen`: takes one value")));
        let e = load_file("[limits]\nwait_secs = 0\n", &[]);
        assert!(e.is_err_and(|e| e.to_string().contains("limits.wait_secs")));
    }

    #[test]
    fn a_string_list_comes_comma_separated_from_the_environment_and_a_table_list_not_at_all() {
        let s = load(&[("CPIS_AUTH_AUDIENCE", "a, b")], CliOverrides::default()).unwrap();
        assert_eq!(s.auth.audiences, ["a", "b"]);
        let e = load(&[("CPIS_AUTH_ISSUERS", "x")], CliOverrides::default());
        assert!(e.is_err_and(|e| e.to_string().contains("configuration file")));
    }
}
