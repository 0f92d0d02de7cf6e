//! Small shared pieces: medians, machine conditions, Ctrl-C, peers installed on demand, CPU use.

use std::{
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Context as _};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM set a flag instead of killing the process, so every guard (namespaces,
/// links, pins, child processes) still runs its drop on the way out.
pub fn install_signal_handlers() {
    // Safety: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_signal as extern "C" fn(libc::c_int) as usize,
        );
        libc::signal(
            libc::SIGTERM,
            on_signal as extern "C" fn(libc::c_int) as usize,
        );
    }
}

/// Fails once Ctrl-C was pressed: callers `?` it between steps and in loops.
pub fn check_interrupt() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

/// The machine the figures were taken on.
pub struct Conditions {
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
    pub date: String,
}

pub fn conditions() -> Conditions {
    let kernel = sh_out("uname", &["-r"]).unwrap_or_else(|_| "?".into());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let date = sh_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|_| "?".into());
    Conditions {
        kernel: kernel.trim().into(),
        cpu,
        cores,
        date: date.trim().into(),
    }
}

pub fn sh_out(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A peer tool: present, installed now from its Debian package, or why it is not available.
pub fn ensure_tool(binary: &str, package: &str) -> Result<String, String> {
    if let Some(p) = which(binary) {
        return Ok(p);
    }
    eprintln!("bench: installing Debian package {package} (for {binary})");
    // Packages like haproxy and nginx start a system service on install; the bench runs its
    // own instances in its namespaces, so keep the service off (policy-rc.d, while installing).
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists()
        && std::fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok()
        && Command::new("chmod")
            .args(["+x", "/usr/sbin/policy-rc.d"])
            .status()
            .is_ok();
    let r = apt_install(binary, package);
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    r
}

fn apt_install(binary: &str, package: &str) -> Result<String, String> {
    let st = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(std::process::Stdio::null())
        .status();
    let ok = matches!(st, Ok(s) if s.success());
    if !ok {
        // Maybe the package lists are stale or absent: refresh once and retry.
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null())
            .status();
    }
    which(binary).ok_or_else(|| format!("`apt-get install {package}` did not provide `{binary}`"))
}

pub fn which(binary: &str) -> Option<String> {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ] {
        let p = format!("{dir}/{binary}");
        if std::path::Path::new(&p).is_file() {
            return Some(p);
        }
    }
    None
}

/// Busy and total jiffies of the whole machine (namespaces share the CPUs, so this is the CPU
/// of client, node and backends together).
#[derive(Clone, Copy)]
pub struct CpuSample {
    busy: u64,
    total: u64,
    softirq: u64,
}

pub fn cpu_sample() -> CpuSample {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let idle = get(3) + get(4);
    let total: u64 = f.iter().take(8).sum();
    CpuSample {
        busy: total - idle,
        total,
        softirq: get(6),
    }
}

/// (busy %, softirq %) of all CPUs between two samples; 100% = every core busy.
pub fn cpu_delta(a: CpuSample, b: CpuSample) -> (f64, f64) {
    let t = (b.total - a.total).max(1) as f64;
    (
        100.0 * (b.busy - a.busy) as f64 / t,
        100.0 * (b.softirq - a.softirq) as f64 / t,
    )
}

/// CPU seconds (user + system) a process has used so far.
pub fn proc_cpu(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state(0) ... utime(11) stime(12)
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // Safety: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// Resident set size of a process (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Bytes charged for the BPF maps a process holds open: the `memlock` of every map fd in
/// /proc/PID/fdinfo, counted once per map id.
pub fn bpf_map_memlock(pid: u32) -> (u64, Vec<(String, u64)>) {
    let mut seen = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return (0, Vec::new());
    };
    for e in dir.flatten() {
        let Ok(s) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(str::to_string)
        };
        let (Some(id), Some(mem)) = (field("map_id:"), field("memlock:")) else {
            continue;
        };
        let mem: u64 = mem.parse().unwrap_or(0);
        seen.insert(id, mem);
    }
    let names = map_names();
    let mut v: Vec<(String, u64)> = seen
        .iter()
        .map(|(id, m)| {
            (
                names.get(id).cloned().unwrap_or_else(|| format!("id {id}")),
                *m,
            )
        })
        .collect();
    v.sort_by_key(|b| std::cmp::Reverse(b.1));
    (seen.values().sum(), v)
}

/// map id -> name, from `bpftool map show -j` when bpftool is there.
fn map_names() -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::new();
    if let Ok(out) = sh_out("bpftool", &["map", "show", "-j"]) {
        if let Ok(serde_json::Value::Array(a)) = serde_json::from_str::<serde_json::Value>(&out) {
            for x in a {
                if let (Some(id), Some(name)) = (x["id"].as_u64(), x["name"].as_str()) {
                    m.insert(id.to_string(), name.to_string());
                }
            }
        }
    }
    m
}

pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / 1024.0 / 1024.0 / 1024.0)
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b} B")
    }
}
