//! `cpis-bench trail`: the audit team's searches and bulk export on a grown trail. Builds a
//! trail of `--rows` AuditEvents (direct inserts, a year of accesses by 5,000 users of 300
//! organisations about 200,000 people) once per data directory, starts the server, then prints
//! each search's first-page latency (median of 5) and the time, rate and server peak RSS of
//! exporting the latest `--export-rows` AuditEvents.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cpis_fhir::auth::dev::{self, TokenRequest};
use cpis_fhir::domain::{OdsCode, Role};
use cpis_fhir::store::audit::{self as audit_store, AuditRow};
use cpis_fhir::store::columns::{CouncilList, JsonList};
use cpis_fhir::store::{self, Store, StoreError};

use crate::register::numbers;
use crate::servers::{connect, peak_rss_kib, start_server};

#[derive(clap::Args, Debug)]
pub(crate) struct TrailArgs {
    /// AuditEvents in the trail.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// How many of the latest AuditEvents to export.
    #[arg(long, default_value_t = 1_000_000)]
    export_rows: u64,
    /// Keep the trail here (reused when it already holds one); default: a temp directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 18183)]
    port: u16,
}

const USERS: u64 = 5_000;
const ORGS: u64 = 300;
const COUNCILS: u64 = 153;
const YEAR_MICROS: i64 = 365 * 86_400 * 1_000_000;

/// A small deterministic generator (the trail is the same on every machine).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn row(i: u64, recorded: i64, rng: &mut Lcg, people: &[String]) -> AuditRow {
    let user = rng.next(USERS);
    let org = user % ORGS;
    let council = rng.next(COUNCILS);
    let found = rng.next(10) < 3;
    let unscheduled = rng.next(10) < 8;
    let patient = people[usize::try_from(rng.next(people.len() as u64)).unwrap_or(0)].clone();
    AuditRow {
        id: audit_store::new_id(recorded),
        recorded,
        resource_type: "Flag".into(),
        subtype: if i % 50 == 0 { "read" } else { "search-type" }.into(),
        outcome: if i % 200 == 0 { "4" } else { "0" }.into(),
        outcome_desc: None,
        user_id: format!("user-{user}"),
        user_name: Some(format!("User {user}")),
        user_role: if user % 10 == 0 {
            "clinician-scheduled"
        } else {
            "clinician"
        }
        .into(),
        user_org: format!("R{org:04}"),
        client: format!("https://epr-{}.example", org % 20),
        patient: Some(patient),
        councils: CouncilList(if found {
            vec![format!("LA{:03}", 100 + council)]
        } else {
            vec![]
        }),
        disclosed: JsonList(if found {
            vec![format!("Flag/f-{}/_history/1", rng.next(250_000))]
        } else {
            vec![]
        }),
        request_id: format!("r-{i}"),
        trace_id: None,
        unscheduled,
        // In the person's access history as a look-up would be: an unscheduled access by an
        // unscheduled-care role that found a record (the builder drops the notifications).
        listed: found && unscheduled && user % 10 != 0,
        query: "GET /Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|…".into(),
    }
}

