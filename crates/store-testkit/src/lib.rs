//! The conformance suite for [`steward_store::Store`]: the executable form of its contracts.
//!
//! Each case is a `pub async fn` over any store. A backend runs them all with
//! [`store_conformance!`], passing an async setup function that returns a
//! fresh, empty store (and whatever guard keeps its files alive):
//!
//! ```text
//! steward_store_testkit::store_conformance!(fresh_store);
//! ```
//!
//! [`fault::FaultStore`] wraps any backend and fails calls on purpose, for engine tests.
//! [`differential::same_history`] drives a backend and the reference store with the same
//! seeded random operations and compares their answers and histories.
#![allow(clippy::unwrap_used)]

pub mod differential;
pub mod fault;

use serde_json::{Value, json};

use steward_core::Timestamp;
use steward_core::event::Actor;
use steward_core::job::{JobContract, JobKind, MICRO_TASK_PROFILE};
use steward_core::liveness::ProcessRef;
use steward_core::state::{AttemptStatus, HumanDecision, RunState, TransitionCause};
use steward_store::{
    Answer, AttemptFinish, AttemptProcess, AttemptStart, Claim, Commit, Error, Expect, Lease, Lineage, NewRun, Owner,
    Release, ReusedAttempt, RunFilter, Scan, Store, Transition,
};

/// Generates one `#[tokio::test]` per conformance case.
#[macro_export]
macro_rules! store_conformance {
    ($setup:path) => {
        $crate::store_conformance!(@cases $setup;
            create_run_persists_every_field,
            create_run_is_idempotent_and_refuses_duplicates_and_bad_contracts,
            transitions_follow_the_table_and_leave_nothing_on_refusal,
            stale_writers_are_fenced,
            attempts_are_written_before_and_after,
            a_step_waits_for_a_person_only_with_its_run,
            an_answer_lands_once_on_the_attempt_that_waits,
            an_approval_waits_beside_running_work_and_wakes_its_run_when_due,
            events_are_gapless_per_run,
            renewal_reports_lost_leases,
            two_claimers_race_and_exactly_one_wins,
            a_claim_takes_queued_runs_oldest_first_up_to_its_limit,
            an_expired_lease_is_recovered_by_the_next_claim,
            a_renewed_lease_is_not_claimable,
            leases_are_measured_on_the_databases_clock,
            a_stale_epoch_is_refused_and_changes_nothing,
            a_released_run_is_claimable_at_once_or_after_its_delay,
            stalled_runs_are_claimed_only_by_the_resume_policy,
            a_claim_takes_only_runs_of_the_workspaces_it_serves,
            a_workers_scan_hands_abandoned_runs_to_the_next_claim,
            a_claim_spares_the_owners_it_is_told_to,
            a_run_handed_back_and_never_claimed_is_stalled_for_a_person,
            recovery_stalls_only_stale_running_runs,
            recovery_stalls_the_runs_of_dead_owners_and_counts_them,
            an_engine_releases_its_run_to_stalled,
            a_command_process_is_recorded_only_for_a_running_attempt,
            a_repeated_commit_is_applied_once,
            a_runs_log_is_ordered_in_time_as_in_sequence,
            list_runs_filters_and_orders,
            concurrent_commits_all_land,
            a_failed_write_does_not_spoil_its_batch,
            events_of_a_commit_are_recorded_with_it,
            every_registered_event_round_trips,
            invalid_events_are_refused_and_leave_nothing,
            events_are_listed_store_wide_in_id_order,
            the_last_event_id_is_where_new_events_start,
            a_run_made_from_another_reuses_its_attempts,
            prune_spares_unfinished_runs_and_reports_first,
        );
    };
    (@cases $setup:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                // A setup that returns `None` (no server to test against) skips the case.
                let Some((store, _guard)) = $crate::Fixture::into_parts($setup().await) else { return };
                $crate::$case(&store).await;
            }
        )*
    };
}

/// What a conformance setup returns: `(store, guard)`, or `Option<(store, guard)>` for a
/// backend that may be absent (a PostgreSQL store without PostgreSQL installed), whose cases
/// then skip.
pub trait Fixture {
    /// The store under test.
    type Store;
    /// Whatever keeps its files or server alive.
    type Guard;
    /// The store and its guard, if there is a store.
    fn into_parts(self) -> Option<(Self::Store, Self::Guard)>;
}

impl<S, G> Fixture for (S, G) {
    type Store = S;
    type Guard = G;
    fn into_parts(self) -> Option<(S, G)> {
        Some(self)
    }
}

impl<S, G> Fixture for Option<(S, G)> {
    type Store = S;
    type Guard = G;
    fn into_parts(self) -> Option<(S, G)> {
        self
    }
}

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn at(secs: i64) -> Timestamp {
    T0.plus_millis(secs * 1000)
}

/// A run to create, with typed inputs.
pub fn new_run(run_id: &str) -> NewRun {
    let source = "id: w\nversion: 3\nsteps:\n  - {id: a, type: noop}\n".to_owned();
    NewRun {
        run_id: run_id.to_owned(),
        workflow_id: "w".into(),
        workflow_version: 3,
        definition_hash: steward_core::workflow::definition_hash(&source),
        definition_source: source,
        inputs: json!({"name": "ada", "n": 2, "flag": true, "cfg": {"k": [1]}}).as_object().unwrap().clone(),
        workdir: "/work/space".into(),
        job_id: format!("job-{run_id}"),
        trace_id: format!("trace-{run_id}"),
        contract: JobContract::workflow_run(),
        actor: Actor::Human,
        actor_id: "tester".into(),
        now: T0,
        lineage: None,
    }
}

fn commit(run_id: &str, state: RunState, now: Timestamp) -> Commit {
    Commit::new(run_id, Expect::state(state), now, Actor::System, "engine")
}

/// A write by the holder of `epoch`.
fn held(run_id: &str, epoch: u64, now: Timestamp) -> Commit {
    Commit::new(run_id, Expect::held(epoch), now, Actor::System, "engine")
}

/// A lease no test outlives.
const LONG: u64 = 3_600_000;

/// A claim by `owner` (of one run, if given).
pub fn claim_by(owner: &str, run_id: Option<&str>, lease_ms: u64, now: Timestamp) -> Claim {
    Claim {
        owner: Owner { id: owner.into(), process: None },
        lease_ms,
        limit: 16,
        run_id: run_id.map(str::to_owned),
        workdirs: Vec::new(),
        resume_stalled: false,
        spare_owners: Vec::new(),
        now,
    }
}

fn to(state: RunState, reason: &str) -> Option<Transition> {
    Some(Transition { to: state, cause: TransitionCause::Engine, reason: reason.into() })
}

/// Creates a run and claims it for `owner` with a lease no test outlives; returns its epoch.
pub async fn running_run<S: Store>(s: &S, run_id: &str, owner: &str, now: Timestamp) -> u64 {
    held_run(s, run_id, owner, now, LONG).await
}

/// Creates a run and claims it for `owner` with a lease of `lease_ms`; returns its epoch.
pub async fn held_run<S: Store>(s: &S, run_id: &str, owner: &str, now: Timestamp, lease_ms: u64) -> u64 {
    s.create_run(NewRun { now, ..new_run(run_id) }).await.unwrap();
    let claimed = s.claim(claim_by(owner, Some(run_id), lease_ms, now)).await.unwrap();
    assert_eq!(claimed.len(), 1, "{run_id} was not claimed");
    assert_eq!((claimed[0].run.state, claimed[0].run.owner.as_deref()), (RunState::Running, Some(owner)));
    claimed[0].run.lease_epoch
}

fn start(step: &str, attempt: u32) -> AttemptStart {
    AttemptStart { step_id: step.into(), attempt, visit: 1, input: json!({"command": format!("echo {step}")}) }
}

fn finish(step: &str, attempt: u32, status: AttemptStatus) -> AttemptFinish {
    AttemptFinish {
        step_id: step.into(),
        attempt,
        status,
        output: Some(json!({"stdout": "ok"})),
        error: None,
        retryable: false,
        with_issues: false,
        routes: vec!["b".into()],
    }
}

/// Every field of a new run round-trips, inputs as typed values (HSK-WF-001, P09-T01).
pub async fn create_run_persists_every_field<S: Store>(s: &S) {
    let created = s.create_run(new_run("r1")).await.unwrap();
    let run = s.get_run("r1").await.unwrap();
    assert_eq!(created, run);
    assert_eq!(run.state, RunState::Queued);
    assert_eq!((run.workflow_id.as_str(), run.workflow_version), ("w", 3));
    assert_eq!(Value::Object(run.inputs.clone()), json!({"name": "ada", "n": 2, "flag": true, "cfg": {"k": [1]}}));
    assert_eq!(run.input_keys(), ["cfg", "flag", "n", "name"]);
    assert_eq!(run.workdir, "/work/space");
    assert_eq!((run.job_id.as_str(), run.trace_id.as_str()), ("job-r1", "trace-r1"));
    assert_eq!(run.contract, JobContract::workflow_run());
    assert_eq!((run.created_at, run.updated_at, run.started_at), (T0, T0, None));
    assert_eq!(run.last_event_seq, 1);
    let source = s.get_definition(&run.definition_hash).await.unwrap();
    assert_eq!(steward_core::workflow::definition_hash(&source), run.definition_hash);

    let events = s.list_events("r1", 0).await.unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (e.seq, e.event_type.as_str(), e.actor, e.actor_id.as_str()),
        (1, "run_created", Actor::Human, "tester")
    );
    assert_eq!((e.job_id.as_str(), e.trace_id.as_str(), e.workflow_run_id.as_str()), ("job-r1", "trace-r1", "r1"));
    assert_eq!(e.payload["input_keys"], json!(["cfg", "flag", "n", "name"]));

    assert_eq!(s.get_run("nope").await.unwrap_err(), Error::NotFound { what: "run", id: "nope".into() });
    assert!(matches!(s.get_definition("nope").await, Err(Error::NotFound { .. })));
}

