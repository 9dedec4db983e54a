//! Searches that run their conditions and keyset paging in the database: a council's Flags,
//! its people by name, subscriptions (FHIR R4 §3.1.1.2 paging, §3.1.1.4 parameter types).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::notify::subscription_json;

/// The ids of the match entries of every page, following `next` links from `first`, and the
/// `total` each page gave.
async fn every_page(app: &TestApp, first: &str, token: &str) -> (Vec<String>, Vec<Value>) {
    let mut ids = Vec::new();
    let mut totals = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next {
        let r = app.get(&path, token).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let b = r.json();
        totals.push(b["total"].clone());
        ids.extend(
            entries(&b, "match")
                .iter()
                .map(|e| e["id"].as_str().unwrap_or_default().to_owned()),
        );
        next = app.next_page(&b);
        assert!(ids.len() <= 1000, "paging does not end");
    }
    (ids, totals)
}

/// `n` people and one plan each for `council`, in one batch; plan `i` started on day `i` of
/// 2026 and every third has ended. Returns the Flags' ids in creation order.
async fn register(app: &TestApp, council: &str, n: u32) -> Vec<(String, Value)> {
    let mut entries = Vec::new();
    let skip = if council == LA_A { 0 } else { 500 };
    let people = cpis_fhir::nhs_number::NhsNumber::test_numbers().skip(skip);
    for (i, nhs) in (0..n).zip(people) {
        let mut flag = put_flag_entry(nhs.as_str(), council, &format!("PLAN-{i}"));
        let start = chrono::NaiveDate::from_yo_opt(2026, i + 1).unwrap();
        flag["resource"]["period"] = json!({ "start": start.to_string() });
        if i % 3 == 0 {
            flag["resource"]["status"] = json!("inactive");
            flag["resource"]["period"]["end"] =
                json!((start + chrono::Duration::days(10)).to_string());
        }
        entries.push(put_patient_entry(nhs.as_str()));
        entries.push(flag);
    }
    let r = app.bundle(council, "batch", entries).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answered = statuses(&r.json());
    assert!(
        answered.iter().all(|s| s.starts_with("201")),
        "{answered:?}: {}",
        r.text()
    );
    let mine = app
        .get("/Flag?_count=100", &app.council(council))
        .await
        .json();
    entries_of(&mine)
}

fn entries_of(bundle: &Value) -> Vec<(String, Value)> {
    entries(bundle, "match")
        .into_iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e))
        .collect()
}

