//! The event registry: every event type the Flight Recorder accepts, with its payload schema.
//!
//! One table, checked on every write (DG-FR-05): an unknown `event_type`, a
//! missing required field, a field of the wrong type, a value outside its
//! enumeration, or the wrong actor is refused with `HSK-400-INVALID-EVENT`,
//! and the write that carried it is not made. The engine's own events are
//! typed [`crate::event::Payload`] variants and pass through the same check,
//! so the table and the code cannot drift apart unnoticed (a test round-trips
//! every type).

use serde_json::Value;

use crate::event::Actor;

/// The type of one payload field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A string.
    Str,
    /// A whole number (signed or not).
    Int,
    /// Any number.
    Number,
    /// true or false.
    Bool,
    /// Any JSON object.
    Object,
    /// An object with these fields.
    Shape(&'static [Field]),
    /// Any JSON array.
    Array,
    /// An array of strings.
    StrArray,
    /// One of these strings.
    OneOf(&'static [&'static str]),
}

/// One payload field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
    /// Whether it must be present (and not null).
    pub required: bool,
}

const fn req(name: &'static str, ty: FieldType) -> Field {
    Field { name, ty, required: true }
}

const fn opt(name: &'static str, ty: FieldType) -> Field {
    Field { name, ty, required: false }
}

/// Event families: retention is configured per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Run and attempt lifecycle, recovery.
    Workflow,
    /// Capability and gate decisions.
    Governance,
    /// Commands and tool calls.
    Tool,
    /// Model calls.
    Model,
    /// Human decisions.
    Human,
    /// Micro-task executor events.
    MicroTask,
    /// Steward's own housekeeping (garbage collection reports).
    Meta,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 7] = [
        Family::Workflow,
        Family::Governance,
        Family::Tool,
        Family::Model,
        Family::Human,
        Family::MicroTask,
        Family::Meta,
    ];

    /// The name used in configuration (`[retention] model_days = 7`).
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Workflow => "workflow",
            Family::Governance => "governance",
            Family::Tool => "tool",
            Family::Model => "model",
            Family::Human => "human",
            Family::MicroTask => "micro_task",
            Family::Meta => "meta",
        }
    }
}

/// One registered event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpec {
    /// The `event_type` discriminator.
    pub event_type: &'static str,
    /// The catalogue id (`FR-EVT-001`, `FR-EVT-MT-003`, ...).
    pub id: &'static str,
    /// Its family.
    pub family: Family,
    /// If set, the only actor allowed to record it.
    pub actor: Option<Actor>,
    /// Its payload.
    pub fields: &'static [Field],
}

use FieldType::*;

const RUN_STATES: &[&str] = &[
    "queued",
    "running",
    "stalled",
    "awaiting_user",
    "completed",
    "completed_with_issues",
    "failed",
    "cancelled",
    "poisoned",
];
const ATTEMPT_STATES: &[&str] =
    &["running", "completed", "failed", "timed_out", "cancelled", "interrupted", "awaiting_user", "poisoned"];
const MT_STATUS: &[&str] = &["SUCCESS", "RETRY", "ESCALATE", "BLOCKED", "SKIPPED"];

const MT_MODEL: &[Field] = &[
    req("base", Str),
    opt("lora", Str),
    opt("lora_version", Str),
    opt("quantization", Str),
    req("context_window", Int),
];
const MT_EXECUTION: &[Field] =
    &[req("tokens_prompt", Int), req("tokens_completion", Int), req("duration_ms", Int), req("escalation_level", Int)];
const MT_OUTCOME: &[Field] = &[
    req("claimed_complete", Bool),
    opt("validation_passed", Bool),
    req("status", OneOf(MT_STATUS)),
    opt("failure_category", Str),
    opt("error_summary", Str),
];

const fn spec(event_type: &'static str, id: &'static str, family: Family, fields: &'static [Field]) -> EventSpec {
    EventSpec { event_type, id, family, actor: None, fields }
}

/// The fields of every FR-EVT-MODEL event: which job and task moved between which models.
/// The spellings of `steward_micro_task::caps::Cap` (its tests keep them equal).
const CAPS: &[&str] = &[
    "iteration_tokens",
    "task_tokens_warning",
    "task_tokens",
    "max_total_tokens",
    "max_total_iterations",
    "max_duration",
    "poison_duration",
];

const MODEL_SWAP: &[Field] = &[
    req("wp_id", Str),
    opt("mt_id", Str),
    req("from_model", Str),
    req("to_model", Str),
    req("from_level", Int),
    req("to_level", Int),
    opt("reason", Str),
];

