//! The two address families, as one trait the feature modules are generic over: which maps
//! serve a family, how its flow key is built and hashed, where its header keeps addresses and
//! the hop count, and how its checksums follow an address change. Monomorphised and inlined,
//! so the IPv4 path compiles to what it was before IPv6 existed; each family keeps its own maps
//! (keys of 16 bytes for IPv4, 40 for IPv6), as Cilium and Katran do.

use aya_ebpf::{
    bindings::bpf_fib_lookup,
    maps::{Array, HashMap, LruHashMap},
};
use gateway_common::{
    flow_hash, flow_hash6, src_hash, src_hash6, Addr6, Address, BackendOf, CtValueOf, FlowKey,
    FlowKey6, FlowKeyOf, ServiceKeyOf, ServiceValue, SnatPool,
};

use crate::{
    csum,
    maps::{
        ADDRS, ADDRS6, BACKENDS, BACKENDS6, CONNTRACK, CONNTRACK6, CONNTRACK6_NEW, CONNTRACK_NEW,
        IFADDRS, IFADDRS6, SCRATCH6, SERVICES, SERVICES6, SNAT_POOLS,
    },
};

pub trait Family: 'static {
    type A: Address;
    /// The fixed IP header.
    type Hdr;
    /// AF_INET or AF_INET6, for `bpf_fib_lookup`.
    const AF: u8;
    /// Build the new-flow entries and the FIB query in a per-CPU map (`scratch`) instead of the
    /// stack: IPv6's entries and query do not fit one 512-byte frame beside the rest.
    const SCRATCH: bool;
    /// The per-CPU work area, for `SCRATCH` families.
    fn scratch() -> Option<*mut NewFlow<Self::A>>;
    /// The per-CPU FIB query, for `SCRATCH` families.
    fn fib_scratch() -> Option<*mut bpf_fib_lookup>;

    fn services() -> &'static HashMap<ServiceKeyOf<Self::A>, ServiceValue>;
    fn backends() -> &'static Array<BackendOf<Self::A>>;
    fn conntrack() -> &'static LruHashMap<FlowKeyOf<Self::A>, CtValueOf<Self::A>>;
    /// The unconfirmed flows' table (`CONNTRACK_NEW`, `CONNTRACK6_NEW`).
    fn conntrack_new() -> &'static LruHashMap<FlowKeyOf<Self::A>, CtValueOf<Self::A>>;
    /// Whether the family has SNAT pools (`SNAT_POOLS` is IPv4 only).
    const POOLS: bool;
    /// The SNAT pool of interface `ifindex` (IPv4 only: None for IPv6).
    fn snat_pool(ifindex: u32) -> Option<&'static SnatPool>;
    /// An address of a `SnatPool` as this family's address (IPv4 only).
    fn pool_addr(a: u32) -> Self::A;
    /// Whether `addr` is one of the node's own addresses (`ADDRS`, `ADDRS6`).
    fn is_node(addr: &Self::A) -> bool;
    /// The SNAT source of interface `ifindex` (`IFADDRS`, `IFADDRS6`), if it has one.
    fn if_addr(ifindex: u32) -> Option<Self::A>;

    fn flow_key(
        saddr: Self::A,
        daddr: Self::A,
        sport: u16,
        dport: u16,
        proto: u8,
    ) -> FlowKeyOf<Self::A>;
    fn flow_hash(k: &FlowKeyOf<Self::A>) -> u32;
    fn src_hash(saddr: &Self::A) -> u32;
    fn fib_addrs(p: &mut bpf_fib_lookup, saddr: &Self::A, daddr: &Self::A);

    /// # Safety
    /// `ip` points at a whole, bounds-checked header.
    unsafe fn saddr(ip: *mut Self::Hdr) -> *mut Self::A;
    /// # Safety
    /// As `saddr`.
    unsafe fn daddr(ip: *mut Self::Hdr) -> *mut Self::A;
    /// TTL or hop limit. # Safety: as `saddr`.
    unsafe fn hops(ip: *mut Self::Hdr) -> u8;
    /// The length of what follows the fixed header (the L4 header and payload, plus IPv6
    /// extension headers). # Safety: as `saddr`.
    unsafe fn payload_len(ip: *mut Self::Hdr) -> u16;
    /// Writes the new addresses, and takes a hop (TTL or hop limit down by one, which the
    /// caller checked is above 1) if `hop`, keeping any header checksum valid.
    /// # Safety: as `saddr`.
    unsafe fn set_addrs(ip: *mut Self::Hdr, hop: bool, saddr: &Self::A, daddr: &Self::A);

    /// `check` updated for an address changing from `old` to `new`.
    fn csum_addr(check: u16, old: &Self::A, new: &Self::A) -> u16;
    /// A partial checksum's seed updated likewise.
    fn seed_addr(seed: u16, old: &Self::A, new: &Self::A) -> u16;
    /// The folded pseudo-header sum of a TCP/UDP packet (see `csum::pseudo_seed`).
    fn pseudo_seed(saddr: &Self::A, daddr: &Self::A, proto: u8, l4_len: u16) -> u16;
}

