//! Says what to install when the build's one system requirement beyond the
//! Rust toolchain and a C/C++ compiler is missing: cmake, which builds
//! whisper.cpp (the embedded transcription engine) and libopus.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::process::Command::new("cmake")
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "cargo:warning=clinscribe needs cmake to build whisper.cpp and libopus: \
             install it (Debian/Ubuntu: sudo apt-get install cmake; macOS: brew install cmake)"
        );
        std::process::exit(1);
    }
}
