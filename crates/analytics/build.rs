//! Links the prebuilt DuckDB library instead of compiling DuckDB (which takes ~18 minutes
//! on two cores). The library ships in the npm package `@duckdb/node-bindings-linux-x64`,
//! whose version must match the `duckdb` crate (1.10506.x = DuckDB 1.5.6). It is installed
//! once into `$HOME/.cache/steward/duckdb/<version>` (or `$STEWARD_DUCKDB_DIR`, or the
//! directory `DUCKDB_LIB_DIR` names), and binaries find it through an rpath.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

const PACKAGE: &str = "@duckdb/node-bindings-linux-x64@1.5.6-r.1";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=STEWARD_DUCKDB_DIR");
    let dir = lib_dir();
    let lib = dir.join("libduckdb.so");
    if !lib.exists() {
        let prefix = dir.join("npm");
        std::fs::create_dir_all(&prefix).expect("create the DuckDB cache directory");
        let status = Command::new("npm")
            .args(["install", "--no-save", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&prefix)
            .arg(PACKAGE)
            .status()
            .expect("run npm (Node.js is needed once, to fetch the prebuilt DuckDB library)");
        assert!(status.success(), "npm install {PACKAGE} failed");
        let installed = prefix.join("node_modules/@duckdb/node-bindings-linux-x64/libduckdb.so");
        std::fs::copy(&installed, &lib).expect("copy libduckdb.so into the cache");
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", dir.display());
    println!("cargo:lib_dir={}", dir.display());
}

/// Where the library lives; dependents get it as `DEP_STEWARD_DUCKDB_LIB_DIR`, from which the
/// CLI's build script sets its rpath.
fn lib_dir() -> PathBuf {
    if let Ok(d) = std::env::var("DUCKDB_LIB_DIR") {
        return PathBuf::from(d);
    }
    if let Ok(d) = std::env::var("STEWARD_DUCKDB_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    PathBuf::from(home).join(".cache/steward/duckdb/1.5.6-r.1")
}
