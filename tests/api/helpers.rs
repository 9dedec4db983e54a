//! Fixture builders and an HTTP client against a real server on 127.0.0.1, one temp database
//! per test.

use std::net::TcpListener;

use actix_web::http::Method;
use cpis_fhir::auth::dev::{self, TokenRequest};
use cpis_fhir::config::Settings;
use cpis_fhir::domain::{OdsCode, Role};
use cpis_fhir::startup::{build_state, Application};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use cpis_fhir::state::Clock;
use cpis_fhir::store::Store;
use serde_json::{json, Value};

pub const LA_A: &str = "LA901";
pub const LA_B: &str = "LA902";
/// Valid NHS numbers from DOMAIN.md.
pub const NHS_1: &str = "9449306753";
pub const NHS_2: &str = "9000000009";
pub const NHS_3: &str = "9434765919";

pub struct Resp {
    pub status: u16,
    pub headers: actix_web::http::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    }

    /// The expressions named by an OperationOutcome.
    pub fn expressions(&self) -> Vec<String> {
        let v = self.json();
        assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
        v["issue"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i["expression"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect()
    }

    /// Asserts an OperationOutcome with this status and issue code.
    pub fn assert_outcome(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
        assert!(
            v["issue"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["code"] == code)),
            "expected issue code {code}: {v}"
        );
    }
}

/// An identity provider for tests: an RSA key pair of its own (generated per test), an issuer
/// and a key id, configured on the server as a production deployment configures one.
pub struct TestIdp {
    pub issuer: String,
    pub kid: String,
    private_pem: Vec<u8>,
    /// The public key, as the server's configuration names it.
    pub public_file: std::path::PathBuf,
}

impl TestIdp {
    pub fn generate(dir: &std::path::Path, issuer: &str, kid: &str) -> Self {
        let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa");
        let public_file = dir.join(format!("idp-{kid}.pem"));
        std::fs::write(&public_file, rsa.public_key_to_pem().expect("pem")).expect("write");
        Self {
            issuer: issuer.to_owned(),
            kid: kid.to_owned(),
            private_pem: rsa.private_key_to_pem().expect("pem"),
            public_file,
        }
    }

    /// Signs `claims` (RS256, this key's kid).
    pub fn sign(&self, claims: &Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&self.private_pem).expect("key");
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }

    /// A token for `role` at `org`, issued `iat` seconds from now and expiring `exp` seconds
    /// from now.
    pub fn token(&self, role: Role, org: &str, iat: i64, exp: i64) -> String {
        let now = Utc::now().timestamp();
        self.sign(&json!({
            "iss": self.issuer, "sub": format!("user-{}", role.as_str()), "aud": "cpis-fhir",
            "iat": now + iat, "exp": now + exp, "jti": uuid::Uuid::new_v4().to_string(),
            "name": "Test User", "role": role.as_str(), "org": org,
        }))
    }
}

pub struct TestApp {
    pub base: String,
    pub dir: tempfile::TempDir,
    client: awc::Client,
    now: Arc<Mutex<DateTime<Utc>>>,
    db_url: String,
    settings: Settings,
    handle: actix_web::dev::ServerHandle,
    /// The notification worker, stepped by the tests (never by a timer).
    pub notifier: cpis_fhir::notify::Notifier,
    /// The server's token verifier, whose keys a test may replace while it runs.
    pub verifier: Arc<cpis_fhir::auth::jwt::Verifier>,
    /// The trusted issuers and their keys (see `step_keys`).
    trust: Arc<cpis_fhir::auth::jwks::Trust>,
    /// Set when the server trusts this identity provider instead of the dev key.
    pub idp: Option<Arc<TestIdp>>,
    /// The PostgreSQL database this server runs on, when the suite runs on PostgreSQL; dropped
    /// with the last clone.
    pg: Option<Arc<crate::postgres::PgDatabase>>,
}

/// Whether this run of the suite puts every test server on PostgreSQL (`CPIS_TEST_ON_POSTGRES`,
/// with `CPIS_TEST_POSTGRES_URL`; `.ci/run` runs the suite once so), rather than SQLite.
pub fn on_postgres() -> bool {
    std::env::var_os("CPIS_TEST_ON_POSTGRES").is_some()
}

