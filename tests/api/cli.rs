//! The command line: `serve --dev` prints tokens and a curl command that work; `token` mints a
//! token the dev server accepts; `serve` without keys refuses to start; `migrate` migrates.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::http::Method;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cpis-fhir"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix_rt::test]
async fn serve_dev_prints_a_curl_command_that_returns_a_flag() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut child = bin()
        .args([
            "serve",
            "--dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let child = Killed(child);
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut curl = None;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if line.trim_start().starts_with("curl") && line.contains("/Flag/") {
            curl = Some(line);
            break;
        }
    }
    let curl = curl.expect("a curl command for a Flag");
    let token = curl
        .split("Bearer ")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("token");
    let url = curl.split_whitespace().last().expect("url");
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/Flag/")),
        "{url}"
    );
    let client = awc::Client::default();
    let mut res = None;
    for _ in 0..100 {
        if let Ok(r) = client
            .get(url)
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send()
            .await
        {
            res = Some(r);
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let mut res = res.expect("server answered");
    assert_eq!(res.status().as_u16(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&res.body().await.expect("body")).expect("json");
    assert_eq!(body["resourceType"], "Flag");
    assert_eq!(body["author"]["reference"], "Organization/LA901");
    // The token command mints tokens the same server accepts.
    let out = bin()
        .args([
            "token",
            "--role",
            "clinician",
            "--org",
            "RDE01",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("token");
    assert!(out.status.success());
    let minted = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut r = client
        .get(format!("http://127.0.0.1:{port}/Organization/LA902"))
        .insert_header(("Authorization", format!("Bearer {minted}")))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let org: serde_json::Value =
        serde_json::from_slice(&r.body().await.expect("body")).expect("json");
    assert_eq!(org["name"], "Eastvale County Council");
    drop(child);
    let _ = Method::GET;
}

#[test]
fn serve_on_a_data_directory_that_cannot_be_made_or_a_database_that_cannot_be_opened_says_which() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let out = bin()
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot create the data directory"), "{err}");

    let out = bin()
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("CPIS_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open the database"), "{err}");
}

#[test]
fn serve_without_keys_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().expect("dir");
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.public_key_file") && err.contains("--dev"),
        "{err}"
    );
}

#[test]
fn a_bad_setting_is_a_start_up_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let out = bin()
        .args(["serve", "--dev", "--data-dir"])
        .arg(dir.path())
        .env("CPIS_BODY_LIMIT", "ten")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("body_limit"), "{err}");
}

#[test]
fn migrate_creates_the_database_and_is_repeatable() {
    let dir = tempfile::tempdir().expect("dir");
    for _ in 0..2 {
        let out = bin()
            .args(["migrate", "--data-dir"])
            .arg(dir.path())
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dir.path().join("cpis.db").exists());
}

#[test]
fn token_refuses_an_unknown_role() {
    let dir = tempfile::tempdir().expect("dir");
    let out = bin()
        .args(["token", "--role", "wizard", "--org", "LA901", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("clinician"));
}

/// Starts `serve --dev` and waits until it answers; returns the child, its log lines (stderr)
/// as they arrive, and a council token minted by the `token` command.
pub fn serve_dev(
    dir: &std::path::Path,
    port: u16,
) -> (Killed, std::sync::mpsc::Receiver<String>, String) {
    serve_dev_with(dir, port, &[], &[])
}

/// [`serve_dev`] with more arguments and environment variables.
pub fn serve_dev_with(
    dir: &std::path::Path,
    port: u16,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (Killed, std::sync::mpsc::Receiver<String>, String) {
    let mut command = bin();
    command
        .args([
            "serve",
            "--dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .envs(envs.iter().copied());
    let (child, logs) = spawn_until_listening(command);
    let token = mint(dir, "council", "LA901");
    (child, logs, token)
}

/// Spawns a server command and waits until it logs that it listens; returns it and its log
/// lines (stderr) as they arrive.
pub fn spawn_until_listening(mut command: Command) -> (Killed, std::sync::mpsc::Receiver<String>) {
    let mut child = command
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, logs) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end whether or not anyone listens: a server whose stderr pipe fills up
        // blocks on its next log line. Errors are echoed, so a failing test shows them.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" ERROR ") {
                eprintln!("server: {line}");
            }
            let _ = tx.send(line);
        }
    });
    let child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = logs
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server starts and logs that it listens");
        if line.contains("listening on") {
            return (child, logs);
        }
    }
}

