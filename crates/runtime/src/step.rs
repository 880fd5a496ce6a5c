//! Executing one step attempt: rendering its templates, running it through the tool bus, reading its result.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use steward_core::result_block;
use steward_core::state::AttemptStatus;
use steward_core::template::{Ref, RenderError, Template, WorkflowVar, lookup_path};
use steward_core::workflow::{Step, StepKind, Workflow};
use steward_store::{Attempt, AttemptFinish, Run};
use steward_tools::exec::{self, CommandSpec, Ending};

/// Exit codes `sh` uses when it cannot run the command at all.
const NOT_FOUND: i32 = 127;
const NOT_EXECUTABLE: i32 = 126;

/// A step attempt ready to execute, with the input payload to record.
pub(crate) struct Prepared {
    pub(crate) input: Value,
    pub(crate) work: Work,
}

pub(crate) enum Work {
    Shell(CommandSpec),
    Noop,
    /// Rendering failed: the attempt is recorded, then fails without running.
    Unrunnable(String),
}

/// What templates can see while a run executes.
pub(crate) struct Scope<'a> {
    pub(crate) run: &'a Run,
    pub(crate) wf: &'a Workflow,
    pub(crate) attempts: &'a [Attempt],
}

impl Scope<'_> {
    fn resolve(&self, r: &Ref, step_id: &str, attempt: u32) -> Result<Value, RenderError> {
        let err = |reason: String| RenderError {
            reference: r.to_string(),
            reason,
        };
        match r {
            Ref::Input { name, path } => {
                let v = self.run.inputs.get(name).ok_or_else(|| {
                    err(format!("input `{name}` was not given and has no default"))
                })?;
                lookup_path(v, path)
                    .cloned()
                    .ok_or_else(|| err(format!("input `{name}` has no `{}`", path.join("."))))
            }
            Ref::StepOutput { step, key } => {
                let done = self
                    .attempts
                    .iter()
                    .filter(|a| &a.step_id == step && a.status == AttemptStatus::Completed)
                    .max_by_key(|a| a.attempt)
                    .ok_or_else(|| err(format!("step `{step}` has not completed")))?;
                let out = done
                    .output
                    .as_ref()
                    .ok_or_else(|| err(format!("step `{step}` recorded no output")))?;
                out.get(key)
                    .filter(|_| matches!(key.as_str(), "stdout" | "stderr" | "exit_code"))
                    .or_else(|| out.get("outputs").and_then(|o| o.get(key)))
                    .cloned()
                    .ok_or_else(|| err(format!("step `{step}` did not produce `{key}`")))
            }
            Ref::Workflow(WorkflowVar::RunId) => Ok(json!(self.run.run_id)),
            Ref::Workflow(WorkflowVar::StepId) => Ok(json!(step_id)),
            Ref::Workflow(WorkflowVar::Attempt) => Ok(json!(attempt)),
            Ref::Workflow(WorkflowVar::WorkflowId) => Ok(json!(self.wf.id)),
            // Run state arrives with review steps; until then every key is empty.
            Ref::State(_) => Ok(Value::Null),
        }
    }

    fn render(&self, t: &Template, step_id: &str, attempt: u32) -> Result<String, RenderError> {
        t.render(|r| self.resolve(r, step_id, attempt))
    }

    /// Renders a step's templates into something to run.
    pub(crate) fn prepare(&self, step: &Step, attempt: u32, kill_grace: Duration) -> Prepared {
        match &step.kind {
            StepKind::Noop => Prepared {
                input: json!({"type": "noop"}),
                work: Work::Noop,
            },
            StepKind::Shell(shell) => {
                let rendered = (|| -> Result<(CommandSpec, Value), RenderError> {
                    let (command, tpl_env) = shell
                        .run
                        .render_shell(|r| self.resolve(r, &step.id, attempt))?;
                    let mut env = Vec::new();
                    for (k, t) in &shell.env {
                        env.push((k.clone(), self.render(t, &step.id, attempt)?));
                    }
                    let cwd = match &shell.cwd {
                        Some(t) => resolve_cwd(
                            Path::new(&self.run.workdir),
                            &self.render(t, &step.id, attempt)?,
                        ),
                        None => PathBuf::from(&self.run.workdir),
                    };
                    let input = json!({
                        "type": "shell",
                        "run": shell.run_source,
                        "command": command,
                        "template_values": tpl_env.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<Map<String, Value>>(),
                        "env": env.iter().cloned().map(|(k, v)| (k, Value::String(v))).collect::<Map<String, Value>>(),
                        "cwd": cwd.display().to_string(),
                        "timeout_seconds": step.timeout_seconds,
                    });
                    let key = steward_core::idempotency_key(&self.run.run_id, &step.id, attempt);
                    let mut spec = CommandSpec::shell(&command, cwd);
                    spec.env = tpl_env;
                    spec.env.extend(env);
                    spec.env.extend([
                        ("STEWARD_RUN_ID".to_owned(), self.run.run_id.clone()),
                        ("STEWARD_WORKFLOW_ID".to_owned(), self.wf.id.clone()),
                        ("STEWARD_STEP_ID".to_owned(), step.id.clone()),
                        ("STEWARD_ATTEMPT".to_owned(), attempt.to_string()),
                        ("STEWARD_IDEMPOTENCY_KEY".to_owned(), key),
                    ]);
                    spec.timeout = Duration::from_secs(step.timeout_seconds);
                    spec.kill_grace = kill_grace;
                    Ok((spec, input))
                })();
                match rendered {
                    Ok((spec, input)) => Prepared {
                        input,
                        work: Work::Shell(spec),
                    },
                    Err(e) => Prepared {
                        input: json!({"type": "shell", "run": shell.run_source}),
                        work: Work::Unrunnable(e.to_string()),
                    },
                }
            }
        }
    }
}

