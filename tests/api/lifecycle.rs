//! The record lifecycle (DOMAIN.md "Retention"), stepped through `POST /$purge` and
//! `cpis-fhir purge` with the server's clock moved across each boundary: the day before, the
//! day of, the day after.

use actix_web::http::Method;
use cpis_fhir::domain::Role;
use serde_json::{json, Value};

use crate::helpers::*;

async fn flag(app: &TestApp, id: &str) -> Resp {
    app.get(&format!("/Flag/{id}"), &app.council(LA_A)).await
}

fn counts(p: &Value) -> Vec<i64> {
    [
        "plansEndedAt18",
        "plansMadeInactive",
        "flagsRemoved",
        "patientsRemoved",
        "auditEventsRemoved",
    ]
    .iter()
    .map(|n| parameter(p, n).as_i64().unwrap_or(-1))
    .collect()
}

#[actix_rt::test]
async fn a_plan_is_active_through_its_end_date_and_inactive_the_day_after() {
    let app = TestApp::spawn().await;
    app.set_today("2026-11-20");
    let f = app
        .given_flag_shaped(LA_A, NHS_1, "P-1", |f| {
            f["period"]["end"] = json!("2026-11-24");
        })
        .await;
    let id = f["id"].as_str().unwrap();
    for day in ["2026-11-23", "2026-11-24"] {
        app.set_today(day);
        app.purge().await;
        let v = flag(&app, id).await.json();
        assert_eq!(v["status"], "active", "on {day}");
        assert_eq!(v["meta"]["versionId"], "1");
    }
    app.set_today("2026-11-25");
    let p = app.purge().await;
    assert_eq!(counts(&p), [0, 1, 0, 0, 0]);
    let v = flag(&app, id).await.json();
    assert_eq!(v["status"], "inactive");
    assert_eq!(v["meta"]["versionId"], "2");
    let seen = app.lookup(&app.clinician(), NHS_1, "", &[]).await.json();
    assert_eq!(
        entries(&seen, "match").len(),
        1,
        "an ended plan is still shown"
    );
}

#[actix_rt::test]
async fn a_plan_submitted_after_its_end_is_stored_inactive() {
    let app = TestApp::spawn().await;
    let f = app
        .given_flag_shaped(LA_A, NHS_1, "P-1", |f| {
            f["period"]["end"] = json!("2026-10-01");
        })
        .await;
    assert_eq!(f["status"], "inactive");
}

#[actix_rt::test]
async fn records_leave_the_day_after_their_retention_window_with_their_history() {
    let app = TestApp::spawn().await;
    app.set_today("2025-11-20");
    let f = app
        .given_flag_shaped(LA_A, NHS_1, "P-1", |f| {
            f["period"] = json!({ "start": "2025-01-05", "end": "2025-11-24" });
        })
        .await;
    let id = f["id"].as_str().unwrap().to_owned();
    // 12 months after the plan ended is 2026-11-24: the last day it is shown.
    for day in ["2026-11-23", "2026-11-24"] {
        app.set_today(day);
        let p = app.purge().await;
        assert_eq!(parameter(&p, "flagsRemoved"), 0, "on {day}");
        assert_eq!(flag(&app, &id).await.status, 200, "on {day}");
    }
    app.set_today("2026-11-25");
    let p = app.purge().await;
    assert_eq!(parameter(&p, "flagsRemoved"), 1);
    assert_eq!(parameter(&p, "patientsRemoved"), 1);
    assert_eq!(flag(&app, &id).await.status, 404);
    let h = app
        .get(&format!("/Flag/{id}/_history"), &app.council(LA_A))
        .await;
    assert_eq!(h.status, 404, "the history goes too: {}", h.text());
    let person = app
        .get(&format!("/Patient/{NHS_1}"), &app.council(LA_A))
        .await;
    assert_eq!(person.status, 404);
}

#[actix_rt::test]
async fn a_person_with_another_live_plan_stays_when_one_plan_is_removed() {
    let app = TestApp::spawn().await;
    app.set_today("2025-01-10");
    app.given_flag_shaped(LA_A, NHS_1, "P-1", |f| {
        f["period"] = json!({ "start": "2024-01-05", "end": "2025-01-31" });
    })
    .await;
    app.given_flag(LA_B, NHS_1, "Q-1").await;
    app.set_today("2026-11-25");
    let p = app.purge().await;
    assert_eq!(parameter(&p, "flagsRemoved"), 1);
    assert_eq!(parameter(&p, "patientsRemoved"), 0);
    let seen = app.lookup(&app.clinician(), NHS_1, "", &[]).await.json();
    assert_eq!(entries(&seen, "match").len(), 1);
}

