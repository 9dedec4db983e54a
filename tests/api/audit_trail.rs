//! The audit team's search of the whole trail: by date, user, role, organisation, outcome,
//! purpose and council, combinable with the person, newest first with keyset paging; a council
//! over its own records only; every search itself audited.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::*;
use cpis_fhir::domain::Role;

fn user(app: &TestApp, user: &str, role: Role, org: &str) -> String {
    app.named_user(user, role, org)
}

/// The AuditEvents of every page of `query` (as the auditor), following `next` links.
async fn trail(app: &TestApp, query: &str, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next = Some(format!("/AuditEvent?{query}"));
    while let Some(path) = next {
        let r = app.get(&path, token).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let b = r.json();
        out.extend(entries(&b, "match"));
        next = app.next_page(&b);
        assert!(out.len() < 500);
    }
    out
}

fn users(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .flat_map(|e| e["agent"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["requestor"] == true)
        .filter_map(|a| a["who"]["identifier"]["value"].as_str().map(str::to_owned))
        .collect()
}

#[actix_rt::test]
async fn the_audit_team_finds_accesses_by_user_organisation_role_purpose_council_and_date() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    app.given_flag(LA_B, NHS_2, "PLAN-B").await;
    let ann = user(&app, "ann", Role::Clinician, "RDE01");
    let bob = user(&app, "bob", Role::ClinicianScheduled, "RBB02");
    for (token, nhs) in [(&ann, NHS_1), (&ann, NHS_2), (&bob, NHS_2), (&ann, NHS_3)] {
        assert_eq!(app.lookup(token, nhs, "", &[]).await.status, 200);
    }
    let auditor = app.token(Role::Auditor, "X26");
    let of = |q: &'static str| {
        let (app, auditor) = (&app, auditor.clone());
        async move { trail(app, q, &auditor).await }
    };
    let ann_rows = of("agent=ann").await;
    assert_eq!(ann_rows.len(), 3);
    assert_eq!(users(&ann_rows), BTreeSet::from(["ann".to_owned()]));
    assert_eq!(
        users(&of("agent-org=RBB02").await),
        BTreeSet::from(["bob".to_owned()])
    );
    assert_eq!(of("agent-role=clinician-scheduled").await.len(), 1);
    assert_eq!(of("purpose=scheduled&agent=bob,ann").await.len(), 1);
    assert_eq!(of("purpose=unscheduled&agent=ann").await.len(), 3);
    // By the responsible council: LA902's record was looked at twice (ann, bob).
    assert_eq!(users(&of("council=LA902").await).len(), 2);
    assert_eq!(of("council=LA902&agent=bob").await.len(), 1);
    // With the person: ann's look-up of NHS_2 only.
    let one = trail(
        &app,
        &format!("patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_2}&agent=ann"),
        &auditor,
    )
    .await;
    assert_eq!(one.len(), 1);
    // By date: everything today (the test server's clock), nothing before 2000, nothing after
    // tomorrow.
    let today = chrono::NaiveDate::parse_from_str(&TODAY[..10], "%Y-%m-%d").unwrap();
    let all_today = trail(&app, &format!("date={today}&agent=ann,bob"), &auditor).await;
    assert_eq!(all_today.len(), 4);
    assert!(of("date=lt2000-01-01").await.is_empty());
    let tomorrow = today + chrono::Duration::days(1);
    assert!(trail(&app, &format!("date=ge{tomorrow}"), &auditor)
        .await
        .is_empty());
    assert_eq!(of("outcome=0&agent=ann").await.len(), 3);
    // Newest first.
    let recorded: Vec<&str> = ann_rows
        .iter()
        .map(|e| e["recorded"].as_str().unwrap())
        .collect();
    let mut sorted = recorded.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(recorded, sorted);
    // Bad values are refused, naming the parameter.
    for q in [
        "outcome=3",
        "purpose=sometimes",
        "agent-org=not%20an%20ods",
        "council=A,B",
    ] {
        let r = app.get(&format!("/AuditEvent?{q}"), &auditor).await;
        r.assert_outcome(400, "invalid");
    }
}