#[actix_rt::test]
async fn a_council_pages_through_its_filtered_flags_once_each_with_the_same_total_on_every_page() {
    let app = TestApp::spawn_with(|s| s.allow_test_nhs_numbers = true).await;
    let flags = register(&app, LA_A, 40).await;
    register(&app, LA_B, 5).await;
    assert_eq!(flags.len(), 40, "a council sees only its own");
    let council = app.council(LA_A);
    type Keep = fn(&Value) -> bool;
    let cases: [(&str, Keep); 5] = [
        ("status=active", |f| f["status"] == "active"),
        ("date=ge2026-01-20", |f| {
            f["period"]["end"]
                .as_str()
                .is_none_or(|e| e >= "2026-01-20")
        }),
        ("date=lt2026-01-15&status=inactive", |f| {
            f["period"]["start"].as_str() < Some("2026-01-15") && f["status"] == "inactive"
        }),
        ("date=2026-02", |f| {
            f["period"]["start"].as_str() <= Some("2026-02-28")
                && f["period"]["end"]
                    .as_str()
                    .is_none_or(|e| e >= "2026-02-01")
        }),
        ("_lastUpdated=ge2020-01-01&code=342191000000101", |_| true),
    ];
    for (query, keep) in cases {
        let expected: Vec<String> = flags
            .iter()
            .filter(|(_, f)| keep(f))
            .map(|(id, _)| id.clone())
            .collect();
        assert!(!expected.is_empty() && expected.len() < 41, "{query}");
        let (ids, totals) = every_page(&app, &format!("/Flag?{query}&_count=7"), &council).await;
        assert_eq!(
            ids, expected,
            "{query}: every match once, in creation order"
        );
        assert!(
            totals.iter().all(|t| *t == expected.len()),
            "{query}: {totals:?}"
        );
        assert_eq!(totals.len(), expected.len().div_ceil(7).max(1), "{query}");
    }
    // A cursor stays correct while new plans arrive: nothing repeats, nothing before it is
    // skipped, the new plan (created after the cursor) appears.
    let first = app.get("/Flag?_count=10", &council).await.json();
    let mut seen: Vec<String> = entries_of(&first).into_iter().map(|(id, _)| id).collect();
    let newer = app.given_flag(LA_A, NHS_1, "PLAN-NEW").await;
    let (rest, _) = every_page(&app, &app.next_page(&first).unwrap(), &council).await;
    seen.extend(rest);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len());
    assert_eq!(seen.len(), 41);
    assert_eq!(
        seen.last(),
        newer["id"].as_str().map(str::to_owned).as_ref()
    );
    // The identifier and _id narrow it in the database too.
    let one = &flags[5].0;
    let r = app.get(&format!("/Flag?_id={one}"), &council).await.json();
    assert_eq!(r["total"], 1);
    let r = app
        .get("/Flag?identifier=PLAN-5&status=inactive", &council)
        .await
        .json();
    assert_eq!(r["total"], 0, "PLAN-5 is active");
    let r = app.get("/Flag?identifier=PLAN-6", &council).await.json();
    assert_eq!(r["total"], 1);
    let after_all = app.get("/Flag?_cursor=zzz&_count=5", &council).await.json();
    assert!(after_all.get("entry").is_none(), "nothing sorts after zzz");
    assert_eq!(after_all["total"], 41);
}

async fn given_person(app: &TestApp, nhs: &str, family: &str, given: &[&str], born: &str) {
    let mut p = patient_json(nhs);
    p["name"] = json!([{ "family": family, "given": given }]);
    p["birthDate"] = json!(born);
    let r = app
        .put_json(&format!("/Patient/{nhs}"), &app.council(LA_A), &p)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

fn ids_of(bundle: &Value) -> Vec<String> {
    entries_of(bundle).into_iter().map(|(id, _)| id).collect()
}

#[actix_rt::test]
async fn a_council_finds_its_people_by_name_prefix_in_any_case_and_script_and_like_characters_are_literal(
) {
    let app = TestApp::spawn_with(|s| s.allow_test_nhs_numbers = true).await;
    let nhs = |i: usize| {
        cpis_fhir::nhs_number::NhsNumber::test_numbers()
            .nth(i)
            .unwrap()
            .as_str()
            .to_owned()
    };
    given_person(&app, &nhs(1), "Ångström", &["Élodie"], "2015-06-01").await;
    given_person(&app, &nhs(2), "Carter", &["Ellis", "James"], "2016-03-14").await;
    given_person(&app, &nhs(3), "C%rter", &["Jo"], "2016-03-15").await;
    given_person(&app, &nhs(4), "Car_ter", &["Ann-Marie"], "2019-12-31").await;
    given_person(&app, &nhs(5), "O'Neill", &["Siân"], "2020-01-01").await;
    let council = app.council(LA_A);
    let find = |query: &'static str| {
        let app = &app;
        let council = council.clone();
        async move { ids_of(&app.get(&format!("/Patient?{query}"), &council).await.json()) }
    };
    assert_eq!(find("family=%C3%85NG").await, vec![nhs(1)], "Å folds to å");
    assert_eq!(find("given=%C3%89LO").await, vec![nhs(1)]);
    assert_eq!(
        find("name=%C3%A9lodie").await,
        vec![nhs(1)],
        "name takes a given name"
    );
    assert_eq!(
        find("name=%C3%A5ngstr%C3%B6m").await,
        vec![nhs(1)],
        "and a family name"
    );
    assert_eq!(find("family=c%25").await, vec![nhs(3)], "% is a character");
    assert_eq!(find("family=car_").await, vec![nhs(4)], "_ is a character");
    assert_eq!(find("family=car").await, vec![nhs(2), nhs(4)]);
    assert_eq!(find("given=james").await, vec![nhs(2)], "any given name");
    assert_eq!(
        find("given=ames").await,
        Vec::<String>::new(),
        "a prefix, not a substring"
    );
    assert_eq!(find("given=ann-m").await, vec![nhs(4)]);
    assert_eq!(find("family=o'n&given=SI%C3%82").await, vec![nhs(5)]);
    assert_eq!(
        find("family=c&birthdate=ge2016-03-15").await,
        vec![nhs(3), nhs(4)]
    );
    assert_eq!(
        find("family=c&birthdate=2016-03").await,
        vec![nhs(2), nhs(3)]
    );
    assert_eq!(find("family=c&birthdate=lt2016-03-15").await, vec![nhs(2)]);
    assert_eq!(
        find("name=a&birthdate=le2019").await,
        vec![nhs(4)],
        "å is not a"
    );
    // Paging in the database: one at a time, each once, the total on every page.
    let (ids, totals) = every_page(&app, "/Patient?family=c&_count=1", &council).await;
    assert_eq!(ids, vec![nhs(2), nhs(3), nhs(4)]);
    assert!(totals.iter().all(|t| *t == 3), "{totals:?}");
    // Another council finds none of them.
    let other = app
        .get("/Patient?family=c", &app.council(LA_B))
        .await
        .json();
    assert_eq!(other["total"], 0);
}