/// One request to the server process on `port`: its status and JSON body (Null if none).
pub async fn call(
    client: &awc::Client,
    port: u16,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&serde_json::Value>,
    request_id: Option<&str>,
) -> Result<(u16, serde_json::Value), String> {
    let mut req = client
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .insert_header(("Authorization", format!("Bearer {token}")));
    if let Some(id) = request_id {
        req = req.insert_header(("X-Request-ID", id));
    }
    let sent = match body {
        Some(b) => {
            req.insert_header(("Content-Type", "application/fhir+json"))
                .send_body(b.to_string())
                .await
        }
        None => req.send().await,
    };
    let mut res = sent.map_err(|e| e.to_string())?;
    let bytes = res
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        res.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    ))
}

/// Every request id on the audit trail about one person, paged as the audit team pages.
pub async fn audited_request_ids(
    client: &awc::Client,
    port: u16,
    auditor: &str,
    nhs: &str,
) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    let mut next = Some(format!(
        "/AuditEvent?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{nhs}&_count=100"
    ));
    let mut pages = 0;
    while let Some(path) = next.take() {
        let (s, b) = call(client, port, Method::GET, &path, auditor, None, None)
            .await
            .expect("audit page");
        assert_eq!(s, 200, "{b}");
        for e in b["entry"].as_array().into_iter().flatten() {
            for ent in e["resource"]["entity"].as_array().into_iter().flatten() {
                if ent["type"]["code"] == "XrequestId" {
                    if let Some(id) = ent["what"]["identifier"]["value"].as_str() {
                        ids.insert(id.to_owned());
                    }
                }
            }
        }
        next = b["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
            .and_then(|l| l["url"].as_str())
            .map(|u| {
                u.trim_start_matches(&format!("http://127.0.0.1:{port}"))
                    .to_owned()
            });
        pages += 1;
        assert!(pages < 500, "paging does not end");
    }
    ids
}

/// A token from the `token` command over `dir`'s dev key.
pub fn mint(dir: &std::path::Path, role: &str, org: &str) -> String {
    let out = bin()
        .args(["token", "--role", role, "--org", org, "--data-dir"])
        .arg(dir)
        .output()
        .expect("token");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn wait_for_log(logs: &std::sync::mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        match logs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!("the log never said '{needle}'; it said: {seen:#?}"),
        }
    }
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_then_stops_the_server_and_its_workers_cleanly() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let (mut child, logs, token) = serve_dev(dir.path(), port);
    let body = include_str!("../../examples/patient.json")
        .replace("9449306753", "9990000026")
        .replace("Ellis", "Graceful");
    let (first, rest) = body.split_at(body.len() / 2);
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // `Expect: 100-continue`: the server says `100 Continue` once a worker has the connection
    // and has read the head, so the request is surely in flight before the signal (a connection
    // still waiting in the accept queue at the stop is closed unanswered, as it should be).
    write!(
        conn,
        "PUT /Patient/9990000026 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/fhir+json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .expect("send the head");
    conn.flush().expect("flush");
    let mut continued = [0u8; 25];
    conn.read_exact(&mut continued).expect("100 Continue");
    assert!(
        continued.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&continued)
    );
    conn.write_all(first.as_bytes())
        .expect("send half the body");
    conn.flush().expect("flush");

    // The request is in flight (its body half sent) when the server is told to stop.
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_for_log(&logs, "SIGTERM received");

    conn.write_all(rest.as_bytes())
        .expect("send the rest of the body");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("read the answer");
    assert!(
        answer.starts_with("HTTP/1.1 201"),
        "the request in flight was answered in full: {answer}"
    );

    let seen = wait_for_log(&logs, "stopped");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}; log: {seen:#?}");
    assert!(
        !seen.iter().any(|l| l.contains("still running")),
        "every background task stopped: {seen:#?}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens any more"
    );

    // What was accepted is there after a restart.
    let port = free_port();
    let (_child, _logs, token) = serve_dev(dir.path(), port);
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        conn,
        "GET /Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C9990000026 HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Graceful"), "{answer}");
}
