//! The per-row report: one line per data row of the file, whatever happened to it.

use super::*;

pub(super) fn write_report(path: &Path, mut results: Vec<RowResult>) -> Result<(), LoadError> {
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