#[actix_rt::test]
async fn paging_the_trail_stays_correct_while_accesses_arrive_and_each_search_is_audited() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    let c = app.clinician();
    for _ in 0..5 {
        assert_eq!(app.lookup(&c, NHS_1, "", &[]).await.status, 200);
    }
    let auditor = app.token(Role::Auditor, "X26");
    let first = app
        .get("/AuditEvent?agent-role=clinician&_count=2", &auditor)
        .await
        .json();
    let mut seen: Vec<String> = entries(&first, "match")
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    // Two more accesses arrive while the auditor pages: they are newer than the cursor, so
    // the pages that follow neither repeat nor skip anything.
    for _ in 0..2 {
        assert_eq!(app.lookup(&c, NHS_1, "", &[]).await.status, 200);
    }
    assert!(
        first.get("total").is_none(),
        "one page of several does not count the rest"
    );
    let before = app.audit_count();
    let rest = trail(
        &app,
        &app.next_page(&first).unwrap()["/AuditEvent?".len()..],
        &auditor,
    )
    .await;
    let pages = app.audit_count() - before;
    seen.extend(rest.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
    assert_eq!(
        seen.len(),
        5,
        "the five accesses before the first page, once each"
    );
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 5);
    assert_eq!(pages, 2, "each page of the search is itself audited");
    let last = app
        .get(&app.next_page(&first).unwrap(), &auditor)
        .await
        .json();
    assert!(
        last.get("total").is_none(),
        "a later page gives no partial total"
    );
    let whole = app
        .get("/AuditEvent?agent-role=clinician", &auditor)
        .await
        .json();
    assert_eq!(
        whole["total"], 7,
        "a search answered in one page is counted"
    );
}

#[actix_rt::test]
async fn paging_a_date_range_one_row_at_a_time_in_either_order_returns_exactly_the_rows_inside_it()
{
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    let c = app.clinician();
    // Three days of look-ups: 2 on the first, 3 on the second, 2 on the third.
    let mut days = Vec::new();
    for (day, n) in [2, 3, 2].into_iter().enumerate() {
        if day > 0 {
            app.advance(86_400);
        }
        for _ in 0..n {
            assert_eq!(app.lookup(&c, NHS_1, "", &[]).await.status, 200);
        }
        let newest = app.audit_search("agent-role=clinician&_count=1").await;
        days.push(newest[0]["recorded"].as_str().unwrap()[..10].to_owned());
    }
    let auditor = app.token(Role::Auditor, "X26");
    let middle = &days[1];
    // `date=` a day: on or after its start (a lower bound) and before the next day's.
    let range = format!("agent-role=clinician&date={middle}");
    let expected = trail(&app, &format!("{range}&_count=100"), &auditor).await;
    assert_eq!(expected.len(), 3, "the middle day's three look-ups");
    // One row per page, so every page after the first starts at its cursor, not at the date:
    // the same three rows either way, none repeated, none from the other days.
    let newest_first = trail(&app, &format!("{range}&_count=1"), &auditor).await;
    let oldest_first = trail(&app, &format!("{range}&_sort=date&_count=1"), &auditor).await;
    assert_eq!(ids(&newest_first), ids(&expected));
    let mut reversed = ids(&oldest_first);
    reversed.reverse();
    assert_eq!(reversed, ids(&expected));
    for e in newest_first.iter().chain(&oldest_first) {
        assert!(e["recorded"].as_str().unwrap().starts_with(middle.as_str()));
    }
    // A forged cursor outside the range widens nothing: the date still bounds the rows.
    for (order, cursor) in [
        ("_sort=date", "00000000-0000-7000-8000-000000000000"),
        ("_sort=-date", "ffffffff-ffff-7fff-bfff-ffffffffffff"),
    ] {
        let forged = trail(
            &app,
            &format!("{range}&{order}&_count=1&_cursor={cursor}"),
            &auditor,
        )
        .await;
        assert_eq!(forged.len(), 3, "{order}");
        assert!(forged
            .iter()
            .all(|e| e["recorded"].as_str().unwrap().starts_with(middle.as_str())));
    }
    // And from the middle day on (a lower bound only), oldest first: the last five.
    let since = trail(
        &app,
        &format!("agent-role=clinician&date=ge{middle}&_sort=date&_count=2"),
        &auditor,
    )
    .await;
    assert_eq!(since.len(), 5);
}

