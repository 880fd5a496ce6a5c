//! The torture run (issue 10): the real binary killed with SIGKILL at seeded random moments
//! across workloads that exercise DAG branches, retries with backoff, agent steps against a
//! loopback model server and a micro-task job; a driver SIGSTOPped past the stall threshold and
//! resumed elsewhere; and a disk that fills during a run and is freed. It prints its figures
//! last and fails on any step lost, any completed step run again, any effect doubled beyond the
//! attempts in flight at a kill, any overlap of a retry with its killed attempt's command, or
//! any run that did not complete.
//!
//! The test suite runs a short version; `scripts/torture --kills 1000` is the long one
//! (`STEWARD_TORTURE_KILLS`, `STEWARD_TORTURE_SEED`, `STEWARD_TORTURE_STOPS`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;
use steward_core::Timestamp;
use steward_test_support::{ModelServer, Received, Reply};

use crate::crash::EFFECT;
use crate::micro_task::{DEMO_FIX, PACKET, demo};
use crate::support::*;

/// What one run did wrong, counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Findings {
    /// Steps a completed run never completed, completed attempts without their effect, or
    /// completed attempts that a later look no longer found.
    pub(crate) lost: u32,
    /// Steps that ran again after they had completed.
    pub(crate) reruns: u32,
    /// Effects that happened twice, beyond those of attempts in flight at a kill.
    pub(crate) duplicates: u32,
    /// Commands that ran while an earlier attempt of their step still ran.
    pub(crate) overlaps: u32,
    /// What each finding was.
    pub(crate) notes: Vec<String>,
}

impl Findings {
    pub(crate) fn clean(&self) -> bool {
        self.lost + self.reruns + self.duplicates + self.overlaps == 0 && self.notes.is_empty()
    }

    fn note(&mut self, what: String) {
        self.notes.push(what);
    }

    fn add(&mut self, other: Findings) {
        self.lost += other.lost;
        self.reruns += other.reruns;
        self.duplicates += other.duplicates;
        self.overlaps += other.overlaps;
        self.notes.extend(other.notes);
    }
}

/// The completed attempts of a run, as `(step, attempt)`.
pub(crate) fn completed_attempts(status: &Value) -> BTreeSet<(String, u64)> {
    let mut out = BTreeSet::new();
    for step in status["steps"].as_array().into_iter().flatten() {
        for a in step["attempts"].as_array().into_iter().flatten().filter(|a| a["status"] == "completed") {
            out.insert((step["step_id"].as_str().unwrap_or_default().to_owned(), a["attempt"].as_u64().unwrap_or(0)));
        }
    }
    out
}

/// The effects of a run's step attempts: the lines `run step attempt` its shell steps appended to
/// `effects.log`, and the model requests its agent steps sent (keyed `run:step:attempt`).
fn effects_of(s: &Steward, id: &str, requests: &[Received]) -> BTreeMap<(String, u64), u32> {
    let mut effects = BTreeMap::new();
    for line in std::fs::read_to_string(s.path("effects.log")).unwrap_or_default().lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        if let [run, step, attempt] = parts[..]
            && run == id
        {
            *effects.entry((step.to_owned(), attempt.parse().unwrap_or(0))).or_default() += 1;
        }
    }
    for r in requests {
        if let Some((run, step, attempt)) = r.header("idempotency-key").and_then(|k| {
            let mut p = k.split(':');
            Some((p.next()?, p.next()?, p.next()?.parse::<u64>().ok()?))
        }) && run == id
        {
            *effects.entry((step.to_owned(), attempt)).or_default() += 1;
        }
    }
    effects
}

