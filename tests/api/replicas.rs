//! Three server processes over one PostgreSQL database, as replicas behind a load balancer run:
//! councils' Bundles with overlapping people and plan references and clinicians' look-ups spread
//! over all three, each replica running its own lifecycle scheduler and notification worker,
//! and one replica killed with SIGKILL half-way. Runs when `CPIS_TEST_POSTGRES_URL` is set
//! (`.ci/run` sets it); afterwards nothing answered 5xx, no plan reference has two Flags, every
//! answered look-up has its AuditEvent, and each council received every event number, in order,
//! from one worker at a time.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::http::Method;
use cpis_fhir::domain::Role;
use cpis_fhir::nhs_number::NhsNumber;
use serde_json::{json, Value};

use crate::cli::{audited_request_ids, bin, call, free_port, spawn_until_listening, Killed};
use crate::helpers::{org_json, put_flag_entry, put_patient_entry, TestIdp, LA_A, LA_B};
use crate::notify::Receiver;
use crate::postgres::PgDatabase;

/// An answered look-up: its request id, the person's index, the status, and the councils whose
/// plans it showed.
type Answered = (String, u32, u16, Vec<String>);

/// People 0..40 have LA901's plans, 20..60 LA902's: 20..40 have both.
const PEOPLE: u32 = 60;

fn person(i: u32) -> String {
    NhsNumber::test_number(1000 + i * 37).as_str().to_owned()
}

fn councils_of(i: u32) -> Vec<&'static str> {
    let mut c = Vec::new();
    if i < 40 {
        c.push(LA_A);
    }
    if i >= 20 {
        c.push(LA_B);
    }
    c
}

