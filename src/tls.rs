//! TLS with openssl: a local certificate authority for development and tests (`serve --dev
//! --tls` makes one in the data directory; the tests make their own), and the server's TLS
//! configuration (README "Deploying securely").

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

fn err(e: openssl::error::ErrorStack) -> String {
    format!("openssl: {e}")
}

/// A certificate authority of our own: for `serve --dev --tls` and for tests, never for
/// production (a deployment brings certificates from its own PKI).
pub struct LocalCa {
    cert: X509,
    key: PKey<Private>,
}

/// A certificate and its private key, in PEM.
pub struct Issued {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

fn new_key() -> Result<PKey<Private>, String> {
    PKey::from_rsa(Rsa::generate(2048).map_err(err)?).map_err(err)
}

fn builder(cn: &str, key: &PKey<Private>, days: u32) -> Result<X509Builder, String> {
    let mut name = X509NameBuilder::new().map_err(err)?;
    name.append_entry_by_text("CN", cn).map_err(err)?;
    let name = name.build();
    let mut b = X509Builder::new().map_err(err)?;
    b.set_version(2).map_err(err)?;
    let mut serial = BigNum::new().map_err(err)?;
    serial
        .rand(127, MsbOption::MAYBE_ZERO, false)
        .map_err(err)?;
    let serial = serial.to_asn1_integer().map_err(err)?;
    b.set_serial_number(&serial).map_err(err)?;
    b.set_subject_name(&name).map_err(err)?;
    b.set_pubkey(key).map_err(err)?;
    let (from, until) = (
        Asn1Time::days_from_now(0).map_err(err)?,
        Asn1Time::days_from_now(days).map_err(err)?,
    );
    b.set_not_before(&from).map_err(err)?;
    b.set_not_after(&until).map_err(err)?;
    Ok(b)
}

impl LocalCa {
    /// A new CA named `cn`, valid for ten years.
    pub fn generate(cn: &str) -> Result<Self, String> {
        let key = new_key()?;
        let mut b = builder(cn, &key, 3650)?;
        // Self-signed: the issuer is the subject.
        let mut issuer = X509NameBuilder::new().map_err(err)?;
        issuer.append_entry_by_text("CN", cn).map_err(err)?;
        b.set_issuer_name(&issuer.build()).map_err(err)?;
        b.append_extension(
            BasicConstraints::new()
                .critical()
                .ca()
                .build()
                .map_err(err)?,
        )
        .map_err(err)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .map_err(err)?,
        )
        .map_err(err)?;
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .map_err(err)?;
        b.append_extension(ski).map_err(err)?;
        b.sign(&key, MessageDigest::sha256()).map_err(err)?;
        Ok(Self {
            cert: b.build(),
            key,
        })
    }

    /// Reads a CA back from its PEM certificate and key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, String> {
        Ok(Self {
            cert: X509::from_pem(cert_pem).map_err(err)?,
            key: PKey::private_key_from_pem(key_pem).map_err(err)?,
        })
    }

    pub fn cert_pem(&self) -> Result<Vec<u8>, String> {
        self.cert.to_pem().map_err(err)
    }

    pub fn key_pem(&self) -> Result<Vec<u8>, String> {
        self.key.private_key_to_pem_pkcs8().map_err(err)
    }

    /// A certificate for `cn`, valid for a year: a server's for `names` (DNS names or IP
    /// addresses), or (`client`) a calling system's.
    pub fn issue(&self, cn: &str, names: &[&str], client: bool) -> Result<Issued, String> {
        let key = new_key()?;
        let mut b = builder(cn, &key, 365)?;
        b.set_issuer_name(self.cert.subject_name()).map_err(err)?;
        b.append_extension(BasicConstraints::new().build().map_err(err)?)
            .map_err(err)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()
                .map_err(err)?,
        )
        .map_err(err)?;
        let usage = if client {
            ExtendedKeyUsage::new().client_auth().build()
        } else {
            ExtendedKeyUsage::new().server_auth().build()
        };
        b.append_extension(usage.map_err(err)?).map_err(err)?;
        if !names.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for n in names {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    san.ip(n);
                } else {
                    san.dns(n);
                }
            }
            let san = san
                .build(&b.x509v3_context(Some(&self.cert), None))
                .map_err(err)?;
            b.append_extension(san).map_err(err)?;
        }
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&b.x509v3_context(Some(&self.cert), None))
            .map_err(err)?;
        b.append_extension(aki).map_err(err)?;
        b.sign(&self.key, MessageDigest::sha256()).map_err(err)?;
        Ok(Issued {
            cert_pem: b.build().to_pem().map_err(err)?,
            key_pem: key.private_key_to_pem_pkcs8().map_err(err)?,
        })
    }
}

