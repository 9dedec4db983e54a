//! Development signing key: created once in the data directory by `serve --dev`, trusted by
//! that server, and used by `cpis-fhir token` to mint tokens for local use and tests.
//! Never used unless `--dev` is given.

use std::path::{Path, PathBuf};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

use crate::auth::jwt::Claims;
use crate::domain::{OdsCode, Role};

pub const DEV_ISSUER: &str = "cpis-fhir-dev";
pub const DEV_KID: &str = "cpis-dev-1";
pub const DEV_ALGORITHM: Algorithm = Algorithm::RS512;

fn private_path(dir: &Path) -> PathBuf {
    dir.join("dev-signing-key.pem")
}

fn public_path(dir: &Path) -> PathBuf {
    dir.join("dev-signing-key.pub.pem")
}

/// Creates the dev key pair unless it exists; returns the public key PEM.
pub fn ensure_key(dir: &Path) -> Result<Vec<u8>, String> {
    let public = public_path(dir);
    if private_path(dir).exists() && public.exists() {
        return std::fs::read(&public).map_err(|e| format!("cannot read the dev public key: {e}"));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the data directory: {e}"))?;
    let rsa =
        openssl::rsa::Rsa::generate(2048).map_err(|e| format!("key generation failed: {e}"))?;
    let private = rsa
        .private_key_to_pem()
        .map_err(|e| format!("key encoding failed: {e}"))?;
    let public_pem = rsa
        .public_key_to_pem()
        .map_err(|e| format!("key encoding failed: {e}"))?;
    crate::tls::write_private(&private_path(dir), &private)?;
    std::fs::write(&public, &public_pem)
        .map_err(|e| format!("cannot write the dev public key: {e}"))?;
    Ok(public_pem)
}

/// The dev signing key's public half as a JSON Web Key Set (kid `cpis-dev-1`, RS512): what
/// an identity provider would publish, for trying a JWKS-configured issuer locally.
pub fn dev_jwks(dir: &Path) -> Result<serde_json::Value, String> {
    use base64::Engine;
    let pem = ensure_key(dir)?;
    let rsa = openssl::rsa::Rsa::public_key_from_pem(&pem)
        .map_err(|e| format!("cannot read the dev public key: {e}"))?;
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    Ok(serde_json::json!({ "keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS512", "kid": DEV_KID,
        "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec()),
    }]}))
}

/// What a minted token says about its bearer.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub role: Role,
    pub org: OdsCode,
    pub user: String,
    pub name: Option<String>,
    pub ttl_secs: u64,
    pub audience: String,
}

/// Signs any claims with the data directory's dev key (tests and tools craft tokens the server
/// must refuse: not yet valid, issued in the future, too long-lived).
pub fn sign_claims(dir: &Path, claims: &serde_json::Value) -> Result<String, String> {
    let pem = std::fs::read(private_path(dir)).map_err(|e| format!("no dev signing key: {e}"))?;
    let key = EncodingKey::from_rsa_pem(&pem).map_err(|e| format!("bad dev signing key: {e}"))?;
    let mut header = Header::new(DEV_ALGORITHM);
    header.kid = Some(DEV_KID.to_owned());
    encode(&header, claims, &key).map_err(|e| format!("signing failed: {e}"))
}

/// Signs a token with the data directory's dev key.
pub fn mint(dir: &Path, req: &TokenRequest) -> Result<String, String> {
    let pem = std::fs::read(private_path(dir)).map_err(|e| {
        format!(
            "no dev signing key in {} ({e}); run `cpis-fhir serve --dev` once to create it",
            dir.display()
        )
    })?;
    let key = EncodingKey::from_rsa_pem(&pem).map_err(|e| format!("bad dev signing key: {e}"))?;
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let claims = Claims {
        iss: DEV_ISSUER.to_owned(),
        sub: req.user.clone(),
        aud: req.audience.clone(),
        exp: now + req.ttl_secs,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        name: req.name.clone(),
        role: req.role.as_str().to_owned(),
        org: req.org.as_str().to_owned(),
    };
    let mut header = Header::new(DEV_ALGORITHM);
    header.kid = Some(DEV_KID.to_owned());
    encode(&header, &claims, &key).map_err(|e| format!("signing failed: {e}"))
}
