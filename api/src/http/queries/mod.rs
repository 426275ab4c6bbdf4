//! Query routes: profiles, home feeds, post lists and follower lists, read only from the
//! projections through [`ReadModel`](murmur_projections::ReadModel) by key or keyset page.
//! Every handler answers through [`ReadRequest::answer`] (freshness, position, ETag).

pub mod freshness;
mod render;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use murmur_domain::UserId;
use murmur_projections::read_model::{names, Page, PostItem, Profile, UserListItem};
use murmur_projections::{PageRequest, ReadError, ReadModel, Reads};
use serde::Deserialize;
use utoipa::IntoParams;

pub use freshness::ReadRequest;
pub use render::Render;

use super::extractor::{AuthUser, Path, Query};
use super::{ApiError, AppState};

/// The OpenAPI tag of these routes; `openapi.rs` adds their shared headers and responses.
pub const TAG: &str = "queries";

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{id}", get(get_profile))
        .route("/v1/users/by-handle/{handle}", get(get_profile_by_handle))
        .route("/v1/users/{id}/feed", get(get_feed))
        .route("/v1/users/{id}/posts", get(get_user_posts))
        .route("/v1/users/{id}/followers", get(get_followers))
        .route("/v1/users/{id}/following", get(get_following))
}

/// `?limit=&cursor=`. `limit` is parsed as a number here (400 when it is not one) and range
/// checked in [`PageParams::request`].
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (opaque).
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn request(self) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}, not {limit}"
            )));
        }
        Ok(PageRequest {
            limit: limit as u32,
            cursor: self.cursor,
        })
    }
}

fn unknown_user(id: UserId) -> ApiError {
    ApiError::NotFound(format!("no user {id}"))
}

/// A user's profile with their counts.
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = TAG,
    operation_id = "get_profile",
    params(("id" = i64, Path, description = "User id", minimum = 1.0, maximum = 9007199254740991.0)),
    responses(
        (status = 200, description = "The profile", body = Profile),
        (status = 404, response = super::responses::NotFound),
    )
)]
pub async fn get_profile(
    State(state): State<AppState>,
    read: ReadRequest,
    Path(id): Path<UserId>,
) -> Result<Response, ApiError> {
    read.answer(&state, Reads::State(&[names::PROFILES]), async {
        let profile = state.read_model.profile(id).await?;
        profile.ok_or_else(|| unknown_user(id))
    })
    .await
}

/// A user's profile, found by handle (case-insensitive).
#[utoipa::path(
    get,
    path = "/v1/users/by-handle/{handle}",
    tag = TAG,
    operation_id = "get_profile_by_handle",
    params(("handle" = String, Path, description = "Handle, any case")),
    responses(
        (status = 200, description = "The profile", body = Profile),
        (status = 404, response = super::responses::NotFound),
    )
)]
pub async fn get_profile_by_handle(
    State(state): State<AppState>,
    read: ReadRequest,
    Path(handle): Path<String>,
) -> Result<Response, ApiError> {
    read.answer(&state, Reads::State(&[names::PROFILES]), async {
        let profile = state.read_model.profile_by_handle(&handle).await?;
        profile.ok_or_else(|| ApiError::NotFound(format!("no user with handle {handle:?}")))
    })
    .await
}

/// The home feed: the user's own posts and those of everyone they follow, newest first.
/// Only the user themselves may read it.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/feed",
    tag = TAG,
    operation_id = "get_feed",
    params(("id" = i64, Path, description = "User id (the signed-in user)", minimum = 1.0, maximum = 9007199254740991.0), PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the feed", body = Page<PostItem>),
        (status = 401, response = super::responses::Unauthorized),
        (status = 403, response = super::responses::Forbidden),
    )
)]
pub async fn get_feed(
    State(state): State<AppState>,
    auth: AuthUser,
    read: ReadRequest,
    Path(id): Path<UserId>,
    Query(params): Query<PageParams>,
) -> Result<Response, ApiError> {
    auth.ensure_is(id)?;
    let page = params.request()?;
    read.answer(&state, Reads::State(&names::ALL), async {
        Ok(state.read_model.feed(id, &page).await?)
    })
    .await
}

/// One user's posts, newest first.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/posts",
    tag = TAG,
    operation_id = "get_user_posts",
    params(("id" = i64, Path, description = "Author's user id", minimum = 1.0, maximum = 9007199254740991.0), PageParams),
    responses(
        (status = 200, description = "A page of the user's posts", body = Page<PostItem>),
        (status = 404, response = super::responses::NotFound),
    )
)]
pub async fn get_user_posts(
    State(state): State<AppState>,
    read: ReadRequest,
    Path(id): Path<UserId>,
    Query(params): Query<PageParams>,
) -> Result<Response, ApiError> {
    let reads = Reads::State(&[names::PROFILES, names::POSTS]);
    user_page(&state, &read, id, params, reads, |rm, id, page| {
        rm.user_posts(id, page)
    })
    .await
}

/// Who follows the user, newest follow first.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/followers",
    tag = TAG,
    operation_id = "get_followers",
    params(("id" = i64, Path, description = "User id", minimum = 1.0, maximum = 9007199254740991.0), PageParams),
    responses(
        (status = 200, description = "A page of followers", body = Page<UserListItem>),
        (status = 404, response = super::responses::NotFound),
    )
)]
pub async fn get_followers(
    State(state): State<AppState>,
    read: ReadRequest,
    Path(id): Path<UserId>,
    Query(params): Query<PageParams>,
) -> Result<Response, ApiError> {
    user_page(
        &state,
        &read,
        id,
        params,
        Reads::FollowLists,
        |rm, id, page| rm.followers(id, page),
    )
    .await
}

/// Whom the user follows, newest follow first.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/following",
    tag = TAG,
    operation_id = "get_following",
    params(("id" = i64, Path, description = "User id", minimum = 1.0, maximum = 9007199254740991.0), PageParams),
    responses(
        (status = 200, description = "A page of followees", body = Page<UserListItem>),
        (status = 404, response = super::responses::NotFound),
    )
)]
pub async fn get_following(
    State(state): State<AppState>,
    read: ReadRequest,
    Path(id): Path<UserId>,
    Query(params): Query<PageParams>,
) -> Result<Response, ApiError> {
    user_page(
        &state,
        &read,
        id,
        params,
        Reads::FollowLists,
        |rm, id, page| rm.following(id, page),
    )
    .await
}

/// A page of one of `id`'s public lists: 404 when `id` has no profile (not an empty list).
async fn user_page<I>(
    state: &AppState,
    read: &ReadRequest,
    id: UserId,
    params: PageParams,
    reads: Reads,
    fetch: impl for<'a> FnOnce(
        &'a dyn ReadModel,
        UserId,
        &'a PageRequest,
    ) -> BoxFuture<'a, Result<Page<I>, ReadError>>,
) -> Result<Response, ApiError>
where
    Page<I>: Render,
{
    let page = params.request()?;
    read.answer(state, reads, async {
        if state.read_model.profile(id).await?.is_none() {
            return Err(unknown_user(id));
        }
        Ok(fetch(state.read_model.as_ref(), id, &page).await?)
    })
    .await
}
