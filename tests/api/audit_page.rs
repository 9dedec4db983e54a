//! The audit team's page in headless Chromium (through ChromeDriver's WebDriver protocol, on
//! 127.0.0.1): it loads, takes a token, draws the charts, the notification backlog and the
//! misuse report from the FHIR API, and searches the trail with paging. A screenshot is kept in
//! `target/test-artefacts/audit-page.png`.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; `.ci/run` installs them and sets
//! `CPIS_TEST_BROWSER=1`, which makes their absence a failure). Without them, and without that
//! variable, the test says so and passes.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::cli::free_port;
use crate::helpers::*;
use crate::notify::subscribe;
use cpis_fhir::domain::Role;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    base: String,
    session: String,
    client: awc::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url),
        }
        .timeout(Duration::from_secs(60));
        let mut res = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .expect("chromedriver answers");
        let v: Value = res
            .json()
            .limit(64 << 20)
            .await
            .expect("JSON from chromedriver");
        assert!(
            v["value"].get("error").is_none(),
            "{method} {path}: {}",
            v["value"]["message"]
        );
        v["value"].clone()
    }

    async fn start(chromium: &str, driver: &str) -> Self {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if client.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        let mut d = Driver {
            child,
            base,
            session: String::new(),
            client,
        };
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,2400", "--no-first-run", "--no-proxy-server"],
            },
        }}});
        let v = d.call("POST", "/session", Some(caps)).await;
        d.session = v["sessionId"].as_str().expect("a session").to_owned();
        d
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    async fn open(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                "POST",
                &self.at("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{e}/clear")),
            Some(json!({})),
        )
        .await;
        self.call(
            "POST",
            &self.at(&format!("/element/{e}/value")),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{e}/click")),
            Some(json!({})),
        )
        .await;
    }

    async fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Waits (polling the page, at most 20 s) until `script` returns something truthy.
    async fn until(&self, script: &str, what: &str) -> Value {
        for _ in 0..200 {
            let v = self.eval(script).await;
            if !(v.is_null() || v == false || v == 0 || v == "") {
                return v;
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        let status = self
            .eval("return document.querySelector('#status').textContent")
            .await;
        panic!("the page never showed {what} (status: {status})");
    }
}

fn tools() -> Option<(String, String)> {
    let chromium = std::env::var("CPIS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver =
        std::env::var("CPIS_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let there = std::path::Path::new(&chromium).exists() && std::path::Path::new(&driver).exists();
    if !there {
        assert!(
            std::env::var("CPIS_TEST_BROWSER").is_err(),
            "CPIS_TEST_BROWSER is set but {chromium} or {driver} is missing"
        );
        eprintln!("skipped: no Chromium/ChromeDriver (apt-get install chromium chromium-driver)");
        return None;
    }
    Some((chromium, driver))
}

#[actix_rt::test]
async fn the_audit_page_signs_in_and_draws_accesses_backlog_misuse_and_a_paged_search_in_chromium()
{
    let Some((chromium, chromedriver)) = tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    app.given_flag(LA_B, NHS_2, "PLAN-B").await;
    subscribe(&app, LA_A, "http://127.0.0.1:9/hook").await;
    let ann = app.named_user("ann", Role::Clinician, "RDE01");
    let bob = app.named_user("bob", Role::Clinician, "RBB02");
    for (t, nhs) in [(&ann, NHS_1), (&ann, NHS_2), (&bob, NHS_1)] {
        assert_eq!(app.lookup(t, nhs, "", &[]).await.status, 200);
    }
    app.advance(86_400);
    for _ in 0..25 {
        assert_eq!(app.lookup(&ann, NHS_1, "", &[]).await.status, 200);
    }
    // One delivery attempt to a closed port: the council's notifications wait.
    app.deliver().await;
    let auditor = app.token(Role::Auditor, "X26");

    let d = Driver::start(&chromium, &chromedriver).await;
    d.open(&format!("{}/audit/", app.base)).await;
    d.until(
        "return document.querySelector('#token') !== null",
        "the sign-in form",
    )
    .await;
    d.type_into("#token", &auditor).await;
    d.click("#sign-in-button").await;
    d.until(
        "return !document.querySelector('#app').hidden",
        "the signed-in page",
    )
    .await;
    // Signing in shows the last 30 days' report (by the browser's clock) first.
    d.until(
        "return document.querySelector('#status').textContent.startsWith('Report for')",
        "the first report",
    )
    .await;
    let before = app.audit_count();
    d.type_into("#start", "11/25/2026").await;
    d.type_into("#end", "11/26/2026").await;
    let set = d
        .eval(
            "return [document.querySelector('#start').value, document.querySelector('#end').value]",
        )
        .await;
    if set != json!(["2026-11-25", "2026-11-26"]) {
        // Date inputs take keys in the browser's locale; set the values directly otherwise.
        d.eval("document.querySelector('#start').value='2026-11-25'; document.querySelector('#end').value='2026-11-26'; return 1").await;
    }
    d.click("#show").await;
    d.until(
        "return document.querySelector('#status').textContent.startsWith('Report for 2026-11-25')",
        "the report",
    )
    .await;
    // The charts: a bar per day and series, with the counts the trail holds.
    let council_bars = d
        .eval("return [...document.querySelectorAll('#chart-councils rect.bar')].map(b => [b.dataset.day, b.dataset.series, +b.dataset.count])")
        .await;
    assert_eq!(
        council_bars,
        json!([
            ["2026-11-25", "LA901", 2],
            ["2026-11-25", "LA902", 1],
            ["2026-11-26", "LA901", 25]
        ])
    );
    let org_bars = d
        .eval("return [...document.querySelectorAll('#chart-orgs rect.bar')].map(b => [b.dataset.day, b.dataset.series, +b.dataset.count])")
        .await;
    assert_eq!(
        org_bars,
        json!([
            ["2026-11-25", "RDE01", 2],
            ["2026-11-25", "RBB02", 1],
            ["2026-11-26", "RDE01", 25]
        ])
    );
    // The notification backlog of the subscribed council.
    let backlog = d
        .eval("return [...document.querySelectorAll('#notifications tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
        .await;
    let row = backlog[0].as_array().unwrap();
    assert_eq!(row[0], "LA901");
    assert_eq!(row[1], "1");
    assert!(
        row[2].as_str().unwrap().parse::<u32>().unwrap() >= 1,
        "notifications wait: {row:?}"
    );
    // The misuse report: ann looked up two people, 27 accesses.
    let misuse = d
        .eval("return [...document.querySelectorAll('#misuse tbody tr')].map(r => [...r.cells].slice(0, 6).map(c => c.textContent))")
        .await;
    assert!(
        misuse.as_array().unwrap().contains(&json!([
            "ann",
            "Name of ann",
            "RDE01",
            "clinician",
            "27",
            "2"
        ])),
        "{misuse}"
    );
    // Its link shows ann's AuditEvents, 20 to a page; Next shows the rest.
    d.click("#misuse tbody tr:first-child a").await;
    d.until(
        "return document.querySelectorAll('#results tbody tr').length === 20",
        "the first page of ann's accesses",
    )
    .await;
    d.click("#next").await;
    d.until(
        "return document.querySelectorAll('#results tbody tr').length === 7",
        "the second page",
    )
    .await;
    let users = d
        .eval("return [...new Set([...document.querySelectorAll('#results tbody tr')].map(r => r.cells[1].textContent))]")
        .await;
    assert_eq!(users, json!(["ann"]));
    // The search form: bob's accesses.
    d.type_into("#search input[name=agent]", "bob").await;
    d.click("#search-button").await;
    d.until(
        "return document.querySelectorAll('#results tbody tr').length === 1",
        "bob's one access",
    )
    .await;
    assert_eq!(
        d.eval("return document.querySelector('#results tbody tr').cells[7].textContent")
            .await,
        NHS_1
    );
    // Everything the page showed came through the API, audited: the report and three searches.
    assert_eq!(app.audit_count() - before, 4);
    let png = d.call("GET", &d.at("/screenshot"), None).await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("audit-page.png"), bytes).unwrap();
    // The token lives in the tab's session storage only.
    assert_eq!(d.eval("return localStorage.length").await, 0);
    assert_eq!(d.eval("return document.cookie").await, "");
    d.call("DELETE", &d.at(""), None).await;
}

#[actix_rt::test]
async fn the_audit_page_is_served_with_a_strict_content_security_policy_and_holds_no_data() {
    let app = TestApp::spawn().await;
    for (path, kind) in [
        ("/audit/", "text/html"),
        ("/audit/app.js", "text/javascript"),
        ("/audit/style.css", "text/css"),
    ] {
        let r = app
            .request(actix_web::http::Method::GET, path, None, &[], None)
            .await;
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with(kind));
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
    }
    let r = app
        .request(actix_web::http::Method::GET, "/audit", None, &[], None)
        .await;
    // The test client follows the 308 to the page.
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<title>CP-IS audit</title>"));
    assert!(!app
        .request(actix_web::http::Method::GET, "/audit/", None, &[], None)
        .await
        .text()
        .contains(LA_A));
}
