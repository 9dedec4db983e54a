//! Who a verified token says is calling, read the way its issuer writes it (DOMAIN.md "Who may
//! do what (national RBAC)").
//!
//! - `cpis`: this service's own claims — `role` (clinician, clinician-scheduled, council,
//!   auditor, admin), `org` (ODS code), `sub`, `name`.
//! - `cis2`: NHS CIS2 Authentication (public developer pages "Scopes and claims", "National RBAC
//!   for developers", "Role selection"): `selected_roleid` names one role profile among
//!   `nhsid_nrbac_roles` (each with `person_roleid`, `org_code`, `role_code` such as
//!   `S8000:G8000:R8000`, and `activity_codes`). Activity `B0107` ("View CP-IS Flag") is
//!   unscheduled care, `B0170` ("… without sending an ASN") scheduled care; the job role `R0001`
//!   (Privacy Officer) is the audit team. The organisation is that profile's `org_code`; the user
//!   is `uid` (the SDS user id), else `sub`; the name is `name`, else given and family names.
//!   A CIS2 role never makes a council or an administrator: those are system callers with tokens
//!   of this service's own shape.

use serde_json::Value;

use crate::auth::jwt::Refused;
use crate::auth::reason::Reason;
use crate::config::ClaimStyle;
use crate::domain::{Caller, OdsCode, Role};
use crate::error::ApiError;

/// Unscheduled-care access to CP-IS (the look-up is listed and notified).
pub const UNSCHEDULED_ACTIVITY: &str = "B0107";
/// Scheduled-care access (a silent read).
pub const SCHEDULED_ACTIVITY: &str = "B0170";
/// The Privacy Officer job role: the audit team.
pub const PRIVACY_OFFICER: &str = "R0001";

fn unusable(e: ApiError) -> Refused {
    Refused {
        reason: Reason::UnusableClaims,
        error: e,
    }
}

/// A claim's text, printable and short, for messages (never trusted).
fn shown(v: &str) -> String {
    v.chars().filter(char::is_ascii_graphic).take(64).collect()
}

fn text<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The caller a verified token's claims describe, read as `reading` says.
pub fn caller_from(
    claims: &Value,
    reading: &crate::auth::jwt::ClaimReading,
    issuer: &str,
) -> Result<Caller, Refused> {
    let (role, org, user_id, name) = match reading.style {
        ClaimStyle::Cpis => {
            let role_text = text(claims, "role").unwrap_or_default();
            let role = Role::parse(role_text).ok_or_else(|| {
                unusable(ApiError::Forbidden(format!(
                    "the token's role '{}' is not a CP-IS role",
                    shown(role_text)
                )))
            })?;
            let org = text(claims, "org")
                .and_then(OdsCode::parse)
                .ok_or_else(|| {
                    unusable(ApiError::Forbidden(
                        "the token's org claim is not an ODS code".into(),
                    ))
                })?;
            (
                role,
                org,
                text(claims, "sub"),
                text(claims, "name").map(str::to_owned),
            )
        }
        ClaimStyle::Cis2 => {
            let (role, org) = cis2_role(claims)?;
            let name = text(claims, "name").map(str::to_owned).or_else(|| {
                let given = text(claims, "given_name").unwrap_or_default();
                let family = text(claims, "family_name").unwrap_or_default();
                let both = format!("{given} {family}").trim().to_owned();
                (!both.is_empty()).then_some(both)
            });
            (
                role,
                org,
                text(claims, "uid").or_else(|| text(claims, "sub")),
                name,
            )
        }
    };
    // An issuer may name the user and their name in claims of its own.
    let user_id = match &reading.user {
        Some(c) => text(claims, c),
        None => user_id,
    };
    let name = match &reading.name {
        Some(c) => text(claims, c).map(str::to_owned),
        None => name,
    };
    let user_id = user_id.ok_or_else(|| {
        unusable(ApiError::Unauthenticated(
            "the token names no user (sub)".into(),
        ))
    })?;
    Ok(Caller {
        user_id: user_id.to_owned(),
        name,
        role,
        org,
        issuer: issuer.to_owned(),
        system: None,
        scopes: smart_scopes(claims),
    })
}

/// The token's SMART resource scopes (`scope`, space-separated, or `scp`, a list or a string):
/// `None` when it has none, so that the role alone decides.
fn smart_scopes(claims: &Value) -> Option<Vec<crate::domain::Grant>> {
    let words: Vec<&str> = match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    let grants: Vec<_> = words
        .into_iter()
        .take(200)
        .filter_map(crate::domain::Grant::parse)
        .collect();
    (!grants.is_empty()).then_some(grants)
}

