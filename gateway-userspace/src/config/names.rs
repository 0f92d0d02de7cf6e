//! Name rules shared by validation and compilation: DNS labels and domains as Istio checks them
//! (`pkg/config/validation/agent`, `pkg/config/labels`), host wildcard matching (`pkg/config/host`)
//! and short-name resolution (`pilot/pkg/model`). Messages are Istio's, so they can be grepped.

use std::net::IpAddr;

use super::model::Labels;

/// Kubernetes cluster domain used to expand short names (Istio's default).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Istio's root config namespace (DestinationRule lookup falls back to it).
pub const ROOT_NAMESPACE: &str = "istio-system";

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, at most 63 characters. Istio accepts upper case
/// here (its regex does), so we do too.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum)
        && s.chars().all(|c| is_alnum(c) || c == '-')
}

/// A label that may carry a leading wildcard: `*`, `*foo`, `*-foo` or a plain label.
fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s.len() > 63 {
        return false;
    }
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    is_dns1123_label(rest)
}

fn check_dns1123_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".to_string());
    }
    Ok(())
}

fn validate_dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.parse::<i64>().is_ok() {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

pub fn validate_fqdn(fqdn: &str) -> Result<(), String> {
    check_dns1123_preconditions(fqdn)?;
    validate_dns1123_labels(fqdn)
}

/// A valid FQDN that may start with a wildcard label (`*`, `*.example.com`, `*-x.example.com`).
pub fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    check_dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(rest) => validate_dns1123_labels(rest),
        None => Ok(()),
    }
}

pub fn validate_partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        return Err(format!("partial wildcard {host:?} not allowed"));
    }
    Ok(())
}

pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

pub fn validate_ip(s: &str) -> Result<(), String> {
    if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s} is not a valid IP"))
    }
}

/// CIDR (`a.b.c.d/n`) or a plain address.
pub fn validate_ip_subnet(s: &str) -> Result<(), String> {
    if s.matches('/').count() == 1 {
        return s
            .parse::<ipnet::IpNet>()
            .map(|_| ())
            .map_err(|_| format!("{s} is not a valid CIDR block"));
    }
    validate_ip(s)
}

/// Does `subnet` (CIDR or address, already validated) contain `ip`?
pub fn subnet_contains(subnet: &str, ip: IpAddr) -> bool {
    if subnet.contains('/') {
        subnet
            .parse::<ipnet::IpNet>()
            .map(|n| n.contains(&ip))
            .unwrap_or(false)
    } else {
        subnet.parse::<IpAddr>().map(|a| a == ip).unwrap_or(false)
    }
}

