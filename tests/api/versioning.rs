//! Versions: ETag and If-Match, vread, history, conditional create, delete as entered-in-error.

use actix_web::http::Method;
use serde_json::json;

use crate::helpers::*;

#[actix_rt::test]
async fn an_if_match_mismatch_is_refused_with_412_and_a_match_succeeds() {
    let app = TestApp::spawn().await;
    let t = app.council(LA_A);
    let mut flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let id = flag["id"].as_str().expect("id").to_owned();
    flag["status"] = json!("inactive");
    flag["period"]["end"] = json!("2026-03-01");
    let r = app
        .send_json(
            Method::PUT,
            &format!("/Flag/{id}"),
            &t,
            &flag,
            &[("If-Match", "W/\"7\"")],
        )
        .await;
    r.assert_outcome(412, "conflict");
    let r = app
        .send_json(
            Method::PUT,
            &format!("/Flag/{id}"),
            &t,
            &flag,
            &[("If-Match", "W/\"1\"")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("etag").as_deref(), Some("W/\"2\""));
    // The same If-Match again is now stale.
    let r = app
        .send_json(
            Method::PUT,
            &format!("/Flag/{id}"),
            &t,
            &flag,
            &[("If-Match", "W/\"1\"")],
        )
        .await;
    r.assert_outcome(412, "conflict");
    let r = app
        .send_json(
            Method::PUT,
            &format!("/Patient/{NHS_1}"),
            &t,
            &patient_json(NHS_1),
            &[("If-Match", "W/\"3\"")],
        )
        .await;
    r.assert_outcome(412, "conflict");
}

#[actix_rt::test]
async fn vread_returns_an_old_version_and_history_lists_every_version() {
    let app = TestApp::spawn().await;
    let t = app.council(LA_A);
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let id = flag["id"].as_str().expect("id").to_owned();
    let mut v2 = flag.clone();
    v2["period"]["end"] = json!("2026-04-01");
    assert_eq!(
        app.put_json(&format!("/Flag/{id}"), &t, &v2).await.status,
        200
    );
    // An unchanged resubmission makes no version.
    assert_eq!(
        app.put_json(&format!("/Flag/{id}"), &t, &v2).await.json()["meta"]["versionId"],
        "2"
    );
    let r = app
        .request(Method::DELETE, &format!("/Flag/{id}"), Some(&t), &[], None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let old = app.get(&format!("/Flag/{id}/_history/1"), &t).await;
    assert_eq!(old.status, 200);
    assert!(old.json()["period"].get("end").is_none());
    assert_eq!(old.json()["meta"]["versionId"], "1");
    assert_eq!(
        app.get(&format!("/Flag/{id}/_history/2"), &t).await.json()["period"]["end"],
        "2026-04-01"
    );
    app.get(&format!("/Flag/{id}/_history/9"), &t)
        .await
        .assert_outcome(404, "not-found");
    let h = app.get(&format!("/Flag/{id}/_history"), &t).await.json();
    assert_eq!(h["type"], "history");
    assert_eq!(h["total"], 3);
    let versions: Vec<&str> = h["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["resource"]["meta"]["versionId"].as_str())
        .collect();
    assert_eq!(versions, ["3", "2", "1"]);
    let methods: Vec<&str> = h["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["request"]["method"].as_str())
        .collect();
    assert_eq!(methods, ["DELETE", "PUT", "POST"]);
}

#[actix_rt::test]
async fn deleting_a_flag_marks_it_entered_in_error_and_keeps_it() {
    let app = TestApp::spawn().await;
    let t = app.council(LA_A);
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let id = flag["id"].as_str().expect("id").to_owned();
    assert_eq!(
        app.request(Method::DELETE, &format!("/Flag/{id}"), Some(&t), &[], None)
            .await
            .status,
        204
    );
    let after = app.get(&format!("/Flag/{id}"), &t).await.json();
    assert_eq!(after["status"], "entered-in-error");
    assert_eq!(after["meta"]["versionId"], "2");
    // Deleting again changes nothing.
    assert_eq!(
        app.request(Method::DELETE, &format!("/Flag/{id}"), Some(&t), &[], None)
            .await
            .status,
        204
    );
    assert_eq!(
        app.get(&format!("/Flag/{id}"), &t).await.json()["meta"]["versionId"],
        "2"
    );
    app.request(Method::DELETE, "/Flag/no-such-flag", Some(&t), &[], None)
        .await
        .assert_outcome(404, "not-found");
}

#[actix_rt::test]
async fn conditional_create_by_identifier_returns_the_existing_flag() {
    let app = TestApp::spawn().await;
    let t = app.council(LA_A);
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let cond = [(
        "If-None-Exist",
        "identifier=https%3A%2F%2Fla901.example.org%2FId%2Fplan%7CPLAN-1",
    )];
    let r = app
        .send_json(
            Method::POST,
            "/Flag",
            &t,
            &flag_json(NHS_1, LA_A, "PLAN-1"),
            &cond,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], flag["id"]);
    // Without the condition, a second Flag with the same plan reference is a conflict.
    let r = app
        .post_json("/Flag", &t, &flag_json(NHS_1, LA_A, "PLAN-1"))
        .await;
    r.assert_outcome(409, "duplicate");
    let r = app
        .send_json(
            Method::POST,
            "/Flag",
            &t,
            &flag_json(NHS_1, LA_A, "PLAN-1"),
            &[("If-None-Exist", "name=x")],
        )
        .await;
    r.assert_outcome(400, "invalid");
}

#[actix_rt::test]
async fn an_update_must_name_the_resource_it_updates() {
    let app = TestApp::spawn().await;
    let t = app.council(LA_A);
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let id = flag["id"].as_str().expect("id").to_owned();
    let mut other = flag.clone();
    other["id"] = json!("another-id");
    app.put_json(&format!("/Flag/{id}"), &t, &other)
        .await
        .assert_outcome(400, "invalid");
    let mut no_id = flag.clone();
    no_id.as_object_mut().map(|o| o.remove("id"));
    app.put_json(&format!("/Flag/{id}"), &t, &no_id)
        .await
        .assert_outcome(400, "required");
    // Flags cannot be created with a client-chosen id.
    let mut fresh = flag_json(NHS_1, LA_A, "PLAN-2");
    fresh["id"] = json!("my-own-id");
    app.put_json("/Flag/my-own-id", &t, &fresh)
        .await
        .assert_outcome(405, "not-supported");
    let mut p = patient_json(NHS_1);
    p["id"] = json!(NHS_2);
    app.put_json(&format!("/Patient/{NHS_1}"), &t, &p)
        .await
        .assert_outcome(400, "invalid");
}

/// The path of a `Location` header (it carries the server's base URL).
fn location_path(app: &TestApp, r: &Resp) -> String {
    let l = r.header("location").expect("a Location");
    l.strip_prefix(&app.base)
        .expect("under the base URL")
        .to_owned()
}

#[actix_rt::test]
async fn the_location_of_every_write_resolves_and_other_versions_say_only_the_current_is_kept() {
    let app = TestApp::spawn().await;
    let council = app.council(LA_A);
    // Patient.
    let r = app
        .put_json(&format!("/Patient/{NHS_1}"), &council, &patient_json(NHS_1))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let at = location_path(&app, &r);
    assert_eq!(at, format!("/Patient/{NHS_1}/_history/1"));
    let got = app.get(&at, &council).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["id"], NHS_1);
    assert_eq!(got.header("etag").as_deref(), Some("W/\"1\""));
    let other = app
        .get(&format!("/Patient/{NHS_1}/_history/2"), &council)
        .await;
    other.assert_outcome(404, "not-found");
    assert!(
        other.text().contains("only the current version (1)"),
        "{}",
        other.text()
    );
    // Another council learns nothing through vread either.
    app.get(&at, &app.council(LA_B))
        .await
        .assert_outcome(404, "not-found");
    // Organization.
    let r = app
        .put_json(
            "/Organization/LA903",
            &app.admin(),
            &org_json("LA903", "Westdale Council"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let at = location_path(&app, &r);
    let got = app.get(&at, &council).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["name"], "Westdale Council");
    app.get("/Organization/LA903/_history/7", &council)
        .await
        .assert_outcome(404, "not-found");
    // Subscription.
    let r = app
        .post_json(
            "/Subscription",
            &council,
            &crate::notify::subscription_json("https://case.example.org/hook", None),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let at = location_path(&app, &r);
    let got = app.get(&at, &council).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["resourceType"], "Subscription");
    app.get(&at, &app.council(LA_B))
        .await
        .assert_outcome(403, "forbidden");
    // The CapabilityStatement lists vread for each, and history only for Flag.
    let cs = app.get("/metadata", &council).await.json();
    for (t, history) in [
        ("Patient", false),
        ("Organization", false),
        ("Subscription", false),
        ("Flag", true),
    ] {
        let r = cs["rest"][0]["resource"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["type"] == t))
            .cloned()
            .unwrap_or_default();
        assert!(r["interaction"].to_string().contains("vread"), "{t}: {r}");
        assert_eq!(r["readHistory"].as_bool().unwrap_or(false), history, "{t}");
    }
}
