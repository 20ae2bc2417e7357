//! The one shape of every error answer over HTTP — REST, the dashboard's files and a refused
//! WebSocket upgrade: `{"error": code, "message": text}` with `Content-Type: application/json`.
//!
//! [`ApiError`] is what a handler returns (`Result<HttpResponse, ApiError>`); actix turns it
//! into the answer through [`ResponseError`]. Its [`ApiErrorCode`] fixes the status, so a code
//! never appears with two statuses, and the message names the thing at fault. A leaf module:
//! `http` and `ws` both use it, and it uses neither.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// What a client sent, quoted in an error message: its first `max_chars` characters, so an
/// answer stays readable (and small) whatever the request held. Every transport and the REST
/// API quote client text through this.
pub(crate) fn excerpt(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// What a JSON value a client sent is, for a message saying what was expected instead ("must
/// be an array of strings, not a number"). Every transport and the REST API name kinds through this.
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(items) if items.is_empty() => "an empty array",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The answer to a request body that could not be read (`what`: whose body): 408 when it did not
/// arrive in time (the listener's body deadline ends the stream with `TimedOut`), else 400.
pub(crate) fn body_read_error(what: &str, error: &actix_web::error::PayloadError) -> ApiError {
    use actix_web::error::PayloadError;
    match error {
        PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => ApiError::new(ApiErrorCode::RequestTimeout, format!("{what}: {e}")),
        _ => ApiError::new(ApiErrorCode::BadRequest, format!("{what} could not be read: {error}")),
    }
}

/// The `error` field of an error answer; each has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiErrorCode {
    /// 400: a query parameter, path or body that does not parse or is refused.
    BadRequest,
    /// 401: no token, or one that does not verify (with `WWW-Authenticate`).
    Unauthorized,
    /// 401: the token expired (a new one of the same kind will do).
    TokenExpired,
    /// 403: the request's `Origin` is not in `--allowed-origins`.
    OriginNotAllowed,
    /// 403: the token does not allow this (feed control without `admin`).
    Forbidden,
    /// 403: the token's `symbols` do not include this symbol.
    NotEntitled,
    /// 404: no route has this path.
    NotFound,
    /// 404: no feed publishes this symbol (or it is not a symbol).
    UnknownSymbol,
    /// 404: the symbol exists and has not been published yet.
    NoQuoteYet,
    /// 404: no feed has this name.
    UnknownFeed,
    /// 405: the path exists and takes other methods (the answer carries `Allow`).
    MethodNotAllowed,
    /// 409: the feed cannot do this (seek on a simulation).
    Unsupported,
    /// 408: a request body that did not arrive whole within `--request-body-timeout`.
    RequestTimeout,
    /// 413: a request body over its limit.
    PayloadTooLarge,
    /// 429: the address has its limit of connections open (with `Retry-After`).
    TooManyConnectionsPerIp,
    /// 503: the feed has stopped.
    FeedStopped,
    /// 504: a gateway forwarded feed control to the feed node, which did not answer in time.
    FeedTimeout,
    /// 503: a gateway has its limit of feed control requests waiting for the feed node.
    FeedBusy,
    /// 503: the WebSocket connection limit is reached (with `Retry-After`).
    TooManyConnections,
    /// 503: the server is shutting down.
    ShuttingDown,
    /// 503: an injected `reject_connect` fault refused the connection (with `Retry-After`).
    FaultInjected,
    /// 403: `/api/faults` without `--faults`.
    FaultsDisabled,
    /// 404: no active fault has this id.
    UnknownFault,
    /// 409: the limit of active faults is reached.
    TooManyFaults,
}

impl ApiErrorCode {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ApiErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ApiErrorCode::Unauthorized | ApiErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
            ApiErrorCode::OriginNotAllowed | ApiErrorCode::Forbidden | ApiErrorCode::NotEntitled | ApiErrorCode::FaultsDisabled => StatusCode::FORBIDDEN,
            ApiErrorCode::TooManyConnectionsPerIp => StatusCode::TOO_MANY_REQUESTS,
            ApiErrorCode::NotFound | ApiErrorCode::UnknownSymbol | ApiErrorCode::NoQuoteYet | ApiErrorCode::UnknownFeed | ApiErrorCode::UnknownFault => StatusCode::NOT_FOUND,
            ApiErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiErrorCode::Unsupported | ApiErrorCode::TooManyFaults => StatusCode::CONFLICT,
            ApiErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiErrorCode::FeedStopped | ApiErrorCode::FeedBusy | ApiErrorCode::TooManyConnections | ApiErrorCode::ShuttingDown | ApiErrorCode::FaultInjected => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiErrorCode::FeedTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ApiErrorCode::BadRequest => "bad_request",
            ApiErrorCode::Unauthorized => "unauthorized",
            ApiErrorCode::TokenExpired => "token_expired",
            ApiErrorCode::OriginNotAllowed => "origin_not_allowed",
            ApiErrorCode::Forbidden => "forbidden",
            ApiErrorCode::NotEntitled => "not_entitled",
            ApiErrorCode::TooManyConnectionsPerIp => "too_many_connections_per_ip",
            ApiErrorCode::NotFound => "not_found",
            ApiErrorCode::UnknownSymbol => "unknown_symbol",
            ApiErrorCode::NoQuoteYet => "no_quote_yet",
            ApiErrorCode::UnknownFeed => "unknown_feed",
            ApiErrorCode::MethodNotAllowed => "method_not_allowed",
            ApiErrorCode::Unsupported => "unsupported",
            ApiErrorCode::RequestTimeout => "request_timeout",
            ApiErrorCode::PayloadTooLarge => "payload_too_large",
            ApiErrorCode::FeedStopped => "feed_stopped",
            ApiErrorCode::FeedTimeout => "feed_timeout",
            ApiErrorCode::FeedBusy => "feed_busy",
            ApiErrorCode::TooManyConnections => "too_many_connections",
            ApiErrorCode::ShuttingDown => "shutting_down",
            ApiErrorCode::FaultInjected => "fault_injected",
            ApiErrorCode::FaultsDisabled => "faults_disabled",
            ApiErrorCode::UnknownFault => "unknown_fault",
            ApiErrorCode::TooManyFaults => "too_many_faults",
        }
    }
}

/// An error answer: a code, a message naming what was wrong, and the headers some codes need.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub code: ApiErrorCode,
    pub message: String,
    /// `Allow` for 405, `Retry-After` for 503 and 429 at the connection limits, `WWW-Authenticate` for 401.
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub(crate) fn new(code: ApiErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), headers: Vec::new() }
    }

    /// A header the answer carries besides the JSON body.
    pub(crate) fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    /// The JSON body of an error answer with this code name, for answers whose code is not an
    /// [`ApiErrorCode`] (actix's own errors, rewritten by the `http` fallback).
    pub(crate) fn body(code: &str, message: &str) -> String {
        json!({"error": code, "message": message}).to_string()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.code.status());
        for (name, value) in &self.headers {
            response.insert_header((name.clone(), value.clone()));
        }
        response.content_type("application/json").body(ApiError::body(self.code.as_str(), &self.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answer_is_its_code_status_json_and_headers() {
        let error = ApiError::new(ApiErrorCode::MethodNotAllowed, "POST is not allowed on /api/symbols; it takes GET, HEAD")
            .with_header(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers().get(header::ALLOW).unwrap(), "GET, HEAD");
        assert_eq!(response.headers().get(header::CONTENT_TYPE).unwrap(), "application/json");
        assert_eq!(ApiError::body("bad_request", "x \"y\""), r#"{"error":"bad_request","message":"x \"y\""}"#);
    }
}
