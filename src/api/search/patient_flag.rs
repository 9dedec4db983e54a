//! `GET /PatientFlag?patient={NHS number}[&code=…]`: the look-up in the shape of the Patient
//! Flags API (beta; "Retrieve a PatientFlag with associated resources"): per plan a `Flag` with
//! the CP-IS code, its `CarePlan` and the council's `CareTeam`. The same search as the Flag
//! look-up underneath: the same access rules, audit and notification.

use super::care_team::person_query;
use super::flag::run_flag_search;
use super::*;
use crate::fhir::national;

/// The Patient Flags codes that mean CP-IS (the category code this server files plans under,
/// and the flag-category code of the Patient Flags examples).
const CPIS_CODES: &[&str] = &["child-protection-information-system-flag", "CP-IS"];

/// Whether a `code` parameter asks for CP-IS flags; another flag type (reasonable adjustments,
/// FGM) is not held here, and finds nothing.
fn asks_for_cpis(p: &Params) -> bool {
    p.all("code")
        .iter()
        .flat_map(|v| v.split(','))
        .all(|v| CPIS_CODES.contains(&token(v).1))
}

/// GET and `POST …/_search`.
pub async fn search_patient_flags(
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
        "PatientFlag",
        &["patient", "patient:identifier"],
        |p, st| Ok((person_query(&p, st)?, asks_for_cpis(&p))),
        |conn, caller, (query, cpis), _, since| {
            let (mut page, disclosure) = run_flag_search(conn, caller, query, since)?;
            if !cpis {
                page.flags.clear();
                page.total = 0;
                page.next = None;
                return Ok((page, Disclosure::about(disclosure.patient)));
            }
            Ok((page, disclosure))
        },
    )
    .await?;
    let page = ran.rows;
    let mut entries = Vec::with_capacity(page.flags.len() * 3);
    for f in &page.flags {
        let council = page.council_of(f);
        entries.push(Entry {
            resource_type: "Flag",
            id: f.id.clone(),
            resource: national::patient_flag(f),
            include: false,
        });
        entries.push(Entry {
            resource_type: "CarePlan",
            id: national::care_plan_id(&f.id),
            resource: national::care_plan(f, council),
            include: true,
        });
        entries.push(Entry {
            resource_type: "CareTeam",
            id: national::council_team_id(&f.id),
            resource: national::council_team(f, council),
            include: true,
        });
    }
    let bundle = SearchSet {
        base: &state.settings.base_url,
        path: "PatientFlag",
        query: ran.used,
        cursor: ran.cursor,
        next_cursor: page.next.clone(),
        total: Some(page.total),
        entries,
    };
    Reply::ok(bundle.render()).into_response(&req)
}
