//! The only module that talks to the kernel's BPF side: loads the XDP object with its maps pinned
//! under the pin root, attaches (or adopts) one pinned link per interface, and applies plans to
//! the maps by diff, make-before-break.
//!
//! Restart story: maps and links live in bpffs, so the program keeps forwarding while no agent
//! runs. A new agent loads the same maps by pin, rebuilds its id tables from them, replaces the
//! program behind each pinned link atomically (BPF_LINK_UPDATE) and reconciles the maps to its
//! plan. Connection-table entries are never touched by an apply.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap as StdHashMap},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{links::FdLink, links::PinnedLink, xdp::XdpLink, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use gateway_common::{
    addr_flags, maps as names, port_flags, svc_flags, Backend as BpfBackend, Counters, IfAddr,
    ResolveBatch, ServiceKey, ServiceValue, MAGLEV_RING, MAX_BACKENDS, MAX_RINGS, MAX_SERVICES,
    PIN_ABI, XDP_PROGRAM, XDP_RESOLVE_PROGRAM,
};

pub mod bpffs;
pub mod ifmode;

pub use ifmode::IfMode;

use crate::{
    maglev,
    plan::{HashMode, L4Service, NatMode, Plan},
};

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
    #[error("{what}: limit of {limit} reached")]
    Full { what: &'static str, limit: u32 },
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

/// What the data plane holds for one service, as last applied.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Applied {
    value: ServiceValue,
    /// Backend ids in ring order (empty for local ports and services without backends).
    ring: Vec<u32>,
}

