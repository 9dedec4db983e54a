//! Notification authenticity (issue "Council notifications", Authenticity): every notification
//! body is signed with HMAC-SHA256 under the subscription's own secret, sent as
//! `X-CPIS-Signature: sha256=<lower-case hex>`. A council verifies it by computing the same HMAC
//! over the raw body it received and comparing in constant time.

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

/// The header value for `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> Result<String, openssl::error::ErrorStack> {
    let key = PKey::hmac(secret.as_bytes())?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
    signer.update(body)?;
    let mac = signer.sign_to_vec()?;
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256={hex}"))
}

/// Whether `header` is the signature of `body` under `secret` (constant-time comparison).
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    match sign(secret, body) {
        Ok(expected) => {
            expected.len() == header.len()
                && openssl::memcmp::eq(expected.as_bytes(), header.as_bytes())
        }
        Err(_) => false,
    }
}

/// A new random signing secret: 32 random bytes, hex-encoded.
pub fn new_secret() -> Result<String, openssl::error::ErrorStack> {
    let mut buf = [0u8; 32];
    openssl::rand::rand_bytes(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_and_secret() {
        let s = sign("k".repeat(32).as_str(), b"{}").unwrap_or_default();
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64);
        assert!(verify(&"k".repeat(32), b"{}", &s));
        assert!(!verify(&"k".repeat(32), b"{ }", &s));
        assert!(!verify(&"j".repeat(32), b"{}", &s));
    }

    #[test]
    fn the_hmac_matches_the_rfc_4231_test_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = sign("Jefe", b"what do ya want for nothing?").unwrap_or_default();
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
