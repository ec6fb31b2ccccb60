//! The `clinscribe` binary: see `clinscribe --help`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    clinscribe::cli::main()
}
