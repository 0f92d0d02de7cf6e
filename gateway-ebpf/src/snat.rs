//! Source NAT: the address a masqueraded flow leaves from, and the search for a free port in the
//! SNAT range (a reply entry in the family's connection table is the reservation).

use aya_ebpf::bindings::BPF_NOEXIST;
use gateway_common::{nat_port, BackendOf, CtValueOf, FlowKeyOf, NAT_PORT_TRIES};

use crate::{conntrack::closed_flow, family::Family};

/// The SNAT source towards `backend` when the flow leaves by `nh_ifindex`: the address resolved
/// with the backend's next hop, else that interface's address; None if it has none.
#[inline(always)]
pub fn source_addr<F: Family>(backend: &BackendOf<F::A>, nh_ifindex: u32) -> Option<F::A> {
    if backend.nh_ifindex != 0 && backend.snat_addr != F::A::default() {
        return Some(backend.snat_addr);
    }
    F::if_addr(nh_ifindex)
}

/// Takes a SNAT port for the new flow `key` (its hash `fhash`): tries the flow's candidate ports
/// in order, inserting the reply entry `rev` under `rkey`, whose `dport` ends as the port taken.
/// False if every candidate is held by another live flow.
#[inline(always)]
pub fn take_port<F: Family>(
    key: &FlowKeyOf<F::A>,
    rkey: &mut FlowKeyOf<F::A>,
    rev: &CtValueOf<F::A>,
    fhash: u32,
) -> bool {
    let ct = F::conntrack();
    for attempt in 0..NAT_PORT_TRIES {
        let port = nat_port(fhash, attempt).to_be();
        rkey.dport = port;
        if ct.insert(&*rkey, rev, BPF_NOEXIST as u64).is_ok() {
            return true;
        }
        // Taken: by this very flow (a retransmitted SYN) is fine, by another is not, unless
        // that flow has closed.
        if let Some(other) = unsafe { ct.get(&*rkey) } {
            if other.daddr == key.saddr
                && other.dport == key.sport
                && other.saddr == key.daddr
                && other.sport == key.dport
            {
                let _ = ct.insert(&*rkey, rev, 0);
                return true;
            }
            if let Some(old_fwd) = closed_flow::<F>(other, key.proto) {
                // Its forward entry goes too: a late packet of the old flow must not be
                // translated into the new flow's tuple.
                let _ = ct.remove(&old_fwd);
                let _ = ct.insert(&*rkey, rev, 0);
                return true;
            }
        }
    }
    false
}