fn resolve_cwd(workdir: &Path, cwd: &str) -> PathBuf {
    let p = Path::new(cwd);
    if p.is_absolute() {
        p.to_owned()
    } else {
        workdir.join(p)
    }
}

fn failed(
    step: &Step,
    attempt: u32,
    status: AttemptStatus,
    error: String,
    retryable: bool,
    output: Option<Value>,
) -> AttemptFinish {
    AttemptFinish {
        step_id: step.id.clone(),
        attempt,
        status,
        output,
        error: Some(error),
        retryable,
        routes: Vec::new(),
    }
}

fn completed(step: &Step, attempt: u32, output: Value) -> AttemptFinish {
    AttemptFinish {
        step_id: step.id.clone(),
        attempt,
        status: AttemptStatus::Completed,
        output: Some(output),
        error: None,
        retryable: false,
        routes: Vec::new(),
    }
}

/// Output text as the `stdout` output: lossy UTF-8 with trailing newlines removed, as `$(...)` does.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches(['\n', '\r'])
        .to_owned()
}

fn last_line(bytes: &[u8]) -> String {
    let t = text(bytes);
    let line = t
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.len() > 300 {
        format!("{}...", &line[..line.floor_char_boundary(300)])
    } else {
        line.to_owned()
    }
}

/// Runs a prepared attempt to its end. Never fails: every outcome is an [`AttemptFinish`].
pub(crate) async fn execute(
    step: &Step,
    attempt: u32,
    work: Work,
    cancel: &CancellationToken,
) -> AttemptFinish {
    let spec = match work {
        Work::Noop => return completed(step, attempt, json!({})),
        Work::Unrunnable(reason) => {
            return failed(
                step,
                attempt,
                AttemptStatus::Failed,
                format!("cannot start: {reason}"),
                false,
                None,
            );
        }
        Work::Shell(spec) => spec,
    };
    let outcome = match exec::run(&spec, cancel).await {
        Ok(o) => o,
        Err(e) => {
            return failed(
                step,
                attempt,
                AttemptStatus::Failed,
                format!("cannot start: {e}"),
                false,
                None,
            );
        }
    };
    let exit_code = match outcome.ending {
        Ending::Exited(c) => json!(c),
        _ => Value::Null,
    };
    let mut output = json!({
        "stdout": text(&outcome.stdout),
        "stderr": text(&outcome.stderr),
        "exit_code": exit_code,
        "duration_ms": outcome.duration.as_millis() as u64,
    });
    if outcome.stdout_truncated_bytes > 0 || outcome.stderr_truncated_bytes > 0 {
        output["truncated_bytes"] = json!({"stdout": outcome.stdout_truncated_bytes, "stderr": outcome.stderr_truncated_bytes});
    }
    let why = || last_line(&outcome.stderr);
    let failure = match outcome.ending {
        Ending::Exited(0) => None,
        Ending::TimedOut => Some((
            AttemptStatus::TimedOut,
            format!("timed out after {}s", step.timeout_seconds),
            true,
        )),
        Ending::Cancelled => Some((AttemptStatus::Cancelled, "cancelled".to_owned(), false)),
        Ending::Signalled(sig) => Some((
            AttemptStatus::Failed,
            format!("killed by signal {sig}"),
            true,
        )),
        // The shell could not run the command at all: retrying will not help.
        Ending::Exited(NOT_FOUND) => Some((
            AttemptStatus::Failed,
            format!("command not found (exit 127): {}", why()),
            false,
        )),
        Ending::Exited(NOT_EXECUTABLE) => Some((
            AttemptStatus::Failed,
            format!("command not executable (exit 126): {}", why()),
            false,
        )),
        Ending::Exited(code) => {
            let why = why();
            let msg = if why.is_empty() {
                format!("exit code {code}")
            } else {
                format!("exit code {code}: {why}")
            };
            Some((AttemptStatus::Failed, msg, true))
        }
    };
    if let Some((status, error, retryable)) = failure {
        return failed(step, attempt, status, error, retryable, Some(output));
    }
    let stdout = String::from_utf8_lossy(&outcome.stdout);
    let envelope = match result_block::parse(&stdout) {
        Ok(e) => e,
        Err(e) => return failed(step, attempt, AttemptStatus::Failed, e, true, Some(output)),
    };
    if let Some(env) = &envelope {
        output["outputs"] = Value::Object(env.outputs.clone());
        if let Some(s) = &env.summary {
            output["summary"] = json!(s);
        }
        if env.failed {
            let why = env
                .summary
                .clone()
                .unwrap_or_else(|| "the step reported status failed".into());
            return failed(
                step,
                attempt,
                AttemptStatus::Failed,
                format!("step reported failure: {why}"),
                true,
                Some(output),
            );
        }
    }
    let declared = envelope.map(|e| e.outputs).unwrap_or_default();
    let missing = result_block::missing_outputs(&step.outputs, &declared);
    if !missing.is_empty() {
        let msg = format!(
            "missing required outputs in the [workflow_result] block: {}",
            missing.join(", ")
        );
        return failed(
            step,
            attempt,
            AttemptStatus::Failed,
            msg,
            true,
            Some(output),
        );
    }
    completed(step, attempt, output)
}
