//! Shell steps run only through the tool bus: refused before a run, denied at run time, recorded and redacted.

use serde_json::json;
use steward_core::state::{AttemptStatus, RunState};
use steward_runtime::Error;
use steward_store::Store;

use crate::support::*;

/// Capability profiles and the command policy refuse a workflow before it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_outside_their_profile_or_policy_are_refused_before_they_start() {
    let Env { dir, store, engine: eng } = env().await;

    let analyst = "id: a\nversion: 1\ncapability_profile: Analyst\nsteps:\n  - {id: ls, type: shell, run: 'ls -la'}\n";
    let err = eng.create_run(create(analyst, dir.path(), json!({}))).await.unwrap_err();
    let Error::Refused(refused) = &err else { panic!("{err}") };
    assert_eq!(refused[0].0, "ls");
    assert_eq!((refused[0].1.by.as_str(), refused[0].1.code.as_str()), ("G-CAP", "MEX-CAP-DENIED"));
    assert!(
        err.to_string().contains(
            "step `ls`: denied by G-CAP (MEX-CAP-DENIED): capability `fs.write` is not granted by profile Analyst"
        ),
        "{err}"
    );

    let denied = "id: d\nversion: 1\nsteps:\n  - {id: wipe, type: shell, run: 'git reset --hard HEAD~3'}\n";
    let err = eng.create_run(create(denied, dir.path(), json!({}))).await.unwrap_err();
    assert!(
        err.to_string().contains("step `wipe`: denied by terminal (HSK-TERM-002): command denied by policy"),
        "{err}"
    );
    assert!(store.list_runs(Default::default()).await.unwrap().is_empty(), "a refused workflow records no run");
}

/// TERM / HSK-TERM-003 at run time: a rendered cwd that escapes is denied with the
/// gate's code; the attempt fails, and every decision is an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_step_fails_with_the_reason_and_every_decision_is_recorded() {
    let Env { dir, store, engine: eng } = env().await;
    let src = "id: esc\nversion: 1\ninputs:\n  dir: {type: string}\nsteps:\n  - {id: a, type: shell, cwd: '{{inputs.dir}}', run: 'echo hi'}\n";
    let created = eng.create_run(create(src, dir.path(), json!({"dir": "../.."}))).await.unwrap();
    let run = eng.start(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::Failed);
    let reason = run.terminal_reason.unwrap();
    assert!(reason.starts_with("step `a` failed: denied by G-INTEGRITY (HSK-TERM-003): cwd `../..`"), "{reason}");
    let attempts = store.list_attempts(&run.run_id).await.unwrap();
    assert_eq!(attempts.len(), 1, "a denial is not retried");
    assert_eq!(attempts[0].status, AttemptStatus::Failed);
    let events = store.list_events(&run.run_id, 0).await.unwrap();
    let gates: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.event_type == "gate_outcome")
        .map(|e| (e.payload["gate"].as_str().unwrap().to_owned(), e.payload["outcome"].as_str().unwrap().to_owned()))
        .collect();
    let expected: Vec<(String, String)> = [("G-SCHEMA", "pass"), ("G-CAP", "pass"), ("G-INTEGRITY", "deny")]
        .iter()
        .map(|(g, o)| (g.to_string(), o.to_string()))
        .collect();
    assert_eq!(gates, expected);
    let caps: Vec<&str> = events
        .iter()
        .filter(|e| e.event_type == "capability_action")
        .map(|e| e.capability_id.as_deref().unwrap())
        .collect();
    assert_eq!(caps, ["fs.read", "fs.write", "proc.exec:echo"]);
    let call = events.iter().find(|e| e.event_type == "tool_call").unwrap();
    assert_eq!((call.payload["ok"].as_bool(), call.payload["tool_id"].as_str()), (Some(false), Some("mex.shell.exec")));
    assert!(events.iter().all(|e| e.event_type != "terminal_command"), "nothing ran");
    assert!(events.iter().filter(|e| e.event_type == "gate_outcome").all(|e| e.step_id.as_deref() == Some("a")));
}

/// TERM-LOG-002: secrets never reach the store or the events, in the command,
/// the environment or the output; evidence is kept as artifacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_everywhere_they_are_recorded() {
    let Env { dir, store, engine: eng } = env().await;
    let src = r#"id: sec
version: 1
inputs:
  token: {type: string}
steps:
  - id: leak
    type: shell
    env: {API_TOKEN: "{{inputs.token}}"}
    run: |
      echo "password=hunter22 and $API_TOKEN and configured-secret-value"
      printf 'bad \377 bytes token=abc123\n' >&2
      echo "[workflow_result]{\"outputs\": {\"note\": \"secret=s3cr3tvalue\"}}[/workflow_result]"
    outputs: [note]
