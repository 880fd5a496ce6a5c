//! Bad input gets a clear message naming what and where, a non-zero exit, and loses nothing.

use crate::support::*;

fn fails(s: &Steward, args: &[&str], code: i32, needles: &[&str]) -> String {
    let out = s.run(args);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(code), "steward {args:?}: {all}");
    for n in needles {
        assert!(all.contains(n), "steward {args:?} should mention {n:?}: {all}");
    }
    all
}

#[test]
fn bad_workflow_files_are_reported_with_line_step_and_field() {
    let s = Steward::new();
    let yaml = s.write("broken.yaml", "id: x\nversion: 1\nsteps:\n  - id: a\n    type: shell\n    run: [echo\n");
    fails(&s, &["validate", yaml.to_str().unwrap()], 1, &["broken.yaml:7: invalid YAML"]);
    fails(&s, &["run", yaml.to_str().unwrap()], 2, &["invalid workflow definition", "invalid YAML"]);

    let kind = s.write("kind.yaml", "id: x\nversion: 1\nsteps:\n  - id: a\n    type: python\n");
    fails(
        &s,
        &["validate", kind.to_str().unwrap()],
        1,
        &[
            "kind.yaml:5: step `a`, field `steps[0].type`: unknown step type `python` (expected one of: shell, noop, agent_task, agent_review, micro_tasks, approval)",
        ],
    );

    let cycle = s.write(
        "cycle.yaml",
        "id: x\nversion: 1\nsteps:\n  - {id: a, type: noop, needs: [b]}\n  - {id: b, type: noop, needs: [a]}\n",
    );
    fails(&s, &["validate", cycle.to_str().unwrap()], 1, &["cycle: a -> b -> a"]);

    let many = s.write("many.yaml", "id: x\nversion: 1\ncolour: red\nsteps:\n  - {id: a, type: shell, run: 'echo {{inputs.nope}}'}\n  - {id: a, type: noop, needs: [zz]}\n");
    let all = fails(&s, &["validate", many.to_str().unwrap(), "--json"], 1, &["\"valid\": false"]);
    assert!(all.matches("\"line\"").count() >= 4, "{all}");

    fails(&s, &["validate", "missing.yaml"], 2, &["cannot read workflow file missing.yaml"]);
    let ok = s.write("hello.yaml", HELLO);
    fails(&s, &["validate", ok.to_str().unwrap()], 0, &["ok: workflow hello v1, 2 steps (greet, shout)"]);
    assert!(!s.data_dir().exists(), "validate must not create a data directory");
}

#[test]
fn bad_inputs_and_run_ids_are_refused_without_recording_anything() {
    let s = Steward::new();
    let wf = s.write("hello.yaml", HELLO);
    let wf = wf.to_str().unwrap();
    let done = s.json(&["run", wf, "--input", "name=keep", "--json"]);
    let id = done["run_id"].as_str().unwrap().to_owned();
    let before = s.json(&["status", &id, "--json"]);

    fails(
        &s,
        &["run", wf],
        2,
        &["missing required input `name` (declared at line 4, type string); pass --input name=..."],
    );
    fails(
        &s,
        &["run", wf, "--input", "name=x", "--input", "colour=red"],
        2,
        &["unknown input `colour` (workflow `hello` declares: name)"],
    );
    fails(&s, &["run", wf, "--input", "novalue"], 2, &["--input `novalue`: expected key=value"]);
    let typed =
        s.write("typed.yaml", "id: t\nversion: 1\ninputs:\n  n: {type: number}\nsteps:\n  - {id: a, type: noop}\n");
    fails(
        &s,
        &["run", typed.to_str().unwrap(), "--input", "n=abc"],
        2,
        &["--input n (declared at line 4): expected a number, found `abc`"],
    );
    fails(&s, &["run", wf, "--input-file", "nope.json"], 2, &["cannot read input file nope.json"]);

    fails(&s, &["status", "run-nope"], 2, &["run `run-nope` not found"]);
    fails(&s, &["events", "run-nope"], 2, &["run `run-nope` not found"]);
    fails(&s, &["resume", &id], 2, &["is completed; a finished run cannot be resumed"]);
    fails(&s, &["cancel", &id], 2, &["is completed; there is nothing to cancel"]);
    fails(&s, &["list", "--state", "waiting"], 2, &["unknown run state `waiting`"]);

    // Nothing above recorded a run or touched the finished one.
    assert_eq!(s.json(&["list", "--json"]).as_array().unwrap().len(), 1);
    assert_eq!(s.json(&["status", &id, "--json"]), before);
}

#[test]
fn missing_unwritable_and_corrupt_data_directories_are_named() {
    let s = Steward::new();
    let wf = s.write("hello.yaml", HELLO);
    let wf = wf.to_str().unwrap();
    fails(&s, &["status", "run-x"], 2, &["no Steward database at", ".steward/steward.db"]);
    fails(
        &s,
        &["--data-dir", "/proc/steward-nope", "run", wf, "--input", "name=x"],
        2,
        &["cannot create the data directory /proc/steward-nope"],
    );
    s.write("a-file", "x");
    for args in [vec!["run", wf, "--input", "name=x"], vec!["list"], vec!["status", "run-x"], vec!["events"]] {
        let args: Vec<&str> = ["--data-dir", "a-file"].into_iter().chain(args).collect();
        fails(&s, &args, 2, &["the data directory a-file is not a directory"]);
    }

    std::fs::create_dir_all(s.data_dir()).unwrap();
    let garbage = b"this is not a database, and it must survive steward".repeat(100);
    std::fs::write(s.data_dir().join("steward.db"), &garbage).unwrap();
    for args in [vec!["status", "run-x"], vec!["list"], vec!["run", wf, "--input", "name=x"], vec!["recover"]] {
        fails(&s, &args, 2, &["steward.db is unreadable", "left untouched"]);
    }
    assert_eq!(std::fs::read(s.data_dir().join("steward.db")).unwrap(), garbage);
}

