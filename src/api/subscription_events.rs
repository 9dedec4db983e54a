//! `GET /Subscription/{id}/$events` (Subscriptions R5 Backport IG, operation `$events`): past
//! events of a subscription by number range, so a council can recover what its own outage made
//! it miss. Parameters `eventsSinceNumber` and `eventsUntilNumber` (inclusive; default: the
//! first event still kept, and the latest), `content` (`id-only` default, or `empty`). At most
//! `max_page_size` events per answer; a `next` link asks for the rest.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::api::http::Reply;
use crate::api::subscription::{found, require_owner, require_subscriber};
use crate::auth::Caller;
use crate::error::{ApiError, Issue};
use crate::fhir::search::{pairs, Params};
use crate::fhir::subscription::{notification, Kind};
use crate::state::AppState;
use crate::store::{micros, subscriptions};

fn number(params: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    match params.one(name)? {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| {
                ApiError::Invalid(vec![Issue::new(
                    "invalid",
                    name,
                    format!("{name} '{v}' is not an event number (a whole number from 1)"),
                )])
            }),
    }
}

pub async fn subscription_events(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_subscriber(&caller)?;
    let id = path.into_inner();
    let params = Params::new(
        pairs(req.query_string())?,
        &["eventsSinceNumber", "eventsUntilNumber", "content"],
        crate::fhir::search::lenient(&req),
    )?;
    let since = number(&params, "eventsSinceNumber")?;
    let until = number(&params, "eventsUntilNumber")?;
    let content = match params.one("content")? {
        None | Some("id-only") => "id-only",
        Some("empty") => "empty",
        Some(other) => {
            return Err(ApiError::Invalid(vec![Issue::new(
                "not-supported",
                "content",
                format!("content '{other}' is not offered; use id-only or empty (no child data travels in a notification)"),
            )]))
        }
    };
    let limit = i64::try_from(state.settings.max_page_size).unwrap_or(100);
    let (row, events, last_wanted) = state
        .store
        .read(move |conn| {
            let row = found(subscriptions::get(conn, &id)?, &id)?;
            let from = match since {
                Some(n) => n,
                None => subscriptions::first_kept(conn, &id)?.unwrap_or(1),
            };
            let to = until.unwrap_or(row.event_count).min(row.event_count);
            let events = subscriptions::events(conn, &id, from, to, limit)?;
            Ok::<_, ApiError>((row, events, to))
        })
        .await?;
    require_owner(&caller, &row)?;
    let base = &state.settings.base_url;
    let mut bundle = notification(
        base,
        &row,
        Kind::QueryEvent,
        &events,
        content,
        micros(state.now()),
    );
    if let Some(last) = events.last().map(|e| e.event_number) {
        if events.len() as i64 == limit && last < last_wanted {
            bundle["link"] = json!([{
                "relation": "next",
                "url": format!(
                    "{base}/Subscription/{}/$events?eventsSinceNumber={}&eventsUntilNumber={last_wanted}&content={content}",
                    row.id,
                    last + 1
                ),
            }]);
        }
    }
    Reply::ok(bundle).into_response(&req)
}