/// A fresh PostgreSQL database for a test server when the suite runs on PostgreSQL.
fn suite_database(settings: &mut Settings) -> Option<Arc<crate::postgres::PgDatabase>> {
    if !on_postgres() {
        return None;
    }
    let db = crate::postgres::PgDatabase::create()
        .expect("CPIS_TEST_ON_POSTGRES needs CPIS_TEST_POSTGRES_URL");
    settings.database_url = db.url.clone();
    Some(Arc::new(db))
}

/// What every test server shares: one HTTP worker; the lifecycle and the notification worker
/// stepped by the tests (`POST /$purge`, `deliver`), never by a timer; the watch quiet; bulk
/// work at normal priority. (A test process runs dozens of servers' threads at once on a few
/// cores; a lowered Bundle check there can wait behind all of them longer than a client's
/// timeout. The lowering has its own test, `bundles::…_lowest_priority`.)
fn stepped(settings: &mut Settings) {
    settings.workers = 1;
    settings.bulk_low_priority = false;
    settings.lifecycle_interval = None;
    settings.notify_interval = None;
    quiet_watch(settings);
}

/// Test servers make many look-ups as one user in a second: the look-up limits and the misuse
/// watch are off unless a test turns them on (see `tests/api/access.rs`).
fn quiet_watch(settings: &mut Settings) {
    settings.limits.lookups_per_user_per_minute = 0;
    settings.limits.lookups_per_org_per_minute = 0;
    settings.limits.fishing_distinct_people = 0;
}

/// The date every test server starts at, so date rules are deterministic.
pub const TODAY: &str = "2026-11-25T12:00:00Z";

impl TestApp {
    /// A server in dev mode (test NHS numbers allowed) with councils LA901 and LA902.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server configured as in production: no dev mode, one trusted issuer with its own key,
    /// read from a configuration file (`[[auth.issuers]]`). Its token helpers sign with that
    /// issuer's key.
    pub async fn spawn_production() -> Self {
        Self::spawn_production_with("").await
    }

