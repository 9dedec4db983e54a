//! The server's trust in token issuers: every configured issuer's keys — a PEM file, a JSON Web
//! Key Set file, or a JWKS published at an https:// URL (RFC 7517; OpenID Connect Discovery's
//! `jwks_uri`) — built into one [`KeySet`] and handed to the [`Verifier`] whole.
//!
//! A JWKS URL is fetched at start-up, then again every `jwks_refresh_secs` and whenever a token
//! names a key id no trusted key has (an issuer that has rotated its keys), at most once a minute
//! per issuer whatever tokens arrive. The new set replaces the old only when the keys changed, and
//! then at once and whole: a key the issuer removed stops verifying with the next request (the
//! verifier forgets every token it remembered). A fetch that fails — the issuer unreachable, an
//! answer that is not a JWKS, a JWKS with no usable signing key — changes nothing: the last good
//! keys stay trusted, the log says so, and readiness reports it (`warn`; `fail` for an issuer that
//! has never had keys).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;

use crate::auth::jwt::{KeySet, Trusted, Verifier};
use crate::config::{IssuerSettings, KeySource};

/// The least time between two fetches of one issuer's JWKS on account of unknown key ids.
pub const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// The largest JWKS read.
const JWKS_LIMIT: usize = 1024 * 1024;
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One issuer's keys as last read, and how its JWKS URL fared.
struct Held {
    settings: IssuerSettings,
    /// A PEM key's bytes, read at start-up.
    pem: Option<Vec<u8>>,
    /// The signing keys of its JWKS, as last read successfully.
    jwks: Option<Vec<Jwk>>,
    fetched_at: Option<Instant>,
    /// When a token's unknown key id last caused a fetch (those are at most one a minute).
    unknown_fetched_at: Option<Instant>,
    /// The last fetch's failure, if it failed.
    failure: Option<String>,
}

/// How one issuer's keys stand, for readiness.
#[derive(Debug, Clone)]
pub struct IssuerStatus {
    pub issuer: String,
    /// Its keys come from a JWKS URL.
    pub fetched: bool,
    /// It has keys trusted now.
    pub has_keys: bool,
    /// The last refresh failed (the last good keys are still trusted).
    pub failure: Option<String>,
}

/// Every trusted issuer and the extra key of dev mode.
pub struct Trust {
    held: Mutex<Vec<Held>>,
    /// The dev key and the audiences it signs for (`serve --dev`).
    dev: Option<(Vec<u8>, Vec<String>)>,
    leeway: u64,
}

fn read_jwks(bytes: &[u8]) -> Result<Vec<Jwk>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let keys = v
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("not a JWK Set (no \"keys\" array)")?;
    // One key of a type this server does not read does not spoil the others.
    Ok(keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .collect())
}

