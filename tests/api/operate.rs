//! Running the real binary as an operator would: replicas started with `--no-migrate` after
//! `cpis-fhir migrate`, a backup taken while serving and restored into a fresh server, and a
//! SIGTERM under load that loses no audit row of any answered look-up.

use std::cell::RefCell;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::cli::{
    audited_request_ids, bin, call, free_port, mint, serve_dev, serve_dev_with, wait_for_log,
};
use crate::helpers::{flag_json, patient_json};

const NHS: &str = "9990000026";

/// Registers the person and a plan through the council's token.
async fn given_a_plan(client: &awc::Client, port: u16, council: &str) -> String {
    use actix_web::http::Method;
    let (s, v) = call(
        client,
        port,
        Method::PUT,
        &format!("/Patient/{NHS}"),
        council,
        Some(&patient_json(NHS)),
        None,
    )
    .await
    .expect("put patient");
    assert!(s == 201 || s == 200, "{s} {v}");
    let (s, v) = call(
        client,
        port,
        Method::POST,
        "/Flag",
        council,
        Some(&flag_json(NHS, "LA901", "OPS-1")),
        None,
    )
    .await
    .expect("post flag");
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().expect("flag id").to_owned()
}

/// A clinician's look-up of [`NHS`], with the given request id.
async fn look_up(
    client: &awc::Client,
    port: u16,
    clinician: &str,
    request_id: Option<&str>,
) -> (u16, serde_json::Value) {
    call(
        client,
        port,
        actix_web::http::Method::GET,
        &lookup_path(),
        clinician,
        None,
        request_id,
    )
    .await
    .expect("look-up")
}

/// `cpis-fhir backup` of the database in `data_dir` to `out`.
fn backup(data_dir: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    bin()
        .args(["backup", "--data-dir"])
        .arg(data_dir)
        .arg("--out")
        .arg(out)
        .output()
        .expect("backup")
}

fn lookup_path() -> String {
    format!("/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS}")
}

