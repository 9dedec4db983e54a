//! The clinician's look-up: search by NHS number, audited before disclosure, and the person's
//! access history.

use actix_web::http::Method;
use base64::Engine;
use cpis_fhir::domain::Role;
use serde_json::{json, Value};

use crate::helpers::*;

#[actix_rt::test]
async fn a_hit_returns_the_plan_and_the_council_phone_numbers_in_one_bundle() {
    let app = TestApp::spawn().await;
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let r = app
        .lookup(&app.clinician(), NHS_1, "&_include=Flag:author", &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["type"], "searchset");
    assert_eq!(b["total"], 1);
    let flags = entries(&b, "match");
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0]["id"], flag["id"]);
    assert_eq!(flags[0]["period"]["start"], "2026-01-05");
    let orgs = entries(&b, "include");
    assert_eq!(orgs.len(), 1);
    assert_eq!(orgs[0]["resourceType"], "Organization");
    assert_eq!(orgs[0]["contact"][1]["telecom"][0]["value"], "01632 960101");
    assert!(b["link"][0]["url"]
        .as_str()
        .is_some_and(|u| u.contains("_include=Flag:author")));
}

#[actix_rt::test]
async fn a_miss_is_an_empty_searchset() {
    let app = TestApp::spawn().await;
    let r = app.lookup(&app.clinician(), NHS_2, "", &[]).await;
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(b["total"], 0);
    assert!(b.get("entry").is_none());
}

#[actix_rt::test]
async fn ended_plans_show_with_their_end_date_until_removal_and_entered_in_error_never_shows() {
    let app = TestApp::spawn().await;
    let ended = app
        .given_flag_shaped(LA_A, NHS_1, "ENDED", |f| {
            f["status"] = json!("inactive");
            f["period"] = json!({ "start": "2024-01-01", "end": "2025-11-25" });
        })
        .await;
    let wrong = app.given_flag(LA_A, NHS_1, "WRONG").await;
    let wrong_id = wrong["id"].as_str().expect("id");
    let del = app
        .request(
            Method::DELETE,
            &format!("/Flag/{wrong_id}"),
            Some(&app.council(LA_A)),
            &[],
            None,
        )
        .await;
    assert_eq!(del.status, 204);
    let clinician = app.clinician();
    // The day the retention window closes (12 months after the end), the plan still shows.
    for (today, shown) in [
        ("2026-11-24", true),
        ("2026-11-25", true),
        ("2026-11-26", false),
    ] {
        app.set_today(today);
        let b = app.lookup(&clinician, NHS_1, "", &[]).await.json();
        let ids: Vec<Value> = entries(&b, "match")
            .iter()
            .map(|f| f["id"].clone())
            .collect();
        assert_eq!(ids.contains(&ended["id"]), shown, "{today}");
        assert!(
            !ids.contains(&wrong["id"]),
            "entered-in-error shown on {today}"
        );
        if shown {
            assert_eq!(entries(&b, "match")[0]["period"]["end"], "2025-11-25");
        }
    }
    // The council still sees both of its own records.
    let b = app.lookup(&app.council(LA_A), NHS_1, "", &[]).await.json();
    assert_eq!(b["total"], 2);
    // Reading a hidden Flag directly is a miss for a clinician.
    app.get(&format!("/Flag/{wrong_id}"), &clinician)
        .await
        .assert_outcome(404, "not-found");
}

#[actix_rt::test]
async fn plans_from_two_councils_are_both_shown_with_both_councils_included() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "A-1").await;
    let b_flag = app
        .given_flag_shaped(LA_B, NHS_1, "B-1", |f| {
            f["code"]["coding"][0]["code"] = json!("764841000000100");
        })
        .await;
    let b = app
        .lookup(
            &app.clinician(),
            NHS_1,
            "&_include=Flag:author&_include=Flag:patient",
            &[],
        )
        .await
        .json();
    assert_eq!(b["total"], 2);
    let includes = entries(&b, "include");
    let mut orgs: Vec<&str> = includes
        .iter()
        .filter(|r| r["resourceType"] == "Organization")
        .filter_map(|r| r["id"].as_str())
        .collect();
    orgs.sort();
    assert_eq!(orgs, [LA_A, LA_B]);
    assert_eq!(
        includes
            .iter()
            .filter(|r| r["resourceType"] == "Patient")
            .count(),
        1
    );
    assert!(entries(&b, "match").iter().any(|f| f["id"] == b_flag["id"]));
    // Each council sees only its own plan.
    let mine = app.lookup(&app.council(LA_B), NHS_1, "", &[]).await.json();
    assert_eq!(mine["total"], 1);
    assert_eq!(entries(&mine, "match")[0]["id"], b_flag["id"]);
}

