//! What an attacker holding an ordinary token (or none) can send, and what they get back: deep
//! nesting, huge error lists, control characters, crafted tokens, long URLs, another council's
//! people. Each answer is a bounded 4xx OperationOutcome, nothing is stored, and the server keeps
//! serving.

use actix_web::http::Method;
use cpis_fhir::auth::dev;
use serde_json::{json, Value};

use crate::helpers::*;

async fn still_serving(app: &TestApp) {
    let r = app.request(Method::GET, "/metadata", None, &[], None).await;
    assert_eq!(r.status, 200, "the server stopped answering");
}

fn nested_xml(root: &str, depth: usize) -> Vec<u8> {
    format!(
        "<{root} xmlns=\"http://hl7.org/fhir\">{}{}</{root}>",
        "<extension url=\"http://x\">".repeat(depth),
        "</extension>".repeat(depth)
    )
    .into_bytes()
}

fn nested_json(root: &str, depth: usize) -> Vec<u8> {
    format!(
        "{{\"resourceType\":\"{root}\",\"extension\":{}{}}}",
        "[{\"url\":\"http://x\",\"extension\":".repeat(depth),
        "}]".repeat(depth)
    )
    .into_bytes()
}

#[actix_rt::test]
async fn deeply_nested_bodies_on_every_endpoint_that_takes_one_are_refused_and_the_server_lives() {
    let app = TestApp::spawn().await;
    let council = app.council(LA_A);
    let admin = app.admin();
    let endpoints = [
        (Method::POST, "/Flag".to_owned(), "Flag", &council),
        (
            Method::PUT,
            format!("/Patient/{NHS_1}"),
            "Patient",
            &council,
        ),
        (Method::POST, "/Patient".to_owned(), "Patient", &council),
        (Method::POST, "/".to_owned(), "Bundle", &council),
        (
            Method::POST,
            "/Subscription".to_owned(),
            "Subscription",
            &council,
        ),
        (
            Method::POST,
            "/Organization".to_owned(),
            "Organization",
            &admin,
        ),
        (
            Method::PUT,
            format!("/Organization/{LA_A}"),
            "Organization",
            &admin,
        ),
    ];
    for depth in [680, 1_000, 10_000, 100_000] {
        for (method, path, root, token) in &endpoints {
            for (ct, body) in [
                ("application/fhir+xml", nested_xml(root, depth)),
                ("application/fhir+json", nested_json(root, depth)),
            ] {
                let r = app
                    .request(
                        method.clone(),
                        path,
                        Some(token),
                        &[("Content-Type", ct)],
                        Some(body),
                    )
                    .await;
                assert_eq!(
                    r.status,
                    400,
                    "{method} {path} {ct} depth {depth}: {}",
                    r.text()
                );
                assert!(
                    r.text()
                        .contains("nests deeper than this server's limit of 32 levels"),
                    "{}",
                    r.text()
                );
            }
            still_serving(&app).await;
        }
    }
    // Just inside the limit is parsed as usual (and refused for what it says, not for its depth).
    let r = app
        .request(
            Method::POST,
            "/Flag",
            Some(&council),
            &[("Content-Type", "application/fhir+xml")],
            Some(nested_xml("Flag", 20)),
        )
        .await;
    assert!(r.status == 400 || r.status == 422, "{}", r.text());
    assert!(!r.text().contains("nests deeper"), "{}", r.text());
}

#[actix_rt::test]
async fn a_compressed_body_is_refused_unread() {
    let app = TestApp::spawn().await;
    let r = app
        .request(
            Method::POST,
            "/Flag",
            Some(&app.council(LA_A)),
            &[
                ("Content-Type", "application/fhir+json"),
                ("Content-Encoding", "gzip"),
            ],
            Some(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0]),
        )
        .await;
    r.assert_outcome(415, "not-supported");
}

