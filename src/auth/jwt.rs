//! Bearer-token verification with jsonwebtoken: the algorithm is pinned per trusted key, and
//! `exp`, `iss`, `aud` and `sub` are required (STACK.md "jsonwebtoken"), so `alg=none`, stripped
//! signatures, a wrong audience and HMAC tokens signed with a public key are all refused.
//! `nbf` is enforced, an `iat` in the future is refused and so is a lifetime (`exp − iat`)
//! longer than configured, each with the configured leeway for clock skew. Every refusal has a
//! [`Reason`], which the audit trail records (see `audit::refusals`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::auth::reason::Reason;
use crate::auth::Caller;
use crate::config::ClaimStyle;
use crate::error::ApiError;

/// A token refused, and why.
#[derive(Debug)]
pub struct Refused {
    pub reason: Reason,
    pub error: ApiError,
}

impl Refused {
    fn new(reason: Reason, why: &str) -> Self {
        Self {
            reason,
            error: ApiError::Unauthenticated(format!("the bearer token was refused: {why}")),
        }
    }
}

/// The claims a CP-IS token carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One of clinician, clinician-scheduled, council, auditor, admin.
    pub role: String,
    /// The caller's organisation ODS code.
    pub org: String,
}

struct TrustedKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
    issuer: String,
    claims: ClaimReading,
}

/// How a key's tokens are read: the style, and the claims naming the user and their name.
#[derive(Debug, Clone)]
pub struct ClaimReading {
    pub style: ClaimStyle,
    pub user: Option<String>,
    pub name: Option<String>,
}

/// What a key is trusted for: one issuer's tokens to these audiences, read in its claim style.
#[derive(Debug, Clone)]
pub struct Trusted<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub claims: ClaimStyle,
    /// The claim naming the user, if not the style's default.
    pub user_claim: Option<&'a str>,
    /// The claim holding the display name, if not `name`.
    pub name_claim: Option<&'a str>,
}

/// The algorithms a JWK may verify, of those allowed: its own `alg` if it names one (and it is
/// allowed), else every allowed algorithm of its key type.
fn jwk_algorithms(jwk: &Jwk, allowed: &[Algorithm]) -> Vec<Algorithm> {
    use Algorithm::*;
    let fits = |a: &Algorithm| match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(a, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => *a == ES256,
            EllipticCurve::P384 => *a == ES384,
            _ => false,
        },
        // Symmetric and other keys are never trusted: a public JWKS holding one is a mistake.
        _ => false,
    };
    use jsonwebtoken::jwk::KeyAlgorithm as K;
    let named = match jwk.common.key_algorithm {
        None => return allowed.iter().copied().filter(fits).collect(),
        Some(K::RS256) => RS256,
        Some(K::RS384) => RS384,
        Some(K::RS512) => RS512,
        Some(K::PS256) => PS256,
        Some(K::PS384) => PS384,
        Some(K::PS512) => PS512,
        Some(K::ES256) => ES256,
        Some(K::ES384) => ES384,
        // HMAC, encryption and unknown algorithms never verify a token here.
        Some(_) => return Vec::new(),
    };
    allowed
        .iter()
        .copied()
        .filter(|a| *a == named && fits(a))
        .collect()
}

/// The most verified tokens remembered; past it, expired ones are dropped (then all).
const CACHE_MAX: usize = 4096;

/// A set of trusted keys, each tied to one issuer, one audience and one algorithm; built whole,
/// then trusted at once with [`Verifier::replace_keys`].
pub struct KeySet {
    keys: Vec<TrustedKey>,
    leeway: u64,
}