/// The verified client certificate of a connection (mutual TLS): its subject common name and
/// DNS names, as a binding names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject, as `CN=…` (what AuditEvents record as the calling system).
    pub subject: String,
    /// The common name and the DNS subject alternative names.
    pub names: Vec<String>,
}

/// The certificates bound to councils (`tls.client_bindings`): (subject or DNS name, ODS code).
#[derive(Debug, Clone, Default)]
pub struct Bindings(pub Vec<(String, String)>);

impl Bindings {
    /// The council `cert` is bound to, if any.
    pub fn council_of(&self, cert: &ClientCert) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| cert.names.iter().any(|n| n == name))
            .map(|(_, ods)| ods.as_str())
    }

    /// Whether `ods` has a certificate bound to it (so its tokens need that certificate).
    pub fn is_bound(&self, ods: &str) -> bool {
        self.0.iter().any(|(_, o)| o == ods)
    }
}

/// The client certificate of a connection that has just opened, if it is a TLS connection and
/// the client sent one (the handshake has verified it against `tls.client_ca_file`).
pub fn client_cert_of(conn: &dyn std::any::Any) -> Option<ClientCert> {
    use actix_tls::accept::openssl::TlsStream;
    let tls = conn.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>()?;
    let cert = tls.ssl().peer_certificate()?;
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned());
    let mut names: Vec<String> = cn.iter().cloned().collect();
    if let Some(sans) = cert.subject_alt_names() {
        names.extend(sans.iter().filter_map(|n| n.dnsname().map(str::to_owned)));
    }
    Some(ClientCert {
        subject: cn.map_or_else(|| "(no common name)".to_owned(), |c| format!("CN={c}")),
        names,
    })
}

/// The server's TLS acceptor: Mozilla's "intermediate" profile (TLS 1.2 and 1.3 only, AEAD
/// ciphers with forward secrecy), the server's certificate chain, and — with mutual TLS — the
/// CAs whose client certificates are accepted, a certificate optional or required. HTTP/2 is
/// offered by ALPN (actix adds it).
pub fn acceptor(
    t: &crate::config::TlsSettings,
) -> Result<openssl::ssl::SslAcceptorBuilder, String> {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(err)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(err)?;
    b.set_certificate_chain_file(&t.cert_file)
        .map_err(|e| format!("tls.cert_file {}: {e}", t.cert_file.display()))?;
    b.set_private_key_file(&t.key_file, SslFiletype::PEM)
        .map_err(|e| format!("tls.key_file {}: {e}", t.key_file.display()))?;
    b.check_private_key()
        .map_err(|e| format!("tls.key_file does not match tls.cert_file: {e}"))?;
    if let Some((ca, auth)) = &t.client_ca {
        b.set_ca_file(ca)
            .map_err(|e| format!("tls.client_ca_file {}: {e}", ca.display()))?;
        let names = openssl::x509::X509Name::load_client_ca_file(ca)
            .map_err(|e| format!("tls.client_ca_file {}: {e}", ca.display()))?;
        b.set_client_ca_list(names);
        let mode = match auth {
            crate::config::ClientAuth::Optional => SslVerifyMode::PEER,
            crate::config::ClientAuth::Required => {
                SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT
            }
        };
        b.set_verify(mode);
    }
    Ok(b)
}

