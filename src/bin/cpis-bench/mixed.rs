//! The mixed workload: clinicians' look-ups while councils' batch Bundles load back to back
//! (the look-up must not wait behind an upload). One server, one register; first the look-ups
//! alone, then the same look-ups with `uploaders` councils each posting `entries`-entry Bundles
//! of new people (`PUT Patient` + conditional `PUT Flag`) one after another. Prints both sides
//! of both phases and the ratio of the look-up rates.
//!
//! `--during export`: the second phase runs beside an auditor's bulk exports of the whole audit
//! trail (grow it first with `--trail-rows`), one after another, instead of the uploads.

use super::*;

use load::{council_token, plan_entries, post_bundle};
use lookup::{drive, register_for};

#[derive(clap::Args, Debug)]
pub(crate) struct MixedArgs {
    #[command(flatten)]
    pub(crate) lookup: Args,
    /// Entries per Bundle (a Patient and a Flag per person).
    #[arg(long, default_value_t = 10_000)]
    entries: usize,
    /// Councils uploading at once, each its Bundles back to back.
    #[arg(long, default_value_t = 1)]
    uploaders: usize,
    /// What runs beside the second phase's look-ups.
    #[arg(long, value_enum, default_value_t = During::Bundles)]
    during: During,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum During {
    /// Councils' batch Bundles, back to back.
    Bundles,
    /// An auditor's bulk exports of the whole audit trail, back to back.
    Export,
}

/// What the exports did while the look-ups ran.
struct Exported {
    events: u64,
    exports: usize,
    busy: Duration,
}

/// Look-ups/s, p50, p99 and max (ms) of a look-up run.
fn figures(latencies: &mut [u32], measured: Duration) -> (f64, f64, f64, f64) {
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        let idx = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(idx).copied().unwrap_or(0) as f64 / 1000.0
    };
    (
        latencies.len() as f64 / measured.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    )
}

/// What the uploaders did while the look-ups ran.
struct Uploaded {
    entries: usize,
    refused: usize,
    elapsed: Duration,
    latencies_ms: Vec<u32>,
}

/// Bundles for council `la` of people not in the register (after its misses), `n` at a time,
/// made before anything is measured so their making does not take the server's cores.
fn bundles_for(
    la: &str,
    uploader: usize,
    first_person: u32,
    people_each: u32,
    count: usize,
    per_bundle: usize,
) -> Result<Vec<Vec<u8>>, String> {
    let skip = first_person as usize + uploader * people_each as usize;
    let mut entries = Vec::with_capacity(people_each as usize * 2);
    for (i, nhs) in NhsNumber::test_numbers()
        .skip(skip)
        .take(people_each as usize)
        .enumerate()
    {
        let i = u32::try_from(skip + i).map_err(|e| e.to_string())?;
        let plan = if i % 2 == 0 {
            PlanType::ChildProtection
        } else {
            PlanType::LookedAfter
        };
        entries.extend(plan_entries(i, 0, nhs.as_str(), la, plan, None));
    }
    entries
        .chunks(per_bundle.max(2))
        .take(count)
        .map(|chunk| {
            serde_json::to_vec(
                &serde_json::json!({ "resourceType": "Bundle", "type": "batch", "entry": chunk }),
            )
            .map_err(|e| e.to_string())
        })
        .collect()
}

