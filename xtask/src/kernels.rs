//! `cargo xtask kernels`: run the XDP program's packet-level tests (gateway-userspace/tests/xdp_prog.rs)
//! on other kernels than the host's, each booted under qemu (software emulation, TCG) from a busybox
//! initramfs that holds the test binary, iproute2's `ip`, their shared libraries and the kernel
//! modules the tests need. Proves the program passes those kernels' verifiers and behaves the same.
//!
//! Everything lives under target/kernels/: the unpacked kernel packages (kept as a cache), one
//! initramfs per kernel and the serial console log of each boot (`<version>.log`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// Debian kernel packages checked by default (the host's own kernel is covered by `cargo xtask test`).
pub const KERNELS: &[&str] = &[
    "linux-image-6.1.0-50-cloud-amd64",
    "linux-image-6.12.117+deb12-cloud-amd64",
];

/// Kernel modules the tests need (`ip link add ... type veth`); their dependencies are added.
const MODULES: &[&str] = &["veth"];

/// Wall-clock limit for one boot plus test run; TCG is slow.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The line /init prints after the tests, followed by their exit code.
const MARKER: &str = "XTASK-KERNELS-EXIT=";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

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
    let dir = target_dir().join("kernels");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    install_host_tools()?;
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
    let root = fetch_kernel(dir, pkg, version)?;
    let vmlinuz = root.join(format!("boot/vmlinuz-{version}"));
    let initramfs = dir.join(format!("{version}.initramfs.cpio.gz"));
    build_initramfs(&root, version, test_bin, &initramfs)?;
    let log = dir.join(format!("{version}.log"));
    println!(
        "== {version}: booting under qemu (TCG), log in {}",
        log.display()
    );
    let timed_out = boot(&vmlinuz, &initramfs, &log)?;
    let text = String::from_utf8_lossy(&fs::read(&log)?).replace('\r', "");
    let summary = text
        .lines()
        .filter(|l| l.contains("test result:"))
        .last()
        .map(|l| l.trim().to_string());
    let code = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(MARKER))
        .and_then(|c| c.trim().parse::<i32>().ok());
    let pass =
        !timed_out && code == Some(0) && summary.as_deref().is_some_and(|s| s.contains("ok."));
    if !pass {
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(80)..];
        println!("---- tail of {} ----", log.display());
        for l in tail {
            println!("{l}");
        }
        println!("----");
    }
    let summary = match (timed_out, code, summary) {
        (true, _, s) => format!(
            "timed out after {} s{}",
            BOOT_TIMEOUT.as_secs(),
            s.map(|s| format!(" ({s})")).unwrap_or_default()
        ),
        (_, None, _) => "no exit marker (the VM did not reach the end of /init)".into(),
        (_, Some(c), Some(s)) if c == 0 => s,
        (_, Some(c), s) => format!(
            "exit {c}: {}",
            s.unwrap_or_else(|| "no test summary".into())
        ),
    };
    Ok((pass, summary))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// qemu, a static busybox, iproute2 and xz (to unpack compressed modules), installed when missing.
fn install_host_tools() -> Result<()> {
    let mut missing = Vec::new();
    for (tool, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("ip", "iproute2"),
        ("xz", "xz-utils"),
        ("ldd", "libc-bin"),
        ("dash", "dash"),
    ] {
        if which(tool).is_none() {
            missing.push(pkg);
        }
    }
    if busybox_static().is_none() {
        missing.push("busybox-static");
    }
    if missing.is_empty() {
        return Ok(());
    }
    crate::require_root()?;
    println!("installing {}", missing.join(" "));
    run_cmd(
        Command::new("apt-get")
            .args([
                "-o",
                "DPkg::Lock::Timeout=300",
                "install",
                "-y",
                "--no-install-recommends",
            ])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if busybox_static().is_none() {
        bail!("no statically linked busybox after installing busybox-static");
    }
    Ok(())
}

/// A statically linked busybox (busybox-static), which needs no libraries in the initramfs.
fn busybox_static() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            p.is_file()
                && Command::new("ldd")
                    .arg(p)
                    .output()
                    .map(|o| {
                        !o.status.success() || !String::from_utf8_lossy(&o.stdout).contains("=>")
                    })
                    .unwrap_or(false)
        })
}

