//! The chat page at `/`: three files compiled into the binary (no CDN, nothing built at run
//! time), served without the API key; the page asks for the key when the API answers 401.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;

/// A compiled-in file with its content type; revalidated on every load, so that a new binary's
/// page is never mixed with an old script.
fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}

/// `GET /`: the page.
pub async fn index() -> impl IntoResponse {
    file("text/html; charset=utf-8", include_str!("page/index.html"))
}

/// `GET /chat.js`: its script.
pub async fn script() -> impl IntoResponse {
    file(
        "text/javascript; charset=utf-8",
        include_str!("page/chat.js"),
    )
}

/// `GET /chat.css`: its style.
pub async fn style() -> impl IntoResponse {
    file("text/css; charset=utf-8", include_str!("page/chat.css"))
}
