//! Gives the `steward` binary and its tests an rpath to the prebuilt DuckDB library
//! that `steward-analytics`'s build script installed (see its build.rs).
#![allow(clippy::print_stdout)]

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_STEWARD_DUCKDB_LIB_DIR");
    if let Ok(dir) = std::env::var("DEP_STEWARD_DUCKDB_LIB_DIR") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{dir}");
    }
}
