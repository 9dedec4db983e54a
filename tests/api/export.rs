//! The audit team's bulk export (HL7 FHIR Bulk Data Access, async pattern): kick-off, progress,
//! manifest, NDJSON equal to the matching rows, cancel, expiry, the requester only, and the
//! export's own AuditEvents.

use std::collections::BTreeSet;

use actix_web::http::Method;
use serde_json::Value;

use crate::helpers::*;
use cpis_fhir::domain::Role;

const ASYNC: &[(&str, &str)] = &[("Prefer", "respond-async")];

/// Starts an export; the status URL's path.
async fn kick_off(app: &TestApp, query: &str, token: &str) -> String {
    let r = app
        .request(Method::GET, query, Some(token), ASYNC, None)
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let location = r.header("content-location").expect("Content-Location");
    location[app.base.len()..].to_owned()
}

/// Polls the status URL as a client would, until the export is no longer in progress.
async fn finished(app: &TestApp, status: &str, token: &str) -> Resp {
    for _ in 0..400 {
        let r = app.get(status, token).await;
        if r.status != 202 {
            return r;
        }
        assert!(r.header("x-progress").is_some(), "202 carries X-Progress");
        actix_rt::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the export did not finish");
}

/// Every line of every file in the manifest.
async fn lines(app: &TestApp, manifest: &Value, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for file in manifest["output"].as_array().unwrap() {
        assert_eq!(file["type"], "AuditEvent");
        let url = file["url"].as_str().unwrap();
        let r = app.get(&url[app.base.len()..], token).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/fhir+ndjson")
        );
        let text = r.text();
        let these: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(file["count"], these.len());
        out.extend(these);
    }
    out
}

/// A file downloaded with this `Accept-Encoding`.
async fn download(app: &TestApp, path: &str, token: &str, accept: &str) -> Resp {
    app.request(
        Method::GET,
        path,
        Some(token),
        &[("Accept-Encoding", accept)],
        None,
    )
    .await
}

fn ids(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_rt::test]
async fn an_auditor_exports_the_matching_trail_as_ndjson_and_the_export_is_audited() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    app.given_flag(LA_B, NHS_2, "PLAN-B").await;
    let c = app.clinician();
    for nhs in [NHS_1, NHS_2, NHS_3, NHS_1] {
        assert_eq!(app.lookup(&c, nhs, "", &[]).await.status, 200);
    }
    let auditor = app.token(Role::Auditor, "X26");
    let status = kick_off(&app, "/AuditEvent/$export?agent-role=clinician", &auditor).await;
    let done = finished(&app, &status, &auditor).await;
    assert_eq!(done.status, 200, "{}", done.text());
    let manifest = done.json();
    assert_eq!(manifest["requiresAccessToken"], true);
    assert!(manifest["request"]
        .as_str()
        .unwrap()
        .ends_with("/AuditEvent/$export?agent-role=clinician"));
    assert!(manifest["transactionTime"].as_str().is_some());
    assert!(done.header("expires").is_some());
    let exported = lines(&app, &manifest, &auditor).await;
    // The same rows the search finds, each a valid R4 AuditEvent, oldest first.
    let searched = app.audit_search("agent-role=clinician&_count=100").await;
    assert_eq!(exported.len(), 4);
    assert_eq!(ids(&exported), ids(&searched));
    // Written straight from the row, each line is the very AuditEvent the search shows.
    let mut newest_first = exported.clone();
    newest_first.reverse();
    assert_eq!(newest_first, searched);
    for e in &exported {
        cpis_fhir::fhir::codec::check_json(e).expect("a valid R4 AuditEvent");
        assert_eq!(e["resourceType"], "AuditEvent");
    }
    let order: Vec<&str> = exported.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted);
    // Audited: the kick-off (who, the criteria), the end (how many), and the download.
    let own = app.audit_search("agent-role=auditor&_count=100").await;
    let operations = own
        .iter()
        .filter(|e| e["subtype"][0]["code"] == "operation")
        .count();
    assert_eq!(operations, 2, "the kick-off and the end");
    assert!(
        own.iter().any(|e| e["outcomeDesc"]
            .as_str()
            .is_some_and(|d| d.contains("4 AuditEvents in 1 files"))),
        "the export's end names how many it wrote"
    );
    assert!(own.iter().any(|e| e.to_string().contains("$export-file/")));
    // The system-level kick-off exports the same, and a council only its own records.
    let system = kick_off(
        &app,
        "/$export?_type=AuditEvent&agent-role=clinician",
        &auditor,
    )
    .await;
    let m = finished(&app, &system, &auditor).await.json();
    assert_eq!(ids(&lines(&app, &m, &auditor).await), ids(&searched));
    let council = app.council(LA_A);
    let theirs = kick_off(&app, "/AuditEvent/$export?agent-role=clinician", &council).await;
    let m = finished(&app, &theirs, &council).await.json();
    let only = lines(&app, &m, &council).await;
    assert_eq!(only.len(), 2, "the two look-ups of LA901's record");
    assert!(only.iter().all(|e| e.to_string().contains(NHS_1)));
}

