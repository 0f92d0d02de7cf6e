//! ICMP and ICMPv6, the two steps a router and a NAT owe the flows they carry:
//!
//! - errors about a forwarded flow (destination unreachable, fragmentation needed / packet too
//!   big, time exceeded, parameter problem) are matched to the flow by the header they quote and
//!   translated as a packet of that flow (`error4`, `error6`), so that path-MTU discovery and
//!   unreachable reports work through the gateway in both NAT modes and both directions;
//! - a packet whose TTL or hop limit forwarding would expire gets the time exceeded a router sends
//!   (`time_exceeded4`, `time_exceeded6`), built in place and sent back with XDP_TX (as Katran
//!   builds its packet-too-big), at most `ICMP_RATE` per second per CPU (the kernel's own global
//!   ICMP limit, `net.ipv4.icmp_msgs_per_sec`, and its burst).
//!
//! Both run from the entry point after the family's path handed over (`ACT_ICMP`,
//! `ACT_TIME_EXCEEDED`), each in a subprogram with its own stack frame.
//!
//! Translation follows Linux's NAT (`nf_nat_icmp_reply_translation`) and IPVS: the quoted packet
//! went out of the gateway translated, so its reversed tuple is the connection-table key of the
//! flow's packets in the error's direction, and that entry says what they become. The quoted
//! header gets the reverse of that (its source and destination, ports included), the outer
//! destination becomes the entry's destination, and the outer source becomes the entry's source
//! where the flow's packets have their source rewritten (towards the client always: the VIP;
//! towards a backend only with SNAT), else stays the reporting router's. Every checksum follows
//! incrementally: the outer IPv4 header, the ICMP checksum (with ICMPv6's pseudo-header), the
//! quoted IPv4 header and the quoted TCP or UDP checksum when the quote holds it.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_coarse_ns, bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use gateway_common::{
    ct_flags, verdict, Addr6, CtValueOf, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

use crate::{
    csum,
    family::{Family, Ip6Hdr, IpHdr, V4, V6},
    fib::LOOPBACK_IFINDEX,
    ipv6,
    maps::{BACKEND_STATS, ICMP_BUCKET, SERVICE_STATS, VERDICTS},
    metrics,
    packet::{ptr_at, ETH_LEN, ETH_P_IP, ETH_P_IPV6, IP_LEN},
};

/// Not XDP actions: what a family's path returns to hand the packet to an ICMP step.
/// An ICMP or ICMPv6 packet: `error4` / `error6`.
pub const ACT_ICMP: u32 = 0x100;
/// A packet to forward whose TTL or hop limit would expire: `time_exceeded4` / `6`.
pub const ACT_TIME_EXCEEDED: u32 = 0x101;

/// Time-exceeded messages sent per second and CPU, and the burst allowed after a quiet time: the
/// kernel's defaults for its ICMP (`icmp_msgs_per_sec`, `icmp_msgs_burst`).
const ICMP_RATE: u64 = 1000;
const ICMP_BURST: u64 = 50;
const ICMP_HDR: usize = 8;
/// The most of the expired packet a time exceeded quotes: an ICMPv4 message within 576 bytes
/// (RFC 1812 4.3.2.3), an ICMPv6 one within the IPv6 minimum MTU (RFC 4443 2.4 (c)).
const QUOTE_MAX4: usize = 576 - IP_LEN - ICMP_HDR;
const QUOTE_MAX6: usize = 1280 - ipv6::IP6_LEN - ICMP_HDR;

/// The per-CPU token bucket of time-exceeded messages (`ICMP_BUCKET`).
#[repr(C)]
pub struct IcmpBucket {
    tokens: u64,
    last_ns: u64,
}

