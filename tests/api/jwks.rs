//! Issuers whose keys are published as a JWKS: fetched over HTTPS from a server on 127.0.0.1
//! with a certificate from a CA the test makes, rotated without a restart, removed keys refused
//! at once, an unknown key id refetched once (not once per request), the last good keys kept
//! when the JWKS is down; CIS2-shaped tokens mapped to CP-IS roles; the old attacks still fail.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::http::Method;
use actix_web::{web, App, HttpResponse, HttpServer};
use base64::Engine;
use cpis_fhir::tls::LocalCa;
use serde_json::{json, Value};

use crate::helpers::*;

const ISSUER: &str = "https://cis2.cpis.test/openam/oauth2/realms/root/realms/oidc";

/// A signing key of the identity provider, with its key id.
struct IdpKey {
    kid: String,
    private_pem: Vec<u8>,
    jwk: Value,
}

impl IdpKey {
    fn new(kid: &str) -> Self {
        let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa");
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Self {
            kid: kid.to_owned(),
            private_pem: rsa.private_key_to_pem().expect("pem"),
            jwk: json!({ "kty": "RSA", "use": "sig", "kid": kid, "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec()) }),
        }
    }

    fn sign_with(&self, alg: jsonwebtoken::Algorithm, claims: &Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&self.private_pem).expect("key");
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with(jsonwebtoken::Algorithm::RS256, claims)
    }
}

/// Claims as CIS2 shapes them for a user whose selected role profile has `activities` at `org`.
fn cis2_claims(user: &str, activities: &[&str], org: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": ISSUER, "aud": "cpis-fhir", "sub": format!("sub-{user}"), "uid": user,
        "iat": now, "exp": now + 600, "jti": uuid::Uuid::new_v4().to_string(),
        "name": "Dr Test Clinician", "given_name": "Test", "family_name": "Clinician",
        "selected_roleid": format!("{user}-role-2"),
        "nhsid_nrbac_roles": [
            { "person_orgid": format!("{user}-org-1"), "person_roleid": format!("{user}-role-1"),
              "org_code": "RXX01", "role_code": "S0030:G0100:R0260", "role_name": "\"Admin & Clerical\":\"Admin\":\"Receptionist\"" },
            { "person_orgid": format!("{user}-org-2"), "person_roleid": format!("{user}-role-2"),
              "org_code": org, "role_code": "S8000:G8000:R8000", "role_name": "\"Clinical\":\"Clinical Provision\":\"Clinical Practitioner Access Role\"",
              "activity_codes": activities },
        ],
    })
}

/// This service's own claims, from the JWKS issuer.
fn cpis_claims(role: &str, org: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": ISSUER, "aud": "cpis-fhir", "sub": "user-jwks", "iat": now, "exp": now + 600,
        "jti": uuid::Uuid::new_v4().to_string(), "role": role, "org": org,
    })
}

