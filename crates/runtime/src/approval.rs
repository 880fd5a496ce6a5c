//! Approval steps at run time: the question a person answers, the decision they record
//! (checked against the step's approvers and form), and the attempt that reads it.
//!
//! An approval's first attempt ends `awaiting_user` at once, holding no process; the run goes on
//! with whatever does not need it. A person's decision is a write of its own
//! ([`Engine::record_approval`]) that lands on that attempt, once; the attempt after it (started
//! by the planner when the decision is there, or when the approval's timeout is due) reads the
//! decision from the store, not from the driver's view, because only the store says which of a
//! late decision and the timeout came first (`rules::answer` refuses an answer to an attempt
//! that has a successor).

use serde_json::{Map, Value, json};

use steward_core::inputs;
use steward_core::state::{AttemptStatus, HumanDecision, RunState, TransitionCause};
use steward_core::workflow::{ApprovalStep, InputDecl, Step, StepKind};
use steward_store::{Answer, Attempt, Run, Store, Transition};

use crate::engine::{Engine, Error, Result};
use crate::micro_task::job::RunWriter;
use crate::step::{StepDone, finish};

/// What a person sends to decide an approval step.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// `approve` or `reject`.
    pub decision: HumanDecision,
    /// The form's fields as `name=value` text, read by the form's declared types.
    pub fields: Vec<(String, String)>,
    /// Why, in their words.
    pub comment: Option<String>,
}

/// An approval attempt, ready to run.
pub(crate) struct ApprovalWork {
    /// The attempt of this visit that waited for the decision; `None` for the visit's first,
    /// which asks.
    pub(crate) waited: Option<u32>,
    /// The question, rendered and redacted.
    pub(crate) prompt: String,
}

/// The attempt of this visit of `step` that stopped for a person, if any. (An attempt that read
/// its decision and then failed or was interrupted is followed by one that reads it again; a
/// new visit asks again.)
pub(crate) fn waited(attempts: &[Attempt], step_id: &str, visit: u32) -> Option<u32> {
    attempts
        .iter()
        .filter(|a| a.step_id == step_id && a.visit == visit && a.status == AttemptStatus::AwaitingUser)
        .map(|a| a.attempt)
        .max()
}

/// What the waiting attempt shows a person: the question, the form, who may decide, and until
/// when.
fn question(a: &ApprovalStep, prompt: &str) -> Value {
    let form: Vec<Value> = a
        .form
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "type": f.ty.as_str(),
                "required": f.required,
                "default": f.default,
                "description": f.description,
            })
        })
        .collect();
    json!({
        "approval": {
            "prompt": prompt,
            "form": form,
            "approvers": a.approvers,
            "timeout_seconds": a.timeout_seconds,
        }
    })
}

