//! Subscription (FHIR R4 §2.46.0 Subscription, in the form of the Subscriptions R5 Backport IG
//! for R4) and the notification payloads: the `history` Bundle whose first entry is the
//! backport `SubscriptionStatus` Parameters (handshake, heartbeat, event-notification, and the
//! `$status` / `$events` answers).
//!
//! One topic: every unscheduled access that disclosed one of a council's records (DOMAIN.md
//! "Notification to the council", the national service's Access to Service Notification). The
//! payload is `id-only` or `empty`: a notification names the AuditEvent, and the council fetches
//! it with its own token, so no child data travels in a webhook.

use crate::domain::SubscriptionStatus;
use serde_json::{json, Map, Value};

use crate::error::Issue;
use crate::fhir::{instant, profile::parse_instant};
use crate::store::subscriptions::{EventRow, SubscriptionRow};

pub const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";
pub const TOPIC: &str =
    "https://cpis-fhir.example.org/fhir/SubscriptionTopic/cpis-access-notification";
/// The channel extension through which a council may give its own signing secret.
pub const SECRET_EXTENSION: &str =
    "https://cpis-fhir.example.org/fhir/StructureDefinition/subscription-signing-secret";
/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-CPIS-Signature";

const FILTER_EXT: &str = "backport-filter-criteria";
const HEARTBEAT_EXT: &str = "backport-heartbeat-period";
const TIMEOUT_EXT: &str = "backport-timeout";
const MAX_COUNT_EXT: &str = "backport-max-count";
const CONTENT_EXT: &str = "backport-payload-content";

pub const DEFAULT_TIMEOUT_SECS: i64 = 10;
pub const DEFAULT_MAX_COUNT: i64 = 20;

/// What a council asked for, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionInput {
    /// `requested` or `off` (a council asking for `active` gets a handshake first).
    pub status: SubscriptionStatus,
    pub reason: String,
    pub end_at: Option<i64>,
    /// The council named by the filter, if one was given.
    pub council: Option<String>,
    pub endpoint: String,
    pub headers: Vec<String>,
    pub content: String,
    pub heartbeat_secs: Option<i64>,
    pub timeout_secs: i64,
    pub max_count: i64,
    pub secret: Option<String>,
}

/// Where an endpoint may point.
#[derive(Debug, Clone, Copy)]
pub struct EndpointRule {
    /// Plain `http` to this machine (development and tests).
    pub allow_loopback: bool,
}

fn ext<'a>(holder: &'a Value, name: &str) -> Vec<&'a Value> {
    let url = format!("{BACKPORT}/{name}");
    holder["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == url.as_str())
        .collect()
}

/// Headers the server sets itself, which a subscription may not replace.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "x-cpis-signature",
];

fn check_header(h: &str) -> Result<(), String> {
    let Some((name, value)) = h.split_once(':') else {
        return Err(format!("'{h}' is not 'Name: value'"));
    };
    let name = name.trim();
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!("'{name}' is not a valid header name"));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("the server sets the {name} header itself"));
    }
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(format!("the value of {name} holds control characters"));
    }
    Ok(())
}

/// Whether `endpoint` is somewhere a notification may go: `https`, or `http` to a loopback
/// address when the rule allows it.
pub fn check_endpoint(endpoint: &str, rule: EndpointRule) -> Result<(), String> {
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| format!("'{endpoint}' is not an absolute URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.rsplit_once('@') {
        Some(_) => return Err("the endpoint may not carry credentials; use channel.header".into()),
        None => authority,
    };
    let host = if host.starts_with('[') {
        host.split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default().to_owned()
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("'{endpoint}' names no host"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http"
            if rule.allow_loopback
                && ["127.0.0.1", "[::1]", "localhost"].contains(&host.as_str()) =>
        {
            Ok(())
        }
        "http" if rule.allow_loopback => Err(
            "plain http is allowed only to this machine (127.0.0.1, [::1], localhost); use https"
                .into(),
        ),
        _ => Err("the endpoint must be an https URL".into()),
    }
}

/// The elements a Subscription may carry here; anything else is refused, as for every other
/// resource this server takes.
const ELEMENTS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "status",
    "end",
    "reason",
    "criteria",
    "_criteria",
    "error",
    "channel",
];
const CHANNEL_ELEMENTS: &[&str] = &[
    "extension",
    "type",
    "endpoint",
    "payload",
    "_payload",
    "header",
];

fn unsigned(
    v: &Value,
    ext_name: &str,
    key: &str,
    at: &str,
    issues: &mut Vec<Issue>,
) -> Option<i64> {
    let found = ext(v, ext_name);
    match found.as_slice() {
        [] => None,
        [one] => match one[key].as_i64() {
            Some(n) => Some(n),
            None => {
                issues.push(Issue::new("value", at, format!("{ext_name} needs {key}")));
                None
            }
        },
        _ => {
            issues.push(Issue::new(
                "structure",
                at,
                format!("{ext_name} may be given once"),
            ));
            None
        }
    }
}

