//! L4 servers: the first passing `tcp` rule of a server, its backends and hash mode.

use super::{Compiler, MergedDr, Srv};
use crate::config::model::{
    L4Match, RouteDestination, Subset, TcpRoute, VirtualService, NAT_MODE_ANNOTATION,
};
use crate::config::names::{resolve_gateway_name, subnet_contains};
use crate::plan::{Backend, HashMode, L4Dest, L4Service, NatMode};
use std::collections::BTreeMap;
use std::net::IpAddr;

impl<'a> Compiler<'a> {
    pub(super) fn match_passes(m: &L4Match, srv: &Srv<'_>, vip: IpAddr, vs_ns: &str) -> bool {
        let port_ok = m.port == 0 || m.port == i64::from(srv.port);
        // An unspecified vip (0.0.0.0: listen on every address) has no destination to test, so
        // the match behaves as in Istio, which ignores destinationSubnets at gateways.
        let subnet_ok = m.destination_subnets.is_empty()
            || vip.is_unspecified()
            || m.destination_subnets
                .iter()
                .any(|s| subnet_contains(s, vip));
        let gw_ok = m.gateways.is_empty()
            || m.gateways
                .iter()
                .any(|g| resolve_gateway_name(g, vs_ns) == srv.gw_key);
        port_ok && subnet_ok && gw_ok
    }

    /// The first passing `tcp` rule for a server on `vip`: (VirtualService index, rule index).
    fn first_tcp_rule(&self, srv: &Srv<'a>, vip: IpAddr) -> Option<(usize, usize)> {
        for (vi, vs) in self.vss.iter().enumerate() {
            if !vs.gateways.contains(&srv.gw_key) || !Self::hosts_overlap(srv, vs) {
                continue;
            }
            for (ri, rule) in vs.vs.spec.tcp.iter().enumerate() {
                if rule.route.is_empty() {
                    continue;
                }
                let ns = vs.vs.namespace();
                let passes = rule.matches.is_empty()
                    || rule
                        .matches
                        .iter()
                        .any(|m| Self::match_passes(m, srv, vip, ns));
                if passes {
                    return Some((vi, ri));
                }
            }
        }
        None
    }

    /// Whether a destination of the server's `tcp` rule has a DestinationRule `tls` of SIMPLE
    /// or MUTUAL: XDP cannot originate TLS, so the agent then serves the port as a stream.
    /// A lookup only: what does not resolve is reported when the route is compiled.
    pub(super) fn tcp_route_originates(&self, srv: &Srv<'a>, vip: IpAddr) -> bool {
        let Some((vi, ri)) = self.first_tcp_rule(srv, vip) else {
            return false;
        };
        let vs = self.vss[vi].vs;
        vs.spec.tcp[ri].route.iter().any(|rd| {
            let Some(dest) = &rd.destination else {
                return false;
            };
            let host = crate::config::names::resolve_short_name(&dest.host, vs.namespace());
            let Some(svc) = self.registry.get(&host) else {
                return false;
            };
            let ports = svc.ports();
            let sp = match &dest.port {
                Some(p) => ports.iter().find(|sp| i64::from(sp.number) == p.number),
                None if ports.len() == 1 => ports.first(),
                None => ports.iter().find(|sp| sp.number == srv.port),
            };
            let (Some(sp), Some(dr)) = (sp, self.destination_rule(&host, svc.namespace)) else {
                return false;
            };
            let subset = dr.subsets.iter().find(|s| s.name == dest.subset);
            let tls = super::upstream_tls::effective_tls(
                dr.policy,
                subset.and_then(|s| s.traffic_policy.as_ref().map(|p| (s.name.as_str(), p))),
                sp.number,
            );
            tls.and_then(|(v, _)| v.get("mode").and_then(|m| m.as_str()).map(str::to_string))
                .is_some_and(|m| matches!(m.to_ascii_uppercase().as_str(), "SIMPLE" | "MUTUAL"))
        })
    }

    pub(super) fn l4_service(&mut self, srv: &Srv<'a>, vip: IpAddr) -> Option<(L4Service, L4Dest)> {
        let Some((vi, ri)) = self.first_tcp_rule(srv, vip) else {
            let msg = format!(
                "no VirtualService tcp route matches {} on {vip}; port not served",
                srv.origin
            );
            self.warn(srv.gw, format!("spec.servers[{}]", srv.index), msg);
            return None;
        };
        let vs = self.vss[vi].vs;
        let rule = &vs.spec.tcp[ri];
        for (k, m) in rule.matches.iter().enumerate() {
            if !m.source_labels.is_empty() {
                self.warn(
                    vs,
                    format!("spec.tcp[{ri}].match[{k}].sourceLabels"),
                    "sourceLabels is not evaluated for tcp routes at a gateway (as in Istio)",
                );
            }
        }
        let (backends, hash, dest) = self.backends(srv, vip, vs, ri, rule);
        let nat = match srv
            .gw
            .metadata
            .annotations
            .get(NAT_MODE_ANNOTATION)
            .map(String::as_str)
        {
            Some("snat") => NatMode::Snat,
            Some("preserve-source") => NatMode::PreserveSource,
            _ => self.input.default_nat,
        };
        let svc = L4Service {
            vip,
            port: srv.port,
            proto: srv.class.proto(),
            nat,
            hash,
            backends,
            origin: format!("{} -> {} tcp[{ri}]", srv.origin, vs.id()),
        };
        Some((svc, dest))
    }

