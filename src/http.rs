//! The REST API and the route table.
//!
//! - `GET /api/symbols` — every symbol with name, sector, feed and last price.
//! - `GET /api/quotes?symbols=A,B`, `GET /api/quotes/{symbol}` — latest quotes.
//! - `GET /api/feeds`, `POST /api/feeds/{name}/control` — feed state and control
//!   (`http::control` reads and checks the body).
//! - `GET`, `POST`, `DELETE /api/faults`, `DELETE /api/faults/{id}` — fault injection, with
//!   `--faults` only (`http::faults`, docs/FAULTS.md).
//! - `GET /healthz` (alive), `GET /readyz` (feeds started and not shutting down).
//! - `GET /metrics` — Prometheus text format ([`crate::metrics`]).
//! - `GET /api/history/{symbol}?resolution=1s|1m&limit=N` — recent bars ([`crate::history`]).
//! - `GET /ws` — the WebSocket upgrade ([`crate::ws`]).
//! - `GET /sse` — the Server-Sent Events stream ([`crate::sse`]).
//! - `GET /`, `GET /{file}` — the browser dashboard ([`crate::web`]).
//!
//! Every GET route answers HEAD too (actix-http sends the headers without the body). A known
//! path asked with another method is 405 with `Allow`; an unknown path is 404.
//!
//! Errors are JSON objects `{"error": code, "message": text}` whose message names the symbol,
//! feed, query parameter or field at fault (`http::errors`); query parameters are read by
//! `http::query`, which names the parameter in its refusals.

pub(crate) mod connection;
mod control;
mod errors;
mod faults;
pub(crate) mod listen;
mod query;
pub(crate) mod upgrade;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::middleware::ErrorHandlers;
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder, Route, guard, web};
use serde::Serialize;
use serde_json::json;

use self::errors::method_not_allowed;
use self::query::QueryParams;
use crate::access::{Access, Grant};
use crate::api_error::{ApiError, ApiErrorCode, excerpt};
use crate::bus::Bus;
use crate::bus::FindError;
use crate::feed::Feeds;
use crate::history::Resolution;
use crate::metrics::Metrics;
use crate::quote::PublishedQuote;

/// What `Allow` says of a GET route.
const GET_HEAD: &str = "GET, HEAD";

/// Registers every route; `clients`: the client sessions' too (not on a feed-only node, where
/// `/ws`, `/sse` and `/socket.io/` are unknown paths).
///
/// Each path is one resource whose default service answers 405 with `Allow`, so a known path
/// asked with another method is told what it takes instead of 404 (`App::route` would put the
/// method guard on the resource, and the request would fall through to the 404).
pub(crate) fn routes(cfg: &mut web::ServiceConfig, clients: bool) {
    if clients {
        // The WebSocket upgrade is GET only: a HEAD cannot upgrade.
        cfg.service(resource("/ws", "GET").route(web::get().to(crate::ws::upgrade)))
            .service(resource("/sse", "GET").route(web::get().to(crate::sse::stream)))
            .service(socketio("/socket.io/"))
            .service(socketio("/socket.io"));
    }
    cfg.service(get("/healthz", healthz))
        .service(get("/metrics", metrics))
        .service(get("/readyz", readyz))
        .service(get("/api/symbols", symbols))
        .service(get("/api/quotes", quotes))
        .service(get("/api/quotes/{symbol}", quote))
        .service(get("/api/feeds", feeds))
        .service(resource("/api/feeds/{name}/control", "POST").route(web::post().to(control)))
        .service(get("/api/history/{symbol}", history))
        .service(resource("/api/faults", "GET, HEAD, POST, DELETE").route(get_or_head().to(faults::list)).route(web::post().to(faults::add)).route(web::delete().to(faults::clear)))
        .service(resource("/api/faults/{id}", "DELETE").route(web::delete().to(faults::remove)))
        .service(get("/", crate::web::index))
        .service(dashboard_file("/web/{path:.*}", "path"))
        .service(dashboard_file("/{file}", "file"))
        .default_service(web::to(errors::not_found));
}