pub struct V4;
pub struct V6;

/// What the new-flow path builds: both connection entries and the reply key.
#[repr(C)]
pub struct NewFlow<A> {
    pub fwd: CtValueOf<A>,
    pub rev: CtValueOf<A>,
    pub rkey: FlowKeyOf<A>,
}

/// The per-CPU work area of the IPv6 path (`SCRATCH6`).
#[repr(C)]
pub struct Scratch6 {
    pub flow: NewFlow<Addr6>,
    pub fib: bpf_fib_lookup,
}

#[repr(C)]
pub struct IpHdr {
    ver_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    proto: u8,
    check: u16,
    saddr: u32,
    daddr: u32,
}

impl IpHdr {
    /// Version/IHL byte, fragment field (network order) and protocol.
    #[inline(always)]
    pub fn parse_fields(&self) -> (u8, u16, u8) {
        (self.ver_ihl, self.frag_off, self.proto)
    }
}

#[repr(C)]
pub struct Ip6Hdr {
    /// Version, traffic class, flow label.
    vtc_flow: u32,
    payload_len: u16,
    pub nexthdr: u8,
    hop_limit: u8,
    saddr: Addr6,
    daddr: Addr6,
}

impl Ip6Hdr {
    #[inline(always)]
    pub fn version(&self) -> u8 {
        (u32::from_be(self.vtc_flow) >> 28) as u8
    }
}

impl Family for V4 {
    type A = u32;
    type Hdr = IpHdr;
    const AF: u8 = 2;
    const SCRATCH: bool = false;
    const POOLS: bool = true;
    #[inline(always)]
    fn scratch() -> Option<*mut NewFlow<u32>> {
        None
    }
    #[inline(always)]
    fn fib_scratch() -> Option<*mut bpf_fib_lookup> {
        None
    }

