//! Architecture rules checked as tests: module docs, dependency direction, one place that spawns.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn sources(under: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for krate in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = krate.unwrap().path().join(under);
        if dir.is_dir() {
            rust_files(&dir, &mut out);
        }
    }
    out
}

fn dependencies(krate: &str) -> String {
    let manifest = std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml")).unwrap();
    let start = manifest.find("[dependencies]").map_or(manifest.len(), |i| i + "[dependencies]".len());
    let rest = &manifest[start..];
    rest[..rest.find("\n[").unwrap_or(rest.len())].to_owned()
}

/// Every module says what it owns in a `//!` first line.
#[test]
fn every_module_starts_with_a_doc_line() {
    let missing: Vec<String> = sources("src")
        .into_iter()
        .chain(sources("tests"))
        .filter(|p| !std::fs::read_to_string(p).unwrap().starts_with("//!"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(missing.is_empty(), "modules without a `//!` line: {missing:?}");
}

/// The core stays pure; only the binary picks a storage backend.
#[test]
fn dependency_direction_holds() {
    let core = dependencies("core");
    for banned in ["tokio", "futures", "rusqlite", "sqlx", "reqwest", "hyper", "axum", "clap", "anyhow", "steward-"] {
        assert!(!core.contains(banned), "steward-core must not depend on {banned}");
    }
    // The micro-task executor's pure half is as pure as the core, and knows only the core.
    let micro_task = dependencies("micro-task");
    for banned in ["tokio", "futures", "rusqlite", "sqlx", "reqwest", "hyper", "axum", "clap", "anyhow"] {
        assert!(!micro_task.contains(banned), "steward-micro-task must not depend on {banned}");
    }
    assert!(
        micro_task.lines().filter(|l| l.contains("steward-")).all(|l| l.contains("steward-core")),
        "steward-micro-task depends on no internal crate but the core: {micro_task}"
    );
    for krate in [
        "core",
        "micro-task",
        "artifacts",
        "store",
        "store-sqlite",
        "store-testkit",
        "tools",
        "models",
        "runtime",
        "server",
    ] {
        let deps = dependencies(krate);
        assert!(!deps.contains("anyhow"), "library crate {krate} must not use anyhow");
        if krate != "store-sqlite" {
            assert!(!deps.contains("steward-store-sqlite"), "{krate} must not depend on a concrete store");
        }
    }
    assert!(!dependencies("runtime").contains("rusqlite"));
    for krate in ["core", "store", "tools", "models", "runtime"] {
        assert!(!dependencies(krate).contains("steward-server"), "{krate} must not know the HTTP server");
        assert!(!dependencies(krate).contains("axum"), "{krate} must not speak HTTP as a server");
    }
    assert!(!dependencies("tools").contains("steward-store"), "the tool bus never touches the store");
    assert!(!dependencies("models").contains("steward-"), "model providers depend on no internal crate");
    assert!(!dependencies("artifacts").contains("steward-"), "the artifact store seam depends on no internal crate");
    assert!(!dependencies("artifacts").contains("tokio"), "the artifact store seam needs no async runtime");
}

/// Only the tool bus starts processes (the CLI re-executes itself for `--detach`; the dev-only
/// test-support crate starts the local model server for tests).
#[test]
fn only_the_tool_bus_spawns_processes() {
    let offenders: Vec<String> = sources("src")
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            !s.contains("/crates/tools/")
                && !s.contains("/crates/test-support/")
                && !s.ends_with("/crates/cli/src/main.rs")
        })
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            ["Command::new", "process::Command", "libc::fork", "execvp"].iter().any(|n| text.contains(n))
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "process spawning outside the tool bus: {offenders:?}");
}