/// Starts one replica (`serve --no-migrate` over the shared configuration) and waits until it
/// listens.
fn replica(config: &std::path::Path, port: u16) -> Killed {
    let mut command = bin();
    command
        .args([
            "serve",
            "--no-migrate",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(config);
    spawn_until_listening(command).0
}

fn lookup_path(nhs: &str) -> String {
    format!("/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{nhs}")
}

/// A council's batch Bundle for every one of its people: `PUT Patient` and a conditional
/// `PUT Flag` by plan reference (the same references whichever replica receives it).
fn council_bundle(council: &str) -> Value {
    let entries: Vec<Value> = (0..PEOPLE)
        .filter(|i| councils_of(*i).contains(&council))
        .flat_map(|i| {
            let nhs = person(i);
            [
                put_patient_entry(&nhs),
                put_flag_entry(&nhs, council, &format!("PLAN-{i}")),
            ]
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "batch", "entry": entries })
}

/// A metric's value in `/metrics` text, if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[actix_rt::test]
async fn three_replicas_over_one_postgresql_lose_nothing_and_duplicate_nothing_even_when_one_is_killed(
) {
    let Some(db) = PgDatabase::create() else {
        eprintln!("CPIS_TEST_POSTGRES_URL is not set: replicas not tested");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let idp = TestIdp::generate(dir.path(), "https://idp.cpis.test", "key-1");
    let config = dir.path().join("cpis-fhir.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = {db:?}\ndata_dir = {data:?}\nallow_test_nhs_numbers = true\n\
             notify_allow_http_loopback = true\nnotify_interval_ms = 200\nlifecycle_interval_secs = 1\n\
             workers = 1\ndb_read_pool_size = 2\nshutdown_grace_secs = 5\n\n\
             [limits]\nlookups_per_user_per_minute = 0\n\n\
             [auth]\naudience = [\"cpis-fhir\"]\n\n\
             [[auth.issuers]]\nissuer = {iss:?}\npublic_key_file = {key:?}\nalgorithm = \"RS256\"\nkid = \"key-1\"\n",
            db = db.url,
            data = dir.path().join("data").to_string_lossy(),
            iss = idp.issuer,
            key = idp.public_file.to_string_lossy(),
        ),
    )
    .expect("config");
    let out = bin()
        .args(["migrate", "--config"])
        .arg(&config)
        .output()
        .expect("migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut replicas: Vec<Option<Killed>> =
        ports.iter().map(|p| Some(replica(&config, *p))).collect();

    let token = |role: Role, org: &str| idp.token(role, org, 0, 3600);
    let (admin, auditor) = (token(Role::Admin, "X26"), token(Role::Auditor, "X26"));
    let clinician = Rc::new(token(Role::Clinician, "RDE01"));
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish();
    for (ods, name) in [
        (LA_A, "Northmoor Borough Council"),
        (LA_B, "Eastvale County Council"),
    ] {
        let (s, b) = call(
            &client,
            ports[0],
            Method::PUT,
            &format!("/Organization/{ods}"),
            &admin,
            Some(&org_json(ods, name)),
            None,
        )
        .await
        .expect("org");
        assert_eq!(s, 201, "{b}");
    }
    // Each council's webhook holds every post a little, so that two workers posting to it at
    // once would be seen.
    let mut hooks = BTreeMap::new();
    let mut subscriptions = BTreeMap::new();
    for ods in [LA_A, LA_B] {
        let hook = Receiver::start().await;
        hook.hold_ms.store(20, Ordering::SeqCst);
        let filter = format!("AuditEvent?council={ods}");
        let mut body = crate::notify::subscription_json(&hook.url, Some(&filter));
        // A 5-second post timeout: a lease is that plus 30 s.
        body["channel"]["extension"] = json!([{
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout",
            "valueUnsignedInt": 5,
        }]);
        let (s, b) = call(
            &client,
            ports[1],
            Method::POST,
            "/Subscription",
            &token(Role::Council, ods),
            Some(&body),
            None,
        )
        .await
        .expect("subscribe");
        assert_eq!(s, 201, "{b}");
        subscriptions.insert(ods, b["id"].as_str().expect("id").to_owned());
        hooks.insert(ods, hook);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while hooks.values().any(|h| h.of_kind("handshake").is_empty()) {
        assert!(
            Instant::now() < deadline,
            "every subscription is handshaken"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }

    // The load: each council sends its Bundle to every replica at once, three rounds; clinicians
    // look people up on every replica meanwhile. Replica 3 is killed half-way.
    let answered: Rc<RefCell<Vec<Answered>>> = Rc::default();
    let failures: Rc<RefCell<Vec<String>>> = Rc::default();
    let mut work = Vec::new();
    for ods in [LA_A, LA_B] {
        for (r, port) in ports.iter().copied().enumerate() {
            let (council, failures) = (token(Role::Council, ods), Rc::clone(&failures));
            work.push(actix_rt::spawn(async move {
                let client = awc::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .finish();
                for _ in 0..3 {
                    match call(
                        &client,
                        port,
                        Method::POST,
                        "/",
                        &council,
                        Some(&council_bundle(ods)),
                        None,
                    )
                    .await
                    {
                        Ok((200, b)) => {
                            for e in b["entry"].as_array().into_iter().flatten() {
                                let status = e["response"]["status"].as_str().unwrap_or_default();
                                if !(status.starts_with('2') || status.starts_with("409")) {
                                    failures
                                        .borrow_mut()
                                        .push(format!("{ods} on replica {r}: entry {status}: {e}"));
                                }
                            }
                        }
                        Ok((s, b)) => failures
                            .borrow_mut()
                            .push(format!("{ods} on replica {r}: {s} {b}")),
                        // Replica 3 killed: its connections fail.
                        Err(e) if r == 2 => {
                            let _ = e;
                            return;
                        }
                        Err(e) => failures
                            .borrow_mut()
                            .push(format!("{ods} on replica {r}: {e}")),
                    }
                }
            }));
        }
    }
    let killed_port = ports[2];
    for (c, port) in ports
        .iter()
        .copied()
        .chain(ports.iter().copied())
        .enumerate()
    {
        let (answered, failures, clinician) = (
            Rc::clone(&answered),
            Rc::clone(&failures),
            Rc::clone(&clinician),
        );
        work.push(actix_rt::spawn(async move {
            let client = awc::Client::builder()
                .timeout(Duration::from_secs(60))
                .finish();
            for n in 0..150u32 {
                let i = (n * 7 + c as u32 * 13) % PEOPLE;
                let id = format!("look-{c}-{n}");
                match call(
                    &client,
                    port,
                    Method::GET,
                    &lookup_path(&person(i)),
                    &clinician,
                    None,
                    Some(&id),
                )
                .await
                {
                    Ok((s, b)) if s < 500 => {
                        let shown: Vec<String> = b["entry"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|e| e["resource"]["author"]["reference"].as_str())
                            .map(|a| a.trim_start_matches("Organization/").to_owned())
                            .collect();
                        answered.borrow_mut().push((id, i, s, shown));
                    }
                    Ok((s, b)) => failures.borrow_mut().push(format!("look-up {id}: {s} {b}")),
                    Err(_) if port == killed_port => return,
                    Err(e) => failures.borrow_mut().push(format!("look-up {id}: {e}")),
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.borrow().len() < 300 {
        assert!(
            Instant::now() < deadline,
            "the load never got going: {:?}",
            failures.borrow()
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(mut killed) = replicas[2].take() {
        killed.0.kill().expect("SIGKILL");
        let _ = killed.0.wait();
    }
    for w in work {
        w.await.expect("worker");
    }
    let failures = failures.borrow().clone();
    assert!(
        failures.is_empty(),
        "{} failures: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    let answered = answered.borrow().clone();
    eprintln!(
        "{} look-ups answered over the three replicas",
        answered.len()
    );
    assert!(
        answered.iter().all(|(_, _, s, _)| *s == 200),
        "every look-up answered 200"
    );

    // A client of its own for the checks: the first one's idle keep-alive connections may be
    // closed by a server (its keep-alive ran out during the load) just as it reuses them.
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish();
    // One Flag per plan reference, whichever replica wrote it.
    for i in 0..PEOPLE {
        for ods in councils_of(i) {
            let (s, b) = call(
                &client,
                ports[0],
                Method::GET,
                &format!(
                    "/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{}",
                    person(i)
                ),
                &token(Role::Council, ods),
                None,
                None,
            )
            .await
            .expect("council search");
            assert_eq!(s, 200, "{b}");
            let mine = b["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["resource"]["author"]["reference"] == format!("Organization/{ods}"))
                .count();
            assert_eq!(mine, 1, "person {i}, council {ods}: {b}");
        }
    }

    // Every answered look-up is on the audit trail.
    let mut audited = HashSet::new();
    for i in 0..PEOPLE {
        audited.extend(audited_request_ids(&client, ports[0], &auditor, &person(i)).await);
    }
    let lost: Vec<&String> = answered
        .iter()
        .map(|(id, ..)| id)
        .filter(|id| !audited.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} answered look-ups have no AuditEvent: {lost:?}",
        lost.len()
    );

    // Every notification delivered: wait until nothing is waiting (the killed replica's lease,
    // if it held one, runs out after 35 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut req = client.get(format!("http://127.0.0.1:{}/metrics", ports[0]));
        req = req.insert_header(("Accept", "text/plain"));
        let text = match req.send().await {
            Ok(mut r) => String::from_utf8_lossy(&r.body().await.unwrap_or_default()).into_owned(),
            Err(_) => String::new(),
        };
        let waiting = metric(
            &text,
            r#"cpis_notification_backlog_events{status="outbox"}"#,
        )
        .unwrap_or(1.0)
            + metric(
                &text,
                r#"cpis_notification_backlog_events{status="active"}"#,
            )
            .unwrap_or(1.0)
            + metric(&text, r#"cpis_notification_backlog_events{status="error"}"#).unwrap_or(0.0);
        if waiting == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "notifications still waiting: {text}"
        );
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    for ods in [LA_A, LA_B] {
        let (s, b) = call(
            &client,
            ports[0],
            Method::GET,
            &format!("/Subscription/{}/$status", subscriptions[ods]),
            &token(Role::Council, ods),
            None,
            None,
        )
        .await
        .expect("status");
        assert_eq!(s, 200, "{b}");
        let given: i64 = b["entry"][0]["resource"]["parameter"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "events-since-subscription-start")
            .and_then(|p| p["valueString"].as_str())
            .and_then(|v| v.parse().ok())
            .expect("events-since-subscription-start");
        let hook = &hooks[ods];
        let received: Vec<i64> = hook.events().iter().map(|e| e.0).collect();
        let mut first_seen = Vec::new();
        for n in &received {
            if !first_seen.contains(n) {
                first_seen.push(*n);
            }
        }
        assert_eq!(
            first_seen,
            (1..=given).collect::<Vec<_>>(),
            "{ods}: every event number, in order"
        );
        // A post in flight when its replica was killed is sent again, with the same event
        // numbers, once its lease runs out: receivers de-duplicate by event number. Nothing
        // else is ever repeated.
        let repeats = received.len() - first_seen.len();
        let most_in_one_post = hook
            .of_kind("event-notification")
            .iter()
            .map(|r| r.events().len())
            .max()
            .unwrap_or(0);
        assert!(
            repeats <= most_in_one_post,
            "{ods}: {repeats} repeated events: {received:?}"
        );
        let shown = answered
            .iter()
            .filter(|(_, _, _, councils)| councils.iter().any(|c| c == ods))
            .count() as i64;
        // Look-ups in flight on the killed replica may have committed without being answered.
        assert!(
            given >= shown && given <= shown + 2,
            "{ods}: {given} events for {shown} answered look-ups that showed its plans"
        );
        assert_eq!(
            hook.most_at_once.load(Ordering::SeqCst),
            1,
            "{ods}: one worker posts to a subscription at a time"
        );
        eprintln!(
            "{ods}: {given} events in {} posts ({repeats} repeated) for {shown} answered look-ups that showed its plans",
            hook.of_kind("event-notification").len()
        );
    }
    drop(replicas);
}
