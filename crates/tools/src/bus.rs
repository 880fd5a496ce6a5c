//! The tool bus: every operation passes the gates and the terminal guards, runs, and is recorded.
//!
//! [`ToolBus::check`] decides without running anything (`steward tools
//! check`, workflow preflight); [`ToolBus::execute`] decides, runs, captures
//! evidence as artifacts and returns the events to record. The bus never
//! touches the store: its caller commits the events with the attempt.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use steward_core::Timestamp;
use steward_core::capability::{self, CapabilityId};
use steward_core::event::Payload;
use steward_core::workflow::{Provider, StepKind, Workflow};

use steward_artifacts::{ArtifactStore, hash};

use crate::exec::{self, CommandSpec, Ending, ProcessRecorder};
use crate::gates::{self, Evaluation, Gate};
use crate::op::{
    ArtifactHandle, BudgetSpec, Determinism, EngineError, EngineResult, EngineStatus, EvidencePolicy, OutputSpec,
    POE_SCHEMA_VERSION, PlannedOperation, ProvenanceRecord,
};
use crate::redact::{self, Redactor};
use crate::registry::EngineRegistry;
use crate::sandbox::{Containment, Sandbox};
use crate::terminal::{self, Denial, SessionKind, TerminalPolicy};

/// Environment values longer than this travel as artifacts.
pub const ENV_INLINE_LIMIT: usize = 8 * 1024;

/// How an environment value names the artifact that holds it.
const ARTIFACT_PREFIX: &str = "artifact:";

/// Who is calling, and for what.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The job.
    pub job_id: String,
    /// Correlates the job's events.
    pub trace_id: String,
    /// The component or person asking.
    pub actor_id: String,
    /// Whether the actor is an AI (a job, a model) rather than a person.
    pub ai_actor: bool,
    /// The session the command runs in.
    pub session: SessionKind,
    /// Its id.
    pub session_id: String,
    /// The workflow whose run this is, for the operator's per-workflow grants.
    pub workflow_id: String,
    /// Commands run inside this directory.
    pub workspace_root: PathBuf,
    /// Passed on to the command as `STEWARD_IDEMPOTENCY_KEY`.
    pub idempotency_key: String,
}

/// Why an operation did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The gate (`G-CAP`, ...) or guard (`terminal`) that refused.
    pub by: String,
    /// Its code.
    pub code: String,
    /// Its reason.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "denied by {} ({}): {}", self.by, self.code, self.reason)
    }
}

/// The bus's decision on an operation, before anything runs.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The gates' outcomes.
    pub evaluation: Evaluation,
    /// The first refusal, gate or guard.
    pub refusal: Option<Refusal>,
    /// The resolved working directory, when the guards passed.
    pub cwd: Option<PathBuf>,
    /// Gate and capability events to record.
    pub events: Vec<Payload>,
}

/// What a command printed, redacted, with evidence.
#[derive(Debug, Clone)]
pub struct ProcessOutput {
    /// How it ended.
    pub ending: Ending,
    /// Standard output as text, for parsing only; never log this.
    pub raw_stdout: String,
    /// Standard output, redacted.
    pub stdout: String,
    /// Standard error, redacted.
    pub stderr: String,
    /// Bytes dropped past the limit, both streams.
    pub truncated_bytes: u64,
    /// Run time.
    pub duration: Duration,
}

/// The bus's answer after executing.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The engine result (status, evidence, provenance, errors).
    pub result: EngineResult,
    /// Events to record with the attempt, in order.
    pub events: Vec<Payload>,
    /// The refusal, when it did not run.
    pub refusal: Option<Refusal>,
    /// The process's output, when it ran.
    pub output: Option<ProcessOutput>,
    /// What redacted this record: the bus's redactor and the operation's secret-named
    /// variables. Whatever else the caller records of the operation (outputs read from the
    /// raw output) passes it too.
    pub redactor: Redactor,
}

/// The tool bus.
#[derive(Debug, Clone)]
pub struct ToolBus {
    registry: EngineRegistry,
    policy: TerminalPolicy,
    redactor: Redactor,
    artifacts: Arc<dyn ArtifactStore>,
    sandbox: Sandbox,
}

/// The code of a command refused because it could not be sandboxed.
pub const SANDBOX_UNAVAILABLE: &str = "HSK-TERM-SANDBOX";

/// The `sandbox_applied` event for one command.
fn sandbox_event(op_id: &str, containment: &Containment, withheld_env: &[String]) -> Payload {
    let paths = |p: &[PathBuf]| p.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
    match containment {
        Containment::Sandboxed { rules, applied, .. } => Payload::SandboxApplied {
            op_id: op_id.to_owned(),
            mode: "sandboxed".into(),
            reason: None,
            landlock_abi: Some(applied.landlock_abi),
            writable: paths(&rules.writable),
            read_only: paths(&rules.read_only),
            hidden: paths(&rules.hidden),
            exposed: paths(&rules.exposed),
            network: rules.network,
            withheld_env: withheld_env.to_vec(),
        },
        Containment::Unsandboxed { reason } | Containment::Refused { reason } => Payload::SandboxApplied {
            op_id: op_id.to_owned(),
            mode: "unsandboxed".into(),
            reason: Some(reason.clone()),
            landlock_abi: None,
            writable: Vec::new(),
            read_only: Vec::new(),
            hidden: Vec::new(),
            exposed: Vec::new(),
            network: true,
            withheld_env: withheld_env.to_vec(),
        },
    }
}