/// `apt-get download` + `dpkg -x` into target/kernels/<version>/, skipped when already there.
fn fetch_kernel(dir: &Path, pkg: &str, version: &str) -> Result<PathBuf> {
    let root = dir.join(version);
    if root.join(format!("boot/vmlinuz-{version}")).is_file() {
        return Ok(root);
    }
    println!("== {version}: fetching {pkg}");
    let dl = dir.join("download");
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl)?;
    run_cmd(
        Command::new("apt-get")
            .args(["download", pkg])
            .current_dir(&dl),
    )
    .with_context(|| {
        format!(
            "apt-get download {pkg} (is the package name right? try apt-cache search linux-image)"
        )
    })?;
    let deb = fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    let tmp = dir.join(format!("{version}.unpacking"));
    let _ = fs::remove_dir_all(&tmp);
    run_cmd(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
    if !tmp.join(format!("boot/vmlinuz-{version}")).is_file() {
        bail!("{pkg} has no boot/vmlinuz-{version}");
    }
    let _ = fs::remove_dir_all(&root);
    fs::rename(&tmp, &root)?;
    fs::remove_dir_all(&dl)?;
    Ok(root)
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
        .current_dir(workspace_root())
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
    let stripped = dir.join("xdp_prog");
    fs::copy(&exe, &stripped)?;
    // Keeps the symbol table, so backtraces still name functions.
    run_cmd(Command::new("strip").arg("--strip-debug").arg(&stripped))?;
    Ok(stripped)
}

/// The shared libraries (and the loader) an executable needs, as `ldd` lists them.
fn shared_libs(exe: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    if libs.is_empty() {
        bail!("ldd found no libraries for {}: {text}", exe.display());
    }
    Ok(libs)
}

/// The modules in `names` and what they depend on (from each module's .modinfo `depends=`, since
/// the package ships no modules.dep), in load order, as (name, uncompressed contents).
fn modules(root: &Path, version: &str, names: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
    let moddir = root.join("lib/modules").join(version);
    let mut index = BTreeMap::new();
    let mut stack = vec![moddir.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(f) = p.file_name().and_then(|f| f.to_str()) {
                if let Some(stem) = f.strip_suffix(".ko").or_else(|| f.strip_suffix(".ko.xz")) {
                    index.insert(stem.replace('-', "_"), p.clone());
                }
            }
        }
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        let key = name.replace('-', "_");
        if !seen.insert(key.clone()) {
            return Ok(());
        }
        let Some(path) = index.get(&key) else {
            // Not a module: built into this kernel.
            return Ok(());
        };
        let data = if path.extension().is_some_and(|x| x == "xz") {
            // busybox insmod cannot read xz-compressed modules: unpack them here.
            let out = Command::new("xz").arg("-dc").arg(path).output()?;
            if !out.status.success() {
                bail!("xz -d {} failed", path.display());
            }
            out.stdout
        } else {
            fs::read(path)?
        };
        let deps = modinfo(&data, "depends").unwrap_or_default();
        for dep in deps.split(',').filter(|d| !d.is_empty()) {
            visit(dep, index, seen, order)?;
        }
        order.push((key, data));
        Ok(())
    }
    for n in names {
        visit(n, &index, &mut seen, &mut order)?;
    }
    Ok(order)
}

