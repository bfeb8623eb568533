fn main() {
    std::process::exit(gemini_sweep::cli::main());
}
