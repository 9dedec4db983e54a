//! Where a notification may be posted (DESIGN.md "notification outbox"; the request-forgery
//! rule): `https` anywhere, plain `http` only to this machine and only when configured. Checked
//! when a council submits a Subscription and again before every post, so a subscription stored
//! under a looser configuration is not posted to where the current one forbids.

use crate::config::Settings;

/// Where an endpoint may point.
#[derive(Debug, Clone, Copy)]
pub struct EndpointRule {
    /// Plain `http` to this machine (development and tests).
    pub allow_loopback: bool,
}

impl EndpointRule {
    pub fn of(settings: &Settings) -> Self {
        EndpointRule {
            allow_loopback: settings.notify_allow_loopback,
        }
    }
}

/// Whether `endpoint` is somewhere a notification may go: `https`, or `http` to a loopback
/// address when the rule allows it.
pub fn check(endpoint: &str, rule: EndpointRule) -> Result<(), String> {
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
