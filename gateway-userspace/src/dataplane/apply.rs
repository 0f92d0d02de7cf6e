//! The kernel half of an apply: executes the ops of [`diff`](super::diff) against the aya maps,
//! one by one, recording each in the state once it succeeded; and keeps the address maps
//! (`IFADDRS`, `ADDRS`) in step with the node's interfaces.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap as StdHashMap},
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use aya::{
    maps::{HashMap, IterableMap, MapData, PerCpuArray},
    programs::Xdp,
};
use gateway_common::{
    addr6, addr_flags, maps as names, Addr6, Backend as BpfBackend, Backend6 as BpfBackend6,
    Counters, IfAddr, ResolveBatch, MAGLEV_RING, XDP_RESOLVE6_PROGRAM, XDP_RESOLVE_PROGRAM,
};

use super::{
    diff::{self, Op, SvcKey},
    ifmode, interface_addrs, map_err, ring_map, Dataplane, DataplaneError, DRAIN_PERIOD,
};
use crate::plan::Plan;

impl Dataplane {
    /// Applies `plan` by diff: backends first, new rings beside live ones, then the switch of each
    /// service entry, deletions last (see [`diff`]).
    pub fn apply(&mut self, plan: &Plan) -> Result<(), DataplaneError> {
        self.sync_ifaddrs()?;
        let d = diff::diff(&self.state, plan, std::time::Instant::now())?;
        // Only new backends need their neighbour entries primed now: known ones are kept
        // fresh by the agent's periodic refresh, and priming 100,000 of them at every apply
        // was most of a no-change apply's time.
        prime_addrs(d.ops.iter().filter_map(|op| match op {
            Op::AddBackend { addr, .. } => Some(*addr),
            _ => None,
        }));
        self.run(d.ops)?;
        self.sync_addrs(&interface_addrs())?;
        Ok(())
    }

    /// Closes the ports whose drain period is over (called periodically by the agent).
    pub fn expire_drains(&mut self) -> Result<(), DataplaneError> {
        let ops = diff::expire(&self.state, std::time::Instant::now(), DRAIN_PERIOD);
        self.run(ops)
    }

    /// Executes `ops` in order; each is recorded in the state once its writes succeeded. A run
    /// of consecutive new backends is written with batched map updates (their order among
    /// themselves does not matter: no service points at them yet). The rings the ops write are
    /// mapped for the duration of the run only (see `ring_map`).
    fn run(&mut self, ops: Vec<Op>) -> Result<(), DataplaneError> {
        self.ring_window = self.map_rings(&ops);
        let r = self.run_ops(&ops);
        self.ring_window = None;
        r
    }