#[actix_rt::test]
async fn a_council_searches_only_the_trail_of_its_own_records_and_clinicians_not_at_all() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    app.given_flag(LA_B, NHS_2, "PLAN-B").await;
    let c = app.clinician();
    assert_eq!(app.lookup(&c, NHS_1, "", &[]).await.status, 200);
    assert_eq!(app.lookup(&c, NHS_2, "", &[]).await.status, 200);
    let own = trail(&app, "agent-role=clinician", &app.council(LA_A)).await;
    assert_eq!(own.len(), 1);
    assert!(own[0].to_string().contains(NHS_1));
    assert!(!own[0].to_string().contains(NHS_2));
    app.get("/AuditEvent?council=LA902", &app.council(LA_A))
        .await
        .assert_outcome(403, "forbidden");
    app.get("/AuditEvent?agent=user-clinician", &c)
        .await
        .assert_outcome(403, "forbidden");
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_rt::test]
async fn the_audit_team_also_searches_by_name_entity_type_subtype_and_source_in_either_order_with_accurate_totals(
) {
    let app = TestApp::spawn().await;
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    let flag_id = flag["id"].as_str().unwrap().to_owned();
    app.given_flag(LA_B, NHS_2, "PLAN-B").await;
    let ann = user(&app, "ann", Role::Clinician, "RDE01");
    let bob = user(&app, "bob", Role::Clinician, "RBB02");
    for (token, nhs) in [(&ann, NHS_1), (&bob, NHS_2), (&ann, NHS_2)] {
        assert_eq!(app.lookup(token, nhs, "", &[]).await.status, 200);
        app.advance(1);
    }
    assert_eq!(app.get(&format!("/Flag/{flag_id}"), &bob).await.status, 200);
    // A refused token, for type and source.
    let refused = app
        .request(
            actix_web::http::Method::GET,
            "/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C9449306753",
            Some("not-a-jwt"),
            &[],
            None,
        )
        .await;
    assert_eq!(refused.status, 401);
    let auditor = app.token(Role::Auditor, "X26");
    let of = |q: String| {
        let (app, auditor) = (&app, auditor.clone());
        async move { trail(app, &q, &auditor).await }
    };
    // agent-name: the start of the name, any ASCII case.
    assert_eq!(
        users(&of("agent-name=name%20of%20A".into()).await),
        BTreeSet::from(["ann".to_owned()])
    );
    assert!(
        of("agent-name=of%20ann".into()).await.is_empty(),
        "a prefix, not a substring"
    );
    assert_eq!(of("agent-name=N%25".into()).await.len(), 0, "% is literal");
    // entity: every access that disclosed any version of the Flag (ann's look-up, bob's read).
    let by_flag = of(format!("entity=Flag/{flag_id}")).await;
    assert_eq!(
        users(&by_flag),
        BTreeSet::from(["ann".to_owned(), "bob".to_owned()])
    );
    assert_eq!(by_flag.len(), 2);
    assert_eq!(of(format!("entity={flag_id}&agent=bob")).await.len(), 1);
    // subtype: the interaction.
    let reads = of("subtype=read&agent=ann,bob".into()).await;
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0]["subtype"][0]["code"], "read");
    assert_eq!(
        of("subtype=search-type&agent=ann,bob".into()).await.len(),
        3
    );
    // type: accesses through the API, or refused authentications, combinable with the rest.
    let rest = of("type=rest&agent=ann,bob".into()).await;
    assert_eq!(rest.len(), 4);
    let refusals = of("type=http://dicom.nema.org/resources/ontology/DCM%7C110114".into()).await;
    assert!(!refusals.is_empty());
    assert!(refusals.iter().all(|e| e["type"]["code"] == "110114"));
    assert!(of("type=rest&agent-org=RDE01&outcome=4".into())
        .await
        .is_empty());
    // source: the calling system (the token's issuer).
    let issuer = app
        .get("/AuditEvent?agent=ann&_count=1", &auditor)
        .await
        .json();
    let who = entries(&issuer, "match")[0]["agent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"]["coding"][0]["code"] == "110150")
        .map(|a| a["who"]["display"].as_str().unwrap().to_owned())
        .unwrap();
    let from_issuer = of(format!(
        "source={}&agent=ann,bob",
        cpis_fhir::fhir::percent::encode_strict(&who)
    ))
    .await;
    assert_eq!(from_issuer.len(), 4);
    assert!(of("source=https://elsewhere.example&agent=ann".into())
        .await
        .is_empty());
    // _sort: oldest first is the newest-first order reversed, and pages by keyset the same way.
    let newest = ids(&of("agent=ann,bob&_count=2".into()).await);
    let mut oldest = ids(&of("agent=ann,bob&_sort=date&_count=2".into()).await);
    oldest.reverse();
    assert_eq!(newest.len(), 4);
    assert_eq!(newest, oldest);
    // _total=accurate counts every match on every page; none never counts.
    let page = app
        .get(
            "/AuditEvent?agent=ann,bob&_count=1&_total=accurate",
            &auditor,
        )
        .await
        .json();
    assert_eq!(page["total"], 4);
    let second = app
        .get(&app.next_page(&page).unwrap(), &auditor)
        .await
        .json();
    assert_eq!(second["total"], 4, "the total is the same on a later page");
    let none = app
        .get("/AuditEvent?agent=ann,bob&_total=none", &auditor)
        .await
        .json();
    assert!(none.get("total").is_none());
    // Dates by instant pick rows out of the one second they share.
    let first_second = of(format!("date=eq{TODAY}&agent=ann,bob")).await;
    assert_eq!(users(&first_second), BTreeSet::from(["ann".to_owned()]));
    assert_eq!(first_second.len(), 1);
    assert_eq!(of(format!("date=gt{TODAY}&agent=ann,bob")).await.len(), 3);
    for q in [
        "_sort=outcome",
        "_total=maybe",
        "type=99999",
        "entity=Patient/x%25",
        "_sort=date&_sort=-date",
    ] {
        app.get(&format!("/AuditEvent?{q}"), &auditor)
            .await
            .assert_outcome(400, "invalid");
    }
    // Thousands of Flags, users or organisations in one short query string: refused, not a
    // database error; a hundred of each at once are answered.
    let many: Vec<String> = (0..1_500).map(|i| i.to_string()).collect();
    let orgs: Vec<String> = (0..1_200).map(|i| format!("R{i:04}")).collect();
    for q in [
        format!("entity={}", many.join(",")),
        format!("agent={}", many.join(",")),
        format!("agent-org={}", orgs.join(",")),
    ] {
        let r = app.get(&format!("/AuditEvent?{q}"), &auditor).await;
        r.assert_outcome(400, "invalid");
        assert!(r.text().contains("at most 100"), "{}", r.text());
    }
    let most = format!(
        "/AuditEvent?entity={}&agent={}&agent-org={}",
        many[..100].join(","),
        many[..100].join(","),
        orgs[..100].join(",")
    );
    let r = app.get(&most, &auditor).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[actix_rt::test]
