//! Subscription (FHIR R4 §2.46.0 Subscription, in the form of the Subscriptions R5 Backport IG
//! for R4) and the notification payloads: the `history` Bundle whose first entry is the
//! backport `SubscriptionStatus` Parameters (handshake, heartbeat, event-notification, and the
//! `$status` / `$events` answers).
//!
//! One topic: every unscheduled access that disclosed one of a council's records (DOMAIN.md
//! "Notification to the council", the national service's Access to Service Notification). The
//! payload is `id-only` or `empty`: a notification names the AuditEvent, and the council fetches
//! it with its own token, so no child data travels in a webhook.

//!
//! `parse` reads what a council submits, `render` what it reads back, `notification` what the
//! notifier posts; where an endpoint may point is the notifier's rule (`notify::endpoint`).

mod notification;
mod parse;
mod render;

pub use notification::{notification, status, Kind};
pub use parse::{parse, SubscriptionInput};
pub use render::{render, render_with_secret};

pub const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";
pub const TOPIC: &str =
    "https://cpis-fhir.example.org/fhir/SubscriptionTopic/cpis-access-notification";
/// The channel extension through which a council may give its own signing secret.
pub const SECRET_EXTENSION: &str =
    "https://cpis-fhir.example.org/fhir/StructureDefinition/subscription-signing-secret";
/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-CPIS-Signature";

const FILTER_EXT: &str = "backport-filter-criteria";
const HEARTBEAT_EXT: &str = "backport-heartbeat-period";
const TIMEOUT_EXT: &str = "backport-timeout";
const MAX_COUNT_EXT: &str = "backport-max-count";
const CONTENT_EXT: &str = "backport-payload-content";

pub const DEFAULT_TIMEOUT_SECS: i64 = 10;
pub const DEFAULT_MAX_COUNT: i64 = 20;