/// A `key=value` string from a module's .modinfo section (NUL-separated strings).
fn modinfo(ko: &[u8], key: &str) -> Option<String> {
    let needle = format!("{key}=");
    ko.split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(needle.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn build_initramfs(root: &Path, version: &str, test_bin: &Path, out: &Path) -> Result<()> {
    let mut cpio = Cpio::default();
    for d in [
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "root",
        "etc",
        "lib/modules",
    ] {
        cpio.dir(d);
    }
    cpio.entry("dev/console", 0o020600, Vec::new(), (5, 1));

    let busybox = busybox_static().context("no static busybox")?;
    cpio.file("bin/busybox", 0o755, fs::read(&busybox)?);
    let list = Command::new(&busybox).arg("--list-full").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        // iproute2's ip (below) instead of busybox's, which knows no veth; and dash as sh, since
        // Debian's busybox sh runs its own applets (its ip among them) before searching PATH.
        if applet.is_empty()
            || applet == "bin/busybox"
            || applet.ends_with("/ip")
            || applet.ends_with("/sh")
        {
            continue;
        }
        cpio.symlink(applet, "/bin/busybox");
    }

    let ip = which("ip").context("no ip (iproute2)")?;
    let dash = which("dash").context("no dash")?;
    let mut libs = BTreeSet::new();
    for exe in [test_bin, ip.as_path(), dash.as_path()] {
        libs.extend(shared_libs(exe)?);
    }
    cpio.file("usr/bin/ip", 0o755, fs::read(&ip)?);
    cpio.file("bin/sh", 0o755, fs::read(&dash)?);
    for lib in &libs {
        let rel = lib.to_string_lossy().trim_start_matches('/').to_string();
        cpio.file(
            &rel,
            0o755,
            fs::read(lib).with_context(|| format!("reading {}", lib.display()))?,
        );
    }
    cpio.file("xdp_prog", 0o755, fs::read(test_bin)?);

    let mods = modules(root, version, MODULES)?;
    let mut insmods = String::new();
    for (name, data) in mods {
        cpio.file(&format!("lib/modules/{name}.ko"), 0o644, data);
        insmods.push_str(&format!(
            "insmod /lib/modules/{name}.ko || echo \"insmod {name} failed\"\n"
        ));
    }

    let init = format!(
        r#"#!/bin/busybox sh
export PATH=/usr/bin:/usr/sbin:/bin:/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# Kernels before 5.11 charge BPF memory to the memlock rlimit.
ulimit -l unlimited
{insmods}echo "== kernel $(uname -r), $(nproc) CPUs"
cd /tmp
RUST_BACKTRACE=1 /xdp_prog --test-threads=1
echo "{MARKER}$?"
poweroff -f
"#
    );
    cpio.file("init", 0o755, init.into_bytes());

    let raw = cpio.finish();
    let mut gz = Command::new("gzip")
        .args(["-1", "-c"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(out)?)
        .spawn()
        .context("running gzip")?;
    gz.stdin.take().unwrap().write_all(&raw)?;
    let st = gz.wait()?;
    if !st.success() {
        bail!("gzip failed ({st})");
    }
    Ok(())
}

/// Boots the kernel with the initramfs, serial console to `log`. Returns whether it timed out.
fn boot(vmlinuz: &Path, initramfs: &Path, log: &Path) -> Result<bool> {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-smp",
            "2",
            "-nographic",
            "-nic",
            "none",
        ])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(log)?)
        .stderr(fs::File::options().append(true).open(log)?)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A newc-format cpio archive, built in memory; parent directories are added as needed.
#[derive(Default)]
struct Cpio {
    entries: BTreeMap<String, (u32, Vec<u8>, (u32, u32))>,
}

impl Cpio {
    fn dir(&mut self, path: &str) {
        let mut acc = String::new();
        for part in path.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            self.entries
                .entry(acc.clone())
                .or_insert((0o040755, Vec::new(), (0, 0)));
        }
    }

    fn entry(&mut self, path: &str, mode: u32, data: Vec<u8>, rdev: (u32, u32)) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries.insert(path.to_string(), (mode, data, rdev));
    }

    fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) {
        self.entry(path, 0o100000 | perm, data, (0, 0));
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, 0o120777, target.as_bytes().to_vec(), (0, 0));
    }

    fn finish(self) -> Vec<u8> {
        fn pad(out: &mut Vec<u8>) {
            while out.len() % 4 != 0 {
                out.push(0);
            }
        }
        fn header(
            out: &mut Vec<u8>,
            ino: u32,
            name: &str,
            mode: u32,
            size: usize,
            rdev: (u32, u32),
        ) {
            let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
            let fields = [
                ino,
                mode,
                0,
                0,
                nlink,
                0,
                size as u32,
                0,
                0,
                rdev.0,
                rdev.1,
                name.len() as u32 + 1,
                0,
            ];
            out.extend_from_slice(b"070701");
            for f in fields {
                out.extend_from_slice(format!("{f:08x}").as_bytes());
            }
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            pad(out);
        }
        let mut out = Vec::new();
        for (i, (name, (mode, data, rdev))) in self.entries.into_iter().enumerate() {
            header(&mut out, i as u32 + 1, &name, mode, data.len(), rdev);
            out.extend_from_slice(&data);
            pad(&mut out);
        }
        header(&mut out, 0, "TRAILER!!!", 0, 0, (0, 0));
        out
    }
}
