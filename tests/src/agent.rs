//! The agent under test: the real `gateway` binary, run in the node namespace.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::{
    gateway_bin,
    netns::run_in_path,
    proc::{output_timeout, run, ChildGuard, CMD_TIMEOUT},
    topology::Topology,
};

/// How long the agent may take to load, attach and answer /ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Agent {
    child: Option<ChildGuard>,
    /// The admin path whose 200 means started: `/ready`, or `/healthz/live` for an agent that
    /// is expected to serve without being ready (no config applied).
    started_path: &'static str,
    bin: PathBuf,
    /// `/run/netns/<node>`, for the admin requests and the CLI.
    node_ns: PathBuf,
    /// The node namespace's name: the agent is started with `ip netns exec NAME`, as a user
    /// would, which also gives it a private mount namespace without the host's bpffs (the
    /// agent must find the host's to keep its pins across restarts).
    node_name: String,
    ifaces: Vec<String>,
    /// The L4 path the agent must report once ready ("xdp" or "userspace").
    expect_path: &'static str,
    pub pin_root: PathBuf,
    pub admin: SocketAddr,
    extra_args: Vec<String>,
    /// Run as this non-root uid/gid with only these capabilities (the DaemonSet's privilege
    /// set), instead of as root.
    unprivileged: Option<Unprivileged>,
    /// Read the objects from this API server (`--kubernetes --kubeconfig FILE`) instead of
    /// the config directory.
    kubeconfig: Option<PathBuf>,
    /// The running process's own admin socket (`--admin-socket`; one per launch, as each pod
    /// of a surge upgrade has its own emptyDir).
    socket: PathBuf,
    launches: u32,
    /// Holds `config/` (watched by the agent), `stage/` (files are written there and renamed in,
    /// so the agent never reads half a file), `run/` (the admin sockets) and `agent.log`.
    dir: tempfile::TempDir,
}

impl Agent {
    /// Writes `files` (name, YAML) as the config and starts the agent with XDP on every node
    /// interface; returns once /ready answers and the L4 path is XDP.
    pub fn start(topo: &Topology, files: &[(&str, String)]) -> anyhow::Result<Agent> {
        Self::start_with(topo, files, &[])
    }

    /// Like [`Agent::start`], with extra `gateway run` flags.
    pub fn start_with(
        topo: &Topology,
        files: &[(&str, String)],
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        let ifaces = topo.node_ifaces();
        let ifaces: Vec<&str> = ifaces.iter().map(String::as_str).collect();
        Self::start_on(topo, files, &ifaces, extra, "xdp")
    }

    /// Starts the agent with the given interfaces (none: userspace L4 path) and expects it to
    /// report `expect_path` ("xdp" or "userspace") as its L4 path.
    pub fn start_on(
        topo: &Topology,
        files: &[(&str, String)],
        ifaces: &[&str],
        extra: &[&str],
        expect_path: &'static str,
    ) -> anyhow::Result<Agent> {
        let mut agent = Self::prepare(topo, files, ifaces, extra, expect_path)?;
        agent.spawn()?;
        Ok(agent)
    }