#[actix_rt::test]
async fn an_export_file_is_sent_gzipped_to_a_client_that_accepts_gzip_and_inflated_to_one_that_does_not(
) {
    use std::io::Read;
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    let c = app.clinician();
    for nhs in [NHS_1, NHS_2, NHS_3] {
        assert_eq!(app.lookup(&c, nhs, "", &[]).await.status, 200);
    }
    let auditor = app.token(Role::Auditor, "X26");
    let status = kick_off(&app, "/AuditEvent/$export", &auditor).await;
    let manifest = finished(&app, &status, &auditor).await.json();
    let url = manifest["output"][0]["url"].as_str().unwrap();
    let path = &url[app.base.len()..];
    let plain = app.get(path, &auditor).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary").as_deref(), Some("accept-encoding"));
    let text = plain.text();
    assert_eq!(text.lines().count(), manifest["output"][0]["count"]);
    let fetch = |accept: &'static str| download(&app, path, &auditor, accept);
    for accept in ["gzip", "gzip, deflate, br", "identity;q=0.5, gzip"] {
        let zipped = fetch(accept).await;
        assert_eq!(zipped.status, 200, "{accept}");
        assert_eq!(zipped.header("content-encoding").as_deref(), Some("gzip"));
        assert_eq!(
            zipped.header("content-type").as_deref(),
            Some("application/fhir+ndjson")
        );
        assert!(zipped.body.len() < plain.body.len(), "compressed");
        let mut inflated = String::new();
        flate2::read::GzDecoder::new(&zipped.body[..])
            .read_to_string(&mut inflated)
            .expect("a gzip stream");
        assert_eq!(inflated, text, "{accept}: the same NDJSON");
    }
    // A client that refuses gzip, or sends a header that cannot be read, gets plain NDJSON.
    for accept in ["gzip;q=0", "identity", "br", "gzip;q=nonsense"] {
        let r = fetch(accept).await;
        assert_eq!(r.status, 200, "{accept}");
        assert_eq!(r.header("content-encoding"), None, "{accept}");
        assert_eq!(r.text(), text, "{accept}");
    }
}

#[actix_rt::test]
async fn only_the_requester_sees_an_export_and_it_can_be_cancelled_and_expires() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
    let auditor = app.token(Role::Auditor, "X26");
    let other = app.admin();
    let status = kick_off(&app, "/AuditEvent/$export", &auditor).await;
    let manifest = finished(&app, &status, &auditor).await.json();
    let file = manifest["output"][0]["url"].as_str().unwrap()[app.base.len()..].to_owned();
    app.get(&status, &other)
        .await
        .assert_outcome(403, "forbidden");
    app.get(&file, &other)
        .await
        .assert_outcome(403, "forbidden");
    app.request(Method::DELETE, &status, Some(&other), &[], None)
        .await
        .assert_outcome(403, "forbidden");
    assert_eq!(app.get(&file, &auditor).await.status, 200);
    // Expiry: a day later the files are gone.
    let on_disk = app.dir.path().join("exports");
    assert!(std::fs::read_dir(&on_disk).unwrap().next().is_some());
    app.advance(86_401);
    app.get(&status, &auditor)
        .await
        .assert_outcome(404, "not-found");
    app.get(&file, &auditor)
        .await
        .assert_outcome(404, "not-found");
    assert!(
        std::fs::read_dir(&on_disk).unwrap().next().is_none(),
        "expired files are deleted"
    );
    // Cancel: DELETE answers 202; the export and its files are gone.
    let second = kick_off(&app, "/AuditEvent/$export", &auditor).await;
    let m = finished(&app, &second, &auditor).await.json();
    let file = m["output"][0]["url"].as_str().unwrap()[app.base.len()..].to_owned();
    let r = app
        .request(Method::DELETE, &second, Some(&auditor), &[], None)
        .await;
    assert_eq!(r.status, 202);
    app.get(&second, &auditor)
        .await
        .assert_outcome(404, "not-found");
    app.get(&file, &auditor)
        .await
        .assert_outcome(404, "not-found");
    assert!(std::fs::read_dir(&on_disk).unwrap().next().is_none());
}

#[actix_rt::test]
async fn an_export_asked_for_wrongly_or_by_a_clinician_is_refused_with_an_outcome() {
    let app = TestApp::spawn().await;
    let auditor = app.token(Role::Auditor, "X26");
    let r = app.get("/AuditEvent/$export", &auditor).await;
    r.assert_outcome(400, "invalid");
    assert!(r.text().contains("respond-async"));
    for q in [
        "/$export?_type=Patient",
        "/AuditEvent/$export?_outputFormat=text/csv",
        "/AuditEvent/$export?_since=yesterday",
        "/AuditEvent/$export?outcome=3",
    ] {
        app.request(Method::GET, q, Some(&auditor), ASYNC, None)
            .await
            .assert_outcome(400, "invalid");
    }
    app.request(
        Method::GET,
        "/AuditEvent/$export",
        Some(&app.clinician()),
        ASYNC,
        None,
    )
    .await
    .assert_outcome(403, "forbidden");
    app.get("/$export-status/no-such-export", &auditor)
        .await
        .assert_outcome(404, "not-found");
}
