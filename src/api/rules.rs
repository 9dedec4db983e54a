//! Checks that need the database, shared by create and update: a Flag's subject must be a
//! known Patient and its author a registered, active council (issue "Profiles": "subject an
//! existing Patient; author a registered council").

use crate::error::{ApiError, Issue};
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
    fn person_exists(&mut self, conn: &mut DbConn, nhs: &str) -> Result<bool, ApiError> {
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
    ) -> Result<Option<CouncilRow>, ApiError> {
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
) -> Result<CouncilRow, ApiError> {
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
        _ => Err(ApiError::Unprocessable(issues)),
    }
}

/// Decodes `%XX` escapes and `+` in a query value; `None` for malformed escapes or bad UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(
            percent_decode("https%3A%2F%2Fx%7C1").as_deref(),
            Some("https://x|1")
        );
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
