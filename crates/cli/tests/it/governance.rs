//! The tool bus from the command line: `tools check`, `capabilities`, configuration, denials in `status`.

use crate::support::*;

#[test]
fn tools_check_shows_each_gate_and_guard_without_running() {
    let s = Steward::new();
    let out = s.run(&["tools", "check", "--", "touch", "ran-it"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    for line in [
        "G-SCHEMA      pass",
        "G-CAP         pass",
        "G-DET         pass",
        "proc.exec:touch          allow",
        "decision: allowed (nothing was run)",
    ] {
        assert!(t.contains(line), "missing {line:?} in:\n{t}");
    }
    assert!(!s.path("ran-it").exists(), "tools check must not run the command");

    let v = s.json(&["tools", "check", "--profile", "Coder", "--json", "--", "echo", "hi"]);
    assert_eq!(v["allowed"], true);
    assert_eq!(v["gates"].as_array().unwrap().len(), 6);

    let out = s.run(&["tools", "check", "--profile", "Analyst", "--json", "--", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["refusal"]["by"].as_str(), v["refusal"]["code"].as_str()), (Some("G-CAP"), Some("MEX-CAP-DENIED")));
    let denied = denied_capabilities(&v);
    assert_eq!(denied, ["fs.write", "proc.exec:ls"]);

    let out = s.run(&["tools", "check", "--", "git", "reset", "--hard"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("terminal: DENY  HSK-TERM-002"), "{}", text(&out));
    let out = s.run(&["tools", "check", "--cwd", "../..", "--", "ls"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("HSK-TERM-003"), "{}", text(&out));
    let out = s.run(&["tools", "check", "--", "echo", "password=hunter2"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"), "{}", text(&out));
}

#[test]
fn capabilities_lists_profiles_grants_and_engines() {
    let s = Steward::new();
    let out = s.run(&["capabilities"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("Coder — ") && t.contains("Analyst — ") && t.contains("Operator — "), "{t}");
    assert!(t.contains("engine.shell (enabled, ceiling d1): exec"), "{t}");
    let v = s.json(&["capabilities", "--json"]);
    let coder = v["profiles"].as_array().unwrap().iter().find(|p| p["id"] == "Coder").unwrap();
    assert!(coder["grants"].as_array().unwrap().iter().any(|g| g == "proc.exec"));
    assert!(coder["default_for_job_kinds"].as_array().unwrap().iter().any(|k| k == "workflow_run"));
    // Issue 11: what contains the commands, and whether this machine can.
    assert!(t.contains("sandbox: required; available (Landlock ABI "), "{t}");
    let sandbox = &v["sandbox"];
    assert_eq!((sandbox["mode"].as_str(), sandbox["available"].as_bool()), (Some("required"), Some(true)), "{sandbox}");
    let hidden: Vec<&str> = sandbox["hidden"].as_array().unwrap().iter().filter_map(|h| h.as_str()).collect();
    assert!(hidden.contains(&"/run") && hidden.iter().any(|h| h.ends_with("/.steward")), "{hidden:?}");
}

#[test]
fn workflows_are_checked_against_their_profile_and_the_configured_policy() {
    let s = Steward::new();
    let wf = s.write(
        "analyst.yaml",
        "id: a\nversion: 1\ncapability_profile: Analyst\nsteps:\n  - {id: list, type: shell, run: ls}\n",
    );
    let out = s.run(&["validate", wf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("analyst.yaml:5: step `list`, field `steps[0].run`: denied by G-CAP (MEX-CAP-DENIED)"),
        "{}",
        text(&out)
    );
    let out = s.run(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("step `list`: denied by G-CAP"), "{}", text(&out));

    // The operator's configuration replaces the denylist and marks secrets.
    s.write("steward.toml", "[terminal]\ndenylist = ['\\bcurl\\b']\nsecret_env = ['MY_SERVICE_KEY']\n");
    let curl = s.write(
        "curl.yaml",
        "id: c\nversion: 1\nsteps:\n  - {id: fetch, type: shell, run: 'curl http://127.0.0.1:9'}\n",
    );
    let out = s.run(&["validate", curl.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("denied by terminal (HSK-TERM-002)"), "{}", text(&out));
    let leak = s.write(
        "leak.yaml",
        "id: l\nversion: 1\nsteps:\n  - {id: show, type: shell, run: 'echo \"key is $MY_SERVICE_KEY\"'}\n",
    );
    let out = s
        .cmd(&["run", leak.to_str().unwrap(), "--json"])
        .env("MY_SERVICE_KEY", "zq-ultra-private-774")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    // Not granted, Steward's secret-named variable is withheld from the step altogether.
    assert!(!all.contains("zq-ultra-private-774") && all.contains("\"stdout\": \"key is \""), "{all}");

    // An operator can switch an engine off; then nothing that needs it starts.
    s.write("off.json", r#"{"engine.shell": {"engine_id": "engine.shell", "determinism_ceiling": "d1", "required_gates": ["G-SCHEMA", "G-CAP", "G-INTEGRITY", "G-BUDGET", "G-PROVENANCE", "G-DET"], "default_budget": {"wall_time_ms": 1000}, "ops": [], "enabled": false}}"#);
    let out = s.cmd(&["validate", leak.to_str().unwrap()]).env("STEWARD_ENGINES_FILE", "off.json").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("denied by G-CAP (MEX-CAP-ENGINE): engine `engine.shell` is not registered or is disabled"),
        "{}",
        text(&out)
    );

    s.write("steward.toml", "[terminal]\ndenylst = []\n");
    let out = s.run(&["validate", curl.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("configuration steward.toml: unknown field `denylst`"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_step_denied_at_run_time_fails_with_the_reason_in_status() {
    let s = Steward::new();
    let wf = s.write(
        "escape.yaml",
        "id: e\nversion: 1\ninputs:\n  dir: {type: string}\nsteps:\n  - {id: look, type: shell, cwd: '{{inputs.dir}}', run: ls}\n",
    );
    let out = s.run(&["run", wf.to_str().unwrap(), "--input", "dir=/etc", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["run_id"].as_str().unwrap().to_owned();
    let status = s.run(&["status", &id]);
    let t = String::from_utf8_lossy(&status.stdout);
    assert!(t.contains("state:       failed"), "{t}");
    assert!(
        t.contains("denied by G-INTEGRITY (HSK-TERM-003): cwd `/etc` must be a workspace-relative path without `..`"),
        "{t}"
    );
}

/// Issue 11: the policy judges the commands the shell parser finds; `validate` reports
/// placeholders that would choose the program and a `cwd` that leaves the workspace
/// (HSK-TERM-003) with step and field; the Operator profile runs no command, not even
/// one hidden in a substitution.
#[test]
fn the_policy_reads_commands_and_validate_reports_templates_and_cwd() {
    let s = Steward::new();
    let out = s.run(&["tools", "check", "--", "sh -c 'git -c a.b=c reset --hard'"]);
    assert_eq!(out.status.code(), Some(1));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("`git reset --hard` (in `sh -c`) is denied by denylist rule `git-reset-hard`"),
        "{}",
        text(&out)
    );
    let v = s.json(&["tools", "check", "--json", "--", "echo", "\"git reset --hard\""]);
    assert_eq!(v["allowed"], true);

    let out = s.run(&["tools", "check", "--profile", "Operator", "--json", "--", "true $(touch x)"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let denied = denied_capabilities(&v);
    assert_eq!(denied, ["proc.exec:touch", "proc.exec:true"]);

    // Many commands in one process, one verdict per line.
    let list = s.write("cmds.txt", "ls\nrm -rf ~\n\ncurl -s x | sh\n");
    let out = s.run(&["tools", "check", "--from", list.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("ALLOW  ls\n") && t.contains("DENY   rm -rf ~\n"), "{t}");
    assert!(t.contains("rule `piped-into-shell`") && t.ends_with("3 commands: 1 allowed, 2 denied\n"), "{t}");

    let wf = s.write(
        "bad.yaml",
        "id: b\nversion: 1\ninputs: [tool, dir]\nsteps:\n  - {id: run-it, type: shell, run: '{{inputs.tool}} --version'}\n  - {id: up, type: shell, cwd: '../{{inputs.dir}}', run: ls}\n",
    );
    let out = s.run(&["validate", "--json", wf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<(String, String, String)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap().into(),
                e["field"].as_str().unwrap().into(),
                e["message"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!((errors[0].0.as_str(), errors[0].1.as_str()), ("run-it", "steps[0].run"));
    assert!(errors[0].2.contains("placeholder `{{inputs.tool}}` would be the program"), "{errors:?}");
    assert_eq!((errors[1].0.as_str(), errors[1].1.as_str()), ("up", "steps[1].cwd"));
    assert!(errors[1].2.starts_with("HSK-TERM-003: cwd `../{{inputs.dir}}` is outside the workspace"), "{errors:?}");
}

/// The capabilities a `tools check --json` verdict denied.
fn denied_capabilities(v: &serde_json::Value) -> Vec<&str> {
    v["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["allowed"] == false)
        .map(|c| c["capability_id"].as_str().unwrap())
        .collect()
}
