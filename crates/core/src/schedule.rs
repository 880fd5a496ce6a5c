//! Next-step resolution: what a run does next, decided only from its persisted attempts.
//!
//! [`plan`] is a pure function of the workflow, the run's attempt history and
//! `now`. The engine calls it after every write and does what it says, so a
//! process that resumes a run after a crash makes the same decision the
//! crashed one would have made. Counting, not ordering, drives it: a routed
//! step owes one visit per arrival, a join step one visit per completion of
//! all its needs, and a visit is done when one of its attempts completed.

use std::collections::BTreeSet;

use crate::state::AttemptStatus;
use crate::time::Timestamp;
use crate::workflow::{Decided, StepKind, Workflow};

/// What the planner needs to know about one persisted attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFact<'a> {
    /// The step.
    pub step_id: &'a str,
    /// Attempt number, 1-based and increasing per step across the run.
    pub attempt: u32,
    /// Which visit of the step this attempt belongs to, 1-based.
    pub visit: u32,
    /// Its status.
    pub status: AttemptStatus,
    /// For a failed attempt: may it be retried?
    pub retryable: bool,
    /// For a failed attempt: why.
    pub error: Option<&'a str>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// For a completed attempt: the steps its completion routed to.
    pub routes: &'a [String],
    /// For an attempt that stopped for a person: whether the person has answered since.
    pub answered: bool,
    /// For a completed attempt: whether it skipped some of its work.
    pub with_issues: bool,
    /// For a completed attempt of an approval: it was rejected or timed out (and routed by
    /// `on_reject` or `on_timeout`), so the steps that `need` it do not go.
    pub declined: bool,
}

/// An attempt to record and start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Index of the step in the workflow.
    pub step_index: usize,
    /// The step.
    pub step_id: String,
    /// The new attempt's number.
    pub attempt: u32,
    /// The visit it belongs to.
    pub visit: u32,
}

/// Where the run stands after this plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Steps are running, starting, or waiting for a retry delay.
    Continue,
    /// Nothing is left to do: the run completed (`completed_with_issues` when a completed
    /// attempt skipped some of its work).
    Completed {
        /// Whether a completed attempt skipped some of its work.
        with_issues: bool,
    },
    /// The run must fail; in-flight steps should be stopped.
    Failed {
        /// The terminal reason.
        reason: String,
    },
    /// A step ended `poisoned`: the run ends `poisoned`, never retried (DG-WF-12); in-flight
    /// steps should be stopped.
    Poisoned {
        /// The terminal reason.
        reason: String,
    },
    /// Nothing runs and a step waits for a person's answer: the run moves to `awaiting_user`.
    AwaitingUser {
        /// The waiting steps, in file order.
        steps: Vec<String>,
    },
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Attempts to record and start now, in file order.
    pub start: Vec<Start>,
    /// The earliest time a delayed retry becomes due or a waiting approval times out.
    pub wake_at: Option<Timestamp>,
    /// Approvals that wait for a decision the facts do not carry yet, in file order: while other
    /// work goes on, the caller looks for their decisions.
    pub approvals_waiting: Vec<String>,
    /// The run's verdict.
    pub verdict: Verdict,
}

/// One attempt of a step's latest visit, as the tally keeps it: what the planner reads of it,
/// and what it added to the run's counts (taken back if the attempt changes).
#[derive(Debug, Clone)]
struct Kept {
    attempt: u32,
    status: AttemptStatus,
    retryable: bool,
    error: Option<String>,
    finished_at: Option<Timestamp>,
    answered: bool,
    declined: bool,
    with_issues: bool,
    /// The steps its completion routed to, by index.
    routes: Vec<usize>,
}

#[derive(Debug, Default, Clone)]
struct StepTally {
    completed: u32,
    /// Completions that let the steps needing it go: all but declined approvals.
    passed: u32,
    visits: u32,
    max_attempt: u32,
    /// Its attempts now running.
    running: u32,
    /// Completions elsewhere that routed to it (a join step counts its needs instead).
    routed: u32,
    /// The attempts of its latest visit, in the order they started.
    latest: Vec<Kept>,
}

/// A span some step waited for a person: from the end of the attempt that stopped for one to
/// the start of the step's next attempt (still open while there is none).
#[derive(Debug, Clone)]
struct Wait {
    step: usize,
    attempt: u32,
    from: Timestamp,
    until: Option<Timestamp>,
}

/// The planner's running account of one run's attempts.
///
/// Every attempt is applied once when it is first seen and again each time it changes (a
/// running attempt ends, a waiting one is answered); only attempts of a step's latest visit
/// change, as the store's rules ensure. What a plan needs is kept up to date as they are applied
/// (per step its visits, attempts, completions and arrivals; the run's tries and the steps that
/// may have something to do), so that a plan costs what the run does now, not what it did
/// before: a driver keeps one tally for a run's whole life instead of folding its history
/// again on every turn.
#[derive(Debug, Clone)]
pub struct Tally {
    steps: Vec<StepTally>,
    /// For each step, the join steps that need it.
    needed_by: Vec<Vec<usize>>,
    /// Steps with an attempt running.
    running_steps: usize,
    /// Attempts charged to the run's iteration budget.
    tries: usize,
    /// Completed attempts that skipped some of their work.
    with_issues: u32,
    /// Steps that may start or need a look: nothing of theirs runs, and their latest visit did
    /// not complete or more arrivals wait than they have visits. Ordered, so plans go in file
    /// order.
    open: BTreeSet<usize>,
    waits: Vec<Wait>,
}