/// The development certificates of `serve --dev --tls` in `data_dir`, made once: a local CA
/// (`dev-ca.pem` to trust, `dev-ca.key`) and a server certificate for 127.0.0.1, ::1 and
/// localhost.
pub fn ensure_dev_certificates(
    data_dir: &std::path::Path,
) -> Result<crate::config::TlsSettings, String> {
    let (ca_pem, ca_key, cert, key) = (
        data_dir.join("dev-ca.pem"),
        data_dir.join("dev-ca.key"),
        data_dir.join("dev-server.pem"),
        data_dir.join("dev-server.key"),
    );
    if !(ca_pem.exists() && ca_key.exists() && cert.exists() && key.exists()) {
        std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
        let ca = LocalCa::generate("cpis-fhir development CA (this machine only)")?;
        let issued = ca.issue("localhost", &["127.0.0.1", "::1", "localhost"], false)?;
        std::fs::write(&ca_pem, ca.cert_pem()?)
            .map_err(|e| format!("cannot write {}: {e}", ca_pem.display()))?;
        std::fs::write(&cert, &issued.cert_pem)
            .map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
        // Kept (owner-readable only) so `cpis-fhir dev-pki` can issue client certificates.
        write_private(&ca_key, &ca.key_pem()?)?;
        write_private(&key, &issued.key_pem)?;
    }
    Ok(crate::config::TlsSettings {
        cert_file: cert,
        key_file: key,
        client_ca: None,
        bindings: Vec::new(),
    })
}

/// Writes a private key readable by its owner only.
#[cfg(unix)]
pub fn write_private(path: &std::path::Path, pem: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(pem)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(not(unix))]
pub fn write_private(path: &std::path::Path, pem: &[u8]) -> Result<(), String> {
    std::fs::write(path, pem).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A client certificate for `cn` from the development CA of `data_dir` (`cpis-fhir dev-pki`),
/// written as `client-<cn>.pem` and `client-<cn>.key`; returns the two paths.
pub fn issue_dev_client(
    data_dir: &std::path::Path,
    cn: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    if cn.is_empty()
        || !cn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "'{cn}' is not a plain name (letters, digits, - _ .)"
        ));
    }
    ensure_dev_certificates(data_dir)?;
    let read =
        |n: &str| std::fs::read(data_dir.join(n)).map_err(|e| format!("cannot read {n}: {e}"));
    let ca = LocalCa::from_pem(&read("dev-ca.pem")?, &read("dev-ca.key")?)?;
    let issued = ca.issue(cn, &[cn], true)?;
    let (cert, key) = (
        data_dir.join(format!("client-{cn}.pem")),
        data_dir.join(format!("client-{cn}.key")),
    );
    std::fs::write(&cert, &issued.cert_pem).map_err(|e| e.to_string())?;
    write_private(&key, &issued.key_pem)?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_issued_by_the_local_ca_verifies_against_it_and_names_its_hosts() {
        let ca = LocalCa::generate("cpis-fhir test CA").unwrap();
        let issued = ca
            .issue("cpis-fhir", &["127.0.0.1", "localhost"], false)
            .unwrap();
        let cert = X509::from_pem(&issued.cert_pem).unwrap();
        let ca_cert = X509::from_pem(&ca.cert_pem().unwrap()).unwrap();
        assert!(cert.verify(&ca_cert.public_key().unwrap()).unwrap());
        let names: Vec<String> = cert
            .subject_alt_names()
            .unwrap()
            .iter()
            .map(|n| {
                n.dnsname()
                    .map(str::to_owned)
                    .or_else(|| n.ipaddress().map(|ip| format!("{ip:?}")))
                    .unwrap_or_default()
            })
            .collect();
        assert!(names.contains(&"localhost".to_owned()), "{names:?}");
        assert_eq!(names.len(), 2);
    }
}
