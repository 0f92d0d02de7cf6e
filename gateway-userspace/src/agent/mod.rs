//! The composition root of `gateway run`: load config, pick the L4 path (XDP or userspace),
//! apply, serve admin, watch the config directory, shut down.

mod admin;

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::{
    config::{self, CompileInput},
    dataplane::{self, Dataplane, Mode},
    l4proxy::L4Proxy,
    l7::L7,
    plan::{NatMode, Plan},
};

/// How often backends' neighbour entries are refreshed for the XDP path's FIB lookups.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(30);
/// How often backends' next hops are resolved again (route and neighbour changes reach flows
/// within this time).
const NEXTHOP_REFRESH: Duration = Duration::from_secs(1);

pub struct RunArgs {
    pub config: PathBuf,
    pub ifaces: Vec<String>,
    pub vips: Vec<Ipv4Addr>,
    pub pin_root: PathBuf,
    pub xdp_mode: Mode,
    pub nat_mode: NatMode,
    pub labels: BTreeMap<String, String>,
    pub namespace: String,
    pub admin: SocketAddr,
    /// Readiness and liveness for probes (Istio's 15021).
    pub status: SocketAddr,
    /// Prometheus scrape endpoint (Istio's 15090).
    pub metrics: SocketAddr,
    /// How long a drain (admin /drain) serves on while readiness fails.
    pub drain_for: Duration,
    pub cleanup_on_exit: bool,
    pub reload_interval: Duration,
    /// Envoy-style access log of the L7 path ("-": standard output).
    pub access_log: Option<PathBuf>,
    /// The Istio release whose version-dependent behaviour to reproduce.
    pub istio_compat: config::IstioVersion,
}

/// What the admin endpoints show: one immutable snapshot, replaced whole.
#[derive(Serialize)]
pub struct Snapshot {
    pub generation: u64,
    /// "xdp" or "userspace".
    pub l4_path: String,
    pub l4_path_reason: String,
    /// Shared, not copied, when a rejected config leaves it serving.
    pub plan: Arc<Plan>,
    pub warnings: Vec<String>,
    /// Errors of the newest config, if it was rejected or failed to apply (the plan above is the
    /// last good one, still serving).
    pub rejected: Vec<String>,
}

impl Snapshot {
    /// The same serving state, with why the newest config did not replace it.
    fn rejected(&self, errors: Vec<String>) -> Snapshot {
        Snapshot {
            generation: self.generation,
            l4_path: self.l4_path.clone(),
            l4_path_reason: self.l4_path_reason.clone(),
            plan: self.plan.clone(),
            warnings: self.warnings.clone(),
            rejected: errors,
        }
    }

    /// The next generation, serving `plan`.
    fn applied(&self, plan: Plan, warnings: Vec<String>) -> Snapshot {
        Snapshot {
            generation: self.generation + 1,
            l4_path: self.l4_path.clone(),
            l4_path_reason: self.l4_path_reason.clone(),
            plan: Arc::new(plan),
            warnings,
            rejected: Vec::new(),
        }
    }
}

enum L4Path {
    Xdp(Box<Dataplane>),
    User(L4Proxy),
}

impl L4Path {
    async fn apply(&mut self, plan: &Plan) -> anyhow::Result<()> {
        match self {
            L4Path::Xdp(dp) => dp.apply(plan).context("applying plan to BPF maps"),
            L4Path::User(p) => p
                .apply(plan)
                .await
                .map_err(|e| anyhow::anyhow!("binding L4 listeners: {}", e.join("; "))),
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    if let Some(p) = &args.access_log {
        crate::l7::observe::init_access_log(p)
            .with_context(|| format!("opening access log {}", p.display()))?;
    }
    let vips = if !args.vips.is_empty() {
        args.vips.clone()
    } else if !args.ifaces.is_empty() {
        let v = dataplane::addrs_of(&args.ifaces);
        anyhow::ensure!(
            !v.is_empty(),
            "no IPv4 address on {:?}: give --vip",
            args.ifaces
        );
        v
    } else {
        vec![Ipv4Addr::UNSPECIFIED]
    };
    let input = CompileInput {
        vips,
        labels: args.labels.clone(),
        namespace: args.namespace.clone(),
        default_nat: args.nat_mode,
        compat: args.istio_compat,
    };
    let (plan, warnings) = match config::load_and_compile(&args.config, &input) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            anyhow::bail!(
                "{} error(s) in {}; nothing applied",
                errors.len(),
                args.config.display()
            );
        }
    };
    for w in &warnings {
        log::warn!("{w}");
    }