pub struct Dataplane {
    ebpf: Ebpf,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: Array<MapData, BpfBackend>,
    maglev: Array<MapData, u32>,
    ifaddrs: HashMap<MapData, u32, IfAddr>,
    addrs: HashMap<MapData, u32, u32>,
    ports: Array<MapData, u32>,
    /// Non-zero `PORTS` entries as last written (`port_flags`).
    port_values: BTreeMap<u32, u32>,
    /// L4 ports of removed services, open until their drain period ends.
    draining: BTreeMap<u32, std::time::Instant>,
    service_stats: PerCpuArray<MapData, Counters>,
    backend_stats: PerCpuArray<MapData, Counters>,
    verdicts: PerCpuArray<MapData, Counters>,
    applied: BTreeMap<ServiceKey, Applied>,
    backend_ids: BTreeMap<(u32, u16), u32>,
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
        enable_lo_forwarding()?;
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
        let resolver: &mut Xdp = ebpf
            .program_mut(XDP_RESOLVE_PROGRAM)
            .ok_or(DataplaneError::MissingMap("resolver program"))?
            .try_into()?;
        resolver.load()?;
        let prog: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(DataplaneError::MissingMap("program"))?
            .try_into()?;
        let mut links = Vec::new();
        let mut attached = Vec::new();
        let mut ifmodes = Vec::new();
        for iface in ifaces {
            match attach_one(prog, iface, &links_dir, mode) {
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
        let maglev =
            Array::try_from(take(&mut ebpf, names::MAGLEV)?).map_err(map_err(names::MAGLEV))?;
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

        let mut dp = Dataplane {
            ebpf,
            logger,
            services,
            backends,
            maglev,
            ifaddrs,
            addrs,
            ports,
            port_values: BTreeMap::new(),
            draining: BTreeMap::new(),
            service_stats,
            backend_stats,
            verdicts,
            applied: BTreeMap::new(),
            backend_ids: BTreeMap::new(),
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
        for item in self.services.iter() {
            let (k, v) = item.map_err(map_err(names::SERVICES))?;
            // The ring content is not read back: it is rewritten once into a spare slot.
            let ring = if v.backend_count > 0 {
                vec![u32::MAX]
            } else {
                Vec::new()
            };
            self.applied.insert(k, Applied { value: v, ring });
        }
        // Open L4 ports no adopted L4 service uses belong to services removed before the
        // restart: give them a fresh drain period.
        let used: BTreeSet<u32> = self
            .applied
            .iter()
            .filter(|(_, a)| a.value.flags & svc_flags::LOCAL == 0)
            .map(|(k, _)| port_of(k))
            .collect();
        let now = std::time::Instant::now();
        for (idx, v) in self.ports.iter().enumerate() {
            let idx = idx as u32;
            let v = v.map_err(map_err(names::PORTS))?;
            if v != 0 {
                self.port_values.insert(idx, v);
            }
            if v & port_flags::L4 != 0 && !used.contains(&idx) {
                self.draining.insert(idx, now);
            }
        }
        for (i, b) in self.backends.iter().enumerate() {
            let b = b.map_err(map_err(names::BACKENDS))?;
            if b.addr != 0 {
                self.backend_ids.insert((b.addr, b.port), i as u32);
            }
        }
        if !self.applied.is_empty() {
            log::info!(
                "adopted pinned state: {} services, {} backends",
                self.applied.len(),
                self.backend_ids.len()
            );
        }
        Ok(())
    }

    /// The BPF log reader, for the agent to poll (readable fd -> `flush`).
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// Publishes the IPv4 address of every interface (SNAT source per egress interface) and
    /// the checksum handling of each attached one (`if_flags`; an attached interface without an
    /// address gets an entry with address 0, which is never a SNAT source).
    pub fn sync_ifaddrs(&mut self) -> Result<(), DataplaneError> {
        let addrs = interface_addrs();
        let mut want: BTreeMap<u32, IfAddr> = addrs
            .iter()
            .map(|(idx, a)| {
                let v = IfAddr {
                    addr: u32::from(a[0]).to_be(),
                    flags: 0,
                };
                (*idx, v)
            })
            .collect();
        for m in &self.ifmodes {
            // Looked up again: an interface re-created under the same name has a new index.
            if let Some(idx) = ifmode::ifindex(&m.iface) {
                want.entry(idx)
                    .or_insert(IfAddr { addr: 0, flags: 0 })
                    .flags = m.flags;
            }
        }
        let have: Vec<u32> = self.ifaddrs.keys().filter_map(Result::ok).collect();
        for (idx, v) in &want {
            if self.ifaddrs.get(idx, 0).ok() != Some(*v) {
                self.ifaddrs
                    .insert(idx, v, 0)
                    .map_err(map_err(names::IFADDRS))?;
            }
        }
        for idx in have {
            if !want.contains_key(&idx) {
                let _ = self.ifaddrs.remove(&idx);
            }
        }
        self.sync_addrs(&addrs)
    }

    /// Closes the ports whose drain period is over (called periodically by the agent).
    pub fn expire_drains(&mut self) -> Result<(), DataplaneError> {
        let due: Vec<u32> = self
            .draining
            .iter()
            .filter(|(_, since)| since.elapsed() >= DRAIN_PERIOD)
            .map(|(idx, _)| *idx)
            .collect();
        let mut want = self.port_values.clone();
        for idx in due {
            self.draining.remove(&idx);
            if let Some(v) = want.get_mut(&idx) {
                *v &= !port_flags::L4;
            }
        }
        self.write_ports(&want)
    }

    /// Brings `PORTS` to `want` (absent = 0), writing only the entries that change.
    fn write_ports(&mut self, want: &BTreeMap<u32, u32>) -> Result<(), DataplaneError> {
        let idxs: BTreeSet<u32> = want
            .keys()
            .chain(self.port_values.keys())
            .copied()
            .collect();
        for idx in idxs {
            let (old, new) = (
                self.port_values.get(&idx).copied().unwrap_or(0),
                want.get(&idx).copied().unwrap_or(0),
            );
            if old != new {
                self.ports.set(idx, new, 0).map_err(map_err(names::PORTS))?;
            }
            if new == 0 {
                self.port_values.remove(&idx);
            } else {
                self.port_values.insert(idx, new);
            }
        }
        Ok(())
    }

    /// Resolves every backend's next hop (egress interface, MACs, SNAT address) into `BACKENDS`
    /// with the kernel's FIB, through the resolver program, so that no packet pays for a FIB
    /// lookup. Called after each apply and about once a second. Returns the backends that could
    /// not be resolved (no route or no neighbour entry yet): the caller primes their neighbours,
    /// and the data path asks the FIB per flow for them meanwhile.
    pub fn refresh_next_hops(&mut self) -> Result<Vec<Ipv4Addr>, DataplaneError> {
        let all: BTreeMap<u32, u32> = self
            .backend_ids
            .iter()
            .map(|((addr, _), id)| (*id, *addr))
            .collect();
        self.resolve_next_hops(&all)
    }

    /// Resolves the next hops of the backends `by_id` (id -> address, network order); returns
    /// the addresses that could not be resolved.
    fn resolve_next_hops(
        &mut self,
        by_id: &BTreeMap<u32, u32>,
    ) -> Result<Vec<Ipv4Addr>, DataplaneError> {
        use aya::programs::{TestRun, TestRunOptions};
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(XDP_RESOLVE_PROGRAM)
            .ok_or(DataplaneError::MissingMap("resolver program"))?
            .try_into()?;
        let mut unresolved = BTreeSet::new();
        // One run per backend, repeat = 1: a run with repeat > 1 swaps the program in and out
        // of the kernel's XDP dispatcher (two live text patches and RCU grace periods per call),
        // which made a refresh of 100,000 backends take tens of seconds.
        for (id, addr) in by_id {
            let batch = ResolveBatch {
                first: *id,
                ..Default::default()
            };
            // Safety: ResolveBatch is plain #[repr(C)] data without padding holes.
            let input: [u8; 32] = unsafe { std::mem::transmute(batch) };
            let mut out = [0u8; 32 + 256];
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(&input);
            opts.data_out = Some(&mut out);
            opts.repeat = 1;
            prog.test_run(opts)?;
            let done = u32::from_ne_bytes(out[20..24].try_into().expect("4 bytes"));
            if done != 1 {
                return Err(DataplaneError::Resolver(format!(
                    "backend id {id}: the resolver ran {done} times, not once"
                )));
            }
            let bits = u64::from_ne_bytes(out[24..32].try_into().expect("8 bytes"));
            if bits & 1 != 0 {
                unresolved.insert(Ipv4Addr::from(u32::from_be(*addr)));
            }
        }
        Ok(unresolved.into_iter().collect())
    }

    /// Brings `ADDRS` to the node's own addresses (`ifaces`, from `interface_addrs`), removing
    /// the rest.
    fn sync_addrs(
        &mut self,
        ifaces: &StdHashMap<u32, Vec<Ipv4Addr>>,
    ) -> Result<(), DataplaneError> {
        let mut want: BTreeMap<u32, u32> = BTreeMap::new();
        for a in ifaces.values().flatten() {
            *want.entry(u32::from(*a).to_be()).or_default() |= addr_flags::NODE;
        }
        for (a, f) in &want {
            if self.addrs.get(a, 0).ok() != Some(*f) {
                self.addrs.insert(a, f, 0).map_err(map_err(names::ADDRS))?;
            }
        }
        let have: Vec<u32> = self.addrs.keys().filter_map(Result::ok).collect();
        for a in have {
            if !want.contains_key(&a) {
                let _ = self.addrs.remove(&a);
            }
        }
        Ok(())
    }

    /// Applies `plan` by diff: backends first, new rings beside live ones, then the switch of each
    /// service entry, deletions last.
    pub fn apply(&mut self, plan: &Plan) -> Result<(), DataplaneError> {
        self.sync_ifaddrs()?;
        prime_neighbours(plan);

        // 1. Backends: keep ids of known (addr, port), allocate the lowest free id for new ones.
        let wanted: BTreeSet<(u32, u16)> = plan
            .l4
            .iter()
            .flat_map(|s| s.backends.iter())
            .map(|b| (u32::from(b.addr).to_be(), b.port.to_be()))
            .collect();
        let mut used: BTreeSet<u32> = self.backend_ids.values().copied().collect();
        let mut backend_cursor = 0;
        let mut new_backends: BTreeMap<u32, u32> = BTreeMap::new();
        for key in &wanted {
            if self.backend_ids.contains_key(key) {
                continue;
            }
            let id = next_free(&used, &mut backend_cursor, MAX_BACKENDS).ok_or(
                DataplaneError::Full {
                    what: "backends",
                    limit: MAX_BACKENDS,
                },
            )?;
            used.insert(id);
            self.backends
                .set(id, BpfBackend::new(key.0, key.1), 0)
                .map_err(map_err(names::BACKENDS))?;
            reset_counter(&mut self.backend_stats, id)?;
            self.backend_ids.insert(*key, id);
            new_backends.insert(id, key.0);
        }

        // 2. Services: desired entries with their rings.
        let mut desired: BTreeMap<ServiceKey, (u32, Vec<u32>)> = BTreeMap::new();
        for s in &plan.l4 {
            let ring: Vec<u32> = maglev::build(&s.backends, MAGLEV_RING)
                .into_iter()
                .map(|i| {
                    let b = &s.backends[i as usize];
                    self.backend_ids[&(u32::from(b.addr).to_be(), b.port.to_be())]
                })
                .collect();
            desired.insert(
                service_key(s.vip, s.port, s.proto.number()),
                (l4_flags(s), ring),
            );
        }
        for l in &plan.local {
            desired
                .entry(service_key(l.vip, l.port, gateway_common::PROTO_TCP))
                .or_insert((svc_flags::LOCAL, Vec::new()));
        }

        // New backends get their next hop before any service points at them (known ones are
        // kept fresh by the agent's periodic refresh). Those not resolved yet are looked up per
        // flow until then.
        self.resolve_next_hops(&new_backends)?;

        // The port filter opens new ports before their services exist (make before break);
        // L4 ports no longer used are closed after a drain period (`expire_drains`).
        let l4_ports = |m: &mut dyn Iterator<Item = (&ServiceKey, u32)>| -> BTreeSet<u32> {
            m.filter(|(_, f)| f & svc_flags::LOCAL == 0)
                .map(|(k, _)| port_of(k))
                .collect()
        };
        let ports_before = l4_ports(&mut self.applied.iter().map(|(k, a)| (k, a.value.flags)));
        let ports_after = l4_ports(&mut desired.iter().map(|(k, (f, _))| (k, *f)));
        let mut want_ports = plan_ports(plan, &desired);
        let mut opening = self.port_values.clone();
        for (idx, f) in &want_ports {
            *opening.entry(*idx).or_default() |= f;
        }
        self.write_ports(&opening)?;

        let mut ids_used: BTreeSet<u32> = self.applied.values().map(|a| a.value.id).collect();
        let mut rings_used: BTreeSet<u32> = self
            .applied
            .values()
            .filter(|a| !a.ring.is_empty())
            .map(|a| a.value.ring)
            .collect();
        let (mut id_cursor, mut ring_cursor) = (0, 0);
        for (key, (flags, ring)) in &desired {
            let old = self.applied.get(key).cloned();
            if let Some(o) = &old {
                if o.value.flags == *flags && &o.ring == ring {
                    continue;
                }
            }
            let id = match &old {
                Some(o) => o.value.id,
                None => {
                    let id = next_free(&ids_used, &mut id_cursor, MAX_SERVICES).ok_or(
                        DataplaneError::Full {
                            what: "services",
                            limit: MAX_SERVICES,
                        },
                    )?;
                    ids_used.insert(id);
                    reset_counter(&mut self.service_stats, id)?;
                    id
                }
            };
            let mut slot = 0;
            if !ring.is_empty() {
                slot = next_free(&rings_used, &mut ring_cursor, MAX_RINGS).ok_or(
                    DataplaneError::Full {
                        what: "maglev rings",
                        limit: MAX_RINGS,
                    },
                )?;
                rings_used.insert(slot);
                for (i, bid) in ring.iter().enumerate() {
                    self.maglev
                        .set(slot * MAGLEV_RING + i as u32, bid, 0)
                        .map_err(map_err(names::MAGLEV))?;
                }
            }
            let value = ServiceValue {
                id,
                ring: slot,
                flags: *flags,
                backend_count: count_distinct(ring),
            };
            // The switch: one map update moves the service to its new ring.
            self.services
                .insert(key, value, 0)
                .map_err(map_err(names::SERVICES))?;
            if let Some(o) = old {
                if !o.ring.is_empty() {
                    rings_used.remove(&o.value.ring);
                }
            }
            self.applied.insert(
                *key,
                Applied {
                    value,
                    ring: ring.clone(),
                },
            );
        }

        // 3. Deletions last: services gone from the plan, then backends nothing refers to.
        let gone: Vec<ServiceKey> = self
            .applied
            .keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            let _ = self.services.remove(&key);
            self.applied.remove(&key);
        }
        // A removed service's port stays open for a drain period, so its established flows keep
        // reaching the connection table (a config change never drops a connection at once).
        let now = std::time::Instant::now();
        for idx in ports_before.difference(&ports_after) {
            self.draining.insert(*idx, now);
        }
        for idx in &ports_after {
            self.draining.remove(idx);
        }
        for idx in self.draining.keys() {
            *want_ports.entry(*idx).or_default() |= port_flags::L4;
        }
        self.write_ports(&want_ports)?;
        let stale: Vec<(u32, u16)> = self
            .backend_ids
            .keys()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        for key in stale {
            if let Some(id) = self.backend_ids.remove(&key) {
                // Established flows carry their own rewrite and keep going.
                self.backends
                    .set(id, BpfBackend::default(), 0)
                    .map_err(map_err(names::BACKENDS))?;
            }
        }
        self.sync_addrs(&interface_addrs())?;
        Ok(())
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
        for (key, a) in &self.applied {
            let name = format!(
                "{}:{}/{}",
                Ipv4Addr::from(u32::from_be(key.addr)),
                u16::from_be(key.port),
                if key.proto == gateway_common::PROTO_UDP {
                    "udp"
                } else {
                    "tcp"
                }
            );
            st.services
                .insert(name, sum(&self.service_stats, a.value.id)?);
        }
        for ((addr, port), id) in &self.backend_ids {
            let name = format!(
                "{}:{}",
                Ipv4Addr::from(u32::from_be(*addr)),
                u16::from_be(*port)
            );
            st.backends.insert(name, sum(&self.backend_stats, *id)?);
        }
        for (i, name) in gateway_common::verdict::NAMES.iter().enumerate() {
            st.verdicts.insert(name, sum(&self.verdicts, i as u32)?);
        }
        Ok(st)
    }
}

/// Attaches `prog` to `iface` in the mode that forwards correctly there (`ifmode`), or swaps
/// it into the link a previous agent pinned there if that link has the same mode, and pins the
/// link. A pinned link in another mode is replaced (the maps, and so the flows, stay).
fn attach_one(
    prog: &mut Xdp,
    iface: &String,
    links_dir: &Path,
    mode: Mode,
) -> Result<(PinnedLink, IfMode), DataplaneError> {
    let attach = |what: String| DataplaneError::Attach {
        iface: iface.clone(),
        what,
    };
    let driver = ifmode::driver(iface).unwrap_or_else(|e| {
        log::warn!("{iface}: driver unknown (ETHTOOL_GDRVINFO: {e})");
        String::new()
    });
    let (want, mut reason, fallback) = ifmode::choose(&driver, mode);
    let link_path = links_dir.join(iface);
    let mut chosen = want;
    let mut adopted = None;
    if link_path.exists() {
        let idx = ifmode::ifindex(iface).ok_or_else(|| attach("no such interface".into()))?;
        let current = ifmode::attached_mode(idx)
            .map_err(|e| attach(format!("reading its XDP state: {e}")))?;
        let fd: FdLink = PinnedLink::from_pin(&link_path)
            .map_err(|e| attach(format!("opening pinned link: {e}")))?
            .unpin()
            .map_err(|e| attach(format!("unpinning link: {e}")))?;
        let same = match current {
            Some(XdpMode::Skb) => matches!(want, XdpMode::Skb),
            Some(XdpMode::Driver) => matches!(want, XdpMode::Driver),
            _ => false,
        };
        // A previous agent's generic fallback (native refused by the driver) is kept as well.
        let kept_fallback = fallback && matches!(current, Some(XdpMode::Skb));
        if same || kept_fallback {
            // Adopt: swap our program into the running link; traffic never stops.
            let link = XdpLink::try_from(fd).map_err(|e| attach(format!("pinned link: {e}")))?;
            if let Some(c) = current {
                chosen = c;
            }
            if kept_fallback && !same {
                reason = format!("{reason}; kept the generic link of the previous agent");
            }
            adopted = Some(
                prog.attach_to_link(link)
                    .map_err(|e| attach(format!("replacing program in link: {e}")))?,
            );
        } else {
            // Closing the last reference detaches the old program; the new one follows at
            // once (the kernel allows one mode at a time per interface).
            log::warn!(
                "{iface}: pinned XDP link is in {current:?} mode, want {want:?} ({reason}): re-attaching"
            );
            drop(fd);
        }
    }
    let id = match adopted {
        Some(id) => id,
        None => match prog.attach(iface, want) {
            Ok(id) => id,
            Err(e) if fallback => {
                reason = format!("native attach failed ({e}), generic instead");
                chosen = XdpMode::Skb;
                prog.attach(iface, XdpMode::Skb)
                    .map_err(|e| attach(format!("attaching XDP (generic): {e}")))?
            }
            Err(e) => return Err(attach(format!("attaching XDP ({want:?}): {e}"))),
        },
    };
    let link = prog.take_link(id)?;
    let fd = FdLink::try_from(link).map_err(|e| DataplaneError::Attach {
        iface: iface.clone(),
        what: format!("XDP link is not a bpf_link (kernel too old to pin it): {e}"),
    })?;
    let pinned = fd.pin(&link_path).map_err(|e| DataplaneError::Attach {
        iface: iface.clone(),
        what: format!("pinning link at {}: {e}", link_path.display()),
    })?;
    Ok((pinned, IfMode::new(iface, &driver, chosen, reason)))
}

/// The XDP program's FIB lookups fall back to the loopback device when forwarding is off on the
/// ingress device, and the helper requires forwarding on the device it is given. Forwarding on
/// `lo` lets nothing else through: the kernel checks the flag of the device a packet arrived on.
fn enable_lo_forwarding() -> Result<(), DataplaneError> {
    let path = "/proc/sys/net/ipv4/conf/lo/forwarding";
    let cur = std::fs::read_to_string(path).map_err(|source| DataplaneError::Io {
        what: "reading lo forwarding",
        source,
    })?;
    if cur.trim() != "1" {
        std::fs::write(path, "1").map_err(|source| DataplaneError::Io {
            // A container's /proc/sys is read-only: the node must set it (docs/deploy.md).
            what: "enabling forwarding on lo (set net.ipv4.conf.lo.forwarding=1 on the node)",
            source,
        })?;
        log::info!("enabled net.ipv4.conf.lo.forwarding for bpf_fib_lookup (forwarding on other devices unchanged)");
    }
    Ok(())
}

/// Makes the kernel resolve each backend's neighbour entry, which the XDP program's FIB lookup
/// needs (it cannot trigger ARP itself): one empty UDP datagram to the discard port.
pub fn prime_neighbours(plan: &Plan) {
    let addrs: BTreeSet<Ipv4Addr> = plan
        .l4
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| b.addr))
        .collect();
    prime_addrs(addrs);
}