#[actix_rt::test]
async fn every_spelling_of_the_person_finds_and_includes_the_same() {
    let app = TestApp::spawn().await;
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    app.given_flag(LA_B, NHS_2, "PLAN-2").await;
    let clinician = app.clinician();
    let nhs = format!("https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}");
    for (person, include) in [
        (format!("patient:identifier={nhs}"), "Flag:patient"),
        (format!("subject:identifier={nhs}"), "Flag:subject"),
        (format!("patient=Patient/{NHS_1}"), "Flag:patient"),
        (format!("subject=Patient/{NHS_1}"), "Flag:subject"),
    ] {
        let path = format!("/Flag?{person}&_include={include}&_include=Flag:author");
        let r = app.get(&path, &clinician).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let b = r.json();
        assert_eq!(b["total"], 1, "{path}");
        assert_eq!(entries(&b, "match")[0]["id"], flag["id"], "{path}");
        let mut included: Vec<String> = entries(&b, "include")
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap_or(""),
                    r["id"].as_str().unwrap_or("")
                )
            })
            .collect();
        included.sort();
        assert_eq!(
            included,
            [format!("Organization/{LA_A}"), format!("Patient/{NHS_1}")],
            "{path}"
        );
    }
}

#[actix_rt::test]
async fn paging_with_count_1_returns_every_flag_exactly_once() {
    let app = TestApp::spawn().await;
    let mut expected = Vec::new();
    for i in 0..4 {
        expected.push(app.given_flag(LA_A, NHS_1, &format!("P{i}")).await["id"].clone());
    }
    let clinician = app.clinician();
    let mut seen = Vec::new();
    let mut next = Some(format!(
        "/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}&_count=1"
    ));
    let mut pages = 0;
    while let Some(path) = next.take() {
        let b = app.get(&path, &clinician).await.json();
        assert_eq!(b["total"], 4);
        let page = entries(&b, "match");
        assert!(page.len() <= 1);
        seen.extend(page.iter().map(|f| f["id"].clone()));
        next = app.next_page(&b);
        pages += 1;
        assert!(pages < 10);
    }
    assert_eq!(seen, expected);
}

#[actix_rt::test]
async fn pages_are_capped_at_the_configured_maximum_and_count_0_gives_the_total_alone() {
    let app = TestApp::spawn_with(|s| s.max_page_size = 2).await;
    for i in 0..3 {
        app.given_flag(LA_A, NHS_1, &format!("P{i}")).await;
    }
    let clinician = app.clinician();
    let search = format!("/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}");
    for asked in ["", "&_count=50"] {
        let b = app
            .get(&format!("{search}{asked}"), &clinician)
            .await
            .json();
        assert_eq!(b["total"], 3);
        assert_eq!(entries(&b, "match").len(), 2, "{asked}");
        let next = app.next_page(&b).expect("a next page");
        let rest = app.get(&next, &clinician).await.json();
        assert_eq!(entries(&rest, "match").len(), 1);
        assert_eq!(app.next_page(&rest), None);
    }
    let b = app
        .get(&format!("{search}&_count=0"), &clinician)
        .await
        .json();
    assert_eq!(b["total"], 3);
    assert!(entries(&b, "match").is_empty());
    assert_eq!(app.next_page(&b), None);
    app.get(&format!("{search}&_count=many"), &clinician)
        .await
        .assert_outcome(400, "invalid");
}

