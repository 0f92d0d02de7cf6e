//! Part 2b: part 2 (L4 through network namespaces) again inside a qemu guest whose kernel has
//! IPVS, so the gateway's XDP path can be compared with IPVS at all: the host kernel here is
//! built without CONFIG_IP_VS.
//!
//! The host side fetches Debian's 6.12 cloud kernel (cached by `crate::qemu`), builds an
//! initramfs holding the xtask, gateway and test-backend binaries, the peers' tools (ipvsadm,
//! iptables with its extensions, iperf3, HAProxy), iproute2, ethtool, util-linux's nsenter, their
//! shared libraries and the kernel modules they need, boots it under TCG with 2 vCPUs, and reads
//! the section the guest prints between markers on the serial console. In the guest, /init runs
//! `xtask l4-guest` ([`guest`]), which runs part 2's harness unchanged with smaller counts.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::{l4, util, Ctx, Section};
use crate::qemu::{self, Initramfs};

pub const TITLE: &str =
    "2b. L4 in a qemu guest (Debian 6.12, TCG): XDP vs IPVS vs iptables vs HAProxy";

const KERNEL_PKG: &str = "linux-image-6.12.117+deb12-cloud-amd64";

/// Modules for veth, IPVS (NAT mode, round robin) and conntrack/NAT; dependencies are added.
/// Names that are no module in this kernel are built in.
const MODULES: &[&str] = &["veth", "ip_vs", "ip_vs_rr", "nf_conntrack", "nf_nat"];

/// iptables' matches and targets as part 2 uses them (DNAT, statistic, MASQUERADE), and the
/// tables of each backend: iptables-nft (Debian's default) through nft_compat, or the legacy ones.
const XT_MODULES: &[&str] = &["xt_nat", "xt_statistic", "xt_MASQUERADE", "xt_tcpudp"];
const NFT_MODULES: &[&str] = &["nf_tables", "nft_compat", "nft_chain_nat"];
const LEGACY_MODULES: &[&str] = &["ip_tables", "iptable_nat", "iptable_filter"];

/// Where the project's binaries sit in the guest.
const GUEST_DIR: &str = "/opt/gw";
const BEGIN: &str = "XTASK-L4VM-BEGIN";
const END: &str = "XTASK-L4VM-END";
const HEADLINE: &str = "XTASK-L4VM-HEADLINE ";
const EXIT: &str = "XTASK-L4VM-EXIT=";

const MEM_MIB: u32 = 2048;
const CPUS: u32 = 2;

/// Counts in the guest: under TCG every packet costs tens of times more than on the host.
fn guest_params(quick: bool) -> l4::Params {
    if quick {
        l4::Params {
            conns: 40,
            threads: 2,
            runs: 1,
            iperf_secs: 1,
        }
    } else {
        l4::Params {
            conns: 200,
            threads: 2,
            runs: 5,
            iperf_secs: 3,
        }
    }
}

fn boot_timeout(quick: bool) -> Duration {
    Duration::from_secs(if quick { 300 } else { 1200 })
}