impl Trust {
    /// Reads every PEM and JWKS file, and fetches every JWKS URL once (a failed fetch is logged
    /// and retried by the refresher). Fails on a file that cannot be read.
    pub fn load(
        issuers: &[IssuerSettings],
        dev: Option<(Vec<u8>, Vec<String>)>,
        leeway_secs: u64,
    ) -> Result<Self, String> {
        let mut held = Vec::new();
        for (i, s) in issuers.iter().enumerate() {
            let named = |why: String| {
                format!(
                    "configuration: trusted issuer {} ({}): {why}",
                    i + 1,
                    s.issuer
                )
            };
            let mut h = Held {
                settings: s.clone(),
                pem: None,
                jwks: None,
                fetched_at: None,
                unknown_fetched_at: None,
                failure: None,
            };
            match &s.keys {
                KeySource::PemFile(path) => {
                    h.pem = Some(std::fs::read(path).map_err(|e| {
                        named(format!(
                            "cannot read the public key file {}: {e}",
                            path.display()
                        ))
                    })?);
                }
                KeySource::JwksFile(path) => {
                    let bytes = std::fs::read(path).map_err(|e| {
                        named(format!("cannot read the JWKS file {}: {e}", path.display()))
                    })?;
                    h.jwks =
                        Some(read_jwks(&bytes).map_err(|e| {
                            named(format!("the JWKS file {}: {e}", path.display()))
                        })?);
                }
                KeySource::JwksUrl { .. } => {}
            }
            held.push(h);
        }
        let trust = Self {
            held: Mutex::new(held),
            dev,
            leeway: leeway_secs,
        };
        trust.refresh(true);
        Ok(trust)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether any issuer's keys come from a URL (and so need refreshing).
    pub fn fetches(&self) -> bool {
        self.lock()
            .iter()
            .any(|h| matches!(h.settings.keys, KeySource::JwksUrl { .. }))
    }

    /// The key set of everything held now.
    pub fn key_set(&self) -> Result<KeySet, String> {
        let mut set = KeySet::new(self.leeway);
        for (i, h) in self.lock().iter().enumerate() {
            let s = &h.settings;
            let trusted = Trusted {
                issuer: &s.issuer,
                audiences: &s.audiences,
                claims: s.claims,
                user_claim: s.user_claim.as_deref(),
                name_claim: s.name_claim.as_deref(),
            };
            if let Some(pem) = &h.pem {
                let algorithm = s
                    .algorithms
                    .first()
                    .copied()
                    .unwrap_or(jsonwebtoken::Algorithm::RS512);
                set.add_key(pem, algorithm, &trusted, s.kid.clone())
                    .map_err(|e| {
                        format!(
                            "configuration: trusted issuer {} ({}): {e}",
                            i + 1,
                            s.issuer
                        )
                    })?;
            }
            if let Some(keys) = &h.jwks {
                set.add_jwks(keys, &s.algorithms, &trusted);
            }
        }
        if let Some((pem, audiences)) = &self.dev {
            set.add_key(
                pem,
                crate::auth::dev::DEV_ALGORITHM,
                &Trusted {
                    issuer: crate::auth::dev::DEV_ISSUER,
                    audiences,
                    claims: crate::config::ClaimStyle::Cpis,
                    user_claim: None,
                    name_claim: None,
                },
                Some(crate::auth::dev::DEV_KID.to_owned()),
            )?;
        }
        Ok(set)
    }

    /// The JWKS URLs `pick` chooses (it sees each issuer fetched from a URL, and its refresh
    /// period), with their CA files.
    fn urls_where(
        &self,
        mut pick: impl FnMut(&mut Held, Duration) -> bool,
    ) -> Vec<(usize, String, Option<std::path::PathBuf>)> {
        self.lock()
            .iter_mut()
            .enumerate()
            .filter_map(|(i, h)| match h.settings.keys.clone() {
                KeySource::JwksUrl {
                    url,
                    refresh,
                    ca_file,
                } if pick(h, refresh) => Some((i, url, ca_file)),
                _ => None,
            })
            .collect()
    }

    /// Fetches the JWKS URLs that are due (`all`: every one), keeps what succeeded; true when
    /// some issuer's keys changed.
    fn refresh(&self, all: bool) -> bool {
        let due = self.urls_where(|h, refresh| {
            let since = h.fetched_at.map(|t| t.elapsed());
            all || since.is_none_or(|s| s >= refresh)
                // A failed fetch is tried again after a minute, not after a refresh period.
                || (h.failure.is_some() && since.is_none_or(|s| s >= REFETCH_AT_MOST_EVERY))
        });
        self.fetch_each(due)
    }

    /// Fetches the JWKS URLs again because a token named an unknown key, unless that already
    /// happened within the last minute.
    fn refresh_for_unknown_key(&self) -> bool {
        let due = self.urls_where(|h, _| {
            let due = h
                .unknown_fetched_at
                .is_none_or(|t| t.elapsed() >= REFETCH_AT_MOST_EVERY);
            if due {
                h.unknown_fetched_at = Some(Instant::now());
            }
            due
        });
        self.fetch_each(due)
    }

    /// Fetches every JWKS URL now (the scheduled refresh, whenever it is due) and trusts the
    /// new keys if they changed. The refresher does this by itself; tests and tools step it.
    pub fn refresh_now(&self, verifier: &Verifier) {
        if self.refresh(true) {
            self.trust_current(verifier);
        }
    }

    fn trust_current(&self, verifier: &Verifier) {
        match self.key_set() {
            Ok(set) => verifier.replace_keys(set),
            Err(e) => log::error!("the refreshed keys could not be trusted: {e}"),
        }
    }

    fn fetch_each(&self, due: Vec<(usize, String, Option<std::path::PathBuf>)>) -> bool {
        let mut changed = false;
        for (i, url, ca_file) in due {
            let got = fetch(&url, ca_file.as_deref()).and_then(|bytes| {
                let keys = read_jwks(&bytes)?;
                let mut probe = KeySet::new(self.leeway);
                let issuer = self.lock()[i].settings.clone();
                let n = probe.add_jwks(
                    &keys,
                    &issuer.algorithms,
                    &Trusted {
                        issuer: &issuer.issuer,
                        audiences: &issuer.audiences,
                        claims: issuer.claims,
                        user_claim: None,
                        name_claim: None,
                    },
                );
                if n == 0 {
                    return Err(
                        "it holds no signing key this server can use for the configured algorithms"
                            .into(),
                    );
                }
                Ok(keys)
            });
            let mut held = self.lock();
            let h = &mut held[i];
            h.fetched_at = Some(Instant::now());
            match got {
                Ok(keys) => {
                    if h.failure.take().is_some() {
                        log::info!(
                            "JWKS of {}: fetched again; its keys are current",
                            h.settings.issuer
                        );
                    }
                    if h.jwks.as_ref() != Some(&keys) {
                        log::info!(
                            "JWKS of {}: {} key(s) now trusted",
                            h.settings.issuer,
                            keys.len()
                        );
                        h.jwks = Some(keys);
                        changed = true;
                    }
                }
                Err(e) => {
                    log::warn!(
                        "JWKS of {} could not be refreshed ({e}); {}",
                        h.settings.issuer,
                        if h.jwks.is_some() {
                            "its last good keys stay trusted"
                        } else {
                            "it has no keys yet: its tokens are refused"
                        }
                    );
                    h.failure = Some(e);
                }
            }
        }
        changed
    }

    /// How every issuer's keys stand.
    pub fn status(&self) -> Vec<IssuerStatus> {
        self.lock()
            .iter()
            .map(|h| IssuerStatus {
                issuer: h.settings.issuer.clone(),
                fetched: matches!(h.settings.keys, KeySource::JwksUrl { .. }),
                has_keys: h.pem.is_some() || h.jwks.as_ref().is_some_and(|k| !k.is_empty()),
                failure: h.failure.clone(),
            })
            .collect()
    }

    /// One round of the refresher: fetches what is due (and, if a token named an unknown key,
    /// what was not fetched in the last minute) and trusts the new keys if they changed.
    pub fn step(&self, verifier: &Verifier) {
        let mut changed = self.refresh(false);
        if verifier.take_unknown_key_seen() {
            changed |= self.refresh_for_unknown_key();
        }
        if changed {
            self.trust_current(verifier);
        }
    }
}

/// The refresher's thread: a round every second (cheap when nothing is due) until `stop`.
pub fn run_refresher(stop: crate::tasks::Stop, trust: Arc<Trust>, verifier: Arc<Verifier>) {
    loop {
        trust.step(&verifier);
        if stop.sleep(Duration::from_secs(1)) {
            return;
        }
    }
}

/// Fetches `url` over HTTPS (TLS 1.2 or later, the system's CAs and `ca_file`'s), with no
/// redirects, in a thread of its own (the caller may be inside an async runtime).
fn fetch(url: &str, ca_file: Option<&Path>) -> Result<Vec<u8>, String> {
    let url = url.to_owned();
    let ca_file = ca_file.map(Path::to_path_buf);
    std::thread::Builder::new()
        .name("cpis-jwks-fetch".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let connector = tls_client(ca_file.as_deref())?;
                let client = awc::Client::builder()
                    .connector(awc::Connector::new().openssl(connector))
                    .timeout(FETCH_TIMEOUT)
                    .disable_redirects()
                    .finish();
                let mut res = client
                    .get(&url)
                    .insert_header(("Accept", "application/jwk-set+json, application/json"))
                    .send()
                    .await
                    .map_err(|e| format!("cannot fetch {url}: {e}"))?;
                if !res.status().is_success() {
                    return Err(format!("{url} answered HTTP {}", res.status().as_u16()));
                }
                let body = res
                    .body()
                    .limit(JWKS_LIMIT)
                    .await
                    .map_err(|e| format!("cannot read {url}: {e}"))?;
                Ok(body.to_vec())
            })
        })
        .map_err(|e| format!("cannot start a fetch: {e}"))?
        .join()
        .map_err(|_| "the fetch panicked".to_owned())?
}

