//! The `driftwarden` command line, built with the tests so that they run the
//! current code as a separate process (`CARGO_BIN_EXE_driftwarden-under-test`):
//! to kill it mid-burst, start it again, and read its output.

fn main() -> std::process::ExitCode {
    driftwarden::cli::main()
}
