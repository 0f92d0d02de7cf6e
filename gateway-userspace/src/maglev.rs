//! Weighted Maglev (Eisenbud et al., NSDI'16): a lookup ring in which each backend owns a share of
//! slots proportional to its weight, and which changes little when a backend comes or goes.
//!
//! Pure and deterministic: the ring depends only on the set of (address, port, weight), never on
//! ids, insertion order or the process, so two nodes with the same config pick the same backend
//! for the same flow.

use std::net::IpAddr;

use crate::plan::Backend;

/// Fixed-key hashes of a backend's identity: offset and skip of its permutation (IPv6 addresses
/// hashed whole, IPv4 ones as before).
fn permutation(addr: IpAddr, port: u16, m: u32) -> (u32, u32) {
    let p = port.to_be();
    let (h1, h2) = match addr {
        IpAddr::V4(a) => {
            let a = u32::from(a).to_be();
            (
                gateway_common::flow_hash(a, 0x5bd1_e995, p, 0, 1),
                gateway_common::flow_hash(a, 0x1b87_3593, p, 0, 2),
            )
        }
        IpAddr::V6(a) => {
            let a = gateway_common::addr6(a.octets());
            (
                gateway_common::flow_hash6(a, [0x5bd1_e995; 4], p, 0, 1),
                gateway_common::flow_hash6(a, [0x1b87_3593; 4], p, 0, 2),
            )
        }
    };
    (h1 % m, h2 % (m - 1) + 1)
}

/// Builds a ring of `m` slots (`m` prime), each holding an index into `backends`.
/// Returns an empty ring when there are no backends.
pub fn build(backends: &[Backend], m: u32) -> Vec<u32> {
    if backends.is_empty() {
        return Vec::new();
    }
    let perms: Vec<(u32, u32)> = backends
        .iter()
        .map(|b| permutation(b.addr, b.port, m))
        .collect();
    let max_w = backends.iter().map(|b| b.weight.max(1)).max().unwrap_or(1) as u64;
    let mut next = vec![0u32; backends.len()];
    let mut credit = vec![0u64; backends.len()];
    let mut ring = vec![u32::MAX; m as usize];
    let mut filled = 0u32;
    // Each round every backend earns its weight in credit and takes one slot per `max_w`
    // earned, so slot shares follow the weights.
    while filled < m {
        for (i, b) in backends.iter().enumerate() {
            credit[i] += b.weight.max(1) as u64;
            while credit[i] >= max_w && filled < m {
                credit[i] -= max_w;
                let (offset, skip) = perms[i];
                loop {
                    let slot = ((offset as u64 + next[i] as u64 * skip as u64) % m as u64) as usize;
                    next[i] += 1;
                    if ring[slot] == u32::MAX {
                        ring[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
            }
        }
    }
    ring
}

/// Picks the backend for a flow hash from a ring built by `build`.
pub fn pick(ring: &[u32], hash: u32) -> Option<u32> {
    if ring.is_empty() {
        None
    } else {
        Some(ring[(hash % ring.len() as u32) as usize])
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::{build, pick, Backend};

    fn be(n: u8, w: u32) -> Backend {
        Backend {
            addr: Ipv4Addr::new(198, 18, 1, n).into(),
            port: 8080,
            weight: w,
        }
    }

    fn shares(ring: &[u32], n: usize) -> Vec<f64> {
        let mut c = vec![0usize; n];
        for &i in ring {
            c[i as usize] += 1;
        }
        c.iter().map(|&x| x as f64 / ring.len() as f64).collect()
    }

    #[test]
    fn every_slot_filled_and_shares_follow_weights() {
        let bs = vec![be(1, 1), be(2, 3), be(3, 6)];
        let ring = build(&bs, gateway_common::MAGLEV_RING);
        assert_eq!(ring.len(), gateway_common::MAGLEV_RING as usize);
        let s = shares(&ring, 3);
        for (got, want) in s.iter().zip([0.1, 0.3, 0.6]) {
            assert!((got - want).abs() < 0.01, "share {got} want {want}");
        }
    }

    #[test]
    fn same_backends_same_ring_whatever_the_order() {
        let a = vec![be(1, 1), be(2, 1), be(3, 1)];
        let ra = build(&a, 4099);
        let b = vec![be(1, 1), be(2, 1), be(3, 1)];
        assert_eq!(ra, build(&b, 4099));
    }

    #[test]
    fn removing_a_backend_moves_few_other_slots() {
        let all: Vec<Backend> = (1..=10).map(|n| be(n, 1)).collect();
        let before = build(&all, 4099);
        let fewer: Vec<Backend> = all
            .iter()
            .filter(|b| b.addr != IpAddr::from(Ipv4Addr::new(198, 18, 1, 5)))
            .cloned()
            .collect();
        let after = build(&fewer, 4099);
        let addr = |bs: &[Backend], i: u32| bs[i as usize].addr;
        let moved = (0..4099)
            .filter(|&s| addr(&all, before[s]) != IpAddr::from(Ipv4Addr::new(198, 18, 1, 5)))
            .filter(|&s| addr(&all, before[s]) != addr(&fewer, after[s]))
            .count();
        // Maglev's promise: slots of surviving backends mostly stay put.
        assert!(
            moved < 4099 / 10,
            "{moved} slots of surviving backends moved"
        );
    }

    #[test]
    fn empty_and_single() {
        assert!(build(&[], 4099).is_empty());
        assert_eq!(pick(&[], 7), None);
        let r = build(&[be(1, 5)], 4099);
        assert!(r.iter().all(|&i| i == 0));
    }
}

#[cfg(test)]
mod spread {
    use std::net::Ipv4Addr;

    use super::{build, pick, Backend};

    /// Sequential client ports (what a Linux client uses) must still spread evenly.
    #[test]
    fn sequential_ports_spread() {
        let bs = vec![
            Backend {
                addr: Ipv4Addr::new(198, 18, 11, 2).into(),
                port: 9000,
                weight: 1,
            },
            Backend {
                addr: Ipv4Addr::new(198, 18, 12, 2).into(),
                port: 9000,
                weight: 1,
            },
        ];
        let ring = build(&bs, gateway_common::MAGLEV_RING);
        let c = u32::from(Ipv4Addr::new(198, 18, 0, 2)).to_be();
        let v = u32::from(Ipv4Addr::new(198, 18, 0, 1)).to_be();
        let mut n0 = 0;
        for p in (40000u16..50000).step_by(2) {
            let h = gateway_common::flow_hash(c, v, p.to_be(), 31401u16.to_be(), 6);
            if pick(&ring, h) == Some(0) {
                n0 += 1;
            }
        }
        let share = n0 as f64 / 5000.0;
        assert!((share - 0.5).abs() < 0.03, "share {share}");
    }
}
