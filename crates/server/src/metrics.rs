//! Prometheus metrics at `/metrics`. Counters follow the store's event log from the moment the
//! server started, so one server shows what every worker recorded (not only its own process);
//! runs by state are read from the store at each scrape.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steward_core::event::Event;
use steward_core::state::RunState;
use steward_runtime::Engine;
use steward_store::Store;
use tokio_util::sync::CancellationToken;

/// Upper bounds of the histograms' buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        render_histogram(out, name, labels, BUCKETS.iter().zip(self.counts), self.sum, self.count);
    }
}

/// One histogram's series: cumulative `buckets` (upper bound, count), then `+Inf`, sum and count.
fn render_histogram<B: std::fmt::Display>(
    out: &mut String,
    name: &str,
    labels: &str,
    buckets: impl Iterator<Item = (B, u64)>,
    sum: f64,
    count: u64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (le, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braces} {sum}");
    let _ = writeln!(out, "{name}_count{braces} {count}");
}

/// What the event log said since the server started.
#[derive(Debug, Default)]
struct Counts {
    events: u64,
    /// By step type.
    attempts_started: BTreeMap<String, u64>,
    /// Attempts that are not the first of their step's visit (a retry, or the attempt after a
    /// pause or a crash), by step type.
    attempts_retried: BTreeMap<String, u64>,
    /// By step type and how they ended.
    attempts_finished: BTreeMap<(String, String), u64>,
    /// By step type.
    attempt_duration: BTreeMap<String, Histogram>,
    /// The step visits of unfinished runs that have started an attempt: `(step, visit)` by run.
    visits: HashMap<String, HashSet<(String, u64)>>,
    claims: u64,
    releases: u64,
    recoveries: u64,
    claim_to_start: Histogram,
    /// Runs claimed whose first attempt since the claim has not started yet: when.
    claimed_at: HashMap<String, i64>,
    model_calls: BTreeMap<String, u64>,
    model_tokens: BTreeMap<(String, &'static str), u64>,
    model_latency: BTreeMap<String, Histogram>,
    denials: BTreeMap<String, u64>,
    decisions: BTreeMap<String, u64>,
}

impl Counts {
    /// Folds one event in; `step_type` is the type of the step it names, if it names one.
    fn observe(&mut self, e: &Event, step_type: &str) {
        self.events += 1;
        let p = &e.payload;
        let text = |k: &str| p[k].as_str().unwrap_or("unknown").to_owned();
        match e.event_type.as_str() {
            "step_attempt_started" => {
                *self.attempts_started.entry(step_type.to_owned()).or_default() += 1;
                let visit = (text("step_id"), p["visit"].as_u64().unwrap_or(1));
                if !self.visits.entry(e.workflow_run_id.clone()).or_default().insert(visit) {
                    *self.attempts_retried.entry(step_type.to_owned()).or_default() += 1;
                }
                if let Some(at) = self.claimed_at.remove(&e.workflow_run_id) {
                    self.claim_to_start.observe((e.ts.millis() - at).max(0) as f64 / 1000.0);
                }
            }
            "step_attempt_finished" => {
                *self.attempts_finished.entry((step_type.to_owned(), text("status"))).or_default() += 1;
                if let Some(ms) = p["duration_ms"].as_i64() {
                    self.attempt_duration.entry(step_type.to_owned()).or_default().observe(ms.max(0) as f64 / 1000.0);
                }
            }
            "run_claimed" => {
                self.claims += 1;
                self.claimed_at.insert(e.workflow_run_id.clone(), e.ts.millis());
            }
            "run_released" => {
                self.releases += 1;
                // Handed back before it started anything: no latency to measure for this claim.
                self.claimed_at.remove(&e.workflow_run_id);
            }
            "run_state_changed"
                if p["to_state"].as_str().is_some_and(|s| s.parse::<RunState>().is_ok_and(RunState::is_terminal)) =>
            {
                // A run that ends (cancelled, failed at its start) never starts the attempt a
                // claim waits for: forget the claim, or the map grows with every such run.
                self.claimed_at.remove(&e.workflow_run_id);
                self.visits.remove(&e.workflow_run_id);
            }
            "workflow_recovery" => self.recoveries += 1,
            "llm_inference" => {
                let model = e.model_id.clone().unwrap_or_else(|| text("model_id"));
                *self.model_calls.entry(model.clone()).or_default() += 1;
                for (kind, key) in [("prompt", "prompt_tokens"), ("completion", "completion_tokens")] {
                    let n = p["token_usage"][key].as_u64().unwrap_or(0);
                    *self.model_tokens.entry((model.clone(), kind)).or_default() += n;
                }
                if let Some(ms) = p["latency_ms"].as_i64() {
                    self.model_latency.entry(model).or_default().observe(ms.max(0) as f64 / 1000.0);
                }
            }
            "gate_outcome" if p["outcome"] == "deny" => *self.denials.entry(text("gate")).or_default() += 1,
            "human_decision" => *self.decisions.entry(text("decision")).or_default() += 1,
            _ => {}
        }
    }
}

/// The counters, fed by [`follow`].
#[derive(Debug, Default, Clone)]
pub(crate) struct Metrics(Arc<Mutex<Counts>>);

impl Metrics {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The step types of runs' steps, read from their definitions once per run (and parsed once per
/// definition).
#[derive(Default)]
struct StepTypes {
    runs: HashMap<String, Arc<HashMap<String, &'static str>>>,
    definitions: HashMap<String, Arc<HashMap<String, &'static str>>>,
}

impl StepTypes {
    /// The type of `step` of run `run_id` (`unknown` when the run or its definition cannot be
    /// read).
    async fn of<S: Store>(&mut self, store: &S, run_id: &str, step: &str) -> &'static str {
        if !self.runs.contains_key(run_id) {
            let types = match store.get_run(run_id).await {
                Ok(run) => match self.definitions.get(&run.definition_hash) {
                    Some(types) => types.clone(),
                    None => {
                        let types: HashMap<String, &'static str> =
                            match store.get_definition(&run.definition_hash).await {
                                Ok(source) => steward_core::workflow::parse(&source)
                                    .map(|wf| wf.steps.iter().map(|s| (s.id.clone(), s.kind.type_name())).collect())
                                    .unwrap_or_default(),
                                Err(_) => HashMap::new(),
                            };
                        let types = Arc::new(types);
                        self.definitions.insert(run.definition_hash, types.clone());
                        types
                    }
                },
                Err(_) => Arc::new(HashMap::new()),
            };
            // Bounded: a long-lived server forgets and reads again rather than grow.
            if self.runs.len() >= 10_000 {
                self.runs.clear();
            }
            if self.definitions.len() >= 1_000 {
                self.definitions.clear();
            }
            self.runs.insert(run_id.to_owned(), types);
        }
        self.runs.get(run_id).and_then(|t| t.get(step).copied()).unwrap_or("unknown")
    }
}

/// Folds every event recorded from now on into `metrics`, until `shutdown`.
pub(crate) async fn follow<S: Store + Clone + Send + Sync + 'static>(
    engine: Engine<S>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let store = engine.store().clone();
    let mut after = loop {
        match store.last_event_id().await {
            Ok(id) => break id,
            Err(_) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    };
    let mut updates = engine.subscribe();
    let mut step_types = StepTypes::default();
    loop {
        match store.list_events_since(after, 1000).await {
            Ok(page) if !page.is_empty() => {
                let mut types = Vec::with_capacity(page.len());
                for e in &page {
                    let named = matches!(e.event_type.as_str(), "step_attempt_started" | "step_attempt_finished");
                    types.push(match e.step_id.as_deref().filter(|_| named) {
                        Some(step) => step_types.of(&store, &e.workflow_run_id, step).await,
                        None => "",
                    });
                }
                let mut counts = metrics.counts();
                for (e, step_type) in page.iter().zip(types) {
                    counts.observe(e, step_type);
                }
                after = page.last().map_or(after, |e| e.id);
                continue;
            }
            // Nothing new, or the store is away for now: look again shortly.
            _ => {}
        }
        tokio::select! {
            _ = updates.recv() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// A label value as the exposition format wants it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The exposition text: runs by state read now, the counters, and this process's fenced
/// writes.
pub(crate) async fn render<S: Store + Clone + Send + Sync + 'static>(
    engine: &Engine<S>,
    metrics: &Metrics,
) -> Result<String, steward_store::Error> {
    let counts = engine.store().count_runs().await?;
    let mut out = String::new();
    header(&mut out, "steward_runs", "gauge", "Runs by state, as the store has them now.");
    for state in RunState::ALL {
        let n = counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "steward_runs{{state=\"{}\"}} {n}", state.as_str());
    }
    header(
        &mut out,
        "steward_fenced_writes_total",
        "counter",
        "Writes of this process the store refused: its lease was gone.",
    );
    let _ = writeln!(out, "steward_fenced_writes_total {}", engine.refused_writes());
    let c = metrics.counts();
    header(&mut out, "steward_events_total", "counter", "Events recorded since this server started.");
    let _ = writeln!(out, "steward_events_total {}", c.events);
    header(&mut out, "steward_step_attempts_started_total", "counter", "Step attempts started, by step type.");
    for (ty, n) in &c.attempts_started {
        let _ = writeln!(out, "steward_step_attempts_started_total{{step_type=\"{}\"}} {n}", label(ty));
    }
    header(
        &mut out,
        "steward_step_attempts_retried_total",
        "counter",
        "Step attempts that were not the first of their step's visit (a retry, or the attempt after a pause or a crash), by step type.",
    );
    for (ty, n) in &c.attempts_retried {
        let _ = writeln!(out, "steward_step_attempts_retried_total{{step_type=\"{}\"}} {n}", label(ty));
    }
    header(&mut out, "steward_step_attempts_finished_total", "counter", "Step attempts ended, by step type and how.");
    for ((ty, status), n) in &c.attempts_finished {
        let _ = writeln!(
            out,
            "steward_step_attempts_finished_total{{step_type=\"{}\",status=\"{}\"}} {n}",
            label(ty),
            label(status)
        );
    }
    header(
        &mut out,
        "steward_step_attempt_duration_seconds",
        "histogram",
        "How long step attempts took, by step type.",
    );
    for (ty, h) in &c.attempt_duration {
        h.render(&mut out, "steward_step_attempt_duration_seconds", &format!("step_type=\"{}\"", label(ty)));
    }
    if let Some(stats) = engine.store().commit_stats() {
        render_commits(&mut out, &stats);
    }
    header(&mut out, "steward_lease_claims_total", "counter", "Runs claimed by a worker.");
    let _ = writeln!(out, "steward_lease_claims_total {}", c.claims);
    header(&mut out, "steward_lease_releases_total", "counter", "Runs handed back (a drain, a retry's backoff).");
    let _ = writeln!(out, "steward_lease_releases_total {}", c.releases);
    header(
        &mut out,
        "steward_recoveries_total",
        "counter",
        "Runs recovered after their engine stopped (FR-EVT-WF-RECOVERY).",
    );
    let _ = writeln!(out, "steward_recoveries_total {}", c.recoveries);
    header(&mut out, "steward_claim_to_start_seconds", "histogram", "From a run's claim to its next attempt's start.");
    c.claim_to_start.render(&mut out, "steward_claim_to_start_seconds", "");
    header(&mut out, "steward_model_calls_total", "counter", "Model calls, by model.");
    for (model, n) in &c.model_calls {
        let _ = writeln!(out, "steward_model_calls_total{{model=\"{}\"}} {n}", label(model));
    }
    header(&mut out, "steward_model_tokens_total", "counter", "Tokens, by model and kind.");
    for ((model, kind), n) in &c.model_tokens {
        let _ = writeln!(out, "steward_model_tokens_total{{model=\"{}\",kind=\"{kind}\"}} {n}", label(model));
    }
    header(&mut out, "steward_model_latency_seconds", "histogram", "Model call latency, by model.");
    for (model, h) in &c.model_latency {
        h.render(&mut out, "steward_model_latency_seconds", &format!("model=\"{}\"", label(model)));
    }
    header(&mut out, "steward_tool_denials_total", "counter", "Operations the tool bus refused, by gate.");
    for (gate, n) in &c.denials {
        let _ = writeln!(out, "steward_tool_denials_total{{gate=\"{}\"}} {n}", label(gate));
    }
    header(&mut out, "steward_human_decisions_total", "counter", "People's decisions, by decision.");
    for (decision, n) in &c.decisions {
        let _ = writeln!(out, "steward_human_decisions_total{{decision=\"{}\"}} {n}", label(decision));
    }
    Ok(out)
}

/// This process's group commits: how many writes each carried and how long it took.
fn render_commits(out: &mut String, s: &steward_store::stats::CommitStats) {
    use steward_store::stats::{BATCH_SIZE_BUCKETS, COMMIT_SECONDS_BUCKETS};
    let name = "steward_store_commit_batch_size";
    header(out, name, "histogram", "Writes per group commit of this process's store writer.");
    render_histogram(out, name, "", BATCH_SIZE_BUCKETS.iter().zip(s.size_buckets), s.writes as f64, s.commits);
    let name = "steward_store_commit_duration_seconds";
    header(out, name, "histogram", "From a group commit's start to its durable end, in this process's store writer.");
    render_histogram(out, name, "", COMMIT_SECONDS_BUCKETS.iter().zip(s.seconds_buckets), s.seconds_sum, s.commits);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use steward_core::Timestamp;
    use steward_core::event::Actor;

    fn event(run: &str, event_type: &str, payload: serde_json::Value, ts: i64) -> Event {
        Event {
            id: 0,
            seq: 0,
            event_id: String::new(),
            ts: Timestamp(ts),
            event_type: event_type.into(),
            actor: Actor::System,
            actor_id: "w".into(),
            trace_id: String::new(),
            job_id: String::new(),
            workflow_run_id: run.into(),
            step_id: None,
            mt_id: None,
            model_id: None,
            capability_id: None,
            payload,
        }
    }

    /// A claim is timed to the next attempt's start, and forgotten when none will come.
    #[test]
    fn claims_are_timed_to_their_start_and_forgotten_when_none_comes() {
        let mut c = Counts::default();
        c.observe(&event("r1", "run_claimed", json!({}), 1_000), "");
        c.observe(&event("r1", "step_attempt_started", json!({}), 1_250), "shell");
        assert_eq!((c.claim_to_start.count, c.claim_to_start.sum), (1, 0.25));
        c.observe(&event("r2", "run_claimed", json!({}), 2_000), "");
        c.observe(&event("r2", "run_released", json!({}), 2_001), "");
        c.observe(&event("r3", "run_claimed", json!({}), 3_000), "");
        c.observe(&event("r3", "run_state_changed", json!({"to_state": "failed"}), 3_001), "");
        c.observe(&event("r4", "run_claimed", json!({}), 4_000), "");
        c.observe(&event("r4", "run_state_changed", json!({"to_state": "awaiting_user"}), 4_001), "");
        assert_eq!(c.claimed_at.keys().collect::<Vec<_>>(), ["r4"], "only a run that may still start is waited for");
    }
}
