//! The records a store keeps and the change sets it applies.

use serde::Serialize;
use serde_json::{Map, Value};

use steward_core::Timestamp;
use steward_core::event::{Actor, NewEvent};
use steward_core::job::JobContract;
use steward_core::liveness::ProcessRef;
use steward_core::state::{AttemptStatus, HumanDecision, RunState, TransitionCause};

/// A run to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// Unique run id.
    pub run_id: String,
    /// The workflow's id.
    pub workflow_id: String,
    /// The workflow's version.
    pub workflow_version: u32,
    /// SHA-256 of `definition_source`.
    pub definition_hash: String,
    /// The YAML the run executes, kept so a resumed run uses it.
    pub definition_source: String,
    /// Typed input values.
    pub inputs: Map<String, Value>,
    /// The absolute directory steps run in (the workspace root).
    pub workdir: String,
    /// The job this run executes.
    pub job_id: String,
    /// Correlates the job's events.
    pub trace_id: String,
    /// Job kind, profile and protocol.
    pub contract: JobContract,
    /// Who asked for it.
    pub actor: Actor,
    /// Which one.
    pub actor_id: String,
    /// When.
    pub now: Timestamp,
    /// For a restart or fork: the run it comes from and the work of it that it reuses.
    pub lineage: Option<Lineage>,
}

/// Where a restarted or forked run comes from: its parent, and the parent's completed attempts
/// it reuses instead of running them again. They are recorded with the new run, in the same
/// write, as completed attempts that name the attempt they reuse.
#[derive(Debug, Clone, PartialEq)]
pub struct Lineage {
    /// The run it was made from.
    pub parent_run_id: String,
    /// The parent's completed attempts it takes as its own, in the order they ran.
    pub reused: Vec<ReusedAttempt>,
}

/// A completed attempt of a parent run, taken over by a restart or fork.
#[derive(Debug, Clone, PartialEq)]
pub struct ReusedAttempt {
    /// The step.
    pub step_id: String,
    /// Its attempt number in the new run.
    pub attempt: u32,
    /// Its visit.
    pub visit: u32,
    /// What it was given.
    pub input: Value,
    /// What it produced.
    pub output: Option<Value>,
    /// Whether it skipped work.
    pub with_issues: bool,
    /// The steps it routed to.
    pub routes: Vec<String>,
    /// The idempotency key of the parent's attempt (`run:step:attempt`).
    pub from: String,
}

