//! What operators and load balancers see: `/health/live`, `/health/ready` and `/metrics`, in
//! plain JSON or the Prometheus text format, without bearer tokens, never an OperationOutcome,
//! never personal data.

use actix_web::http::Method;

use crate::helpers::*;
use crate::notify::{subscribe, Receiver};

#[actix_rt::test]
async fn liveness_answers_pass_without_a_token() {
    let app = TestApp::spawn().await;
    let r = app
        .request(Method::GET, "/health/live", None, &[], None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/health+json")
    );
    assert_eq!(r.json()["status"], "pass");
}

#[actix_rt::test]
async fn readiness_passes_on_a_healthy_server_and_names_each_check() {
    let app = TestApp::spawn().await;
    let r = app
        .request(Method::GET, "/health/ready", None, &[], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "pass", "{v}");
    for check in ["database", "migrations", "writer", "keys", "notifier"] {
        assert_eq!(v["checks"][check]["status"], "pass", "{check}: {v}");
    }
    assert_eq!(v["checks"]["keys"]["observedValue"], 1, "{v}");
}

#[actix_rt::test]
async fn readiness_fails_with_503_in_plain_json_when_no_token_could_be_verified() {
    let app = TestApp::spawn().await;
    // What a key set emptied by a broken identity-provider configuration looks like.
    app.verifier.replace_keys(app.verifier.new_key_set());
    let r = app
        .request(Method::GET, "/health/ready", None, &[], None)
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/health+json")
    );
    let v = r.json();
    assert_eq!(v["status"], "fail", "{v}");
    assert_eq!(v["checks"]["keys"]["status"], "fail", "{v}");
    assert_eq!(v["checks"]["database"]["status"], "pass", "{v}");
    assert!(
        v.get("resourceType").is_none(),
        "not an OperationOutcome: {v}"
    );
}

#[actix_rt::test]
async fn health_paths_refuse_other_methods_with_405() {
    let app = TestApp::spawn().await;
    let r = app
        .request(Method::POST, "/health/ready", None, &[], None)
        .await;
    assert_eq!(r.status, 405);
    assert!(r.text().contains("allowed: GET"), "{}", r.text());
}

#[actix_rt::test]
async fn metrics_count_requests_by_route_pattern_and_disclosures_without_any_nhs_number() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "CP-1").await;
    let clinician = app.clinician();
    assert_eq!(app.lookup(&clinician, NHS_1, "", &[]).await.status, 200);
    let other = app
        .get(&format!("/Patient/{NHS_2}"), &clinician)
        .await
        .status;
    assert!(matches!(other, 403 | 404), "{other}");
    let r = app.request(Method::GET, "/metrics", None, &[], None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.header("content-type")
    );
    let text = r.text();
    assert!(
        text.contains(r#"cpis_http_requests_total{method="GET",route="/Flag",status="200"}"#),
        "{text}"
    );
    assert!(text.contains(r#"route="/Patient/{id}""#), "{text}");
    assert!(
        text.contains(r#"cpis_audited_disclosures_total{found="true",purpose="unscheduled"}"#),
        "{text}"
    );
    assert!(text.contains("cpis_writer_commit_seconds_count"), "{text}");
    assert!(
        text.contains(r#"cpis_notification_backlog_events{status="outbox"}"#),
        "{text}"
    );
    for nhs in [NHS_1, NHS_2] {
        assert!(!text.contains(nhs), "no NHS number in any label");
    }
}

#[actix_rt::test]
async fn with_a_scrape_token_configured_metrics_need_it_even_from_loopback() {
    let app =
        TestApp::spawn_with(|s| s.metrics_token = Some("scrape-secret-0123456789".into())).await;
    let none = app.request(Method::GET, "/metrics", None, &[], None).await;
    assert_eq!(none.status, 401);
    assert!(none.text().contains("metrics_token"), "{}", none.text());
    let wrong = app
        .request(
            Method::GET,
            "/metrics",
            Some("scrape-secret-0123456788"),
            &[],
            None,
        )
        .await;
    assert_eq!(wrong.status, 401);
    // A clinician's bearer token is not a scrape token.
    let clinician = app.clinician();
    let theirs = app
        .request(Method::GET, "/metrics", Some(&clinician), &[], None)
        .await;
    assert_eq!(theirs.status, 401);
    let right = app
        .request(
            Method::GET,
            "/metrics",
            Some("scrape-secret-0123456789"),
            &[],
            None,
        )
        .await;
    assert_eq!(right.status, 200);
    assert!(right.text().contains("cpis_http_requests_total"));
}

#[actix_rt::test]
async fn a_subscription_s_backlog_and_lag_show_in_metrics_until_delivered() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    subscribe(&app, LA_A, &hook.url).await;
    app.given_flag(LA_A, NHS_1, "CP-1").await;
    app.deliver().await; // the handshake
    let clinician = app.clinician();
    assert_eq!(app.lookup(&clinician, NHS_1, "", &[]).await.status, 200);
    let before = app
        .request(Method::GET, "/metrics", None, &[], None)
        .await
        .text();
    assert!(
        before.contains(r#"cpis_notification_backlog_events{status="outbox"} 1"#),
        "{before}"
    );
    app.deliver().await;
    let after = app
        .request(Method::GET, "/metrics", None, &[], None)
        .await
        .text();
    assert!(
        after.contains(r#"cpis_notification_backlog_events{status="outbox"} 0"#),
        "{after}"
    );
    assert!(
        after.contains(r#"cpis_notification_backlog_events{status="active"} 0"#),
        "{after}"
    );
    assert!(
        after.contains(r#"cpis_subscriptions{status="active"} 1"#),
        "{after}"
    );
}

#[actix_rt::test]
async fn a_flood_of_readiness_probes_costs_one_check_a_second() {
    let app = TestApp::spawn().await;
    let mut times = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let r = app
            .request(Method::GET, "/health/ready", None, &[], None)
            .await;
        assert_eq!(r.status, 200);
        times.insert(r.json()["time"].as_str().unwrap().to_owned());
    }
    assert!(times.len() <= 2, "{} checks for 20 probes", times.len());
}