/// The same request again returns the run it created (a caller that lost the reply repeats
/// it); another request for a taken id and a DG-JOB-06 mismatch are refused; nothing is written.
pub async fn create_run_is_idempotent_and_refuses_duplicates_and_bad_contracts<S: Store>(s: &S) {
    let created = s.create_run(new_run("r1")).await.unwrap();
    assert_eq!(s.create_run(new_run("r1")).await.unwrap(), created);
    let other = NewRun { job_id: "another-job".into(), ..new_run("r1") };
    assert!(matches!(s.create_run(other).await, Err(Error::Invalid(m)) if m.contains("already exists")));
    let bad = NewRun {
        contract: JobContract {
            job_kind: JobKind::WorkflowRun,
            profile_id: MICRO_TASK_PROFILE.into(),
            protocol_id: MICRO_TASK_PROFILE.into(),
        },
        ..new_run("r2")
    };
    assert!(matches!(s.create_run(bad).await, Err(Error::Invalid(m)) if m.contains("DG-JOB-06")));
    assert!(matches!(s.get_run("r2").await, Err(Error::NotFound { .. })));
    assert!(s.list_events("r2", 0).await.unwrap().is_empty());
    assert_eq!(s.list_events("r1", 0).await.unwrap().len(), 1);
}

/// HSK-WF-002: edges outside the table are refused and leave no trace.
pub async fn transitions_follow_the_table_and_leave_nothing_on_refusal<S: Store>(s: &S) {
    s.create_run(new_run("r1")).await.unwrap();
    let mut c = commit("r1", RunState::Queued, at(1));
    c.transition = to(RunState::Completed, "skip");
    c.started = vec![start("a", 1)];
    let err = s.commit(c).await.unwrap_err();
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err}");
    let run = s.get_run("r1").await.unwrap();
    assert_eq!((run.state, run.total_iterations, run.last_event_seq), (RunState::Queued, 0, 1));
    assert!(s.list_attempts("r1").await.unwrap().is_empty());

    // Only recovery may stall a running run.
    running_run(s, "r2", "me", at(1)).await;
    let mut c = commit("r2", RunState::Running, at(2));
    c.transition = to(RunState::Stalled, "no");
    assert!(matches!(s.commit(c).await, Err(Error::InvalidTransition { .. })));

    let mut c = commit("r2", RunState::Running, at(3));
    c.transition = to(RunState::Completed, "all steps finished");
    let out = s.commit(c).await.unwrap();
    assert_eq!(out.state, RunState::Completed);
    let run = s.get_run("r2").await.unwrap();
    assert_eq!(run.terminal_reason.as_deref(), Some("all steps finished"));
    assert_eq!((run.started_at, run.finished_at, run.owner.as_deref()), (Some(at(1)), Some(at(3)), None));
    let mut c = commit("r2", RunState::Completed, at(4));
    c.transition =
        Some(Transition { to: RunState::Running, cause: TransitionCause::Operator, reason: "resume".into() });
    let err = s.commit(c).await.unwrap_err();
    assert!(err.to_string().contains("the run is finished"), "{err}");
    let kinds: Vec<String> = s.list_events("r2", 0).await.unwrap().into_iter().map(|e| e.event_type).collect();
    assert_eq!(kinds, ["run_created", "run_state_changed", "run_claimed", "run_state_changed"]);
}

/// A write that expects another state or lease is a conflict and changes nothing.
pub async fn stale_writers_are_fenced<S: Store>(s: &S) {
    let epoch = running_run(s, "r1", "worker-a", at(1)).await;
    let mut c = commit("r1", RunState::Queued, at(2));
    c.transition = to(RunState::Running, "again");
    assert!(matches!(s.commit(c).await, Err(Error::Conflict { .. })));
    let mut c = held("r1", epoch + 1, at(2));
    c.started = vec![start("a", 1)];
    let err = s.commit(c).await.unwrap_err();
    assert_eq!(
        err,
        Error::Conflict {
            run_id: "r1".into(),
            expected: format!("lease epoch {}", epoch + 1),
            actual: format!("lease epoch {epoch} held by worker-a"),
        }
    );
    assert!(s.list_attempts("r1").await.unwrap().is_empty());
    let mut c = held("r1", epoch, at(2));
    c.started = vec![start("a", 1)];
    s.commit(c).await.unwrap();
}

/// HSK-WF-001: an attempt row exists before the step starts and is completed after it ends.
pub async fn attempts_are_written_before_and_after<S: Store>(s: &S) {
    running_run(s, "r1", "me", at(1)).await;
    let mut c = commit("r1", RunState::Running, at(2));
    c.started = vec![start("a", 1), start("b", 1)];
    c.summary = Some("two steps running".into());
    s.commit(c).await.unwrap();
    let attempts = s.list_attempts("r1").await.unwrap();
    assert_eq!(attempts.len(), 2);
    let a = &attempts[0];
    assert_eq!((a.step_id.as_str(), a.attempt, a.visit, a.status), ("a", 1, 1, AttemptStatus::Running));
    assert_eq!(a.idempotency_key, "r1:a:1");
    assert_eq!(a.input, json!({"command": "echo a"}));
    assert_eq!((a.output.clone(), a.started_at, a.finished_at), (None, at(2), None));
    let run = s.get_run("r1").await.unwrap();
    assert_eq!((run.current_step_id.as_deref(), run.current_attempt, run.total_iterations), (Some("b"), Some(1), 2));
    assert_eq!(run.summary, "two steps running");

    let mut c = commit("r1", RunState::Running, at(5));
    c.finished = vec![finish("a", 1, AttemptStatus::Completed)];
    c.started = vec![start("a", 1)];
    assert!(matches!(s.commit(c).await, Err(Error::Invalid(m)) if m.contains("already exists")));
    // The refused commit left attempt `a` running.
    assert_eq!(s.list_attempts("r1").await.unwrap()[0].status, AttemptStatus::Running);

    let mut c = commit("r1", RunState::Running, at(5));
    c.finished = vec![AttemptFinish {
        error: Some("exit 3".into()),
        retryable: true,
        with_issues: false,
        output: None,
        routes: vec![],
        ..finish("b", 1, AttemptStatus::Failed)
    }];
    c.finish_running_as = None;
    s.commit(c).await.unwrap();
    let mut c = commit("r1", RunState::Running, at(6));
    c.finished = vec![finish("a", 1, AttemptStatus::Completed)];
    s.commit(c).await.unwrap();
    let attempts = s.list_attempts("r1").await.unwrap();
    let (a, b) = (&attempts[0], &attempts[1]);
    assert_eq!(
        (a.status, a.output.clone(), a.finished_at, a.routes.clone()),
        (AttemptStatus::Completed, Some(json!({"stdout": "ok"})), Some(at(6)), vec!["b".to_string()])
    );
    assert_eq!((b.status, b.error.as_deref(), b.retryable), (AttemptStatus::Failed, Some("exit 3"), true));

    let mut c = commit("r1", RunState::Running, at(7));
    c.finished = vec![finish("a", 1, AttemptStatus::Failed)];
    assert!(matches!(s.commit(c).await, Err(Error::Invalid(m)) if m.contains("already completed")));
    let mut c = commit("r1", RunState::Running, at(7));
    c.finished = vec![finish("zzz", 1, AttemptStatus::Completed)];
    assert!(matches!(s.commit(c).await, Err(Error::Invalid(m)) if m.contains("never started")));

    let events = s.list_events("r1", 0).await.unwrap();
    let finished: Vec<&Value> =
        events.iter().filter(|e| e.event_type == "step_attempt_finished").map(|e| &e.payload).collect();
    assert_eq!(finished[0]["status"], "failed");
    assert_eq!(finished[0]["duration_ms"], 3000);
    assert_eq!(finished[1]["step_id"], "a");
    let started = events.iter().find(|e| e.event_type == "step_attempt_started").unwrap();
    assert_eq!((started.step_id.as_deref(), started.payload["idempotency_key"].as_str()), (Some("a"), Some("r1:a:1")));
}

/// A write never ends every running attempt `awaiting_user` at once (an attempt that waits for
/// a person says so itself); one that moves the run to `awaiting_user` leaves it held by nobody.
pub async fn a_step_waits_for_a_person_only_with_its_run<S: Store>(s: &S) {
    running_run(s, "r1", "me", at(1)).await;
    let mut c = commit("r1", RunState::Running, at(2));
    c.started = vec![start("a", 1)];
    s.commit(c).await.unwrap();

    let mut c = commit("r1", RunState::Running, at(3));
    c.finish_running_as = Some(AttemptStatus::AwaitingUser);
    c.transition = to(RunState::AwaitingUser, "gate");
    assert!(matches!(s.commit(c).await, Err(Error::Invalid(_))));
    assert_eq!(s.list_attempts("r1").await.unwrap()[0].status, AttemptStatus::Running);
    assert_eq!(s.get_run("r1").await.unwrap().state, RunState::Running);

    let mut c = commit("r1", RunState::Running, at(4));
    c.finished = vec![finish("a", 1, AttemptStatus::AwaitingUser)];
    c.transition = to(RunState::AwaitingUser, "hard gate at MT-001");
    s.commit(c).await.unwrap();
    let a = &s.list_attempts("r1").await.unwrap()[0];
    assert_eq!((a.status, a.finished_at), (AttemptStatus::AwaitingUser, Some(at(4))));
    let run = s.get_run("r1").await.unwrap();
    assert_eq!((run.state, run.finished_at, run.owner), (RunState::AwaitingUser, None, None), "nobody executes it");
}