/// Checks a finished run against its effects, the completed attempts seen between kills
/// (`seen`), and its event log.
pub(crate) fn analyze(
    s: &Steward,
    id: &str,
    steps: &[&str],
    seen: &BTreeSet<(String, u64)>,
    requests: &[Received],
) -> Findings {
    let mut f = Findings::default();
    let status = s.json(&["status", id, "--json"]);
    if status["state"] != "completed" {
        f.note(format!("run {id} ended {}: {}", status["state"], status["terminal_reason"]));
    }
    let effects = effects_of(s, id, requests);
    let mut ran: Vec<&str> = Vec::new();
    for step in status["steps"].as_array().into_iter().flatten() {
        let step_id = step["step_id"].as_str().unwrap_or_default();
        ran.push(step_id);
        let attempts = step["attempts"].as_array().cloned().unwrap_or_default();
        let status_of =
            |n: u64| attempts.iter().find(|a| a["attempt"].as_u64() == Some(n)).map(|a| a["status"].clone());
        let done: Vec<u64> =
            attempts.iter().filter(|a| a["status"] == "completed").filter_map(|a| a["attempt"].as_u64()).collect();
        match done[..] {
            [] => {
                f.lost += 1;
                let why: Vec<String> =
                    attempts.iter().map(|a| format!("#{} {} {}", a["attempt"], a["status"], a["error"])).collect();
                f.note(format!("{id}: step {step_id} never completed ({})", why.join("; ")));
                continue;
            }
            [_] => {}
            [_, ..] => {
                f.reruns += done.len() as u32 - 1;
                f.note(format!("{id}: step {step_id} completed {} times", done.len()));
            }
        }
        let last = done[0];
        let has_effects = effects.keys().any(|(st, _)| st == step_id);
        if has_effects && !effects.contains_key(&(step_id.to_owned(), last)) {
            f.lost += 1;
            f.note(format!("{id}: {step_id}#{last} completed without its effect"));
        }
        for ((st, attempt), n) in effects.iter().filter(|((st, _), _)| st == step_id) {
            if *n > 1 {
                f.duplicates += n - 1;
                f.note(format!("{id}: {st}#{attempt} took effect {n} times"));
            }
            if *attempt > last {
                f.reruns += 1;
                f.note(format!("{id}: {st} ran again (#{attempt}) after #{last} completed"));
            } else if *attempt < last && status_of(*attempt).is_some_and(|s| s != "interrupted" && s != "failed") {
                f.duplicates += 1;
                f.note(format!("{id}: {st}#{attempt} took effect but was not in flight at a kill"));
            }
        }
    }
    for step in steps.iter().filter(|s| !ran.contains(s)) {
        f.lost += 1;
        f.note(format!("{id}: step {step} never ran"));
    }
    let now = completed_attempts(&status);
    for gone in seen.difference(&now) {
        f.lost += 1;
        f.note(format!("{id}: {}#{} was completed and is no longer", gone.0, gone.1));
    }
    let overlaps = std::fs::read_to_string(s.path("overlaps.log")).unwrap_or_default();
    f.overlaps += overlaps.lines().count() as u32;
    if !overlaps.is_empty() {
        f.note(format!("{id}: overlaps: {}", overlaps.trim()));
    }
    let events = s.json(&["events", id, "--json"]);
    let events = events.as_array().cloned().unwrap_or_default();
    if events.iter().enumerate().any(|(i, e)| e["seq"].as_u64() != Some(i as u64 + 1)) {
        f.lost += 1;
        f.note(format!("{id}: the event log has a gap"));
    }
    if events.windows(2).any(|w| w[0]["ts"].as_str() > w[1]["ts"].as_str()) {
        f.note(format!("{id}: events out of order"));
    }
    f
}

