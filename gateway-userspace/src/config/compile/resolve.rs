//! Destinations -> endpoints: Services and ServiceEntries, subsets, the DestinationRule Istio
//! would pick for a host.

use super::{exported_to, sorted, Compiler, Ep, MergedDr, Resolved, SvcKind, SvcPort};
use crate::config::model::{Destination, DestinationRule, Kind, Labels, Resource};
use crate::config::names::{
    host_subset_of, labels_subset, resolve_short_name, CLUSTER_DOMAIN, ROOT_NAMESPACE,
};
use std::collections::BTreeSet;
use std::net::IpAddr;

impl<'a> Compiler<'a> {
    /// Registry services Istio counts as mesh-internal (Kubernetes Services, ServiceEntries
    /// with `location: MESH_INTERNAL`), by host: (host, namespace, non-UDP port numbers).
    pub(super) fn mesh_internal_ports(&self) -> Vec<(String, String, Vec<u16>)> {
        let mut out = Vec::new();
        for (host, svc) in &self.registry {
            let ports: Vec<u16> = match svc.kind {
                SvcKind::Kube(k) => k
                    .spec
                    .ports
                    .iter()
                    .filter(|p| {
                        !p.protocol
                            .as_deref()
                            .unwrap_or("TCP")
                            .eq_ignore_ascii_case("UDP")
                    })
                    .filter_map(|p| u16::try_from(p.port).ok())
                    .collect(),
                SvcKind::Entry(se) => {
                    let internal = se
                        .spec
                        .location
                        .as_deref()
                        .is_some_and(|l| l.eq_ignore_ascii_case("MESH_INTERNAL"));
                    if !internal {
                        continue;
                    }
                    se.spec
                        .ports
                        .iter()
                        .filter(|p| !p.protocol.eq_ignore_ascii_case("UDP"))
                        .filter_map(|p| u16::try_from(p.number).ok())
                        .collect()
                }
            };
            out.push((host.clone(), svc.namespace.to_string(), ports));
        }
        out
    }