    /// Writes the config; does not start the process.
    fn prepare(
        topo: &Topology,
        files: &[(&str, String)],
        ifaces: &[&str],
        extra: &[&str],
        expect_path: &'static str,
    ) -> anyhow::Result<Agent> {
        let bin = gateway_bin()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", topo.prefix))
            .tempdir()?;
        fs::create_dir(dir.path().join("config"))?;
        fs::create_dir(dir.path().join("stage"))?;
        fs::create_dir(dir.path().join("run"))?;
        {
            // Writable by an unprivileged agent too (start_unprivileged).
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(dir.path().join("run"), fs::Permissions::from_mode(0o1777))?;
        }
        let admin = topo
            .node
            .run_in(|| Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?))?;
        let agent = Agent {
            child: None,
            started_path: "/ready",
            bin,
            node_ns: topo.node.path(),
            node_name: topo.node.name().to_string(),
            ifaces: ifaces.iter().map(|s| s.to_string()).collect(),
            expect_path,
            pin_root: PathBuf::from(format!("/sys/fs/bpf/gwtest-{}", topo.prefix)),
            admin,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            unprivileged: None,
            kubeconfig: None,
            socket: PathBuf::new(),
            launches: 0,
            dir,
        };
        agent.write_config(files)?;
        Ok(agent)
    }

    /// Like [`Agent::start_with`], but returns once the agent is alive, ready or not (a config
    /// that `--strict` rejects leaves it serving nothing, not ready).
    pub fn start_unready(
        topo: &Topology,
        files: &[(&str, String)],
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        let ifaces = topo.node_ifaces();
        let ifaces: Vec<&str> = ifaces.iter().map(String::as_str).collect();
        let mut agent = Self::prepare(topo, files, &ifaces, extra, "xdp")?;
        agent.started_path = "/healthz/live";
        agent.spawn()?;
        Ok(agent)
    }

    /// Like [`Agent::start_with`], but the agent runs as `who` (a non-root uid with only the
    /// listed capabilities, as the DaemonSet runs it), not as root.
    pub fn start_unprivileged(
        topo: &Topology,
        files: &[(&str, String)],
        extra: &[&str],
        who: Unprivileged,
    ) -> anyhow::Result<Agent> {
        let ifaces = topo.node_ifaces();
        let ifaces: Vec<&str> = ifaces.iter().map(String::as_str).collect();
        // Don't spawn yet: the config directory must first be readable by that uid.
        let mut agent = Self::prepare(topo, files, &ifaces, extra, "xdp")?;
        // The image's binary carries the capabilities as file capabilities (`setcap ... +ep`,
        // deploy/Dockerfile): a copy here gets the same, so the test runs what the pod runs.
        let bin = agent.dir.path().join("gateway");
        fs::copy(&agent.bin, &bin)?;
        let caps = who
            .caps
            .iter()
            .map(|c| format!("cap_{c}"))
            .collect::<Vec<_>>()
            .join(",");
        run("setcap", &[&format!("{caps}+ep"), &bin.to_string_lossy()])?;
        agent.bin = bin;
        agent.unprivileged = Some(who);
        // tempfile makes 0700 directories; the agent's user reads the config (as it would a
        // ConfigMap volume) but owns nothing of it.
        use std::os::unix::fs::PermissionsExt as _;
        for d in [agent.dir.path().to_path_buf(), agent.config_dir()] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
        }
        for e in fs::read_dir(agent.config_dir())? {
            fs::set_permissions(e?.path(), fs::Permissions::from_mode(0o644))?;
        }
        agent.spawn()?;
        Ok(agent)
    }

    /// Starts the agent with XDP on every node interface reading its objects from the API
    /// server of `api` (`gateway run --kubernetes --kubeconfig FILE`); returns once ready.
    pub fn start_kubernetes(
        topo: &Topology,
        api: &crate::apiserver::ApiServer,
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        let ifaces = topo.node_ifaces();
        let ifaces: Vec<&str> = ifaces.iter().map(String::as_str).collect();
        let mut agent = Self::prepare(topo, &[], &ifaces, extra, "xdp")?;
        agent.kubeconfig = Some(api.kubeconfig(agent.dir.path())?);
        agent.spawn()?;
        Ok(agent)
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the process (same flags, same pin root) and waits until it is ready.
    fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "agent already running");
        let (child, socket) = self.launch_next()?;
        self.child = Some(child);
        self.socket = socket;
        self.wait_ready()
    }

    /// A hand-over, as a surge upgrade does it: the next agent (same flags, config and pins) is
    /// started while this one still runs and shares its ports; once the new one has applied its
    /// first generation, the old one gets SIGTERM (its drain) and is waited for.
    pub fn replace(&mut self) -> anyhow::Result<()> {
        let mut old = self.child.take().context("agent not running")?;
        let from = fs::metadata(self.log_path())?.len() as usize;
        let (mut new, socket) = self.launch_next()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = self.log();
            if log
                .get(from..)
                .is_some_and(|l| l.contains("applied generation"))
            {
                break;
            }
            if let Some(st) = new.try_wait()? {
                self.child = Some(old);
                bail!(
                    "the next agent exited ({st}) beside the running one; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                self.child = Some(old);
                bail!(
                    "the next agent applied nothing within {READY_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        old.signal(libc::SIGTERM)?;
        let st = old.wait_timeout(STOP_TIMEOUT)?;
        self.child = Some(new);
        self.socket = socket;
        anyhow::ensure!(
            st.success(),
            "the old agent exited with {st}; log:\n{}",
            self.log()
        );
        self.wait_ready()
    }

    /// Starts the next agent process (same flags, config and pins; its own admin socket)
    /// beside any running one; does not wait. Returns it and its admin socket.
    pub fn launch_next(&mut self) -> anyhow::Result<(ChildGuard, PathBuf)> {
        self.launches += 1;
        let socket = self
            .dir
            .path()
            .join("run")
            .join(format!("admin-{}.sock", self.launches));
        Ok((self.launch(&socket)?, socket))
    }

    /// Makes `child` (from [`Agent::launch_next`]) the agent this value owns and stops with;
    /// returns the process it owned before, if any.
    pub fn adopt(&mut self, child: ChildGuard, socket: PathBuf) -> Option<ChildGuard> {
        self.socket = socket;
        self.child.replace(child)
    }

    /// The running process's own admin socket (`gateway ... --admin unix:PATH`).
    pub fn own_socket(&self) -> &Path {
        &self.socket
    }

    /// Starts the agent process; does not wait.
    fn launch(&self, socket: &Path) -> anyhow::Result<ChildGuard> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd;
        if self.unprivileged.is_some() {
            // As in the pod: only the network namespace differs, the host's /sys/fs/bpf stays
            // visible (the DaemonSet mounts it as a hostPath volume).
            cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", self.node_ns.display()));
        } else {
            cmd = Command::new("ip");
            cmd.args(["netns", "exec", &self.node_name]);
        }
        if let Some(who) = &self.unprivileged {
            // As in the image: a non-root uid whose bounding set holds only `caps`, running a
            // binary that carries them as file capabilities (see start_unprivileged).
            let caps = who
                .caps
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(",");
            cmd.args([
                "setpriv",
                &format!("--reuid={}", who.uid),
                &format!("--regid={}", who.uid),
                "--clear-groups",
                "--inh-caps=-all",
                &format!("--bounding-set=-all,{caps}"),
                "--",
            ]);
        }
        cmd.arg(&self.bin).arg("run");
        match &self.kubeconfig {
            Some(k) => cmd.arg("--kubernetes").arg("--kubeconfig").arg(k),
            None => cmd.arg("--config").arg(self.config_dir()),
        };
        for i in &self.ifaces {
            cmd.args(["--iface", i]);
        }
        cmd.arg("--pin-root")
            .arg(&self.pin_root)
            .args(["--admin", &self.admin.to_string()])
            .arg("--admin-socket")
            .arg(socket)
            .args(&self.extra_args);
        if !self.extra_args.iter().any(|a| a == "--reload-ms") {
            cmd.args(["--reload-ms", "200"]);
        }
        // A short drain at SIGTERM (the default is Istio's 5 s), as an operator sets
        // terminationDrainDuration; tests that check the drain set their own.
        if !self.extra_args.iter().any(|a| a == "--drain-duration") {
            cmd.args(["--drain-duration", "300ms"]);
        }
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        // nsenter without --fork and `ip netns exec` exec the agent in place: the guard's PID
        // is the agent's.
        ChildGuard::spawn(cmd, false)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .context("agent not running")?
                .try_wait()?
            {
                self.child = None;
                bail!("agent exited before ready ({st}); log:\n{}", self.log());
            }
            if let Ok((200, _)) = self.get(self.started_path) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "agent not ready within {READY_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The userspace fallback would also pass the traffic tests: check which path is active.
        let dump = self.config_dump()?;
        anyhow::ensure!(
            dump["l4_path"] == self.expect_path,
            "agent runs L4 on {:?}, not {}: {}",
            dump["l4_path"],
            self.expect_path,
            dump["l4_path_reason"]
        );
        Ok(())
    }

    /// `GET path` on the admin endpoint (from inside the node namespace): (status, body).
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.get_at(self.admin, path)
    }

    /// GET `path` on any address in the node namespace (the status and metrics ports).
    pub fn get_at(&self, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
        self.request_at(addr, "GET", path)
    }

    /// Runs `gateway ARGS` in the agent's network namespace (the CLI that talks to it), with
    /// `--admin` pointing at this agent.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(Command::new("nsenter")
            .arg(format!("--net={}", self.node_ns.display()))
            .arg(&self.bin)
            .args(args)
            .args(["--admin", &self.admin.to_string()])
            .output()?)
    }

    /// Runs `gateway ARGS --admin ADMIN` in the agent's network namespace: `ADMIN` is
    /// `unix:PATH` for one process's own socket (see [`Agent::own_socket`]).
    pub fn cli_at(&self, admin: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(Command::new("nsenter")
            .arg(format!("--net={}", self.node_ns.display()))
            .arg(&self.bin)
            .args(args)
            .args(["--admin", admin])
            .output()?)
    }

    /// POST `path` (no body) on the admin port.
    pub fn post(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.request_at(self.admin, "POST", path)
    }

    fn request_at(
        &self,
        addr: SocketAddr,
        method: &'static str,
        path: &str,
    ) -> anyhow::Result<(u16, String)> {
        let (path, path_for_err) = (path.to_string(), path.to_string());
        run_in_path(self.node_ns.clone(), move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.set_write_timeout(Some(Duration::from_secs(5)))?;
            // One write: the agent's admin server parses whatever its first read() returns.
            let req = format!("{method} {path} HTTP/1.1\r\nHost: gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes())?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            let status = resp
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("bad HTTP response: {resp:?}"))?;
            let body = resp
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
            Ok((status, body))
        })
        .with_context(|| format!("GET {path} on the agent's {addr}", path = path_for_err,))
    }

    /// GET `path` on the admin port as JSON.
    pub fn get_json_at(&self, path: &str) -> anyhow::Result<Value> {
        self.get_json(path)
    }

    fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.get(path)?;
        anyhow::ensure!(status == 200, "GET {path}: HTTP {status}: {body}");
        serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
    }

    /// `/stats`: `{services: {..}, backends: {"ip:port": {packets, bytes}}, verdicts: {name: {..}}}`.
    pub fn stats(&self) -> anyhow::Result<Value> {
        self.get_json("/stats")
    }

    pub fn config_dump(&self) -> anyhow::Result<Value> {
        self.get_json("/config_dump")
    }

    pub fn generation(&self) -> anyhow::Result<u64> {
        self.config_dump()?["generation"]
            .as_u64()
            .context("config_dump without generation")
    }

    /// Packets counted for a verdict (`pass_not_ours`, `fwd_new`, ...).
    pub fn verdict_packets(&self, verdict: &str) -> anyhow::Result<u64> {
        let st = self.stats()?;
        st["verdicts"][verdict]["packets"]
            .as_u64()
            .with_context(|| format!("no verdict {verdict} in /stats: {st}"))
    }

    /// Waits until the config generation exceeds `than` (a reload was applied).
    pub fn wait_generation_above(&self, than: u64, timeout: Duration) -> anyhow::Result<u64> {
        let mut last = 0;
        crate::wait_until(timeout, "config generation to increase", || {
            last = self.generation()?;
            Ok(last > than)
        })
        .with_context(|| format!("generation still {last}; log:\n{}", self.log()))?;
        Ok(last)
    }

    /// Replaces config files (each written beside the directory, then renamed in).
    pub fn write_config(&self, files: &[(&str, String)]) -> anyhow::Result<()> {
        for (name, content) in files {
            let staged = self.dir.path().join("stage").join(name);
            fs::write(&staged, content)?;
            fs::rename(&staged, self.config_dir().join(name))?;
        }
        Ok(())
    }

    /// SIGTERM and wait: the agent exits keeping its pins (the XDP path keeps forwarding).
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("agent not running")?;
        child.signal(libc::SIGTERM)?;
        child.wait_timeout(STOP_TIMEOUT)
    }

    /// Starts the agent again with the same config dir and pin root (stopping it first if needed).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.spawn()
    }

    /// Replaces the extra `gateway run` flags used by the next [`Agent::restart`].
    pub fn set_extra_args(&mut self, extra: &[&str]) {
        self.extra_args = extra.iter().map(|s| s.to_string()).collect();
    }

    /// The agent's PID (ip netns exec, nsenter and setpriv exec it in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(ChildGuard::pid)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

