//! Extractors that turn a request into what handlers need, answering bad input with an
//! [`ApiError`] (problem+json) instead of axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use murmur_domain::UserId;

use super::{ApiError, AppState};

/// `axum::Json`, with rejections as problem+json (400 malformed, 413 too large, 415 not JSON).
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path`, with rejections as problem+json (400).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query`, with rejections as problem+json (400).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The signed-in user, from `Authorization: Bearer <token>`; 401 when missing or invalid.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub UserId);

impl AuthUser {
    /// 403 unless the signed-in user is `user`: acting or reading as someone else.
    pub fn ensure_is(&self, user: UserId) -> Result<(), ApiError> {
        if self.0 == user {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "signed in as user {}, not as user {user}",
                self.0
            )))
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized("an Authorization: Bearer <token> header is required".into())
        })?;
        state
            .tokens
            .verify(token)
            .map(AuthUser)
            .ok_or_else(|| ApiError::Unauthorized("the bearer token is invalid or expired".into()))
    }
}

/// Admin access for the audit routes: `Authorization: Bearer $MURMUR_ADMIN_TOKEN`.
/// 401 without a valid credential, 403 with a user's token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized(
                "an Authorization: Bearer <admin token> header is required".into(),
            )
        })?;
        if let Some(admin) = state.admin_token.as_deref() {
            if constant_time_eq(token.as_bytes(), admin.as_bytes()) {
                return Ok(Admin);
            }
        }
        if state.tokens.verify(token).is_some() {
            return Err(ApiError::Forbidden(
                "this route needs the admin token".into(),
            ));
        }
        Err(ApiError::Unauthorized("the bearer token is invalid".into()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The request id (`X-Request-Id`, set by the request-id layer when the client sent none).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts
            .headers
            .get(super::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(RequestId(id.to_string()))
    }
}

/// Checks an id taken from a path: ids are 1 to 2^53 - 1 (400 otherwise).
pub fn valid_id(id: i64, what: &str) -> Result<i64, ApiError> {
    if (1..=murmur_domain::MAX_ID).contains(&id) {
        Ok(id)
    } else {
        Err(ApiError::BadRequest(format!(
            "{what} id must be between 1 and {}",
            murmur_domain::MAX_ID
        )))
    }
}
