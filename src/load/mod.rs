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

mod bundle;
mod extract;
mod report;
mod submit;

use bundle::{bundle, entry_result};
use extract::{read_csv, Record};
use report::write_report;
use submit::post;

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
