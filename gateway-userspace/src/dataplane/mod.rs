//! The only module that talks to the kernel's BPF side: loads the XDP object with its maps pinned
//! under the pin root, attaches (or adopts) one pinned link per interface, and applies plans to
//! the maps by diff, make-before-break.
//!
//! Restart story: maps and links live in bpffs, so the program keeps forwarding while no agent
//! runs. A new agent loads the same maps by pin, rebuilds its id tables from them, replaces the
//! program behind each pinned link atomically (BPF_LINK_UPDATE) and reconciles the maps to its
//! plan. Connection-table entries are never touched by an apply.
//!
//! Layout: `mod.rs` loads the object, takes the maps and reads counters; `attach` attaches the
//! program per interface (`ifmode` picks the mode, `bpffs` finds a lasting pin root); `diff`
//! computes, purely, the map writes of an apply (tested without root); `apply` executes them,
//! Maglev rings through a shared mapping of `MAGLEV` (`ring_map`).

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, IterableMap, MapData, PerCpuArray},
    programs::{links::PinnedLink, Xdp},
    Ebpf, EbpfLoader,
};
use gateway_common::{
    maps as names, Addr6, Backend as BpfBackend, Backend6 as BpfBackend6, Counters, CtValue,
    CtValue6, FlowCounters, FlowKey, FlowKey6, IfAddr, ServiceKey, ServiceKey6, ServiceValue,
    SnatPool, PIN_ABI, XDP_PROGRAM, XDP_RESOLVE6_PROGRAM, XDP_RESOLVE_PROGRAM,
};

mod apply;
mod attach;
pub mod bpffs;
pub mod conntrack;
pub mod ct_dump;
pub mod diff;
pub mod ifmode;
mod ring_map;
pub mod snat_pool;

pub use apply::{prime_addrs, prime_neighbours};
pub use ifmode::IfMode;

/// The XDP object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "pins under {root} would not outlive this process: {why}. Mount the host's bpffs \
         (`mount -t bpf bpf /sys/fs/bpf` on the host, or a hostPath volume in a pod), or enter \
         only the network namespace (`nsenter --net=/run/netns/NAME gateway run ...`)"
    )]
    NoBpffs { root: PathBuf, why: String },
    #[error("loading the XDP object (pins under {pins}): {source}")]
    Load {
        pins: PathBuf,
        // Boxed: EbpfError is large and every Result in this module would carry its size.
        source: Box<aya::EbpfError>,
    },
    #[error("program {XDP_PROGRAM}: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("interface {iface}: {what}")]
    Attach { iface: String, what: String },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("next-hop resolver: {0}")]
    Resolver(String),
    #[error("{0}")]
    SnatPool(String),
    #[error("{what}: limit of {limit} reached")]
    Full { what: &'static str, limit: u32 },
}

