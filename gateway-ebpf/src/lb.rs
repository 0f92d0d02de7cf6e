//! Load balancing: the Maglev pick of a backend for a new flow, and the new-flow path (next hop,
//! SNAT, both connection entries, then the first packet sent).

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use gateway_common::{
    ct_flags, flow_hash, src_hash, svc_flags, verdict, Backend, CtValue, FlowKey, ServiceValue,
    MAGLEV_RING,
};

use crate::{
    fib::fib,
    forward::send,
    maps::{BACKENDS, BACKEND_STATS, CONNTRACK, MAGLEV, SERVICE_STATS},
    metrics::{self, action_for},
    packet::{self, Packet},
    snat,
};

/// The backend of `svc`'s Maglev ring for the flow hashed `fhash` (or its source address, per
/// the service's flags): its id and entry, or None if the slot holds no live backend.
#[inline(always)]
fn select(svc: &ServiceValue, key: &FlowKey, fhash: u32) -> Option<(u32, &'static Backend)> {
    let pick = if svc.flags & svc_flags::HASH_SRC_IP != 0 {
        src_hash(key.saddr)
    } else {
        fhash
    };
    let slot = svc.ring * MAGLEV_RING + pick % MAGLEV_RING;
    let backend_id = *MAGLEV.get(slot)?;
    match BACKENDS.get(backend_id) {
        Some(b) if b.addr != 0 => Some((backend_id, b)),
        _ => None,
    }
}

/// First packet of a flow: Maglev pick, next hop, SNAT port, then both connection entries.
#[inline(always)]
pub fn new_flow(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &FlowKey,
    svc: &ServiceValue,
    len: u64,
) -> (u32, u32) {
    if svc.backend_count == 0 {
        metrics::count(&SERVICE_STATS, svc.id, len);
        return (xdp_action::XDP_DROP, verdict::DROP_NO_BACKEND);
    }
    let fhash = flow_hash(key.saddr, key.daddr, key.sport, key.dport, key.proto);
    let Some((backend_id, backend)) = select(svc, key, fhash) else {
        return (xdp_action::XDP_DROP, verdict::DROP_NO_BACKEND);
    };

    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // The backend's next hop, copied into the entry too: it serves the flow if the backend
    // leaves the config while the flow lives.
    let mut fwd = CtValue {
        saddr: key.saddr,
        daddr: backend.addr,
        sport: key.sport,
        dport: backend.port,
        service_id: svc.id,
        backend_id,
        flags: 0,
        nh_ifindex: backend.nh_ifindex,
        nh_smac: backend.nh_smac,
        nh_dmac: backend.nh_dmac,
        nh_ts: now,
    };
    if backend.nh_ifindex == 0 {
        // Not resolved yet (a backend added a moment ago): ask the FIB for this flow.
        if let Err(reason) = fib(ctx, &mut fwd, now) {
            return (action_for(reason), reason);
        }
    }

    // Replies go back the way the client's packet came: its ingress interface, MACs swapped.
    let rev = CtValue {
        saddr: key.daddr,
        daddr: key.saddr,
        sport: key.dport,
        dport: key.sport,
        service_id: svc.id,
        backend_id,
        flags: ct_flags::REPLY,
        nh_ifindex: ctx.ingress_ifindex() as u32,
        nh_smac: pkt.eth_dst(),
        nh_dmac: pkt.eth_src(),
        nh_ts: now,
    };
    let mut rkey = packet::flow_key(backend.addr, key.saddr, backend.port, key.sport, key.proto);

    if svc.flags & svc_flags::SNAT != 0 {
        let Some(snat) = snat::source_addr(backend, fwd.nh_ifindex) else {
            return (xdp_action::XDP_DROP, verdict::DROP_NO_SNAT_ADDR);
        };
        fwd.saddr = snat;
        rkey.daddr = snat;
        if !snat::take_port(key, &mut rkey, &rev, fhash) {
            // Rare (every candidate port of this backend taken): worth a log line, unlike
            // anything on the per-packet path.
            aya_log_ebpf::warn!(
                ctx,
                "SNAT ports exhausted towards backend id {}",
                backend_id
            );
            return (xdp_action::XDP_DROP, verdict::DROP_NAT_EXHAUSTED);
        }
        fwd.sport = rkey.dport;
    } else if CONNTRACK.insert(&rkey, &rev, 0).is_err() {
        return (xdp_action::XDP_DROP, verdict::DROP_CT_FULL);
    }
    if CONNTRACK.insert(key, &fwd, 0).is_err() {
        let _ = CONNTRACK.remove(&rkey);
        return (xdp_action::XDP_DROP, verdict::DROP_CT_FULL);
    }
    metrics::count(&SERVICE_STATS, svc.id, len);
    metrics::count(&BACKEND_STATS, backend_id, len);
    send(
        ctx,
        pkt,
        &fwd,
        fwd.nh_ifindex,
        &fwd.nh_smac,
        &fwd.nh_dmac,
        verdict::FWD_NEW,
    )
}
