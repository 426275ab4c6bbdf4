//! Registration (`POST /v1/users`) and login (`POST /v1/sessions`): the two routes that
//! hand out bearer tokens.

use axum::http::StatusCode;
use axum::routing::post;
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::{extract::State, Router};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::ToSchema;

use super::extractor::{Json, RequestId};
use super::{ApiError, AppState};
use crate::commands::{CommandError, Registration};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(register))
        .route("/v1/sessions", post(login))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// 1–30 of `[A-Za-z0-9_]`, unique case-insensitively.
    #[schema(
        example = "alice",
        pattern = "^[A-Za-z0-9_]{1,30}$",
        min_length = 1,
        max_length = 30
    )]
    pub handle: String,
    /// 1–50 characters after NFC normalisation and trimming, no control or format
    /// characters, at least one visible one.
    #[schema(
        example = "Alice Liddell",
        min_length = 1,
        max_length = 50,
        pattern = "\\S"
    )]
    pub display_name: String,
    /// 8–128 characters (after NFKC normalisation). Stored only as an argon2id hash, never in
    /// the event log.
    #[schema(example = "correct horse battery", min_length = 8, max_length = 128)]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterResponse {
    #[schema(example = 42)]
    pub id: i64,
    pub handle: String,
    /// As stored (trimmed).
    pub display_name: String,
    /// Bearer token for this user.
    pub token: String,
    /// Log position of `UserRegistered`; pass as `X-Murmur-Min-Position` to read it back.
    #[schema(example = "812:40")]
    pub position: String,
}

/// Registers a user and signs them in.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "commands",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = RegisterResponse),
        (status = 400, response = super::responses::BadRequest),
        (status = 409, response = super::responses::Conflict),
        (status = 413, response = super::responses::PayloadTooLarge),
        (status = 415, response = super::responses::UnsupportedMediaType),
        (status = 422, response = super::responses::Unprocessable),
        (status = 503, response = super::responses::ServiceUnavailable),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Json(request): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    let registration = Registration {
        handle: request.handle,
        display_name: request.display_name,
        password: request.password,
    };
    // On its own task: a client hanging up must not cut a registration between its steps.
    let commands = state.commands.clone();
    let registered = tokio::spawn(
        async move { commands.register(registration, &request_id).await }
            .instrument(tracing::Span::current()),
    )
    .await
    .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("registration task")))??;
    let token = state.tokens.issue(registered.id)?;
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            id: registered.id,
            handle: registered.handle,
            display_name: registered.display_name,
            token,
            position: registered.position.to_string(),
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(example = "alice")]
    pub handle: String,
    #[schema(example = "correct horse battery")]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    #[schema(example = 42)]
    pub user_id: i64,
    /// Bearer token for this user.
    pub token: String,
}

/// Signs in with a handle (any case) and password.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "commands",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = LoginResponse),
        (status = 400, response = super::responses::BadRequest),
        (status = 401, response = super::responses::Unauthorized),
        (status = 413, response = super::responses::PayloadTooLarge),
        (status = 415, response = super::responses::UnsupportedMediaType),
        (status = 429, response = super::responses::TooManyRequests),
        (status = 503, response = super::responses::ServiceUnavailable),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RequestId(request_id): RequestId,
    Json(request): Json<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let throttle = &state.login_throttle;
    let address = Some(peer.ip());
    if let Some(retry_after_secs) = throttle.retry_after(&request.handle, address) {
        return Err(ApiError::TooManyRequests {
            detail: "too many failed logins; try again later".into(),
            retry_after_secs,
        });
    }
    let logged_in = state
        .commands
        .login(&request.handle, &request.password, &request_id)
        .await;
    let user_id = match logged_in {
        Ok(user_id) => {
            throttle.succeeded(&request.handle);
            user_id
        }
        Err(error @ CommandError::BadCredentials) => {
            throttle.failed(&request.handle, address);
            return Err(error.into());
        }
        Err(error) => return Err(error.into()),
    };
    Ok(Json(LoginResponse {
        user_id,
        token: state.tokens.issue(user_id)?,
    }))
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use crate::http::{follows, health, posts};

    #[derive(OpenApi)]
    #[openapi(paths(
        super::register,
        super::login,
        follows::follow,
        follows::unfollow,
        posts::create_post,
        posts::delete_post,
        health::healthz,
        health::readyz,
        health::metrics,
    ))]
    struct CommandDoc;

    #[test]
    fn every_command_route_documents_its_answers() {
        let doc = serde_json::to_value(CommandDoc::openapi()).unwrap();
        let expected: &[(&str, &str, &[&str])] = &[
            (
                "/v1/users",
                "post",
                &["201", "400", "409", "413", "415", "422", "503"],
            ),
            (
                "/v1/sessions",
                "post",
                &["200", "400", "401", "413", "415", "429", "503"],
            ),
            (
                "/v1/users/{id}/following/{target}",
                "put",
                &["200", "400", "401", "403", "404", "409", "422", "503"],
            ),
            (
                "/v1/users/{id}/following/{target}",
                "delete",
                &["200", "400", "401", "403", "404", "409", "422", "503"],
            ),
            (
                "/v1/posts",
                "post",
                &["201", "400", "401", "404", "413", "415", "422", "503"],
            ),
            (
                "/v1/posts/{id}",
                "delete",
                &["204", "400", "401", "403", "404", "409", "503"],
            ),
            ("/healthz", "get", &["200"]),
            ("/readyz", "get", &["200", "503"]),
            ("/metrics", "get", &["200", "503"]),
        ];
        for (path, method, statuses) in expected {
            let responses = &doc["paths"][path][method]["responses"];
            let mut documented: Vec<&str> = responses
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} is not documented"))
                .keys()
                .map(String::as_str)
                .collect();
            documented.sort_unstable();
            assert_eq!(&documented, statuses, "{method} {path}");
        }
        // Errors are the shared problem responses (the full document registers them).
        let problem = &doc["paths"]["/v1/users/{id}/following/{target}"]["put"]["responses"]["422"];
        assert_eq!(
            problem["$ref"], "#/components/responses/Unprocessable",
            "{problem}"
        );
        let full = serde_json::to_value(super::super::openapi::ApiDoc::openapi()).unwrap();
        let unprocessable = &full["components"]["responses"]["Unprocessable"];
        assert!(
            unprocessable["content"]["application/problem+json"].is_object(),
            "{unprocessable}"
        );
    }
}
