//! Compiles `proto/ponder/v1/*.proto`. Uses `$PROTOC` when set (CI installs one), else the
//! protoc vendored by `protoc-bin-vendored`, so a machine with only the Rust toolchain builds.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["common", "generator", "verifier", "orchestrator"]
        .map(|f| root.join(format!("ponder/v1/{f}.proto")));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    if std::env::var_os("PROTOC").is_none_or(|p| !PathBuf::from(p).is_file()) {
        // SAFETY: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("ponder_descriptor.bin"))
        .compile_protos(&files, &[root])?;
    Ok(())
}
