//! The ABI shared by the XDP programs and the agent: map names, sizes, keys and values.
//!
//! Treat every type here as a kernel ABI: `#[repr(C)]`, explicit padding, no `bool`/`Option`/enum
//! fields, and a compile-time size check. Addresses and ports are stored in network byte order,
//! exactly as they appear in packets, so the data path never swaps bytes.
#![no_std]

/// Map names, as the agent finds them in the object and under its pin directory.
pub mod maps {
    pub const SERVICES: &str = "SERVICES";
    pub const BACKENDS: &str = "BACKENDS";
    pub const MAGLEV: &str = "MAGLEV";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const IFADDRS: &str = "IFADDRS";
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const VERDICTS: &str = "VERDICTS";
    pub const ADDRS: &str = "ADDRS";
    pub const PORTS: &str = "PORTS";
    pub const SERVICES6: &str = "SERVICES6";
    pub const BACKENDS6: &str = "BACKENDS6";
    pub const CONNTRACK6: &str = "CONNTRACK6";
    pub const IFADDRS6: &str = "IFADDRS6";
    pub const ADDRS6: &str = "ADDRS6";
    pub const CONNTRACK_NEW: &str = "CONNTRACK_NEW";
    pub const CONNTRACK6_NEW: &str = "CONNTRACK6_NEW";
    pub const SERVICE_FLOWS: &str = "SERVICE_FLOWS";
    pub const SNAT_POOLS: &str = "SNAT_POOLS";
}

/// Name of the XDP program in the object.
pub const XDP_PROGRAM: &str = "gateway_xdp";
/// An empty XDP program in the same object, the baseline for per-packet timing.
pub const XDP_BASELINE_PROGRAM: &str = "gateway_xdp_baseline";
/// The next-hop resolver: never attached, run by the agent through BPF_PROG_TEST_RUN on a
/// `ResolveBatch`, once per backend with repeat = 1 (a repeat > 1 would patch the kernel's XDP
/// dispatcher on every call), to fill backends' next hops with the kernel's FIB.
pub const XDP_RESOLVE_PROGRAM: &str = "gateway_resolve";
/// The resolver for IPv6 backends (`BACKENDS6`), run the same way.
pub const XDP_RESOLVE6_PROGRAM: &str = "gateway_resolve6";
/// Backends resolved per resolver call (one bit each in `ResolveBatch::unresolved`).
pub const RESOLVE_BATCH: u32 = 64;

/// Services (VIP, port, protocol) the data plane owns, L4 and L7 alike.
pub const MAX_SERVICES: u32 = 1024;
/// Maglev ring size per service: a prime well above the number of backends of one service, so
/// that each backend's share is within a few percent of its weight (Maglev paper, M >= 100 N
/// gives < 1%; 4099 keeps 40 backends under 3% while 2048 rings stay at 64 MiB: the kernel stores
/// an array's values 8 bytes apart).
pub const MAGLEV_RING: u32 = 4099;
/// Ring slots: twice the services, so a new ring is written beside the live one and the service
/// entry is switched to it in one update (make before break).
pub const MAX_RINGS: u32 = 2 * MAX_SERVICES;
/// `MAGLEV`'s map flags: `BPF_F_MMAPABLE` (Linux 5.5), so the agent writes rings through a
/// shared mapping instead of a map update per slot (the kernel's batch update of an array still
/// copies element by element: about 1.5 ms per ring, over a second for 1,000 services).
pub const MAGLEV_MAP_FLAGS: u32 = 1 << 10;
/// Backends across all services (1,000 services x 100 endpoints fit). Ids are stable across
/// reloads and restarts.
pub const MAX_BACKENDS: u32 = 131072;
/// Connection-table entries (two per flow: one per direction).
pub const CONNTRACK_MAX: u32 = 262144;
/// IPv6 connection-table entries (`CONNTRACK6`, its own map: an IPv6 entry is 112 bytes against
/// 64, and the IPv4 table keeps its size and its 16-byte key).
pub const CONNTRACK6_MAX: u32 = 131072;
/// Unconfirmed flows' entries (`CONNTRACK_NEW`, `CONNTRACK6_NEW`): a flow whose client has sent
/// only its first packet (a SYN, or one UDP datagram) lives here, in a table of its own an
/// eighth the size of the main one, and moves to the main table on the client's second packet.
/// A SYN flood (or spoofed one-packet UDP) only churns this table's LRU: it can never evict an
/// established flow.
pub const CONNTRACK_NEW_MAX: u32 = CONNTRACK_MAX / 8;
pub const CONNTRACK6_NEW_MAX: u32 = CONNTRACK6_MAX / 8;
/// A connection entry's `seen` is rewritten only once it is this old (nanoseconds of the coarse
/// clock), so an established flow's packets do not each write to the shared entry (Cilium's
/// report interval plays the same role); idle timeouts are therefore exact to a second.
pub const SEEN_REFRESH_NS: u64 = 1_000_000_000;
/// Addresses in one interface's SNAT pool (`SNAT_POOLS`).
pub const SNAT_POOL_ADDRS: u32 = 8;
/// Interface index -> IPv4 address, for the SNAT source address of the egress interface.
pub const MAX_IFADDRS: u32 = 256;

