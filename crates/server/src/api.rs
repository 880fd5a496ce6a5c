//! The JSON API under `/api/v1`, and the health and readiness probes. A decision made here is
//! only a store write; the workers (embedded or not) do the driving.

use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::ACCEPT;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use steward_core::Timestamp;
use steward_core::job::JobContract;
use steward_core::state::{HumanDecision, RunState};
use steward_runtime::{CreateRun, Engine};
use steward_store::{RunFilter, Store};

use crate::error::ApiError;
use crate::views;

/// What every handler reaches.
pub(crate) struct ApiState<S> {
    pub(crate) engine: Engine<S>,
    /// Set once the recovery scan has run (HSK-WF-003): until then `/readyz` answers 503.
    pub(crate) ready: Arc<AtomicBool>,
    /// Where runs created through the API run, and the only place workflow files are read from.
    pub(crate) workspace: PathBuf,
    /// Live streams open at once are bounded: one permit each.
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
    /// Fires when the server stops: live streams end, so that stopping does not wait on them.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    pub(crate) metrics: crate::metrics::Metrics,
}

type St<S> = State<Arc<ApiState<S>>>;

/// Who a decision made through the API is recorded as.
const API_ACTOR: &str = "api";

/// Most runs one page of `GET /api/v1/runs` holds.
const MAX_PAGE: usize = 500;

pub(crate) fn router<S: Store + Clone + Send + Sync + 'static>(state: Arc<ApiState<S>>) -> Router {
    Router::new()
        .route("/api/v1/runs", get(list_runs::<S>).post(create_run::<S>))
        .route("/api/v1/runs/{id}", get(get_run::<S>))
        .route("/api/v1/runs/{id}/events", get(run_events::<S>))
        .route("/api/v1/events", get(all_events::<S>))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics::<S>))
        .route("/api/v1/runs/{id}/cancel", post(cancel::<S>))
        .route("/api/v1/runs/{id}/resume", post(resume::<S>))
        .route("/api/v1/runs/{id}/gate", post(gate::<S>))
        .route("/api/v1/runs/{id}/steps/{step}/approve", post(approve::<S>))
        .route("/api/v1/runs/{id}/steps/{step}/reject", post(reject::<S>))
        .route("/api/v1/runs/{id}/bundle", get(bundle::<S>))
        .route("/api/v1/runs/{id}/restart", post(restart::<S>))
        .route("/api/v1/runs/{id}/fork", post(fork::<S>))
        .with_state(state)
}

/// The probes answer without a token: they say nothing about any run.
pub(crate) fn probes<S: Store + Clone + Send + Sync + 'static>(state: Arc<ApiState<S>>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz::<S>)).with_state(state)
}

async fn metrics<S: Store + Clone + Send + Sync + 'static>(State(st): St<S>) -> Result<Response, ApiError> {
    let text = crate::metrics::render(&st.engine, &st.metrics).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// The OpenAPI document of this API, as written beside the code (`openapi.json`).
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// An address no route answers.
pub(crate) async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_endpoint",
        "no such endpoint; the API is described at /api/v1/openapi.json",
    )
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz<S: Store + Clone + Send + Sync + 'static>(State(st): St<S>) -> (StatusCode, Json<Value>) {
    if st.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, Json(json!({"ready": true})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "why": "the recovery scan has not finished"})))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    workflow: Option<String>,
    /// Text in the run id, workflow id or summary.
    q: Option<String>,
    /// Created at or after this time (RFC 3339).
    since: Option<String>,
    /// Created before this time (RFC 3339).
    until: Option<String>,
    limit: Option<usize>,
    /// The `next` of the previous page: runs after it, newest first.
    after: Option<String>,
}