#[actix_rt::test]
async fn xml_that_is_not_utf8_is_refused() {
    let app = TestApp::spawn().await;
    let mut body = b"<Flag xmlns=\"http://hl7.org/fhir".to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(b"\"><status value=\"active\"/></Flag>");
    let r = app
        .request(
            Method::POST,
            "/Flag",
            Some(&app.council(LA_A)),
            &[("Content-Type", "application/fhir+xml")],
            Some(body),
        )
        .await;
    r.assert_outcome(400, "structure");
    assert!(r.text().contains("UTF-8"), "{}", r.text());
}

#[actix_rt::test]
async fn a_dtd_in_xml_is_refused() {
    let app = TestApp::spawn().await;
    let body = br#"<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><Flag xmlns="http://hl7.org/fhir"><status value="&b;"/></Flag>"#;
    let r = app
        .request(
            Method::POST,
            "/Flag",
            Some(&app.council(LA_A)),
            &[("Content-Type", "application/fhir+xml")],
            Some(body.to_vec()),
        )
        .await;
    r.assert_outcome(400, "structure");
    assert!(r.text().contains("DTD"), "{}", r.text());
}

#[actix_rt::test]
async fn bodies_of_empty_arrays_get_small_answers() {
    let app = TestApp::spawn().await;
    let t = app.council(LA_A);
    let post = |body: String| {
        let t = t.clone();
        let app = &app;
        async move {
            app.request(
                Method::POST,
                "/Flag",
                Some(&t),
                &[("Content-Type", "application/fhir+json")],
                Some(body.into_bytes()),
            )
            .await
        }
    };
    // 3 MiB of empty arrays: more values than any resource holds, refused unparsed.
    let huge = format!(
        "{{\"resourceType\":\"Flag\",\"extension\":[{}[]]}}",
        "[],".repeat(1024 * 1024)
    );
    let r = post(huge).await;
    r.assert_outcome(413, "too-costly");
    assert!(r.body.len() < 2_000, "{} bytes", r.body.len());
    // Thousands of empty arrays within the value limit: the first 100 are listed, then a count.
    let many = format!(
        "{{\"resourceType\":\"Flag\",\"identifier\":[{}[]]}}",
        "[],".repeat(4_000)
    );
    let r = post(many).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let issues = r.json()["issue"].as_array().cloned().unwrap_or_default();
    assert_eq!(issues.len(), 101);
    assert!(issues[100]["diagnostics"]
        .as_str()
        .is_some_and(|d| d.starts_with("3901 more problem(s)")));
    assert!(r.body.len() < 40_000, "{} bytes", r.body.len());

    // A batch whose entries are all such bodies: each entry lists at most 100 issues.
    let entry = |i: usize| {
        json!({
            "fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"),
            "resource": { "resourceType": "Flag", "identifier": vec![json!({"system": ""}); 2_000] },
            "request": { "method": "POST", "url": "Flag" },
        })
    };
    let r = app
        .post_json(
            "/",
            &t,
            &json!({ "resourceType": "Bundle", "type": "batch", "entry": (0..20).map(entry).collect::<Vec<_>>() }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for e in r.json()["entry"].as_array().cloned().unwrap_or_default() {
        let n = e["response"]["outcome"]["issue"]
            .as_array()
            .map_or(0, Vec::len);
        assert!(n <= 101, "{n} issues in one entry");
    }
    assert!(r.body.len() < 500_000, "{} bytes", r.body.len());
    still_serving(&app).await;
}

#[actix_rt::test]
async fn control_characters_are_refused_in_every_element_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let t = app.council(LA_A);
    for (c, name) in [
        ('\u{0}', "NUL"),
        ('\u{1b}', "ESC"),
        ('\u{7}', "BEL"),
        ('\u{9b}', "CSI"),
    ] {
        let mut p = patient_json(NHS_1);
        p["name"][0]["family"] = json!(format!("Smith{c}"));
        let r = app.put_json(&format!("/Patient/{NHS_1}"), &t, &p).await;
        r.assert_outcome(422, "value");
        assert!(
            r.expressions()
                .contains(&"Patient.name[0].family".to_owned()),
            "{name}: {}",
            r.text()
        );
    }
    app.get(&format!("/Patient/{NHS_1}"), &t)
        .await
        .assert_outcome(404, "not-found");
    app.given_patient(LA_A, NHS_1).await;
    let mut f = flag_json(NHS_1, LA_A, "P-1");
    f["identifier"][0]["value"] = json!("P-\u{1b}[2J1");
    let r = app.post_json("/Flag", &t, &f).await;
    r.assert_outcome(422, "value");
    assert!(r
        .expressions()
        .contains(&"Flag.identifier[0].value".to_owned()));
    // Tab, carriage return and line feed are allowed in FHIR strings.
    let mut p = patient_json(NHS_1);
    p["name"][0]["family"] = json!("Smith\tJones");
    assert_eq!(
        app.put_json(&format!("/Patient/{NHS_1}"), &t, &p)
            .await
            .status,
        200
    );
    // In a Bundle: the entry's resource, named by its place.
    let mut e = put_flag_entry(NHS_1, LA_A, "P-2");
    e["resource"]["identifier"][0]["value"] = json!("P\u{7}2");
    let r = app.bundle(LA_A, "transaction", vec![e]).await;
    r.assert_outcome(422, "value");
    assert!(r
        .expressions()
        .contains(&"Bundle.entry[0].resource.identifier[0].value".to_owned()));
    // An organisation's name and a subscription's endpoint too.
    let mut o = org_json("LA903", "Bad\u{0}Council");
    o["id"] = json!("LA903");
    app.put_json("/Organization/LA903", &app.admin(), &o)
        .await
        .assert_outcome(422, "value");
    let sub = serde_json::json!({
        "resourceType": "Subscription", "status": "requested", "reason": "ASN\u{1b}[2J",
        "criteria": "https://cpis-fhir.example.org/fhir/SubscriptionTopic/cpis-access-notification",
        "channel": { "type": "rest-hook", "endpoint": "https://x.example.org/h", "payload": "application/fhir+json" },
    });
    let r = app.post_json("/Subscription", &t, &sub).await;
    r.assert_outcome(422, "value");
    assert!(
        r.expressions().contains(&"Subscription.reason".to_owned()),
        "{}",
        r.text()
    );
    // In search values and the path: 400.
    for path in [
        "/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C944930%006753".to_owned(),
        format!("/Patient/{NHS_1}%1b"),
    ] {
        app.get(&path, &app.clinician())
            .await
            .assert_outcome(400, "invalid");
    }
    // A recorded header: TraceID.
    let r = app
        .request(
            Method::GET,
            "/metadata",
            None,
            &[("TraceID", "abc\tdef")],
            None,
        )
        .await;
    r.assert_outcome(400, "invalid");
    assert!(r.text().contains("PRECONDITION_FAILED"));
}