/// A TLS client that verifies the server against the system's CAs and `ca_file`'s.
pub fn tls_client(ca_file: Option<&Path>) -> Result<openssl::ssl::SslConnector, String> {
    use openssl::ssl::{SslConnector, SslMethod, SslVersion};
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| e.to_string())?;
    if let Some(f) = ca_file {
        b.set_ca_file(f)
            .map_err(|e| format!("cannot read the CA file {}: {e}", f.display()))?;
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_jwk(kid: &str, extra: &str) -> String {
        use base64::Engine;
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        format!(
            r#"{{"kty":"RSA","kid":"{kid}","n":"{}","e":"{}"{extra}}}"#,
            b64(rsa.n().to_vec()),
            b64(rsa.e().to_vec())
        )
    }

    #[test]
    fn only_signing_keys_of_allowed_algorithms_are_trusted_from_a_jwks() {
        let text = format!(
            r#"{{"keys":[{{"kty":"wizard"}},{{"kty":"oct","k":"c2VjcmV0"}},{},{},{},{}]}}"#,
            rsa_jwk("plain", ""),
            rsa_jwk("named", r#","alg":"RS256","use":"sig""#),
            rsa_jwk("other-alg", r#","alg":"RS512""#),
            rsa_jwk("encryption", r#","use":"enc""#),
        );
        let keys = read_jwks(text.as_bytes()).unwrap();
        let mut set = KeySet::new(30);
        let audiences = vec!["cpis-fhir".to_owned()];
        let n = set.add_jwks(
            &keys,
            &[
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::Algorithm::PS256,
            ],
            &Trusted {
                issuer: "https://idp",
                audiences: &audiences,
                claims: crate::config::ClaimStyle::Cpis,
                user_claim: None,
                name_claim: None,
            },
        );
        // "plain" for RS256 and PS256, "named" for RS256 only; the RS512, encryption,
        // symmetric and unknown keys not at all.
        assert_eq!(n, 3);
        assert!(read_jwks(b"{}").is_err());
        assert!(read_jwks(b"not json").is_err());
    }
}
