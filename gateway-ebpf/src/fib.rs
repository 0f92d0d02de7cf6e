//! Next-hop lookups in the kernel's FIB (`bpf_fib_lookup`), cached in connection entries.

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::bpf_fib_lookup,
    programs::XdpContext,
    EbpfContext,
};
use gateway_common::{verdict, CtValue, PROTO_TCP};

pub const LOOPBACK_IFINDEX: u32 = 1;

/// Looks up the next hop for `ct.daddr` and caches it in `ct`.
#[inline(always)]
pub fn fib(ctx: &XdpContext, ct: &mut CtValue, now: u64) -> Result<(), u32> {
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