async fn accesses_recorded_before_the_entity_index_existed_are_found_by_entity_before_and_after_it_is_built(
) {
    let app = TestApp::spawn().await;
    let flag = app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    let flag_id = flag["id"].as_str().unwrap().to_owned();
    let c = app.clinician();
    for _ in 0..2 {
        assert_eq!(app.lookup(&c, NHS_1, "", &[]).await.status, 200);
    }
    assert_eq!(app.lookup(&c, NHS_2, "", &[]).await.status, 200);
    // The database as the version before the index left it: no index, its migration (and the
    // one after it, which needs it) not yet run.
    let undo = format!(
        "{UNDO_AGENT_INDEX} {UNDO_PERSON_INDEX} DROP TABLE audit_flags; DROP TABLE audit_index; \
                DELETE FROM __diesel_schema_migrations WHERE version = '20261207000008';"
    );
    app.tamper(&undo, &undo);
    let app = app.restart().await;
    let by_flag = format!("entity=Flag/{flag_id}&agent-role=clinician");
    let about_nhs_1 = |found: &[Value]| found.iter().all(|e| e.to_string().contains(NHS_1));
    let found = app.audit_search(&by_flag).await;
    assert_eq!(found.len(), 2, "found before the index is built");
    assert!(about_nhs_1(&found));
    // The next lifecycle run indexes the rows more than ten minutes old.
    app.advance(11 * 60);
    app.purge().await;
    assert_eq!(app.rows_in("audit_flags"), 2);
    // A newer access, not yet indexed, is found beside the indexed ones.
    assert_eq!(app.lookup(&c, NHS_1, "", &[]).await.status, 200);
    let found = app.audit_search(&by_flag).await;
    assert_eq!(found.len(), 3);
    assert!(about_nhs_1(&found));
    assert_eq!(
        app.audit_search(&format!(
            "entity=Flag/{flag_id}&agent-role=clinician&_count=1"
        ))
        .await
        .len(),
        1
    );
}

