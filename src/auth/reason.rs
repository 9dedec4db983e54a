//! Why a bearer token was refused, in the classes the audit trail records (see
//! `audit::refusals`, which folds and writes them).

/// Why a bearer token was refused: the classes an auditor filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Missing,
    Malformed,
    BadSignature,
    UnknownKey,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    LifetimeTooLong,
    /// Verified, but its role or organisation claim is not one this service knows.
    UnusableClaims,
    /// The connection's client certificate and the token belong to different organisations.
    CertificateMismatch,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::BadSignature => "bad-signature",
            Reason::UnknownKey => "unknown-key",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not-yet-valid",
            Reason::WrongIssuer => "wrong-issuer",
            Reason::WrongAudience => "wrong-audience",
            Reason::LifetimeTooLong => "lifetime-too-long",
            Reason::UnusableClaims => "unusable-claims",
            Reason::CertificateMismatch => "certificate-mismatch",
        }
    }
}

/// A claim from an unverified token, fit to record: printable ASCII, at most 64 characters.
pub fn clean_claim(s: &str) -> Option<String> {
    let s: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect();
    let s = s.trim().to_owned();
    (!s.is_empty()).then_some(s)
}