impl From<diff::Full> for DataplaneError {
    fn from(e: diff::Full) -> Self {
        DataplaneError::Full {
            what: e.what,
            limit: e.limit,
        }
    }
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Per interface, the mode that forwards correctly there: generic on veths (offloaded
    /// checksums), native elsewhere, generic if the driver has no native XDP.
    Auto,
    Native,
    Generic,
}

pub struct Dataplane {
    ebpf: Ebpf,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    services6: HashMap<MapData, ServiceKey6, ServiceValue>,
    backends: Array<MapData, BpfBackend>,
    backends6: Array<MapData, BpfBackend6>,
    maglev: Array<MapData, u32>,
    /// `MAGLEV`'s fd (a dup), for mapping it and for batched ring writes (aya has neither).
    maglev_fd: std::os::fd::OwnedFd,
    /// Whether `MAGLEV` is mmapable (a pin of an older agent may not be): rings are then written
    /// through a mapping, else with one BPF_MAP_UPDATE_BATCH each.
    maglev_mmapable: bool,
    /// False: rings go by syscall even so (`set_ring_mapping`).
    ring_mapping: bool,
    /// `MAGLEV`'s size in elements, as the kernel has it.
    maglev_entries: u32,
    /// The mapping of the rings the running apply writes (see `Dataplane::run`).
    ring_window: Option<ring_map::RingMap>,
    ring_writes: RingWrites,
    /// The XDP program as the kernel verified it.
    program: ProgramStats,
    ifaddrs: HashMap<MapData, u32, IfAddr>,
    ifaddrs6: HashMap<MapData, u32, Addr6>,
    addrs: HashMap<MapData, u32, u32>,
    addrs6: HashMap<MapData, Addr6, u32>,
    ports: Array<MapData, u32>,
    service_stats: PerCpuArray<MapData, Counters>,
    backend_stats: PerCpuArray<MapData, Counters>,
    verdicts: PerCpuArray<MapData, Counters>,
    service_flows: PerCpuArray<MapData, FlowCounters>,
    conntrack: HashMap<MapData, FlowKey, CtValue>,
    conntrack6: HashMap<MapData, FlowKey6, CtValue6>,
    conntrack_new: HashMap<MapData, FlowKey, CtValue>,
    conntrack6_new: HashMap<MapData, FlowKey6, CtValue6>,
    snat_pools: HashMap<MapData, u32, SnatPool>,
    /// The garbage collector's timeouts and what its collections counted.
    pub ct_timeouts: conntrack::CtTimeouts,
    ct_counts: conntrack::CtCounts,
    /// `--snat-pool`, by interface name (resolved to indexes at each address sync).
    pools: Vec<snat_pool::PoolSpec>,
    /// What the maps hold, as far as applies are concerned.
    state: diff::State,
    /// Keeps pinned links open; dropping them does not detach (the pin holds them).
    _links: Vec<PinnedLink>,
    pub attached: Vec<String>,
    /// Each attached interface's mode and why it was chosen.
    pub ifmodes: Vec<IfMode>,
    /// `pass_oversize` packets at the last warning, and its time.
    oversize_seen: (u64, Option<std::time::Instant>),
    pub pin_dir: PathBuf,
}

/// Per-service and per-backend counters, summed over CPUs.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub services: BTreeMap<String, Counters2>,
    pub backends: BTreeMap<String, Counters2>,
    pub verdicts: BTreeMap<&'static str, Counters2>,
    /// Per service (named as `services`): TCP connections opened and closed, bytes each way.
    pub flows: BTreeMap<String, FlowStats>,
    /// The connection tables as of the garbage collector's latest run.
    pub conntrack: conntrack::CtCounts,
    /// The XDP program as loaded: the verifier's work on it and its size.
    pub program: ProgramStats,
}

/// The verifier's processed-instruction count of the XDP program and its headroom under the
/// kernel's limit, kept visible because every feature added to the data path spends some.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: &'static str,
    /// Instructions the verifier processed (`bpf_prog_info.verified_insns`, Linux 5.16+; None
    /// on older kernels).
    pub verified_insns: Option<u32>,
    /// The kernel's limit on processed instructions per program (`BPF_COMPLEXITY_LIMIT_INSNS`).
    pub verifier_limit: u32,
    /// Instructions of the program after the verifier's rewrites (`xlated_prog_len` / 8).
    pub insns: Option<u32>,
    /// Size of the JIT-compiled code (0 without the JIT).
    pub jited_bytes: u32,
}

/// `BPF_COMPLEXITY_LIMIT_INSNS` (Linux 5.2+, for privileged loaders).
pub const VERIFIER_LIMIT: u32 = 1_000_000;

/// Maglev rings written since the dataplane was opened, by path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingWrites {
    /// Through the shared mapping of `MAGLEV`.
    pub mapped: u64,
    /// With BPF_MAP_UPDATE_BATCH (or element by element where that is refused).
    pub syscall: u64,
}

/// A service's flow counters, summed over CPUs; `closed` includes the idle connections the
/// garbage collector ended.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct FlowStats {
    pub opened: u64,
    pub closed: u64,
    /// Client -> backend (Istio's `istio_tcp_received_bytes_total`).
    pub received_bytes: u64,
    /// Backend -> client (Istio's `istio_tcp_sent_bytes_total`).
    pub sent_bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct Counters2 {
    pub packets: u64,
    pub bytes: u64,
}

