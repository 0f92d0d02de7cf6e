//! Test support for the gateway's end-to-end tests: network-namespace topologies with veth links,
//! test backends, the agent binary under test, and clients that live in a namespace.
//!
//! Everything a test creates (namespaces, links, processes, bpffs pins, temp dirs) is owned by an
//! RAII value and removed on drop, also when the test panics. Processes are only ever stopped by
//! their own PID.

pub mod agent;
pub mod apiserver;
pub mod client;
pub mod http;
pub mod manifests;
pub mod netns;
pub mod proc;
pub mod session;
pub mod tls;
pub mod topology;

pub use agent::Agent;
pub use netns::Netns;
pub use proc::ChildGuard;
pub use topology::{Opts, Topology};

use std::path::PathBuf;

/// Fails (never skips) when not root: these tests create namespaces, load XDP and pin in bpffs.
pub fn require_root() -> anyhow::Result<()> {
    // Safety: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    anyhow::ensure!(
        euid == 0,
        "the gateway end-to-end tests need root (network namespaces, XDP, bpffs); running as uid {euid}. \
         Run them as root, e.g. `sudo -E cargo test -p gateway-tests`."
    );
    Ok(())
}

/// The agent binary under test: `$GATEWAY_BIN`, else the workspace's `target/debug/gateway`.
pub fn gateway_bin() -> anyhow::Result<PathBuf> {
    let p = match std::env::var_os("GATEWAY_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/gateway"),
    };
    anyhow::ensure!(
        p.is_file(),
        "gateway binary not found at {} (build it with `cargo build -p gateway-userspace`, or set GATEWAY_BIN)",
        p.display()
    );
    Ok(p)
}

/// The `test-backend` binary of this crate. Cargo builds a package's binaries before running its
/// integration tests, next to `deps/` where the test executable lives (the place
/// `CARGO_BIN_EXE_*` points at, which only test targets can see). `$TEST_BACKEND_BIN` overrides.
pub fn test_backend_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TEST_BACKEND_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("test-backend"));
        if let Some(up) = dir.parent() {
            candidates.push(up.join("test-backend"));
        }
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/test-backend"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("test-backend binary not found (looked at {candidates:?}); `cargo build -p gateway-tests --bins`"))
}

/// Polls `cond` every 50 ms until it returns true; fails after `timeout` or on its first error.
pub fn wait_until(
    timeout: std::time::Duration,
    what: &str,
    mut cond: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond()? {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