    /// [`TestApp::spawn_production`] with more of the configuration file (more trusted
    /// issuers, say). The server's key refresher is stepped by the tests.
    pub async fn spawn_production_with(more: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let idp = TestIdp::generate(dir.path(), "https://idp.cpis.test", "key-1");
        let config = dir.path().join("cpis-fhir.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\nallow_test_nhs_numbers = true\n\n[auth]\naudience = [\"cpis-fhir\"]\n\n\
                 [[auth.issuers]]\nissuer = {iss:?}\npublic_key_file = {key:?}\nalgorithm = \"RS256\"\nkid = \"key-1\"\n\n{more}\n",
                data = dir.path().to_string_lossy(),
                iss = idp.issuer,
                key = idp.public_file.to_string_lossy(),
            ),
        )
        .expect("config");
        let cli = cpis_fhir::config::CliOverrides {
            config_file: Some(config),
            ..Default::default()
        };
        let mut settings = Settings::load_from(&cli, Vec::new()).expect("settings");
        assert!(!settings.dev);
        stepped(&mut settings);
        settings.refresh_keys = false;
        let pg = suite_database(&mut settings);
        Self::started(dir, settings, Some(Arc::new(idp)), pg).await
    }

    /// A dev-mode server speaking HTTPS only (`tls`), reached through `client` (which trusts its
    /// CA and may present a client certificate).
    pub async fn spawn_tls(tls: cpis_fhir::config::TlsSettings, client: awc::Client) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::for_data_dir(dir.path(), true).expect("settings");
        stepped(&mut settings);
        settings.tls = Some(tls);
        let pg = suite_database(&mut settings);
        Self::started_with(dir, settings, None, pg, Some(client)).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::for_data_dir(dir.path(), true).expect("settings");
        stepped(&mut settings);
        let pg = suite_database(&mut settings);
        tweak(&mut settings);
        Self::started(dir, settings, None, pg).await
    }

    /// Starts a server over `settings` and registers the two test councils.
    async fn started(
        dir: tempfile::TempDir,
        settings: Settings,
        idp: Option<Arc<TestIdp>>,
        pg: Option<Arc<crate::postgres::PgDatabase>>,
    ) -> Self {
        Self::started_with(dir, settings, idp, pg, None).await
    }

    /// [`TestApp::started`], reached through `client` if given.
    async fn started_with(
        dir: tempfile::TempDir,
        settings: Settings,
        idp: Option<Arc<TestIdp>>,
        pg: Option<Arc<crate::postgres::PgDatabase>>,
        client: Option<awc::Client>,
    ) -> Self {
        let now = Arc::new(Mutex::new(
            DateTime::parse_from_rfc3339(TODAY)
                .expect("date")
                .with_timezone(&Utc),
        ));
        let mut t = Self::start(dir, settings, now, idp, pg);
        if let Some(c) = client {
            t.client = c;
        }
        t.register_councils().await;
        t
    }

    /// Registers the two test councils.
    async fn register_councils(&self) {
        let t = self;
        for (ods, name) in [
            (LA_A, "Northmoor Borough Council"),
            (LA_B, "Eastvale County Council"),
        ] {
            let r = t
                .put_json(
                    &format!("/Organization/{ods}"),
                    &t.admin(),
                    &org_json(ods, name),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text());
        }
    }

    fn start(
        dir: tempfile::TempDir,
        mut settings: Settings,
        now: Arc<Mutex<DateTime<Utc>>>,
        idp: Option<Arc<TestIdp>>,
        pg: Option<Arc<crate::postgres::PgDatabase>>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        settings.base_url = format!("{scheme}://127.0.0.1:{port}");
        let clock_now = Arc::clone(&now);
        let clock: Clock = Arc::new(move || *clock_now.lock().expect("clock"));
        let db_url = settings.database_url.clone();
        let state = build_state(settings.clone(), clock).expect("state");
        let notifier = state.notifier.clone();
        let verifier = Arc::clone(&state.verifier);
        let trust = Arc::clone(&state.trust);
        let app = Application::build(state, listener).expect("server");
        let handle = app.handle();
        actix_rt::spawn(app.run_until_stopped());
        let client = awc::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .finish();
        TestApp {
            base: format!("{scheme}://127.0.0.1:{port}"),
            dir,
            client,
            now,
            db_url,
            settings,
            handle,
            notifier,
            verifier,
            trust,
            idp,
            pg,
        }
    }

    /// One round of the key refresher, as its thread would make it.
    pub fn step_keys(&self) {
        self.trust.step(&self.verifier);
    }

    /// The scheduled refresh of every JWKS URL, now.
    pub fn refresh_keys_now(&self) {
        self.trust.refresh_now(&self.verifier);
    }

    /// Stops this server and starts a new one over the same database and data directory (a
    /// restart), with the same clock.
    pub async fn restart(self) -> Self {
        self.handle.stop(true).await;
        let TestApp {
            dir,
            settings,
            now,
            notifier,
            idp,
            pg,
            ..
        } = self;
        drop(notifier);
        Self::start(dir, settings, now, idp, pg)
    }

    /// One step of the notification worker.
    pub async fn deliver(&self) -> cpis_fhir::notify::Report {
        let client = cpis_fhir::notify::Notifier::client();
        self.notifier
            .step(&client)
            .await
            .expect("notification step")
    }

    /// Moves the server's clock on by `secs` seconds.
    pub fn advance(&self, secs: i64) {
        let mut t = self.now.lock().expect("clock");
        *t += chrono::Duration::seconds(secs);
    }

    /// Moves the server's clock.
    pub fn set_today(&self, date: &str) {
        let t = DateTime::parse_from_rfc3339(&format!("{date}T12:00:00Z")).expect("date");
        *self.now.lock().expect("clock") = t.with_timezone(&Utc);
    }

    /// Ids of every audit row about a person, newest first, read straight from the database.
    pub fn audit_ids_about(&self, nhs: &str) -> Vec<String> {
        use cpis_fhir::store::schema::audit_events as a;
        use diesel::prelude::*;
        let nhs = nhs.to_owned();
        Store::open(&self.db_url, 1)
            .expect("store")
            .read_blocking(move |c| {
                Ok::<_, cpis_fhir::store::StoreError>(
                    a::table
                        .filter(a::patient.eq(nhs))
                        .order(a::id.desc())
                        .select(a::id)
                        .load::<String>(c)?,
                )
            })
            .expect("audit ids")
    }

    /// Every audit row of one user (`agent`) or one organisation (`org`), newest first, read
    /// straight from the database.
    pub fn audit_ids_of(&self, agent: Option<&str>, org: Option<&str>) -> Vec<String> {
        use cpis_fhir::store::schema::audit_events as a;
        use diesel::prelude::*;
        let (agent, org) = (agent.map(str::to_owned), org.map(str::to_owned));
        Store::open(&self.db_url, 1)
            .expect("store")
            .read_blocking(move |c| {
                let mut q = a::table.select(a::id).order(a::id.desc()).into_boxed();
                if let Some(u) = agent {
                    q = q.filter(a::user_id.eq(u));
                }
                if let Some(o) = org {
                    q = q.filter(a::user_org.eq(o));
                }
                Ok::<_, cpis_fhir::store::StoreError>(q.load::<String>(c)?)
            })
            .expect("audit ids")
    }

    /// Rows in the audit trail, read straight from the database.
    pub fn audit_count(&self) -> i64 {
        let store = Store::open(&self.db_url, 1).expect("store");
        store
            .read_blocking(|c| {
                Ok::<_, cpis_fhir::store::StoreError>(cpis_fhir::store::audit::count(c)?)
            })
            .expect("count")
    }

    /// Runs SQL on the server's database behind its back (tests that damage it), in the
    /// dialect of whichever backend the suite runs on.
    pub fn tamper(&self, sqlite: &str, postgres: &str) {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        if self.db_url.starts_with("postgres") {
            let mut c = diesel::PgConnection::establish(&self.db_url).expect("db");
            c.batch_execute(postgres).expect("tamper");
        } else {
            let mut c = diesel::SqliteConnection::establish(&self.db_url).expect("db");
            c.batch_execute(sqlite).expect("tamper");
        }
    }

    /// How many rows a table holds, read straight from the database (tables no API shows).
    pub fn rows_in(&self, table: &str) -> i64 {
        use diesel::{Connection, RunQueryDsl};
        let count = diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
            "(SELECT count(*) FROM {table})"
        ));
        if self.db_url.starts_with("postgres") {
            let mut c = diesel::PgConnection::establish(&self.db_url).expect("db");
            diesel::select(count).get_result(&mut c).expect("count")
        } else {
            let mut c = diesel::SqliteConnection::establish(&self.db_url).expect("db");
            diesel::select(count).get_result(&mut c).expect("count")
        }
    }

    /// The database location, for tests that tamper with it.
    pub fn database(&self) -> &str {
        &self.db_url
    }

    pub fn token(&self, role: Role, org: &str) -> String {
        if let Some(idp) = &self.idp {
            return idp.token(role, org, 0, 600);
        }
        dev::mint(
            self.dir.path(),
            &TokenRequest {
                role,
                org: OdsCode::parse(org).expect("ods"),
                user: format!("user-{}", role.as_str()),
                name: Some("Test User".into()),
                ttl_secs: 600,
                audience: "cpis-fhir".into(),
            },
        )
        .expect("token")
    }

    /// A token from the test issuer (a production app's) with SMART `scope`s.
    pub fn scoped_token(&self, role: Role, org: &str, scope: &str) -> String {
        let now = Utc::now().timestamp();
        let idp = self.idp.as_ref().expect("a production app's issuer");
        idp.sign(&json!({
            "iss": idp.issuer, "sub": format!("user-{}", role.as_str()), "aud": "cpis-fhir",
            "iat": now, "exp": now + 600, "jti": uuid::Uuid::new_v4().to_string(),
            "name": "Test User", "role": role.as_str(), "org": org, "scope": scope,
        }))
    }

    /// A token for user `user` named "Name of {user}".
    pub fn named_user(&self, user: &str, role: Role, org: &str) -> String {
        cpis_fhir::auth::dev::mint(
            self.dir.path(),
            &cpis_fhir::auth::dev::TokenRequest {
                role,
                org: cpis_fhir::domain::OdsCode::parse(org).expect("ODS"),
                user: user.to_owned(),
                name: Some(format!("Name of {user}")),
                ttl_secs: 600,
                audience: "cpis-fhir".into(),
            },
        )
        .expect("token")
    }

    pub fn council(&self, ods: &str) -> String {
        self.token(Role::Council, ods)
    }

    pub fn admin(&self) -> String {
        self.token(Role::Admin, "X26")
    }

    pub fn clinician(&self) -> String {
        self.token(Role::Clinician, "RDE01")
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        self.request_via(&self.client, method, path, token, headers, body)
            .await
            .expect("request sent")
    }

    /// [`TestApp::request`] through another client (another TLS client certificate, say);
    /// `Err` when the connection or the TLS handshake fails.
    pub async fn request_via(
        &self,
        client: &awc::Client,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Resp, String> {
        let mut req = client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        let mut res = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        }
        .map_err(|e| e.to_string())?;
        let body = res
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Resp {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: body.to_vec(),
        })
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.request(Method::GET, path, Some(token), &[], None)
            .await
    }

    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        v: &Value,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut h = vec![("Content-Type", "application/fhir+json")];
        h.extend_from_slice(headers);
        self.request(
            method,
            path,
            Some(token),
            &h,
            Some(v.to_string().into_bytes()),
        )
        .await
    }

    pub async fn put_json(&self, path: &str, token: &str, v: &Value) -> Resp {
        self.send_json(Method::PUT, path, token, v, &[]).await
    }

    pub async fn post_json(&self, path: &str, token: &str, v: &Value) -> Resp {
        self.send_json(Method::POST, path, token, v, &[]).await
    }

    /// Registers a person on behalf of `council`.
    pub async fn given_patient(&self, council: &str, nhs: &str) {
        let r = self
            .put_json(
                &format!("/Patient/{nhs}"),
                &self.council(council),
                &patient_json(nhs),
            )
            .await;
        assert!(r.status == 201 || r.status == 200, "{}", r.text());
    }

    /// Registers a person and a plan for them; returns the new Flag.
    pub async fn given_flag(&self, council: &str, nhs: &str, plan_ref: &str) -> Value {
        self.given_patient(council, nhs).await;
        let r = self
            .post_json(
                "/Flag",
                &self.council(council),
                &flag_json(nhs, council, plan_ref),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }
}

