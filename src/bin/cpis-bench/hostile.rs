//! `cpis-bench hostile`: the memory bound under the worst request mix found (README "Limits").
//! Several clients at once send, for a bounded time, the bodies that cost the server most:
//! empty-array floods, bodies at the value limit, 32 MiB Bundles of large entries, Bundles at
//! the value limit, deep and wide XML, and batch Bundles whose every entry is full of errors.
//! It prints the answers by case and status, and the server's peak RSS against the bound.
//!
//! `cpis-bench fuzz`: the fuzzer of `cpis_fhir::fuzz` against a server of its own (or `--url`).

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpis_fhir::auth::dev::{self, TokenRequest};
use cpis_fhir::domain::{OdsCode, Role};

use super::{peak_rss_kib, read_response, start_server, status_kib};

/// The bound the issue sets for the default limits.
const BOUND_MIB: f64 = 256.0;

#[derive(clap::Args, Debug)]
pub struct HostileArgs {
    /// Clients sending at once.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds to keep sending.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Port for the server.
    #[arg(long, default_value_t = 18183)]
    port: u16,
    /// Send only the cases whose name contains this (to see what each costs).
    #[arg(long)]
    only: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Inputs to send.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Stop after this many seconds even if inputs remain.
    #[arg(long, default_value_t = 1_800)]
    seconds: u64,
    /// The run's seed: the same seed sends the same inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// About the largest body made.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_bytes: usize,
    /// A running server to fuzz (127.0.0.1 only) instead of one started here; its dev key must
    /// be in --data-dir.
    #[arg(long)]
    url: Option<String>,
    /// The data directory of the server (its dev key signs the tokens).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where inputs answered 5xx or not at all are saved.
    #[arg(long, default_value = "fuzz-failures")]
    out: PathBuf,
    /// Port for the server started here.
    #[arg(long, default_value_t = 18184)]
    port: u16,
}

struct Case {
    name: &'static str,
    path: String,
    content_type: &'static str,
    token: usize,
    body: Vec<u8>,
}

fn token(dir: &std::path::Path, role: Role, org: &str) -> Result<String, String> {
    dev::mint(
        dir,
        &TokenRequest {
            role,
            org: OdsCode::parse(org).ok_or("ods")?,
            user: format!("bench-{}", role.as_str()),
            name: Some("Bench".into()),
            ttl_secs: 3600,
            audience: "cpis-fhir".into(),
        },
    )
}

fn patient_entry(nhs: &str, filler: usize) -> String {
    format!(
        r#"{{"fullUrl":"urn:uuid:{}","resource":{{"resourceType":"Patient","id":"{nhs}","identifier":[{{"extension":[{{"url":"https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus","valueCodeableConcept":{{"coding":[{{"system":"https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland","code":"01"}}]}}}}],"system":"https://fhir.nhs.uk/Id/nhs-number","value":"{nhs}"}}],"name":[{{"family":"{}","given":["Sam"]}}],"birthDate":"2015-04-02"}},"request":{{"method":"PUT","url":"Patient/{nhs}"}}}}"#,
        uuid::Uuid::new_v4(),
        "F".repeat(filler)
    )
}

fn bundle(entries: &[String]) -> Vec<u8> {
    format!(
        r#"{{"resourceType":"Bundle","type":"batch","entry":[{}]}}"#,
        entries.join(",")
    )
    .into_bytes()
}

