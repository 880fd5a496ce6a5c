//! `steward-sandbox`: contains itself under the rules the tool bus hands it, then becomes the
//! command (see `steward_tools::sandbox`). A binary of its own, single-threaded and small, so
//! that every command pays for one short exec and not for starting `steward`.

fn main() {
    std::process::exit(steward_tools::sandbox::launcher_main(std::env::args_os().collect()));
}
