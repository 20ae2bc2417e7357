//! Error answers no handler gives. Handlers return [`ApiError`] (`crate::api_error`: the one
//! shape, `{"error": code, "message": text}`), naming the thing at fault. Two routes answer
//! what no handler sees: [`not_found`] for a path no route has, [`method_not_allowed`] (405 with
//! `Allow`) for a known path asked with another method. The rest comes from actix itself (a
//! failed WebSocket handshake, an extractor's refusal): [`json_fallback`], run by
//! `ErrorHandlers` on every 4xx and 5xx answer, rewrites anything not JSON into the shape,
//! keeping its status and headers, with the actix error's text as the message.
//!
//! Out of reach: what actix-http answers before any route runs (431 for an oversized head, 400
//! for a request that is not HTTP) has an empty body and no JSON.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};

use crate::api_error::{ApiError, ApiErrorCode, excerpt};

/// The `error` code of a status no handler chose a code for: its reason in snake case
/// (`bad_request`, `payload_too_large`, `method_not_allowed`).
pub(super) fn code_for(status: StatusCode) -> String {
    let reason = status.canonical_reason().unwrap_or("error");
    reason.chars().filter(|c| c.is_ascii_alphanumeric() || *c == ' ').map(|c| if c == ' ' { '_' } else { c.to_ascii_lowercase() }).collect()
}

/// 404 for a path no route has.
pub(super) async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(ApiErrorCode::NotFound, format!("no route for {} {}", req.method(), excerpt(req.path(), 200))).error_response()
}

/// 405 for a known path asked with a method it does not take; `allow` lists those it takes.
pub(super) fn method_not_allowed(req: &HttpRequest, allow: &'static str) -> HttpResponse {
    // An extension method is client text of any length.
    let method = excerpt(req.method().as_str(), 16);
    ApiError::new(ApiErrorCode::MethodNotAllowed, format!("{method} is not allowed on {}; it takes {allow}", excerpt(req.path(), 200)))
        .with_header(header::ALLOW, HeaderValue::from_static(allow))
        .error_response()
}

/// `ErrorHandlers` default handler: an error answer that is not JSON becomes the JSON shape, with
/// the message of the actix error behind it when there is one, its status reason otherwise.
pub(super) fn json_fallback<B: MessageBody + 'static>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let (req, res) = res.into_parts();
    let status = res.status();
    let message = match res.error().map(|e| e.to_string()).filter(|m| !m.is_empty()) {
        Some(message) => message,
        None => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let body = ApiError::body(&code_for(status), &message);
    let mut res = res.set_body(body);
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let res: ServiceResponse<EitherBody<B>> = ServiceResponse::new(req, res).map_into_boxed_body().map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_reasons() {
        assert_eq!(code_for(StatusCode::BAD_REQUEST), "bad_request");
        assert_eq!(code_for(StatusCode::PAYLOAD_TOO_LARGE), "payload_too_large");
        assert_eq!(code_for(StatusCode::METHOD_NOT_ALLOWED), "method_not_allowed");
        assert_eq!(code_for(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE), "request_header_fields_too_large");
    }
}
