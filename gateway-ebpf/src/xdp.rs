//! Attach point: the XDP data path on each interface. Parses, then follows the lookup order:
//! `PORTS` (an array, so its lookup is inlined and nearly free) says what listens on this port.
//! Foreign traffic mostly stops there; a flow's packets to an L4 port go to `CONNTRACK` first
//! (one hash lookup for an established flow); an L7-only port goes straight to `SERVICES`.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use gateway_common::{port_flags, port_index, svc_flags, verdict, ServiceKey};

use crate::{
    conntrack, lb,
    maps::{CONNTRACK, PORTS, SERVICES, SERVICE_STATS, VERDICTS},
    metrics,
    packet::Packet,
};

#[xdp]
pub fn gateway_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (action, reason) = process(&ctx);
    metrics::count(&VERDICTS, reason, len);
    action
}

/// An empty program: the baseline that benchmarks subtract from `gateway_xdp`'s run time
/// (BPF_PROG_TEST_RUN's own cost per call). Never attached.
#[xdp]
pub fn gateway_xdp_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Returns the XDP action and the verdict reason.
#[inline(always)]
fn process(ctx: &XdpContext) -> (u32, u32) {
    let pkt = match Packet::parse(ctx) {
        Ok(p) => p,
        Err(reason) => {
            let action = if reason == verdict::DROP_MALFORMED {
                xdp_action::XDP_DROP
            } else {
                xdp_action::XDP_PASS
            };
            return (action, reason);
        }
    };
    let key = pkt.flow_key();
    let len = (ctx.data_end() - ctx.data()) as u64;

    let ports = PORTS
        .get(port_index(key.proto, u16::from_be(key.dport)))
        .copied()
        .unwrap_or(0);
    if ports & port_flags::L4 != 0 {
        // A SYN always takes a fresh decision (Katran does the same): a reused 5-tuple must not
        // inherit a stale entry whose backend may be gone.
        if !pkt.is_syn() {
            if let Some(ct) = CONNTRACK.get_ptr_mut(&key) {
                return conntrack::established(ctx, &pkt, ct, len);
            }
        }
    } else if ports & port_flags::LOCAL == 0 {
        return conntrack::not_ours(ctx, &pkt, &key, len);
    }
    let svc_key = ServiceKey {
        addr: key.daddr,
        port: key.dport,
        proto: key.proto,
        _pad: 0,
    };
    let Some(svc) = (unsafe { SERVICES.get(&svc_key) }) else {
        return conntrack::not_ours(ctx, &pkt, &key, len);
    };
    if svc.flags & svc_flags::LOCAL != 0 {
        metrics::count(&SERVICE_STATS, svc.id, len);
        return (xdp_action::XDP_PASS, verdict::PASS_LOCAL);
    }
    lb::new_flow(ctx, &pkt, &key, svc, len)
}