/// A path whose other methods get 405 with `Allow: {allow}`; its routes are added to it.
fn resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move { method_not_allowed(&req, allow) }))
}

/// Socket.IO's path: GET and POST (polling, the WebSocket upgrade) and CORS preflights.
fn socketio(path: &str) -> Resource {
    let methods = guard::Any(guard::Get()).or(guard::Post()).or(guard::Options());
    resource(path, crate::socketio::ALLOW).route(web::route().guard(methods).to(crate::socketio::endpoint))
}

/// The route of a GET handler, which answers HEAD too.
fn get_or_head() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// A GET (and HEAD) path.
fn get<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    resource(path, GET_HEAD).route(get_or_head().to(handler))
}

/// A dashboard file path. Its pattern matches any name, so another method is 405 only for a
/// file that exists; for any other name it is the 404 that GET gets.
fn dashboard_file(path: &str, parameter: &'static str) -> Resource {
    let other_method = move |req: HttpRequest| async move {
        match req.match_info().get(parameter).and_then(crate::web::asset) {
            Some(_) => method_not_allowed(&req, GET_HEAD),
            None => errors::not_found(req).await,
        }
    };
    web::resource(path).route(get_or_head().to(crate::web::file)).default_service(web::to(other_method))
}

/// The middleware that gives every error answer the JSON shape, including those actix makes
/// itself (see `http::errors::json_fallback`).
pub(crate) fn json_errors<B: actix_web::body::MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(errors::json_fallback)
}

/// Whether the server takes traffic: `/readyz` answers from this, and shutdown turns it off
/// before anything else.
pub struct Readiness {
    ready: std::sync::atomic::AtomicBool,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Readiness {
    pub(crate) fn new(shutdown: tokio::sync::watch::Receiver<bool>) -> Readiness {
        Readiness { ready: std::sync::atomic::AtomicBool::new(true), shutdown }
    }

    pub(crate) fn set_not_ready(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// Not told to stop, and not shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !*self.shutdown.borrow()
    }
}

async fn metrics(metrics: web::Data<Metrics>, bus: web::Data<Bus>, feeds: web::Data<Feeds>) -> HttpResponse {
    HttpResponse::Ok().content_type(Metrics::content_type()).body(metrics.render(&bus, &feeds))
}

/// Middleware recording every request by matched route pattern (never the raw path, whose
/// values are unbounded), method and status.
pub(crate) struct RequestMetrics;

impl<S, B> actix_web::dev::Transform<S, actix_web::dev::ServiceRequest> for RequestMetrics
where
    S: actix_web::dev::Service<actix_web::dev::ServiceRequest, Response = actix_web::dev::ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = actix_web::dev::ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RequestMetricsService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(RequestMetricsService { service: std::rc::Rc::new(service) }))
    }
}

pub(crate) struct RequestMetricsService<S> {
    service: std::rc::Rc<S>,
}

impl<S, B> actix_web::dev::Service<actix_web::dev::ServiceRequest> for RequestMetricsService<S>
where
    S: actix_web::dev::Service<actix_web::dev::ServiceRequest, Response = actix_web::dev::ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = actix_web::dev::ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: actix_web::dev::ServiceRequest) -> Self::Future {
        let service = self.service.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let metrics = req.app_data::<web::Data<Metrics>>().cloned();
            let method = req.method().as_str().to_string();
            let result = service.call(req).await;
            if let Some(metrics) = metrics {
                let (route, status) = match &result {
                    Ok(res) => (res.request().match_pattern().unwrap_or_else(|| "unmatched".into()), res.status().as_u16()),
                    Err(e) => ("unmatched".to_string(), e.as_response_error().status_code().as_u16()),
                };
                metrics.http_request(&route, &method, status, started.elapsed());
            }
            result
        })
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(readiness: web::Data<Readiness>, feeds: web::Data<Feeds>, bus: web::Data<Bus>) -> HttpResponse {
    let feeds_started = feeds.all_started();
    let bus_up = bus.link.is_connected();
    if readiness.is_ready() && feeds_started && bus_up {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        let reason = if !readiness.is_ready() {
            "shutting down"
        } else if !feeds_started {
            "feeds starting"
        } else {
            "bus disconnected: Redis does not answer"
        };
        HttpResponse::ServiceUnavailable().json(json!({"status": "not_ready", "reason": reason}))
    }
}

