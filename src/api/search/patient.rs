//! `GET /Patient?…`: by NHS number (audited), or by name and birth date for a council among the
//! people it is responsible for.

use super::*;
use crate::fhir::patient;

const NAME_PARAMS: &[&str] = &["family", "given", "name", "birthdate"];

fn patient_filter(p: &Params) -> Result<PatientFilter, ApiError> {
    let owned = |name: &str| p.all(name).into_iter().map(str::to_owned).collect();
    let mut f = PatientFilter {
        family: owned("family"),
        given: owned("given"),
        name: owned("name"),
        ..PatientFilter::default()
    };
    for v in p.all("birthdate") {
        let (from, to) = date_param("birthdate", v)?.days();
        f.born_from
            .extend(from.map(|d| d.format("%Y-%m-%d").to_string()));
        f.born_to
            .extend(to.map(|d| d.format("%Y-%m-%d").to_string()));
    }
    Ok(f)
}

fn run_patient_search(
    conn: &mut DbConn,
    caller: &Caller,
    p: &Params,
    state: &AppState,
    visible_since: String,
) -> Result<(Page<PatientRow>, Disclosure), ApiError> {
    let allow_test = state.settings.allow_test_nhs_numbers;
    let nhs = one_patient(p, &["identifier"], &["_id"], allow_test)?;
    let by_name = p.has_any(NAME_PARAMS);
    let scope = if by_name {
        decide(caller, Action::SearchPatientsByName)?
    } else {
        decide(caller, Action::SearchRecords)?
    };
    let filter = patient_filter(p)?;
    let count = p.count(DEFAULT_PAGE, state.settings.max_page_size)?;
    let cursor = p.cursor()?;
    let one = |row: Option<PatientRow>| {
        let rows = row.into_iter().filter(|r| filter.matches(r)).collect();
        Page::of(rows, |r| r.nhs_number.as_str(), cursor.as_deref(), count)
    };
    let found =
        match (&nhs, &scope) {
            (Some(n), Scope::OwnCouncil(own)) => one(match patients::get(conn, n.as_str())? {
                Some(row)
                    if row.created_by == own.as_str()
                        || patients::council_holds_flag(conn, n.as_str(), own.as_str())? =>
                {
                    Some(row)
                }
                _ => None,
            }),
            (None, Scope::OwnCouncil(own)) if by_name => {
                patients::search_of_council(conn, own.as_str(), &filter, cursor.as_deref(), count)?
            }
            (None, _) => return Err(ApiError::Forbidden(
                "search Patients by NHS number (identifier=https://fhir.nhs.uk/Id/nhs-number|…)"
                    .into(),
            )),
            (Some(n), Scope::ClinicianVisible) => {
                if flags::has_visible(conn, n.as_str(), &visible_since)? {
                    one(patients::get(conn, n.as_str())?)
                } else {
                    one(None)
                }
            }
            (Some(n), _) => one(patients::get(conn, n.as_str())?),
        };
    let mut disclosure = Disclosure::about(nhs.map(|n| n.as_str().to_owned()));
    for r in &found.rows {
        disclosure.reference(format!("Patient/{}/_history/{}", r.nhs_number, r.version));
    }
    if disclosure.patient.is_none() && found.rows.len() == 1 {
        disclosure.patient = found.rows.first().map(|r| r.nhs_number.clone());
    }
    Ok((found, disclosure))
}

/// GET and `POST …/_search`.
pub async fn search_patients(
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
        "Patient",
        &["identifier", "_id"],
        |params, _| Ok(params),
        |conn, caller, params, st, since| run_patient_search(conn, caller, &params, st, since),
    )
    .await?;
    let bundle = paged_bundle(
        &state.settings.base_url,
        "Patient",
        (ran.used, ran.cursor),
        ran.rows,
        |r| r.nhs_number.as_str(),
        patient::render,
    );
    Reply::ok(bundle).into_response(&req)
}