/// Every event type Steward records.
pub const REGISTRY: &[EventSpec] = &[
    // Workflow lifecycle.
    spec(
        "run_created",
        "FR-EVT-WF-RUN",
        Family::Workflow,
        &[
            req("workflow_id", Str),
            req("workflow_version", Int),
            req("definition_hash", Str),
            req("input_keys", StrArray),
        ],
    ),
    spec(
        "run_state_changed",
        "FR-EVT-WF-STATE",
        Family::Workflow,
        &[req("from_state", OneOf(RUN_STATES)), req("to_state", OneOf(RUN_STATES)), req("reason", Str)],
    ),
    spec(
        "step_attempt_started",
        "FR-EVT-WF-ATTEMPT",
        Family::Workflow,
        &[req("step_id", Str), req("attempt", Int), req("visit", Int), req("idempotency_key", Str)],
    ),
    // A restart or fork takes a completed attempt of its parent as its own, without running it.
    spec(
        "step_attempt_reused",
        "FR-EVT-WF-ATTEMPT",
        Family::Workflow,
        &[req("step_id", Str), req("attempt", Int), req("visit", Int), req("from", Str), req("parent_run_id", Str)],
    ),
    spec(
        "step_attempt_finished",
        "FR-EVT-WF-ATTEMPT",
        Family::Workflow,
        &[
            req("step_id", Str),
            req("attempt", Int),
            req("status", OneOf(ATTEMPT_STATES)),
            opt("error", Str),
            req("duration_ms", Int),
        ],
    ),
    EventSpec {
        event_type: "workflow_recovery",
        id: "FR-EVT-WF-RECOVERY",
        family: Family::Workflow,
        actor: Some(Actor::System),
        fields: &[
            req("workflow_run_id", Str),
            req("job_id", Str),
            // A stalled run (the recovery scan, or an engine releasing its run on shutdown) ...
            opt("from_state", OneOf(&["running"])),
            opt("to_state", OneOf(&["stalled"])),
            req("reason", Str),
            opt("last_heartbeat_ts", Str),
            opt("threshold_secs", Int),
            opt("owner", Str),
            opt("new_owner", Str),
            opt("recoveries", Int),
            // ... or a micro-task ledger recovered at start-up (§2.6.6.8.11.3).
            opt("wp_id", Str),
            opt("resume_point", Str),
            opt("steps_recovered", StrArray),
            opt("steps_to_retry", StrArray),
        ],
    },
    // Leases (issue 12): a worker claimed a run, raising its epoch (the fencing token), or gave
    // a held run back for another worker to claim.
    EventSpec {
        event_type: "run_claimed",
        id: "FR-EVT-WF-LEASE",
        family: Family::Workflow,
        actor: Some(Actor::System),
        fields: &[
            req("owner", Str),
            req("epoch", Int),
            req("lease_ms", Int),
            req("from_state", OneOf(&["queued", "running", "stalled", "awaiting_user"])),
            opt("previous_owner", Str),
        ],
    },
    EventSpec {
        event_type: "run_released",
        id: "FR-EVT-WF-LEASE",
        family: Family::Workflow,
        actor: Some(Actor::System),
        fields: &[req("owner", Str), req("epoch", Int), req("ready_in_ms", Int), req("reason", Str)],
    },
    // A command's process group, recorded before the command may run (so recovery can find
    // it), and killed when its engine died and the attempt is about to be retried.
    spec(
        "attempt_process_started",
        "FR-EVT-WF-PROCESS",
        Family::Workflow,
        &[req("step_id", Str), req("attempt", Int), req("pid", Int), req("start_ticks", Int), req("host", Str)],
    ),
    EventSpec {
        event_type: "attempt_process_reaped",
        id: "FR-EVT-WF-ORPHAN",
        family: Family::Workflow,
        actor: Some(Actor::System),
        fields: &[
            req("step_id", Str),
            req("attempt", Int),
            req("pid", Int),
            req("host", Str),
            req("signal", OneOf(&["SIGTERM", "SIGKILL"])),
            req("processes", Int),
            req("reason", Str),
        ],
    },
    // ... or could not be checked, because it ran on another machine (issue 12).
    EventSpec {
        event_type: "attempt_process_unreachable",
        id: "FR-EVT-WF-ORPHAN",
        family: Family::Workflow,
        actor: Some(Actor::System),
        fields: &[req("step_id", Str), req("attempt", Int), req("pid", Int), req("host", Str), req("reason", Str)],
    },
    // Governance.
    spec(
        "capability_action",
        "FR-EVT-CAP",
        Family::Governance,
        &[
            req("capability_id", Str),
            req("actor_id", Str),
            req("job_id", Str),
            req("decision_outcome", OneOf(&["allow", "deny"])),
        ],
    ),
    spec(
        "gate_outcome",
        "FR-EVT-GATE",
        Family::Governance,
        &[
            req("op_id", Str),
            req("engine_id", Str),
            req("operation", Str),
            req("gate", OneOf(&["G-SCHEMA", "G-CAP", "G-INTEGRITY", "G-BUDGET", "G-PROVENANCE", "G-DET"])),
            req("outcome", OneOf(&["pass", "deny"])),
            opt("code", Str),
            opt("reason", Str),
        ],
    ),
    // Tools.
    spec(
        "terminal_command",
        "FR-EVT-001",
        Family::Tool,
        &[
            req("session_id", Str),
            req("session_type", OneOf(&["HUMAN_DEV", "AI_JOB", "PLUGIN_TOOL"])),
            req("cwd", Str),
            req("command", Str),
            req("exit_code", Int),
            req("duration_ms", Int),
            req("timed_out", Bool),
            req("cancelled", Bool),
            req("truncated_bytes", Int),
            req("stdout_ref", Str),
            req("stderr_ref", Str),
            req("redaction_applied", Bool),
        ],
    ),
    spec(
        "tool_call",
        "FR-EVT-007",
        Family::Tool,
        &[
            req("trace_id", Str),
            req("tool_call_id", Str),
            req("tool_id", Str),
            req("tool_version", Str),
            req("transport", OneOf(&["local", "mcp", "mex", "stage_bridge", "other"])),
            req("side_effect", OneOf(&["READ", "WRITE", "EXECUTE"])),
            req("idempotency", OneOf(&["IDEMPOTENT", "IDEMPOTENT_WITH_KEY", "NON_IDEMPOTENT"])),
            opt("idempotency_key", Str),
            req("ok", Bool),
            req("args_hash", Str),
            opt("result_hash", Str),
            opt("error", Object),
            req("timing", Shape(&[req("started_at", Str), req("ended_at", Str), req("duration_ms", Int)])),
            req("capability_ids", StrArray),
        ],
    ),
    spec(
        "sandbox_applied",
        "FR-EVT-SANDBOX",
        Family::Governance,
        &[
            req("op_id", Str),
            req("mode", OneOf(&["sandboxed", "unsandboxed"])),
            opt("reason", Str),
            opt("landlock_abi", Int),
            req("writable", StrArray),
            req("read_only", StrArray),
            req("hidden", StrArray),
            req("exposed", StrArray),
            req("network", Bool),
            opt("withheld_env", StrArray),
        ],
    ),
    // Model switches (DG-MT-09): a micro-task job moving to another model. Each level is its
    // own endpoint and model, so nothing is loaded: a switch is requested and completed at once,
    // and a model that cannot answer shows in the next call's `llm_inference`. `failed`,
    // `timeout` and `rollback` are registered for the catalogue and not emitted.
    spec("model_swap_requested", "FR-EVT-MODEL-001", Family::Model, MODEL_SWAP),
    spec("model_swap_completed", "FR-EVT-MODEL-002", Family::Model, MODEL_SWAP),
    spec("model_swap_failed", "FR-EVT-MODEL-003", Family::Model, MODEL_SWAP),
    spec("model_swap_timeout", "FR-EVT-MODEL-004", Family::Model, MODEL_SWAP),
    spec("model_swap_rollback", "FR-EVT-MODEL-005", Family::Model, MODEL_SWAP),
    // Models (DG-FR-07: trace_id and model_id are required).
    spec(
        "llm_inference",
        "FR-EVT-006",
        Family::Model,
        &[
            req("trace_id", Str),
            req("model_id", Str),
            req("provider", Str),
            req(
                "token_usage",
                Shape(&[req("prompt_tokens", Int), req("completion_tokens", Int), req("total_tokens", Int)]),
            ),
            req("usage_source", Str),
            req("latency_ms", Int),
            req("prompt_hash", Str),
            opt("response_hash", Str),
            req("requests", Int),
            req("scripted", Bool),
            req("ok", Bool),
            opt("note", Str),
        ],
    ),
    // Humans.
    EventSpec {
        event_type: "human_decision",
        id: "FR-EVT-GOV-HUMAN",
        family: Family::Human,
        actor: Some(Actor::Human),
        fields: &[
            req("decision", OneOf(&["continue", "abort", "skip", "approve", "reject", "cancel", "resume"])),
            opt("gate", Str),
            opt("reason", Str),
            // Who decided: the operating-system user for the CLI.
            opt("decided_by", Str),
            // The attempt that waited for the answer.
            opt("step_id", Str),
            opt("attempt", Int),
            opt("consent_receipt", Str),
            // An approval's form as the person filled it in.
            opt("fields", Object),
        ],
    },
    // Housekeeping (HSK-GC-003/004).
    EventSpec {
        event_type: "prune_report",
        id: "FR-EVT-META-GC",
        family: Family::Meta,
        actor: Some(Actor::System),
        fields: &[
            req("dry_run", Bool),
            req("items_scanned", Int),
            req("items_pruned", Int),
            req("items_spared", Int),
            req("bytes_freed", Int),
            req("cutoffs", Object),
        ],
    },
    // Micro-task executor (§3.18, FR-EVT-MT-001..017).
    spec(
        "micro_task_loop_started",
        "FR-EVT-MT-001",
        Family::MicroTask,
        &[
            req("wp_id", Str),
            req("total_mts", Int),
            req("execution_policy", Object),
            req("mt_ids", StrArray),
            req("execution_waves", Array),
        ],
    ),
    spec(
        "micro_task_iteration_started",
        "FR-EVT-MT-002",
        Family::MicroTask,
        &[req("wp_id", Str), req("mt_id", Str), req("iteration", Int), opt("step_id", Str), opt("model_id", Str)],
    ),
    spec(
        "micro_task_iteration_complete",
        "FR-EVT-MT-003",
        Family::MicroTask,
        &[
            req("wp_id", Str),
            req("mt_id", Str),
            req("iteration", Int),
            req("model", Shape(MT_MODEL)),
            req("execution", Shape(MT_EXECUTION)),
            req("outcome", Shape(MT_OUTCOME)),
            req("context_snapshot_id", Str),
            opt("evidence_artifact_ref", Str),
            opt("decision", OneOf(&["complete", "retry", "escalate", "skip", "abort"])),
        ],
    ),
    spec("micro_task_complete", "FR-EVT-MT-004", Family::MicroTask, &[req("wp_id", Str), req("mt_id", Str)]),
    spec(
        "micro_task_escalated",
        "FR-EVT-MT-005",
        Family::MicroTask,
        &[
            req("wp_id", Str),
            req("mt_id", Str),
            req("from_model", Str),
            opt("from_lora", Str),
            req("from_level", Int),
            req("to_model", Str),
            opt("to_lora", Str),
            req("to_level", Int),
            req("reason", Str),
            req("failure_category", Str),
            req("iterations_at_previous_level", Int),
            req("escalation_record_ref", Object),
        ],
    ),
    spec(
        "micro_task_hard_gate",
        "FR-EVT-MT-006",
        Family::MicroTask,
        &[req("wp_id", Str), req("reason", Str), opt("mt_id", Str), opt("from_level", Int)],
    ),
    spec("micro_task_pause_requested", "FR-EVT-MT-007", Family::MicroTask, &[req("wp_id", Str), req("mt_id", Str)]),
    spec("micro_task_resumed", "FR-EVT-MT-008", Family::MicroTask, &[req("wp_id", Str), opt("mt_id", Str)]),
    spec(
        "micro_task_loop_completed",
        "FR-EVT-MT-009",
        Family::MicroTask,
        &[req("wp_id", Str), opt("status", OneOf(&["completed", "completed_with_issues"]))],
    ),
    spec("micro_task_loop_failed", "FR-EVT-MT-010", Family::MicroTask, &[req("wp_id", Str), opt("reason", Str)]),
    spec("micro_task_loop_cancelled", "FR-EVT-MT-011", Family::MicroTask, &[req("wp_id", Str)]),
    spec(
        "micro_task_validation",
        "FR-EVT-MT-012",
        Family::MicroTask,
        &[
            req("wp_id", Str),
            req("mt_id", Str),
            req("iteration", Int),
            req("passed", Bool),
            opt("evidence_artifact_ref", Str),
        ],
    ),
    spec(
        "micro_task_lora_selection",
        "FR-EVT-MT-013",
        Family::MicroTask,
        &[
            req("wp_id", Str),
            req("mt_id", Str),
            req("iteration", Int),
            req("model_id", Str),
            opt("lora_id", Str),
            opt("escalation_level", Int),
        ],
    ),
    spec(
        "micro_task_drop_back",
        "FR-EVT-MT-014",
        Family::MicroTask,
        &[req("wp_id", Str), req("from_level", Int), req("to_level", Int)],
    ),
    spec(
        "micro_task_distillation_candidate",
        "FR-EVT-MT-015",
        Family::MicroTask,
        &[req("wp_id", Str), req("mt_id", Str), req("candidate_ref", Object)],
    ),
    spec("micro_task_skipped", "FR-EVT-MT-016", Family::MicroTask, &[req("wp_id", Str), req("mt_id", Str)]),
    spec(
        "micro_task_blocked",
        "FR-EVT-MT-017",
        Family::MicroTask,
        &[req("wp_id", Str), req("mt_id", Str), req("reason", Str)],
    ),
    // Steward's own: §2.6.6.8.17 names the caps and what reaching them does, but no event.
    spec(
        "micro_task_cap_reached",
        "FR-EVT-MT-CAP",
        Family::MicroTask,
        &[
            req("wp_id", Str),
            req("mt_id", Str),
            req("cap", OneOf(CAPS)),
            req("used", Int),
            req("limit", Int),
            req("unit", OneOf(&["tokens", "iterations", "ms"])),
            req("effect", OneOf(&["recorded", "hard_gate", "poisoned"])),
            opt("iteration", Int),
        ],
    ),
    // §2.6.6.8.16 poison prevention: the job is unsafe to retry (DG-WF-12).
    spec("micro_task_loop_poisoned", "FR-EVT-MT-POISONED", Family::MicroTask, &[req("wp_id", Str), req("reason", Str)]),
];