    /// The subset names of the DestinationRule Istio picks for `host`.
    pub(super) fn subset_names(&self, host: &str, svc_ns: &str) -> Vec<String> {
        self.destination_rule(host, svc_ns)
            .map(|d| d.subsets.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    }

    /// A route destination resolved the way Istio does (short name, registry host, port
    /// defaulting, DestinationRule and subset), with the endpoints of that subset. `None` (after
    /// a warning naming `field`) when the host, port or subset does not exist; `lost` is
    /// appended to those warnings.
    pub(super) fn resolve_destination<S: Kind>(
        &mut self,
        vs: &Resource<S>,
        field: &str,
        dest: &Destination,
        listener_port: u16,
        lost: &str,
    ) -> Option<Resolved<'a>> {
        let host = resolve_short_name(&dest.host, vs.namespace());
        let Some(svc) = self.registry.get(&host) else {
            let hint = if !dest.host.contains('.') || host.ends_with(CLUSTER_DOMAIN) {
                String::new()
            } else {
                format!(" (names with a dot are not expanded; a Kubernetes Service is {}.svc.{CLUSTER_DOMAIN})", dest.host)
            };
            let msg = format!(
                "unknown host {host}: no Service or ServiceEntry visible to namespace {}{hint}{lost}",
                self.input.namespace
            );
            self.warn(vs, format!("{field}.host"), msg);
            return None;
        };
        let svc_id = svc.id();
        let svc_ns = svc.namespace;
        let kind = svc.kind;
        let ports = svc.ports();
        let sp = match &dest.port {
            Some(p) => ports.iter().find(|sp| i64::from(sp.number) == p.number),
            None if ports.len() == 1 => ports.first(),
            // Istio falls back to the gateway's listener port (§2.2).
            None => ports.iter().find(|sp| sp.number == listener_port),
        };
        let Some(sp) = sp.cloned() else {
            let wanted = dest
                .port
                .as_ref()
                .map_or(i64::from(listener_port), |p| p.number);
            let msg = format!("{svc_id} has no port {wanted}{lost}");
            let at = if dest.port.is_some() {
                format!("{field}.port.number")
            } else {
                format!("{field}.port")
            };
            self.warn(vs, at, msg);
            return None;
        };
        let dr = self.destination_rule(&host, svc_ns);
        let subset = if dest.subset.is_empty() {
            None
        } else {
            match dr
                .as_ref()
                .and_then(|d| d.subsets.iter().find(|s| s.name == dest.subset))
            {
                Some(s) => Some(*s),
                None => {
                    let msg = format!(
                        "unknown subset {} of {host}: no DestinationRule visible here defines it{lost}",
                        dest.subset
                    );
                    self.warn(vs, format!("{field}.subset"), msg);
                    return None;
                }
            }
        };
        let mut eps = self.endpoints(kind, &sp);
        if let Some(sub) = subset {
            eps.retain(|e| labels_subset(&sub.labels, e.labels.unwrap_or(&Labels::new())));
        }
        let entry_sans: &'a [String] = match kind {
            SvcKind::Entry(se) => &se.spec.subject_alt_names,
            SvcKind::Kube(_) => &[],
        };
        Some(Resolved {
            entry_sans,
            svc_id,
            namespace: svc_ns,
            port: sp,
            dr_policy: dr.as_ref().and_then(|d| d.policy),
            subset_policy: subset.and_then(|s| s.traffic_policy.as_ref()),
            dr,
            subset,
            eps,
        })
    }

    /// Endpoints of a service port (not yet filtered by subset).
    pub(super) fn endpoints(&mut self, kind: SvcKind<'a>, sp: &SvcPort) -> Vec<Ep<'a>> {
        let mut out: Vec<Ep<'a>> = Vec::new();
        match kind {
            SvcKind::Kube(svc) => {
                let mut seen = BTreeSet::new();
                for es in sorted(&self.m.endpoint_slices) {
                    if es.namespace() != svc.namespace()
                        || es.service_name() != Some(svc.name())
                        || !matches!(es.spec.address_type.as_str(), "IPv4" | "IPv6")
                    {
                        continue;
                    }
                    // The slice port carries the Service port's name and the resolved
                    // targetPort number.
                    let Some(port) = es
                        .spec
                        .ports
                        .iter()
                        .find(|p| p.name == sp.name)
                        .and_then(|p| p.port)
                        .and_then(|p| u16::try_from(p).ok())
                    else {
                        continue;
                    };
                    for e in &es.spec.endpoints {
                        if !e.is_ready() {
                            continue;
                        }
                        // Addresses of one endpoint are fungible; consumers use the first.
                        let Some(addr) = e.addresses.first().and_then(|a| a.parse().ok()) else {
                            continue;
                        };
                        if !seen.insert((addr, port)) {
                            continue;
                        }
                        let labels = e.target_ref.as_ref().and_then(|r| {
                            if r.kind != "Pod" {
                                return None;
                            }
                            let ns = if r.namespace.is_empty() {
                                es.namespace()
                            } else {
                                r.namespace.as_str()
                            };
                            self.pods.get(&(ns, r.name.as_str())).copied()
                        });
                        out.push(Ep {
                            addr,
                            port,
                            weight: 1,
                            labels,
                        });
                    }
                }
            }
            SvcKind::Entry(se) => {
                if se.spec.resolution() != "STATIC" {
                    return out; // validation warned: no DNS here
                }
                for (i, e) in se.spec.endpoints().iter().enumerate() {
                    let Ok(addr) = e.address.parse::<IpAddr>() else {
                        let msg = format!(
                            "endpoint address {} is not an IP address; not used by this gateway",
                            e.address
                        );
                        self.warn(se, format!("spec.endpoints[{i}].address"), msg);
                        continue;
                    };
                    // Istio: endpoint port by name, else targetPort, else the service port.
                    let port = e
                        .ports
                        .get(&sp.name)
                        .and_then(|p| u16::try_from(*p).ok())
                        .or((sp.target_port != 0).then_some(sp.target_port))
                        .unwrap_or(sp.number);
                    out.push(Ep {
                        addr,
                        port,
                        weight: if e.weight > 0 { e.weight as u64 } else { 1 },
                        labels: Some(&e.labels),
                    });
                }
            }
        }
        out
    }

    /// Istio's DestinationRule choice for `host` (§3.20): (1) the agent's namespace (in the root
    /// namespace only rules with `exportTo: .`), (2) the service's namespace, exported to the
    /// agent, (3) the root namespace, exported to the agent. Within a step the most specific
    /// host wins; rules with the same host merge (subsets concatenated, first policy wins).
    pub(super) fn destination_rule(&self, host: &str, svc_ns: &str) -> Option<MergedDr<'a>> {
        let agent_ns = self.input.namespace.as_str();
        let applies = |dr: &DestinationRule| -> bool {
            // A workloadSelector restricts the rule to matching workloads (here: this agent).
            match &dr.spec.workload_selector {
                None => true,
                Some(sel) => {
                    let labels: Labels = sel
                        .get("matchLabels")
                        .and_then(|m| serde_yaml::from_value(m.clone()).ok())
                        .unwrap_or_default();
                    dr.namespace() == agent_ns && labels_subset(&labels, &self.input.labels)
                }
            }
        };
        let step1: Vec<&'a DestinationRule> = self
            .drs
            .iter()
            .copied()
            .filter(|dr| {
                dr.namespace() == agent_ns
                    && (agent_ns != ROOT_NAMESPACE || dr.spec.export_to == ["."])
            })
            .collect();
        let exported_from = |ns: &str| -> Vec<&'a DestinationRule> {
            self.drs
                .iter()
                .copied()
                .filter(|dr| dr.namespace() == ns && exported_to(&dr.spec.export_to, ns, agent_ns))
                .collect()
        };
        for step in [step1, exported_from(svc_ns), exported_from(ROOT_NAMESPACE)] {
            let step: Vec<_> = step.into_iter().filter(|dr| applies(dr)).collect();
            if let Some(m) = most_specific(host, &step) {
                return Some(m);
            }
        }
        None
    }
}

/// Exact host first, else the longest wildcard covering it; merges rules for that host.
pub(super) fn most_specific<'a>(host: &str, drs: &[&'a DestinationRule]) -> Option<MergedDr<'a>> {
    let resolved = |dr: &DestinationRule| resolve_short_name(&dr.spec.host, dr.namespace());
    let exact: Vec<&'a DestinationRule> = drs
        .iter()
        .copied()
        .filter(|dr| resolved(dr) == host)
        .collect();
    let chosen = if !exact.is_empty() {
        exact
    } else {
        let best = drs
            .iter()
            .map(|dr| resolved(dr))
            .filter(|h| h.starts_with('*') && host_subset_of(host, h))
            .max_by_key(|h| h.len())?;
        drs.iter()
            .copied()
            .filter(|dr| resolved(dr) == best)
            .collect()
    };
    let mut merged = MergedDr {
        policy: None,
        subsets: Vec::new(),
        ids: Vec::new(),
        files: Vec::new(),
    };
    for dr in chosen {
        merged.ids.push(dr.id());
        merged.files.push(&dr.source.file);
        if merged.policy.is_none() {
            merged.policy = dr.spec.traffic_policy.as_ref();
        }
        for s in &dr.spec.subsets {
            if !merged.subsets.iter().any(|x| x.name == s.name) {
                merged.subsets.push(s);
            }
        }
    }
    Some(merged)
}