/// A person's answer lands on the attempt that waits for it, once, with its `human_decision` in
/// the same write; an answer that does not come from a person, or that goes to an attempt that
/// does not wait or was answered already, is refused and leaves nothing. A completed attempt
/// keeps whether it skipped work. Both are typed columns, never re-read from events or output.
pub async fn an_answer_lands_once_on_the_attempt_that_waits<S: Store>(s: &S) {
    running_run(s, "r1", "me", at(1)).await;
    let mut c = commit("r1", RunState::Running, at(2));
    c.started = vec![start("a", 1), start("b", 1)];
    s.commit(c).await.unwrap();
    let answer = |step: &str, decision| Answer {
        step_id: step.into(),
        attempt: 1,
        decision,
        gate: "hard_gate".into(),
        reason: Some("looked at it".into()),
        fields: serde_json::Map::new(),
    };
    let by = |who: &str, state, now| Commit::new("r1", Expect::state(state), now, Actor::Human, who);
    let mut c = by("alice", RunState::Running, at(3));
    c.answers = vec![answer("a", HumanDecision::Continue)];
    assert!(matches!(s.commit(c).await, Err(Error::Conflict { actual, .. }) if actual.contains("running")));

    let mut c = commit("r1", RunState::Running, at(4));
    c.finished = vec![
        finish("a", 1, AttemptStatus::AwaitingUser),
        AttemptFinish { with_issues: true, ..finish("b", 1, AttemptStatus::Completed) },
    ];
    c.transition = to(RunState::AwaitingUser, "hard gate");
    s.commit(c).await.unwrap();

    let mut c = commit("r1", RunState::AwaitingUser, at(5));
    c.answers = vec![answer("a", HumanDecision::Continue)];
    assert!(s.commit(c).await.is_err(), "only a person answers");
    let mut c = by("alice", RunState::AwaitingUser, at(5));
    c.answers = vec![answer("zzz", HumanDecision::Continue)];
    assert!(matches!(s.commit(c).await, Err(Error::Invalid(m)) if m.contains("never started")));
    let mut c = by("alice", RunState::AwaitingUser, at(5));
    c.answers = vec![answer("b", HumanDecision::Continue)];
    assert!(matches!(s.commit(c).await, Err(Error::Conflict { actual, .. }) if actual.contains("completed")));
    assert!(s.list_attempts("r1").await.unwrap().iter().all(|a| a.answer.is_none()));
    assert!(!s.list_events("r1", 0).await.unwrap().iter().any(|e| e.event_type == "human_decision"));

    let mut c = by("alice", RunState::AwaitingUser, at(6));
    c.answers = vec![answer("a", HumanDecision::Abort)];
    c.transition = Some(Transition { to: RunState::Running, cause: TransitionCause::Operator, reason: "abort".into() });
    s.commit(c).await.unwrap();
    let attempts = s.list_attempts("r1").await.unwrap();
    let (a, b) = (&attempts[0], &attempts[1]);
    assert_eq!((a.answer, a.with_issues), (Some(HumanDecision::Abort), false));
    assert_eq!((b.answer, b.with_issues), (None, true));
    let events = s.list_events("r1", 0).await.unwrap();
    let decided = events.iter().find(|e| e.event_type == "human_decision").unwrap();
    assert_eq!(
        (decided.actor, decided.actor_id.as_str(), decided.step_id.as_deref()),
        (Actor::Human, "alice", Some("a"))
    );
    assert_eq!(
        decided.payload,
        json!({"decision": "abort", "gate": "hard_gate", "decided_by": "alice", "step_id": "a", "attempt": 1, "reason": "looked at it"})
    );

    let mut c = by("bob", RunState::Running, at(7));
    c.answers = vec![answer("a", HumanDecision::Continue)];
    assert!(matches!(s.commit(c).await, Err(Error::Conflict { actual, .. }) if actual.contains("answered `abort`")));
    assert_eq!(s.list_attempts("r1").await.unwrap()[0].answer, Some(HumanDecision::Abort));
}

/// `last_event_id` is the largest id recorded (0 for none): reading after it gives exactly the
/// events recorded later.
pub async fn the_last_event_id_is_where_new_events_start<S: Store>(s: &S) {
    assert_eq!(s.last_event_id().await.unwrap(), 0, "an empty store");
    running_run(s, "r1", "me", at(1)).await;
    let all = s.list_events_since(0, 1000).await.unwrap();
    let last = s.last_event_id().await.unwrap();
    assert_eq!(Some(last), all.iter().map(|e| e.id).max());
    assert!(s.list_events_since(last, 1000).await.unwrap().is_empty());
    running_run(s, "r2", "me", at(2)).await;
    let new = s.list_events_since(last, 1000).await.unwrap();
    assert!(!new.is_empty() && new.iter().all(|e| e.workflow_run_id == "r2"), "{new:?}");
    assert_eq!(s.last_event_id().await.unwrap(), new.iter().map(|e| e.id).max().unwrap());
}

/// A restart or fork: the new run names its parent and holds the reused attempts as completed,
/// each naming the attempt it reuses, with a `step_attempt_reused` event, all in the write that
/// creates it; a lineage that reuses one attempt twice creates nothing.
pub async fn a_run_made_from_another_reuses_its_attempts<S: Store>(s: &S) {
    let reuse = |step: &str, attempt: u32| ReusedAttempt {
        step_id: step.into(),
        attempt,
        visit: 1,
        input: json!({"command": "echo"}),
        output: Some(json!({"stdout": step})),
        with_issues: false,
        routes: vec!["c".into()],
        from: format!("parent:{step}:{attempt}"),
    };
    let twice = Lineage { parent_run_id: "parent".into(), reused: vec![reuse("a", 1), reuse("a", 1)] };
    let bad = NewRun { lineage: Some(twice), ..new_run("bad") };
    assert!(matches!(s.create_run(bad).await, Err(Error::Invalid(m)) if m.contains("reused twice")));
    assert!(matches!(s.get_run("bad").await, Err(Error::NotFound { .. })), "nothing was created");

    let lineage = Lineage { parent_run_id: "parent".into(), reused: vec![reuse("a", 1), reuse("b", 2)] };
    let run = s.create_run(NewRun { lineage: Some(lineage), ..new_run("child") }).await.unwrap();
    assert_eq!((run.parent_run_id.as_deref(), run.total_iterations), (Some("parent"), 2));
    let stored = s.get_run("child").await.unwrap();
    assert_eq!(
        (stored.parent_run_id.as_deref(), stored.total_iterations, stored.state),
        (Some("parent"), 2, RunState::Queued)
    );
    let attempts = s.list_attempts("child").await.unwrap();
    let got: Vec<(&str, u32, AttemptStatus, Option<&str>, &str)> = attempts
        .iter()
        .map(|a| (a.step_id.as_str(), a.attempt, a.status, a.reused_from.as_deref(), a.idempotency_key.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("a", 1, AttemptStatus::Completed, Some("parent:a:1"), "child:a:1"),
            ("b", 2, AttemptStatus::Completed, Some("parent:b:2"), "child:b:2")
        ]
    );
    assert_eq!(attempts[1].output, Some(json!({"stdout": "b"})));
    let events = s.list_events("child", 0).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["run_created", "step_attempt_reused", "step_attempt_reused"]);
    assert_eq!(events[2].payload["from"], "parent:b:2");
    assert_eq!(s.get_run("child").await.unwrap().last_event_seq, 3);
    assert_eq!(s.get_run("r-none").await.map(|r| r.parent_run_id).ok(), None);
}

