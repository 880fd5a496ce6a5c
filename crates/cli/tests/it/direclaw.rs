//! Issue 16: DireClaw `orchestrator.yaml` files run as they are, one of their workflows at a
//! time, with their problems reported against the file's own lines; the three example
//! orchestrators of DireClaw's spec run end to end against stand-ins for the `claude` and
//! `codex` CLIs that print what those CLIs print.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Steward, text};

/// `examples/direclaw/NAME`.
fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/direclaw").join(name)
}

fn example_text(name: &str) -> String {
    std::fs::read_to_string(example(name)).unwrap()
}

/// `cmd` with the example's stand-in `claude` and `codex` (`examples/direclaw/fake`).
fn with_fakes(mut cmd: Command) -> Command {
    cmd.env("STEWARD_CLAUDE_BIN", example("fake/claude")).env("STEWARD_CODEX_BIN", example("fake/codex"));
    cmd
}

/// Runs `args` with the stand-in CLIs; the `--json` report of the run.
fn run_json(s: &Steward, args: &[&str]) -> Value {
    let out = with_fakes(s.cmd(args)).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("steward {args:?}: {}", text(&out)))
}

/// What the stand-in CLIs were asked, in order: (cli, model, step) per call.
fn calls(s: &Steward) -> Vec<(String, String, String)> {
    let log = std::fs::read_to_string(s.path(".fake-agent-cli/calls.jsonl")).unwrap_or_default();
    log.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let step = v["step"].as_str().unwrap();
            let step = step.rsplit_once('-').map_or(step, |(_, s)| s);
            (v["cli"].as_str().unwrap().into(), v["model"].as_str().unwrap().into(), step.into())
        })
        .collect()
}

/// Each attempt of the run's `--json` report as `step#attempt status`, in the order they ran.
fn attempts(run: &Value) -> Vec<String> {
    let mut all: Vec<(String, String)> = Vec::new();
    for step in run["steps"].as_array().unwrap() {
        for a in step["attempts"].as_array().unwrap() {
            let at = a["started_at"].as_str().unwrap().to_owned();
            all.push((
                at,
                format!("{}#{} {}", step["step_id"].as_str().unwrap(), a["attempt"], a["status"].as_str().unwrap()),
            ));
        }
    }
    all.sort();
    all.into_iter().map(|(_, a)| a).collect()
}

/// The outputs of a step's last attempt.
fn outputs<'a>(run: &'a Value, step: &str) -> &'a Value {
    let step = run["steps"].as_array().unwrap().iter().find(|s| s["step_id"] == step).unwrap();
    &step["attempts"].as_array().unwrap().last().unwrap()["output"]["outputs"]
}

