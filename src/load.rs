//! `cpis-fhir load`: turns a council's case-system CSV extract into batch Bundles and submits
//! them (or only writes them), with a per-record report (issue "Councils' bulk submission").
//!
//! Each row becomes two Bundle entries: `PUT Patient/{nhs}` and the conditional update
//! `PUT Flag?identifier={plan system}|{plan reference}`. Both are idempotent, so a run that was
//! interrupted (a server outage, say) is finished by running the same command again: records
//! already accepted are matched by their plan reference and, being unchanged, get no new
//! version. Rows that cannot be sent are reported with their line number and reason, never
//! dropped; the report has one line per data row of the file.
//!
//! CSV columns (header row required; names are case-insensitive; optional columns may be left
//! out or empty):
//!
//! | column | required | format |
//! |---|---|---|
//! | `nhs_number` | yes | 10 digits (spaces allowed) |
//! | `family_name` | yes | |
//! | `given_names` | no | space-separated |
//! | `birth_date` | yes | `YYYY-MM-DD` or `DD/MM/YYYY` |
//! | `address_lines` | no | lines separated by `;` |
//! | `town` | no | |
//! | `postcode` | no | |
//! | `plan_type` | yes | `CPP` (or `CPPI`), `LAC` (`LACI`), `UCPP` (`UCPI`), or the SNOMED CT code |
//! | `plan_start` | yes | date |
//! | `plan_end` | no | date |
//! | `plan_reference` | yes | the case system's own id for the plan |
//! | `nhs_number_verification` | no | verification status code, default `01` |

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use serde_json::{json, Value};

use crate::domain::{
    OdsCode, PlanType, FLAG_CATEGORY_CODE, FLAG_CATEGORY_SYSTEM, NHS_NUMBER_SYSTEM, PROFILE_BASE,
    SNOMED_SYSTEM, VERIFICATION_EXTENSION, VERIFICATION_SYSTEM,
};
use crate::nhs_number::NhsNumber;

/// What to load and where to.
#[derive(Debug, Clone)]
pub struct Job {
    pub council: OdsCode,
    pub csv: PathBuf,
    /// Submit to this server (base URL) with this bearer token.
    pub server: Option<(String, String)>,
    /// Only write the Bundles here.
    pub bundle_out: Option<PathBuf>,
    pub report: PathBuf,
    /// Rows per Bundle (two entries each).
    pub rows_per_bundle: usize,
    /// `Flag.identifier.system` for the plan references.
    pub plan_system: String,
    /// Attempts per Bundle when the server cannot be reached or is unavailable.
    pub attempts: u32,
}

impl Job {
    /// The plan reference system a council uses unless it names its own.
    pub fn default_plan_system(council: &OdsCode) -> String {
        format!("{PROFILE_BASE}/Id/plan-reference/{council}")
    }
}

/// One good row.
#[derive(Debug, Clone)]
struct Record {
    line: usize,
    nhs: String,
    family: String,
    given: Vec<String>,
    birth_date: NaiveDate,
    address_lines: Vec<String>,
    town: Option<String>,
    postcode: Option<String>,
    plan: PlanType,
    start: NaiveDate,
    end: Option<NaiveDate>,
    reference: String,
    verification: String,
}

/// What happened to one row, for the report.
#[derive(Debug, Clone)]
struct RowResult {
    line: usize,
    reference: String,
    /// ACCEPTED, REFUSED, INVALID (not sent), NOT_SUBMITTED (outage), WRITTEN (bundle-out).
    outcome: &'static str,
    code: String,
    status: String,
    flag_id: String,
    message: String,
}

/// The run's totals.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub rows: usize,
    pub accepted: usize,
    pub refused: usize,
    pub invalid: usize,
    pub not_submitted: usize,
    pub written: usize,
    pub bundles: usize,
}

/// Why a run stopped before the end.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Input(String),
    /// The server could not take the rest; the report says which rows were not submitted.
    #[error("{message}")]
    Interrupted { message: String, summary: Summary },
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(s, "%d/%m/%Y"))
        .ok()
}

fn plan_type(s: &str) -> Option<PlanType> {
    match s.to_ascii_uppercase().as_str() {
        "CPP" | "CPPI" => Some(PlanType::ChildProtection),
        "LAC" | "LACI" => Some(PlanType::LookedAfter),
        "UCPP" | "UCPI" => Some(PlanType::UnbornChildProtection),
        code => PlanType::from_snomed(code),
    }
}

