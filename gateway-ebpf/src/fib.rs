//! Next-hop lookups in the kernel's FIB (`bpf_fib_lookup`), cached in connection entries.

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::bpf_fib_lookup,
    programs::XdpContext,
    EbpfContext,
};
use gateway_common::{verdict, CtValueOf, PROTO_TCP};

use crate::family::Family;

pub const LOOPBACK_IFINDEX: u32 = 1;

/// Looks up the next hop for `ct.daddr` and caches it in `ct`.
#[inline(always)]
pub fn fib<F: Family>(ctx: &XdpContext, ct: &mut CtValueOf<F::A>, now: u64) -> Result<(), u32> {
    let mut local = core::mem::MaybeUninit::<aya_ebpf::bindings::bpf_fib_lookup>::uninit();
    let p = if F::SCRATCH {
        match F::fib_scratch() {
            Some(p) => p,
            None => return Err(verdict::PASS_FIB_MISS),
        }
    } else {
        local.as_mut_ptr()
    };
    // Safety: this frame's area or the per-CPU map value (see `Family::SCRATCH`), zeroed
    // before use.
    let p = unsafe {
        core::ptr::write_bytes(p, 0, 1);
        &mut *p
    };
    p.family = F::AF;
    p.l4_protocol = PROTO_TCP;
    p.ifindex = ctx.ingress_ifindex() as u32;
    F::fib_addrs(p, &ct.saddr, &ct.daddr);
    let size = core::mem::size_of::<aya_ebpf::bindings::bpf_fib_lookup>() as i32;
    let mut rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), p, size, 0) };
    if rc == BPF_FIB_LKUP_RET_FWD_DISABLED as i64 {
        // The helper requires forwarding on the device named in the lookup. A node may keep
        // kernel forwarding off (only this program forwards); then look up as if from loopback,
        // whose forwarding flag the agent enables (it forwards nothing received elsewhere).
        p.ifindex = LOOPBACK_IFINDEX;
        rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), p, size, 0) };
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