pub fn patient_json(nhs: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "id": nhs,
        "identifier": [{
            "extension": [{
                "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
                "valueCodeableConcept": { "coding": [{
                    "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland",
                    "code": "01",
                }]},
            }],
            "system": "https://fhir.nhs.uk/Id/nhs-number",
            "value": nhs,
        }],
        "name": [{ "family": "Carter", "given": ["Ellis", "James"] }],
        "birthDate": "2016-03-14",
        "address": [{ "line": ["1 High Street"], "city": "Northmoor", "postalCode": "NM1 1AA" }],
    })
}

pub fn flag_json(nhs: &str, council: &str, plan_ref: &str) -> Value {
    json!({
        "resourceType": "Flag",
        "identifier": [{ "system": format!("https://{}.example.org/Id/plan", council.to_ascii_lowercase()), "value": plan_ref }],
        "status": "active",
        "category": [{ "coding": [{
            "system": "https://fhir.nhs.uk/England/CodeSystem/England-FlagCategoryPatient",
            "code": "child-protection-information-system-flag",
        }]}],
        "code": { "coding": [{ "system": "http://snomed.info/sct", "code": "342191000000101" }] },
        "subject": { "reference": format!("Patient/{nhs}") },
        "period": { "start": "2026-01-05" },
        "author": { "reference": format!("Organization/{council}") },
    })
}

