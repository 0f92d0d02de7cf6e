//! The composition root of `gateway run`: load config, pick the L4 path (XDP or userspace),
//! apply, serve admin, watch the config directory, shut down.

mod admin;
pub mod node;
mod process;

use process::{
    bind_shared, enable_request_migration, forward_bpf_logs, reload_on_sighup, wait_for_signal,
};

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use serde::Serialize;

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

/// `--kubernetes`: where the API server is and what to watch.
pub struct KubeArgs {
    /// None: in-cluster service account, then `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    /// Changes closer together than this are applied as one.
    pub debounce: Duration,
    /// The agent's own Pod in `RunArgs::namespace`: its labels are the agent's labels.
    pub pod_name: Option<String>,
}

pub struct RunArgs {
    /// `--config DIR`; ignored when `kubernetes` is set.
    pub config: PathBuf,
    pub kubernetes: Option<KubeArgs>,
    /// The node's name (downward API), for /config_dump.
    pub node_name: Option<String>,
    pub ifaces: Vec<String>,
    pub vips: Vec<IpAddr>,
    pub pin_root: PathBuf,
    pub xdp_mode: Mode,
    pub nat_mode: NatMode,
    pub labels: BTreeMap<String, String>,
    pub namespace: String,
    pub admin: SocketAddr,
    /// The admin endpoints also on this Unix socket: this agent's own, where the TCP ports are
    /// shared with the next agent during a hand-over (probes and preStop of a surged pod).
    pub admin_socket: Option<PathBuf>,
    /// Readiness and liveness for probes (Istio's 15021).
    pub status: SocketAddr,
    /// Prometheus scrape endpoint (Istio's 15090).
    pub metrics: SocketAddr,
    /// How long a drain (admin /drain) serves on while readiness fails.
    pub drain_for: Duration,
    /// After the drain, how long in-flight requests may take before the agent exits.
    pub shutdown_timeout: Duration,
    pub cleanup_on_exit: bool,
    pub reload_interval: Duration,
    /// Envoy-style access log of the L7 path ("-": standard output).
    pub access_log: Option<PathBuf>,
    pub access_log_format: crate::l7::observe::LogFormat,
    /// The Istio release whose version-dependent behaviour to reproduce.
    pub istio_compat: config::IstioVersion,
    /// Any invalid object rejects the whole set (the last good set keeps serving), instead of
    /// leaving out only the invalid objects.
    pub strict: bool,
    /// The connection tables' per-state timeouts and garbage-collection interval.
    pub ct_timeouts: crate::dataplane::conntrack::CtTimeouts,
    /// `--snat-pool`: per egress interface, the addresses and ports masqueraded flows take.
    pub snat_pools: Vec<crate::dataplane::snat_pool::PoolSpec>,
}

/// What the admin endpoints show: one immutable snapshot, replaced whole.
#[derive(Serialize)]
pub struct Snapshot {
    /// Version of the plan that serves: 0 until a config was applied, then one more each time
    /// a different plan is applied.
    pub generation: u64,
    /// "xdp" or "userspace".
    pub l4_path: String,
    pub l4_path_reason: String,
    /// Each XDP interface's mode (native or generic), driver and why (empty on the userspace
    /// path).
    pub xdp_interfaces: Arc<Vec<crate::dataplane::IfMode>>,
    /// Shared, not copied, when a rejected config leaves it serving.
    pub plan: Arc<Plan>,
    pub warnings: Vec<String>,
    /// Whether the newest config is what serves (false: it was rejected as a whole, by
    /// `--strict` or because applying it failed, and `plan` is the last good one).
    pub applied: bool,
    /// Errors of the newest config: the objects left out of it, or why it was not applied.
    pub rejected: Vec<String>,
    /// Rejected objects whose previous version keeps serving.
    pub kept_previous: Vec<String>,
    /// Objects left out, by kind (the `gateway_config_rejected_objects` metric).
    pub rejected_by_kind: BTreeMap<String, usize>,
    /// The serving plan's revision: what it is and how it came to serve.
    pub revision: Revision,
}

