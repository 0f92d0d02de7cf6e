//! The XDP entry point: parse, look up the flow or the service, pick a backend, rewrite, forward.
//!
//! Every return goes through `count`, which counts the verdict by reason so an operator can see
//! why packets were passed or dropped. Nothing here logs per packet.
#![no_std]
#![no_main]

mod csum;
mod maps;
mod packet;

use aya_ebpf::{
    bindings::{xdp_action, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_SUCCESS, BPF_NOEXIST},
    helpers::{bpf_check_mtu, bpf_fib_lookup, bpf_ktime_get_coarse_ns, bpf_redirect},
    macros::xdp,
    programs::XdpContext,
    EbpfContext,
};
use gateway_common::{
    addr_flags, ct_flags, flow_hash, if_flags, nat_port, port_flags, port_index, src_hash, svc_flags,
    verdict, CtValue, FlowKey, ResolveBatch, ServiceKey, ServiceValue, MAGLEV_RING, NAT_PORT_MAX,
    NAT_PORT_MIN, NAT_PORT_TRIES, NEXTHOP_TTL_NS, PROTO_TCP, RESOLVE_BATCH,
};

use crate::{
    maps::{
        ADDRS, BACKENDS, BACKEND_STATS, CONNTRACK, IFADDRS, MAGLEV, PORTS, SERVICES, SERVICE_STATS,
        VERDICTS,
    },
    packet::Packet,
};

#[xdp]
pub fn gateway_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (action, reason) = process(&ctx);
    maps::count(&VERDICTS, reason, len);
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

    // Lookup order: `PORTS` (an array, so its lookup is inlined and nearly free) says what
    // listens on this port. Foreign traffic mostly stops there; a flow's packets to an L4 port
    // go to `CONNTRACK` first (one hash lookup for an established flow); an L7-only port goes
    // straight to `SERVICES`.
    let ports = PORTS
        .get(port_index(key.proto, u16::from_be(key.dport)))
        .copied()
        .unwrap_or(0);
    if ports & port_flags::L4 != 0 {
        // A SYN always takes a fresh decision (Katran does the same): a reused 5-tuple must not
        // inherit a stale entry whose backend may be gone.
        if !pkt.is_syn() {
            if let Some(ct) = CONNTRACK.get_ptr_mut(&key) {
                return established(ctx, &pkt, ct, len);
            }
        }
    } else if ports & port_flags::LOCAL == 0 {
        return not_ours(ctx, &pkt, &key, len);
    }
    let svc_key = ServiceKey {
        addr: key.daddr,
        port: key.dport,
        proto: key.proto,
        _pad: 0,
    };
    let Some(svc) = (unsafe { SERVICES.get(&svc_key) }) else {
        return not_ours(ctx, &pkt, &key, len);
    };
    if svc.flags & svc_flags::LOCAL != 0 {
        maps::count(&SERVICE_STATS, svc.id, len);
        return (xdp_action::XDP_PASS, verdict::PASS_LOCAL);
    }
    new_flow(ctx, &pkt, &key, svc, len)
}

/// No service owns the packet. Still ours: a SNAT reply (to a port in the SNAT range) or a
/// preserve-source reply (addressed to the client, from a backend's source port), if the
/// connection table knows it. Otherwise passed, and a miss on a SNAT port of the node is counted
/// apart (the connection-table pressure signal).
#[inline(always)]
fn not_ours(ctx: &XdpContext, pkt: &Packet, key: &FlowKey, len: u64) -> (u32, u32) {
    let nat_range = (NAT_PORT_MIN..=NAT_PORT_MAX).contains(&u16::from_be(key.dport));
    let ps_reply = || {
        PORTS
            .get(port_index(key.proto, u16::from_be(key.sport)))
            .is_some_and(|f| f & port_flags::PS_SRC != 0)
    };
    if nat_range || ps_reply() {
        if let Some(ct) = CONNTRACK.get_ptr_mut(key) {
            return established(ctx, pkt, ct, len);
        }
    }
    let to_node =
        nat_range && unsafe { ADDRS.get(&key.daddr) }.is_some_and(|f| f & addr_flags::NODE != 0);
    let reason = if to_node {
        verdict::PASS_NAT_MISS
    } else {
        verdict::PASS_NOT_OURS
    };
    (xdp_action::XDP_PASS, reason)
}