"#;
    let created = eng
        .create_run(create(src, dir.path(), json!({"token": "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB"})))
        .await
        .unwrap();
    let run = eng.start(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    let attempts = store.list_attempts(&run.run_id).await.unwrap();
    let events = store.list_events(&run.run_id, 0).await.unwrap();
    // Inputs are kept as given so the run can resume; everything the run recorded is redacted.
    let recorded = format!("{}{}", serde_json::to_string(&attempts).unwrap(), serde_json::to_string(&events).unwrap());
    for secret in
        ["hunter22", "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB", "configured-secret-value", "abc123", "s3cr3tvalue"]
    {
        assert!(!recorded.contains(secret), "`{secret}` reached the store");
    }
    let out = attempts[0].output.as_ref().unwrap();
    assert!(
        out["stdout"].as_str().unwrap().starts_with("password=***REDACTED*** and ***REDACTED*** and ***REDACTED***\n")
    );
    assert!(out["stderr"].as_str().unwrap().contains("token=***REDACTED***"));
    assert_eq!(out["outputs"]["note"], "secret=***REDACTED***");
    assert_eq!(attempts[0].input["params"]["env"]["API_TOKEN"], "***REDACTED***");
    let term = events.iter().find(|e| e.event_type == "terminal_command").unwrap();
    assert_eq!(
        (term.payload["session_type"].as_str(), term.payload["redaction_applied"].as_bool()),
        (Some("AI_JOB"), Some(true))
    );
    let stdout_ref = term.payload["stdout_ref"].as_str().unwrap();
    let evidence = String::from_utf8(eng.bus().artifacts().get(stdout_ref).await.unwrap()).unwrap();
    assert!(evidence.contains("password=***REDACTED***") && !evidence.contains("hunter22"));
    assert_eq!(out["evidence"][0], stdout_ref);
}