/// The worst cases found, each at the default limits.
fn cases() -> Vec<Case> {
    let numbers: Vec<String> = cpis_fhir::nhs_number::NhsNumber::test_numbers()
        .take(10_000)
        .map(|n| n.as_str().to_owned())
        .collect();
    let flood = format!(
        r#"{{"resourceType":"Flag","extension":[{}[]]}}"#,
        "[],".repeat(3_400_000)
    );
    let at_limit = format!(
        r#"{{"resourceType":"Flag","identifier":[{}[]]}}"#,
        "[],".repeat(4_990)
    );
    // 10,000 entries of ~3 KB: a Bundle just under 32 MiB, every entry valid.
    let big: Vec<String> = numbers.iter().map(|n| patient_entry(n, 2_700)).collect();
    // One entry holding as many values as a Bundle may (the estimate refuses what would not fit).
    let nhs = numbers[0].clone();
    let wide_entry = format!(
        r#"{{"resource":{{"resourceType":"Patient","id":"{nhs}","name":[{{"given":[{}"x"]}}]}},"request":{{"method":"PUT","url":"Patient/{nhs}"}}}}"#,
        "\"x\",".repeat(400_000)
    );
    // Twenty entries, each 15,000 empty arrays (600,000 values in all, under the Bundle's
    // limit of 640,000): every entry refused with its issues.
    let errors: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"fullUrl":"urn:uuid:00000000-0000-4000-8000-{i:012}","resource":{{"resourceType":"Flag","identifier":[{}[]]}},"request":{{"method":"POST","url":"Flag"}}}}"#,
                "[],".repeat(15_000)
            )
        })
        .collect();
    let deep_xml = format!(
        r#"<Flag xmlns="http://hl7.org/fhir">{}{}</Flag>"#,
        r#"<extension url="x">"#.repeat(100_000),
        "</extension>".repeat(100_000)
    );
    let wide_xml = format!(
        r#"<Patient xmlns="http://hl7.org/fhir"><id value="{nhs}"/><name>{}</name></Patient>"#,
        r#"<given value="x"/>"#.repeat(4_900)
    );
    vec![
        Case {
            name: "10 MiB of empty arrays",
            path: "/Flag".into(),
            content_type: "application/fhir+json",
            token: 0,
            body: flood.into_bytes(),
        },
        Case {
            name: "a Flag at the value limit",
            path: "/Flag".into(),
            content_type: "application/fhir+json",
            token: 0,
            body: at_limit.into_bytes(),
        },
        Case {
            name: "a 32 MiB Bundle of 10,000 entries",
            path: "/".into(),
            content_type: "application/fhir+json",
            token: 0,
            body: bundle(&big),
        },
        Case {
            name: "a Bundle entry of 400,000 values",
            path: "/".into(),
            content_type: "application/fhir+json",
            token: 0,
            body: bundle(&[wide_entry]),
        },
        Case {
            name: "a batch of 20 entries full of errors",
            path: "/".into(),
            content_type: "application/fhir+json",
            token: 0,
            body: bundle(&errors),
        },
        Case {
            name: "XML nested 100,000 deep",
            path: "/Flag".into(),
            content_type: "application/fhir+xml",
            token: 0,
            body: deep_xml.into_bytes(),
        },
        Case {
            name: "XML of 4,900 elements",
            path: format!("/Patient/{nhs}"),
            content_type: "application/fhir+xml",
            token: 0,
            body: wide_xml.into_bytes(),
        },
    ]
}

