//! The operator console: server-rendered pages over the same views as the API. Reading needs
//! no JavaScript (a small script, served from the binary, only refreshes a page when its run
//! changes); forms post back to the console, and a post that does not come from the console's
//! own origin is refused (cross-site request forgery).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use serde_json::Value;
use steward_core::Timestamp;
use steward_core::state::{AttemptStatus, HumanDecision, RunState};
use steward_core::workflow::StepKind;
use steward_store::{Attempt, Run, RunFilter, Store};

use crate::api::ApiState;
use crate::error::ApiError;

type St<S> = State<Arc<ApiState<S>>>;

/// Who a decision made in the console is recorded as.
const CONSOLE_ACTOR: &str = "console";

pub(crate) fn router<S: Store + Clone + Send + Sync + 'static>(state: Arc<ApiState<S>>) -> Router {
    Router::new()
        .route("/", get(runs_page::<S>))
        .route("/runs/{id}", get(run_page::<S>))
        .route("/workers", get(workers_page::<S>))
        .route("/runs/{id}/cancel", post(cancel::<S>))
        .route("/runs/{id}/resume", post(resume::<S>))
        .route("/runs/{id}/gate", post(gate::<S>))
        .route("/runs/{id}/steps/{step}/decide", post(decide::<S>))
        .route("/runs/{id}/restart", post(restart::<S>))
        .route("/runs/{id}/fork", post(fork::<S>))
        .route("/runs/{id}/artifacts/{hash}", get(artifact::<S>))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .with_state(state)
}

/// Text made safe to put in HTML, in an element or an attribute.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page; `watch` is a run still going (or `*`, every run's state) and the last event the
/// page shows, so the script can reload it when something new is recorded.
fn page(title: &str, watch: Option<(&str, i64)>, body: &str) -> Html<String> {
    let watch =
        watch.map(|(id, after)| format!(" data-watch=\"{}\" data-after=\"{after}\"", esc(id))).unwrap_or_default();
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Steward</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"stylesheet\" href=\"/static/console.css\"></head>\
         <body{watch}><header><a href=\"/\">Steward</a> · <a href=\"/\">Runs</a> · <a href=\"/workers\">Workers</a></header><main>{body}</main>\
         <script src=\"/static/console.js\"></script></body></html>\n",
        esc(title)
    ))
}

fn state_badge(state: RunState) -> String {
    format!("<span class=\"state {0}\">{0}</span>", state.as_str())
}

fn when(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    format!("<time datetime=\"{0}\">{1}</time>", esc(&s), esc(s.get(..19).unwrap_or(&s)).replace('T', " "))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    q: Option<String>,
}

async fn runs_page<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Query(query): Query<ListQuery>,
) -> Result<Html<String>, ConsoleError> {
    let state = query.state.as_deref().filter(|s| !s.is_empty()).and_then(|s| s.parse::<RunState>().ok());
    let q = query.q.unwrap_or_default();
    let filter =
        RunFilter { state, limit: Some(200), text: Some(q.clone()).filter(|q| !q.is_empty()), ..Default::default() };
    let runs = st.engine.store().list_runs(filter).await.map_err(ApiError::from)?;
    let redactor = st.engine.bus().redactor();
    let mut body = String::from("<h1>Runs</h1><nav class=\"filters\"><a href=\"/\">all</a>");
    for s in RunState::ALL {
        let _ = write!(body, " <a href=\"/?state={0}\">{0}</a>", s.as_str());
    }
    let _ = write!(
        body,
        "</nav><form method=\"get\" action=\"/\"><input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"run, workflow or summary\">\
         <input type=\"hidden\" name=\"state\" value=\"{}\"><button>Search</button></form>",
        esc(&q),
        state.map_or("", |s| s.as_str())
    );
    body.push_str("<table class=\"runs\"><thead><tr><th>run</th><th>workflow</th><th>state</th><th>summary</th><th>created</th><th>updated</th></tr></thead><tbody>");
    let shown: Vec<&Run> = runs.iter().collect();
    for r in &shown {
        let _ = write!(
            body,
            "<tr><td><a href=\"/runs/{0}\">{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td></tr>",
            esc(&r.run_id),
            esc(&r.workflow_id),
            state_badge(r.state),
            esc(&redactor.redact(&r.summary).0),
            when(r.created_at),
            when(r.updated_at)
        );
    }
    if shown.is_empty() {
        body.push_str("<tr><td colspan=\"6\">no runs</td></tr>");
    }
    body.push_str("</tbody></table>");
    let last = st.engine.store().last_event_id().await.map_err(ApiError::from)?;
    Ok(page("Runs", Some(("*", last)), &body))
}