impl Dataplane {
    /// Loads the object with maps pinned under `pin_root/abi-N`, then attaches to (or adopts the
    /// pinned links of) every interface.
    pub fn open(pin_root: &Path, ifaces: &[String], mode: Mode) -> Result<Self, DataplaneError> {
        attach::enable_lo_forwarding()?;
        let pin_dir = bpffs::prepare(pin_root)?.join(format!("abi-{PIN_ABI}"));
        let links_dir = pin_dir.join("links");
        std::fs::create_dir_all(&links_dir).map_err(|source| DataplaneError::Bpffs {
            path: links_dir.clone(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .load(OBJECT)
            .map_err(|source| DataplaneError::Load {
                pins: pin_dir.clone(),
                source: Box::new(source),
            })?;
        // Log records of rare data-path events (aya-log); absent if the object has none.
        let logger = aya_log::EbpfLogger::init(&mut ebpf)
            .map_err(|e| log::warn!("BPF logger unavailable: {e}"))
            .ok();
        let prog: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(DataplaneError::MissingMap("program"))?
            .try_into()?;
        prog.load()?;
        for name in [XDP_RESOLVE_PROGRAM, XDP_RESOLVE6_PROGRAM] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::MissingMap("resolver program"))?
                .try_into()?;
            p.load()?;
        }
        let prog: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(DataplaneError::MissingMap("program"))?
            .try_into()?;
        let program = program_stats(prog)?;
        match program.verified_insns {
            Some(n) => log::info!(
                "XDP program {XDP_PROGRAM}: {n} instructions processed by the verifier ({:.1}% of \
                 the kernel's {VERIFIER_LIMIT}), {} instructions, {} bytes JIT-compiled",
                100.0 * n as f64 / VERIFIER_LIMIT as f64,
                program.insns.unwrap_or(0),
                program.jited_bytes
            ),
            None => log::info!(
                "XDP program {XDP_PROGRAM}: {} instructions, {} bytes JIT-compiled (this kernel \
                 does not report the verifier's count: Linux 5.16+)",
                program.insns.unwrap_or(0),
                program.jited_bytes
            ),
        }
        let mut links = Vec::new();
        let mut attached = Vec::new();
        let mut ifmodes = Vec::new();
        for iface in ifaces {
            match attach::attach_one(prog, iface, &links_dir, mode) {
                Ok((pinned, m)) => {
                    log::info!(
                        "XDP on {iface}: {} mode (driver {:?}: {})",
                        m.mode,
                        m.driver,
                        m.reason
                    );
                    if m.flags & gateway_common::if_flags::CSUM_SEED != 0 {
                        ifmode::accept_local(iface);
                    }
                    links.push(pinned);
                    attached.push(iface.clone());
                    ifmodes.push(m);
                }
                Err(e) => {
                    // All or nothing: detach what this call attached, so a half-attached data
                    // path never runs beside the userspace fallback.
                    for l in links {
                        let _ = l.unpin();
                    }
                    return Err(e);
                }
            }
        }
        // Interfaces a previous agent served but this one is not asked to: detach them.
        if let Ok(rd) = std::fs::read_dir(&links_dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !ifaces.contains(&name) {
                    log::info!("detaching XDP from {name}: no longer in --iface");
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name))
        };
        let services: HashMap<MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(take(&mut ebpf, names::SERVICES)?)
                .map_err(map_err(names::SERVICES))?;
        let backends: Array<MapData, BpfBackend> =
            Array::try_from(take(&mut ebpf, names::BACKENDS)?).map_err(map_err(names::BACKENDS))?;
        let services6: HashMap<MapData, ServiceKey6, ServiceValue> =
            HashMap::try_from(take(&mut ebpf, names::SERVICES6)?)
                .map_err(map_err(names::SERVICES6))?;
        let backends6: Array<MapData, BpfBackend6> =
            Array::try_from(take(&mut ebpf, names::BACKENDS6)?)
                .map_err(map_err(names::BACKENDS6))?;
        let ifaddrs6 = HashMap::try_from(take(&mut ebpf, names::IFADDRS6)?)
            .map_err(map_err(names::IFADDRS6))?;
        let addrs6 =
            HashMap::try_from(take(&mut ebpf, names::ADDRS6)?).map_err(map_err(names::ADDRS6))?;
        let maglev_map = take(&mut ebpf, names::MAGLEV)?;
        let maglev_fd = match &maglev_map {
            aya::maps::Map::Array(d) => {
                use std::os::fd::AsFd as _;
                d.fd()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|source| DataplaneError::Bpffs {
                        path: std::path::PathBuf::from(names::MAGLEV),
                        source,
                    })?
            }
            _ => return Err(DataplaneError::MissingMap(names::MAGLEV)),
        };
        let maglev: Array<MapData, u32> =
            Array::try_from(maglev_map).map_err(map_err(names::MAGLEV))?;
        let maglev_info = IterableMap::map(&maglev)
            .info()
            .map_err(map_err(names::MAGLEV))?;
        let maglev_mmapable = maglev_info.map_flags() & gateway_common::MAGLEV_MAP_FLAGS != 0
            && maglev_info.value_size() == 4;
        if maglev_mmapable {
            log::info!(
                "{}: Maglev rings written through a shared mapping",
                names::MAGLEV
            );
        } else {
            log::warn!(
                "{}: the pinned map is not mmapable (flags {:#x}, left by an older agent?): Maglev \
                 rings written with one map update per ring, about 1.5 ms each",
                names::MAGLEV,
                maglev_info.map_flags()
            );
        }
        let ifaddrs =
            HashMap::try_from(take(&mut ebpf, names::IFADDRS)?).map_err(map_err(names::IFADDRS))?;
        let ports =
            Array::try_from(take(&mut ebpf, names::PORTS)?).map_err(map_err(names::PORTS))?;
        let addrs =
            HashMap::try_from(take(&mut ebpf, names::ADDRS)?).map_err(map_err(names::ADDRS))?;
        let service_stats = PerCpuArray::try_from(take(&mut ebpf, names::SERVICE_STATS)?)
            .map_err(map_err(names::SERVICE_STATS))?;
        let backend_stats = PerCpuArray::try_from(take(&mut ebpf, names::BACKEND_STATS)?)
            .map_err(map_err(names::BACKEND_STATS))?;
        let verdicts = PerCpuArray::try_from(take(&mut ebpf, names::VERDICTS)?)
            .map_err(map_err(names::VERDICTS))?;
        let service_flows = PerCpuArray::try_from(take(&mut ebpf, names::SERVICE_FLOWS)?)
            .map_err(map_err(names::SERVICE_FLOWS))?;
        let conntrack = HashMap::try_from(take(&mut ebpf, names::CONNTRACK)?)
            .map_err(map_err(names::CONNTRACK))?;
        let conntrack6 = HashMap::try_from(take(&mut ebpf, names::CONNTRACK6)?)
            .map_err(map_err(names::CONNTRACK6))?;
        let conntrack_new = HashMap::try_from(take(&mut ebpf, names::CONNTRACK_NEW)?)
            .map_err(map_err(names::CONNTRACK_NEW))?;
        let conntrack6_new = HashMap::try_from(take(&mut ebpf, names::CONNTRACK6_NEW)?)
            .map_err(map_err(names::CONNTRACK6_NEW))?;
        let snat_pools = HashMap::try_from(take(&mut ebpf, names::SNAT_POOLS)?)
            .map_err(map_err(names::SNAT_POOLS))?;

