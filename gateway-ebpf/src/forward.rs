//! Forwarding: rewrite the packet per its connection entry and send it out of the next hop's
//! interface (XDP_TX or a redirect), or hand it to the kernel when XDP must not forward it.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_check_mtu, bpf_ktime_get_coarse_ns, bpf_redirect},
    programs::XdpContext,
    EbpfContext,
};
use gateway_common::{if_flags, verdict, CtValueOf, NEXTHOP_TTL_NS};

use crate::{
    family::Family, fib::fib, icmp, maps::IFADDRS, metrics::action_for, packet::Packet,
};

/// Ethernet header plus a 1500-byte MTU: shorter frames fit every egress, so they skip the MTU
/// check.
const ETH_FRAME_MAX: usize = 14 + 1500;

/// Sends a packet per `ct`'s own next hop, looked up again once it is a second old.
#[inline(always)]
pub fn forward<F: Family>(
    ctx: &XdpContext,
    pkt: &Packet<F>,
    ct: &mut CtValueOf<F::A>,
    reason: u32,
) -> (u32, u32) {
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.wrapping_sub(ct.nh_ts) > NEXTHOP_TTL_NS {
        // Refresh; if the FIB cannot answer (e.g. forwarding disabled on the ingress device for
        // a reply entry), keep the next hop learned when the flow started.
        if let Err(reason) = fib::<F>(ctx, ct, now) {
            if ct.nh_ifindex == 0 {
                return (action_for(reason), reason);
            }
            // Keep the learned hop and ask again after the TTL, not on every packet.
            ct.nh_ts = now;
        }
    }
    send(
        ctx,
        pkt,
        ct,
        ct.nh_ifindex,
        &ct.nh_smac,
        &ct.nh_dmac,
        reason,
    )
}

/// Rewrites the packet per `ct` and sends it out of `ifindex` to `dmac`.
#[inline(always)]
pub fn send<F: Family>(
    ctx: &XdpContext,
    pkt: &Packet<F>,
    ct: &CtValueOf<F::A>,
    ifindex: u32,
    smac: &[u8; 6],
    dmac: &[u8; 6],
    reason: u32,
) -> (u32, u32) {
    if pkt.ttl() <= 1 {
        // Forwarding would expire it (TTL or hop limit): the time exceeded a router sends, built
        // by the ICMP step once this subprogram returns (the packet is left as it came).
        return (icmp::ACT_TIME_EXCEEDED, verdict::TX_TIME_EXCEEDED);
    }
    // Veths deliver packets whose sender offloaded the L4 checksum (only the pseudo-header sum
    // in the field). The agent marks the interfaces where that happens; elsewhere (real NICs)
    // checksums are full and the test is skipped, so a coincidental match never misleads it.
    let mut partial = false;
    if pkt.looks_partial() {
        let flags = unsafe { IFADDRS.get(&(ctx.ingress_ifindex() as u32)) }.map_or(0, |a| a.flags);
        if flags & if_flags::CSUM_LOST != 0 {
            // Native mode turns the skb into a raw frame: the receiver would verify the seed as
            // a full checksum and drop the packet. The kernel's own path keeps the state.
            return (xdp_action::XDP_PASS, verdict::PASS_CSUM_PARTIAL);
        }
        partial = flags & if_flags::CSUM_SEED != 0;
    }
    // Longer than an Ethernet MTU: a GSO packet (generic mode sees a veth peer's TSO output
    // whole) or a jumbo frame. An XDP redirect drops what exceeds the egress MTU, so ask.
    let len = ctx.data_end() - ctx.data();
    if len > ETH_FRAME_MAX {
        let mut mtu_len = 0u32;
        let rc = unsafe { bpf_check_mtu(ctx.as_ptr(), ifindex, &mut mtu_len, 0, 0) };
        if rc != 0 {
            // Rewritten (so the stack never sees the VIP side of an established flow and
            // resets it), MACs and TTL kept (the stack takes it as its own to route, and counts
            // the hop itself): the kernel forwards and segments it where forwarding is on, else
            // drops it.
            let (own, peer) = (pkt.eth_dst(), pkt.eth_src());
            pkt.rewrite(
                partial, false, &ct.saddr, &ct.daddr, ct.sport, ct.dport, &peer, &own,
            );
            return (xdp_action::XDP_PASS, verdict::PASS_OVERSIZE);
        }
    }
    pkt.rewrite(
        partial, true, &ct.saddr, &ct.daddr, ct.sport, ct.dport, smac, dmac,
    );
    if ifindex == ctx.ingress_ifindex() as u32 {
        return (xdp_action::XDP_TX, reason);
    }
    let action = unsafe { bpf_redirect(ifindex, 0) } as u32;
    (action, reason)
}
