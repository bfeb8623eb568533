fn main() -> std::process::ExitCode {
    gemini_sweep::cli::main().into()
}
