//! `/api/faults`: the fault injection API (docs/FAULTS.md). `GET` lists the active faults and
//! the recent firings, `POST` adds one (a JSON spec, read by `fault::FaultSpec`'s one parser),
//! `DELETE` removes all of them or, with `/{id}`, one.
//!
//! Refused with 403 `faults_disabled` unless the server runs with `--faults` (the registry is
//! app data only then); with tokens on, every request needs a token with the admin claim, and
//! a page on an origin not allowed may not change anything (as for feed control).

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::control::{BodyError, read_body};
use crate::access::{Access, Grant};
use crate::api_error::{ApiError, ApiErrorCode, excerpt};
use crate::fault::{AddError, FaultSpec, Faults};

/// The registry, if fault injection is on and the client may use it.
fn registry(faults: Option<web::Data<Faults>>, grant: &Grant) -> Result<web::Data<Faults>, ApiError> {
    let faults = faults.ok_or_else(|| {
        ApiError::new(ApiErrorCode::FaultsDisabled, "fault injection is off: start the server with --faults (or --fault SPEC, or faults = true in its TOML file)")
    })?;
    if !grant.admin {
        return Err(ApiError::new(ApiErrorCode::Forbidden, "fault injection needs a token with the admin claim"));
    }
    Ok(faults)
}

/// `GET /api/faults`: `{"active", "faults": [...], "log": [...]}`.
pub(super) async fn list(faults: Option<web::Data<Faults>>, grant: Grant) -> Result<HttpResponse, ApiError> {
    let faults = registry(faults, &grant)?;
    Ok(HttpResponse::Ok().json(faults.list()))
}

/// `POST /api/faults`: 201 with the fault as `GET` lists it (it has fired once already).
pub(super) async fn add(faults: Option<web::Data<Faults>>, access: web::Data<Access>, grant: Grant, req: HttpRequest, body: web::Payload) -> Result<HttpResponse, ApiError> {
    let faults = registry(faults, &grant)?;
    access.check_origin(&req)?;
    let body = read_body(body).await.map_err(|e| match e {
        BodyError::TooLarge => ApiError::new(ApiErrorCode::PayloadTooLarge, "fault body: more than 64 KiB; a fault spec is a small JSON object"),
        BodyError::Read(e) => crate::api_error::body_read_error("fault body", &e),
    })?;
    let bad_request = |message: String| ApiError::new(ApiErrorCode::BadRequest, message);
    let value: Value = serde_json::from_slice(&body).map_err(|e| bad_request(format!("fault body is not JSON: {e}")))?;
    let spec = FaultSpec::from_json(&value).map_err(|e| bad_request(format!("fault body: field '{}': {}", e.key, e.message)))?;
    match faults.add(spec) {
        Ok(fault) => Ok(HttpResponse::Created().json(fault)),
        Err(AddError::TooMany) => Err(ApiError::new(ApiErrorCode::TooManyFaults, AddError::TooMany.to_string())),
        Err(AddError::Invalid(e)) => Err(bad_request(format!("fault body: field '{}': {}", e.key, e.message))),
    }
}

/// `DELETE /api/faults`: every fault removed; `{"deleted": n}`.
pub(super) async fn clear(faults: Option<web::Data<Faults>>, access: web::Data<Access>, grant: Grant, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let faults = registry(faults, &grant)?;
    access.check_origin(&req)?;
    Ok(HttpResponse::Ok().json(json!({"deleted": faults.clear()})))
}

/// `DELETE /api/faults/{id}`: the fault removed, answered as it was listed; 404 `unknown_fault`.
pub(super) async fn remove(
    faults: Option<web::Data<Faults>>,
    access: web::Data<Access>,
    grant: Grant,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let faults = registry(faults, &grant)?;
    access.check_origin(&req)?;
    let unknown = || ApiError::new(ApiErrorCode::UnknownFault, format!("no active fault has id '{}' (GET /api/faults lists them)", excerpt(&path, 32)));
    let id: u64 = path.parse().map_err(|_| unknown())?;
    let fault = faults.remove(id).ok_or_else(unknown)?;
    Ok(HttpResponse::Ok().json(fault))
}
