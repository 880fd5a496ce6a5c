//! Validation: a task's verify commands run through the tool bus in its stage, each within the
//! job's time, a timed-out one again with twice the time (§2.6.6.8.16).

use super::*;

/// What a task's verify commands said.
pub(super) struct Validation {
    pub(super) passed: bool,
    pub(super) report: Value,
    pub(super) events: Vec<Payload>,
    /// A command the tool bus refused, and why.
    pub(super) refused: Option<String>,
    /// A blocking command timed out, and again with twice the time.
    pub(super) timed_out_twice: bool,
    /// A command was stopped because the job's `max_duration_ms` ran out.
    pub(super) out_of_time: bool,
}

pub(super) fn failing_summary(report: &Value) -> String {
    report["spec_results"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| r["passed"] == false && r["blocking"] == true)
                .map(|r| {
                    let tail = r["output_tail"].as_str().unwrap_or_default();
                    let tail: String = tail.chars().rev().take(600).collect::<Vec<_>>().into_iter().rev().collect();
                    let ended = match (r["actual_exit_code"].as_i64(), r["error"].as_str()) {
                        (Some(code), _) => format!("exit {code}"),
                        (None, Some(error)) => error.to_owned(),
                        (None, None) => "no exit code".to_owned(),
                    };
                    format!("`{}` {ended}: {}", r["command"].as_str().unwrap_or_default(), tail.trim())
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

impl Executor<'_> {
    /// Runs the task's verify commands through the tool bus (DG-MT-14): one `engine.shell`/`exec`
    /// each; the validation fails only when a blocking one fails.
    /// Commands share the job's `left_ms`: one cut short by it is not run again, and the loop
    /// stops at the `max_duration` gate before the next iteration.
    pub(super) async fn validate(
        &self,
        mt: &MicroTaskDefinition,
        key: &str,
        root: &Path,
        left_ms: u64,
    ) -> Result<Validation> {
        let ctx = CallContext {
            job_id: self.job_id.to_owned(),
            trace_id: self.trace_id.to_owned(),
            actor_id: "micro_task_executor".into(),
            ai_actor: true,
            session: SessionKind::AiJob,
            session_id: key.to_owned(),
            workflow_id: self.workflow_id.to_owned(),
            workspace_root: root.to_path_buf(),
            idempotency_key: key.to_owned(),
        };
        let mut passed = true;
        let mut results = Vec::new();
        let mut events = Vec::new();
        let (mut refused, mut timed_out_twice, mut out_of_time) = (None, false, false);
        let started = std::time::Instant::now();
        for (i, v) in mt.verify.iter().enumerate() {
            let left = left_ms.saturating_sub(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
            let cut_by_job = left < v.timeout_ms;
            let timeout_ms = v.timeout_ms.min(left.max(1));
            let run = |id: String, timeout_ms: u64| {
                let op = self.bus.shell_op(
                    &id,
                    &v.command,
                    None,
                    &[],
                    std::time::Duration::from_millis(timeout_ms),
                    self.profile,
                );
                let ctx = &ctx;
                async move { self.bus.execute(&op, ctx, self.halt.token(), self.recorder).await }
            };
            let mut executed = run(format!("{key}-verify-{i}"), timeout_ms).await;
            // A command stopped by an interrupt says nothing about the task.
            self.check_interrupt()?;
            let stopped_by_job = cut_by_job && executed.output.as_ref().is_some_and(|o| o.ending == Ending::TimedOut);
            out_of_time |= stopped_by_job;
            if !cut_by_job && executed.output.as_ref().is_some_and(|o| o.ending == Ending::TimedOut) {
                // `validation_timeout`: run again, once, with twice the time (§2.6.6.8.16).
                events.extend(std::mem::take(&mut executed.events));
                executed = run(format!("{key}-verify-{i}-again"), v.timeout_ms.saturating_mul(2)).await;
                self.check_interrupt()?;
                timed_out_twice |= v.blocking && executed.output.as_ref().is_some_and(|o| o.ending == Ending::TimedOut);
            }
            if executed.output.is_none() {
                // Refused before it ran: a `capability_violation`, which fails the job.
                let why =
                    executed.refusal.as_ref().map_or_else(|| "refused by the tool bus".to_owned(), |r| r.to_string());
                refused = Some(format!("`{}`: {why}", self.redactor.redact(&v.command).0));
            }
            events.extend(std::mem::take(&mut executed.events));
            let (spec_passed, exit_code, error, duration_ms, stdout_tail) = match &executed.output {
                Some(out) => {
                    let (code, timed_out) = match out.ending {
                        Ending::Exited(c) => (Some(c), false),
                        Ending::TimedOut => (None, true),
                        _ => (None, false),
                    };
                    let ok = v.expect.passed(code, timed_out, &out.raw_stdout, v.pattern.as_deref());
                    let tail: String =
                        out.stdout.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
                    let err_tail: String =
                        out.stderr.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
                    (
                        ok,
                        code,
                        timed_out.then(|| {
                            if stopped_by_job {
                                format!("stopped after {timeout_ms} ms: the job's max_duration_ms ran out")
                            } else {
                                "timed out".to_owned()
                            }
                        }),
                        out.duration.as_millis() as u64,
                        format!("{tail}{err_tail}"),
                    )
                }
                None => (
                    false,
                    None,
                    Some(executed.refusal.map_or_else(|| "refused by the tool bus".to_owned(), |r| r.to_string())),
                    0,
                    String::new(),
                ),
            };
            if !spec_passed && v.blocking {
                passed = false;
            }
            results.push(json!({
                "spec_index": i, "command": self.redactor.redact(&v.command).0, "expected": v.expect.as_str(),
                "actual_exit_code": exit_code, "passed": spec_passed, "blocking": v.blocking, "duration_ms": duration_ms,
                "error": error, "output_tail": stdout_tail,
                "evidence": executed.result.evidence.iter().map(|a| a.hash.clone()).collect::<Vec<_>>(),
            }));
        }
        let report = json!({"passed": passed, "spec_results": results});
        Ok(Validation { passed, report, events, refused, timed_out_twice, out_of_time })
    }
}
