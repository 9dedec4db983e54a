//! Council notifications: Subscriptions, the outbox and the delivery worker, tested against a
//! real webhook receiver on 127.0.0.1. The worker is stepped by the tests and the clock moved by
//! hand, so back-off is exercised without sleeping.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::http::Method;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use cpis_fhir::domain::Role;
use cpis_fhir::notify::signature;
use serde_json::{json, Value};

use crate::helpers::*;

const TOPIC: &str = "https://cpis-fhir.example.org/fhir/SubscriptionTopic/cpis-access-notification";
const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";

#[derive(Clone, Debug)]
pub struct Received {
    signature: Option<String>,
    custom: Option<String>,
    raw: Vec<u8>,
    body: Value,
}

impl Received {
    pub fn kind(&self) -> String {
        status_param(&self.body, "type")
    }

    /// (event number, focus) of every event in the notification.
    pub fn events(&self) -> Vec<(i64, String)> {
        self.body["entry"][0]["resource"]["parameter"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"] == "notification-event")
            .map(|p| {
                let parts = p["part"].as_array().cloned().unwrap_or_default();
                let part = |n: &str| {
                    parts
                        .iter()
                        .find(|x| x["name"] == n)
                        .cloned()
                        .unwrap_or(Value::Null)
                };
                (
                    part("event-number")["valueString"]
                        .as_str()
                        .unwrap_or("0")
                        .parse()
                        .unwrap(),
                    part("focus")["valueReference"]["reference"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .collect()
    }
}

fn status_param(bundle: &Value, name: &str) -> String {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .map(|p| {
            p["valueCode"]
                .as_str()
                .or(p["valueString"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}

/// A council's webhook: records what it gets, and fails the next `fail` requests with 500.
/// It also counts the posts it is answering at once (each held `hold_ms`), so a test can show
/// that two workers never post to one subscription concurrently.
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    fail: Arc<AtomicUsize>,
    pub hold_ms: Arc<AtomicUsize>,
    pub most_at_once: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start() -> Self {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let fail: Arc<AtomicUsize> = Arc::default();
        let (hold_ms, most_at_once): (Arc<AtomicUsize>, Arc<AtomicUsize>) = Default::default();
        let at_once: Arc<AtomicUsize> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (g, f) = (got.clone(), fail.clone());
        let (h, m) = (hold_ms.clone(), most_at_once.clone());
        let server = HttpServer::new(move || {
            let (g, f, h, m, a) = (g.clone(), f.clone(), h.clone(), m.clone(), at_once.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (g, f, h, m, a) = (g.clone(), f.clone(), h.clone(), m.clone(), a.clone());
                async move {
                    let now = a.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    let hold = h.load(Ordering::SeqCst);
                    if hold > 0 {
                        actix_rt::time::sleep(std::time::Duration::from_millis(hold as u64)).await;
                    }
                    a.fetch_sub(1, Ordering::SeqCst);
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_owned)
                    };
                    g.lock().unwrap().push(Received {
                        signature: header("X-CPIS-Signature"),
                        custom: header("X-Council-Key"),
                        raw: body.to_vec(),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    let failing = f
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if failing {
                        HttpResponse::InternalServerError().finish()
                    } else {
                        HttpResponse::Ok().finish()
                    }
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        actix_rt::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            got,
            fail,
            hold_ms,
            most_at_once,
        }
    }

    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn of_kind(&self, kind: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.kind() == kind)
            .collect()
    }

    /// Every event received, in the order received.
    pub fn events(&self) -> Vec<(i64, String)> {
        self.of_kind("event-notification")
            .iter()
            .flat_map(Received::events)
            .collect()
    }

    fn fail_next(&self, n: usize) {
        self.fail.store(n, Ordering::SeqCst);
    }
}

pub fn subscription_json(endpoint: &str, filter: Option<&str>) -> Value {
    let mut s = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Access to Service Notifications for our case system",
        "criteria": TOPIC,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": { "extension": [{ "url": format!("{BACKPORT}/backport-payload-content"), "valueCode": "id-only" }] },
            "header": ["X-Council-Key: s3cret-header-value"],
        },
    });
    if let Some(f) = filter {
        s["_criteria"] = json!({ "extension": [{ "url": format!("{BACKPORT}/backport-filter-criteria"), "valueString": f }] });
    }
    s
}

/// Subscribes `council` and returns (id, secret).
pub async fn subscribe(app: &TestApp, council: &str, endpoint: &str) -> (String, String) {
    let filter = format!("AuditEvent?council={council}");
    let r = app
        .post_json(
            "/Subscription",
            &app.council(council),
            &subscription_json(endpoint, Some(&filter)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let secret = v["channel"]["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["url"]
                .as_str()
                .unwrap()
                .ends_with("subscription-signing-secret")
        })
        .and_then(|e| e["valueString"].as_str())
        .expect("the secret is shown on create")
        .to_owned();
    (v["id"].as_str().unwrap().to_owned(), secret)
}

async fn subscription(app: &TestApp, council: &str, id: &str) -> Value {
    let r = app
        .get(&format!("/Subscription/{id}"), &app.council(council))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// A subscribed, handshaken council LA901 with a plan on NHS_1.
async fn subscribed() -> (TestApp, Receiver, String, String) {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    let (id, secret) = subscribe(&app, LA_A, &hook.url).await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    app.deliver().await;
    assert_eq!(hook.of_kind("handshake").len(), 1, "{:?}", hook.all());
    (app, hook, id, secret)
}

#[actix_rt::test]
async fn a_council_is_handshaken_then_told_once_of_an_unscheduled_look_up_with_a_signed_id_only_notification(
) {
    let (app, hook, id, secret) = subscribed().await;
    assert_eq!(subscription(&app, LA_A, &id).await["status"], "active");
    let r = app.lookup(&app.clinician(), NHS_1, "", &[]).await;
    assert_eq!(r.status, 200);
    let report = app.deliver().await;
    assert_eq!(report.events_delivered, 1, "{report:?}");
    assert_eq!(app.deliver().await.delivered, 0, "nothing more to send");

    let notes = hook.of_kind("event-notification");
    assert_eq!(notes.len(), 1, "{:?}", hook.all());
    let n = &notes[0];
    assert_eq!(n.body["type"], "history");
    assert_eq!(n.body["entry"][0]["resource"]["resourceType"], "Parameters");
    assert_eq!(
        status_param(&n.body, "events-since-subscription-start"),
        "1"
    );
    assert!(
        signature::verify(&secret, &n.raw, n.signature.as_deref().unwrap()),
        "the signature verifies"
    );
    assert!(!signature::verify(
        "another-secret-another-secret-xx",
        &n.raw,
        n.signature.as_deref().unwrap()
    ));
    assert_eq!(
        n.custom.as_deref(),
        Some("s3cret-header-value"),
        "the subscription's header is sent"
    );
    let events = n.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, 1);
    // The focus is the look-up's own AuditEvent, which the council can read with its own token.
    let audit = app.audit_of(NHS_1).await;
    let lookup = audit
        .iter()
        .find(|a| a["subtype"][0]["code"] == "search-type")
        .expect("the look-up's audit");
    let focus = &events[0].1;
    assert!(
        focus.ends_with(&format!("/AuditEvent/{}", lookup["id"].as_str().unwrap())),
        "{focus}"
    );
    let path = focus
        .split_once("127.0.0.1:")
        .unwrap()
        .1
        .split_once('/')
        .unwrap()
        .1;
    let r = app.get(&format!("/{path}"), &app.council(LA_A)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("RDE01"),
        "the council sees which organisation looked"
    );
    // No child data travels in the webhook.
    let text = String::from_utf8_lossy(&n.raw);
    assert!(!text.contains(NHS_1) && !text.contains("Flag/"), "{text}");
}

#[actix_rt::test]
async fn scheduled_reads_misses_and_refusals_notify_no_one() {
    let (app, hook, _, _) = subscribed().await;
    let silent = app
        .lookup(
            &app.clinician(),
            NHS_1,
            "",
            &[("IsUnscheduledAccessEvent", "false")],
        )
        .await;
    assert_eq!(silent.status, 200);
    let scheduled = app.token(Role::ClinicianScheduled, "RDE01");
    assert_eq!(app.lookup(&scheduled, NHS_1, "", &[]).await.status, 200);
    assert_eq!(
        app.lookup(&app.clinician(), NHS_2, "", &[]).await.status,
        200,
        "a miss"
    );
    assert_eq!(
        app.lookup(&app.clinician(), "1234567890", "", &[])
            .await
            .status,
        400
    );
    assert_eq!(
        app.get(
            &format!("/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}"),
            &app.council(LA_A)
        )
        .await
        .status,
        200
    );
    app.deliver().await;
    assert!(hook.events().is_empty(), "{:?}", hook.all());
}

#[actix_rt::test]
async fn a_child_with_plans_from_two_councils_notifies_each_council_once() {
    let app = TestApp::spawn().await;
    let (hook_a, hook_b) = (Receiver::start().await, Receiver::start().await);
    subscribe(&app, LA_A, &hook_a.url).await;
    subscribe(&app, LA_B, &hook_b.url).await;
    app.given_flag(LA_A, NHS_1, "PLAN-A").await;
    app.given_flag(LA_B, NHS_1, "PLAN-B").await;
    app.given_flag(LA_B, NHS_2, "PLAN-B2").await;
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
    app.deliver().await;
    app.deliver().await;
    assert_eq!(hook_a.events().len(), 1, "{:?}", hook_a.all());
    assert_eq!(hook_b.events().len(), 1, "{:?}", hook_b.all());
    assert_eq!(
        hook_a.events()[0].1,
        hook_b.events()[0].1,
        "the same AuditEvent"
    );
}

#[actix_rt::test]
async fn a_look_up_of_two_councils_plans_notifies_whichever_one_subscribed() {
    for (subscribed, other) in [(LA_A, LA_B), (LA_B, LA_A)] {
        let app = TestApp::spawn().await;
        let hook = Receiver::start().await;
        subscribe(&app, subscribed, &hook.url).await;
        app.given_flag(LA_A, NHS_1, "PLAN-A").await;
        app.given_flag(LA_B, NHS_1, "PLAN-B").await;
        assert_eq!(
            app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
            200
        );
        // The first step shakes hands, the second delivers.
        app.deliver().await;
        app.deliver().await;
        assert_eq!(
            hook.events().len(),
            1,
            "{subscribed} subscribed, {other} not: {:?}",
            hook.all()
        );
    }
}

#[actix_rt::test]
async fn a_failing_endpoint_is_retried_with_back_off_goes_to_error_and_recovers_delivering_in_order(
) {
    let (app, hook, id, _) = subscribed().await;
    hook.fail_next(4);
    for _ in 0..3 {
        assert_eq!(
            app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
            200
        );
    }
    assert_eq!(app.deliver().await.failed, 1, "attempt 1 fails");
    assert_eq!(
        app.deliver().await.failed,
        0,
        "not retried before the back-off has passed"
    );
    app.advance(9);
    assert_eq!(app.deliver().await.failed, 0, "10 s back-off not yet over");
    app.advance(1);
    assert_eq!(app.deliver().await.failed, 1, "attempt 2 after 10 s");
    assert_eq!(
        subscription(&app, LA_A, &id).await["status"],
        "active",
        "two failures: not yet error"
    );
    app.advance(20);
    assert_eq!(app.deliver().await.failed, 1, "attempt 3 after 20 s more");
    let s = subscription(&app, LA_A, &id).await;
    assert_eq!(s["status"], "error");
    assert!(s["error"].as_str().unwrap().contains("500"), "{s}");
    let st = app
        .get(&format!("/Subscription/{id}/$status"), &app.council(LA_A))
        .await;
    assert_eq!(st.status, 200);
    assert_eq!(status_param(&st.json(), "status"), "error");
    app.advance(39);
    assert_eq!(app.deliver().await.failed, 0);
    app.advance(1);
    assert_eq!(app.deliver().await.failed, 1, "attempt 4 after 40 s more");
    app.advance(80);
    let r = app.deliver().await;
    assert_eq!((r.delivered, r.events_delivered), (1, 3), "{r:?}");
    assert_eq!(subscription(&app, LA_A, &id).await["status"], "active");
    // Every attempt carried the same events in the same order; the last one was acknowledged.
    let attempts = hook.of_kind("event-notification");
    assert_eq!(attempts.len(), 5);
    for a in &attempts {
        assert_eq!(
            a.events().iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }
}

#[actix_rt::test]
async fn a_server_restarted_over_a_backlog_delivers_all_of_it_in_order() {
    let (app, hook, id, _) = subscribed().await;
    hook.fail_next(usize::MAX);
    for _ in 0..5 {
        assert_eq!(
            app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
            200
        );
    }
    assert_eq!(app.deliver().await.failed, 1);
    let app = app.restart().await;
    hook.fail_next(0);
    app.advance(10);
    app.deliver().await;
    let delivered: Vec<i64> = hook
        .of_kind("event-notification")
        .last()
        .unwrap()
        .events()
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(delivered, vec![1, 2, 3, 4, 5]);
    let s = subscription(&app, LA_A, &id).await;
    assert_eq!(s["status"], "active");
    // A look-up made after the restart follows in order.
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
    app.deliver().await;
    assert_eq!(
        hook.of_kind("event-notification").last().unwrap().events()[0].0,
        6
    );
}

#[actix_rt::test]
async fn look_ups_committed_while_the_worker_is_not_running_wait_in_the_outbox() {
    let (app, hook, _, _) = subscribed().await;
    for _ in 0..3 {
        assert_eq!(
            app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
            200
        );
    }
    let app = app.restart().await;
    app.deliver().await;
    assert_eq!(
        hook.events().iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[actix_rt::test]
async fn two_workers_never_deliver_the_same_notification() {
    let (app, hook, _, _) = subscribed().await;
    for _ in 0..4 {
        assert_eq!(
            app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
            200
        );
    }
    let other = app.notifier.another();
    let client = cpis_fhir::notify::Notifier::client();
    let (a, b) = futures_util::future::join(app.deliver(), other.step(&client)).await;
    let b = b.unwrap();
    assert_eq!(a.events_delivered + b.events_delivered, 4, "{a:?} {b:?}");
    assert_eq!(
        hook.events().iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}

#[actix_rt::test]
async fn a_council_can_neither_subscribe_to_another_council_nor_see_its_subscriptions() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    let r = app
        .post_json(
            "/Subscription",
            &app.council(LA_A),
            &subscription_json(&hook.url, Some("AuditEvent?council=LA902")),
        )
        .await;
    r.assert_outcome(403, "forbidden");
    let (b_id, _) = subscribe(&app, LA_B, &hook.url).await;
    let (a_id, _) = subscribe(&app, LA_A, &hook.url).await;
    app.get(&format!("/Subscription/{b_id}"), &app.council(LA_A))
        .await
        .assert_outcome(403, "forbidden");
    app.get(&format!("/Subscription/{b_id}/$status"), &app.council(LA_A))
        .await
        .assert_outcome(403, "forbidden");
    app.get(&format!("/Subscription/{b_id}/$events"), &app.council(LA_A))
        .await
        .assert_outcome(403, "forbidden");
    let r = app
        .request(
            Method::DELETE,
            &format!("/Subscription/{b_id}"),
            Some(&app.council(LA_A)),
            &[],
            None,
        )
        .await;
    r.assert_outcome(403, "forbidden");
    let mine = app.get("/Subscription", &app.council(LA_A)).await.json();
    let ids: Vec<&str> = mine["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a_id.as_str()]);
    assert_eq!(
        app.get("/Subscription", &app.admin()).await.json()["total"],
        2
    );
    app.get("/Subscription", &app.clinician())
        .await
        .assert_outcome(403, "forbidden");
    // Reads never show the headers' values or the secret.
    let text = app
        .get(&format!("/Subscription/{a_id}"), &app.council(LA_A))
        .await
        .text();
    assert!(
        !text.contains("s3cret-header-value") && !text.contains("signing-secret"),
        "{text}"
    );
}

#[actix_rt::test]
async fn a_bad_subscription_is_refused_naming_what_is_wrong() {
    let app = TestApp::spawn().await;
    let t = app.council(LA_A);
    let mut full = subscription_json("https://case.example.org/hook", None);
    full["channel"]["_payload"]["extension"][0]["valueCode"] = json!("full-resource");
    let r = app.post_json("/Subscription", &t, &full).await;
    r.assert_outcome(422, "business-rule");
    assert!(r
        .expressions()
        .contains(&"Subscription.channel.payload.extension".to_owned()));
    let r = app
        .post_json(
            "/Subscription",
            &t,
            &subscription_json("http://case.example.org/hook", None),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.text().contains("127.0.0.1"), "{}", r.text());
    let mut wrong = subscription_json("https://case.example.org/hook", None);
    wrong["criteria"] = json!("Flag?status=active");
    wrong.as_object_mut().unwrap().remove("status");
    let r = app.post_json("/Subscription", &t, &wrong).await;
    assert_eq!(r.status, 422);
    let ex = r.expressions();
    assert!(
        ex.contains(&"Subscription.criteria".to_owned())
            && ex.contains(&"Subscription.status".to_owned()),
        "{ex:?}"
    );
    let r = app
        .post_json(
            "/Subscription",
            &t,
            &json!({"resourceType": "Subscription", "status": 7}),
        )
        .await;
    assert!(r.status == 400 || r.status == 422, "{}", r.text());
    // Without the loopback allowance, plain http to this machine is refused too.
    let strict = TestApp::spawn_with(|s| s.notify_allow_loopback = false).await;
    let r = strict
        .post_json(
            "/Subscription",
            &strict.council(LA_A),
            &subscription_json("http://127.0.0.1:9/hook", None),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("https"), "{}", r.text());
    // A subscription with an https endpoint is accepted as it is (its handshake is the worker's).
    let r = app
        .post_json(
            "/Subscription",
            &t,
            &subscription_json("https://case.example.org/hook", None),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["status"], "requested");
}

#[actix_rt::test]
async fn events_can_be_replayed_by_number_range() {
    let (app, _hook, id, _) = subscribed().await;
    for _ in 0..3 {
        assert_eq!(
            app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
            200
        );
    }
    app.deliver().await;
    let r = app
        .get(
            &format!("/Subscription/{id}/$events?eventsSinceNumber=2"),
            &app.council(LA_A),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let replay = Received {
        signature: None,
        custom: None,
        raw: r.body.clone(),
        body: r.json(),
    };
    assert_eq!(replay.kind(), "query-event");
    assert_eq!(
        replay.events().iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(replay.events().iter().all(|e| e.1.contains("/AuditEvent/")));
    let r = app
        .get(
            &format!(
                "/Subscription/{id}/$events?eventsSinceNumber=1&eventsUntilNumber=1&content=empty"
            ),
            &app.council(LA_A),
        )
        .await;
    let replay = Received {
        signature: None,
        custom: None,
        raw: r.body.clone(),
        body: r.json(),
    };
    assert_eq!(replay.events(), vec![(1, String::new())]);
    let r = app
        .get(
            &format!("/Subscription/{id}/$events?content=full-resource"),
            &app.council(LA_A),
        )
        .await;
    r.assert_outcome(400, "not-supported");
    let r = app
        .get(
            &format!("/Subscription/{id}/$events?eventsSinceNumber=zero"),
            &app.council(LA_A),
        )
        .await;
    r.assert_outcome(400, "invalid");
}

#[actix_rt::test]
async fn a_subscription_turned_off_gets_nothing_and_one_past_its_end_is_switched_off() {
    let (app, hook, id, _) = subscribed().await;
    let mut s = subscription(&app, LA_A, &id).await;
    s["status"] = json!("off");
    let r = app
        .put_json(&format!("/Subscription/{id}"), &app.council(LA_A), &s)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
    app.deliver().await;
    assert!(hook.events().is_empty());
    // Back on: handshaken again, and only later accesses are notified.
    let mut s = subscription(&app, LA_A, &id).await;
    s["status"] = json!("requested");
    s["end"] = json!("2026-11-25T13:00:00Z");
    assert_eq!(
        app.put_json(&format!("/Subscription/{id}"), &app.council(LA_A), &s)
            .await
            .status,
        200
    );
    app.deliver().await;
    assert_eq!(hook.of_kind("handshake").len(), 2);
    assert_eq!(subscription(&app, LA_A, &id).await["status"], "active");
    app.advance(3600);
    app.deliver().await;
    assert_eq!(
        subscription(&app, LA_A, &id).await["status"],
        "off",
        "its end has passed"
    );
}

#[actix_rt::test]
async fn a_heartbeat_is_sent_when_nothing_else_was_for_its_period() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    let mut s = subscription_json(&hook.url, None);
    s["channel"]["extension"] =
        json!([{ "url": format!("{BACKPORT}/backport-heartbeat-period"), "valueUnsignedInt": 60 }]);
    assert_eq!(
        app.post_json("/Subscription", &app.council(LA_A), &s)
            .await
            .status,
        201
    );
    app.deliver().await;
    app.advance(59);
    app.deliver().await;
    assert!(hook.of_kind("heartbeat").is_empty());
    app.advance(1);
    app.deliver().await;
    assert_eq!(hook.of_kind("heartbeat").len(), 1);
}

/// The shipped example receiver (`examples/council-receiver.rs`): `cargo test` builds it; a
/// run filtered to this test builds it here.
fn example_receiver() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = debug
        .join("examples")
        .join(format!("council-receiver{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = std::process::Command::new(cargo)
            .args(["build", "--example", "council-receiver"])
            .status()
            .unwrap();
        assert!(built.success());
    }
    path
}

#[actix_rt::test]
async fn the_example_receiver_verifies_the_signature_and_prints_who_looked() {
    use std::io::BufRead;
    let app = TestApp::spawn().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = "council-chosen-secret-0123456789abcdef";
    let mut child = std::process::Command::new(example_receiver())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--secret",
            secret,
            "--token",
            &app.council(LA_A),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the example receiver runs");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    // Waiting on another process: bounded polling (the server under test keeps running meanwhile).
    let wait_for = |needle: &'static str| {
        let lines = lines.clone();
        async move {
            for _ in 0..200 {
                if lines.lock().unwrap().iter().any(|l| l.contains(needle)) {
                    return true;
                }
                actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(wait_for("listening").await, "the receiver starts");
    let mut s = subscription_json(&format!("http://127.0.0.1:{port}/"), None);
    s["channel"]["extension"] = json!([{
        "url": "https://cpis-fhir.example.org/fhir/StructureDefinition/subscription-signing-secret",
        "valueString": secret,
    }]);
    assert_eq!(
        app.post_json("/Subscription", &app.council(LA_A), &s)
            .await
            .status,
        201
    );
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    assert_eq!(
        app.deliver().await.delivered,
        1,
        "the handshake is accepted"
    );
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
    assert_eq!(app.deliver().await.events_delivered, 1);
    let found = wait_for("looked up by Test User").await;
    // A notification signed with another secret is refused.
    let forged = awc::Client::default()
        .post(format!("http://127.0.0.1:{port}/"))
        .insert_header(("X-CPIS-Signature", "sha256=00"))
        .send_body("{}")
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let printed = lines.lock().unwrap().join("\n");
    assert!(found, "{printed}");
    assert!(
        printed.contains("organisation RDE01") && printed.contains("unscheduled care"),
        "{printed}"
    );
    assert_eq!(forged.status().as_u16(), 401);
}

#[actix_rt::test]
async fn a_subscription_whose_handshake_keeps_failing_shows_error_then_is_handshaken_when_the_endpoint_recovers(
) {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    hook.fail_next(3);
    let (id, _) = subscribe(&app, LA_A, &hook.url).await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    for wait in [0, 10, 20] {
        app.advance(wait);
        assert_eq!(app.deliver().await.failed, 1);
    }
    let s = subscription(&app, LA_A, &id).await;
    assert_eq!(s["status"], "error", "{s}");
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
    app.advance(40);
    app.deliver().await; // the handshake
    app.deliver().await; // then the event that waited for it
    let kinds: Vec<String> = hook.all().iter().map(Received::kind).collect();
    assert_eq!(
        kinds,
        [
            "handshake",
            "handshake",
            "handshake",
            "handshake",
            "event-notification"
        ]
    );
    assert_eq!(subscription(&app, LA_A, &id).await["status"], "active");
}

#[actix_rt::test]
async fn the_worker_thread_inside_the_server_delivers_without_being_stepped() {
    let app =
        TestApp::spawn_with(|s| s.notify_interval = Some(std::time::Duration::from_millis(200)))
            .await;
    let hook = Receiver::start().await;
    subscribe(&app, LA_A, &hook.url).await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
    // The worker runs on its own thread here: wait for it, bounded.
    for _ in 0..100 {
        if !hook.events().is_empty() {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(hook.events().len(), 1, "{:?}", hook.all());
    assert_eq!(hook.of_kind("handshake").len(), 1);
}

#[actix_rt::test]
async fn an_access_to_a_council_nobody_subscribed_for_leaves_nothing_to_deliver() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    subscribe(&app, LA_B, &hook.url).await;
    app.given_flag(LA_A, NHS_1, "PLAN-1").await;
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
    app.deliver().await;
    app.deliver().await;
    assert!(hook.events().is_empty(), "{:?}", hook.all());
    let store = cpis_fhir::store::Store::open(app.database(), 1).unwrap();
    let waiting = store
        .read_blocking(|c| {
            Ok::<_, cpis_fhir::store::StoreError>(cpis_fhir::store::subscriptions::outbox_len(c)?)
        })
        .unwrap();
    assert_eq!(waiting, 0, "nothing is left waiting in the outbox");
}

#[actix_rt::test]
async fn a_subscription_round_trips_in_xml() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    let (id, _) = subscribe(&app, LA_A, &hook.url).await;
    let t = app.council(LA_A);
    let xml = app
        .get(&format!("/Subscription/{id}?_format=xml"), &t)
        .await;
    assert_eq!(xml.status, 200, "{}", xml.text());
    assert!(
        xml.text().contains("backport-filter-criteria"),
        "{}",
        xml.text()
    );
    let changed = xml.text().replace(
        "Access to Service Notifications for our case system",
        "Notifications for the new case system",
    );
    let put = app
        .request(
            Method::PUT,
            &format!("/Subscription/{id}"),
            Some(&t),
            &[("Content-Type", "application/fhir+xml")],
            Some(changed.into_bytes()),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text());
    let now = subscription(&app, LA_A, &id).await;
    assert_eq!(now["reason"], "Notifications for the new case system");
    assert_eq!(now["meta"]["versionId"], "2");
    assert_eq!(
        now["_criteria"]["extension"][0]["valueString"],
        "AuditEvent?council=LA901"
    );
}

#[actix_rt::test]
async fn a_stored_endpoint_that_the_current_rules_forbid_is_never_posted_to_and_the_failure_is_shown(
) {
    let (app, hook, id, _) = subscribed().await;
    // As a subscription stored under a looser configuration (or edited in the database)
    // looks: plain http to an address that is not this machine's allowed one.
    let moved = hook.url.replace("127.0.0.1", "127.0.0.2");
    app.tamper(
        &format!("UPDATE subscriptions SET endpoint = '{moved}'"),
        &format!("UPDATE subscriptions SET endpoint = '{moved}'"),
    );
    assert_eq!(
        app.lookup(&app.clinician(), NHS_1, "", &[]).await.status,
        200
    );
    let report = app.deliver().await;
    assert_eq!((report.failed, report.delivered), (1, 0), "{report:?}");
    assert!(
        hook.of_kind("event-notification").is_empty(),
        "nothing was posted"
    );
    let s = subscription(&app, LA_A, &id).await;
    let error = app
        .get(&format!("/Subscription/{id}/$status"), &app.council(LA_A))
        .await
        .json();
    assert_eq!(s["status"], "active", "one failure is not yet error");
    assert!(error.to_string().contains("not allowed"), "{error}");
}

#[actix_rt::test]
async fn a_look_up_through_the_national_views_notifies_the_council_like_the_flag_look_up() {
    let (app, hook, _, _) = subscribed().await;
    let c = app.clinician();
    let care_team = app
        .get(
            &format!("/cpis/FHIR/R4/CareTeam?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}"),
            &c,
        )
        .await;
    assert_eq!(care_team.status, 200);
    let patient_flag = app
        .get(&format!("/cpis/FHIR/R4/PatientFlag?patient={NHS_1}"), &c)
        .await;
    assert_eq!(patient_flag.status, 200);
    let report = app.deliver().await;
    assert_eq!(report.events_delivered, 2, "{report:?}");
    assert_eq!(
        hook.of_kind("event-notification").len(),
        1,
        "one post, both events"
    );
    // A scheduled (silent) read through a national view is audited but not notified.
    let silent = app
        .request(
            awc::http::Method::GET,
            &format!("/cpis/FHIR/R4/CareTeam?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C{NHS_1}"),
            Some(&c),
            &[("IsUnscheduledAccessEvent", "false")],
            None,
        )
        .await;
    assert_eq!(silent.status, 200);
    assert_eq!(app.deliver().await.events_delivered, 0);
}
