//! `GET /Subscription?…`: a council's own subscriptions; administrators see all.

use super::*;

pub async fn search_subscriptions(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    crate::api::subscription::require_subscriber(&caller)?;
    let params = Params::new(
        params_of(&req, &body)?,
        params::accepted("Subscription"),
        lenient(&req),
    )?;
    let statuses: Vec<String> = params
        .all("status")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::to_owned)
        .collect();
    let ids: Vec<String> = params
        .all("_id")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::to_owned)
        .collect();
    let count = params.count(DEFAULT_PAGE, state.settings.max_page_size)?;
    let cursor = params.cursor()?;
    let council = decide(&caller, Action::ManageSubscriptions)?
        .council()
        .map(|own| own.as_str().to_owned());
    let rows = state
        .store
        .read(move |conn| {
            Ok::<_, ApiError>(crate::store::subscriptions::list(conn, council.as_deref())?)
        })
        .await?;
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| statuses.is_empty() || statuses.iter().any(|s| s == r.status.as_str()))
        .filter(|r| ids.is_empty() || ids.contains(&r.id))
        .collect();
    let bundle = paged_bundle(
        &state.settings.base_url,
        "Subscription",
        (params.query_string(true), cursor, count),
        rows,
        |r| r.id.as_str(),
        crate::fhir::subscription::render,
    );
    Reply::ok(bundle).into_response(&req)
}