/// The result of an operation that did not run.
fn denied_result(op: &PlannedOperation, started_at: String, ended_at: String, error: EngineError) -> EngineResult {
    EngineResult {
        op_id: op.op_id.clone(),
        status: EngineStatus::Denied,
        started_at,
        ended_at,
        outputs: Vec::new(),
        evidence: Vec::new(),
        provenance: None,
        errors: vec![error],
        logs_ref: None,
    }
}

fn rfc3339_now() -> String {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp(i64::try_from(ms).unwrap_or(i64::MAX)).to_rfc3339()
}

impl ToolBus {
    /// A bus over this registry and policy, keeping evidence in `artifacts`, running commands
    /// in `sandbox`.
    ///
    /// Commands inherit this process's environment (TERM-API-004), so the values of its
    /// variables whose names say secret (`OPENAI_API_KEY`, `GITHUB_TOKEN`...) join the
    /// redactor's: a step that prints its environment leaks none of them into the record.
    pub fn new(
        registry: EngineRegistry,
        policy: TerminalPolicy,
        redactor: Redactor,
        artifacts: Arc<dyn ArtifactStore>,
        sandbox: Sandbox,
    ) -> ToolBus {
        let inherited = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        let redactor = redactor.with_env_secrets(inherited);
        ToolBus { registry, policy, redactor, artifacts, sandbox }
    }

