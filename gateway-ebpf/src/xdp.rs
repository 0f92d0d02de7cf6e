//! Attach point: the XDP data path on each interface (`gateway_xdp`: one path per family, the
//! code after the parse written once, generic over the family, with each family's own maps).
//! Parses, then follows the lookup order:
//! `PORTS` (an array, so its lookup is inlined and nearly free) says what listens on this port.
//! Foreign traffic mostly stops there; a flow's packets to an L4 port go to `CONNTRACK` first
//! (one hash lookup for an established flow); an L7-only port goes straight to `SERVICES`.

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    macros::xdp,
    programs::XdpContext,
};
use gateway_common::{port_flags, port_index, svc_flags, verdict, ServiceKeyOf};

use crate::{
    conntrack, icmp,
    family::{Family, V4, V6},
    lb,
    maps::{PORTS, SERVICE_STATS, VERDICTS},
    metrics,
    packet::{self, Packet},
};

/// The entry point, written out instead of with `#[xdp]`: the macro wraps the body in an inner
/// function, which the compiler keeps as a BPF subprogram (a call). Here the entry itself
/// dispatches by family to one subprogram per family, so each family's path is one call deep
/// as the IPv4 path always was, and each gets a whole 512-byte stack: inlined side by side,
/// both families' keys, entries and spilled registers exceed one frame (the verifier adds up
/// the frames of nested calls).
///
/// # Safety
/// Called by the kernel with a valid `xdp_md`.
#[unsafe(no_mangle)]
#[unsafe(link_section = "xdp")]
pub fn gateway_xdp(ctx: *mut xdp_md) -> u32 {
    let ctx = XdpContext::new(ctx);
    // The ICMP steps run here, after the family's path returned, so that each has a frame of
    // its own beside it rather than on top of it.
    match packet::ethertype(&ctx) {
        Some(packet::ETH_P_IPV6) => match process6(&ctx) {
            icmp::ACT_ICMP => icmp::error6(&ctx),
            icmp::ACT_TIME_EXCEEDED => icmp::time_exceeded6(&ctx),
            action => action,
        },
        Some(packet::ETH_P_8021Q | packet::ETH_P_8021AD) => {
            // Tagged frames are the kernel's (its VLAN devices): see `verdict::PASS_VLAN`.
            let len = (ctx.data_end() - ctx.data()) as u64;
            metrics::count(&VERDICTS, verdict::PASS_VLAN, len);
            xdp_action::XDP_PASS
        }
        e => match process4(&ctx, e == Some(packet::ETH_P_IP)) {
            icmp::ACT_ICMP => icmp::error4(&ctx),
            icmp::ACT_TIME_EXCEEDED => icmp::time_exceeded4(&ctx),
            action => action,
        },
    }
}

/// An empty program: the baseline that benchmarks subtract from `gateway_xdp`'s run time
/// (BPF_PROG_TEST_RUN's own cost per call). Never attached.
#[xdp]
pub fn gateway_xdp_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// IPv4 (`ip`) and anything that is neither IPv4 nor IPv6: the action, the verdict counted.
#[inline(never)]
fn process4(ctx: &XdpContext, ip: bool) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let pkt = if ip {
        Packet::<V4>::parse(ctx)
    } else {
        Err(verdict::PASS_UNPARSED)
    };
    let (action, reason) = match pkt {
        Ok(p) => handle(ctx, &p),
        Err(reason) => verdict_of(reason),
    };
    count(reason, action, len)
}

/// IPv6: the action, the verdict counted.
#[inline(never)]
fn process6(ctx: &XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (action, reason) = match Packet::<V6>::parse(ctx) {
        Ok(p) => handle(ctx, &p),
        Err(reason) => verdict_of(reason),
    };
    count(reason, action, len)
}

/// Counts the verdict and returns the action, unless the action hands over to an ICMP step
/// (which counts its own).
#[inline(always)]
fn count(reason: u32, action: u32, len: u64) -> u32 {
    if action != icmp::ACT_ICMP && action != icmp::ACT_TIME_EXCEEDED {
        metrics::count(&VERDICTS, reason, len);
    }
    action
}

/// The action for a packet the parser refused (`reason`).
#[inline(always)]
fn verdict_of(reason: u32) -> (u32, u32) {
    let action = if reason == packet::TO_ICMP {
        icmp::ACT_ICMP
    } else if reason == verdict::DROP_MALFORMED {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    };
    (action, reason)
}

/// The lookups of a parsed packet of either family.
#[inline(always)]
fn handle<F: Family>(ctx: &XdpContext, pkt: &Packet<F>) -> (u32, u32) {
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
            if let Some(r) = conntrack::known(ctx, pkt, &key, len) {
                return r;
            }
        }
    } else if ports & port_flags::LOCAL == 0 {
        return conntrack::not_ours(ctx, pkt, &key, len);
    }
    let svc_key = ServiceKeyOf {
        addr: key.daddr,
        port: key.dport,
        proto: key.proto,
        _pad: 0,
    };
    let Some(svc) = (unsafe { F::services().get(&svc_key) }) else {
        return conntrack::not_ours(ctx, pkt, &key, len);
    };
    if svc.flags & svc_flags::LOCAL != 0 {
        metrics::count(&SERVICE_STATS, svc.id, len);
        return (xdp_action::XDP_PASS, verdict::PASS_LOCAL);
    }
    lb::new_flow(ctx, pkt, &key, svc, len)
}
