//! The profiles are enforced on every write: NHS numbers, codes, references, dates, and the
//! refusal of anything that could carry a reason for a plan. Nothing invalid is stored.

use actix_web::http::Method;
use serde_json::json;

use crate::helpers::*;

#[actix_rt::test]
async fn the_valid_nhs_numbers_of_the_domain_are_accepted() {
    let app = TestApp::spawn_with(|s| s.allow_test_nhs_numbers = false).await;
    for nhs in [NHS_1, NHS_2, NHS_3] {
        let r = app
            .put_json(
                &format!("/Patient/{nhs}"),
                &app.council(LA_A),
                &patient_json(nhs),
            )
            .await;
        assert_eq!(r.status, 201, "{nhs}: {}", r.text());
    }
}

#[actix_rt::test]
async fn invalid_nhs_numbers_are_refused_naming_the_identifier() {
    let app = TestApp::spawn().await;
    let token = app.council(LA_A);
    for bad in [
        "1234567890",
        "9912003899",
        "0000000000",
        "944930675",
        "94493067531",
        "94493O6753",
    ] {
        let r = app.post_json("/Patient", &token, &patient_json(bad)).await;
        r.assert_outcome(422, "value");
        assert!(
            r.expressions()
                .contains(&"Patient.identifier[0].value".to_owned()),
            "{bad}: {}",
            r.text()
        );
        // In the URL, an invalid NHS number is invalid search data.
        let r = app.get(&format!("/Patient/{bad}"), &token).await;
        r.assert_outcome(400, "invalid");
        assert_eq!(
            r.json()["issue"][0]["details"]["coding"][0]["code"],
            "INVALID_SEARCH_DATA"
        );
    }
}

