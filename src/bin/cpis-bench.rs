//! Look-up benchmark (README "Benchmarks"): builds a national-size synthetic register, starts
//! the server as a separate process on 127.0.0.1, drives `GET /Flag?patient:identifier=…` with
//! a fixed number of keep-alive connections for a bounded time, and prints requests/s, p50/p99
//! latency, the server's peak RSS, and the audit rows written against the 2xx responses.
//!
//! Run it from a release build: `cargo run --release --bin cpis-bench`.

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
#[command(about = "CP-IS look-up benchmark")]
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
    /// Ask for the council with each plan (`_include=Flag:author`), as an EPR would.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    include_author: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
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
    let db = dir.join("cpis.db");
    let public_key = dev::ensure_key(&dir)?;
    drop(public_key);
    {
        let store = Store::open(&db.to_string_lossy(), 2)?;
        let existing = store
            .read_blocking(|c| Ok(store::councils::count(c)?))
            .map_err(|e| e.to_string())?;
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
        let store = Store::open(&db.to_string_lossy(), 1)?;
        store
            .read_blocking(|c| Ok(store::audit::count(c)?))
            .map_err(|e| e.to_string())?
    };
    let mut server = start_server(&dir, args.port)?;
    let result = drive(args, &dir, server.id());
    let rss = peak_rss_kib(server.id());
    let _ = server.kill();
    let _ = server.wait();
    let (ok, other, latencies, measured) = result?;
    let store = Store::open(&db.to_string_lossy(), 1)?;
    let audits = store
        .read_blocking(|c| Ok(store::audit::count(c)?))
        .map_err(|e| e.to_string())?
        - audits_before;
    let mut l = latencies;
    l.sort_unstable();
    let pct = |p: f64| -> f64 {
        let idx = ((l.len() as f64 - 1.0) * p).round() as usize;
        l.get(idx).copied().unwrap_or(0) as f64 / 1000.0
    };
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
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// The plan mix of DOMAIN.md "Scale": about 40% looked after, 25% on a child protection plan,
/// 30% with a plan ended in the last 12 months, 5% unborn-child plans; one in 50 people has a
/// second plan with another council.
fn generate(store: &Store, args: &Args) -> Result<(), String> {
    let councils: Vec<String> = (0..args.councils).map(|i| format!("LB{i:03}")).collect();
    let now = chrono::Utc::now();
    let at = store::micros(now);
    let today = now.date_naive();
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
        .map_err(|e| e.to_string())?;
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
                            given: "[\"Alex\"]".into(),
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
                                status: status.as_str().into(),
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

fn start_server(dir: &Path, port: u16) -> Result<Child, String> {
    let exe = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("cpis-fhir");
    let child = Command::new(&exe)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env(
            "CPIS_AUTH_PUBLIC_KEY_FILE",
            dir.join("dev-signing-key.pub.pem"),
        )
        .env("CPIS_AUTH_ISSUER", dev::DEV_ISSUER)
        .env("CPIS_ALLOW_TEST_NHS_NUMBERS", "true")
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
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

type Outcome = (u64, u64, Vec<u32>, Duration);

fn drive(args: &Args, dir: &Path, _server: u32) -> Result<Outcome, String> {
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
        let port = args.port;
        let ratio = args.hit_ratio;
        let include = include.to_owned();
        handles.push(std::thread::spawn(move || -> Result<(u64, u64, Vec<u32>), String> {
            let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
            conn.set_nodelay(true).map_err(|e| e.to_string())?;
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
                let status = read_response(&mut conn, &mut buf)?;
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

/// Reads one HTTP/1.1 response with a Content-Length body; returns its status.
fn read_response(conn: &mut TcpStream, buf: &mut [u8]) -> Result<u16, String> {
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
            while have < length {
                let n = conn.read(&mut buf[..]).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("the server closed the connection".into());
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