/// Takes the database back to before the person index (migration `audit_by_patient`): every
/// row's person indexed by the look-up itself.
const UNDO_PERSON_INDEX: &str = "DROP TABLE audit_patients; \
    DELETE FROM audit_index WHERE name = 'patients'; DROP INDEX audit_events_history; \
    CREATE INDEX audit_events_by_patient ON audit_events (patient, listed, recorded); \
    DELETE FROM __diesel_schema_migrations WHERE version = '20261207000009';";

#[actix_rt::test]
async fn accesses_are_found_by_person_on_either_side_of_the_person_index_s_reach_and_the_access_history_shows_each_at_once(
) {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    let c = app.clinician();
    for nhs in [NHS_1, NHS_1, NHS_2] {
        assert_eq!(app.lookup(&c, nhs, "", &[]).await.status, 200);
    }
    let undo = format!("{UNDO_AGENT_INDEX} {UNDO_PERSON_INDEX}");
    app.tamper(&undo, &undo);
    let app = app.restart().await;
    // The restarted server's ids are made afresh: a second on, each search's own audit row is
    // newer than the accesses it pages through (within one frozen millisecond it might not be).
    app.advance(1);
    // Before the first run indexes the trail: every row is matched by its person.
    let about = app.audit_ids_about(NHS_1);
    assert!(about.len() >= 2);
    assert_eq!(app.audit_ids_paged(NHS_1, 1).await, about);
    assert_eq!(app.rows_in("audit_patients"), 0);
    // The next lifecycle run indexes every row more than ten minutes old.
    app.advance(11 * 60);
    app.purge().await;
    assert_eq!(
        app.rows_in("audit_patients"),
        app.rows_in(
            "audit_events WHERE patient IS NOT NULL AND id <= \
                     (SELECT through FROM audit_index WHERE name = 'patients')"
        ),
    );
    assert!(app.rows_in(&format!("audit_patients WHERE patient = '{NHS_1}'")) >= 2);
    // A newer access, not yet indexed, is found beside the indexed ones, one page at a time
    // across the reach and all at once, and nothing about anyone else.
    assert_eq!(app.lookup(&c, NHS_1, "", &[]).await.status, 200);
    let latest = app.audit_ids_about(NHS_1)[0].clone();
    for count in [1, 100] {
        let about = app.audit_ids_about(NHS_1);
        assert_eq!(app.audit_ids_paged(NHS_1, count).await, about);
    }
    let others = app.audit_ids_about(NHS_2);
    assert_eq!(app.audit_ids_paged(NHS_2, 2).await, others);
    // The person's access history (the latest unscheduled accesses that found the record) is
    // kept by the look-up itself: the newest is there at once, first.
    let history = app
        .get(
            &format!("/AuditEvent?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}"),
            &c,
        )
        .await;
    assert_eq!(history.status, 200, "{}", history.text());
    let shown = ids(&entries(&history.json(), "match"));
    assert_eq!(
        shown.len(),
        3,
        "the clinician's three look-ups that found the plan"
    );
    assert_eq!(shown[0], latest);
    let all = app.audit_ids_about(NHS_1);
    assert!(shown.iter().all(|id| all.contains(id)));
    assert!(shown.windows(2).all(|w| w[0] > w[1]), "newest first");
}

