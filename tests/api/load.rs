//! `cpis-fhir load`: a council's CSV extract submitted through batch Bundles, with a
//! per-record report; bad rows reported, an outage reported clearly, re-runs without duplicates.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::helpers::*;

const HEADER: &str = "nhs_number,family_name,given_names,birth_date,address_lines,town,postcode,plan_type,plan_start,plan_end,plan_reference,nhs_number_verification\n";

fn write_csv(dir: &Path, name: &str, rows: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut text = HEADER.to_owned();
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

async fn load(args: Vec<String>) -> Output {
    actix_web::rt::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cpis-fhir"))
            .arg("load")
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run load")
    })
    .await
    .unwrap()
}

fn submit_args(app: &TestApp, csv: &Path, server: &str) -> Vec<String> {
    vec![
        "--council".into(),
        LA_A.into(),
        "--csv".into(),
        csv.display().to_string(),
        "--server".into(),
        server.into(),
        "--token".into(),
        app.council(LA_A),
        "--rows-per-bundle".into(),
        "2".into(),
    ]
}

/// The report's rows as (line, plan reference, outcome, result code, message).
fn report(csv: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(csv.with_extension("report.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let mut r = csv_fields(l);
            r.truncate(7);
            r
        })
        .collect()
}

fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

async fn council_flags(app: &TestApp, nhs: &str) -> Vec<serde_json::Value> {
    let r = app
        .get(
            &format!("/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{nhs}"),
            &app.council(LA_A),
        )
        .await;
    entries(&r.json(), "match")
}

#[actix_rt::test]
async fn a_good_file_is_loaded_with_a_report_line_per_row() {
    let app = TestApp::spawn().await;
    let csv = write_csv(
        app.dir.path(),
        "good.csv",
        &[
            &format!("{NHS_1},Carter,Ellis James,2016-03-14,1 High Street,Northmoor,NM1 1AA,CPP,2026-01-05,,P-1,01"),
            &format!("{NHS_1},Carter,Ellis James,2016-03-14,1 High Street,Northmoor,NM1 1AA,LAC,05/02/2026,,P-2,"),
            &format!("{NHS_2},Shah,Aisha,2012-05-01,,,,CPP,2025-01-05,2025-12-31,P-3,01"),
        ],
    );
    let out = load(submit_args(&app, &csv, &app.base)).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = report(&csv);
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r[2], "ACCEPTED", "{r:?}");
        assert_eq!(r[3], "CPR06", "{r:?}");
        assert!(!r[5].is_empty(), "the Flag id is reported: {r:?}");
    }
    assert_eq!(council_flags(&app, NHS_1).await.len(), 2);
    let ended = council_flags(&app, NHS_2).await;
    assert_eq!(ended[0]["status"], "inactive");
    assert_eq!(ended[0]["period"]["end"], "2025-12-31");
}

#[actix_rt::test]
async fn bad_rows_are_reported_with_their_line_and_reason_and_the_rest_load() {
    let app = TestApp::spawn().await;
    let csv = write_csv(
        app.dir.path(),
        "mixed.csv",
        &[
            &format!("{NHS_1},Carter,Ellis,2016-03-14,,,,CPP,2026-01-05,,P-1,01"),
            "1234567890,Bad,Number,2016-03-14,,,,CPP,2026-01-05,,P-2,01",
            &format!("{NHS_2},Shah,Aisha,14th May,,,,CPP,2026-01-05,,P-3,01"),
            &format!("{NHS_2},Shah,Aisha,2012-05-01,,,,CIN,2026-01-05,,P-4,01"),
            &format!("{NHS_3},Lee,Sam,2012-05-01,,,,CPP,2026-01-05,,P-1,01"),
            &format!("{NHS_3},Lee,Sam,2012-05-01,,,,CPP,2026-01-05,,P-5,02"),
        ],
    );
    let out = load(submit_args(&app, &csv, &app.base)).await;
    assert_eq!(out.status.code(), Some(2), "some rows need attention");
    let rows = report(&csv);
    let by_line = |n: &str| rows.iter().find(|r| r[0] == n).cloned().unwrap();
    assert_eq!(by_line("2")[2], "ACCEPTED");
    assert_eq!(by_line("3")[2], "INVALID");
    assert!(by_line("3")[6].contains("nhs_number"), "{:?}", by_line("3"));
    assert!(by_line("4")[6].contains("birth_date"), "{:?}", by_line("4"));
    assert!(by_line("5")[6].contains("plan_type"), "{:?}", by_line("5"));
    assert!(
        by_line("6")[6].contains("also on line 2"),
        "{:?}",
        by_line("6")
    );
    assert_eq!(by_line("7")[2], "REFUSED");
    assert_eq!(
        by_line("7")[3],
        "CPR03",
        "unverified NHS number: {:?}",
        by_line("7")
    );
    assert_eq!(rows.len(), 6, "every row is in the report");
    assert_eq!(council_flags(&app, NHS_1).await.len(), 1);
}

#[actix_rt::test]
async fn a_server_outage_is_reported_and_a_rerun_completes_without_duplicates() {
    let app = TestApp::spawn().await;
    let rows: Vec<String> = [NHS_1, NHS_2, NHS_3]
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n},Carter,Ellis,2016-03-14,,,,CPP,2026-01-05,,P-{i},01"))
        .collect();
    let all: Vec<&str> = rows.iter().map(String::as_str).collect();
    let csv = write_csv(app.dir.path(), "extract.csv", &all);
    // Nothing listens on this port.
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
    );
    let out = load(submit_args(&app, &csv, &dead)).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not be reached"), "{err}");
    assert!(err.contains("Run the same command again"), "{err}");
    assert!(report(&csv).iter().all(|r| r[2] == "NOT_SUBMITTED"));

    // A run that got half-way (the first Bundle in), then the full re-run.
    let half = write_csv(app.dir.path(), "half.csv", &all[..2]);
    assert!(load(submit_args(&app, &half, &app.base))
        .await
        .status
        .success());
    let out = load(submit_args(&app, &csv, &app.base)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report(&csv).iter().all(|r| r[2] == "ACCEPTED"));
    for nhs in [NHS_1, NHS_2, NHS_3] {
        let flags = council_flags(&app, nhs).await;
        assert_eq!(flags.len(), 1, "no duplicate for {nhs}");
        assert_eq!(flags[0]["meta"]["versionId"], "1", "no new version");
    }
}

#[actix_rt::test]
async fn the_example_extract_produces_the_example_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let out = load(vec![
        "--council".into(),
        "LA901".into(),
        "--csv".into(),
        root.join("council-extract.csv").display().to_string(),
        "--bundle-out".into(),
        dir.path().display().to_string(),
        "--report".into(),
        dir.path().join("report.csv").display().to_string(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made = std::fs::read_to_string(dir.path().join("bundle-00001.json")).unwrap();
    let shipped = std::fs::read_to_string(root.join("bundles/bundle-00001.json")).unwrap();
    assert_eq!(
        made.trim(),
        shipped.trim(),
        "examples/bundles is what the loader writes"
    );
}

#[actix_rt::test]
async fn the_example_bundle_is_accepted_by_the_server() {
    let app = TestApp::spawn().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let b: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("bundles/bundle-00001.json")).unwrap(),
    )
    .unwrap();
    let r = app.post_json("/", &app.council(LA_A), &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(result_codes(&v).iter().all(|c| c == "CPR06"), "{v}");
}