pub fn org_json(ods: &str, name: &str) -> Value {
    json!({
        "resourceType": "Organization",
        "id": ods,
        "identifier": [{ "system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": ods }],
        "active": true,
        "name": name,
        "contact": [
            {
                "purpose": { "coding": [{ "system": "https://cpis-fhir.example.org/fhir/CodeSystem/CPIS-CouncilContactPurpose", "code": "office-hours" }] },
                "telecom": [{ "system": "phone", "value": "01632 960001" }],
            },
            {
                "purpose": { "coding": [{ "system": "https://cpis-fhir.example.org/fhir/CodeSystem/CPIS-CouncilContactPurpose", "code": "emergency-duty" }] },
                "telecom": [{ "system": "phone", "value": "01632 960101" }],
            },
        ],
    })
}

impl TestApp {
    /// Registers a plan shaped by `shape` for a person (registering them if needed).
    pub async fn given_flag_shaped(
        &self,
        council: &str,
        nhs: &str,
        plan_ref: &str,
        shape: impl FnOnce(&mut Value),
    ) -> Value {
        self.given_patient(council, nhs).await;
        let mut f = flag_json(nhs, council, plan_ref);
        shape(&mut f);
        let r = self.post_json("/Flag", &self.council(council), &f).await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }

    /// The clinician's look-up of one person.
    pub async fn lookup(
        &self,
        token: &str,
        nhs: &str,
        extra: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        let path =
            format!("/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{nhs}{extra}");
        self.request(Method::GET, &path, Some(token), headers, None)
            .await
    }