    let (mut path, name, reason) = if args.ifaces.is_empty() {
        (
            L4Path::User(L4Proxy::default()),
            "userspace",
            "no --iface given".to_string(),
        )
    } else {
        match Dataplane::open(&args.pin_root, &args.ifaces, args.xdp_mode) {
            Ok(mut dp) => {
                if let Some(logger) = dp.take_logger() {
                    tokio::spawn(forward_bpf_logs(logger));
                }
                let why = format!(
                    "XDP attached to {} (pins in {})",
                    dp.attached.join(","),
                    dp.pin_dir.display()
                );
                (L4Path::Xdp(Box::new(dp)), "xdp", why)
            }
            Err(e) => {
                let why = format!("XDP unavailable: {e}");
                (L4Path::User(L4Proxy::default()), "userspace", why)
            }
        }
    };
    log::info!("L4 path: {name} ({reason})");
    path.apply(&plan).await?;
    // --- L7: bind every HTTP listener before admin (and so /ready) is served. ---
    let mut l7 = L7::default();
    l7.apply_plan(&plan)
        .await
        .map_err(|e| anyhow::anyhow!("binding HTTP listeners: {}", e.join("; ")))?;
    let l7 = Arc::new(tokio::sync::Mutex::new(l7));
    // --- end L7 ---
    log::info!(
        "applied: {} L4 services, {} local ports",
        plan.l4.len(),
        plan.local.len()
    );

    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot {
        generation: 1,
        l4_path: name.into(),
        l4_path_reason: reason,
        plan: Arc::new(plan),
        warnings: warnings.iter().map(ToString::to_string).collect(),
        rejected: Vec::new(),
    }));
    let path = Arc::new(tokio::sync::Mutex::new(path));

    let health = Arc::new(admin::Health::new(args.drain_for));
    health.set_applied();
    let state = Arc::new(admin::State {
        snapshot: snapshot.clone(),
        path: path.clone(),
        health: health.clone(),
    });
    for (addr, role) in [
        (args.admin, admin::Role::Admin),
        (args.status, admin::Role::Status),
        (args.metrics, admin::Role::Metrics),
    ] {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {role:?} endpoint {addr}"))?;
        log::info!("{role:?} endpoint on {}", l.local_addr()?);
        tokio::spawn(admin::serve(l, role, state.clone()));
    }

    let watcher = tokio::spawn(watch(
        args.config.clone(),
        input,
        args.reload_interval,
        snapshot.clone(),
        path.clone(),
        l7.clone(),
    ));

    wait_for_signal().await;
    log::info!("shutting down");
    watcher.abort();
    if args.cleanup_on_exit {
        // Detach: drop our handles, then remove the pins that keep programs and maps alive.
        drop(path);
        dataplane::remove_pins(&args.pin_root).context("removing pins")?;
        log::info!("removed pins under {}", args.pin_root.display());
    } else {
        log::info!("pins kept: the XDP path keeps forwarding until the next agent adopts it");
    }
    Ok(())
}