async fn list_runs<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let state = match query.state.as_deref() {
        Some(s) => Some(s.parse::<RunState>().map_err(|e| ApiError::bad_request(format!("`state`: {e}")))?),
        None => None,
    };
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!("`limit` must be between 1 and {MAX_PAGE}, not {limit}")));
    }
    let time = |name: &str, v: &Option<String>| match v.as_deref() {
        None => Ok(None),
        Some(t) => Timestamp::parse_rfc3339(t)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("`{name}`: `{t}` is not an RFC 3339 time"))),
    };
    let (since, until) = (time("since", &query.since)?, time("until", &query.until)?);
    let store = st.engine.store();
    // Newest first: the page starts after the run the last page ended with.
    let after = match &query.after {
        Some(id) => match store.get_run(id).await {
            Ok(r) => Some((r.created_at, r.run_id)),
            Err(steward_store::Error::NotFound { .. }) => {
                return Err(ApiError::bad_request(format!("`after`: no run `{id}`")));
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let filter = RunFilter {
        state,
        // One more than the page, to know whether another follows.
        limit: Some(u32::try_from(limit + 1).unwrap_or(u32::MAX)),
        workflow_id: query.workflow.clone(),
        text: query.q.clone().filter(|q| !q.is_empty()),
        created_since: since,
        created_before: until,
        after,
    };
    let mut page = store.list_runs(filter).await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next = if more { page.last().map(|r| r.run_id.clone()) } else { None };
    let redactor = st.engine.bus().redactor();
    let shown: Vec<Value> = page.iter().map(|r| views::run_summary_json(r, redactor)).collect();
    Ok(Json(json!({"runs": shown, "next": next})))
}

async fn get_run<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(shown(&st, &id).await?))
}

/// The run as `steward status --json` shows it.
async fn shown<S: Store + Clone + Send + Sync + 'static>(st: &ApiState<S>, id: &str) -> Result<Value, ApiError> {
    let store = st.engine.store();
    let run = store.get_run(id).await?;
    let attempts = store.list_attempts(id).await?;
    let bus = st.engine.bus();
    Ok(views::run_with_jobs_json(store, &run, &attempts, bus.redactor(), bus.artifacts().as_ref()).await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Events after this sequence number of the run.
    after: Option<i64>,
    limit: Option<usize>,
}

/// Whether the client asked for a live stream.
fn wants_stream(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")))
}

/// Where a stream starts: after `Last-Event-ID` when the client reconnects, else after `after`.
fn resume_point(headers: &HeaderMap, after: Option<i64>) -> Result<i64, ApiError> {
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .ok_or_else(|| ApiError::bad_request("`Last-Event-ID` must be the id of an event this stream sent")),
        None => Ok(after.unwrap_or(0)),
    }
}

fn stream_permit<S>(st: &ApiState<S>) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    st.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "too many live streams are open; try again later",
        )
    })
}

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(500);
    if limit == 0 || limit > 10 * MAX_PAGE {
        return Err(ApiError::bad_request(format!("`limit` must be between 1 and {}, not {limit}", 10 * MAX_PAGE)));
    }
    Ok(limit)
}