async fn run_page<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let store = st.engine.store();
    let run = store.get_run(&id).await.map_err(ApiError::from)?;
    let attempts = store.list_attempts(&id).await.map_err(ApiError::from)?;
    let events = store.list_events(&id, 0).await.map_err(ApiError::from)?;
    let redactor = st.engine.bus().redactor();
    let wf =
        store.get_definition(&run.definition_hash).await.ok().and_then(|src| steward_core::workflow::parse(&src).ok());
    let is_approval =
        |step: &str| wf.as_ref().and_then(|wf| wf.step(step)).is_some_and(|s| matches!(s.kind, StepKind::Approval(_)));
    let waiting: Vec<&Attempt> = crate::views::by_step(&attempts)
        .into_iter()
        .filter_map(|(_, list)| list.last().copied())
        .filter(|a| a.status == AttemptStatus::AwaitingUser && a.answer.is_none())
        .collect();
    let mut body = format!(
        "<h1>{} <small>{}</small></h1><p>{} {}</p>",
        esc(&run.workflow_id),
        esc(&run.run_id),
        state_badge(run.state),
        esc(&redactor.redact(&run.summary).0)
    );
    // A run of a DireClaw orchestrator file says which file and workflow.
    if let Some(origin) = wf.as_ref().and_then(|wf| wf.origin.as_deref()) {
        let _ = write!(body, "<p class=\"origin\">From {}</p>", esc(origin));
    }
    body.push_str("<div class=\"actions\">");
    if !run.state.is_terminal() {
        let _ =
            write!(body, "<form method=\"post\" action=\"/runs/{}/cancel\"><button>Cancel</button></form>", esc(&id));
    }
    if run.state == RunState::Stalled {
        let _ =
            write!(body, "<form method=\"post\" action=\"/runs/{}/resume\"><button>Resume</button></form>", esc(&id));
    }
    if run.state == RunState::AwaitingUser && waiting.iter().any(|a| !is_approval(&a.step_id)) {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/runs/{}/gate\" class=\"gate\"><input name=\"reason\" placeholder=\"why (optional)\">\
             <button name=\"decision\" value=\"continue\">Continue</button><button name=\"decision\" value=\"skip\">Skip the task</button><button name=\"decision\" value=\"abort\">Abort</button></form>",
            esc(&id)
        );
    }
    body.push_str("</div>");
    for a in waiting.iter().filter(|a| is_approval(&a.step_id) && !run.state.is_terminal()) {
        body.push_str(&approval_form(&id, a));
    }
    if let Some(parent) = &run.parent_run_id {
        let _ = write!(body, "<p>Made from <a href=\"/runs/{0}\">{0}</a>.</p>", esc(parent));
    }
    // Restart from a step, or fork with other inputs: both make a new run; this one stays.
    if let Some(wf) = &wf {
        let options: String =
            wf.steps.iter().map(|s| format!("<option value=\"{0}\">{0}</option>", esc(&s.id))).collect();
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/runs/{}/restart\" class=\"restart\"><label>Restart from \
             <select name=\"from\">{options}</select></label> <button>Restart</button></form>",
            esc(&id)
        );
        let shown = crate::views::shown_inputs(&run, redactor);
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/runs/{}/fork\" class=\"fork\"><fieldset><legend>Fork with other inputs</legend>",
            esc(&id)
        );
        for decl in &wf.inputs {
            let value = if decl.secret {
                String::new()
            } else {
                shown
                    .get(&decl.name)
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .unwrap_or_default()
            };
            let _ = write!(
                body,
                "<label>{0} <input name=\"input.{0}\" value=\"{1}\" placeholder=\"{2}\"></label> ",
                esc(&decl.name),
                esc(&value),
                if decl.secret { "unchanged (secret)" } else { "unchanged" }
            );
        }
        let _ = write!(
            body,
            "<label>reuse the work before <select name=\"from\"><option value=\"\">(run everything again)</option>{options}</select></label> \
             <button>Fork</button></fieldset></form>"
        );
    }
    let inputs = crate::views::shown_inputs(&run, redactor);
    if !inputs.is_empty() {
        body.push_str("<h2>Inputs</h2><dl>");
        for (k, v) in &inputs {
            let _ = write!(body, "<dt>{}</dt><dd><code>{}</code></dd>", esc(k), esc(&v.to_string()));
        }
        body.push_str("</dl>");
    }
    body.push_str(&timeline(&run, &attempts));
    body.push_str(&model_calls(&id, &events));
    body.push_str(&jobs_section(&crate::views::micro_task_jobs(&attempts, st.engine.bus().artifacts().as_ref()).await));
    body.push_str("<h2>Attempts</h2>");
    for (step, list) in crate::views::by_step(&attempts) {
        let _ = write!(body, "<section class=\"step\"><h3>{}</h3>", esc(step));
        for a in list {
            let _ = write!(
                body,
                "<details><summary>attempt {} <span class=\"state {1}\">{1}</span>{2}</summary>",
                a.attempt,
                a.status.as_str(),
                a.error.as_deref().map(|e| format!(" — {}", esc(&redactor.redact(e).0))).unwrap_or_default()
            );
            let _ = write!(
                body,
                "<h4>input</h4>{}<pre>{}</pre>",
                refs(&id, &a.input),
                esc(&pretty(&redactor.redact_json(&a.input)))
            );
            if let Some(o) = &a.output {
                let _ = write!(
                    body,
                    "<h4>output</h4>{}<pre>{}</pre>",
                    refs(&id, o),
                    esc(&pretty(&redactor.redact_json(o)))
                );
            }
            body.push_str("</details>");
        }
        body.push_str("</section>");
    }
    body.push_str("<h2>Events</h2><table class=\"events\"><thead><tr><th>#</th><th>time</th><th>actor</th><th>type</th><th>payload</th></tr></thead><tbody>");
    for e in &events {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            e.seq,
            when(e.ts),
            esc(e.actor.as_str()),
            esc(&e.event_type),
            esc(&redactor.redact_json(&e.payload).to_string())
        );
    }
    body.push_str("</tbody></table>");
    let last = events.last().map_or(0, |e| e.seq);
    let watch = (!run.state.is_terminal()).then_some((run.run_id.as_str(), last));
    Ok(page(&format!("{} {}", run.workflow_id, run.run_id), watch, &body))
}

