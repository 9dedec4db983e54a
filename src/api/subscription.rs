//! What every Subscription interaction shares: who may hold a subscription for which council,
//! reading a submitted Subscription, and turning it into stored settings (issue "Council
//! notifications"; Subscriptions R5 Backport IG for R4). The interactions themselves live in
//! `create`, `read`, `update`, `delete`, `search`, `subscription_status` and
//! `subscription_events`, one file each like every other resource's.

use actix_web::{web, HttpRequest};

use crate::api::http::received_resource;
use crate::auth::Caller;
use crate::domain::SubscriptionStatus;
use crate::error::ApiError;
use crate::fhir::codec;
use crate::fhir::subscription::{self as fhir_sub, SubscriptionInput};
use crate::notify::endpoint::{self, EndpointRule};
use crate::records::policy::{decide, Action, Scope};
use crate::state::AppState;
use crate::store::columns::JsonList;
use crate::store::subscriptions::{Settings, SubscriptionRow};

/// Councils hold subscriptions for themselves; administrators see and manage all of them
/// (`records::policy`, action `ManageSubscriptions`).
pub fn require_subscriber(caller: &Caller) -> Result<Scope, ApiError> {
    Ok(decide(caller, Action::ManageSubscriptions)?)
}

/// A subscription may be seen and changed by its council and by administrators.
pub fn require_owner(caller: &Caller, row: &SubscriptionRow) -> Result<(), ApiError> {
    if !require_subscriber(caller)?.covers_council(&row.council) {
        return Err(ApiError::Forbidden(
            "this subscription belongs to another council".into(),
        ));
    }
    Ok(())
}

/// The council a new subscription is for: the filter's, which a council may only set to itself
/// (absent means itself); an administrator must name one.
pub fn owner_of(caller: &Caller, filter: Option<&str>) -> Result<String, ApiError> {
    match (require_subscriber(caller)?, filter) {
        (Scope::OwnCouncil(own), None) => Ok(own.as_str().to_owned()),
        (Scope::OwnCouncil(own), Some(c)) if c == own.as_str() => Ok(c.to_owned()),
        (Scope::OwnCouncil(own), Some(c)) => Err(ApiError::Forbidden(format!(
            "a council subscribes only to accesses to its own records; the filter names {c}, you are {}",
            own.as_str()
        ))),
        (_, Some(c)) => Ok(c.to_owned()),
        (_, None) => Err(ApiError::Unprocessable(vec![crate::error::Issue::new(
            "required",
            "Subscription.criteria.extension",
            "name the council: AuditEvent?council=<ODS code>",
        )])),
    }
}

/// Reads and checks a submitted Subscription (JSON or XML; the rules of [`fhir_sub::parse`],
/// then the FHIR R4 base definitions).
pub async fn submitted(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(serde_json::Value, SubscriptionInput), ApiError> {
    let value = received_resource(req, payload, state, "Subscription").await?;
    let controls = crate::fhir::json::control_characters(&value, "Subscription");
    if !controls.is_empty() {
        return Err(ApiError::Unprocessable(controls));
    }
    // The CP-IS rules first: they name every element at fault at once.
    let rule = EndpointRule::of(&state.settings);
    let input =
        fhir_sub::parse(&value, &|e| endpoint::check(e, rule)).map_err(ApiError::Unprocessable)?;
    codec::check_json(&value).map_err(|i| ApiError::Invalid(vec![i]))?;
    Ok((value, input))
}

fn headers_json(input: &SubscriptionInput) -> JsonList {
    JsonList(input.headers.clone())
}

/// A new subscription: `requested` (the worker's handshake makes it `active`) or `off`.
pub fn new_row(
    id: String,
    council: String,
    input: SubscriptionInput,
    secret: String,
    now: i64,
) -> SubscriptionRow {
    SubscriptionRow {
        id,
        council,
        status: input.status,
        reason: input.reason.clone(),
        end_at: input.end_at,
        endpoint: input.endpoint.clone(),
        headers: headers_json(&input),
        content: input.content.clone(),
        heartbeat_secs: input.heartbeat_secs,
        timeout_secs: input.timeout_secs,
        max_count: input.max_count,
        secret,
        event_count: 0,
        delivered_through: 0,
        error: None,
        attempts: 0,
        next_attempt_at: now,
        last_sent_at: None,
        heartbeat_at: None,
        lease_owner: None,
        lease_until: None,
        created_at: now,
        version: 1,
        updated_at: now,
    }
}

/// The settings after a council's update. A new endpoint or headers, or a subscription coming
/// back from `off` or `error`, is handshaken again (and retried at once); otherwise the status
/// stays as it is. Headers and secret are never shown, so a subscription read and sent back
/// has none: they change only when the council sends new ones.
pub fn updated(current: &SubscriptionRow, input: &SubscriptionInput, now: i64) -> Settings {
    let headers = if input.headers.is_empty() {
        current.headers.clone()
    } else {
        headers_json(input)
    };
    let rehandshake = input.endpoint != current.endpoint
        || headers != current.headers
        || matches!(
            current.status,
            SubscriptionStatus::Off | SubscriptionStatus::Error
        );
    let (status, attempts, error, next_attempt_at) = if input.status == SubscriptionStatus::Off {
        (
            SubscriptionStatus::Off,
            current.attempts,
            current.error.clone(),
            current.next_attempt_at,
        )
    } else if rehandshake {
        (SubscriptionStatus::Requested, 0, None, now)
    } else {
        (
            current.status,
            current.attempts,
            current.error.clone(),
            current.next_attempt_at,
        )
    };
    Settings {
        status,
        reason: input.reason.clone(),
        end_at: input.end_at,
        endpoint: input.endpoint.clone(),
        headers,
        content: input.content.clone(),
        heartbeat_secs: input.heartbeat_secs,
        timeout_secs: input.timeout_secs,
        max_count: input.max_count,
        secret: input
            .secret
            .clone()
            .unwrap_or_else(|| current.secret.clone()),
        error,
        attempts,
        next_attempt_at,
        heartbeat_at: input
            .heartbeat_secs
            .map(|s| current.last_sent_at.unwrap_or(now) + s * 1_000_000),
        version: current.version + 1,
        updated_at: now,
    }
}

/// Whether the stored settings differ from the current row (an update that changes nothing
/// keeps the version, as for every other resource).
pub fn changes(current: &SubscriptionRow, s: &Settings) -> bool {
    current.status != s.status
        || current.reason != s.reason
        || current.end_at != s.end_at
        || current.endpoint != s.endpoint
        || current.headers != s.headers
        || current.content != s.content
        || current.heartbeat_secs != s.heartbeat_secs
        || current.timeout_secs != s.timeout_secs
        || current.max_count != s.max_count
        || current.secret != s.secret
}

/// A subscription the caller may see (its council's, or any for an administrator), or
/// 403/404: what read and `$status` start from.
pub async fn owned(
    state: &AppState,
    caller: &Caller,
    id: String,
) -> Result<SubscriptionRow, ApiError> {
    require_subscriber(caller)?;
    let row = state
        .store
        .read(move |conn| found(crate::store::subscriptions::get(conn, &id)?, &id))
        .await?;
    require_owner(caller, &row)?;
    Ok(row)
}

/// The current subscription or 404.
pub fn found(row: Option<SubscriptionRow>, id: &str) -> Result<SubscriptionRow, ApiError> {
    row.ok_or_else(|| ApiError::NotFound(format!("Subscription/{id} does not exist")))
}
