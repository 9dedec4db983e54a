//! Benchmarks (README "Benchmarks"), each against the server started as a separate process on
//! 127.0.0.1:
//!
//! - `cpis-bench` (the look-up): builds a national-size synthetic register, drives
//!   `GET /Flag?patient:identifier=…` with a fixed number of keep-alive connections for a
//!   bounded time, and prints requests/s, p50/p99 latency, the server's peak RSS, and the audit
//!   rows written against the 2xx responses.
//! - `cpis-bench load` (bulk submission): the same national dataset sent by its 153 councils as
//!   batch Bundles of 1,000 entries (`PUT Patient/{nhs}` and `PUT Flag?identifier=…`), and
//!   prints resources/s, the time for the whole dataset, Bundle latency and peak RSS, and
//!   checks every entry was accepted and every plan stored.
//!
//! - `cpis-bench --notify true`: the look-up benchmark with every council subscribed to a
//!   webhook receiver inside the bench (127.0.0.1): also prints the access notifications
//!   delivered per second and their end-to-end lag (look-up committed → notification received),
//!   and checks every notifiable look-up reached its councils.
//!
//! Run them from a release build: `cargo build --release --bins`, then `target/release/cpis-bench`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cpis_fhir::auth::dev::{self, TokenRequest};
use cpis_fhir::domain::{FlagStatus, OdsCode, PlanType, Role};
use cpis_fhir::error::ApiError;
use cpis_fhir::nhs_number::NhsNumber;
use cpis_fhir::store::councils::CouncilRow;
use cpis_fhir::store::flags::FlagRow;
use cpis_fhir::store::patients::PatientRow;
use cpis_fhir::store::{self, Store};

#[derive(Parser, Debug)]
#[command(
    about = "CP-IS benchmarks: the look-up (default), bulk submission (`load`), the memory bound under hostile input (`hostile`) and the fuzzer (`fuzz`)"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Bench>,
    #[command(flatten)]
    lookup: Args,
}

mod hostile;

#[derive(clap::Subcommand, Debug)]
enum Bench {
    /// Bulk submission: the national dataset through batch Bundles.
    Load(LoadArgs),
    /// The memory bound: the costliest bodies found, from several clients at once.
    Hostile(hostile::HostileArgs),
    /// The fuzzer: mutated example resources and Bundles, JSON and XML.
    Fuzz(hostile::FuzzArgs),
}

#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// People in the dataset (each with a plan; one in 50 with a second plan elsewhere).
    #[arg(long, default_value_t = 200_000)]
    people: u32,
    /// Councils (each submits its own people).
    #[arg(long, default_value_t = 153)]
    councils: u32,
    /// Entries per Bundle.
    #[arg(long, default_value_t = 1_000)]
    entries: usize,
    /// Bundles in flight at once (councils submitting at the same time).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Port for the server.
    #[arg(long, default_value_t = 18182)]
    port: u16,
    /// Database: a postgres:// URL to benchmark on PostgreSQL (default: SQLite in the data
    /// directory).
    #[arg(long)]
    database: Option<String>,
    /// Server processes over that PostgreSQL database, connections spread over them.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
}

#[derive(clap::Args, Debug)]
struct Args {
    /// People in the synthetic register.
    #[arg(long, default_value_t = 200_000)]
    people: u32,
    /// Councils.
    #[arg(long, default_value_t = 153)]
    councils: u32,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured seconds (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Share of look-ups that find a record.
    #[arg(long, default_value_t = 0.3)]
    hit_ratio: f64,
    /// Keep the data here (reused when it already holds a register); default: a temp directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Port for the server.
    #[arg(long, default_value_t = 18181)]
    port: u16,
    /// Database: a postgres:// URL to benchmark on PostgreSQL (default: SQLite in the data
    /// directory).
    #[arg(long)]
    database: Option<String>,
    /// Server processes over that PostgreSQL database, connections spread over them.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Ask for the council with each plan (`_include=Flag:author`), as an EPR would.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    include_author: bool,
    /// Over HTTPS (TLS 1.3, keep-alive): the server gets the data directory's development
    /// certificate (`serve --dev --tls` makes the same), the clients trust its CA.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    tls: bool,
    /// Subscribe every council to a receiver in the bench and measure the notifications.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    notify: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => run(&cli.lookup),
        Some(Bench::Load(a)) => run_load(a),
        Some(Bench::Hostile(a)) => hostile::run_hostile(a),
        Some(Bench::Fuzz(a)) => hostile::run_fuzz(a),
    };
    if let Err(e) = result {
        eprintln!("cpis-bench: {e}");
        std::process::exit(1);
    }
}