/// Copies the XDP program's log records (rare events only) into the agent's log.
async fn forward_bpf_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // Safety: the AsyncFd owns the logger, which owns the fd, so the fd outlives the registration.
    let Ok(mut fd) = (unsafe { tokio::io::unix::AsyncFd::register(logger) }) else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A fingerprint of every file under `dir` (paths, sizes, contents): a change triggers a reload.
fn fingerprint(dir: &Path) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    for f in files {
        f.hash(&mut h);
        std::fs::read(&f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

async fn watch(
    dir: PathBuf,
    input: CompileInput,
    every: Duration,
    snapshot: Arc<ArcSwap<Snapshot>>,
    path: Arc<tokio::sync::Mutex<L4Path>>,
    l7: Arc<tokio::sync::Mutex<L7>>,
) {
    let mut last = fingerprint(&dir);
    let mut last_prime = std::time::Instant::now();
    let mut last_check = std::time::Instant::now();
    let mut next_refresh = std::time::Instant::now();
    // Backends' next hops are refreshed at least once a second, whatever the config interval.
    let mut tick = tokio::time::interval(every.min(NEXTHOP_REFRESH));
    loop {
        tick.tick().await;
        {
            let mut p = path.lock().await;
            if let L4Path::Xdp(dp) = &mut *p {
                if let Err(e) = dp.sync_ifaddrs() {
                    log::warn!("interface addresses: {e}");
                }
                // At most a twentieth of the time goes to refreshing (one syscall per backend).
                if std::time::Instant::now() >= next_refresh {
                    let started = std::time::Instant::now();
                    match dp.refresh_next_hops() {
                        Ok(unresolved) => dataplane::prime_addrs(unresolved),
                        Err(e) => log::warn!("resolving backends' next hops: {e}"),
                    }
                    next_refresh = started + NEXTHOP_REFRESH.max(started.elapsed() * 20);
                }
                if let Err(e) = dp.expire_drains() {
                    log::warn!("closing drained ports: {e}");
                }
                // Neighbour entries the kernel does not use itself age out; keep backends'.
                if last_prime.elapsed() >= NEIGHBOUR_REFRESH {
                    dataplane::prime_neighbours(&snapshot.load().plan);
                    last_prime = std::time::Instant::now();
                }
            }
        }
        if last_check.elapsed() < every {
            continue;
        }
        last_check = std::time::Instant::now();
        let fp = fingerprint(&dir);
        if fp == last {
            continue;
        }
        last = fp;
        let cur = snapshot.load();
        match config::load_and_compile(&dir, &input) {
            Err(errors) => {
                for e in &errors {
                    log::error!("{e}");
                }
                log::error!(
                    "config rejected ({} errors); still serving generation {}",
                    errors.len(),
                    cur.generation
                );
                snapshot.store(Arc::new(
                    cur.rejected(errors.iter().map(ToString::to_string).collect()),
                ));
            }
            Ok((plan, warnings)) => {
                // A config that validated but could not be applied (an HTTP port taken, a map
                // full) is reported like a rejected one, so /config_dump says why. L7 goes
                // first: binding listeners is what fails in practice, and failing there leaves
                // both halves on the old config. (New L7 ports work before the XDP update: a
                // port XDP does not know is passed to the stack.)
                if let Err(e) = l7.lock().await.apply_plan(&plan).await {
                    let e = format!("binding L7 listeners: {}", e.join("; "));
                    log::error!("{e}");
                    snapshot.store(Arc::new(cur.rejected(vec![e])));
                    continue;
                }
                let res = path.lock().await.apply(&plan).await;
                if let Err(e) = res {
                    log::error!("{e:#}");
                    snapshot.store(Arc::new(cur.rejected(vec![format!("{e:#}")])));
                    continue;
                }
                log::info!(
                    "applied generation {}: {} L4 services",
                    cur.generation + 1,
                    plan.l4.len()
                );
                snapshot.store(Arc::new(
                    cur.applied(plan, warnings.iter().map(ToString::to_string).collect()),
                ));
            }
        }
    }
}
