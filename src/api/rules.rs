//! Checks that need the database, shared by create and update: a Flag's subject must be a
//! known Patient and its author a registered, active council (issue "Profiles": "subject an
//! existing Patient; author a registered council").

use crate::error::{ApiError, Issue};
use crate::store::councils::{self, CouncilRow};
use crate::store::flags::FlagRow;
use crate::store::{patients, DbConn};

pub fn check_flag_references(conn: &mut DbConn, row: &FlagRow) -> Result<CouncilRow, ApiError> {
    let mut issues = Vec::new();
    if patients::get(conn, &row.nhs_number)?.is_none() {
        issues.push(Issue::new(
            "not-found",
            "Flag.subject",
            format!(
                "Flag.subject: Patient/{} does not exist; submit the Patient first (or in the same transaction)",
                row.nhs_number
            ),
        ));
    }
    let council = councils::get(conn, &row.la_ods)?;
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