/// Issue 10 point 5: an empty, truncated or damaged database is refused by every command
/// with the file named, never silently replaced by a new empty one, and a run it still holds
/// is never reported "not found" because of the damage.
#[test]
fn a_damaged_database_is_refused_and_never_replaced() {
    let s = Steward::new();
    let wf = s.write("hello.yaml", HELLO);
    let wf = wf.to_str().unwrap();
    let id = s.json(&["run", wf, "--input", "name=keep", "--json"])["run_id"].as_str().unwrap().to_owned();
    let db = s.data_dir().join("steward.db");
    let good = std::fs::read(&db).unwrap();
    let every = |s: &Steward, expect: &[&str]| {
        for args in [vec!["status", id.as_str()], vec!["list"], vec!["run", wf, "--input", "name=x"], vec!["recover"]] {
            fails(s, &args, 2, expect);
        }
    };

    std::fs::write(&db, b"").unwrap();
    every(&s, &["steward.db is unreadable", "the file is empty", "left untouched"]);
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "an empty database was replaced");

    std::fs::write(&db, &good[..good.len() / 2]).unwrap();
    every(&s, &["steward.db is unreadable", "the file is truncated"]);
    assert_eq!(std::fs::read(&db).unwrap(), &good[..good.len() / 2]);

    // Every page but the first overwritten: the run's row is gone from what SQLite can read,
    // and the damage, not a missing run, is what `status` reports.
    let mut damaged = good.clone();
    damaged[4096..].fill(0x41);
    std::fs::write(&db, &damaged).unwrap();
    let out = s.run(&["status", &id]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("steward.db is unreadable") && !err.contains("not found"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), damaged);
}

/// Issue 10 point 5: many processes using a fresh data directory for the first time, at once,
/// all work (the database appears complete or not at all; the schema is made once).
#[test]
fn first_use_of_a_data_directory_by_many_processes_at_once() {
    let s = Steward::new();
    let wf = s.write("hello.yaml", HELLO);
    let children: Vec<_> = (0..20)
        .map(|i| {
            s.cmd(&["run", wf.to_str().unwrap(), "--input", &format!("name=p{i}")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(s.json(&["list", "--json"]).as_array().unwrap().len(), 20);
    // `list` shows the newest page and says when there is more; `--all` shows every run.
    let page = s.cmd(&["list", "--limit", "3"]).output().unwrap();
    let shown = String::from_utf8_lossy(&page.stdout).lines().filter(|l| l.starts_with("run-")).count();
    assert_eq!(shown, 3, "{}", text(&page));
    assert!(String::from_utf8_lossy(&page.stderr).contains("`steward list --all`"), "{}", text(&page));
    assert_eq!(s.json(&["list", "--limit", "3", "--json"]).as_array().unwrap().len(), 3);
    assert_eq!(s.json(&["list", "--all", "--json"]).as_array().unwrap().len(), 20);
    let whole = s.cmd(&["list", "--limit", "20"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&whole.stderr).contains("for more"), "{}", text(&whole));
    let leftovers: Vec<_> = std::fs::read_dir(s.data_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".init-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

/// Makes a path immutable (even to root) until dropped.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(path: std::path::PathBuf) -> Immutable {
        let ok = std::process::Command::new("chattr").arg("+i").arg(&path).status().is_ok_and(|s| s.success());
        assert!(ok, "chattr +i {} failed: this test needs CAP_LINUX_IMMUTABLE (root on ext4)", path.display());
        Immutable(path)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A read-only data directory or database refuses new work with a clear
/// message, and what it already holds stays readable.
#[test]
fn read_only_data_is_refused_for_writes_and_still_readable() {
    let s = Steward::new();
    let wf = s.write("hello.yaml", HELLO);
    let wf = wf.to_str().unwrap();
    let id = s.json(&["run", wf, "--input", "name=keep", "--json"])["run_id"].as_str().unwrap().to_owned();
    let before = s.db_bytes();
    {
        let _ro = Immutable::set(s.data_dir());
        fails(&s, &["run", wf, "--input", "name=x"], 2, &["the data directory .steward is not writable"]);
        fails(&s, &["resume", &id], 2, &["not writable"]);
        assert_eq!(s.json(&["status", &id, "--json"])["state"], "completed");
        assert_eq!(s.json(&["list", "--json"]).as_array().unwrap().len(), 1);
    }
    {
        let _ro = Immutable::set(s.data_dir().join("steward.db"));
        fails(&s, &["run", wf, "--input", "name=x"], 2, &[".steward/steward.db is read-only"]);
    }
    assert!(s.db_bytes() == before, "a refused write changed the database");
    assert_eq!(s.json(&["status", &id, "--json"])["state"], "completed");
}