/// Links to the artifacts a record names at its top level (`prompt_ref`, `response_ref`,
/// `stdout_ref`, ...).
fn refs(run_id: &str, record: &Value) -> String {
    let Some(fields) = record.as_object() else { return String::new() };
    let links: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k.ends_with("_ref"))
        .filter_map(|(k, v)| {
            let hash = v.as_str().filter(|h| is_hash(h))?;
            Some(format!("<a href=\"/runs/{}/artifacts/{hash}\">{}</a>", esc(run_id), esc(k.trim_end_matches("_ref"))))
        })
        .collect();
    if links.is_empty() { String::new() } else { format!("<p class=\"refs\">{}</p>", links.join(" · ")) }
}

/// An artifact's name: `sha256:` and 64 lowercase hex digits.
fn is_hash(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Every model call of the run, from its `llm_inference` events: the step, the model, tokens,
/// latency, and its prompt and response.
fn model_calls(run_id: &str, events: &[steward_core::event::Event]) -> String {
    let calls: Vec<&steward_core::event::Event> = events.iter().filter(|e| e.event_type == "llm_inference").collect();
    if calls.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "<h2>Model calls</h2><table class=\"calls\"><thead><tr><th>#</th><th>step</th><th>model</th><th>tokens in/out</th>\
         <th>latency</th><th>prompt</th><th>response</th><th>note</th></tr></thead><tbody>",
    );
    let (mut tokens_in, mut tokens_out, mut latency) = (0, 0, 0);
    for e in calls {
        let p = &e.payload;
        let usage = &p["token_usage"];
        let (i, o, ms) = (
            usage["prompt_tokens"].as_i64().unwrap_or(0),
            usage["completion_tokens"].as_i64().unwrap_or(0),
            p["latency_ms"].as_i64().unwrap_or(0),
        );
        (tokens_in, tokens_out, latency) = (tokens_in + i, tokens_out + o, latency + ms);
        let link = |key: &str, label: &str| {
            p[key]
                .as_str()
                .filter(|h| is_hash(h))
                .map(|h| format!("<a href=\"/runs/{}/artifacts/{h}\">{label}</a>", esc(run_id)))
                .unwrap_or_default()
        };
        let mut note = Vec::new();
        if p["scripted"] == true {
            note.push("scripted".to_owned());
        }
        if p["ok"] == false {
            note.push("failed".to_owned());
        }
        if let Some(n) = p["note"].as_str() {
            note.push(n.to_owned());
        }
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{} <small>{}</small></td><td>{i}/{o}</td><td>{ms} ms</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.seq,
            esc(e.step_id.as_deref().unwrap_or("")),
            esc(p["model_id"].as_str().unwrap_or("")),
            esc(p["provider"].as_str().unwrap_or("")),
            link("prompt_hash", "prompt"),
            link("response_hash", "response"),
            esc(&note.join(", "))
        );
    }
    let _ = write!(
        s,
        "</tbody><tfoot><tr><td></td><td>total</td><td></td><td>{tokens_in}/{tokens_out}</td><td>{latency} ms</td><td colspan=\"3\"></td></tr></tfoot></table>"
    );
    s
}

