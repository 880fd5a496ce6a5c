//! The hostile-command corpus of issue 11 (`corpus/commands.tsv`), judged by the real binary's `steward tools check`.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use crate::support::*;

/// One corpus line.
struct Case {
    deny: bool,
    hostile: bool,
    category: String,
    command: String,
}

/// `\n`, `\t` and `\\` in the command column stand for a newline, a tab and a backslash.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn corpus() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/corpus/commands.tsv");
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let cols: Vec<&str> = l.splitn(4, '\t').collect();
            assert_eq!(cols.len(), 4, "bad corpus line: {l}");
            assert!(matches!(cols[0], "deny" | "allow") && matches!(cols[1], "hostile" | "benign"), "{l}");
            Case {
                deny: cols[0] == "deny",
                hostile: cols[1] == "hostile",
                category: cols[2].to_owned(),
                command: unescape(cols[3]),
            }
        })
        .collect()
}

/// HSK-TERM-002, issue 11: every command of the corpus (at least 300, hostile commands and
/// benign look-alikes) gets its expected verdict from `steward tools check`, run once over
/// all of them. Hostile commands expected to pass are the policy's known gaps, benign ones
/// expected to be denied what it over-blocks; both are counted and printed, and
/// `docs/security-policy.md` reports the same figures.
#[test]
fn the_hostile_corpus_gets_its_verdicts() {
    let cases = corpus();
    assert!(cases.len() >= 300, "the corpus has {} commands", cases.len());
    let s = Steward::new();
    let mut child = s
        .cmd(&["tools", "check", "--from", "-", "--null", "--json"])
        // A fixed home directory, so that what is "home" does not depend on who runs the test.
        .env("HOME", "/home/corpus")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: Vec<u8> = cases.iter().map(|c| c.command.as_str()).collect::<Vec<_>>().join("\0").into_bytes();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(out.status.code(), Some(1), "some commands are denied: {}", text(&out));
    let verdicts: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(verdicts.len(), cases.len(), "one verdict per command: {}", text(&out));

    let (mut denied, mut allowed, mut over, mut under) = (0, 0, 0, 0);
    let mut wrong = Vec::new();
    for (case, v) in cases.iter().zip(&verdicts) {
        let deny = v["allowed"] == false;
        if deny {
            denied += 1;
            // Every denial of a command is the terminal guard's HSK-TERM-002 with a named rule or pattern.
            assert_eq!(v["refusal"]["code"], "HSK-TERM-002", "{}: {v}", case.command);
            assert!(v["refusal"]["reason"].as_str().unwrap().contains("denylist"), "{}: {v}", case.command);
        } else {
            allowed += 1;
        }
        match (case.hostile, deny) {
            (false, true) => over += 1,
            (true, false) => under += 1,
            _ => {}
        }
        if deny != case.deny {
            wrong.push(format!(
                "  expected {} [{}]: {:?}\n    got: {}",
                if case.deny { "deny" } else { "allow" },
                case.category,
                case.command,
                v["refusal"]["reason"].as_str().unwrap_or("allowed")
            ));
        }
    }
    let hostile = cases.iter().filter(|c| c.hostile).count();
    eprintln!(
        "hostile corpus: {} commands ({hostile} hostile, {} benign): {denied} denied, {allowed} allowed; \
         over-blocked {over} (benign denied), under-blocked {under} (hostile allowed)",
        cases.len(),
        cases.len() - hostile
    );
    assert!(wrong.is_empty(), "{} verdicts differ from the corpus:\n{}", wrong.len(), wrong.join("\n"));
}