/// What the ICMP steps need of a family beyond `Family`.
trait IcmpFamily: Family {
    /// The fixed header's length.
    const HDR_LEN: usize;
    const ETH_P: u16;
    const PROTO: u8;
    const TIME_EXCEEDED: u8;
    /// The quote limit of a time exceeded.
    const QUOTE_MAX: usize;
    /// Whether the ICMP checksum covers a pseudo-header (ICMPv6), so that it follows the outer
    /// addresses.
    const PSEUDO: bool;
    /// Whether the quoted IP header has its own checksum (IPv4). Updated incrementally with the
    /// addresses it covers, it keeps the header's one's-complement sum, so the ICMP checksum
    /// then needs nothing for the quoted addresses.
    const HDR_CSUM: bool;
    /// Whether an ICMP type is one of the errors that quote a packet of the flow.
    fn is_error(ty: u8) -> bool;
    /// The protocol of a quoted header that carries ports (a TCP or UDP packet, not a later
    /// fragment), None otherwise. # Safety: `ip` is bounds-checked.
    unsafe fn quoted_proto(ip: *mut Self::Hdr) -> Option<u8>;
    /// Writes a fresh header (ICMP inside, hop count 64). # Safety: as `quoted_proto`.
    unsafe fn write_hdr(ip: *mut Self::Hdr, saddr: &Self::A, daddr: &Self::A, payload_len: u16);
}

impl IcmpFamily for V4 {
    const HDR_LEN: usize = IP_LEN;
    const ETH_P: u16 = ETH_P_IP;
    const PROTO: u8 = PROTO_ICMP;
    const TIME_EXCEEDED: u8 = 11;
    const QUOTE_MAX: usize = QUOTE_MAX4;
    const PSEUDO: bool = false;
    const HDR_CSUM: bool = true;
    #[inline(always)]
    fn is_error(ty: u8) -> bool {
        // Destination unreachable (fragmentation needed among its codes), time exceeded,
        // parameter problem.
        matches!(ty, 3 | 11 | 12)
    }
    #[inline(always)]
    unsafe fn quoted_proto(ip: *mut IpHdr) -> Option<u8> {
        let (ver_ihl, frag, proto) = unsafe { (*ip).parse_fields() };
        // The gateway forwards IPv4 without options only; a later fragment quotes no ports.
        let first = u16::from_be(frag) & 0x1fff == 0;
        (ver_ihl == 0x45 && first && matches!(proto, PROTO_TCP | PROTO_UDP)).then_some(proto)
    }
    #[inline(always)]
    unsafe fn write_hdr(ip: *mut IpHdr, saddr: &u32, daddr: &u32, payload_len: u16) {
        let tot = (IP_LEN as u16 + payload_len).to_be_bytes();
        let mut w = [
            u32::from_ne_bytes([0x45, 0, tot[0], tot[1]]),
            0,
            u32::from_ne_bytes([64, PROTO_ICMP, 0, 0]),
            *saddr,
            *daddr,
        ];
        let sum = sum_words(&w);
        w[2] |= (!csum::fold(sum) as u32) << 16;
        unsafe { *(ip as *mut [u32; 5]) = w };
    }
}

impl IcmpFamily for V6 {
    const HDR_LEN: usize = ipv6::IP6_LEN;
    const ETH_P: u16 = ETH_P_IPV6;
    const PROTO: u8 = PROTO_ICMPV6;
    const TIME_EXCEEDED: u8 = 3;
    const QUOTE_MAX: usize = QUOTE_MAX6;
    const PSEUDO: bool = true;
    const HDR_CSUM: bool = false;
    #[inline(always)]
    fn is_error(ty: u8) -> bool {
        // Destination unreachable, packet too big, time exceeded, parameter problem.
        matches!(ty, 1..=4)
    }
    #[inline(always)]
    unsafe fn quoted_proto(ip: *mut Ip6Hdr) -> Option<u8> {
        // Extension headers in the quote are not walked (see docs/architecture.md).
        let (version, next) = unsafe { ((*ip).version(), (*ip).nexthdr) };
        (version == 6 && matches!(next, PROTO_TCP | PROTO_UDP)).then_some(next)
    }
    #[inline(always)]
    unsafe fn write_hdr(ip: *mut Ip6Hdr, saddr: &Addr6, daddr: &Addr6, payload_len: u16) {
        let len = payload_len.to_be_bytes();
        let w = [
            u32::from_ne_bytes([0x60, 0, 0, 0]),
            u32::from_ne_bytes([len[0], len[1], PROTO_ICMPV6, 64]),
        ];
        unsafe {
            *(ip as *mut [u32; 2]) = w;
            *V6::saddr(ip) = *saddr;
            *V6::daddr(ip) = *daddr;
        }
    }
}

