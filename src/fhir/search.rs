//! Search parameters (FHIR R4 §3.1.1 "Search"): parsing of the query string or form body into
//! typed values, `Prefer: handling=strict|lenient` (§3.1.1.1.1), token, reference, date and
//! `_lastUpdated` parameters with prefixes (§3.1.1.4), `_count`, `_include` and paging links.

use actix_web::HttpRequest;
use chrono::{Duration, NaiveDate};

use crate::domain::NHS_NUMBER_SYSTEM;
use crate::error::{ApiError, Issue};
use crate::fhir::json::allowed_char;
use crate::fhir::percent::decode as percent_decode;
use crate::fhir::profile::{parse_date, parse_instant};
use crate::nhs_number::NhsNumber;
use crate::store::flags::FlagDate;
use crate::store::micros;

/// Parameters that apply to every search here and are never "unsupported".
const COMMON: &[&str] = &["_format", "_count", "_cursor", "_pretty"];

/// Decodes `a=b&c=d` (query string or form body) into name/value pairs, in order.
pub fn pairs(s: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in s.split('&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_PAIRS {
            return Err(ApiError::InvalidSearch(format!(
                "a search may carry at most {MAX_PAIRS} parameters"
            )));
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (Some(k), Some(v)) = (percent_decode(k), percent_decode(v)) else {
            return Err(ApiError::Invalid(vec![Issue::general(
                "invalid",
                "the query string has a malformed %-escape",
            )]));
        };
        if let Some(c) = k.chars().chain(v.chars()).find(|c| !allowed_char(*c)) {
            return Err(ApiError::InvalidSearch(format!(
                "the search parameter '{}' contains the control character U+{:04X}",
                k.chars().filter(|c| allowed_char(*c)).collect::<String>(),
                u32::from(c)
            )));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// The most parameters one search (query string and form body together) is read for.
const MAX_PAIRS: usize = 256;

/// `Prefer: handling=lenient` makes unknown parameters ignored instead of refused.
pub fn lenient(req: &HttpRequest) -> bool {
    crate::fhir::format::prefers(req, "handling=lenient")
}

/// The parameters of one search, split into the ones this search understands and the rest.
pub struct Params {
    known: Vec<(String, String)>,
    /// Everything used, in order, for the `self` link.
    pub used: Vec<(String, String)>,
}

impl Params {
    /// Keeps the parameters named in `supported` (a name may carry a `:modifier` listed there);
    /// refuses any other unless `lenient`.
    pub fn new(
        all: Vec<(String, String)>,
        supported: &[impl AsRef<str>],
        lenient: bool,
    ) -> Result<Self, ApiError> {
        let mut known = Vec::new();
        let mut used = Vec::new();
        let mut unknown = Vec::new();
        for (k, v) in all {
            if k == "_format" {
                continue;
            }
            if supported.iter().any(|s| s.as_ref() == k) || COMMON.contains(&k.as_str()) {
                known.push((k.clone(), v.clone()));
                used.push((k, v));
            } else {
                unknown.push(k);
            }
        }
        if !unknown.is_empty() && !lenient {
            return Err(ApiError::Invalid(
                unknown
                    .into_iter()
                    .map(|k| {
                        Issue::new(
                            "not-supported",
                            k.clone(),
                            format!(
                                "the search parameter '{k}' is not supported here (supported: {}); send Prefer: handling=lenient to ignore it",
                                supported.iter().map(AsRef::as_ref).collect::<Vec<&str>>().join(", ")
                            ),
                        )
                    })
                    .collect(),
            ));
        }
        Ok(Self { known, used })
    }

    /// All values of a parameter (each may hold comma-separated alternatives).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.known
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.all(name).as_slice() {
            [] => Ok(None),
            [v] => Ok(Some(v)),
            _ => Err(invalid(name, format!("'{name}' may be given only once"))),
        }
    }

    pub fn has_any(&self, names: &[&str]) -> bool {
        self.known.iter().any(|(k, _)| names.contains(&k.as_str()))
    }

    /// `_count`, bounded by the server's maximum.
    pub fn count(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.one("_count")? {
            None => Ok(default.min(max)),
            Some(v) => v
                .parse::<usize>()
                .map(|n| n.min(max))
                .map_err(|_| invalid("_count", format!("_count '{v}' is not a whole number"))),
        }
    }

    pub fn cursor(&self) -> Result<Option<String>, ApiError> {
        Ok(self.one("_cursor")?.map(str::to_owned))
    }

    /// The `self` link's query string.
    pub fn query_string(&self, skip_cursor: bool) -> String {
        self.used
            .iter()
            .filter(|(k, _)| !(skip_cursor && k == "_cursor"))
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

pub use crate::fhir::percent::encode;

pub fn invalid(name: &str, text: String) -> ApiError {
    ApiError::Invalid(vec![Issue::new("invalid", name, text)])
}

/// An NHS number given as an identifier token (`system|value` or `value`).
pub fn nhs_identifier(v: &str, allow_test: bool) -> Result<NhsNumber, ApiError> {
    let value = match v.split_once('|') {
        Some((system, value)) if system == NHS_NUMBER_SYSTEM || system.is_empty() => value,
        Some((system, _)) => {
            return Err(ApiError::InvalidSearch(format!(
                "only NHS number identifiers ({NHS_NUMBER_SYSTEM}) can be searched, not '{system}'"
            )))
        }
        None => v,
    };
    NhsNumber::parse(value, allow_test).map_err(|e| ApiError::InvalidSearch(e.to_string()))
}

/// An NHS number given as a Patient reference (`Patient/{nhs}`, a full URL, or the bare id).
pub fn nhs_reference(v: &str, allow_test: bool) -> Result<NhsNumber, ApiError> {
    let id = v.rsplit_once("Patient/").map(|(_, id)| id).unwrap_or(v);
    if v.contains('/') && !v.contains("Patient/") {
        return Err(ApiError::InvalidSearch(format!(
            "'{v}' is not a Patient reference"
        )));
    }
    NhsNumber::parse(id, allow_test).map_err(|e| ApiError::InvalidSearch(e.to_string()))
}

/// A token (`system|code`, `|code`, or `code`).
pub fn token(v: &str) -> (Option<&str>, &str) {
    match v.split_once('|') {
        Some(("", c)) => (None, c),
        Some((s, c)) => (Some(s), c),
        None => (None, v),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

fn prefix(v: &str) -> (Prefix, &str) {
    for (p, name) in [
        (Prefix::Eq, "eq"),
        (Prefix::Gt, "gt"),
        (Prefix::Ge, "ge"),
        (Prefix::Lt, "lt"),
        (Prefix::Le, "le"),
    ] {
        if let Some(rest) = v.strip_prefix(name) {
            return (p, rest);
        }
    }
    (Prefix::Eq, v)
}

/// A date search value as the half-open day range it stands for.
#[derive(Clone, Copy, Debug)]
pub struct DateParam {
    pub prefix: Prefix,
    pub from: NaiveDate,
    /// Exclusive.
    pub to: NaiveDate,
}

pub fn date_param(name: &str, v: &str) -> Result<DateParam, ApiError> {
    let (p, rest) = prefix(v);
    let bad = || {
        invalid(
            name,
            format!("{name} '{v}' is not [eq|gt|ge|lt|le]YYYY[-MM[-DD]]"),
        )
    };
    let (from, to) = match parse_date(rest) {
        Some(Some(d)) => (d, d + Duration::days(1)),
        Some(None) if rest.len() == 4 => {
            let y: i32 = rest.parse().map_err(|_| bad())?;
            (
                NaiveDate::from_ymd_opt(y, 1, 1).ok_or_else(bad)?,
                NaiveDate::from_ymd_opt(y + 1, 1, 1).ok_or_else(bad)?,
            )
        }
        Some(None) => {
            let d =
                NaiveDate::parse_from_str(&format!("{rest}-01"), "%Y-%m-%d").map_err(|_| bad())?;
            let next = d
                .checked_add_months(chrono::Months::new(1))
                .ok_or_else(bad)?;
            (d, next)
        }
        None => match parse_instant(rest) {
            Some(t) => (t.date_naive(), t.date_naive() + Duration::days(1)),
            None => return Err(bad()),
        },
    };
    Ok(DateParam {
        prefix: p,
        from,
        to,
    })
}

/// A `_lastUpdated` value as a half-open range of stored instants (microseconds).
#[derive(Clone, Copy, Debug)]
pub struct InstantParam {
    pub prefix: Prefix,
    pub from: i64,
    pub to: i64,
}

impl InstantParam {
    /// The conditions on a Flag's last change this value stands for.
    pub fn flag_dates(&self) -> Vec<FlagDate> {
        match self.prefix {
            Prefix::Eq => vec![
                FlagDate::UpdatedFrom(self.from),
                FlagDate::UpdatedBefore(self.to),
            ],
            Prefix::Gt => vec![FlagDate::UpdatedFrom(self.to)],
            Prefix::Ge => vec![FlagDate::UpdatedFrom(self.from)],
            Prefix::Lt => vec![FlagDate::UpdatedBefore(self.from)],
            Prefix::Le => vec![FlagDate::UpdatedBefore(self.to)],
        }
    }

    pub fn matches(&self, t: i64) -> bool {
        match self.prefix {
            Prefix::Eq => t >= self.from && t < self.to,
            Prefix::Gt => t >= self.to,
            Prefix::Ge => t >= self.from,
            Prefix::Lt => t < self.from,
            Prefix::Le => t < self.to,
        }
    }
}

pub fn instant_param(name: &str, v: &str) -> Result<InstantParam, ApiError> {
    let (p, rest) = prefix(v);
    if let Some(t) = parse_instant(rest) {
        let m = micros(t.with_timezone(&chrono::Utc));
        return Ok(InstantParam {
            prefix: p,
            from: m,
            to: m + 1,
        });
    }
    let d = date_param(name, v)?;
    let start = |n: NaiveDate| {
        n.and_hms_opt(0, 0, 0)
            .map(|t| micros(t.and_utc()))
            .unwrap_or(0)
    };
    Ok(InstantParam {
        prefix: p,
        from: start(d.from),
        to: start(d.to),
    })
}

impl DateParam {
    /// The inclusive first and last day a single date (a birth date) may be to satisfy this
    /// value; `None` where unbounded.
    pub fn days(&self) -> (Option<NaiveDate>, Option<NaiveDate>) {
        let last = self.to - Duration::days(1);
        match self.prefix {
            Prefix::Eq => (Some(self.from), Some(last)),
            Prefix::Gt => (Some(self.to), None),
            Prefix::Ge => (Some(self.from), None),
            Prefix::Lt => (None, self.from.pred_opt()),
            Prefix::Le => (None, Some(last)),
        }
    }

    /// The conditions on a plan period this value stands for (as [`DateParam::matches_period`]).
    pub fn flag_dates(&self) -> Vec<FlagDate> {
        let day = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
        let last = day(self.to - Duration::days(1));
        match self.prefix {
            Prefix::Eq => vec![FlagDate::StartsBy(last), FlagDate::RunsTo(day(self.from))],
            Prefix::Gt => vec![FlagDate::RunsPast(last)],
            Prefix::Ge => vec![FlagDate::RunsTo(day(self.from))],
            Prefix::Lt => vec![FlagDate::StartsBefore(day(self.from))],
            Prefix::Le => vec![FlagDate::StartsBy(last)],
        }
    }

    /// Whether a plan period `[start, end]` (end open when absent) satisfies this parameter
    /// (FHIR R4 §3.1.1.4.2: ranges compare by overlap and bounds): the rule that
    /// [`DateParam::flag_dates`], which searches run, is tested against.
    pub fn matches_period(&self, start: NaiveDate, end: Option<NaiveDate>) -> bool {
        let last = self.to - Duration::days(1);
        match self.prefix {
            Prefix::Eq => start <= last && end.is_none_or(|e| e >= self.from),
            Prefix::Gt => end.is_none_or(|e| e > last),
            Prefix::Ge => end.is_none_or(|e| e >= self.from),
            Prefix::Lt => start < self.from,
            Prefix::Le => start <= last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode_in_order() {
        let p = pairs("patient%3Aidentifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9449306753&_count=1").ok();
        assert_eq!(
            p,
            Some(vec![
                (
                    "patient:identifier".into(),
                    "https://fhir.nhs.uk/Id/nhs-number|9449306753".into()
                ),
                ("_count".into(), "1".into())
            ])
        );
    }

    #[test]
    fn date_prefixes_match_periods() {
        let d = |s: &str| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .unwrap_or_default()
        };
        let ge = date_param("date", "ge2026-03-01").ok();
        assert!(ge.is_some_and(|g| g.matches_period(d("2026-01-01"), None)));
        assert!(ge.is_some_and(|g| !g.matches_period(d("2026-01-01"), Some(d("2026-02-01")))));
        let eq = date_param("date", "2026-02").ok();
        assert!(eq.is_some_and(|g| g.matches_period(d("2026-02-10"), Some(d("2026-05-01")))));
        assert!(date_param("date", "xx2026").is_err());
    }

    /// The conditions a council's search runs in SQL (and a person's in memory) are the FHIR
    /// period semantics of `matches_period`, for every prefix, precision and kind of period.
    #[test]
    fn the_flag_date_conditions_agree_with_the_period_rules_everywhere() {
        use crate::store::flags::{FlagFilter, FlagRow};
        let row = |start: &str, end: Option<&str>, updated: i64| FlagRow {
            id: "f".into(),
            nhs_number: "9449306753".into(),
            la_ods: "A".into(),
            local_ref_system: "s".into(),
            local_ref_value: "v".into(),
            plan_type: "p".into(),
            status: crate::domain::FlagStatus::Active,
            period_start: start.into(),
            period_end: end.map(str::to_owned),
            version: 1,
            updated_at: updated,
        };
        let days = [
            "2025-12-31",
            "2026-01-01",
            "2026-01-31",
            "2026-02-01",
            "2026-02-28",
            "2026-03-01",
            "2027-01-01",
        ];
        let values = ["2026", "2026-02", "2026-02-01", "2026-01-31T23:00:00Z"];
        let mut checked = 0;
        for prefix in ["", "eq", "gt", "ge", "lt", "le"] {
            for v in values {
                let Ok(param) = date_param("date", &format!("{prefix}{v}")) else {
                    panic!("{prefix}{v} did not parse");
                };
                let filter = FlagFilter {
                    dates: param.flag_dates(),
                    ..FlagFilter::default()
                };
                for start in days {
                    for end in days.iter().map(Some).chain([None]) {
                        if end.is_some_and(|e| *e < start) {
                            continue;
                        }
                        let parse = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
                        let expected = param.matches_period(
                            parse(start).unwrap_or_default(),
                            end.and_then(|e| parse(e)),
                        );
                        let r = row(start, end.copied(), 0);
                        assert_eq!(
                            filter.matches(&r),
                            expected,
                            "{prefix}{v} on {start}..{end:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 500);
        for prefix in ["", "eq", "gt", "ge", "lt", "le"] {
            for v in ["2026-02-01", "2026-02-01T10:00:00Z"] {
                let Ok(param) = instant_param("_lastUpdated", &format!("{prefix}{v}")) else {
                    panic!("{prefix}{v} did not parse");
                };
                let filter = FlagFilter {
                    dates: param.flag_dates(),
                    ..FlagFilter::default()
                };
                for t in [
                    param.from - 1,
                    param.from,
                    param.from + 1,
                    param.to - 1,
                    param.to,
                    param.to + 1,
                ] {
                    let r = row("2026-01-01", None, t);
                    assert_eq!(filter.matches(&r), param.matches(t), "{prefix}{v} at {t}");
                }
            }
        }
    }

    #[test]
    fn nhs_numbers_in_searches_must_be_valid() {
        assert!(nhs_identifier("https://fhir.nhs.uk/Id/nhs-number|9449306753", false).is_ok());
        assert!(matches!(
            nhs_identifier("https://fhir.nhs.uk/Id/nhs-number|1234567890", false),
            Err(ApiError::InvalidSearch(_))
        ));
        assert!(matches!(
            nhs_identifier("https://example.org/other|9449306753", false),
            Err(ApiError::InvalidSearch(_))
        ));
        assert!(nhs_reference("Patient/9449306753", false).is_ok());
        assert!(nhs_reference("http://x/Patient/9449306753", false).is_ok());
        assert!(nhs_reference("Group/9449306753", false).is_err());
    }
}
