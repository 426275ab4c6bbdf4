//! The audit routes (admin token only): the global log, one aggregate's history, and
//! everything a user did or had done to them, in commit order, older event versions shown
//! upcast with the stored version flagged. They read through `murmur_projections::audit`,
//! the one reader of the log for audit (also behind `replay audit`).
//!
//! An unknown aggregate id or user answers 200 with no items (the log simply has no such
//! events); an aggregate type murmur does not have answers 400.

use axum::routing::get;
use axum::Router;
use murmur_domain::{Follow, Handle, Post, User, UserId};
use murmur_projections::audit::{self, AuditFilter, AuditPage, DEFAULT_LIMIT};
use murmur_projections::Position;
use serde::Deserialize;
use utoipa::IntoParams;

use super::extractor::{Admin, Json, Path, Query};
use super::{ApiError, AppState};
use cqrs_es::Aggregate;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit/events", get(audit_events))
        .route(
            "/v1/audit/streams/{aggregate_type}/{aggregate_id}",
            get(audit_stream),
        )
        .route("/v1/audit/users/{id}", get(audit_user))
}

/// Paging of every audit route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only events after this position (`"<transaction id>:<position>"`, e.g. a page's
    /// `next_after`); from the start when absent.
    pub after: Option<String>,
    /// Events per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

async fn page(
    state: &AppState,
    filter: AuditFilter,
    params: AuditParams,
) -> Result<Json<AuditPage>, ApiError> {
    let after = match params.after.as_deref() {
        None | Some("") => Position::START,
        Some(text) => text
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("after: {e}")))?,
    };
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let mut conn = state.read_pool.acquire().await?;
    Ok(Json(audit::read(&mut conn, &filter, after, limit).await?))
}

/// The whole event log in commit order.
#[utoipa::path(
    get,
    path = "/v1/audit/events",
    tag = "audit",
    params(AuditParams),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "A page of the log", body = AuditPage),
        (status = 400, response = super::responses::BadRequest),
        (status = 401, response = super::responses::Unauthorized),
        (status = 403, response = super::responses::Forbidden),
    )
)]
pub async fn audit_events(
    _: Admin,
    state: axum::extract::State<AppState>,
    Query(params): Query<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    page(&state, AuditFilter::All { since: None }, params).await
}

/// One aggregate's history (an unknown id has none: 200 with no items).
#[utoipa::path(
    get,
    path = "/v1/audit/streams/{aggregate_type}/{aggregate_id}",
    tag = "audit",
    params(
        ("aggregate_type" = String, Path, description = "Handle, User, Follow or Post"),
        ("aggregate_id" = String, Path, description = "e.g. a user or post id, `3:7` for a follow, a lowercased handle"),
        AuditParams
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The stream's events", body = AuditPage),
        (status = 400, response = super::responses::BadRequest),
        (status = 401, response = super::responses::Unauthorized),
        (status = 403, response = super::responses::Forbidden),
    )
)]
pub async fn audit_stream(
    _: Admin,
    state: axum::extract::State<AppState>,
    Path((aggregate_type, aggregate_id)): Path<(String, String)>,
    Query(params): Query<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    let types = [Handle::TYPE, User::TYPE, Follow::TYPE, Post::TYPE];
    if !types.contains(&aggregate_type.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "unknown aggregate type {aggregate_type:?}; one of {}",
            types.join(", ")
        )));
    }
    // No stream id holds a NUL, and PostgreSQL text cannot.
    if aggregate_id.contains('\0') {
        return Err(ApiError::BadRequest(
            "an aggregate id cannot contain NUL".into(),
        ));
    }
    let filter = AuditFilter::Stream {
        aggregate_type,
        aggregate_id,
    };
    page(&state, filter, params).await
}

/// Every event the user acted in (`metadata.actor_id`) or is the subject of (their own
/// registration and handle claim, follows either way, their posts).
#[utoipa::path(
    get,
    path = "/v1/audit/users/{id}",
    tag = "audit",
    params(("id" = i64, Path, description = "User id", minimum = 1.0, maximum = 9007199254740991.0), AuditParams),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The user's events", body = AuditPage),
        (status = 400, response = super::responses::BadRequest),
        (status = 401, response = super::responses::Unauthorized),
        (status = 403, response = super::responses::Forbidden),
    )
)]
pub async fn audit_user(
    _: Admin,
    state: axum::extract::State<AppState>,
    Path(id): Path<UserId>,
    Query(params): Query<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    let id = super::extractor::valid_id(id, "user")?;
    page(&state, AuditFilter::User(id), params).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use murmur_domain::EventMetadata;
    use murmur_projections::audit::AuditEvent;
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::RefOr;
    use utoipa::PartialSchema;

    use super::*;

    fn properties(schema: RefOr<Schema>) -> BTreeSet<String> {
        match schema {
            RefOr::T(Schema::Object(object)) => object.properties.keys().cloned().collect(),
            _ => panic!("not an object schema"),
        }
    }

    fn keys(value: &serde_json::Value) -> BTreeSet<String> {
        value
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    }

    /// The derived schemas list exactly the fields the audit serializes.
    #[test]
    fn documented_schema_matches_the_json() {
        let event = AuditEvent {
            position: Position::new(5, 9),
            aggregate_type: "User".into(),
            aggregate_id: "3".into(),
            sequence: 1,
            event_type: "UserRegistered".into(),
            event_version: "2".into(),
            stored_version: "1".into(),
            upcast: true,
            payload: serde_json::json!({}),
            metadata: Some(EventMetadata {
                actor_id: None,
                request_id: "r".into(),
                time: chrono::Utc::now(),
            }),
            stored_metadata: Some(serde_json::json!({})),
            unreadable: Some("documented too".into()),
        };
        let page = AuditPage {
            items: vec![event],
            next_after: None,
        };
        let json = serde_json::to_value(&page).expect("serializes");
        assert_eq!(keys(&json), properties(AuditPage::schema()));
        assert_eq!(keys(&json["items"][0]), properties(AuditEvent::schema()));
        assert_eq!(
            keys(&json["items"][0]["metadata"]),
            properties(EventMetadata::schema())
        );
    }
}