        let mut dp = Dataplane {
            ebpf,
            logger,
            services,
            services6,
            backends,
            backends6,
            maglev,
            maglev_fd,
            maglev_mmapable,
            ring_mapping: true,
            maglev_entries: maglev_info.max_entries(),
            ring_window: None,
            ring_writes: RingWrites::default(),
            program,
            ifaddrs,
            ifaddrs6,
            addrs,
            addrs6,
            ports,
            service_stats,
            backend_stats,
            verdicts,
            service_flows,
            conntrack,
            conntrack6,
            conntrack_new,
            conntrack6_new,
            snat_pools,
            ct_timeouts: conntrack::CtTimeouts::default(),
            ct_counts: conntrack::CtCounts::default(),
            pools: Vec::new(),
            state: diff::State::default(),
            _links: links,
            attached,
            ifmodes,
            oversize_seen: (0, None),
            pin_dir,
        };
        dp.adopt()?;
        Ok(dp)
    }

    /// Rebuilds the id tables from pinned maps left by a previous agent, so ids stay stable.
    fn adopt(&mut self) -> Result<(), DataplaneError> {
        let mut services = self
            .services
            .iter()
            .map(|r| r.map(|(k, v)| (diff::SvcKey::V4(k), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(names::SERVICES))?;
        for r in self.services6.iter() {
            let (k, v) = r.map_err(map_err(names::SERVICES6))?;
            services.push((diff::SvcKey::V6(k), v));
        }
        let ports = self
            .ports
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(names::PORTS))?;
        let mut backends = Vec::new();
        for (id, b) in self.backends.iter().enumerate() {
            let b = b.map_err(map_err(names::BACKENDS))?;
            if b.addr != 0 {
                let addr = IpAddr::from(Ipv4Addr::from(u32::from_be(b.addr)));
                backends.push((id as u32, (addr, u16::from_be(b.port))));
            }
        }
        for (id, b) in self.backends6.iter().enumerate() {
            let b = b.map_err(map_err(names::BACKENDS6))?;
            if b.addr != [0; 4] {
                let addr = IpAddr::from(Ipv6Addr::from(gateway_common::addr6_bytes(b.addr)));
                backends.push((id as u32, (addr, u16::from_be(b.port))));
            }
        }
        self.state = diff::State::adopt(services, ports, backends, std::time::Instant::now());
        if !self.state.applied.is_empty() {
            log::info!(
                "adopted pinned state: {} services, {} backends",
                self.state.applied.len(),
                self.state.backend_ids.len()
            );
        }
        Ok(())
    }

    /// The BPF log reader, for the agent to poll (readable fd -> `flush`).
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// Runs the attached program once on `packet` through BPF_PROG_TEST_RUN (one call per packet:
    /// a forwarding program rewrites its input, so repeats would run on the rewritten packet).
    /// Returns the XDP action, the output packet and the kernel-measured run time.
    pub fn test_run(
        &mut self,
        packet: &[u8],
    ) -> Result<(u32, Vec<u8>, std::time::Duration), DataplaneError> {
        self.test_run_on(packet, 0)
    }

    /// [`Dataplane::test_run`] as if `packet` arrived on `ifindex` (0: the kernel's default,
    /// loopback), which must exist in this network namespace.
    pub fn test_run_on(
        &mut self,
        packet: &[u8],
        ifindex: u32,
    ) -> Result<(u32, Vec<u8>, std::time::Duration), DataplaneError> {
        use aya::programs::{TestRun, TestRunOptions};
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(DataplaneError::MissingMap("program"))?
            .try_into()?;
        let mut out = vec![0u8; packet.len() + 256];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex; the kernel wants data_end = the packet's length.
        let mut md = [0u8; 24];
        md[4..8].copy_from_slice(&(packet.len() as u32).to_ne_bytes());
        md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(packet);
        opts.data_out = Some(&mut out);
        if ifindex != 0 {
            opts.ctx_in = Some(&md);
        }
        let r = prog.test_run(opts)?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out, r.duration))
    }

    /// `repeat` runs of the attached program on `packet` in one BPF_PROG_TEST_RUN call, as
    /// Katran's tester times its program: returns the last run's XDP action and the kernel's
    /// mean run time (total / repeat). The runs share one buffer, so a program that rewrites
    /// the packet runs on its own output from the second run on.
    pub fn test_run_repeat(
        &mut self,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), DataplaneError> {
        use aya::programs::{TestRun, TestRunOptions};
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(DataplaneError::MissingMap("program"))?
            .try_into()?;
        let mut out = vec![0u8; packet.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(packet);
        opts.data_out = Some(&mut out);
        opts.repeat = repeat;
        let r = prog.test_run(opts)?;
        Ok((r.return_value, r.duration))
    }

    /// Logs (at most once a minute) when packets were too long for an XDP redirect since the
    /// last call: they depend on the kernel's forwarding, which a node may have off.
    pub fn warn_oversize(&mut self) {
        let Ok(n) = sum(&self.verdicts, gateway_common::verdict::PASS_OVERSIZE) else {
            return;
        };
        let (seen, at) = self.oversize_seen;
        if n.packets > seen && at.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60))
        {
            let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
            log::warn!(
                "{} packets longer than the egress MTU passed to the kernel (pass_oversize): GSO \
                 packets from a veth peer with TSO on, seen whole in generic XDP mode; {}",
                n.packets - seen,
                if fwd.trim() == "1" {
                    "the kernel forwards them (slow path)"
                } else {
                    "forwarding is off on this node, so they are dropped: enable it, or turn off \
                     TSO/GSO on the peers (ethtool -K IF tso off gso off)"
                }
            );
            self.oversize_seen = (n.packets, Some(std::time::Instant::now()));
        }
    }

    pub fn stats(&self) -> Result<Stats, DataplaneError> {
        let mut st = Stats::default();
        for (key, a) in &self.state.applied {
            let name = format!(
                "{}/{}",
                SocketAddr::new(key.addr(), key.port()),
                if key.proto() == gateway_common::PROTO_UDP {
                    "udp"
                } else {
                    "tcp"
                }
            );
            st.services
                .insert(name.clone(), sum(&self.service_stats, a.value.id)?);
            let f = sum_flows(&self.service_flows, a.value.id)?;
            let idle = self
                .ct_counts
                .idle_closed
                .get(&a.value.id)
                .copied()
                .unwrap_or(0);
            st.flows.insert(
                name,
                FlowStats {
                    opened: f.opened,
                    closed: f.closed + idle,
                    received_bytes: f.rx_bytes,
                    sent_bytes: f.tx_bytes,
                },
            );
        }
        for ((addr, port), id) in &self.state.backend_ids {
            let name = SocketAddr::new(*addr, *port).to_string();
            st.backends.insert(name, sum(&self.backend_stats, *id)?);
        }
        for (i, name) in gateway_common::verdict::NAMES.iter().enumerate() {
            st.verdicts.insert(name, sum(&self.verdicts, i as u32)?);
        }
        st.conntrack = self.ct_counts.clone();
        st.program = self.program.clone();
        Ok(st)
    }

    /// The XDP program as loaded (verifier count, size).
    pub fn program(&self) -> &ProgramStats {
        &self.program
    }

    /// Whether rings are written through the mapping of `MAGLEV` (`on`, the default, and the map
    /// is mmapable) or by syscall; returns which is now in effect. Off: the bench's same-run
    /// comparison and the tests of the syscall path.
    pub fn set_ring_mapping(&mut self, on: bool) -> bool {
        self.ring_mapping = on;
        on && self.maglev_mmapable
    }

    /// How many Maglev rings were written through the mapping and how many by syscall.
    pub fn ring_writes(&self) -> RingWrites {
        self.ring_writes
    }

    /// One run of the connection tables' garbage collector (both families, both tables):
    /// deletes the flows idle past their state's timeout (`ct_timeouts`), both entries of each.
    pub fn collect_conntrack(&mut self) -> Result<(), DataplaneError> {
        let t = self.ct_timeouts;
        let now = conntrack::now_ns();
        let mut c = std::mem::take(&mut self.ct_counts);
        c.entries.clear();
        let mut snat = Vec::new();
        let r = (|| {
            conntrack::collect(
                &mut self.conntrack,
                names::CONNTRACK,
                "ipv4",
                true,
                &t,
                now,
                &mut c,
                &mut snat,
            )?;
            conntrack::collect(
                &mut self.conntrack_new,
                names::CONNTRACK_NEW,
                "ipv4",
                false,
                &t,
                now,
                &mut c,
                &mut snat,
            )?;
            conntrack::collect(
                &mut self.conntrack6,
                names::CONNTRACK6,
                "ipv6",
                true,
                &t,
                now,
                &mut c,
                &mut snat,
            )?;
            conntrack::collect(
                &mut self.conntrack6_new,
                names::CONNTRACK6_NEW,
                "ipv6",
                false,
                &t,
                now,
                &mut c,
                &mut snat,
            )
        })();
        c.snat = ct_dump::snat_use(snat, &self.pools, &interface_addrs());
        self.ct_counts = c;
        r
    }
}

