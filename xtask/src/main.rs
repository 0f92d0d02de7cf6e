//! Build, test and demo orchestration: `cargo xtask <command>` (or `./x <command>`, which first
//! installs what is missing).
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod fuzz;
mod kernels;
mod qemu;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build everything, then run every test: unit, BPF program (BPF_PROG_TEST_RUN) and the
    /// network-namespace integration tests. Needs root.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the gateway on its embedded default: a namespace topology with real backends, the
    /// example manifests, traffic through it; runs until Ctrl-C, then cleans up. Needs root.
    Demo,
    /// Measure against the peers (Katran figures, IPVS, iptables, HAProxy, nginx) and write
    /// docs/benchmarks.md; `--quick` is a CI smoke run writing target/bench-quick.md. Needs root.
    Bench {
        #[arg(long)]
        quick: bool,
        /// Run only these sections (comma-separated: xdp,l4,l4vm,l7,scale,pressure,router,observe); the
        /// report then goes to target/bench-only.md and docs/benchmarks.md is left alone.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// First the long fuzz run: each fuzz/ target for SECONDS and 10^6 packets through the
        /// XDP program (the suite runs 8 s and 10^5).
        #[arg(long, value_name = "SECONDS")]
        fuzz: Option<u64>,
    },
    /// Inside the `bench` part 2b guest only: run part 2 there and print it for the host.
    #[command(name = "l4-guest", hide = true)]
    L4Guest {
        #[arg(long)]
        quick: bool,
    },
    /// Build the coverage-guided fuzz targets of fuzz/ (manifest, path, route, client_hello) on the
    /// stable compiler and run each for SECONDS over its seed corpus (docs/hardening.md).
    Fuzz {
        #[arg(long, default_value = "8")]
        seconds: u64,
    },
    /// Run the XDP program tests (xdp_prog) on other kernels (Debian 6.1, 6.12) under qemu.
    Kernels {
        /// One kernel package, e.g. linux-image-6.1.0-50-cloud-amd64 (default: all of them).
        #[arg(long)]
        kernel: Option<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Test { args } => test(&args),
        Cmd::Demo => demo::run(),
        Cmd::Bench { quick, only, fuzz } => {
            if let Some(seconds) = fuzz {
                fuzz::long(seconds)?;
            }
            bench::run(quick, &only)
        }
        Cmd::L4Guest { quick } => bench::vm::guest(quick),
        Cmd::Kernels { kernel } => kernels::run(kernel),
        Cmd::Fuzz { seconds } => fuzz::run(seconds),
    }
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let st = Command::new(env!("CARGO"))
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !st.success() {
        bail!("cargo {} failed ({st})", args.join(" "));
    }
    Ok(())
}

pub fn require_root() -> Result<()> {
    // Safety: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("this needs root (it loads BPF programs and creates network namespaces): run it as root (`su -` first; or sudo where it is installed)");
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    require_root()?;
    // Lints first: they take seconds on a warm tree, and a warning fails the suite.
    if extra.is_empty() {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
    }
    // The integration tests run the built binaries (gateway, test-backend).
    cargo(&["build", "--workspace", "--bins"])?;
    let mut args = vec!["test", "--workspace", "--no-fail-fast"];
    args.extend(extra.iter().map(String::as_str));
    let tests = cargo(&args);
    if !extra.is_empty() {
        return tests;
    }
    // The whole suite: the XDP program's packet tests again on older kernels (qemu), the fuzz
    // targets for 8 s each (about 25 s once built), and the benchmark harness in its quick mode
    // (proves it works; asserts no timings).
    let kernels = kernels::run(None);
    let fuzzed = fuzz::run(8);
    let bench = bench::run(true, &[]);
    tests?;
    kernels?;
    fuzzed?;
    bench
}