/// The CP-IS role and organisation of a CIS2 token's selected role profile.
fn cis2_role(claims: &Value) -> Result<(Role, OdsCode), Refused> {
    let selected = text(claims, "selected_roleid").ok_or_else(|| {
        unusable(ApiError::Forbidden(
            "the token has no selected role (selected_roleid): sign in with a role selected".into(),
        ))
    })?;
    let profile = claims
        .get("nhsid_nrbac_roles")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|r| r.get("person_roleid").and_then(Value::as_str) == Some(selected))
        .ok_or_else(|| {
            unusable(ApiError::Forbidden(format!(
                "the selected role {} is not among the token's roles (nhsid_nrbac_roles)",
                shown(selected)
            )))
        })?;
    let has_activity = |code: &str| {
        profile
            .get("activity_codes")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|c| c.as_str() == Some(code)))
    };
    let job_roles = profile
        .get("role_code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role = if has_activity(UNSCHEDULED_ACTIVITY) {
        Role::Clinician
    } else if has_activity(SCHEDULED_ACTIVITY) {
        Role::ClinicianScheduled
    } else if job_roles.split(':').any(|r| r == PRIVACY_OFFICER) {
        Role::Auditor
    } else {
        return Err(unusable(ApiError::Forbidden(format!(
            "the selected role has no CP-IS activity ({UNSCHEDULED_ACTIVITY} unscheduled care, \
             {SCHEDULED_ACTIVITY} scheduled care) and is not a Privacy Officer ({PRIVACY_OFFICER})"
        ))));
    };
    let org = profile
        .get("org_code")
        .and_then(Value::as_str)
        .and_then(OdsCode::parse)
        .ok_or_else(|| {
            unusable(ApiError::Forbidden(
                "the selected role's org_code is not an ODS code".into(),
            ))
        })?;
    Ok((role, org))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(style: ClaimStyle) -> crate::auth::jwt::ClaimReading {
        crate::auth::jwt::ClaimReading {
            style,
            user: None,
            name: None,
        }
    }

    #[test]
    fn an_issuer_may_name_the_user_and_name_claims() {
        let reading = crate::auth::jwt::ClaimReading {
            style: ClaimStyle::Cpis,
            user: Some("email".into()),
            name: Some("preferred_username".into()),
        };
        let c = caller_from(
            &json!({"sub": "opaque", "email": "a.person@nhs.net", "preferred_username": "A Person", "role": "auditor", "org": "X26"}),
            &reading,
            "i",
        )
        .unwrap();
        assert_eq!(
            (c.user_id.as_str(), c.name.as_deref()),
            ("a.person@nhs.net", Some("A Person"))
        );
    }

    fn cis2(activities: &[&str], role_code: &str) -> Value {
        json!({
            "sub": "sub-1", "uid": "555000000123", "name": "Dr A Person",
            "selected_roleid": "555000000999",
            "nhsid_nrbac_roles": [
                { "person_roleid": "555000000111", "org_code": "RAA01", "role_code": "S8000:G8000:R8000",
                  "activity_codes": ["B0107"] },
                { "person_roleid": "555000000999", "org_code": "RDE01", "role_code": role_code,
                  "activity_codes": activities },
            ],
        })
    }

    #[test]
    fn the_selected_cis2_role_decides_role_and_organisation() {
        let c = caller_from(
            &cis2(&["B0170"], "S8000:G8000:R8000"),
            &read(ClaimStyle::Cis2),
            "i",
        )
        .unwrap();
        assert_eq!(c.role, Role::ClinicianScheduled);
        assert_eq!(c.org.as_str(), "RDE01");
        assert_eq!(c.user_id, "555000000123");
        assert_eq!(c.name.as_deref(), Some("Dr A Person"));
        let c = caller_from(
            &cis2(&["B0170", "B0107"], "R8000"),
            &read(ClaimStyle::Cis2),
            "i",
        )
        .unwrap();
        assert_eq!(c.role, Role::Clinician);
        let c = caller_from(
            &cis2(&[], "S8003:G8005:R0001"),
            &read(ClaimStyle::Cis2),
            "i",
        )
        .unwrap();
        assert_eq!(c.role, Role::Auditor);
    }

    #[test]
    fn a_cis2_role_without_a_cp_is_activity_or_a_selection_is_refused() {
        let none =
            caller_from(&cis2(&["B0825"], "R8000"), &read(ClaimStyle::Cis2), "i").unwrap_err();
        assert_eq!(none.reason, Reason::UnusableClaims);
        let mut unselected = cis2(&["B0107"], "R8000");
        unselected["selected_roleid"] = json!("555000000000");
        assert!(caller_from(&unselected, &read(ClaimStyle::Cis2), "i").is_err());
        unselected
            .as_object_mut()
            .unwrap()
            .remove("selected_roleid");
        assert!(caller_from(&unselected, &read(ClaimStyle::Cis2), "i").is_err());
    }

    #[test]
    fn cpis_claims_read_role_and_org() {
        let c = caller_from(
            &json!({"sub": "u", "role": "council", "org": "LA901"}),
            &read(ClaimStyle::Cpis),
            "i",
        )
        .unwrap();
        assert_eq!(c.role, Role::Council);
        assert!(caller_from(
            &json!({"sub": "u", "role": "wizard", "org": "LA901"}),
            &read(ClaimStyle::Cpis),
            "i"
        )
        .is_err());
        assert!(caller_from(
            &json!({"role": "council", "org": "LA901"}),
            &read(ClaimStyle::Cpis),
            "i"
        )
        .is_err());
    }
}
