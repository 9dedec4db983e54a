//! HTTPS and mutual TLS, on 127.0.0.1 with certificates the tests make: TLS 1.2+ only, plain
//! HTTP and other CAs refused, a required client certificate enforced at the handshake, council
//! tokens bound to their councils' certificates, the calling system recorded on AuditEvents.

use actix_web::http::Method;
use cpis_fhir::config::{ClientAuth, TlsSettings};
use cpis_fhir::tls::{Issued, LocalCa};
use openssl::ssl::{SslConnector, SslMethod, SslVersion};

use crate::helpers::*;

/// The test PKI: the server's CA and certificate, and the CA of calling systems.
struct Pki {
    dir: tempfile::TempDir,
    server_ca: LocalCa,
    clients_ca: LocalCa,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("dir"),
            server_ca: LocalCa::generate("test server CA").expect("ca"),
            clients_ca: LocalCa::generate("test client CA").expect("ca"),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    /// The server's TLS settings; with `clients`, mutual TLS against the clients' CA.
    fn server(&self, clients: Option<ClientAuth>, bindings: &[(&str, &str)]) -> TlsSettings {
        let issued = self
            .server_ca
            .issue("cpis-fhir.test", &["127.0.0.1"], false)
            .expect("cert");
        TlsSettings {
            cert_file: self.write("server.pem", &issued.cert_pem),
            key_file: self.write("server.key", &issued.key_pem),
            client_ca: clients.map(|auth| {
                (
                    self.write("clients-ca.pem", &self.clients_ca.cert_pem().expect("pem")),
                    auth,
                )
            }),
            bindings: bindings
                .iter()
                .map(|(s, o)| ((*s).to_owned(), (*o).to_owned()))
                .collect(),
        }
    }

    fn client_cert(&self, cn: &str) -> Issued {
        self.clients_ca.issue(cn, &[], true).expect("client cert")
    }

    /// A client trusting `ca` (the server's, unless said), presenting `cert` if given.
    fn client(&self, ca: Option<&LocalCa>, cert: Option<&Issued>) -> awc::Client {
        self.client_with(ca, cert, |_| {})
    }

    fn client_with(
        &self,
        ca: Option<&LocalCa>,
        cert: Option<&Issued>,
        tweak: impl FnOnce(&mut openssl::ssl::SslConnectorBuilder),
    ) -> awc::Client {
        let mut b = SslConnector::builder(SslMethod::tls_client()).expect("connector");
        let ca = ca.unwrap_or(&self.server_ca);
        let ca_file = self.write(
            &format!("trust-{}.pem", uuid::Uuid::new_v4()),
            &ca.cert_pem().expect("pem"),
        );
        b.set_ca_file(ca_file).expect("ca");
        if let Some(c) = cert {
            b.set_certificate(&openssl::x509::X509::from_pem(&c.cert_pem).expect("x509"))
                .expect("cert");
            b.set_private_key(&openssl::pkey::PKey::private_key_from_pem(&c.key_pem).expect("key"))
                .expect("key");
        }
        tweak(&mut b);
        awc::Client::builder()
            .connector(awc::Connector::new().openssl(b.build()))
            .timeout(std::time::Duration::from_secs(10))
            .finish()
    }
}

#[actix_rt::test]
async fn https_serves_the_api_with_hsts_and_refuses_plain_http_old_tls_and_unknown_cas() {
    let pki = Pki::new();
    let app = TestApp::spawn_tls(pki.server(None, &[]), pki.client(None, None)).await;
    assert!(app.base.starts_with("https://"));
    let r = app.request(Method::GET, "/metadata", None, &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=31536000")
    );
    let clinician = app.clinician();
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    assert_eq!(app.lookup(&clinician, NHS_1, "", &[]).await.status, 200);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = awc::Client::default()
        .get(app.base.replacen("https://", "http://", 1) + "/metadata")
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP was answered: {:?}",
        plain.map(|r| r.status())
    );
    // A client that speaks at most TLS 1.1 is refused at the handshake.
    let old = pki.client_with(None, None, |b| {
        b.set_cipher_list("DEFAULT@SECLEVEL=0").expect("ciphers");
        b.set_min_proto_version(Some(SslVersion::TLS1))
            .expect("min");
        b.set_max_proto_version(Some(SslVersion::TLS1_1))
            .expect("max");
    });
    let r = app
        .request_via(&old, Method::GET, "/metadata", None, &[], None)
        .await;
    assert!(r.is_err(), "TLS 1.1 was accepted");
    // A client that trusts another CA does not accept this server.
    let stranger = LocalCa::generate("another CA").expect("ca");
    let r = app
        .request_via(
            &pki.client(Some(&stranger), None),
            Method::GET,
            "/metadata",
            None,
            &[],
            None,
        )
        .await;
    assert!(r.is_err_and(|e| e.contains("certificate verify failed")));
}

#[actix_rt::test]
async fn with_client_certificates_required_a_client_without_one_or_with_one_from_another_ca_is_refused_at_the_handshake(
) {
    let pki = Pki::new();
    let ours = pki.client_cert("ed-epr-system");
    let app = TestApp::spawn_tls(
        pki.server(Some(ClientAuth::Required), &[]),
        pki.client(None, Some(&ours)),
    )
    .await;
    assert_eq!(
        app.request(Method::GET, "/metadata", None, &[], None)
            .await
            .status,
        200
    );
    let none = app
        .request_via(
            &pki.client(None, None),
            Method::GET,
            "/metadata",
            None,
            &[],
            None,
        )
        .await;
    assert!(none.is_err(), "no certificate, yet answered");
    let other_ca = LocalCa::generate("somebody's CA").expect("ca");
    let forged = other_ca.issue("ed-epr-system", &[], true).expect("cert");
    let r = app
        .request_via(
            &pki.client(None, Some(&forged)),
            Method::GET,
            "/metadata",
            None,
            &[],
            None,
        )
        .await;
    assert!(r.is_err(), "a certificate of another CA, yet answered");
}