/// `PORTS` entries: every TCP port, then every UDP port (index = port, + 65536 for UDP).
/// Values are `port_flags`.
pub const PORTS_LEN: u32 = 2 * 65536;

/// Flags of a `PORTS` entry.
pub mod port_flags {
    /// Destination port of an L4 service (or of one removed and still draining): packets to it
    /// may belong to a flow in `CONNTRACK`.
    pub const L4: u32 = 1 << 0;
    /// Destination port of an L7 service (handed to the local stack).
    pub const LOCAL: u32 = 1 << 1;
    /// Source port of a preserve-source backend: its replies are addressed to the client, so they
    /// are recognised by their source port, then by their `CONNTRACK` entry.
    pub const PS_SRC: u32 = 1 << 2;
    /// A port of a SNAT pool's range (`SNAT_POOLS`) outside `NAT_PORT_MIN..=NAT_PORT_MAX`:
    /// backends' replies to it are looked up in the connection tables.
    pub const NAT: u32 = 1 << 3;
}

/// Index into `PORTS` for a port in host order.
#[inline(always)]
pub fn port_index(proto: u8, port: u16) -> u32 {
    let base = if proto == PROTO_UDP { 65536 } else { 0 };
    base + port as u32
}

/// Addresses the data plane checks on its slower paths (the node's own).
pub const MAX_ADDRS: u32 = 4096;

/// Flags of an `ADDRS` entry.
pub mod addr_flags {
    /// An address of the node: SNAT replies come back to it.
    pub const NODE: u32 = 1 << 1;
}

/// SNAT source ports are taken from this range, which lies above Linux's default ephemeral range
/// (32768-60999) so that they never collide with the node's own connections.
pub const NAT_PORT_MIN: u16 = 61000;
pub const NAT_PORT_MAX: u16 = 65535;
/// Ports tried for a new SNAT flow before the packet is dropped and counted.
pub const NAT_PORT_TRIES: u32 = 8;

/// A cached next hop older than this is looked up again (nanoseconds of the coarse clock), so
/// route and neighbour changes reach established flows within a second.
pub const NEXTHOP_TTL_NS: u64 = 1_000_000_000;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;

/// Service flags.
pub mod svc_flags {
    /// Masquerade clients to the egress interface address (else DNAT only, client kept).
    pub const SNAT: u32 = 1 << 0;
    /// Hash the source address only (DestinationRule consistentHash.useSourceIp).
    pub const HASH_SRC_IP: u32 = 1 << 1;
    /// An L7 port: hand the packet to the local stack (the agent's listener), counted.
    pub const LOCAL: u32 = 1 << 2;
}

/// Connection-table entry flags.
pub mod ct_flags {
    /// Entry for the reply direction (backend -> client).
    pub const REPLY: u32 = 1 << 0;
    /// This direction sent a TCP FIN.
    pub const FIN: u32 = 1 << 1;
    /// This direction sent a TCP RST.
    pub const RST: u32 = 1 << 2;
}

