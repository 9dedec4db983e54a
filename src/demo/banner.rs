//! What `serve --dev` prints at start-up: a token for every role, and commands to paste that
//! exercise the demo data (README "Two commands").

use crate::auth::dev::{self, TokenRequest};
use crate::config::Settings;
use crate::demo::DemoRecord;
use crate::domain::{OdsCode, Role};

/// The dev start-up text: who can do what, with tokens and commands ready to paste.
pub fn banner(settings: &Settings, records: &[DemoRecord]) -> Result<String, String> {
    let base = &settings.base_url;
    let mint = |role: Role, org: &str, user: &str, name: &str| -> Result<String, String> {
        dev::mint(
            &settings.data_dir,
            &TokenRequest {
                role,
                org: OdsCode::parse(org).ok_or("bad demo ODS code")?,
                user: user.into(),
                name: Some(name.into()),
                ttl_secs: 12 * 3600,
                audience: settings.auth.audience.clone(),
            },
        )
    };
    let tokens = [
        (
            "COUNCIL_LA901",
            mint(
                Role::Council,
                "LA901",
                "la901-case-system",
                "Northmoor case system",
            )?,
        ),
        (
            "COUNCIL_LA902",
            mint(
                Role::Council,
                "LA902",
                "la902-case-system",
                "Eastvale case system",
            )?,
        ),
        (
            "COUNCIL_LA903",
            mint(
                Role::Council,
                "LA903",
                "la903-case-system",
                "Westbridge case system",
            )?,
        ),
        (
            "CLINICIAN",
            mint(Role::Clinician, "RDE01", "555000000001", "Dr Alex Morgan")?,
        ),
        (
            "CLINICIAN_SCHEDULED",
            mint(
                Role::ClinicianScheduled,
                "GPX01",
                "555000000002",
                "Dr Kim Lee",
            )?,
        ),
        (
            "AUDITOR",
            mint(Role::Auditor, "X26", "555000000003", "Audit Team")?,
        ),
        (
            "ADMIN",
            mint(Role::Admin, "X26", "555000000004", "Service Admin")?,
        ),
    ];
    let env_file = settings.data_dir.join("dev-tokens.env");
    let env_text: String = tokens
        .iter()
        .map(|(k, t)| format!("export TOKEN_{k}={t}\n"))
        .collect();
    std::fs::write(&env_file, env_text)
        .map_err(|e| format!("cannot write {}: {e}", env_file.display()))?;
    let mut out = String::new();
    out.push_str(&format!(
        "\ncpis-fhir (dev mode) on {base}\nDemo tokens (valid 12 hours) are also in {} — `source` it to use $TOKEN_…\n\n",
        env_file.display()
    ));
    for (k, t) in &tokens {
        out.push_str(&format!("TOKEN_{k}={t}\n\n"));
    }
    out.push_str("Demo records (NHS test numbers):\n");
    for r in records {
        out.push_str(&format!(
            "  {}  {:<14} {:<46} {}  Flag/{}\n",
            r.nhs_number,
            r.name,
            format!(
                "{}{}",
                r.plan.display(),
                if r.ended { " (ended)" } else { "" }
            ),
            r.council,
            r.flag_id
        ));
    }
    let curl = match &settings.tls {
        Some(_) => {
            let ca = settings.data_dir.join("dev-ca.pem");
            out.push_str(&format!(
                "\nHTTPS with a local CA made for this machine: trust {} (curl --cacert, or add it to \
                 your system's or browser's trust store; it signs only this server's certificate).\n",
                ca.display()
            ));
            format!("curl -s --cacert {}", ca.display())
        }
        None => "curl -s".to_owned(),
    };
    if let Some(first) = records.first() {
        let la = tokens[0].1.as_str();
        out.push_str(&format!(
            "\nTry (council LA901 reads its Flag):\n  {curl} -H 'Authorization: Bearer {la}' {base}/Flag/{}\n",
            first.flag_id
        ));
        out.push_str(&format!(
            "\nThe council's phone numbers (any token):\n  {curl} -H 'Authorization: Bearer {}' {base}/Organization/{}\n",
            tokens[3].1, first.council
        ));
        // The clinician's look-up: a child with plans from two councils, with their phones.
        if let Some(two) = records.iter().find(|r| {
            records
                .iter()
                .filter(|o| o.nhs_number == r.nhs_number)
                .count()
                > 1
        }) {
            out.push_str(&format!(
                "\nAn emergency department looks a child up (audited; listed in the access history):\n  {curl} -H 'Authorization: Bearer {}' '{base}/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{}&_include=Flag:author'\n",
                tokens[3].1, two.nhs_number
            ));
            out.push_str(&format!(
                "\nWho has looked (the latest 25 unscheduled accesses):\n  {curl} -H 'Authorization: Bearer {}' '{base}/AuditEvent?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{}'\n",
                tokens[3].1, two.nhs_number
            ));
        }
        out.push_str(&format!(
            "\nCapabilityStatement (no token):\n  {curl} {base}/metadata\n"
        ));
        out.push_str(&format!(
            "\nThe audit team's page (sign in with TOKEN_AUDITOR):\n  {base}/audit/\n"
        ));
    }
    Ok(out)
}