impl Tally {
    /// The tally of a run that has no attempts yet.
    pub fn new(wf: &Workflow) -> Tally {
        let n = wf.steps.len();
        let mut needed_by = vec![Vec::new(); n];
        for (j, needs) in wf.graph.joins.iter().enumerate() {
            for &d in needs.iter().flatten() {
                if d < n {
                    needed_by[d].push(j);
                }
            }
        }
        let mut t = Tally {
            steps: vec![StepTally::default(); n],
            needed_by,
            running_steps: 0,
            tries: 0,
            with_issues: 0,
            open: BTreeSet::new(),
            waits: Vec::new(),
        };
        for i in 0..n {
            t.refresh(wf, i);
        }
        t
    }

    /// The tally of `facts`, in the order they started.
    pub fn of(wf: &Workflow, facts: &[AttemptFact<'_>]) -> Tally {
        let mut t = Tally::new(wf);
        for f in facts {
            t.apply(wf, f);
        }
        t
    }

    /// Takes in an attempt that is new or has changed since it was last applied (applying the
    /// same fact again changes nothing). Attempts of steps the workflow does not have are
    /// ignored.
    pub fn apply(&mut self, wf: &Workflow, f: &AttemptFact<'_>) {
        let Some(i) = wf.step_index(f.step_id).filter(|&i| i < self.steps.len()) else {
            return;
        };
        let kept = Kept {
            attempt: f.attempt,
            status: f.status,
            retryable: f.retryable,
            error: f.error.map(str::to_owned),
            finished_at: f.finished_at,
            answered: f.answered,
            declined: f.declined,
            with_issues: f.with_issues,
            routes: if f.status == AttemptStatus::Completed {
                f.routes.iter().filter_map(|r| wf.step_index(r)).collect()
            } else {
                Vec::new()
            },
        };
        let s = &mut self.steps[i];
        let known = if f.visit == s.visits { s.latest.iter().position(|k| k.attempt == f.attempt) } else { None };
        match known {
            Some(pos) => {
                let old = std::mem::replace(&mut s.latest[pos], kept.clone());
                self.count(wf, i, &old, false);
            }
            None => {
                if f.visit > s.visits {
                    s.latest.clear();
                    s.visits = f.visit;
                }
                if f.visit == s.visits {
                    s.latest.push(kept.clone());
                }
                s.max_attempt = s.max_attempt.max(f.attempt);
                // A later attempt of the step ends its waits for a person.
                for w in self.waits.iter_mut().filter(|w| w.step == i && w.attempt < f.attempt) {
                    w.until = Some(w.until.map_or(f.started_at, |u| u.min(f.started_at)));
                }
            }
        }
        if f.status == AttemptStatus::AwaitingUser
            && let Some(from) = f.finished_at
            && !self.waits.iter().any(|w| w.step == i && w.attempt == f.attempt)
        {
            self.waits.push(Wait { step: i, attempt: f.attempt, from, until: None });
        }
        self.count(wf, i, &kept, true);
    }

    /// Adds (or takes back) what one attempt of step `i` counts for.
    fn count(&mut self, wf: &Workflow, i: usize, k: &Kept, add: bool) {
        let step = |x: &mut u32| *x = if add { *x + 1 } else { x.saturating_sub(1) };
        let run = |x: &mut usize| *x = if add { *x + 1 } else { x.saturating_sub(1) };
        if charged(k.status) {
            run(&mut self.tries);
        }
        match k.status {
            AttemptStatus::Running => {
                let s = &mut self.steps[i];
                let was = s.running > 0;
                step(&mut s.running);
                if was != (s.running > 0) {
                    run(&mut self.running_steps);
                }
            }
            AttemptStatus::Completed => {
                let s = &mut self.steps[i];
                step(&mut s.completed);
                if !k.declined {
                    step(&mut s.passed);
                }
                if k.with_issues {
                    step(&mut self.with_issues);
                }
                for &r in &k.routes {
                    step(&mut self.steps[r].routed);
                    self.refresh(wf, r);
                }
                for k in 0..self.needed_by[i].len() {
                    let j = self.needed_by[i][k];
                    self.refresh(wf, j);
                }
            }
            _ => {}
        }
        self.refresh(wf, i);
    }

    /// How many visits step `i` is owed: a routed step one per arrival (the first step one to
    /// begin with), a join step one per completion of all its needs.
    fn arrivals(&self, wf: &Workflow, i: usize) -> u32 {
        match &wf.graph.joins[i] {
            Some(needs) => needs.iter().map(|&d| self.steps[d].passed).min().unwrap_or(1),
            None => self.steps[i].routed + u32::from(wf.graph.is_start(i)),
        }
    }

    fn refresh(&mut self, wf: &Workflow, i: usize) {
        let s = &self.steps[i];
        let unfinished = s.visits > 0 && !s.latest.iter().any(|k| k.status == AttemptStatus::Completed);
        if s.running == 0 && (unfinished || self.arrivals(wf, i) > s.visits) {
            self.open.insert(i);
        } else {
            self.open.remove(&i);
        }
    }

    /// How long, in all, some step of the run has waited for a person by `now`: from the end of
    /// each attempt that stopped for one to the start of the attempt after it (or `now`),
    /// overlaps counted once. A run's `run_timeout_seconds` bounds its own time, not a person's.
    pub fn waited_for_people(&self, now: Timestamp) -> i64 {
        let mut spans: Vec<(i64, i64)> = self
            .waits
            .iter()
            .map(|w| (w.from.0, w.until.unwrap_or(now).0))
            .filter(|(from, until)| until > from)
            .collect();
        spans.sort_unstable();
        let mut total = 0;
        let mut covered = i64::MIN;
        for (from, until) in spans {
            let from = from.max(covered);
            if until > from {
                total += until - from;
                covered = until;
            }
        }
        total
    }

    /// Decides the next actions for the run at `now`.
    pub fn plan(&self, wf: &Workflow, now: Timestamp) -> Plan {
        let running = self.running_steps;
        let mut candidates = Vec::new();
        // Steps stopped for a person: a gate holds the whole run, an approval only what needs it.
        let mut waiting = Vec::new();
        let mut approvals = Vec::new();
        let mut wake_at: Option<Timestamp> = None;
        let mut approval_due: Option<Timestamp> = None;
        for &i in &self.open {
            let (step, t) = (&wf.steps[i], &self.steps[i]);
            if t.visits > 0 && !t.latest.iter().any(|k| k.status == AttemptStatus::Completed) {
                // The current visit failed.
                let Some(last) = t.latest.iter().max_by_key(|k| k.attempt) else {
                    continue;
                };
                let again =
                    Start { step_index: i, step_id: step.id.clone(), attempt: t.max_attempt + 1, visit: t.visits };
                if last.status == AttemptStatus::AwaitingUser {
                    // Waiting for a person is not a failed try: the answer (or an approval's
                    // timeout) starts a fresh attempt, which reads it.
                    let timeout = match &step.kind {
                        StepKind::Approval(a) => Some(a.timeout_seconds),
                        _ => None,
                    };
                    let due = timeout
                        .flatten()
                        .map(|secs| last.finished_at.unwrap_or(now).plus_millis((secs as i64).saturating_mul(1000)));
                    if last.answered || due.is_some_and(|d| d <= now) {
                        candidates.push(again);
                    } else if timeout.is_some() {
                        approvals.push(step.id.clone());
                        approval_due = earliest(approval_due, due);
                    } else {
                        waiting.push(step.id.clone());
                    }
                    continue;
                }
                let why = last.error.as_deref().unwrap_or(last.status.as_str());
                if last.status == AttemptStatus::Poisoned {
                    let reason = format!("step `{}` is poisoned: {why}", step.id);
                    return Plan { verdict: Verdict::Poisoned { reason }, ..failed(String::new()) };
                }
                let tries = t.latest.iter().filter(|k| charged(k.status)).count() as u32;
                if !last.retryable || last.status == AttemptStatus::Cancelled {
                    return failed(format!("step `{}` failed: {why}", step.id));
                }
                if tries >= step.retry.max_attempts {
                    return failed(format!(
                        "step `{}` failed after {tries} attempt{}: {why}",
                        step.id,
                        if tries == 1 { "" } else { "s" }
                    ));
                }
                // A crash is not the step's fault: an interrupted attempt retries at once.
                let delay = match last.status {
                    AttemptStatus::Interrupted => 0,
                    _ => step.retry.delay_before(tries + 1) as i64,
                };
                let due = last.finished_at.unwrap_or(now).plus_millis(delay);
                if due <= now {
                    candidates.push(again);
                } else {
                    wake_at = earliest(wake_at, Some(due));
                }
                continue;
            }
            if self.arrivals(wf, i) > t.visits {
                candidates.push(Start {
                    step_index: i,
                    step_id: step.id.clone(),
                    attempt: t.max_attempt + 1,
                    visit: t.visits + 1,
                });
            }
        }

        let awaiting = |mut steps: Vec<String>| {
            steps.extend(approvals.iter().cloned());
            steps.sort_by_key(|s| wf.step_index(s));
            Plan {
                start: Vec::new(),
                wake_at: approval_due,
                approvals_waiting: approvals.clone(),
                verdict: Verdict::AwaitingUser { steps },
            }
        };
        if !waiting.is_empty() {
            // A run waiting at a gate starts nothing new; what runs finishes first.
            if running > 0 {
                return Plan {
                    start: Vec::new(),
                    wake_at: None,
                    approvals_waiting: approvals,
                    verdict: Verdict::Continue,
                };
            }
            return awaiting(waiting);
        }
        let capacity = (wf.limits.max_concurrent_steps as usize).saturating_sub(running);
        let mut start: Vec<Start> = candidates.into_iter().take(capacity).collect();
        let budget = (wf.limits.max_total_iterations as usize).saturating_sub(self.tries);
        if start.len() > budget {
            start.truncate(budget);
            if start.is_empty() && running == 0 {
                return failed(format!(
                    "workflow execution exceeded max total iterations ({})",
                    wf.limits.max_total_iterations
                ));
            }
        }
        if !start.is_empty() || running > 0 || wake_at.is_some() {
            // An approval's timeout wakes the run like a retry's backoff while other work goes on.
            let wake_at = earliest(wake_at, approval_due);
            return Plan { start, wake_at, approvals_waiting: approvals, verdict: Verdict::Continue };
        }
        if !approvals.is_empty() {
            // Only approvals are left to wait for: the run waits for a person, woken by a
            // decision or by the first timeout.
            return awaiting(Vec::new());
        }
        // Nothing runs and nothing can start: a join still short of some needs is stuck.
        for (i, needs) in wf.graph.joins.iter().enumerate() {
            let visits = self.steps[i].visits;
            if let Some(needs) = needs
                && let Some(&missing) = needs.iter().find(|&&d| self.steps[d].passed <= visits)
                && needs.iter().any(|&d| self.steps[d].passed > visits)
            {
                return failed(format!(
                    "step `{}` waits for `{}`, which can no longer run",
                    wf.steps[i].id, wf.steps[missing].id
                ));
            }
        }
        Plan {
            start,
            wake_at: None,
            approvals_waiting: Vec::new(),
            verdict: Verdict::Completed { with_issues: self.with_issues > 0 },
        }
    }
}

/// Decides the next actions for a run from its whole history (a driver keeps a [`Tally`]).
pub fn plan(wf: &Workflow, facts: &[AttemptFact<'_>], now: Timestamp) -> Plan {
    Tally::of(wf, facts).plan(wf, now)
}

/// Whether an attempt counts against its step's retries and the run's iteration budget. Waiting
/// for a person is not a try, and neither is an attempt its engine's crash or shutdown
/// interrupted (design decision 5): `limits.max_recoveries` bounds those instead.
fn charged(status: AttemptStatus) -> bool {
    !matches!(status, AttemptStatus::AwaitingUser | AttemptStatus::Interrupted)
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn failed(reason: String) -> Plan {
    Plan { start: Vec::new(), wake_at: None, approvals_waiting: Vec::new(), verdict: Verdict::Failed { reason } }
}

/// The steps a restart from step `from` runs again: `from` and every step its completion can
/// lead to, through routes and through the needs of join steps. The rest of a run's completed
/// work is what the restart reuses.
pub fn downstream(wf: &Workflow, from: usize) -> Vec<bool> {
    let mut reach = vec![false; wf.steps.len()];
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        if i >= reach.len() || std::mem::replace(&mut reach[i], true) {
            continue;
        }
        stack.extend(wf.graph.routes[i].iter().copied());
        for (j, needs) in wf.graph.joins.iter().enumerate() {
            if needs.as_ref().is_some_and(|needs| needs.contains(&i)) {
                stack.push(j);
            }
        }
    }
    reach
}

/// The steps a completed attempt of `step_id` routes to, recorded with it.
/// For a review or an approval, `decided` is its decision.
pub fn routes_of(wf: &Workflow, step_id: &str, decided: Option<Decided>) -> Vec<String> {
    wf.step_index(step_id)
        .map(|i| {
            wf.graph.routes_after(&wf.steps[i].route, i, decided).iter().map(|&j| wf.steps[j].id.clone()).collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::parse;
    use AttemptStatus::*;

    /// One recorded attempt: step, attempt, visit, status, retryable, finished at (ms), routes.
    #[derive(Clone)]
    struct Row(String, u32, u32, AttemptStatus, bool, i64, Vec<String>);

    struct Hist(Vec<Row>);

    impl Hist {
        fn facts(&self) -> Vec<AttemptFact<'_>> {
            self.0
                .iter()
                .map(|Row(s, a, v, st, retryable, fin, routes)| AttemptFact {
                    step_id: s,
                    attempt: *a,
                    visit: *v,
                    status: *st,
                    retryable: *retryable,
                    error: None,
                    started_at: Timestamp(*fin),
                    finished_at: Some(Timestamp(*fin)),
                    routes,
                    answered: false,
                    with_issues: false,
                    declined: false,
                })
                .collect()
        }
    }

    /// Runs the planner to the end, completing every started step with `outcome(step, attempt)`.
    fn drive(src: &str, outcome: impl Fn(&str, u32) -> AttemptStatus) -> (Vec<String>, Verdict) {
        let wf = parse(src).unwrap();
        let mut hist = Hist(Vec::new());
        let mut log = Vec::new();
        let mut now = 0;
        loop {
            let p = plan(&wf, &hist.facts(), Timestamp(now));
            if p.verdict != Verdict::Continue {
                return (log, p.verdict);
            }
            if p.start.is_empty() {
                now = p.wake_at.map_or(now + 1, |w| w.0);
                continue;
            }
            let batch: Vec<String> = p.start.iter().map(|s| format!("{}#{}", s.step_id, s.attempt)).collect();
            log.push(batch.join(" "));
            for s in p.start {
                let st = outcome(&s.step_id, s.attempt);
                let routes = if st == Completed { routes_of(&wf, &s.step_id, None) } else { Vec::new() };
                hist.0.push(Row(s.step_id, s.attempt, s.visit, st, true, now, routes));
            }
        }
    }

    const HELLO: &str =
        "id: hello\nversion: 1\nsteps:\n  - {id: greet, type: noop}\n  - {id: shout, type: noop, needs: [greet]}\n";
    const DAG: &str = "id: d\nversion: 1\nlimits: {max_concurrent_steps: 2}\nsteps:\n  - {id: a, type: noop}\n  - {id: b, type: noop, needs: [a]}\n  - {id: c, type: noop, needs: [a]}\n  - {id: d, type: noop, needs: [a]}\n  - {id: e, type: noop, needs: [b, c, d]}\n  - {id: f, type: noop}\n";

    #[test]
    fn sequential_dag_and_concurrency_limit() {
        assert_eq!(
            drive(HELLO, |_, _| Completed),
            (vec!["greet#1".into(), "shout#1".into()], Verdict::Completed { with_issues: false })
        );
        let (log, v) = drive(DAG, |_, _| Completed);
        assert_eq!(log, ["a#1", "b#1 c#1", "d#1", "e#1", "f#1"]);
        assert_eq!(v, Verdict::Completed { with_issues: false });
    }

    /// A review that rejects loops back; `max_total_iterations` bounds the loop.
    #[test]
    fn review_rejections_loop_back_until_approved_or_out_of_iterations() {
        let src = "id: r\nversion: 1\nagents: {a: {provider: scripted, script: s.yaml}}\nsteps:\n  - {id: plan, type: agent_task, agent: a, prompt: p}\n  - {id: review, type: agent_review, agent: a, prompt: r, on_reject: plan}\n  - {id: ship, type: noop}\n";
        let wf = parse(src).unwrap();
        let mut hist = Hist(Vec::new());
        let mut log = Vec::new();
        let mut reviews = 0;
        let verdict = loop {
            let p = plan(&wf, &hist.facts(), Timestamp(0));
            if p.verdict != Verdict::Continue {
                break p.verdict;
            }
            for s in p.start {
                log.push(format!("{}#{}", s.step_id, s.attempt));
                let approved = (s.step_id == "review").then(|| {
                    reviews += 1;
                    if reviews >= 2 { Decided::Approved } else { Decided::Rejected }
                });
                let routes = routes_of(&wf, &s.step_id, approved);
                hist.0.push(Row(s.step_id, s.attempt, s.visit, Completed, true, 0, routes));
            }
        };
        assert_eq!(log, ["plan#1", "review#1", "plan#2", "review#2", "ship#1"]);
        assert_eq!(verdict, Verdict::Completed { with_issues: false });

        let tight = src.replace("version: 1\n", "version: 1\nlimits: {max_total_iterations: 3}\n");
        let wf = parse(&tight).unwrap();
        let hist = Hist(vec![
            Row("plan".into(), 1, 1, Completed, true, 0, vec!["review".into()]),
            Row("review".into(), 1, 1, Completed, true, 0, vec!["plan".into()]),
            Row("plan".into(), 2, 2, Completed, true, 0, vec!["review".into()]),
        ]);
        let p = plan(&wf, &hist.facts(), Timestamp(0));
        assert_eq!(
            p.verdict,
            Verdict::Failed { reason: "workflow execution exceeded max total iterations (3)".into() }
        );
    }

    /// A completed attempt that skipped some of its work (a micro-task job that skipped tasks)
    /// completes the run with issues; the flag travels typed, never read from an output.
    #[test]
    fn a_completed_attempt_with_issues_completes_the_run_with_issues() {
        let wf = parse(HELLO).unwrap();
        let hist = Hist(vec![
            Row("greet".into(), 1, 1, Completed, false, 1, routes_of(&wf, "greet", None)),
            Row("shout".into(), 1, 1, Completed, false, 2, Vec::new()),
        ]);
        let mut facts = hist.facts();
        assert_eq!(plan(&wf, &facts, Timestamp(3)).verdict, Verdict::Completed { with_issues: false });
        facts[0].with_issues = true;
        assert_eq!(plan(&wf, &facts, Timestamp(3)).verdict, Verdict::Completed { with_issues: true });
    }

    /// A restart from a step runs it and what follows it (by routes and by needs), and reuses
    /// the rest.
    #[test]
    fn downstream_follows_routes_and_needs() {
        let wf = parse(DAG).unwrap();
        let names = |from: &str| -> Vec<String> {
            let reach = downstream(&wf, wf.step_index(from).unwrap());
            wf.steps.iter().zip(reach).filter(|(_, r)| *r).map(|(s, _)| s.id.clone()).collect()
        };
        // `f` follows `e` in file order; `b`, `c`, `d` and `e` are joins on their needs.
        assert_eq!(names("a"), ["a", "b", "c", "d", "e", "f"]);
        assert_eq!(names("c"), ["c", "e", "f"]);
        assert_eq!(names("f"), ["f"]);
    }

    #[test]
    fn next_skips_file_order() {
        let src = "id: n\nversion: 1\nsteps:\n  - {id: a, type: noop, next: c}\n  - {id: b, type: noop, next: c, needs: []}\n  - {id: c, type: noop}\n";
        // `b` is a root join (needs: []) that routes to `c`; `c` runs once per arrival.
        let (log, v) = drive(src, |_, _| Completed);
        assert_eq!(log, ["a#1 b#1", "c#1", "c#2"]);
        assert_eq!(v, Verdict::Completed { with_issues: false });
    }

    #[test]
    fn retries_wait_for_backoff_then_fail_with_the_count() {
        let src = "id: r\nversion: 1\nsteps:\n  - id: a\n    type: noop\n    retry: {max_attempts: 3, backoff: {initial_seconds: 2}}\n";
        let (log, v) = drive(src, |_, a| if a < 3 { Failed } else { Completed });
        assert_eq!(log, ["a#1", "a#2", "a#3"]);
        assert_eq!(v, Verdict::Completed { with_issues: false });
        let (_, v) = drive(src, |_, _| Failed);
        assert_eq!(v, Verdict::Failed { reason: "step `a` failed after 3 attempts: failed".into() });

        let wf = parse(src).unwrap();
        let hist = Hist(vec![Row("a".into(), 1, 1, Failed, true, 1000, vec![])]);
        let p = plan(&wf, &hist.facts(), Timestamp(1500));
        assert_eq!((p.start.len(), p.wake_at, p.verdict), (0, Some(Timestamp(3000)), Verdict::Continue));
    }

    #[test]
    fn interrupted_attempts_retry_and_completed_steps_never_rerun() {
        let wf = parse(HELLO).unwrap();
        let routes = vec!["shout".to_string()];
        let hist = Hist(vec![
            Row("greet".into(), 1, 1, Completed, true, 0, routes.clone()),
            Row("shout".into(), 1, 1, Interrupted, true, 0, vec![]),
        ]);
        let p = plan(&wf, &hist.facts(), Timestamp(0));
        assert_eq!(p.start, vec![Start { step_index: 1, step_id: "shout".into(), attempt: 2, visit: 1 }]);
    }

    /// Design decision 5: an engine crash is not the step's fault. Interrupted attempts use
    /// neither the step's retries nor the run's iteration budget, however many there are, and
    /// they do not delay the retry; the step's own failures still do.
    #[test]
    fn interrupted_attempts_cost_no_retries_and_no_iterations() {
        let src = "id: c\nversion: 1\nlimits: {max_total_iterations: 2}\nsteps:\n  - id: a\n    type: noop\n    retry: {max_attempts: 2, backoff: {initial_seconds: 5}}\n  - {id: b, type: noop}\n";
        let wf = parse(src).unwrap();
        let mut rows: Vec<Row> = (1..=6).map(|n| Row("a".into(), n, 1, Interrupted, true, 0, vec![])).collect();
        let p = plan(&wf, &Hist(rows.clone()).facts(), Timestamp(0));
        assert_eq!(p.start, vec![Start { step_index: 0, step_id: "a".into(), attempt: 7, visit: 1 }]);

        // One real failure: the retry waits for its backoff and is the step's last try.
        rows.push(Row("a".into(), 7, 1, Failed, true, 0, vec![]));
        let p = plan(&wf, &Hist(rows.clone()).facts(), Timestamp(0));
        assert_eq!((p.start.len(), p.wake_at), (0, Some(Timestamp(5000))));
        rows.push(Row("a".into(), 8, 1, Interrupted, true, 6000, vec![]));
        let p = plan(&wf, &Hist(rows.clone()).facts(), Timestamp(6000));
        assert_eq!(p.start, vec![Start { step_index: 0, step_id: "a".into(), attempt: 9, visit: 1 }]);
        rows.push(Row("a".into(), 9, 1, Failed, true, 7000, vec![]));
        assert_eq!(
            plan(&wf, &Hist(rows).facts(), Timestamp(9000)).verdict,
            Verdict::Failed { reason: "step `a` failed after 2 attempts: failed".into() }
        );
    }

    #[test]
    fn non_retryable_failure_and_iteration_limit_fail_the_run() {
        let wf = parse(HELLO).unwrap();
        let hist = Hist(vec![Row("greet".into(), 1, 1, Failed, false, 0, vec![])]);
        assert_eq!(
            plan(&wf, &hist.facts(), Timestamp(0)).verdict,
            Verdict::Failed { reason: "step `greet` failed: failed".into() }
        );

        let src = "id: r\nversion: 1\nlimits: {max_total_iterations: 2}\nsteps:\n  - {id: a, type: noop, retry: {max_attempts: 5, backoff: {initial_seconds: 0}}}\n";
        let (log, v) = drive(src, |_, _| Failed);
        assert_eq!(log, ["a#1", "a#2"]);
        assert_eq!(v, Verdict::Failed { reason: "workflow execution exceeded max total iterations (2)".into() });
    }

    /// A step that stops for a person holds the run once nothing else runs; the answer starts a
    /// fresh attempt at once, charged neither to the step's retries nor to the iteration budget.
    #[test]
    fn waiting_for_a_person_is_not_a_failed_try() {
        let src = "id: w\nversion: 1\nlimits: {max_total_iterations: 2}\nsteps:\n  - {id: a, type: noop, retry: {max_attempts: 1}}\n  - {id: b, type: noop, needs: []}\n";
        let wf = parse(src).unwrap();
        let waiting = Row("a".into(), 1, 1, AwaitingUser, false, 0, vec![]);
        let hist = Hist(vec![waiting, Row("b".into(), 1, 1, Running, false, 0, vec![])]);
        let p = plan(&wf, &hist.facts(), Timestamp(0));
        assert_eq!((p.start.len(), p.verdict), (0, Verdict::Continue), "b still runs: wait for it");

        let hist = Hist(vec![
            Row("a".into(), 1, 1, AwaitingUser, false, 0, vec![]),
            Row("b".into(), 1, 1, Completed, false, 0, vec![]),
        ]);
        assert_eq!(plan(&wf, &hist.facts(), Timestamp(0)).verdict, Verdict::AwaitingUser { steps: vec!["a".into()] });

        let mut facts = hist.facts();
        facts[0].answered = true;
        let p = plan(&wf, &facts, Timestamp(0));
        assert_eq!(p.start, vec![Start { step_index: 0, step_id: "a".into(), attempt: 2, visit: 1 }]);
        assert_eq!(p.verdict, Verdict::Continue);

        // Two pauses and the fresh attempt still fit a retry budget of 1 and 2 iterations.
        let hist = Hist(vec![
            Row("a".into(), 1, 1, AwaitingUser, false, 0, vec![]),
            Row("a".into(), 2, 1, AwaitingUser, false, 0, vec![]),
            Row("b".into(), 1, 1, Completed, false, 0, vec![]),
        ]);
        let mut facts = hist.facts();
        facts[1].answered = true;
        assert_eq!(plan(&wf, &facts, Timestamp(0)).start.len(), 1);
    }

    const SIGN_OFF: &str = "id: s\nversion: 1\nsteps:\n  - {id: build, type: noop}\n  - {id: sign, type: approval, prompt: ship?, needs: [build], timeout_seconds: 60, on_timeout: late, on_reject: late}\n  - {id: docs, type: noop, needs: [build]}\n  - {id: ship, type: noop, needs: [sign]}\n  - {id: late, type: noop}\n";

    /// An approval inside a `needs` DAG holds back only the steps that need it: `docs` runs
    /// while `sign` waits, and the run waits for a person only once nothing else can go, woken
    /// by the approval's timeout.
    #[test]
    fn an_approval_holds_back_only_the_steps_that_need_it() {
        let wf = parse(SIGN_OFF).unwrap();
        let mut rows = vec![
            Row("build".into(), 1, 1, Completed, false, 0, vec![]),
            Row("sign".into(), 1, 1, AwaitingUser, false, 1000, vec![]),
        ];
        let p = plan(&wf, &Hist(rows.clone()).facts(), Timestamp(1000));
        assert_eq!(p.start.iter().map(|s| s.step_id.as_str()).collect::<Vec<_>>(), ["docs"]);
        assert_eq!(p.approvals_waiting, ["sign"], "the caller looks for its decision meanwhile");
        assert_eq!((p.verdict, p.wake_at), (Verdict::Continue, Some(Timestamp(61_000))));

        rows.push(Row("docs".into(), 1, 1, Completed, false, 2000, vec![]));
        let p = plan(&wf, &Hist(rows.clone()).facts(), Timestamp(2000));
        assert_eq!(p.verdict, Verdict::AwaitingUser { steps: vec!["sign".into()] });
        assert_eq!((p.start.len(), p.wake_at), (0, Some(Timestamp(61_000))));

        // The timeout starts the attempt that reads the decision (or its absence).
        let p = plan(&wf, &Hist(rows.clone()).facts(), Timestamp(61_000));
        assert_eq!(p.start, vec![Start { step_index: 1, step_id: "sign".into(), attempt: 2, visit: 1 }]);

        // Declined (routed to `late`): `ship`, which needs the approval, never goes, and the
        // run completes once `late` has.
        rows.push(Row("sign".into(), 2, 1, Completed, false, 61_000, vec!["late".into()]));
        let hist = Hist(rows.clone());
        let mut facts = hist.facts();
        facts.last_mut().unwrap().declined = true;
        let p = plan(&wf, &facts, Timestamp(61_000));
        assert_eq!(p.start.iter().map(|s| s.step_id.as_str()).collect::<Vec<_>>(), ["late"]);
        rows.push(Row("late".into(), 1, 1, Completed, false, 62_000, vec![]));
        let hist = Hist(rows.clone());
        let mut facts = hist.facts();
        facts[3].declined = true;
        assert_eq!(plan(&wf, &facts, Timestamp(62_000)).verdict, Verdict::Completed { with_issues: false });
        // Approved instead: `ship` goes.
        let hist = Hist(rows[..4].to_vec());
        let p = plan(&wf, &hist.facts(), Timestamp(61_000));
        assert!(p.start.iter().any(|s| s.step_id == "ship"), "{p:?}");
    }

    /// A gate waiting beside an approval holds the run; both are named.
    #[test]
    fn a_gate_and_an_approval_wait_together() {
        let src = "id: g\nversion: 1\nsteps:\n  - {id: a, type: noop}\n  - {id: sign, type: approval, prompt: ok?, needs: []}\n";
        let wf = parse(src).unwrap();
        let hist = Hist(vec![
            Row("a".into(), 1, 1, AwaitingUser, false, 0, vec![]),
            Row("sign".into(), 1, 1, AwaitingUser, false, 0, vec![]),
        ]);
        let p = plan(&wf, &hist.facts(), Timestamp(5));
        assert_eq!(p.verdict, Verdict::AwaitingUser { steps: vec!["a".into(), "sign".into()] });
        assert_eq!(p.wake_at, None, "an approval without a timeout waits for ever");
    }

    /// One attempt as a driver sees it change: started, then ended, then perhaps answered.
    struct Seen {
        step: String,
        attempt: u32,
        visit: u32,
        status: AttemptStatus,
        retryable: bool,
        started: i64,
        finished: Option<i64>,
        routes: Vec<String>,
        answered: bool,
        declined: bool,
    }

    fn seen_fact(a: &Seen) -> AttemptFact<'_> {
        AttemptFact {
            step_id: &a.step,
            attempt: a.attempt,
            visit: a.visit,
            status: a.status,
            retryable: a.retryable,
            error: None,
            started_at: Timestamp(a.started),
            finished_at: a.finished.map(Timestamp),
            routes: &a.routes,
            answered: a.answered,
            with_issues: false,
            declined: a.declined,
        }
    }

    /// A tally kept up to date attempt by attempt, as a driver keeps it (each attempt applied
    /// when it starts, when it ends and when it is answered), plans exactly as one folded from
    /// the whole history, over seeded random outcomes of every kind on workflows with joins,
    /// routes, review loops, retries, gates and approvals.
    #[test]
    fn a_tally_kept_up_to_date_plans_as_one_folded_from_the_whole_history() {
        let review = "id: r\nversion: 1\nlimits: {max_total_iterations: 12}\nagents: {a: {provider: scripted, script: s.yaml}}\nsteps:\n  - {id: plan, type: agent_task, agent: a, prompt: p, retry: {max_attempts: 3, backoff: {initial_seconds: 1}}}\n  - {id: review, type: agent_review, agent: a, prompt: r, on_reject: plan}\n  - {id: ship, type: noop}\n";
        let next = "id: n\nversion: 1\nsteps:\n  - {id: a, type: noop, next: c, retry: {max_attempts: 4}}\n  - {id: b, type: noop, next: c, needs: []}\n  - {id: c, type: noop}\n";
        let mut plans = 0;
        for src in [HELLO, DAG, review, SIGN_OFF, next] {
            let wf = parse(src).unwrap();
            for seed in 0..40u64 {
                let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut roll = |n: u64| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state % n
                };
                let mut seen: Vec<Seen> = Vec::new();
                let mut kept = Tally::new(&wf);
                let mut now = 0i64;
                for _turn in 0..80 {
                    let facts: Vec<AttemptFact<'_>> = seen.iter().map(seen_fact).collect();
                    let folded = Tally::of(&wf, &facts);
                    let p = folded.plan(&wf, Timestamp(now));
                    plans += 1;
                    assert_eq!(kept.plan(&wf, Timestamp(now)), p, "{src} seed {seed} at {now}");
                    assert_eq!(
                        kept.waited_for_people(Timestamp(now)),
                        folded.waited_for_people(Timestamp(now)),
                        "{src} seed {seed} at {now}"
                    );
                    match &p.verdict {
                        Verdict::Continue => {}
                        Verdict::AwaitingUser { .. } => {
                            // A person answers every waiting attempt.
                            for a in seen.iter_mut().filter(|a| a.status == AwaitingUser && !a.answered) {
                                a.answered = true;
                                kept.apply(&wf, &seen_fact(a));
                            }
                            now += 1000;
                            continue;
                        }
                        _ => break,
                    }
                    for s in &p.start {
                        seen.push(Seen {
                            step: s.step_id.clone(),
                            attempt: s.attempt,
                            visit: s.visit,
                            status: Running,
                            retryable: false,
                            started: now,
                            finished: None,
                            routes: Vec::new(),
                            answered: false,
                            declined: false,
                        });
                        kept.apply(&wf, &seen_fact(seen.last().unwrap()));
                    }
                    now += 1 + roll(1500) as i64;
                    let running: Vec<usize> = (0..seen.len()).filter(|&i| seen[i].status == Running).collect();
                    for (n, &i) in running.iter().enumerate() {
                        if n > 0 && roll(2) == 0 {
                            continue;
                        }
                        let a = &mut seen[i];
                        let decided = if roll(3) == 0 { Decided::Rejected } else { Decided::Approved };
                        a.finished = Some(now);
                        a.retryable = true;
                        a.status = match roll(12) {
                            0..=5 => Completed,
                            6 | 7 => Failed,
                            8 => Interrupted,
                            9 | 10 => AwaitingUser,
                            _ => {
                                a.retryable = false;
                                Failed
                            }
                        };
                        if a.status == Completed {
                            let kind = &wf.step(&a.step).unwrap().kind;
                            let decision = match kind {
                                StepKind::Agent(g) if g.review => Some(decided),
                                StepKind::Approval(_) => Some(decided),
                                _ => None,
                            };
                            a.routes = routes_of(&wf, &a.step, decision);
                            a.declined = matches!(kind, StepKind::Approval(_)) && decided != Decided::Approved;
                        }
                        kept.apply(&wf, &seen_fact(a));
                    }
                }
            }
        }
        assert!(plans > 1000, "the comparison ran {plans} plans");
    }

    #[test]
    fn time_waiting_for_people_is_counted_once() {
        let hist = Hist(vec![
            Row("a".into(), 1, 1, AwaitingUser, false, 1000, vec![]),
            Row("b".into(), 1, 1, AwaitingUser, false, 1500, vec![]),
            Row("a".into(), 2, 1, Completed, false, 3000, vec![]),
            Row("b".into(), 2, 1, Completed, false, 4000, vec![]),
            Row("c".into(), 1, 1, AwaitingUser, false, 9000, vec![]),
        ]);
        let wf = parse(
            "id: w\nversion: 1\nsteps:\n  - {id: a, type: noop}\n  - {id: b, type: noop}\n  - {id: c, type: noop}\n",
        )
        .unwrap();
        // [1000, 3000) and [1500, 4000) overlap into 3000 ms; `c` has waited 1000 ms by 10000.
        assert_eq!(Tally::of(&wf, &hist.facts()).waited_for_people(Timestamp(10_000)), 4000);
    }
}