impl ReusedAttempt {
    /// The completed attempt of run `run_id` it becomes, recorded at `now`.
    pub fn attempt_of(&self, run_id: &str, now: Timestamp) -> Attempt {
        Attempt {
            run_id: run_id.to_owned(),
            step_id: self.step_id.clone(),
            attempt: self.attempt,
            visit: self.visit,
            status: AttemptStatus::Completed,
            idempotency_key: steward_core::idempotency_key(run_id, &self.step_id, self.attempt),
            input: self.input.clone(),
            output: self.output.clone(),
            error: None,
            retryable: false,
            with_issues: self.with_issues,
            routes: self.routes.clone(),
            answer: None,
            answer_detail: None,
            reused_from: Some(self.from.clone()),
            process: None,
            started_at: now,
            finished_at: Some(now),
        }
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// Unique run id.
    pub run_id: String,
    /// The workflow's id.
    pub workflow_id: String,
    /// The workflow's version.
    pub workflow_version: u32,
    /// The pinned definition.
    pub definition_hash: String,
    /// Typed input values.
    pub inputs: Map<String, Value>,
    /// The absolute directory steps run in (the workspace root).
    pub workdir: String,
    /// Current state.
    pub state: RunState,
    /// The step most recently started.
    pub current_step_id: Option<String>,
    /// Its attempt number.
    pub current_attempt: Option<u32>,
    /// One line on where the run stands.
    pub summary: String,
    /// Why the run ended, once terminal.
    pub terminal_reason: Option<String>,
    /// The job.
    pub job_id: String,
    /// Correlates the job's events.
    pub trace_id: String,
    /// Job kind, profile and protocol.
    pub contract: JobContract,
    /// Attempts made so far, retries included.
    pub total_iterations: u32,
    /// The process executing it, while it holds the run's lease.
    pub owner: Option<String>,
    /// Which operating-system process that owner is, when it said so: lets a peer on the same
    /// machine see at once that the owner died, without waiting for its heartbeat to go stale.
    pub owner_process: Option<ProcessRef>,
    /// The fencing token: raised by every claim, so a write naming an older epoch is refused.
    /// `0` for a run never claimed.
    pub lease_epoch: u64,
    /// When the owner's lease ends unless renewed, on the database's clock.
    pub lease_expires_at: Option<Timestamp>,
    /// For a `running` run that nobody holds (released, or waiting for a retry's backoff):
    /// when a worker may claim it, on the database's clock; `None` is at once.
    pub ready_at: Option<Timestamp>,
    /// How often the run was found abandoned by a dead engine and recovered
    /// (`limits.max_recoveries` bounds it); an engine releasing a run on shutdown does not count.
    pub recoveries: u32,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it first started running.
    pub started_at: Option<Timestamp>,
    /// When the record last changed.
    pub updated_at: Timestamp,
    /// When its owner last claimed or renewed the lease, on the database's clock.
    pub heartbeat_at: Option<Timestamp>,
    /// Last progress (a write or a heartbeat).
    pub last_progress_at: Timestamp,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
    /// The sequence number of its latest event.
    pub last_event_seq: i64,
    /// The run a restart or fork made it from.
    pub parent_run_id: Option<String>,
}

impl Run {
    /// The run a [`NewRun`] creates: `queued`, held by nobody, no event yet.
    pub fn queued(new: &NewRun) -> Run {
        Run {
            run_id: new.run_id.clone(),
            workflow_id: new.workflow_id.clone(),
            workflow_version: new.workflow_version,
            definition_hash: new.definition_hash.clone(),
            inputs: new.inputs.clone(),
            workdir: new.workdir.clone(),
            state: RunState::Queued,
            current_step_id: None,
            current_attempt: None,
            summary: "queued".into(),
            terminal_reason: None,
            job_id: new.job_id.clone(),
            trace_id: new.trace_id.clone(),
            contract: new.contract.clone(),
            total_iterations: 0,
            owner: None,
            owner_process: None,
            lease_epoch: 0,
            lease_expires_at: None,
            ready_at: None,
            recoveries: 0,
            created_at: new.now,
            started_at: None,
            updated_at: new.now,
            heartbeat_at: None,
            last_progress_at: new.now,
            finished_at: None,
            last_event_seq: 0,
            parent_run_id: new.lineage.as_ref().map(|l| l.parent_run_id.clone()),
        }
    }

    /// Input names, sorted.
    pub fn input_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.inputs.keys().cloned().collect();
        keys.sort();
        keys
    }
}

/// One step attempt (HSK-WF-001: one row per node execution).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// The run.
    pub run_id: String,
    /// The step.
    pub step_id: String,
    /// Attempt number, increasing per step across the run.
    pub attempt: u32,
    /// Which visit of the step.
    pub visit: u32,
    /// Its status.
    pub status: AttemptStatus,
    /// `run:step:attempt`.
    pub idempotency_key: String,
    /// What the step was given (rendered command, environment names, ...).
    pub input: Value,
    /// What it produced.
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Whether a failure may be retried.
    pub retryable: bool,
    /// A completed attempt that skipped some of its work (a micro-task job that skipped
    /// tasks): the run ends `completed_with_issues`.
    pub with_issues: bool,
    /// For a completed attempt, the steps it routed to.
    pub routes: Vec<String>,
    /// For an attempt that stopped for a person, their answer, once given.
    pub answer: Option<HumanDecision>,
    /// Who gave that answer, their comment and the form they filled in.
    pub answer_detail: Option<AnswerDetail>,
    /// For an attempt a restart or fork took over from its parent: that attempt's idempotency
    /// key. It did not run here.
    pub reused_from: Option<String>,
    /// The process group of the command it runs (the latest, for a step that runs several),
    /// recorded before the command may start; what recovery kills if the engine died.
    pub process: Option<ProcessRef>,
    /// Recorded before it started.
    pub started_at: Timestamp,
    /// Recorded after it ended.
    pub finished_at: Option<Timestamp>,
}