    #[inline(always)]
    fn services() -> &'static HashMap<ServiceKeyOf<u32>, ServiceValue> {
        &SERVICES
    }
    #[inline(always)]
    fn backends() -> &'static Array<BackendOf<u32>> {
        &BACKENDS
    }
    #[inline(always)]
    fn conntrack() -> &'static LruHashMap<FlowKeyOf<u32>, CtValueOf<u32>> {
        &CONNTRACK
    }
    #[inline(always)]
    fn conntrack_new() -> &'static LruHashMap<FlowKeyOf<u32>, CtValueOf<u32>> {
        &CONNTRACK_NEW
    }
    #[inline(always)]
    fn snat_pool(ifindex: u32) -> Option<&'static SnatPool> {
        unsafe { SNAT_POOLS.get(&ifindex) }
    }
    #[inline(always)]
    fn pool_addr(a: u32) -> u32 {
        a
    }
    #[inline(always)]
    fn is_node(addr: &u32) -> bool {
        unsafe { ADDRS.get(addr) }.is_some_and(|f| f & gateway_common::addr_flags::NODE != 0)
    }
    #[inline(always)]
    fn if_addr(ifindex: u32) -> Option<u32> {
        match unsafe { IFADDRS.get(&ifindex) } {
            Some(a) if a.addr != 0 => Some(a.addr),
            _ => None,
        }
    }

    /// Built from four words: a struct literal zeroes the 3-byte padding with a call to a
    /// byte-by-byte `memset` subprogram, on every packet.
    #[inline(always)]
    fn flow_key(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> FlowKey {
        // Little-endian (bpfel): the low half of a word is the field at the lower address.
        let words = [
            saddr,
            daddr,
            sport as u32 | (dport as u32) << 16,
            proto as u32,
        ];
        // Safety: FlowKey is #[repr(C)], 16 bytes, any bit pattern valid.
        unsafe { core::mem::transmute::<[u32; 4], FlowKey>(words) }
    }
    #[inline(always)]
    fn flow_hash(k: &FlowKey) -> u32 {
        flow_hash(k.saddr, k.daddr, k.sport, k.dport, k.proto)
    }
    #[inline(always)]
    fn src_hash(saddr: &u32) -> u32 {
        src_hash(*saddr)
    }
    #[inline(always)]
    fn fib_addrs(p: &mut bpf_fib_lookup, saddr: &u32, daddr: &u32) {
        p.__bindgen_anon_3.ipv4_src = *saddr;
        p.__bindgen_anon_4.ipv4_dst = *daddr;
    }

    #[inline(always)]
    unsafe fn saddr(ip: *mut IpHdr) -> *mut u32 {
        unsafe { &mut (*ip).saddr }
    }
    #[inline(always)]
    unsafe fn daddr(ip: *mut IpHdr) -> *mut u32 {
        unsafe { &mut (*ip).daddr }
    }
    #[inline(always)]
    unsafe fn hops(ip: *mut IpHdr) -> u8 {
        unsafe { (*ip).ttl }
    }
    #[inline(always)]
    unsafe fn payload_len(ip: *mut IpHdr) -> u16 {
        unsafe { u16::from_be((*ip).tot_len).wrapping_sub(20) }
    }
    #[inline(always)]
    unsafe fn set_addrs(ip: *mut IpHdr, hop: bool, saddr: &u32, daddr: &u32) {
        let (saddr, daddr) = (*saddr, *daddr);
        let ip = unsafe { &mut *ip };
        // A router's hop: TTL down by one. TTL and protocol share one 16-bit word of the header
        // checksum.
        let mut c = ip.check;
        if hop {
            let ttl = ip.ttl;
            c = csum::replace2(
                c,
                u16::from_ne_bytes([ttl, ip.proto]),
                u16::from_ne_bytes([ttl - 1, ip.proto]),
            );
            ip.ttl = ttl - 1;
        }
        c = csum::replace4(c, ip.saddr, saddr);
        c = csum::replace4(c, ip.daddr, daddr);
        ip.check = c;
        ip.saddr = saddr;
        ip.daddr = daddr;
    }

    #[inline(always)]
    fn csum_addr(check: u16, old: &u32, new: &u32) -> u16 {
        csum::replace4(check, *old, *new)
    }
    #[inline(always)]
    fn seed_addr(seed: u16, old: &u32, new: &u32) -> u16 {
        csum::seed_replace4(seed, *old, *new)
    }
    #[inline(always)]
    fn pseudo_seed(saddr: &u32, daddr: &u32, proto: u8, l4_len: u16) -> u16 {
        csum::pseudo_seed(*saddr, *daddr, proto, l4_len)
    }
}

impl Family for V6 {
    type A = Addr6;
    type Hdr = Ip6Hdr;
    const AF: u8 = 10;
    const SCRATCH: bool = true;
    const POOLS: bool = false;
    #[inline(always)]
    fn scratch() -> Option<*mut NewFlow<Addr6>> {
        SCRATCH6
            .get_ptr_mut(0)
            .map(|w| unsafe { &mut (*w).flow as *mut NewFlow<Addr6> })
    }
    #[inline(always)]
    fn fib_scratch() -> Option<*mut bpf_fib_lookup> {
        SCRATCH6
            .get_ptr_mut(0)
            .map(|w| unsafe { &mut (*w).fib as *mut bpf_fib_lookup })
    }