    /// How commands are contained.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// `op` with the operator's grants for its profile and workflow added to what it requests,
    /// so that G-CAP checks and records them like any other capability.
    fn with_grants<'a>(&self, op: &'a PlannedOperation, ctx: &CallContext) -> std::borrow::Cow<'a, PlannedOperation> {
        let granted = self.sandbox.granted(op.capability_profile_id.as_deref(), &ctx.workflow_id);
        let missing: Vec<String> = granted.into_iter().filter(|g| !op.capabilities_requested.contains(g)).collect();
        if missing.is_empty() || op.engine_id != "engine.shell" {
            return std::borrow::Cow::Borrowed(op);
        }
        let mut op = op.clone();
        op.capabilities_requested.extend(missing);
        std::borrow::Cow::Owned(op)
    }

    /// This bus with another redactor: a run's, which also knows its secret inputs.
    pub fn with_redactor(&self, redactor: Redactor) -> ToolBus {
        ToolBus { redactor, ..self.clone() }
    }

    /// The redactor, for everything else that is logged.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The redactor for one operation: the bus's, plus the values of the variables the
    /// operation sets whose names say secret, so that they are hidden in its output too, not
    /// only in its recorded environment.
    fn call_redactor(&self, op: &PlannedOperation) -> Redactor {
        let Some(env) = op.params.get("env").and_then(Value::as_object) else { return self.redactor.clone() };
        self.redactor.clone().with_env_secrets(env.iter().filter_map(|(k, v)| Some((k.as_str(), v.as_str()?))))
    }

    /// The registry.
    pub fn registry(&self) -> &EngineRegistry {
        &self.registry
    }

    /// The terminal policy.
    pub fn policy(&self) -> &TerminalPolicy {
        &self.policy
    }

    /// The artifact store: evidence, large values, and whatever else the caller keeps there.
    pub fn artifacts(&self) -> &Arc<dyn ArtifactStore> {
        &self.artifacts
    }

    /// An `engine.shell`/`exec` operation for a command, as a shell step plans it.
    pub fn shell_op(
        &self,
        op_id: &str,
        command: &str,
        cwd: Option<&str>,
        env: &[(String, String)],
        timeout: Duration,
        profile: &str,
    ) -> PlannedOperation {
        let mut params = Map::new();
        params.insert("command".into(), json!(command));
        if let Some(cwd) = cwd {
            params.insert("cwd".into(), json!(cwd));
        }
        if !env.is_empty() {
            params.insert("env".into(), Value::Object(env.iter().map(|(k, v)| (k.clone(), json!(v))).collect()));
        }
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        params.insert("timeout_ms".into(), json!(timeout_ms));
        let output_bytes = self.policy.max_output_bytes as u64;
        PlannedOperation {
            schema_version: POE_SCHEMA_VERSION.into(),
            op_id: op_id.to_owned(),
            engine_id: "engine.shell".into(),
            engine_version_req: None,
            operation: "exec".into(),
            inputs: Vec::new(),
            params: Value::Object(params),
            capabilities_requested: capability::shell_capabilities(command).iter().map(ToString::to_string).collect(),
            capability_profile_id: Some(profile.to_owned()),
            human_consent_obtained: false,
            budget: BudgetSpec {
                wall_time_ms: Some(timeout_ms),
                output_bytes: Some(output_bytes),
                ..BudgetSpec::default()
            },
            determinism: Determinism::D1,
            evidence_policy: Some(EvidencePolicy { required: true, notes: Some("stdout and stderr, redacted".into()) }),
            output_spec: OutputSpec {
                expected_types: vec!["artifact.terminal_output".into()],
                max_bytes: Some(output_bytes),
            },
        }
    }

    /// Moves environment values larger than [`ENV_INLINE_LIMIT`] into artifacts
    /// (DG-MEX-03): the value becomes `artifact:<hash>`, the handle joins the
    /// operation's inputs, G-INTEGRITY verifies it, and execution reads it back.
    ///
    /// Artifacts are kept (on disk, or in the database every worker reaches) and go into debug
    /// bundles, so only a value the redactor leaves as it is moves: one holding a secret (or
    /// set in a variable whose name says secret) stays inline, to be handed to the command
    /// from memory, and is recorded redacted by [`ToolBus::recorded_op`].
    pub async fn externalize_large_env(&self, op: &mut PlannedOperation) -> steward_artifacts::Result<()> {
        let Some(env) = op.params.get_mut("env").and_then(Value::as_object_mut) else { return Ok(()) };
        for (name, value) in env.iter_mut() {
            let Some(text) = value.as_str().filter(|t| t.len() > ENV_INLINE_LIMIT) else { continue };
            if redact::is_secret_env_name(name) || self.redactor.redact(text).1 {
                continue;
            }
            let handle = ArtifactHandle::from(self.artifacts.put(text.as_bytes(), "text/plain; charset=utf-8").await?);
            *value = json!(format!("{ARTIFACT_PREFIX}{}", handle.hash));
            if !op.inputs.contains(&handle) {
                op.inputs.push(handle);
            }
        }
        Ok(())
    }

    /// An operation (as JSON, perhaps with fields of the caller's added) as it is recorded:
    /// redacted, with every environment value still larger than [`ENV_INLINE_LIMIT`] kept,
    /// redacted, as an artifact that the record references (DG-MEX-03, DG-FR-08: refs point to
    /// redacted payloads).
    pub async fn recorded_op(&self, op: &Value) -> steward_artifacts::Result<Value> {
        let mut recorded = self.redactor.redact_json(op);
        let env = recorded.get_mut("params").and_then(|p| p.get_mut("env")).and_then(Value::as_object_mut);
        for value in env.into_iter().flat_map(|e| e.values_mut()) {
            let Some(text) = value.as_str().filter(|t| t.len() > ENV_INLINE_LIMIT) else { continue };
            let handle = self.artifacts.put(text.as_bytes(), "text/plain; charset=utf-8").await?;
            *value = json!(format!("{ARTIFACT_PREFIX}{}", handle.hash));
        }
        Ok(recorded)
    }

    /// The environment of an operation, artifact references read back.
    async fn environment(&self, op: &PlannedOperation) -> Result<Vec<(String, String)>, String> {
        let Some(env) = op.params.get("env").and_then(Value::as_object) else { return Ok(Vec::new()) };
        let mut out = Vec::with_capacity(env.len());
        for (k, v) in env {
            let text = v.as_str().unwrap_or_default();
            match text.strip_prefix(ARTIFACT_PREFIX) {
                Some(hash) if op.inputs.iter().any(|a| a.hash == hash) => {
                    let bytes = self.artifacts.get(hash).await.map_err(|e| format!("input artifact {hash}: {e}"))?;
                    out.push((k.clone(), String::from_utf8_lossy(&bytes).into_owned()));
                }
                _ => out.push((k.clone(), text.to_owned())),
            }
        }
        Ok(out)
    }

    /// The hashes of `op`'s input artifacts that are missing from the artifact store or no
    /// longer intact there.
    async fn unverified_inputs(&self, op: &PlannedOperation) -> Vec<String> {
        let mut bad = Vec::new();
        for a in &op.inputs {
            if !self.artifacts.verify(&a.into()).await {
                bad.push(a.hash.clone());
            }
        }
        bad
    }

    /// Gates, then terminal guards; nothing runs.
    ///
    /// Input artifacts are judged here by the form of their handles only: whether they are
    /// present and intact needs the artifact store, and [`ToolBus::execute`], which reads them,
    /// judges that with the same gate. (The operations checked without running, a command of
    /// `steward tools check` or a verify command of a work packet, carry none.)
    pub fn check(&self, op: &PlannedOperation, ctx: &CallContext) -> Checked {
        self.decide(op, ctx, &|_| true)
    }

    /// [`ToolBus::check`], with `artifact_ok` saying which input artifacts are intact.
    fn decide(
        &self,
        op: &PlannedOperation,
        ctx: &CallContext,
        artifact_ok: &dyn Fn(&ArtifactHandle) -> bool,
    ) -> Checked {
        let op = &*self.with_grants(op, ctx);
        let evaluation = gates::evaluate(op, &self.registry, artifact_ok);
        let mut events: Vec<Payload> = evaluation
            .outcomes
            .iter()
            .map(|o| Payload::GateOutcome {
                op_id: op.op_id.clone(),
                engine_id: op.engine_id.clone(),
                operation: op.operation.clone(),
                gate: o.gate.name().into(),
                outcome: if o.pass { "pass" } else { "deny" }.into(),
                code: o.code.clone(),
                reason: o.reason.clone(),
            })
            .collect();
        events.extend(evaluation.capabilities.iter().map(|d| self.capability_event(ctx, &d.capability_id, d.allowed)));
        let mut refusal = evaluation.denial().map(|d| Refusal {
            by: d.gate.name().into(),
            code: d.code.clone().unwrap_or_default(),
            reason: d.reason.clone().unwrap_or_default(),
        });
        let mut cwd = None;
        if refusal.is_none() && op.engine_id == "engine.shell" {
            match self.guard(op, ctx, &mut events) {
                Ok(dir) => cwd = Some(dir),
                Err(d) => refusal = Some(Refusal { by: "terminal".into(), code: d.code, reason: d.reason }),
            }
        }
        Checked { evaluation, refusal, cwd, events }
    }

    fn capability_event(&self, ctx: &CallContext, capability_id: &str, allowed: bool) -> Payload {
        Payload::CapabilityAction {
            capability_id: capability_id.to_owned(),
            actor_id: ctx.actor_id.clone(),
            job_id: ctx.job_id.clone(),
            decision_outcome: if allowed { "allow" } else { "deny" }.into(),
        }
    }

    /// Terminal guards for a shell command: session isolation, command policy, cwd containment.
    fn guard(&self, op: &PlannedOperation, ctx: &CallContext, events: &mut Vec<Payload>) -> Result<PathBuf, Denial> {
        if ctx.ai_actor && ctx.session == SessionKind::HumanDev {
            let granted = op
                .capability_profile_id
                .as_deref()
                .and_then(capability::profile)
                .zip(CapabilityId::parse("terminal.attach_human").ok())
                .is_some_and(|(p, cap)| p.grants(&cap));
            let decision = terminal::authorize_attach(true, ctx.session, granted, op.human_consent_obtained);
            events.push(self.capability_event(ctx, "terminal.attach_human", decision.is_ok()));
            decision?;
        }
        let command = op.params.get("command").and_then(Value::as_str).unwrap_or_default();
        let cwd = op.params.get("cwd").and_then(Value::as_str).unwrap_or(".");
        self.policy.check_command_at(command, Some(&ctx.workspace_root), cwd)?;
        self.policy.resolve_cwd(&ctx.workspace_root, cwd)
    }

    /// Decides, runs (if allowed) and records one operation.
    ///
    /// The command's process group is handed to `recorder` before the command may run (see
    /// [`exec::run`]).
    pub async fn execute(
        &self,
        op: &PlannedOperation,
        ctx: &CallContext,
        cancel: &CancellationToken,
        recorder: &dyn ProcessRecorder,
    ) -> Executed {
        let started_at = rfc3339_now();
        let unverified = self.unverified_inputs(op).await;
        let checked = self.decide(op, ctx, &|a| !unverified.contains(&a.hash));
        let granted = self.with_grants(op, ctx).capabilities_requested.clone();
        let mut events = checked.events;
        let redactor = self.call_redactor(op);
        let args = redactor.redact_json(&op.params);
        let args_hash = hash(args.to_string().as_bytes());
        let tool_call = |ok: bool,
                         result_hash: Option<String>,
                         error: Option<Value>,
                         started: &str,
                         ended: &str,
                         ms: u64| Payload::ToolCall {
            trace_id: ctx.trace_id.clone(),
            tool_call_id: op.op_id.clone(),
            tool_id: op.tool_id(),
            tool_version: self.registry.engine(&op.engine_id).map_or_else(|| "unknown".into(), |e| e.version.clone()),
            transport: "mex".into(),
            side_effect: "EXECUTE".into(),
            idempotency: "IDEMPOTENT_WITH_KEY".into(),
            idempotency_key: ctx.idempotency_key.clone(),
            ok,
            args_hash: args_hash.clone(),
            result_hash,
            error,
            timing: json!({"started_at": started, "ended_at": ended, "duration_ms": ms}),
            capability_ids: granted.clone(),
        };
        let rules = self.sandbox.rules(&ctx.workspace_root, &granted, op.capability_profile_id.as_deref());
        let containment = match (&checked.cwd, &checked.refusal) {
            (Some(_), None) => Some(self.sandbox.contain(rules).await),
            _ => None,
        };
        let sandbox_refusal = match &containment {
            Some(Containment::Refused { reason }) => {
                Some(Refusal { by: "sandbox".into(), code: SANDBOX_UNAVAILABLE.into(), reason: reason.clone() })
            }
            _ => None,
        };
        let (Some(cwd), None, None) = (checked.cwd, checked.refusal.clone(), sandbox_refusal.clone()) else {
            let refusal = checked.refusal.or(sandbox_refusal).unwrap_or(Refusal {
                by: "tool bus".into(),
                code: "MEX-DENIED".into(),
                reason: "refused".into(),
            });
            let ended_at = rfc3339_now();
            let error = EngineError { code: refusal.code.clone(), message: refusal.to_string(), details_ref: None };
            events.push(tool_call(
                false,
                None,
                Some(json!({"code": error.code, "kind": "denied", "message": error.message})),
                &started_at,
                &ended_at,
                0,
            ));
            let result = denied_result(op, started_at, ended_at, error);
            return Executed { result, events, refusal: Some(refusal), output: None, redactor };
        };

        let mut spec =
            CommandSpec::shell(op.params.get("command").and_then(Value::as_str).unwrap_or_default(), cwd.clone());
        match self.environment(op).await {
            Ok(env) => spec.env = env,
            Err(reason) => {
                let refusal =
                    Refusal { by: Gate::Integrity.name().into(), code: "MEX-INTEGRITY-ARTIFACT".into(), reason };
                let ended_at = rfc3339_now();
                let error = EngineError { code: refusal.code.clone(), message: refusal.to_string(), details_ref: None };
                events.push(tool_call(
                    false,
                    None,
                    Some(json!({"code": error.code, "kind": "integrity", "message": error.message})),
                    &started_at,
                    &ended_at,
                    0,
                ));
                let result = denied_result(op, started_at, ended_at, error);
                return Executed { result, events, refusal: Some(refusal), output: None, redactor };
            }
        }
        spec.env.push(("STEWARD_IDEMPOTENCY_KEY".into(), ctx.idempotency_key.clone()));
        // Steward's own secrets (its model providers' API keys, a token in its environment) are
        // not the command's: a secret-named variable it would inherit is withheld unless the
        // operation sets it or the operator grants it (`secrets.use:<NAME>`, DG-MEX-06).
        spec.env_remove = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| redact::is_secret_env_name(k))
            .filter(|k| !spec.env.iter().any(|(set, _)| set == k))
            .filter(|k| !granted.iter().any(|g| g.strip_prefix("secrets.use:") == Some(k.as_str())))
            .collect();
        spec.env_remove.sort();
        let requested = op
            .params
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis)
            .unwrap_or(self.policy.timeout);
        spec.timeout = op.budget.wall_time_ms.map_or(requested, |b| requested.min(Duration::from_millis(b)));
        spec.kill_grace = self.policy.kill_grace;
        spec.output_limit = op
            .budget
            .output_bytes
            .map_or(self.policy.max_output_bytes, |b| (b as usize).min(self.policy.max_output_bytes));
        if let Some(containment) = &containment {
            events.push(sandbox_event(&op.op_id, containment, &spec.env_remove));
            if let Containment::Sandboxed { launcher, rules, .. } = containment {
                spec.sandbox = Some((launcher.clone(), rules.clone()));
            }
        }

        let outcome = exec::run(&spec, cancel, recorder).await;
        let ended_at = rfc3339_now();
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                let message = redactor.redact(&e.to_string()).0;
                let error = EngineError {
                    code: "HSK-TERM-007".into(),
                    message: format!("cannot start: {message}"),
                    details_ref: None,
                };
                events.push(tool_call(
                    false,
                    None,
                    Some(json!({"code": error.code, "kind": "spawn", "message": error.message})),
                    &started_at,
                    &ended_at,
                    0,
                ));
                let result = EngineResult {
                    status: EngineStatus::Failed,
                    ..denied_result(op, started_at, ended_at, error.clone())
                };
                let refusal = Refusal { by: "terminal".into(), code: error.code, reason: error.message };
                return Executed { result, events, refusal: Some(refusal), output: None, redactor };
            }
        };
        let (stdout, out_redacted) = redactor.redact_bytes(&outcome.stdout);
        let (stderr, err_redacted) = redactor.redact_bytes(&outcome.stderr);
        let mut errors = Vec::new();
        let mut evidence = Vec::new();
        for (bytes, name) in [(&stdout, "stdout"), (&stderr, "stderr")] {
            match self.artifacts.put(bytes.as_bytes(), "text/plain; charset=utf-8").await {
                Ok(h) => evidence.push(ArtifactHandle::from(h)),
                Err(e) => errors.push(EngineError {
                    code: "MEX-EVIDENCE-WRITE".into(),
                    message: format!("cannot store {name} evidence: {e}"),
                    details_ref: None,
                }),
            }
        }
        if evidence.len() < 2 && op.determinism.needs_evidence() {
            // DG-MEX-05: a D0/D1 result without evidence is not a result.
            errors.push(EngineError {
                code: "MEX_EVIDENCE_MISSING".into(),
                message: "D0/D1 result is missing its evidence".into(),
                details_ref: None,
            });
        }
        let (exit_code, timed_out, cancelled) = match outcome.ending {
            Ending::Exited(c) => (c, false, false),
            Ending::Signalled(_) => (-1, false, false),
            Ending::TimedOut => (-1, true, false),
            Ending::Cancelled => (-1, false, true),
        };
        let truncated_bytes = outcome.stdout_truncated_bytes + outcome.stderr_truncated_bytes;
        let duration_ms = u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX);
        let relative_cwd = op.params.get("cwd").and_then(Value::as_str).unwrap_or(".").to_owned();
        let refs: Vec<String> = evidence.iter().map(|h| h.hash.clone()).collect();
        let (redacted_command, cmd_redacted) =
            redactor.redact(op.params.get("command").and_then(Value::as_str).unwrap_or_default());
        events.push(Payload::TerminalCommand {
            session_id: ctx.session_id.clone(),
            session_type: ctx.session.as_str().into(),
            cwd: relative_cwd,
            command: redacted_command,
            exit_code,
            duration_ms,
            timed_out,
            cancelled,
            truncated_bytes,
            stdout_ref: refs.first().cloned().unwrap_or_default(),
            stderr_ref: refs.get(1).cloned().unwrap_or_default(),
            redaction_applied: out_redacted || err_redacted || cmd_redacted,
        });
        let ok = exit_code == 0 && errors.is_empty();
        let result_hash = hash(format!("{stdout}\u{0}{stderr}").as_bytes());
        let error = (!ok).then(|| json!({"code": if timed_out { "HSK-TERM-004" } else { "EXIT" }, "kind": "execution", "message": format!("exit code {exit_code}")}));
        events.push(tool_call(ok, Some(result_hash), error, &started_at, &ended_at, duration_ms));
        let engine = self.registry.engine(&op.engine_id);
        let result = EngineResult {
            op_id: op.op_id.clone(),
            status: if ok { EngineStatus::Succeeded } else { EngineStatus::Failed },
            started_at,
            ended_at,
            outputs: evidence.clone(),
            evidence,
            provenance: Some(ProvenanceRecord {
                engine_id: op.engine_id.clone(),
                engine_version: engine.map_or_else(String::new, |e| e.version.clone()),
                implementation: engine.map_or_else(String::new, |e| e.implementation.clone()),
                determinism: op.determinism,
                config_hash: args_hash.clone(),
                inputs: op.inputs.iter().map(|a| a.hash.clone()).collect(),
                outputs: refs,
                capabilities_granted: granted.clone(),
                environment: json!({"cwd": cwd.display().to_string(), "session_type": ctx.session.as_str()}),
            }),
            errors,
            logs_ref: None,
        };
        let output = ProcessOutput {
            ending: outcome.ending,
            raw_stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
            stdout,
            stderr,
            truncated_bytes,
            duration: outcome.duration,
        };
        Executed { result, events, refusal: None, output: Some(output), redactor }
    }

    /// Checks every step that runs a process before a run starts, under the workflow's
    /// profile: a shell step's command against the gates and the command policy, as it will
    /// run (placeholders as the environment variables that carry their values), in
    /// `workspace`; an agent CLI step's against the gates (the profile's capabilities, and its
    /// budget: a step timeout the shell engine would refuse is said now, not when the step is
    /// reached).
    pub fn preflight(&self, wf: &Workflow, profile: &str, workspace: &std::path::Path) -> Vec<(String, Refusal)> {
        let mut refused = Vec::new();
        for step in &wf.steps {
            let shell = match &step.kind {
                StepKind::Shell(shell) => shell,
                StepKind::Agent(a) if wf.agent(&a.agent).is_some_and(|d| d.provider == Provider::Command) => {
                    let program = wf.agent(&a.agent).and_then(|d| d.cli.clone()).unwrap_or_else(|| "claude".into());
                    let op = self.shell_op(
                        "preflight",
                        &program,
                        None,
                        &[],
                        Duration::from_secs(step.timeout_seconds),
                        profile,
                    );
                    if let Some(d) = gates::evaluate(&op, &self.registry, &|_| true).denial() {
                        refused.push((step.id.clone(), refusal_of(d)));
                    }
                    continue;
                }
                _ => continue,
            };
            let command =
                shell.run.render_shell(|_| Ok(Value::Null)).map_or_else(|_| shell.run_source.clone(), |(c, _)| c);
            let cwd = shell.cwd.as_ref().and_then(|t| t.render(|_| Ok(json!("x"))).ok()).unwrap_or_else(|| ".".into());
            let op =
                self.shell_op("preflight", &command, None, &[], Duration::from_secs(step.timeout_seconds), profile);
            let checked = gates::evaluate(&op, &self.registry, &|_| true);
            let refusal = match checked.denial() {
                Some(d) => Some(refusal_of(d)),
                None => self.policy.check_command_at(&command, Some(workspace), &cwd).err().map(|d| Refusal {
                    by: "terminal".into(),
                    code: d.code,
                    reason: d.reason,
                }),
            };
            if let Some(r) = refusal {
                refused.push((step.id.clone(), r));
            }
        }
        refused
    }
}

