//! The daemon's HTTP endpoint: health, pipelines, runs, the supervision tree and API runs.
//!
//! Every route reads the same store as the CLI, so `curl` and `ylem` return the same data.

use std::net::SocketAddr;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tracing::{error, info};
use uuid::Uuid;

use crate::daemon::Runtime;
use crate::store::{NewQueuedRun, RunKind};

/// Builds the router; `serve` binds it.
pub fn router(runtime: Runtime) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/pipelines", get(pipelines))
        .route("/api/pipelines/{name}/runs", post(start_run))
        .route("/api/runs", get(runs))
        .route("/api/runs/{run_uuid}", get(run))
        .route("/api/runs/{run_uuid}/cancel", post(cancel))
        .route("/api/actors", get(actors))
        .route("/api/load-balancer", get(load_balancer))
        .with_state(runtime)
}

/// Serves the endpoint until the task is aborted.
pub async fn serve(
    runtime: Runtime,
    listen: SocketAddr,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|err| anyhow::anyhow!("failed to listen on http.listen = {listen}: {err}; choose a free port with --http-listen or http.listen, or turn the endpoint off with --http-listen off"))?;
    let address = listener.local_addr()?;
    info!(%address, "http endpoint listening");
    let app = router(runtime);
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            error!(error = %err, "http endpoint stopped");
        }
    }))
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl<E: std::fmt::Display> From<E> for ApiError {
    fn from(err: E) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
    }
}

async fn health() -> &'static str {
    "ok"
}

async fn pipelines(State(runtime): State<Runtime>) -> Result<Response, ApiError> {
    Ok(Json(runtime.store.list_pipelines().await?).into_response())
}

#[derive(Deserialize)]
struct RunsQuery {
    pipeline: Option<String>,
    limit: Option<u32>,
}

async fn runs(
    State(runtime): State<Runtime>,
    Query(query): Query<RunsQuery>,
) -> Result<Response, ApiError> {
    let runs = runtime
        .store
        .list_runs(query.pipeline.as_deref(), query.limit.unwrap_or(50))
        .await?;
    Ok(Json(runs).into_response())
}

async fn run(
    State(runtime): State<Runtime>,
    Path(run_uuid): Path<String>,
) -> Result<Response, ApiError> {
    let run_uuid = Uuid::parse_str(&run_uuid).map_err(|err| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid run uuid {run_uuid:?}: {err}"),
        )
    })?;
    match runtime.store.run(run_uuid).await? {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("run {run_uuid} not found"),
        )),
    }
}

async fn cancel(
    State(runtime): State<Runtime>,
    Path(run_uuid): Path<String>,
) -> Result<Response, ApiError> {
    let run_uuid = Uuid::parse_str(&run_uuid).map_err(|err| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid run uuid {run_uuid:?}: {err}"),
        )
    })?;
    match runtime.store.cancel_run(run_uuid).await? {
        Some(status) => Ok(Json(
            serde_json::json!({ "run_uuid": run_uuid, "status": status.as_str() }),
        )
        .into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("run {run_uuid} not found"),
        )),
    }
}

/// Queues an API run of a pipeline; the request body is the run input.
async fn start_run(
    State(runtime): State<Runtime>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Some(pipeline) = runtime.store.pipeline_by_name(&name).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("pipeline {name:?} not found"),
        ));
    };
    if !body.is_empty() {
        if let Err(err) = serde_json::from_slice::<serde_json::Value>(&body) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("the request body is the run input and must be JSON: {err}"),
            ));
        }
    }
    let run_uuid = Uuid::new_v4();
    runtime
        .store
        .enqueue_run(NewQueuedRun {
            pipeline_uuid: pipeline.uuid,
            run_uuid,
            kind: RunKind::Api,
            input: (!body.is_empty()).then(|| body.to_vec()),
            run_config: None,
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "run_uuid": run_uuid })),
    )
        .into_response())
}

async fn actors(State(runtime): State<Runtime>) -> Json<Vec<crate::supervision::ActorStatus>> {
    Json(runtime.registry.snapshot())
}

async fn load_balancer(State(runtime): State<Runtime>) -> Result<Response, ApiError> {
    let outstanding = runtime
        .balancer
        .outstanding_ms()
        .await
        .map_err(|err| ApiError(StatusCode::SERVICE_UNAVAILABLE, err.to_string()))?;
    Ok(Json(serde_json::json!({ "outstanding_ms": outstanding })).into_response())
}
