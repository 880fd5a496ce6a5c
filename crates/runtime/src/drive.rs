//! The run driver: plan, commit, spawn, wait, repeat, until the run stops running.

use std::collections::HashMap;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use steward_core::Timestamp;
use steward_core::event::Actor;
use steward_core::schedule::{self, AttemptFact, Verdict};
use steward_core::state::{AttemptStatus, RunState, TransitionCause};
use steward_store::{Attempt, AttemptFinish, AttemptStart, Commit, Expect, Run, Store, Transition};

use crate::engine::{Engine, ProgressUpdate, Result};
use crate::step::{self, Scope};

/// Removes a run from the active set when its driver ends, however it ends.
struct ActiveGuard<'a, S: Store + Clone> {
    engine: &'a Engine<S>,
    run_id: String,
}

impl<S: Store + Clone> Drop for ActiveGuard<'_, S> {
    fn drop(&mut self) {
        self.engine.active().remove(&self.run_id);
    }
}

fn facts<'a>(attempts: &'a [Attempt]) -> Vec<AttemptFact<'a>> {
    attempts
        .iter()
        .map(|a| AttemptFact {
            step_id: &a.step_id,
            attempt: a.attempt,
            visit: a.visit,
            status: a.status,
            retryable: a.retryable,
            error: a.error.as_deref(),
            finished_at: a.finished_at,
            routes: &a.routes,
        })
        .collect()
}

/// Applies finishes to the in-memory view exactly as the store applies them.
fn apply_finishes(attempts: &mut [Attempt], finished: &[AttemptFinish], now: Timestamp) {
    for f in finished {
        if let Some(a) = attempts.iter_mut().find(|a| {
            a.step_id == f.step_id && a.attempt == f.attempt && a.status == AttemptStatus::Running
        }) {
            a.status = f.status;
            a.output = f.output.clone();
            a.error = f.error.clone();
            a.retryable = f.retryable;
            a.routes = f.routes.clone();
            a.finished_at = Some(now);
        }
    }
}

