//! IPv6 parsing: the fixed header, then the extension headers a router walks past (hop-by-hop,
//! routing, destination options, at most `IPV6_EXT_MAX` of them) to the TCP or UDP header.
//! Fragments go to the kernel (`pass_fragment`); other extension headers (ESP, AH, mobility, no
//! next header...) are not ours to look into (`pass_unparsed`). The rest of the data path (service
//! lookup, Maglev, connection table, NAT, forwarding) is the IPv4 code, generic over `Family`.

use gateway_common::{verdict, IPV6_EXT_MAX, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use aya_ebpf::programs::XdpContext;

use crate::{
    family::{Ip6Hdr, V6},
    packet::{parse_l4, ptr_at, Packet, ETH_LEN},
};

pub const IP6_LEN: usize = 40;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;

/// The fixed header and the upper-layer header behind the walked extension headers: the
/// header, its protocol (TCP, UDP or ICMPv6) and the extension headers' length.
#[inline(always)]
pub fn upper(ctx: &XdpContext) -> Result<(*mut Ip6Hdr, u8, usize), u32> {
    let ip: *mut Ip6Hdr = ptr_at(ctx, ETH_LEN).ok_or(verdict::PASS_UNPARSED)?;
    let (version, mut next) = unsafe { ((*ip).version(), (*ip).nexthdr) };
    if version != 6 {
        return Err(verdict::PASS_UNPARSED);
    }
    // Each walked header: next header, then its length in 8-byte units beyond the first 8.
    // The offset stays below 14 + 40 + 4 * 2048, which keeps the verifier's range bounded.
    let mut ext: usize = 0;
    for _ in 0..IPV6_EXT_MAX {
        match next {
            PROTO_TCP | PROTO_UDP | PROTO_ICMPV6 => break,
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let h: *const [u8; 2] =
                    ptr_at(ctx, ETH_LEN + IP6_LEN + ext).ok_or(verdict::PASS_UNPARSED)?;
                let (n, len) = unsafe { ((*h)[0], (*h)[1]) };
                next = n;
                ext += (len as usize + 1) * 8;
            }
            NEXTHDR_FRAGMENT => return Err(verdict::PASS_FRAGMENT),
            _ => return Err(verdict::PASS_UNPARSED),
        }
    }
    if next == NEXTHDR_FRAGMENT {
        return Err(verdict::PASS_FRAGMENT);
    }
    Ok((ip, next, ext))
}

impl Packet<V6> {
    /// An IPv6 frame (the caller checked the Ethernet type).
    #[inline(always)]
    pub fn parse(ctx: &XdpContext) -> Result<Packet<V6>, u32> {
        let eth: *mut [u8; 12] = ptr_at(ctx, 0).ok_or(verdict::PASS_UNPARSED)?;
        let (ip, next, ext) = upper(ctx)?;
        let (ports, l4_check, tcp_flags) = parse_l4(ctx, ETH_LEN + IP6_LEN + ext, next)?;
        Ok(Packet::from_parts(
            eth, ip, ports, l4_check, next, tcp_flags, ext as u16,
        ))
    }
}
