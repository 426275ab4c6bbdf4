//! (to be filled in) routes of the `posts` module.

use axum::Router;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
