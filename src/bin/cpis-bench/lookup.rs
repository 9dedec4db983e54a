//! The look-up benchmark: audited `GET /Flag?patient:identifier=…` over keep-alive connections.

use super::*;

/// Requests, 2xx responses, latencies (µs) and the measured time of a run.
type Outcome = (u64, u64, Vec<u32>, Duration);

/// The register a look-up benchmark runs on: the data directory (a temporary one unless
/// given), its database, and whether the directory is the benchmark's to remove.
pub(crate) fn register_for(args: &Args) -> Result<(PathBuf, String, bool), String> {
    let temp = args.data_dir.is_none();
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("cpis-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let db = database_of(&dir, &args.database, args.replicas)?;
    dev::ensure_key(&dir)?;
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
    let have = store
        .read_blocking(|c| Ok(store::audit::count(c)?))
        .map_err(|e: store::StoreError| e.to_string())?;
    let have = u64::try_from(have).unwrap_or(0);
    if args.trail_rows > have {
        crate::trail::build(
            &store,
            args.trail_rows - have,
            store::micros(chrono::Utc::now()),
        )?;
    }
    println!("audit trail            {} rows", have.max(args.trail_rows));
    // The lifecycle run indexes the trail behind it (the audit team's `entity`, `patient`,
    // `agent` and `agent-org` searches); brought up to date here, with no server running (every row is committed), so
    // that a run measures the look-up rather than the indexing of earlier runs' rows.
    let t = Instant::now();
    let jobs = cpis_fhir::records::lifecycle::index_audit(
        &store,
        chrono::Utc::now() + cpis_fhir::records::lifecycle::INDEX_LAG,
        &|| false,
    )
    .map_err(|e| e.to_string())?;
    println!(
        "audit trail indexed    {jobs} job(s) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok((dir, db, temp))
}

pub(crate) fn run(args: &Args) -> Result<(), String> {
    let (dir, db, temp) = register_for(args)?;
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

pub(crate) fn drive(
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
        // Paced: each connection's requests fall due at fixed intervals, staggered.
        let interval = (args.rate > 0)
            .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64));
        let stagger = interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(t as f64 / args.connections.max(1) as f64)
        });
        handles.push(std::thread::spawn(move || -> Result<(u64, u64, Vec<u32>), String> {
            let mut due = Instant::now() + stagger;
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
                let started = match interval {
                    Some(i) => {
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let was_due = due;
                        due += i;
                        was_due
                    }
                    None => Instant::now(),
                };
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
pub(crate) fn read_response(
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
