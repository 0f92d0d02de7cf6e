//! Running commands with a deadline, and long-running children that are killed (by PID) on drop.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// Default deadline of one setup command (`ip`, `ethtool`, ...): they take milliseconds.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `cmd` to completion within `timeout`; the child is killed if it overruns.
pub fn output_timeout(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {what}"))?;
    // Drain pipes in threads so a chatty child cannot block on a full pipe before we wait.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: timed out after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs a program that must succeed; returns its stdout.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = output_timeout(Command::new(program).args(args), CMD_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A long-running child process. Dropping it kills it by PID (SIGKILL) and reaps it.
/// Its stdout, if piped, is read line by line into a channel (see [`ChildGuard::wait_for_line`]).
pub struct ChildGuard {
    child: Option<Child>,
    what: String,
    lines: Option<mpsc::Receiver<String>>,
}

impl ChildGuard {
    /// Spawns `cmd`; with `capture_stdout`, its stdout lines become readable by `wait_for_line`.
    pub fn spawn(mut cmd: Command, capture_stdout: bool) -> anyhow::Result<Self> {
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::null());
        if capture_stdout {
            cmd.stdout(Stdio::piped());
        }
        let mut child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
        let lines = child.stdout.take().map(|out| {
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        Ok(ChildGuard {
            child: Some(child),
            what,
            lines,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for a stdout line equal to `want`; fails if the child exits or the deadline passes.
    pub fn wait_for_line(&mut self, want: &str, timeout: Duration) -> anyhow::Result<()> {
        let rx = self.lines.as_ref().context("stdout not captured")?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.trim() == want => return Ok(()),
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("{}: no `{want}` within {timeout:?}", self.what)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = self.try_wait()?;
                    bail!(
                        "{}: stdout closed before `{want}` (exit status {st:?})",
                        self.what
                    )
                }
            }
        }
    }

    /// The stdout lines printed since the last call (without waiting).
    pub fn take_lines(&mut self) -> Vec<String> {
        self.lines
            .as_ref()
            .map(|rx| rx.try_iter().collect())
            .unwrap_or_default()
    }

    /// Waits for the child to exit within `timeout` and returns its captured stdout; fails if
    /// it exits unsuccessfully.
    pub fn wait_output(mut self, timeout: Duration) -> anyhow::Result<String> {
        let st = self.wait_timeout(timeout)?;
        let mut out = String::new();
        if let Some(rx) = self.lines.take() {
            for l in rx.try_iter() {
                out.push_str(&l);
                out.push('\n');
            }
        }
        anyhow::ensure!(st.success(), "{}: {st}\n{out}", self.what);
        Ok(out)
    }

    /// The exit status if the child has exited.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("{}: already reaped", self.what),
        }
    }

    /// Sends `sig` to the child's PID (only ours, never by name).
    pub fn signal(&self, sig: libc::c_int) -> anyhow::Result<()> {
        let pid = self.pid().context("no child")?;
        // Safety: kill(2) on the PID of a child we have not reaped yet, so it cannot be recycled.
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for exit within `timeout`; on overrun kills it and fails.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            if Instant::now() > deadline {
                self.kill();
                bail!("{}: did not exit within {timeout:?} (killed)", self.what);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap, if still there.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill(); // by PID: std sends SIGKILL to this child only
            }
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The resident memory of process `pid`, in KiB (VmRSS from /proc).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))
}
