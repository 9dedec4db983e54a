//! `GET /Flag?…`: the clinician's look-up by NHS number (DOMAIN.md "Interactions today"), a
//! council's own Flags, the audit team's view of one person. Audited before anything is disclosed.

use super::*;
use crate::fhir::{flag, organization, patient};

pub(super) struct FlagQuery {
    patient: Option<NhsNumber>,
    filter: FlagFilter,
    include_author: bool,
    include_patient: bool,
    count: usize,
    cursor: Option<String>,
}

impl FlagQuery {
    /// Every plan of one person, with their councils: what the national views show.
    pub(super) fn of_person(patient: NhsNumber, count: usize, cursor: Option<String>) -> Self {
        FlagQuery {
            filter: FlagFilter {
                nhs_number: Some(patient.as_str().to_owned()),
                ..FlagFilter::default()
            },
            patient: Some(patient),
            include_author: true,
            include_patient: false,
            count,
            cursor,
        }
    }
}

fn flag_query(p: &Params, state: &AppState) -> Result<FlagQuery, ApiError> {
    let allow_test = state.settings.allow_test_nhs_numbers;
    let patient = one_patient(
        p,
        &["patient:identifier", "subject:identifier"],
        &["patient", "subject"],
        allow_test,
    )?;
    let mut filter = FlagFilter {
        nhs_number: patient.as_ref().map(|n| n.as_str().to_owned()),
        ..FlagFilter::default()
    };
    for v in p.all("status").iter().flat_map(|v| v.split(',')) {
        let s = FlagStatus::parse(v)
            .ok_or_else(|| invalid("status", format!("status '{v}' is not a Flag status")))?;
        filter.statuses.push(s);
    }
    for v in p.all("code").iter().flat_map(|v| v.split(',')) {
        match token(v) {
            (Some(system), _) if system != SNOMED_SYSTEM => {
                return Err(invalid(
                    "code",
                    format!("code system '{system}' is not SNOMED CT"),
                ))
            }
            (_, code) => filter.plan_types.push(
                PlanType::from_snomed(code)
                    .map(|p| p.snomed().to_owned())
                    .unwrap_or_else(|| code.to_owned()),
            ),
        }
    }
    if let Some(v) = p.one("identifier")? {
        let (system, value) = token(v);
        filter.identifier_system = system.map(str::to_owned);
        filter.identifier_value = Some(value.to_owned());
    }
    filter.ids = p
        .all("_id")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::to_owned)
        .collect();
    for v in p.all("date") {
        filter.dates.extend(date_param("date", v)?.flag_dates());
    }
    for v in p.all("_lastUpdated") {
        filter
            .dates
            .extend(instant_param("_lastUpdated", v)?.flag_dates());
    }
    let mut include_author = false;
    let mut include_patient = false;
    for v in p.all("_include") {
        match v {
            "Flag:author" | "Flag:author:Organization" => include_author = true,
            "Flag:patient" | "Flag:subject" | "Flag:subject:Patient" | "Flag:patient:Patient" => {
                include_patient = true
            }
            "*" => {
                include_author = true;
                include_patient = true;
            }
            other => {
                return Err(invalid(
                    "_include",
                    format!(
                    "_include={other} is not supported (Flag:author, Flag:patient, Flag:subject)"
                ),
                ))
            }
        }
    }
    Ok(FlagQuery {
        patient,
        filter,
        include_author,
        include_patient,
        count: p.count(DEFAULT_PAGE, state.settings.max_page_size)?,
        cursor: p.cursor()?,
    })
}

pub(super) struct FlagPage {
    pub(super) flags: Vec<FlagRow>,
    pub(super) total: usize,
    pub(super) next: Option<String>,
    pub(super) councils: Vec<CouncilRow>,
    patients: Vec<PatientRow>,
    include_author: bool,
}

impl FlagPage {
    pub(super) fn council_of(&self, flag: &FlagRow) -> Option<&CouncilRow> {
        self.councils.iter().find(|c| c.ods_code == flag.la_ods)
    }
}