/// `prime_neighbours` for the given addresses (e.g. backends whose next hop did not resolve).
pub fn prime_addrs(addrs: impl IntoIterator<Item = Ipv4Addr>) {
    if let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0") {
        for a in addrs {
            let _ = sock.send_to(&[], (a, 9));
        }
    }
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

/// The lowest id at or above `cursor` not in `used`; the cursor moves past it, so allocating n
/// ids costs O(n log n), not O(n^2) (ids freed below the cursor are reused by the next apply).
fn next_free(used: &BTreeSet<u32>, cursor: &mut u32, max: u32) -> Option<u32> {
    while *cursor < max && used.contains(cursor) {
        *cursor += 1;
    }
    if *cursor >= max {
        return None;
    }
    let id = *cursor;
    *cursor += 1;
    Some(id)
}

/// `PORTS` entries a plan needs: its services' ports (L4 or L7), and the ports of
/// preserve-source backends, whose replies are recognised by source port.
fn plan_ports(plan: &Plan, desired: &BTreeMap<ServiceKey, (u32, Vec<u32>)>) -> BTreeMap<u32, u32> {
    let mut m: BTreeMap<u32, u32> = BTreeMap::new();
    for (k, (flags, _)) in desired {
        let f = if flags & svc_flags::LOCAL != 0 {
            port_flags::LOCAL
        } else {
            port_flags::L4
        };
        *m.entry(port_of(k)).or_default() |= f;
    }
    let ps = plan.l4.iter().filter(|s| s.nat == NatMode::PreserveSource);
    for s in ps {
        for b in &s.backends {
            let idx = gateway_common::port_index(s.proto.number(), b.port);
            *m.entry(idx).or_default() |= port_flags::PS_SRC;
        }
    }
    m
}

