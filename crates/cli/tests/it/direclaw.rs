//! Issue 16: a DireClaw `orchestrator.yaml` runs as it is, one of its workflows at a time, with
//! its problems reported against the file's own lines.

use crate::support::{Steward, text};

const ORCHESTRATOR: &str = r#"id: default_orchestrator
selector_agent: workflow_router
default_workflow: minimal_single_agent
selection_max_retries: 2
agents:
  workflow_router:
    provider: anthropic
    model: sonnet
    can_orchestrate_workflows: true
  default:
    provider: anthropic
    model: sonnet
workflows:
  - id: minimal_single_agent
    version: 1
    inputs: [user_prompt]
    steps:
      - id: generate
        type: agent_task
        agent: default
        workspace_mode: run_workspace
        prompt: |
          {{inputs.user_prompt}}
          Write the result to {{workflow.output_paths.result}}.
        outputs: [result]
        output_files:
          result: output/result__{{workflow.run_id}}__{{workflow.step_id}}__a{{workflow.attempt}}.md
  - id: second
    version: 1
    steps:
      - {id: only, type: agent_task, agent: default, prompt: "say hi"}
workflow_orchestration:
  max_total_iterations: 12
  default_run_timeout_seconds: 3600
  default_step_timeout_seconds: 900
  max_step_timeout_seconds: 1800
"#;

/// A `claude` that answers every prompt with one result.
const FAKE_CLAUDE: &str = "#!/bin/sh\necho \"$@\" > claude-args.txt\necho '[workflow_result]{\"result\": \"tide tables, done\"}[/workflow_result]'\n";

fn with_fake_claude(s: &Steward) {
    s.write("claude", FAKE_CLAUDE);
    std::fs::set_permissions(s.path("claude"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn validate_checks_every_workflow_of_the_file() {
    let s = Steward::new();
    s.write("orchestrator.yaml", ORCHESTRATOR);
    let out = s.run(&["validate", "orchestrator.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out)
            .contains("orchestrator.yaml: ok: DireClaw orchestrator, 2 workflow(s) (minimal_single_agent, second)"),
        "{}",
        text(&out)
    );
    // A problem in the workflow that would not run still fails the file, at its own line.
    s.write("bad.yaml", &ORCHESTRATOR.replace("prompt: \"say hi\"", "prompt: \"say {{inputs.nope}}\""));
    let out = s.run(&["validate", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("bad.yaml:31: step `only`, field `workflows[1].steps[0].prompt`: template `{{inputs.nope}}` names unknown input `nope`"),
        "{}",
        text(&out)
    );
    s.write("plain.yaml", "id: p\nversion: 1\nsteps:\n  - {id: a, type: noop}\n");
    let out = s.run(&["run", "plain.yaml", "--workflow", "a"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--workflow picks one workflow of a DireClaw orchestrator file; plain.yaml is not one"),
        "{}",
        text(&out)
    );
    let out = s.run(&["validate", "orchestrator.yaml", "--workflow", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("invalid workflow id `nope`"), "{}", text(&out));
}

#[test]
fn a_workflow_of_the_file_runs_with_the_claude_cli_and_status_says_where_it_came_from() {
    let s = Steward::new();
    s.write("orchestrator.yaml", ORCHESTRATOR);
    with_fake_claude(&s);
    // Which workflow: DireClaw's file holds several.
    let out = s.run(&["run", "orchestrator.yaml"]);
    assert!(!out.status.success());
    assert!(
        text(&out)
            .contains("holds 2 workflow(s) (minimal_single_agent, second): name the one to run (`--workflow ID`)"),
        "{}",
        text(&out)
    );

    let out = s
        .cmd(&[
            "run",
            "orchestrator.yaml",
            "--workflow",
            "minimal_single_agent",
            "--input",
            "user_prompt=tide tables",
            "--json",
        ])
        .env("STEWARD_CLAUDE_BIN", s.path("claude"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["state"], "completed", "{run}");
    let id = run["run_id"].as_str().unwrap();
    // spec 06: the anthropic agent is `claude` with the alias mapped.
    let args = std::fs::read_to_string(s.path("claude-args.txt")).unwrap();
    assert!(args.contains("--model claude-sonnet-4-5"), "{args}");
    let status = s.run(&["status", id]);
    let shown = text(&status);
    let origin = std::path::absolute(s.path("orchestrator.yaml")).unwrap();
    assert!(
        shown.contains(&format!(
            "from:        {}: orchestrator default_orchestrator, workflow minimal_single_agent",
            origin.display()
        )),
        "{shown}"
    );
}

/// Issue 16 point 1: an agent CLI that is not installed is a clear error before the run starts,
/// and nothing is recorded.
#[test]
fn a_missing_agent_cli_is_said_before_the_run_starts() {
    let s = Steward::new();
    s.write("orchestrator.yaml", ORCHESTRATOR);
    let args = ["run", "orchestrator.yaml", "--workflow", "minimal_single_agent", "--input", "user_prompt=x"];
    let out = s.cmd(&args).env("PATH", "/usr/bin:/bin").env_remove("STEWARD_CLAUDE_BIN").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("agent `default` runs the `claude` CLI, which is not installed here: no `claude` on PATH; install it, or set STEWARD_CLAUDE_BIN to its path"),
        "{}",
        text(&out)
    );
    let out = s.cmd(&args).env("STEWARD_CLAUDE_BIN", s.path("nowhere/claude")).output().unwrap();
    assert!(text(&out).contains("executable file; install it, or set STEWARD_CLAUDE_BIN"), "{}", text(&out));
    if s.data_dir().join("steward.db").exists() {
        let runs = s.json(&["list", "--json", "--all"]);
        assert_eq!(runs.as_array().map(Vec::len), Some(0), "nothing was recorded: {runs}");
    }
}

/// Issue 16 point 2's engineering example ends with `next: done`, a step that does not exist:
/// DireClaw's HEAD loads the file and fails the run when that step completes
/// (TransitionValidation, not retried). So does Steward.
#[test]
fn a_next_that_names_no_step_fails_the_run_when_the_step_completes() {
    let s = Steward::new();
    s.write("orchestrator.yaml", &ORCHESTRATOR.replace("prompt: \"say hi\"}", "prompt: \"say hi\", next: done}"));
    with_fake_claude(&s);
    let out = s.run(&["validate", "orchestrator.yaml"]);
    assert!(out.status.success(), "the file loads: {}", text(&out));
    let out = s
        .cmd(&["run", "orchestrator.yaml", "--workflow", "second", "--json"])
        .env("STEWARD_CLAUDE_BIN", s.path("claude"))
        .output()
        .unwrap();
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(run["state"], "failed", "{run}");
    assert!(
        run["terminal_reason"]
            .as_str()
            .unwrap()
            .contains("transition target `done` of step `only` is not a step of the workflow (TransitionValidation)"),
        "{run}"
    );
    assert_eq!(run["total_iterations"], 1, "not retried: {run}");
}