/// A packet of a known flow, either direction.
#[inline(always)]
fn established(ctx: &XdpContext, pkt: &Packet, ct: *mut CtValue, len: u64) -> (u32, u32) {
    // Safety: a map value pointer stays valid for the duration of the program.
    let ct = unsafe { &mut *ct };
    maps::count(&SERVICE_STATS, ct.service_id, len);
    maps::count(&BACKEND_STATS, ct.backend_id, len);
    // FIN/RST mark the entry so a closed flow's SNAT port can be taken by a new flow (only
    // these rare packets write to the entry).
    let close = pkt.close_flags();
    if close != 0 {
        ct.flags |= close;
    }
    if ct.flags & ct_flags::REPLY == 0 {
        // Towards the backend: its next hop, resolved in advance, unless the backend is gone
        // (its id free or reused by another address) or not resolved yet.
        if let Some(b) = BACKENDS.get(ct.backend_id) {
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
fn closed_flow(rev: &CtValue, proto: u8) -> Option<FlowKey> {
    if proto != PROTO_TCP {
        return None;
    }
    let fwd_key = crate::packet::flow_key(rev.daddr, rev.saddr, rev.dport, rev.sport, proto);
    if rev.flags & ct_flags::RST != 0 {
        return Some(fwd_key);
    }
    match unsafe { CONNTRACK.get(&fwd_key) } {
        None => Some(fwd_key),
        Some(f) if f.flags & ct_flags::RST != 0 => Some(fwd_key),
        Some(f) if f.flags & rev.flags & ct_flags::FIN != 0 => Some(fwd_key),
        Some(_) => None,
    }
}

/// First packet of a flow: Maglev pick, next hop, SNAT port, then both connection entries.
#[inline(always)]
fn new_flow(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &FlowKey,
    svc: &ServiceValue,
    len: u64,
) -> (u32, u32) {
    if svc.backend_count == 0 {
        maps::count(&SERVICE_STATS, svc.id, len);
        return (xdp_action::XDP_DROP, verdict::DROP_NO_BACKEND);
    }
    let fhash = flow_hash(key.saddr, key.daddr, key.sport, key.dport, key.proto);
    let pick = if svc.flags & svc_flags::HASH_SRC_IP != 0 {
        src_hash(key.saddr)
    } else {
        fhash
    };
    let slot = svc.ring * MAGLEV_RING + pick % MAGLEV_RING;
    let backend_id = match MAGLEV.get(slot) {
        Some(b) => *b,
        None => return (xdp_action::XDP_DROP, verdict::DROP_NO_BACKEND),
    };
    let backend = match BACKENDS.get(backend_id) {
        Some(b) if b.addr != 0 => b,
        _ => return (xdp_action::XDP_DROP, verdict::DROP_NO_BACKEND),
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
    let mut rkey = packet::flow_key(
        backend.addr,
        key.saddr,
        backend.port,
        key.sport,
        key.proto,
    );

    if svc.flags & svc_flags::SNAT != 0 {
        let snat = if backend.nh_ifindex != 0 && backend.snat_addr != 0 {
            backend.snat_addr
        } else {
            match unsafe { IFADDRS.get(&fwd.nh_ifindex) } {
                Some(a) if a.addr != 0 => a.addr,
                _ => return (xdp_action::XDP_DROP, verdict::DROP_NO_SNAT_ADDR),
            }
        };
        fwd.saddr = snat;
        rkey.daddr = snat;
        let mut found = false;
        for attempt in 0..NAT_PORT_TRIES {
            let port = nat_port(fhash, attempt).to_be();
            rkey.dport = port;
            if CONNTRACK.insert(&rkey, &rev, BPF_NOEXIST as u64).is_ok() {
                found = true;
                break;
            }
            // Taken: by this very flow (a retransmitted SYN) is fine, by another is not,
            // unless that flow has closed.
            if let Some(other) = unsafe { CONNTRACK.get(&rkey) } {
                if other.daddr == key.saddr
                    && other.dport == key.sport
                    && other.saddr == key.daddr
                    && other.sport == key.dport
                {
                    let _ = CONNTRACK.insert(&rkey, &rev, 0);
                    found = true;
                    break;
                }
                if let Some(old_fwd) = closed_flow(other, key.proto) {
                    // Its forward entry goes too: a late packet of the old flow must not be
                    // translated into the new flow's tuple.
                    let _ = CONNTRACK.remove(&old_fwd);
                    let _ = CONNTRACK.insert(&rkey, &rev, 0);
                    found = true;
                    break;
                }
            }
        }
        if !found {
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
    } else {
        if CONNTRACK.insert(&rkey, &rev, 0).is_err() {
            return (xdp_action::XDP_DROP, verdict::DROP_CT_FULL);
        }
    }
    if CONNTRACK.insert(key, &fwd, 0).is_err() {
        let _ = CONNTRACK.remove(&rkey);
        return (xdp_action::XDP_DROP, verdict::DROP_CT_FULL);
    }
    maps::count(&SERVICE_STATS, svc.id, len);
    maps::count(&BACKEND_STATS, backend_id, len);
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

/// Sends a packet per `ct`'s own next hop, looked up again once it is a second old.
#[inline(always)]
fn forward(ctx: &XdpContext, pkt: &Packet, ct: &mut CtValue, reason: u32) -> (u32, u32) {
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.wrapping_sub(ct.nh_ts) > NEXTHOP_TTL_NS {
        // Refresh; if the FIB cannot answer (e.g. forwarding disabled on the ingress device for
        // a reply entry), keep the next hop learned when the flow started.
        if let Err(reason) = fib(ctx, ct, now) {
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
fn send(
    ctx: &XdpContext,
    pkt: &Packet,
    ct: &CtValue,
    ifindex: u32,
    smac: &[u8; 6],
    dmac: &[u8; 6],
    reason: u32,
) -> (u32, u32) {
    if pkt.ttl() <= 1 {
        // Forwarding would expire it: the kernel sends the time-exceeded (or delivers it, if
        // addressed to the node); the fast path never forwards a TTL-0 packet.
        return (xdp_action::XDP_PASS, verdict::PASS_TTL_EXPIRED);
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
            pkt.rewrite(partial, false, ct.saddr, ct.daddr, ct.sport, ct.dport, &peer, &own);
            return (xdp_action::XDP_PASS, verdict::PASS_OVERSIZE);
        }
    }
    pkt.rewrite(partial, true, ct.saddr, ct.daddr, ct.sport, ct.dport, smac, dmac);
    if ifindex == ctx.ingress_ifindex() as u32 {
        return (xdp_action::XDP_TX, reason);
    }
    let action = unsafe { bpf_redirect(ifindex, 0) } as u32;
    (action, reason)
}

/// Resolves the next hop of one backend into its `BACKENDS` entry, with the same FIB the data
/// path would ask (as if from `lo`, like the data path's fallback: no ingress device is known in
/// advance). The agent runs it through BPF_PROG_TEST_RUN with repeat = `RESOLVE_BATCH`: each
/// run takes the next id of the batch from the packet, which persists across repeats, so one
/// call resolves a batch while the verifier sees no loop. Run after each apply and about once a
/// second, so route and neighbour changes reach established flows within a second and no
/// packet pays for a FIB lookup.
#[xdp]
pub fn gateway_resolve(ctx: XdpContext) -> u32 {
    let Some(batch) = packet::ptr_at::<ResolveBatch>(&ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // Safety: bounds checked by ptr_at; nothing else holds the test packet.
    let batch = unsafe { &mut *batch };
    let i = batch.done;
    if i >= RESOLVE_BATCH {
        return xdp_action::XDP_PASS;
    }
    batch.done = i + 1;
    let Some(b) = BACKENDS.get_ptr_mut(batch.first.wrapping_add(i)) else {
        return xdp_action::XDP_PASS;
    };
    // Safety: a map value pointer stays valid for the duration of the program.
    let b = unsafe { &mut *b };
    if b.addr == 0 {
        b.nh_ifindex = 0;
        return xdp_action::XDP_PASS;
    }
    let mut p: aya_ebpf::bindings::bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = 2; // AF_INET
    p.l4_protocol = PROTO_TCP;
    p.ifindex = LOOPBACK_IFINDEX;
    p.__bindgen_anon_4.ipv4_dst = b.addr;
    let size = core::mem::size_of::<aya_ebpf::bindings::bpf_fib_lookup>() as i32;
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut p, size, 0) };
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        b.snat_addr = unsafe { IFADDRS.get(&p.ifindex) }.map_or(0, |a| a.addr);
        b.nh_smac = p.smac;
        b.nh_dmac = p.dmac;
        b.nh_ifindex = p.ifindex;
    } else {
        b.nh_ifindex = 0;
        batch.unresolved |= 1u64 << (i & 63);
    }
    xdp_action::XDP_PASS
}

const LOOPBACK_IFINDEX: u32 = 1;

/// Ethernet header plus a 1500-byte MTU: shorter frames fit every egress, so they skip the MTU
/// check.
const ETH_FRAME_MAX: usize = 14 + 1500;

#[inline(always)]
fn action_for(reason: u32) -> u32 {
    if reason == verdict::PASS_FIB_MISS {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// Looks up the next hop for `ct.daddr` and caches it in `ct`.
#[inline(always)]
fn fib(ctx: &XdpContext, ct: &mut CtValue, now: u64) -> Result<(), u32> {
    let mut p: aya_ebpf::bindings::bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = 2; // AF_INET
    p.l4_protocol = PROTO_TCP;
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_3.ipv4_src = ct.saddr;
    p.__bindgen_anon_4.ipv4_dst = ct.daddr;
    let size = core::mem::size_of::<aya_ebpf::bindings::bpf_fib_lookup>() as i32;
    let mut rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut p, size, 0) };
    if rc == BPF_FIB_LKUP_RET_FWD_DISABLED as i64 {
        // The helper requires forwarding on the device named in the lookup. A node may keep
        // kernel forwarding off (only this program forwards); then look up as if from loopback,
        // whose forwarding flag the agent enables (it forwards nothing received elsewhere).
        p.ifindex = LOOPBACK_IFINDEX;
        rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut p, size, 0) };
    }
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        ct.nh_ifindex = p.ifindex;
        ct.nh_smac = p.smac;
        ct.nh_dmac = p.dmac;
        ct.nh_ts = now;
        Ok(())
    } else if rc == BPF_FIB_LKUP_RET_FWD_DISABLED as i64 {
        Err(verdict::DROP_FIB)
    } else {
        Err(verdict::PASS_FIB_MISS)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