#[derive(Serialize)]
struct SymbolEntry<'a> {
    symbol: &'a str,
    name: &'a str,
    sector: &'a str,
    feed: &'a str,
    last: Option<f64>,
    seq: u64,
}

async fn symbols(bus: web::Data<Bus>, grant: Grant) -> HttpResponse {
    let mut topics = bus.topics();
    topics.retain(|t| grant.entitlements.allows(&t.symbol));
    let latest: Vec<_> = topics.iter().map(|t| t.latest()).collect();
    let entries: Vec<SymbolEntry> = topics
        .iter()
        .zip(&latest)
        .map(|(t, q)| SymbolEntry { symbol: &t.symbol, name: &t.info.name, sector: &t.info.sector, feed: &t.info.feed, last: q.as_ref().map(|q| q.quote.last), seq: t.seq() })
        .collect();
    HttpResponse::Ok().json(entries)
}

/// Latest quotes of the listed symbols (all the token's symbols when none are listed); unknown
/// ones are listed under `unknown`, and those the token does not include under `not_entitled`,
/// rather than failing the whole request. `symbols` may be repeated, and the lists are joined:
/// `symbols=A&symbols=B,C` asks for A, B and C.
async fn quotes(bus: web::Data<Bus>, grant: Grant, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let mut found: Vec<Arc<PublishedQuote>> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut not_entitled: Vec<String> = Vec::new();
    let query = QueryParams::parse(req.query_string());
    let listed = query.values("symbols").next().is_some();
    let requested: Vec<String> = if listed {
        query.values("symbols").flat_map(|list| list.split(',')).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
    } else {
        bus.topics().iter().filter(|t| grant.entitlements.allows(&t.symbol)).map(|t| t.symbol.to_string()).collect()
    };
    if requested.len() > 10_000 {
        return Err(ApiError::new(ApiErrorCode::BadRequest, "query parameter 'symbols': at most 10000 symbols per request"));
    }
    for symbol in requested {
        match bus.find(&symbol) {
            // As on a session: whether the symbol exists is not told to a token without it.
            Ok(topic) if !grant.entitlements.allows(&topic.symbol) => not_entitled.push(topic.symbol.to_string()),
            Err(FindError::Unknown(symbol)) if !grant.entitlements.allows(&symbol) => not_entitled.push(symbol),
            Ok(topic) => {
                if let Some(q) = topic.latest() {
                    found.push(q);
                }
            }
            // Not a symbol is as unknown as a symbol no feed has: listed, upper case.
            Err(FindError::Unknown(symbol)) => unknown.push(symbol),
            Err(FindError::Invalid { text, .. }) => unknown.push(text.to_ascii_uppercase()),
        }
    }
    // The quotes' JSON is already rendered for WebSocket clients: splice it, which also keeps
    // the documented field order.
    let mut body = String::from(r#"{"quotes":["#);
    for (i, q) in found.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(q.json());
    }
    body.push_str(r#"],"unknown":"#);
    body.push_str(&serde_json::to_string(&unknown).unwrap_or_else(|_| "[]".into()));
    // Only where it can be non-empty, so that a server without tokens answers as it always did.
    if listed && !grant.entitlements.allows_all() {
        body.push_str(r#","not_entitled":"#);
        body.push_str(&serde_json::to_string(&not_entitled).unwrap_or_else(|_| "[]".into()));
    }
    body.push('}');
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// The topic a path names, or the 404 that says why there is none (403 for a symbol the token
/// does not include, whether it exists or not).
fn find_topic(bus: &Bus, grant: &Grant, requested: &str) -> Result<Arc<crate::bus::Topic>, ApiError> {
    let not_entitled = |symbol: &str| ApiError::new(ApiErrorCode::NotEntitled, format!("the token does not include symbol '{symbol}'"));
    match bus.find(requested) {
        Ok(topic) if !grant.entitlements.allows(&topic.symbol) => Err(not_entitled(&topic.symbol)),
        Err(FindError::Unknown(symbol)) if !grant.entitlements.allows(&symbol) => Err(not_entitled(&symbol)),
        found => found.map_err(|e| ApiError::new(ApiErrorCode::UnknownSymbol, e.to_string())),
    }
}

async fn quote(bus: web::Data<Bus>, grant: Grant, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let topic = find_topic(&bus, &grant, &path)?;
    match topic.latest() {
        Some(q) => Ok(HttpResponse::Ok().content_type("application/json").body(q.json().to_string())),
        None => Err(ApiError::new(ApiErrorCode::NoQuoteYet, format!("symbol '{}' has not been published yet", topic.symbol))),
    }
}

/// Recent bars of one symbol for chart backfill; each bar carries the seq of its last quote.
async fn history(bus: web::Data<Bus>, grant: Grant, path: web::Path<String>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let topic = find_topic(&bus, &grant, &path)?;
    let query = QueryParams::parse(req.query_string());
    let bad_request = |message: String| ApiError::new(ApiErrorCode::BadRequest, message);
    let resolution = query.single("resolution").map_err(bad_request)?.unwrap_or("1s");
    let limit = query.parsed::<usize>("limit", "a whole number of bars >= 0").map_err(bad_request)?;
    let resolution = Resolution::parse(resolution).ok_or_else(|| bad_request(format!("query parameter 'resolution': '{}' is not 1s or 1m", excerpt(resolution, 16))))?;
    let bars = topic.history(resolution, limit.unwrap_or(usize::MAX));
    let seq = bars.last().map_or(0, |b| b.seq);
    Ok(HttpResponse::Ok().json(json!({"symbol": topic.symbol, "resolution": resolution, "seq": seq, "bars": bars})))
}

/// Feed state: any valid token may read it (it names no symbol).
async fn feeds(feeds: web::Data<Feeds>, _grant: Grant) -> HttpResponse {
    let statuses: Vec<_> = feeds.iter().map(|f| f.status()).collect();
    HttpResponse::Ok().json(statuses)
}

/// `POST /api/feeds/{name}/control`: a page on an origin not allowed is refused (403: no web
/// page elsewhere can pause the feeds of a server without tokens); a token without `admin` too.
/// Then the feed is looked up (404 names the known feeds), the body is read (at most
/// [`MAX_CONTROL_BODY_BYTES`], else 413) and checked.
async fn control(
    feeds: web::Data<Feeds>,
    access: web::Data<Access>,
    grant: Grant,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    access.check_origin(&req)?;
    if !grant.admin {
        return Err(ApiError::new(ApiErrorCode::Forbidden, "feed control needs a token with the admin claim"));
    }
    let name = path.into_inner();
    let Some(feed) = feeds.position(&name).and_then(|index| feeds.get(index)) else {
        let known: Vec<&str> = feeds.iter().map(|f| &*f.name).collect();
        return Err(ApiError::new(ApiErrorCode::UnknownFeed, format!("unknown feed '{}'; feeds: {}", excerpt(&name, 32), known.join(", "))));
    };
    let body = control::read_body(body).await.map_err(|e| match e {
        control::BodyError::TooLarge => ApiError::new(ApiErrorCode::PayloadTooLarge, e.to_string()),
        control::BodyError::Read(e) => crate::api_error::body_read_error("control body", &e),
    })?;
    let action = control::parse(&body).map_err(|message| ApiError::new(ApiErrorCode::BadRequest, message))?;
    let status = feed.control(action).await.map_err(|e| {
        // By kind, so a refusal the feed node sent through a gateway gets the same status.
        let code = match e.kind() {
            "stopped" => ApiErrorCode::FeedStopped,
            "unsupported" => ApiErrorCode::Unsupported,
            "timeout" => ApiErrorCode::FeedTimeout,
            "busy" => ApiErrorCode::FeedBusy,
            _ => ApiErrorCode::BadRequest,
        };
        ApiError::new(code, e.to_string())
    })?;
    Ok(HttpResponse::Ok().json(status))
}
