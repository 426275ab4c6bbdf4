//! Posting: `POST /v1/posts` as the signed-in user, `DELETE /v1/posts/{id}` by its author.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extractor::{valid_id, AuthUser, Json, Path, RequestId};
use super::queries::freshness::POSITION_HEADER;
use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/posts", post(create_post))
        .route("/v1/posts/{id}", delete(delete_post))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreatePostRequest {
    /// 1–280 characters (Unicode scalar values) after trimming, no NUL.
    #[schema(
        example = "hello, murmur",
        min_length = 1,
        max_length = 280,
        pattern = "\\S"
    )]
    pub body: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PostResponse {
    #[schema(example = 7)]
    pub id: i64,
    pub author_id: i64,
    /// As stored (trimmed).
    pub body: String,
    pub created_at: DateTime<Utc>,
    /// Log position of `PostCreated`; pass as `X-Murmur-Min-Position` to read it back.
    #[schema(example = "812:40")]
    pub position: String,
}

/// Posts as the signed-in user.
#[utoipa::path(
    post,
    path = "/v1/posts",
    tag = "commands",
    security(("bearer" = [])),
    request_body = CreatePostRequest,
    responses(
        (status = 201, description = "Posted", body = PostResponse),
        (status = 400, response = super::responses::BadRequest),
        (status = 401, response = super::responses::Unauthorized),
        (status = 404, response = super::responses::NotFound),
        (status = 413, response = super::responses::PayloadTooLarge),
        (status = 415, response = super::responses::UnsupportedMediaType),
        (status = 422, response = super::responses::Unprocessable),
        (status = 503, response = super::responses::ServiceUnavailable),
    )
)]
pub async fn create_post(
    AuthUser(author): AuthUser,
    RequestId(request_id): RequestId,
    State(state): State<AppState>,
    Json(request): Json<CreatePostRequest>,
) -> Result<(StatusCode, Json<PostResponse>), ApiError> {
    let post = state
        .commands
        .create_post(author, &request.body, &request_id)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(PostResponse {
            id: post.id,
            author_id: post.author_id,
            body: post.body,
            created_at: post.created_at,
            position: post.position.to_string(),
        }),
    ))
}

/// Deletes a post; only its author may. A deleted post stays deleted.
#[utoipa::path(
    delete,
    path = "/v1/posts/{id}",
    tag = "commands",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The post", minimum = 1.0, maximum = 9007199254740991.0)),
    responses(
        (status = 204, description = "Deleted", headers(
            ("X-Murmur-Position" = String, description = "Log position of `PostDeleted` (\"<xid>:<pos>\")")
        )),
        (status = 400, response = super::responses::BadRequest),
        (status = 401, response = super::responses::Unauthorized),
        (status = 403, response = super::responses::Forbidden),
        (status = 404, response = super::responses::NotFound),
        (status = 409, response = super::responses::Conflict),
        (status = 503, response = super::responses::ServiceUnavailable),
    )
)]
pub async fn delete_post(
    AuthUser(actor): AuthUser,
    Path(id): Path<i64>,
    RequestId(request_id): RequestId,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let id = valid_id(id, "post")?;
    let position = state.commands.delete_post(actor, id, &request_id).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(POSITION_HEADER, position.to_string())],
    ))
}
