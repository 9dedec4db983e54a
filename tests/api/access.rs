//! Bearer tokens and who may do what: councils act only on their own records, clinicians never
//! write and reach records only through the audited look-up.

use actix_web::http::Method;
use cpis_fhir::domain::Role;
use serde_json::json;

use crate::helpers::*;

#[actix_rt::test]
async fn council_b_cannot_create_update_read_or_delete_council_a_s_flag() {
    let app = TestApp::spawn().await;
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let id = flag["id"].as_str().expect("id");
    let b = app.council(LA_B);
    app.get(&format!("/Flag/{id}"), &b)
        .await
        .assert_outcome(403, "forbidden");
    app.get(&format!("/Flag/{id}/_history"), &b)
        .await
        .assert_outcome(403, "forbidden");
    app.get(&format!("/Flag/{id}/_history/1"), &b)
        .await
        .assert_outcome(403, "forbidden");
    // Updating while claiming to be A, or re-authoring the Flag as B, are both refused.
    app.put_json(&format!("/Flag/{id}"), &b, &flag)
        .await
        .assert_outcome(403, "forbidden");
    let mut as_b = flag.clone();
    as_b["author"] = json!({ "reference": format!("Organization/{LA_B}") });
    app.put_json(&format!("/Flag/{id}"), &b, &as_b)
        .await
        .assert_outcome(403, "forbidden");
    app.request(Method::DELETE, &format!("/Flag/{id}"), Some(&b), &[], None)
        .await
        .assert_outcome(403, "forbidden");
    app.post_json("/Flag", &b, &flag_json(NHS_1, LA_A, "PLAN-2"))
        .await
        .assert_outcome(403, "forbidden");
    // B cannot read the person either, who has no plan of B's: the answer is the one for a
    // person not on CP-IS, so it tells B nothing of A's records.
    app.get(&format!("/Patient/{NHS_1}"), &b)
        .await
        .assert_outcome(404, "not-found");
    // A's Flag is untouched.
    let a = app
        .get(&format!("/Flag/{id}"), &app.council(LA_A))
        .await
        .json();
    assert_eq!(a, flag);
}

#[actix_rt::test]
async fn clinicians_cannot_write_nor_see_earlier_versions() {
    let app = TestApp::spawn().await;
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let id = flag["id"].as_str().expect("id");
    for role in [Role::Clinician, Role::ClinicianScheduled] {
        let t = app.token(role, "RDE01");
        app.post_json("/Flag", &t, &flag_json(NHS_1, LA_A, "PLAN-9"))
            .await
            .assert_outcome(403, "forbidden");
        app.put_json(&format!("/Flag/{id}"), &t, &flag)
            .await
            .assert_outcome(403, "forbidden");
        app.request(Method::DELETE, &format!("/Flag/{id}"), Some(&t), &[], None)
            .await
            .assert_outcome(403, "forbidden");
        app.put_json(&format!("/Patient/{NHS_1}"), &t, &patient_json(NHS_1))
            .await
            .assert_outcome(403, "forbidden");
        app.get(&format!("/Flag/{id}/_history"), &t)
            .await
            .assert_outcome(403, "forbidden");
        app.get(&format!("/Flag/{id}/_history/1"), &t)
            .await
            .assert_outcome(403, "forbidden");
        // The current record is readable, audited like the look-up.
        assert_eq!(app.get(&format!("/Flag/{id}"), &t).await.status, 200);
        assert_eq!(app.get(&format!("/Patient/{NHS_1}"), &t).await.status, 200);
    }
}

#[actix_rt::test]
async fn auditors_and_administrators_can_read_records_but_not_write_them() {
    let app = TestApp::spawn().await;
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let id = flag["id"].as_str().expect("id");
    for t in [app.token(Role::Auditor, "X26"), app.admin()] {
        assert_eq!(app.get(&format!("/Flag/{id}"), &t).await.status, 200);
        assert_eq!(app.get(&format!("/Patient/{NHS_1}"), &t).await.status, 200);
        app.put_json(&format!("/Flag/{id}"), &t, &flag)
            .await
            .assert_outcome(403, "forbidden");
    }
}

#[actix_rt::test]
async fn requests_without_a_valid_token_get_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let r = app
        .request(Method::GET, "/Organization/LA901", None, &[], None)
        .await;
    r.assert_outcome(401, "login");
    assert!(r
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Bearer")));
    let good = app.council(LA_A);
    let parts: Vec<&str> = good.split('.').collect();
    // alg=none with the same claims, a stripped signature, a tampered payload, garbage.
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    let bad = [
        format!("{none_header}.{}.", parts[1]),
        format!("{}.{}.", parts[0], parts[1]),
        format!("{}.{}x.{}", parts[0], parts[1], parts[2]),
        "not-a-token".to_owned(),
    ];
    for t in bad {
        let r = app.get("/Organization/LA901", &t).await;
        r.assert_outcome(401, "login");
    }
    let r = app
        .request(
            Method::GET,
            "/Organization/LA901",
            None,
            &[("Authorization", "Basic abc")],
            None,
        )
        .await;
    r.assert_outcome(401, "login");
}

