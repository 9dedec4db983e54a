//! A council's bulk submission: transaction and batch Bundles at `POST /`, conditional update
//! and delete by plan reference, per-entry results with CP-IS result codes.

use actix_web::http::Method;
use serde_json::{json, Value};

use crate::helpers::*;

async fn flag_search(app: &TestApp, council: &str) -> Resp {
    app.get(
        &format!("/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}"),
        &app.council(council),
    )
    .await
}

#[actix_rt::test]
async fn a_transaction_with_one_bad_entry_stores_nothing_and_names_the_entry_and_element() {
    let app = TestApp::spawn().await;
    let mut bad = put_flag_entry(NHS_1, LA_A, "P-2");
    bad["resource"]["period"]["end"] = json!("2025-01-01");
    let r = app
        .bundle(
            LA_A,
            "transaction",
            vec![
                put_patient_entry(NHS_1),
                put_flag_entry(NHS_1, LA_A, "P-1"),
                bad,
            ],
        )
        .await;
    r.assert_outcome(422, "invariant");
    assert_eq!(
        r.expressions(),
        vec!["Bundle.entry[2].resource.period.end".to_owned()]
    );
    let v = r.json();
    let codes: Vec<&str> = v["issue"][0]["details"]["coding"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["code"].as_str())
        .collect();
    assert!(codes.contains(&"CPR07"), "{v}");
    let p = app
        .get(&format!("/Patient/{NHS_1}"), &app.council(LA_A))
        .await;
    assert_eq!(p.status, 404, "nothing of the transaction is stored");
}

#[actix_rt::test]
async fn a_transaction_refused_by_the_database_rolls_back_the_entries_before_it() {
    let app = TestApp::spawn().await;
    // The Flag names a person who is neither in the Bundle nor on CP-IS: only the database
    // can tell, after the Patient entry has been written.
    let r = app
        .bundle(
            LA_A,
            "transaction",
            vec![put_patient_entry(NHS_1), put_flag_entry(NHS_2, LA_A, "P-1")],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        r.expressions(),
        vec!["Bundle.entry[1].resource.subject".to_owned()]
    );
    let p = app
        .get(&format!("/Patient/{NHS_1}"), &app.council(LA_A))
        .await;
    assert_eq!(p.status, 404);
}