/// An approval waits while the rest of its run goes on: its attempt ends `awaiting_user` with
/// the run still `running`, and a person's answer (with their form and comment, kept on the
/// attempt) lands without moving the run. Once the attempt after it has started (the approval
/// timed out) no answer lands on it. A run that waits for a person with a wake time is
/// claimable once that time has passed, and not before; only such a write may set one.
pub async fn an_approval_waits_beside_running_work_and_wakes_its_run_when_due<S: Store>(s: &S) {
    let epoch = running_run(s, "r1", "w1", at(1)).await;
    let mut c = held("r1", epoch, at(2));
    c.started = vec![start("a", 1), start("b", 1), start("c", 1)];
    s.commit(c).await.unwrap();
    let mut c = held("r1", epoch, at(3));
    c.finished = vec![finish("a", 1, AttemptStatus::AwaitingUser), finish("c", 1, AttemptStatus::AwaitingUser)];
    s.commit(c).await.unwrap();
    assert_eq!(s.get_run("r1").await.unwrap().state, RunState::Running);

    let by = |who: &str, now| Commit::new("r1", Expect::state(RunState::Running), now, Actor::Human, who);
    let approval = |step: &str, decision| Answer {
        step_id: step.into(),
        attempt: 1,
        decision,
        gate: "approval".into(),
        reason: Some("fine".into()),
        fields: json!({"budget": 3}).as_object().cloned().unwrap_or_default(),
    };
    let mut c = by("alice", at(4));
    c.answers = vec![approval("c", HumanDecision::Approve)];
    s.commit(c).await.unwrap();
    let attempts = s.list_attempts("r1").await.unwrap();
    let c1 = attempts.iter().find(|a| a.step_id == "c").unwrap();
    assert_eq!(c1.answer, Some(HumanDecision::Approve));
    let detail = c1.answer_detail.clone().unwrap();
    assert_eq!(
        (detail.by.as_str(), detail.reason.as_deref(), detail.fields.get("budget")),
        ("alice", Some("fine"), Some(&json!(3)))
    );
    let events = s.list_events("r1", 0).await.unwrap();
    let decided = events.iter().rfind(|e| e.event_type == "human_decision").unwrap();
    assert_eq!(
        (decided.payload["decision"].as_str(), decided.payload["fields"]["budget"].as_i64()),
        (Some("approve"), Some(3))
    );
    let run = s.get_run("r1").await.unwrap();
    assert_eq!(
        (run.state, run.owner.as_deref()),
        (RunState::Running, Some("w1")),
        "an answer does not move a running run"
    );

    // `a` timed out: its next attempt started, and no answer lands on the one that waited.
    let mut c = held("r1", epoch, at(5));
    c.started = vec![start("a", 2)];
    s.commit(c).await.unwrap();
    let mut c = by("bob", at(6));
    c.answers = vec![approval("a", HumanDecision::Reject)];
    assert!(matches!(s.commit(c).await, Err(Error::Conflict { actual, .. }) if actual.contains("without an answer")));
    assert_eq!(s.list_attempts("r1").await.unwrap()[0].answer, None);

    // Only a move to awaiting_user sets a wake time.
    let mut c = held("r1", epoch, at(7));
    c.wake_after_ms = Some(0);
    assert!(matches!(s.commit(c).await, Err(Error::Invalid(_))));
    let mut c = held("r1", epoch, at(7));
    c.finished = vec![finish("a", 2, AttemptStatus::Completed), finish("b", 1, AttemptStatus::Completed)];
    c.transition = to(RunState::AwaitingUser, "approval `x` waits");
    c.wake_after_ms = Some(LONG);
    s.commit(c).await.unwrap();
    let run = s.get_run("r1").await.unwrap();
    assert_eq!((run.state, run.owner.clone(), run.ready_at.is_some()), (RunState::AwaitingUser, None, true));
    assert!(s.claim(claim_by("w2", None, LONG, at(8))).await.unwrap().is_empty(), "not before its time");

    // A run whose wait has run out is claimed like any other, and moves to running.
    let epoch = running_run(s, "r2", "w1", at(9)).await;
    let mut c = held("r2", epoch, at(10));
    c.transition = to(RunState::AwaitingUser, "approval `x` waits");
    c.wake_after_ms = Some(0);
    s.commit(c).await.unwrap();
    let got = s.claim(claim_by("w2", None, LONG, at(11))).await.unwrap();
    let claimed: Vec<(&str, RunState)> = got.iter().map(|c| (c.run.run_id.as_str(), c.from)).collect();
    assert_eq!(claimed, [("r2", RunState::AwaitingUser)]);
    let run = s.get_run("r2").await.unwrap();
    assert_eq!((run.state, run.owner.as_deref(), run.ready_at), (RunState::Running, Some("w2"), None));
    let events = s.list_events("r2", 0).await.unwrap();
    assert!(events.iter().any(|e| e.event_type == "run_state_changed"
        && e.payload["from_state"] == "awaiting_user"
        && e.payload["to_state"] == "running"));
    // An answer moves a waiting run back to running, and its wake time goes with the wait.
    let mut c = Commit::new("r1", Expect::state(RunState::AwaitingUser), at(12), Actor::Human, "carol");
    c.transition =
        Some(Transition { to: RunState::Running, cause: TransitionCause::Operator, reason: "decided".into() });
    s.commit(c).await.unwrap();
    assert_eq!(s.get_run("r1").await.unwrap().ready_at, None);
}

/// FR events are numbered 1..n per run, in commit order.
pub async fn events_are_gapless_per_run<S: Store>(s: &S) {
    running_run(s, "r1", "me", at(1)).await;
    running_run(s, "r2", "me", at(1)).await;
    for i in 1..=5u32 {
        let mut c = commit("r1", RunState::Running, at(i64::from(i) + 1));
        c.started = vec![start(&format!("s{i}"), 1)];
        s.commit(c).await.unwrap();
    }
    let mut c = commit("r1", RunState::Running, at(10));
    c.transition = to(RunState::Cancelled, "cancelled by operator");
    c.finish_running_as = Some(AttemptStatus::Cancelled);
    s.commit(c).await.unwrap();
    let events = s.list_events("r1", 0).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(events.len(), 3 + 5 + 5 + 1);
    assert!(events.windows(2).all(|w| w[0].id < w[1].id && w[0].ts <= w[1].ts));
    assert_eq!(s.get_run("r1").await.unwrap().last_event_seq, events.len() as i64);
    assert!(s.list_attempts("r1").await.unwrap().iter().all(|a| a.status == AttemptStatus::Cancelled));
    assert_eq!(s.list_events("r1", 10).await.unwrap().len(), events.len() - 10);
    assert_eq!(s.list_events("r2", 0).await.unwrap().len(), 3);
}

/// Renewals extend only leases still held, on the database's clock, and name the lost ones.
pub async fn renewal_reports_lost_leases<S: Store>(s: &S) {
    let mine = running_run(s, "r1", "me", at(1)).await;
    let theirs = running_run(s, "r2", "other", at(1)).await;
    let before = s.get_run("r1").await.unwrap();
    let leases = [
        Lease { run_id: "r1".into(), epoch: mine },
        Lease { run_id: "r2".into(), epoch: theirs + 1 },
        Lease { run_id: "r3".into(), epoch: 1 },
    ];
    let lost = s.renew(&leases, LONG * 2, at(9)).await.unwrap();
    assert_eq!(lost, ["r2", "r3"]);
    let r1 = s.get_run("r1").await.unwrap();
    assert!(r1.lease_expires_at > before.lease_expires_at, "{r1:?}");
    assert_eq!((r1.last_event_seq, r1.lease_epoch), (3, mine), "a renewal writes no event and keeps the epoch");
    let r2 = s.get_run("r2").await.unwrap();
    assert!(r2.lease_expires_at.unwrap() <= before.lease_expires_at.unwrap().plus_millis(60_000));
}

/// Issue 12: of two workers claiming the same run at once, exactly one gets it.
pub async fn two_claimers_race_and_exactly_one_wins<S: Store + Clone>(s: &S) {
    for round in 0..8 {
        let id = format!("r{round}");
        s.create_run(new_run(&id)).await.unwrap();
        let (a, b) = (s.clone(), s.clone());
        let (ca, cb) = (claim_by("a", Some(&id), LONG, at(1)), claim_by("b", Some(&id), LONG, at(1)));
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { a.claim(ca).await.unwrap() }),
            tokio::spawn(async move { b.claim(cb).await.unwrap() })
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.len() + rb.len(), 1, "round {round}: {ra:?} {rb:?}");
        let winner = if ra.is_empty() { "b" } else { "a" };
        let run = s.get_run(&id).await.unwrap();
        assert_eq!((run.owner.as_deref(), run.lease_epoch), (Some(winner), 1));
        let claims = s.list_events(&id, 0).await.unwrap().into_iter().filter(|e| e.event_type == "run_claimed");
        assert_eq!(claims.count(), 1);
    }
}

/// A claim takes queued runs, oldest first, at most its limit, each `running` under epoch 1.
pub async fn a_claim_takes_queued_runs_oldest_first_up_to_its_limit<S: Store>(s: &S) {
    for (i, id) in ["c", "a", "b"].iter().enumerate() {
        s.create_run(NewRun { now: at(i as i64), ..new_run(id) }).await.unwrap();
    }
    let got = s.claim(Claim { limit: 2, ..claim_by("w1", None, LONG, at(5)) }).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|c| c.run.run_id.as_str()).collect();
    assert_eq!(ids, ["c", "a"]);
    for c in &got {
        assert_eq!(
            (c.from, c.run.state, c.run.lease_epoch, c.recovered_from.clone()),
            (RunState::Queued, RunState::Running, 1, None)
        );
        assert_eq!(c.lease(), Lease { run_id: c.run.run_id.clone(), epoch: 1 });
        assert_eq!(c.run.started_at, Some(at(5)));
        let events = s.list_events(&c.run.run_id, 0).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(kinds, ["run_created", "run_state_changed", "run_claimed"]);
        let claimed = &events[2];
        assert_eq!(
            (claimed.actor, claimed.payload["owner"].as_str(), claimed.payload["epoch"].as_u64()),
            (Actor::System, Some("w1"), Some(1))
        );
    }
    assert_eq!(s.claim(claim_by("w2", None, LONG, at(6))).await.unwrap().len(), 1);
    assert!(s.claim(claim_by("w3", None, LONG, at(7))).await.unwrap().is_empty());
}

