//! Following: `PUT` / `DELETE /v1/users/{id}/following/{target}`, as user `{id}` only.

use axum::extract::State;
use axum::routing::put;
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;

use super::extractor::{valid_id, AuthUser, Json, Path, RequestId};
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
    responses(
        (status = 200, description = "Whether `{id}` now follows `{target}`", body = FollowResponse),
        (status = 400, response = super::responses::BadRequest),
        (status = 401, response = super::responses::Unauthorized),
        (status = 403, response = super::responses::Forbidden),
        (status = 404, response = super::responses::NotFound),
        (status = 409, response = super::responses::Conflict),
        (status = 422, response = super::responses::Unprocessable),
    )
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
    responses(
        (status = 200, description = "Whether `{id}` now follows `{target}`", body = FollowResponse),
        (status = 400, response = super::responses::BadRequest),
        (status = 401, response = super::responses::Unauthorized),
        (status = 403, response = super::responses::Forbidden),
        (status = 404, response = super::responses::NotFound),
        (status = 409, response = super::responses::Conflict),
        (status = 422, response = super::responses::Unprocessable),
    )
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