fn sum_flows(
    map: &PerCpuArray<MapData, FlowCounters>,
    id: u32,
) -> Result<FlowCounters, DataplaneError> {
    let v = map.get(&id, 0).map_err(map_err(names::SERVICE_FLOWS))?;
    Ok(v.iter().fold(FlowCounters::default(), |a, c| FlowCounters {
        opened: a.opened + c.opened,
        closed: a.closed + c.closed,
        rx_bytes: a.rx_bytes + c.rx_bytes,
        tx_bytes: a.tx_bytes + c.tx_bytes,
    }))
}

/// Removes every pin under `pin_root` (links first, so the programs detach), for `--cleanup`.
pub fn remove_pins(pin_root: &Path) -> std::io::Result<()> {
    // The same place the agent pinned in, also from inside `ip netns exec`.
    let root = bpffs::locate(pin_root)
        .map(|l| l.path().to_path_buf())
        .unwrap_or_else(|_| pin_root.to_path_buf());
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    Ok(())
}

/// How long a removed service's port keeps reaching the connection table (Istio's default
/// listener drain duration).
pub const DRAIN_PERIOD: std::time::Duration = std::time::Duration::from_secs(45);

fn sum(map: &PerCpuArray<MapData, Counters>, id: u32) -> Result<Counters2, DataplaneError> {
    let v = map.get(&id, 0).map_err(map_err("stats"))?;
    Ok(v.iter().fold(Counters2::default(), |a, c| Counters2 {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    }))
}