/// Whether a TCP flow whose two entries carry `a` and `b` (`ct_flags`) is over: a RST either
/// way, or a FIN both ways.
#[inline(always)]
pub fn ct_closed(a: u32, b: u32) -> bool {
    (a | b) & ct_flags::RST != 0 || a & b & ct_flags::FIN != 0
}

/// An IPv6 address as it sits in the packet: four words read in native order from network-order
/// bytes (so `[u32; 4]` from `u128::to_be_bytes` chunks read with `from_ne_bytes`).
pub type Addr6 = [u32; 4];

/// The address types of the two families. Each map of a family is keyed and valued by the
/// generic types below instantiated with its address: `u32` for IPv4 (`SERVICES`, `BACKENDS`,
/// `CONNTRACK`), `Addr6` for IPv6 (`SERVICES6`, `BACKENDS6`, `CONNTRACK6`), so the IPv4 maps keep
/// their layout and size and the data path's code is written once for both.
pub trait Address: Copy + PartialEq + Default {}
impl Address for u32 {}
impl Address for Addr6 {}

/// `Addr6` of 16 network-order bytes.
#[inline(always)]
pub fn addr6(b: [u8; 16]) -> Addr6 {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// The 16 network-order bytes of an `Addr6`.
#[inline(always)]
pub fn addr6_bytes(a: Addr6) -> [u8; 16] {
    let mut b = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let w = a[i].to_ne_bytes();
        b[4 * i] = w[0];
        b[4 * i + 1] = w[1];
        b[4 * i + 2] = w[2];
        b[4 * i + 3] = w[3];
        i += 1;
    }
    b
}

/// Key of `SERVICES` (IPv4) and `SERVICES6` (IPv6): what a client packet is addressed to.
pub type ServiceKey = ServiceKeyOf<u32>;
pub type ServiceKey6 = ServiceKeyOf<Addr6>;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKeyOf<A> {
    /// Address, network order.
    pub addr: A,
    /// Port, network order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index into `SERVICE_STATS`; stable for the life of the service.
    pub id: u32,
    /// Ring slot in `MAGLEV` (0..MAX_RINGS).
    pub ring: u32,
    /// `svc_flags`.
    pub flags: u32,
    /// Backends in the ring; 0 means no healthy backend (packets dropped and counted).
    pub backend_count: u32,
}

/// Value of `BACKENDS` (IPv4) and `BACKENDS6` (IPv6): arrays indexed by backend id, one id space
/// for both (an id is used in one of them; `BACKEND_STATS` and the Maglev rings are shared).
pub type Backend = BackendOf<u32>;
pub type Backend6 = BackendOf<Addr6>;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendOf<A> {
    /// Address, network order (zero: no backend).
    pub addr: A,
    /// Port, network order.
    pub port: u16,
    pub _pad: u16,
    /// Next hop towards `addr`, resolved in advance by the agent (the resolver program, about
    /// once a second): egress interface (0 = not resolved: the data path asks the FIB itself),
    /// its address of the family (the SNAT source; 0 = none), and the MACs.
    pub nh_ifindex: u32,
    pub snat_addr: A,
    pub nh_smac: [u8; 6],
    pub nh_dmac: [u8; 6],
    pub _pad2: u32,
}

impl<A: Address> BackendOf<A> {
    /// An entry for `addr:port` whose next hop is not resolved yet.
    pub fn new(addr: A, port: u16) -> BackendOf<A> {
        BackendOf {
            addr,
            port,
            _pad: 0,
            nh_ifindex: 0,
            snat_addr: A::default(),
            nh_smac: [0; 6],
            nh_dmac: [0; 6],
            _pad2: 0,
        }
    }
}

/// The packet the agent hands the resolver program: an Ethernet-sized head (BPF_PROG_TEST_RUN
/// needs one; ignored), the batch, and the result.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolveBatch {
    pub _eth: [u8; 16],
    /// First backend id of the batch; `RESOLVE_BATCH` ids from it are resolved.
    pub first: u32,
    /// Ids of the batch done so far (the resolver runs once per id, on the same packet).
    pub done: u32,
    /// Out: bit i set = backend `first + i` exists but its next hop could not be resolved (no
    /// route or no neighbour entry yet).
    pub unresolved: u64,
}