/// Runs an approval attempt: the visit's first asks and waits; the next reads the decision.
pub(crate) async fn execute(step: &Step, attempt: u32, work: ApprovalWork, writer: &RunWriter) -> StepDone {
    let done = |finish| StepDone { finish, events: Vec::new() };
    let StepKind::Approval(a) = &step.kind else {
        let why = "internal error: an approval attempt for a step that is not one".to_owned();
        return done(finish(&step.id, attempt, AttemptStatus::Failed, Some(why), false, None));
    };
    let Some(waited) = work.waited else {
        let output = question(a, &work.prompt);
        return done(finish(&step.id, attempt, AttemptStatus::AwaitingUser, None, false, Some(output)));
    };
    let attempts = match (writer.read)().await {
        Ok(attempts) => attempts,
        Err(e) => {
            let why = format!("cannot read the decision: {e}");
            return done(finish(&step.id, attempt, AttemptStatus::Failed, Some(why), true, None));
        }
    };
    let asked = attempts.iter().find(|x| x.step_id == step.id && x.attempt == waited);
    let detail = asked.and_then(|x| x.answer_detail.clone());
    let by = detail.as_ref().map(|d| d.by.clone());
    let comment = detail.as_ref().and_then(|d| d.reason.clone());
    let fields = detail.map(|d| d.fields).unwrap_or_default();
    let output = |decision: &str| json!({"decision": decision, "decided_by": by, "comment": comment, "outputs": Value::Object(fields.clone())});
    let said = |what: &str| match (&by, &comment) {
        (Some(by), Some(c)) => format!("{what} by {by}: {c}"),
        (Some(by), None) => format!("{what} by {by}"),
        _ => what.to_owned(),
    };
    let (status, error, out) = match asked.and_then(|x| x.answer) {
        Some(HumanDecision::Approve) => (AttemptStatus::Completed, None, output("approve")),
        Some(HumanDecision::Reject) if a.on_reject.is_some() => (AttemptStatus::Completed, None, output("reject")),
        Some(HumanDecision::Reject) => (AttemptStatus::Failed, Some(said("rejected")), output("reject")),
        None if a.on_timeout.is_some() => (AttemptStatus::Completed, None, output("timeout")),
        None => {
            let secs = a.timeout_seconds.unwrap_or(0);
            (AttemptStatus::Failed, Some(format!("no decision within {secs}s")), output("timeout"))
        }
        Some(other) => {
            let why = format!("an approval takes approve or reject, not `{other}`");
            (AttemptStatus::Failed, Some(why), output(other.as_str()))
        }
    };
    done(finish(&step.id, attempt, status, error, false, Some(out)))
}

/// The form's fields typed as it declares them, defaults filled in; every problem at once. A
/// required field must be filled in to approve; a rejection may leave it empty.
fn form_values(
    form: &[InputDecl],
    given: &[(String, String)],
    approving: bool,
) -> Result<Map<String, Value>, Vec<String>> {
    let mut problems = Vec::new();
    let mut values = Map::new();
    for (name, text) in given {
        match form.iter().find(|f| &f.name == name) {
            Some(f) => match inputs::from_text(f.ty, text) {
                Ok(v) => {
                    values.insert(name.clone(), v);
                }
                Err(e) => problems.push(format!("field `{name}`: {e}")),
            },
            None => {
                let names: Vec<&str> = form.iter().map(|f| f.name.as_str()).collect();
                let has = if names.is_empty() { "no fields".to_owned() } else { names.join(", ") };
                problems.push(format!("the form has no field `{name}` (it has: {has})"));
            }
        }
    }
    for f in form {
        if values.contains_key(&f.name) {
            continue;
        }
        match &f.default {
            Some(d) => {
                values.insert(f.name.clone(), d.clone());
            }
            None if f.required && approving => problems.push(format!("field `{}` is required", f.name)),
            None => {}
        }
    }
    if problems.is_empty() { Ok(values) } else { Err(problems) }
}

