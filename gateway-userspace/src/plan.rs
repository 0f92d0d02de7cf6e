//! The compiled, immutable plan: what the data plane must do, with nothing left to resolve.
//!
//! `config::compile` produces it from validated manifests; `dataplane` (XDP maps) and `l4proxy`
//! (the userspace fallback) apply it. It is plain data, so it can be diffed, dumped and tested.

use std::net::Ipv4Addr;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => gateway_common::PROTO_TCP,
            Proto::Udp => gateway_common::PROTO_UDP,
        }
    }
}

/// How clients appear to backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatMode {
    /// Client masqueraded to the node's egress address and an allocated port: backends anywhere
    /// reply to the node.
    Snat,
    /// Destination rewritten only: backends see the client address and must route replies back
    /// through this node.
    PreserveSource,
}

/// What the backend choice hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashMode {
    /// Source and destination address and port, protocol: flows spread independently.
    FiveTuple,
    /// Source address only (DestinationRule `consistentHash.useSourceIp`).
    SourceIp,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Backend {
    pub addr: Ipv4Addr,
    pub port: u16,
    /// Relative share in the Maglev ring (> 0).
    pub weight: u32,
}

/// One L4 service on the fast path: packets to (vip, port, proto) are balanced over `backends`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct L4Service {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
    pub nat: NatMode,
    pub hash: HashMode,
    /// Sorted by (addr, port); weights merged when several destinations share an endpoint.
    /// Empty means the route's destinations have no endpoints: packets are dropped and counted.
    pub backends: Vec<Backend>,
    /// Where it came from, for logs and the config dump: e.g.
    /// `Gateway istio-system/gw server tcp-echo:31400 -> VirtualService default/echo tcp[0]`.
    pub origin: String,
}

/// A port served by the agent itself (HTTP-family servers): the XDP program hands packets to it
/// to the local stack, and the agent binds a listener.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct LocalPort {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub origin: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Sorted by (vip, port, proto); at most one per key.
    pub l4: Vec<L4Service>,
    /// Sorted by (vip, port).
    pub local: Vec<LocalPort>,
}
