//! Flight Recorder events: the envelope (design decision 11) and the typed payloads the engine writes.
//!
//! Events are built here as values and committed by the store in the same
//! transaction as the change they record, with a per-run sequence number
//! that has no gaps.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::{AttemptStatus, RunState, UnknownValue};
use crate::time::Timestamp;

/// Who caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A person, through the CLI or API.
    Human,
    /// A model or agent.
    Agent,
    /// Steward itself.
    System,
}

impl Actor {
    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Human => "human",
            Actor::Agent => "agent",
            Actor::System => "system",
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Actor {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(Actor::Human),
            "agent" => Ok(Actor::Agent),
            "system" => Ok(Actor::System),
            _ => Err(UnknownValue { what: "actor", value: s.to_owned() }),
        }
    }
}

/// The typed payloads of the events the engine writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Payload {
    /// `run_created`
    RunCreated {
        /// Workflow id.
        workflow_id: String,
        /// Workflow version.
        workflow_version: u32,
        /// SHA-256 of the definition source.
        definition_hash: String,
        /// Input names, sorted.
        input_keys: Vec<String>,
    },
    /// `run_state_changed`
    RunStateChanged {
        /// The state before.
        from_state: RunState,
        /// The state after.
        to_state: RunState,
        /// Why.
        reason: String,
    },
    /// `step_attempt_started`
    StepAttemptStarted {
        /// The step.
        step_id: String,
        /// Attempt number.
        attempt: u32,
        /// Visit number.
        visit: u32,
        /// `run:step:attempt`, passed on to what the step calls.
        idempotency_key: String,
    },
    /// `step_attempt_finished`
    StepAttemptFinished {
        /// The step.
        step_id: String,
        /// Attempt number.
        attempt: u32,
        /// How it ended.
        status: AttemptStatus,
        /// Why it failed, if it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// How long it ran.
        duration_ms: i64,
    },
    /// FR-EVT-WF-RECOVERY `workflow_recovery` (HSK-WF-003, DG-FR-09).
    WorkflowRecovery {
        /// The recovered run.
        workflow_run_id: String,
        /// Its job.
        job_id: String,
        /// Always `running`.
        from_state: RunState,
        /// Always `stalled`.
        to_state: RunState,
        /// Why.
        reason: String,
        /// The last heartbeat, RFC 3339, when the scan found the run.
        #[serde(skip_serializing_if = "Option::is_none")]
        last_heartbeat_ts: Option<String>,
        /// The threshold the heartbeat was older than, when that was the reason.
        #[serde(skip_serializing_if = "Option::is_none")]
        threshold_secs: Option<u64>,
        /// The owner that abandoned or released the run.
        #[serde(skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// The worker that took the run over, when a claim recovered it.
        #[serde(skip_serializing_if = "Option::is_none")]
        new_owner: Option<String>,
        /// How often the run has been recovered after its engine died, this time included.
        #[serde(skip_serializing_if = "Option::is_none")]
        recoveries: Option<u32>,
    },
    /// `gate_outcome`: one MEX gate's decision on a planned operation.
    GateOutcome {
        /// The operation.
        op_id: String,
        /// Its engine.
        engine_id: String,
        /// Its operation name.
        operation: String,
        /// `G-SCHEMA`, `G-CAP`, ...
        gate: String,
        /// `pass` or `deny`.
        outcome: String,
        /// The denial code.
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        /// The denial reason.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// `capability_action` (DG-CAP-05): one capability check, allow or deny.
    CapabilityAction {
        /// The capability checked.
        capability_id: String,
        /// Who asked for it.
        actor_id: String,
        /// The job it was for.
        job_id: String,
        /// `allow` or `deny`.
        decision_outcome: String,
    },
    /// FR-EVT-001 `terminal_command`: a command the tool bus ran, redacted.
    TerminalCommand {
        /// The terminal session.
        session_id: String,
        /// `HUMAN_DEV`, `AI_JOB` or `PLUGIN_TOOL`.
        session_type: String,
        /// Workspace-relative working directory.
        cwd: String,
        /// The command, secrets redacted.
        command: String,
        /// Exit code, -1 when killed.
        exit_code: i32,
        /// Run time.
        duration_ms: u64,
        /// Killed by its timeout.
        timed_out: bool,
        /// Killed by cancellation.
        cancelled: bool,
        /// Output bytes dropped past the limits.
        truncated_bytes: u64,
        /// Artifact holding the redacted stdout.
        stdout_ref: String,
        /// Artifact holding the redacted stderr.
        stderr_ref: String,
        /// Whether anything was redacted.
        redaction_applied: bool,
    },
    /// FR-EVT-006 `llm_inference`: one model call. Never the raw prompt.
    LlmInference {
        /// Correlates the job's events.
        trace_id: String,
        /// The model that answered.
        model_id: String,
        /// `openai`, `ollama`, `command`, `scripted`.
        provider: String,
        /// `{prompt_tokens, completion_tokens, total_tokens}`.
        token_usage: Value,
        /// `server`, `tokenizer:<encoding>` or `estimate`.
        usage_source: String,
        /// Wall-clock time of the call.
        latency_ms: u64,
        /// SHA-256 of the prompt (the prompt itself is an artifact).
        prompt_hash: String,
        /// SHA-256 of the raw response, when there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        response_hash: Option<String>,
        /// HTTP requests made (1 + retries).
        requests: u32,
        /// Whether the answer came from a script rather than a model.
        scripted: bool,
        /// Whether it produced an answer.
        ok: bool,
        /// Why not, or why the counts are only estimates.
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Any registered event given as JSON (micro-task events, human
    /// decisions, prune reports); the registry checks it on write.
    Recorded {
        /// The discriminator.
        #[serde(skip)]
        event_type: String,
        /// The payload.
        #[serde(flatten)]
        body: serde_json::Map<String, Value>,
    },
    /// FR-EVT-007 `tool_call`: one tool bus invocation.
    ToolCall {
        /// Correlates the job's events.
        trace_id: String,
        /// The operation id.
        tool_call_id: String,
        /// `mex.<engine>.<operation>`.
        tool_id: String,
        /// The engine's version.
        tool_version: String,
        /// Always `mex`.
        transport: String,
        /// `READ`, `WRITE` or `EXECUTE`.
        side_effect: String,
        /// `IDEMPOTENT`, `IDEMPOTENT_WITH_KEY` or `NON_IDEMPOTENT`.
        idempotency: String,
        /// The attempt's idempotency key.
        idempotency_key: String,
        /// Whether it succeeded.
        ok: bool,
        /// SHA-256 of the redacted arguments.
        args_hash: String,
        /// SHA-256 of the redacted result, when it ran.
        #[serde(skip_serializing_if = "Option::is_none")]
        result_hash: Option<String>,
        /// `{code, message}` when it did not succeed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<Value>,
        /// `{started_at, ended_at, duration_ms}`.
        timing: Value,
        /// The capabilities it requested.
        capability_ids: Vec<String>,
    },
    /// `sandbox_applied`: the operating-system sandbox one command ran under (issue 11), or
    /// why it ran without one.
    SandboxApplied {
        /// The operation id.
        op_id: String,
        /// `sandboxed` or `unsandboxed`.
        mode: String,
        /// Why it ran without a sandbox.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The Landlock ABI in force.
        #[serde(skip_serializing_if = "Option::is_none")]
        landlock_abi: Option<i64>,
        /// Where it could write.
        writable: Vec<String>,
        /// What stayed read-only beneath those.
        read_only: Vec<String>,
        /// What was covered (the data directory, credential stores).
        hidden: Vec<String>,
        /// What stayed readable inside a covered directory.
        exposed: Vec<String>,
        /// Whether it reached the network.
        network: bool,
        /// Secret-named variables of Steward's environment it did not get.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        withheld_env: Vec<String>,
    },
}

impl Payload {
    /// A registry-typed event from its discriminator and JSON payload.
    pub fn recorded(event_type: &str, body: Value) -> Payload {
        let body = match body {
            Value::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        Payload::Recorded { event_type: event_type.to_owned(), body }
    }

    /// The `event_type` discriminator.
    pub fn event_type(&self) -> &str {
        match self {
            Payload::Recorded { event_type, .. } => event_type,
            Payload::RunCreated { .. } => "run_created",
            Payload::RunStateChanged { .. } => "run_state_changed",
            Payload::StepAttemptStarted { .. } => "step_attempt_started",
            Payload::StepAttemptFinished { .. } => "step_attempt_finished",
            Payload::WorkflowRecovery { .. } => "workflow_recovery",
            Payload::GateOutcome { .. } => "gate_outcome",
            Payload::CapabilityAction { .. } => "capability_action",
            Payload::TerminalCommand { .. } => "terminal_command",
            Payload::ToolCall { .. } => "tool_call",
            Payload::SandboxApplied { .. } => "sandbox_applied",
            Payload::LlmInference { .. } => "llm_inference",
        }
    }

    /// The model the event concerns, for the envelope.
    pub fn model_id(&self) -> Option<&str> {
        match self {
            Payload::LlmInference { model_id, .. } => Some(model_id),
            other => other.body_str("model_id"),
        }
    }

    /// The capability the event concerns, for the envelope.
    pub fn capability_id(&self) -> Option<&str> {
        match self {
            Payload::CapabilityAction { capability_id, .. } => Some(capability_id),
            other => other.body_str("capability_id"),
        }
    }

    /// The micro-task the event concerns, for the envelope.
    pub fn mt_id(&self) -> Option<&str> {
        self.body_str("mt_id")
    }

    /// A string field of a registry-typed payload.
    fn body_str(&self, key: &str) -> Option<&str> {
        match self {
            Payload::Recorded { body, .. } => body.get(key).and_then(Value::as_str),
            _ => None,
        }
    }

    /// The step the event concerns, if any.
    pub fn step_id(&self) -> Option<&str> {
        match self {
            Payload::StepAttemptStarted { step_id, .. } | Payload::StepAttemptFinished { step_id, .. } => Some(step_id),
            other => other.body_str("step_id"),
        }
    }

    /// The payload as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// An event to record with a write, beside the ones the write implies.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Who caused it.
    pub actor: Actor,
    /// Which human, agent or system component.
    pub actor_id: String,
    /// The step it concerns, if any.
    pub step_id: Option<String>,
    /// What happened.
    pub payload: Payload,
}

/// A stored event with its full envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Store-wide order (increasing, not necessarily gapless across runs).
    pub id: i64,
    /// Per-run sequence: 1, 2, 3, ... without gaps.
    pub seq: i64,
    /// UUID.
    pub event_id: String,
    /// When it happened.
    pub ts: Timestamp,
    /// The discriminator.
    pub event_type: String,
    /// Who caused it.
    pub actor: Actor,
    /// Which one.
    pub actor_id: String,
    /// Correlates everything the run's job did.
    pub trace_id: String,
    /// The job.
    pub job_id: String,
    /// The run.
    pub workflow_run_id: String,
    /// The step, if any.
    pub step_id: Option<String>,
    /// The micro-task, if any.
    pub mt_id: Option<String>,
    /// The model, if any.
    pub model_id: Option<String>,
    /// The capability, if any.
    pub capability_id: Option<String>,
    /// The typed payload as JSON.
    pub payload: Value,
}

impl Event {
    /// The envelope as one JSON object, `ts` in RFC 3339.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "seq": self.seq,
            "event_id": self.event_id,
            "ts": self.ts.to_rfc3339(),
            "event_type": self.event_type,
            "actor": self.actor,
            "actor_id": self.actor_id,
            "trace_id": self.trace_id,
            "job_id": self.job_id,
            "workflow_run_id": self.workflow_run_id,
            "step_id": self.step_id,
            "mt_id": self.mt_id,
            "model_id": self.model_id,
            "capability_id": self.capability_id,
            "payload": self.payload,
        })
    }
}
