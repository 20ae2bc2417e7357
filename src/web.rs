//! The browser dashboard's files (`dashboards/web/`), embedded in the binary at build time by
//! `src/build.rs`, so `cargo run` serves them with no Node step, no CDN and no files beside the
//! binary.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

/// Every embedded file as (path relative to `dashboards/web/`, contents).
pub(crate) static ASSETS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The embedded file at `path`, if any.
pub(crate) fn asset(path: &str) -> Option<&'static [u8]> {
    ASSETS.iter().find(|(name, _)| *name == path).map(|(_, bytes)| *bytes)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

fn serve(path: &str) -> Option<HttpResponse> {
    let bytes = asset(path)?;
    Some(
        HttpResponse::Ok()
            .content_type(content_type(path))
            // The files change with the binary: revalidate, nothing to gain from stale caches.
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(bytes),
    )
}

/// `GET /`: the dashboard.
pub(crate) async fn index() -> HttpResponse {
    serve("index.html").unwrap_or_else(|| HttpResponse::NotFound().json(serde_json::json!({"error": "not_found", "message": "the dashboard was not built into this binary"})))
}

/// `GET /{file}` and `GET /web/{path}`: one of the dashboard's files.
pub(crate) async fn file(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let path = path.into_inner();
    serve(&path).unwrap_or_else(|| HttpResponse::NotFound().json(serde_json::json!({"error": "not_found", "message": format!("no route for {} {}", req.method(), req.path())})))
}
