//! A council's webhook receiver for CP-IS access notifications: what a council case system
//! does with a notification.
//!
//! 1. Verify `X-CPIS-Signature: sha256=<hex>` — HMAC-SHA256 of the raw body under the
//!    subscription's secret (returned once when the subscription was created) — in constant
//!    time, before trusting anything in the body. A bad signature gets 401 and is not read.
//! 2. Answer 200 at once (the server retries anything else, with back-off).
//! 3. For each event, fetch the AuditEvent it names with the council's own token and print who
//!    looked, from which organisation, when and in which care setting. Event numbers let the
//!    receiver drop duplicates (delivery is at least once) and notice gaps, which it can fill
//!    with `GET /Subscription/{id}/$events?eventsSinceNumber=…`.
//!
//! Run (with `cpis-fhir serve --dev` on 127.0.0.1:8080 and its `dev-tokens.env` sourced):
//!
//! ```text
//! cargo run --example council-receiver -- --listen 127.0.0.1:9090 \
//!     --secret <secret from the create response> --token "$TOKEN_COUNCIL_LA901"
//! ```
//!
//! A real receiver listens behind https; plain http to 127.0.0.1 is for trying it out.

use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use clap::Parser;
use serde_json::Value;

#[derive(Parser, Debug, Clone)]
#[command(about = "Receives and verifies CP-IS access notifications for a council")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: String,
    /// The subscription's signing secret.
    #[arg(long, env = "CPIS_RECEIVER_SECRET")]
    secret: String,
    /// The council's bearer token, to fetch the AuditEvents.
    #[arg(long, env = "CPIS_RECEIVER_TOKEN")]
    token: String,
}

struct Receiver {
    args: Args,
    /// The highest event number handled per subscription (duplicates are dropped).
    seen: Mutex<std::collections::HashMap<String, i64>>,
}

/// Constant-time check of `sha256=<hex>` against the HMAC of `body`.
fn signature_ok(secret: &str, body: &[u8], header: &str) -> bool {
    let Ok(key) = openssl::pkey::PKey::hmac(secret.as_bytes()) else {
        return false;
    };
    let Ok(mut signer) = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)
    else {
        return false;
    };
    let Ok(mac) = signer.update(body).and_then(|()| signer.sign_to_vec()) else {
        return false;
    };
    let expected: String = "sha256="
        .chars()
        .chain(
            mac.iter()
                .flat_map(|b| format!("{b:02x}").chars().collect::<Vec<_>>()),
        )
        .collect();
    expected.len() == header.len() && openssl::memcmp::eq(expected.as_bytes(), header.as_bytes())
}

fn param<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

/// (event number, AuditEvent URL) of each event in a notification.
fn events(status: &Value) -> Vec<(i64, Option<String>)> {
    status["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "notification-event")
        .map(|p| {
            let parts = p["part"].as_array().cloned().unwrap_or_default();
            let part = |n: &str| parts.iter().find(|x| x["name"] == n).cloned();
            let number = part("event-number")
                .and_then(|x| x["valueString"].as_str().and_then(|s| s.parse().ok()))
                .unwrap_or(0);
            let focus = part("focus")
                .and_then(|x| x["valueReference"]["reference"].as_str().map(str::to_owned));
            (number, focus)
        })
        .collect()
}

/// Who looked, from where and when, from an AuditEvent.
fn describe(audit: &Value) -> String {
    let agents = audit["agent"].as_array().cloned().unwrap_or_default();
    let user = agents.iter().find(|a| a["requestor"] == true);
    let who = user
        .and_then(|u| u["who"]["display"].as_str())
        .unwrap_or("(no name)");
    let user_id = user
        .and_then(|u| u["who"]["identifier"]["value"].as_str())
        .unwrap_or("?");
    let role = user
        .and_then(|u| u["role"][0]["coding"][0]["code"].as_str())
        .unwrap_or("?");
    let org = agents
        .iter()
        .find(|a| a["type"]["coding"][0]["code"] == "PROV")
        .and_then(|a| a["who"]["identifier"]["value"].as_str())
        .unwrap_or("?");
    let setting = audit["purposeOfEvent"][0]["coding"][0]["code"]
        .as_str()
        .unwrap_or("?");
    let when = audit["recorded"].as_str().unwrap_or("?");
    format!("{who} (user {user_id}, role {role}) at organisation {org}, {when}, {setting} care")
}

async fn notification(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Receiver>>,
) -> HttpResponse {
    let signature = req
        .headers()
        .get("X-CPIS-Signature")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !signature_ok(&state.args.secret, &body, signature) {
        eprintln!("refused a notification with a bad or missing signature");
        return HttpResponse::Unauthorized().finish();
    }
    let Ok(bundle) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    let status = bundle["entry"][0]["resource"].clone();
    let kind = param(&status, "type")
        .and_then(|p| p["valueCode"].as_str())
        .unwrap_or("?")
        .to_owned();
    let subscription = param(&status, "subscription")
        .and_then(|p| p["valueReference"]["reference"].as_str())
        .unwrap_or("?")
        .to_owned();
    println!("{kind} from {subscription}");
    let fresh: Vec<(i64, Option<String>)> = {
        let mut seen = state.seen.lock().unwrap_or_else(|e| e.into_inner());
        let last = seen.entry(subscription.clone()).or_insert(0);
        let fresh: Vec<_> = events(&status)
            .into_iter()
            .filter(|(n, _)| *n > *last)
            .collect();
        if let Some((first, _)) = fresh.first() {
            if *first > *last + 1 {
                println!(
                    "  missed events {}..{}: fetch them with {subscription}/$events?eventsSinceNumber={}",
                    *last + 1,
                    first - 1,
                    *last + 1
                );
            }
        }
        if let Some((n, _)) = fresh.last() {
            *last = *n;
        }
        fresh
    };
    // Answer first; look the accesses up afterwards.
    let token = state.args.token.clone();
    actix_web::rt::spawn(async move {
        let client = awc::Client::default();
        for (number, focus) in fresh {
            let Some(url) = focus else {
                println!("  event {number} (empty payload)");
                continue;
            };
            let answer = client
                .get(&url)
                .insert_header(("Authorization", format!("Bearer {token}")))
                .insert_header(("Accept", "application/fhir+json"))
                .send()
                .await;
            match answer {
                Ok(mut res) if res.status().is_success() => {
                    match res.json::<Value>().limit(1 << 20).await {
                        Ok(audit) => {
                            println!("  event {number}: looked up by {}", describe(&audit))
                        }
                        Err(e) => println!("  event {number}: unreadable AuditEvent: {e}"),
                    }
                }
                Ok(res) => println!("  event {number}: {url} answered {}", res.status()),
                Err(e) => println!("  event {number}: cannot fetch {url}: {e}"),
            }
        }
    });
    HttpResponse::Ok().finish()
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listen = args.listen.clone();
    let state = Arc::new(Receiver {
        args,
        seen: Mutex::default(),
    });
    println!("council receiver listening on http://{listen}/");
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .default_service(web::post().to(notification))
        })
        .workers(1)
        .bind(&listen)?
        .run()
        .await
    })
}