    #[inline(always)]
    fn services() -> &'static HashMap<ServiceKeyOf<Addr6>, ServiceValue> {
        &SERVICES6
    }
    #[inline(always)]
    fn backends() -> &'static Array<BackendOf<Addr6>> {
        &BACKENDS6
    }
    #[inline(always)]
    fn conntrack() -> &'static LruHashMap<FlowKeyOf<Addr6>, CtValueOf<Addr6>> {
        &CONNTRACK6
    }
    #[inline(always)]
    fn conntrack_new() -> &'static LruHashMap<FlowKeyOf<Addr6>, CtValueOf<Addr6>> {
        &CONNTRACK6_NEW
    }
    #[inline(always)]
    fn snat_pool(_ifindex: u32) -> Option<&'static SnatPool> {
        None
    }
    #[inline(always)]
    fn pool_addr(_a: u32) -> Addr6 {
        [0; 4]
    }
    #[inline(always)]
    fn is_node(addr: &Addr6) -> bool {
        unsafe { ADDRS6.get(addr) }.is_some_and(|f| f & gateway_common::addr_flags::NODE != 0)
    }
    #[inline(always)]
    fn if_addr(ifindex: u32) -> Option<Addr6> {
        match unsafe { IFADDRS6.get(&ifindex) } {
            Some(a) if *a != [0; 4] => Some(*a),
            _ => None,
        }
    }

    /// Built from words, as for IPv4 (no `memset` of the padding).
    #[inline(always)]
    fn flow_key(saddr: Addr6, daddr: Addr6, sport: u16, dport: u16, proto: u8) -> FlowKey6 {
        let words = [
            saddr[0],
            saddr[1],
            saddr[2],
            saddr[3],
            daddr[0],
            daddr[1],
            daddr[2],
            daddr[3],
            sport as u32 | (dport as u32) << 16,
            proto as u32,
        ];
        // Safety: FlowKey6 is #[repr(C)], 40 bytes, any bit pattern valid.
        unsafe { core::mem::transmute::<[u32; 10], FlowKey6>(words) }
    }
    #[inline(always)]
    fn flow_hash(k: &FlowKey6) -> u32 {
        flow_hash6(k.saddr, k.daddr, k.sport, k.dport, k.proto)
    }
    #[inline(always)]
    fn src_hash(saddr: &Addr6) -> u32 {
        src_hash6(*saddr)
    }
    #[inline(always)]
    fn fib_addrs(p: &mut bpf_fib_lookup, saddr: &Addr6, daddr: &Addr6) {
        p.__bindgen_anon_3.ipv6_src = *saddr;
        p.__bindgen_anon_4.ipv6_dst = *daddr;
    }

    #[inline(always)]
    unsafe fn saddr(ip: *mut Ip6Hdr) -> *mut Addr6 {
        unsafe { &mut (*ip).saddr }
    }
    #[inline(always)]
    unsafe fn daddr(ip: *mut Ip6Hdr) -> *mut Addr6 {
        unsafe { &mut (*ip).daddr }
    }
    #[inline(always)]
    unsafe fn hops(ip: *mut Ip6Hdr) -> u8 {
        unsafe { (*ip).hop_limit }
    }
    #[inline(always)]
    unsafe fn payload_len(ip: *mut Ip6Hdr) -> u16 {
        unsafe { u16::from_be((*ip).payload_len) }
    }
    /// No header checksum in IPv6: only the transport checksum covers the addresses.
    #[inline(always)]
    unsafe fn set_addrs(ip: *mut Ip6Hdr, hop: bool, saddr: &Addr6, daddr: &Addr6) {
        let ip = unsafe { &mut *ip };
        if hop {
            ip.hop_limit -= 1;
        }
        ip.saddr = *saddr;
        ip.daddr = *daddr;
    }

    #[inline(always)]
    fn csum_addr(check: u16, old: &Addr6, new: &Addr6) -> u16 {
        let mut c = csum::replace4(check, old[0], new[0]);
        c = csum::replace4(c, old[1], new[1]);
        c = csum::replace4(c, old[2], new[2]);
        csum::replace4(c, old[3], new[3])
    }
    #[inline(always)]
    fn seed_addr(seed: u16, old: &Addr6, new: &Addr6) -> u16 {
        !Self::csum_addr(!seed, old, new)
    }
    #[inline(always)]
    fn pseudo_seed(saddr: &Addr6, daddr: &Addr6, proto: u8, l4_len: u16) -> u16 {
        csum::pseudo_seed6(saddr, daddr, proto, l4_len)
    }
}
