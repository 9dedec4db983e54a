//! A submitted Subscription read and checked (the backport IG's extensions, the channel,
//! the council's filter, the headers it may set); every problem is reported together.

use serde_json::Value;

use super::*;
use crate::domain::SubscriptionStatus;
use crate::error::Issue;
use crate::fhir::profile::parse_instant;

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

/// Parses a submitted Subscription; every problem is reported together. `endpoint_allowed` is
/// the notifier's rule for where a notification may go (`notify::endpoint`).
pub fn parse(
    v: &Value,
    endpoint_allowed: &dyn Fn(&str) -> Result<(), String>,
) -> Result<SubscriptionInput, Vec<Issue>> {
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
            if let Err(why) = endpoint_allowed(e) {
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
