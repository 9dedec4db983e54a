//! The access report: its figures on a trail built with known patterns, nothing flagged on a
//! clean one, no child named, the same figures from `cpis-fhir audit-report`.

use actix_web::http::Method;
use serde_json::Value;

use crate::cli::bin;
use crate::helpers::*;
use cpis_fhir::domain::Role;

fn user(app: &TestApp, user: &str, role: Role, org: &str) -> String {
    app.named_user(user, role, org)
}

/// The `user` line of `agent`: its parts by name (a repeated part's values in a list).
fn line(report: &Value, agent: &str) -> Value {
    let users = report["parameter"].as_array().unwrap().iter();
    let found = users
        .filter(|p| p["name"] == "user")
        .find(|p| {
            p["part"]
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q["name"] == "agent" && q["valueString"] == agent)
        })
        .unwrap_or_else(|| panic!("no line for {agent}"));
    let mut out = serde_json::Map::new();
    for part in found["part"].as_array().unwrap() {
        let name = part["name"].as_str().unwrap().to_owned();
        let value = part
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.starts_with("value"))
            .map(|(_, v)| v.clone())
            .unwrap();
        if name == "flag" {
            out.entry("flag")
                .or_insert_with(|| Value::Array(vec![]))
                .as_array_mut()
                .unwrap()
                .push(value);
        } else {
            out.insert(name, value);
        }
    }
    Value::Object(out)
}

fn flags(line: &Value) -> Vec<String> {
    line["flag"]
        .as_array()
        .map(|a| a.iter().map(|f| f.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

const PERIOD: &str = "start=2026-11-25&end=2026-11-25";

#[actix_rt::test]
async fn the_access_report_flags_many_people_out_of_hours_silent_repeats_probing_and_refusals() {
    let app = TestApp::spawn_with(|s| {
        s.audit.distinct_people_per_day = 3;
        s.audit.silent_reads = 2;
        s.audit.probe_misses = 2;
        s.audit.refusals = 0;
    })
    .await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    let ann = user(&app, "ann", Role::Clinician, "RDE01");
    let sam = user(&app, "sam", Role::ClinicianScheduled, "RBB02");
    // ann: four people in one day, three of them not found (probing).
    for nhs in [NHS_1, NHS_2, NHS_3, "9000000017"] {
        assert_eq!(app.lookup(&ann, nhs, "", &[]).await.status, 200);
    }
    // sam: the same person read silently three times.
    for _ in 0..3 {
        assert_eq!(app.lookup(&sam, NHS_1, "", &[]).await.status, 200);
    }
    // The council at 22:00 (UK time: GMT in November): out of hours.
    app.advance(10 * 3600);
    let council = app.council(LA_A);
    assert_eq!(app.lookup(&council, NHS_1, "", &[]).await.status, 200);
    // A refused token.
    let r = app
        .request(Method::GET, "/Flag?_id=x", Some("not-a-jwt"), &[], None)
        .await;
    assert_eq!(r.status, 401);
    let auditor = app.token(Role::Auditor, "X26");
    let before = app.audit_count();
    let r = app
        .get(&format!("/AuditEvent/$access-report?{PERIOD}"), &auditor)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        app.audit_count() - before,
        1,
        "the report is itself audited"
    );
    let report = r.json();
    assert_eq!(report["resourceType"], "Parameters");
    for nhs in [NHS_1, NHS_2, NHS_3, "9000000017"] {
        assert!(!r.text().contains(nhs), "no child is named in the report");
    }
    let a = line(&report, "ann");
    assert_eq!(a["accesses"], 4);
    assert_eq!(a["distinctPeople"], 4);
    assert_eq!(a["mostPeopleInADay"], 4);
    assert_eq!(a["probeMisses"], 3);
    assert_eq!(a["outOfHours"], 0);
    assert_eq!(a["organization"], "RDE01");
    assert_eq!(flags(&a), ["many-people", "probing"]);
    assert!(a["events"]
        .as_str()
        .unwrap()
        .contains("/AuditEvent?date=ge2026-11-25"));
    let s = line(&report, "sam");
    assert_eq!(s["repeatedSilentReads"], 1);
    assert_eq!(flags(&s), ["repeated-silent-reads"]);
    let c = line(&report, "user-council");
    assert_eq!(c["outOfHours"], 1);
    assert_eq!(flags(&c), ["out-of-hours"]);
    // The link to a line's AuditEvents finds exactly its accesses.
    let link = a["events"].as_str().unwrap()[app.base.len()..].to_owned();
    let events = app.get(&link, &auditor).await.json();
    assert_eq!(entries(&events, "match").len(), 4);
    let refusals: Vec<&Value> = report["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "refusals")
        .collect();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0]["part"][2]["valueBoolean"], true);
    // The command line gives the same figures.
    let out = bin()
        .args(["audit-report", "--data-dir"])
        .arg(app.dir.path())
        .args([
            "--database",
            app.database(),
            "--start",
            "2026-11-25",
            "--end",
            "2026-11-25",
            "--format",
            "csv",
        ])
        .env("CPIS_AUDIT_REPORT_DISTINCT_PEOPLE_PER_DAY", "3")
        .env("CPIS_AUDIT_REPORT_PROBE_MISSES", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    let ann_row = csv.lines().find(|l| l.starts_with("user,ann,")).unwrap();
    assert_eq!(
        ann_row,
        "user,ann,Name of ann,RDE01,clinician,4,4,4,0,0,3,,many-people probing"
    );
    assert!(!csv.contains(NHS_2));
    let json = bin()
        .args(["audit-report", "--data-dir"])
        .arg(app.dir.path())
        .args([
            "--database",
            app.database(),
            "--start",
            "2026-11-25",
            "--end",
            "2026-11-25",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let parsed: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(parsed["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["agent"] == "sam"));
}

#[actix_rt::test]
async fn a_clean_trail_flags_nothing_and_the_report_is_for_the_audit_team_only() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    let c = app.clinician();
    for _ in 0..3 {
        assert_eq!(app.lookup(&c, NHS_1, "", &[]).await.status, 200);
    }
    let auditor = app.token(Role::Auditor, "X26");
    let report = app
        .get(&format!("/AuditEvent/$access-report?{PERIOD}"), &auditor)
        .await
        .json();
    let l = line(&report, "user-clinician");
    assert_eq!(l["accesses"], 3);
    assert_eq!(l["distinctPeople"], 1);
    assert!(flags(&l).is_empty());
    assert!(!report.to_string().contains("\"flagged\":true"));
    app.get(&format!("/AuditEvent/$access-report?{PERIOD}"), &c)
        .await
        .assert_outcome(403, "forbidden");
    for q in [
        "start=2026-11-25",
        "start=2026-11-26&end=2026-11-25",
        "start=soon&end=later",
    ] {
        app.get(&format!("/AuditEvent/$access-report?{q}"), &auditor)
            .await
            .assert_outcome(400, "invalid");
    }
    // A period longer than `audit.report_max_days` (93 by default) is refused, naming the limit
    // and the command that has none; 93 days exactly is answered.
    let year = app
        .get(
            "/AuditEvent/$access-report?start=2025-11-26&end=2026-11-25",
            &auditor,
        )
        .await;
    year.assert_outcome(400, "invalid");
    assert!(
        year.text().contains("longer than 93 days"),
        "{}",
        year.text()
    );
    assert!(year.text().contains("cpis-fhir audit-report"));
    let quarter = app
        .get(
            "/AuditEvent/$access-report?start=2026-08-25&end=2026-11-25",
            &auditor,
        )
        .await;
    assert_eq!(quarter.status, 200, "{}", quarter.text());
}
