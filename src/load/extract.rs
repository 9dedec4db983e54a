//! Reading a council's CSV extract: the columns (see the module above), one [`Record`] per good
//! row and an INVALID report line, with its reason, for each row that is not.

use super::*;

/// One good row.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub(super) line: usize,
    pub(super) nhs: String,
    pub(super) family: String,
    pub(super) given: Vec<String>,
    pub(super) birth_date: NaiveDate,
    pub(super) address_lines: Vec<String>,
    pub(super) town: Option<String>,
    pub(super) postcode: Option<String>,
    pub(super) plan: PlanType,
    pub(super) start: NaiveDate,
    pub(super) end: Option<NaiveDate>,
    pub(super) reference: String,
    pub(super) verification: String,
}

pub(super) fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(s, "%d/%m/%Y"))
        .ok()
}

pub(super) fn plan_type(s: &str) -> Option<PlanType> {
    match s.to_ascii_uppercase().as_str() {
        "CPP" | "CPPI" => Some(PlanType::ChildProtection),
        "LAC" | "LACI" => Some(PlanType::LookedAfter),
        "UCPP" | "UCPI" => Some(PlanType::UnbornChildProtection),
        code => PlanType::from_snomed(code),
    }
}

pub(super) const COLUMNS: &[(&str, bool)] = &[
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
pub(super) fn read_csv(path: &Path) -> Result<(Vec<Record>, Vec<RowResult>), LoadError> {
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

pub(super) fn invalid(line: usize, reference: &str, message: String) -> RowResult {
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

pub(super) fn parse_row<'a>(
    field: &impl Fn(&str) -> Option<&'a str>,
    line: usize,
) -> Result<Record, String> {
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
}