impl<S: Store + Clone> Engine<S> {
    /// Drives a `running` run owned by this process until it is no longer running.
    pub(crate) async fn drive(&self, run_id: &str) -> Result<Run> {
        let store = &self.inner.store;
        let run = store.get_run(run_id).await?;
        let owner = self.inner.config.owner.clone();
        let wf = match self.workflow(&run).await {
            Ok(wf) => wf,
            Err(e) => {
                let mut c = self.commit(run_id, RunState::Running, Actor::System);
                c.expect.owner = Some(owner);
                c.finish_running_as = Some(AttemptStatus::Cancelled);
                let reason = format!("engine start failed: {e}");
                c.transition = Some(Transition {
                    to: RunState::Failed,
                    cause: TransitionCause::Engine,
                    reason: reason.clone(),
                });
                c.summary = Some(reason);
                store.commit(c).await?;
                return Ok(store.get_run(run_id).await?);
            }
        };
        let mut attempts = store.list_attempts(run_id).await?;
        let token = CancellationToken::new();
        self.active().insert(run_id.to_owned(), token.clone());
        let _guard = ActiveGuard {
            engine: self,
            run_id: run_id.to_owned(),
        };

        let started_at = run.started_at.unwrap_or_else(|| self.inner.clock.now());
        let deadline =
            started_at.plus_millis((wf.limits.run_timeout_seconds as i64).saturating_mul(1000));
        let mut tasks: JoinSet<AttemptFinish> = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, (String, u32)> = HashMap::new();
        let mut finished: Vec<AttemptFinish> = Vec::new();

        loop {
            let now = self.inner.clock.now();
            for f in &mut finished {
                if f.status == AttemptStatus::Completed {
                    f.routes = schedule::routes_of(&wf, &f.step_id);
                }
            }
            let mut view = attempts.clone();
            apply_finishes(&mut view, &finished, now);
            let plan = if now >= deadline {
                schedule::Plan {
                    start: Vec::new(),
                    wake_at: None,
                    verdict: Verdict::Failed {
                        reason: format!(
                            "workflow run timed out after {}s",
                            wf.limits.run_timeout_seconds
                        ),
                    },
                }
            } else {
                schedule::plan(&wf, &facts(&view), now)
            };

            let mut c = Commit::new(
                run_id,
                Expect {
                    state: RunState::Running,
                    owner: Some(owner.clone()),
                },
                now,
                Actor::System,
                &owner,
            );
            let mut to_spawn = Vec::new();
            match &plan.verdict {
                Verdict::Completed => {
                    c.transition = Some(Transition {
                        to: RunState::Completed,
                        cause: TransitionCause::Engine,
                        reason: "all steps completed".into(),
                    });
                    c.summary = Some("workflow completed".into());
                }
                Verdict::Failed { reason } => {
                    // Stop whatever still runs; its attempts end as cancelled in this same commit.
                    token.cancel();
                    while let Some(joined) = tasks.join_next_with_id().await {
                        finished.push(joined_finish(joined, &mut in_flight));
                    }
                    c.transition = Some(Transition {
                        to: RunState::Failed,
                        cause: TransitionCause::Engine,
                        reason: reason.clone(),
                    });
                    c.summary = Some(format!("failed: {reason}"));
                }
                Verdict::Continue => {
                    let scope = Scope {
                        run: &run,
                        wf: &wf,
                        attempts: &view,
                    };
                    for s in &plan.start {
                        let step = &wf.steps[s.step_index];
                        let prepared = scope.prepare(step, s.attempt, self.inner.config.kill_grace);
                        c.started.push(AttemptStart {
                            step_id: s.step_id.clone(),
                            attempt: s.attempt,
                            visit: s.visit,
                            input: prepared.input,
                        });
                        to_spawn.push((step.clone(), s.attempt, prepared.work));
                    }
                    if let Some(s) = plan.start.last() {
                        c.summary =
                            Some(format!("step {} attempt {} running", s.step_id, s.attempt));
                    } else if let Some(f) = finished.last() {
                        c.summary = Some(format!(
                            "step {} attempt {} {}",
                            f.step_id, f.attempt, f.status
                        ));
                    }
                }
            }
            c.finished = std::mem::take(&mut finished);
            let committed_finishes = c.finished.clone();
            let committed_starts = c.started.clone();
            let summary = c.summary.clone();
            let outcome = match store.commit(c).await {
                Ok(o) => o,
                Err(e) => {
                    // Cancelled or recovered elsewhere (a conflict), or the store failed:
                    // either way this process must stop touching the run.
                    token.cancel();
                    while tasks.join_next().await.is_some() {}
                    return match e {
                        steward_store::Error::Conflict { .. } => Ok(store.get_run(run_id).await?),
                        other => Err(other.into()),
                    };
                }
            };
            apply_finishes(&mut attempts, &committed_finishes, now);
            for s in committed_starts {
                attempts.push(Attempt {
                    run_id: run_id.to_owned(),
                    idempotency_key: steward_core::idempotency_key(run_id, &s.step_id, s.attempt),
                    step_id: s.step_id,
                    attempt: s.attempt,
                    visit: s.visit,
                    status: AttemptStatus::Running,
                    input: s.input,
                    output: None,
                    error: None,
                    retryable: false,
                    routes: Vec::new(),
                    started_at: now,
                    finished_at: None,
                });
            }
            if let Some(summary) = summary {
                let _ = self.inner.progress.send(ProgressUpdate {
                    run_id: run_id.to_owned(),
                    state: outcome.state,
                    summary,
                });
            }
            if outcome.state != RunState::Running {
                return Ok(store.get_run(run_id).await?);
            }
            for (step, attempt, work) in to_spawn {
                let tok = token.child_token();
                let key = (step.id.clone(), attempt);
                let handle =
                    tasks.spawn(async move { step::execute(&step, attempt, work, &tok).await });
                in_flight.insert(handle.id(), key);
            }

            let wake = plan.wake_at.unwrap_or(deadline).min(deadline);
            let wake_in =
                std::time::Duration::from_millis(wake.since(self.inner.clock.now()).max(0) as u64);
            tokio::select! {
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    finished.push(joined_finish(joined, &mut in_flight));
                    // Completions that arrived meanwhile share the next commit.
                    while let Some(joined) = tasks.try_join_next_with_id() {
                        finished.push(joined_finish(joined, &mut in_flight));
                    }
                }
                () = tokio::time::sleep(wake_in) => {}
                () = token.cancelled() => {
                    while tasks.join_next().await.is_some() {}
                    return Ok(store.get_run(run_id).await?);
                }
            }
        }
    }
}

/// A step task's result; a panicked task becomes a failed attempt rather than a lost one.
fn joined_finish(
    joined: std::result::Result<(tokio::task::Id, AttemptFinish), tokio::task::JoinError>,
    in_flight: &mut HashMap<tokio::task::Id, (String, u32)>,
) -> AttemptFinish {
    match joined {
        Ok((id, f)) => {
            in_flight.remove(&id);
            f
        }
        Err(e) => {
            let (step_id, attempt) = in_flight.remove(&e.id()).unwrap_or_default();
            AttemptFinish {
                step_id,
                attempt,
                status: AttemptStatus::Failed,
                output: None,
                error: Some(format!("internal error while running the step: {e}")),
                retryable: false,
                routes: Vec::new(),
            }
        }
    }
}
