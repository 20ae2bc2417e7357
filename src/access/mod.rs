//! Who may connect and what they may read: signed tokens, symbol entitlements and the origin
//! allow-list, for every transport and the REST API alike.
//!
//! - [`token`]: the JWT key and claims (HS256, RS256, ES256), and `tickerfeed token`.
//! - [`entitlements`]: the `symbols` claim's patterns and the one `allows` answer.
//! - [`origin`]: the page origins `--allowed-origins` lets open sessions.
//! - [`settings`]: the settings above.
//!
//! Owned here: [`Access`], built once at start and shared, and [`Grant`], what one client was
//! let in with. Checks happen where a connection or request starts (before a WebSocket's 101,
//! before an event stream's first byte, at Socket.IO's CONNECT) and never per quote: a session
//! keeps its grant's entitlements and ends at its `exp`. Invariant: with authentication off
//! (the default) every grant is unrestricted, so the server runs with no setup; with it on, no
//! session or `/api` answer exists without a verified token, and every symbol a client is
//! sent passed [`Grant::entitlements`].

pub(crate) mod entitlements;
pub(crate) mod origin;
pub(crate) mod settings;
pub(crate) mod token;

use std::time::SystemTime;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, web};

use self::entitlements::Entitlements;
use self::origin::OriginPolicy;
use self::settings::AccessSettings;
use self::token::{TokenError, Verifier};
use crate::api_error::{ApiError, ApiErrorCode};

pub use self::token::{KeyError, TokenRequest, sign_with_secret_file};

/// The query parameter a token may come in (browsers cannot set headers on a WebSocket or an
/// `EventSource`).
pub(crate) const TOKEN_PARAMETER: &str = "token";

/// Access control as configured: the token verifier (if tokens are required) and the origins.
#[derive(Debug)]
pub(crate) struct Access {
    verifier: Option<Verifier>,
    origins: OriginPolicy,
}

/// What one client was let in with.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// The symbols it may read.
    pub entitlements: Entitlements,
    /// Whether it may control feeds.
    pub admin: bool,
    /// When its token expires (a session ends then).
    pub expires_at: Option<SystemTime>,
}

impl Grant {
    /// Everything, for ever: no token is required.
    pub(crate) fn unrestricted() -> Grant {
        Grant { entitlements: Entitlements::unrestricted(), admin: true, expires_at: None }
    }
}

impl Grant {
    /// Nothing yet: the token is still to come (Socket.IO's CONNECT).
    pub(crate) fn nothing() -> Grant {
        Grant { entitlements: Entitlements::parse::<&str>(&[]).expect("no patterns"), admin: false, expires_at: None }
    }
}

impl Access {
    /// Access control from its settings; a key file that cannot be used is an error naming it.
    pub(crate) fn new(settings: &AccessSettings) -> Result<Access, KeyError> {
        let verifier = if !settings.auth_secret_file.is_empty() {
            Some(Verifier::from_secret_file(settings.auth_secret_file.as_ref())?)
        } else if !settings.auth_public_key.is_empty() {
            Some(Verifier::from_public_key_file(settings.auth_public_key.as_ref())?)
        } else {
            None
        };
        let origins = OriginPolicy::parse(&settings.allowed_origins).expect("allowed_origins was checked when the settings were resolved");
        Ok(Access { verifier, origins })
    }

    /// Whether clients need a token; the algorithm they must be signed with if so.
    pub(crate) fn required(&self) -> Option<&'static str> {
        self.verifier.as_ref().map(Verifier::algorithm)
    }

    /// Whether the page that sent `req` (its `Origin`) may open a session.
    pub(crate) fn origin_allowed(&self, req: &HttpRequest) -> bool {
        let origin = req.headers().get(header::ORIGIN).map(|o| o.to_str().unwrap_or("\u{fffd}"));
        let info = req.connection_info();
        self.origins.allows(origin, Some(info.host()), info.scheme() == "https")
    }

    /// 403 unless [`Access::origin_allowed`].
    pub(crate) fn check_origin(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if self.origin_allowed(req) {
            return Ok(());
        }
        let origin = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("?");
        Err(ApiError::new(
            ApiErrorCode::OriginNotAllowed,
            format!("origin '{}' may not open sessions here; the server's --allowed-origins lists the pages that may", crate::api_error::excerpt(origin, 128)),
        ))
    }

    /// The grant of a request: unrestricted when no token is required, else that of its token
    /// (`Authorization: Bearer`, or the `token` query parameter); 401 without a valid one.
    pub(crate) fn authenticate(&self, req: &HttpRequest) -> Result<Grant, ApiError> {
        self.verify(request_token(req).as_deref()).map_err(unauthorized)
    }

    /// The grant of `token`: unrestricted when none is required.
    pub(crate) fn verify(&self, token: Option<&str>) -> Result<Grant, TokenError> {
        let Some(verifier) = &self.verifier else { return Ok(Grant::unrestricted()) };
        let token = token.filter(|t| !t.trim().is_empty()).ok_or(TokenError::Missing)?;
        let (claims, entitlements) = verifier.verify(token)?;
        tracing::debug!(sub = %claims.sub, exp = claims.exp, admin = claims.admin, "token accepted");
        Ok(Grant { expires_at: Some(claims.expires_at()), entitlements, admin: claims.admin })
    }
}

/// The token a request carries: its `Authorization: Bearer` header, else its `token` query
/// parameter.
pub(crate) fn request_token(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(token.trim().to_string());
        }
    }
    web::Query::<Vec<(String, String)>>::from_query(req.query_string()).ok()?.into_inner().into_iter().find(|(name, _)| name == TOKEN_PARAMETER).map(|(_, value)| value)
}

/// The 401 of a refused token: `token_expired` or `unauthorized`, with RFC 6750's
/// `WWW-Authenticate` so that generic clients know a bearer token is wanted.
pub(crate) fn unauthorized(error: TokenError) -> ApiError {
    let challenge = match &error {
        TokenError::Missing => HeaderValue::from_static(r#"Bearer realm="tickerfeed""#),
        _ => HeaderValue::from_static(r#"Bearer realm="tickerfeed", error="invalid_token""#),
    };
    let code = if error.is_expiry() { ApiErrorCode::TokenExpired } else { ApiErrorCode::Unauthorized };
    ApiError::new(code, error.to_string()).with_header(header::WWW_AUTHENTICATE, challenge)
}

/// A REST handler that names `Grant` in its signature is answered only for a valid token
/// (when one is required), and reads what that token allows.
impl FromRequest for Grant {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Grant, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let access = req.app_data::<web::Data<Access>>().expect("Access is app data");
        std::future::ready(access.authenticate(req))
    }
}