    /// A mapping of `MAGLEV` covering every ring `ops` writes, or None (no ring written, the map
    /// is not mmapable, or the kernel refused: the rings then go by syscall).
    fn map_rings(&self, ops: &[Op]) -> Option<ring_map::RingMap> {
        if !self.maglev_mmapable || !self.ring_mapping {
            return None;
        }
        let slots = ops.iter().filter_map(|op| match op {
            Op::WriteRing { slot, .. } => Some(*slot),
            _ => None,
        });
        let (lo, hi) = slots.fold(None, |acc: Option<(u32, u32)>, s| match acc {
            None => Some((s, s)),
            Some((lo, hi)) => Some((lo.min(s), hi.max(s))),
        })?;
        match ring_map::RingMap::map(
            self.maglev_fd.as_fd(),
            4,
            self.maglev_entries,
            lo * MAGLEV_RING,
            (hi + 1) * MAGLEV_RING,
        ) {
            Ok(m) => Some(m),
            Err(e) => {
                static SAID: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    log::warn!(
                        "mapping {} failed ({e}): Maglev rings written with map updates",
                        names::MAGLEV
                    );
                }
                None
            }
        }
    }

    fn run_ops(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        let mut rest = ops;
        while let Some(op) = rest.first() {
            let n = rest
                .iter()
                .take_while(|o| matches!(o, Op::AddBackend { .. }))
                .count();
            if n > 1 {
                self.add_backends(&rest[..n])?;
                for op in &rest[..n] {
                    self.state.record(op);
                }
                rest = &rest[n..];
                continue;
            }
            self.exec(op)?;
            self.state.record(op);
            rest = &rest[1..];
        }
        Ok(())
    }

    /// The writes of several `AddBackend` ops: `BACKENDS`/`BACKENDS6` entries and zeroed
    /// `BACKEND_STATS`, one BPF_MAP_UPDATE_BATCH per map instead of two syscalls per backend
    /// (200,000 of them for 100,000 backends). Where the kernel refuses a batch, op by op.
    fn add_backends(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        let (mut ids4, mut vals4, mut ids6, mut vals6, mut all) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for op in ops {
            let Op::AddBackend { id, addr, port } = op else {
                continue;
            };
            all.push(*id);
            match addr {
                IpAddr::V4(a) => {
                    ids4.push(*id);
                    vals4.push(BpfBackend::new(u32::from(*a).to_be(), port.to_be()));
                }
                IpAddr::V6(a) => {
                    ids6.push(*id);
                    vals6.push(BpfBackend6::new(addr6(a.octets()), port.to_be()));
                }
            }
        }
        let batched = (|| -> std::io::Result<()> {
            if !ids4.is_empty() {
                update_array_batch(IterableMap::map(&self.backends).fd().as_fd(), &ids4, &vals4)?;
            }
            if !ids6.is_empty() {
                let fd = IterableMap::map(&self.backends6).fd().as_fd();
                update_array_batch(fd, &ids6, &vals6)?;
            }
            // Per-CPU values: one `Counters` (a multiple of 8 bytes, as the kernel's layout
            // wants) per possible CPU and key.
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
            let zeros = vec![Counters::default(); all.len() * cpus];
            let fd = IterableMap::map(&self.backend_stats).fd().as_fd();
            update_array_batch(fd, &all, &zeros)
        })();
        if let Err(e) = batched {
            warn_unbatched(&e);
            for op in ops {
                self.exec(op)?;
            }
        }
        Ok(())
    }

    /// The map writes of one op.
    fn exec(&mut self, op: &Op) -> Result<(), DataplaneError> {
        match op {
            Op::AddBackend { id, addr, port } => {
                match addr {
                    IpAddr::V4(a) => self
                        .backends
                        .set(*id, BpfBackend::new(u32::from(*a).to_be(), port.to_be()), 0)
                        .map_err(map_err(names::BACKENDS))?,
                    IpAddr::V6(a) => self
                        .backends6
                        .set(*id, BpfBackend6::new(addr6(a.octets()), port.to_be()), 0)
                        .map_err(map_err(names::BACKENDS6))?,
                }
                reset_counter(&mut self.backend_stats, *id)?;
            }
            Op::ResolveNextHops(by_id) => {
                self.resolve_next_hops(by_id)?;
            }
            Op::SetPort { idx, value } => {
                self.ports
                    .set(*idx, *value, 0)
                    .map_err(map_err(names::PORTS))?;
            }
            Op::ResetServiceStats { id } => {
                reset_counter(&mut self.service_stats, *id)?;
                reset_counter(&mut self.service_flows, *id)?;
                self.ct_counts.idle_closed.remove(id);
            }
            Op::WriteRing { slot, ring } => {
                let first = slot * MAGLEV_RING;
                if let Some(w) = self.ring_window.as_mut() {
                    w.write(first, ring).map_err(|source| DataplaneError::Io {
                        what: "writing a Maglev ring through the mapping of MAGLEV",
                        source,
                    })?;
                    self.ring_writes.mapped += 1;
                    return Ok(());
                }
                // One BPF_MAP_UPDATE_BATCH per ring instead of a syscall per slot (4,099 of
                // them per ring); element by element where the kernel has no batch ops.
                self.ring_writes.syscall += 1;
                let keys: Vec<u32> = (first..first + ring.len() as u32).collect();
                if let Err(e) = update_array_batch(self.maglev_fd.as_fd(), &keys, ring) {
                    warn_unbatched(&e);
                    for (i, bid) in ring.iter().enumerate() {
                        self.maglev
                            .set(slot * MAGLEV_RING + i as u32, bid, 0)
                            .map_err(map_err(names::MAGLEV))?;
                    }
                }
            }
            Op::SetService { key, value, .. } => {
                // The switch: one map update moves the service to its new ring, whose stores
                // through the mapping are ordered before it.
                ring_map::publish();
                match key {
                    SvcKey::V4(k) => self
                        .services
                        .insert(k, value, 0)
                        .map_err(map_err(names::SERVICES))?,
                    SvcKey::V6(k) => self
                        .services6
                        .insert(k, value, 0)
                        .map_err(map_err(names::SERVICES6))?,
                }
            }
            Op::RemoveService { key } => {
                let _ = match key {
                    SvcKey::V4(k) => self.services.remove(k),
                    SvcKey::V6(k) => self.services6.remove(k),
                };
            }
            Op::StartDrain { .. } | Op::EndDrain { .. } => {}
            Op::RemoveBackend { id, addr, .. } => {
                // Established flows carry their own rewrite and keep going.
                match addr {
                    IpAddr::V4(_) => self
                        .backends
                        .set(*id, BpfBackend::default(), 0)
                        .map_err(map_err(names::BACKENDS))?,
                    IpAddr::V6(_) => self
                        .backends6
                        .set(*id, BpfBackend6::default(), 0)
                        .map_err(map_err(names::BACKENDS6))?,
                }
            }
        }
        Ok(())
    }

    /// Publishes the IPv4 and IPv6 address of every interface (SNAT source per egress interface,
    /// `IFADDRS` and `IFADDRS6`) and
    /// the checksum handling of each attached one (`if_flags`; an attached interface without an
    /// address gets an entry with address 0, which is never a SNAT source).
    pub fn sync_ifaddrs(&mut self) -> Result<(), DataplaneError> {
        let addrs = interface_addrs();
        let mut want: BTreeMap<u32, IfAddr> = BTreeMap::new();
        let mut want6: BTreeMap<u32, Addr6> = BTreeMap::new();
        for (idx, all) in &addrs {
            if let Some(a) = all.iter().find_map(|a| match a {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            }) {
                let v = IfAddr {
                    addr: u32::from(a).to_be(),
                    flags: 0,
                };
                want.insert(*idx, v);
            }
            // The first global IPv6 address (link-local ones are left out already).
            if let Some(a) = all.iter().find_map(|a| match a {
                IpAddr::V6(a) => Some(*a),
                IpAddr::V4(_) => None,
            }) {
                want6.insert(*idx, addr6(a.octets()));
            }
        }
        for m in &self.ifmodes {
            // Looked up again: an interface re-created under the same name has a new index.
            if let Some(idx) = ifmode::ifindex(&m.iface) {
                want.entry(idx)
                    .or_insert(IfAddr { addr: 0, flags: 0 })
                    .flags = m.flags;
            }
        }
        sync_hash(&mut self.ifaddrs, &want, names::IFADDRS)?;
        sync_hash(&mut self.ifaddrs6, &want6, names::IFADDRS6)?;
        self.sync_snat_pools()?;
        self.sync_addrs(&addrs)
    }

    /// Brings `ADDRS` and `ADDRS6` to the node's own addresses (`ifaces`, from
    /// `interface_addrs`), removing the rest.
    fn sync_addrs(&mut self, ifaces: &StdHashMap<u32, Vec<IpAddr>>) -> Result<(), DataplaneError> {
        let mut want: BTreeMap<u32, u32> = BTreeMap::new();
        let mut want6: BTreeMap<Addr6, u32> = BTreeMap::new();
        for a in ifaces.values().flatten() {
            match a {
                IpAddr::V4(a) => {
                    *want.entry(u32::from(*a).to_be()).or_default() |= addr_flags::NODE
                }
                IpAddr::V6(a) => *want6.entry(addr6(a.octets())).or_default() |= addr_flags::NODE,
            }
        }
        sync_hash(&mut self.addrs, &want, names::ADDRS)?;
        sync_hash(&mut self.addrs6, &want6, names::ADDRS6)
    }

    /// Resolves every backend's next hop (egress interface, MACs, SNAT address) into `BACKENDS`
    /// with the kernel's FIB, through the resolver program, so that no packet pays for a FIB
    /// lookup. Called after each apply and about once a second. Returns the backends that could
    /// not be resolved (no route or no neighbour entry yet): the caller primes their neighbours,
    /// and the data path asks the FIB per flow for them meanwhile.
    pub fn refresh_next_hops(&mut self) -> Result<Vec<IpAddr>, DataplaneError> {
        let all: BTreeMap<u32, IpAddr> = self
            .state
            .backend_ids
            .iter()
            .map(|((addr, _), id)| (*id, *addr))
            .collect();
        self.resolve_next_hops(&all)
    }

    /// Resolves the next hops of the backends `by_id` (id -> address), each by its family's
    /// resolver; returns the addresses that could not be resolved.
    fn resolve_next_hops(
        &mut self,
        by_id: &BTreeMap<u32, IpAddr>,
    ) -> Result<Vec<IpAddr>, DataplaneError> {
        let mut unresolved = BTreeSet::new();
        for (name, v6) in [(XDP_RESOLVE_PROGRAM, false), (XDP_RESOLVE6_PROGRAM, true)] {
            let ids: Vec<(u32, IpAddr)> = by_id
                .iter()
                .filter(|(_, a)| a.is_ipv6() == v6)
                .map(|(id, a)| (*id, *a))
                .collect();
            if !ids.is_empty() {
                self.resolve_with(name, &ids, &mut unresolved)?;
            }
        }
        Ok(unresolved.into_iter().collect())
    }

    /// Runs the resolver program `name` once per backend of `ids`.
    fn resolve_with(
        &mut self,
        name: &'static str,
        ids: &[(u32, IpAddr)],
        unresolved: &mut BTreeSet<IpAddr>,
    ) -> Result<(), DataplaneError> {
        use aya::programs::{TestRun, TestRunOptions};
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingMap("resolver program"))?
            .try_into()?;
        // One run per backend, repeat = 1: a run with repeat > 1 swaps the program in and out
        // of the kernel's XDP dispatcher (two live text patches and RCU grace periods per call),
        // which made a refresh of 100,000 backends take tens of seconds.
        for (id, addr) in ids {
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
                unresolved.insert(*addr);
            }
        }
        Ok(())
    }
}

