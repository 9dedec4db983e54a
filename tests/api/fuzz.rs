//! A deterministic slice of the fuzzer (`cpis-bench fuzz` runs it at length): a fixed seed, a
//! few thousand mutated example resources and Bundles in JSON and XML, against a test server.

use std::time::Duration;

use cpis_fhir::fuzz::{self, Tokens};

use crate::helpers::*;

#[actix_rt::test]
async fn a_fixed_slice_of_the_fuzzer_gets_no_5xx_no_silence_and_no_crash() {
    let app = TestApp::spawn().await;
    let tokens = Tokens {
        council: app.council(LA_A),
        admin: app.admin(),
        clinician: app.clinician(),
    };
    let save = app.dir.path().join("fuzz-failures");
    let report = fuzz::run(
        &app.base,
        &tokens,
        20261201,
        3_000,
        Duration::from_secs(120),
        64 * 1024,
        Some(&save),
    )
    .await;
    let text = report.lines().join("\n");
    println!("{text}");
    assert_eq!(report.sent, 3_000, "{text}");
    assert!(!report.crashed, "{text}");
    assert!(report.server_errors.is_empty(), "{text}");
    assert!(report.unanswered.is_empty(), "{text}");
    // The inputs reach the checks behind the parser too: some are accepted, many refused.
    let count = |lo: u16, hi: u16| -> u64 { report.by_status.range(lo..hi).map(|(_, n)| *n).sum() };
    assert!(count(200, 300) > 50, "{text}");
    assert!(count(400, 401) > 300, "{text}");
    assert!(count(422, 423) > 100, "{text}");
    assert!(count(401, 402) > 50, "{text}");
    assert!(report.largest_response < 1024 * 1024, "{text}");
}