/// How long a removed service's port keeps reaching the connection table (Istio's default
/// listener drain duration).
pub const DRAIN_PERIOD: std::time::Duration = std::time::Duration::from_secs(45);

/// A service key's index in `PORTS`.
fn port_of(k: &ServiceKey) -> u32 {
    gateway_common::port_index(k.proto, u16::from_be(k.port))
}

fn service_key(vip: Ipv4Addr, port: u16, proto: u8) -> ServiceKey {
    ServiceKey {
        addr: u32::from(vip).to_be(),
        port: port.to_be(),
        proto,
        _pad: 0,
    }
}

fn l4_flags(s: &L4Service) -> u32 {
    let mut f = 0;
    if s.nat == NatMode::Snat {
        f |= svc_flags::SNAT;
    }
    if s.hash == HashMode::SourceIp {
        f |= svc_flags::HASH_SRC_IP;
    }
    f
}

fn count_distinct(ring: &[u32]) -> u32 {
    ring.iter().collect::<BTreeSet<_>>().len() as u32
}

fn reset_counter(map: &mut PerCpuArray<MapData, Counters>, id: u32) -> Result<(), DataplaneError> {
    let n = aya::util::nr_cpus().map_err(|(_, source)| DataplaneError::Io {
        what: "reading possible CPUs",
        source,
    })?;
    let zeros =
        aya::maps::PerCpuValues::try_from(vec![Counters::default(); n]).map_err(|source| {
            DataplaneError::Io {
                what: "per-CPU counter values",
                source,
            }
        })?;
    map.set(id, zeros, 0).map_err(map_err("stats"))
}

fn sum(map: &PerCpuArray<MapData, Counters>, id: u32) -> Result<Counters2, DataplaneError> {
    let v = map.get(&id, 0).map_err(map_err("stats"))?;
    Ok(v.iter().fold(Counters2::default(), |a, c| Counters2 {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    }))
}

/// ifindex -> IPv4 addresses of every interface in this network namespace (primary first).
pub fn interface_addrs() -> StdHashMap<u32, Vec<Ipv4Addr>> {
    let mut out = StdHashMap::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // Safety: getifaddrs/freeifaddrs pair; pointers only read while the list is alive.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let idx = libc::if_nametoindex(ifa.ifa_name);
                if idx != 0 {
                    out.entry(idx)
                        .or_insert_with(Vec::new)
                        .push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}

/// IPv4 addresses of the named interfaces (the default VIPs).
pub fn addrs_of(ifaces: &[String]) -> Vec<Ipv4Addr> {
    let all = interface_addrs();
    let mut v: Vec<Ipv4Addr> = ifaces
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