/// Key of `CONNTRACK` (IPv4) and `CONNTRACK6` (IPv6): the packet's own 5-tuple as it arrives.
pub type FlowKey = FlowKeyOf<u32>;
pub type FlowKey6 = FlowKeyOf<Addr6>;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKeyOf<A> {
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of `CONNTRACK` (IPv4) and `CONNTRACK6` (IPv6): how to rewrite a packet of this flow
/// and where to send it. Both directions of a flow have an entry, so the data path handles them
/// the same way.
pub type CtValue = CtValueOf<u32>;
pub type CtValue6 = CtValueOf<Addr6>;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtValueOf<A> {
    /// New source and destination (network order).
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    pub service_id: u32,
    pub backend_id: u32,
    /// `ct_flags`.
    pub flags: u32,
    /// Next hop used when the backend's own (`Backend::nh_*`) is not resolved, and always for a
    /// reply entry: egress interface and MACs; looked up again once `nh_ts` is a second old.
    pub nh_ifindex: u32,
    pub nh_smac: [u8; 6],
    pub nh_dmac: [u8; 6],
    /// bpf_ktime_get_ns() of the cached lookup; 0 = none.
    pub nh_ts: u64,
    /// bpf_ktime_get_coarse_ns() of this direction's latest packet, to within
    /// `SEEN_REFRESH_NS` (the agent's garbage collector expires idle flows by it).
    pub seen: u64,
}

/// Per-service flow counters (`SERVICE_FLOWS`, per CPU): TCP connections opened (the client's
/// first packet after its SYN moved the flow to the main table) and closed (the RST, or the
/// second FIN, of an opened connection), and bytes (whole frames, as `Counters`) each way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub opened: u64,
    pub closed: u64,
    /// Client -> backend (Istio's received bytes).
    pub rx_bytes: u64,
    /// Backend -> client (Istio's sent bytes).
    pub tx_bytes: u64,
}

/// Value of `SNAT_POOLS` (IPv4; interface index -> pool): masqueraded flows leaving by that
/// interface take their source from `addrs[..count]` and ports `port_min..=port_max` (host
/// order) instead of the interface's address and `NAT_PORT_MIN..=NAT_PORT_MAX`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnatPool {
    /// Network order.
    pub addrs: [u32; SNAT_POOL_ADDRS as usize],
    /// 1..=SNAT_POOL_ADDRS.
    pub count: u32,
    pub port_min: u16,
    pub port_max: u16,
}

impl SnatPool {
    /// The source of attempt `attempt` of a flow hashed `flow_hash`: (address, port in host
    /// order); deterministic, as `nat_port`, so a retransmitted SYN gets what its first copy got.
    #[inline(always)]
    pub fn pick(&self, flow_hash: u32, attempt: u32) -> (u32, u16) {
        let h = fmix(flow_hash.wrapping_add(attempt.wrapping_mul(0x9e37_79b9)));
        let range = (self.port_max.wrapping_sub(self.port_min)) as u32 + 1;
        // checked_rem: no division-by-zero panic path for the BPF build to reject (neither
        // divisor can be zero).
        let port = self
            .port_min
            .wrapping_add(h.checked_rem(range).unwrap_or(0) as u16);
        // The address from a second mix of the hash: flows spread over every (address, port)
        // pair.
        let a = fmix(h ^ 0x85eb_ca6b).checked_rem(self.count).unwrap_or(0);
        (self.addrs[(a & (SNAT_POOL_ADDRS - 1)) as usize], port)
    }
}

/// Value of `IFADDRS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfAddr {
    /// The interface's primary IPv4 address (network order; 0 = none, not a SNAT source).
    pub addr: u32,
    /// `if_flags`: how packets arriving on this interface carry their L4 checksum.
    pub flags: u32,
}

