//! The `clinscribe` binary: see `clinscribe --help`.

fn main() -> std::process::ExitCode {
    clinscribe::cli::main()
}
