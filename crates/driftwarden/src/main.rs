fn main() -> std::process::ExitCode {
    driftwarden::cli::main()
}