/// A minimal valid payload for a type: every field present, with a plain value.
/// Used by the conformance suite (every type round-trips) and as documentation.
pub fn example(spec: &EventSpec) -> Value {
    fn value(ty: FieldType) -> Value {
        match ty {
            Str => Value::String("x".into()),
            Int => Value::from(1),
            Number => Value::from(1.5),
            Bool => Value::Bool(true),
            Object => Value::Object(serde_json::Map::new()),
            Array => Value::Array(Vec::new()),
            StrArray => Value::Array(vec![Value::String("a".into())]),
            OneOf(allowed) => Value::String(allowed.first().copied().unwrap_or_default().into()),
            Shape(fields) => object(fields),
        }
    }
    fn object(fields: &[Field]) -> Value {
        Value::Object(fields.iter().map(|f| (f.name.to_owned(), value(f.ty))).collect())
    }
    object(spec.fields)
}

/// The registered type with this discriminator.
pub fn spec_of(event_type: &str) -> Option<&'static EventSpec> {
    REGISTRY.iter().find(|s| s.event_type == event_type)
}

/// An event the registry refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HSK-400-INVALID-EVENT: Event shape violation: {0}")]
pub struct InvalidEvent(pub String);

fn check_fields(fields: &[Field], obj: &serde_json::Map<String, Value>, at: &str, problems: &mut Vec<String>) {
    for f in fields {
        let path = if at.is_empty() { f.name.to_owned() } else { format!("{at}.{}", f.name) };
        match obj.get(f.name) {
            None | Some(Value::Null) if f.required => problems.push(format!("missing `{path}`")),
            None | Some(Value::Null) => {}
            Some(v) => check_value(f.ty, v, &path, problems),
        }
    }
    for key in obj.keys() {
        if !fields.iter().any(|f| f.name == key) {
            let path = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
            problems.push(format!("unknown field `{path}`"));
        }
    }
}

