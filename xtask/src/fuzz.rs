//! `cargo xtask fuzz [--seconds N]`: the coverage-guided fuzz targets of `fuzz/` (libFuzzer via
//! libfuzzer-sys), built on the stable compiler with the sanitizer-coverage passes cargo-fuzz
//! would add (`-Cpasses=sancov-module` and its `llvm-args`, all stable flags; no nightly, no
//! cargo-fuzz, no AddressSanitizer), each run for N seconds over its seed corpus in
//! `fuzz/seeds/<target>` (read only: new inputs go to `target/fuzz-corpus/<target>`).
//! A crash leaves its input in `fuzz/artifacts/<target>/` and fails the step.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

pub const TARGETS: [&str; 4] = ["manifest", "path", "client_hello", "route"];

const TRIPLE: &str = "x86_64-unknown-linux-gnu";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds every target with coverage instrumentation.
pub fn build() -> Result<()> {
    let fuzz = root().join("fuzz");
    let flags = [
        "--cfg fuzzing",
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "-Cdebug-assertions",
        "-Coverflow-checks",
        "-Copt-level=2",
    ]
    .join(" ");
    // An explicit --target keeps RUSTFLAGS off build scripts and proc macros (as cargo-fuzz).
    let st = Command::new(env!("CARGO"))
        .current_dir(&fuzz)
        .env("RUSTFLAGS", flags)
        .args(["build", "--release", "--bins", "--target", TRIPLE])
        .status()
        .context("building fuzz/")?;
    if !st.success() {
        bail!("building the fuzz targets failed ({st})");
    }
    Ok(())
}

/// Builds, then runs each target for `seconds`.
pub fn run(seconds: u64) -> Result<()> {
    build()?;
    let root = root();
    let mut failed = Vec::new();
    for t in TARGETS {
        let bin = root
            .join("fuzz/target")
            .join(TRIPLE)
            .join("release")
            .join(t);
        let corpus = root.join("target/fuzz-corpus").join(t);
        let artifacts = root.join("fuzz/artifacts").join(t);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        println!("fuzz {t}: {seconds} s");
        let st = Command::new(&bin)
            .arg(&corpus)
            .arg(root.join("fuzz/seeds").join(t))
            .arg(format!("-max_total_time={seconds}"))
            .arg("-max_len=65536")
            .arg("-timeout=10")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .status()
            .with_context(|| format!("running {}", bin.display()))?;
        if !st.success() {
            failed.push(t);
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {failed:?} (inputs in fuzz/artifacts/)");
    }
    Ok(())
}

/// The long run (`cargo xtask bench --fuzz SECONDS`): every target for `seconds`, then 10^6
/// random and mutated packets through the XDP program (`XDP_FUZZ_PACKETS`).
pub fn long(seconds: u64) -> Result<()> {
    run(seconds)?;
    let st = Command::new(env!("CARGO"))
        .current_dir(root())
        .env("XDP_FUZZ_PACKETS", "1000000")
        .args([
            "test",
            "-p",
            "gateway-userspace",
            "--test",
            "xdp_fuzz",
            "--",
            "--nocapture",
        ])
        .status()
        .context("running the XDP packet fuzz")?;
    if !st.success() {
        bail!("the XDP packet fuzz (10^6 packets) failed ({st})");
    }
    Ok(())
}
