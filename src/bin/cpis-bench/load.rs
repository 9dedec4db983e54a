//! The bulk-submission benchmark: the national dataset sent as councils' batch Bundles.

use super::*;

/// One council's Bundle, ready to send.
pub(crate) struct Submission {
    token: String,
    body: Vec<u8>,
    entries: usize,
}

/// The national dataset as each council would send it: its people and their plans, in batch
/// Bundles of `entries` entries.
pub(crate) fn submissions(
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
            let k = councils.iter().position(|c| *c == la).unwrap_or(0);
            per_council[k].extend(plan_entries(i, p, nhs, &la, plan, end));
        }
    }
    let mut out = Vec::new();
    for (k, entries) in per_council.into_iter().enumerate() {
        let token = council_token(dir, &councils[k])?;
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

/// A person's `PUT Patient/{nhs}` and the conditional `PUT Flag?identifier=…` of their plan
/// `p` held by council `la`, as a council's case system sends them.
pub(crate) fn plan_entries(
    i: u32,
    p: usize,
    nhs: &str,
    la: &str,
    plan: PlanType,
    end: Option<chrono::NaiveDate>,
) -> [serde_json::Value; 2] {
    let start = chrono::Utc::now().date_naive() - chrono::Duration::days(400);
    let mut period = serde_json::json!({ "start": start.to_string() });
    if let Some(e) = end {
        period["end"] = serde_json::json!(e.to_string());
    }
    let system = format!("https://{}.example.org/Id/plan", la.to_ascii_lowercase());
    [
        serde_json::json!({
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
        }),
        serde_json::json!({
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
        }),
    ]
}

/// A council's token for the benchmarks' submissions.
pub(crate) fn council_token(dir: &Path, ods: &str) -> Result<String, String> {
    dev::mint(
        dir,
        &TokenRequest {
            role: Role::Council,
            org: OdsCode::parse(ods).ok_or("ods")?,
            user: format!("{ods}-case-system"),
            name: None,
            ttl_secs: 3600,
            audience: "cpis-fhir".into(),
        },
    )
}

/// Posts one Bundle on `conn` and reads the answer into `body`; returns the entries accepted
/// and refused.
pub(crate) fn post_bundle(
    conn: &mut TcpStream,
    token: &str,
    bundle: &[u8],
    buf: &mut [u8],
    body: &mut Vec<u8>,
) -> Result<(usize, usize), String> {
    let head = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/fhir+json\r\nAccept: application/fhir+json\r\nContent-Length: {}\r\n\r\n",
        bundle.len()
    );
    conn.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    conn.write_all(bundle).map_err(|e| e.to_string())?;
    let status = read_response(conn, buf, Some(body))?;
    if status != 200 {
        return Err(format!(
            "a Bundle was refused with {status}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    // Counted from the text: parsing every answer would load this machine's cores, which the
    // server is using.
    let text = String::from_utf8_lossy(body);
    let entries = text.matches("\"response\":{").count();
    let ok = text.matches("\"status\":\"20").count();
    Ok((ok, entries.saturating_sub(ok)))
}

pub(crate) fn run_load(args: &LoadArgs) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("cpis-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = load_into(args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

pub(crate) fn load_into(args: &LoadArgs, dir: &Path) -> Result<(), String> {
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
    let cpu_before = servers.cpu_seconds();
    let queue = Arc::new(std::sync::Mutex::new(work.into_iter().collect::<Vec<_>>()));
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..args.connections.max(1) {
        let queue = queue.clone();
        let port = ports[t % ports.len()];
        handles.push(std::thread::spawn(
            move || -> Result<(usize, usize, Vec<u32>), String> {
                let mut conn =
                    TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                let mut buf = vec![0u8; 64 * 1024];
                let mut body = Vec::new();
                let (mut accepted, mut refused, mut lat) = (0, 0, Vec::new());
                loop {
                    let Some(job) = queue.lock().map_err(|_| "queue")?.pop() else {
                        break;
                    };
                    let t = Instant::now();
                    let (ok, no) =
                        post_bundle(&mut conn, &job.token, &job.body, &mut buf, &mut body)?;
                    lat.push(t.elapsed().as_millis().min(u32::MAX as u128) as u32);
                    accepted += ok;
                    refused += no;
                }
                Ok((accepted, refused, lat))
            },
        ));
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
    let cpu = servers
        .cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
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
    if let Some(cpu) = cpu {
        println!(
            "server CPU             {cpu:.1} s, {:.0} µs per resource",
            cpu * 1e6 / total.max(1) as f64
        );
    }
    println!("Bundle latency p50     {} ms", pct(0.5));
    println!("Bundle latency p99     {} ms", pct(0.99));
    match rss {
        Some(kib) => println!("server peak RSS        {:.1} MiB", kib as f64 / 1024.0),
        None => println!("server peak RSS        unknown"),
    }
    Ok(())
}