/// Brings the hash map `map` to `want`: changed entries written (errors returned), then the
/// others removed (errors ignored: an entry already gone is fine).
pub(super) fn sync_hash<K: aya::Pod + Ord, V: aya::Pod + PartialEq>(
    map: &mut HashMap<MapData, K, V>,
    want: &BTreeMap<K, V>,
    name: &'static str,
) -> Result<(), DataplaneError> {
    let have: BTreeMap<K, V> = map.iter().filter_map(Result::ok).collect();
    let (upsert, remove) = diff::sync_hash(&have, want);
    for (k, v) in upsert {
        map.insert(k, v, 0).map_err(map_err(name))?;
    }
    for k in remove {
        let _ = map.remove(&k);
    }
    Ok(())
}

fn reset_counter<T: aya::Pod + Default + Clone>(
    map: &mut PerCpuArray<MapData, T>,
    id: u32,
) -> Result<(), DataplaneError> {
    let n = aya::util::nr_cpus().map_err(|(_, source)| DataplaneError::Io {
        what: "reading possible CPUs",
        source,
    })?;
    let zeros = aya::maps::PerCpuValues::try_from(vec![T::default(); n]).map_err(|source| {
        DataplaneError::Io {
            what: "per-CPU counter values",
            source,
        }
    })?;
    map.set(id, zeros, 0).map_err(map_err("stats"))
}