/// Issue 12 point 5: a run whose owner's lease ran out is taken over by the next claim, in one
/// write: its attempts in flight end `interrupted`, the recovery is counted and recorded as
/// FR-EVT-WF-RECOVERY (actor system) naming the old and the new owner, and the epoch rises.
pub async fn an_expired_lease_is_recovered_by_the_next_claim<S: Store>(s: &S) {
    // A lease of no length has run out by the time anyone else looks.
    let old = held_run(s, "r1", "dead-worker", at(1), 0).await;
    let mut c = held("r1", old, at(2));
    c.started = vec![start("a", 1)];
    s.commit(c).await.unwrap();
    let got = s.claim(claim_by("peer", None, LONG, at(3))).await.unwrap();
    assert_eq!(got.len(), 1);
    let c = &got[0];
    assert_eq!(
        (c.from, c.recovered_from.as_deref(), c.run.lease_epoch),
        (RunState::Running, Some("dead-worker"), old + 1)
    );
    assert_eq!((c.run.owner.as_deref(), c.run.recoveries), (Some("peer"), 1));
    let attempt = &s.list_attempts("r1").await.unwrap()[0];
    assert_eq!((attempt.status, attempt.retryable), (AttemptStatus::Interrupted, true));
    let events = s.list_events("r1", 0).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds[kinds.len() - 4..],
        ["workflow_recovery", "step_attempt_finished", "run_state_changed", "run_claimed"]
    );
    let rec = events.iter().find(|e| e.event_type == "workflow_recovery").unwrap();
    assert_eq!(rec.actor, Actor::System);
    let p = &rec.payload;
    assert_eq!((p["owner"].as_str(), p["new_owner"].as_str()), (Some("dead-worker"), Some("peer")));
    assert_eq!(
        (p["from_state"].as_str(), p["to_state"].as_str(), p["recoveries"].as_u64()),
        (Some("running"), Some("stalled"), Some(1))
    );
    // The old owner's late write is refused and changes nothing.
    let seq = s.get_run("r1").await.unwrap().last_event_seq;
    let mut late = held("r1", old, at(4));
    late.finished = vec![finish("a", 1, AttemptStatus::Completed)];
    assert!(matches!(s.commit(late).await, Err(Error::Conflict { .. })));
    assert_eq!(s.get_run("r1").await.unwrap().last_event_seq, seq);
    assert_eq!(s.list_attempts("r1").await.unwrap()[0].status, AttemptStatus::Interrupted);
}

/// A lease renewed in time keeps its run: nobody else can claim it.
pub async fn a_renewed_lease_is_not_claimable<S: Store>(s: &S) {
    let epoch = held_run(s, "r1", "w1", at(1), 0).await;
    assert!(s.renew(&[Lease { run_id: "r1".into(), epoch }], LONG, at(2)).await.unwrap().is_empty());
    assert!(s.claim(claim_by("w2", None, LONG, at(3))).await.unwrap().is_empty());
    // Renewed to nothing, it runs out again.
    assert!(s.renew(&[Lease { run_id: "r1".into(), epoch }], 0, at(4)).await.unwrap().is_empty());
    let got = s.claim(claim_by("w2", None, LONG, at(5))).await.unwrap();
    assert_eq!(got[0].recovered_from.as_deref(), Some("w1"));
}

/// Lease arithmetic uses the database's clock: a claimer whose clock runs an hour (or a year)
/// ahead cannot take a run whose lease is still good, and one whose clock is behind cannot
/// keep a run whose lease has run out.
pub async fn leases_are_measured_on_the_databases_clock<S: Store>(s: &S) {
    // The callers here live in 2023 (`at`); the database does not.
    let far = T0.plus_millis(365 * 86_400_000 * 100);
    held_run(s, "r1", "w1", at(1), 60_000).await;
    let run = s.get_run("r1").await.unwrap();
    assert!(run.lease_expires_at.unwrap() > at(365 * 86_400), "lease measured on the caller's clock: {run:?}");
    assert!(s.claim(claim_by("ahead", None, LONG, far)).await.unwrap().is_empty());
    let epoch = held_run(s, "r2", "w1", at(1), 0).await;
    let got = s.claim(claim_by("behind", None, LONG, T0)).await.unwrap();
    assert_eq!(got.iter().map(|c| c.run.run_id.as_str()).collect::<Vec<_>>(), ["r2"]);
    assert_eq!(got[0].run.lease_epoch, epoch + 1);
}

/// A write naming an epoch the run has left is refused with `Conflict` and changes nothing,
/// whatever it holds: attempts, events, a transition, a release.
pub async fn a_stale_epoch_is_refused_and_changes_nothing<S: Store>(s: &S) {
    let first = held_run(s, "r1", "w1", at(1), 0).await;
    let second = s.claim(claim_by("w2", None, LONG, at(2))).await.unwrap()[0].run.lease_epoch;
    assert_eq!(second, first + 1);
    let before = (s.get_run("r1").await.unwrap(), s.list_events("r1", 0).await.unwrap().len());
    let mut c = held("r1", first, at(3));
    c.started = vec![start("a", 1)];
    c.summary = Some("stale".into());
    c.transition = to(RunState::Completed, "stale");
    let err = s.commit(c).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict { expected, .. } if expected == &format!("lease epoch {first}")), "{err}");
    let mut r = held("r1", first, at(3));
    r.release = Some(Release { after_ms: 0, reason: "stale".into() });
    assert!(matches!(s.commit(r).await, Err(Error::Conflict { .. })));
    assert_eq!((s.get_run("r1").await.unwrap(), s.list_events("r1", 0).await.unwrap().len()), before);
    assert!(s.list_attempts("r1").await.unwrap().is_empty());
    // The holder's write lands.
    let mut c = held("r1", second, at(4));
    c.started = vec![start("a", 1)];
    s.commit(c).await.unwrap();
}

/// A release gives a held run back: it stays `running`, held by nobody, claimable at once (or
/// after its delay: a retry's backoff), without counting a recovery; the releaser's epoch is
/// stale from then on. A release with attempts still running is refused.
pub async fn a_released_run_is_claimable_at_once_or_after_its_delay<S: Store>(s: &S) {
    let epoch = running_run(s, "r1", "w1", at(1)).await;
    let mut c = held("r1", epoch, at(2));
    c.started = vec![start("a", 1)];
    s.commit(c).await.unwrap();
    let mut early = held("r1", epoch, at(3));
    early.release = Some(Release { after_ms: 0, reason: "shutting down".into() });
    assert!(matches!(s.commit(early).await, Err(Error::Invalid(m)) if m.contains("no attempt in flight")));
    let mut c = held("r1", epoch, at(3));
    c.finish_running_as = Some(AttemptStatus::Interrupted);
    c.release = Some(Release { after_ms: 0, reason: "shutting down".into() });
    assert_eq!(s.commit(c).await.unwrap().state, RunState::Running);
    let run = s.get_run("r1").await.unwrap();
    assert_eq!((run.state, run.owner.as_deref(), run.lease_epoch, run.recoveries), (RunState::Running, None, epoch, 0));
    let last = s.list_events("r1", 0).await.unwrap().pop().unwrap();
    assert_eq!((last.event_type.as_str(), last.payload["reason"].as_str()), ("run_released", Some("shutting down")));
    // Its old epoch is stale even before anyone claims it.
    let mut stale = held("r1", epoch, at(4));
    stale.started = vec![start("a", 2)];
    assert!(matches!(s.commit(stale).await, Err(Error::Conflict { .. })));
    let got = s.claim(claim_by("w2", None, LONG, at(5))).await.unwrap();
    assert_eq!((got.len(), got[0].recovered_from.clone(), got[0].run.recoveries), (1, None, 0));
    let epoch = got[0].run.lease_epoch;
    // A release with a delay is not claimable before it.
    let mut c = held("r1", epoch, at(6));
    c.release = Some(Release { after_ms: LONG, reason: "backoff".into() });
    s.commit(c).await.unwrap();
    assert!(s.get_run("r1").await.unwrap().ready_at.is_some());
    assert!(s.claim(claim_by("w3", None, LONG, at(7))).await.unwrap().is_empty());
    // Only a lease holder releases.
    s.create_run(new_run("r2")).await.unwrap();
    let mut c = commit("r2", RunState::Queued, at(8));
    c.release = Some(Release { after_ms: 0, reason: "x".into() });
    assert!(matches!(s.commit(c).await, Err(Error::Invalid(_))));
}

/// DG-WF-11: a stalled run waits for a person unless the claimer applies the automatic-resume
/// policy; an operator's resume leaves the run held by nobody for the next claim.
pub async fn stalled_runs_are_claimed_only_by_the_resume_policy<S: Store>(s: &S) {
    held_run(s, "r1", "w1", at(1), 0).await;
    assert_eq!(s.recover_stalled(at(2), &scan(30)).await.unwrap().len(), 1);
    assert!(s.claim(claim_by("w2", None, LONG, at(3))).await.unwrap().is_empty());
    let got = s.claim(Claim { resume_stalled: true, ..claim_by("w2", None, LONG, at(3)) }).await.unwrap();
    assert_eq!((got.len(), got[0].from, got[0].run.recoveries), (1, RunState::Stalled, 1));
    let change = s.list_events("r1", 0).await.unwrap().into_iter().rev().nth(1).unwrap();
    assert_eq!(
        (change.event_type.as_str(), change.payload["from_state"].as_str()),
        ("run_state_changed", Some("stalled"))
    );
    // An operator resumes a stalled run: running, nobody holds it, claimable at once.
    held_run(s, "r2", "w1", at(1), 0).await;
    s.recover_stalled(at(4), &scan(30)).await.unwrap();
    let mut c = commit("r2", RunState::Stalled, at(5));
    c.transition =
        Some(Transition { to: RunState::Running, cause: TransitionCause::Operator, reason: "resume".into() });
    s.commit(c).await.unwrap();
    let run = s.get_run("r2").await.unwrap();
    assert_eq!((run.state, run.owner.as_deref()), (RunState::Running, None));
    let got = s.claim(claim_by("w3", Some("r2"), LONG, at(6))).await.unwrap();
    assert_eq!((got.len(), got[0].recovered_from.clone()), (1, None));
}

