//! `GET /audit/`: the audit team's page (issue "audit team", scope 4) — HTML, CSS and a little
//! JavaScript shipped in the binary, no build step. The page holds no data and needs no token
//! to load; everything it shows it asks of the FHIR API with the token typed into it (kept in
//! the tab's `sessionStorage`), so every read it makes is audited like any other. A strict
//! Content-Security-Policy lets it load only its own script and style and talk only to this
//! server.

use actix_web::http::header;
use actix_web::HttpResponse;

const INDEX: &str = include_str!("audit_page/index.html");
const SCRIPT: &str = include_str!("audit_page/app.js");
const STYLE: &str = include_str!("audit_page/style.css");

const POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                      img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

pub async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// `/audit` without the slash: to the page.
pub async fn to_page() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/audit/"))
        .finish()
}