#[actix_rt::test]
async fn test_range_numbers_are_refused_unless_configured() {
    let app = TestApp::spawn_with(|s| s.allow_test_nhs_numbers = false).await;
    let test_number = cpis_fhir::nhs_number::NhsNumber::test_number(7);
    let r = app
        .post_json(
            "/Patient",
            &app.council(LA_A),
            &patient_json(test_number.as_str()),
        )
        .await;
    r.assert_outcome(422, "value");
    let app = TestApp::spawn().await;
    let r = app
        .post_json(
            "/Patient",
            &app.council(LA_A),
            &patient_json(test_number.as_str()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[actix_rt::test]
async fn an_unverified_nhs_number_is_refused() {
    let app = TestApp::spawn().await;
    let mut p = patient_json(NHS_1);
    p["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = json!("02");
    let r = app.post_json("/Patient", &app.council(LA_A), &p).await;
    r.assert_outcome(422, "value");
    assert!(r.text().contains("'01'"), "{}", r.text());
    let mut p = patient_json(NHS_1);
    p["identifier"][0]
        .as_object_mut()
        .map(|o| o.remove("extension"));
    let r = app.post_json("/Patient", &app.council(LA_A), &p).await;
    r.assert_outcome(422, "required");
    assert_eq!(
        app.get(&format!("/Patient/{NHS_1}"), &app.council(LA_A))
            .await
            .status,
        404
    );
}

#[actix_rt::test]
async fn reason_like_content_in_a_flag_is_refused_naming_each_element_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    app.given_patient(LA_A, NHS_1).await;
    let token = app.council(LA_A);
    let cases = [
        (
            "extension",
            json!([{ "url": "https://example.org/reason-for-plan", "valueString": "neglect" }]),
            "Flag.extension",
        ),
        ("note", json!([{ "text": "father violent" }]), "Flag.note"),
        (
            "encounter",
            json!({ "reference": "Encounter/1" }),
            "Flag.encounter",
        ),
        ("reasonForPlan", json!("neglect"), "Flag.reasonForPlan"),
        (
            "text",
            json!({ "status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">risk</div>" }),
            "Flag.text",
        ),
    ];
    for (key, value, expression) in cases {
        let mut f = flag_json(NHS_1, LA_A, "PLAN-X");
        f[key] = value;
        let r = app.post_json("/Flag", &token, &f).await;
        assert_eq!(r.status, 422, "{key}: {}", r.text());
        assert!(
            r.expressions().contains(&expression.to_owned()),
            "{key}: {}",
            r.text()
        );
    }
    let mut f = flag_json(NHS_1, LA_A, "PLAN-X");
    f["code"]["text"] = json!("neglect");
    let r = app.post_json("/Flag", &token, &f).await;
    assert!(
        r.expressions().contains(&"Flag.code.text".to_owned()),
        "{}",
        r.text()
    );
    // Nothing was stored: the identifier is still free, so a conditional create creates.
    let r = app
        .send_json(
            Method::POST,
            "/Flag",
            &token,
            &flag_json(NHS_1, LA_A, "PLAN-X"),
            &[(
                "If-None-Exist",
                "identifier=https://la901.example.org/Id/plan|PLAN-X",
            )],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[actix_rt::test]
async fn a_note_in_xml_is_refused_with_422_naming_it() {
    let app = TestApp::spawn().await;
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let id = flag["id"].as_str().unwrap_or_default();
    let xml = app
        .get(&format!("/Flag/{id}?_format=xml"), &app.council(LA_A))
        .await
        .text();
    let xml = xml.replace(
        "<status value=\"active\"/>",
        "<status value=\"active\"/><note><text value=\"x\"/></note>",
    );
    let r = app
        .request(
            Method::PUT,
            &format!("/Flag/{id}"),
            Some(&app.council(LA_A)),
            &[("Content-Type", "application/fhir+xml")],
            Some(xml.into_bytes()),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.expressions().contains(&"note".to_owned()), "{}", r.text());
}

#[actix_rt::test]
async fn every_violation_in_a_body_is_reported_together() {
    let app = TestApp::spawn().await;
    app.given_patient(LA_A, NHS_1).await;
    let mut f = flag_json(NHS_1, LA_A, "PLAN-1");
    f["note"] = json!([{ "text": "x" }]);
    f["encounter"] = json!({ "reference": "Encounter/1" });
    f["category"][0]["coding"][0]["code"] = json!("something-else");
    f.as_object_mut().map(|o| o.remove("period"));
    let r = app.post_json("/Flag", &app.council(LA_A), &f).await;
    assert_eq!(r.status, 422);
    let e = r.expressions();
    for expected in [
        "Flag.note",
        "Flag.encounter",
        "Flag.category[0].coding[0].code",
        "Flag.period",
    ] {
        assert!(
            e.contains(&expected.to_owned()),
            "{expected} missing from {e:?}"
        );
    }
}

#[actix_rt::test]
async fn flag_codes_dates_and_references_are_checked() {
    let app = TestApp::spawn().await;
    app.given_patient(LA_A, NHS_1).await;
    let token = app.council(LA_A);
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            {
                let mut f = flag_json(NHS_1, LA_A, "P");
                f["code"]["coding"][0]["code"] = json!("12345");
                f
            },
            "Flag.code",
        ),
        (
            {
                let mut f = flag_json(NHS_1, LA_A, "P");
                f["status"] = json!("suspended");
                f
            },
            "Flag.status",
        ),
        (
            {
                let mut f = flag_json(NHS_1, LA_A, "P");
                f["period"]["end"] = json!("2025-01-01");
                f
            },
            "Flag.period.end",
        ),
        (
            {
                let mut f = flag_json(NHS_1, LA_A, "P");
                f["period"]["start"] = json!("2026-02-30");
                f
            },
            "Flag.period.start",
        ),
        (
            {
                let mut f = flag_json(NHS_1, LA_A, "P");
                f["period"] = json!({ "end": "2026-01-01" });
                f
            },
            "Flag.period.start",
        ),
        (
            {
                let mut f = flag_json(NHS_1, LA_A, "P");
                f["subject"] = json!({ "reference": "Patient/1234567890" });
                f
            },
            "Flag.subject",
        ),
        (
            {
                let mut f = flag_json(NHS_1, LA_A, "P");
                f["subject"] = json!({ "reference": format!("Patient/{NHS_2}") });
                f
            },
            "Flag.subject",
        ),
        (
            {
                let mut f = flag_json(NHS_1, LA_A, "P");
                f["subject"] = json!({ "reference": "Group/1" });
                f
            },
            "Flag.subject.reference",
        ),
    ];
    for (body, expression) in cases {
        let r = app.post_json("/Flag", &token, &body).await;
        assert_eq!(r.status, 422, "{expression}: {}", r.text());
        assert!(
            r.expressions().iter().any(|e| e.starts_with(expression)),
            "{expression}: {}",
            r.text()
        );
    }
    // An author that is not a registered council.
    let r = app
        .post_json(
            "/Flag",
            &app.council("LA777"),
            &flag_json(NHS_1, "LA777", "P"),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.expressions().contains(&"Flag.author".to_owned()));
    // The subject may be given by identifier instead of reference.
    let mut f = flag_json(NHS_1, LA_A, "P");
    f["subject"] =
        json!({ "identifier": { "system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS_1 } });
    let r = app.post_json("/Flag", &token, &f).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[actix_rt::test]
async fn patient_data_not_held_by_cp_is_is_refused() {
    let app = TestApp::spawn().await;
    let mut p = patient_json(NHS_1);
    p["gender"] = json!("female");
    p["telecom"] = json!([{ "system": "phone", "value": "07700 900000" }]);
    let r = app.post_json("/Patient", &app.council(LA_A), &p).await;
    assert_eq!(r.status, 422);
    let e = r.expressions();
    assert!(
        e.contains(&"Patient.gender".to_owned()) && e.contains(&"Patient.telecom".to_owned()),
        "{e:?}"
    );
    let mut p = patient_json(NHS_1);
    p["birthDate"] = json!("2999-01-01");
    let r = app.post_json("/Patient", &app.council(LA_A), &p).await;
    assert!(
        r.expressions().contains(&"Patient.birthDate".to_owned()),
        "{}",
        r.text()
    );
}

#[actix_rt::test]
async fn every_element_the_profiles_forbid_is_refused() {
    // Driven by the shipped profiles: each element with max 0 is tried and must be named.
    let app = TestApp::spawn().await;
    app.given_patient(LA_A, NHS_1).await;
    for (rt, file) in [
        ("Flag", "StructureDefinition-CPIS-Flag.json"),
        ("Patient", "StructureDefinition-CPIS-Patient.json"),
    ] {
        let sd: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/fhir-profiles/{file}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("file"),
        )
        .expect("json");
        for e in sd["differential"]["element"].as_array().expect("elements") {
            if e["max"] != "0" {
                continue;
            }
            let path = e["path"].as_str().unwrap_or_default();
            let Some(name) = path.strip_prefix(&format!("{rt}.")) else {
                continue;
            };
            let mut body = if rt == "Flag" {
                flag_json(NHS_1, LA_A, "P")
            } else {
                patient_json(NHS_1)
            };
            body[name] = if e["base"]["max"] == "*" {
                json!([{ "id": "x" }])
            } else {
                json!({ "id": "x" })
            };
            let path_url = if rt == "Flag" {
                "/Flag".to_owned()
            } else {
                "/Patient".to_owned()
            };
            let r = app.post_json(&path_url, &app.council(LA_A), &body).await;
            assert_eq!(r.status, 422, "{path}: {}", r.text());
            assert!(
                r.expressions().contains(&path.to_owned()),
                "{path}: {}",
                r.text()
            );
        }
    }
}
