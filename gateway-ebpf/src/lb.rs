//! Load balancing: the Maglev pick of a backend for a new flow, and the new-flow path (next hop,
//! SNAT, both connection entries in the unconfirmed table, then the first packet sent).

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use gateway_common::{
    ct_flags, svc_flags, verdict, BackendOf, CtValueOf, FlowKeyOf, ServiceValue, MAGLEV_RING,
};

use crate::{
    family::{Family, NewFlow},
    fib::fib,
    forward::send,
    maps::{BACKEND_STATS, MAGLEV, SERVICE_STATS},
    metrics::{self, action_for},
    packet::Packet,
    snat,
};

/// The backend of `svc`'s Maglev ring for the flow hashed `fhash` (or its source address, per
/// the service's flags): its id and entry, or None if the slot holds no live backend.
#[inline(always)]
fn select<F: Family>(
    svc: &ServiceValue,
    key: &FlowKeyOf<F::A>,
    fhash: u32,
) -> Option<(u32, &'static BackendOf<F::A>)> {
    let pick = if svc.flags & svc_flags::HASH_SRC_IP != 0 {
        F::src_hash(&key.saddr)
    } else {
        fhash
    };
    let slot = svc.ring * MAGLEV_RING + pick % MAGLEV_RING;
    let backend_id = *MAGLEV.get(slot)?;
    match F::backends().get(backend_id) {
        Some(b) if b.addr != F::A::default() => Some((backend_id, b)),
        _ => None,
    }
}

/// First packet of a flow: Maglev pick, next hop, SNAT port, then both connection entries.
#[inline(always)]
pub fn new_flow<F: Family>(
    ctx: &XdpContext,
    pkt: &Packet<F>,
    key: &FlowKeyOf<F::A>,
    svc: &ServiceValue,
    len: u64,
) -> (u32, u32) {
    if svc.backend_count == 0 {
        metrics::count(&SERVICE_STATS, svc.id, len);
        return (xdp_action::XDP_DROP, verdict::DROP_NO_BACKEND);
    }
    let fhash = F::flow_hash(key);
    let Some((backend_id, backend)) = select::<F>(svc, key, fhash) else {
        return (xdp_action::XDP_DROP, verdict::DROP_NO_BACKEND);
    };

    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // Where both entries and the reply key are built: the stack for IPv4, a per-CPU map for
    // IPv6 (see `Family::SCRATCH`; the unused stack area is optimised away).
    let mut local = core::mem::MaybeUninit::<NewFlow<F::A>>::uninit();
    let w = if F::SCRATCH {
        match F::scratch() {
            Some(w) => w,
            None => return (xdp_action::XDP_DROP, verdict::DROP_MALFORMED),
        }
    } else {
        local.as_mut_ptr()
    };
    // Safety: either this frame's area or the per-CPU map value, which only this program on
    // this CPU uses while it runs; every field is written before it is read.
    let (fwd, rev, rkey) = unsafe { (&mut (*w).fwd, &mut (*w).rev, &mut (*w).rkey) };
    // The backend's next hop, copied into the entry too: it serves the flow if the backend
    // leaves the config while the flow lives.
    *fwd = CtValueOf {
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
        seen: now,
    };
    if backend.nh_ifindex == 0 {
        // Not resolved yet (a backend added a moment ago): ask the FIB for this flow.
        if let Err(reason) = fib::<F>(ctx, fwd, now) {
            return (action_for(reason), reason);
        }
    }

    // Replies go back the way the client's packet came: its ingress interface, MACs swapped.
    *rev = CtValueOf {
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
        seen: now,
    };
    *rkey = F::flow_key(backend.addr, key.saddr, backend.port, key.sport, key.proto);

    // Both entries go to the unconfirmed table; the client's next packet moves them to the main
    // one (`conntrack::confirm`). An older flow of the same tuple in the main table (the client
    // reused its port) would catch that packet first: its forward entry goes now.
    let unconfirmed = F::conntrack_new();
    if pkt.is_syn() {
        let _ = F::conntrack().remove(key);
    }
    if svc.flags & svc_flags::SNAT != 0 {
        let (pool, pooled) = snat::pool_of::<F>(fwd.nh_ifindex);
        if !pooled {
            let Some(snat) = snat::source_addr::<F>(backend, fwd.nh_ifindex) else {
                return (xdp_action::XDP_DROP, verdict::DROP_NO_SNAT_ADDR);
            };
            rkey.daddr = snat;
        }
        if !snat::take_port::<F>(key, rkey, rev, fhash, &pool, pooled) {
            // Rare (every candidate port of this backend taken): worth a log line, unlike
            // anything on the per-packet path.
            aya_log_ebpf::warn!(
                ctx,
                "SNAT ports exhausted towards backend id {}",
                backend_id
            );
            let reason = if pooled {
                verdict::DROP_NAT_POOL_EXHAUSTED
            } else {
                verdict::DROP_NAT_EXHAUSTED
            };
            return (xdp_action::XDP_DROP, reason);
        }
        fwd.saddr = rkey.daddr;
        fwd.sport = rkey.dport;
    } else if unconfirmed.insert(&*rkey, &*rev, 0).is_err() {
        return (xdp_action::XDP_DROP, verdict::DROP_CT_FULL);
    }
    if unconfirmed.insert(key, &*fwd, 0).is_err() {
        let _ = unconfirmed.remove(&*rkey);
        return (xdp_action::XDP_DROP, verdict::DROP_CT_FULL);
    }
    metrics::count_flow(svc.id, false, len);
    metrics::count(&SERVICE_STATS, svc.id, len);
    metrics::count(&BACKEND_STATS, backend_id, len);
    send(
        ctx,
        pkt,
        &*fwd,
        fwd.nh_ifindex,
        &fwd.nh_smac,
        &fwd.nh_dmac,
        verdict::FWD_NEW,
    )
}
