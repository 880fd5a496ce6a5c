//! Issue 11: commands run contained by the operating system, tried with real hostile commands.
//!
//! Each attack runs for real as a shell step against a scratch `$HOME` and a scratch directory
//! outside the workspace, with every rule of the command policy disabled
//! (`[terminal] disabled_rules`) so that only the sandbox stands in the way. The attacks only ever aim at scratch paths: if the
//! sandbox failed, the damage would stay in the test's own directories.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::Path;

use crate::support::{Steward, text};

/// Lines `<name> <outcome>` the attack script wrote in the workspace.
fn outcomes(s: &Steward) -> Vec<(String, String)> {
    std::fs::read_to_string(s.path("attacks.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect()
}

fn file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"))
}

/// A directory for scratch homes and victims that is not under `/tmp`: Steward's cache.
fn scratch_root() -> std::path::PathBuf {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| "/root".into());
    let root = home.join(".cache/steward/test-scratch");
    std::fs::create_dir_all(&root).unwrap();
    assert!(!root.starts_with(std::env::temp_dir()), "{} must be outside the temp directory", root.display());
    root
}

/// A configuration that disables every rule of the command policy.
fn no_policy() -> String {
    let ids: Vec<String> = steward_core::shell::rules::RULES.iter().map(|(id, _)| format!("\"{id}\"")).collect();
    format!("[terminal]\ndisabled_rules = [{}]\n", ids.join(", "))
}

/// The id of the newest run in `state`.
fn last_run(s: &Steward, state: &str) -> String {
    let runs = s.json(&["list", "--json"]);
    let run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["state"] == state)
        .unwrap_or_else(|| panic!("no {state} run: {runs}"));
    run["run_id"].as_str().unwrap().to_owned()
}

/// The payload of the run's first `sandbox_applied` event.
fn sandbox_applied(s: &Steward, run: &str) -> serde_json::Value {
    let events = s.json(&["events", run, "--json"]);
    let e = events.as_array().unwrap().iter().find(|e| e["event_type"] == "sandbox_applied").cloned();
    e.unwrap_or_else(|| panic!("no sandbox_applied event: {events}"))["payload"].clone()
}

