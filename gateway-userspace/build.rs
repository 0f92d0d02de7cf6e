//! Builds the XDP object (gateway-ebpf) for bpfel-unknown-none and leaves it in OUT_DIR, where
//! `dataplane` embeds it. The eBPF crate needs `-Z build-std=core`, so it is built with a compiler
//! that has the library source: by default Debian's LLVM-22 rustc (/usr/bin/rustc, installed by
//! scripts/setup.sh) with RUSTC_BOOTSTRAP; set GATEWAY_BPF_CARGO / GATEWAY_BPF_RUSTC to use e.g. a
//! rustup nightly with rust-src instead.
use std::{env, path::PathBuf, process::Command};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest.join("../gateway-ebpf");
    let common_dir = manifest.join("../gateway-common");
    for p in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        common_dir.join("src"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed=GATEWAY_BPF_CARGO");
    println!("cargo:rerun-if-env-changed=GATEWAY_BPF_RUSTC");

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let target_dir = out_dir.join("ebpf-target");
    let cargo = env::var("GATEWAY_BPF_CARGO").unwrap_or_else(|_| "/usr/bin/cargo".into());
    let rustc = env::var("GATEWAY_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());

    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&ebpf_dir)
        .args([
            "build",
            "--release",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings are for the host target; none of them apply here.
    for (k, _) in env::vars() {
        if k.starts_with("CARGO")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUSTC", &rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("RUSTUP_TOOLCHAIN");
    // bpf-linker is installed by `cargo install`, into ~/.cargo/bin.
    if let (Ok(path), Ok(home)) = (env::var("PATH"), env::var("HOME")) {
        cmd.env("PATH", format!("{home}/.cargo/bin:{path}"));
    }
    let status = cmd.status().map_err(|e| {
        anyhow::anyhow!(
            "cannot run {cargo} to build gateway-ebpf: {e}; run `scripts/setup.sh` first"
        )
    })?;
    if !status.success() {
        anyhow::bail!(
            "building gateway-ebpf failed ({status}); the eBPF toolchain is set up by `scripts/setup.sh`"
        );
    }
    let obj = target_dir.join("bpfel-unknown-none/release/gateway-ebpf");
    std::fs::copy(&obj, out_dir.join("gateway.bpf.o"))?;
    Ok(())
}