/// A run's events: a page of JSON, or with `Accept: text/event-stream` a live stream that
/// ends once the run has finished (its SSE ids are the events' `seq`).
async fn run_events<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit(query.limit)?;
    let store = st.engine.store();
    store.get_run(&id).await?;
    if wants_stream(&headers) {
        let after = resume_point(&headers, query.after)?;
        let permit = stream_permit(&st)?;
        return Ok(crate::stream::sse(st.clone(), crate::stream::Follow::Run(id), after, permit).into_response());
    }
    let events = store.list_events(&id, query.after.unwrap_or(0)).await?;
    let more = events.len() > limit;
    let page = &events[..events.len().min(limit)];
    let redactor = st.engine.bus().redactor();
    let next = if more { page.last().map(|e| e.seq) } else { None };
    let shown: Vec<Value> = page.iter().map(|e| views::event_json(e, redactor)).collect();
    Ok(Json(json!({"events": shown, "next_after": next})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllEventsQuery {
    /// Events after this store-wide id.
    after: Option<i64>,
    limit: Option<usize>,
    /// Only these event types, comma-separated (`run_created,run_state_changed` for every
    /// run's state changes).
    r#type: Option<String>,
}

/// Every run's events in the store's order: a page of JSON, or a live stream (SSE ids are the
/// store-wide event ids).
async fn all_events<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    headers: HeaderMap,
    query: Result<Query<AllEventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit(query.limit)?;
    let types: Vec<String> = query
        .r#type
        .as_deref()
        .map(|t| t.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    if let Some(unknown) = types.iter().find(|t| steward_core::event_registry::spec_of(t).is_none()) {
        return Err(ApiError::bad_request(format!("`type`: `{unknown}` is not a registered event type")));
    }
    if wants_stream(&headers) {
        let after = resume_point(&headers, query.after)?;
        let permit = stream_permit(&st)?;
        return Ok(crate::stream::sse(st.clone(), crate::stream::Follow::All(types), after, permit).into_response());
    }
    let page =
        st.engine.store().list_events_since(query.after.unwrap_or(0), u32::try_from(limit).unwrap_or(u32::MAX)).await?;
    let next = (page.len() == limit).then(|| page.last().map(|e| e.id)).flatten();
    let redactor = st.engine.bus().redactor();
    let shown: Vec<Value> = page
        .iter()
        .filter(|e| types.is_empty() || types.contains(&e.event_type))
        .map(|e| views::event_json(e, redactor))
        .collect();
    Ok(Json(json!({"events": shown, "next_after": next})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRunBody {
    /// The workflow's YAML.
    workflow: Option<String>,
    /// Or a workflow file, relative to the server's workspace.
    file: Option<String>,
    /// For a DireClaw orchestrator file: which of its workflows to run.
    orchestrator_workflow: Option<String>,
    #[serde(default)]
    inputs: Map<String, Value>,
}

async fn create_run<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    body: Result<Json<NewRunBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(rejected)?;
    let (source, origin) = match (body.workflow, body.file) {
        (Some(yaml), None) => (yaml, "the request".to_owned()),
        (None, Some(file)) => {
            let path = inside(&st.workspace, &file)?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ApiError::invalid(format!("cannot read the workflow file `{file}`: {e}")))?;
            (text, path.display().to_string())
        }
        _ => return Err(ApiError::bad_request("give exactly one of `workflow` (the YAML) and `file` (a path)")),
    };
    // As `steward run FILE --workflow ID`: the file's text with the choice appended.
    let source = match &body.orchestrator_workflow {
        Some(id) if steward_core::workflow::direclaw::is_orchestrator_text(&source) => {
            steward_core::workflow::direclaw::select(&source, id, &origin)
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "`orchestrator_workflow` picks one workflow of a DireClaw orchestrator file; this definition lists no `workflows`",
            ));
        }
        None => source,
    };
    let request = CreateRun {
        source,
        inputs: body.inputs,
        workdir: st.workspace.display().to_string(),
        actor_id: API_ACTOR.to_owned(),
        contract: JobContract::workflow_run(),
    };
    let run = st.engine.create_run(request).await?;
    Ok((StatusCode::CREATED, Json(shown(&st, &run.run_id).await?)))
}

/// A body that could not be read: too large (413), not JSON (415), or not the expected shape (400).
fn rejected(e: JsonRejection) -> ApiError {
    let code = match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "bad_request",
    };
    // Axum answers 422 for well-formed JSON of the wrong shape; here that is a bad request,
    // and 422 is kept for content the engine refuses.
    let status = if e.status() == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { e.status() };
    ApiError::new(status, code, e.body_text())
}

/// `file` as a path inside `workspace`: relative, with no `..`, and not leaving it through a
/// link either.
fn inside(workspace: &FsPath, file: &str) -> Result<PathBuf, ApiError> {
    let rel = FsPath::new(file);
    if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(ApiError::invalid(format!(
            "`file` must be a relative path inside the server's workspace, without `..`: `{file}`"
        )));
    }
    let path = workspace.join(rel);
    let real = path.canonicalize().map_err(|e| ApiError::invalid(format!("`{file}`: {e}")))?;
    let root = workspace.canonicalize().map_err(|e| ApiError::invalid(format!("the workspace: {e}")))?;
    if !real.starts_with(&root) {
        return Err(ApiError::invalid(format!("`{file}` leads outside the server's workspace")));
    }
    Ok(real)
}

async fn cancel<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.engine.cancel(&id, API_ACTOR).await?;
    Ok(Json(shown(&st, &id).await?))
}

