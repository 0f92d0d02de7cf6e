//! SNAT pools (`--snat-pool IFACE=ADDR[,ADDR..][:PORTMIN-PORTMAX]`): masqueraded flows leaving
//! by IFACE take their source from these node addresses and ports instead of the interface's
//! primary address and 61000-65535, so one backend can hold up to (addresses x ports) flows from
//! the gateway instead of 4,536. IPv4 only: IPv6 flows keep the interface's address.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use gateway_common::{maps as names, SnatPool, NAT_PORT_MAX, NAT_PORT_MIN, SNAT_POOL_ADDRS};

use super::{apply::sync_hash, ifmode, interface_addrs, Dataplane, DataplaneError};

/// One `--snat-pool` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub iface: String,
    pub addrs: Vec<Ipv4Addr>,
    /// Host order, inclusive.
    pub ports: (u16, u16),
}

impl PoolSpec {
    /// The pool's addresses.
    pub fn ip_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs.iter().map(|a| IpAddr::V4(*a))
    }
}

/// Parses `IFACE=ADDR[,ADDR..][:PORTMIN-PORTMAX]` (ports default to 61000-65535).
pub fn parse(s: &str) -> Result<PoolSpec, String> {
    let (iface, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("--snat-pool {s:?}: expected IFACE=ADDR[,ADDR..][:MIN-MAX]"))?;
    if iface.is_empty() {
        return Err(format!("--snat-pool {s:?}: no interface name before '='"));
    }
    let (list, ports) = match rest.rsplit_once(':') {
        Some((l, p)) if p.contains('-') => (l, Some(p)),
        _ => (rest, None),
    };
    let mut addrs = Vec::new();
    for a in list.split(',') {
        match a.trim().parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => addrs.push(v4),
            Ok(IpAddr::V6(_)) => {
                return Err(format!(
                    "--snat-pool {s:?}: {a} is IPv6; pools are IPv4 only (IPv6 flows use the \
                     interface's address)"
                ))
            }
            Err(_) => return Err(format!("--snat-pool {s:?}: {a:?} is not an IPv4 address")),
        }
    }
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() || addrs.len() > SNAT_POOL_ADDRS as usize {
        return Err(format!(
            "--snat-pool {s:?}: {} addresses; a pool has 1 to {SNAT_POOL_ADDRS}",
            addrs.len()
        ));
    }
    let ports = match ports {
        None => (NAT_PORT_MIN, NAT_PORT_MAX),
        Some(p) => {
            let bad =
                || format!("--snat-pool {s:?}: port range {p:?}: expected MIN-MAX, 1024-65535");
            let (lo, hi) = p.split_once('-').ok_or_else(bad)?;
            let (lo, hi): (u16, u16) = (
                lo.trim().parse().map_err(|_| bad())?,
                hi.trim().parse().map_err(|_| bad())?,
            );
            if lo < 1024 || lo > hi {
                return Err(bad());
            }
            (lo, hi)
        }
    };
    Ok(PoolSpec {
        iface: iface.to_string(),
        addrs,
        ports,
    })
}

/// The node's ephemeral port range (`net.ipv4.ip_local_port_range`), if readable.
fn local_port_range() -> Option<(u16, u16)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().filter_map(|w| w.parse().ok());
    Some((it.next()?, it.next()?))
}

impl Dataplane {
    /// Sets the SNAT pools. Each address must be one of this node's (the backends' replies come
    /// back to it); a port range overlapping the node's ephemeral range is refused, as the
    /// node's own connections would collide with translated flows.
    pub fn set_snat_pools(&mut self, pools: Vec<PoolSpec>) -> Result<(), DataplaneError> {
        let node: Vec<IpAddr> = interface_addrs().into_values().flatten().collect();
        let eph = local_port_range();
        for p in &pools {
            if ifmode::ifindex(&p.iface).is_none() {
                return Err(DataplaneError::SnatPool(format!(
                    "--snat-pool {}: no interface {} on this node",
                    p.iface, p.iface
                )));
            }
            if let Some(a) = p.addrs.iter().find(|a| !node.contains(&IpAddr::V4(**a))) {
                return Err(DataplaneError::SnatPool(format!(
                    "--snat-pool {}: {a} is not an address of this node (add it to an interface \
                     first: the backends' replies must reach the node)",
                    p.iface
                )));
            }
            if let Some((lo, hi)) = eph {
                if p.ports.0 <= hi && lo <= p.ports.1 {
                    return Err(DataplaneError::SnatPool(format!(
                        "--snat-pool {}: ports {}-{} overlap the node's ephemeral range {lo}-{hi} \
                         (net.ipv4.ip_local_port_range): the node's own connections would \
                         collide with translated flows",
                        p.iface, p.ports.0, p.ports.1
                    )));
                }
            }
        }
        self.state.nat_ranges = pools.iter().map(|p| p.ports).collect();
        self.pools = pools;
        self.sync_snat_pools()
    }

    /// Writes `SNAT_POOLS` for the pools' interfaces as they are indexed now (an interface
    /// re-created under its name has a new index).
    pub(super) fn sync_snat_pools(&mut self) -> Result<(), DataplaneError> {
        let mut want: BTreeMap<u32, SnatPool> = BTreeMap::new();
        for p in &self.pools {
            let Some(idx) = ifmode::ifindex(&p.iface) else {
                continue;
            };
            let mut v = SnatPool {
                count: p.addrs.len() as u32,
                port_min: p.ports.0,
                port_max: p.ports.1,
                ..Default::default()
            };
            for (i, a) in p.addrs.iter().enumerate() {
                v.addrs[i] = u32::from(*a).to_be();
            }
            want.insert(idx, v);
        }
        sync_hash(&mut self.snat_pools, &want, names::SNAT_POOLS)
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, NAT_PORT_MAX, NAT_PORT_MIN};

    #[test]
    fn parses_pools_and_names_what_is_wrong() {
        let p = parse("eth1=198.18.1.10,198.18.1.11:20000-29999").unwrap();
        assert_eq!(p.iface, "eth1");
        assert_eq!(p.addrs.len(), 2);
        assert_eq!(p.ports, (20000, 29999));
        assert_eq!(
            parse("eth1=198.18.1.10").unwrap().ports,
            (NAT_PORT_MIN, NAT_PORT_MAX)
        );
        for (bad, says) in [
            ("eth1", "expected IFACE="),
            ("=198.18.1.1", "no interface"),
            ("eth1=2001:db8::1", "IPv6"),
            ("eth1=x", "not an IPv4"),
            ("eth1=198.18.1.1:100-200", "port range"),
            ("eth1=198.18.1.1:3000-2000", "port range"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let nine: Vec<String> = (1..=9).map(|i| format!("198.18.1.{i}")).collect();
        assert!(parse(&format!("eth1={}", nine.join(",")))
            .unwrap_err()
            .contains("1 to 8"));
    }
}