/// What a gate's denial says, as a refusal.
fn refusal_of(d: &gates::GateOutcome) -> Refusal {
    Refusal {
        by: d.gate.name().into(),
        code: d.code.clone().unwrap_or_default(),
        reason: d.reason.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Redactor;

    fn bus(dir: &std::path::Path) -> ToolBus {
        ToolBus::new(
            EngineRegistry::builtin().unwrap(),
            TerminalPolicy::default(),
            Redactor::default(),
            Arc::new(steward_artifacts::FsArtifacts::in_data_dir(dir)),
            Sandbox::off(),
        )
    }

    fn ctx(dir: &std::path::Path) -> CallContext {
        CallContext {
            job_id: "job-1".into(),
            trace_id: "trace-1".into(),
            actor_id: "engine".into(),
            ai_actor: true,
            session: SessionKind::AiJob,
            session_id: "s-1".into(),
            workflow_id: "wf".into(),
            workspace_root: dir.to_owned(),
            idempotency_key: "run:step:1".into(),
        }
    }

    fn kinds(events: &[Payload]) -> Vec<&str> {
        events.iter().map(Payload::event_type).collect()
    }

    /// A step whose timeout the shell engine's budget would refuse is refused before the run
    /// starts, an agent CLI's step as a shell step (DireClaw's examples ask for hours).
    #[test]
    fn preflight_checks_the_budget_of_shell_and_agent_cli_steps() {
        let dir = tempfile::tempdir().unwrap();
        let wf = |timeout: u64| {
            steward_core::workflow::parse(&format!(
                "id: w\nversion: 1\nagents:\n  a: {{provider: command, cli: codex, model: m}}\nsteps:\n  - {{id: s, type: shell, run: \"true\", timeout_seconds: {timeout}, next: t}}\n  - {{id: t, type: agent_task, agent: a, prompt: hi, timeout_seconds: {timeout}}}\n"
            ))
            .unwrap()
        };
        let b = bus(dir.path());
        assert!(b.preflight(&wf(10_800), "Coder", dir.path()).is_empty(), "three hours is within the cap");
        let refused = b.preflight(&wf(200_000), "Coder", dir.path());
        let steps: Vec<(&str, &str)> = refused.iter().map(|(s, r)| (s.as_str(), r.code.as_str())).collect();
        assert_eq!(steps, [("s", "MEX-BUDGET-EXCEEDED"), ("t", "MEX-BUDGET-EXCEEDED")], "{refused:?}");
    }

    /// DG-CAP-05: every capability check is recorded, allow and deny, with actor and job.
    #[test]
    fn capability_decisions_are_recorded_on_allow_and_on_deny() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(dir.path());
        let op = b.shell_op("op-1", "ls", None, &[], Duration::from_secs(5), "Analyst");
        let checked = b.check(&op, &ctx(dir.path()));
        assert_eq!(checked.refusal.as_ref().map(|r| r.by.as_str()), Some("G-CAP"));
        let decisions: Vec<(String, String)> = checked
            .events
            .iter()
            .filter_map(|e| match e {
                Payload::CapabilityAction { capability_id, decision_outcome, actor_id, job_id } => {
                    assert_eq!((actor_id.as_str(), job_id.as_str()), ("engine", "job-1"));
                    Some((capability_id.clone(), decision_outcome.clone()))
                }
                _ => None,
            })
            .collect();
        let expected: Vec<(String, String)> = [("fs.read", "allow"), ("fs.write", "deny"), ("proc.exec:ls", "deny")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(decisions, expected);
        assert_eq!(
            kinds(&checked.events),
            ["gate_outcome", "gate_outcome", "capability_action", "capability_action", "capability_action"]
        );
    }

    /// TERM-UX-002: an AI job cannot run in a human session without capability and consent.
    #[test]
    fn ai_actors_cannot_attach_to_human_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(dir.path());
        let op = b.shell_op("op-1", "ls", None, &[], Duration::from_secs(5), "Coder");
        let human = CallContext { session: SessionKind::HumanDev, ..ctx(dir.path()) };
        let checked = b.check(&op, &human);
        let r = checked.refusal.unwrap();
        assert_eq!((r.by.as_str(), r.code.as_str()), ("terminal", "HSK-TERM-009"));
        assert!(
            checked
                .events
                .iter()
                .any(|e| matches!(e, Payload::CapabilityAction { capability_id, decision_outcome, .. }
            if capability_id == "terminal.attach_human" && decision_outcome == "deny"))
        );
        let person = CallContext { ai_actor: false, ..human };
        assert!(b.check(&op, &person).refusal.is_none());
    }

    /// A run through the bus leaves verified evidence and the command and call events.
    #[tokio::test]
    async fn executing_records_evidence_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(dir.path());
        let big = "x".repeat(ENV_INLINE_LIMIT + 1);
        let env = vec![("BIG".to_owned(), big.clone())];
        let mut op =
            b.shell_op("op-1", "printf %s \"$BIG\" | wc -c; echo done", None, &env, Duration::from_secs(5), "Coder");
        b.externalize_large_env(&mut op).await.unwrap();
        assert_eq!(op.inputs.len(), 1);
        assert!(op.params["env"]["BIG"].as_str().unwrap().starts_with("artifact:sha256:"));
        let done = b.execute(&op, &ctx(dir.path()), &CancellationToken::new(), &crate::exec::Unrecorded).await;
        assert!(done.refusal.is_none());
        assert_eq!(done.result.status, EngineStatus::Succeeded);
        let out = done.output.unwrap();
        assert!(out.stdout.starts_with(&(ENV_INLINE_LIMIT + 1).to_string()), "{}", out.stdout);
        assert_eq!(done.result.evidence.len(), 2);
        for a in &done.result.evidence {
            assert!(b.artifacts().verify(&a.into()).await, "{a:?}");
        }
        assert_eq!(
            &kinds(&done.events)[6..],
            ["capability_action"; 5]
                .iter()
                .chain(&["sandbox_applied", "terminal_command", "tool_call"])
                .copied()
                .collect::<Vec<_>>()
        );
        let sandbox = done.events.iter().find(|e| e.event_type() == "sandbox_applied").unwrap();
        let sandbox = serde_json::to_value(sandbox).unwrap();
        assert_eq!(
            (sandbox["mode"].as_str(), sandbox["reason"].as_str()),
            (Some("unsandboxed"), Some("the operator turned the sandbox off"))
        );
        let provenance = done.result.provenance.unwrap();
        assert_eq!((provenance.engine_id.as_str(), provenance.determinism), ("engine.shell", Determinism::D1));
    }

    /// Issue 11 (point 6), TERM-API-004, DG-MEX-03: a value set in a variable whose name says
    /// secret is redacted in the command's output, not only in its recorded environment; a
    /// large value holding a secret never reaches the artifact store in clear, yet the command
    /// still gets it, and the record references its redacted text.
    #[tokio::test]
    async fn secret_named_variables_and_large_secret_values_stay_out_of_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(dir.path()).with_redactor(Redactor::new(vec!["input-secret-77".into()]));
        let big = format!("{}input-secret-77{}", "a".repeat(ENV_INLINE_LIMIT), "b".repeat(10));
        let env = vec![
            ("DEPLOY_TOKEN".to_owned(), "tok-value-1234".to_owned()),
            ("BIG".to_owned(), big.clone()),
            ("PLAIN".to_owned(), "p".repeat(ENV_INLINE_LIMIT + 1)),
        ];
        let command = "echo \"t=$DEPLOY_TOKEN\"; printf %s \"$BIG\" | grep -c input-secret-77";
        let mut op = b.shell_op("op-1", command, None, &env, Duration::from_secs(5), "Coder");
        b.externalize_large_env(&mut op).await.unwrap();
        assert_eq!(op.params["env"]["BIG"], json!(big), "a value holding a secret stays in memory");
        assert!(op.params["env"]["PLAIN"].as_str().unwrap().starts_with("artifact:"));
        let recorded = b.recorded_op(&serde_json::to_value(&op).unwrap()).await.unwrap();
        assert_eq!(recorded["params"]["env"]["DEPLOY_TOKEN"], json!(redact::REDACTED));
        let big_ref = recorded["params"]["env"]["BIG"].as_str().unwrap().strip_prefix("artifact:").unwrap();
        let stored = String::from_utf8(b.artifacts().get(big_ref).await.unwrap()).unwrap();
        assert!(stored.contains(redact::REDACTED) && !stored.contains("input-secret-77"));
        let done = b.execute(&op, &ctx(dir.path()), &CancellationToken::new(), &crate::exec::Unrecorded).await;
        let out = done.output.unwrap();
        assert_eq!(out.stdout, format!("t={}\n1\n", redact::REDACTED), "the command got both values");
        assert!(done.redactor.redact("x tok-value-1234").1);
        let everything = format!("{:?}", done.events);
        assert!(!everything.contains("tok-value-1234") && !everything.contains("input-secret-77"));
        for entry in walk(&dir.path().join("artifacts")) {
            let bytes = std::fs::read(&entry).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("tok-value-1234") && !text.contains("input-secret-77"), "{}", entry.display());
        }
    }

    /// DG-MEX-04: an input artifact the bus's artifact store does not hold (another worker's
    /// store, a damaged blob) is refused by G-INTEGRITY before anything runs; `check`, which
    /// cannot reach the store, judges only the handle's form.
    #[tokio::test]
    async fn an_input_artifact_missing_from_the_store_is_refused_before_running() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(dir.path());
        let env = vec![("BIG".to_owned(), "y".repeat(ENV_INLINE_LIMIT + 1))];
        let mut op = b.shell_op("op-1", "touch ran", None, &env, Duration::from_secs(5), "Coder");
        b.externalize_large_env(&mut op).await.unwrap();
        let elsewhere = ToolBus { artifacts: Arc::new(steward_artifacts::MemArtifacts::new()), ..b.clone() };
        assert!(elsewhere.check(&op, &ctx(dir.path())).refusal.is_none());
        let done = elsewhere.execute(&op, &ctx(dir.path()), &CancellationToken::new(), &crate::exec::Unrecorded).await;
        let refusal = done.refusal.unwrap();
        assert_eq!((refusal.by.as_str(), refusal.code.as_str()), ("G-INTEGRITY", "MEX-INTEGRITY-ARTIFACT"));
        assert!(!dir.path().join("ran").exists(), "nothing ran");
        let done = b.execute(&op, &ctx(dir.path()), &CancellationToken::new(), &crate::exec::Unrecorded).await;
        assert!(done.refusal.is_none() && dir.path().join("ran").exists(), "the store that holds it runs it");
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
        out
    }
}