#[actix_rt::test]
async fn child_plans_end_on_the_eighteenth_birthday_but_unborn_child_plans_do_not() {
    let app = TestApp::spawn().await;
    // The mother holds the unborn-child plan; the child protection plan is hers as a child.
    let mut person = patient_json(NHS_1);
    person["birthDate"] = json!("2008-11-26");
    let r = app
        .put_json(&format!("/Patient/{NHS_1}"), &app.council(LA_A), &person)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let cpp = app
        .post_json("/Flag", &app.council(LA_A), &flag_json(NHS_1, LA_A, "P-1"))
        .await
        .json();
    let mut unborn = flag_json(NHS_1, LA_A, "P-2");
    unborn["code"]["coding"][0]["code"] = json!("818901000000100");
    let ucpp = app
        .post_json("/Flag", &app.council(LA_A), &unborn)
        .await
        .json();
    let (cpp, ucpp) = (cpp["id"].as_str().unwrap(), ucpp["id"].as_str().unwrap());

    app.set_today("2026-11-25");
    let p = app.purge().await;
    assert_eq!(parameter(&p, "plansEndedAt18"), 0, "the day before");
    assert_eq!(flag(&app, cpp).await.json()["status"], "active");

    app.set_today("2026-11-26");
    let p = app.purge().await;
    assert_eq!(parameter(&p, "plansEndedAt18"), 1, "the birthday");
    let v = flag(&app, cpp).await.json();
    assert_eq!(v["period"]["end"], "2026-11-25");
    assert_eq!(v["status"], "inactive");
    assert_eq!(v["meta"]["versionId"], "2");
    let u = flag(&app, ucpp).await.json();
    assert_eq!(u["status"], "active");
    assert!(u["period"].get("end").is_none(), "{u}");

    app.set_today("2026-11-27");
    let p = app.purge().await;
    assert_eq!(counts(&p), [0, 0, 0, 0, 0], "the day after: nothing more");
    assert_eq!(flag(&app, cpp).await.json()["meta"]["versionId"], "2");
}

#[actix_rt::test]
async fn a_removal_run_is_audited_with_counts_and_no_personal_data() {
    let app = TestApp::spawn().await;
    app.set_today("2024-06-01");
    app.given_flag_shaped(LA_A, NHS_1, "P-1", |f| {
        f["period"] = json!({ "start": "2024-01-05", "end": "2024-06-30" });
    })
    .await;
    app.set_today("2026-11-25");
    let p = app.purge().await;
    let reference = parameter(&p, "auditEvent")["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let auditor = app.token(Role::Auditor, "X26");
    let r = app.get(&format!("/{reference}"), &auditor).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(!text.contains(NHS_1), "no NHS number: {text}");
    assert!(!text.contains("Carter"), "no name: {text}");
    let v = r.json();
    assert_eq!(v["action"], "D");
    let detail = v["entity"][0]["detail"].as_array().unwrap();
    let removed = detail.iter().find(|d| d["type"] == "flagsRemoved").unwrap();
    assert_eq!(removed["valueString"], "1");
    assert!(v["agent"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["who"]["identifier"]["value"] == "user-admin"));
    let runs = app.get("/AuditEvent?subtype=destroy", &auditor).await;
    assert_eq!(runs.status, 200, "{}", runs.text());
    let runs = entries(&runs.json(), "match");
    assert_eq!(runs.len(), 1);
    assert_eq!(
        format!("AuditEvent/{}", runs[0]["id"].as_str().unwrap()),
        reference
    );
    let r = app
        .get("/AuditEvent?subtype=destroy", &app.council(LA_A))
        .await;
    r.assert_outcome(403, "forbidden");
}

#[actix_rt::test]
async fn a_purge_with_nothing_to_do_changes_nothing() {
    let app = TestApp::spawn().await;
    let f = app.given_flag(LA_A, NHS_1, "P-1").await;
    let before = app.audit_count();
    let p = app.purge().await;
    assert_eq!(counts(&p), [0, 0, 0, 0, 0]);
    assert!(parameter(&p, "auditEvent").is_null());
    assert_eq!(
        app.audit_count(),
        before,
        "no audit row for a run that did nothing"
    );
    let v = flag(&app, f["id"].as_str().unwrap()).await.json();
    assert_eq!(v["meta"]["versionId"], "1");
}

#[actix_rt::test]
async fn audit_events_are_kept_for_their_own_longer_window() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "P-1").await;
    app.lookup(&app.clinician(), NHS_1, "", &[]).await;
    let written = app.audit_count();
    assert!(written >= 1);
    // The look-up's audit row is 8 years old on 2034-11-25 and goes the day after. (The child
    // turned 18 in 2034, so the first run also ends the plan and records itself.)
    app.set_today("2034-11-24");
    let p = app.purge().await;
    assert_eq!(parameter(&p, "auditEventsRemoved"), 0);
    app.set_today("2034-11-26");
    let p = app.purge().await;
    assert_eq!(parameter(&p, "auditEventsRemoved"), written);
    assert_eq!(
        app.audit_count(),
        2,
        "only the two runs' own records are left"
    );
}