/// ifindex -> addresses of every interface in this network namespace: IPv4 first (primary
/// first), then IPv6 without link-local ones (they are neither VIPs nor SNAT sources).
pub fn interface_addrs() -> StdHashMap<u32, Vec<IpAddr>> {
    let mut out: StdHashMap<u32, Vec<IpAddr>> = StdHashMap::new();
    let mut v6: Vec<(u32, IpAddr)> = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // Safety: getifaddrs/freeifaddrs pair; pointers only read while the list is alive.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() {
                continue;
            }
            let idx = libc::if_nametoindex(ifa.ifa_name);
            if idx == 0 {
                continue;
            }
            match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let a = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    out.entry(idx).or_default().push(a.into());
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let a = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    if !a.is_unicast_link_local() {
                        v6.push((idx, a.into()));
                    }
                }
                _ => {}
            }
        }
        libc::freeifaddrs(ifap);
    }
    for (idx, a) in v6 {
        out.entry(idx).or_default().push(a);
    }
    out
}

/// Addresses of the named interfaces, both families (the default VIPs).
pub fn addrs_of(ifaces: &[String]) -> Vec<IpAddr> {
    let all = interface_addrs();
    let mut v: Vec<IpAddr> = ifaces
        .iter()
        .filter_map(|name| {
            let c = std::ffi::CString::new(name.as_str()).ok()?;
            // SAFETY: c is a NUL-terminated name that outlives the call.
            let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
            all.get(&idx).cloned()
        })
        .flatten()
        .collect();
    v.sort();
    v.dedup();
    v
}

/// What the kernel reports of the loaded program `prog`.
fn program_stats(prog: &Xdp) -> Result<ProgramStats, DataplaneError> {
    let info = prog.info()?;
    Ok(ProgramStats {
        name: XDP_PROGRAM,
        verified_insns: info.verified_instruction_count(),
        verifier_limit: VERIFIER_LIMIT,
        insns: info.size_translated().map(|b| b / 8),
        jited_bytes: info.size_jitted(),
    })
}