#[actix_rt::test]
async fn the_same_bundle_twice_makes_no_new_versions_and_a_changed_end_date_makes_exactly_one() {
    let app = TestApp::spawn().await;
    let entries = || vec![put_patient_entry(NHS_1), put_flag_entry(NHS_1, LA_A, "P-1")];
    let first = app.bundle(LA_A, "transaction", entries()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    assert_eq!(first["type"], "transaction-response");
    assert_eq!(statuses(&first), ["201 Created", "201 Created"]);
    assert_eq!(result_codes(&first), ["CPR06", "CPR06"]);
    let location = first["entry"][1]["response"]["location"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(location.ends_with("/_history/1"), "{location}");
    assert_eq!(first["entry"][1]["response"]["etag"], "W/\"1\"");

    let again = app.bundle(LA_A, "transaction", entries()).await.json();
    assert_eq!(statuses(&again), ["200 OK", "200 OK"]);
    assert_eq!(again["entry"][0]["response"]["etag"], "W/\"1\"");
    assert_eq!(again["entry"][1]["response"]["etag"], "W/\"1\"");
    assert_eq!(
        again["entry"][1]["response"]["location"], location,
        "the same Flag, not a duplicate"
    );

    let mut changed = entries();
    changed[1]["resource"]["period"]["end"] = json!("2026-12-31");
    let third = app.bundle(LA_A, "transaction", changed).await.json();
    assert_eq!(third["entry"][0]["response"]["etag"], "W/\"1\"");
    assert_eq!(third["entry"][1]["response"]["etag"], "W/\"2\"");
    let flags = flag_search(&app, LA_A).await.json();
    let found = entries_of(&flags);
    assert_eq!(found.len(), 1, "one Flag: {flags}");
    assert_eq!(found[0]["period"]["end"], "2026-12-31");
    let id = found[0]["id"].as_str().unwrap();
    let history = app
        .get(&format!("/Flag/{id}/_history"), &app.council(LA_A))
        .await
        .json();
    assert_eq!(history["total"], 2);
}

fn entries_of(bundle: &Value) -> Vec<Value> {
    entries(bundle, "match")
}

#[actix_rt::test]
async fn a_batch_stores_its_good_entries_and_reports_each_bad_one() {
    let app = TestApp::spawn().await;
    let mut unverified = put_patient_entry(NHS_2);
    unverified["resource"]["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]
        ["code"] = json!("02");
    let mut bad_flag = put_flag_entry(NHS_1, LA_A, "P-2");
    bad_flag["resource"]["code"]["coding"][0]["code"] = json!("12345");
    let r = app
        .bundle(
            LA_A,
            "batch",
            vec![
                put_patient_entry(NHS_1),
                put_flag_entry(NHS_1, LA_A, "P-1"),
                unverified,
                bad_flag,
                json!({ "request": { "method": "GET", "url": "Flag" } }),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "batch-response");
    let s = statuses(&v);
    assert_eq!(s[0], "201 Created");
    assert_eq!(s[1], "201 Created");
    assert!(s[2].starts_with("422"), "{s:?}");
    assert!(s[3].starts_with("422"), "{s:?}");
    assert!(s[4].starts_with("400"), "{s:?}");
    assert_eq!(
        result_codes(&v),
        ["CPR06", "CPR06", "CPR03", "CPR07", "CPR07"]
    );
    let expr = v["entry"][3]["response"]["outcome"]["issue"][0]["expression"][0]
        .as_str()
        .unwrap();
    assert!(expr.starts_with("Bundle.entry[3].resource.code"), "{expr}");
    assert_eq!(entries_of(&flag_search(&app, LA_A).await.json()).len(), 1);
    let p = app
        .get(&format!("/Patient/{NHS_2}"), &app.council(LA_A))
        .await;
    assert_eq!(p.status, 404, "the unverified person was not stored");
}

#[actix_rt::test]
async fn a_batch_answered_in_xml_carries_each_entry_s_status_location_and_result_code() {
    let app = TestApp::spawn().await;
    let mut bad_flag = put_flag_entry(NHS_1, LA_A, "P-2");
    bad_flag["resource"]["code"]["coding"][0]["code"] = json!("12345");
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [put_patient_entry(NHS_1), put_flag_entry(NHS_1, LA_A, "P-1"), bad_flag],
    });
    let r = app
        .request(
            Method::POST,
            "/",
            Some(&app.council(LA_A)),
            &[
                ("Content-Type", "application/fhir+json"),
                ("Accept", "application/fhir+xml"),
            ],
            Some(serde_json::to_vec(&bundle).unwrap()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let xml = r.text();
    assert!(
        xml.contains("<Bundle xmlns=\"http://hl7.org/fhir\">"),
        "{xml}"
    );
    assert!(xml.contains("<type value=\"batch-response\"/>"), "{xml}");
    assert_eq!(
        xml.matches("<status value=\"201 Created\"/>").count(),
        2,
        "{xml}"
    );
    assert_eq!(
        xml.matches("<status value=\"422 Unprocessable Entity\"/>")
            .count(),
        1,
        "{xml}"
    );
    assert_eq!(xml.matches("<code value=\"CPR06\"/>").count(), 2, "{xml}");
    assert_eq!(xml.matches("<code value=\"CPR07\"/>").count(), 1, "{xml}");
    assert!(
        xml.contains(&format!("/Patient/{NHS_1}/_history/1\"/>")),
        "{xml}"
    );
    assert!(xml.contains("<etag value=\"W/&#34;1&#34;\"/>"), "{xml}");
}

#[actix_rt::test]
async fn urn_uuid_references_resolve_to_the_entries_they_name() {
    let app = TestApp::spawn().await;
    let patient_url = "urn:uuid:0b6b2e2c-7f5e-4f43-9d37-5f4d2b0e0a11";
    let mut flag = flag_json(NHS_1, LA_A, "P-1");
    flag["subject"] = json!({ "reference": patient_url });
    let r = app
        .bundle(
            LA_A,
            "transaction",
            vec![
                json!({
                    "fullUrl": patient_url,
                    "resource": patient_json(NHS_1),
                    "request": { "method": "POST", "url": "Patient" },
                }),
                json!({
                    "fullUrl": "urn:uuid:5d0f3d1c-96a4-4d0e-a1b2-9b3f3b7a8c21",
                    "resource": flag,
                    "request": { "method": "POST", "url": "Flag" },
                }),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let found = entries_of(&flag_search(&app, LA_A).await.json());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["subject"]["reference"], format!("Patient/{NHS_1}"));

    let mut dangling = flag_json(NHS_1, LA_A, "P-2");
    dangling["subject"] = json!({ "reference": "urn:uuid:11111111-2222-4333-8444-555555555555" });
    let r = app
        .bundle(
            LA_A,
            "transaction",
            vec![json!({ "resource": dangling, "request": { "method": "POST", "url": "Flag" } })],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        r.expressions(),
        vec!["Bundle.entry[0].resource.subject.reference".to_owned()]
    );
}

#[actix_rt::test]
async fn a_transaction_may_not_change_the_same_record_twice() {
    let app = TestApp::spawn().await;
    let r = app
        .bundle(
            LA_A,
            "transaction",
            vec![put_patient_entry(NHS_1), put_patient_entry(NHS_1)],
        )
        .await;
    r.assert_outcome(400, "business-rule");
    assert_eq!(r.expressions(), vec!["Bundle.entry[1]".to_owned()]);
}

#[actix_rt::test]
async fn a_bundle_over_the_entry_limit_is_refused_with_413() {
    let app = TestApp::spawn_with(|s| s.max_bundle_entries = 2).await;
    let r = app
        .bundle(
            LA_A,
            "batch",
            vec![
                put_patient_entry(NHS_1),
                put_patient_entry(NHS_2),
                put_patient_entry(NHS_3),
            ],
        )
        .await;
    r.assert_outcome(413, "too-costly");
}

#[actix_rt::test]
async fn only_councils_submit_bundles_and_only_their_own_plans() {
    let app = TestApp::spawn().await;
    let b =
        json!({ "resourceType": "Bundle", "type": "batch", "entry": [put_patient_entry(NHS_1)] });
    let r = app.post_json("/", &app.clinician(), &b).await;
    r.assert_outcome(403, "forbidden");
    let r = app
        .bundle(
            LA_A,
            "batch",
            vec![put_patient_entry(NHS_1), put_flag_entry(NHS_1, LA_B, "P-1")],
        )
        .await;
    let v = r.json();
    assert_eq!(statuses(&v)[1], "403 Forbidden", "{v}");
}

#[actix_rt::test]
async fn bundles_that_are_not_transactions_or_batches_are_refused_clearly() {
    let app = TestApp::spawn().await;
    let token = app.council(LA_A);
    let r = app
        .post_json(
            "/",
            &token,
            &json!({ "resourceType": "Bundle", "type": "collection" }),
        )
        .await;
    r.assert_outcome(400, "value");
    let r = app.post_json("/", &token, &patient_json(NHS_1)).await;
    r.assert_outcome(400, "invalid");
    let r = app
        .request(
            Method::POST,
            "/",
            Some(&token),
            &[("Content-Type", "application/fhir+json")],
            Some(b"{\"resourceType\": \"Bundle\", ".to_vec()),
        )
        .await;
    r.assert_outcome(400, "structure");
    let r = app
        .bundle(
            LA_A,
            "batch",
            vec![json!({ "resource": patient_json(NHS_1), "request": { "method": "PUT", "url": "Patient/9449306753" }, "search": {} })],
        )
        .await;
    let v = r.json();
    assert!(statuses(&v)[0].starts_with("400"), "{v}");
}

#[actix_rt::test]
async fn entries_can_withdraw_plans_by_plan_reference_and_people() {
    let app = TestApp::spawn().await;
    app.bundle(
        LA_A,
        "transaction",
        vec![
            put_patient_entry(NHS_1),
            put_flag_entry(NHS_1, LA_A, "P-1"),
            put_flag_entry(NHS_1, LA_A, "P-2"),
        ],
    )
    .await;
    let system = "https%3A%2F%2Fla901.example.org%2FId%2Fplan";
    let r = app
        .bundle(
            LA_A,
            "batch",
            vec![json!({ "request": { "method": "DELETE", "url": format!("Flag?identifier={system}%7CP-1") } })],
        )
        .await
        .json();
    assert_eq!(statuses(&r), ["204 No Content"]);
    assert_eq!(result_codes(&r), ["CPR06"]);
    let clinician = app.lookup(&app.clinician(), NHS_1, "", &[]).await.json();
    assert_eq!(
        entries_of(&clinician).len(),
        1,
        "P-1 is hidden: {clinician}"
    );

    let r = app
        .request(
            Method::DELETE,
            &format!("/Patient/{NHS_1}"),
            Some(&app.council(LA_A)),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    let clinician = app.lookup(&app.clinician(), NHS_1, "", &[]).await.json();
    assert_eq!(entries_of(&clinician).len(), 0, "{clinician}");
    let r = app
        .request(
            Method::DELETE,
            &format!("/Patient/{NHS_1}"),
            Some(&app.council(LA_B)),
            &[],
            None,
        )
        .await;
    // As for a person not on CP-IS: nothing told of the other council's records.
    r.assert_outcome(404, "not-found");
}

#[actix_rt::test]
async fn a_conditional_update_over_http_creates_then_updates_the_same_flag() {
    let app = TestApp::spawn().await;
    app.given_patient(LA_A, NHS_1).await;
    let token = app.council(LA_A);
    let url = "/Flag?identifier=https%3A%2F%2Fla901.example.org%2FId%2Fplan%7CP-9";
    let mut f = flag_json(NHS_1, LA_A, "P-9");
    let r = app.put_json(url, &token, &f).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    f["period"]["end"] = json!("2027-01-01");
    let r = app.put_json(url, &token, &f).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    assert_eq!(r.header("ETag").as_deref(), Some("W/\"2\""));
    let other = app
        .put_json(
            "/Flag?identifier=https%3A%2F%2Fla901.example.org%2FId%2Fplan%7CP-1",
            &token,
            &f,
        )
        .await;
    other.assert_outcome(400, "invalid");
}

#[actix_rt::test]
async fn the_response_carries_the_resources_when_asked_for_them() {
    let app = TestApp::spawn().await;
    let b = json!({ "resourceType": "Bundle", "type": "transaction",
        "entry": [put_patient_entry(NHS_1), put_flag_entry(NHS_1, LA_A, "P-1")] });
    let r = app
        .send_json(
            Method::POST,
            "/",
            &app.council(LA_A),
            &b,
            &[("Prefer", "return=representation")],
        )
        .await;
    let v = r.json();
    assert_eq!(v["entry"][0]["resource"]["resourceType"], "Patient");
    assert_eq!(v["entry"][1]["resource"]["resourceType"], "Flag");
    assert_eq!(
        v["entry"][1]["resource"]["author"]["display"],
        "Northmoor Borough Council"
    );
}

/// How many plans the council holds, by its own Flag search: an audited read, so a job on the
/// writer like a clinician's look-up, which sees what the writer has committed before it.
async fn plans_held(app: &TestApp, council: &str) -> u64 {
    let r = app.get("/Flag?_count=1", &app.council(council)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["total"].as_u64().expect("total")
}

/// A batch of `n` new people for `council`: `PUT Patient` and a conditional `PUT Flag` (plan
/// `BULK-{i}`) each.
fn bulk_entries(council: &str, n: usize) -> Vec<Value> {
    cpis_fhir::nhs_number::NhsNumber::test_numbers()
        .skip(100)
        .take(n)
        .enumerate()
        .flat_map(|(i, nhs)| {
            [
                put_patient_entry(nhs.as_str()),
                put_flag_entry(nhs.as_str(), council, &format!("BULK-{i}")),
            ]
        })
        .collect()
}

/// Submits `entries` as a batch from `council` while five clients keep making the council's
/// audited Flag search (its audit row a job on the writer, like a clinician's look-up's), so
/// that one of them is nearly always waiting whatever the scheduler does — the read itself runs
/// beside the writer, so each client spends part of its turn away from the writer's queue, and
/// on a loaded machine three were too few. Returns the Bundle's answer and the plan counts the
/// readers saw.
async fn batch_under_reads(app: &TestApp, council: &str, entries: Vec<Value>) -> (Resp, Vec<u64>) {
    let done = std::cell::Cell::new(false);
    let bundle = async {
        let r = app.bundle(council, "batch", entries).await;
        done.set(true);
        r
    };
    let reader = || async {
        let mut seen = Vec::new();
        while !done.get() {
            seen.push(plans_held(app, council).await);
        }
        seen
    };
    let readers = futures_util::future::join_all((0..5).map(|_| reader()));
    let (r, seen) = futures_util::future::join(bundle, readers).await;
    (r, seen.concat())
}

#[actix_rt::test]
async fn a_read_made_while_a_large_batch_is_written_waits_for_a_slice_of_it_not_all_of_it() {
    let app = TestApp::spawn().await;
    // Written as one job, the Bundle would make its 1,500 plans appear at one commit, and a
    // read queued behind it would wait for all of it: every read would see none or all. Written
    // in slices, a read waits for the slice under way, and sees the plans written so far.
    let (r, seen) = batch_under_reads(&app, LA_A, bulk_entries(LA_A, 1_500)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = statuses(&r.json());
    assert_eq!(s.len(), 3_000);
    assert!(s.iter().all(|s| s == "201 Created"), "every entry written");
    assert!(
        seen.iter().any(|n| *n > 0 && *n < 1_500),
        "a read between two slices saw part of the Bundle: {seen:?}"
    );
    assert_eq!(plans_held(&app, LA_A).await, 1_500);
}

#[actix_rt::test]
async fn a_batch_whose_later_slice_cannot_be_written_keeps_the_slices_before_and_says_which_entries_were_not(
) {
    let app = TestApp::spawn().await;
    // The database refuses the last plan's row, as a failing disk would: that slice cannot be
    // written, however often it is tried.
    app.tamper(
        "CREATE TRIGGER last_plan_unwritable BEFORE INSERT ON flags \
         WHEN NEW.local_ref_value = 'BULK-1499' \
         BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END;",
        "CREATE FUNCTION last_plan_unwritable() RETURNS trigger AS $$ \
         BEGIN IF NEW.local_ref_value = 'BULK-1499' THEN RAISE EXCEPTION 'disk I/O error'; END IF; \
         RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER last_plan_unwritable BEFORE INSERT ON flags \
         FOR EACH ROW EXECUTE FUNCTION last_plan_unwritable();",
    );
    let (r, _) = batch_under_reads(&app, LA_A, bulk_entries(LA_A, 1_500)).await;
    assert_eq!(
        r.status,
        200,
        "the earlier slices were written: {}",
        r.text()
    );
    let v = r.json();
    let s = statuses(&v);
    // Entries 0, 2, 4, … are people (written first), 1, 3, 5, … their plans.
    let mut runs: Vec<(String, usize)> = Vec::new();
    for st in &s {
        match runs.last_mut() {
            Some((last, n)) if last == st => *n += 1,
            _ => runs.push((st.clone(), 1)),
        }
    }
    assert!(
        s.iter().step_by(2).all(|s| s == "201 Created"),
        "every person written: {:?}",
        &runs[..runs.len().min(6)]
    );
    let plans: Vec<&String> = s.iter().skip(1).step_by(2).collect();
    let written = plans
        .iter()
        .take_while(|s| s.as_str() == "201 Created")
        .count();
    assert!(
        written > 0 && written < 1_500,
        "the plans before the failing slice were written: {written}"
    );
    assert!(
        plans[written..].iter().all(|s| s.starts_with("503")),
        "the failing slice's plans and those after it answer 503: {:?}",
        &plans[written..written + 3.min(1_500 - written)]
    );
    let last = &v["entry"][2 * 1_499 + 1]["response"]["outcome"]["issue"][0];
    assert_eq!(last["code"], "transient", "{last}");
    assert_eq!(last["expression"][0], "Bundle.entry[2999]", "{last}");
    assert_eq!(
        plans_held(&app, LA_A).await,
        u64::try_from(written).unwrap(),
        "exactly the plans answered 201 are stored"
    );
}

/// `cpis_bulk_lane_jobs_total{priority=…}` from `/metrics` (process-wide: other tests' Bundles
/// may add to it, never take from it).
async fn bulk_lane_jobs(app: &TestApp, priority: &str) -> u64 {
    let r = app.request(Method::GET, "/metrics", None, &[], None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let series = format!("cpis_bulk_lane_jobs_total{{priority=\"{priority}\"}} ");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

#[actix_rt::test]
async fn a_council_s_bundle_is_checked_and_answered_on_the_bulk_lane_whose_threads_run_at_the_lowest_priority(
) {
    // The default (other test servers turn it off; see `helpers::stepped`).
    let app = TestApp::spawn_with(|s| s.bulk_low_priority = true).await;
    let before = bulk_lane_jobs(&app, "lowest").await;
    let r = app
        .bundle(
            LA_A,
            "batch",
            vec![put_patient_entry(NHS_1), put_flag_entry(NHS_1, LA_A, "P-1")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(statuses(&r.json()), ["201 Created", "201 Created"]);
    let after = bulk_lane_jobs(&app, "lowest").await;
    // Only this test's server lowers its lane, so only its jobs count as "lowest".
    assert_eq!(
        after,
        before + 2,
        "reading-and-checking and answering are two lane jobs"
    );
    // What the scheduler sees (Linux): this server's lane threads under SCHED_IDLE, the lowest
    // there is (or, where that is refused, at nice 19); the other test servers' run normally.
    #[cfg(target_os = "linux")]
    {
        let mut lane_threads = 0;
        for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
            let path = task.expect("task").path();
            let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
                continue; // the thread has ended since the listing
            };
            if !comm.starts_with("cpis-bulk-") {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
                continue;
            };
            // Fields after the parenthesised name start at the third: the nice value is the
            // 19th, the scheduling policy the 41st (5 is SCHED_IDLE, 0 normal).
            let fields: Vec<&str> = stat.rsplit_once(") ").expect("stat").1.split(' ').collect();
            let (nice, policy) = (fields[16], fields[38]);
            let lowered = policy == "5" || nice == "19";
            assert!(
                lowered || (policy == "0" && nice == "0"),
                "{}: {stat}",
                comm.trim()
            );
            if lowered {
                lane_threads += 1;
            }
        }
        assert!(
            lane_threads >= 1,
            "this server's lane threads (cpis-bulk-N) run at the lowest priority"
        );
    }
}