/// An artifact a run's records name (a prompt, a response, a large output), as text through the
/// redactor; only hashes the run itself refers to are served.
async fn artifact<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path((id, hash)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    if !is_hash(&hash) {
        return Err(ApiError::bad_request("an artifact is named by its hash, `sha256:<64 hex digits>`").into());
    }
    let store = st.engine.store();
    let attempts = store.list_attempts(&id).await.map_err(ApiError::from)?;
    let events = store.list_events(&id, 0).await.map_err(ApiError::from)?;
    let named = attempts.iter().any(|a| {
        a.input.to_string().contains(&hash) || a.output.as_ref().is_some_and(|o| o.to_string().contains(&hash))
    }) || events.iter().any(|e| e.payload.to_string().contains(&hash));
    if !named {
        return Err(ApiError::not_found(format!("run `{id}` names no artifact `{hash}`")).into());
    }
    let bytes = st
        .engine
        .bus()
        .artifacts()
        .get(&hash)
        .await
        .map_err(|e| ApiError::not_found(format!("artifact `{hash}`: {e}")))?;
    let text = st.engine.bus().redactor().redact(&String::from_utf8_lossy(&bytes)).0;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")], text)
        .into_response())
}

/// The form of an approval that waits: its question, a field per form field (typed as
/// declared), who decides, a comment, and the two decisions. What it shows was redacted when the
/// attempt recorded it.
fn approval_form(run_id: &str, a: &Attempt) -> String {
    let q = a.output.as_ref().map(|o| o["approval"].clone()).unwrap_or_default();
    let mut s = format!(
        "<form method=\"post\" action=\"/runs/{}/steps/{}/decide\" class=\"approval\"><fieldset><legend>Approval <code>{}</code></legend><p class=\"prompt\">{}</p>",
        esc(run_id),
        esc(&a.step_id),
        esc(&a.step_id),
        esc(q["prompt"].as_str().unwrap_or(""))
    );
    if let Some(approvers) = q["approvers"].as_array().filter(|l| !l.is_empty()) {
        let names: Vec<&str> = approvers.iter().filter_map(|v| v.as_str()).collect();
        let _ = write!(s, "<p>Approvers: {}</p>", esc(&names.join(", ")));
    }
    for f in q["form"].as_array().into_iter().flatten() {
        let name = esc(f["name"].as_str().unwrap_or(""));
        let required = if f["required"] == true { " required" } else { "" };
        let default = match &f["default"] {
            Value::Null => String::new(),
            Value::String(d) => esc(d),
            other => esc(&other.to_string()),
        };
        let input = match f["type"].as_str() {
            Some("number") => {
                format!("<input type=\"number\" step=\"any\" name=\"field.{name}\" value=\"{default}\"{required}>")
            }
            Some("bool") => format!(
                "<select name=\"field.{name}\"{required}><option value=\"\"></option><option>true</option><option>false</option></select>"
            ),
            Some("json") => format!("<textarea name=\"field.{name}\"{required}>{default}</textarea>"),
            _ => format!("<input name=\"field.{name}\" value=\"{default}\"{required}>"),
        };
        let _ = write!(
            s,
            "<label>{name}{} {input}</label> ",
            f["description"].as_str().map(|d| format!(" <small>{}</small>", esc(d))).unwrap_or_default()
        );
    }
    s.push_str(
        "<label>your name <input name=\"decided_by\" autocomplete=\"username\"></label> \
         <label>comment <input name=\"comment\" placeholder=\"required to reject\"></label> \
         <button name=\"decision\" value=\"approve\">Approve</button> \
         <button name=\"decision\" value=\"reject\" formnovalidate>Reject</button></fieldset></form>",
    );
    s
}