/// The unfolded one's-complement sum of words as they sit in the packet.
#[inline(always)]
fn sum_words<const N: usize>(w: &[u32; N]) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while i < N {
        sum += (w[i] >> 16) + (w[i] & 0xffff);
        i += 1;
    }
    sum
}

/// ICMP errors about a forwarded IPv4 flow.
#[inline(never)]
pub fn error4(ctx: &XdpContext) -> u32 {
    error::<V4>(ctx)
}

/// ICMPv6 errors about a forwarded IPv6 flow.
#[inline(never)]
pub fn error6(ctx: &XdpContext) -> u32 {
    error::<V6>(ctx)
}

/// The time exceeded for an expiring IPv4 packet.
#[inline(never)]
pub fn time_exceeded4(ctx: &XdpContext) -> u32 {
    time_exceeded::<V4>(ctx)
}

/// The ICMPv6 time exceeded for an expiring IPv6 packet.
#[inline(never)]
pub fn time_exceeded6(ctx: &XdpContext) -> u32 {
    time_exceeded::<V6>(ctx)
}

#[inline(always)]
fn error<F: IcmpFamily>(ctx: &XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (action, reason) = translate::<F>(ctx, len).unwrap_or((
        xdp_action::XDP_PASS,
        verdict::PASS_UNPARSED,
    ));
    metrics::count(&VERDICTS, reason, len);
    action
}

/// The offset of the ICMP header of an ICMP packet of family `F` (the parser found one).
#[inline(always)]
fn icmp_offset<F: IcmpFamily>(ctx: &XdpContext) -> Option<usize> {
    if F::HDR_LEN == IP_LEN {
        // The IPv4 parser checked version, header length and fragment field.
        let proto: *const u8 = ptr_at(ctx, ETH_LEN + 9)?;
        (unsafe { *proto } == F::PROTO).then_some(ETH_LEN + IP_LEN)
    } else {
        let (_, next, ext) = ipv6::upper(ctx).ok()?;
        (next == F::PROTO).then_some(ETH_LEN + ipv6::IP6_LEN + ext)
    }
}

