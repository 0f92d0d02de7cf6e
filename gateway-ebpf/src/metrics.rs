//! Counting: per-CPU packet and byte counters per service, per backend and per verdict reason
//! (`gateway_common::verdict`), and the XDP action of a failed step's reason.

use aya_ebpf::{bindings::xdp_action, maps::PerCpuArray};
use gateway_common::{verdict, Counters};

use crate::maps::SERVICE_FLOWS;

/// Adds one packet of `len` bytes to counter `index` (per CPU, so no atomics needed).
#[inline(always)]
pub fn count(map: &PerCpuArray<Counters>, index: u32, len: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // Safety: per-CPU value, only this CPU writes it while the program runs.
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += len;
    }
}

/// Adds `len` bytes to service `id`'s flow bytes of one direction (`reply`: backend -> client).
#[inline(always)]
pub fn count_flow(id: u32, reply: bool, len: u64) {
    if let Some(c) = SERVICE_FLOWS.get_ptr_mut(id) {
        // Safety: per-CPU value, only this CPU writes it while the program runs.
        let c = unsafe { &mut *c };
        if reply {
            c.tx_bytes += len;
        } else {
            c.rx_bytes += len;
        }
    }
}

/// The action for a next-hop failure `reason`: a FIB miss goes to the kernel, the rest is
/// dropped.
#[inline(always)]
pub fn action_for(reason: u32) -> u32 {
    if reason == verdict::PASS_FIB_MISS {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}