/// Each micro-task job of the run: its tasks, and every iteration with its model, level,
/// tokens, time, validation and outcome.
fn jobs_section(jobs: &[crate::views::JobView]) -> String {
    let mut s = String::new();
    for j in jobs {
        let _ = write!(s, "<h2>Micro-task job <small>{}</small></h2>", esc(&j.job_id));
        let (Some(p), Some(m)) = (&j.progress, j.metrics()) else {
            s.push_str("<p>No progress recorded yet.</p>");
            continue;
        };
        let _ = write!(
            s,
            "<p>{} · {} tasks: {} completed, {} failed, {} skipped · {} iterations · {} prompt + {} completion tokens · {} ms</p>",
            esc(p.status.as_str()),
            m.total_mts,
            m.completed_mts,
            m.failed_mts,
            m.skipped_mts,
            m.total_iterations,
            m.total_tokens_prompt,
            m.total_tokens_completion,
            m.total_duration_ms
        );
        s.push_str("<table class=\"tasks\"><thead><tr><th>task</th><th>status</th><th>iteration</th><th>model (level)</th><th>tokens in/out</th><th>ms</th><th>claimed done</th><th>validation</th><th>outcome</th></tr></thead><tbody>");
        for t in &p.micro_tasks {
            let _ = write!(
                s,
                "<tr class=\"task\"><td colspan=\"9\"><strong>{}</strong> {} <span class=\"state {2}\">{2}</span></td></tr>",
                esc(&t.mt_id),
                esc(&t.name),
                t.status.as_str()
            );
            for it in &t.iterations {
                let outcome = serde_json::to_value(it.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let validation = match it.validation_passed {
                    Some(true) => "passed",
                    Some(false) => "failed",
                    None => "",
                };
                let _ = write!(
                    s,
                    "<tr><td></td><td></td><td>{}</td><td>{} ({})</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                    it.iteration,
                    esc(&it.model_id),
                    it.escalation_level,
                    it.tokens_prompt,
                    it.tokens_completion,
                    it.duration_ms,
                    if it.claimed_complete { "yes" } else { "no" },
                    validation,
                    esc(&outcome),
                    it.error_summary.as_deref().map(|e| format!(" — {}", esc(e))).unwrap_or_default()
                );
            }
        }
        s.push_str("</tbody></table>");
    }
    s
}

/// Workers as the runs they hold show them: who holds which running run, and when each last
/// renewed its lease. (An idle worker holds nothing, so it does not show.)
async fn workers_page<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
) -> Result<Html<String>, ConsoleError> {
    let runs = st
        .engine
        .store()
        .list_runs(RunFilter { state: Some(RunState::Running), limit: None, ..Default::default() })
        .await
        .map_err(ApiError::from)?;
    let mut by_owner: std::collections::BTreeMap<String, Vec<&Run>> = std::collections::BTreeMap::new();
    for r in &runs {
        by_owner.entry(r.owner.clone().unwrap_or_else(|| "(nobody: waiting for a worker)".into())).or_default().push(r);
    }
    let mut body =
        String::from("<h1>Workers</h1><p>Who drives which run now, and when each last renewed its lease.</p>");
    body.push_str("<table class=\"workers\"><thead><tr><th>worker</th><th>last renewal</th><th>runs held</th></tr></thead><tbody>");
    for (owner, held) in &by_owner {
        let last = held.iter().filter_map(|r| r.heartbeat_at).max();
        let links: Vec<String> =
            held.iter().map(|r| format!("<a href=\"/runs/{0}\">{0}</a>", esc(&r.run_id))).collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{} {}</td></tr>",
            esc(owner),
            last.map(when).unwrap_or_default(),
            held.len(),
            links.join(" ")
        );
    }
    if by_owner.is_empty() {
        body.push_str("<tr><td colspan=\"3\">no run is running</td></tr>");
    }
    body.push_str("</tbody></table>");
    Ok(page("Workers", None, &body))
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A waterfall of the run's attempts: one bar per attempt from its start to its end (or now),
/// on the run's own time axis, so retries, waits between them and backoff show as gaps.
fn timeline(run: &Run, attempts: &[Attempt]) -> String {
    let Some(first) = attempts.iter().map(|a| a.started_at).min() else {
        return String::new();
    };
    let end =
        attempts.iter().map(|a| a.finished_at.unwrap_or(run.updated_at)).chain([run.updated_at]).max().unwrap_or(first);
    let span = end.since(first).max(1) as f64;
    let mut s = String::from("<h2>Timeline</h2><div class=\"waterfall\">");
    for a in attempts {
        let start = a.started_at.since(first) as f64 / span * 100.0;
        let stop = a.finished_at.unwrap_or(run.updated_at);
        let width = (stop.since(a.started_at) as f64 / span * 100.0).max(0.5);
        let _ = write!(
            s,
            "<div class=\"lane\"><span class=\"label\">{} #{}</span><span class=\"track\"><span class=\"bar {}\" style=\"margin-left:{start:.2}%;width:{width:.2}%\" title=\"{} ms\"></span></span></div>",
            esc(&a.step_id),
            a.attempt,
            a.status.as_str(),
            stop.since(a.started_at)
        );
    }
    s.push_str("</div>");
    s
}