/// The action and verdict for an ICMP packet; None: not an error we can read (passed as
/// unparsed, as before ICMP was looked into).
#[inline(always)]
fn translate<F: IcmpFamily>(ctx: &XdpContext, len: u64) -> Option<(u32, u32)> {
    let off = icmp_offset::<F>(ctx)?;
    let outer: *mut F::Hdr = ptr_at(ctx, ETH_LEN)?;
    let icmp: *mut [u8; ICMP_HDR] = ptr_at(ctx, off)?;
    if !F::is_error(unsafe { (*icmp)[0] }) {
        return None;
    }
    let inner_off = off + ICMP_HDR;
    let inner: *mut F::Hdr = ptr_at(ctx, inner_off)?;
    let proto = unsafe { F::quoted_proto(inner) }?;
    let l4_off = inner_off + F::HDR_LEN;
    // Ports, then UDP's length and checksum: the 8 bytes every error quotes at least.
    let l4: *mut [u16; 4] = ptr_at(ctx, l4_off)?;
    let (isaddr, idaddr) = unsafe { (*F::saddr(inner), *F::daddr(inner)) };
    let (isport, idport) = unsafe { ((*l4)[0], (*l4)[1]) };
    // The quoted packet left the gateway translated: reversed, it is the key of the flow's
    // packets in the error's direction.
    let key = F::flow_key(idaddr, isaddr, idport, isport, proto);
    // The unconfirmed table too: the error may answer a flow's first packet (a UDP datagram to
    // a closed port, a SYN too big for the path).
    let found = unsafe { F::conntrack().get(&key) }.or_else(|| unsafe { F::conntrack_new().get(&key) });
    let Some(ct) = found else {
        return Some((xdp_action::XDP_PASS, verdict::PASS_NOT_OURS));
    };
    if unsafe { F::hops(outer) } <= 1 {
        // Expiring itself: no error is sent about an error (RFC 1812 4.3.2.7).
        return Some((xdp_action::XDP_PASS, verdict::PASS_TTL_EXPIRED));
    }
    let Some((ifindex, smac, dmac)) = next_hop::<F>(ct) else {
        return Some((xdp_action::XDP_PASS, verdict::PASS_FIB_MISS));
    };
    let eth: *mut [u8; 12] = ptr_at(ctx, 0)?;

    // The quoted packet becomes the reverse of what the flow's packets become.
    let (nisaddr, nidaddr, nisport, nidport) = (ct.daddr, ct.saddr, ct.dport, ct.sport);
    let check = unsafe { (icmp as *mut u8).add(2) } as *mut u16;
    let mut c = unsafe { *check };
    // The quoted L4 checksum, where the quote holds it (a router may quote 8 bytes only) and
    // a UDP sender set one.
    let outer_end = ETH_LEN + F::HDR_LEN + unsafe { F::payload_len(outer) } as usize;
    let l4_check = if proto == PROTO_UDP {
        let p = unsafe { (l4 as *mut u16).add(3) };
        (unsafe { *p } != 0).then_some(p)
    } else if l4_off + 20 <= outer_end {
        let tcp: *mut [u8; 20] = ptr_at(ctx, l4_off)?;
        Some(unsafe { (tcp as *mut u8).add(16) } as *mut u16)
    } else {
        None
    };
    unsafe {
        if let Some(p) = l4_check {
            let old = *p;
            let mut n = F::csum_addr(old, &isaddr, &nisaddr);
            n = F::csum_addr(n, &idaddr, &nidaddr);
            n = csum::replace2(n, isport, nisport);
            n = csum::replace2(n, idport, nidport);
            if proto == PROTO_UDP && n == 0 {
                n = 0xffff;
            }
            *p = n;
            c = csum::replace2(c, old, n);
        }
        (*l4)[0] = nisport;
        (*l4)[1] = nidport;
        c = csum::replace2(c, isport, nisport);
        c = csum::replace2(c, idport, nidport);
        F::set_addrs(inner, false, &nisaddr, &nidaddr);
        if !F::HDR_CSUM {
            c = F::csum_addr(c, &isaddr, &nisaddr);
            c = F::csum_addr(c, &idaddr, &nidaddr);
        }

        let (osaddr, odaddr) = (*F::saddr(outer), *F::daddr(outer));
        let nosaddr = if ct.saddr != key.saddr {
            ct.saddr
        } else {
            osaddr
        };
        if F::PSEUDO {
            c = F::csum_addr(c, &osaddr, &nosaddr);
            c = F::csum_addr(c, &odaddr, &ct.daddr);
        }
        *check = c;
        F::set_addrs(outer, true, &nosaddr, &ct.daddr);
    }
    let eth = unsafe { &mut *eth };
    eth[0..6].copy_from_slice(&dmac);
    eth[6..12].copy_from_slice(&smac);
    metrics::count(&SERVICE_STATS, ct.service_id, len);
    metrics::count(&BACKEND_STATS, ct.backend_id, len);
    let action = if ifindex == ctx.ingress_ifindex() as u32 {
        xdp_action::XDP_TX
    } else {
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    };
    Some((action, verdict::FWD_ICMP_ERROR))
}

/// Where packets of `ct`'s direction go: towards a backend its own resolved hop while it is the
/// entry's backend (as `conntrack::established`), else the entry's cached hop. Read only: the
/// flow's own packets keep that hop fresh. None if it has none.
#[inline(always)]
fn next_hop<F: Family>(ct: &CtValueOf<F::A>) -> Option<(u32, [u8; 6], [u8; 6])> {
    if ct.flags & ct_flags::REPLY == 0 {
        if let Some(b) = F::backends().get(ct.backend_id) {
            if b.nh_ifindex != 0 && b.addr == ct.daddr {
                return Some((b.nh_ifindex, b.nh_smac, b.nh_dmac));
            }
        }
    }
    (ct.nh_ifindex != 0).then_some((ct.nh_ifindex, ct.nh_smac, ct.nh_dmac))
}

/// Takes a token of this CPU's time-exceeded bucket; false if it is empty.
#[inline(always)]
fn rate_allows() -> bool {
    let Some(b) = ICMP_BUCKET.get_ptr_mut(0) else {
        return false;
    };
    // Safety: per-CPU value, only this program on this CPU uses it while it runs.
    let b = unsafe { &mut *b };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let earned = now.wrapping_sub(b.last_ns) / (1_000_000_000 / ICMP_RATE);
    if earned > 0 {
        b.tokens = core::cmp::min(b.tokens + earned, ICMP_BURST);
        b.last_ns = now;
    }
    if b.tokens == 0 {
        return false;
    }
    b.tokens -= 1;
    true
}