/// Takes the database back to before the user and organisation indexes (migration
/// `audit_by_agent`): every row's user and organisation indexed by the look-up itself.
const UNDO_AGENT_INDEX: &str = "DROP TABLE audit_users; DROP TABLE audit_orgs; \
    DELETE FROM audit_index WHERE name IN ('users', 'orgs'); \
    CREATE INDEX audit_events_by_user ON audit_events (user_id, id); \
    CREATE INDEX audit_events_by_org ON audit_events (user_org, id); \
    DELETE FROM __diesel_schema_migrations WHERE version = '20261207000010';";

#[actix_rt::test]
async fn accesses_are_found_by_user_and_by_organisation_on_either_side_of_their_indexes_reach() {
    let app = TestApp::spawn().await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    let ann = user(&app, "ann", Role::Clinician, "RDE01");
    let bob = user(&app, "bob", Role::ClinicianScheduled, "RDE01");
    let cat = user(&app, "cat", Role::Clinician, "RBB02");
    for (token, nhs) in [(&ann, NHS_1), (&ann, NHS_2), (&bob, NHS_1), (&cat, NHS_1)] {
        assert_eq!(app.lookup(token, nhs, "", &[]).await.status, 200);
    }
    app.tamper(UNDO_AGENT_INDEX, UNDO_AGENT_INDEX);
    let app = app.restart().await;
    // A second on, each search's own audit row is newer than the accesses it pages through.
    app.advance(1);
    // Every search as the audit team makes it, against the rows read straight from the
    // database: one at a time and all at once, one value and two.
    let check = |stage: &'static str| {
        let app = &app;
        async move {
            for (query, agents, orgs) in [
                ("agent=ann", vec!["ann"], vec![]),
                ("agent=ann,cat&_sort=date", vec!["ann", "cat"], vec![]),
                (
                    "agent=ann&date=ge2026-01-01&date=lt2099-01-01",
                    vec!["ann"],
                    vec![],
                ),
                ("agent-org=RDE01&_sort=date", vec![], vec!["RDE01"]),
                ("agent=cat", vec!["cat"], vec![]),
                ("agent=ann,cat", vec!["ann", "cat"], vec![]),
                ("agent-org=RDE01", vec![], vec!["RDE01"]),
                ("agent-org=RBB02,RDE01", vec![], vec!["RBB02", "RDE01"]),
                ("agent=bob&agent-org=RDE01", vec!["bob"], vec!["RDE01"]),
            ] {
                let mut expected: Vec<String> = Vec::new();
                match (agents.as_slice(), orgs.as_slice()) {
                    ([a], [o]) => expected = app.audit_ids_of(Some(a), Some(o)),
                    (_, []) => agents
                        .iter()
                        .for_each(|a| expected.extend(app.audit_ids_of(Some(a), None))),
                    _ => orgs
                        .iter()
                        .for_each(|o| expected.extend(app.audit_ids_of(None, Some(o)))),
                }
                expected.sort_unstable_by(|a, b| b.cmp(a));
                if query.contains("_sort=date") {
                    expected.reverse();
                }
                assert!(!expected.is_empty(), "{stage}: {query}");
                for count in [1, 100] {
                    assert_eq!(
                        app.audit_ids_searched(query, count).await,
                        expected,
                        "{stage}: {query}, {count} a page"
                    );
                }
            }
        }
    };
    check("before any indexing").await;
    assert_eq!(app.rows_in("audit_users") + app.rows_in("audit_orgs"), 0);
    // The next lifecycle run indexes every row more than ten minutes old: each row's user and
    // organisation, once.
    app.advance(11 * 60);
    app.purge().await;
    for (table, name) in [("audit_users", "users"), ("audit_orgs", "orgs")] {
        assert_eq!(
            app.rows_in(table),
            app.rows_in(&format!(
                "audit_events WHERE id <= (SELECT through FROM audit_index WHERE name = '{name}')"
            )),
            "{table}"
        );
    }
    assert_eq!(
        app.rows_in("audit_users WHERE user_id = 'ann'"),
        2,
        "ann's two look-ups"
    );
    check("all indexed").await;
    // Newer accesses, not yet indexed, are found beside the indexed ones.
    for token in [&ann, &cat, &bob] {
        assert_eq!(app.lookup(token, NHS_1, "", &[]).await.status, 200);
    }
    check("either side of the reach").await;
}
