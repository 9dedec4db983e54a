//! The same server over PostgreSQL (the scale-out engine), when `CPIS_TEST_POSTGRES_URL` names
//! a server this test may create databases on (`.ci/run` sets it when one answers locally).
//! Without it these tests check nothing and say so — unless `CPIS_TEST_POSTGRES_REQUIRED` is
//! set (as `.ci/run` sets it), when a missing server fails them: CI must not pass silently.

use actix_web::http::Method;
use cpis_fhir::store::Store;
use diesel::connection::SimpleConnection;
use diesel::Connection;
use serde_json::json;

use crate::helpers::*;

/// A fresh, empty database for one test, dropped afterwards.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create() -> Option<Self> {
        let required = std::env::var_os("CPIS_TEST_POSTGRES_REQUIRED").is_some();
        let Ok(admin_url) = std::env::var("CPIS_TEST_POSTGRES_URL") else {
            assert!(
                !required,
                "CPIS_TEST_POSTGRES_REQUIRED is set but CPIS_TEST_POSTGRES_URL is not: the PostgreSQL tests cannot run"
            );
            return None;
        };
        let name = format!("cpis_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn =
            diesel::PgConnection::establish(&admin_url).expect("connect to CPIS_TEST_POSTGRES_URL");
        conn.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&admin_url);
        let url = format!("{base}/{name}");
        Some(Self {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut conn) = diesel::PgConnection::establish(&self.admin_url) {
            let _ = conn.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

#[actix_rt::test]
async fn councils_submit_and_clinicians_look_up_over_postgresql() {
    let Some(db) = PgDatabase::create() else {
        eprintln!("CPIS_TEST_POSTGRES_URL is not set: PostgreSQL not tested");
        return;
    };
    let url = db.url.clone();
    let app = TestApp::spawn_with(move |s| s.database_url = url).await;
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let id = flag["id"].as_str().expect("id").to_owned();
    let mut changed = flag.clone();
    changed["period"]["end"] = json!("2026-10-01");
    changed["status"] = json!("inactive");
    assert_eq!(
        app.put_json(&format!("/Flag/{id}"), &app.council(LA_A), &changed)
            .await
            .status,
        200
    );
    let before = app.audit_count();
    let b = app
        .lookup(&app.clinician(), NHS_1, "&_include=Flag:author", &[])
        .await
        .json();
    assert_eq!(b["total"], 1);
    assert_eq!(entries(&b, "match")[0]["period"]["end"], "2026-10-01");
    assert_eq!(entries(&b, "include")[0]["id"], LA_A);
    assert_eq!(app.audit_count(), before + 1);
    let h = app
        .get(&format!("/Flag/{id}/_history"), &app.council(LA_A))
        .await
        .json();
    assert_eq!(h["total"], 2);
    let history = app.audit_of(NHS_1).await;
    let kinds: Vec<&str> = history
        .iter()
        .filter_map(|e| e["subtype"][0]["code"].as_str())
        .collect();
    assert_eq!(kinds, ["history-instance", "search-type"]);
    // A duplicate inside the same batch rolls back alone.
    let r = app
        .post_json(
            "/Flag",
            &app.council(LA_A),
            &flag_json(NHS_1, LA_A, "PLAN-1"),
        )
        .await;
    r.assert_outcome(409, "duplicate");
    drop(app);
    drop(db);
}

#[actix_rt::test]
async fn look_ups_are_notified_over_postgresql_once_even_with_two_workers() {
    let Some(db) = PgDatabase::create() else {
        eprintln!("CPIS_TEST_POSTGRES_URL is not set: PostgreSQL not tested");
        return;
    };
    let url = db.url.clone();
    let app = TestApp::spawn_with(move |s| s.database_url = url).await;
    let hook = crate::notify::Receiver::start().await;
    crate::notify::subscribe(&app, LA_A, &hook.url).await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    app.deliver().await;
    assert_eq!(hook.of_kind("handshake").len(), 1);
    for _ in 0..5 {
        let r = app.lookup(&app.clinician(), NHS_1, "", &[]).await;
        assert_eq!(r.status, 200);
    }
    let other = app.notifier.another();
    let client = cpis_fhir::notify::Notifier::client();
    let (a, b) = futures_util::future::join(app.deliver(), other.step(&client)).await;
    let b = b.expect("step");
    assert_eq!(a.events_delivered + b.events_delivered, 5, "{a:?} {b:?}");
    let numbers: Vec<i64> = hook.events().iter().map(|e| e.0).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
}

#[actix_rt::test]
async fn racing_creates_of_one_plan_and_one_person_answer_one_201_and_409s_never_a_500_over_postgresql(
) {
    let Some(db) = PgDatabase::create() else {
        eprintln!("CPIS_TEST_POSTGRES_URL is not set: PostgreSQL not tested");
        return;
    };
    let url = db.url.clone();
    let app = TestApp::spawn_with(move |s| s.database_url = url).await;
    let token = app.council(LA_A);
    // Sixteen submissions of one new person at once, over PostgreSQL's four writer threads: each
    // finds no one and inserts; the database's key refuses all but one.
    let (path, body) = (format!("/Patient/{NHS_2}"), patient_json(NHS_2));
    let people =
        futures_util::future::join_all((0..16).map(|_| app.put_json(&path, &token, &body))).await;
    let statuses: Vec<u16> = people.iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().all(|s| [200, 201, 409].contains(s)),
        "{statuses:?}: {}",
        people.iter().map(Resp::text).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    for r in people.iter().filter(|r| r.status == 409) {
        r.assert_outcome(409, "duplicate");
    }
    // The same for one plan reference.
    let plan = flag_json(NHS_2, LA_A, "RACE-1");
    let plans =
        futures_util::future::join_all((0..16).map(|_| app.post_json("/Flag", &token, &plan)))
            .await;
    let statuses: Vec<u16> = plans.iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().all(|s| [201, 409].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    let found = app
        .get(
            "/Flag?identifier=https://la901.example.org/Id/plan%7CRACE-1",
            &token,
        )
        .await;
    assert_eq!(found.status, 200, "{}", found.text());
    assert_eq!(found.json()["total"], 1, "one Flag per plan reference");
    drop(app);
    drop(db);
}

#[test]
fn replicas_migrating_at_the_same_moment_all_succeed_one_applying_each_migration_over_postgresql() {
    let Some(db) = PgDatabase::create() else {
        eprintln!("CPIS_TEST_POSTGRES_URL is not set: PostgreSQL not tested");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let runs: Vec<_> = (0..3)
        .map(|_| {
            crate::cli::bin()
                .args(["migrate", "--database", &db.url, "--data-dir"])
                .arg(dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut conn = diesel::PgConnection::establish(&db.url).expect("connect");
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let applied: N = diesel::RunQueryDsl::get_result(
        diesel::sql_query("SELECT count(*) AS n FROM __diesel_schema_migrations"),
        &mut conn,
    )
    .expect("count");
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("migrations")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    assert_eq!(applied.n as usize, shipped);
}

#[actix_rt::test]
async fn a_scheduled_lifecycle_run_skips_while_another_replica_s_run_holds_the_lock_and_an_operator_s_waits_over_postgresql(
) {
    let Some(db) = PgDatabase::create() else {
        eprintln!("CPIS_TEST_POSTGRES_URL is not set: PostgreSQL not tested");
        return;
    };
    let url = db.url.clone();
    let app = TestApp::spawn_with(move |s| s.database_url = url).await;
    // Another replica's run, in progress: its transaction holds the lock.
    let mut other = diesel::PgConnection::establish(&db.url).expect("connect");
    other
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({})",
            cpis_fhir::store::lifecycle::RUN_LOCK
        ))
        .expect("hold the lock");

    let store = Store::open(&db.url, 1).expect("store");
    let rules = cpis_fhir::records::lifecycle::Rules {
        retention_months: 12,
        audit_retention_months: 96,
    };
    let now = chrono::Utc::now();
    let report = actix_web::rt::task::spawn_blocking(move || {
        store.write_blocking(move |c| {
            cpis_fhir::records::lifecycle::run(
                c,
                rules,
                now,
                &cpis_fhir::records::lifecycle::Trigger::Scheduler,
            )
        })
    })
    .await
    .expect("join")
    .expect("run");
    assert!(report.skipped, "{report:?}");

    // An administrator's $purge waits for the other run rather than skipping it.
    let admin = app.admin();
    let purge = app.request(Method::POST, "/$purge", Some(&admin), &[], None);
    futures_util::pin_mut!(purge);
    let waited = actix_rt::time::timeout(std::time::Duration::from_millis(500), &mut purge).await;
    assert!(waited.is_err(), "the purge waited for the lock");
    other.batch_execute("COMMIT").expect("release");
    let r = purge.await;
    assert_eq!(r.status, 200, "{}", r.text());
}
