//! `GET /CareTeam?patient:identifier=…`: the look-up in the shape of NHS England's CP-IS FHIR R4
//! API (Consumer guide, "Design/Interactions"): one `CareTeam` per plan, or an empty searchset.
//! The same search as the Flag look-up underneath — the same access rules, the same audit before
//! anything is disclosed, the same notification to the council.

use super::flag::{run_flag_search, FlagQuery};
use super::*;
use crate::fhir::national;

/// GET and `POST …/_search`.
pub async fn search_care_teams(
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
        "CareTeam",
        &[
            "patient:identifier",
            "subject:identifier",
            "patient",
            "subject",
        ],
        |p, st| person_query(&p, st),
        |conn, caller, query, _, since| run_flag_search(conn, caller, query, since),
    )
    .await?;
    let page = ran.rows;
    let entries = page
        .flags
        .iter()
        .map(|f| Entry {
            resource_type: "CareTeam",
            id: f.id.clone(),
            resource: national::care_team(f, page.council_of(f)),
            include: false,
        })
        .collect();
    let bundle = SearchSet {
        base: &state.settings.base_url,
        path: "CareTeam",
        query: ran.used,
        cursor: ran.cursor,
        next_cursor: page.next.clone(),
        total: Some(page.total),
        entries,
    };
    Reply::ok(bundle.render()).into_response(&req)
}

/// The person a national view is asked about (by identifier or reference), required.
pub(super) fn person_query(p: &Params, state: &AppState) -> Result<FlagQuery, ApiError> {
    let patient = one_patient(
        p,
        &["patient:identifier", "subject:identifier"],
        &["patient", "subject"],
        state.settings.allow_test_nhs_numbers,
    )?
    .ok_or_else(|| {
        ApiError::InvalidSearch(
            "search by NHS number: patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{NHS number}"
                .into(),
        )
    })?;
    Ok(FlagQuery::of_person(
        patient,
        p.count(DEFAULT_PAGE, state.settings.max_page_size)?,
        p.cursor()?,
    ))
}