/// Parses a submitted Subscription; every problem is reported together.
pub fn parse(v: &Value, rule: EndpointRule) -> Result<SubscriptionInput, Vec<Issue>> {
    let mut issues = Vec::new();
    if let Some(obj) = v.as_object() {
        for k in obj.keys().filter(|k| !ELEMENTS.contains(&k.as_str())) {
            issues.push(Issue::new(
                "structure",
                format!("Subscription.{k}"),
                format!("Subscription.{k} is not supported by this server"),
            ));
        }
    }
    let status = match v["status"].as_str() {
        Some("requested" | "active") => SubscriptionStatus::Requested,
        Some("off") => SubscriptionStatus::Off,
        Some("error") => {
            issues.push(Issue::new("value", "Subscription.status", "status 'error' is set by the server, not by a client; send requested, active or off"));
            SubscriptionStatus::Off
        }
        Some(other) => {
            issues.push(Issue::new(
                "value",
                "Subscription.status",
                format!("'{other}' is not a Subscription status (requested, active, off)"),
            ));
            SubscriptionStatus::Off
        }
        None => {
            issues.push(Issue::new(
                "required",
                "Subscription.status",
                "Subscription.status is required (requested, active or off)",
            ));
            SubscriptionStatus::Off
        }
    };
    let reason = match v["reason"].as_str().map(str::trim) {
        Some(r) if !r.is_empty() && r.len() <= 500 => r.to_owned(),
        Some(_) => {
            issues.push(Issue::new(
                "value",
                "Subscription.reason",
                "Subscription.reason must be 1 to 500 characters",
            ));
            String::new()
        }
        None => {
            issues.push(Issue::new(
                "required",
                "Subscription.reason",
                "Subscription.reason is required",
            ));
            String::new()
        }
    };
    let end_at = match v.get("end") {
        None => None,
        Some(e) => match e.as_str().and_then(parse_instant) {
            Some(t) => Some(t.timestamp_micros()),
            None => {
                issues.push(Issue::new(
                    "value",
                    "Subscription.end",
                    "Subscription.end must be an instant with a time zone",
                ));
                None
            }
        },
    };
    match v["criteria"].as_str() {
        Some(TOPIC) => {}
        Some(other) => issues.push(Issue::new(
            "not-supported",
            "Subscription.criteria",
            format!("'{other}' is not a topic of this server; the only topic is {TOPIC}"),
        )),
        None => issues.push(Issue::new(
            "required",
            "Subscription.criteria",
            format!("Subscription.criteria must be the topic {TOPIC}"),
        )),
    }
    let filters = ext(&v["_criteria"], FILTER_EXT);
    let council = match filters.as_slice() {
        [] => None,
        [one] => {
            let text = one["valueString"].as_str().unwrap_or_default();
            let value = text
                .strip_prefix("AuditEvent?")
                .unwrap_or(text)
                .strip_prefix("council=");
            match value {
                Some(ods) if !ods.is_empty() && ods.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                    Some(ods.to_ascii_uppercase())
                }
                _ => {
                    issues.push(Issue::new(
                        "value",
                        "Subscription.criteria.extension",
                        format!("filter '{text}' must be AuditEvent?council=<ODS code>"),
                    ));
                    None
                }
            }
        }
        _ => {
            issues.push(Issue::new(
                "structure",
                "Subscription.criteria.extension",
                "give one filter: AuditEvent?council=<ODS code>",
            ));
            None
        }
    };
    let channel = &v["channel"];
    if let Some(obj) = channel.as_object() {
        for k in obj
            .keys()
            .filter(|k| !CHANNEL_ELEMENTS.contains(&k.as_str()))
        {
            issues.push(Issue::new(
                "structure",
                format!("Subscription.channel.{k}"),
                format!("Subscription.channel.{k} is not supported by this server"),
            ));
        }
    } else {
        issues.push(Issue::new(
            "required",
            "Subscription.channel",
            "Subscription.channel is required",
        ));
    }
    match channel["type"].as_str() {
        Some("rest-hook") => {}
        Some(other) => issues.push(Issue::new(
            "not-supported",
            "Subscription.channel.type",
            format!("channel type '{other}' is not supported; use rest-hook"),
        )),
        None => issues.push(Issue::new(
            "required",
            "Subscription.channel.type",
            "Subscription.channel.type is required (rest-hook)",
        )),
    }
    let endpoint = match channel["endpoint"].as_str() {
        Some(e) => {
            if let Err(why) = check_endpoint(e, rule) {
                issues.push(Issue::new("value", "Subscription.channel.endpoint", why));
            }
            e.to_owned()
        }
        None => {
            issues.push(Issue::new(
                "required",
                "Subscription.channel.endpoint",
                "Subscription.channel.endpoint is required",
            ));
            String::new()
        }
    };
    match channel["payload"].as_str() {
        None | Some("application/fhir+json" | "application/json") => {}
        Some(other) => issues.push(Issue::new(
            "not-supported",
            "Subscription.channel.payload",
            format!("payload '{other}' is not supported; use application/fhir+json"),
        )),
    }
    let content = match ext(&channel["_payload"], CONTENT_EXT)
        .first()
        .and_then(|e| e["valueCode"].as_str())
    {
        None | Some("id-only") => "id-only".to_owned(),
        Some("empty") => "empty".to_owned(),
        Some("full-resource") => {
            issues.push(Issue::new("business-rule", "Subscription.channel.payload.extension", "full-resource is refused: no child data travels in a notification; use id-only and fetch the AuditEvent with your own token"));
            String::new()
        }
        Some(other) => {
            issues.push(Issue::new(
                "value",
                "Subscription.channel.payload.extension",
                format!("'{other}' is not a payload content (id-only, empty)"),
            ));
            String::new()
        }
    };
    let mut headers = Vec::new();
    for (i, h) in channel["header"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        match h.as_str().map(|h| (h, check_header(h))) {
            Some((h, Ok(()))) => headers.push(h.trim().to_owned()),
            Some((_, Err(why))) => issues.push(Issue::new(
                "value",
                format!("Subscription.channel.header[{i}]"),
                why,
            )),
            None => issues.push(Issue::new(
                "value",
                format!("Subscription.channel.header[{i}]"),
                "a header is a string 'Name: value'",
            )),
        }
    }
    if headers.len() > 10 || headers.iter().map(String::len).sum::<usize>() > 8192 {
        issues.push(Issue::new(
            "value",
            "Subscription.channel.header",
            "at most 10 headers, 8 KiB in all",
        ));
    }
    let at = "Subscription.channel.extension";
    let heartbeat_secs = unsigned(channel, HEARTBEAT_EXT, "valueUnsignedInt", at, &mut issues);
    if heartbeat_secs.is_some_and(|s| !(10..=7 * 86_400).contains(&s)) {
        issues.push(Issue::new(
            "value",
            at,
            "the heartbeat period must be 10 seconds to 7 days",
        ));
    }
    let timeout_secs = unsigned(channel, TIMEOUT_EXT, "valueUnsignedInt", at, &mut issues)
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(1..=60).contains(&timeout_secs) {
        issues.push(Issue::new(
            "value",
            at,
            "the timeout must be 1 to 60 seconds",
        ));
    }
    let max_count = unsigned(channel, MAX_COUNT_EXT, "valuePositiveInt", at, &mut issues)
        .unwrap_or(DEFAULT_MAX_COUNT);
    if !(1..=100).contains(&max_count) {
        issues.push(Issue::new("value", at, "max-count must be 1 to 100"));
    }
    let secrets: Vec<&Value> = channel["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == SECRET_EXTENSION)
        .collect();
    let secret = match secrets.as_slice() {
        [] => None,
        [one] => match one["valueString"].as_str() {
            Some(s) if (32..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(s.to_owned())
            }
            _ => {
                issues.push(Issue::new(
                    "value",
                    at,
                    "a signing secret is 32 to 256 printable characters",
                ));
                None
            }
        },
        _ => {
            issues.push(Issue::new(
                "structure",
                at,
                "give at most one signing secret",
            ));
            None
        }
    };
    let known: Vec<String> = [HEARTBEAT_EXT, TIMEOUT_EXT, MAX_COUNT_EXT]
        .iter()
        .map(|n| format!("{BACKPORT}/{n}"))
        .chain([SECRET_EXTENSION.to_owned()])
        .collect();
    for e in channel["extension"].as_array().into_iter().flatten() {
        let url = e["url"].as_str().unwrap_or_default();
        if !known.iter().any(|k| k == url) {
            issues.push(Issue::new(
                "not-supported",
                at,
                format!("extension '{url}' is not supported on the channel"),
            ));
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(SubscriptionInput {
        status,
        reason,
        end_at,
        council,
        endpoint,
        headers,
        content,
        heartbeat_secs,
        timeout_secs,
        max_count,
        secret,
    })
}

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
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": { "profile": [format!("{BACKPORT}/backport-subscription-notification-r4")] },
        "type": "history",
        "timestamp": instant(now),
        "entry": entries,
    })
}