/// `IfAddr::flags`. Set by the agent for the interfaces it attaches to, from the driver and the
/// XDP mode it chose there.
pub mod if_flags {
    /// A veth in generic (SKB) mode: a packet whose L4 checksum field holds only the
    /// pseudo-header sum is a CHECKSUM_PARTIAL skb (the sender offloaded the checksum); the skb
    /// keeps that state through the redirect, so the program rewrites the field as a seed
    /// (pseudo-header change only) and whoever transmits it finally computes the rest.
    pub const CSUM_SEED: u32 = 1 << 0;
    /// A veth in native mode: such a packet loses its checksum state when redirected as a raw
    /// frame and would be dropped as corrupt by the receiver, so it is passed to the kernel
    /// (`pass_csum_partial`) instead.
    pub const CSUM_LOST: u32 = 1 << 1;
}

/// Packet and byte counters (per CPU in the maps; the agent sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// Why the program returned what it did; index into `VERDICTS`.
pub mod verdict {
    /// Not addressed to a service: passed to the kernel untouched.
    pub const PASS_NOT_OURS: u32 = 0;
    /// Addressed to an L7 service: handed to the local stack.
    pub const PASS_LOCAL: u32 = 1;
    /// Not IPv4/IPv6 TCP/UDP, IPv4 options, or an IPv6 extension header other than hop-by-hop,
    /// routing and destination options (or more than `IPV6_EXT_MAX` of them): passed untouched.
    pub const PASS_UNPARSED: u32 = 2;
    /// Forwarded, first packet of a new flow.
    pub const FWD_NEW: u32 = 3;
    /// Forwarded, packet of a known flow (either direction).
    pub const FWD_ESTABLISHED: u32 = 4;
    /// Dropped: service has no backends.
    pub const DROP_NO_BACKEND: u32 = 5;
    /// Dropped: no free SNAT port for this backend.
    pub const DROP_NAT_EXHAUSTED: u32 = 6;
    /// Passed: the FIB had no route or neighbour for the rewritten packet (the kernel decides).
    pub const PASS_FIB_MISS: u32 = 7;
    /// Dropped: truncated or malformed header of a packet to a service.
    pub const DROP_MALFORMED: u32 = 8;
    /// Dropped: no IPv4 address known for the egress interface (SNAT).
    pub const DROP_NO_SNAT_ADDR: u32 = 9;
    /// Dropped: the connection table refused an insert.
    pub const DROP_CT_FULL: u32 = 10;
    /// Dropped: the FIB said forwarding is disabled or the packet is too big.
    pub const DROP_FIB: u32 = 11;
    /// Passed: addressed to a SNAT port of the node with no connection entry (evicted from the
    /// full table, or from before the agent's time). A rising count is the table-pressure signal.
    pub const PASS_NAT_MISS: u32 = 12;
    /// Passed: a partial (offloaded) L4 checksum arrived on an interface whose XDP mode cannot
    /// keep it through a redirect (a veth in native mode, `if_flags::CSUM_LOST`).
    pub const PASS_CSUM_PARTIAL: u32 = 13;
    /// Passed: an ICMP error about a flow arrived with TTL 0 or 1 (no error is sent about an
    /// error): the kernel gets it (and drops it where it does not route).
    pub const PASS_TTL_EXPIRED: u32 = 14;
    /// Passed, rewritten but with its MACs kept: longer than the egress interface's MTU (a GSO
    /// packet from a veth peer with TSO on, seen whole in generic mode), which an XDP redirect
    /// would drop. The kernel forwards it, segmenting as needed, where forwarding is enabled.
    pub const PASS_OVERSIZE: u32 = 15;
    /// Passed: an IPv4 or IPv6 fragment (the kernel reassembles; the fast path never sees
    /// fragments' ports).
    pub const PASS_FRAGMENT: u32 = 16;
    /// Dropped: every (address, port) tried in the egress interface's SNAT pool is held by
    /// another live flow (`drop_nat_exhausted` is the same without a pool: one address, the
    /// default port range).
    pub const DROP_NAT_POOL_EXHAUSTED: u32 = 17;
    /// Sent back (XDP_TX): the ICMP time exceeded (ICMPv6 for IPv6) a router sends for a packet
    /// whose TTL or hop limit forwarding would expire.
    pub const TX_TIME_EXCEEDED: u32 = 18;
    /// Forwarded: an ICMP or ICMPv6 error (destination unreachable, fragmentation needed or
    /// packet too big, time exceeded, parameter problem) about a flow in the connection table,
    /// translated as a packet of that flow (outer and quoted headers, every checksum).
    pub const FWD_ICMP_ERROR: u32 = 19;
    /// Passed: a frame with an 802.1Q or 802.1ad (QinQ) VLAN tag. The fast path serves untagged
    /// frames only; the kernel (its VLAN devices) takes tagged ones.
    pub const PASS_VLAN: u32 = 20;
    /// Dropped: a packet to forward expired (TTL or hop limit 0 or 1) while this CPU's budget of
    /// time-exceeded messages was spent (1,000 a second, bursts of 50: the kernel's ICMP
    /// defaults), or the message could not be built.
    pub const DROP_TTL_EXPIRED: u32 = 21;
    pub const COUNT: u32 = 22;
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_not_ours",
        "pass_local",
        "pass_unparsed",
        "fwd_new",
        "fwd_established",
        "drop_no_backend",
        "drop_nat_exhausted",
        "pass_fib_miss",
        "drop_malformed",
        "drop_no_snat_addr",
        "drop_ct_full",
        "drop_fib",
        "pass_nat_miss",
        "pass_csum_partial",
        "pass_ttl_expired",
        "pass_oversize",
        "pass_fragment",
        "drop_nat_pool_exhausted",
        "tx_time_exceeded",
        "fwd_icmp_error",
        "pass_vlan",
        "drop_ttl_expired",
    ];
}