/// The register's NHS numbers (the first `people` of the test range) and, after them, numbers
/// that are valid but not registered (the misses).
fn numbers(people: u32, misses: u32) -> Vec<String> {
    NhsNumber::test_numbers()
        .take((people + misses) as usize)
        .map(|n| n.as_str().to_owned())
        .collect()
}

const MISSES: u32 = 50_000;

fn run(args: &Args) -> Result<(), String> {
    let temp = args.data_dir.is_none();
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("cpis-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let db = database_of(&dir, &args.database, args.replicas)?;
    let public_key = dev::ensure_key(&dir)?;
    drop(public_key);
    {
        let store = Store::open(&db, 2)?;
        let existing = store
            .read_blocking(|c| Ok(store::councils::count(c)?))
            .map_err(|e: store::StoreError| e.to_string())?;
        if existing == 0 {
            let t = Instant::now();
            generate(&store, args)?;
            println!(
                "generated {} people in {:.1} s",
                args.people,
                t.elapsed().as_secs_f64()
            );
        }
    }
    let audits_before = {
        let store = Store::open(&db, 1)?;
        store
            .read_blocking(|c| Ok(store::audit::count(c)?))
            .map_err(|e: store::StoreError| e.to_string())?
    };
    let receiver = if args.notify {
        Some(notify_bench::subscribe_all(&db, args.port + 1)?)
    } else {
        None
    };
    let tls = if args.tls {
        Some(tls_client(&dir)?)
    } else {
        None
    };
    let servers = start_servers(&dir, args.port, &args.database, args.replicas, tls.as_ref())?;
    let result = drive(args, &dir, &servers.ports, tls.as_ref());
    let notified = receiver.map(|r| r.drain(&db, Duration::from_secs(60)));
    let rss = servers.stop();
    let (ok, other, latencies, measured) = result?;
    let store = Store::open(&db, 1)?;
    let audits = store
        .read_blocking(|c| Ok(store::audit::count(c)?))
        .map_err(|e: store::StoreError| e.to_string())?
        - audits_before;
    let mut l = latencies;
    l.sort_unstable();
    let pct = |p: f64| -> f64 {
        let idx = ((l.len() as f64 - 1.0) * p).round() as usize;
        l.get(idx).copied().unwrap_or(0) as f64 / 1000.0
    };
    println!(
        "database               {}",
        backend_name(&db, args.replicas)
    );
    println!(
        "transport              {}",
        if args.tls {
            "HTTPS (TLS, keep-alive)"
        } else {
            "HTTP (keep-alive)"
        }
    );
    println!("people                 {}", args.people);
    println!("connections            {}", args.connections);
    println!(
        "measured requests      {} in {:.1} s",
        l.len(),
        measured.as_secs_f64()
    );
    println!(
        "requests/s             {:.0}",
        l.len() as f64 / measured.as_secs_f64()
    );
    println!("latency p50            {:.2} ms", pct(0.50));
    println!("latency p99            {:.2} ms", pct(0.99));
    println!("latency max            {:.2} ms", pct(1.0));
    println!("2xx responses (all)    {ok}");
    println!("other responses        {other}");
    println!("audit events written   {audits}");
    println!(
        "audit == 2xx           {}",
        if audits == ok as i64 { "yes" } else { "NO" }
    );
    match rss {
        Some(kib) => println!("server peak RSS        {:.1} MiB", kib as f64 / 1024.0),
        None => println!("server peak RSS        unknown"),
    }
    if let Some(n) = notified {
        n?.print();
    }
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// The plan mix of DOMAIN.md "Scale": about 40% looked after, 25% on a child protection plan,
/// 30% with a plan ended in the last 12 months, 5% unborn-child plans; one in 50 people has a
/// second plan with another council.
fn generate(store: &Store, args: &Args) -> Result<(), String> {
    let councils = register_councils(store, args.councils)?;
    let now = chrono::Utc::now();
    let at = store::micros(now);
    let today = now.date_naive();
    let all = std::sync::Arc::new(numbers(args.people, 0));
    let chunk = 5_000u32;
    let mut start = 0;
    while start < args.people {
        let end = (start + chunk).min(args.people);
        let councils = councils.clone();
        let all = all.clone();
        store
            .write_blocking(move |c| {
                for i in start..end {
                    let n = all[i as usize].clone();
                    store::patients::insert(
                        c,
                        &PatientRow {
                            nhs_number: n.clone(),
                            family: format!("Family{i}"),
                            given: cpis_fhir::store::columns::JsonList(vec!["Alex".into()]),
                            birth_date: "2015-06-01".into(),
                            address_lines: None,
                            address_city: None,
                            address_district: None,
                            address_postal_code: None,
                            created_by: councils[(i as usize) % councils.len()].clone(),
                            version: 1,
                            updated_at: at,
                        },
                    )?;
                    let plans = if i % 50 == 0 { 2 } else { 1 };
                    for p in 0..plans {
                        let (la, plan, end) = plan_of(i, p, &councils);
                        let status = if end.is_some() {
                            FlagStatus::Inactive
                        } else {
                            FlagStatus::Active
                        };
                        store::flags::insert(
                            c,
                            &FlagRow {
                                id: uuid::Uuid::now_v7().to_string(),
                                nhs_number: n.clone(),
                                la_ods: la.clone(),
                                local_ref_system: format!(
                                    "https://{}.example.org/Id/plan",
                                    la.to_ascii_lowercase()
                                ),
                                local_ref_value: format!("P{i}-{p}"),
                                plan_type: plan.snomed().into(),
                                status,
                                period_start: (today - chrono::Duration::days(400)).to_string(),
                                period_end: end.map(|d| d.to_string()),
                                version: 1,
                                updated_at: at,
                            },
                        )?;
                    }
                }
                Ok::<(), ApiError>(())
            })
            .map_err(|e| e.to_string())?;
        start = end;
    }
    Ok(())
}

/// Registers `n` councils (LB000, LB001, …) straight into the database.
fn register_councils(store: &Store, n: u32) -> Result<Vec<String>, String> {
    let councils: Vec<String> = (0..n).map(|i| format!("LB{i:03}")).collect();
    let at = store::micros(chrono::Utc::now());
    let rows: Vec<CouncilRow> = councils
        .iter()
        .map(|ods| CouncilRow {
            ods_code: ods.clone(),
            name: format!("Council {ods}"),
            office_phone: "01632 960000".into(),
            emergency_phone: "01632 960999".into(),
            active: true,
            version: 1,
            updated_at: at,
        })
        .collect();
    store
        .write_blocking(move |c| {
            for r in &rows {
                store::councils::insert(c, r)?;
            }
            Ok(())
        })
        .map_err(|e: store::StoreError| e.to_string())?;
    Ok(councils)
}

/// Which council holds plan `p` (0 or 1) of person `i`, and what plan it is: the plan mix of
/// DOMAIN.md "Scale" (see [`generate`]).
fn plan_of(i: u32, p: usize, councils: &[String]) -> (String, PlanType, Option<chrono::NaiveDate>) {
    let today = chrono::Utc::now().date_naive();
    let la = councils[(i as usize + p * 7) % councils.len()].clone();
    let (plan, end) = match i % 20 {
        0..=7 => (PlanType::LookedAfter, None),
        8..=12 => (PlanType::ChildProtection, None),
        13..=18 => (
            PlanType::ChildProtection,
            Some(today - chrono::Duration::days(i64::from(i % 360))),
        ),
        _ => (PlanType::UnbornChildProtection, None),
    };
    (la, plan, end)
}

/// The database a benchmark runs on: the given PostgreSQL URL, or SQLite in `dir`.
fn database_of(dir: &Path, given: &Option<String>, replicas: usize) -> Result<String, String> {
    match given {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(url.clone())
        }
        Some(other) => Err(format!(
            "--database takes a postgres:// URL (SQLite is the default), not {other}"
        )),
        None if replicas > 1 => Err("--replicas needs --database postgres://…".into()),
        None => Ok(dir.join("cpis.db").to_string_lossy().into_owned()),
    }
}

fn backend_name(db: &str, replicas: usize) -> String {
    if db.starts_with("postgres") {
        format!("PostgreSQL, {replicas} server process(es)")
    } else {
        "SQLite".into()
    }
}

/// The server processes under a benchmark.
struct Servers {
    children: Vec<Child>,
    ports: Vec<u16>,
}

impl Servers {
    /// Stops them; the largest peak RSS among them (KiB).
    fn stop(mut self) -> Option<u64> {
        let rss = self
            .children
            .iter()
            .filter_map(|c| peak_rss_kib(c.id()))
            .max();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        rss
    }
}

/// The benchmark's TLS client: trusts the data directory's development CA, whose server
/// certificate it makes (once) for the servers.
fn tls_client(dir: &Path) -> Result<openssl::ssl::SslConnector, String> {
    cpis_fhir::tls::ensure_dev_certificates(dir)?;
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
        .map_err(|e| e.to_string())?;
    b.set_ca_file(dir.join("dev-ca.pem"))
        .map_err(|e| e.to_string())?;
    Ok(b.build())
}

/// A stream to a server: plain, or TLS through `tls`.
trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

fn connect(port: u16, tls: Option<&openssl::ssl::SslConnector>) -> Result<Box<dyn Conn>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    match tls {
        None => Ok(Box::new(tcp)),
        Some(c) => Ok(Box::new(
            c.connect("127.0.0.1", tcp).map_err(|e| e.to_string())?,
        )),
    }
}

