//! An EPR built for NHS England's national CP-IS FHIR API, or for the Patient Flags API, works
//! here unchanged: the guides' own requests (fixtures in `tests/fixtures/national/`, each with
//! where it came from) get the guides' answer shapes; and the three views show the same plans.

use std::collections::BTreeSet;

use awc::http::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use cpis_fhir::domain::Role;

/// The records every fixture's placeholders stand for: a person with one plan of LA_A.
struct World {
    app: TestApp,
    values: Vec<(&'static str, String)>,
}

async fn world() -> World {
    let app = TestApp::spawn_production().await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let council = app
        .get(&format!("/Organization/{LA_A}"), &app.admin())
        .await
        .json();
    let phone = |purpose: &str| {
        council["contact"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c.pointer("/purpose/coding/0/code") == Some(&json!(purpose)))
            .and_then(|c| c.pointer("/telecom/0/value"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let values = vec![
        ("{nhs}", NHS_1.to_owned()),
        ("{unknown_nhs}", NHS_2.to_owned()),
        (
            "{council_name}",
            council["name"].as_str().unwrap().to_owned(),
        ),
        ("{office}", phone("office-hours")),
        ("{emergency}", phone("emergency-duty")),
        ("{start}", "2026-01-05".to_owned()),
        ("{user_name}", "Test User".to_owned()),
        (
            "{role_display}",
            "Clinician in unscheduled care (B0107)".to_owned(),
        ),
        ("{org}", "RDE01".to_owned()),
        ("{clinician}", app.clinician()),
        (
            "{no_search_scope}",
            app.scoped_token(Role::Clinician, "RDE01", "openid user/Patient.r"),
        ),
    ];
    assert!(values.iter().all(|(_, v)| !v.is_empty()), "{values:?}");
    World { app, values }
}

impl World {
    fn fill(&self, text: &str) -> String {
        self.values
            .iter()
            .fold(text.to_owned(), |t, (k, v)| t.replace(k, v))
    }

    /// Sends a fixture's request as written and checks the answer element by element.
    async fn check(&self, name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/national/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let fixture: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json");
        let request = &fixture["request"];
        let target = self.fill(request["path"].as_str().unwrap());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        // As an EPR's HTTP client sends it: the query's reserved characters percent-encoded.
        let encoded: String = query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                format!("{k}={}", v.replace('|', "%7C"))
            })
            .collect::<Vec<_>>()
            .join("&");
        let uri = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{encoded}")
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut token = None;
        for (k, v) in request["headers"].as_object().unwrap() {
            let v = self.fill(v.as_str().unwrap());
            match v.strip_prefix("Bearer ") {
                Some(t) if k == "Authorization" => token = Some(t.to_owned()),
                _ => headers.push((k.clone(), v)),
            }
        }
        let header_refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let method = Method::from_bytes(request["method"].as_str().unwrap().as_bytes()).unwrap();
        let r = self
            .app
            .request(method, &uri, token.as_deref(), &header_refs, None)
            .await;
        assert_eq!(
            r.status,
            fixture["status"].as_u64().unwrap() as u16,
            "{name}: {}",
            r.text()
        );
        for (k, v) in fixture["headers"].as_object().unwrap() {
            let got = r.header(k).unwrap_or_default();
            assert!(got.starts_with(v.as_str().unwrap()), "{name}: {k} is {got}");
        }
        let body = r.json();
        for pair in fixture["expect"].as_array().unwrap() {
            let pointer = pair[0].as_str().unwrap();
            let got = body.pointer(pointer);
            match &pair[1] {
                Value::Null => assert!(got.is_none(), "{name}: {pointer} should be absent"),
                Value::String(s) if s == "*" => {
                    assert!(got.is_some(), "{name}: {pointer} missing in {body}")
                }
                Value::String(s) => assert_eq!(
                    got,
                    Some(&json!(self.fill(s))),
                    "{name}: {pointer} in {body}"
                ),
                other => assert_eq!(got, Some(other), "{name}: {pointer} in {body}"),
            }
        }
        body
    }
}

#[actix_rt::test]
async fn the_national_cp_is_api_guides_requests_get_the_guides_answers() {
    let w = world().await;
    let before = w.app.audit_ids_about(NHS_1).len();
    let found = w.check("get-careteam-found.json").await;
    assert_eq!(
        w.app.audit_ids_about(NHS_1).len(),
        before + 1,
        "the CareTeam look-up is audited"
    );
    let trace = w.app.audit_of(NHS_1).await.into_iter().any(|a| {
        a.to_string()
            .contains("6ede3b9d-a81b-4c75-9d77-e1d64d85c323")
    });
    assert!(trace, "the TraceID is on the AuditEvent");
    // Each plan's CareTeam validates against this server's CPIS-CareTeam profile.
    let profiles = cpis_fhir::fhir::profile::Profiles::load().unwrap();
    for e in entries(&found, "match") {
        let issues = profiles.validate_as("CPIS-CareTeam", &e);
        assert!(issues.is_empty(), "{issues:?}");
        let mut with_a_note = e.clone();
        with_a_note["note"] = json!([{ "text": "a reason for the plan" }]);
        assert!(
            !profiles
                .validate_as("CPIS-CareTeam", &with_a_note)
                .is_empty(),
            "the profile is closed"
        );
    }
    w.check("get-careteam-not-found.json").await;
    w.check("get-careteam-invalid-nhs-number.json").await;
    w.check("get-careteam-invalid-header.json").await;
    w.check("get-careteam-access-denied.json").await;

    // The access history, as the guide asks for it and as the issue's _include form: the
    // CareTeam look-up above (one unscheduled access) with its viewer.
    for name in ["get-auditevent.json", "get-auditevent-include.json"] {
        let history = w.check(name).await;
        assert_eq!(entries(&history, "match").len(), 1, "{history}");
        let roles = entries(&history, "include");
        assert_eq!(roles.len(), 1);
        let issues = profiles.validate_as("CPIS-PractitionerRole", &roles[0]);
        assert!(issues.is_empty(), "{issues:?}");
        let event = &entries(&history, "match")[0];
        let reference = format!("PractitionerRole/{}", roles[0]["id"].as_str().unwrap());
        assert!(
            event["agent"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["who"]["reference"] == reference.as_str()),
            "the viewer is the AuditEvent's ASSIGNED agent"
        );
    }
}

#[actix_rt::test]
async fn the_patient_flags_api_request_gets_a_flag_its_care_plan_and_the_council() {
    let w = world().await;
    let bundle = w.check("get-patientflag.json").await;
    let profiles = cpis_fhir::fhir::profile::Profiles::load().unwrap();
    let all: Vec<Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .collect();
    for (resource, profile) in
        all.iter()
            .zip(["CPIS-PatientFlag", "CPIS-CarePlan", "CPIS-CouncilCareTeam"])
    {
        let issues = profiles.validate_as(profile, resource);
        assert!(issues.is_empty(), "{profile}: {issues:?}");
    }
    // The references resolve inside the Bundle: Flag → CarePlan → CareTeam.
    let plan_ref = all[0]["extension"][0]["valueReference"]["reference"]
        .as_str()
        .unwrap();
    assert_eq!(
        plan_ref,
        format!("CarePlan/{}", all[1]["id"].as_str().unwrap())
    );
    let team_ref = all[1]["careTeam"][0]["reference"].as_str().unwrap();
    assert_eq!(
        team_ref,
        format!("CareTeam/{}", all[2]["id"].as_str().unwrap())
    );
    // Another flag type is not held here: nothing, and still audited.
    let before = w.app.audit_ids_about(NHS_1).len();
    let other = w
        .app
        .get(
            &format!("/PatientFlag?patient={NHS_1}&code=NRAF"),
            &w.app.clinician(),
        )
        .await
        .json();
    assert_eq!(other["total"], 0);
    assert_eq!(w.app.audit_ids_about(NHS_1).len(), before + 1);
}

fn ids(bundle: &Value, resource_type: &str) -> BTreeSet<String> {
    entries(bundle, "match")
        .into_iter()
        .filter(|r| r["resourceType"] == resource_type)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_rt::test]
async fn the_flag_care_team_and_patient_flag_views_show_the_same_plans_under_the_same_rules() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    app.given_flag(LA_B, NHS_1, "PLAN-B").await;
    let withdrawn = app.given_flag(LA_A, NHS_1, "PLAN-OLD").await;
    let r = app
        .request(
            Method::DELETE,
            &format!("/Flag/{}", withdrawn["id"].as_str().unwrap()),
            Some(&app.council(LA_A)),
            &[],
            None,
        )
        .await;
    assert!(r.status < 300, "{}", r.text());
    let c = app.clinician();
    let flags = app.lookup(&c, NHS_1, "", &[]).await.json();
    let teams = app
        .get(
            &format!("/CareTeam?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}"),
            &c,
        )
        .await
        .json();
    let patient_flags = app
        .get(&format!("/cpis/FHIR/R4/PatientFlag?patient={NHS_1}"), &c)
        .await
        .json();
    let expected = ids(&flags, "Flag");
    assert_eq!(expected.len(), 2, "entered in error is never shown");
    assert_eq!(ids(&teams, "CareTeam"), expected);
    assert_eq!(ids(&patient_flags, "Flag"), expected);
    assert_eq!(teams["total"], 2);
    // Each council's own phone numbers are on its own plan.
    for team in entries(&teams, "match") {
        let ods = team["managingOrganization"][0]["identifier"]["value"]
            .as_str()
            .unwrap()
            .to_owned();
        let council = app.get(&format!("/Organization/{ods}"), &c).await.json();
        assert_eq!(team["name"], council["name"]);
    }
    // A council sees only its own plan in every view.
    let own = app
        .get(
            &format!("/CareTeam?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}"),
            &app.council(LA_B),
        )
        .await
        .json();
    assert_eq!(own["total"], 1);
    // Without a person, or with two, a national view refuses (and audits) the search.
    for path in [
        "/CareTeam".to_owned(),
        "/PatientFlag?code=CP-IS".to_owned(),
        format!("/PatientFlag?patient={NHS_1}&patient={NHS_2}"),
        "/CareTeam?patient:identifier=https://example.org/not-nhs%7C123".to_owned(),
    ] {
        app.get(&path, &c).await.assert_outcome(400, "invalid");
    }
    // An EPR that asks for XML gets every national view as XML.
    for path in [
        format!("/cpis/FHIR/R4/CareTeam?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}"),
        format!("/cpis/FHIR/R4/PatientFlag?patient={NHS_1}"),
        format!("/cpis/FHIR/R4/AuditEvent?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}"),
    ] {
        let xml = app
            .request(Method::GET, &path, Some(&c), &[("Accept", "application/fhir+xml")], None)
            .await;
        assert_eq!(xml.status, 200, "{path}: {}", xml.text());
        assert!(xml.text().contains("<Bundle xmlns=\"http://hl7.org/fhir\">"), "{path}");
        assert!(!xml.text().contains("OperationOutcome"), "{path}: {}", xml.text());
    }
    // The national path serves the rest of the API too, and 405s name the methods.
    assert_eq!(
        app.get("/cpis/FHIR/R4/metadata", &c).await.json()["resourceType"],
        "CapabilityStatement"
    );
    app.request(
        Method::DELETE,
        "/cpis/FHIR/R4/CareTeam",
        Some(&c),
        &[],
        None,
    )
    .await
    .assert_outcome(405, "not-supported");
}

#[actix_rt::test]
async fn every_national_view_is_listed_in_the_capability_statement_with_its_profile() {
    let app = TestApp::spawn().await;
    let cs = app.get("/metadata", &app.clinician()).await.json();
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    let care_team = resources.iter().find(|r| r["type"] == "CareTeam").unwrap();
    assert!(care_team["profile"]
        .as_str()
        .unwrap()
        .ends_with("StructureDefinition/CPIS-CareTeam"));
    assert!(care_team["searchParam"].to_string().contains("\"patient\""));
    let audit = resources
        .iter()
        .find(|r| r["type"] == "AuditEvent")
        .unwrap();
    assert!(audit["searchInclude"].to_string().contains("ASSIGNED"));
    assert!(cs["rest"][0]["documentation"]
        .as_str()
        .unwrap()
        .contains("/PatientFlag"));
    for id in [
        "CPIS-CareTeam",
        "CPIS-PractitionerRole",
        "CPIS-PatientFlag",
        "CPIS-CarePlan",
        "CPIS-CouncilCareTeam",
    ] {
        let sd = app
            .get(&format!("/StructureDefinition/{id}"), &app.clinician())
            .await;
        assert_eq!(sd.status, 200, "{id}");
    }
}

#[test]
fn a_base_path_that_would_hide_the_servers_own_routes_is_refused_at_start_up() {
    let dir = tempfile::tempdir().expect("dir");
    let serve_with = |base_paths: &str| {
        let out = crate::cli::bin()
            .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("CPIS_BASE_PATHS", base_paths)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{base_paths} is refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let hides = serve_with("/Flag/R4");
    assert!(hides.contains("would hide"), "{hides}");
    let malformed = serve_with("cpis/../x");
    assert!(malformed.contains("base_paths"), "{malformed}");
}