/// The flow hash both sides use: the XDP program to pick a Maglev slot, the userspace L4 proxy to
/// make the same choice, and tests to predict it. Inputs are in network order as in the packet.
/// A 32-bit murmur3-style mix: cheap on BPF (no loops, no tables) and well distributed.
#[inline(always)]
pub fn flow_hash(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h: u32 = 0x9747_b28c ^ (proto as u32);
    h = mix(h, saddr);
    h = mix(h, daddr);
    h = mix(h, ((sport as u32) << 16) | dport as u32);
    fmix(h)
}

/// [`flow_hash`] of an IPv6 flow: every word of both addresses mixed in.
#[inline(always)]
pub fn flow_hash6(saddr: Addr6, daddr: Addr6, sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h: u32 = 0x9747_b28c ^ (proto as u32) ^ 0x6000_0000;
    h = mix(h, saddr[0]);
    h = mix(h, saddr[1]);
    h = mix(h, saddr[2]);
    h = mix(h, saddr[3]);
    h = mix(h, daddr[0]);
    h = mix(h, daddr[1]);
    h = mix(h, daddr[2]);
    h = mix(h, daddr[3]);
    h = mix(h, ((sport as u32) << 16) | dport as u32);
    fmix(h)
}

/// [`src_hash`] of an IPv6 client.
#[inline(always)]
pub fn src_hash6(saddr: Addr6) -> u32 {
    let mut h = mix(0x9747_b28c, saddr[0]);
    h = mix(h, saddr[1]);
    h = mix(h, saddr[2]);
    h = mix(h, saddr[3]);
    fmix(h)
}

/// IPv6 extension headers the parser walks (hop-by-hop, routing, destination options) before
/// the transport header; a packet with more is passed (`pass_unparsed`).
pub const IPV6_EXT_MAX: u32 = 4;

/// The hash for `HASH_SRC_IP` services: only the client address counts.
#[inline(always)]
pub fn src_hash(saddr: u32) -> u32 {
    fmix(mix(0x9747_b28c, saddr))
}

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let mut k = k.wrapping_mul(0xcc9e_2d51);
    k = k.rotate_left(15);
    k = k.wrapping_mul(0x1b87_3593);
    let h = (h ^ k).rotate_left(13);
    h.wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// SNAT port for attempt `i` of a flow: deterministic, so a retransmitted SYN gets the port its
/// first copy got.
#[inline(always)]
pub fn nat_port(flow_hash: u32, attempt: u32) -> u16 {
    let range = (NAT_PORT_MAX - NAT_PORT_MIN) as u32 + 1;
    let h = fmix(flow_hash.wrapping_add(attempt.wrapping_mul(0x9e37_79b9)));
    NAT_PORT_MIN + (h % range) as u16
}