/// `replicas` servers over one database, on `port`, `port + 10`, …
fn start_servers(
    dir: &Path,
    port: u16,
    database: &Option<String>,
    replicas: usize,
    tls: Option<&openssl::ssl::SslConnector>,
) -> Result<Servers, String> {
    let mut servers = Servers {
        children: Vec::new(),
        ports: Vec::new(),
    };
    for r in 0..replicas.max(1) {
        let p = port + 10 * r as u16;
        servers
            .children
            .push(start_server_on(dir, p, false, database.as_deref(), tls)?);
        servers.ports.push(p);
    }
    Ok(servers)
}

/// Starts the server over `dir`: trusting the dev key as a production key, or (`dev`) in dev
/// mode with its demo councils and people.
fn start_server(dir: &Path, port: u16, dev: bool) -> Result<Child, String> {
    start_server_on(dir, port, dev, None, None)
}

/// [`start_server`] over `database` (default: SQLite in `dir`), over TLS with `tls`.
fn start_server_on(
    dir: &Path,
    port: u16,
    dev: bool,
    database: Option<&str>,
    tls: Option<&openssl::ssl::SslConnector>,
) -> Result<Child, String> {
    let exe = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("cpis-fhir");
    let mut command = Command::new(&exe);
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir);
    if let Some(url) = database {
        command.args(["--database", url]);
    }
    if tls.is_some() {
        command
            .env("CPIS_TLS_CERT_FILE", dir.join("dev-server.pem"))
            .env("CPIS_TLS_KEY_FILE", dir.join("dev-server.key"));
    }
    if dev {
        // The fuzzer creates subscriptions from mutated input: the server under it never posts
        // notifications (nor resolves their hosts).
        command.arg("--dev").env("CPIS_NOTIFY_INTERVAL_MS", "0");
    } else {
        command
            .env(
                "CPIS_AUTH_PUBLIC_KEY_FILE",
                dir.join("dev-signing-key.pub.pem"),
            )
            .env("CPIS_AUTH_ISSUER", dev::DEV_ISSUER);
    }
    let child = command
        // One clinician makes every look-up: the limits are set out of reach (still counted).
        .env("CPIS_LIMITS_LOOKUPS_PER_USER_PER_MINUTE", "1000000000")
        .env("CPIS_LIMITS_LOOKUPS_PER_ORG_PER_MINUTE", "1000000000")
        .env("CPIS_ALLOW_TEST_NHS_NUMBERS", "true")
        .env("CPIS_NOTIFY_ALLOW_HTTP_LOOPBACK", "true")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {}: {e} (build it with cargo build --release)",
                exe.display()
            )
        })?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut s) = connect(port, tls) {
            let _ = s.write_all(b"GET /metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            if buf.starts_with(b"HTTP/1.1 200") {
                return Ok(child);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("the server did not start".into())
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// A figure in KiB from `/proc/{pid}/status` (`VmHWM:` peak RSS, `VmRSS:` RSS now).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

type Outcome = (u64, u64, Vec<u32>, Duration);

fn drive(
    args: &Args,
    dir: &Path,
    ports: &[u16],
    tls: Option<&openssl::ssl::SslConnector>,
) -> Result<Outcome, String> {
    let token = dev::mint(
        dir,
        &TokenRequest {
            role: Role::Clinician,
            org: OdsCode::parse("RDE01").ok_or("ods")?,
            user: "555000000001".into(),
            name: Some("Dr Bench".into()),
            ttl_secs: 3600,
            audience: "cpis-fhir".into(),
        },
    )?;
    let mut all = numbers(args.people, MISSES);
    let misses: Arc<Vec<String>> = Arc::new(all.split_off(args.people as usize));
    let hits: Arc<Vec<String>> = Arc::new(all);
    let include = if args.include_author {
        "&_include=Flag:author"
    } else {
        ""
    };
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..args.connections {
        let (hits, misses, measuring, stop) = (
            hits.clone(),
            misses.clone(),
            measuring.clone(),
            stop.clone(),
        );
        let token = token.clone();
        let port = ports[t % ports.len()];
        let ratio = args.hit_ratio;
        let include = include.to_owned();
        let tls = tls.cloned();
        handles.push(std::thread::spawn(move || -> Result<(u64, u64, Vec<u32>), String> {
            let mut conn = connect(port, tls.as_ref())?;
            let mut rng: u64 = 0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let mut buf = vec![0u8; 64 * 1024];
            let (mut ok, mut other) = (0u64, 0u64);
            let mut lat = Vec::with_capacity(400_000);
            while !stop.load(Ordering::Relaxed) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let pick = (rng >> 11) as f64 / (1u64 << 53) as f64;
                let n = if pick < ratio {
                    &hits[(rng % hits.len() as u64) as usize]
                } else {
                    &misses[(rng % misses.len() as u64) as usize]
                };
                let req = format!(
                    "GET /Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{n}{include} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nAccept: application/fhir+json\r\n\r\n"
                );
                let started = Instant::now();
                conn.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
                let status = read_response(&mut *conn, &mut buf, None)?;
                let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                if (200..300).contains(&status) {
                    ok += 1;
                } else {
                    other += 1;
                }
                if measuring.load(Ordering::Relaxed) {
                    lat.push(micros);
                }
            }
            Ok((ok, other, lat))
        }));
    }
    std::thread::sleep(Duration::from_secs(2));
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(args.seconds));
    measuring.store(false, Ordering::Relaxed);
    let measured = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut other, mut lat) = (0, 0, Vec::new());
    for h in handles {
        let (o, x, l) = h.join().map_err(|_| "a load thread panicked")??;
        ok += o;
        other += x;
        lat.extend(l);
    }
    Ok((ok, other, lat, measured))
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns its status. The body is
/// kept in `body` when one is given.
fn read_response(
    conn: &mut dyn Read,
    buf: &mut [u8],
    mut body: Option<&mut Vec<u8>>,
) -> Result<u16, String> {
    let mut filled = 0;
    loop {
        let n = conn.read(&mut buf[filled..]).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        filled += n;
        if let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|e| e.to_string())?;
            let status: u16 = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or("bad status line")?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or("no content-length")?;
            let mut have = filled - end - 4;
            if let Some(b) = body.as_deref_mut() {
                b.clear();
                b.extend_from_slice(&buf[end + 4..filled]);
            }
            while have < length {
                let n = conn.read(&mut buf[..]).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("the server closed the connection".into());
                }
                if let Some(b) = body.as_deref_mut() {
                    b.extend_from_slice(&buf[..n]);
                }
                have += n;
            }
            return Ok(status);
        }
        if filled == buf.len() {
            return Err("response headers too large".into());
        }
    }
}