/// A worker's recovery scan stalls nothing: it ends the leases of runs whose owner died, and
/// the next claim recovers them (naming both owners) before it takes any queued run.
pub async fn a_workers_scan_hands_abandoned_runs_to_the_next_claim<S: Store>(s: &S) {
    s.create_run(NewRun { now: at(0), ..new_run("queued-first") }).await.unwrap();
    held_run(s, "held", "dead-peer", at(1), LONG).await;
    let scan = Scan { threshold_secs: 30, dead_owners: vec!["dead-peer".into()], hand_over: true, ..Scan::default() };
    let found = s.recover_stalled(at(2), &scan).await.unwrap();
    assert_eq!((found.len(), found[0].run_id.as_str()), (1, "held"));
    let run = s.get_run("held").await.unwrap();
    assert_eq!((run.state, run.owner.as_deref(), run.recoveries), (RunState::Running, Some("dead-peer"), 0));
    let got = s.claim(Claim { limit: 1, ..claim_by("me", None, LONG, at(3)) }).await.unwrap();
    assert_eq!((got[0].run.run_id.as_str(), got[0].recovered_from.as_deref()), ("held", Some("dead-peer")));
    let rec =
        s.list_events("held", 0).await.unwrap().into_iter().find(|e| e.event_type == "workflow_recovery").unwrap();
    assert_eq!((rec.payload["owner"].as_str(), rec.payload["new_owner"].as_str()), (Some("dead-peer"), Some("me")));
}

/// A stopped owner is killed before its run is taken: a claim leaves alone the runs of the
/// owners its scan spared, whatever their leases say.
pub async fn a_claim_spares_the_owners_it_is_told_to<S: Store>(s: &S) {
    held_run(s, "r1", "stopped", at(0), 0).await;
    let spare = Claim { spare_owners: vec!["stopped".into()], ..claim_by("peer", None, LONG, at(1)) };
    assert!(s.claim(spare).await.unwrap().is_empty());
    let got = s.claim(claim_by("peer", None, LONG, at(2))).await.unwrap();
    assert_eq!(got[0].recovered_from.as_deref(), Some("stopped"));
}

/// A run handed back (running, held by nobody) that nobody claims for a lease's length is
/// stalled by a person's scan, so that without workers someone sees it; a worker's scan leaves
/// it to the claims.
pub async fn a_run_handed_back_and_never_claimed_is_stalled_for_a_person<S: Store>(s: &S) {
    let epoch = running_run(s, "r1", "w1", at(0)).await;
    let mut c = held("r1", epoch, at(1));
    c.release = Some(Release { after_ms: 0, reason: "stopping".into() });
    s.commit(c).await.unwrap();
    // The database's clock is now; the scan's threshold reaches back before the release only
    // when it is zero.
    let workers = Scan { hand_over: true, ..scan(0) };
    assert!(s.recover_stalled(at(2), &workers).await.unwrap().is_empty());
    assert!(s.recover_stalled(at(2), &scan(3600)).await.unwrap().is_empty(), "not before a lease's length");
    let found = s.recover_stalled(at(2), &scan(0)).await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0].reason.contains("nobody has claimed it"), "{}", found[0].reason);
    let run = s.get_run("r1").await.unwrap();
    assert_eq!((run.state, run.owner), (RunState::Stalled, None));
}

/// A worker that serves some workspaces claims only runs in them (or beneath them).
pub async fn a_claim_takes_only_runs_of_the_workspaces_it_serves<S: Store>(s: &S) {
    for (id, dir) in [("a", "/srv/one"), ("b", "/srv/one/sub"), ("c", "/srv/onex"), ("d", "/srv/two")] {
        s.create_run(NewRun { workdir: dir.into(), ..new_run(id) }).await.unwrap();
    }
    let serve = |dirs: &[&str]| Claim {
        workdirs: dirs.iter().map(|d| d.to_string()).collect(),
        ..claim_by("w", None, LONG, at(1))
    };
    let got = s.claim(serve(&["/srv/one/"])).await.unwrap();
    let mut ids: Vec<String> = got.into_iter().map(|c| c.run.run_id).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    assert!(s.claim(serve(&["/srv/three"])).await.unwrap().is_empty());
    assert_eq!(s.claim(serve(&["/srv/two", "/srv/onex"])).await.unwrap().len(), 2);
}