#[actix_rt::test]
async fn every_look_up_hit_miss_or_refusal_leaves_exactly_one_audit_event() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let clinician = app.clinician();
    let cases: Vec<(&str, u16)> = vec![
        (
            "/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C9449306753",
            200,
        ),
        (
            "/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C9000000009",
            200,
        ),
        (
            "/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C1234567890",
            400,
        ),
        ("/Flag?status=active", 403),
        ("/Patient?family=Carter", 403),
        (
            "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C9449306753",
            200,
        ),
        ("/Patient/9449306753", 200),
        ("/Flag?patient=Patient/9449306753&colour=red", 400),
    ];
    for (path, status) in cases {
        let before = app.audit_count();
        let r = app.get(path, &clinician).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(app.audit_count(), before + 1, "{path}");
    }
    // An invalid NHS number is invalid search data.
    let r = app.lookup(&clinician, "1234567890", "", &[]).await;
    assert_eq!(
        r.json()["issue"][0]["details"]["coding"][0]["code"],
        "INVALID_SEARCH_DATA"
    );
    // A council reading its own Flag is audited too.
    let flag = app.given_flag(LA_A, NHS_3, "PLAN-3").await;
    let before = app.audit_count();
    assert_eq!(
        app.get(
            &format!("/Flag/{}", flag["id"].as_str().expect("id")),
            &app.council(LA_A)
        )
        .await
        .status,
        200
    );
    assert_eq!(app.audit_count(), before + 1);
    let events = app.audit_of(NHS_3).await;
    assert_eq!(events[0]["subtype"][0]["code"], "read");
    assert_eq!(events[0]["outcome"], "0");
}