/// One council's Bundle, ready to send.
struct Submission {
    token: String,
    body: Vec<u8>,
    entries: usize,
}

/// The national dataset as each council would send it: its people and their plans, in batch
/// Bundles of `entries` entries.
fn submissions(
    args: &LoadArgs,
    councils: &[String],
    dir: &Path,
) -> Result<Vec<Submission>, String> {
    let people = numbers(args.people, 0);
    let mut per_council: Vec<Vec<serde_json::Value>> = vec![Vec::new(); councils.len()];
    for (i, nhs) in people.iter().enumerate() {
        let i = u32::try_from(i).map_err(|e| e.to_string())?;
        let plans = if i % 50 == 0 { 2 } else { 1 };
        for p in 0..plans {
            let (la, plan, end) = plan_of(i, p, councils);
            let start = chrono::Utc::now().date_naive() - chrono::Duration::days(400);
            let mut period = serde_json::json!({ "start": start.to_string() });
            if let Some(e) = end {
                period["end"] = serde_json::json!(e.to_string());
            }
            let system = format!("https://{}.example.org/Id/plan", la.to_ascii_lowercase());
            let k = councils.iter().position(|c| *c == la).unwrap_or(0);
            per_council[k].push(serde_json::json!({
                "resource": {
                    "resourceType": "Patient",
                    "id": nhs,
                    "identifier": [{
                        "extension": [{
                            "url": cpis_fhir::domain::VERIFICATION_EXTENSION,
                            "valueCodeableConcept": { "coding": [{ "system": cpis_fhir::domain::VERIFICATION_SYSTEM, "code": "01" }] },
                        }],
                        "system": cpis_fhir::domain::NHS_NUMBER_SYSTEM,
                        "value": nhs,
                    }],
                    "name": [{ "family": format!("Family{i}"), "given": ["Alex"] }],
                    "birthDate": "2015-06-01",
                    "address": [{ "line": [format!("{i} High Street")], "city": "Northmoor", "postalCode": "NM1 1AA" }],
                },
                "request": { "method": "PUT", "url": format!("Patient/{nhs}") },
            }));
            per_council[k].push(serde_json::json!({
                "resource": {
                    "resourceType": "Flag",
                    "identifier": [{ "system": system, "value": format!("P{i}-{p}") }],
                    "status": "active",
                    "category": [{ "coding": [{ "system": cpis_fhir::domain::FLAG_CATEGORY_SYSTEM, "code": cpis_fhir::domain::FLAG_CATEGORY_CODE }] }],
                    "code": { "coding": [{ "system": cpis_fhir::domain::SNOMED_SYSTEM, "code": plan.snomed() }] },
                    "subject": { "reference": format!("Patient/{nhs}") },
                    "period": period,
                    "author": { "reference": format!("Organization/{la}") },
                },
                "request": {
                    "method": "PUT",
                    "url": format!("Flag?identifier={}%7CP{i}-{p}", system.replace(':', "%3A").replace('/', "%2F")),
                },
            }));
        }
    }
    let mut out = Vec::new();
    for (k, entries) in per_council.into_iter().enumerate() {
        let token = dev::mint(
            dir,
            &TokenRequest {
                role: Role::Council,
                org: OdsCode::parse(&councils[k]).ok_or("ods")?,
                user: format!("{}-case-system", councils[k]),
                name: None,
                ttl_secs: 3600,
                audience: "cpis-fhir".into(),
            },
        )?;
        for chunk in entries.chunks(args.entries.max(2)) {
            let b =
                serde_json::json!({ "resourceType": "Bundle", "type": "batch", "entry": chunk });
            out.push(Submission {
                token: token.clone(),
                body: serde_json::to_vec(&b).map_err(|e| e.to_string())?,
                entries: chunk.len(),
            });
        }
    }
    Ok(out)
}

