//! Round trips of Patient, Flag and Organization in JSON and XML; the CapabilityStatement and
//! the conformance resources.

use actix_web::http::Method;
use serde_json::Value;

use crate::helpers::*;

#[actix_rt::test]
async fn a_patient_round_trips_in_json() {
    let app = TestApp::spawn().await;
    let token = app.council(LA_A);
    let r = app
        .put_json(&format!("/Patient/{NHS_1}"), &token, &patient_json(NHS_1))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    assert!(r
        .header("location")
        .is_some_and(|l| l.ends_with(&format!("/Patient/{NHS_1}/_history/1"))));
    let got = app.get(&format!("/Patient/{NHS_1}"), &token).await;
    assert_eq!(got.status, 200);
    let v = got.json();
    assert_eq!(v["id"], NHS_1);
    assert_eq!(v["name"][0]["given"][1], "James");
    assert_eq!(v["address"][0]["postalCode"], "NM1 1AA");
    assert_eq!(
        v["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"],
        "01"
    );
    // What the server renders is accepted back unchanged, and does not make a new version.
    let again = app.put_json(&format!("/Patient/{NHS_1}"), &token, &v).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["meta"]["versionId"], "1");
}

#[actix_rt::test]
async fn a_patient_round_trips_in_xml() {
    let app = TestApp::spawn().await;
    let token = app.council(LA_A);
    app.given_patient(LA_A, NHS_2).await;
    let xml = app
        .request(
            Method::GET,
            &format!("/Patient/{NHS_2}"),
            Some(&token),
            &[("Accept", "application/fhir+xml")],
            None,
        )
        .await;
    assert_eq!(xml.status, 200);
    assert!(xml
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/fhir+xml")));
    let text = xml.text().replace("Carter", "Carter-Smith");
    assert!(text.contains("<birthDate value=\"2016-03-14\"/>"), "{text}");
    let put = app
        .request(
            Method::PUT,
            &format!("/Patient/{NHS_2}"),
            Some(&token),
            &[
                ("Content-Type", "application/fhir+xml"),
                ("Accept", "application/fhir+xml"),
            ],
            Some(text.into_bytes()),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert!(put.text().contains("Carter-Smith"));
    let json = app.get(&format!("/Patient/{NHS_2}"), &token).await.json();
    assert_eq!(json["name"][0]["family"], "Carter-Smith");
    assert_eq!(json["meta"]["versionId"], "2");
}

#[actix_rt::test]
async fn a_flag_round_trips_in_json_and_xml() {
    let app = TestApp::spawn().await;
    let token = app.council(LA_A);
    let created = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["author"]["display"], "Northmoor Borough Council");
    assert_eq!(
        created["code"]["coding"][0]["display"],
        "Subject to child protection plan"
    );
    let got = app.get(&format!("/Flag/{id}"), &token).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), created);
    let xml = app.get(&format!("/Flag/{id}?_format=xml"), &token).await;
    assert_eq!(xml.status, 200);
    let changed = xml
        .text()
        .replace(
            "<start value=\"2026-01-05\"/>",
            "<start value=\"2026-01-05\"/><end value=\"2026-06-30\"/>",
        )
        .replace("<status value=\"active\"/>", "<status value=\"inactive\"/>");
    let put = app
        .request(
            Method::PUT,
            &format!("/Flag/{id}"),
            Some(&token),
            &[("Content-Type", "application/fhir+xml")],
            Some(changed.into_bytes()),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text());
    let v = put.json();
    assert_eq!(v["period"]["end"], "2026-06-30");
    assert_eq!(v["status"], "inactive");
    assert_eq!(v["meta"]["versionId"], "2");
}

#[actix_rt::test]
async fn an_organization_round_trips_and_every_caller_can_read_it() {
    let app = TestApp::spawn().await;
    let r = app
        .get(&format!("/Organization/{LA_A}"), &app.clinician())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["name"], "Northmoor Borough Council");
    assert_eq!(
        v["contact"][1]["purpose"]["coding"][0]["code"],
        "emergency-duty"
    );
    assert_eq!(v["contact"][1]["telecom"][0]["value"], "01632 960101");
    let xml = app
        .request(
            Method::GET,
            &format!("/Organization/{LA_A}"),
            Some(&app.council(LA_B)),
            &[("Accept", "application/xml")],
            None,
        )
        .await;
    let text = xml.text().replace("01632 960101", "01632 960999");
    let put = app
        .request(
            Method::PUT,
            &format!("/Organization/{LA_A}"),
            Some(&app.admin()),
            &[("Content-Type", "application/fhir+xml")],
            Some(text.into_bytes()),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(
        put.json()["contact"][1]["telecom"][0]["value"],
        "01632 960999"
    );
    assert_eq!(put.json()["meta"]["versionId"], "2");
}