/// A post the console's own pages made: the browser must say it came from this server (every
/// request is already refused if it says another site, `access::fence`; a console form also
/// needs the positive word).
fn same_origin(headers: &HeaderMap) -> Result<(), ConsoleError> {
    match crate::access::site(headers) {
        crate::access::Site::Same => Ok(()),
        _ => Err(ConsoleError::CrossSite),
    }
}

async fn cancel<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Redirect, ConsoleError> {
    same_origin(&headers)?;
    st.engine.cancel(&id, CONSOLE_ACTOR).await.map_err(ApiError::from)?;
    Ok(Redirect::to(&format!("/runs/{id}")))
}

async fn resume<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Redirect, ConsoleError> {
    same_origin(&headers)?;
    st.engine.record_resume(&id, CONSOLE_ACTOR).await.map_err(ApiError::from)?;
    Ok(Redirect::to(&format!("/runs/{id}")))
}

#[derive(Debug, Deserialize)]
struct GateForm {
    decision: String,
    reason: Option<String>,
}

async fn gate<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<GateForm>,
) -> Result<Redirect, ConsoleError> {
    same_origin(&headers)?;
    let decision: HumanDecision = form.decision.parse().map_err(|e| ApiError::bad_request(format!("decision: {e}")))?;
    let reason = form.reason.filter(|r| !r.trim().is_empty());
    st.engine.record_gate(&id, CONSOLE_ACTOR, decision, reason.as_deref()).await.map_err(ApiError::from)?;
    Ok(Redirect::to(&format!("/runs/{id}")))
}