/// The identity provider's JWKS endpoint, over HTTPS on 127.0.0.1: what it publishes, how
/// often it was asked, and whether it is failing.
struct JwksServer {
    url: String,
    ca_file: std::path::PathBuf,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl JwksServer {
    async fn start(dir: &std::path::Path, ca: &LocalCa) -> Self {
        let issued = ca
            .issue("jwks.cpis.test", &["127.0.0.1"], false)
            .expect("cert");
        let ca_file = dir.join("test-ca.pem");
        std::fs::write(&ca_file, ca.cert_pem().expect("pem")).expect("write");
        let mut tls =
            openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls())
                .expect("acceptor");
        tls.set_certificate(&openssl::x509::X509::from_pem(&issued.cert_pem).expect("x509"))
            .expect("cert");
        tls.set_private_key(
            &openssl::pkey::PKey::private_key_from_pem(&issued.key_pem).expect("key"),
        )
        .expect("key");
        let keys: Arc<Mutex<Vec<Value>>> = Arc::default();
        let fetches: Arc<AtomicUsize> = Arc::default();
        let down: Arc<AtomicBool> = Arc::default();
        let (k, f, d) = (keys.clone(), fetches.clone(), down.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(move || {
            let (k, f, d) = (k.clone(), f.clone(), d.clone());
            App::new().route(
                "/jwks",
                web::get().to(move || {
                    let (k, f, d) = (k.clone(), f.clone(), d.clone());
                    async move {
                        f.fetch_add(1, Ordering::SeqCst);
                        if d.load(Ordering::SeqCst) {
                            return HttpResponse::ServiceUnavailable().finish();
                        }
                        let body = json!({ "keys": *k.lock().unwrap() });
                        HttpResponse::Ok()
                            .content_type("application/jwk-set+json")
                            .body(body.to_string())
                    }
                }),
            )
        })
        .workers(1)
        .listen_openssl(listener, tls)
        .expect("listen")
        .run();
        actix_rt::spawn(server);
        // The server starts when its future is first polled; the fetches that follow block
        // this thread, so let it start first.
        actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
        Self {
            url: format!("https://127.0.0.1:{port}/jwks"),
            ca_file,
            keys,
            fetches,
            down,
        }
    }

    fn publish(&self, keys: &[&IdpKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A production server trusting the JWKS issuer (claims `style`) besides its test issuer.
async fn server_trusting(
    jwks: &JwksServer,
    style: &str,
    ca_file: Option<&std::path::Path>,
) -> TestApp {
    let ca = ca_file.map_or(String::new(), |f| {
        format!("jwks_ca_file = {:?}\n", f.to_string_lossy())
    });
    TestApp::spawn_production_with(&format!(
        "[[auth.issuers]]\nissuer = {ISSUER:?}\njwks_url = {url:?}\n{ca}algorithm = [\"RS256\", \"PS256\"]\nclaims = {style:?}\n",
        url = jwks.url,
    ))
    .await
}

async fn jwks_setup(style: &str) -> (TestApp, JwksServer, IdpKey, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let ca = LocalCa::generate("cpis-fhir test CA").expect("ca");
    let jwks = JwksServer::start(dir.path(), &ca).await;
    let key1 = IdpKey::new("key-2026-11");
    jwks.publish(&[&key1]);
    let ca_file = jwks.ca_file.clone();
    let app = server_trusting(&jwks, style, Some(&ca_file)).await;
    (app, jwks, key1, dir)
}

async fn org(app: &TestApp, token: &str) -> u16 {
    app.get(&format!("/Organization/{LA_A}"), token)
        .await
        .status
}

#[actix_rt::test]
async fn a_rotated_key_is_trusted_after_one_refetch_for_its_unknown_kid_and_no_restart() {
    let (app, jwks, key1, _dir) = jwks_setup("cpis").await;
    assert_eq!(jwks.fetches(), 1, "fetched once at start-up");
    let council = cpis_claims("council", LA_A);
    assert_eq!(org(&app, &key1.sign(&council)).await, 200);

    // The provider rotates: its new key signs tokens before this server has fetched it.
    let key2 = IdpKey::new("key-2026-12");
    jwks.publish(&[&key1, &key2]);
    for _ in 0..5 {
        let r = app
            .get(&format!("/Organization/{LA_A}"), &key2.sign(&council))
            .await;
        r.assert_outcome(401, "login");
    }
    app.step_keys();
    assert_eq!(
        jwks.fetches(),
        2,
        "five unknown-kid tokens caused one fetch"
    );
    assert_eq!(org(&app, &key2.sign(&council)).await, 200);
    assert_eq!(
        org(&app, &key1.sign(&council)).await,
        200,
        "the old key is still published"
    );

    // Another unknown kid within the minute: no fetch (an attacker cannot make us hammer the
    // provider).
    let stranger = IdpKey::new("key-unknown");
    assert_eq!(org(&app, &stranger.sign(&council)).await, 401);
    app.step_keys();
    assert_eq!(jwks.fetches(), 2);
}

#[actix_rt::test]
async fn a_key_removed_from_the_jwks_stops_verifying_at_once_even_for_a_token_already_seen() {
    let (app, jwks, key1, _dir) = jwks_setup("cpis").await;
    let key2 = IdpKey::new("key-2026-12");
    jwks.publish(&[&key1, &key2]);
    app.refresh_keys_now();
    let token = key1.sign(&cpis_claims("council", LA_A));
    assert_eq!(org(&app, &token).await, 200, "verified, and remembered");
    jwks.publish(&[&key2]);
    app.refresh_keys_now();
    assert_eq!(org(&app, &token).await, 401, "forgotten with its key");
    assert_eq!(
        org(&app, &key2.sign(&cpis_claims("council", LA_A))).await,
        200
    );
}

#[actix_rt::test]
async fn when_the_jwks_cannot_be_fetched_the_last_good_keys_stay_trusted_and_readiness_warns() {
    let (app, jwks, key1, _dir) = jwks_setup("cpis").await;
    jwks.down.store(true, Ordering::SeqCst);
    app.refresh_keys_now();
    assert_eq!(
        org(&app, &key1.sign(&cpis_claims("council", LA_A))).await,
        200
    );
    let r = app
        .request(Method::GET, "/health/ready", None, &[], None)
        .await;
    assert_eq!(r.status, 200, "still serving: {}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "warn", "{v}");
    assert_eq!(v["checks"]["keys"]["status"], "warn", "{v}");
    assert!(
        v["checks"]["keys"]["output"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{v}"
    );
    // A JWKS that comes back with no usable key is not trusted either.
    jwks.down.store(false, Ordering::SeqCst);
    jwks.keys.lock().unwrap().clear();
    app.refresh_keys_now();
    assert_eq!(
        org(&app, &key1.sign(&cpis_claims("council", LA_A))).await,
        200
    );
}

#[actix_rt::test]
async fn a_jwks_served_with_a_certificate_of_an_untrusted_ca_gives_no_keys_and_readiness_fails() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = LocalCa::generate("somebody else's CA").expect("ca");
    let jwks = JwksServer::start(dir.path(), &ca).await;
    let key1 = IdpKey::new("key-1");
    jwks.publish(&[&key1]);
    // The test CA is not given to the server: the system's CAs do not know it.
    let app = server_trusting(&jwks, "cpis", None).await;
    assert_eq!(
        jwks.fetches(),
        0,
        "the TLS handshake failed before any request"
    );
    assert_eq!(
        org(&app, &key1.sign(&cpis_claims("council", LA_A))).await,
        401
    );
    let r = app
        .request(Method::GET, "/health/ready", None, &[], None)
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    let v = r.json();
    let output = v["checks"]["keys"]["output"].as_str().unwrap();
    assert!(
        output.contains(ISSUER) && output.contains("certificate verify failed"),
        "{v}"
    );
}

#[actix_rt::test]
async fn forged_tokens_are_refused_on_the_jwks_path_too() {
    let (app, _jwks, key1, _dir) = jwks_setup("cpis").await;
    let claims = cpis_claims("admin", "X26");
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    // alg=none.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"key-2026-11"}"#),
        b64(claims.to_string().as_bytes())
    );
    // HS256 keyed with the public key's modulus, as a confused verifier might accept.
    let n = key1.jwk["n"].as_str().unwrap().as_bytes().to_vec();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("key-2026-11".into());
    let hs = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&n),
    )
    .unwrap();
    // A genuine token whose payload was changed afterwards.
    let genuine = key1.sign(&cpis_claims("council", LA_A));
    let mut parts: Vec<String> = genuine.split('.').map(str::to_owned).collect();
    parts[1] = b64(cpis_claims("admin", "X26").to_string().as_bytes());
    let tampered = parts.join(".");
    // Signed with an algorithm the issuer is not configured for.
    let rs512 = key1.sign_with(jsonwebtoken::Algorithm::RS512, &claims);
    for (what, token) in [
        ("none", none),
        ("hs256", hs),
        ("tampered", tampered),
        ("rs512", rs512),
    ] {
        let r = app.get(&format!("/Organization/{LA_A}"), &token).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
    }
}

#[actix_rt::test]
async fn cis2_shaped_tokens_map_b0107_to_unscheduled_and_b0170_to_scheduled_access() {
    let (app, _jwks, key1, _dir) = jwks_setup("cis2").await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    let unscheduled = key1.sign(&cis2_claims("555000000101", &["B0107"], "RDE01"));
    let scheduled = key1.sign(&cis2_claims("555000000102", &["B0170"], "GPX01"));
    for t in [&unscheduled, &scheduled] {
        let r = app.lookup(t, NHS_1, "", &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["total"], 1);
    }
    let events = app.audit_of(NHS_1).await;
    let by_user = |user: &str| {
        events
            .iter()
            .find(|e| e["agent"][0]["who"]["identifier"]["value"] == user)
            .unwrap_or_else(|| panic!("no AuditEvent by {user}: {events:?}"))
            .clone()
    };
    let u = by_user("555000000101");
    assert_eq!(
        u["agent"][0]["role"][0]["coding"][0]["code"], "clinician",
        "{u}"
    );
    assert_eq!(u["agent"][0]["who"]["display"], "Dr Test Clinician");
    let s = by_user("555000000102");
    assert_eq!(
        s["agent"][0]["role"][0]["coding"][0]["code"], "clinician-scheduled",
        "{s}"
    );
    assert!(u.to_string().contains("RDE01") && s.to_string().contains("GPX01"));

    // A role profile without a CP-IS activity is refused, and so is a council's claim.
    let receptionist = key1.sign(&cis2_claims("555000000103", &["B0825"], "RDE01"));
    assert_eq!(app.lookup(&receptionist, NHS_1, "", &[]).await.status, 403);
    let pretend = key1.sign(&cpis_claims("council", LA_A));
    assert_eq!(
        org(&app, &pretend).await,
        403,
        "a CIS2 issuer's tokens never make a council"
    );
}