    /// The backends of one tcp rule: weighted destinations (§3.9) resolved to endpoints of
    /// `vip`'s family (a dual-stack service sends each family to its own endpoints; the data
    /// path never translates between families).
    pub(super) fn backends(
        &mut self,
        srv: &Srv<'a>,
        vip: IpAddr,
        vs: &'a VirtualService,
        ri: usize,
        rule: &'a TcpRoute,
    ) -> (Vec<Backend>, HashMode, L4Dest) {
        // One destination takes everything whatever its weight; with several, weight 0 (or
        // absent) gets nothing.
        let active: Vec<(usize, &RouteDestination, u64)> = if rule.route.len() == 1 {
            vec![(0, &rule.route[0], 100)]
        } else {
            rule.route
                .iter()
                .enumerate()
                .filter(|(_, r)| r.weight > 0)
                .map(|(k, r)| (k, r, r.weight as u64))
                .collect()
        };
        let mut acc: BTreeMap<(IpAddr, u16), u64> = BTreeMap::new();
        let mut source_ip: Vec<bool> = Vec::new();
        let mut first: Option<L4Dest> = None;
        let several = active.len() > 1;
        for (k, route, weight) in active {
            let field = format!("spec.tcp[{ri}].route[{k}].destination");
            let Some(dest) = &route.destination else {
                continue;
            };
            let lost = if several {
                "; its share of connections is spread over the other destinations"
            } else {
                ""
            };
            let Some(r) = self.resolve_destination(vs, &field, dest, srv.port, lost) else {
                continue;
            };
            source_ip.push(self.uses_source_ip(vs, &field, r.dr.as_ref(), r.port.number, r.subset));
            if first.is_none() {
                let host = crate::config::names::resolve_short_name(&dest.host, vs.namespace());
                first = Some(L4Dest {
                    cluster: format!("outbound|{}|{}|{host}", r.port.number, dest.subset),
                    namespace: r.namespace.to_string(),
                });
            }
            let family = if vip.is_ipv6() { "IPv6 " } else { "" };
            let eps: Vec<_> = r
                .eps
                .into_iter()
                .filter(|e| e.addr.is_ipv6() == vip.is_ipv6())
                .collect();
            if eps.is_empty() {
                let what = if r.subset.is_some() {
                    format!(
                        "subset {} of {} port {}",
                        dest.subset, r.svc_id, r.port.number
                    )
                } else {
                    format!("{} port {}", r.svc_id, r.port.number)
                };
                self.warn(
                    vs,
                    field.clone(),
                    format!("{what} has no ready {family}endpoints{lost}"),
                );
                continue;
            }
            let total: u64 = eps.iter().map(|e| e.weight).sum();
            for e in eps {
                let num = u128::from(weight) * 1000 * u128::from(e.weight);
                let den = u128::from(total);
                let w = ((num + den / 2) / den).max(1);
                let slot = acc.entry((e.addr, e.port)).or_default();
                *slot = slot.saturating_add(u64::try_from(w).unwrap_or(u64::MAX));
            }
        }
        let hash = if !source_ip.is_empty() && source_ip.iter().all(|b| *b) {
            HashMode::SourceIp
        } else {
            if source_ip.iter().any(|b| *b) {
                self.warn(
                    vs,
                    format!("spec.tcp[{ri}].route"),
                    "destinations disagree on consistentHash.useSourceIp; five-tuple hashing used",
                );
            }
            HashMode::FiveTuple
        };
        let backends = acc
            .into_iter()
            .map(|((addr, port), w)| Backend {
                addr,
                port,
                weight: u32::try_from(w).unwrap_or(u32::MAX),
            })
            .collect();
        (backends, hash, first.unwrap_or_default())
    }

    pub(super) fn uses_source_ip(
        &mut self,
        vs: &'a VirtualService,
        field: &str,
        dr: Option<&MergedDr<'a>>,
        port: u16,
        subset: Option<&'a Subset>,
    ) -> bool {
        let Some(dr) = dr else { return false };
        // Top level, replaced by its port-level entry; then the subset's, replaced by its
        // port-level entry. A port-level entry without loadBalancer means the default (§3.21).
        let mut lb = dr.policy.and_then(|tp| match tp.port_level(port) {
            Some(pl) => pl.load_balancer.as_ref(),
            None => tp.load_balancer.as_ref(),
        });
        if let Some(stp) = subset.and_then(|s| s.traffic_policy.as_ref()) {
            if let Some(pl) = stp.port_level(port) {
                lb = pl.load_balancer.as_ref();
            } else if stp.load_balancer.is_some() {
                lb = stp.load_balancer.as_ref();
            }
        }
        let Some(ch) = lb.and_then(|lb| lb.consistent_hash.as_ref()) else {
            return false;
        };
        if ch.http_header_name.is_some()
            || ch.http_cookie.is_some()
            || ch.http_query_parameter_name.is_some()
        {
            let msg = format!(
                "{}: consistentHash on an HTTP attribute does not apply to L4 traffic; five-tuple hashing used",
                dr.ids.join(", ")
            );
            self.warn(vs, field.to_string(), msg);
        }
        ch.use_source_ip == Some(true)
    }
}