fn run_load(args: &LoadArgs) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("cpis-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = load_into(args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn load_into(args: &LoadArgs, dir: &Path) -> Result<(), String> {
    let db = database_of(dir, &args.database, args.replicas)?;
    dev::ensure_key(dir)?;
    let councils = {
        let store = Store::open(&db, 1)?;
        let existing = store
            .read_blocking(|c| Ok(store::councils::count(c)?))
            .map_err(|e: store::StoreError| e.to_string())?;
        if existing > 0 {
            return Err("cpis-bench load needs an empty database (createdb a fresh one)".into());
        }
        register_councils(&store, args.councils)?
    };
    let t = Instant::now();
    let work = submissions(args, &councils, dir)?;
    let total: usize = work.iter().map(|w| w.entries).sum();
    println!(
        "prepared {} Bundles ({total} entries) in {:.1} s",
        work.len(),
        t.elapsed().as_secs_f64()
    );
    let servers = start_servers(dir, args.port, &args.database, args.replicas, None)?;
    let ports = servers.ports.clone();
    let queue = Arc::new(std::sync::Mutex::new(work.into_iter().collect::<Vec<_>>()));
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..args.connections.max(1) {
        let queue = queue.clone();
        let port = ports[t % ports.len()];
        handles.push(std::thread::spawn(move || -> Result<(usize, usize, Vec<u32>), String> {
            let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut body = Vec::new();
            let (mut accepted, mut refused, mut lat) = (0, 0, Vec::new());
            loop {
                let Some(job) = queue.lock().map_err(|_| "queue")?.pop() else {
                    break;
                };
                let head = format!(
                    "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/fhir+json\r\nAccept: application/fhir+json\r\nContent-Length: {}\r\n\r\n",
                    job.token,
                    job.body.len()
                );
                let t = Instant::now();
                conn.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
                conn.write_all(&job.body).map_err(|e| e.to_string())?;
                let status = read_response(&mut conn, &mut buf, Some(&mut body))?;
                lat.push(t.elapsed().as_millis().min(u32::MAX as u128) as u32);
                if status != 200 {
                    return Err(format!("a Bundle was refused with {status}: {}", String::from_utf8_lossy(&body)));
                }
                // Counted from the text: parsing every answer would load this machine's
                // cores, which the server is using.
                let text = String::from_utf8_lossy(&body);
                let entries = text.matches("\"response\":{").count();
                let ok = text.matches("\"status\":\"20").count();
                accepted += ok;
                refused += entries.saturating_sub(ok);
            }
            Ok((accepted, refused, lat))
        }));
    }
    let (mut accepted, mut refused, mut lat) = (0, 0, Vec::new());
    let mut failure = None;
    for h in handles {
        match h
            .join()
            .map_err(|_| "a load thread panicked".to_owned())
            .and_then(|r| r)
        {
            Ok((a, r, l)) => {
                accepted += a;
                refused += r;
                lat.extend(l);
            }
            Err(e) => failure = Some(e),
        }
    }
    let elapsed = started.elapsed();
    let rss = servers.stop();
    if let Some(e) = failure {
        return Err(e);
    }
    let store = Store::open(&db, 1)?;
    let stored = store
        .read_blocking(|c| {
            use diesel::prelude::*;
            let flags: i64 = store::schema::flags::table.count().get_result(c)?;
            let people: i64 = store::schema::patients::table.count().get_result(c)?;
            Ok((flags, people))
        })
        .map_err(|e: store::StoreError| e.to_string())?;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "database               {}",
        backend_name(&db, args.replicas)
    );
    println!("people                 {}", args.people);
    println!("councils               {}", args.councils);
    println!("entries per Bundle     {}", args.entries);
    println!("Bundles in flight      {}", args.connections);
    println!("entries sent           {total}");
    println!("entries accepted       {accepted}");
    println!("entries refused        {refused}");
    println!(
        "stored                 {} Flags, {} Patients",
        stored.0, stored.1
    );
    println!("elapsed                {:.1} s", elapsed.as_secs_f64());
    println!(
        "resources/s            {:.0}",
        total as f64 / elapsed.as_secs_f64()
    );
    println!("Bundle latency p50     {} ms", pct(0.5));
    println!("Bundle latency p99     {} ms", pct(0.99));
    match rss {
        Some(kib) => println!("server peak RSS        {:.1} MiB", kib as f64 / 1024.0),
        None => println!("server peak RSS        unknown"),
    }
    Ok(())
}

/// The notification side of the look-up benchmark: a webhook receiver for every council.
mod notify_bench {
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
}
