//! (to be filled in) routes of the `health` module.

use axum::Router;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