impl Attempt {
    /// The row an [`AttemptStart`] creates.
    pub fn started(run_id: &str, s: &AttemptStart, now: Timestamp) -> Attempt {
        Attempt {
            run_id: run_id.to_owned(),
            step_id: s.step_id.clone(),
            attempt: s.attempt,
            visit: s.visit,
            status: AttemptStatus::Running,
            idempotency_key: steward_core::idempotency_key(run_id, &s.step_id, s.attempt),
            input: s.input.clone(),
            output: None,
            error: None,
            retryable: false,
            with_issues: false,
            routes: Vec::new(),
            answer: None,
            answer_detail: None,
            reused_from: None,
            process: None,
            started_at: now,
            finished_at: None,
        }
    }

    /// Records how the attempt ended (callers check the transition first).
    pub fn finish(&mut self, f: &AttemptFinish, now: Timestamp) {
        self.status = f.status;
        self.output = f.output.clone();
        self.error = f.error.clone();
        self.retryable = f.retryable;
        self.with_issues = f.with_issues;
        self.routes = f.routes.clone();
        self.finished_at = Some(now);
    }
}

/// Which state (and lease) a commit expects; anything else is a conflict.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// The state the writer last saw.
    pub state: RunState,
    /// If set, the lease epoch the writer holds: the run must still be held under exactly this
    /// epoch (fencing: once the run is claimed again or released, the old holder's writes are
    /// refused).
    pub epoch: Option<u64>,
}

impl Expect {
    /// A write by whoever holds the run's lease under `epoch`.
    pub fn held(epoch: u64) -> Expect {
        Expect { state: RunState::Running, epoch: Some(epoch) }
    }

    /// A write that only expects a state (an operator's, or one made before anyone holds the run).
    pub fn state(state: RunState) -> Expect {
        Expect { state, epoch: None }
    }
}

/// A state transition with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The new state.
    pub to: RunState,
    /// Who causes it.
    pub cause: TransitionCause,
    /// Why; becomes the terminal reason for a terminal state.
    pub reason: String,
}

/// An attempt to record before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptStart {
    /// The step.
    pub step_id: String,
    /// Its attempt number.
    pub attempt: u32,
    /// Its visit.
    pub visit: u32,
    /// What it is given.
    pub input: Value,
}

/// An attempt's end to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFinish {
    /// The step.
    pub step_id: String,
    /// Its attempt number.
    pub attempt: u32,
    /// How it ended (not `running`).
    pub status: AttemptStatus,
    /// What it produced.
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Whether a failure may be retried.
    pub retryable: bool,
    /// Completed, but some of its work was skipped (see [`Attempt::with_issues`]).
    pub with_issues: bool,
    /// For a completed attempt, the steps it routes to.
    pub routes: Vec<String>,
}

/// A person's answer to an attempt that stopped for them. The store sets it on the attempt
/// (once: an answered attempt refuses another) and records `human_decision` in the same write.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The step.
    pub step_id: String,
    /// The attempt that waits (status `awaiting_user`).
    pub attempt: u32,
    /// The answer.
    pub decision: HumanDecision,
    /// What the attempt stopped at (`gate`, or the pause point's kind), for the record.
    pub gate: String,
    /// Why, in the person's words.
    pub reason: Option<String>,
    /// The fields of an approval's form, typed as the form declares them.
    pub fields: serde_json::Map<String, Value>,
}

/// What a person's answer said besides its decision, kept on the attempt it answers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnswerDetail {
    /// Who answered (the commit's actor id).
    pub by: String,
    /// Their comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The form they filled in.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, Value>,
}

impl AnswerDetail {
    /// The detail an [`Answer`] given by `by` leaves on its attempt.
    pub fn of(a: &Answer, by: &str) -> AnswerDetail {
        AnswerDetail { by: by.to_owned(), reason: a.reason.clone(), fields: a.fields.clone() }
    }

    /// As stored.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// A command process a running attempt is about to let run.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptProcess {
    /// The step.
    pub step_id: String,
    /// Its attempt number (the attempt must be running).
    pub attempt: u32,
    /// The command's process, leader of its own group.
    pub process: ProcessRef,
}

/// A lease on a run, as its holder names it in renewals and writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The run.
    pub run_id: String,
    /// The epoch the claim raised the run to.
    pub epoch: u64,
}

