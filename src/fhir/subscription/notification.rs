//! What the notifier posts and `$status` / `$events` answer: a `history` Bundle whose first
//! entry is the backport `SubscriptionStatus` Parameters.

use serde_json::{json, Value};

use super::*;
use crate::fhir::bundle::Bundle;
use crate::fhir::instant;
use crate::store::subscriptions::{EventRow, SubscriptionRow};

/// The kind of a SubscriptionStatus (FHIR `subscription-notification-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Handshake,
    Heartbeat,
    EventNotification,
    QueryStatus,
    QueryEvent,
}

impl Kind {
    pub fn code(self) -> &'static str {
        match self {
            Kind::Handshake => "handshake",
            Kind::Heartbeat => "heartbeat",
            Kind::EventNotification => "event-notification",
            Kind::QueryStatus => "query-status",
            Kind::QueryEvent => "query-event",
        }
    }
}

/// The backport SubscriptionStatus Parameters for `row`, listing `events` with `content`.
pub fn status(
    base: &str,
    row: &SubscriptionRow,
    kind: Kind,
    events: &[EventRow],
    content: &str,
) -> Value {
    let mut params = vec![
        json!({ "name": "subscription", "valueReference": { "reference": format!("{base}/Subscription/{}", row.id) } }),
        json!({ "name": "topic", "valueCanonical": TOPIC }),
        json!({ "name": "status", "valueCode": row.status.as_str() }),
        json!({ "name": "type", "valueCode": kind.code() }),
        json!({ "name": "events-since-subscription-start", "valueString": row.event_count.to_string() }),
    ];
    for e in events {
        let mut parts = vec![
            json!({ "name": "event-number", "valueString": e.event_number.to_string() }),
            json!({ "name": "timestamp", "valueInstant": instant(e.recorded) }),
        ];
        if content == "id-only" {
            parts.push(json!({ "name": "focus", "valueReference": { "reference": format!("{base}/AuditEvent/{}", e.audit_event_id) } }));
        }
        params.push(json!({ "name": "notification-event", "part": parts }));
    }
    if let Some(err) = &row.error {
        params.push(json!({ "name": "error", "valueCodeableConcept": { "text": err } }));
    }
    json!({
        "resourceType": "Parameters",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": { "profile": [format!("{BACKPORT}/backport-subscription-status-r4")] },
        "parameter": params,
    })
}

/// A notification (or `$events` answer): a `history` Bundle, the SubscriptionStatus first, then
/// for `id-only` one entry per AuditEvent with its URL only. `content` is the subscription's,
/// or what a `$events` caller asked for.
pub fn notification(
    base: &str,
    row: &SubscriptionRow,
    kind: Kind,
    events: &[EventRow],
    content: &str,
    now: i64,
) -> Value {
    let status = status(base, row, kind, events, content);
    let status_id = status["id"].as_str().unwrap_or_default().to_owned();
    let mut entries = vec![json!({
        "fullUrl": format!("urn:uuid:{status_id}"),
        "resource": status,
        "request": { "method": "GET", "url": format!("{base}/Subscription/{}/$status", row.id) },
        "response": { "status": "200" },
    })];
    if content == "id-only" {
        for e in events {
            entries.push(json!({
                "fullUrl": format!("{base}/AuditEvent/{}", e.audit_event_id),
                "request": { "method": "GET", "url": format!("{base}/AuditEvent/{}", e.audit_event_id) },
                "response": { "status": "200" },
            }));
        }
    }
    Bundle::new("history")
        .meta(json!({ "profile": [format!("{BACKPORT}/backport-subscription-notification-r4")] }))
        .timestamp(now)
        .entries(entries)
        .build()
}