/// How long the run is.
#[derive(Debug, Clone, Copy)]
struct Settings {
    kills: u32,
    seed: u64,
    stops: u32,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        Settings {
            kills: var("STEWARD_TORTURE_KILLS", 12) as u32,
            seed: var("STEWARD_TORTURE_SEED", 1),
            stops: var("STEWARD_TORTURE_STOPS", 1) as u32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Dag,
    Retry,
    Agents,
    MicroTasks,
}

const WORKLOADS: [Workload; 4] = [Workload::Dag, Workload::Retry, Workload::Agents, Workload::MicroTasks];

/// A workflow step running the effect, with extra YAML.
fn effect_step(id: &str, extra: &str) -> String {
    format!("  - id: {id}\n    type: shell\n    run: '{}'\n{extra}", EFFECT.replace('\'', "''"))
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Dag => "dag",
            Workload::Retry => "retry",
            Workload::Agents => "agents",
            Workload::MicroTasks => "micro-tasks",
        }
    }

    /// Writes the workload into `s` and returns the command that starts it and the steps a
    /// completed run has.
    fn setup(self, s: &Steward, model: &str) -> (Vec<String>, Vec<&'static str>) {
        let owned = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        match self {
            Workload::Dag => {
                let mut wf = String::from("id: dag\nversion: 1\nlimits: {max_concurrent_steps: 2}\nsteps:\n");
                for (id, needs) in [("a", ""), ("b", "[a]"), ("c", "[a]"), ("d", "[b, c]"), ("e", "[]")] {
                    let needs = if needs.is_empty() { String::new() } else { format!("    needs: {needs}\n") };
                    wf.push_str(&effect_step(id, &needs));
                }
                s.write("wf.yaml", &wf);
                (owned(&["run", "wf.yaml"]), vec!["a", "b", "c", "d", "e"])
            }
            Workload::Retry => {
                // `flaky` fails its first two tries (each process run counts, so an interrupted
                // one may be among them), then takes effect; the retries wait a backoff. The
                // count is replaced by a rename: a kill between the truncation and the write of a
                // plain `>` would reset it and fail the step once more than the workload means.
                let flaky = r#"n=$(cat flaky.count 2>/dev/null || echo 0); echo $((n+1)) > flaky.count.new; mv flaky.count.new flaky.count; [ "$n" -ge 2 ] || exit 1"#;
                let wf = format!(
                    "id: retry\nversion: 1\nsteps:\n{}  - id: flaky\n    type: shell\n    retry: {{max_attempts: 4, backoff: {{initial_seconds: 0.1, multiplier: 2}}}}\n    run: '{}; {}'\n{}",
                    effect_step("first", ""),
                    flaky.replace('\'', "''"),
                    EFFECT.replace('\'', "''"),
                    effect_step("last", "")
                );
                s.write("wf.yaml", &wf);
                (owned(&["run", "wf.yaml"]), vec!["first", "flaky", "last"])
            }
            Workload::Agents => {
                let wf = format!(
                    "id: agents\nversion: 1\nagents:\n  writer: {{provider: openai, base_url: \"{model}/v1\", model: torture}}\nsteps:\n  - id: plan\n    type: agent_task\n    agent: writer\n    prompt: Plan the work.\n    outputs: [plan]\n  - id: review\n    type: agent_review\n    agent: writer\n    prompt: \"Review {{{{steps.plan.outputs.plan}}}}\"\n{}",
                    effect_step("ship", "")
                );
                s.write("wf.yaml", &wf);
                (owned(&["run", "wf.yaml"]), vec!["plan", "review", "ship"])
            }
            Workload::MicroTasks => {
                let verify = "  - \"mkdir -p locks; exec 9>>locks/verify; flock -n 9 || echo verify >> overlaps.log; python3 -m unittest -q test_calc\"";
                s.write(
                    "packet.yaml",
                    &format!(
                        "{}execution_policy:\n  escalation_chain:\n    - {{level: 0, provider: openai, base_url: \"{model}/v1\", model: small}}\n    - {{level: 1, hard_gate: true}}\n",
                        PACKET.replace("  - python3 -m unittest -q test_calc", verify)
                    ),
                );
                (owned(&["mt", "run", "packet.yaml"]), vec!["micro_tasks"])
            }
        }
    }

    /// What only this workload can get wrong: the micro-task job's own bookkeeping. `spawns`
    /// are the moments each steward process of the run started.
    fn check(self, s: &Steward, id: &str, spawns: &[Instant], requests: &[Received]) -> Findings {
        let mut f = Findings::default();
        if self != Workload::MicroTasks {
            return f;
        }
        let calc = std::fs::read_to_string(s.path("calc.py")).unwrap_or_default();
        if calc.matches("return a + b").count() != 1 || calc.contains("a - b") {
            f.lost += 1;
            f.note(format!("{id}: calc.py is not fixed exactly once:\n{calc}"));
        }
        // Every process but the last was killed, so a model request repeated under the same
        // key by a later process was in flight when its process died; the same process asking
        // twice is a duplicate. A request belongs to the last process started before it arrived.
        let mut by_key: BTreeMap<(&str, usize), u32> = BTreeMap::new();
        // Every micro-task trial asks the same question (the same key): only this run's count.
        let first = spawns.first().copied();
        for r in requests.iter().filter(|r| r.body.contains("MT-001") && first.is_some_and(|f| r.at >= f)) {
            let process = spawns.iter().filter(|at| **at <= r.at).count();
            *by_key.entry((r.header("idempotency-key").unwrap_or_default(), process)).or_default() += 1;
        }
        for ((key, process), n) in by_key.into_iter().filter(|(_, n)| *n > 1) {
            f.duplicates += n - 1;
            f.note(format!("{id}: process {process} asked the model {n} times for {key}"));
        }
        f
    }
}