impl KeySet {
    /// An empty set whose keys allow `leeway_secs` of clock skew.
    pub fn new(leeway_secs: u64) -> Self {
        Self {
            keys: Vec::new(),
            leeway: leeway_secs,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Trusts `pem` (a public key) for `trusted`'s tokens signed with `algorithm` (never the
    /// token's own choice).
    pub fn add_key(
        &mut self,
        pem: &[u8],
        algorithm: Algorithm,
        trusted: &Trusted<'_>,
        kid: Option<String>,
    ) -> Result<(), String> {
        let key = match algorithm {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            _ => DecodingKey::from_rsa_pem(pem),
        }
        .map_err(|e| format!("the public key cannot be read: {e}"))?;
        self.push(key, algorithm, trusted, kid);
        Ok(())
    }

    fn push(
        &mut self,
        key: DecodingKey,
        algorithm: Algorithm,
        trusted: &Trusted<'_>,
        kid: Option<String>,
    ) {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[trusted.issuer]);
        validation.set_audience(trusted.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        self.keys.push(TrustedKey {
            kid,
            algorithm,
            key,
            validation,
            issuer: trusted.issuer.to_owned(),
            claims: ClaimReading {
                style: trusted.claims,
                user: trusted.user_claim.map(str::to_owned),
                name: trusted.name_claim.map(str::to_owned),
            },
        });
    }

    /// Trusts the signing keys of a JSON Web Key Set (RFC 7517) for `trusted`'s tokens, each
    /// for the `allowed` algorithms its type fits (its own `alg`, if named, must be one of them).
    /// Encryption keys, symmetric keys and keys that cannot be read are left out. Returns how
    /// many keys were trusted.
    pub fn add_jwks(
        &mut self,
        keys: &[Jwk],
        allowed: &[Algorithm],
        trusted: &Trusted<'_>,
    ) -> usize {
        let before = self.keys.len();
        for jwk in keys {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            for algorithm in jwk_algorithms(jwk, allowed) {
                self.push(key.clone(), algorithm, trusted, jwk.common.key_id.clone());
            }
        }
        self.keys.len() - before
    }
}

/// The keys this server trusts and the tokens already verified. A signature check costs far
/// more than the whole look-up (DESIGN.md: RS256 verification halves throughput), and a
/// clinician's EPR sends the same token with every request, so a verified token is remembered
/// until it expires — or until the key set is replaced, when every remembered token is
/// forgotten (a removed key must stop verifying at once).
///
/// The key set can be replaced while the server runs (key rotation, a refreshed JWKS): a
/// request verifies against the set it started with, and the next against the new one.
pub struct Verifier {
    keys: RwLock<Arc<KeySet>>,
    cache: Mutex<HashMap<String, (Caller, u64)>>,
    leeway: u64,
    max_lifetime: u64,
    /// Set when a token named a key id no trusted key has: the key-set refresher (see `jwks`)
    /// fetches the JWKS again, at most once a minute.
    unknown_key_seen: AtomicBool,
}

impl Default for Verifier {
    /// 30 s of leeway and tokens of at most 12 h (the configuration's defaults).
    fn default() -> Self {
        Self::new(30, 12 * 3600)
    }
}

impl Verifier {
    pub fn new(leeway_secs: u64, max_lifetime_secs: u64) -> Self {
        Self {
            keys: RwLock::new(Arc::new(KeySet::new(leeway_secs))),
            cache: Mutex::new(HashMap::new()),
            leeway: leeway_secs,
            max_lifetime: max_lifetime_secs,
            unknown_key_seen: AtomicBool::new(false),
        }
    }

    /// Whether a token named an unknown key since the last call (the flag is cleared).
    pub fn take_unknown_key_seen(&self) -> bool {
        self.unknown_key_seen.swap(false, Ordering::Relaxed)
    }

    /// An empty key set with this verifier's leeway, to fill and pass to
    /// [`Verifier::replace_keys`].
    pub fn new_key_set(&self) -> KeySet {
        KeySet::new(self.leeway)
    }

    fn key_set(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            // A writer panicked mid-swap: the old set is still whole (the swap is one store).
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.key_set().is_empty()
    }

    /// How many keys are trusted now.
    pub fn key_count(&self) -> usize {
        self.key_set().len()
    }

    /// Trusts `keys` from now on, in place of the current set; tokens verified by the old set
    /// are forgotten and verified again.
    pub fn replace_keys(&self, keys: KeySet) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut k) => *k = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
        match self.cache.lock() {
            Ok(mut c) => c.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
    }

    /// Verifies a token (or recalls that it was verified and has not expired since) and
    /// returns who is calling.
    pub fn verify(&self, token: &str) -> Result<Caller, Refused> {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        if let Ok(cache) = self.cache.lock() {
            if let Some((caller, exp)) = cache.get(token) {
                if *exp > now {
                    return Ok(caller.clone());
                }
            }
        }
        let (caller, exp) = self.verify_signature(token)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, (_, e)| *e > now);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(token.to_owned(), (caller.clone(), exp));
        }
        Ok(caller)
    }

    fn verify_signature(&self, token: &str) -> Result<(Caller, u64), Refused> {
        let header = decode_header(token)
            .map_err(|_| Refused::new(Reason::Malformed, "it is not a well-formed JWT"))?;
        let keys = self.key_set();
        let candidates = keys.keys.iter().filter(|k| {
            k.algorithm == header.alg
                && match (&k.kid, &header.kid) {
                    (Some(a), Some(b)) => a == b,
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        });
        let mut last = Refused::new(
            Reason::UnknownKey,
            "no trusted key matches its algorithm and key id",
        );
        let mut tried = false;
        for k in candidates {
            tried = true;
            match decode::<serde_json::Value>(token, &k.key, &k.validation) {
                Ok(data) => {
                    let c = data.claims;
                    let exp = self.check_times(&c)?;
                    return crate::auth::claims::caller_from(&c, &k.claims, &k.issuer)
                        .map(|c| (c, exp));
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::ExpiredSignature => Refused::new(Reason::Expired, "it has expired"),
                        K::ImmatureSignature => {
                            Refused::new(Reason::NotYetValid, "it is not valid yet (nbf)")
                        }
                        K::InvalidAudience => Refused::new(Reason::WrongAudience, "wrong audience"),
                        K::InvalidIssuer => Refused::new(Reason::WrongIssuer, "wrong issuer"),
                        K::InvalidSignature => Refused::new(Reason::BadSignature, "bad signature"),
                        K::MissingRequiredClaim(c) => {
                            Refused::new(Reason::Malformed, &format!("the {c} claim is missing"))
                        }
                        _ => Refused::new(Reason::Malformed, "it could not be verified"),
                    }
                }
            }
        }
        if !tried && header.kid.is_some() {
            // Perhaps the issuer has rotated its keys: its JWKS is fetched again.
            self.unknown_key_seen.store(true, Ordering::Relaxed);
        }
        Err(last)
    }

    /// `iat` must not be in the future, and the token must not live longer than allowed (from
    /// `iat`, or from now without one). Returns `exp`.
    fn check_times(&self, c: &serde_json::Value) -> Result<u64, Refused> {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let exp = c
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| Refused::new(Reason::Malformed, "its exp claim is not a number"))?;
        let iat = match c.get("iat") {
            None => now,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| Refused::new(Reason::Malformed, "its iat claim is not a number"))?,
        };
        if iat > now.saturating_add(self.leeway) {
            return Err(Refused::new(
                Reason::NotYetValid,
                "it was issued in the future (iat)",
            ));
        }
        let lifetime = exp.saturating_sub(iat);
        if lifetime > self.max_lifetime.saturating_add(self.leeway) {
            return Err(Refused::new(
                Reason::LifetimeTooLong,
                &format!(
                    "its lifetime (exp - iat = {lifetime} s) is longer than the {} s this server accepts",
                    self.max_lifetime
                ),
            ));
        }
        Ok(exp)
    }
}
