//! How much memory request bodies may hold at once, whatever mix of requests arrives.
//!
//! Each body is bounded on its own (`body_limit`, `bundle_body_limit`, and the depth and value
//! counts of `fhir::guard`), but a hundred concurrent uploads would still add up. So two budgets
//! are shared by all requests:
//! - **bodies**: the bytes being received. A request takes its declared `Content-Length` (or its
//!   route's limit when it declares none) before reading, and gives it back once the body is
//!   parsed.
//! - **parsed**: what the parsed body and the work on it cost, estimated from the scan (bytes
//!   plus a fixed cost per value). It is held until the request is answered.
//!
//! A request that waits too long for either answers 503 with `Retry-After`; one that could never
//! fit answers 413. A request holding `bodies` may wait for `parsed`, never the other way round,
//! so the two cannot deadlock. Measured figures and the bound they give are in the README
//! ("Limits").

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::fhir::guard::Shape;

/// What one value, as `fhir::guard` counts them, costs once parsed and worked on. The scan
/// counts about two per object member (its `:` and its `,`), and a member of a
/// `serde_json::Value` object costs ~150–180 bytes with `preserve_order` (the bucket, the index
/// slot, the key's allocation); array elements ~80. The rows, inputs and issues made from a
/// Bundle entry, and fhirbolt's model of one entry at a time, add little beside that. Checked
/// against the server's peak RSS by `cpis-bench hostile` (README "Limits").
pub const BYTES_PER_VALUE: usize = 100;

const KIB: usize = 1024;

/// The shared budgets, in KiB.
#[derive(Clone)]
pub struct Budget {
    bodies: Arc<Semaphore>,
    parsed: Arc<Semaphore>,
    bodies_kib: usize,
    parsed_kib: usize,
    wait: Duration,
}

/// A share of a budget, given back when dropped.
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] OwnedSemaphorePermit);

impl Budget {
    pub fn new(bodies_bytes: usize, parsed_bytes: usize, wait: Duration) -> Self {
        let bodies_kib = bodies_bytes.div_ceil(KIB).max(1);
        let parsed_kib = parsed_bytes.div_ceil(KIB).max(1);
        Self {
            bodies: Arc::new(Semaphore::new(bodies_kib)),
            parsed: Arc::new(Semaphore::new(parsed_kib)),
            bodies_kib,
            parsed_kib,
            wait,
        }
    }

    /// Room for a body of `bytes` being received.
    pub async fn for_body(&self, bytes: usize) -> Result<Held, ApiError> {
        take(
            &self.bodies,
            self.bodies_kib,
            bytes,
            self.wait,
            "request bodies",
        )
        .await
    }

    /// Room for the parsed form of a body of `bytes` with this shape.
    pub async fn for_parsed(&self, bytes: usize, shape: Shape) -> Result<Held, ApiError> {
        let cost = bytes.saturating_add(shape.nodes.saturating_mul(BYTES_PER_VALUE));
        take(
            &self.parsed,
            self.parsed_kib,
            cost,
            self.wait,
            "parsed bodies",
        )
        .await
    }

    /// KiB of each budget free now (bodies, parsed), for tests and the benchmark.
    pub fn free_kib(&self) -> (usize, usize) {
        (
            self.bodies.available_permits(),
            self.parsed.available_permits(),
        )
    }
}

async fn take(
    pool: &Arc<Semaphore>,
    total_kib: usize,
    bytes: usize,
    wait: Duration,
    what: &str,
) -> Result<Held, ApiError> {
    let kib = bytes.div_ceil(KIB).max(1);
    if kib > total_kib {
        return Err(ApiError::PayloadTooLarge(format!(
            "this request would need {kib} KiB for {what}, more than this server ever gives one request ({total_kib} KiB); send a smaller body"
        )));
    }
    let n = u32::try_from(kib)
        .map_err(|_| ApiError::PayloadTooLarge("the body is too large".into()))?;
    match actix_web::rt::time::timeout(wait, pool.clone().acquire_many_owned(n)).await {
        Ok(Ok(permit)) => Ok(Held(permit)),
        Ok(Err(_)) => Err(ApiError::Internal("the request budget was closed".into())),
        Err(_) => Err(ApiError::Busy(format!(
            "the server is busy with other large requests ({what}); retry after a few seconds"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_request_waits_for_room_and_one_that_never_fits_is_refused() {
        let b = Budget::new(8 * KIB, 8 * KIB, Duration::from_millis(50));
        let held = b.for_body(6 * KIB).await;
        assert!(held.is_ok());
        assert!(matches!(b.for_body(4 * KIB).await, Err(ApiError::Busy(_))));
        drop(held);
        assert!(b.for_body(4 * KIB).await.is_ok());
        assert!(matches!(
            b.for_body(9 * KIB).await,
            Err(ApiError::PayloadTooLarge(_))
        ));
        let shape = Shape {
            depth: 3,
            nodes: 10,
        };
        assert!(b.for_parsed(KIB, shape).await.is_ok());
        assert_eq!(b.free_kib(), (8, 8));
    }
}
