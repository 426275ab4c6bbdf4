//! Following: `PUT` / `DELETE /v1/users/{id}/following/{target}`, as user `{id}` only.

use axum::extract::State;
use axum::routing::put;
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;

use super::extractor::{valid_id, AuthUser, Json, Path, RequestId};
use super::responses;
use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/users/{id}/following/{target}",
        put(follow).delete(unfollow),
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FollowResponse {
    /// Whether `{id}` now follows `{target}`.
    pub following: bool,
    /// Log position of the edge's newest event (the one appended, or the existing one when
    /// nothing changed; "0:0" if there never was one).
    #[schema(example = "812:40")]
    pub position: String,
}

/// What follow and unfollow answer (for the OpenAPI document): the shared problem responses.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only described, never built
enum FollowAnswers {
    /// Whether `{id}` now follows `{target}`.
    #[response(status = 200)]
    Done(FollowResponse),
    #[response(status = 400)]
    BadRequest(#[ref_response] responses::BadRequest),
    #[response(status = 401)]
    Unauthorized(#[ref_response] responses::Unauthorized),
    #[response(status = 403)]
    Forbidden(#[ref_response] responses::Forbidden),
    #[response(status = 404)]
    NotFound(#[ref_response] responses::NotFound),
    #[response(status = 409)]
    Conflict(#[ref_response] responses::Conflict),
    #[response(status = 422)]
    Unprocessable(#[ref_response] responses::Unprocessable),
    #[response(status = 503)]
    Unavailable(#[ref_response] responses::ServiceUnavailable),
}

/// Makes `{id}` follow `{target}`. Following again changes nothing.
#[utoipa::path(
    put,
    path = "/v1/users/{id}/following/{target}",
    tag = "commands",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "The follower: the signed-in user", minimum = 1.0, maximum = 9007199254740991.0),
        ("target" = i64, Path, description = "The user to follow", minimum = 1.0, maximum = 9007199254740991.0),
    ),
    responses(FollowAnswers)
)]
pub async fn follow(
    auth: AuthUser,
    Path((id, target)): Path<(i64, i64)>,
    RequestId(request_id): RequestId,
    State(state): State<AppState>,
) -> Result<Json<FollowResponse>, ApiError> {
    set_following(auth, id, target, true, &request_id, &state).await
}

/// Makes `{id}` stop following `{target}`. Unfollowing when not following changes nothing.
#[utoipa::path(
    delete,
    path = "/v1/users/{id}/following/{target}",
    tag = "commands",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "The follower: the signed-in user", minimum = 1.0, maximum = 9007199254740991.0),
        ("target" = i64, Path, description = "The user to unfollow", minimum = 1.0, maximum = 9007199254740991.0),
    ),
    responses(FollowAnswers)
)]
pub async fn unfollow(
    auth: AuthUser,
    Path((id, target)): Path<(i64, i64)>,
    RequestId(request_id): RequestId,
    State(state): State<AppState>,
) -> Result<Json<FollowResponse>, ApiError> {
    set_following(auth, id, target, false, &request_id, &state).await
}

async fn set_following(
    auth: AuthUser,
    id: i64,
    target: i64,
    following: bool,
    request_id: &str,
    state: &AppState,
) -> Result<Json<FollowResponse>, ApiError> {
    let id = valid_id(id, "user")?;
    let target = valid_id(target, "target user")?;
    auth.ensure_is(id)?;
    let position = state
        .commands
        .set_following(id, target, following, request_id)
        .await?;
    Ok(Json(FollowResponse {
        following,
        position: position.to_string(),
    }))
}
