//! `steward approve` and `steward reject` as a person types them (issue 13 point 5).

use crate::support::*;

const FLOW: &str = "id: ship\nversion: 1\nsteps:\n  - {id: build, type: shell, run: 'echo built'}\n  - id: sign_off\n    type: approval\n    prompt: Ship it?\n    form: {reason: {type: string, required: true}, budget: number}\n  - {id: ship, type: shell, run: 'echo \"shipped: {{steps.sign_off.outputs.reason}}\" > shipped.txt'}\n";

#[test]
fn a_run_waits_for_approve_or_reject_from_the_command_line() {
    let s = Steward::new();
    s.write("flow.yaml", FLOW);
    let out = s.run(&["run", "flow.yaml", "--json"]);
    let waiting: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(waiting["state"], "awaiting_user", "{}", text(&out));
    let id = waiting["run_id"].as_str().unwrap().to_owned();
    assert!(waiting["summary"].as_str().unwrap().contains(&format!("steward approve {id} sign_off")), "{waiting}");

    let out = s.run(&["approve", &id, "sign_off", "--field", "budget=lots"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("field `budget`") && text(&out).contains("field `reason` is required"),
        "{}",
        text(&out)
    );
    let out = s.run(&["approve", &id, "sign_off", "--field", "reason"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("expected KEY=VALUE"), "{}", text(&out));
    let out = s.run(&["approve", &id, "build"]);
    assert!(text(&out).contains("not an approval"), "{}", text(&out));

    let out = s.run(&["approve", &id, "sign_off", "--field", "reason=green CI", "--comment", "go", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(std::fs::read_to_string(s.path("shipped.txt")).unwrap(), "shipped: green CI\n");
    let events = s.json(&["events", &id, "--json"]);
    let decision = events.as_array().unwrap().iter().find(|e| e["event_type"] == "human_decision").unwrap().clone();
    assert_eq!(decision["payload"]["fields"]["reason"], "green CI");
    assert!(decision["payload"]["decided_by"].as_str().unwrap().starts_with("cli:"), "{decision}");
    let out = s.run(&["reject", &id, "sign_off", "--comment", "too late"]);
    assert_eq!(out.status.code(), Some(2), "a finished run takes no decision: {}", text(&out));

    // A rejection with no `on_reject` fails the run and says who and why; `reject` needs a comment.
    let out = s.run(&["run", "flow.yaml", "--json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["run_id"].as_str().unwrap().to_owned();
    assert_eq!(s.run(&["reject", &id, "sign_off"]).status.code(), Some(2), "--comment is required");
    let out = s.run(&["reject", &id, "sign_off", "--comment", "not on a Friday", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(failed["terminal_reason"].as_str().unwrap().contains("not on a Friday"), "{failed}");

    // Only a named approver decides.
    s.write(
        "strict.yaml",
        &FLOW.replace("    prompt: Ship it?\n", "    prompt: Ship it?\n    approvers: [nobody-here]\n"),
    );
    let out = s.run(&["run", "strict.yaml", "--json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["run_id"].as_str().unwrap().to_owned();
    let out = s.run(&["approve", &id, "sign_off", "--field", "reason=x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("its approvers are nobody-here"), "{}", text(&out));
}