#[actix_rt::test]
async fn only_administrators_run_the_lifecycle() {
    let app = TestApp::spawn().await;
    for token in [
        app.council(LA_A),
        app.clinician(),
        app.token(Role::Auditor, "X26"),
    ] {
        let r = app
            .request(Method::POST, "/$purge", Some(&token), &[], None)
            .await;
        r.assert_outcome(403, "forbidden");
    }
}

#[actix_rt::test]
async fn the_purge_command_applies_the_rules_as_of_the_date_it_is_given() {
    let app = TestApp::spawn().await;
    let f = app
        .given_flag_shaped(LA_A, NHS_1, "P-1", |f| {
            f["period"]["end"] = json!("2026-12-31");
        })
        .await;
    let db = app.database().to_owned();
    let run = |date: &'static str| {
        let db = db.clone();
        actix_web::rt::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_cpis-fhir"))
                .args(["purge", "--database", &db, "--now", date])
                .env("RUST_LOG", "warn")
                .output()
                .expect("run purge")
        })
    };
    let out = run("2027-12-31").await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("plansMadeInactive") && text.contains(" 1"),
        "{text}"
    );
    assert_eq!(flag(&app, f["id"].as_str().unwrap()).await.status, 200);
    let out = run("2028-01-01").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("recorded as AuditEvent/"), "{text}");
    assert_eq!(flag(&app, f["id"].as_str().unwrap()).await.status, 404);
    let out = run("2028-01-02").await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));
}

#[actix_rt::test]
async fn the_capability_statement_points_to_the_served_purge_definition() {
    let app = TestApp::spawn().await;
    let cap = app
        .request(Method::GET, "/metadata", None, &[], None)
        .await
        .json();
    let op = &cap["rest"][0]["operation"][0];
    assert_eq!(op["name"], "purge");
    let r = app
        .request(Method::GET, "/OperationDefinition/purge", None, &[], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["url"], op["definition"]);
}

#[actix_rt::test]
async fn the_accesses_to_a_plan_are_found_by_entity_after_its_record_has_gone_and_leave_with_their_own_audit_rows(
) {
    let app = TestApp::spawn().await;
    let f = app
        .given_flag_shaped(LA_A, NHS_1, "P-1", |f| {
            f["period"]["end"] = json!("2026-11-24");
        })
        .await;
    let id = f["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
    let by_flag = format!("entity=Flag/{id}&agent-role=clinician");
    assert_eq!(app.audit_search(&by_flag).await.len(), 1);
    assert_eq!(
        app.rows_in("audit_flags"),
        0,
        "the look-up itself writes no index entry"
    );
    // The record leaves a year after its plan ended; a complaint can come years later. The
    // run indexes the trail behind it.
    app.set_today("2028-01-10");
    let p = app.purge().await;
    assert_eq!(parameter(&p, "flagsRemoved"), 1);
    assert_eq!(app.rows_in("audit_flags"), 1);
    assert_eq!(
        app.rows_in(&format!("audit_patients WHERE patient = '{NHS_1}'")),
        app.rows_in(&format!("audit_events WHERE patient = '{NHS_1}'")),
        "every access to the person indexed by person too"
    );
    assert!(app.rows_in("audit_users") >= 1 && app.rows_in("audit_orgs") >= 1);
    assert_eq!(flag(&app, &id).await.status, 404);
    let found = app.audit_search(&by_flag).await;
    assert_eq!(found.len(), 1, "the access is still found by the Flag");
    assert!(found[0]
        .to_string()
        .contains(&format!("Flag/{id}/_history/1")));
    // Eight years after the look-up its audit row goes, and the Flag's index entry with it.
    app.set_today("2034-11-26");
    let p = app.purge().await;
    assert!(parameter(&p, "auditEventsRemoved").as_i64().unwrap() >= 1);
    assert!(app.audit_search(&by_flag).await.is_empty());
    assert_eq!(app.rows_in("audit_flags"), 0);
    for index in ["audit_patients", "audit_users", "audit_orgs"] {
        assert_eq!(
            app.rows_in(&format!(
                "{index} WHERE audit_id NOT IN (SELECT id FROM audit_events)"
            )),
            0,
            "{index}: the entries leave with their rows"
        );
    }
    assert!(app.audit_ids_paged(NHS_1, 10).await.is_empty());
}
