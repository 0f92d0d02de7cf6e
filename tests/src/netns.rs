//! Network namespaces owned by a test.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use anyhow::{bail, Context as _};

use crate::proc::{run, ChildGuard};

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name prefix unique to this process and call: `gw` + 2-char tag + pid (hex) + counter (hex).
/// At most 12 characters, so a 3-character suffix still fits an interface name; tests running in
/// parallel (and other processes running these tests) never collide.
pub fn unique_prefix(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(2)
        .collect();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("gw{tag}{:x}{:x}", std::process::id(), n % 256)
}

/// `ip netns add NAME`; deleted on drop (links inside go with it).
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            name.len() <= IFNAME_MAX,
            "netns name {name:?} longer than {IFNAME_MAX}"
        );
        run("ip", &["netns", "add", name])?;
        Ok(Netns {
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that `nsenter --net=` and `setns` take.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs a command inside (`ip netns exec`); it must succeed; returns stdout.
    pub fn exec(&self, cmd: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(cmd);
        run("ip", &args)
    }

    /// `ip -n NAME ARGS...`: iproute2 inside the namespace without a process switch.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Starts a long-running process inside. `ip netns exec` execs the program in place, so the
    /// guard's PID is the program's own and kill-by-PID reaches it.
    pub fn spawn(
        &self,
        program: &str,
        args: &[&str],
        capture_stdout: bool,
    ) -> anyhow::Result<ChildGuard> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name.as_str(), program])
            .args(args);
        ChildGuard::spawn(cmd, capture_stdout)
    }

    /// Runs `f` on a fresh thread that has joined this namespace (`setns(CLONE_NEWNET)`). Sockets
    /// created there belong to the namespace for life, so they may be returned and used anywhere.
    pub fn run_in<F, R>(&self, f: F) -> anyhow::Result<R>
    where
        F: FnOnce() -> anyhow::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        run_in_path(self.path(), f)
    }
}

/// [`Netns::run_in`] by namespace path (for holders that keep only the path).
pub fn run_in_path<F, R>(path: PathBuf, f: F) -> anyhow::Result<R>
where
    F: FnOnce() -> anyhow::Result<R> + Send + 'static,
    R: Send + 'static,
{
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let h =
        thread::Builder::new()
            .name(format!("in-{name}"))
            .spawn(move || -> anyhow::Result<R> {
                let f_ns =
                    File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                // Safety: setns on a valid fd; affects only this (new, short-lived) thread.
                if unsafe { libc::setns(f_ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!(
                        "setns {}: {}",
                        path.display(),
                        std::io::Error::last_os_error()
                    );
                }
                f()
            })?;
    match h.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("warning: deleting netns {}: {e:#}", self.name);
        }
    }
}
