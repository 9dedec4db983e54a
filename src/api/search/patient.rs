//! `GET /Patient?…`: by NHS number (audited), or by name and birth date for a council among the
//! people it is responsible for.

use super::*;
use crate::fhir::patient;

const NAME_PARAMS: &[&str] = &["family", "given", "name", "birthdate"];

fn run_patient_search(
    conn: &mut DbConn,
    caller: &Caller,
    p: &Params,
    state: &AppState,
    visible_since: String,
) -> Result<(Vec<PatientRow>, Disclosure), ApiError> {
    let allow_test = state.settings.allow_test_nhs_numbers;
    let nhs = one_patient(p, &["identifier"], &["_id"], allow_test)?;
    let by_name = p.has_any(NAME_PARAMS);
    let scope = if by_name {
        decide(caller, Action::SearchPatientsByName)?
    } else {
        decide(caller, Action::SearchRecords)?
    };
    let candidates: Vec<PatientRow> =
        match (&nhs, &scope) {
            (Some(n), Scope::OwnCouncil(own)) => match patients::get(conn, n.as_str())? {
                Some(row)
                    if row.created_by == own.as_str()
                        || patients::council_holds_flag(conn, n.as_str(), own.as_str())? =>
                {
                    vec![row]
                }
                _ => Vec::new(),
            },
            (None, Scope::OwnCouncil(own)) if by_name => patients::of_council(conn, own.as_str())?,
            (None, _) => return Err(ApiError::Forbidden(
                "search Patients by NHS number (identifier=https://fhir.nhs.uk/Id/nhs-number|…)"
                    .into(),
            )),
            (Some(n), Scope::ClinicianVisible) => {
                if flags::has_visible(conn, n.as_str(), &visible_since)? {
                    patients::get(conn, n.as_str())?.into_iter().collect()
                } else {
                    Vec::new()
                }
            }
            (Some(n), _) => patients::get(conn, n.as_str())?.into_iter().collect(),
        };
    let lower = |s: &str| s.to_lowercase();
    let family = p.all("family");
    let given = p.all("given");
    let name = p.all("name");
    let births = p
        .all("birthdate")
        .into_iter()
        .map(|v| date_param("birthdate", v))
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<PatientRow> = candidates
        .into_iter()
        .filter(|r| {
            let givens: Vec<String> = r.given.iter().map(|g| lower(g)).collect();
            let fam = lower(&r.family);
            let birth = full_date(&r.birth_date).unwrap_or_default();
            family.iter().all(|f| fam.starts_with(&lower(f)))
                && given
                    .iter()
                    .all(|g| givens.iter().any(|x| x.starts_with(&lower(g))))
                && name.iter().all(|n| {
                    let n = lower(n);
                    fam.starts_with(&n) || givens.iter().any(|x| x.starts_with(&n))
                })
                && births.iter().all(|b| b.matches_period(birth, Some(birth)))
        })
        .collect();
    let mut disclosure = Disclosure::about(nhs.map(|n| n.as_str().to_owned()));
    for r in &rows {
        disclosure.reference(format!("Patient/{}/_history/{}", r.nhs_number, r.version));
    }
    if disclosure.patient.is_none() && rows.len() == 1 {
        disclosure.patient = rows.first().map(|r| r.nhs_number.clone());
    }
    Ok((rows, disclosure))
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
        (ran.used, ran.cursor, ran.count),
        ran.rows,
        |r| r.nhs_number.as_str(),
        patient::render,
    );
    Reply::ok(bundle).into_response(&req)
}