#[actix_rt::test]
async fn expired_tokens_and_wrong_audiences_are_refused() {
    use cpis_fhir::auth::dev::{mint, TokenRequest};
    let app = TestApp::spawn().await;
    let wrong_audience = mint(
        app.dir.path(),
        &TokenRequest {
            role: Role::Council,
            org: cpis_fhir::domain::OdsCode::parse(LA_A).expect("ods"),
            user: "u".into(),
            name: None,
            ttl_secs: 600,
            audience: "someone-else".into(),
        },
    )
    .expect("token");
    let r = app.get("/Organization/LA901", &wrong_audience).await;
    r.assert_outcome(401, "login");
    assert!(r.text().contains("audience"), "{}", r.text());
    // A token that expired an hour ago (well past the leeway), otherwise valid.
    let now = chrono::Utc::now().timestamp();
    let expired = cpis_fhir::auth::dev::sign_claims(
        app.dir.path(),
        &serde_json::json!({
            "iss": cpis_fhir::auth::dev::DEV_ISSUER, "sub": "u", "aud": "cpis-fhir",
            "iat": now - 7200, "exp": now - 3600, "jti": "j", "role": "admin", "org": "X26",
        }),
    )
    .expect("token");
    let r = app.get("/Organization/LA901", &expired).await;
    r.assert_outcome(401, "login");
    assert!(r.text().contains("expired"), "{}", r.text());
    // A token signed by a key the server does not trust.
    let other = tempfile::tempdir().expect("dir");
    cpis_fhir::auth::dev::ensure_key(other.path()).expect("key");
    let foreign = mint(
        other.path(),
        &TokenRequest {
            role: Role::Admin,
            org: cpis_fhir::domain::OdsCode::parse("X26").expect("ods"),
            user: "u".into(),
            name: None,
            ttl_secs: 600,
            audience: "cpis-fhir".into(),
        },
    )
    .expect("token");
    app.get("/Organization/LA901", &foreign)
        .await
        .assert_outcome(401, "login");
}

#[actix_rt::test]
async fn a_user_past_the_look_up_limit_gets_429_with_retry_after_audited_and_recovers_after_the_minute(
) {
    let app = TestApp::spawn_with(|s| s.limits.lookups_per_user_per_minute = 3).await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let clinician = app.clinician();
    for _ in 0..3 {
        assert_eq!(app.lookup(&clinician, NHS_1, "", &[]).await.status, 200);
    }
    let r = app.lookup(&clinician, NHS_1, "", &[]).await;
    r.assert_outcome(429, "throttled");
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(
        !r.text().contains("Carter"),
        "nothing disclosed: {}",
        r.text()
    );
    // Another clinician is not held up by this one.
    let other = app.token(Role::ClinicianScheduled, "GPX01");
    assert_eq!(app.lookup(&other, NHS_1, "", &[]).await.status, 200);
    // The refused look-up is on the audit trail, as a failed access.
    let events = app.audit_of(NHS_1).await;
    assert!(
        events.iter().any(|e| e["outcome"] == "4"
            && e["outcomeDesc"]
                .as_str()
                .is_some_and(|d| d.starts_with("429"))),
        "{events:?}"
    );
    app.advance(61);
    assert_eq!(app.lookup(&clinician, NHS_1, "", &[]).await.status, 200);
}

#[actix_rt::test]
async fn one_user_looking_up_more_distinct_people_than_the_threshold_raises_one_warning_for_the_audit_team(
) {
    let app = TestApp::spawn_with(|s| s.limits.fishing_distinct_people = 2).await;
    let clinician = app.clinician();
    for nhs in [NHS_1, NHS_2, NHS_1, NHS_3, "9990000018"] {
        assert_eq!(app.lookup(&clinician, nhs, "", &[]).await.status, 200);
    }
    let warnings = app
        .audit_search("type=http://dicom.nema.org/resources/ontology/DCM%7C110113")
        .await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert_eq!(w["type"]["code"], "110113");
    assert_eq!(w["agent"][1]["who"]["identifier"]["value"], "RDE01");
    assert!(
        w["outcomeDesc"]
            .as_str()
            .unwrap()
            .contains("more than 2 distinct people"),
        "{w}"
    );
    for nhs in [NHS_1, NHS_2, NHS_3] {
        assert!(
            !w.to_string().contains(nhs),
            "the warning never names the people"
        );
    }
    // A clean trail raises nothing.
    let quiet = TestApp::spawn_with(|s| s.limits.fishing_distinct_people = 10).await;
    assert_eq!(
        quiet
            .lookup(&quiet.clinician(), NHS_1, "", &[])
            .await
            .status,
        200
    );
    assert!(quiet
        .audit_search("type=http://dicom.nema.org/resources/ontology/DCM%7C110113")
        .await
        .is_empty());
}