#[actix_rt::test]
async fn only_administrators_register_councils() {
    let app = TestApp::spawn().await;
    let r = app
        .put_json(
            "/Organization/LA999",
            &app.council(LA_A),
            &org_json("LA999", "X Council"),
        )
        .await;
    r.assert_outcome(403, "forbidden");
    let r = app
        .post_json(
            "/Organization",
            &app.admin(),
            &org_json("LA999", "X Council"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = app
        .post_json(
            "/Organization",
            &app.admin(),
            &org_json("LA999", "X Council"),
        )
        .await;
    r.assert_outcome(409, "duplicate");
}

#[actix_rt::test]
async fn the_capability_statement_lists_exactly_the_routes() {
    let app = TestApp::spawn().await;
    let r = app.request(Method::GET, "/metadata", None, &[], None).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["resourceType"], "CapabilityStatement");
    assert_eq!(v["fhirVersion"], "4.0.1");
    let mut listed: Vec<(String, String)> = Vec::new();
    for res in v["rest"][0]["resource"].as_array().expect("resources") {
        for i in res["interaction"].as_array().expect("interactions") {
            listed.push((
                res["type"].as_str().unwrap_or_default().into(),
                i["code"].as_str().unwrap_or_default().into(),
            ));
        }
    }
    let mut routes: Vec<(String, String)> = cpis_fhir::api::ENDPOINTS
        .iter()
        .filter(|e| e.interaction != "operation")
        // Flags in the Patient Flags API's shape: a path, not a type (in rest.documentation).
        .filter(|e| e.resource != Some("PatientFlag"))
        .filter_map(|e| e.resource.map(|r| (r.to_owned(), e.interaction.to_owned())))
        .collect();
    listed.sort();
    routes.sort();
    routes.dedup();
    assert_eq!(listed, routes);
    let system: Vec<&str> = v["rest"][0]["interaction"]
        .as_array()
        .expect("system interactions")
        .iter()
        .filter_map(|i| i["code"].as_str())
        .collect();
    assert_eq!(system, ["transaction", "batch"]);
    let flag = v["rest"][0]["resource"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["type"] == "Flag"))
        .cloned();
    assert_eq!(
        flag.map(|f| f["profile"].clone()),
        Some(Value::from(
            "https://cpis-fhir.example.org/fhir/StructureDefinition/CPIS-Flag"
        ))
    );
    let subscription = v["rest"][0]["resource"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["type"] == "Subscription"))
        .cloned()
        .expect("Subscription");
    let ops: Vec<&str> = subscription["operation"]
        .as_array()
        .expect("operations")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(ops, ["status", "events"]);
    // Every listed interaction answers something other than 404/405 at its route.
    for e in cpis_fhir::api::ENDPOINTS {
        let path = e.path.replace("{id}", "x").replace("{vid}", "1");
        let method = Method::from_bytes(e.method.to_ascii_uppercase().as_bytes()).expect("method");
        let r = app
            .request(method, &path, Some(&app.admin()), &[], None)
            .await;
        assert_ne!(r.status, 405, "{} {}", e.method, e.path);
    }
}

#[actix_rt::test]
async fn the_profiles_and_value_set_are_served_as_shipped() {
    let app = TestApp::spawn().await;
    for (kind, id, file) in [
        (
            "StructureDefinition",
            "CPIS-Flag",
            "StructureDefinition-CPIS-Flag.json",
        ),
        (
            "StructureDefinition",
            "CPIS-Patient",
            "StructureDefinition-CPIS-Patient.json",
        ),
        (
            "StructureDefinition",
            "CPIS-Organization",
            "StructureDefinition-CPIS-Organization.json",
        ),
        (
            "ValueSet",
            "England-ChildProtectionPlan",
            "ValueSet-England-ChildProtectionPlan.json",
        ),
    ] {
        let r = app
            .request(Method::GET, &format!("/{kind}/{id}"), None, &[], None)
            .await;
        assert_eq!(r.status, 200, "{kind}/{id}");
        let shipped: Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/fhir-profiles/{file}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("file"),
        )
        .expect("json");
        assert_eq!(r.json(), shipped);
    }
    let vs = app
        .request(
            Method::GET,
            "/ValueSet/England-ChildProtectionPlan",
            None,
            &[],
            None,
        )
        .await
        .json();
    let codes: Vec<&str> = vs["compose"]["include"][0]["concept"]
        .as_array()
        .expect("concepts")
        .iter()
        .filter_map(|c| c["code"].as_str())
        .collect();
    assert_eq!(
        codes,
        ["342191000000101", "764841000000100", "818901000000100"]
    );
    let r = app
        .request(Method::GET, "/StructureDefinition/nope", None, &[], None)
        .await;
    r.assert_outcome(404, "not-found");
}

#[actix_rt::test]
async fn the_example_resources_in_the_repository_are_accepted() {
    let app = TestApp::spawn_with(|s| s.allow_test_nhs_numbers = false).await;
    let read = |name: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR")))
                .expect("file"),
        )
        .expect("json")
    };
    let r = app
        .put_json(
            "/Organization/LA904",
            &app.admin(),
            &read("organization.json"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let patient = read("patient.json");
    let nhs = patient["id"].as_str().expect("id").to_owned();
    let r = app
        .put_json(&format!("/Patient/{nhs}"), &app.council(LA_A), &patient)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = app
        .post_json("/Flag", &app.council(LA_A), &read("flag.json"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}