/// What a worker asks for when it claims runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Who claims, recorded as the owner.
    pub owner: Owner,
    /// How long the lease lasts unless renewed, measured on the database's clock.
    pub lease_ms: u64,
    /// At most this many runs.
    pub limit: u32,
    /// Only this run (`steward run` and `resume` claim the run they drive).
    pub run_id: Option<String>,
    /// Only runs whose workspace is one of these directories or beneath one; empty for any.
    pub workdirs: Vec<String>,
    /// Also take `stalled` runs and continue them (the automatic-resume policy).
    pub resume_stalled: bool,
    /// Leave the runs of these owners alone even if their leases ran out: owners the claimer's
    /// recovery scan found stopped but not yet past their lease by its clock, and so not yet
    /// killed (a stopped owner is killed before its run is taken).
    pub spare_owners: Vec<String>,
    /// The claimer's time, for the events it records (never for lease arithmetic).
    pub now: Timestamp,
}

/// A run a claim took.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The run as it is now: `running`, held by the claimer under [`Run::lease_epoch`].
    pub run: Run,
    /// The state it was claimed from.
    pub from: RunState,
    /// For a run whose previous owner's lease had expired: that owner.
    pub recovered_from: Option<String>,
}

impl Claimed {
    /// The lease the claim holds.
    pub fn lease(&self) -> Lease {
        Lease { run_id: self.run.run_id.clone(), epoch: self.run.lease_epoch }
    }
}

/// Gives a held run back without ending it: it stays `running` with no owner and is claimable
/// by any worker after `after_ms` (a worker shutting down, a retry waiting on a long backoff).
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// How long, on the database's clock, before it may be claimed.
    pub after_ms: u64,
    /// Why, for its event.
    pub reason: String,
}

/// Who takes a run over.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    /// Its owner id, unique among live processes.
    pub id: String,
    /// Its operating-system process, when known.
    pub process: Option<ProcessRef>,
}

impl From<&str> for Owner {
    fn from(id: &str) -> Owner {
        Owner { id: id.to_owned(), process: None }
    }
}

/// One atomic change to one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// Makes the commit idempotent: a commit whose id the run already applied is not applied
    /// again, so a writer that lost the reply may send it again. `None` opts out.
    pub id: Option<String>,
    /// The run.
    pub run_id: String,
    /// What the writer expects to find.
    pub expect: Expect,
    /// When.
    pub now: Timestamp,
    /// Who.
    pub actor: Actor,
    /// Which one.
    pub actor_id: String,
    /// Events that happened during the attempts this commit ends (tool
    /// calls, gate and capability decisions), written first.
    pub events: Vec<NewEvent>,
    /// Attempts that ended.
    pub finished: Vec<AttemptFinish>,
    /// A state change.
    pub transition: Option<Transition>,
    /// Attempts about to start.
    pub started: Vec<AttemptStart>,
    /// Command processes of running attempts, recorded before the commands may run.
    pub processes: Vec<AttemptProcess>,
    /// A person's answers to attempts that wait for them; the commit's actor is who answered.
    pub answers: Vec<Answer>,
    /// Finish every other `running` attempt with this status (cancel, resume).
    pub finish_running_as: Option<AttemptStatus>,
    /// A new summary line.
    pub summary: Option<String>,
    /// Give the held run back (only with an `expect.epoch`, and with no attempt left running).
    pub release: Option<Release>,
    /// With a transition to `awaiting_user`: the run becomes claimable again after this many
    /// ms on the database's clock, answered or not (an approval's timeout). Without it, only
    /// an answer moves a waiting run.
    pub wake_after_ms: Option<u64>,
}