fn claims(app: &TestApp, iat: i64, nbf: Option<i64>, exp: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({
        "iss": dev::DEV_ISSUER, "sub": "user-x", "aud": "cpis-fhir", "jti": "j",
        "iat": now + iat, "exp": now + exp, "role": "clinician", "org": "RXX01",
    });
    if let Some(n) = nbf {
        c["nbf"] = json!(now + n);
    }
    dev::sign_claims(app.dir.path(), &c).expect("signed")
}

#[actix_rt::test]
async fn tokens_not_yet_valid_issued_in_the_future_too_long_lived_or_expired_are_refused() {
    let app = TestApp::spawn().await;
    let ok = claims(&app, 0, Some(0), 600);
    assert_eq!(app.lookup(&ok, NHS_1, "", &[]).await.status, 200);
    for (token, why) in [
        (claims(&app, 0, Some(3600), 7200), "not valid yet"),
        (
            claims(&app, 10 * 365 * 86400, None, 10 * 365 * 86400 + 60),
            "issued in the future",
        ),
        (claims(&app, 0, None, 100 * 365 * 86400), "lifetime"),
        (claims(&app, 0, None, 13 * 3600), "lifetime"),
        (claims(&app, -7200, None, -3600), "expired"),
    ] {
        let r = app.lookup(&token, NHS_1, "", &[]).await;
        r.assert_outcome(401, "login");
        assert!(r.text().contains(why), "{why}: {}", r.text());
    }
    // Within the leeway of 30 s, a skewed clock is tolerated.
    let skewed = claims(&app, 20, Some(20), 600);
    assert_eq!(app.lookup(&skewed, NHS_1, "", &[]).await.status, 200);
    // The scheme is case-insensitive.
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let auth = format!("{scheme} {ok}");
        let r = app
            .request(
                Method::GET,
                &format!("/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}"),
                None,
                &[("Authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{scheme}: {}", r.text());
    }
}

async fn refusals(app: &TestApp) -> Vec<Value> {
    app.audit_search("type=http://dicom.nema.org/resources/ontology/DCM%7C110114&_count=100")
        .await
}

fn detail(event: &Value, key: &str) -> Option<String> {
    event["entity"][0]["detail"]
        .as_array()?
        .iter()
        .find(|d| d["type"] == key)
        .and_then(|d| d["valueString"].as_str().map(str::to_owned))
}

#[actix_rt::test]
async fn refused_authentications_are_audited_folded_and_found_by_the_audit_team() {
    let app = TestApp::spawn().await;
    let expired = claims(&app, -7200, None, -3600);
    let path = format!("/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}");
    // Five identical refusals, then one of another kind, and a missing token.
    for _ in 0..5 {
        let r = app
            .request(
                Method::GET,
                &path,
                Some(&expired),
                &[("TraceID", "trace-1")],
                None,
            )
            .await;
        assert_eq!(r.status, 401);
    }
    let r = app
        .request(Method::GET, &path, Some("not.a.jwt"), &[], None)
        .await;
    assert_eq!(r.status, 401);
    let r = app.request(Method::GET, &path, None, &[], None).await;
    assert_eq!(r.status, 401);
    let events = refusals(&app).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let reasons: Vec<_> = events.iter().filter_map(|e| detail(e, "reason")).collect();
    assert_eq!(reasons, ["missing", "malformed", "expired"]);
    let e = &events[2];
    assert_eq!(e["type"]["code"], "110114");
    assert_eq!(e["outcome"], "4");
    assert_eq!(e["agent"][0]["who"]["identifier"]["value"], "user-x");
    assert!(e["agent"][0]["who"]["display"]
        .as_str()
        .is_some_and(|d| d.contains("unverified")));
    assert_eq!(e["agent"][0]["network"]["address"], "127.0.0.1");
    assert_eq!(e["agent"][1]["who"]["identifier"]["value"], "RXX01");
    assert_eq!(detail(e, "count").as_deref(), Some("1"));
    assert!(e.to_string().contains("trace-1"));
    assert!(
        !e.to_string().contains(&expired),
        "the token itself is never recorded"
    );
    // When the window closes, the four folded refusals are written as one event with a count.
    app.advance(61);
    let r = app
        .request(Method::GET, &path, Some(&expired), &[], None)
        .await;
    assert_eq!(r.status, 401);
    let events = refusals(&app).await;
    let counts: Vec<_> = events
        .iter()
        .filter(|e| detail(e, "reason").as_deref() == Some("expired"))
        .filter_map(|e| detail(e, "count"))
        .collect();
    assert_eq!(counts, ["1", "4", "1"], "{events:?}");
    // Only the audit team lists them.
    let r = app.get("/AuditEvent?type=110114", &app.council(LA_A)).await;
    r.assert_outcome(403, "forbidden");
}

#[actix_rt::test]
async fn a_council_without_a_plan_on_a_person_never_changes_what_clinicians_see() {
    let app = TestApp::spawn().await;
    app.given_patient(LA_A, NHS_1).await;
    app.given_flag(LA_A, NHS_1, "A-1").await;
    let b = app.council(LA_B);
    let family_seen = |v: Value| {
        v["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["resource"]["resourceType"] == "Patient")
            .map(|e| e["resource"]["name"][0]["family"].clone())
    };
    let seen = family_seen(
        app.lookup(&app.clinician(), NHS_1, "&_include=Flag:patient", &[])
            .await
            .json(),
    );
    assert!(seen.is_some());
    // B sends other demographics: refused, nothing changed, and the answer names no council.
    let mut other = patient_json(NHS_1);
    other["name"][0]["family"] = json!("Changed");
    let r = app.put_json(&format!("/Patient/{NHS_1}"), &b, &other).await;
    r.assert_outcome(422, "business-rule");
    assert!(!r.text().contains(LA_A));
    assert_eq!(
        family_seen(
            app.lookup(&app.clinician(), NHS_1, "&_include=Flag:patient", &[])
                .await
                .json()
        ),
        seen
    );
    // B sends the same person: accepted, nothing changed, no version or details shown.
    let r = app
        .put_json(&format!("/Patient/{NHS_1}"), &b, &patient_json(NHS_1))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    assert!(r.header("etag").is_none() && r.header("location").is_none());
    // B still cannot read the person (404, as for anyone not on CP-IS)…
    app.get(&format!("/Patient/{NHS_1}"), &b)
        .await
        .assert_outcome(404, "not-found");
    // …and the same is said of a person who has no record at all, and of one only B's
    // neighbour submitted with no plan.
    app.given_patient(LA_A, NHS_2).await;
    let mut other2 = patient_json(NHS_2);
    other2["name"][0]["family"] = json!("Changed");
    app.put_json(&format!("/Patient/{NHS_2}"), &b, &other2)
        .await
        .assert_outcome(422, "business-rule");
    // B adds its own plan, in a Bundle with the person as it was traced.
    let r = app
        .bundle(
            LA_B,
            "transaction",
            vec![put_patient_entry(NHS_1), put_flag_entry(NHS_1, LA_B, "B-1")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(statuses(&r.json()), ["200 OK", "201 Created"]);
    // Now holding a live plan, B maintains the details like A.
    let r = app.put_json(&format!("/Patient/{NHS_1}"), &b, &other).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        family_seen(
            app.lookup(&app.clinician(), NHS_1, "&_include=Flag:patient", &[])
                .await
                .json()
        ),
        Some(json!("Changed"))
    );
    // A council that withdrew its plans holds none live, and may no longer change them.
    let r = app
        .request(
            Method::DELETE,
            &format!("/Patient/{NHS_1}"),
            Some(&b),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    app.put_json(&format!("/Patient/{NHS_1}"), &b, &patient_json(NHS_1))
        .await
        .assert_outcome(422, "business-rule");
}

#[actix_rt::test]
async fn long_urls_and_many_parameters_get_an_operation_outcome() {
    let app = TestApp::spawn().await;
    let t = app.clinician();
    let long = format!("/Flag?patient:identifier={}", "9".repeat(20_000));
    let r = app.get(&long, &t).await;
    r.assert_outcome(414, "too-long");
    let many = format!("/Flag?{}", "_format=json&".repeat(100));
    let r = app.get(&many, &t).await;
    r.assert_outcome(400, "invalid");
    assert!(r.text().contains("at most 64"), "{}", r.text());
    // 10,000 parameters: still within what the HTTP layer reads, so still ours to answer.
    let flood = format!("/Flag?{}", "a=1&".repeat(10_000));
    app.get(&flood, &t).await.assert_outcome(414, "too-long");
    still_serving(&app).await;
}

#[actix_rt::test]
async fn responses_carrying_children_s_data_are_never_cached() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "P-1").await;
    let r = app
        .lookup(&app.clinician(), NHS_1, "&_include=Flag:patient", &[])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let r = app
        .get(&format!("/Patient/{NHS_1}"), &app.council(LA_A))
        .await;
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let r = app
        .get(
            "/AuditEvent?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C9449306753",
            &app.clinician(),
        )
        .await;
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let r = app.request(Method::GET, "/nowhere", None, &[], None).await;
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    // The CapabilityStatement holds nobody's data.
    let r = app.request(Method::GET, "/metadata", None, &[], None).await;
    assert_eq!(r.header("cache-control"), None);
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
}