/// Makes the kernel resolve each backend's neighbour entry, which the XDP program's FIB lookup
/// needs (it cannot trigger ARP itself): one empty UDP datagram to the discard port.
pub fn prime_neighbours(plan: &Plan) {
    let addrs: BTreeSet<IpAddr> = plan
        .l4
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| b.addr))
        .collect();
    prime_addrs(addrs);
}

/// `prime_neighbours` for the given addresses (e.g. backends whose next hop did not resolve).
pub fn prime_addrs(addrs: impl IntoIterator<Item = IpAddr>) {
    let v4 = std::net::UdpSocket::bind("0.0.0.0:0").ok();
    let v6 = std::net::UdpSocket::bind("[::]:0").ok();
    for a in addrs {
        let sock = if a.is_ipv6() { &v6 } else { &v4 };
        if let Some(sock) = sock {
            let _ = sock.send_to(&[], (a, 9));
        }
    }
}

/// Says once per process that the kernel refused a batched update (writes then go one by one).
fn warn_unbatched(e: &std::io::Error) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log::warn!("batched map update unavailable ({e}): map entries written one by one");
    }
}

/// `BPF_MAP_UPDATE_BATCH` of `values` into an array map at `keys` (Linux 5.6+; an error leaves
/// the caller to write element by element). `V` must be the map's value layout: for a per-CPU
/// map, `values` holds one value per possible CPU for each key, keys' values one after another.
fn update_array_batch<V: aya::Pod>(
    fd: BorrowedFd<'_>,
    keys: &[u32],
    values: &[V],
) -> std::io::Result<()> {
    /// `union bpf_attr`'s `batch` member.
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    if keys.is_empty() || !values.len().is_multiple_of(keys.len()) {
        return Err(std::io::Error::other(format!(
            "batch update of {} keys with {} values",
            keys.len(),
            values.len()
        )));
    }
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr batch member whose key and value pointers cover
    // `count` keys and their values (checked above against the slices' lengths) and outlive
    // the call; the kernel writes back only `count`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if attr.count as usize != keys.len() {
        return Err(std::io::Error::other(format!(
            "batch update wrote {} of {}",
            attr.count,
            keys.len()
        )));
    }
    Ok(())
}