/// One applied plan: its generation, a content hash that is the same on every node and across
/// restarts for the same config, when it was applied and how long each stage took.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Revision {
    pub generation: u64,
    /// SHA-256 of the plan, first 16 hex digits.
    pub hash: String,
    /// RFC 3339, UTC.
    pub applied_at: String,
    pub parse_ms: f64,
    pub admit_ms: f64,
    pub compile_ms: f64,
    pub apply_ms: f64,
    /// `--kubernetes`: per kind, the newest resourceVersion this revision reflects.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_versions: BTreeMap<String, String>,
    /// Where the objects come from: the config directory or "the Kubernetes API".
    pub source: String,
    /// The node the agent runs on (`--node-name`, downward API `NODE_NAME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The plan's content hash: SHA-256 of its JSON form (struct fields in declaration order, maps
/// ordered), so equal plans hash equally anywhere.
fn plan_hash(plan: &Plan) -> String {
    let json = serde_json::to_vec(plan).unwrap_or_default();
    let d = ring::digest::digest(&ring::digest::SHA256, &json);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Snapshot {
    /// The same serving state, with why the newest config did not replace it; `by_kind` when
    /// admission rejected it (else the serving config's counts stay).
    fn rejected(&self, errors: Vec<String>, by_kind: Option<BTreeMap<String, usize>>) -> Snapshot {
        Snapshot {
            generation: self.generation,
            l4_path: self.l4_path.clone(),
            l4_path_reason: self.l4_path_reason.clone(),
            xdp_interfaces: self.xdp_interfaces.clone(),
            plan: self.plan.clone(),
            warnings: self.warnings.clone(),
            applied: false,
            rejected: errors,
            kept_previous: Vec::new(),
            rejected_by_kind: by_kind.unwrap_or_else(|| self.rejected_by_kind.clone()),
            revision: self.revision.clone(),
        }
    }

    /// Serving `c`'s plan (applied in `apply`): the next generation if it differs from the
    /// current one.
    fn applied(&self, c: Compiled, apply: Duration) -> Snapshot {
        let changed = *self.plan != c.plan;
        let generation = self.generation + u64::from(changed || self.generation == 0);
        let revision = if generation == self.generation {
            // The same plan, now known to reflect newer objects.
            Revision {
                resource_versions: c.resource_versions.clone(),
                ..self.revision.clone()
            }
        } else {
            let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
            Revision {
                generation,
                hash: plan_hash(&c.plan),
                applied_at: crate::l7::observe::iso8601(std::time::SystemTime::now()),
                parse_ms: ms(c.times.parse),
                admit_ms: ms(c.times.admit),
                compile_ms: ms(c.times.compile),
                apply_ms: ms(apply),
                resource_versions: c.resource_versions.clone(),
                source: self.revision.source.clone(),
                node: self.revision.node.clone(),
            }
        };
        Snapshot {
            revision,
            generation,
            l4_path: self.l4_path.clone(),
            l4_path_reason: self.l4_path_reason.clone(),
            xdp_interfaces: self.xdp_interfaces.clone(),
            plan: if changed {
                Arc::new(c.plan)
            } else {
                self.plan.clone()
            },
            warnings: c.warnings,
            applied: true,
            rejected: c.rejected,
            kept_previous: c.kept_previous,
            rejected_by_kind: c.rejected_by_kind,
        }
    }
}

/// One load of the config directory, admitted and compiled.
struct Compiled {
    plan: Plan,
    warnings: Vec<String>,
    rejected: Vec<String>,
    kept_previous: Vec<String>,
    rejected_by_kind: BTreeMap<String, usize>,
    /// The admitted objects: the `previous` of the next load once this one is applied.
    admitted: config::Manifests,
    times: config::StageTimes,
    /// Kubernetes: per kind, the newest resourceVersion the load reflects.
    resource_versions: BTreeMap<String, String>,
}

/// Where the objects come from.
pub enum Origin {
    /// Every YAML file under a directory (`--config`).
    Dir(PathBuf),
    /// The Kubernetes API (`--kubernetes`): what the watches have seen so far, and the
    /// agent's own Pod, whose labels Gateway selectors match.
    Kube(Arc<crate::k8s::Store>, Option<String>),
}

impl Origin {
    /// What log lines call the source.
    fn describe(&self) -> String {
        match self {
            Origin::Dir(d) => d.display().to_string(),
            Origin::Kube(..) => "the Kubernetes API".into(),
        }
    }

    /// Changes when anything the plan was built from changes: the files (and the certificate
    /// files the plan reads), or the watched objects.
    fn fingerprint(&self, plan: &Plan) -> u64 {
        match self {
            Origin::Dir(d) => fingerprint(Some(d), plan),
            // The store's version moves on every watched change; the plan may still read
            // certificate files (paths in DestinationRules or Gateways).
            Origin::Kube(store, _) => fingerprint(None, plan) ^ store.version(),
        }
    }
}

/// The config source and what admission needs between loads.
struct ConfigSource {
    origin: Origin,
    input: CompileInput,
    strict: bool,
    /// The last admitted set that was applied.
    admitted: Option<config::Manifests>,
    /// The rejections of the last load, already logged.
    logged: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The warnings of the last load, already logged.
    warned: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// What was last logged about the agent's Pod and its labels.
    pod_labels: std::sync::Mutex<Option<String>>,
}

impl ConfigSource {
    /// The compile input with the agent's labels taken from its own Pod when it is known and
    /// listed (Istio matches a Gateway's selector against the gateway pod's labels); else
    /// the --label set.
    fn identity(&self, loaded: &config::Manifests, pod: Option<&str>) -> CompileInput {
        let mut input = self.input.clone();
        let Some(pod) = pod else { return input };
        let own = loaded
            .pods
            .iter()
            .find(|p| p.metadata.name == pod && p.metadata.namespace == self.input.namespace);
        let ns = &self.input.namespace;
        let said = match own {
            Some(p) => {
                input.labels = p.metadata.labels.clone().into_iter().collect();
                format!("labels from Pod {ns}/{pod}: {:?}", input.labels)
            }
            None => format!(
                "Pod {ns}/{pod} not listed (RBAC? --watch-namespace?); Gateway selectors match --label {:?}",
                self.input.labels
            ),
        };
        // Logged when it changes, not at every load.
        let mut last = self.pod_labels.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_deref() != Some(said.as_str()) {
            match own {
                Some(_) => log::info!("{said}"),
                None => log::warn!("{said}"),
            }
            *last = Some(said);
        }
        input
    }

    /// Loads, admits and compiles, logging every rejection. `Err` (all errors) only when
    /// `--strict` rejects the set.
    fn load(&self) -> Result<Compiled, (Vec<String>, BTreeMap<String, usize>)> {
        let mut resource_versions = BTreeMap::new();
        let (adm, compiled, times) = match &self.origin {
            Origin::Dir(dir) => {
                config::load_admit_compile(dir, &self.input, self.admitted.as_ref(), self.strict)
            }
            Origin::Kube(store, pod) => {
                let t0 = std::time::Instant::now();
                let texts = store.texts();
                resource_versions = store.resource_versions();
                let (loaded, errors) =
                    config::load_texts(texts.iter().map(|(n, y)| (n.as_str(), y.as_str())));
                let input = self.identity(&loaded, pod.as_deref());
                // Certificate paths in objects from the API are taken as absolute.
                config::admit_compile(
                    loaded,
                    errors,
                    Path::new("/"),
                    t0,
                    &input,
                    self.admitted.as_ref(),
                    self.strict,
                )
            }
        };
        let rejected: Vec<String> = adm.rejected.iter().map(ToString::to_string).collect();
        // Each rejection is logged once, not at every reload it stays in (a Kubernetes
        // source reloads on every change of any object).
        {
            let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
            for e in &rejected {
                if !logged.contains(e) {
                    log::error!("rejected: {e}");
                }
            }
            for k in &adm.kept_previous {
                if !logged.contains(k) {
                    log::warn!(
                        "{k}: the new version is rejected; the previous version keeps serving"
                    );
                }
            }
            *logged = rejected.iter().chain(&adm.kept_previous).cloned().collect();
        }
        let Some((plan, warnings)) = compiled else {
            return Err((rejected, adm.rejected_by_kind()));
        };
        {
            let now: std::collections::BTreeSet<String> =
                warnings.iter().map(ToString::to_string).collect();
            let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            for w in now.difference(&warned) {
                log::warn!("{w}");
            }
            *warned = now;
        }
        Ok(Compiled {
            plan,
            warnings: warnings.iter().map(ToString::to_string).collect(),
            rejected_by_kind: adm.rejected_by_kind(),
            rejected,
            kept_previous: adm.kept_previous,
            admitted: adm.manifests,
            times,
            resource_versions,
        })
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
        crate::l7::observe::init_access_log(p, args.access_log_format)
            .with_context(|| format!("opening access log {}", p.display()))?;
    }
    let vips = if !args.vips.is_empty() {
        args.vips.clone()
    } else if !args.ifaces.is_empty() {
        let v = dataplane::addrs_of(&args.ifaces);
        anyhow::ensure!(!v.is_empty(), "no address on {:?}: give --vip", args.ifaces);
        v
    } else {
        vec![Ipv4Addr::UNSPECIFIED.into()]
    };
    let input = CompileInput {
        vips,
        labels: args.labels.clone(),
        namespace: args.namespace.clone(),
        default_nat: args.nat_mode,
        compat: args.istio_compat,
    };
    // SIGHUP and (with --kubernetes) every watched change wake the config watcher.
    let reload = Arc::new(tokio::sync::Notify::new());
    let origin = match &args.kubernetes {
        None => Origin::Dir(args.config.clone()),
        Some(k) => {
            let client = crate::k8s::client(k.kubeconfig.as_deref()).await?;
            let store = crate::k8s::start(client, &k.namespaces, reload.clone()).await;
            // The first plan is built from complete lists only, never from a partial view
            // (which would serve 404s for what is not listed yet). The API server being away
            // at start delays readiness; the watches retry with backoff meanwhile.
            let started = std::time::Instant::now();
            let mut said = started;
            while !store.synced() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if said.elapsed() >= Duration::from_secs(5) {
                    said = std::time::Instant::now();
                    log::warn!(
                        "waiting for the Kubernetes API: not every kind listed after {:?}",
                        started.elapsed().as_secs()
                    );
                }
            }
            Origin::Kube(store, k.pod_name.clone())
        }
    };
    let described = origin.describe();
    let debounce = args.kubernetes.as_ref().map(|k| k.debounce);
    let mut source = ConfigSource {
        origin,
        input,
        strict: args.strict,
        admitted: None,
        logged: Default::default(),
        warned: Default::default(),
        pod_labels: Default::default(),
    };
    // Manifest content never stops the agent: it serves what was admitted, or (only when
    // --strict rejects the set) nothing, not ready, until a valid set arrives.
    let first = source.load();
    if let Err((errors, _)) = &first {
        log::error!(
            "--strict: {} error(s) in {described}; serving nothing until they are fixed",
            errors.len(),
        );
    }

    let mut xdp_interfaces = Vec::new();
    let (path, name, reason) = if args.ifaces.is_empty() {
        (
            L4Path::User(L4Proxy::default()),
            "userspace",
            "no --iface given".to_string(),
        )
    } else {
        match Dataplane::open(&args.pin_root, &args.ifaces, args.xdp_mode) {
            Ok(mut dp) => {
                dp.ct_timeouts = args.ct_timeouts;
                dp.set_snat_pools(args.snat_pools.clone())?;
                if let Some(logger) = dp.take_logger() {
                    tokio::spawn(forward_bpf_logs(logger));
                }
                let why = format!(
                    "XDP attached to {} (pins in {})",
                    dp.attached.join(","),
                    dp.pin_dir.display()
                );
                xdp_interfaces = dp.ifmodes.clone();
                (L4Path::Xdp(Box::new(dp)), "xdp", why)
            }
            Err(e) => {
                let why = format!("XDP unavailable: {e}");
                (L4Path::User(L4Proxy::default()), "userspace", why)
            }
        }
    };
    log::info!("L4 path: {name} ({reason})");
    enable_request_migration();
    crate::l7::overload::start(crate::l7::limits::get().overload_max_heap);
    let l7 = Arc::new(tokio::sync::Mutex::new(L7::default()));
    let path = Arc::new(tokio::sync::Mutex::new(path));
    let health = Arc::new(admin::Health::new(args.drain_for));
    let empty = Snapshot {
        generation: 0,
        l4_path: name.into(),
        l4_path_reason: reason,
        xdp_interfaces: Arc::new(xdp_interfaces),
        plan: Arc::new(config::compile(&config::Manifests::default(), &source.input).0),
        warnings: Vec::new(),
        applied: false,
        rejected: Vec::new(),
        kept_previous: Vec::new(),
        rejected_by_kind: BTreeMap::new(),
        revision: Revision {
            source: described.clone(),
            node: args.node_name.clone(),
            ..Revision::default()
        },
    };
    // Every listener is bound before the status port (and so readiness) is served.
    let mut apply_failed = false;
    let t = std::time::Instant::now();
    let snapshot = match first {
        Ok(mut c) => match apply(&c.plan, &l7, &path).await {
            Ok(()) => {
                log::info!(
                    "applied: {} L4 services, {} local ports",
                    c.plan.l4.len(),
                    c.plan.local.len()
                );
                source.admitted = Some(std::mem::take(&mut c.admitted));
                health.set_applied();
                let s = empty.applied(c, t.elapsed());
                log_revision(&s.revision);
                crate::l7::overload::shrink_heap();
                s
            }
            Err(e) => {
                log::error!(
                    "{e}; serving nothing until it applies (retried every reload interval)"
                );
                apply_failed = true;
                empty.rejected(vec![e], None)
            }
        },
        Err((errors, by_kind)) => empty.rejected(errors, Some(by_kind)),
    };
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));

    let state = Arc::new(admin::State {
        l7: l7.lock().await.runtime(),
        snapshot: snapshot.clone(),
        path: path.clone(),
        health: health.clone(),
    });
    for (addr, role) in [
        (args.admin, admin::Role::Admin),
        (args.status, admin::Role::Status),
        (args.metrics, admin::Role::Metrics),
    ] {
        let l =
            bind_shared(addr).with_context(|| format!("binding the {role:?} endpoint {addr}"))?;
        log::info!("{role:?} endpoint on {}", l.local_addr()?);
        tokio::spawn(admin::serve(l, role, state.clone()));
    }
    if let Some(path) = &args.admin_socket {
        let l = admin::bind_unix(path)
            .with_context(|| format!("binding the admin socket {}", path.display()))?;
        log::info!("Admin endpoint on unix:{}", path.display());
        tokio::spawn(admin::serve_unix(l, state.clone()));
    }

    let watcher = tokio::spawn(watch(
        Reload {
            now: reload.clone(),
            every: args.reload_interval,
            debounce,
        },
        source,
        apply_failed,
        snapshot.clone(),
        health.clone(),
        path.clone(),
        l7.clone(),
    ));

    let hup = tokio::spawn(reload_on_sighup(reload.clone()));
    if wait_for_signal().await {
        // SIGTERM: Envoy's drain, then exit; the pinned XDP path forwards on meanwhile.
        watcher.abort();
        let started = health.start_drain();
        tokio::time::sleep_until((started + args.drain_for).into()).await;
        l7.lock().await.close_listeners();
        crate::l7::drain(crate::l7::CLOSING);
        let deadline = std::time::Instant::now() + args.shutdown_timeout;
        while crate::l7::active_connections() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match crate::l7::active_connections() {
            0 => log::info!("drained: no HTTP connection left"),
            n => log::warn!(
                "{n} HTTP connections still open after --shutdown-timeout {:?}; closing them",
                args.shutdown_timeout
            ),
        }
    }
    log::info!("shutting down");
    crate::l7::observe::flush_access_log();
    watcher.abort();
    hup.abort();
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

