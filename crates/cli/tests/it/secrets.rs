//! Secrets through the real binary (issue 11, point 6): secret inputs sealed at rest and shown
//! redacted everywhere, resumed after a crash with their value, secret-named variables redacted
//! in output, and secrets written in a workflow file reported by `validate` and `run`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::*;

/// A value of no recognised shape: only its declaration makes it secret.
const SECRET: &str = "Zq9-opaque-secret-5521";

/// Every file under `dir`, with its bytes.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// `SECRET` in the forms a step might print it: as given, base64 (`base64` pads it), hex.
fn forms() -> [String; 3] {
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    [SECRET.to_owned(), "WnE5LW9wYXF1ZS1zZWNyZXQtNTUy".to_owned(), hex]
}

/// Issue 11 (point 6); TERM-LOG-002, DG-FR-03, DG-FR-08: a `secret: true` input is in no
/// file of the data directory (the SQLite database and its WAL, artifacts, the DuckDB mirror)
/// and in nothing Steward shows (`status`, `--json`, `progress`, events, the debug bundle),
/// even though the step printed it as given, in base64, in hex and folded over lines; the
/// step itself got the real value. A token-shaped value in an ordinary input is shown
/// redacted. The key file the value is sealed under is private to its owner.
#[test]
fn a_secret_input_is_in_no_file_and_shown_nowhere() {
    use std::os::unix::fs::PermissionsExt;
    let s = Steward::new();
    let wf = s.write(
        "secret.yaml",
        r#"id: secret
version: 1
inputs:
  token: {type: string, secret: true, required: true}
  note: {type: string}
steps:
  - id: leak
    type: shell
    run: |
      printf %s "{{inputs.token}}" > got
      echo "plain {{inputs.token}} note {{inputs.note}}"
      printf %s "{{inputs.token}}" | base64
      printf %s "{{inputs.token}}" | od -An -tx1 | tr -d ' \n'; echo
      printf %s "{{inputs.token}}" | fold -w 7
      echo "[workflow_result]{\"outputs\": {\"echoed\": \"{{inputs.token}}\"}, \"summary\": \"used {{inputs.token}}\"}[/workflow_result]"
    outputs: [echoed]
"#,
    );
    let note = "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB";
    let out = s.run(&[
        "run",
        wf.to_str().unwrap(),
        "--input",
        &format!("token={SECRET}"),
        "--input",
        &format!("note={note}"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(s.path("got")).unwrap(), SECRET, "the step gets the real value");
    let finished = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = serde_json::from_str::<serde_json::Value>(&finished).unwrap()["run_id"].as_str().unwrap().to_owned();

    let status = s.json(&["status", &id, "--json"]);
    assert_eq!(status["inputs"]["token"], "***REDACTED***");
    assert_eq!(status["inputs"]["note"], "***REDACTED***", "a token shape in any input is redacted when shown");
    let stdout = status["steps"][0]["attempts"][0]["output"]["stdout"].as_str().unwrap();
    assert!(
        stdout.starts_with("plain ***REDACTED*** note ***REDACTED***\n***REDACTED***\n***REDACTED***\n"),
        "{stdout}"
    );
    assert_eq!(status["steps"][0]["attempts"][0]["output"]["outputs"]["echoed"], "***REDACTED***");

    let bundle = s.path("bundle.tar");
    let b = s.run(&["bundle", &id, "-o", bundle.to_str().unwrap()]);
    assert!(b.status.success(), "{}", text(&b));
    let q = s.run(&["events", "query", "SELECT count(*) AS n FROM events", "--json"]);
    assert!(q.status.success(), "{}", text(&q));
    let shown = [
        finished,
        status.to_string(),
        text(&s.run(&["status", &id])),
        s.json(&["progress", &id, "--json"]).to_string(),
        s.json(&["events", &id, "--json"]).to_string(),
        text(&s.run(&["events", &id])),
    ];
    for form in forms() {
        for (i, shown) in shown.iter().enumerate() {
            assert!(!shown.contains(&form), "view {i} shows `{form}`: {shown}");
        }
        assert!(!contains(&std::fs::read(&bundle).unwrap(), &form), "the bundle holds `{form}`");
        for (path, bytes) in files(&s.data_dir()) {
            assert!(!contains(&bytes, &form), "{} holds `{form}`", path.display());
        }
    }
    assert!(!text(&s.run(&["status", &id])).contains(note));
    let key = s.data_dir().join("secret.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
}

/// Issue 11 (point 6), HSK-WF-003: a run killed mid-way is resumed by another process with its
/// secret input's value (sealed under the data directory's key); without the key, `resume`
/// refuses with an error naming the input and the key file, and leaves the run as it was for
/// when the key is back. A wrongly typed secret is refused without being echoed.
#[test]
fn a_secret_input_survives_a_crash_and_needs_its_key_to_resume() {
    let s = Steward::new();
    let wf = s.write(
        "resume.yaml",
        r#"id: resume-secret
version: 1
inputs:
  token: {type: string, secret: true, required: true}
  pin: {type: number, secret: true}
steps:
  - id: first
    type: shell
    run: printf %s "{{inputs.token}}" > got1
  - id: second
    type: shell
    run: |
      if [ ! -f resumed ]; then awk '{print $4}' /proc/self/stat > pid.tmp && mv pid.tmp pid; exec sleep 60; fi
      printf %s "{{inputs.token}}" > got2; echo "second {{inputs.token}}"
"#,
    );
    let bad = s.run(&["run", wf.to_str().unwrap(), "--input", &format!("token={SECRET}"), "--input", "pin=12ab34"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    let bad = text(&bad);
    assert!(bad.contains("--input pin") && bad.contains("expected a number") && !bad.contains("12ab34"), "{bad}");

    let mut child = s
        .cmd(&["run", wf.to_str().unwrap(), "--input", &format!("token={SECRET}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(s.path("pid")).map_or(true, |p| p.trim().is_empty()) {
        assert!(Instant::now() < deadline, "the second step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
    std::fs::write(s.path("resumed"), "").unwrap();
    let id = s.json(&["list", "--json"])[0]["run_id"].as_str().unwrap().to_owned();

    // The key is gone: resume names the input and the file, and changes nothing.
    let key = s.data_dir().join("secret.key");
    let aside = s.path("secret.key.aside");
    std::fs::rename(&key, &aside).unwrap();
    let refused = s.run(&["resume", &id]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let why = text(&refused);
    assert!(why.contains("secret input `token` cannot be read") && why.contains(&key.display().to_string()), "{why}");
    assert!(!s.path("got2").exists());
    let state = s.json(&["status", &id, "--json"])["state"].clone();
    assert_eq!(state, "stalled", "the run waits for its key");

    std::fs::rename(&aside, &key).unwrap();
    let resumed = s.run(&["resume", &id, "--json"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(std::fs::read_to_string(s.path("got1")).unwrap(), SECRET);
    assert_eq!(std::fs::read_to_string(s.path("got2")).unwrap(), SECRET, "the resumed step got the value");
    let resumed = text(&resumed);
    assert!(resumed.contains("second ***REDACTED***") && !resumed.contains(SECRET), "{resumed}");
    for (path, bytes) in files(&s.data_dir()) {
        assert!(!contains(&bytes, SECRET), "{} holds the secret", path.display());
    }
}

/// Issue 11 (point 6), TERM-API-004: values of variables whose names say secret are redacted
/// in a step's output and outputs, both those a step sets (`env:`) and those it inherits from
/// the engine's own environment (an API key the operator exported and granted to it; without
/// the grant it is withheld, `sandbox::steward_secrets_are_withheld_from_commands_unless_granted`).
#[test]
fn secret_named_variables_are_redacted_in_output() {
    let s = Steward::new();
    s.write("steward.toml", "[[sandbox.grant]]\ncapabilities = [\"secrets.use:MY_DEPLOY_TOKEN\"]\n");
    let wf = s.write(
        "env.yaml",
        r#"id: env-secrets
version: 1
inputs:
  pw: {type: string}
steps:
  - id: show
    type: shell
    env: {DB_PASSWORD: "{{inputs.pw}}"}
    run: |
      echo "inherited $MY_DEPLOY_TOKEN set $DB_PASSWORD"
      env | grep -E '^(MY_DEPLOY_TOKEN|DB_PASSWORD)=' | sort >&2
      echo "[workflow_result]{\"outputs\": {\"pw\": \"$DB_PASSWORD\"}}[/workflow_result]"
    outputs: [pw]
"#,
    );
    let inherited = "opaque-deploy-value-99";
    let set = "opaque-db-pw-77";
    let out = s
        .cmd(&["run", wf.to_str().unwrap(), "--input", &format!("pw={set}"), "--json"])
        .env("MY_DEPLOY_TOKEN", inherited)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = done["run_id"].as_str().unwrap();
    let attempt = &s.json(&["status", id, "--json"])["steps"][0]["attempts"][0];
    let output = &attempt["output"];
    assert_eq!(output["stdout"].as_str().unwrap().lines().next(), Some("inherited ***REDACTED*** set ***REDACTED***"));
    assert_eq!(output["stderr"], "DB_PASSWORD=***REDACTED***\nMY_DEPLOY_TOKEN=***REDACTED***");
    assert_eq!(output["outputs"]["pw"], "***REDACTED***");
    assert_eq!(attempt["input"]["params"]["env"]["DB_PASSWORD"], "***REDACTED***");
    let recorded = format!("{attempt}{}", s.json(&["events", id, "--json"]));
    assert!(!recorded.contains(inherited) && !recorded.contains(set), "{recorded}");
}

/// Issue 11 (point 6): a secret written in a workflow file is a warning naming its step and
/// field. `validate` prints it and still exits 0 (and lists it under `warnings` in `--json`);
/// with errors too, both are printed and it exits 1; `run` prints it on stderr and runs.
#[test]
fn literal_secrets_in_a_workflow_file_are_warnings() {
    let s = Steward::new();
    let src = r#"id: literal
version: 1
agents:
  writer: {provider: openai, model: m, base_url: "http://127.0.0.1:9/v1", options: {api_key: "sk-proj-abcdefghijklmnopqrstuvwx"}}
steps:
  - id: call
    type: shell
    env:
      API_TOKEN: plainliteral123
      FROM_INPUT: "$HOME"
    run: 'echo "Authorization: Bearer ghp_abcdefghijklmnopqrstuvwxyz0123456789AB" > /dev/null'
"#;
    let wf = s.write("literal.yaml", src);
    let name = wf.display().to_string();
    let out = s.run(&["validate", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        format!(
            "{name}:4: warning: field `agents.writer.options.api_key`: the value of `api_key` is written literally in the workflow file"
        ),
        format!(
            "{name}:9: warning: step `call`, field `steps[0].env.API_TOKEN`: the value of `API_TOKEN` is written literally"
        ),
        format!("{name}:11: warning: step `call`, field `steps[0].run`: a GitHub token is written literally"),
        format!("{name}: 3 warnings\n"),
        format!("{name}: ok: workflow literal v1"),
    ] {
        assert!(printed.contains(&want), "missing {want:?} in\n{printed}");
    }
    let json = s.json(&["validate", &name, "--json"]);
    assert_eq!(json["valid"], true);
    let warnings = json["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 3, "{json}");
    assert_eq!(
        (warnings[1]["severity"].as_str(), warnings[1]["step"].as_str(), warnings[1]["field"].as_str()),
        (Some("warning"), Some("call"), Some("steps[0].env.API_TOKEN"))
    );

    let broken = s.write("broken.yaml", &src.replace("version: 1", "version: one"));
    let out = s.run(&["validate", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(printed.contains("expected a whole number") && printed.contains("1 error, 3 warnings"), "{printed}");

    let run = s.run(&["run", &name, "--json"]);
    assert!(run.status.success(), "{}", text(&run));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("warning: step `call`, field `steps[0].run`") && stderr.contains("3 warnings"), "{stderr}");
    assert!(serde_json::from_slice::<serde_json::Value>(&run.stdout).is_ok(), "stdout stays one JSON document");

    let clean = s
        .write("clean.yaml", "id: clean\nversion: 1\nsteps:\n  - {id: a, type: shell, run: 'echo \"token=$TOKEN\"'}\n");
    let out = s.run(&["validate", clean.to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warning"), "{}", text(&out));
}
