//! `GET /Subscription?…`: a council's own subscriptions; administrators see all.

use super::*;
use crate::domain::SubscriptionStatus;

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
    let split = |name: &str| -> Vec<String> {
        params
            .all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::to_owned)
            .collect()
    };
    let statuses = split("status")
        .iter()
        .map(|v| {
            SubscriptionStatus::parse(v).ok_or_else(|| {
                invalid(
                    "status",
                    format!("status '{v}' is not a Subscription status"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ids = split("_id");
    let count = params.count(DEFAULT_PAGE, state.settings.max_page_size)?;
    let cursor = params.cursor()?;
    let council = decide(&caller, Action::ManageSubscriptions)?
        .council()
        .map(|own| own.as_str().to_owned());
    let after = cursor.clone();
    let found = state
        .store
        .read(move |conn| {
            Ok::<_, ApiError>(crate::store::subscriptions::search(
                conn,
                council.as_deref(),
                &statuses,
                &ids,
                after.as_deref(),
                count,
            )?)
        })
        .await?;
    let bundle = paged_bundle(
        &state.settings.base_url,
        "Subscription",
        (params.query_string(true), cursor),
        found,
        |r| r.id.as_str(),
        crate::fhir::subscription::render,
    );
    Reply::ok(bundle).into_response(&req)
}
