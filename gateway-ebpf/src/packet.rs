//! Ethernet/IP/TCP|UDP parsing with verifier-checked bounds, and the NAT rewrite, for both
//! families (`Packet<V4>`, `Packet<V6>`; the IPv6 header walk is in `ipv6`).
//!
//! IPv4 is parsed without options; fragments of either family are passed to the kernel
//! (`pass_fragment`), anything else unparsed untouched (`pass_unparsed`).

use core::marker::PhantomData;

use aya_ebpf::programs::XdpContext;
use gateway_common::{verdict, FlowKeyOf, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use crate::{
    csum,
    family::{Family, IpHdr, V4},
};

pub const ETH_LEN: usize = 14;
pub const IP_LEN: usize = 20;
/// What the parsers return for an ICMP or ICMPv6 packet: not a verdict, the ICMP step's turn.
pub const TO_ICMP: u32 = 0x100;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Returns a pointer to a `T` at `off`, or None if the packet is too short.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

/// The Ethernet type of the frame (host order), or None if it has no whole Ethernet header.
#[inline(always)]
pub fn ethertype(ctx: &XdpContext) -> Option<u16> {
    let ethertype: *const u16 = ptr_at(ctx, 12)?;
    Some(u16::from_be(unsafe { *ethertype }))
}

pub struct Packet<F: Family> {
    eth: *mut [u8; 12],
    ip: *mut F::Hdr,
    /// Source and destination ports (first 4 bytes of both TCP and UDP).
    ports: *mut [u16; 2],
    /// L4 checksum field; None for UDP without a checksum.
    l4_check: Option<*mut u16>,
    proto: u8,
    /// TCP flags byte (0 for UDP).
    tcp_flags: u8,
    /// Bytes of IPv6 extension headers between the fixed header and the L4 header (0 for IPv4).
    ext_len: u16,
    _f: PhantomData<F>,
}

/// The TCP or UDP header at `l4`: ports, checksum field (None for a UDP datagram without one)
/// and TCP flags.
#[inline(always)]
#[allow(clippy::type_complexity)]
pub fn parse_l4(
    ctx: &XdpContext,
    l4: usize,
    proto: u8,
) -> Result<(*mut [u16; 2], Option<*mut u16>, u8), u32> {
    // One bounds check per header, every field addressed from the checked pointer by a
    // constant: behind IPv6 extension headers `l4` is variable, and the verifier keeps the
    // checked range only for pointers derived from the one it checked.
    let (hdr, l4_check, tcp_flags) = match proto {
        PROTO_TCP => {
            // Flags at 13, checksum at 16: require the whole 20-byte header.
            let hdr: *mut [u8; 20] = ptr_at(ctx, l4).ok_or(verdict::PASS_UNPARSED)?;
            let flags = unsafe { (*hdr)[13] };
            let check = unsafe { (hdr as *mut u8).add(16) } as *mut u16;
            (hdr as *mut u8, Some(check), flags)
        }
        PROTO_UDP => {
            let hdr: *mut [u8; 8] = ptr_at(ctx, l4).ok_or(verdict::PASS_UNPARSED)?;
            let check = unsafe { (hdr as *mut u8).add(6) } as *mut u16;
            // A zero UDP checksum means "none" and must stay zero.
            let c = if unsafe { *check } == 0 {
                None
            } else {
                Some(check)
            };
            (hdr as *mut u8, c, 0)
        }
        // Not a verdict: the ICMP step (`icmp`) takes the packet.
        PROTO_ICMP | PROTO_ICMPV6 => return Err(TO_ICMP),
        _ => return Err(verdict::PASS_UNPARSED),
    };
    let ports = hdr as *mut [u16; 2];
    Ok((ports, l4_check, tcp_flags))
}

impl Packet<V4> {
    /// An IPv4 frame (the caller checked the Ethernet type).
    #[inline(always)]
    pub fn parse(ctx: &XdpContext) -> Result<Packet<V4>, u32> {
        let eth: *mut [u8; 12] = ptr_at(ctx, 0).ok_or(verdict::PASS_UNPARSED)?;
        let ip: *mut IpHdr = ptr_at(ctx, ETH_LEN).ok_or(verdict::PASS_UNPARSED)?;
        let (ver_ihl, frag, proto) = unsafe { (*ip).parse_fields() };
        // Version 4, no options.
        if ver_ihl != 0x45 {
            return Err(verdict::PASS_UNPARSED);
        }
        // No fragments (MF set or a non-zero offset).
        if u16::from_be(frag) & 0x3fff != 0 {
            return Err(verdict::PASS_FRAGMENT);
        }
        let (ports, l4_check, tcp_flags) = parse_l4(ctx, ETH_LEN + IP_LEN, proto)?;
        Ok(Packet {
            eth,
            ip,
            ports,
            l4_check,
            proto,
            tcp_flags,
            ext_len: 0,
            _f: PhantomData,
        })
    }
}

impl<F: Family> Packet<F> {
    /// A packet of family `F` from its parts (see `parse_l4`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        eth: *mut [u8; 12],
        ip: *mut F::Hdr,
        ports: *mut [u16; 2],
        l4_check: Option<*mut u16>,
        proto: u8,
        tcp_flags: u8,
        ext_len: u16,
    ) -> Packet<F> {
        Packet {
            eth,
            ip,
            ports,
            l4_check,
            proto,
            tcp_flags,
            ext_len,
            _f: PhantomData,
        }
    }

    #[inline(always)]
    pub fn flow_key(&self) -> FlowKeyOf<F::A> {
        unsafe {
            F::flow_key(
                *F::saddr(self.ip),
                *F::daddr(self.ip),
                (*self.ports)[0],
                (*self.ports)[1],
                self.proto,
            )
        }
    }

    /// A TCP SYN without ACK: the start of a new connection.
    #[inline(always)]
    pub fn is_syn(&self) -> bool {
        self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// The `ct_flags` a TCP FIN or RST sets on its direction's connection entry (0: neither).
    #[inline(always)]
    pub fn close_flags(&self) -> u32 {
        let mut f = 0;
        if self.tcp_flags & TCP_FIN != 0 {
            f |= gateway_common::ct_flags::FIN;
        }
        if self.tcp_flags & TCP_RST != 0 {
            f |= gateway_common::ct_flags::RST;
        }
        f
    }

    /// The IPv4 TTL or the IPv6 hop limit.
    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        unsafe { F::hops(self.ip) }
    }

    /// Whether the L4 checksum field holds just the pseudo-header sum, as a sender offloading
    /// its checksum leaves it (CHECKSUM_PARTIAL on a veth). A full checksum equals it only by a
    /// 1-in-65536 coincidence, so the caller asks only on interfaces where partial ones occur.
    #[inline(always)]
    pub fn looks_partial(&self) -> bool {
        let Some(check) = self.l4_check else {
            return false;
        };
        unsafe {
            let l4_len = F::payload_len(self.ip).wrapping_sub(self.ext_len);
            *check == F::pseudo_seed(&*F::saddr(self.ip), &*F::daddr(self.ip), self.proto, l4_len)
        }
    }

    #[inline(always)]
    pub fn eth_dst(&self) -> [u8; 6] {
        let e = unsafe { &*self.eth };
        [e[0], e[1], e[2], e[3], e[4], e[5]]
    }

    #[inline(always)]
    pub fn eth_src(&self) -> [u8; 6] {
        let e = unsafe { &*self.eth };
        [e[6], e[7], e[8], e[9], e[10], e[11]]
    }

    /// Rewrites addresses and ports (all network order) with incremental checksum updates,
    /// decrements the TTL if `hop` (it must then be above 1), and sets the Ethernet header. `partial`: the L4 checksum field is a
    /// CHECKSUM_PARTIAL seed (see `looks_partial`), which covers only the pseudo-header: the
    /// addresses change it, the ports (summed later with the rest of the segment) do not.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn rewrite(
        &self,
        partial: bool,
        hop: bool,
        saddr: &F::A,
        daddr: &F::A,
        sport: u16,
        dport: u16,
        smac: &[u8; 6],
        dmac: &[u8; 6],
    ) {
        unsafe {
            let ports = &mut *self.ports;
            let (osp, odp) = (ports[0], ports[1]);
            // The old addresses are read in place: the L4 checksum first, then the header.
            let (os, od) = (&*F::saddr(self.ip), &*F::daddr(self.ip));
            if let Some(check) = self.l4_check.filter(|_| partial) {
                let c = F::seed_addr(*check, os, saddr);
                *check = F::seed_addr(c, od, daddr);
            } else if let Some(check) = self.l4_check {
                // The pseudo-header carries the addresses, so they count here too.
                let mut c = F::csum_addr(*check, os, saddr);
                c = F::csum_addr(c, od, daddr);
                c = csum::replace2(c, osp, sport);
                c = csum::replace2(c, odp, dport);
                if self.proto == PROTO_UDP && c == 0 {
                    c = 0xffff;
                }
                *check = c;
            }
            ports[0] = sport;
            ports[1] = dport;
            // The caller passes TTL <= 1 to the kernel, so a hop never wraps.
            F::set_addrs(self.ip, hop, saddr, daddr);

            let e = &mut *self.eth;
            e[0..6].copy_from_slice(dmac);
            e[6..12].copy_from_slice(smac);
        }
    }
}