#[test]
fn validate_checks_every_workflow_of_the_file() {
    let s = Steward::new();
    for (name, ids) in [
        ("minimal.orchestrator.yaml", "1 workflow(s) (minimal_single_agent)"),
        ("product.orchestrator.yaml", "1 workflow(s) (product_default)"),
        ("engineering.orchestrator.yaml", "2 workflow(s) (engineering_default, code_with_reviews)"),
    ] {
        let out = s.run(&["validate", example(name).to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains(&format!("ok: DireClaw orchestrator, {ids}")), "{}", text(&out));
    }
    // What Steward reads differently is said, and the file is still valid.
    let out = s.run(&["validate", example("minimal.orchestrator.yaml").to_str().unwrap()]);
    assert!(
        text(&out).contains(": warning: step `generate`, field `workflows[0].steps[0].workspace_mode`: `agent_workspace` (DireClaw's baseline)"),
        "{}",
        text(&out)
    );
    // A problem in a workflow that would not run still fails the file, at its own line.
    let engineering = example_text("engineering.orchestrator.yaml");
    let bad = engineering.replacen("{{inputs.user_prompt}}", "{{steps.nope.outputs.x}}", 1);
    // A block scalar's problems are located at its first line.
    let line = 1 + bad.lines().position(|l| l.contains("Work in {{workflow.run_workspace}}.")).unwrap();
    s.write("bad.yaml", &bad);
    let out = s.run(&["validate", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "bad.yaml:{line}: step `default_execute`, field `workflows[0].steps[0].prompt`: template `{{{{steps.nope.outputs.x}}}}` names unknown step `nope`"
        )),
        "{}",
        text(&out)
    );
    let out = s.run(&["validate", "bad.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&v["valid"], &v["orchestrator"], &v["errors"][0]["line"]),
        (&json!(false), &json!(true), &json!(line)),
        "{v}"
    );
    assert!(v["warnings"].is_array(), "{v}");
    s.write("broken-steward.yaml", "id: b\nversion: 1\nsteps:\n  - {id: a, type: nope}\n");
    let v: Value = serde_json::from_slice(&s.run(&["validate", "broken-steward.yaml", "--json"]).stdout).unwrap();
    assert_eq!(
        (&v["valid"], &v["orchestrator"], &v["errors"][0]["line"]),
        (&json!(false), &Value::Null, &json!(4)),
        "{v}"
    );
    // An input the workflow does not declare is DireClaw's to take: said, and the file is valid.
    s.write("undeclared.yaml", &engineering.replacen("{{inputs.user_prompt}}", "{{inputs.sender}}", 1));
    let out = s.run(&["validate", "undeclared.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "undeclared.yaml:{line}: warning: step `default_execute`, field `workflows[0].steps[0].prompt`: template `{{{{inputs.sender}}}}` names input `sender`, which the workflow does not declare: a run must be given it"
        )),
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
    let out = s.run(&["validate", example("minimal.orchestrator.yaml").to_str().unwrap(), "--workflow", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("invalid workflow id `nope`"), "{}", text(&out));
    // Which workflow: DireClaw's file may hold several.
    let out = s.run(&["run", example("engineering.orchestrator.yaml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "holds 2 workflow(s) (engineering_default, code_with_reviews): name the one to run (`--workflow ID`)"
        ),
        "{}",
        text(&out)
    );
}

/// Issue 16 point 2: spec §5's minimal and product orchestrators, unchanged, run with the
/// `claude` CLI (the baseline's `agent_workspace`, and `inputs` as a list and as a map), and
/// `steward status` says which file and workflow a run came from.
#[test]
fn the_minimal_and_product_examples_run_with_the_claude_cli() {
    let s = Steward::new();
    let minimal = example("minimal.orchestrator.yaml");
    let run = run_json(
        &s,
        &[
            "run",
            minimal.to_str().unwrap(),
            "--workflow",
            "minimal_single_agent",
            "--input",
            "user_prompt=tide tables",
            "--json",
        ],
    );
    assert_eq!(run["state"], "completed", "{run}");
    assert_eq!(outputs(&run, "generate")["result"], "result by claude (claude-sonnet-4-5)", "{run}");
    let id = run["run_id"].as_str().unwrap();
    // The output file the step maps, under the attempt, with the run's id in its name.
    let file =
        s.data_dir().join(format!("runs/{id}/steps/generate/attempts/1/outputs/output/result__{id}__generate__a1.md"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "result by claude (claude-sonnet-4-5)");
    let shown = text(&s.run(&["status", id]));
    let origin = std::path::absolute(&minimal).unwrap();
    assert!(
        shown.contains(&format!(
            "from:        {}: orchestrator default_orchestrator, workflow minimal_single_agent",
            origin.display()
        )),
        "{shown}"
    );

    let product = example("product.orchestrator.yaml");
    let run = run_json(
        &s,
        &[
            "run",
            product.to_str().unwrap(),
            "--workflow",
            "product_default",
            "--input",
            "user_message=what changed?",
            "--json",
        ],
    );
    assert_eq!(run["state"], "completed", "{run}");
    assert_eq!(outputs(&run, "answer")["artifact"], "artifact by claude (claude-sonnet-4-5)", "{run}");
    // spec 06: opus and sonnet mapped; the prompt handed over as a file.
    assert_eq!(
        calls(&s).iter().map(|(cli, model, _)| format!("{cli} {model}")).collect::<Vec<_>>(),
        ["claude claude-sonnet-4-5", "claude claude-sonnet-4-5"]
    );
}

/// Issue 16 point 2: the engineering orchestrator's `code_with_reviews` against `codex` (the
/// planner and builder) and `claude` (the reviewers). Each review rejects once, its feedback
/// reaches the next attempt's prompt through `write_state`, then approves; the last step's
/// `next: done` names no step, and the run fails there as DireClaw's HEAD reports it
/// (TransitionValidation, not retried).
#[test]
fn the_engineering_example_reviews_reject_once_then_approve_and_next_done_fails_the_run() {
    let s = Steward::new();
    let engineering = example("engineering.orchestrator.yaml");
    let run = run_json(
        &s,
        &[
            "run",
            engineering.to_str().unwrap(),
            "--workflow",
            "code_with_reviews",
            "--input",
            "user_prompt=add retries to the fetcher",
            "--input",
            "repository_url=https://git.example/fetcher.git",
            "--input",
            "base_branch=main",
            "--input",
            "feature_branch=retries",
            "--json",
        ],
    );
    assert_eq!(run["state"], "failed", "{run}");
    assert!(
        run["terminal_reason"].as_str().unwrap().contains(
            "transition target `done` of step `create_pull_request` is not a step of the workflow (TransitionValidation)"
        ),
        "{run}"
    );
    assert_eq!(
        attempts(&run),
        [
            "clone_repository#1 completed",
            "plan_create#1 completed",
            "plan_review#1 completed",
            "plan_create#2 completed",
            "plan_review#2 completed",
            "build_create#1 completed",
            "build_review#1 completed",
            "build_create#2 completed",
            "build_review#2 completed",
            "create_pull_request#1 failed",
        ],
        "{run}"
    );
    assert_eq!(run["total_iterations"], 10, "{run}");
    // The rejection's feedback, kept by write_state, is in the revised plan's prompt.
    assert_eq!(
        outputs(&run, "plan_create")["plan_doc"],
        "plan_doc by codex (gpt-5.2), revised after: fake reviewer: add a rollback section",
        "{run}"
    );
    assert_eq!(outputs(&run, "build_review")["decision"], "approve", "{run}");
    // spec 06: openai models pass through to codex, anthropic aliases map for claude.
    let asked: Vec<String> = calls(&s).iter().map(|(cli, model, step)| format!("{step}: {cli} {model}")).collect();
    assert_eq!(
        asked,
        [
            "clone_repository: codex gpt-5.3-codex",
            "plan_create: codex gpt-5.2",
            "plan_review: claude claude-opus-4-6",
            "plan_create: codex gpt-5.2",
            "plan_review: claude claude-opus-4-6",
            "build_create: codex gpt-5.3-codex",
            "build_review: claude claude-opus-4-6",
            "build_create: codex gpt-5.3-codex",
            "build_review: claude claude-opus-4-6",
            "create_pull_request: codex gpt-5.3-codex",
        ]
    );
    // A review whose decision leads to no step fails the run when that decision is taken.
    let text = example_text("engineering.orchestrator.yaml").replacen(
        "on_approve: create_pull_request",
        "on_approve: merged",
        1,
    );
    s.write("approve-to-nowhere.yaml", &text);
    let args = ["user_prompt=x", "repository_url=u", "base_branch=main", "feature_branch=f"];
    let mut cmd = vec!["run", "approve-to-nowhere.yaml", "--workflow", "code_with_reviews", "--json"];
    for a in &args {
        cmd.extend(["--input", a]);
    }
    let run = run_json(&s, &cmd);
    assert_eq!(attempts(&run).last().map(String::as_str), Some("build_review#2 failed"), "{run}");
    assert!(
        run["terminal_reason"]
            .as_str()
            .unwrap()
            .contains("transition target `merged` of step `build_review` is not a step of the workflow"),
        "{run}"
    );
    // The other workflow of the file completes with codex alone.
    let run = run_json(
        &s,
        &[
            "run",
            engineering.to_str().unwrap(),
            "--workflow",
            "engineering_default",
            "--input",
            "user_prompt=tidy",
            "--json",
        ],
    );
    assert_eq!(run["state"], "completed", "{run}");
    assert_eq!(outputs(&run, "default_execute")["result"], "result by codex (gpt-5.3-codex)", "{run}");
}

/// Issue 16 point 1: an agent CLI that is not installed is a clear error before the run starts,
/// and nothing is recorded.
#[test]
fn a_missing_agent_cli_is_said_before_the_run_starts() {
    let s = Steward::new();
    let minimal = example("minimal.orchestrator.yaml");
    let args = ["run", minimal.to_str().unwrap(), "--workflow", "minimal_single_agent", "--input", "user_prompt=x"];
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

/// Issue 16 point 3: DireClaw's `workflow` commands with its arguments and its `key=value`
/// lines; the orchestrator named by its file or by its id in steward.toml's registry;
/// `status` and `progress` never write.
#[test]
fn direclaw_workflow_commands_answer_in_its_key_value_lines() {
    let s = Steward::new();
    std::fs::create_dir_all(s.path("config/orchestrators")).unwrap();
    s.write("config/orchestrators/product.yaml", &example_text("product.orchestrator.yaml"));
    // Paths in the registry are read from the configuration file's directory, not the
    // current one.
    s.write(
        "config/steward.toml",
        &format!(
            "[direclaw]\norchestrators = [\"orchestrators/product.yaml\", \"orchestrators/gone.yaml\", \"{}\", \"{}\"]\n",
            example("minimal.orchestrator.yaml").display(),
            example("engineering.orchestrator.yaml").display()
        ),
    );
    let stdout = |args: &[&str]| {
        let out = with_fakes(s.cmd(args)).env("STEWARD_CONFIG", s.path("config/steward.toml")).output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    assert_eq!(stdout(&["workflow", "list", "engineering_orchestrator"]).1, "engineering_default\ncode_with_reviews\n");
    assert_eq!(stdout(&["workflow", "list", "product_orchestrator"]).1, "product_default\n");
    let file = example("minimal.orchestrator.yaml");
    assert_eq!(stdout(&["workflow", "list", file.to_str().unwrap()]).1, "minimal_single_agent\n");
    let (code, _, err) = stdout(&["workflow", "list", "ops_orchestrator"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("no orchestrator `ops_orchestrator`: it is not a file, and no file listed in `[direclaw] orchestrators` declares that id (product_orchestrator, default_orchestrator, engineering_orchestrator are registered; "),
        "{err}"
    );
    // A registered file that is gone hides none of the others, and is named.
    assert!(err.contains("config/orchestrators/gone.yaml cannot be read"), "{err}");

    // Bad files are said as what they are, at their line.
    s.write("broken.yaml", "id: o\nworkflows: [\n");
    s.write("hello.yaml", crate::support::HELLO);
    for (file, said) in [
        ("missing.yaml", "cannot read orchestrator file missing.yaml: No such file"),
        ("broken.yaml", "broken.yaml:3: invalid YAML"),
        ("hello.yaml", "hello.yaml:1: field `workflows`: not an orchestrator file: it lists no `workflows`"),
    ] {
        let (code, _, err) = stdout(&["workflow", "list", file]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(said), "{file}: {err}");
    }
    let out = s.run(&["run", "broken.yaml", "--workflow", "w"]);
    assert!(text(&out).contains("broken.yaml:3: invalid YAML"), "{}", text(&out));

    // `show`: the workflow as YAML that reads back as the file's entry.
    let (_, shown, _) = stdout(&["workflow", "show", "engineering_orchestrator", "code_with_reviews"]);
    assert!(shown.starts_with("id: code_with_reviews\n"), "{shown}");
    assert!(shown.contains("    on_reject: plan_create\n"), "{shown}");
    let json: Value = serde_json::from_str(
        &stdout(&["workflow", "show", "engineering_orchestrator", "code_with_reviews", "--json"]).1,
    )
    .unwrap();
    assert_eq!(json["workflow"]["steps"].as_array().unwrap().len(), 6, "{json}");
    assert_eq!(steward_core::yaml::parse(&shown).unwrap().to_json(), json["workflow"], "{shown}");
    let (code, _, err) = stdout(&["workflow", "show", "engineering_orchestrator", "code_with_review"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid workflow id `code_with_review`"), "{err}");

    // `run`: DireClaw's two lines, the run driven to its end; DireClaw's input errors.
    let (code, out, err) =
        stdout(&["workflow", "run", "default_orchestrator", "minimal_single_agent", "--input", "user_prompt=tides"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let id = out
        .strip_prefix("workflow started\nrun_id=")
        .and_then(|r| r.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(!id.contains('\n'), "{out}");
    assert!(err.contains(&format!("run {id} completed")), "Steward's report goes to stderr: {err}");
    let (code, _, err) =
        stdout(&["workflow", "run", "default_orchestrator", "minimal_single_agent", "--input", "user_prompt"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--input requires key=value"), "{err}");
    let (code, _, err) = stdout(&["workflow", "run", "default_orchestrator", "minimal_single_agent", "--input", "=x"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("input key cannot be empty"), "{err}");
    // An undeclared input is taken, but not under a name that would forge status lines.
    let (code, _, err) = stdout(&[
        "workflow",
        "run",
        "default_orchestrator",
        "minimal_single_agent",
        "--input",
        "user_prompt=x",
        "--input",
        "x\nstate=succeeded=1",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("input name \"x\\nstate\" is not a valid name"), "{err}");

    // `status` and `progress` read only.
    let before = s.db_bytes();
    assert_eq!(
        stdout(&["workflow", "status", id]).1,
        format!("run_id={id}\nstate=succeeded\nsummary=workflow completed\ninput_count=1\ninput_keys=user_prompt\n")
    );
    let progress: Value = serde_json::from_str(&stdout(&["workflow", "progress", id]).1).unwrap();
    let mut keys: Vec<&str> = progress.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "currentAttempt",
            "currentStepId",
            "inputCount",
            "inputKeys",
            "lastProgressAt",
            "nextExpectedAction",
            "pendingHumanInput",
            "runId",
            "startedAt",
            "state",
            "summary",
            "updatedAt",
            "workflowId"
        ]
    );
    assert_eq!(
        (progress["state"].as_str(), progress["inputKeys"][0].as_str()),
        (Some("succeeded"), Some("user_prompt"))
    );
    assert!(progress["startedAt"].as_i64().is_some_and(|t| t > 1_700_000_000), "unix seconds: {progress}");
    // `--json` is Steward's own shape, which says where the run came from.
    let status: Value = serde_json::from_str(&stdout(&["workflow", "status", id, "--json"]).1).unwrap();
    assert_eq!(status["state"], "completed");
    assert_eq!(
        status["origin"],
        format!("{}: orchestrator default_orchestrator, workflow minimal_single_agent", file.display())
    );
    assert_eq!(s.db_bytes(), before, "status and progress never write");

    // A run that fails: still DireClaw's two lines, and a failing exit.
    let (code, out, _) = stdout(&[
        "workflow",
        "run",
        "engineering_orchestrator",
        "code_with_reviews",
        "--input",
        "user_prompt=x",
        "--input",
        "repository_url=u",
        "--input",
        "base_branch=main",
        "--input",
        "feature_branch=f",
    ]);
    assert_eq!(code, Some(1));
    let failed = out.lines().nth(1).and_then(|l| l.strip_prefix("run_id=")).unwrap().to_owned();
    assert!(
        stdout(&["workflow", "status", &failed])
            .1
            .contains("\nstate=failed\nsummary=failed: step `create_pull_request` failed: transition target `done`")
    );

    // `cancel`: a queued run is cancelled; one that has ended is left as it is.
    let queued = s.json(&[
        "submit",
        example("product.orchestrator.yaml").to_str().unwrap(),
        "--workflow",
        "product_default",
        "--input",
        "user_message=later",
        "--json",
    ]);
    let queued = queued["run_id"].as_str().unwrap();
    assert_eq!(
        stdout(&["workflow", "cancel", queued]).1,
        format!("workflow canceled\nrun_id={queued}\nstate=canceled\n")
    );
    assert_eq!(stdout(&["workflow", "cancel", id]).1, format!("workflow canceled\nrun_id={id}\nstate=succeeded\n"));
}

/// Issue 16 point 4: a run of an orchestrator file is Steward's like any other. `steward
/// workflow run` says the run's id before it drives it; SIGKILLed while its agent CLI works,
/// the run is resumed from the file's text as it started, and completes.
#[test]
fn a_killed_workflow_run_is_resumed_and_completes() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let s = Steward::new();
    // The first call blocks in the agent CLI (until it is killed); later calls answer.
    s.write(
        "claude",
        &format!(
            "#!/bin/sh\nif [ ! -e started ]; then touch started; exec sleep 600; fi\nexec '{}' \"$@\"\n",
            example("fake/claude").display()
        ),
    );
    std::fs::set_permissions(s.path("claude"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let minimal = example("minimal.orchestrator.yaml");
    let args = ["workflow", "run", minimal.to_str().unwrap(), "minimal_single_agent", "--input", "user_prompt=x"];
    let mut child = s
        .cmd(&args)
        .env("STEWARD_CLAUDE_BIN", s.path("claude"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !s.path("started").exists() {
        assert!(Instant::now() < deadline, "the agent CLI never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let id = printed
        .strip_prefix("workflow started\nrun_id=")
        .and_then(|r| r.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{printed}"));

    let out = s.cmd(&["resume", id]).env("STEWARD_CLAUDE_BIN", s.path("claude")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = s.run(&["workflow", "status", id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\nstate=succeeded\n"), "{}", text(&out));
    let run = s.json(&["status", id, "--json"]);
    let attempts: Vec<&str> =
        run["steps"][0]["attempts"].as_array().unwrap().iter().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(attempts.last(), Some(&"completed"), "{run}");
    assert!(attempts.len() >= 2, "the killed attempt is recorded, not lost: {run}");
    assert!(
        run["origin"].as_str().unwrap().ends_with("orchestrator default_orchestrator, workflow minimal_single_agent")
    );
}
