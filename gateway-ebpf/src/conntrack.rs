//! The connection tables (`CONNTRACK`, `CONNTRACK6`): packets of known flows either way, replies
//! recognised by port, and whether a flow is over so that its SNAT port may be reused.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_common::{
    ct_flags, port_flags, port_index, verdict, CtValueOf, FlowKeyOf, NAT_PORT_MAX, NAT_PORT_MIN,
    PROTO_TCP,
};

use crate::{
    family::Family,
    forward::{forward, send},
    maps::{BACKEND_STATS, PORTS, SERVICE_STATS},
    metrics,
    packet::Packet,
};

/// No service owns the packet. Still ours: a SNAT reply (to a port in the SNAT range) or a
/// preserve-source reply (addressed to the client, from a backend's source port), if the
/// connection table knows it. Otherwise passed, and a miss on a SNAT port of the node is counted
/// apart (the connection-table pressure signal).
#[inline(always)]
pub fn not_ours<F: Family>(
    ctx: &XdpContext,
    pkt: &Packet<F>,
    key: &FlowKeyOf<F::A>,
    len: u64,
) -> (u32, u32) {
    let nat_range = (NAT_PORT_MIN..=NAT_PORT_MAX).contains(&u16::from_be(key.dport));
    let ps_reply = || {
        PORTS
            .get(port_index(key.proto, u16::from_be(key.sport)))
            .is_some_and(|f| f & port_flags::PS_SRC != 0)
    };
    if nat_range || ps_reply() {
        if let Some(ct) = F::conntrack().get_ptr_mut(key) {
            return established(ctx, pkt, ct, len);
        }
    }
    let to_node = nat_range && F::is_node(&key.daddr);
    let reason = if to_node {
        verdict::PASS_NAT_MISS
    } else {
        verdict::PASS_NOT_OURS
    };
    (xdp_action::XDP_PASS, reason)
}

/// A packet of a known flow, either direction.
#[inline(always)]
pub fn established<F: Family>(
    ctx: &XdpContext,
    pkt: &Packet<F>,
    ct: *mut CtValueOf<F::A>,
    len: u64,
) -> (u32, u32) {
    // Safety: a map value pointer stays valid for the duration of the program.
    let ct = unsafe { &mut *ct };
    metrics::count(&SERVICE_STATS, ct.service_id, len);
    metrics::count(&BACKEND_STATS, ct.backend_id, len);
    // FIN/RST mark the entry so a closed flow's SNAT port can be taken by a new flow (only
    // these rare packets write to the entry).
    let close = pkt.close_flags();
    if close != 0 {
        ct.flags |= close;
    }
    if ct.flags & ct_flags::REPLY == 0 {
        // Towards the backend: its next hop, resolved in advance, unless the backend is gone
        // (its id free or reused by another address) or not resolved yet.
        if let Some(b) = F::backends().get(ct.backend_id) {
            if b.nh_ifindex != 0 && b.addr == ct.daddr {
                return send(
                    ctx,
                    pkt,
                    ct,
                    b.nh_ifindex,
                    &b.nh_smac,
                    &b.nh_dmac,
                    verdict::FWD_ESTABLISHED,
                );
            }
        }
    }
    forward(ctx, pkt, ct, verdict::FWD_ESTABLISHED)
}

/// The forward key of the flow owning the reply entry `rev` if that flow is over, so its SNAT
/// port may be reused: a RST either way, a FIN both ways, or its forward entry already gone
/// (evicted). A half-closed flow (FIN one way only) may still carry data and keeps its port.
/// Reusing right after the close is what the kernel's conntrack does for a new SYN on a
/// TIME_WAIT tuple; a backend that closed first and still holds TIME_WAIT answers the new
/// SYN by its own rules (RFC 6191 timestamps, or a challenge ACK and a client retry).
#[inline(always)]
pub fn closed_flow<F: Family>(rev: &CtValueOf<F::A>, proto: u8) -> Option<FlowKeyOf<F::A>> {
    if proto != PROTO_TCP {
        return None;
    }
    let fwd_key = F::flow_key(rev.daddr, rev.saddr, rev.dport, rev.sport, proto);
    if rev.flags & ct_flags::RST != 0 {
        return Some(fwd_key);
    }
    match unsafe { F::conntrack().get(&fwd_key) } {
        None => Some(fwd_key),
        Some(f) if f.flags & ct_flags::RST != 0 => Some(fwd_key),
        Some(f) if f.flags & rev.flags & ct_flags::FIN != 0 => Some(fwd_key),
        Some(_) => None,
    }
}
