//! Posting one Bundle, again after a pause while the server is unreachable or unavailable.

use super::*;

/// Posts one Bundle; `Err` when the server could not take it at all.
pub(super) async fn post(
    client: &awc::Client,
    server: &str,
    token: &str,
    body: &[u8],
    attempts: u32,
) -> Result<Value, String> {
    let mut last = String::new();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            let pause = Duration::from_millis(500 * 2u64.pow(attempt - 1));
            actix_web::rt::time::sleep(pause).await;
        }
        let sent = client
            .post(format!("{server}/"))
            .insert_header(("Content-Type", "application/fhir+json"))
            .insert_header(("Accept", "application/fhir+json"))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send_body(body.to_vec())
            .await;
        let mut res = match sent {
            Ok(r) => r,
            Err(e) => {
                last = format!("the server at {server} could not be reached: {e}");
                continue;
            }
        };
        let status = res.status();
        let bytes = res
            .body()
            .limit(256 * 1024 * 1024)
            .await
            .map_err(|e| format!("the server's answer could not be read: {e}"))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let why = value["issue"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["diagnostics"].as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        last = format!("the server answered {status}: {why}");
        // Only an unavailable server is worth asking again; anything else will not change.
        if status.as_u16() != 503 && !status.is_server_error() {
            return Err(last);
        }
    }
    Err(last)
}
