//! Attach point: the next-hop resolver, never attached to an interface.
//!
//! Resolves the next hop of one backend into its `BACKENDS` entry, with the same FIB the data
//! path would ask (as if from `lo`, like the data path's fallback: no ingress device is known in
//! advance). The agent runs it through BPF_PROG_TEST_RUN with repeat = `RESOLVE_BATCH`: each
//! run takes the next id of the batch from the packet, which persists across repeats, so one
//! call resolves a batch while the verifier sees no loop. Run after each apply and about once a
//! second, so route and neighbour changes reach established flows within a second and no
//! packet pays for a FIB lookup.

use aya_ebpf::{
    bindings::{xdp_action, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::bpf_fib_lookup,
    macros::xdp,
    programs::XdpContext,
    EbpfContext,
};
use gateway_common::{ResolveBatch, PROTO_TCP, RESOLVE_BATCH};

use crate::{
    family::{Family, V4, V6},
    fib::LOOPBACK_IFINDEX,
    packet,
};

#[xdp]
pub fn gateway_resolve(ctx: XdpContext) -> u32 {
    resolve::<V4>(&ctx)
}

/// The resolver of IPv6 backends (`BACKENDS6`, the SNAT source from `IFADDRS6`).
#[xdp]
pub fn gateway_resolve6(ctx: XdpContext) -> u32 {
    resolve::<V6>(&ctx)
}

#[inline(always)]
fn resolve<F: Family>(ctx: &XdpContext) -> u32 {
    let Some(batch) = packet::ptr_at::<ResolveBatch>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // Safety: bounds checked by ptr_at; nothing else holds the test packet.
    let batch = unsafe { &mut *batch };
    let i = batch.done;
    if i >= RESOLVE_BATCH {
        return xdp_action::XDP_PASS;
    }
    batch.done = i + 1;
    let Some(b) = F::backends().get_ptr_mut(batch.first.wrapping_add(i)) else {
        return xdp_action::XDP_PASS;
    };
    // Safety: a map value pointer stays valid for the duration of the program.
    let b = unsafe { &mut *b };
    if b.addr == F::A::default() {
        b.nh_ifindex = 0;
        return xdp_action::XDP_PASS;
    }
    let mut p: aya_ebpf::bindings::bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = F::AF;
    p.l4_protocol = PROTO_TCP;
    p.ifindex = LOOPBACK_IFINDEX;
    F::fib_addrs(&mut p, &F::A::default(), &b.addr);
    let size = core::mem::size_of::<aya_ebpf::bindings::bpf_fib_lookup>() as i32;
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut p, size, 0) };
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        b.snat_addr = F::if_addr(p.ifindex).unwrap_or_default();
        b.nh_smac = p.smac;
        b.nh_dmac = p.dmac;
        b.nh_ifindex = p.ifindex;
    } else {
        b.nh_ifindex = 0;
        batch.unresolved |= 1u64 << (i & 63);
    }
    xdp_action::XDP_PASS
}
