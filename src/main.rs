//! The `ylem` command: the daemon and the commands that drive it.

fn main() {
    std::process::exit(ylem_runtime::cli::main());
}