impl<S: Store + Clone> Engine<S> {
    /// A person's decision on an approval step, as one write: it lands on the step's waiting
    /// attempt (the store records `human_decision` with who decided, their comment and the
    /// form, once: of two decisions that race, or a decision and the approval's timeout, the
    /// second is refused with `Conflict`). A run that waits for a person goes back to
    /// `running`, held by nobody, for any worker to continue; a run that goes on with other
    /// steps meanwhile is not moved, and its driver picks the decision up. Checks first that
    /// the step is an approval that waits, that `actor_id` is one of its approvers (if it names
    /// any) and that the form is filled in as declared. Returns the run as it is afterwards.
    pub async fn record_approval(&self, run_id: &str, step_id: &str, actor_id: &str, d: &Decision) -> Result<Run> {
        self.accepting().await;
        let run = self.inner.store.get_run(run_id).await?;
        if run.state.is_terminal() {
            return Err(Error::WrongState {
                run_id: run.run_id,
                state: run.state,
                hint: "a finished run takes no decision",
            });
        }
        if !d.decision.decides_approval() {
            return Err(Error::Decision(format!("an approval takes approve or reject, not `{}`", d.decision)));
        }
        if d.decision == HumanDecision::Reject && d.comment.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return Err(Error::Decision("a rejection says why: give a comment".into()));
        }
        let wf = self.workflow(&run).await?;
        let Some(StepKind::Approval(approval)) = wf.step(step_id).map(|s| &s.kind) else {
            return Err(Error::Decision(match wf.step(step_id) {
                Some(s) => format!("step `{step_id}` is a {} step, not an approval", s.kind.type_name()),
                None => format!("workflow `{}` has no step `{step_id}`", wf.id),
            }));
        };
        // Approvers name people; an actor id says through what they came (`cli:ada`, `api:ada`).
        let person = actor_id.split_once(':').map_or(actor_id, |(_, name)| name);
        if !approval.approvers.is_empty() && !approval.approvers.iter().any(|a| a == person || a == actor_id) {
            return Err(Error::NotApprover {
                step_id: step_id.to_owned(),
                who: actor_id.to_owned(),
                approvers: approval.approvers.clone(),
            });
        }
        let attempts = self.inner.store.list_attempts(run_id).await?;
        let Some(waiting) = crate::drive::waiting(&attempts).into_iter().find(|a| a.step_id == step_id) else {
            return Err(Error::NotWaiting { run_id: run.run_id, step_id: step_id.to_owned() });
        };
        let redactor = self.inner.bus.redactor();
        let approving = d.decision == HumanDecision::Approve;
        let fields = match form_values(&approval.form, &d.fields, approving) {
            Ok(v) => redactor.redact_json(&Value::Object(v)).as_object().cloned().unwrap_or_default(),
            Err(problems) => {
                let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
                return Err(Error::Decision(format!("the form of step `{step_id}`:\n{}", list.join("\n"))));
            }
        };
        let mut c = self.commit(&run.run_id, run.state, steward_core::event::Actor::Human);
        c.actor_id = actor_id.to_owned();
        c.answers.push(Answer {
            step_id: step_id.to_owned(),
            attempt: waiting.attempt,
            decision: d.decision,
            gate: "approval".into(),
            reason: d.comment.as_deref().map(|c| redactor.redact(c).0),
            fields,
        });
        if run.state == RunState::AwaitingUser {
            c.transition = Some(Transition {
                to: RunState::Running,
                cause: TransitionCause::Operator,
                reason: format!("approval `{step_id}`: {} by {actor_id}", d.decision),
            });
        }
        c.summary = Some(format!("approval `{step_id}`: {} by {actor_id}", d.decision));
        self.inner.store.commit(c).await?;
        Ok(self.inner.store.get_run(run_id).await?)
    }

    /// Records a decision ([`Engine::record_approval`]) and, if that left the run for any
    /// worker to take, drives it here like `steward gate` does.
    pub async fn approve(&self, run_id: &str, step_id: &str, actor_id: &str, d: &Decision) -> Result<Run> {
        let run = self.record_approval(run_id, step_id, actor_id, d).await?;
        if run.state == RunState::Running && run.owner.is_none() {
            return self.take(run_id).await;
        }
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_core::workflow::InputType;

    fn field(name: &str, ty: InputType, required: bool, default: Option<Value>) -> InputDecl {
        InputDecl { name: name.into(), ty, required, default, description: None, secret: false, line: 1 }
    }

    #[test]
    fn a_form_is_read_by_its_types_with_defaults_and_every_problem_named() {
        let form = [
            field("reason", InputType::String, true, None),
            field("budget", InputType::Number, false, Some(json!(10))),
            field("urgent", InputType::Bool, false, None),
        ];
        let given = [("reason".into(), "ok".into()), ("urgent".into(), "true".into())];
        let got = form_values(&form, &given, true).unwrap();
        assert_eq!(Value::Object(got), json!({"reason": "ok", "budget": 10, "urgent": true}));
        let bad = [("budget".into(), "lots".into()), ("color".into(), "red".into())];
        let errs = form_values(&form, &bad, true).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("reason")) && errs.iter().any(|e| e.contains("color")), "{errs:?}");
        assert_eq!(Value::Object(form_values(&form, &[], false).unwrap()), json!({"budget": 10}), "a rejection");
    }
}