/// Adds `rows` AuditEvents spread over the year before `now` (direct inserts).
pub(crate) fn build(store: &Store, rows: u64, now: i64) -> Result<(), String> {
    let people = numbers(200_000, 0);
    let mut rng = Lcg(42);
    let start = now - YEAR_MICROS;
    let step = (YEAR_MICROS / i64::try_from(rows.max(1)).unwrap_or(1)).max(1);
    let t = Instant::now();
    let mut i = 0u64;
    while i < rows {
        let batch: Vec<AuditRow> = (i..(i + 20_000).min(rows))
            .map(|k| {
                row(
                    k,
                    start + step * i64::try_from(k).unwrap_or(0),
                    &mut rng,
                    &people,
                )
            })
            .collect();
        i += batch.len() as u64;
        store
            .write_blocking(move |c| {
                for r in &batch {
                    audit_store::insert(c, r)?;
                }
                // These accesses are history: nobody is notified of them now.
                let listed: Vec<&str> = batch
                    .iter()
                    .filter(|r| r.listed)
                    .map(|r| r.id.as_str())
                    .collect();
                use cpis_fhir::store::schema::notification_outbox as o;
                use diesel::prelude::*;
                diesel::delete(o::table.filter(o::audit_event_id.eq_any(listed))).execute(c)?;
                Ok::<_, StoreError>(())
            })
            .map_err(|e| e.to_string())?;
        if i % 1_000_000 == 0 {
            println!("  {i} rows, {:.0} s", t.elapsed().as_secs_f64());
        }
    }
    println!(
        "built a trail of {rows} AuditEvents in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // As the lifecycle's run after an upgrade would: the indexes of the `entity`, `patient`,
    // `agent` and `agent-org` searches.
    let t = Instant::now();
    let now = store::from_micros(now);
    cpis_fhir::records::lifecycle::index_audit(store, now, &|| false).map_err(|e| e.to_string())?;
    println!(
        "indexed its Flags, people, users and organisations in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One GET on a fresh connection: status, head, body.
fn request(
    port: u16,
    path: &str,
    token: &str,
    extra: &str,
) -> Result<(u16, String, Vec<u8>), String> {
    request_with("GET", port, path, token, extra)
}

/// One request on a fresh connection: status, head, body.
fn request_with(
    method: &str,
    port: u16,
    path: &str,
    token: &str,
    extra: &str,
) -> Result<(u16, String, Vec<u8>), String> {
    let mut s = connect(port, None)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n{extra}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no response head")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    Ok((status, head, buf[end + 4..].to_vec()))
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// An auditor's token for the bench's server in `dir`.
pub(crate) fn auditor_token(dir: &std::path::Path) -> Result<String, String> {
    dev::mint(
        dir,
        &TokenRequest {
            role: Role::Auditor,
            org: OdsCode::parse("X26").ok_or("ods")?,
            user: "bench-auditor".into(),
            name: None,
            ttl_secs: 3600,
            audience: "cpis-fhir".into(),
        },
    )
}

/// Exports the AuditEvents recorded since `since` (all of them without it) through the async
/// pattern, polling every 50 ms: the manifest, and the export's status path (to delete it).
pub(crate) fn export(
    port: u16,
    token: &str,
    since: Option<&str>,
) -> Result<(serde_json::Value, String), String> {
    let query = since.map_or(String::new(), |s| {
        format!("?_since={}", s.replace('+', "%2B"))
    });
    let t = Instant::now();
    let (status, head, _) = request(
        port,
        &format!("/AuditEvent/$export{query}"),
        token,
        "Prefer: respond-async\r\n",
    )?;
    if status != 202 {
        return Err(format!("the export was not accepted: {status}"));
    }
    let location = header(&head, "content-location").ok_or("no Content-Location")?;
    let status_path = location
        .find("/$export-status/")
        .map(|i| location[i..].to_owned())
        .ok_or("bad Content-Location")?;
    loop {
        let (s, _, body) = request(port, &status_path, token, "")?;
        match s {
            202 => std::thread::sleep(Duration::from_millis(50)),
            200 => {
                let manifest = serde_json::from_slice::<serde_json::Value>(&body)
                    .map_err(|e| e.to_string())?;
                return Ok((manifest, status_path));
            }
            other => {
                return Err(format!(
                    "the export failed: {other} {}",
                    String::from_utf8_lossy(&body)
                ))
            }
        }
        if t.elapsed() > Duration::from_secs(600) {
            return Err("the export took over 10 minutes".into());
        }
    }
}

/// Deletes a finished export's files.
pub(crate) fn delete_export(port: u16, token: &str, status_path: &str) -> Result<u16, String> {
    request_with("DELETE", port, status_path, token, "").map(|r| r.0)
}

/// The AuditEvents a manifest lists.
pub(crate) fn exported(manifest: &serde_json::Value) -> u64 {
    manifest["output"]
        .as_array()
        .map_or(0, |o| o.iter().filter_map(|f| f["count"].as_u64()).sum())
}

pub(crate) fn run_trail(a: &TrailArgs) -> Result<(), String> {
    let dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("cpis-trail-{}", std::process::id())));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    dev::ensure_key(&dir)?;
    let db = dir.join("cpis.db").to_string_lossy().into_owned();
    let now = store::micros(chrono::Utc::now());
    {
        let store = Store::open(&db, 1)?;
        let have = store
            .read_blocking(|c| Ok(audit_store::count(c)?))
            .map_err(|e: StoreError| e.to_string())?;
        if have == 0 {
            build(&store, a.rows, now)?;
        } else {
            println!("reusing a trail of {have} AuditEvents");
        }
    }
    let mut server = start_server(&dir, a.port, false)?;
    let token = auditor_token(&dir)?;
    let month_ago = cpis_fhir::fhir::instant(now - 30 * 86_400 * 1_000_000);
    let searches: Vec<(&str, String)> = vec![
        ("newest page, no filter", String::new()),
        ("agent (one user)", "agent=user-1234".into()),
        ("agent-org (one organisation)", "agent-org=R0123".into()),
        ("agent-name", "agent-name=User%20123".into()),
        ("agent-role", "agent-role=clinician-scheduled".into()),
        ("date (the last 30 days)", format!("date=ge{month_ago}")),
        (
            "date (one day, a month ago)",
            format!("date={}", &month_ago[..10]),
        ),
        (
            "patient:identifier",
            "patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C9000000009".into(),
        ),
        ("outcome=4 (1 in 200)", "outcome=4".into()),
        ("purpose=scheduled", "purpose=scheduled".into()),
        ("council (one of 153)", "council=LA150".into()),
        ("type=rest", "type=rest".into()),
        ("subtype=read (1 in 50)", "subtype=read".into()),
        (
            "source (one of 20 systems)",
            "source=https://epr-7.example".into(),
        ),
        ("entity (one Flag)", "entity=Flag/f-1234".into()),
        (
            "agent + date + purpose",
            format!("agent=user-1234&date=ge{month_ago}&purpose=unscheduled"),
        ),
        ("_sort=date (oldest first)", "_sort=date".into()),
        (
            "_total=accurate, agent",
            "_total=accurate&agent=user-1234".into(),
        ),
    ];
    println!(
        "{:<34} {:>12} {:>8}",
        "search (first page, _count=25)", "median ms", "matches"
    );
    let mut failures = 0;
    for (name, q) in &searches {
        let path = format!(
            "/AuditEvent?{q}{}_count=25",
            if q.is_empty() { "" } else { "&" }
        );
        let mut times = Vec::new();
        let mut shown = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let (status, _, body) = request(a.port, &path, &token, "")?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            if status != 200 {
                failures += 1;
                println!("  {name}: status {status}");
            }
            let b: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            shown = b["entry"].as_array().map_or(0, |e| {
                e.iter().filter(|x| x["search"]["mode"] == "match").count()
            });
        }
        println!("{name:<34} {:>12.1} {shown:>8}", median(times));
    }
    // The export: the latest `export_rows` rows (the trail is evenly spread over the year).
    let span = YEAR_MICROS / i64::try_from(a.rows.max(1)).unwrap_or(1)
        * i64::try_from(a.export_rows).unwrap_or(0);
    let since = cpis_fhir::fhir::instant(now - span.min(YEAR_MICROS));
    let t = Instant::now();
    let (manifest, _) = export(a.port, &token, Some(&since))?;
    let took = t.elapsed().as_secs_f64();
    let exported = exported(&manifest);
    let rss = peak_rss_kib(server.id()).unwrap_or(0);
    // Download one file to check it and to time a download.
    let first = manifest["output"][0]["url"].as_str().unwrap_or_default();
    let t = Instant::now();
    let file_path = first
        .find("/$export-file/")
        .map(|i| first[i..].to_owned())
        .unwrap_or_default();
    let (fs, head, sent) = request(a.port, &file_path, &token, "Accept-Encoding: gzip\r\n")?;
    let sent_mib = sent.len() as f64 / 1_048_576.0;
    let body = if header(&head, "content-encoding").as_deref() == Some("gzip") {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&sent[..])
            .read_to_end(&mut plain)
            .map_err(|e| format!("the file is not gzip: {e}"))?;
        plain
    } else {
        sent
    };
    let lines = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    let download = t.elapsed().as_secs_f64();
    let _ = server.kill();
    let _ = server.wait();
    println!(
        "export: {exported} AuditEvents in {} files in {took:.2} s ({:.0}/s); server peak RSS {} MiB",
        manifest["output"].as_array().map_or(0, Vec::len),
        exported as f64 / took,
        rss / 1024
    );
    println!(
        "download of the first file: status {fs}, {lines} lines, {:.1} MiB ({:.1} MiB sent) in {download:.2} s",
        body.len() as f64 / 1_048_576.0,
        sent_mib
    );
    if failures > 0 {
        return Err(format!("{failures} searches failed"));
    }
    Ok(())
}