/// Answers like a model: the micro-task fix, a review's approval, or a plan.
fn respond(r: &Received) -> Reply {
    let content = if r.body.contains("MT-001") {
        DEMO_FIX.to_owned()
    } else if r.body.contains("Review") {
        r#"[workflow_result]{"status": "complete", "decision": "approve", "summary": "fine", "outputs": {}}[/workflow_result]"#.to_owned()
    } else {
        r#"[workflow_result]{"status": "complete", "outputs": {"plan": "do it"}}[/workflow_result]"#.to_owned()
    };
    // Long enough that kills land while requests are in flight.
    Reply::openai(&content).after(Duration::from_millis(120))
}

/// What the whole run found.
#[derive(Debug, Default)]
struct Tally {
    kills: u32,
    runs: u32,
    completed: u32,
    findings: Findings,
    /// Seconds from starting a `resume` to the run being taken over, per takeover after a kill.
    recovered_after: Vec<f64>,
    stops: u32,
    /// Stopped drivers the takeover killed.
    stopped_killed: u32,
    late_writes_refused: u32,
    stall_takeover_after: Vec<f64>,
    disk: String,
}

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The times at which the run was taken over by `resume`, in ms since the epoch.
fn takeovers(s: &Steward, id: &str) -> Vec<i64> {
    let events = s.json(&["events", id, "--type", "run_state_changed", "--json"]);
    events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["payload"]["to_state"] == "running"
                && e["payload"]["reason"].as_str().is_some_and(|r| r.starts_with("resumed"))
        })
        .filter_map(|e| Timestamp::parse_rfc3339(e["ts"].as_str()?).map(|t| t.millis()))
        .collect()
}

fn run_id(s: &Steward) -> Option<String> {
    s.json(&["list", "--json"]).as_array()?.first().and_then(|r| r["run_id"].as_str()).map(str::to_owned)
}

fn state(s: &Steward, id: &str) -> String {
    s.json(&["status", id, "--json"])["state"].as_str().unwrap_or_default().to_owned()
}