async fn resume<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.engine.record_resume(&id, API_ACTOR).await?;
    Ok(Json(shown(&st, &id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForkBody {
    /// Reuse the completed work before this step (required for a restart).
    from: Option<String>,
    /// Inputs to change (a fork only).
    #[serde(default)]
    inputs: Map<String, Value>,
}

/// A new run that reuses the work before `from` and runs `from` and what follows (201).
async fn restart<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
    body: Result<Json<ForkBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(rejected)?;
    let Some(from) = body.from else {
        return Err(ApiError::bad_request("a restart needs `from`: the step to run again from"));
    };
    if !body.inputs.is_empty() {
        return Err(ApiError::bad_request("a restart keeps the run's inputs; fork it to change them"));
    }
    let run = st.engine.fork(&id, Some(&from), Map::new(), API_ACTOR).await?;
    Ok((StatusCode::CREATED, Json(shown(&st, &run.run_id).await?)))
}

/// A new run of the same definition with changed inputs, reusing the work before `from` if
/// given (201).
async fn fork<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
    body: Result<Json<ForkBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(rejected)?;
    let run = st.engine.fork(&id, body.from.as_deref(), body.inputs, API_ACTOR).await?;
    Ok((StatusCode::CREATED, Json(shown(&st, &run.run_id).await?)))
}

/// The debug bundle of a run (`steward bundle`): a tar archive, secrets redacted.
async fn bundle<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = st.engine.store();
    let run = store.get_run(&id).await?;
    let attempts = store.list_attempts(&id).await?;
    let events = store.list_events(&id, 0).await?;
    let bus = st.engine.bus();
    let (bytes, _) =
        crate::bundle::write(Vec::new(), &run, &attempts, &events, bus.redactor(), bus.artifacts().as_ref())
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "bundle", e.to_string()))?;
    let disposition = format!("attachment; filename=\"{}.tar\"", run.run_id);
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// A decision on an approval step: its form's fields (typed JSON, or text read by the field's
/// type), a comment, and who decides (recorded as `api:<name>`, and checked against the step's
/// approvers).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    fields: serde_json::Map<String, Value>,
    comment: Option<String>,
    decided_by: Option<String>,
}

/// Who decides, as recorded: `channel:name`, or the channel alone when no name is given. The
/// token (or loopback) says the caller may decide; the name is theirs to give, and the step's
/// approvers are checked against it.
pub(crate) fn decider(channel: &str, name: Option<&str>) -> Result<String, ApiError> {
    match name.map(str::trim) {
        None | Some("") => Ok(channel.to_owned()),
        Some(name) if name.len() <= 64 && name.chars().all(|c| c.is_alphanumeric() || "._@-".contains(c)) => {
            Ok(format!("{channel}:{name}"))
        }
        Some(_) => {
            Err(ApiError::bad_request("`decided_by`: a name of at most 64 letters, digits, `.`, `_`, `@` or `-`"))
        }
    }
}

impl DecisionBody {
    fn decision(self, decision: HumanDecision) -> Result<(String, steward_runtime::Decision), ApiError> {
        let who = decider(API_ACTOR, self.decided_by.as_deref())?;
        let fields = self
            .fields
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect();
        Ok((who, steward_runtime::Decision { decision, fields, comment: self.comment }))
    }
}

async fn decide<S: Store + Clone + Send + Sync + 'static>(
    st: &ApiState<S>,
    id: &str,
    step: &str,
    decision: HumanDecision,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(rejected)?;
    let (who, d) = body.decision(decision)?;
    st.engine.record_approval(id, step, &who, &d).await?;
    Ok(Json(shown(st, id).await?))
}

async fn approve<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path((id, step)): Path<(String, String)>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(&st, &id, &step, HumanDecision::Approve, body).await
}

async fn reject<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path((id, step)): Path<(String, String)>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(&st, &id, &step, HumanDecision::Reject, body).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GateBody {
    decision: String,
    reason: Option<String>,
}

async fn gate<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
    body: Result<Json<GateBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(rejected)?;
    let decision: HumanDecision = body
        .decision
        .parse()
        .map_err(|e| ApiError::bad_request(format!("`decision`: {e} (continue, abort or skip)")))?;
    st.engine.record_gate(&id, API_ACTOR, decision, body.reason.as_deref()).await?;
    Ok(Json(shown(&st, &id).await?))
}