#[actix_rt::test]
async fn people_stored_before_names_were_searchable_in_the_database_are_found_after_a_restart() {
    let app = TestApp::spawn().await;
    app.given_patient(LA_A, NHS_1).await;
    // As a row written by the previous version looks: no folded names.
    app.tamper(
        "UPDATE patients SET family_key = NULL, given_key = NULL",
        "UPDATE patients SET family_key = NULL, given_key = NULL",
    );
    let council = app.council(LA_A);
    assert_eq!(
        app.get("/Patient?family=cart", &council).await.json()["total"],
        0
    );
    let app = app.restart().await;
    let council = app.council(LA_A);
    let found = app
        .get("/Patient?family=CART&given=elli", &council)
        .await
        .json();
    assert_eq!(ids_of(&found), vec![NHS_1.to_owned()]);
}

#[actix_rt::test]
async fn subscriptions_are_filtered_by_status_and_id_and_paged_in_the_database() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = app
            .post_json(
                "/Subscription",
                &app.council(LA_A),
                &subscription_json(&format!("http://127.0.0.1:9/hook/{i}"), None),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    let council = app.council(LA_A);
    let (paged, totals) = every_page(&app, "/Subscription?_count=2", &council).await;
    assert_eq!(paged, ids);
    assert_eq!(totals, vec![json!(5), json!(5), json!(5)]);
    let r = app
        .get(
            &format!("/Subscription?_id={},{}", ids[1], ids[3]),
            &council,
        )
        .await
        .json();
    assert_eq!(ids_of(&r), vec![ids[1].clone(), ids[3].clone()]);
    let requested = app
        .get("/Subscription?status=requested", &council)
        .await
        .json();
    assert_eq!(requested["total"], 5);
    let off = app.get("/Subscription?status=off", &council).await.json();
    assert_eq!(off["total"], 0);
    app.get("/Subscription?status=sleeping", &council)
        .await
        .assert_outcome(400, "invalid");
    assert_eq!(
        app.get("/Subscription", &app.council(LA_B)).await.json()["total"],
        0
    );
}