#[actix_rt::test]
async fn the_audit_event_records_who_what_when_and_the_request() {
    let app = TestApp::spawn().await;
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let r = app
        .lookup(
            &app.clinician(),
            NHS_1,
            "",
            &[
                ("X-Request-ID", "req-42"),
                ("TraceID", "0f4a7c8e-1111-4000-8000-000000000001"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let events = app.audit_of(NHS_1).await;
    let e = &events[0];
    assert_eq!(e["resourceType"], "AuditEvent");
    assert_eq!(e["type"]["code"], "rest");
    assert_eq!(e["subtype"][0]["code"], "search-type");
    assert_eq!(e["action"], "E");
    assert_eq!(e["outcome"], "0");
    assert_eq!(e["recorded"], "2026-11-25T12:00:00.000Z");
    assert_eq!(e["purposeOfEvent"][0]["coding"][0]["code"], "unscheduled");
    let user = &e["agent"][0];
    assert_eq!(user["who"]["identifier"]["value"], "user-clinician");
    assert_eq!(user["who"]["display"], "Test User");
    assert_eq!(user["role"][0]["coding"][0]["code"], "clinician");
    assert_eq!(e["agent"][1]["who"]["identifier"]["value"], "RDE01");
    assert_eq!(e["agent"][2]["who"]["display"], "cpis-fhir-dev");
    let entity = |pred: &dyn Fn(&Value) -> bool| -> Option<Value> {
        e["entity"]
            .as_array()
            .and_then(|a| a.iter().find(|x| pred(x)).cloned())
    };
    assert_eq!(
        entity(&|x| x["role"]["code"] == "1").map(|x| x["what"]["identifier"]["value"].clone()),
        Some(json!(NHS_1))
    );
    let query = entity(&|x| x["role"]["code"] == "24")
        .and_then(|x| x["query"].as_str().map(str::to_owned))
        .expect("query");
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(query)
            .expect("base64"),
    )
    .expect("utf8");
    assert!(
        decoded.starts_with("GET /Flag?patient:identifier="),
        "{decoded}"
    );
    let disclosed = format!("Flag/{}/_history/1", flag["id"].as_str().expect("id"));
    assert!(
        entity(&|x| x["what"]["reference"] == disclosed.as_str()).is_some(),
        "{e}"
    );
    assert!(entity(&|x| x["what"]["reference"] == "Organization/LA901").is_some());
    assert!(entity(&|x| x["what"]["identifier"]["value"] == "req-42").is_some());
    assert!(
        entity(&|x| x["what"]["identifier"]["value"] == "0f4a7c8e-1111-4000-8000-000000000001")
            .is_some()
    );
    // Scheduled care is recorded as such.
    app.lookup(
        &app.token(Role::ClinicianScheduled, "GPX01"),
        NHS_1,
        "",
        &[],
    )
    .await;
    app.lookup(
        &app.clinician(),
        NHS_1,
        "",
        &[("IsUnscheduledAccessEvent", "false")],
    )
    .await;
    let events = app.audit_of(NHS_1).await;
    assert_eq!(
        events[0]["purposeOfEvent"][0]["coding"][0]["code"],
        "scheduled"
    );
    assert_eq!(
        events[1]["purposeOfEvent"][0]["coding"][0]["code"],
        "scheduled"
    );
}

#[actix_rt::test]
async fn a_bad_is_unscheduled_header_is_refused_and_audited() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let before = app.audit_count();
    let r = app
        .lookup(
            &app.clinician(),
            NHS_1,
            "",
            &[("IsUnscheduledAccessEvent", "maybe")],
        )
        .await;
    r.assert_outcome(400, "invalid");
    assert_eq!(
        r.json()["issue"][0]["details"]["coding"][0]["code"],
        "PRECONDITION_FAILED"
    );
    assert!(r.json().get("entry").is_none());
    assert_eq!(app.audit_count(), before + 1);
    assert_eq!(app.audit_of(NHS_1).await[0]["outcome"], "4");
}

#[actix_rt::test]
async fn when_the_audit_cannot_be_written_nothing_is_disclosed() {
    let app = TestApp::spawn().await;
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let id = flag["id"].as_str().expect("id").to_owned();
    app.tamper(
        "CREATE TRIGGER audit_unwritable BEFORE INSERT ON audit_events \
         BEGIN SELECT RAISE(ABORT, 'audit trail unavailable'); END;",
        "CREATE FUNCTION audit_unwritable() RETURNS trigger AS $$ \
         BEGIN RAISE EXCEPTION 'audit trail unavailable'; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER audit_unwritable BEFORE INSERT ON audit_events \
         FOR EACH ROW EXECUTE FUNCTION audit_unwritable();",
    );
    for r in [
        app.lookup(&app.clinician(), NHS_1, "&_include=Flag:author", &[])
            .await,
        app.get(&format!("/Flag/{id}"), &app.council(LA_A)).await,
        app.get(&format!("/Patient/{NHS_1}"), &app.clinician())
            .await,
    ] {
        r.assert_outcome(503, "transient");
        assert!(
            !r.text().contains(&id) && !r.text().contains(NHS_1) && !r.text().contains("Carter"),
            "{}",
            r.text()
        );
        assert!(r.text().contains("request id"), "{}", r.text());
    }
    app.tamper(
        "DROP TRIGGER audit_unwritable;",
        "DROP TRIGGER audit_unwritable ON audit_events;",
    );
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
}

#[actix_rt::test]
async fn the_access_history_shows_the_latest_25_unscheduled_disclosures_newest_first() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    for i in 0..30 {
        let t = app.token(Role::Clinician, &format!("RD{i:03}"));
        assert_eq!(app.lookup(&t, NHS_1, "", &[]).await.status, 200);
    }
    // Silent reads, misses and the council's own reads are not accesses to list.
    app.lookup(
        &app.token(Role::ClinicianScheduled, "GPX01"),
        NHS_1,
        "",
        &[],
    )
    .await;
    app.lookup(
        &app.clinician(),
        NHS_1,
        "",
        &[("IsUnscheduledAccessEvent", "false")],
    )
    .await;
    app.lookup(&app.clinician(), NHS_2, "", &[]).await;
    app.lookup(&app.council(LA_A), NHS_1, "", &[]).await;
    let history =
        format!("/AuditEvent?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}");
    let r = app.get(&history, &app.clinician()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let events = entries(&r.json(), "match");
    assert_eq!(events.len(), 25);
    let orgs: Vec<String> = events
        .iter()
        .filter_map(|e| {
            e["agent"][1]["who"]["identifier"]["value"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let expected: Vec<String> = (5..30).rev().map(|i| format!("RD{i:03}")).collect();
    assert_eq!(orgs, expected);
    assert!(events
        .iter()
        .all(|e| e["purposeOfEvent"][0]["coding"][0]["code"] == "unscheduled"));
    // Reading the history is audited but not listed.
    let again = entries(&app.get(&history, &app.clinician()).await.json(), "match");
    assert_eq!(again[0]["id"], events[0]["id"]);
    let all = app.audit_of(NHS_1).await;
    assert!(all.iter().any(|e| e["subtype"][0]["code"] == "search-type"
        && e["entity"].to_string().contains("AuditEvent/")));
    // The responsible council sees the history; another council does not.
    assert_eq!(
        entries(&app.get(&history, &app.council(LA_A)).await.json(), "match").len(),
        25
    );
    app.get(&history, &app.council(LA_B))
        .await
        .assert_outcome(403, "forbidden");
    // The council fetches one access by id (what its notifications will carry).
    let one = app
        .get(
            &format!("/AuditEvent/{}", events[0]["id"].as_str().expect("id")),
            &app.council(LA_A),
        )
        .await;
    assert_eq!(one.status, 200);
    app.get(
        &format!("/AuditEvent/{}", events[0]["id"].as_str().expect("id")),
        &app.council(LA_B),
    )
    .await
    .assert_outcome(403, "forbidden");
}

#[actix_rt::test]
async fn the_audit_team_pages_through_every_access_to_a_person_once_newest_first() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let c = app.clinician();
    for _ in 0..3 {
        app.lookup(&c, NHS_1, "", &[]).await;
    }
    app.lookup(
        &app.token(Role::ClinicianScheduled, "GPX01"),
        NHS_1,
        "",
        &[],
    )
    .await;
    app.lookup(&c, NHS_2, "", &[]).await;
    app.lookup(&app.council(LA_A), NHS_1, "", &[]).await;

    let truth = app.audit_ids_about(NHS_1);
    assert_eq!(truth.len(), 5);
    assert_eq!(app.audit_ids_paged(NHS_1, 2).await, truth);
    // Each page the audit team reads is itself an access to the person, found from then on.
    let truth = app.audit_ids_about(NHS_1);
    assert_eq!(truth.len(), 5 + 3);
    assert_eq!(app.audit_ids_paged(NHS_1, 3).await, truth);
    let truth = app.audit_ids_about(NHS_1);
    assert_eq!(app.audit_ids_paged(NHS_1, 100).await, truth);
    assert_eq!(app.audit_ids_about(NHS_2).len(), 1);
    assert_eq!(app.audit_of(NHS_2).await.len(), 1);
}

#[actix_rt::test]
async fn audit_events_cannot_be_created_changed_or_deleted() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    app.lookup(&app.clinician(), NHS_1, "", &[]).await;
    let id = app.audit_of(NHS_1).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let body = json!({ "resourceType": "AuditEvent" });
    for t in [
        app.admin(),
        app.token(Role::Auditor, "X26"),
        app.council(LA_A),
    ] {
        app.post_json("/AuditEvent", &t, &body)
            .await
            .assert_outcome(405, "not-supported");
        app.put_json(&format!("/AuditEvent/{id}"), &t, &body)
            .await
            .assert_outcome(405, "not-supported");
        app.request(
            Method::DELETE,
            &format!("/AuditEvent/{id}"),
            Some(&t),
            &[],
            None,
        )
        .await
        .assert_outcome(405, "not-supported");
    }
}

#[actix_rt::test]
async fn unsupported_parameters_are_refused_unless_handling_is_lenient() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let r = app
        .lookup(&app.clinician(), NHS_1, "&colour=red", &[])
        .await;
    r.assert_outcome(400, "not-supported");
    assert!(r.expressions().contains(&"colour".to_owned()));
    let r = app
        .lookup(
            &app.clinician(),
            NHS_1,
            "&colour=red",
            &[("Prefer", "handling=lenient")],
        )
        .await;
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(b["total"], 1);
    let self_link = b["link"][0]["url"].as_str().unwrap_or_default();
    assert!(
        !self_link.contains("colour") && self_link.contains("patient:identifier"),
        "{self_link}"
    );
}

#[actix_rt::test]
async fn search_by_post_form_gives_the_same_result() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let get = app
        .lookup(&app.clinician(), NHS_1, "&_include=Flag:author", &[])
        .await
        .json();
    let form = format!("patient%3Aidentifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C{NHS_1}&_include=Flag%3Aauthor");
    let post = app
        .request(
            Method::POST,
            "/Flag/_search",
            Some(&app.clinician()),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(form.into_bytes()),
        )
        .await;
    assert_eq!(post.status, 200, "{}", post.text());
    let post = post.json();
    assert_eq!(post["total"], get["total"]);
    assert_eq!(entries(&post, "match"), entries(&get, "match"));
    assert_eq!(entries(&post, "include"), entries(&get, "include"));
    let p = app
        .request(
            Method::POST,
            "/Patient/_search",
            Some(&app.clinician()),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(format!("identifier={NHS_1}").into_bytes()),
        )
        .await;
    assert_eq!(p.json()["total"], 1);
}

