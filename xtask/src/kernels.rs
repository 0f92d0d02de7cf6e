//! `cargo xtask kernels`: run the XDP program's packet-level tests (gateway-userspace/tests/xdp_prog.rs)
//! on other kernels than the host's, each booted under qemu (software emulation, TCG; see
//! `crate::qemu`) from a busybox initramfs that holds the test binary, iproute2's `ip`, their
//! shared libraries and the kernel modules the tests need. Proves the program passes those
//! kernels' verifiers and behaves the same.
//!
//! Everything lives under target/kernels/: the unpacked kernel packages (kept as a cache), one
//! initramfs per kernel and the serial console log of each boot (`<version>.log`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::qemu::{self, Initramfs};

/// Debian kernel packages checked by default (the host's own kernel is covered by `cargo xtask test`).
pub const KERNELS: &[&str] = &[
    "linux-image-6.1.0-50-cloud-amd64",
    "linux-image-6.12.117+deb12-cloud-amd64",
];

/// Kernel modules the tests need (`ip link add ... type veth`); their dependencies are added.
const MODULES: &[&str] = &["veth"];

/// Wall-clock limit for one boot plus test run; TCG is slow (47 fixtures took 504 s on 6.1 on
/// a loaded 2-core machine, 420 s on a quiet one).
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

/// The line /init prints after the tests, followed by their exit code.
const MARKER: &str = "XTASK-KERNELS-EXIT=";

struct Outcome {
    kernel: String,
    pass: bool,
    summary: String,
    secs: u64,
}

pub fn run(only: Option<String>) -> Result<()> {
    let kernels: Vec<String> = match only {
        Some(k) if k.starts_with("linux-image-") => vec![k],
        Some(k) => vec![format!("linux-image-{k}")],
        None => KERNELS.iter().map(|s| s.to_string()).collect(),
    };
    let dir = qemu::kernels_dir()?;

    qemu::install_host_tools(&[])?;
    let test_bin = build_test_binary(&dir)?;

    let mut outcomes = Vec::new();
    for pkg in &kernels {
        let version = pkg.trim_start_matches("linux-image-").to_string();
        let started = Instant::now();
        let (pass, summary) = match check_kernel(&dir, pkg, &version, &test_bin) {
            Ok(r) => r,
            Err(e) => (false, format!("error: {e:#}")),
        };
        let secs = started.elapsed().as_secs();
        println!(
            "== {version}: {} ({secs} s): {summary}",
            if pass { "PASS" } else { "FAIL" }
        );
        outcomes.push(Outcome {
            kernel: version,
            pass,
            summary,
            secs,
        });
    }

    let w = outcomes
        .iter()
        .map(|o| o.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!("\n{:<w$}  result  time   tests", "kernel");
    for o in &outcomes {
        println!(
            "{:<w$}  {:<6}  {:>4} s  {}",
            o.kernel,
            if o.pass { "pass" } else { "FAIL" },
            o.secs,
            o.summary
        );
    }
    let failed = outcomes.iter().filter(|o| !o.pass).count();
    if failed > 0 {
        bail!("{failed} kernel(s) failed; logs in {}", dir.display());
    }
    Ok(())
}

/// Fetches and unpacks the kernel (cached), builds its initramfs, boots it and reads the verdict.
fn check_kernel(dir: &Path, pkg: &str, version: &str, test_bin: &Path) -> Result<(bool, String)> {
    let root = qemu::fetch_kernel(dir, pkg, version)?;
    let vmlinuz = root.join(format!("boot/vmlinuz-{version}"));
    let initramfs = dir.join(format!("{version}.initramfs.cpio.gz"));
    build_initramfs(&root, version, test_bin, &initramfs)?;
    let log = dir.join(format!("{version}.log"));
    println!(
        "== {version}: booting under qemu (TCG), log in {}",
        log.display()
    );
    let timed_out = qemu::boot(&qemu::Boot {
        vmlinuz: &vmlinuz,
        initramfs: &initramfs,
        log: &log,
        mem_mib: 1024,
        cpus: 2,
        // Correctness runs: no MTTCG code-patching races.
        mttcg: false,
        timeout: BOOT_TIMEOUT,
        append: "",
    })?;
    let text = qemu::read_log(&log)?;
    let summary = text
        .lines()
        .rfind(|l| l.contains("test result:"))
        .map(|l| l.trim().to_string());
    let code = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(MARKER))
        .and_then(|c| c.trim().parse::<i32>().ok());
    let pass =
        !timed_out && code == Some(0) && summary.as_deref().is_some_and(|s| s.contains("ok."));
    if !pass {
        println!("---- tail of {} ----", log.display());
        println!("{}", qemu::log_tail(&text, 80));
        println!("----");
    }
    let summary = match (timed_out, code, summary) {
        (true, _, s) => format!(
            "timed out after {} s{}",
            BOOT_TIMEOUT.as_secs(),
            s.map(|s| format!(" ({s})")).unwrap_or_default()
        ),
        (_, None, _) => "no exit marker (the VM did not reach the end of /init)".into(),
        (_, Some(0), Some(s)) => s,
        (_, Some(c), s) => format!(
            "exit {c}: {}",
            s.unwrap_or_else(|| "no test summary".into())
        ),
    };
    Ok((pass, summary))
}

/// Builds the xdp_prog test binary and returns a copy stripped of debug info (smaller initramfs).
fn build_test_binary(dir: &Path) -> Result<PathBuf> {
    println!("building the xdp_prog test binary");
    let out = Command::new(env!("CARGO"))
        .args([
            "test",
            "-p",
            "gateway-userspace",
            "--test",
            "xdp_prog",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(qemu::workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the xdp_prog test binary failed ({})", out.status);
    }
    let mut exe = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["target"]["name"] == "xdp_prog" {
            if let Some(p) = v["executable"].as_str() {
                exe = Some(PathBuf::from(p));
            }
        }
    }
    let exe = exe.context("cargo reported no xdp_prog test executable")?;
    qemu::stripped_copy(&exe, dir, "xdp_prog")
}

/// The initramfs: the test binary at /xdp_prog, run by /init one test at a time.
fn build_initramfs(root: &Path, version: &str, test_bin: &Path, out: &Path) -> Result<()> {
    let mut img = Initramfs::new()?;
    img.binary(test_bin, "xdp_prog")?;
    img.modules(root, version, MODULES)?;
    let body = format!(
        r#"echo "== kernel $(uname -r), $(nproc) CPUs"
cd /tmp
RUST_BACKTRACE=1 /xdp_prog --test-threads=1
echo "{MARKER}$?""#
    );
    img.write(&body, out)
}