/// A non-root identity for the agent: uid (used as gid too) and capability names as setpriv
/// spells them (`bpf`, `net_admin`, ...).
#[derive(Clone, Debug)]
pub struct Unprivileged {
    pub uid: u32,
    pub caps: Vec<&'static str>,
}

impl Unprivileged {
    /// `nobody` with the capabilities deploy/ grants the DaemonSet.
    pub fn daemonset() -> Self {
        Unprivileged {
            uid: 65534,
            caps: vec!["bpf", "net_admin", "perfmon", "net_bind_service"],
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
        // Removing the pins detaches the XDP program and frees the maps.
        let pin_root = self.pin_root.to_string_lossy().into_owned();
        let bin = self.bin.to_string_lossy().into_owned();
        if let Err(e) = run(&bin, &["cleanup", "--pin-root", &pin_root]) {
            eprintln!("warning: {e:#}");
        }
        if self.pin_root.exists() {
            eprintln!(
                "warning: {} still exists after `gateway cleanup`; removing it",
                self.pin_root.display()
            );
            let _ = fs::remove_dir_all(&self.pin_root);
        }
        // Captured by the test harness: shown only when the test fails.
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        eprintln!("---- agent log (last {} lines) ----", tail.len());
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
    }
}

/// `gateway check DIR`: (exit status success, stdout, stderr). Touches no kernel state.
pub fn gateway_check(dir: &Path) -> anyhow::Result<(bool, String, String)> {
    let out = output_timeout(
        Command::new(gateway_bin()?).arg("check").arg(dir),
        CMD_TIMEOUT,
    )?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The `rejected` list of a `/config_dump`: one string per object admission left out.
pub fn rejected(dump: &Value) -> Vec<String> {
    dump["rejected"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for the access log line of the request to `path` in `log` and returns it.
pub fn access_log_line(log: &Path, path: &str) -> anyhow::Result<String> {
    let needle = format!("\"GET {path} HTTP/1.1\"");
    let mut found = None;
    crate::wait_until(Duration::from_secs(5), "the access log line", || {
        found = std::fs::read_to_string(log)?
            .lines()
            .find(|l| l.contains(&needle))
            .map(str::to_string);
        Ok(found.is_some())
    })?;
    found.context("access log line")
}