/// A decision from an approval form: `decision`, `decided_by`, `comment`, and `field.NAME` for
/// each form field (an empty one is left out, so its default or `required` applies).
async fn decide<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path((id, step)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Redirect, ConsoleError> {
    same_origin(&headers)?;
    let value = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim()).filter(|v| !v.is_empty());
    let decision = match value("decision") {
        Some("approve") => HumanDecision::Approve,
        Some("reject") => HumanDecision::Reject,
        _ => return Err(ApiError::bad_request("decision: approve or reject").into()),
    };
    let comment = value("comment").map(str::to_owned);
    let who = crate::api::decider(CONSOLE_ACTOR, value("decided_by"))?;
    let fields = form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("field.")?.to_owned(), v.clone())))
        .filter(|(_, v)| !v.trim().is_empty())
        .collect();
    let d = steward_runtime::Decision { decision, fields, comment };
    st.engine.record_approval(&id, &step, &who, &d).await.map_err(ApiError::from)?;
    Ok(Redirect::to(&format!("/runs/{id}")))
}

#[derive(Debug, Deserialize)]
struct RestartForm {
    from: String,
}

async fn restart<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<RestartForm>,
) -> Result<Redirect, ConsoleError> {
    same_origin(&headers)?;
    let run =
        st.engine.fork(&id, Some(&form.from), serde_json::Map::new(), CONSOLE_ACTOR).await.map_err(ApiError::from)?;
    Ok(Redirect::to(&format!("/runs/{}", run.run_id)))
}

/// A fork from the form: each `input.NAME` field that is not empty changes that input, read
/// by its declared type; `from`, if chosen, is the step before which work is reused.
async fn fork<S: Store + Clone + Send + Sync + 'static>(
    State(st): St<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Result<Redirect, ConsoleError> {
    same_origin(&headers)?;
    let store = st.engine.store();
    let parent = store.get_run(&id).await.map_err(ApiError::from)?;
    let source = store.get_definition(&parent.definition_hash).await.map_err(ApiError::from)?;
    let wf = steward_core::workflow::parse(&source)
        .map_err(|_| ApiError::invalid(format!("run `{id}`'s definition no longer parses")))?;
    let mut inputs = serde_json::Map::new();
    let mut errors = Vec::new();
    for (key, text) in form.iter().filter(|(_, v)| !v.trim().is_empty()) {
        let Some(name) = key.strip_prefix("input.") else { continue };
        match steward_core::inputs::named_from_text(&wf, name, text) {
            Ok(v) => {
                inputs.insert(name.to_owned(), v);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(format!("invalid inputs: {}", errors.join("; "))).into());
    }
    let from = form.get("from").map(String::as_str).filter(|f| !f.is_empty());
    let run = st.engine.fork(&id, from, inputs, CONSOLE_ACTOR).await.map_err(ApiError::from)?;
    Ok(Redirect::to(&format!("/runs/{}", run.run_id)))
}

/// A console page's error: the API's, shown as a page.
pub(crate) enum ConsoleError {
    Api(ApiError),
    CrossSite,
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> ConsoleError {
        ConsoleError::Api(e)
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ConsoleError::Api(e) => (e.status, e.message),
            ConsoleError::CrossSite => {
                (StatusCode::FORBIDDEN, "refused: this form was not posted from this console's own pages".to_owned())
            }
        };
        let body = format!("<h1>{}</h1><p>{}</p><p><a href=\"/\">Runs</a></p>", status.as_u16(), esc(&message));
        (status, page("Error", None, &body)).into_response()
    }
}

