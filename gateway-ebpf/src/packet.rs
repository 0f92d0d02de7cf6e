//! Ethernet/IPv4/TCP|UDP parsing with verifier-checked bounds, and the NAT rewrite.
//!
//! Only IPv4 without options and without fragmentation is parsed; anything else is passed to the
//! kernel untouched (counted as `pass_unparsed`).

use aya_ebpf::programs::XdpContext;
use gateway_common::{verdict, FlowKey, PROTO_TCP, PROTO_UDP};

use crate::csum;

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const ETH_P_IP: u16 = 0x0800;
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

/// A `FlowKey` built from four words: a struct literal zeroes the 3-byte padding with a call to
/// a byte-by-byte `memset` subprogram, on every packet.
#[inline(always)]
pub fn flow_key(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> FlowKey {
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

pub struct Packet {
    eth: *mut [u8; 12],
    ip: *mut IpHdr,
    /// Source and destination ports (first 4 bytes of both TCP and UDP).
    ports: *mut [u16; 2],
    /// L4 checksum field; None for UDP without a checksum.
    l4_check: Option<*mut u16>,
    proto: u8,
    /// TCP flags byte (0 for UDP).
    tcp_flags: u8,
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

impl Packet {
    #[inline(always)]
    pub fn parse(ctx: &XdpContext) -> Result<Packet, u32> {
        let eth: *mut [u8; 12] = ptr_at(ctx, 0).ok_or(verdict::PASS_UNPARSED)?;
        let ethertype: *const u16 = ptr_at(ctx, 12).ok_or(verdict::PASS_UNPARSED)?;
        if u16::from_be(unsafe { *ethertype }) != ETH_P_IP {
            return Err(verdict::PASS_UNPARSED);
        }
        let ip: *mut IpHdr = ptr_at(ctx, ETH_LEN).ok_or(verdict::PASS_UNPARSED)?;
        let (ver_ihl, frag, proto) = unsafe { ((*ip).ver_ihl, (*ip).frag_off, (*ip).proto) };
        // Version 4, no options; no fragments (MF set or a non-zero offset).
        if ver_ihl != 0x45 || u16::from_be(frag) & 0x3fff != 0 {
            return Err(verdict::PASS_UNPARSED);
        }
        let l4 = ETH_LEN + IP_LEN;
        let (l4_check, tcp_flags) = match proto {
            PROTO_TCP => {
                // Flags at 13, checksum at 16: require the whole 20-byte header.
                let hdr: *mut [u8; 20] = ptr_at(ctx, l4).ok_or(verdict::PASS_UNPARSED)?;
                let flags = unsafe { (*hdr)[13] };
                let check: *mut u16 = ptr_at(ctx, l4 + 16).ok_or(verdict::PASS_UNPARSED)?;
                (Some(check), flags)
            }
            PROTO_UDP => {
                let check: *mut u16 = ptr_at(ctx, l4 + 6).ok_or(verdict::PASS_UNPARSED)?;
                // A zero UDP checksum means "none" and must stay zero.
                let c = if unsafe { *check } == 0 {
                    None
                } else {
                    Some(check)
                };
                (c, 0)
            }
            _ => return Err(verdict::PASS_UNPARSED),
        };
        let ports: *mut [u16; 2] = ptr_at(ctx, l4).ok_or(verdict::PASS_UNPARSED)?;
        Ok(Packet {
            eth,
            ip,
            ports,
            l4_check,
            proto,
            tcp_flags,
        })
    }

    #[inline(always)]
    pub fn flow_key(&self) -> FlowKey {
        unsafe {
            flow_key(
                (*self.ip).saddr,
                (*self.ip).daddr,
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

    /// The IPv4 TTL.
    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        unsafe { (*self.ip).ttl }
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
            let ip = &*self.ip;
            let l4_len = u16::from_be(ip.tot_len).wrapping_sub(IP_LEN as u16);
            *check == csum::pseudo_seed(ip.saddr, ip.daddr, self.proto, l4_len)
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
        saddr: u32,
        daddr: u32,
        sport: u16,
        dport: u16,
        smac: &[u8; 6],
        dmac: &[u8; 6],
    ) {
        unsafe {
            let ip = &mut *self.ip;
            let ports = &mut *self.ports;
            let (os, od, osp, odp) = (ip.saddr, ip.daddr, ports[0], ports[1]);

            // A router's hop: TTL down by one (the caller passes TTL <= 1 to the kernel). TTL and
            // protocol share one 16-bit word of the header checksum.
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
            c = csum::replace4(c, os, saddr);
            c = csum::replace4(c, od, daddr);
            ip.check = c;
            ip.saddr = saddr;
            ip.daddr = daddr;

            if let Some(check) = self.l4_check.filter(|_| partial) {
                let c = csum::seed_replace4(*check, os, saddr);
                *check = csum::seed_replace4(c, od, daddr);
            } else if let Some(check) = self.l4_check {
                // The pseudo-header carries the addresses, so they count here too.
                let mut c = csum::replace4(*check, os, saddr);
                c = csum::replace4(c, od, daddr);
                c = csum::replace2(c, osp, sport);
                c = csum::replace2(c, odp, dport);
                if self.proto == PROTO_UDP && c == 0 {
                    c = 0xffff;
                }
                *check = c;
            }
            ports[0] = sport;
            ports[1] = dport;

            let e = &mut *self.eth;
            e[0..6].copy_from_slice(dmac);
            e[6..12].copy_from_slice(smac);
        }
    }
}
