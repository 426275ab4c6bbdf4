//! Operations routes: `/healthz` (the process is up), `/readyz` (the database answers; the
//! projections' progress) and `/metrics` (Prometheus text), plus the middleware that counts
//! and times every routed request.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::ToSchema;

use murmur_projections::Kind;

use super::extractor::Json;
use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Upper bounds (seconds) of the request-latency histogram buckets.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use (a process may start many
/// servers, e.g. in tests, but can have only one global recorder). `None` if another
/// recorder was installed first.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("murmur_http_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    // Histograms buffer samples until upkeep drains them.
                    let upkeep = handle.clone();
                    std::thread::spawn(move || loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    });
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is unavailable");
                    None
                }
            }
        })
        .as_ref()
}

/// Counts (`murmur_http_requests_total`) and times (`murmur_http_request_duration_seconds`)
/// each request by method, route template and status.
pub async fn track_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("murmur_http_requests_total", &labels).increment(1);
    metrics::histogram!("murmur_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Up", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Each projection's durable copy: where its checkpoint is.
    pub projections: Vec<DurableStatus>,
    /// Each projection's state in this node's memory (what queries read): its position and
    /// the figures its task last measured (at most a second ago) against the log it reads.
    pub memory: Vec<MemoryStatus>,
    /// On a read node that reads a hot standby (`READ_DATABASE_URL`): how far the standby
    /// trails the primary, measured at most a second ago (see
    /// `murmur_projections::log::standby::ReplicaStatus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub replica: Option<murmur_projections::log::standby::ReplicaStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DurableStatus {
    pub name: &'static str,
    #[schema(value_type = String, example = "812:40")]
    pub checkpoint: murmur_projections::Position,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryStatus {
    pub name: &'static str,
    #[schema(value_type = String, example = "812:40")]
    pub position: murmur_projections::Position,
    /// Lag, durable lag (on the leading node), a failure the task has not got past, and the
    /// transaction holding it back (see `murmur_projections::runtime::Health`).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub health: murmur_projections::runtime::Health,
}

/// Ready: the database the node reads answers, the projections are in memory and applying
/// the log. Costs one small query (no count over the log): the figures come from the
/// projector tasks. A read node on a standby stays ready while the primary is away (it
/// serves reads; commands answer 503), and reports that under `replica`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, response = super::responses::ServiceUnavailable),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let unavailable = |detail: String| ApiError::Unavailable {
        detail,
        retry_after_secs: 1,
    };
    if let Some(reason) = state.image.stopped() {
        return Err(unavailable(reason));
    }
    let checkpoints = murmur_projections::checkpoints::read_all(&state.read_pool)
        .await
        .map_err(|e| {
            tracing::warn!(error = ?e, "not ready");
            unavailable("the database does not answer".into())
        })?;
    if !state.image.is_loaded() {
        return Err(unavailable(
            "the projections are still loading into memory".into(),
        ));
    }
    let mut memory = Vec::with_capacity(Kind::ALL.len());
    for kind in Kind::ALL {
        let live = state.image.get(kind);
        let health = live.health();
        if let Some(failure) = &health.failure {
            return Err(unavailable(format!(
                "the {} projection is stuck: {failure}",
                kind.name()
            )));
        }
        memory.push(MemoryStatus {
            name: kind.name(),
            position: live.position(),
            health,
        });
    }
    let projections = Kind::ALL
        .iter()
        .map(|kind| DurableStatus {
            name: kind.name(),
            checkpoint: checkpoints
                .get(kind.name())
                .copied()
                .unwrap_or(murmur_projections::Position::START),
        })
        .collect();
    Ok(Json(Readiness {
        status: "ok",
        projections,
        memory,
        replica: state.image.replica(),
    }))
}

/// Prometheus metrics of this process.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 503, response = super::responses::ServiceUnavailable),
    )
)]
pub async fn metrics() -> Result<impl IntoResponse, ApiError> {
    let handle = prometheus().ok_or_else(|| ApiError::Unavailable {
        detail: "metrics are not recorded in this process".into(),
        retry_after_secs: 60,
    })?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    ))
}