#[inline(always)]
fn time_exceeded<F: IcmpFamily>(ctx: &XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (action, reason) = if rate_allows() {
        build_time_exceeded::<F>(ctx)
    } else {
        // Over the limit: dropped as a router drops it, only without the message.
        (xdp_action::XDP_DROP, verdict::DROP_TTL_EXPIRED)
    };
    metrics::count(&VERDICTS, reason, len);
    action
}

/// Turns the expiring packet into the time exceeded for its sender, in place: the packet cut to
/// its quote, a new IP and ICMP header in front, back out of the interface it came in on.
#[inline(always)]
fn build_time_exceeded<F: IcmpFamily>(ctx: &XdpContext) -> (u32, u32) {
    let failed = (xdp_action::XDP_DROP, verdict::DROP_TTL_EXPIRED);
    let (Some(eth), Some(ip)) = (
        ptr_at::<[u8; 12]>(ctx, 0),
        ptr_at::<F::Hdr>(ctx, ETH_LEN),
    ) else {
        return failed;
    };
    let (macs, saddr, daddr, ip_len) = unsafe {
        (
            *eth,
            *F::saddr(ip),
            *F::daddr(ip),
            F::payload_len(ip) as usize + F::HDR_LEN,
        )
    };
    // From the address of the interface it arrived on, as a router answers (RFC 1812 4.3.2.4,
    // RFC 4443 2.2), else from the address it was sent to (the VIP): also for loopback, whose
    // address is no source on the wire.
    let ingress = ctx.ingress_ifindex() as u32;
    let from = match F::if_addr(ingress) {
        Some(a) if ingress != LOOPBACK_IFINDEX => a,
        _ => daddr,
    };
    let frame = ctx.data_end() - ctx.data();
    // Whole 32-bit words of the packet, at most the limit (a quote may end anywhere).
    let quote = core::cmp::min(core::cmp::min(ip_len, frame - ETH_LEN), F::QUOTE_MAX) & !3;
    let grow = (F::HDR_LEN + ICMP_HDR) as i32;
    unsafe {
        if bpf_xdp_adjust_tail(ctx.ctx, (ETH_LEN + quote) as i32 - frame as i32) != 0
            || bpf_xdp_adjust_head(ctx.ctx, -grow) != 0
        {
            return failed;
        }
    }
    let (Some(e), Some(ip), Some(icmp)) = (
        ptr_at::<[u8; 14]>(ctx, 0),
        ptr_at::<F::Hdr>(ctx, ETH_LEN),
        ptr_at::<[u32; 2]>(ctx, ETH_LEN + F::HDR_LEN),
    ) else {
        return failed;
    };
    let icmp_len = (ICMP_HDR + quote) as u16;
    // Back to the previous hop: the MACs swapped.
    let e = unsafe { &mut *e };
    e[0..6].copy_from_slice(&macs[6..12]);
    e[6..12].copy_from_slice(&macs[0..6]);
    e[12..14].copy_from_slice(&F::ETH_P.to_be_bytes());
    unsafe { F::write_hdr(ip, &from, &saddr, icmp_len) };
    // Code 0: in transit. The rest of the header is unused (zero).
    let hdr = [u32::from_ne_bytes([F::TIME_EXCEEDED, 0, 0, 0]), 0];
    let mut sum = sum_words(&hdr);
    if F::PSEUDO {
        sum += F::pseudo_seed(&from, &saddr, F::PROTO, icmp_len) as u32;
    }
    // The quote, word by word: a bounded loop, each word bounds-checked.
    let base = ETH_LEN + F::HDR_LEN + ICMP_HDR;
    let words = quote / 4;
    let mut i = 0;
    while i < F::QUOTE_MAX / 4 {
        if i >= words {
            break;
        }
        let Some(w) = ptr_at::<u32>(ctx, base + i * 4) else {
            return failed;
        };
        let w = unsafe { *w };
        sum += (w >> 16) + (w & 0xffff);
        i += 1;
    }
    let check = !csum::fold(sum);
    unsafe { *icmp = [hdr[0] | (check as u32) << 16, 0] };
    (xdp_action::XDP_TX, verdict::TX_TIME_EXCEEDED)
}
