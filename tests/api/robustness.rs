//! No input crashes the server: malformed bodies, wrong media types, oversized bodies, unknown
//! routes all get a clear OperationOutcome, and the server keeps serving.

use actix_web::http::Method;

use crate::helpers::*;

async fn still_serving(app: &TestApp) {
    let r = app.request(Method::GET, "/metadata", None, &[], None).await;
    assert_eq!(r.status, 200);
}

#[actix_rt::test]
async fn malformed_bodies_get_a_400_operation_outcome_naming_the_problem() {
    let app = TestApp::spawn().await;
    let t = app.council(LA_A);
    let cases: Vec<(&str, &str)> = vec![
        (
            r#"{"resourceType":"Flag","identifier":[]}"#,
            "Flag.identifier",
        ),
        (
            r#"{"resourceType":"Flag","extension":[]}"#,
            "Flag.extension",
        ),
        (r#"{"resourceType":"Flag","status":null}"#, "Flag.status"),
        (r#"{"resourceType":"Flag","code":{}}"#, "Flag.code"),
        (r#"{"resourceType":"Flag","status":""}"#, "Flag.status"),
        (
            r#"{"resourceType":"Patient","status":"active"}"#,
            "resourceType",
        ),
        (r#"{"status":"active"}"#, "resourceType"),
    ];
    for (body, expression) in cases {
        let r = app
            .request(
                Method::POST,
                "/Flag",
                Some(&t),
                &[("Content-Type", "application/fhir+json")],
                Some(body.as_bytes().to_vec()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(
            r.expressions().contains(&expression.to_owned()),
            "{body}: {}",
            r.text()
        );
    }
    for body in [
        r#"{"resourceType":"Flag","status":"act"#,
        "[1,2,3]",
        "\"Flag\"",
        r#"{"resourceType":"Flag","status":"active","status":"inactive"}"#,
        "\u{0}\u{1}",
        "<Flag xmlns=\"http://hl7.org/fhir\"><status",
    ] {
        let r = app
            .request(
                Method::POST,
                "/Flag",
                Some(&t),
                &[("Content-Type", "application/fhir+json")],
                Some(body.as_bytes().to_vec()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["resourceType"], "OperationOutcome");
        assert!(r.json()["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }
    let r = app
        .request(
            Method::POST,
            "/Flag",
            Some(&t),
            &[("Content-Type", "application/fhir+xml")],
            Some(b"<Flag xmlns=\"http://hl7.org/fhir\"><status".to_vec()),
        )
        .await;
    r.assert_outcome(400, "structure");
    let r = app
        .request(
            Method::POST,
            "/Flag",
            Some(&t),
            &[("Content-Type", "application/fhir+xml")],
            Some(b"<Flag xmlns=\"http://hl7.org/fhir\"><identifier/></Flag>".to_vec()),
        )
        .await;
    assert!(r.status == 400 || r.status == 422, "{}", r.text());
    still_serving(&app).await;
}

#[actix_rt::test]
async fn an_11_mib_body_is_refused_with_413() {
    let app = TestApp::spawn().await;
    let t = app.council(LA_A);
    let big = format!(
        r#"{{"resourceType":"Flag","id":"{}"}}"#,
        "x".repeat(11 * 1024 * 1024)
    );
    let r = app
        .request(
            Method::POST,
            "/Flag",
            Some(&t),
            &[("Content-Type", "application/fhir+json")],
            Some(big.into_bytes()),
        )
        .await;
    r.assert_outcome(413, "too-costly");
    still_serving(&app).await;
}

#[actix_rt::test]
async fn wrong_media_types_get_415_and_406() {
    let app = TestApp::spawn().await;
    let t = app.council(LA_A);
    let body = flag_json(NHS_1, LA_A, "P").to_string().into_bytes();
    let r = app
        .request(
            Method::POST,
            "/Flag",
            Some(&t),
            &[("Content-Type", "text/plain")],
            Some(body.clone()),
        )
        .await;
    r.assert_outcome(415, "not-supported");
    let r = app
        .request(Method::POST, "/Flag", Some(&t), &[], Some(body))
        .await;
    r.assert_outcome(415, "not-supported");
    let r = app
        .request(
            Method::GET,
            "/metadata",
            None,
            &[("Accept", "text/html")],
            None,
        )
        .await;
    r.assert_outcome(406, "not-supported");
    let r = app
        .request(Method::GET, "/metadata?_format=yaml", None, &[], None)
        .await;
    r.assert_outcome(406, "not-supported");
    let r = app
        .request(
            Method::GET,
            "/metadata",
            None,
            &[("Accept", "text/html, application/fhir+xml;q=0.9")],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("<?xml"));
}

#[actix_rt::test]
async fn unknown_routes_and_methods_get_an_operation_outcome() {
    let app = TestApp::spawn().await;
    let r = app
        .request(Method::GET, "/Nope", Some(&app.admin()), &[], None)
        .await;
    r.assert_outcome(404, "not-found");
    let r = app
        .request(Method::PATCH, "/Flag/abc", Some(&app.admin()), &[], None)
        .await;
    r.assert_outcome(405, "not-supported");
    let r = app
        .request(
            Method::DELETE,
            "/metadata",
            None,
            &[("Accept", "application/fhir+xml")],
            None,
        )
        .await;
    assert_eq!(r.status, 405);
    assert!(r.text().contains("<OperationOutcome"), "{}", r.text());
}

#[actix_rt::test]
async fn every_response_carries_a_request_id_and_echoes_the_callers() {
    let app = TestApp::spawn().await;
    let r = app
        .request(
            Method::GET,
            "/metadata",
            None,
            &[("X-Request-ID", "abc-123")],
            None,
        )
        .await;
    assert_eq!(r.header("x-request-id").as_deref(), Some("abc-123"));
    let r = app.request(Method::GET, "/Nope", None, &[], None).await;
    assert!(r.header("x-request-id").is_some_and(|v| v.len() >= 32));
    let r = app
        .request(
            Method::GET,
            "/metadata",
            None,
            &[("TraceID", "0f4a7c8e-0000-4000-8000-000000000001")],
            None,
        )
        .await;
    assert_eq!(
        r.header("x-request-id").as_deref(),
        Some("0f4a7c8e-0000-4000-8000-000000000001")
    );
}

#[actix_rt::test]
async fn a_corrupt_stored_list_is_answered_500_and_never_rendered_as_empty() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
    let events = app.audit_of(NHS_1).await;
    let id = events[0]["id"].as_str().expect("id").to_owned();
    let auditor = app.token(cpis_fhir::domain::Role::Auditor, "X26");
    let good = app.get(&format!("/AuditEvent/{id}"), &auditor).await;
    assert_eq!(good.status, 200, "{}", good.text());
    assert!(
        good.text().contains("Flag/"),
        "the disclosed Flag is rendered"
    );
    // The list of disclosed entities is damaged on disk (a hand edit, a bad restore).
    let corrupt = format!("UPDATE audit_events SET disclosed = '[\"Flag/' WHERE id = '{id}'");
    app.tamper(&corrupt, &corrupt);
    let r = app.get(&format!("/AuditEvent/{id}"), &auditor).await;
    r.assert_outcome(500, "exception");
    assert!(
        !r.text().contains("disclosed"),
        "the detail goes to the log, not to the caller: {}",
        r.text()
    );
}
