//! (to be filled in) routes of the `users` module.

use axum::Router;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