// Layout checks: a change here is an ABI change for pinned maps (bump PIN_ABI below).
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 8);
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 16);
const _: () = assert!(core::mem::size_of::<Backend>() == 32);
const _: () = assert!(core::mem::size_of::<ResolveBatch>() == 32);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);
const _: () = assert!(core::mem::size_of::<CtValue>() == 56);
const _: () = assert!(core::mem::size_of::<FlowCounters>() == 32);
const _: () = assert!(core::mem::size_of::<SnatPool>() == 40);
const _: () = assert!(core::mem::size_of::<IfAddr>() == 8);
const _: () = assert!(core::mem::size_of::<ServiceKey6>() == 20);
const _: () = assert!(core::mem::size_of::<Backend6>() == 56);
const _: () = assert!(core::mem::size_of::<FlowKey6>() == 40);
const _: () = assert!(core::mem::size_of::<CtValue6>() == 80);
const _: () = assert!(core::mem::size_of::<Counters>() == 16);

/// Version of the pinned-map layout. The agent keeps pins in a directory named after it, so an
/// agent with another layout never adopts incompatible maps. 11: IPv6 SNAT pools, the GSO
/// handoff slot and the mmapable Maglev array.
pub const PIN_ABI: u32 = 11;

#[cfg(feature = "user")]
mod pod {
    use super::{
        Backend, Backend6, Counters, CtValue, CtValue6, FlowCounters, FlowKey, FlowKey6, IfAddr,
        ResolveBatch, ServiceKey, ServiceKey6, ServiceValue, SnatPool,
    };
    // SAFETY: ServiceKey is #[repr(C)], holds only integers, has no padding (size asserted above)
    // and every bit pattern is a valid value, which is what aya::Pod requires.
    unsafe impl aya::Pod for ServiceKey {}
    // SAFETY: as ServiceKey (size asserted above, no padding).
    unsafe impl aya::Pod for ServiceKey6 {}
    // SAFETY: ServiceValue is #[repr(C)], holds only integers, has no padding (size asserted above)
    // and every bit pattern is a valid value, which is what aya::Pod requires.
    unsafe impl aya::Pod for ServiceValue {}
    // SAFETY: Backend is #[repr(C)], holds only integers, has no padding (size asserted above)
    // and every bit pattern is a valid value, which is what aya::Pod requires.
    unsafe impl aya::Pod for Backend {}
    // SAFETY: as Backend (size asserted above, no padding).
    unsafe impl aya::Pod for Backend6 {}
    // SAFETY: FlowKey is #[repr(C)], holds only integers, has no padding (size asserted above)
    // and every bit pattern is a valid value, which is what aya::Pod requires.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as FlowKey (size asserted above, no padding).
    unsafe impl aya::Pod for FlowKey6 {}
    // SAFETY: CtValue is #[repr(C)], holds only integers, has no padding (size asserted above)
    // and every bit pattern is a valid value, which is what aya::Pod requires.
    unsafe impl aya::Pod for CtValue {}
    // SAFETY: as CtValue (size asserted above, no padding).
    unsafe impl aya::Pod for CtValue6 {}
    // SAFETY: FlowCounters is #[repr(C)], holds only integers, has no padding (size asserted
    // above) and every bit pattern is a valid value, which is what aya::Pod requires.
    unsafe impl aya::Pod for FlowCounters {}
    // SAFETY: as FlowCounters (size asserted above, no padding).
    unsafe impl aya::Pod for SnatPool {}
    // SAFETY: IfAddr is #[repr(C)], holds only integers, has no padding (size asserted above)
    // and every bit pattern is a valid value, which is what aya::Pod requires.
    unsafe impl aya::Pod for IfAddr {}
    // SAFETY: Counters is #[repr(C)], holds only integers, has no padding (size asserted above)
    // and every bit pattern is a valid value, which is what aya::Pod requires.
    unsafe impl aya::Pod for Counters {}
    // SAFETY: ResolveBatch is #[repr(C)], holds only integers, has no padding (size asserted above)
    // and every bit pattern is a valid value, which is what aya::Pod requires.
    unsafe impl aya::Pod for ResolveBatch {}
}