fn check_value(ty: FieldType, v: &Value, path: &str, problems: &mut Vec<String>) {
    let ok = match ty {
        Str => v.is_string(),
        Int => v.is_i64() || v.is_u64(),
        Number => v.is_number(),
        Bool => v.is_boolean(),
        Object => v.is_object(),
        Array => v.is_array(),
        StrArray => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        OneOf(allowed) => v.as_str().is_some_and(|s| allowed.contains(&s)),
        Shape(fields) => {
            if let Some(obj) = v.as_object() {
                check_fields(fields, obj, path, problems);
                true
            } else {
                false
            }
        }
    };
    if !ok {
        let want = match ty {
            OneOf(allowed) => format!("one of {}", allowed.join(", ")),
            Str => "a string".into(),
            Int => "a whole number".into(),
            Number => "a number".into(),
            Bool => "true or false".into(),
            Object | Shape(_) => "an object".into(),
            Array => "a list".into(),
            StrArray => "a list of strings".into(),
        };
        problems.push(format!("`{path}` must be {want}, found {v}"));
    }
}

/// Checks an event against the registry (DG-FR-05, DG-MT-17).
pub fn validate(event_type: &str, actor: Actor, payload: &Value) -> Result<&'static EventSpec, InvalidEvent> {
    let spec = spec_of(event_type).ok_or_else(|| InvalidEvent(format!("unknown event type `{event_type}`")))?;
    if let Some(required) = spec.actor
        && required != actor
    {
        return Err(InvalidEvent(format!("`{event_type}` must be recorded by actor {required}, not {actor}")));
    }
    let Some(obj) = payload.as_object() else {
        return Err(InvalidEvent(format!("`{event_type}` payload must be a JSON object")));
    };
    let mut problems = Vec::new();
    check_fields(spec.fields, obj, "", &mut problems);
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(InvalidEvent(format!("`{event_type}` ({}): {}", spec.id, problems.join("; "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The registry spells exactly the states the state machines have.
    #[test]
    fn state_lists_match_the_state_machines() {
        let runs: Vec<&str> = crate::state::RunState::ALL.iter().map(|s| s.as_str()).collect();
        let attempts: Vec<&str> = crate::state::AttemptStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(RUN_STATES, runs.as_slice());
        assert_eq!(ATTEMPT_STATES, attempts.as_slice());
    }

    #[test]
    fn every_example_is_valid() {
        for spec in REGISTRY {
            let actor = spec.actor.unwrap_or(Actor::System);
            assert!(validate(spec.event_type, actor, &example(spec)).is_ok(), "{}", spec.event_type);
        }
    }

    #[test]
    fn types_are_unique_and_ids_cover_the_catalogue() {
        for (i, s) in REGISTRY.iter().enumerate() {
            assert!(REGISTRY[..i].iter().all(|o| o.event_type != s.event_type), "{} twice", s.event_type);
        }
        for n in 1..=17 {
            let id = format!("FR-EVT-MT-{n:03}");
            assert!(REGISTRY.iter().any(|s| s.id == id), "{id} missing");
        }
        for id in ["FR-EVT-001", "FR-EVT-006", "FR-EVT-007", "FR-EVT-WF-RECOVERY"] {
            assert!(REGISTRY.iter().any(|s| s.id == id), "{id} missing");
        }
    }

    /// DG-FR-05 / DG-MT-17: unknown types, missing or mistyped fields and wrong actors are refused.
    #[test]
    fn invalid_events_are_refused_with_the_code() {
        let e = validate("magic_happened", Actor::System, &json!({})).unwrap_err();
        assert_eq!(e.to_string(), "HSK-400-INVALID-EVENT: Event shape violation: unknown event type `magic_happened`");
        let e =
            validate("micro_task_validation", Actor::System, &json!({"wp_id": "w", "mt_id": "m", "iteration": "one"}))
                .unwrap_err();
        assert!(e.0.contains("missing `passed`") && e.0.contains("`iteration` must be a whole number"), "{e}");
        let mt3 = json!({
            "wp_id": "w", "mt_id": "MT-001", "iteration": 1,
            "model": {"base": "qwen", "context_window": 8192},
            "execution": {"tokens_prompt": 10, "tokens_completion": 5, "duration_ms": 7, "escalation_level": 0},
            "outcome": {"claimed_complete": true, "status": "SUCCESS"},
            "context_snapshot_id": "cs-1"
        });
        assert!(validate("micro_task_iteration_complete", Actor::Agent, &mt3).is_ok());
        let mut bad = mt3.clone();
        bad["outcome"]["status"] = json!("DONE");
        let e = validate("micro_task_iteration_complete", Actor::Agent, &bad).unwrap_err();
        assert!(e.0.contains("`outcome.status` must be one of SUCCESS, RETRY, ESCALATE, BLOCKED, SKIPPED"), "{e}");
        let e = validate("workflow_recovery", Actor::Human, &json!({})).unwrap_err();
        assert!(e.0.contains("must be recorded by actor system"), "{e}");
        let e = validate("human_decision", Actor::Human, &json!({"decision": "continue", "extra": 1})).unwrap_err();
        assert!(e.0.contains("unknown field `extra`"), "{e}");
    }
}