/// DG-MEX-03: output over 32 KB is kept as an artifact and still reaches templates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_output_travels_as_an_artifact() {
    let Env { dir, store, engine: eng } = env().await;
    let src = "id: big\nversion: 1\nsteps:\n  - {id: gen, type: shell, run: 'head -c 40000 /dev/zero | tr \"\\\\0\" a'}\n  - {id: count, type: shell, run: 'printf %s \"{{steps.gen.outputs.stdout}}\" | wc -c'}\n";
    let created = eng.create_run(create(src, dir.path(), json!({}))).await.unwrap();
    let run = eng.start(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    let attempts = store.list_attempts(&run.run_id).await.unwrap();
    let gen_out = attempts[0].output.as_ref().unwrap();
    assert!(gen_out.get("stdout").is_none());
    assert_eq!(gen_out["stdout_bytes"], 40000);
    assert!(gen_out["stdout_ref"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(attempts[1].output.as_ref().unwrap()["stdout"].as_str().map(str::trim), Some("40000"));
}

/// Issue 11 (point 6), TERM-LOG-002, DG-FR-08, DG-MEX-03: a `secret: true` input is sealed in
/// the store, is what the step gets, and is redacted in everything the run records, in the
/// forms a step might print it (as given, base64, inside a large value moved to an artifact);
/// a variable whose name says secret is redacted in the step's output too. A sealed input
/// opens in another engine on the same key, and in none other: the run is then left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_inputs_are_sealed_in_the_store_and_redacted_in_the_record() {
    use steward_runtime::secrets::{KEY_FILE, Sealer};
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let make = |sealer: Sealer, owner: &str| {
        let mut config = steward_runtime::EngineConfig::new(owner.into());
        config.sealer = std::sync::Arc::new(sealer);
        let bus = bus_at(dir.path());
        steward_runtime::Engine::new(
            store.clone(),
            std::sync::Arc::new(bus),
            std::sync::Arc::new(steward_runtime::SystemClock),
            std::sync::Arc::new(steward_core::ids::SeqIds::new(owner)),
            config,
        )
    };
    let key = dir.path().join(KEY_FILE);
    let secret = "tok-Zq9-very-secret-value";
    let src = r#"id: sec
version: 1
inputs:
  tok: {type: string, secret: true, required: true}
steps:
  - id: leak
    type: shell
    env:
      DEPLOY_PASSWORD: "env-named-pw-4711"
      BIG: "{{inputs.tok}}"
    run: |
      echo "plain {{inputs.tok}}"
      printf %s "{{inputs.tok}}" | base64
      echo "pw $DEPLOY_PASSWORD"
      printf %s "$BIG" | wc -c
      echo "[workflow_result]{\"outputs\": {\"echo\": \"$DEPLOY_PASSWORD\"}}[/workflow_result]"
    outputs: [echo]
"#;
    // BIG is over the inline limit, so it would move to an artifact if it held no secret.
    let big_secret = format!("{secret}{}", "x".repeat(9000));
    let creator = make(Sealer::at(key.clone()), "creator");
    creator.boot().await.unwrap();
    let src = src.replace("BIG: \"{{inputs.tok}}\"", "BIG: \"{{inputs.tok}}{{inputs.pad}}\"").replace(
        "  tok: {type: string, secret: true, required: true}\n",
        "  tok: {type: string, secret: true, required: true}\n  pad: {type: string}\n",
    );
    let created = creator
        .create_run(create(&src, dir.path(), json!({"tok": secret, "pad": &big_secret[secret.len()..]})))
        .await
        .unwrap();
    assert!(steward_core::inputs::is_sealed(&created.inputs["tok"]));
    drop(creator);

    // An engine with another key cannot open it, and changes nothing.
    let stranger = make(Sealer::ephemeral(), "stranger");
    stranger.boot().await.unwrap();
    let err = stranger.start(&created.run_id).await.unwrap_err();
    assert!(matches!(err, Error::Secret(_)), "{err}");
    assert!(err.to_string().contains("secret input `tok` cannot be opened"), "{err}");
    assert_eq!(store.get_run(&created.run_id).await.unwrap().state, RunState::Queued);

    // Another engine on the same key file drives it.
    let driver = make(Sealer::at(key.clone()), "driver");
    driver.boot().await.unwrap();
    let run = driver.start(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::Completed, "{}", run.summary);
    let attempts = store.list_attempts(&run.run_id).await.unwrap();
    let out = attempts[0].output.as_ref().unwrap();
    let stdout = out["stdout"].as_str().unwrap();
    assert_eq!(
        stdout.lines().take(4).collect::<Vec<_>>(),
        ["plain ***REDACTED***", "***REDACTED***", "pw ***REDACTED***", "9025"],
        "the step got the values; the record hides them"
    );
    assert_eq!(out["outputs"]["echo"], "***REDACTED***");
    let big_ref = attempts[0].input["params"]["env"]["BIG"].as_str().unwrap();
    let big_recorded = driver.bus().artifacts().get(big_ref.strip_prefix("artifact:").unwrap()).await.unwrap();
    assert!(String::from_utf8_lossy(&big_recorded).starts_with("***REDACTED***xxx"));

    // Nothing on disk holds the secret: not the database (WAL included), not an artifact.
    let b64 = "dG9rLVpxOS12ZXJ5LXNlY3JldC12YWx1ZQ==";
    for file in files(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for s in [secret, &b64[..b64.len() - 3], "env-named-pw-4711"] {
            // The workflow file itself names the literal env value; only its definition may.
            if s == "env-named-pw-4711" && text.contains("DEPLOY_PASSWORD: \"env-named-pw-4711\"") {
                continue;
            }
            assert!(!text.contains(s), "`{s}` is in {}", file.display());
        }
    }
}

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(files(&p)) } else { out.push(p) }
    }
    out
}

/// Issue 11, point 3: a placeholder's value is exactly one word when the step runs: an
/// unquoted `{{inputs.s}}` with `s=/*` is not globbed, spaces do not split it, and text
/// that looks like code stays text, quoted or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_is_always_one_word() {
    let e = env().await;
    std::fs::write(e.dir.path().join("file-in-workspace"), "").unwrap();
    let src = "id: w\nversion: 1\ninputs: [s]\nsteps:\n  - {id: a, type: shell, run: 'printf \"[%s]\" {{inputs.s}} x{{inputs.s}} \"q {{inputs.s}}\"'}\n";
    for (s, expected) in [
        ("/*", "[/*][x/*][q /*]"),
        ("*", "[*][x*][q *]"),
        ("a  b", "[a  b][xa  b][q a  b]"),
        ("$(touch pwned)", "[$(touch pwned)][x$(touch pwned)][q $(touch pwned)]"),
        ("", "[][x][q ]"),
    ] {
        let run = e.run(src, json!({"s": s})).await;
        assert_eq!(run.state, RunState::Completed, "{s}: {}", run.summary);
        let attempts = e.store.list_attempts(&run.run_id).await.unwrap();
        assert_eq!(attempts[0].output.as_ref().unwrap()["stdout"], expected, "{s}");
    }
    assert!(!e.dir.path().join("pwned").exists());
}