    /// The path of a searchset's `next` link, if it has one.
    pub fn next_page(&self, bundle: &Value) -> Option<String> {
        bundle["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
            .and_then(|l| l["url"].as_str())
            .map(|u| u.trim_start_matches(&self.base).to_owned())
    }

    /// The ids of every audit record about a person, as the audit team pages through them
    /// `count` at a time, newest first.
    pub async fn audit_ids_paged(&self, nhs: &str, count: usize) -> Vec<String> {
        self.audit_ids_searched(
            &format!("patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{nhs}"),
            count,
        )
        .await
    }

    /// The ids an auditor's `GET /AuditEvent?{query}` finds, `count` to a page, following
    /// every `next` link.
    pub async fn audit_ids_searched(&self, query: &str, count: usize) -> Vec<String> {
        let t = self.token(Role::Auditor, "X26");
        let mut next = Some(format!("/AuditEvent?{query}&_count={count}"));
        let (mut ids, mut pages) = (Vec::new(), 0);
        while let Some(path) = next.take() {
            let r = self.get(&path, &t).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let b = r.json();
            let page = entries(&b, "match");
            assert!(page.len() <= count);
            ids.extend(
                page.iter()
                    .filter_map(|e| e["id"].as_str().map(str::to_owned)),
            );
            next = self.next_page(&b);
            pages += 1;
            assert!(pages < 100, "paging does not end");
        }
        ids
    }

    /// Every audit record about a person, as the audit team sees them, newest first.
    pub async fn audit_of(&self, nhs: &str) -> Vec<Value> {
        self.audit_search(&format!(
            "patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{nhs}&_count=100"
        ))
        .await
    }

    /// The AuditEvents an auditor's `GET /AuditEvent?{query}` finds (one page).
    /// The reasons of the refused authentications on the audit trail, newest first.
    pub async fn refusal_reasons(&self) -> Vec<String> {
        self.audit_search("type=http://dicom.nema.org/resources/ontology/DCM%7C110114&_count=100")
            .await
            .iter()
            .filter_map(|e| e["entity"][0]["detail"].as_array())
            .flatten()
            .filter(|d| d["type"] == "reason")
            .filter_map(|d| d["valueString"].as_str().map(str::to_owned))
            .collect()
    }

    pub async fn audit_search(&self, query: &str) -> Vec<Value> {
        let t = self.token(Role::Auditor, "X26");
        let r = self.get(&format!("/AuditEvent?{query}"), &t).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e["resource"].clone())
            .collect()
    }
}

impl TestApp {
    /// Submits a transaction or batch Bundle as `council`.
    pub async fn bundle(&self, council: &str, kind: &str, entries: Vec<Value>) -> Resp {
        let b = json!({ "resourceType": "Bundle", "type": kind, "entry": entries });
        self.post_json("/", &self.council(council), &b).await
    }

    /// Runs the record lifecycle as an administrator; returns `$purge`'s Parameters.
    pub async fn purge(&self) -> Value {
        let r = self
            .request(Method::POST, "/$purge", Some(&self.admin()), &[], None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

/// A named value of a Parameters resource.
pub fn parameter(params: &Value, name: &str) -> Value {
    params["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .map(|p| {
            p.get("valueInteger")
                .or_else(|| p.get("valueReference"))
                .cloned()
                .unwrap_or(Value::Null)
        })
        .unwrap_or(Value::Null)
}

/// A `PUT Patient/{nhs}` entry.
pub fn put_patient_entry(nhs: &str) -> Value {
    json!({
        "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "resource": patient_json(nhs),
        "request": { "method": "PUT", "url": format!("Patient/{nhs}") },
    })
}

/// A conditional `PUT Flag?identifier=…` entry for the plan `plan_ref`.
pub fn put_flag_entry(nhs: &str, council: &str, plan_ref: &str) -> Value {
    let f = flag_json(nhs, council, plan_ref);
    let system = f["identifier"][0]["system"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    json!({
        "resource": f,
        "request": {
            "method": "PUT",
            "url": format!("Flag?identifier={}%7C{plan_ref}", system.replace(':', "%3A").replace('/', "%2F")),
        },
    })
}

/// The status line of each entry of a transaction-response or batch-response.
pub fn statuses(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            e["response"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The CP-IS result code (CPR…) of each entry's outcome.
pub fn result_codes(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            e["response"]["outcome"]["issue"][0]["details"]["coding"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|c| c["code"].as_str().filter(|c| c.starts_with("CPR")))
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The resources of a searchset, by search mode.
pub fn entries(bundle: &Value, mode: &str) -> Vec<Value> {
    bundle["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| e["resource"].clone())
        .collect()
}