/// Istio `host.Name.Matches`: the two sets overlap (either side may be a wildcard; `*` matches
/// everything). `*.example.com` does not cover `example.com`.
pub fn host_matches(a: &str, b: &str) -> bool {
    let aw = a.starts_with('*');
    let bw = b.starts_with('*');
    match (aw, bw) {
        (true, true) => {
            if a.len() < b.len() {
                b[1..].ends_with(&a[1..])
            } else {
                a[1..].ends_with(&b[1..])
            }
        }
        (true, false) => b.ends_with(&a[1..]),
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// Istio `host.Name.SubsetOf`: every name `a` matches is also matched by `b`.
pub fn host_subset_of(a: &str, b: &str) -> bool {
    let aw = a.starts_with('*');
    let bw = b.starts_with('*');
    match (aw, bw) {
        (true, true) => a.len() >= b.len() && a[1..].ends_with(&b[1..]),
        (true, false) => false,
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// Istio `ResolveShortnameToFQDN`: a name without a dot (not `*`, not an IP) becomes
/// `<name>.<namespace>.svc.cluster.local`. Names with a dot are taken as written — `reviews.ns`
/// is *not* expanded (Istio does not either; it then names no service).
pub fn resolve_short_name(host: &str, namespace: &str) -> String {
    if host.is_empty() || host == "*" || is_ip(host) || host.contains('.') {
        return host.to_string();
    }
    format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
}

/// Istio `resolveGatewayName`: `mesh` stays; `name` and `./name` become `<ns>/name`; `ns/name`
/// stays; the legacy `name.ns[.svc.cluster.local]` becomes `ns/name`.
pub fn resolve_gateway_name(gw: &str, namespace: &str) -> String {
    if gw == "mesh" {
        return gw.to_string();
    }
    match gw.split_once('/') {
        Some((".", name)) => format!("{namespace}/{name}"),
        Some(_) => gw.to_string(),
        None => match gw.split_once('.') {
            None => format!("{namespace}/{gw}"),
            Some((name, rest)) => {
                let ns = rest.split('.').next().unwrap_or(rest);
                format!("{ns}/{name}")
            }
        },
    }
}

/// `selector ⊆ labels` (an empty selector selects everything).
pub fn labels_subset(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Kubernetes label key and value rules, as Istio's `labels.Instance.Validate` applies them.
pub fn validate_labels(labels: &Labels) -> Vec<String> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        if let Err(e) = validate_label_key(k) {
            errs.push(e);
        }
        if !v.is_empty() && !is_qualified_name(v) {
            errs.push(format!("invalid tag value: {v:?}"));
        }
    }
    errs
}

/// `(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum)
        && s.chars()
            .all(|c| is_alnum(c) || c == '-' || c == '_' || c == '.')
}

fn validate_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.is_empty() || !p.split('.').all(is_dns1123_label) {
            return Err(format!("invalid tag key: {k:?}"));
        }
        if p.len() > 253 {
            return Err(format!("invalid tag key: {k:?} (DNS prefix is too long)"));
        }
    }
    if !is_qualified_name(name) {
        return Err(format!("invalid tag key: {k:?}"));
    }
    if name.len() > 63 {
        return Err(format!("invalid tag key: {k:?} (name is too long)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{
        host_matches, host_subset_of, is_dns1123_label, resolve_gateway_name, resolve_short_name,
        subnet_contains, validate_ip_subnet, validate_labels, validate_partial_wildcard,
        validate_wildcard_domain,
    };
    use crate::config::Labels;

    #[test]
    fn dns_labels() {
        assert!(is_dns1123_label("gw-1"));
        assert!(!is_dns1123_label("gw.1"));
        assert!(!is_dns1123_label("-gw"));
        assert!(!is_dns1123_label(""));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn wildcard_domains() {
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("*-api.example.com").is_ok());
        assert!(validate_wildcard_domain("a.*.com").is_err());
        assert!(validate_wildcard_domain("example.123").is_err());
        assert!(validate_wildcard_domain("istio.io.").is_ok());
        assert_eq!(
            validate_wildcard_domain("").unwrap_err(),
            "empty domain name not allowed"
        );
        assert!(validate_partial_wildcard("*-api.example.com").is_err());
        assert!(validate_partial_wildcard("*.example.com").is_ok());
    }

    #[test]
    fn matching() {
        assert!(host_matches("*", "a.com"));
        assert!(host_matches("*.a.com", "b.a.com"));
        assert!(host_matches("b.a.com", "*.a.com"));
        assert!(!host_matches("*.a.com", "a.com"));
        assert!(host_matches("*.a.com", "*.b.a.com"));
        assert!(host_subset_of("b.a.com", "*.a.com"));
        assert!(!host_subset_of("*.a.com", "b.a.com"));
        assert!(host_subset_of("*.b.a.com", "*.a.com"));
    }

    #[test]
    fn short_names() {
        assert_eq!(
            resolve_short_name("reviews", "ns"),
            "reviews.ns.svc.cluster.local"
        );
        assert_eq!(resolve_short_name("reviews.ns", "x"), "reviews.ns");
        assert_eq!(resolve_short_name("10.0.0.1", "x"), "10.0.0.1");
        assert_eq!(resolve_short_name("*", "x"), "*");
        assert_eq!(resolve_gateway_name("gw", "ns"), "ns/gw");
        assert_eq!(resolve_gateway_name("./gw", "ns"), "ns/gw");
        assert_eq!(resolve_gateway_name("o/gw", "ns"), "o/gw");
        assert_eq!(resolve_gateway_name("mesh", "ns"), "mesh");
        assert_eq!(resolve_gateway_name("gw.o.svc.cluster.local", "ns"), "o/gw");
        assert_eq!(resolve_gateway_name("gw.o", "ns"), "o/gw");
    }

    #[test]
    fn subnets() {
        assert!(validate_ip_subnet("10.0.0.0/8").is_ok());
        assert!(validate_ip_subnet("10.0.0.1").is_ok());
        assert!(validate_ip_subnet("10.0.0.0/33").is_err());
        assert!(validate_ip_subnet("nope").is_err());
        assert!(subnet_contains("10.0.0.0/8", "10.1.2.3".parse().unwrap()));
        assert!(!subnet_contains("10.0.0.1", "10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn label_rules() {
        let mut l = Labels::new();
        l.insert("app.kubernetes.io/name".into(), "x".into());
        l.insert("version".into(), "".into());
        assert!(validate_labels(&l).is_empty());
        l.insert("bad key!".into(), "v".into());
        l.insert("k".into(), "-bad".into());
        assert_eq!(validate_labels(&l).len(), 2);
    }
}