fn wait_for_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_replica_started_with_no_migrate_refuses_an_old_schema_and_starts_once_migrate_has_run() {
    let dir = tempfile::tempdir().expect("dir");
    let out = bin()
        .args([
            "serve",
            "--dev",
            "--no-migrate",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cpis-fhir migrate"), "{err}");

    let out = bin()
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port = free_port();
    let (_child, _logs, _token) = serve_dev_with(dir.path(), port, &["--no-migrate"], &[]);
    let mut ready = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    use std::io::{Read, Write};
    write!(
        ready,
        "GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    ready.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#""migrations":{"status":"pass"}"#),
        "{answer}"
    );
}

#[actix_rt::test]
async fn a_backup_taken_while_serving_restores_into_a_fresh_server_with_the_same_records_and_audit_trail(
) {
    let client = awc::Client::default();
    let live = tempfile::tempdir().expect("dir");
    let port = free_port();
    let (child, _logs, council) = serve_dev(live.path(), port);
    let flag = given_a_plan(&client, port, &council).await;
    let clinician = mint(live.path(), "clinician", "RDE01");
    for n in 0..3 {
        let (s, _) = look_up(
            &client,
            port,
            &clinician,
            Some(&format!("before-backup-{n}")),
        )
        .await;
        assert_eq!(s, 200);
    }
    let auditor = mint(live.path(), "auditor", "X26");
    let before = audited_request_ids(&client, port, &auditor, NHS).await;
    assert!(before.contains("before-backup-2"), "{before:?}");

    let copies = tempfile::tempdir().expect("dir");
    let copy = copies.path().join("cpis-backup.db");
    let out = backup(live.path(), &copy);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("checked") && said.contains("audit events"),
        "{said}"
    );
    // The live server went on serving while the copy was taken.
    let (s, _) = look_up(&client, port, &clinician, Some("after-backup")).await;
    assert_eq!(s, 200);

    let again = backup(live.path(), &copy);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    drop(child);

    // Restore: a fresh server's database is the copy.
    let restored = tempfile::tempdir().expect("dir");
    std::fs::copy(&copy, restored.path().join("cpis.db")).expect("copy into place");
    let port = free_port();
    let (_child, _logs, _council) = serve_dev(restored.path(), port);
    let clinician = mint(restored.path(), "clinician", "RDE01");
    let auditor = mint(restored.path(), "auditor", "X26");
    let after = audited_request_ids(&client, port, &auditor, NHS).await;
    assert!(
        before.is_subset(&after),
        "every audit row of the backup is there: {before:?} ⊄ {after:?}"
    );
    assert!(
        !after.contains("after-backup"),
        "the copy is of the moment it was taken"
    );
    let (s, b) = look_up(&client, port, &clinician, None).await;
    assert_eq!(s, 200);
    assert_eq!(b["entry"][0]["resource"]["id"], flag.as_str(), "{b}");
}

#[actix_rt::test]
async fn sigterm_under_load_loses_no_audit_row_of_any_look_up_that_was_answered() {
    use actix_web::http::Method;
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    // A short grace, so that a client keeping its connection open cannot hold the test up.
    let (mut child, logs, council) = serve_dev_with(
        dir.path(),
        port,
        &[],
        &[
            ("CPIS_SHUTDOWN_GRACE_SECS", "5"),
            ("CPIS_LIMITS_LOOKUPS_PER_USER_PER_MINUTE", "0"),
        ],
    );
    given_a_plan(&client, port, &council).await;
    let clinician = Rc::new(mint(dir.path(), "clinician", "RDE01"));

    let answered: Rc<RefCell<Vec<String>>> = Rc::default();
    let mut clients = Vec::new();
    for c in 0..8 {
        let (answered, clinician) = (Rc::clone(&answered), Rc::clone(&clinician));
        clients.push(actix_rt::spawn(async move {
            // A connection per client, reused: closing and reconnecting is how the stop shows.
            let client = awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish();
            for n in 0..2_000 {
                let id = format!("load-{c}-{n}");
                match call(
                    &client,
                    port,
                    Method::GET,
                    &lookup_path(),
                    &clinician,
                    None,
                    Some(&id),
                )
                .await
                {
                    Ok((200, _)) => answered.borrow_mut().push(id),
                    Ok((s, b)) => assert!(s == 503, "only 200, or 503 while stopping: {s} {b}"),
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.borrow().len() < 300 {
        assert!(Instant::now() < deadline, "the look-ups never got going");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    for c in clients {
        c.await.expect("client");
    }
    wait_for_log(&logs, "stopped");
    let status = wait_for_exit(&mut child.0);
    assert!(status.success(), "exit status {status}");
    let answered = answered.borrow().clone();
    eprintln!(
        "{} look-ups answered 200 before the server stopped",
        answered.len()
    );

    let port = free_port();
    let (_child, _logs, _council) = serve_dev(dir.path(), port);
    let auditor = mint(dir.path(), "auditor", "X26");
    let audited = audited_request_ids(&client, port, &auditor, NHS).await;
    let lost: Vec<&String> = answered
        .iter()
        .filter(|id| !audited.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered look-ups have no AuditEvent: {:?}",
        lost.len(),
        answered.len(),
        &lost[..lost.len().min(10)]
    );
}

/// One plain request on a fresh connection: the status line and the body.
fn get_plain(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    answer
}

#[test]
fn with_a_drain_period_a_stopping_server_reports_not_ready_while_it_still_serves_then_exits_cleanly(
) {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let (mut child, logs, _council) =
        serve_dev_with(dir.path(), port, &[], &[("CPIS_SHUTDOWN_DRAIN_SECS", "3")]);
    assert!(get_plain(port, "/health/ready").starts_with("HTTP/1.1 200"));
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_for_log(&logs, "draining for 3 s");
    let ready = get_plain(port, "/health/ready");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("\"draining\""), "{ready}");
    assert!(
        get_plain(port, "/metadata").starts_with("HTTP/1.1 200"),
        "still serving while draining"
    );
    wait_for_log(&logs, "stopped");
    let status = wait_for_exit(&mut child.0);
    assert!(status.success(), "exit status {status}");
}
