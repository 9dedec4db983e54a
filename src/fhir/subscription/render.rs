//! The Subscription as a council reads it back.

use serde_json::{json, Map, Value};

use super::*;
use crate::fhir::instant;
use crate::store::subscriptions::SubscriptionRow;

fn backport_ext(name: &str, key: &str, value: Value) -> Value {
    let mut m = Map::new();
    m.insert("url".into(), json!(format!("{BACKPORT}/{name}")));
    m.insert(key.into(), value);
    Value::Object(m)
}

/// The Subscription as a council reads it: never the headers' values nor the secret.
pub fn render(row: &SubscriptionRow) -> Value {
    let mut channel_ext = Vec::new();
    if let Some(h) = row.heartbeat_secs {
        channel_ext.push(backport_ext(HEARTBEAT_EXT, "valueUnsignedInt", json!(h)));
    }
    channel_ext.push(backport_ext(
        TIMEOUT_EXT,
        "valueUnsignedInt",
        json!(row.timeout_secs),
    ));
    channel_ext.push(backport_ext(
        MAX_COUNT_EXT,
        "valuePositiveInt",
        json!(row.max_count),
    ));
    let mut r = json!({
        "resourceType": "Subscription",
        "id": row.id,
        "meta": {
            "versionId": row.version.to_string(),
            "lastUpdated": instant(row.updated_at),
            "profile": [format!("{BACKPORT}/backport-subscription")],
        },
        "status": row.status.as_str(),
        "reason": row.reason,
        "criteria": TOPIC,
        "_criteria": { "extension": [backport_ext(FILTER_EXT, "valueString", json!(format!("AuditEvent?council={}", row.council)))] },
        "channel": {
            "extension": channel_ext,
            "type": "rest-hook",
            "endpoint": row.endpoint,
            "payload": "application/fhir+json",
            "_payload": { "extension": [backport_ext(CONTENT_EXT, "valueCode", json!(row.content))] },
        },
    });
    if let Some(e) = row.end_at {
        r["end"] = json!(instant(e));
    }
    if let Some(e) = &row.error {
        r["error"] = json!(e);
    }
    r
}

/// The create response: the rendered Subscription plus the signing secret, shown this once.
pub fn render_with_secret(row: &SubscriptionRow) -> Value {
    let mut r = render(row);
    if let Some(exts) = r["channel"]["extension"].as_array_mut() {
        exts.push(json!({ "url": SECRET_EXTENSION, "valueString": row.secret }));
    }
    r
}