#[actix_rt::test]
async fn flags_are_filtered_by_status_code_and_date() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "CPP").await;
    app.given_flag_shaped(LA_A, NHS_1, "LAC", |f| {
        f["code"]["coding"][0]["code"] = json!("764841000000100");
        f["status"] = json!("inactive");
        f["period"] = json!({ "start": "2025-01-01", "end": "2025-12-31" });
    })
    .await;
    let c = app.clinician();
    let total = |extra: &'static str| {
        let app = &app;
        let c = c.clone();
        async move { app.lookup(&c, NHS_1, extra, &[]).await.json()["total"].clone() }
    };
    assert_eq!(total("&status=active").await, 1);
    assert_eq!(total("&status=active,inactive").await, 2);
    assert_eq!(
        total("&code=http://snomed.info/sct%7C764841000000100").await,
        1
    );
    assert_eq!(total("&date=ge2026-01-01").await, 1);
    assert_eq!(total("&date=2025-06").await, 1);
    assert_eq!(total("&date=le2026-02-01").await, 2);
    assert_eq!(total("&_lastUpdated=ge2020-01-01").await, 2);
    let r = app.lookup(&c, NHS_1, "&date=yesterday", &[]).await;
    r.assert_outcome(400, "invalid");
}

#[actix_rt::test]
async fn clinicians_find_people_only_by_nhs_number() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let c = app.clinician();
    for q in [
        "/Patient?family=Carter",
        "/Patient?birthdate=2016-03-14",
        "/Patient?name=Ellis",
    ] {
        app.get(q, &c).await.assert_outcome(403, "forbidden");
    }
    let r = app
        .get(
            &format!("/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}"),
            &c,
        )
        .await
        .json();
    assert_eq!(r["total"], 1);
    // A council may search its own people by name.
    let r = app
        .get(
            "/Patient?family=cart&birthdate=2016-03-14",
            &app.council(LA_A),
        )
        .await
        .json();
    assert_eq!(r["total"], 1);
    assert_eq!(
        app.get("/Patient?family=cart", &app.council(LA_B))
            .await
            .json()["total"],
        0
    );
}

