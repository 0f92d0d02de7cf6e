//! Source NAT: the address a masqueraded flow leaves from, and the search for a free (address,
//! port) pair, from the egress interface's SNAT pool if it has one, else its address and the
//! default range. A reply entry is the reservation: in the unconfirmed table while the flow is
//! new, in the main table once confirmed; a pair is free when neither holds a live flow on it.

use aya_ebpf::bindings::BPF_NOEXIST;
use gateway_common::{
    ct_flags, BackendOf, CtValueOf, FlowKeyOf, SnatPool, NAT_PORT_MAX, NAT_PORT_MIN,
    NAT_PORT_TRIES,
};

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

/// The pool of a flow leaving by `nh_ifindex`, copied by value (so the search below is one path
/// for the verifier, whichever applies), and whether it is an interface's `SNAT_POOLS` entry:
/// else one address (`rkey.daddr`, set by the caller) and the default range.
#[inline(always)]
pub fn pool_of<F: Family>(nh_ifindex: u32) -> (SnatPool, bool) {
    if let Some(p) = F::snat_pool(nh_ifindex) {
        return (*p, true);
    }
    let p = SnatPool {
        count: 1,
        port_min: NAT_PORT_MIN,
        port_max: NAT_PORT_MAX,
        ..Default::default()
    };
    (p, false)
}

/// Whether the reply entry `other` is the new flow `key`'s own (a retransmitted SYN).
#[inline(always)]
fn same_client<F: Family>(other: &CtValueOf<F::A>, key: &FlowKeyOf<F::A>) -> bool {
    other.daddr == key.saddr
        && other.dport == key.sport
        && other.saddr == key.daddr
        && other.sport == key.dport
}

/// Takes a SNAT source for the new flow `key` (its hash `fhash`): tries the flow's candidate
/// pairs of `pool` in order (addresses from the pool if `pooled`, else `rkey.daddr`), inserting
/// the reply entry `rev` under `rkey` in the unconfirmed table; `rkey.daddr` and `rkey.dport`
/// end as the pair taken. False if every candidate is held by another live flow.
#[inline(always)]
pub fn take_port<F: Family>(
    key: &FlowKeyOf<F::A>,
    rkey: &mut FlowKeyOf<F::A>,
    rev: &CtValueOf<F::A>,
    fhash: u32,
    pool: &SnatPool,
    pooled: bool,
) -> bool {
    let (main, unconfirmed) = (F::conntrack(), F::conntrack_new());
    for attempt in 0..NAT_PORT_TRIES {
        let (addr, port) = pool.pick(fhash, attempt);
        if F::POOLS && pooled {
            rkey.daddr = F::pool_addr(addr);
        }
        rkey.dport = port.to_be();
        // Held by a confirmed flow: by this very client tuple (an earlier flow on it) is fine,
        // by another only if that flow is over (then its entries go: a late packet of the old
        // flow must not be translated into the new flow's tuple).
        if let Some(other) = unsafe { main.get(&*rkey) } {
            if !same_client::<F>(other, key) {
                let Some(old_fwd) = closed_flow::<F>(main, other, key.proto) else {
                    continue;
                };
                let _ = main.remove(&old_fwd);
                let _ = main.remove(&*rkey);
            }
        }
        if unconfirmed.insert(&*rkey, rev, BPF_NOEXIST as u64).is_ok() {
            return true;
        }
        // Held by an unconfirmed flow: this one's own retransmitted SYN may take it over, and
        // so may anyone once a RST refused that flow (its forward entry goes too).
        if let Some(other) = unsafe { unconfirmed.get(&*rkey) } {
            let same = same_client::<F>(other, key);
            if same || other.flags & ct_flags::RST != 0 {
                if !same {
                    let old =
                        F::flow_key(other.daddr, other.saddr, other.dport, other.sport, key.proto);
                    let _ = unconfirmed.remove(&old);
                }
                let _ = unconfirmed.insert(&*rkey, rev, 0);
                return true;
            }
        }
    }
    false
}