#[actix_rt::test]
async fn a_council_token_needs_its_own_bound_certificate_and_a_mismatch_is_refused_403_and_audited()
{
    let pki = Pki::new();
    let admin_system = pki.client_cert("national-admin");
    let app = TestApp::spawn_tls(
        pki.server(
            Some(ClientAuth::Optional),
            &[("la901-case-system", LA_A), ("la902-case-system", LA_B)],
        ),
        pki.client(None, Some(&admin_system)),
    )
    .await;
    let la901 = pki.client(None, Some(&pki.client_cert("la901-case-system")));
    let la902 = pki.client(None, Some(&pki.client_cert("la902-case-system")));
    let bare = pki.client(None, None);
    let token = app.council(LA_A);
    let read = |client| {
        let token = token.clone();
        let app = &app;
        async move {
            app.request_via(
                client,
                Method::GET,
                &format!("/Organization/{LA_A}"),
                Some(&token),
                &[],
                None,
            )
            .await
            .expect("answered")
        }
    };
    assert_eq!(read(&la901).await.status, 200, "its own certificate");
    let wrong = read(&la902).await;
    wrong.assert_outcome(403, "forbidden");
    assert!(wrong.text().contains("bound to LA902"), "{}", wrong.text());
    let without = read(&bare).await;
    without.assert_outcome(403, "forbidden");
    // The refusal is audited with its reason.
    let reasons = app.refusal_reasons().await;
    assert!(
        reasons.iter().any(|r| r == "certificate-mismatch"),
        "{reasons:?}"
    );
}

#[actix_rt::test]
async fn the_calling_system_s_certificate_is_recorded_on_the_audit_event_of_a_look_up() {
    let pki = Pki::new();
    let epr = pki.client_cert("ed-epr-system");
    let app = TestApp::spawn_tls(
        pki.server(Some(ClientAuth::Optional), &[]),
        pki.client(None, Some(&epr)),
    )
    .await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
    let events = app.audit_of(NHS_1).await;
    let application = events[0]["agent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"]["coding"][0]["code"] == "110150")
        .cloned()
        .expect("the Application agent");
    assert!(
        application["who"]["display"]
            .as_str()
            .unwrap()
            .starts_with("CN=ed-epr-system (token from "),
        "{application}"
    );
}

#[actix_rt::test]
async fn dev_pki_gives_a_newcomer_https_mutual_tls_and_a_jwks_issuer_on_this_machine() {
    use crate::cli::{bin, free_port, mint, spawn_until_listening};
    let dir = tempfile::tempdir().expect("dir");
    let pki = dir.path().join("pki");
    let out = bin()
        .args(["dev-pki", "--client", "la904-case-system", "--data-dir"])
        .arg(&pki)
        .output()
        .expect("dev-pki");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "dev-ca.pem",
        "dev-server.pem",
        "dev-server.key",
        "dev-jwks.json",
        "client-la904-case-system.pem",
    ] {
        assert!(pki.join(f).exists(), "{f}");
    }
    let port = free_port();
    let p = |f: &str| pki.join(f).to_string_lossy().into_owned();
    let config = dir.path().join("secure.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {data:?}\n\n[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n\
             client_ca_file = {ca:?}\n\n[[tls.client_bindings]]\nsubject = \"la904-case-system\"\nods = \"LA904\"\n\n\
             [[auth.issuers]]\nissuer = \"cpis-fhir-dev\"\njwks_file = {jwks:?}\nalgorithm = \"RS512\"\n",
            data = dir.path().join("data").to_string_lossy(),
            cert = p("dev-server.pem"),
            key = p("dev-server.key"),
            ca = p("dev-ca.pem"),
            jwks = p("dev-jwks.json"),
        ),
    )
    .expect("config");
    let mut serve = bin();
    serve.args(["serve", "--config"]).arg(&config);
    let (_server, _logs) = spawn_until_listening(serve);

    let client = |cert: bool| {
        let mut b = SslConnector::builder(SslMethod::tls_client()).expect("connector");
        b.set_ca_file(pki.join("dev-ca.pem")).expect("ca");
        if cert {
            b.set_certificate_file(
                pki.join("client-la904-case-system.pem"),
                openssl::ssl::SslFiletype::PEM,
            )
            .expect("cert");
            b.set_private_key_file(
                pki.join("client-la904-case-system.key"),
                openssl::ssl::SslFiletype::PEM,
            )
            .expect("key");
        }
        awc::Client::builder()
            .connector(awc::Connector::new().openssl(b.build()))
            .finish()
    };
    let url = format!("https://127.0.0.1:{port}/Organization/LA904");
    let admin = mint(&pki, "admin", "X26");
    let r = client(false)
        .put(&url)
        .insert_header(("Authorization", format!("Bearer {admin}")))
        .insert_header(("Content-Type", "application/fhir+json"))
        .send_body(include_str!("../../examples/organization.json"))
        .await
        .expect("register");
    assert_eq!(r.status().as_u16(), 201);
    let council = mint(&pki, "council", "LA904");
    for (cert, want) in [(true, 200), (false, 403)] {
        let r = client(cert)
            .get(&url)
            .insert_header(("Authorization", format!("Bearer {council}")))
            .send()
            .await
            .expect("read");
        assert_eq!(r.status().as_u16(), want, "with a certificate: {cert}");
    }
}
