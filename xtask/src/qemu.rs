//! Booting Debian's packaged kernels under qemu (software emulation, TCG) from a busybox
//! initramfs built here: shared by `cargo xtask kernels` (the XDP program's tests on other
//! kernels) and `cargo xtask bench` part 2b (L4 against IPVS in a guest whose kernel has it).
//!
//! Kernel packages are fetched with `apt-get download`, unpacked with `dpkg -x` and cached under
//! target/kernels/<version>/; /dev/kvm exists on this machine kind but KVM fails at vCPU set-up,
//! so every guest is emulated.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where kernel packages, initramfs images and boot logs live.
pub fn kernels_dir() -> Result<PathBuf> {
    let dir = target_dir().join("kernels");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// qemu, a static busybox, iproute2, xz (to unpack compressed modules), ldd and dash, plus
/// `extra` (binary, Debian package) pairs, installed when missing.
pub fn install_host_tools(extra: &[(&str, &str)]) -> Result<()> {
    let mut missing = Vec::new();
    for &(tool, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("ip", "iproute2"),
        ("xz", "xz-utils"),
        ("ldd", "libc-bin"),
        ("dash", "dash"),
    ]
    .iter()
    .chain(extra)
    {
        if which(tool).is_none() && !missing.contains(&pkg) {
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
    let install = |pkgs: &[&str]| {
        run_cmd(
            Command::new("apt-get")
                .args([
                    "-o",
                    "DPkg::Lock::Timeout=300",
                    "install",
                    "-y",
                    "--no-install-recommends",
                ])
                .args(pkgs)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install(&missing).is_err() {
        // A fresh machine may have stale or no package lists: refresh once and retry.
        run_cmd(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=300", "update"]))?;
        install(&missing)?;
    }
    if busybox_static().is_none() {
        bail!("no statically linked busybox after installing busybox-static");
    }
    Ok(())
}

/// A statically linked busybox (busybox-static), which needs no libraries in the initramfs.
pub fn busybox_static() -> Option<PathBuf> {
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
/// Returns the unpacked root (boot/vmlinuz-<version>, lib/modules/<version>/).
pub fn fetch_kernel(dir: &Path, pkg: &str, version: &str) -> Result<PathBuf> {
    let root = dir.join(version);
    if root.join(format!("boot/vmlinuz-{version}")).is_file() {
        return Ok(root);
    }
    println!("== {version}: fetching {pkg}");
    let dl = dir.join("download");
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl)?;
    let download = || {
        run_cmd(
            Command::new("apt-get")
                .args(["download", pkg])
                .current_dir(&dl),
        )
    };
    if download().is_err() {
        // Stale package lists name versions the mirror no longer has: refresh once and retry.
        run_cmd(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=300", "update"]))?;
        download().with_context(|| {
            format!(
                "apt-get download {pkg} (is the package name right? try apt-cache search linux-image)"
            )
        })?;
    }
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

/// A copy of `exe` under `dir` stripped of debug info (smaller initramfs); the symbol table
/// stays, so backtraces still name functions.
pub fn stripped_copy(exe: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let out = dir.join(name);
    fs::copy(exe, &out).with_context(|| format!("copying {}", exe.display()))?;
    run_cmd(Command::new("strip").arg("--strip-debug").arg(&out))?;
    Ok(out)
}

/// The shared libraries (and the loader) an executable needs, as `ldd` lists them.
pub fn shared_libs(exe: &Path) -> Result<Vec<PathBuf>> {
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
/// the package ships no modules.dep), in load order, as (name, uncompressed contents). A name
/// with no module file is taken as built into the kernel.
pub fn modules(root: &Path, version: &str, names: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
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

/// An initramfs under construction: busybox (every applet a symlink, except where a real binary
/// was added under the same name), dash as /bin/sh, iproute2's `ip`, the added executables with
/// their shared libraries, and kernel modules loaded by /init before its body runs.
pub struct Initramfs {
    cpio: Cpio,
    libs: BTreeSet<PathBuf>,
    /// Basenames of real binaries added: busybox's applets of those names are left out.
    provided: BTreeSet<String>,
    insmods: String,
}

impl Initramfs {
    pub fn new() -> Result<Self> {
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
        let mut me = Initramfs {
            cpio,
            libs: BTreeSet::new(),
            provided: BTreeSet::new(),
            insmods: String::new(),
        };
        // iproute2's ip instead of busybox's, which knows no veth; and dash as sh, since
        // Debian's busybox sh runs its own applets (its ip among them) before searching PATH.
        me.host_binary("ip")?;
        let dash = which("dash").context("no dash")?;
        me.binary(&dash, "bin/sh")?;
        Ok(me)
    }

    /// Adds the executable `host` at `at` (a path inside, without the leading /), with its
    /// shared libraries.
    pub fn binary(&mut self, host: &Path, at: &str) -> Result<()> {
        self.libs.extend(shared_libs(host)?);
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.cpio.file(at, 0o755, data);
        if let Some(name) = Path::new(at).file_name() {
            self.provided.insert(name.to_string_lossy().into_owned());
        }
        Ok(())
    }

    /// Adds a host tool found on PATH at the same path inside (symlinks resolved, so an
    /// alternatives link becomes the binary it names). Returns that path.
    pub fn host_binary(&mut self, name: &str) -> Result<PathBuf> {
        let path = which(name).with_context(|| format!("no `{name}` on this machine"))?;
        let real = fs::canonicalize(&path)?;
        let at = path.to_string_lossy().trim_start_matches('/').to_string();
        self.binary(&real, &at)?;
        Ok(path)
    }

    /// Adds a file (data, not an executable: no libraries are looked up).
    pub fn file(&mut self, at: &str, perm: u32, data: Vec<u8>) {
        self.cpio.file(at, perm, data);
    }

    /// Adds a symbolic link `at` -> `target`.
    pub fn symlink(&mut self, at: &str, target: &str) {
        self.cpio.symlink(at, target);
    }

    /// Adds a shared object loaded at run time (dlopen, so `ldd` of the program misses it)
    /// and the libraries it needs.
    pub fn plugin(&mut self, host: &Path) -> Result<()> {
        self.libs.extend(shared_libs(host)?);
        let at = host.to_string_lossy().trim_start_matches('/').to_string();
        self.cpio.file(&at, 0o755, fs::read(host)?);
        Ok(())
    }

    /// Adds the kernel modules `names` (and their dependencies); /init loads them in order.
    pub fn modules(&mut self, root: &Path, version: &str, names: &[&str]) -> Result<Vec<String>> {
        let mut loaded = Vec::new();
        for (name, data) in modules(root, version, names)? {
            self.cpio
                .file(&format!("lib/modules/{name}.ko"), 0o644, data);
            self.insmods.push_str(&format!(
                "insmod /lib/modules/{name}.ko || echo \"insmod {name} failed\"\n"
            ));
            loaded.push(name);
        }
        Ok(loaded)
    }

    /// Writes the gzip'd archive to `out`. /init mounts proc, sysfs, devtmpfs, bpffs, tmpfs on
    /// /run (where `ip netns` keeps its mounts) and /tmp, loads the modules, runs `body`, then
    /// powers the VM off.
    pub fn write(mut self, body: &str, out: &Path) -> Result<()> {
        let busybox = busybox_static().context("no static busybox")?;
        let list = Command::new(&busybox).arg("--list-full").output()?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let applet = applet.trim().trim_start_matches('/');
            let name = applet.rsplit('/').next().unwrap_or(applet);
            if applet.is_empty() || applet == "bin/busybox" || self.provided.contains(name) {
                continue;
            }
            self.cpio.symlink(applet, "/bin/busybox");
        }
        for lib in &self.libs {
            let rel = lib.to_string_lossy().trim_start_matches('/').to_string();
            self.cpio.file(
                &rel,
                0o755,
                fs::read(lib).with_context(|| format!("reading {}", lib.display()))?,
            );
        }
        let insmods = &self.insmods;
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
{insmods}{body}
poweroff -f
"#
        );
        self.cpio.file("init", 0o755, init.into_bytes());

        let raw = self.cpio.finish();
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
}

/// How a guest is booted.
pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    /// Serial console (stdout and stderr of qemu too).
    pub log: &'a Path,
    pub mem_mib: u32,
    pub cpus: u32,
    /// One host thread per vCPU (MTTCG). Faster, but the guest can trip on its own live code
    /// patching: MTTCG may run a stale translation of text the kernel just patched (an
    /// `int3` oops in `bpf_dispatcher_xdp_func` when an XDP program is attached under traffic).
    pub mttcg: bool,
    pub timeout: Duration,
    /// Extra kernel command line.
    pub append: &'a str,
}

/// Boots the kernel with the initramfs, serial console to the log; no network device. Returns
/// whether it timed out (then qemu, our child, is killed).
pub fn boot(b: &Boot) -> Result<bool> {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            if b.mttcg {
                "tcg,thread=multi"
            } else {
                "tcg,thread=single"
            },
        ])
        .args(["-m", &b.mem_mib.to_string()])
        .args(["-smp", &b.cpus.to_string()])
        .args(["-nographic", "-nic", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initramfs)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 quiet {}", b.append))
        .stdin(Stdio::null())
        .stdout(fs::File::create(b.log)?)
        .stderr(fs::File::options().append(true).open(b.log)?)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let deadline = Instant::now() + b.timeout;
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

/// A boot log as text, serial line endings normalised.
pub fn read_log(log: &Path) -> Result<String> {
    Ok(String::from_utf8_lossy(&fs::read(log)?).replace('\r', ""))
}

/// The last `n` lines of a boot log, for error reports.
pub fn log_tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One archive member: mode (type and permissions), contents, device number (major, minor).
type CpioEntry = (u32, Vec<u8>, (u32, u32));

/// A newc-format cpio archive, built in memory; parent directories are added as needed.
#[derive(Default)]
struct Cpio {
    entries: BTreeMap<String, CpioEntry>,
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
        // A real file already there (e.g. /usr/bin/nsenter from util-linux) wins.
        if !self.entries.contains_key(path) {
            self.entry(path, 0o120777, target.as_bytes().to_vec(), (0, 0));
        }
    }

    fn finish(self) -> Vec<u8> {
        fn pad(out: &mut Vec<u8>) {
            while !out.len().is_multiple_of(4) {
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