/// HSK-WF-003 / DG-FR-09: stale running runs become stalled with one recovery event by `system`.
pub async fn recovery_stalls_only_stale_running_runs<S: Store>(s: &S) {
    let dead = held_run(s, "stale", "dead", at(0), 0).await;
    let mut c = commit("stale", RunState::Running, at(0));
    c.started = vec![start("a", 1)];
    s.commit(c).await.unwrap();
    let claimed_at = s.get_run("stale").await.unwrap().heartbeat_at;
    assert!(claimed_at.is_some());
    running_run(s, "fresh", "alive", at(50)).await;
    s.create_run(new_run("queued")).await.unwrap();

    let recovered = s.recover_stalled(at(60), &scan(30)).await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!((recovered[0].run_id.as_str(), recovered[0].last_heartbeat_at), ("stale", claimed_at));
    assert_eq!(recovered[0].interrupted_attempts, ["stale:a:1"]);
    let run = s.get_run("stale").await.unwrap();
    assert_eq!((run.state, run.owner.as_deref(), run.recoveries), (RunState::Stalled, None, 1));
    let attempt = &s.list_attempts("stale").await.unwrap()[0];
    assert_eq!((attempt.status, attempt.retryable), (AttemptStatus::Interrupted, true));
    let events = s.list_events("stale", 0).await.unwrap();
    let rec: Vec<_> = events.iter().filter(|e| e.event_type == "workflow_recovery").collect();
    assert_eq!(rec.len(), 1);
    assert_eq!((rec[0].actor, rec[0].job_id.as_str()), (Actor::System, "job-stale"));
    let p = &rec[0].payload;
    assert_eq!(
        (p["from_state"].as_str(), p["to_state"].as_str(), p["threshold_secs"].as_u64()),
        (Some("running"), Some("stalled"), Some(30))
    );
    assert_eq!((p["workflow_run_id"].as_str(), p["job_id"].as_str()), (Some("stale"), Some("job-stale")));
    assert_eq!(p["last_heartbeat_ts"].as_str().and_then(Timestamp::parse_rfc3339), claimed_at);
    assert!(p["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(s.get_run("fresh").await.unwrap().state, RunState::Running);
    assert_eq!(s.get_run("queued").await.unwrap().state, RunState::Queued);
    // Idempotent.
    assert!(s.recover_stalled(at(61), &scan(30)).await.unwrap().is_empty());
    // An owner the scanner spares keeps its run this time, whatever its lease says.
    held_run(s, "spared", "stopped-not-killed", at(0), 0).await;
    let spare = Scan { spare_owners: vec!["stopped-not-killed".into()], ..scan(30) };
    assert!(s.recover_stalled(at(62), &spare).await.unwrap().is_empty());
    assert_eq!(s.get_run("spared").await.unwrap().state, RunState::Running);
    // The dead owner's late write is fenced off.
    let mut c = held("stale", dead, at(62));
    c.finished = vec![finish("a", 1, AttemptStatus::Completed)];
    assert!(matches!(s.commit(c).await, Err(Error::Conflict { .. })));
}

fn scan(threshold_secs: u64) -> Scan {
    Scan { threshold_secs, ..Scan::default() }
}

fn process(pid: i32) -> ProcessRef {
    ProcessRef { host: "h".into(), boot_id: "b".into(), pid_ns: "ns".into(), pid, start_ticks: 1000 + pid as u64 }
}

/// A run whose owner is known to have exited is stalled at once, whatever its heartbeat; each
/// recovery is counted on the run (for `limits.max_recoveries`) and in its event.
pub async fn recovery_stalls_the_runs_of_dead_owners_and_counts_them<S: Store>(s: &S) {
    s.create_run(new_run("r1")).await.unwrap();
    let owner = Owner { id: "host:41".into(), process: Some(process(41)) };
    s.claim(Claim { owner, ..claim_by("", Some("r1"), LONG, at(1)) }).await.unwrap();
    let run = s.get_run("r1").await.unwrap();
    assert_eq!((run.owner.as_deref(), run.owner_process), (Some("host:41"), Some(process(41))));
    running_run(s, "r2", "host:42", at(1)).await;

    let dead = Scan { threshold_secs: 30, dead_owners: vec!["host:41".into()], ..Scan::default() };
    let recovered = s.recover_stalled(at(2), &dead).await.unwrap();
    assert_eq!(recovered.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), ["r1"]);
    assert!(recovered[0].reason.contains("host:41"), "{}", recovered[0].reason);
    let run = s.get_run("r1").await.unwrap();
    assert_eq!((run.state, run.owner, run.owner_process, run.recoveries), (RunState::Stalled, None, None, 1));
    let rec = s.list_events("r1", 0).await.unwrap().pop().unwrap();
    assert_eq!(rec.event_type, "workflow_recovery");
    assert_eq!((rec.payload["owner"].as_str(), rec.payload["recoveries"].as_u64()), (Some("host:41"), Some(1)));

    // Resumed, then abandoned again: the second recovery is the run's second.
    let mut c = commit("r1", RunState::Stalled, at(3));
    c.transition =
        Some(Transition { to: RunState::Running, cause: TransitionCause::Operator, reason: "resume".into() });
    s.commit(c).await.unwrap();
    s.claim(claim_by("host:43", Some("r1"), 0, at(3))).await.unwrap();
    s.recover_stalled(at(100), &scan(30)).await.unwrap();
    assert_eq!(s.get_run("r1").await.unwrap().recoveries, 2);
    // A stalled run recovered too often is poisoned, by the engine, never by recovery.
    let mut c = commit("r1", RunState::Stalled, at(101));
    c.transition = Some(Transition { to: RunState::Poisoned, cause: TransitionCause::Recovery, reason: "x".into() });
    assert!(matches!(s.commit(c).await, Err(Error::InvalidTransition { .. })));
    let mut c = commit("r1", RunState::Stalled, at(101));
    c.transition = to(RunState::Poisoned, "recovered too often");
    assert_eq!(s.commit(c).await.unwrap().state, RunState::Poisoned);
}

/// An engine stopping on a signal releases its run: the attempts it stopped end `interrupted`,
/// the run goes to `stalled` with FR-EVT-WF-RECOVERY (not counted as a recovery), and nobody
/// holds it, so `resume` can take it at once.
pub async fn an_engine_releases_its_run_to_stalled<S: Store>(s: &S) {
    let epoch = running_run(s, "r1", "me", at(1)).await;
    let mut c = commit("r1", RunState::Running, at(2));
    c.started = vec![start("a", 1)];
    s.commit(c).await.unwrap();
    let mut c = held("r1", epoch, at(3));
    c.finished = vec![AttemptFinish {
        status: AttemptStatus::Interrupted,
        retryable: true,
        with_issues: false,
        error: Some("interrupted".into()),
        ..finish("a", 1, AttemptStatus::Interrupted)
    }];
    c.transition =
        Some(Transition { to: RunState::Stalled, cause: TransitionCause::Recovery, reason: "SIGINT".into() });
    assert_eq!(s.commit(c).await.unwrap().state, RunState::Stalled);
    let run = s.get_run("r1").await.unwrap();
    assert_eq!((run.owner, run.recoveries), (None, 0));
    let last = s.list_events("r1", 0).await.unwrap().pop().unwrap();
    assert_eq!((last.event_type.as_str(), last.actor), ("workflow_recovery", Actor::System));
    assert_eq!((last.payload["reason"].as_str(), last.payload["owner"].as_str()), (Some("SIGINT"), Some("me")));
}

/// HSK-WF-001 with a command: the process an attempt is about to let run is recorded on the
/// attempt, with an event, only while the attempt runs and its writer still holds the run.
pub async fn a_command_process_is_recorded_only_for_a_running_attempt<S: Store>(s: &S) {
    let epoch = running_run(s, "r1", "me", at(1)).await;
    let mut c = commit("r1", RunState::Running, at(2));
    c.started = vec![start("a", 1)];
    s.commit(c).await.unwrap();
    let fenced = |epoch: u64, pid: i32, attempt: u32| {
        let mut c = held("r1", epoch, at(3));
        c.processes = vec![AttemptProcess { step_id: "a".into(), attempt, process: process(pid) }];
        c
    };
    assert!(matches!(s.commit(fenced(epoch + 1, 7, 1)).await, Err(Error::Conflict { .. })));
    assert!(matches!(s.commit(fenced(epoch, 7, 2)).await, Err(Error::Invalid(m)) if m.contains("never started")));
    s.commit(fenced(epoch, 7, 1)).await.unwrap();
    assert_eq!(s.list_attempts("r1").await.unwrap()[0].process, Some(process(7)));
    let last = s.list_events("r1", 0).await.unwrap().pop().unwrap();
    assert_eq!(last.event_type, "attempt_process_started");
    assert_eq!((last.step_id.as_deref(), last.payload["pid"].as_i64()), (Some("a"), Some(7)));
    // A later command of the same attempt replaces it.
    s.commit(fenced(epoch, 8, 1)).await.unwrap();
    assert_eq!(s.list_attempts("r1").await.unwrap()[0].process, Some(process(8)));

    let mut c = commit("r1", RunState::Running, at(4));
    c.finished = vec![finish("a", 1, AttemptStatus::Completed)];
    s.commit(c).await.unwrap();
    let err = s.commit(fenced(epoch, 9, 1)).await.unwrap_err();
    assert!(err.to_string().contains("is completed"), "{err}");
    assert_eq!(s.list_attempts("r1").await.unwrap()[0].process, Some(process(8)));
}

/// A commit whose reply was lost is sent again with the same id: it is applied once, and the
/// repeat answers with the run as it is (even though the expectation no longer holds).
pub async fn a_repeated_commit_is_applied_once<S: Store>(s: &S) {
    running_run(s, "r1", "me", at(1)).await;
    let mut c = commit("r1", RunState::Running, at(2));
    c.id = Some("commit-1".into());
    c.finished = Vec::new();
    c.started = vec![start("a", 1)];
    c.transition = None;
    let first = s.commit(c.clone()).await.unwrap();
    let again = s.commit(c.clone()).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(s.list_attempts("r1").await.unwrap().len(), 1);
    let events = s.list_events("r1", 0).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.event_type == "step_attempt_started").count(), 1);

    let mut done = commit("r1", RunState::Running, at(3));
    done.id = Some("commit-2".into());
    done.finished = vec![finish("a", 1, AttemptStatus::Completed)];
    done.transition = to(RunState::Completed, "done");
    s.commit(done.clone()).await.unwrap();
    let repeat = s.commit(done).await.unwrap();
    assert_eq!(repeat.state, RunState::Completed);
    assert_eq!(s.list_events("r1", 0).await.unwrap().len(), events.len() + 2);
    // The same id on another run is another commit.
    running_run(s, "r2", "me", at(1)).await;
    let mut other = commit("r2", RunState::Running, at(2));
    other.id = Some("commit-1".into());
    other.started = vec![start("a", 1)];
    s.commit(other).await.unwrap();
    assert_eq!(s.list_attempts("r2").await.unwrap().len(), 1);
}

/// Writers of one run read their clocks before their writes queue, so a write may arrive with a
/// time earlier than the log's latest event: its events take that later time instead.
pub async fn a_runs_log_is_ordered_in_time_as_in_sequence<S: Store>(s: &S) {
    running_run(s, "r1", "me", at(5)).await;
    let mut late = commit("r1", RunState::Running, at(3));
    late.started = vec![start("a", 1)];
    s.commit(late).await.unwrap();
    let events = s.list_events("r1", 0).await.unwrap();
    assert_eq!(events.last().unwrap().ts, at(5));
    assert!(events.windows(2).all(|w| w[0].ts <= w[1].ts), "{events:?}");
    assert_eq!(s.list_attempts("r1").await.unwrap()[0].started_at, at(5));
    let mut c = commit("r1", RunState::Running, at(9));
    c.finished = vec![finish("a", 1, AttemptStatus::Completed)];
    s.commit(c).await.unwrap();
    assert_eq!(s.list_events("r1", 0).await.unwrap().last().unwrap().ts, at(9));
}

/// Listing filters by state and returns newest first.
pub async fn list_runs_filters_and_orders<S: Store>(s: &S) {
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        s.create_run(NewRun { now: at(i as i64), ..new_run(id) }).await.unwrap();
    }
    let mut c = commit("b", RunState::Queued, at(5));
    c.transition = to(RunState::Failed, "engine start failed: bad input");
    c.summary = Some("failed: bad input".into());
    s.commit(c).await.unwrap();
    let ids = |runs: Vec<steward_store::Run>| runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_runs(RunFilter::default()).await.unwrap()), ["c", "b", "a"]);
    assert_eq!(
        ids(s.list_runs(RunFilter { state: Some(RunState::Queued), limit: None, ..Default::default() }).await.unwrap()),
        ["c", "a"]
    );
    assert_eq!(ids(s.list_runs(RunFilter { state: None, limit: Some(1), ..Default::default() }).await.unwrap()), ["c"]);

    // Workflow, text, creation time and keyset pages, all in the store.
    let other = NewRun { workflow_id: "other".into(), now: at(1), ..new_run("d") };
    s.create_run(other).await.unwrap();
    let list = |f: RunFilter| async move { ids(s.list_runs(f).await.unwrap()) };
    assert_eq!(list(RunFilter { workflow_id: Some("other".into()), ..Default::default() }).await, ["d"]);
    assert_eq!(list(RunFilter { text: Some("bad input".into()), ..Default::default() }).await, ["b"], "summary text");
    assert_eq!(list(RunFilter { text: Some("c".into()), ..Default::default() }).await, ["c"], "run id text");
    // Newest first, and at one time by id, descending.
    assert_eq!(list(RunFilter { created_since: Some(at(1)), ..Default::default() }).await, ["c", "d", "b"]);
    assert_eq!(list(RunFilter { created_before: Some(at(1)), ..Default::default() }).await, ["a"]);
    let page = |after: Option<(Timestamp, String)>| RunFilter { limit: Some(2), after, ..Default::default() };
    assert_eq!(list(page(None)).await, ["c", "d"]);
    assert_eq!(list(page(Some((at(1), "d".into())))).await, ["b", "a"], "after d: b (same time, smaller id), then a");
    assert_eq!(list(page(Some((at(0), "a".into())))).await, Vec::<String>::new());
    let all = RunFilter::default();
    for r in s.list_runs(all.clone()).await.unwrap() {
        assert!(all.admits(&r));
    }
    let mut counts = s.count_runs().await.unwrap();
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(counts, [(RunState::Failed, 1), (RunState::Queued, 3)]);
}