/// Host side: builds the guest, boots it, returns its section and headline lines.
pub fn run(ctx: &Ctx) -> Result<(Section, Vec<String>)> {
    qemu::install_host_tools(&[("ethtool", "ethtool"), ("nsenter", "util-linux")])?;
    // The peers' tools are copied from the host into the guest: install them here.
    let mut tools = Vec::new();
    for (bin, pkg) in [
        ("ipvsadm", "ipvsadm"),
        ("iptables", "iptables"),
        ("iperf3", "iperf3"),
        ("haproxy", "haproxy"),
    ] {
        match util::ensure_tool(bin, pkg) {
            Ok(_) => tools.push(bin),
            // HAProxy is optional; the guest then reports it as not available.
            Err(e) if bin == "haproxy" => eprintln!("bench: l4vm without HAProxy: {e}"),
            Err(e) => bail!("{e}"),
        }
    }
    let dir = qemu::kernels_dir()?;
    let version = KERNEL_PKG.trim_start_matches("linux-image-");
    let root = qemu::fetch_kernel(&dir, KERNEL_PKG, version)?;
    let work = dir.join("l4vm");
    std::fs::create_dir_all(&work)?;
    let initramfs = work.join(format!("{version}.initramfs.cpio.gz"));
    let (mods, ipt_backend) = build_initramfs(ctx, &root, version, &tools, &work, &initramfs)?;
    anyhow::ensure!(
        mods.iter().any(|m| m == "ip_vs"),
        "{KERNEL_PKG} ships no ip_vs module"
    );

    let log = work.join(format!("{version}.log"));
    eprintln!(
        "bench:   l4vm booting {version} under qemu (TCG, {CPUS} vCPUs, {MEM_MIB} MiB); serial console in {}",
        log.display()
    );
    let started = Instant::now();
    // MTTCG for speed; a guest that panics on MTTCG's stale-code race (see `qemu::Boot::mttcg`)
    // is booted once more.
    let mut timed_out = false;
    for attempt in 1..=2 {
        timed_out = qemu::boot(&qemu::Boot {
            vmlinuz: &root.join(format!("boot/vmlinuz-{version}")),
            initramfs: &initramfs,
            log: &log,
            mem_mib: MEM_MIB,
            cpus: CPUS,
            mttcg: true,
            timeout: boot_timeout(ctx.quick),
            // Kernel messages would interleave with the report on the console: errors only.
            append: "loglevel=3",
        })?;
        let text = qemu::read_log(&log)?;
        if attempt == 1 && text.contains("Kernel panic") && between(&text, BEGIN, END).is_none() {
            eprintln!(
                "bench:   l4vm: the guest kernel panicked (log kept as {}.1); booting again",
                log.display()
            );
            let _ = std::fs::copy(&log, log.with_extension("log.1"));
            continue;
        }
        break;
    }
    let took = started.elapsed();
    let text = qemu::read_log(&log)?;
    let body = between(&text, BEGIN, END);
    let exit = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(EXIT))
        .map(|c| c.trim().to_string());
    let body = match (body, timed_out) {
        (Some(b), _) => b,
        (None, true) => bail!(
            "the guest did not finish within {} s (log {}); its last lines:\n{}",
            boot_timeout(ctx.quick).as_secs(),
            log.display(),
            qemu::log_tail(&text, 12)
        ),
        (None, false) => bail!(
            "the guest printed no report (exit {}; log {}); its last lines:\n{}",
            exit.as_deref().unwrap_or("?"),
            log.display(),
            qemu::log_tail(&text, 12)
        ),
    };
    let headline: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(HEADLINE))
        .map(|h| format!("In a qemu guest (Debian 6.12, TCG; ratios only): {h}"))
        .collect();

    let p = guest_params(ctx.quick);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "The host kernel has no IPVS, so part 2 runs again inside a virtual machine whose kernel \
         has it: Debian's `{KERNEL_PKG}` booted by `qemu-system-x86_64 -accel tcg,thread=multi -smp \
         {CPUS} -m {MEM_MIB}` from an initramfs built by `xtask/src/bench/vm.rs`: busybox, this \
         run's `xtask`, `gateway` and `test-backend` ({} build), the host's ipvsadm, iptables \
         ({ipt_backend} backend), iperf3, HAProxy, iproute2, ethtool and nsenter with their \
         libraries, and the kernel's own modules for veth, IPVS, conntrack/NAT and iptables. Its \
         /init runs `xtask l4-guest{}`: part 2's harness, topology and peers unchanged (the agent \
         attaches XDP in driver mode to the veths, as on the host), with {} connections per run \
         over {} threads, {} s of iperf3 and medians of {} runs. Run alone: `cargo xtask bench \
         --only l4vm`.\n\n\
         **Conditions: software emulation.** There is no KVM here (`/dev/kvm` exists but fails at \
         vCPU set-up), so every guest instruction is emulated: absolute numbers are tens to \
         hundreds of times below the host's and mean nothing; only ratios between peers *within \
         this guest* do, and they are noisier than part 2's. The 2 vCPUs are emulated by threads \
         on the host's 2 shared cores, so client, node and backends again share the same CPUs, and \
         emulation weighs on every path alike (the XDP program is JIT-compiled to x86 and then \
         emulated like the kernel's own code). The guest took {:.0} s from boot to power-off.\n",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        if ctx.quick { " --quick" } else { "" },
        p.conns,
        p.threads,
        p.iperf_secs,
        p.runs,
        took.as_secs_f64()
    );
    let _ = writeln!(s, "{}", demote_headings(&body));
    Ok((Section::new(TITLE, s), headline))
}

