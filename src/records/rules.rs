//! Checks that need the database, shared by create and update: a Flag's subject must be a
//! known Patient and its author a registered, active council (issue "Profiles": "subject an
//! existing Patient; author a registered council").

use crate::error::Issue;
use crate::records::RecordError;
use crate::store::councils::{self, CouncilRow};
use crate::store::flags::FlagRow;
use crate::store::{patients, DbConn};

/// What one writer job has already established, so a Bundle of a thousand plans does not look
/// up the same council a thousand times. Valid only inside the job's own transaction.
#[derive(Debug, Default)]
pub struct Known {
    /// People known to exist (read, or written by an entry that succeeded).
    pub people: std::collections::HashSet<String>,
    pub councils: std::collections::HashMap<String, CouncilRow>,
}

impl Known {
    fn person_exists(&mut self, conn: &mut DbConn, nhs: &str) -> Result<bool, RecordError> {
        if self.people.contains(nhs) {
            return Ok(true);
        }
        let found = patients::get(conn, nhs)?.is_some();
        if found {
            self.people.insert(nhs.to_owned());
        }
        Ok(found)
    }

    pub fn council(
        &mut self,
        conn: &mut DbConn,
        ods: &str,
    ) -> Result<Option<CouncilRow>, RecordError> {
        if let Some(c) = self.councils.get(ods) {
            return Ok(Some(c.clone()));
        }
        let found = councils::get(conn, ods)?;
        if let Some(c) = &found {
            self.councils.insert(ods.to_owned(), c.clone());
        }
        Ok(found)
    }
}

pub fn check_flag_references(
    conn: &mut DbConn,
    row: &FlagRow,
    known: &mut Known,
) -> Result<CouncilRow, RecordError> {
    let mut issues = Vec::new();
    if !known.person_exists(conn, &row.nhs_number)? {
        issues.push(Issue::new(
            "not-found",
            "Flag.subject",
            format!(
                "Flag.subject: Patient/{} does not exist; submit the Patient first (or in the same transaction)",
                row.nhs_number
            ),
        ));
    }
    let council = known.council(conn, &row.la_ods)?;
    match &council {
        None => issues.push(Issue::new(
            "not-found",
            "Flag.author",
            format!(
                "Flag.author: Organization/{} is not a registered council",
                row.la_ods
            ),
        )),
        Some(c) if !c.active => issues.push(Issue::new(
            "business-rule",
            "Flag.author",
            format!(
                "Flag.author: Organization/{} is no longer active",
                row.la_ods
            ),
        )),
        Some(_) => {}
    }
    match council {
        Some(c) if issues.is_empty() => Ok(c),
        _ => Err(RecordError::Unprocessable(issues)),
    }
}

pub use crate::fhir::percent::decode as percent_decode;