const COLUMNS: &[(&str, bool)] = &[
    ("nhs_number", true),
    ("family_name", true),
    ("given_names", false),
    ("birth_date", true),
    ("address_lines", false),
    ("town", false),
    ("postcode", false),
    ("plan_type", true),
    ("plan_start", true),
    ("plan_end", false),
    ("plan_reference", true),
    ("nhs_number_verification", false),
];

/// Reads the file: good records, and a result for every row that cannot be sent.
fn read_csv(path: &Path) -> Result<(Vec<Record>, Vec<RowResult>), LoadError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| LoadError::Input(format!("cannot read {}: {e}", path.display())))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| LoadError::Input(format!("cannot read the header row: {e}")))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let unknown: Vec<&String> = headers
        .iter()
        .filter(|h| !COLUMNS.iter().any(|(c, _)| c == h))
        .collect();
    if !unknown.is_empty() {
        return Err(LoadError::Input(format!(
            "unknown column(s) {unknown:?}; the columns are {}",
            COLUMNS
                .iter()
                .map(|(c, _)| *c)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let missing: Vec<&str> = COLUMNS
        .iter()
        .filter(|(c, required)| *required && !headers.iter().any(|h| h == c))
        .map(|(c, _)| *c)
        .collect();
    if !missing.is_empty() {
        return Err(LoadError::Input(format!(
            "the header row lacks the required column(s) {}",
            missing.join(", ")
        )));
    }
    let index: HashMap<&str, usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str(), i))
        .collect();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (n, record) in reader.records().enumerate() {
        // Line numbers as a spreadsheet shows them: the header is line 1.
        let fallback_line = n + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                bad.push(invalid(fallback_line, "", format!("unreadable row: {e}")));
                continue;
            }
        };
        let line = record.position().map_or(fallback_line, |p| {
            usize::try_from(p.line()).unwrap_or(fallback_line)
        });
        let field = |name: &str| {
            index
                .get(name)
                .and_then(|i| record.get(*i))
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let reference = field("plan_reference").unwrap_or_default().to_owned();
        match parse_row(&field, line) {
            Ok(r) => {
                if let Some(first) = seen.insert(r.reference.clone(), line) {
                    bad.push(invalid(
                        line,
                        &reference,
                        format!("plan_reference '{}' is also on line {first}", r.reference),
                    ));
                } else {
                    good.push(r);
                }
            }
            Err(why) => bad.push(invalid(line, &reference, why)),
        }
    }
    Ok((good, bad))
}

fn invalid(line: usize, reference: &str, message: String) -> RowResult {
    RowResult {
        line,
        reference: reference.to_owned(),
        outcome: "INVALID",
        code: "CPR07".into(),
        status: String::new(),
        flag_id: String::new(),
        message,
    }
}