/// The text between the marker lines, if both are there.
fn between(text: &str, begin: &str, end: &str) -> Option<String> {
    let mut out = None::<Vec<&str>>;
    for l in text.lines() {
        match (&mut out, l.trim()) {
            (None, t) if t == begin => out = Some(Vec::new()),
            (Some(v), t) if t == end => return Some(v.join("\n")),
            (Some(v), _) => v.push(l),
            _ => {}
        }
    }
    None
}

/// Part 2's "### Where we lose" heading stays a level below this section's.
fn demote_headings(body: &str) -> String {
    body.lines()
        .map(|l| {
            if l.starts_with("### ") {
                format!("#{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Returns the modules /init loads and the iptables backend ("nft" or "legacy").
fn build_initramfs(
    ctx: &Ctx,
    root: &Path,
    version: &str,
    tools: &[&str],
    work: &Path,
    out: &Path,
) -> Result<(Vec<String>, &'static str)> {
    let mut img = Initramfs::new()?;
    // /proc/self/exe, not current_exe(): `cargo test --workspace` may have rebuilt and replaced
    // target/*/xtask while this one runs, and only the link still reaches the running file.
    let xtask = PathBuf::from("/proc/self/exe");
    for (exe, name) in [
        (xtask.as_path(), "xtask"),
        (ctx.gateway_bin.as_path(), "gateway"),
        (ctx.backend_bin.as_path(), "test-backend"),
    ] {
        let small = qemu::stripped_copy(exe, work, name)?;
        img.binary(&small, &format!("{}/{name}", &GUEST_DIR[1..]))?;
    }
    for t in tools.iter().chain(&["ethtool", "nsenter"]) {
        img.host_binary(t)?;
    }
    // iptables loads its matches and targets (statistic, DNAT, MASQUERADE, ...) with dlopen.
    let xt = PathBuf::from("/usr/lib/x86_64-linux-gnu/xtables");
    if xt.is_dir() {
        for e in std::fs::read_dir(&xt)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "so") {
                img.plugin(&p)?;
            }
        }
    }
    for f in ["/etc/protocols", "/etc/services"] {
        if let Ok(data) = std::fs::read(f) {
            img.file(&f[1..], 0o644, data);
        }
    }
    // /var/run is /run on Debian; tools that use the old path find the same files.
    img.symlink("var/run", "/run");
    // The host's iptables is copied as is, so the guest loads the tables of its backend.
    let (ipt_backend, ipt_modules) = match qemu::which("iptables").map(std::fs::canonicalize) {
        Some(Ok(p)) if p.to_string_lossy().contains("legacy") => ("legacy", LEGACY_MODULES),
        _ => ("nft", NFT_MODULES),
    };
    let names: Vec<&str> = [MODULES, XT_MODULES, ipt_modules].concat();
    let mods = img.modules(root, version, &names)?;
    let body = format!(
        r#"echo "== kernel $(uname -r), $(nproc) CPUs"
ulimit -n 65536
cd /tmp
GATEWAY_BIN={GUEST_DIR}/gateway TEST_BACKEND_BIN={GUEST_DIR}/test-backend RUST_BACKTRACE=1 \
  {GUEST_DIR}/xtask l4-guest{}
echo "{EXIT}$?""#,
        if ctx.quick { " --quick" } else { "" }
    );
    img.write(&body, out)?;
    Ok((mods, ipt_backend))
}

/// Guest side (`xtask l4-guest`, run by the guest's /init): part 2 with the guest's counts,
/// printed between markers for the host to pick up.
pub fn guest(quick: bool) -> Result<()> {
    let dir = PathBuf::from(GUEST_DIR);
    let ctx = Ctx {
        quick,
        gateway_bin: dir.join("gateway"),
        backend_bin: dir.join("test-backend"),
    };
    std::env::set_var("GATEWAY_BIN", &ctx.gateway_bin);
    std::env::set_var("TEST_BACKEND_BIN", &ctx.backend_bin);
    util::install_signal_handlers();
    let (section, headline) = l4::run_with(&ctx, &guest_params(quick))?;
    // One write, after every peer is torn down: nothing else prints in between.
    let mut out = String::new();
    for h in headline {
        let _ = writeln!(out, "{HEADLINE}{h}");
    }
    let _ = writeln!(out, "{BEGIN}\n{}\n{END}", section.body.trim_end());
    print!("{out}");
    Ok(())
}