fn spawn(s: &Steward, args: &[String]) -> Child {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.cmd(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// One run of a workload, killed `kills` times at random moments, then let finish.
fn kill_trial(t: &mut Tally, w: Workload, kills: u32, rng: &mut StdRng, server: &ModelServer) {
    let s = if w == Workload::MicroTasks { demo() } else { Steward::new() };
    let (start, steps) = w.setup(&s, &server.url);
    let mut seen = BTreeSet::new();
    let mut spawns = Vec::new();
    let mut done = 0;
    let finished = loop {
        let id = run_id(&s);
        if let Some(id) = &id
            && state(&s, id) == "completed"
        {
            break true;
        }
        let args = match &id {
            None => start.clone(),
            Some(id) => vec!["resume".to_owned(), id.clone()],
        };
        let before = id.as_ref().map(|id| takeovers(&s, id).len());
        let spawned_at = wall_ms();
        spawns.push(Instant::now());
        let mut child = spawn(&s, &args);
        if done < kills {
            std::thread::sleep(Duration::from_millis(rng.random_range(5..700)));
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            done += 1;
            t.kills += 1;
        } else {
            let out = child.wait_with_output().unwrap();
            if !out.status.success() {
                t.findings.note(format!("{}: the last {} failed: {}", w.name(), args[0], text(&out)));
                break false;
            }
        }
        if let (Some(id), Some(before)) = (&id, before) {
            let after = takeovers(&s, id);
            if let Some(at) = after.get(before) {
                t.recovered_after.push((at - spawned_at) as f64 / 1000.0);
            }
        }
        if let Some(id) = run_id(&s) {
            let status = s.json(&["status", &id, "--json"]);
            seen.extend(completed_attempts(&status));
        }
    };
    let Some(id) = run_id(&s) else {
        t.findings.note(format!("{}: no run was ever recorded", w.name()));
        return;
    };
    t.runs += 1;
    let requests = server.received();
    let mut f = analyze(&s, &id, &steps, &seen, &requests);
    f.add(w.check(&s, &id, &spawns, &requests));
    if finished && state(&s, &id) == "completed" {
        t.completed += 1;
    }
    t.findings.add(f);
}

/// A driver SIGSTOPped mid-step past the stall threshold; another process resumes the run: it
/// kills the unresponsive driver (which could hold the database's write lock) and its command,
/// then finishes the run. Continuing the driver afterwards changes nothing.
fn stop_trial(t: &mut Tally, rng: &mut StdRng) {
    let s = Steward::new();
    let liveness = ["--heartbeat-secs", "1", "--stall-threshold", "3"];
    let slow = EFFECT.replace("sleep 0.1", "sleep 0.6");
    let mut wf = String::from("id: stop\nversion: 1\nsteps:\n");
    for id in ["a", "b", "c"] {
        wf.push_str(&format!("  - id: {id}\n    type: shell\n    run: '{}'\n", slow.replace('\'', "''")));
    }
    s.write("wf.yaml", &wf);
    let args = |rest: &[&str]| liveness.iter().chain(rest).map(|a| a.to_string()).collect::<Vec<_>>();
    let mut driver = spawn(&s, &args(&["run", "wf.yaml"]));
    std::thread::sleep(Duration::from_millis(rng.random_range(200..1500)));
    let driver_pid = Pid::from_raw(driver.id() as i32);
    kill(driver_pid, Signal::SIGSTOP).unwrap();
    t.stops += 1;
    let Some(id) = run_id(&s) else {
        let _ = kill(driver_pid, Signal::SIGKILL);
        let _ = driver.wait();
        t.findings.note("stop: the driver was stopped before it recorded its run".into());
        return;
    };
    let stopped_at = wall_ms();
    let deadline = Instant::now() + Duration::from_secs(60);
    let resumed = loop {
        let out = s.cmd(&args(&["resume", &id]).iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
        if out.status.success() {
            break true;
        }
        if !crate::crash::still_held(&out) || Instant::now() > deadline {
            t.findings.note(format!("stop: resume failed: {}", text(&out)));
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if let Some(at) = takeovers(&s, &id).first() {
        t.stall_takeover_after.push((at - stopped_at) as f64 / 1000.0);
    }
    let before = (s.json(&["events", &id, "--json"]), s.json(&["status", &id, "--json"]));
    if driver.try_wait().ok().flatten().is_some() {
        t.stopped_killed += 1;
    }
    let _ = kill(driver_pid, Signal::SIGCONT);
    let exited = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        driver.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = kill(driver_pid, Signal::SIGKILL);
        t.findings.note("stop: the continued driver did not stop".into());
    }
    let _ = driver.wait();
    let after = (s.json(&["events", &id, "--json"]), s.json(&["status", &id, "--json"]));
    if before == after {
        t.late_writes_refused += 1;
    } else {
        t.findings.note(format!("stop: the continued driver wrote to run {id} after it was taken over"));
    }
    t.runs += 1;
    let f = analyze(&s, &id, &["a", "b", "c"], &BTreeSet::new(), &[]);
    if resumed && f.clean() {
        t.completed += 1;
    }
    t.findings.add(f);
}

/// Mounts a small tmpfs for the data directory, fills it while a run works, frees it; the run
/// must finish as if nothing happened. Skipped (and said so) where no tmpfs can be mounted.
fn disk_trial(t: &mut Tally) {
    let s = Steward::new();
    let mnt = s.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        t.disk = "skipped: this machine does not let the test mount a tmpfs".into();
        return;
    }
    let data = mnt.join("data");
    let slow = EFFECT.replace("sleep 0.1", "sleep 0.3");
    let mut wf = String::from("id: disk\nversion: 1\nsteps:\n");
    for id in ["a", "b", "c", "d", "e", "f"] {
        wf.push_str(&format!("  - id: {id}\n    type: shell\n    run: '{}'\n", slow.replace('\'', "''")));
    }
    s.write("wf.yaml", &wf);
    let data_arg = data.display().to_string();
    let child = s
        .cmd(&["--data-dir", &data_arg, "run", "wf.yaml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    // Fill the disk to the last byte, hold it full while steps finish, then free it.
    let filler = mnt.join("filler");
    let mut full = false;
    if let Ok(mut f) = std::fs::File::create(&filler) {
        use std::io::Write;
        let chunk = vec![0u8; 64 * 1024];
        full = loop {
            if let Err(e) = f.write_all(&chunk) {
                break e.raw_os_error() == Some(28);
            }
        };
    }
    std::thread::sleep(Duration::from_millis(1500));
    let _ = std::fs::remove_file(&filler);
    let out = child.wait_with_output().unwrap();
    t.runs += 1;
    let id = s
        .json(&["--data-dir", &data_arg, "list", "--json"])
        .as_array()
        .and_then(|a| a.first().cloned())
        .and_then(|r| r["run_id"].as_str().map(str::to_owned));
    match id {
        Some(id) if out.status.success() => {
            let status = s.json(&["--data-dir", &data_arg, "status", &id, "--json"]);
            if status["state"] == "completed" {
                t.completed += 1;
                t.disk = "filled mid-run and freed: the run completed".into();
            }
            if !full {
                t.findings.note("disk: the tmpfs could not be filled, so nothing was tried".into());
            }
        }
        _ => t.findings.note(format!("disk: the run did not complete: {}", text(&out))),
    }
    let _ = std::process::Command::new("umount").arg("-l").arg(&mnt).status();
}

fn seconds(v: &[f64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    format!("median {:.2}, max {:.2} (n={})", v[v.len() / 2], v[v.len() - 1], v.len())
}

#[test]
fn torture() {
    let cfg = Settings::from_env();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::answering(respond));
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut t = Tally::default();
    let started = Instant::now();
    let mut trial = 0;
    while t.kills < cfg.kills || trial < WORKLOADS.len() {
        let w = WORKLOADS[trial % WORKLOADS.len()];
        let kills = rng.random_range(1..=4).min(cfg.kills.saturating_sub(t.kills).max(1));
        kill_trial(&mut t, w, kills, &mut rng, &server);
        trial += 1;
    }
    for _ in 0..cfg.stops {
        stop_trial(&mut t, &mut rng);
    }
    disk_trial(&mut t);

    let f = &t.findings;
    for note in &f.notes {
        eprintln!("  ! {note}");
    }
    let report = [
        format!(
            "torture: seed {}, {:.0} s, workloads dag, retry, agents, micro-tasks",
            cfg.seed,
            started.elapsed().as_secs_f64()
        ),
        format!("  kills (SIGKILL)                         {}", t.kills),
        format!("  runs                                    {}", t.runs),
        format!("  runs completed                          {}", t.completed),
        format!("  steps lost                              {}", f.lost),
        format!("  completed steps re-run                  {}", f.reruns),
        format!("  duplicate effects beyond in-flight      {}", f.duplicates),
        format!("  orphan overlaps                         {}", f.overlaps),
        format!("  restart to recovered (s)                {}", seconds(&t.recovered_after)),
        format!(
            "  SIGSTOP past the stall threshold        {} (driver killed at takeover: {}, late writes: {})",
            t.stops,
            t.stopped_killed,
            t.stops - t.late_writes_refused
        ),
        format!("  stopped to taken over (s)               {}", seconds(&t.stall_takeover_after)),
        format!("  disk full                               {}", t.disk),
    ];
    eprintln!("{}", report.join("\n"));
    assert!(f.clean(), "the torture run found problems (listed above)");
    assert_eq!(t.completed, t.runs, "every run completes");
    assert_eq!((t.late_writes_refused, t.stopped_killed), (t.stops, t.stops), "stopped drivers are fenced off");
}