pub fn run_hostile(args: &HostileArgs) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("cpis-bench-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut server = start_server(&dir, args.port, true)?;
    let pid = server.id();
    let baseline = peak_rss_kib(pid);
    let tokens = Arc::new(vec![token(&dir, Role::Council, "LA901")?]);
    let made = Instant::now();
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| args.only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();
    if cases.is_empty() {
        return Err("no case matches --only".into());
    }
    let cases = Arc::new(cases);
    println!(
        "worst cases built in {:.1} s: {}",
        made.elapsed().as_secs_f64(),
        cases
            .iter()
            .map(|c| format!("{} ({:.1} MiB)", c.name, c.body.len() as f64 / 1048576.0))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let stop = Arc::new(AtomicBool::new(false));
    let tally: Arc<Mutex<std::collections::BTreeMap<(usize, String), u64>>> = Arc::default();
    let port = args.port;
    let handles: Vec<_> = (0..args.clients)
        .map(|t| {
            let (cases, tokens, stop, tally) =
                (cases.clone(), tokens.clone(), stop.clone(), tally.clone());
            std::thread::spawn(move || {
                let mut i = t;
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    let idx = i % cases.len();
                    i += 1;
                    let c = &cases[idx];
                    let outcome = send(port, c, &tokens[c.token], &mut buf);
                    if let Ok(mut t) = tally.lock() {
                        *t.entry((idx, outcome)).or_default() += 1;
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(args.seconds) {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(kib) = current_rss_kib(pid) {
            samples.push(kib);
        }
        if let Ok(Some(status)) = server.try_wait() {
            stop.store(true, Ordering::Relaxed);
            return Err(format!("the server exited during the run: {status}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let alive = TcpStream::connect(("127.0.0.1", port)).is_ok();
    let peak = peak_rss_kib(pid);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!("clients                {}", args.clients);
    println!("seconds                {}", args.seconds);
    for ((i, outcome), n) in tally.lock().map_err(|_| "tally")?.iter() {
        println!("  {:<38} {:<28} {n}", cases[*i].name, outcome);
    }
    samples.sort_unstable();
    let mib = |k: u64| k as f64 / 1024.0;
    if let Some(b) = baseline {
        println!("server RSS at start    {:.1} MiB", mib(b));
    }
    if let Some(m) = samples.get(samples.len() / 2) {
        println!(
            "server RSS median      {:.1} MiB (sampled every 0.5 s)",
            mib(*m)
        );
    }
    println!(
        "server still answers   {}",
        if alive { "yes" } else { "NO" }
    );
    match peak {
        Some(kib) => println!(
            "server peak RSS        {:.1} MiB (bound {BOUND_MIB:.0} MiB: {})",
            mib(kib),
            if mib(kib) <= BOUND_MIB {
                "met"
            } else {
                "EXCEEDED"
            }
        ),
        None => println!("server peak RSS        unknown"),
    }
    Ok(())
}

fn current_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// One request on its own connection; its status, or what happened instead.
fn send(port: u16, c: &Case, token: &str, buf: &mut [u8]) -> String {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return "connect failed".into();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        c.path,
        c.content_type,
        c.body.len()
    );
    let head = if c.path.starts_with("/Patient/") {
        head.replacen("POST", "PUT", 1)
    } else {
        head
    };
    // The server may answer (413, 400) before it has read the whole body, and close.
    let wrote = conn
        .write_all(head.as_bytes())
        .and_then(|_| conn.write_all(&c.body));
    match read_response(&mut conn, buf, None) {
        Ok(status) => status.to_string(),
        Err(e) if wrote.is_err() => format!("closed while sending ({e})"),
        Err(e) => format!("no answer ({e})"),
    }
}

pub fn run_fuzz(args: &FuzzArgs) -> Result<(), String> {
    let own = args.url.is_none();
    let dir = match (&args.data_dir, own) {
        (Some(d), _) => d.clone(),
        (None, true) => {
            std::env::temp_dir().join(format!("cpis-bench-fuzz-{}", std::process::id()))
        }
        (None, false) => {
            return Err("--url needs --data-dir (the server's dev key signs the tokens)".into())
        }
    };
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", args.port));
    let host = base.split("://").nth(1).unwrap_or_default();
    if !(host.starts_with("127.0.0.1")
        || host.starts_with("[::1]")
        || host.starts_with("localhost"))
    {
        return Err("the fuzzer only sends to a server on this machine (127.0.0.1, [::1])".into());
    }
    let mut server = if own {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        Some(start_server(&dir, args.port, true)?)
    } else {
        None
    };
    let tokens = cpis_fhir::fuzz::Tokens {
        council: token(&dir, Role::Council, "LA901")?,
        admin: token(&dir, Role::Admin, "X26")?,
        clinician: token(&dir, Role::Clinician, "RDE01")?,
    };
    let report = actix_web::rt::System::new().block_on(cpis_fhir::fuzz::run(
        &base,
        &tokens,
        args.seed,
        args.count,
        Duration::from_secs(args.seconds),
        args.max_bytes,
        Some(&args.out),
    ));
    let exited = server.as_mut().and_then(|s| s.try_wait().ok().flatten());
    println!("seed                   {}", args.seed);
    for line in report.lines() {
        println!("{line}");
    }
    if let Some(status) = exited {
        println!("server process exited  {status}");
    }
    if let Some(mut s) = server {
        let _ = s.kill();
        let _ = s.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
    if report.crashed
        || !report.server_errors.is_empty()
        || !report.unanswered.is_empty()
        || exited.is_some()
    {
        return Err("the fuzzer found failures (see above)".into());
    }
    Ok(())
}