/// Many concurrent writers (group commit) all land, each run's log intact.
pub async fn concurrent_commits_all_land<S: Store + Clone>(s: &S) {
    let mut tasks = Vec::new();
    for r in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("r{r}");
            running_run(&s, &id, "me", at(1)).await;
            for step in 0..10u32 {
                let mut c = commit(&id, RunState::Running, at(2));
                if step > 0 {
                    c.finished = vec![finish(&format!("s{}", step - 1), 1, AttemptStatus::Completed)];
                }
                c.started = vec![start(&format!("s{step}"), 1)];
                s.commit(c).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for r in 0..32 {
        let id = format!("r{r}");
        let events = s.list_events(&id, 0).await.unwrap();
        assert_eq!(events.len(), 3 + 10 + 9);
        assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as i64 + 1));
        assert_eq!(s.get_run(&id).await.unwrap().total_iterations, 10);
    }
}

/// A refused write inside a group commit is rolled back alone.
pub async fn a_failed_write_does_not_spoil_its_batch<S: Store + Clone>(s: &S) {
    running_run(s, "r1", "me", at(1)).await;
    let mut tasks = Vec::new();
    for i in 0..20u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = commit("r1", RunState::Running, at(2));
            // Every odd write also tries to finish an attempt that never started.
            if i % 2 == 1 {
                c.finished = vec![finish("ghost", 1, AttemptStatus::Completed)];
            }
            c.started = vec![start(&format!("s{i}"), 1)];
            s.commit(c).await.is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 10);
    let attempts = s.list_attempts("r1").await.unwrap();
    assert_eq!(attempts.len(), 10);
    assert!(attempts.iter().all(|a| a.step_id.trim_start_matches('s').parse::<u32>().unwrap() % 2 == 0));
    let events = s.list_events("r1", 0).await.unwrap();
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as i64 + 1));
    assert_eq!(events.len(), 3 + 10);
}

/// Events a commit carries (tool calls, gate and capability decisions) are
/// written with it, before the attempt endings, and vanish with a refused commit.
pub async fn events_of_a_commit_are_recorded_with_it<S: Store>(s: &S) {
    use steward_core::event::{NewEvent, Payload};
    running_run(s, "r1", "me", at(1)).await;
    let mut c = commit("r1", RunState::Running, at(2));
    c.started = vec![start("a", 1)];
    s.commit(c).await.unwrap();
    let decision = |outcome: &str| NewEvent {
        actor: Actor::System,
        actor_id: "tool-bus".into(),
        step_id: Some("a".into()),
        payload: Payload::CapabilityAction {
            capability_id: "proc.exec:echo".into(),
            actor_id: "tool-bus".into(),
            job_id: "job-r1".into(),
            decision_outcome: outcome.into(),
        },
    };
    let mut bad = commit("r1", RunState::Running, at(3));
    bad.events = vec![decision("deny")];
    bad.finished = vec![finish("ghost", 1, AttemptStatus::Completed)];
    assert!(s.commit(bad).await.is_err());
    let mut c = commit("r1", RunState::Running, at(3));
    c.events = vec![decision("allow")];
    c.finished = vec![finish("a", 1, AttemptStatus::Completed)];
    s.commit(c).await.unwrap();
    let events = s.list_events("r1", 0).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "run_created",
            "run_state_changed",
            "run_claimed",
            "step_attempt_started",
            "capability_action",
            "step_attempt_finished"
        ]
    );
    let e = &events[4];
    assert_eq!(
        (e.actor_id.as_str(), e.step_id.as_deref(), e.capability_id.as_deref()),
        ("tool-bus", Some("a"), Some("proc.exec:echo"))
    );
    assert_eq!(e.payload["decision_outcome"], "allow");
}

/// Every event type of the registry round-trips through the store unchanged.
pub async fn every_registered_event_round_trips<S: Store>(s: &S) {
    use steward_core::event::{NewEvent, Payload};
    use steward_core::event_registry::{REGISTRY, example};
    running_run(s, "r1", "me", at(1)).await;
    let mut c = commit("r1", RunState::Running, at(2));
    c.events = REGISTRY
        .iter()
        .map(|spec| NewEvent {
            actor: spec.actor.unwrap_or(Actor::System),
            actor_id: "tester".into(),
            step_id: None,
            payload: Payload::recorded(spec.event_type, example(spec)),
        })
        .collect();
    s.commit(c).await.unwrap();
    let events = s.list_events("r1", 3).await.unwrap();
    assert_eq!(events.len(), REGISTRY.len());
    for (e, spec) in events.iter().zip(REGISTRY) {
        assert_eq!((e.event_type.as_str(), &e.payload), (spec.event_type, &example(spec)));
    }
    let llm = events.iter().find(|e| e.event_type == "llm_inference").unwrap();
    assert_eq!(llm.model_id.as_deref(), Some("x"), "the envelope carries the model");
}

/// HSK-400-INVALID-EVENT: an unknown or misshapen event fails its whole write.
pub async fn invalid_events_are_refused_and_leave_nothing<S: Store>(s: &S) {
    use steward_core::event::{NewEvent, Payload};
    running_run(s, "r1", "me", at(1)).await;
    for (event_type, body, actor) in [
        ("made_up", json!({}), Actor::System),
        ("micro_task_validation", json!({"wp_id": "w", "mt_id": "m", "iteration": 1}), Actor::Agent),
        ("workflow_recovery", json!({}), Actor::Human),
    ] {
        let mut c = commit("r1", RunState::Running, at(2));
        c.started = vec![start("a", 1)];
        c.events =
            vec![NewEvent { actor, actor_id: "x".into(), step_id: None, payload: Payload::recorded(event_type, body) }];
        let err = s.commit(c).await.unwrap_err();
        assert!(matches!(&err, Error::Invalid(m) if m.starts_with("HSK-400-INVALID-EVENT")), "{err}");
    }
    assert!(s.list_attempts("r1").await.unwrap().is_empty());
    assert_eq!(s.list_events("r1", 0).await.unwrap().len(), 3);
    assert_eq!(s.get_run("r1").await.unwrap().last_event_seq, 3);
}

/// The mirror's feed: every run's events in store-wide `id` order, paged.
pub async fn events_are_listed_store_wide_in_id_order<S: Store>(s: &S) {
    running_run(s, "a", "me", at(1)).await;
    running_run(s, "b", "me", at(2)).await;
    let mut c = commit("a", RunState::Running, at(3));
    c.started = vec![start("x", 1)];
    s.commit(c).await.unwrap();
    let all = s.list_events_since(0, 100).await.unwrap();
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let runs: Vec<&str> = all.iter().map(|e| e.workflow_run_id.as_str()).collect();
    assert_eq!(runs, ["a", "a", "a", "b", "b", "b", "a"]);
    let page = s.list_events_since(all[1].id, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [all[2].id, all[3].id]);
    assert!(s.list_events_since(all[6].id, 10).await.unwrap().is_empty());
}

/// FR-EVT-004 / HSK-GC-004: retention removes old events of finished runs only,
/// and records its report before deleting.
pub async fn prune_spares_unfinished_runs_and_reports_first<S: Store>(s: &S) {
    use steward_store::RetentionPolicy;
    running_run(s, "done", "me", at(0)).await;
    let mut finished = commit("done", RunState::Running, at(1));
    finished.id = Some("c-done".into());
    finished.transition = to(RunState::Completed, "ok");
    s.commit(finished.clone()).await.unwrap();
    running_run(s, "live", "me", at(0)).await;
    let day = 86_400;
    let later = at(40 * day);
    let policy = RetentionPolicy::default();

    let dry = s.prune(later, &policy, true).await.unwrap();
    assert_eq!((dry.scanned, dry.pruned_ids.len(), dry.spared), (7, 4, 3));
    // A per-family setting keeps the workflow family (every event here) longer than the default.
    let mut keep = RetentionPolicy::default();
    keep.family_days.insert("workflow".into(), 100);
    let kept = s.prune(later, &keep, true).await.unwrap();
    assert_eq!((kept.pruned_ids.len(), kept.spared), (0, 0), "per-family retention");
    assert_eq!(s.list_events("done", 0).await.unwrap().len(), 4, "a dry run deletes nothing");
    assert!(s.list_events("_system", 0).await.unwrap().is_empty(), "a dry run records nothing");
    assert_eq!(s.commit(finished.clone()).await.unwrap().state, RunState::Completed, "ids kept until pruned");

    let report = s.prune(later, &policy, false).await.unwrap();
    assert_eq!((report.pruned_ids.len(), report.spared, report.runs_emptied), (4, 3, 1));
    assert!(report.bytes > 0);
    assert!(s.list_events("done", 0).await.unwrap().is_empty());
    assert_eq!(s.list_events("live", 0).await.unwrap().len(), 3, "events of a running run are never pruned");
    // A finished run's commit ids are forgotten: repeating its last commit is now a conflict,
    // and still changes nothing.
    assert!(matches!(s.commit(finished).await, Err(Error::Conflict { .. })));
    assert!(s.list_events("done", 0).await.unwrap().is_empty());
    let sys = s.list_events("_system", 0).await.unwrap();
    assert_eq!(sys.len(), 1);
    let p = &sys[0].payload;
    assert_eq!(
        (sys[0].event_type.as_str(), p["items_pruned"].as_u64(), p["items_spared"].as_u64()),
        ("prune_report", Some(4), Some(3))
    );
    assert!(sys[0].id > report.pruned_ids.iter().copied().max().unwrap(), "report recorded in the pruning transaction");

    // Ids are never reused after a prune: the mirror reads "everything after the last id".
    let last = s.list_events_since(0, 100).await.unwrap().last().map(|e| e.id).unwrap();
    running_run(s, "new", "me", later).await;
    let after = s.list_events_since(last, 100).await.unwrap();
    assert_eq!(after.iter().map(|e| e.workflow_run_id.as_str()).collect::<Vec<_>>(), ["new", "new", "new"]);
}
