//! The HTTP layer: one application state, one error type, a `router()` per route module,
//! composed here with the cross-cutting layers (request ids, tracing, body limit).

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::Router;
use murmur_projections::ReadModel;
use sqlx::PgPool;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::TokenKeys;
use crate::commands::Commands;
use crate::config::Config;

pub mod audit;
pub mod error;
pub mod extractor;
pub mod follows;
pub mod health;
pub mod openapi;
pub mod posts;
pub mod queries;
pub mod responses;
pub mod serve;
pub mod users;

pub use error::ApiError;

/// Largest request body accepted (413 above it).
pub const BODY_LIMIT: usize = 64 * 1024;
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The longest client-sent request id kept (it is stored in every event's metadata).
pub const MAX_REQUEST_ID: usize = 128;

/// A client's request id is kept if it is 1 to [`MAX_REQUEST_ID`] visible ASCII characters;
/// otherwise it is dropped here and the request-id layer generates one (which the answer
/// echoes, as it echoes a kept one).
fn drop_unfit_request_id<B>(mut request: Request<B>) -> Request<B> {
    let fit = |v: &axum::http::HeaderValue| {
        let id = v.as_bytes();
        (1..=MAX_REQUEST_ID).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
    };
    let mut ids = request.headers().get_all(REQUEST_ID_HEADER).iter();
    // None sent is fine (one is generated); exactly one must fit; several never do.
    let keep = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(id), None) => fit(id),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    request
}

/// Everything a handler may use, behind one `Arc`: extractors clone the state for every
/// request, and one shared count is cheaper than one per field (each a cache line the two
/// cores pass back and forth).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    /// The primary: commands.
    pub pool: PgPool,
    /// Where the node reads the log and the tables (follower lists, checkpoints, audit):
    /// the primary, or a read node's hot standby (`READ_DATABASE_URL`).
    pub read_pool: PgPool,
    pub config: Arc<Config>,
    pub commands: Arc<Commands>,
    pub read_model: Arc<dyn ReadModel>,
    pub tokens: Arc<TokenKeys>,
    pub admin_token: Option<Arc<str>>,
    /// The memory image queries read (kept by the projector tasks).
    pub image: murmur_projections::Image,
    pub login_throttle: Arc<crate::throttle::LoginThrottle>,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    // Install the metrics recorder before anything records.
    health::prometheus();
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let request_timeout = state.config.request_timeout;
    let layers = ServiceBuilder::new()
        .layer(tower::util::MapRequestLayer::new(drop_unfit_request_id))
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let id = request
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", request_id = %id, method = %request.method(), uri = %request.uri())
            })
            // One line per answered request (status, latency), within the request's span.
            .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(request_id))
        // A request not answered in time (a body trickling in, say) gets a 408 problem.
        .layer(axum::error_handling::HandleErrorLayer::new(
            |_: tower::BoxError| async { ApiError::RequestTimeout },
        ))
        .layer(tower::timeout::TimeoutLayer::new(request_timeout));

    Router::new()
        .merge(users::router())
        .merge(follows::router())
        .merge(posts::router())
        .merge(queries::router())
        .merge(audit::router())
        .merge(health::router())
        .merge(openapi::router())
        // After every route is merged: route layers wrap only the routes present.
        .route_layer(axum::middleware::from_fn(health::track_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(layers)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed on this route".into())
}