#[actix_rt::test]
async fn organizations_are_found_by_ods_code() {
    let app = TestApp::spawn().await;
    let r = app
        .get(
            "/Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code%7CLA902",
            &app.clinician(),
        )
        .await;
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(b["total"], 1);
    assert_eq!(entries(&b, "match")[0]["name"], "Eastvale County Council");
    assert_eq!(
        app.get("/Organization", &app.clinician()).await.json()["total"],
        2
    );
}

#[actix_rt::test]
async fn the_look_up_answers_in_xml_too() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let r = app
        .lookup(
            &app.clinician(),
            NHS_1,
            "&_include=Flag:author",
            &[("Accept", "application/fhir+xml")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        text.contains("<Bundle") && text.contains("<Flag>") && text.contains("<Organization>"),
        "{text}"
    );
}

#[actix_rt::test]
async fn a_failing_request_does_not_undo_its_neighbours_in_a_batch() {
    let app = TestApp::spawn().await;
    app.given_patient(LA_A, NHS_1).await;
    let t = app.council(LA_A);
    // Forty concurrent creates, half of them duplicates of each other's plan reference.
    let mut pending = Vec::new();
    for i in 0..40 {
        let reference = format!("P{}", i / 2);
        let body = flag_json(NHS_1, LA_A, &reference);
        let app = &app;
        let t = t.clone();
        pending.push(async move { app.post_json("/Flag", &t, &body).await.status });
    }
    let statuses = futures_join(pending).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        20,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        20,
        "{statuses:?}"
    );
    let b = app
        .lookup(&app.council(LA_A), NHS_1, "&_count=100", &[])
        .await
        .json();
    assert_eq!(b["total"], 20);
}

async fn futures_join<F: std::future::Future<Output = u16>>(fs: Vec<F>) -> Vec<u16> {
    futures_util::future::join_all(fs).await
}
