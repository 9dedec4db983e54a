//! `GET /Organization?…`: the councils (no personal data, so not audited).

use super::*;
use crate::fhir::organization;

/// GET and `POST …/_search`.
pub async fn search_organizations(
    req: HttpRequest,
    _caller: Caller,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let params = Params::new(
        params_of(&req, &body)?,
        params::accepted("Organization"),
        lenient(&req),
    )?;
    let mut codes: Vec<String> = Vec::new();
    for v in params.all("identifier").iter().flat_map(|v| v.split(',')) {
        match token(v) {
            (Some(s), _) if s != ODS_ORG_SYSTEM => {
                return Err(invalid(
                    "identifier",
                    format!("identifier system '{s}' is not the ODS code system"),
                ))
            }
            (_, c) => codes.push(c.to_owned()),
        }
    }
    codes.extend(
        params
            .all("_id")
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::to_owned),
    );
    let names: Vec<String> = params
        .all("name")
        .iter()
        .map(|n| n.to_lowercase())
        .collect();
    let count = params.count(DEFAULT_PAGE, state.settings.max_page_size)?;
    let cursor = params.cursor()?;
    let all = state
        .store
        .read(|conn| Ok::<_, ApiError>(councils::all(conn)?))
        .await?;
    let rows: Vec<CouncilRow> = all
        .into_iter()
        .filter(|c| codes.is_empty() || codes.contains(&c.ods_code))
        .filter(|c| {
            names
                .iter()
                .all(|n| c.name.to_lowercase().contains(n.as_str()))
        })
        .collect();
    let bundle = paged_bundle(
        &state.settings.base_url,
        "Organization",
        (params.query_string(true), cursor.clone()),
        Page::of(rows, |c| c.ods_code.as_str(), cursor.as_deref(), count),
        |c| c.ods_code.as_str(),
        organization::render,
    );
    Reply::ok(bundle).into_response(&req)
}