fn parse_row<'a>(field: &impl Fn(&str) -> Option<&'a str>, line: usize) -> Result<Record, String> {
    let mut why = Vec::new();
    let nhs_text: String = field("nhs_number")
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    // Test-range numbers are left for the server to accept or refuse by its configuration.
    if let Err(e) = NhsNumber::parse(&nhs_text, true) {
        why.push(format!("nhs_number: {e}"));
    }
    let family = field("family_name").map(str::to_owned);
    if family.is_none() {
        why.push("family_name is required".to_owned());
    }
    let date = |name: &str, required: bool, why: &mut Vec<String>| -> Option<NaiveDate> {
        match field(name) {
            None if required => {
                why.push(format!("{name} is required"));
                None
            }
            None => None,
            Some(s) => {
                let d = parse_date(s);
                if d.is_none() {
                    why.push(format!(
                        "{name} '{s}' is not a date (YYYY-MM-DD or DD/MM/YYYY)"
                    ));
                }
                d
            }
        }
    };
    let birth_date = date("birth_date", true, &mut why);
    let start = date("plan_start", true, &mut why);
    let end = date("plan_end", false, &mut why);
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            why.push("plan_end is before plan_start".to_owned());
        }
    }
    let plan = match field("plan_type") {
        None => {
            why.push("plan_type is required".to_owned());
            None
        }
        Some(p) => {
            let t = plan_type(p);
            if t.is_none() {
                why.push(format!("plan_type '{p}' is not CPP, LAC or UCPP"));
            }
            t
        }
    };
    let reference = field("plan_reference").map(str::to_owned);
    if reference.is_none() {
        why.push("plan_reference is required".to_owned());
    }
    match (family, birth_date, start, plan, reference) {
        (Some(family), Some(birth_date), Some(start), Some(plan), Some(reference))
            if why.is_empty() =>
        {
            Ok(Record {
                line,
                nhs: nhs_text,
                family,
                given: field("given_names")
                    .map(|g| g.split_whitespace().map(str::to_owned).collect())
                    .unwrap_or_default(),
                birth_date,
                address_lines: field("address_lines")
                    .map(|a| {
                        a.split(';')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                town: field("town").map(str::to_owned),
                postcode: field("postcode").map(str::to_owned),
                plan,
                start,
                end,
                reference,
                verification: field("nhs_number_verification").unwrap_or("01").to_owned(),
            })
        }
        _ => Err(why.join("; ")),
    }
}

fn patient_resource(r: &Record) -> Value {
    let mut name = json!({ "family": r.family });
    if !r.given.is_empty() {
        name["given"] = json!(r.given);
    }
    let mut p = json!({
        "resourceType": "Patient",
        "id": r.nhs,
        "identifier": [{
            "extension": [{
                "url": VERIFICATION_EXTENSION,
                "valueCodeableConcept": { "coding": [{
                    "system": VERIFICATION_SYSTEM,
                    "code": r.verification,
                }]},
            }],
            "system": NHS_NUMBER_SYSTEM,
            "value": r.nhs,
        }],
        "name": [name],
        "birthDate": r.birth_date.format("%Y-%m-%d").to_string(),
    });
    let mut address = serde_json::Map::new();
    if !r.address_lines.is_empty() {
        address.insert("line".into(), json!(r.address_lines));
    }
    if let Some(t) = &r.town {
        address.insert("city".into(), json!(t));
    }
    if let Some(pc) = &r.postcode {
        address.insert("postalCode".into(), json!(pc));
    }
    if !address.is_empty() {
        p["address"] = json!([address]);
    }
    p
}

fn flag_resource(r: &Record, council: &OdsCode, plan_system: &str) -> Value {
    let mut period = json!({ "start": r.start.format("%Y-%m-%d").to_string() });
    if let Some(e) = r.end {
        period["end"] = json!(e.format("%Y-%m-%d").to_string());
    }
    json!({
        "resourceType": "Flag",
        "identifier": [{ "system": plan_system, "value": r.reference }],
        // The server marks a plan whose end has passed inactive.
        "status": "active",
        "category": [{ "coding": [{ "system": FLAG_CATEGORY_SYSTEM, "code": FLAG_CATEGORY_CODE }] }],
        "code": { "coding": [{ "system": SNOMED_SYSTEM, "code": r.plan.snomed() }] },
        "subject": { "reference": format!("Patient/{}", r.nhs) },
        "period": period,
        "author": { "reference": format!("Organization/{council}") },
    })
}

/// One batch Bundle for `rows`, and for each row the index of its Flag entry and of the entry
/// that carries its person (people on several rows are sent once per Bundle).
fn bundle(rows: &[Record], council: &OdsCode, plan_system: &str) -> (Value, Vec<(usize, usize)>) {
    let mut entries = Vec::new();
    let mut person_entry: HashMap<&str, usize> = HashMap::new();
    for r in rows {
        // A later row's details for the same person win, as they would on the server.
        match person_entry.get(r.nhs.as_str()) {
            Some(&i) => entries[i] = patient_entry(r),
            None => {
                person_entry.insert(&r.nhs, entries.len());
                entries.push(patient_entry(r));
            }
        }
    }
    let mut map = Vec::with_capacity(rows.len());
    for r in rows {
        map.push((entries.len(), person_entry[r.nhs.as_str()]));
        entries.push(json!({
            "fullUrl": stable_urn(&["Flag", plan_system, &r.reference]),
            "resource": flag_resource(r, council, plan_system),
            "request": {
                "method": "PUT",
                "url": format!(
                    "Flag?identifier={}",
                    crate::fhir::percent::encode_strict(&format!("{plan_system}|{}", r.reference))
                ),
            },
        }));
    }
    let b = json!({ "resourceType": "Bundle", "type": "batch", "entry": entries });
    (b, map)
}

/// A `urn:uuid:` for an entry that is the same every time the same row is converted, so the
/// Bundles a file produces are reproducible (FNV-1a, twice, shaped as a version 4 UUID).
fn stable_urn(parts: &[&str]) -> String {
    let fnv = |seed: u64| {
        let mut h = seed;
        for p in parts {
            for b in p.bytes().chain(std::iter::once(0)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    bytes[8..].copy_from_slice(&fnv(0x6c62_272e_07bb_0142).to_be_bytes());
    format!(
        "urn:uuid:{}",
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    )
}

fn patient_entry(r: &Record) -> Value {
    json!({
        "fullUrl": stable_urn(&["Patient", &r.nhs]),
        "resource": patient_resource(r),
        "request": { "method": "PUT", "url": format!("Patient/{}", r.nhs) },
    })
}

/// The result code and message an entry's response carries.
fn entry_result(entry: &Value) -> (String, String, String, String) {
    let response = &entry["response"];
    let status = response["status"].as_str().unwrap_or_default().to_owned();
    let issues = response["outcome"]["issue"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let code = issues
        .iter()
        .flat_map(|i| {
            i["details"]["coding"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|c| c["code"].as_str().is_some_and(|c| c.starts_with("CPR")))
        .and_then(|c| c["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let message = issues
        .iter()
        .filter_map(|i| i["diagnostics"].as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let flag_id = response["location"]
        .as_str()
        .and_then(|l| l.split("/Flag/").nth(1))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    (status, code, message, flag_id)
}

/// Posts one Bundle; `Err` when the server could not take it at all.
async fn post(
    client: &awc::Client,
    server: &str,
    token: &str,
    body: &[u8],
    attempts: u32,
) -> Result<Value, String> {
    let mut last = String::new();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            let pause = Duration::from_millis(500 * 2u64.pow(attempt - 1));
            actix_web::rt::time::sleep(pause).await;
        }
        let sent = client
            .post(format!("{server}/"))
            .insert_header(("Content-Type", "application/fhir+json"))
            .insert_header(("Accept", "application/fhir+json"))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send_body(body.to_vec())
            .await;
        let mut res = match sent {
            Ok(r) => r,
            Err(e) => {
                last = format!("the server at {server} could not be reached: {e}");
                continue;
            }
        };
        let status = res.status();
        let bytes = res
            .body()
            .limit(256 * 1024 * 1024)
            .await
            .map_err(|e| format!("the server's answer could not be read: {e}"))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let why = value["issue"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["diagnostics"].as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        last = format!("the server answered {status}: {why}");
        // Only an unavailable server is worth asking again; anything else will not change.
        if status.as_u16() != 503 && !status.is_server_error() {
            return Err(last);
        }
    }
    Err(last)
}

/// Runs a load: reads, converts, submits or writes, and always writes the report.
pub fn run(job: &Job) -> Result<Summary, LoadError> {
    let (records, mut results) = read_csv(&job.csv)?;
    let mut summary = Summary {
        rows: records.len() + results.len(),
        invalid: results.len(),
        ..Summary::default()
    };
    if let Some(dir) = &job.bundle_out {
        std::fs::create_dir_all(dir)
            .map_err(|e| LoadError::Input(format!("cannot create {}: {e}", dir.display())))?;
    }
    let chunks: Vec<&[Record]> = records.chunks(job.rows_per_bundle.max(1)).collect();
    let progress = Progress::new(records.len());
    let mut stopped: Option<String> = None;
    let system = actix_web::rt::System::new();
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(300))
        .finish();
    let mut done_rows = 0;
    for (n, rows) in chunks.iter().enumerate() {
        let (b, map) = bundle(rows, &job.council, &job.plan_system);
        let body = serde_json::to_vec_pretty(&b)
            .map_err(|e| LoadError::Input(format!("cannot write a Bundle: {e}")))?;
        if let Some(dir) = &job.bundle_out {
            let file = dir.join(format!("bundle-{:05}.json", n + 1));
            std::fs::write(&file, &body)
                .map_err(|e| LoadError::Input(format!("cannot write {}: {e}", file.display())))?;
            summary.bundles += 1;
            for r in rows.iter() {
                summary.written += 1;
                results.push(RowResult {
                    line: r.line,
                    reference: r.reference.clone(),
                    outcome: "WRITTEN",
                    code: String::new(),
                    status: String::new(),
                    flag_id: String::new(),
                    message: format!("in {}", file.display()),
                });
            }
            continue;
        }
        let Some((server, token)) = &job.server else {
            continue;
        };
        let answer = match &stopped {
            Some(_) => None,
            None => Some(system.block_on(post(&client, server, token, &body, job.attempts))),
        };
        match answer {
            Some(Ok(response)) => {
                summary.bundles += 1;
                let entries = response["entry"].as_array().cloned().unwrap_or_default();
                for (r, (flag_at, person_at)) in rows.iter().zip(map) {
                    let empty = Value::Null;
                    let person = entries.get(person_at).unwrap_or(&empty);
                    let flag = entries.get(flag_at).unwrap_or(&empty);
                    let (p_status, p_code, p_message, _) = entry_result(person);
                    let (status, code, message, flag_id) = if p_code == "CPR06" {
                        entry_result(flag)
                    } else {
                        (p_status, p_code, p_message, String::new())
                    };
                    let ok = code == "CPR06";
                    if ok {
                        summary.accepted += 1;
                    } else {
                        summary.refused += 1;
                    }
                    results.push(RowResult {
                        line: r.line,
                        reference: r.reference.clone(),
                        outcome: if ok { "ACCEPTED" } else { "REFUSED" },
                        code,
                        status,
                        flag_id,
                        message,
                    });
                }
            }
            Some(Err(why)) => {
                stopped = Some(why);
                mark_not_submitted(rows, &mut results, &mut summary, &stopped);
            }
            None => mark_not_submitted(rows, &mut results, &mut summary, &stopped),
        }
        done_rows += rows.len();
        progress.show(done_rows);
    }
    progress.finish();
    write_report(&job.report, results)?;
    match stopped {
        Some(why) => Err(LoadError::Interrupted {
            message: format!(
                "{why}\nThe load stopped: {} of {} rows were not submitted (NOT_SUBMITTED in the report {}). \
                 Run the same command again once the server is back: rows already accepted are matched \
                 by their plan reference and are not duplicated.",
                summary.not_submitted,
                summary.rows,
                job.report.display()
            ),
            summary,
        }),
        None => Ok(summary),
    }
}

fn mark_not_submitted(
    rows: &[Record],
    results: &mut Vec<RowResult>,
    summary: &mut Summary,
    why: &Option<String>,
) {
    for r in rows {
        summary.not_submitted += 1;
        results.push(RowResult {
            line: r.line,
            reference: r.reference.clone(),
            outcome: "NOT_SUBMITTED",
            code: String::new(),
            status: String::new(),
            flag_id: String::new(),
            message: why.clone().unwrap_or_default(),
        });
    }
}

fn write_report(path: &Path, mut results: Vec<RowResult>) -> Result<(), LoadError> {
    results.sort_by_key(|r| r.line);
    let mut w = csv::Writer::from_path(path).map_err(|e| {
        LoadError::Input(format!("cannot write the report {}: {e}", path.display()))
    })?;
    let io = |e: csv::Error| LoadError::Input(format!("cannot write the report: {e}"));
    w.write_record([
        "line",
        "plan_reference",
        "outcome",
        "result_code",
        "http_status",
        "flag_id",
        "message",
    ])
    .map_err(io)?;
    for r in results {
        w.write_record([
            r.line.to_string(),
            r.reference,
            r.outcome.to_owned(),
            r.code,
            r.status,
            r.flag_id,
            r.message,
        ])
        .map_err(io)?;
    }
    w.flush()
        .map_err(|e| LoadError::Input(format!("cannot write the report: {e}")))
}

/// A progress bar on standard error, when it is a terminal.
struct Progress {
    total: usize,
    on: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            on: std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, done: usize) {
        if !self.on || self.total == 0 {
            return;
        }
        let width = 40;
        let filled = done * width / self.total;
        eprint!(
            "\r[{}{}] {done}/{} rows ({}%)",
            "=".repeat(filled),
            " ".repeat(width - filled),
            self.total,
            done * 100 / self.total
        );
    }

    fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_types_are_read_by_their_case_system_names() {
        assert_eq!(plan_type("cpp"), Some(PlanType::ChildProtection));
        assert_eq!(plan_type("LACI"), Some(PlanType::LookedAfter));
        assert_eq!(
            plan_type("818901000000100"),
            Some(PlanType::UnbornChildProtection)
        );
        assert_eq!(plan_type("CIN"), None);
    }

    #[test]
    fn dates_are_read_in_iso_and_uk_forms() {
        assert_eq!(
            parse_date("2026-01-05"),
            NaiveDate::from_ymd_opt(2026, 1, 5)
        );
        assert_eq!(
            parse_date("05/01/2026"),
            NaiveDate::from_ymd_opt(2026, 1, 5)
        );
        assert_eq!(parse_date("2026-13-01"), None);
    }

    #[test]
    fn conditional_urls_escape_the_plan_reference() {
        assert_eq!(
            crate::fhir::percent::encode_strict("https://x/y|A 1"),
            "https%3A%2F%2Fx%2Fy%7CA%201"
        );
    }
}
