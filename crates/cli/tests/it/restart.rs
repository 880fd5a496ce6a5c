//! `steward restart` and `steward fork` as a user types them (issue 13 point 6).

use crate::support::*;

#[test]
fn restart_reuses_the_work_before_its_step_and_fork_changes_inputs() {
    let s = Steward::new();
    s.write(
        "flow.yaml",
        "id: flow\nversion: 1\ninputs:\n  who: {type: string, default: ada}\nsteps:\n  - {id: a, type: shell, run: 'echo a >> effects.log'}\n  - id: b\n    type: shell\n    retry: {max_attempts: 1}\n    run: 'test -f ok'\n  - {id: c, type: shell, run: 'echo c-{{inputs.who}} >> effects.log'}\n",
    );
    let first = s.run(&["run", "flow.yaml", "--json"]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let parent: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let id = parent["run_id"].as_str().unwrap().to_owned();
    s.write("ok", "");

    let out = s.run(&["restart", &id, "--from", "b", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let child: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((child["state"].as_str(), child["parent_run_id"].as_str()), (Some("completed"), Some(id.as_str())));
    assert_eq!(child["steps"][0]["attempts"][0]["reused_from"], format!("{id}:a:1"));
    let effects = || std::fs::read_to_string(s.path("effects.log")).unwrap();
    assert_eq!(effects(), "a\nc-ada\n", "`a` ran once, in the first run");

    let out = s.run(&["fork", &id, "--from", "c", "--input", "who=bob", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(effects(), "a\nc-ada\nc-bob\n", "a fork from `c` runs only `c`, with the new input");
    assert_eq!(s.json(&["status", &id, "--json"])["state"], "failed", "the first run is left as it is");

    let out = s.run(&["restart", &id, "--from", "zzz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no step `zzz`"), "{}", text(&out));
    let out = s.run(&["fork", &id, "--input", "nope=1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unknown input `nope`"), "{}", text(&out));
}