pub(crate) fn run_mixed(args: &MixedArgs) -> Result<(), String> {
    let a = &args.lookup;
    let (dir, db, temp) = register_for(a)?;
    // Enough Bundles that the uploaders never run dry within the measured time, at up to
    // 20,000 resources/s each (a bulk load alone reaches about that here).
    let per_uploader =
        usize::try_from(a.seconds + 4).unwrap_or(14) * 20_000 / args.entries.max(2) + 1;
    let people_each =
        u32::try_from(per_uploader * args.entries / 2 + 1).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut work = Vec::new();
    let uploaders = if args.during == During::Export {
        0
    } else {
        args.uploaders.max(1)
    };
    for u in 0..uploaders {
        let la = format!("LB{:03}", u % a.councils.max(1) as usize);
        let token = council_token(&dir, &la)?;
        work.push((
            token,
            bundles_for(
                &la,
                u,
                a.people + MISSES,
                people_each,
                per_uploader,
                args.entries,
            )?,
        ));
    }
    println!(
        "prepared {} Bundles of {} entries in {:.1} s",
        work.iter().map(|w| w.1.len()).sum::<usize>(),
        args.entries,
        t.elapsed().as_secs_f64()
    );
    let servers = start_servers(&dir, a.port, &a.database, a.replicas, None)?;
    let result = phases(args, &dir, &servers.ports, work);
    let rss = servers.stop();
    let (alone, mixed, uploaded, exported) = result?;
    let (mut alone, mut mixed) = (alone, mixed);
    let (rate_alone, p50_alone, p99_alone, max_alone) = figures(&mut alone.2, alone.3);
    let (rate_mixed, p50_mixed, p99_mixed, max_mixed) = figures(&mut mixed.2, mixed.3);
    let mut bundle_lat = uploaded.latencies_ms;
    bundle_lat.sort_unstable();
    println!("database               {}", backend_name(&db, a.replicas));
    println!("people                 {}", a.people);
    println!("look-up connections    {}", a.connections);
    if let Some(e) = &exported {
        println!(
            "beside                 an auditor's bulk exports of the whole trail, back to back"
        );
        println!(
            "exported meanwhile     {} AuditEvents in {} finished exports ({:.0}/s while exporting)",
            e.events,
            e.exports,
            e.events as f64 / e.busy.as_secs_f64().max(0.001)
        );
    } else {
        println!(
            "uploaders              {} (Bundles of {} entries, back to back)",
            args.uploaders, args.entries
        );
    }
    if a.rate > 0 {
        println!("look-ups paced at      {}/s", a.rate);
    }
    println!("                       look-ups/s   p50 ms   p99 ms   max ms");
    println!(
        "look-ups alone         {rate_alone:>10.0} {p50_alone:>8.2} {p99_alone:>8.2} {max_alone:>8.1}"
    );
    let beside = if exported.is_some() {
        "while exports run"
    } else {
        "while Bundles load"
    };
    println!("{beside:<22} {rate_mixed:>10.0} {p50_mixed:>8.2} {p99_mixed:>8.2} {max_mixed:>8.1}");
    println!(
        "look-up rate kept      {:.0}%",
        100.0 * rate_mixed / rate_alone.max(1.0)
    );
    if exported.is_none() {
        println!(
            "bulk resources/s       {:.0} ({} entries in {:.1} s, {} refused)",
            uploaded.entries as f64 / uploaded.elapsed.as_secs_f64().max(0.001),
            uploaded.entries,
            uploaded.elapsed.as_secs_f64(),
            uploaded.refused
        );
        println!(
            "Bundle latency         median {} ms, max {} ms",
            bundle_lat.get(bundle_lat.len() / 2).copied().unwrap_or(0),
            bundle_lat.last().copied().unwrap_or(0)
        );
    }
    println!("non-2xx look-ups       {}", alone.1 + mixed.1);
    match rss {
        Some(kib) => println!("server peak RSS        {:.1} MiB", kib as f64 / 1024.0),
        None => println!("server peak RSS        unknown"),
    }
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

type Outcome = (u64, u64, Vec<u32>, Duration);

/// An auditor's exports of the whole trail, one after another until `stop` (each deleted once
/// finished, so the disk does not fill).
fn exports_until(
    port: u16,
    token: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<Exported, String>> {
    std::thread::spawn(move || {
        let mut done = Exported {
            events: 0,
            exports: 0,
            busy: Duration::ZERO,
        };
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let (manifest, status_path) = crate::trail::export(port, &token, None)?;
            crate::trail::delete_export(port, &token, &status_path)?;
            done.busy += t.elapsed();
            done.events += crate::trail::exported(&manifest);
            done.exports += 1;
        }
        Ok(done)
    })
}

/// The look-ups alone, then with the uploaders (or the exports) running.
fn phases(
    args: &MixedArgs,
    dir: &Path,
    ports: &[u16],
    work: Vec<(String, Vec<Vec<u8>>)>,
) -> Result<(Outcome, Outcome, Uploaded, Option<Exported>), String> {
    let alone = drive(&args.lookup, dir, ports, None)?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let exporter = if args.during == During::Export {
        let token = crate::trail::auditor_token(dir)?;
        Some(exports_until(ports[0], token, stop.clone()))
    } else {
        None
    };
    let mut uploaders = Vec::new();
    for (u, (token, bundles)) in work.into_iter().enumerate() {
        let port = ports[u % ports.len()];
        let stop = stop.clone();
        uploaders.push(std::thread::spawn(
            move || -> Result<(usize, usize, Vec<u32>, Instant), String> {
                let mut conn =
                    TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                let (mut buf, mut body) = (vec![0u8; 64 * 1024], Vec::new());
                let (mut accepted, mut refused, mut lat) = (0, 0, Vec::new());
                let mut last = Instant::now();
                for bundle in &bundles {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let t = Instant::now();
                    let (ok, no) = post_bundle(&mut conn, &token, bundle, &mut buf, &mut body)?;
                    last = Instant::now();
                    lat.push(t.elapsed().as_millis().min(u32::MAX as u128) as u32);
                    accepted += ok;
                    refused += no;
                }
                Ok((accepted, refused, lat, last))
            },
        ));
    }
    // The look-ups' own warm-up lets the first Bundles get under way before measuring.
    let mixed = drive(&args.lookup, dir, ports, None);
    stop.store(true, Ordering::Relaxed);
    let mut uploaded = Uploaded {
        entries: 0,
        refused: 0,
        elapsed: Duration::ZERO,
        latencies_ms: Vec::new(),
    };
    for u in uploaders {
        let (ok, no, lat, last) = u.join().map_err(|_| "an uploader panicked")??;
        uploaded.entries += ok + no;
        uploaded.refused += no;
        uploaded.latencies_ms.extend(lat);
        uploaded.elapsed = uploaded.elapsed.max(last.duration_since(started));
    }
    let exported = match exporter {
        Some(e) => Some(e.join().map_err(|_| "the exporter panicked")??),
        None => None,
    };
    Ok((alone, mixed?, uploaded, exported))
}
