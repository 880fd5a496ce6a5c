//! The crash test: SIGKILL the real binary at seeded random moments, recover, resume, and check
//! that every step ran, nothing completed ran again, and each event log is gapless.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

use crate::support::*;

/// Each step sleeps a little, then appends `run step attempt` and fsyncs it.
fn workflow() -> String {
    let effect = r#"sleep 0.1; printf '%s %s %s\n' "{{workflow.run_id}}" "{{workflow.step_id}}" "{{workflow.attempt}}" >> effects.log; sync effects.log"#;
    let mut s =
        String::from("id: crash\nversion: 1\nlimits: {max_total_iterations: 60, max_concurrent_steps: 2}\nsteps:\n");
    for (id, needs) in [("s1", ""), ("s2", "[s1]"), ("s3", "[s1]"), ("s4", "[s2, s3]"), ("s5", ""), ("s6", "")] {
        s.push_str(&format!("  - id: {id}\n    type: shell\n    run: '{}'\n", effect.replace('\'', "''")));
        if !needs.is_empty() {
            s.push_str(&format!("    needs: {needs}\n"));
        }
    }
    s
}

const STEPS: [&str; 6] = ["s1", "s2", "s3", "s4", "s5", "s6"];

fn run_id(s: &Steward) -> Option<String> {
    s.json(&["list", "--json"]).as_array()?.first().and_then(|r| r["run_id"].as_str()).map(str::to_owned)
}

fn crash_and_recover(seed: u64) {
    let s = Steward::new();
    let wf = s.write("crash.yaml", &workflow());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills = 0;
    loop {
        let id = run_id(&s);
        if let Some(id) = &id
            && s.json(&["status", id, "--json"])["state"] == "completed"
        {
            break;
        }
        let mut cmd = match &id {
            None => s.cmd(&["run", wf.to_str().unwrap()]),
            // A stall threshold of 0 makes the killed process's heartbeat stale at once.
            Some(id) => s.cmd(&["--stall-threshold", "0", "resume", id]),
        };
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        if kills < 4 {
            std::thread::sleep(Duration::from_millis(rng.random_range(5..600)));
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            kills += 1;
            continue;
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "seed {seed}: the final resume failed: {}", text(&out));
        break;
    }
    let id = run_id(&s).unwrap();
    let status = s.json(&["status", &id, "--json"]);
    assert_eq!(status["state"], "completed", "seed {seed}: {status}");

    // Every effect line, counted by (step, attempt).
    let log = std::fs::read_to_string(s.path("effects.log")).unwrap();
    let mut effects: BTreeMap<(String, u64), u32> = BTreeMap::new();
    for line in log.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "seed {seed}: torn effect line {line:?}");
        assert_eq!(parts[0], id);
        *effects.entry((parts[1].to_owned(), parts[2].parse().unwrap())).or_default() += 1;
    }
    for step in status["steps"].as_array().unwrap() {
        let step_id = step["step_id"].as_str().unwrap();
        let attempts = step["attempts"].as_array().unwrap();
        let completed: Vec<&Value> = attempts.iter().filter(|a| a["status"] == "completed").collect();
        assert_eq!(completed.len(), 1, "seed {seed}: step {step_id} completed {} times", completed.len());
        let done = completed[0]["attempt"].as_u64().unwrap();
        assert_eq!(
            effects.get(&(step_id.to_owned(), done)),
            Some(&1),
            "seed {seed}: the completed attempt {step_id}#{done} left exactly one effect"
        );
        for ((s_id, attempt), n) in &effects {
            if s_id != step_id {
                continue;
            }
            assert_eq!(*n, 1, "seed {seed}: attempt {s_id}#{attempt} ran twice");
            assert!(
                *attempt <= done,
                "seed {seed}: {s_id} ran again (attempt {attempt}) after attempt {done} completed"
            );
            if *attempt < done {
                let a = attempts.iter().find(|a| a["attempt"].as_u64() == Some(*attempt)).unwrap();
                assert_eq!(
                    a["status"], "interrupted",
                    "seed {seed}: a duplicate effect of {s_id}#{attempt} that was not in flight at a kill"
                );
            }
        }
    }
    let seen: Vec<&str> = status["steps"].as_array().unwrap().iter().map(|s| s["step_id"].as_str().unwrap()).collect();
    for step in STEPS {
        assert!(seen.contains(&step), "seed {seed}: step {step} never ran");
    }

    let events = s.json(&["events", &id, "--json"]);
    let events = events.as_array().unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1), "seed {seed}: event log has a gap");
    }
    assert!(events.windows(2).all(|w| w[0]["ts"].as_str() <= w[1]["ts"].as_str()), "seed {seed}: events out of order");
    eprintln!("seed {seed}: {kills} kills, {} attempts, {} events", status["total_iterations"], events.len());
}

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    for seed in 1..=5 {
        crash_and_recover(seed);
    }
}