impl Commit {
    /// An empty commit against `expect`.
    pub fn new(run_id: &str, expect: Expect, now: Timestamp, actor: Actor, actor_id: &str) -> Commit {
        Commit {
            id: None,
            run_id: run_id.to_owned(),
            expect,
            now,
            actor,
            actor_id: actor_id.to_owned(),
            events: Vec::new(),
            finished: Vec::new(),
            transition: None,
            started: Vec::new(),
            processes: Vec::new(),
            answers: Vec::new(),
            finish_running_as: None,
            summary: None,
            release: None,
            wake_after_ms: None,
        }
    }
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitOutcome {
    /// The run's state afterwards.
    pub state: RunState,
    /// Its latest event sequence number.
    pub last_event_seq: i64,
}

/// What the recovery scan looks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scan {
    /// The lease length, for the record: a `running` run whose owner's lease has expired (on
    /// the database's clock) is stalled.
    pub threshold_secs: u64,
    /// Owners known to be dead (their process has exited): their runs are stalled whatever
    /// their heartbeat says.
    pub dead_owners: Vec<String>,
    /// Owners that stopped renewing their heartbeat while alive and were killed for it.
    pub killed_owners: Vec<String>,
    /// Owners whose runs this scan leaves alone whatever their leases say (a stopped owner the
    /// scanner has not killed yet: its run is taken only once it is).
    pub spare_owners: Vec<String>,
    /// Instead of stalling the abandoned runs, end their leases now, so that the next claim
    /// recovers them (a worker's scan: the claim records the recovery, naming both owners).
    pub hand_over: bool,
}

/// A run the recovery scan stalled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovered {
    /// The run.
    pub run_id: String,
    /// Its workflow.
    pub workflow_id: String,
    /// Why it was found abandoned.
    pub reason: String,
    /// Its last heartbeat.
    pub last_heartbeat_at: Option<Timestamp>,
    /// Attempts marked interrupted.
    pub interrupted_attempts: Vec<String>,
}

/// Which runs to list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunFilter {
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// At most this many (newest first); `None` for all.
    pub limit: Option<u32>,
    /// Only runs of this workflow.
    pub workflow_id: Option<String>,
    /// Only runs whose id, workflow id or summary contains this text (case-sensitive).
    pub text: Option<String>,
    /// Only runs created at or after this time.
    pub created_since: Option<Timestamp>,
    /// Only runs created before this time.
    pub created_before: Option<Timestamp>,
    /// Only runs that come after this one in the newest-first order (its creation time and
    /// id): the next page after a page that ended with it.
    pub after: Option<(Timestamp, String)>,
}

impl RunFilter {
    /// Whether `run` passes every condition but the limit.
    pub fn admits(&self, run: &Run) -> bool {
        self.state.is_none_or(|s| run.state == s)
            && self.workflow_id.as_ref().is_none_or(|w| &run.workflow_id == w)
            && self
                .text
                .as_deref()
                .is_none_or(|t| run.run_id.contains(t) || run.workflow_id.contains(t) || run.summary.contains(t))
            && self.created_since.is_none_or(|t| run.created_at >= t)
            && self.created_before.is_none_or(|t| run.created_at < t)
            && self.after.as_ref().is_none_or(|(t, id)| (run.created_at, &run.run_id) < (*t, id))
    }
}

/// How long events are kept, per family (FR-EVT-004: 30 days by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Days for families without their own setting.
    pub default_days: u32,
    /// Days per family (`workflow`, `model`, `micro_task`, ...).
    pub family_days: std::collections::BTreeMap<String, u32>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy { default_days: 30, family_days: Default::default() }
    }
}

impl RetentionPolicy {
    /// Days kept for an event type.
    pub fn days_for(&self, event_type: &str) -> u32 {
        let family = steward_core::event_registry::spec_of(event_type).map(|s| s.family.as_str());
        family.and_then(|f| self.family_days.get(f)).copied().unwrap_or(self.default_days)
    }

    /// Each family's cutoff, for the prune report.
    pub fn cutoffs(&self, now: Timestamp) -> serde_json::Value {
        steward_core::event_registry::Family::ALL
            .iter()
            .map(|f| {
                let days = self.family_days.get(f.as_str()).copied().unwrap_or(self.default_days);
                (
                    f.as_str().to_owned(),
                    serde_json::Value::String(now.plus_millis(-(i64::from(days)) * 86_400_000).to_rfc3339()),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// What a prune did (or would do).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct PruneReport {
    /// Events looked at.
    pub scanned: u64,
    /// Events removed (or that would be).
    pub pruned_ids: Vec<i64>,
    /// Events past retention kept because their run has not finished.
    pub spared: u64,
    /// Payload bytes freed.
    pub bytes: u64,
    /// Runs whose every event is gone.
    pub runs_emptied: u64,
}