/// The sign-in page: off loopback a browser cannot send the API's bearer token, so a person
/// types it once and the console keeps a session cookie (`HttpOnly`, `SameSite=Strict`).
pub(crate) fn sign_in(access: crate::access::Access) -> Router {
    Router::new().route("/login", get(login_page).post(login)).with_state(access)
}

async fn login_page(State(access): State<crate::access::Access>) -> Response {
    if access.open() {
        return Redirect::to("/").into_response();
    }
    let body = "<h1>Sign in</h1><form method=\"post\" action=\"/login\"><label>API token \
                <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label> \
                <button>Sign in</button></form>";
    page("Sign in", None, body).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(access): State<crate::access::Access>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ConsoleError> {
    same_origin(&headers)?;
    let Some(session) = access.session_for(&form.token) else {
        let body = "<h1>Sign in</h1><p>That is not the token. <a href=\"/login\">Try again</a></p>";
        return Ok((StatusCode::UNAUTHORIZED, page("Sign in", None, body)).into_response());
    };
    let cookie = format!("{}={session}; HttpOnly; SameSite=Strict; Path=/", crate::access::SESSION_COOKIE);
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response())
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("console/console.css")).into_response()
}

async fn js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("console/console.js")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    /// A micro-task job's tasks and iterations, escaped.
    #[test]
    fn a_jobs_tasks_and_iterations_are_shown() {
        use steward_micro_task::decide::IterationOutcome;
        use steward_micro_task::state::*;
        let iteration = IterationRecord {
            iteration: 2,
            model_id: "qwen-7b".into(),
            lora_id: None,
            escalation_level: 1,
            started_at: "t".into(),
            completed_at: "t".into(),
            duration_ms: 1234,
            tokens_prompt: 300,
            tokens_completion: 40,
            claimed_complete: true,
            validation_passed: Some(false),
            validation_evidence_ref: None,
            outcome: IterationOutcome::Escalate,
            error_summary: Some("assert 1 < 2 <b>".into()),
            failure_category: None,
            context_snapshot_id: "c".into(),
        };
        let progress = ProgressArtifact {
            schema_version: PROGRESS_SCHEMA_VERSION.into(),
            wp_id: "WP".into(),
            job_id: "job-1".into(),
            created_at: "t".into(),
            updated_at: "t".into(),
            completed_at: None,
            status: ProgressStatus::InProgress,
            policy: steward_micro_task::policy::ExecutionPolicy::default(),
            current_state: CurrentState::default(),
            caps_reached: Vec::new(),
            micro_tasks: vec![MtProgress {
                mt_id: "MT-001".into(),
                name: "fix add".into(),
                status: MtStatus::InProgress,
                iterations: vec![iteration],
                final_iteration: None,
                final_model_level: None,
                escalation_record_ref: None,
                summary_ref: None,
                evidence_refs: vec![],
            }],
        };
        let job = crate::views::JobView {
            step_id: "fix".into(),
            job_id: "job-1".into(),
            state: "/data/job-1".into(),
            progress: Some(progress),
        };
        let html = jobs_section(&[job]);
        for part in
            ["<strong>MT-001</strong> fix add", "qwen-7b (1)", "300/40", "1234", "failed", "ESCALATE", "&lt;b&gt;"]
        {
            assert!(html.contains(part), "no {part} in {html}");
        }
        assert!(!html.contains("<b>"));
    }

    #[test]
    fn only_same_origin_posts_pass() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h).is_err(), "no origin at all");
        h.insert(header::HOST, "127.0.0.1:8420".parse().unwrap_or_else(|e| panic!("{e}")));
        h.insert(header::ORIGIN, "http://127.0.0.1:8420".parse().unwrap_or_else(|e| panic!("{e}")));
        assert!(same_origin(&h).is_ok());
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap_or_else(|e| panic!("{e}")));
        assert!(same_origin(&h).is_err());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap_or_else(|e| panic!("{e}")));
        assert!(same_origin(&h).is_err());
        h.insert("sec-fetch-site", "same-origin".parse().unwrap_or_else(|e| panic!("{e}")));
        assert!(same_origin(&h).is_ok());
    }
}