fn log_revision(r: &Revision) {
    log::info!(
        "applied generation {} (hash {}): parse {} ms, validate+admit {} ms, compile {} ms, apply {} ms",
        r.generation,
        r.hash,
        r.parse_ms,
        r.admit_ms,
        r.compile_ms,
        r.apply_ms
    );
}

/// A fingerprint of every file under `dir` (if any) and of the certificate files `plan` reads (paths
/// and contents): a change triggers a reload, so rotated certificates are picked up.
fn fingerprint(dir: Option<&Path>, plan: &Plan) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut stack: Vec<PathBuf> = dir.map(Path::to_path_buf).into_iter().collect();
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
    files.extend(config::tls::file_paths(plan));
    files.sort();
    for f in files {
        f.hash(&mut h);
        std::fs::read(&f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

/// Applies a plan to both halves. L7 goes first: binding listeners is what fails in practice,
/// and failing there leaves both halves on the old plan. (New L7 ports work before the XDP
/// update: a port XDP does not know is passed to the stack.)
async fn apply(
    plan: &Plan,
    l7: &tokio::sync::Mutex<L7>,
    path: &tokio::sync::Mutex<L4Path>,
) -> Result<(), String> {
    l7.lock()
        .await
        .apply_plan(plan)
        .await
        .map_err(|e| format!("binding L7 listeners: {}", e.join("; ")))?;
    path.lock()
        .await
        .apply(plan)
        .await
        .map_err(|e| format!("{e:#}"))
}

/// When the watcher reloads: every `every`, and at once when `now` is notified (SIGHUP, a
/// watched Kubernetes change); `debounce` later for Kubernetes, so that a burst of changes
/// (a rollout's EndpointSlice updates) becomes one apply.
struct Reload {
    now: Arc<tokio::sync::Notify>,
    every: Duration,
    debounce: Option<Duration>,
}

async fn watch(
    reload: Reload,
    mut source: ConfigSource,
    mut apply_failed: bool,
    snapshot: Arc<ArcSwap<Snapshot>>,
    health: Arc<admin::Health>,
    path: Arc<tokio::sync::Mutex<L4Path>>,
    l7: Arc<tokio::sync::Mutex<L7>>,
) {
    let every = reload.every;
    let mut last = source.origin.fingerprint(&snapshot.load().plan);
    let mut last_prime = std::time::Instant::now();
    let mut last_check = std::time::Instant::now();
    let mut next_refresh = std::time::Instant::now();
    let mut next_gc = std::time::Instant::now();
    // Backends' next hops are refreshed at least once a second, whatever the config interval.
    let mut tick = tokio::time::interval(every.min(NEXTHOP_REFRESH));
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            () = reload.now.notified() => true,
        };
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
                if std::time::Instant::now() >= next_gc {
                    if let Err(e) = dp.collect_conntrack() {
                        log::warn!("connection-table garbage collection: {e}");
                    }
                    next_gc = std::time::Instant::now() + dp.ct_timeouts.gc_interval;
                }
                dp.warn_oversize();
                // Neighbour entries the kernel does not use itself age out; keep backends'.
                if last_prime.elapsed() >= NEIGHBOUR_REFRESH {
                    dataplane::prime_neighbours(&snapshot.load().plan);
                    last_prime = std::time::Instant::now();
                }
            }
        }
        if last_check.elapsed() < every && !forced {
            continue;
        }
        last_check = std::time::Instant::now();
        if forced {
            if let Some(d) = reload.debounce {
                // Changes arriving meanwhile only re-arm the notification; they are in this load.
                tokio::time::sleep(d).await;
            }
        }
        let fp = source.origin.fingerprint(&snapshot.load().plan);
        // A config that failed to apply (say its port was taken) is retried without a change.
        if fp == last && !apply_failed && !forced {
            continue;
        }
        last = fp;
        let cur = snapshot.load();
        match source.load() {
            Err((errors, by_kind)) => {
                apply_failed = false;
                log::error!(
                    "--strict: config rejected ({} errors); still serving generation {}",
                    errors.len(),
                    cur.generation
                );
                snapshot.store(Arc::new(cur.rejected(errors, Some(by_kind))));
            }
            Ok(mut c) => {
                // A config that could not be applied (an HTTP port taken, a map full) is
                // reported like a rejected one, so /config_dump says why.
                let t = std::time::Instant::now();
                if let Err(e) = apply(&c.plan, &l7, &path).await {
                    if !apply_failed {
                        log::error!("{e}");
                    }
                    apply_failed = true;
                    snapshot.store(Arc::new(cur.rejected(vec![e], None)));
                    continue;
                }
                apply_failed = false;
                source.admitted = Some(std::mem::take(&mut c.admitted));
                let next = cur.applied(c, t.elapsed());
                let changed = next.generation != cur.generation;
                if changed {
                    log_revision(&next.revision);
                }
                health.set_applied();
                snapshot.store(Arc::new(next));
                drop(cur);
                if changed {
                    crate::l7::overload::shrink_heap();
                }
            }
        }
    }
}