pub(super) fn run_flag_search(
    conn: &mut DbConn,
    caller: &Caller,
    mut q: FlagQuery,
    visible_since: String,
) -> Result<(FlagPage, Disclosure), ApiError> {
    match decide(caller, Action::SearchRecords)? {
        Scope::OwnCouncil(own) => q.filter.council = Some(own.as_str().to_owned()),
        Scope::ClinicianVisible => {
            if q.patient.is_none() {
                return Err(ApiError::Forbidden(
                    "clinicians look a person up by NHS number (patient:identifier=https://fhir.nhs.uk/Id/nhs-number|…)".into(),
                ));
            }
            q.filter.visible_since = Some(visible_since);
        }
        Scope::All => {
            if q.patient.is_none() {
                return Err(ApiError::Forbidden(
                    "search Flags by NHS number (patient:identifier=https://fhir.nhs.uk/Id/nhs-number|…)".into(),
                ));
            }
        }
    }
    let found = flags::search(conn, &q.filter, q.cursor.as_deref(), q.count)?;
    let (flags, total, next) = (found.rows, found.total, found.next);
    let mut ods: Vec<String> = flags.iter().map(|f| f.la_ods.clone()).collect();
    ods.sort();
    ods.dedup();
    // One cached lookup per council (a person rarely has more than two).
    let mut councils = Vec::with_capacity(ods.len());
    for o in &ods {
        councils.extend(councils::get(conn, o)?);
    }
    let mut disclosure = Disclosure::about(q.patient.as_ref().map(|n| n.as_str().to_owned()));
    for f in &flags {
        disclosure.flag(&f.id, f.version, &f.la_ods);
    }
    let mut people = Vec::new();
    if q.include_patient {
        let mut nhs: Vec<&str> = flags.iter().map(|f| f.nhs_number.as_str()).collect();
        nhs.sort();
        nhs.dedup();
        for n in nhs {
            if let Some(p) = patients::get(conn, n)? {
                disclosure.reference(format!("Patient/{}/_history/{}", p.nhs_number, p.version));
                people.push(p);
            }
        }
    }
    Ok((
        FlagPage {
            flags,
            total,
            next,
            councils,
            patients: people,
            include_author: q.include_author,
        },
        disclosure,
    ))
}

/// GET and `POST …/_search`.
pub async fn search_flags(
    req: HttpRequest,
    ctx: AccessContext,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ran = audited_search(
        &req,
        ctx,
        &state,
        body,
        "Flag",
        &[
            "patient:identifier",
            "subject:identifier",
            "patient",
            "subject",
        ],
        |params, st| flag_query(&params, st),
        |conn, caller, query, _, since| run_flag_search(conn, caller, query, since),
    )
    .await?;
    let page = ran.rows;
    let name_of = |ods: &str| {
        page.councils
            .iter()
            .find(|c| c.ods_code == ods)
            .map(|c| c.name.as_str())
    };
    let mut entries: Vec<Entry> = page
        .flags
        .iter()
        .map(|f| Entry {
            resource_type: "Flag",
            id: f.id.clone(),
            resource: flag::render(f, name_of(&f.la_ods)),
            include: false,
        })
        .collect();
    if page.include_author {
        entries.extend(page.councils.iter().map(|c| Entry {
            resource_type: "Organization",
            id: c.ods_code.clone(),
            resource: organization::render(c),
            include: true,
        }));
    }
    entries.extend(page.patients.iter().map(|p| Entry {
        resource_type: "Patient",
        id: p.nhs_number.clone(),
        resource: patient::render(p),
        include: true,
    }));
    let bundle = SearchSet {
        base: &state.settings.base_url,
        path: "Flag",
        query: ran.used,
        cursor: ran.cursor,
        next_cursor: page.next,
        total: Some(page.total),
        entries,
    };
    Reply::ok(bundle.render()).into_response(&req)
}