/// Issue 11 points 1, 4 and 7; DG-MEX-07 (the sandbox prevents file-system escape and denies
/// the network unless granted).
#[test]
fn a_contained_step_cannot_reach_outside_its_workspace() {
    let s = Steward::new();
    // Outside `/tmp` (which the sandbox replaces with its own), so that what stops the
    // attacks is Landlock and not a path the command cannot see.
    let scratch = scratch_root();
    let home = tempfile::tempdir_in(&scratch).unwrap();
    let outside = tempfile::tempdir_in(&scratch).unwrap();
    let h = home.path();
    std::fs::create_dir_all(h.join(".ssh")).unwrap();
    std::fs::create_dir_all(h.join(".aws")).unwrap();
    std::fs::write(h.join(".ssh/id_rsa"), "SSH-PRIVATE-KEY-MATERIAL\n").unwrap();
    std::fs::write(h.join(".aws/credentials"), "aws_secret_access_key = AWS-SECRET-MATERIAL\n").unwrap();
    std::fs::write(h.join(".netrc"), "machine x login me password NETRC-SECRET\n").unwrap();
    std::fs::write(h.join("precious.txt"), "keep me\n").unwrap();
    std::fs::write(outside.path().join("victim.txt"), "keep me too\n").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let marker = format!("steward-sandbox-escape-{}", std::process::id());
    // A daemon's socket under /run, where the machine lets the test make one (as root).
    let socket = Path::new("/run").join(format!("{marker}.sock"));
    let _daemon = std::os::unix::net::UnixListener::bind(&socket).ok();
    let host_tmp = std::env::temp_dir().join(&marker);

    s.write("steward.toml", &no_policy());
    // Each attack logs whether it did its damage; `2>/dev/null` keeps the expected errors quiet.
    let attacks = [
        ("rm_home", "rm -rf ~ 2>/dev/null"),
        ("rm_outside", "rm -rf \"$OUTSIDE\"/* 2>/dev/null"),
        ("find_delete", "find \"$OUTSIDE\" -delete 2>/dev/null"),
        ("dd_outside", "dd if=/dev/zero of=\"$OUTSIDE/victim.txt\" bs=1 count=4 2>/dev/null"),
        ("sh_c_rm", "sh -c 'rm -f \"$OUTSIDE/victim.txt\"' 2>/dev/null"),
        ("write_home", "echo owned >> ~/.bashrc 2>/dev/null"),
        ("write_data_dir", "echo x > .steward/steward.db 2>/dev/null"),
        ("rm_data_dir", "rm -rf .steward 2>/dev/null"),
        ("move_data_dir", "mv .steward moved 2>/dev/null"),
        ("write_config", "echo '[sandbox]' >> steward.toml 2>/dev/null"),
        // The engine by its host pid (the step has its own pid namespace, where $PPID is its
        // init): the shell's parent is init, whose parent is the launcher, whose parent is
        // Steward. /proc is the host's, so the chain can be read; signalling it must fail.
        (
            "kill_engine",
            "p=$(awk '{print $4}' /proc/self/stat); for i in 1 2 3; do p=$(awk '{print $4}' /proc/$p/stat); done; \
             grep -qx steward /proc/$p/comm && echo 'engine found' >> attacks.log && kill -9 $p 2>/dev/null",
        ),
        ("network", "bash -c \"echo hi > /dev/tcp/127.0.0.1/$PORT\" 2>/dev/null"),
        // The daemons' sockets (a container engine, the system bus, a local PostgreSQL).
        ("host_sockets", "find /run /var/run -type s 2>/dev/null | grep -q ."),
        ("gate", "steward gate \"$STEWARD_RUN_ID\" continue >/dev/null 2>&1"),
        // What the policy's static reading lets through (docs/security-policy.md): code in
        // other languages, symlinks, programs that write where their own options say.
        ("python_rmtree", "python3 -c 'import os, shutil; shutil.rmtree(os.environ[\"OUTSIDE\"])' 2>/dev/null"),
        ("perl_unlink", "perl -e 'unlink(\"$ENV{OUTSIDE}/victim.txt\") or exit 1'"),
        ("awk_system", "awk 'BEGIN { exit system(\"rm -f \" ENVIRON[\"HOME\"] \"/precious.txt 2>/dev/null\") }'"),
        ("symlink_rm", "ln -s \"$OUTSIDE\" out-link && rm -rf out-link/ 2>/dev/null"),
        ("tar_extract", "mkdir -p p && echo x > p/f && tar -cf p.tar p && tar -C \"$OUTSIDE\" -xf p.tar 2>/dev/null"),
    ];
    let mut script = String::new();
    for (name, cmd) in attacks {
        script.push_str(&format!(
            "if {cmd}; then echo '{name} done' >> attacks.log; else echo '{name} blocked' >> attacks.log; fi\n"
        ));
    }
    // Reads: whatever the command prints is kept in the step's output.
    script.push_str("cat ~/.ssh/id_rsa ~/.aws/credentials ~/.netrc .steward/steward.db 2>&1 | head -c 2000\n");
    script.push_str("ls -a .steward >> attacks.listing 2>&1\n");
    script.push_str(&format!("echo escaped > /tmp/{marker} && echo 'private_tmp wrote' >> attacks.log\n"));
    // The workspace's parent is the private /tmp (the test's workspace is under /tmp) or
    // read-only: either way nothing lands beside the workspace on the host.
    script.push_str("(cd .. && touch escaped-by-cd) 2>/dev/null\n");
    // What a task is allowed to do still works: write in the workspace, build, test, temp files.
    script.push_str(
        "printf 'int main(void){return 0;}\\n' > m.c && cc -o m m.c && ./m && echo 'build ok' >> attacks.log\n",
    );
    script.push_str("python3 -c 'import tempfile; f = tempfile.NamedTemporaryFile(); f.write(b\"x\"); f.flush()' && echo 'tempfile ok' >> attacks.log\n");
    script.push_str("git init -q repo && git -C repo -c user.email=a@b -c user.name=n commit -q --allow-empty -m x && echo 'git ok' >> attacks.log\n");
    let mut wf = String::from("id: hostile\nversion: 1\nsteps:\n  - id: attack\n    type: shell\n    run: |\n");
    for line in script.lines() {
        wf.push_str(&format!("      {line}\n"));
    }
    s.write("wf.yaml", &wf);

    let bin_dir = Path::new(env!("CARGO_BIN_EXE_steward")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = s
        .cmd(&["run", "wf.yaml", "--json"])
        .env("HOME", h)
        .env("OUTSIDE", outside.path())
        .env("PORT", port.to_string())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let got = outcomes(&s);
    let verdict = |name: &str| got.iter().find(|(n, _)| n == name).map(|(_, o)| o.as_str()).unwrap_or("<missing>");
    for (name, _) in attacks {
        assert_eq!(verdict(name), "blocked", "attack `{name}` was not blocked: {got:?}\n{}", text(&out));
    }
    for ok in ["engine", "private_tmp", "build", "tempfile", "git"] {
        assert!(
            got.iter().any(|(n, o)| n == ok && (o == "ok" || o == "wrote" || o == "found")),
            "`{ok}` should work in the sandbox: {got:?}\n{}",
            text(&out)
        );
    }
    // Nothing outside the workspace changed.
    assert_eq!(file(&h.join("precious.txt")), "keep me\n");
    assert_eq!(file(&h.join(".ssh/id_rsa")), "SSH-PRIVATE-KEY-MATERIAL\n");
    assert!(!h.join(".bashrc").exists());
    assert_eq!(file(&outside.path().join("victim.txt")), "keep me too\n");
    let left: Vec<_> = std::fs::read_dir(outside.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, ["victim.txt"], "something was written outside the workspace");
    assert!(!host_tmp.exists(), "a write to /tmp reached the host's /tmp");
    assert!(!s.work.path().parent().unwrap().join("escaped-by-cd").exists());
    assert!(listener.accept().is_err(), "the step reached a listener on the host's loopback");
    // The data directory was neither visible nor damaged, and the config is as written.
    assert_eq!(file(&s.path("attacks.listing")).lines().filter(|l| !l.starts_with('.')).count(), 0);
    assert_eq!(file(&s.path("steward.toml")), no_policy());
    let id = last_run(&s, "completed");
    let output = serde_json::to_string(&s.json(&["events", &id, "--json"])).unwrap();
    for secret in ["SSH-PRIVATE", "AWS-SECRET", "NETRC-SECRET", "SQLite format"] {
        assert!(!output.contains(secret), "the step read `{secret}`");
    }
    // Every rule applied is recorded with the attempt.
    let p = &sandbox_applied(&s, &id);
    assert_eq!((p["mode"].as_str(), p["network"].as_bool()), (Some("sandboxed"), Some(false)), "{p}");
    let listed = |key: &str, path: &Path| {
        let path = path.canonicalize().unwrap().display().to_string();
        p[key].as_array().unwrap().iter().any(|v| v.as_str() == Some(path.as_str()))
    };
    assert!(listed("writable", s.work.path()), "{p}");
    assert!(
        listed("hidden", &s.data_dir()) && listed("hidden", &h.join(".ssh")) && listed("hidden", &h.join(".netrc")),
        "{p}"
    );
    assert!(listed("read_only", &s.path("steward.toml")), "{p}");
    assert!(listed("hidden", Path::new("/run")), "{p}");
    let _ = std::fs::remove_file(&socket);
}

/// Issue 11 point 1: grants in `steward.toml` are capabilities: checked by G-CAP, recorded,
/// and applied by the sandbox (a writable directory outside the workspace, the network).
#[test]
fn operator_grants_widen_the_sandbox_and_are_recorded() {
    let s = Steward::new();
    let cache = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    s.write(
        "steward.toml",
        &format!(
            "[[sandbox.grant]]\nworkflow = \"fetch\"\ncapabilities = [\"net.http\", \"fs.write:{}\"]\n",
            cache.path().display()
        ),
    );
    let run = format!(
        "echo cached > {}/entry && python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port})).sendall(b'hi')\"",
        cache.path().display()
    );
    for id in ["fetch", "other"] {
        s.write(
            &format!("{id}.yaml"),
            &format!("id: {id}\nversion: 1\nsteps:\n  - id: get\n    type: shell\n    run: |\n      {run}\n"),
        );
    }
    let out = s.run(&["run", "fetch.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(file(&cache.path().join("entry")), "cached\n");
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hi");
    let id = last_run(&s, "completed");
    let events = s.json(&["events", &id, "--json"]);
    let caps: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "capability_action")
        .filter_map(|e| e["payload"]["capability_id"].as_str())
        .collect();
    assert!(caps.contains(&"net.http"), "{caps:?}");
    let applied = sandbox_applied(&s, &id);
    assert_eq!(applied["network"], true, "{applied}");

    // The grant is the workflow's alone.
    std::fs::remove_file(cache.path().join("entry")).unwrap();
    let out = s.run(&["run", "other.yaml"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!cache.path().join("entry").exists());
}

/// Issue 11 point 1: a grant that is not something the sandbox can apply is refused when the
/// configuration is read, naming where.
#[test]
fn a_grant_the_sandbox_cannot_apply_is_a_configuration_error() {
    let s = Steward::new();
    s.write("wf.yaml", "id: w\nversion: 1\nsteps:\n  - id: a\n    type: shell\n    run: echo hi\n");
    for (grant, says) in [
        ("capabilities = [\"proc.exec\"]", "sandbox.grant[0].capabilities: `proc.exec` is not a grant"),
        ("capabilities = [\"fs.write:relative/dir\"]", "must be an absolute path"),
        ("profile = \"Wizard\"\ncapabilities = [\"net.http\"]", "sandbox.grant[0].profile: unknown profile `Wizard`"),
    ] {
        s.write("steward.toml", &format!("[[sandbox.grant]]\n{grant}\n"));
        let out = s.run(&["run", "wf.yaml"]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{grant}: {}", text(&out));
    }
}

/// Issue 11 point 4: a human decision typed inside a step is refused by the CLI itself, even
/// where the operator turned the sandbox off and the step scrubbed its environment.
#[test]
fn a_step_cannot_record_a_human_decision_even_without_the_sandbox() {
    let s = Steward::new();
    let out = s.cmd(&["gate", "run-x", "continue"]).env("STEWARD_RUN_ID", "run-x").output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be recorded from inside a workflow step"));

    // The policy refuses `steward gate` in a step too; off here, to show the CLI's own fence.
    s.write("steward.toml", &format!("{}[sandbox]\nmode = \"off\"\n", no_policy()));
    let bin = env!("CARGO_BIN_EXE_steward");
    s.write(
        "wf.yaml",
        &format!(
            "id: w\nversion: 1\nsteps:\n  - id: a\n    type: shell\n    run: env -u STEWARD_RUN_ID -u STEWARD_ATTEMPT -u STEWARD_IDEMPOTENCY_KEY {bin} gate anything continue 2> gate.err; cat gate.err\n"
        ),
    );
    let out = s.run(&["run", "wf.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = file(&s.path("gate.err"));
    assert!(err.contains("cannot be recorded from inside a workflow step") && err.contains("ancestor"), "{err}");
    // With the sandbox off, every attempt says so.
    let applied = sandbox_applied(&s, &last_run(&s, "completed"));
    assert_eq!(applied["mode"], "unsandboxed");
    assert_eq!(applied["reason"], "the operator turned the sandbox off");
}

/// Issue 11 point 1: where the sandbox cannot be set up, commands are refused, unless the
/// operator allowed running without one, which every attempt then records.
#[test]
fn without_a_sandbox_commands_are_refused_unless_the_operator_allows_it() {
    let s = Steward::new();
    s.write("wf.yaml", "id: w\nversion: 1\nsteps:\n  - id: a\n    type: shell\n    run: echo ran > ran.txt\n");
    // A launcher that cannot contain anything stands for a kernel that cannot.
    s.write("broken-launcher", "#!/bin/sh\necho 'steward-sandbox: no Landlock here' >&2\nexit 126\n");
    std::fs::set_permissions(s.path("broken-launcher"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let launcher = s.path("broken-launcher").display().to_string();
    s.write("steward.toml", &format!("[sandbox]\nlauncher = \"{launcher}\"\n"));
    let out = s.run(&["run", "wf.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cannot sandbox commands (no Landlock here)"), "{}", text(&out));
    assert!(!s.path("ran.txt").exists());

    s.write("steward.toml", &format!("[sandbox]\nlauncher = \"{launcher}\"\nmode = \"if_available\"\n"));
    let out = s.run(&["run", "wf.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(file(&s.path("ran.txt")), "ran\n");
    let applied = sandbox_applied(&s, &last_run(&s, "completed"));
    assert_eq!(applied["mode"], "unsandboxed");
    assert!(applied["reason"].as_str().unwrap().contains("no Landlock here"), "{applied}");
}

/// Issue 11 point 1: an agent CLI runs in the sandbox too. Its prompt file lives in the data
/// directory, which the sandbox hides; the agent is granted reading that one file (recorded as
/// `fs.read:<file>`) and nothing else of the data directory.
#[test]
fn an_agent_cli_reads_its_prompt_and_nothing_else_of_the_data_directory() {
    let s = Steward::new();
    s.write(
        "fake-claude",
        "#!/bin/sh\nfile=$(echo \"$*\" | sed -n 's/.*prompt file at \\([^ ]*\\) and.*/\\1/p')\n\
         head -n1 \"$file\" > seen-prompt.txt\nls .steward > seen-data-dir.txt 2>&1\n\
         echo '[workflow_result]{\"outputs\": {\"text\": \"from the cli\"}}[/workflow_result]'\n",
    );
    std::fs::set_permissions(s.path("fake-claude"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    s.write(
        "wf.yaml",
        "id: t\nversion: 1\nagents:\n  a: {provider: command, cli: claude, model: sonnet}\nsteps:\n  - id: write\n    type: agent_task\n    agent: a\n    prompt: \"Write about tides\"\n    outputs: [text]\n",
    );
    let out = s.cmd(&["run", "wf.yaml"]).env("STEWARD_CLAUDE_BIN", s.path("fake-claude")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(file(&s.path("seen-prompt.txt")).contains("Write about tides"), "{}", file(&s.path("seen-prompt.txt")));
    assert_eq!(file(&s.path("seen-data-dir.txt")).trim(), "runs", "only the way to the prompt file is visible");
    let applied = sandbox_applied(&s, &last_run(&s, "completed"));
    let exposed = applied["exposed"].as_array().unwrap();
    assert!(exposed.len() == 1 && exposed[0].as_str().unwrap().ends_with("/prompt.md"), "{applied}");
}

/// Issue 11 point 1: a profile listed in `[sandbox] protect_git` sees the workspace's `.git`
/// read-only; the rest of the workspace stays writable.
#[test]
fn a_protected_git_directory_is_read_only() {
    let s = Steward::new();
    s.write("steward.toml", "[sandbox]\nprotect_git = [\"Coder\"]\n");
    std::fs::create_dir_all(s.path(".git")).unwrap();
    s.write(".git/config", "[core]\n");
    s.write(
        "wf.yaml",
        "id: w\nversion: 1\nsteps:\n  - id: a\n    type: shell\n    run: \"echo x >> .git/config || echo blocked > result.txt; rm -rf .git 2>/dev/null; echo ok > written.txt\"\n",
    );
    let out = s.run(&["run", "wf.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(file(&s.path("result.txt")), "blocked\n");
    assert_eq!(file(&s.path(".git/config")), "[core]\n");
    assert_eq!(file(&s.path("written.txt")), "ok\n");
}

/// Where `steward-sandbox` is not installed beside `steward` (`cargo run` builds only
/// `steward`), `steward` itself is the launcher, and the command is contained all the same.
#[test]
fn steward_itself_contains_commands_where_the_small_launcher_is_missing() {
    let s = Steward::new();
    s.write("steward.toml", &format!("[sandbox]\nlauncher = \"{}\"\n", env!("CARGO_BIN_EXE_steward")));
    // The policy refuses `ls .steward`; what it cannot read, the sandbox hides.
    s.write(
        "wf.yaml",
        "id: w\nversion: 1\nsteps:\n  - id: a\n    type: shell\n    run: python3 -c 'import os; print(os.listdir(\".steward\"))' > seen.txt\n",
    );
    let out = s.run(&["run", "wf.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(file(&s.path("seen.txt")), "[]\n", "the data directory was not hidden");
    assert_eq!(sandbox_applied(&s, &last_run(&s, "completed"))["mode"], "sandboxed");
}

/// Issue 11: nothing a command starts outlives its step, not even a process that left the
/// command's group (`setsid`) and was orphaned: the command has its own pid namespace, whose
/// end kills everything in it before the step is over.
#[test]
fn a_process_that_left_the_group_does_not_outlive_its_step() {
    let s = Steward::new();
    s.write(
        "wf.yaml",
        "id: w\nversion: 1\nsteps:\n  - id: a\n    type: shell\n    run: |\n      \
         setsid sh -c 'awk \"{print \\$4}\" /proc/self/stat > e.tmp && mv e.tmp escaped.pid; exec sleep 60' &\n      \
         while [ ! -s escaped.pid ]; do sleep 0.01; done\n",
    );
    let out = s.run(&["run", "wf.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    let pid: i32 = file(&s.path("escaped.pid")).trim().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let gone = stat.is_empty() || stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'));
    assert!(gone, "the escaped process {pid} outlived its step: {stat}");
}

/// Issue 11: without `protect_git`, a step can still commit, but not plant code that git would
/// run later outside the sandbox (a hook, an fsmonitor or filter in the repository's config).
#[test]
fn git_hooks_and_config_are_read_only_but_commits_work() {
    let s = Steward::new();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").args(args).current_dir(s.work.path()).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q"]);
    s.write(
        "wf.yaml",
        "id: w\nversion: 1\nsteps:\n  - id: a\n    type: shell\n    run: |\n      \
         git config core.fsmonitor 'touch planted' 2>/dev/null || echo config-blocked >> result.txt\n      \
         echo 'touch planted' > .git/hooks/pre-commit 2>/dev/null || echo hook-blocked >> result.txt\n      \
         echo x > f && git add f && git -c user.email=a@b -c user.name=n commit -qm x && echo committed >> result.txt\n",
    );
    let out = s.run(&["run", "wf.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(file(&s.path("result.txt")), "config-blocked\nhook-blocked\ncommitted\n");
    assert!(!file(&s.path(".git/config")).contains("fsmonitor"));
}

/// Issue 11: a step that writes a `./steward.toml` of its own (one turning the sandbox off)
/// does not govern the rest of its run: `resume` refuses a configuration found in the
/// workspace that changed after the run started, until the operator names it.
#[test]
fn a_configuration_a_step_planted_does_not_govern_its_run() {
    use nix::sys::signal::{Signal, kill};
    let s = Steward::new();
    s.write(
        "wf.yaml",
        "id: w\nversion: 1\nsteps:\n  - id: plant\n    type: shell\n    run: printf '[sandbox]\\nmode = \"off\"\\n' > steward.toml\n  \
         - id: wait\n    type: shell\n    run: while [ ! -f go ]; do sleep 0.05; done\n",
    );
    let mut child = s.cmd(&["run", "wf.yaml"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !s.path("steward.toml").exists() {
        assert!(std::time::Instant::now() < deadline, "the step never wrote its configuration");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let id = last_run(&s, "stalled");

    s.write("go", "");
    let out = s.run(&["resume", &id]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("steward.toml was created or changed after run"), "{}", text(&out));
    let out = s.run(&["--config", "steward.toml", "resume", &id]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Issue 11, DG-MEX-06: Steward's own secrets are not its commands'. A secret-named variable
/// Steward inherits (a model provider's key) is withheld from a step unless the operator grants
/// it (`secrets.use:<NAME>`), and the withholding is recorded; a granted one is still redacted.
#[test]
fn steward_secrets_are_withheld_from_commands_unless_granted() {
    let s = Steward::new();
    let run = "python3 -c 'import os; print(os.environ.get(\"DEMO_API_KEY\", \"absent\"))'";
    for id in ["plain", "granted"] {
        s.write(
            &format!("{id}.yaml"),
            &format!("id: {id}\nversion: 1\nsteps:\n  - id: a\n    type: shell\n    run: |\n      {run}\n"),
        );
    }
    s.write(
        "steward.toml",
        "[[sandbox.grant]]\nworkflow = \"granted\"\ncapabilities = [\"secrets.use:DEMO_API_KEY\"]\n",
    );
    let key = "sk-demo-0123456789abcdefghij";
    for (wf, stdout) in [("plain.yaml", "absent"), ("granted.yaml", "***REDACTED***")] {
        let out = s.cmd(&["run", wf, "--json"]).env("DEMO_API_KEY", key).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(!shown.contains(key), "{wf}: the key was shown: {shown}");
        let id = last_run(&s, "completed");
        let status = s.json(&["status", &id, "--json"]);
        assert_eq!(
            status["steps"][0]["attempts"][0]["output"]["stdout"].as_str().map(str::trim),
            Some(stdout),
            "{wf}: {status}"
        );
        let withheld = sandbox_applied(&s, &id)["withheld_env"].clone();
        let listed = withheld.as_array().is_some_and(|w| w.iter().any(|n| n == "DEMO_API_KEY"));
        assert_eq!(listed, wf == "plain.yaml", "{wf}: {withheld}");
    }
}
