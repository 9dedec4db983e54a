//! A server configured as a production deployment is: no dev mode, its trusted issuers listed in
//! the configuration file, tokens signed by an identity provider's own key. And that key set can
//! be replaced while the server runs.

use cpis_fhir::domain::Role;

use crate::helpers::*;

#[actix_rt::test]
async fn a_configured_issuer_s_tokens_are_accepted_and_dev_tokens_are_not() {
    let app = TestApp::spawn_production().await;
    // The councils were registered with the issuer's admin token; a council submits and a
    // clinician looks up, all with the issuer's tokens.
    app.given_patient(LA_A, NHS_1).await;
    app.given_flag(LA_A, NHS_1, "CPP-1").await;
    let r = app.lookup(&app.clinician(), NHS_1, "", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 1);
    // A token signed by a dev key is not trusted: there is no dev key in production.
    cpis_fhir::auth::dev::ensure_key(app.dir.path()).expect("key");
    let dev_token = cpis_fhir::auth::dev::mint(
        app.dir.path(),
        &cpis_fhir::auth::dev::TokenRequest {
            role: Role::Clinician,
            org: cpis_fhir::domain::OdsCode::parse("RDE01").expect("ods"),
            user: "u".into(),
            name: None,
            ttl_secs: 600,
            audience: "cpis-fhir".into(),
        },
    )
    .expect("token");
    let r = app.lookup(&dev_token, NHS_1, "", &[]).await;
    r.assert_outcome(401, "login");
    // The issuer's claims are checked: another issuer name on the same key is refused.
    let idp = app.idp.clone().expect("idp");
    let now = chrono::Utc::now().timestamp();
    let wrong_issuer = idp.sign(&serde_json::json!({
        "iss": "https://elsewhere.test", "sub": "u", "aud": "cpis-fhir", "iat": now,
        "exp": now + 600, "jti": "j", "role": "clinician", "org": "RDE01",
    }));
    let r = app.lookup(&wrong_issuer, NHS_1, "", &[]).await;
    r.assert_outcome(401, "login");
    assert!(r.text().contains("issuer"), "{}", r.text());
}

#[actix_rt::test]
async fn an_expired_token_from_the_configured_issuer_is_refused_and_audited_as_expired() {
    let app = TestApp::spawn_production().await;
    let idp = app.idp.clone().expect("idp");
    // Expired an hour ago: far outside the 30 s leeway.
    let expired = idp.token(Role::Clinician, "RDE01", -7200, -3600);
    let r = app.lookup(&expired, NHS_1, "", &[]).await;
    r.assert_outcome(401, "login");
    assert!(r.text().contains("expired"), "{}", r.text());
    assert!(r.headers.contains_key("www-authenticate"));
    // Expired 10 s ago: inside the leeway, so still accepted (clock skew).
    let just = idp.token(Role::Clinician, "RDE01", -600, -10);
    assert_eq!(app.lookup(&just, NHS_1, "", &[]).await.status, 200);
    // The first refusal of its kind is written at once (later ones are folded into counts).
    let reasons = app.refusal_reasons().await;
    assert_eq!(
        reasons,
        ["expired"],
        "the refusal is audited with its reason"
    );
}

#[actix_rt::test]
async fn replacing_the_trusted_keys_at_run_time_takes_effect_on_the_next_request() {
    let app = TestApp::spawn_production().await;
    let old = app.idp.clone().expect("idp");
    let old_token = old.token(Role::Clinician, "RDE01", 0, 600);
    // Verified once, so remembered by the verifier's cache.
    assert_eq!(app.lookup(&old_token, NHS_1, "", &[]).await.status, 200);

    // The identity provider rotates: key-2 replaces key-1.
    let new = TestIdp::generate(app.dir.path(), "https://idp.cpis.test", "key-2");
    let mut keys = app.verifier.new_key_set();
    keys.add_key(
        &std::fs::read(&new.public_file).expect("pem"),
        jsonwebtoken::Algorithm::RS256,
        &cpis_fhir::auth::jwt::Trusted {
            issuer: &new.issuer,
            audiences: &["cpis-fhir".to_owned()],
            claims: cpis_fhir::config::ClaimStyle::Cpis,
            user_claim: None,
            name_claim: None,
        },
        Some(new.kid.clone()),
    )
    .expect("key");
    app.verifier.replace_keys(keys);
    assert_eq!(app.verifier.key_count(), 1);

    let r = app.lookup(&old_token, NHS_1, "", &[]).await;
    r.assert_outcome(401, "login");
    let new_token = new.token(Role::Clinician, "RDE01", 0, 600);
    assert_eq!(app.lookup(&new_token, NHS_1, "", &[]).await.status, 200);
}

fn scoped(app: &TestApp, role: Role, org: &str, scope: &str) -> String {
    app.scoped_token(role, org, scope)
}

#[actix_rt::test]
async fn smart_scopes_narrow_a_role_a_read_scope_cannot_write_and_clinicians_need_user_scopes() {
    let app = TestApp::spawn_production().await;
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let id = flag["id"].as_str().expect("id").to_owned();

    let reader = scoped(
        &app,
        Role::Council,
        LA_A,
        "openid system/Flag.rs system/Patient.rs",
    );
    assert_eq!(app.get(&format!("/Flag/{id}"), &reader).await.status, 200);
    let mut changed = flag.clone();
    changed["period"]["end"] = serde_json::json!("2026-11-01");
    let r = app
        .put_json(&format!("/Flag/{id}"), &reader, &changed)
        .await;
    r.assert_outcome(403, "forbidden");
    assert!(r.text().contains("SMART scopes"), "{}", r.text());
    let writer = scoped(
        &app,
        Role::Council,
        LA_A,
        "system/Flag.cruds system/Patient.cu",
    );
    assert_eq!(
        app.put_json(&format!("/Flag/{id}"), &writer, &changed)
            .await
            .status,
        200
    );

    let user_present = scoped(&app, Role::Clinician, "RDE01", "openid user/Flag.rs");
    assert_eq!(app.lookup(&user_present, NHS_1, "", &[]).await.status, 200);
    let unattended = scoped(&app, Role::Clinician, "RDE01", "system/Flag.rs");
    app.lookup(&unattended, NHS_1, "", &[])
        .await
        .assert_outcome(403, "forbidden");
    // Scopes that are not SMART resource scopes leave the role to decide.
    let plain = scoped(
        &app,
        Role::Clinician,
        "RDE01",
        "openid profile nationalrbacaccess",
    );
    assert_eq!(app.lookup(&plain, NHS_1, "", &[]).await.status, 200);

    let auditor = scoped(&app, Role::Auditor, "X26", "system/AuditEvent.rs");
    let r = app
        .get(
            &format!("/AuditEvent?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}"),
            &auditor,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    app.lookup(&auditor, NHS_1, "", &[])
        .await
        .assert_outcome(403, "forbidden");

    let conf = app
        .request(
            actix_web::http::Method::GET,
            "/.well-known/smart-configuration",
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(conf.status, 200);
    let v = conf.json();
    assert!(v["capabilities"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("permission-v2")));
    assert_eq!(v["issuers"][0]["issuer"], "https://idp.cpis.test");
}
