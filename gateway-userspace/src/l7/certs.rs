//! The certificate inventory of the serving plan: every certificate the agent loaded (HTTPS and
//! `TLS` server certificates with their chains, client CAs, and the DestinationRules' upstream
//! CAs and client certificates), with what an operator asks about one: subject, SANs, serial,
//! validity, where it came from (file or Secret, never the key) and who uses it; and every CRL
//! they check against (issuer, this/next update, revoked serials). Built on each apply from the
//! same files the listeners and clusters read; shown by the admin's `/certs`, `gateway dump
//! secrets`, `gateway_certificate_expiration_days` and `gateway_crl_expiration_days`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::plan::http as p;
use crate::plan::stream as sp;

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A server's certificate chain (HTTPS, terminating `TLS`).
    Server,
    /// The CA a server verifies client certificates with (MUTUAL, OPTIONAL_MUTUAL).
    ClientCa,
    /// The CA an upstream's certificate must chain to (DestinationRule `caCertificates`).
    UpstreamCa,
    /// The certificate the gateway presents to an upstream (DestinationRule MUTUAL).
    UpstreamClient,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "server",
            Kind::ClientCa => "client_ca",
            Kind::UpstreamCa => "upstream_ca",
            Kind::UpstreamClient => "upstream_client",
        }
    }
}

/// One certificate of one PEM source.
#[derive(Clone, Debug)]
pub struct CertInfo {
    pub kind: Kind,
    /// The file path, or `Secret ns/name key tls.crt`.
    pub source: String,
    /// Position in its PEM (0: the leaf of a chain, or the first CA of a bundle).
    pub index: usize,
    pub subject: String,
    pub issuer: String,
    pub subject_alt_names: Vec<String>,
    /// Hex, as Envoy's `/certs` prints it.
    pub serial_number: String,
    pub not_before: i64,
    pub not_after: i64,
    /// Servers (`Gateway ns/gw spec.servers[0].tls`) and clusters (`outbound|443||host`).
    pub used_by: Vec<String>,
}

impl CertInfo {
    /// Whole days left at `now` (negative once expired), as Envoy's `days_until_expiration`.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    pub fn to_json(&self, now: i64) -> Value {
        json!({
            "kind": self.kind.as_str(),
            "source": self.source,
            "index": self.index,
            "subject": self.subject,
            "issuer": self.issuer,
            "subject_alt_names": self.subject_alt_names,
            "serial_number": self.serial_number,
            "valid_from": time(self.not_before),
            "expiration_time": time(self.not_after),
            "days_until_expiration": self.days_left(now),
            "used_by": self.used_by,
        })
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn time(unix: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    super::observe::iso8601(t)
}

/// One CRL of one PEM source (`caCrl`, a Secret's `ca.crl`).
#[derive(Clone, Debug)]
pub struct CrlInfo {
    /// `client` (a server checks its clients' certificates) or `upstream` (a cluster checks
    /// its upstream's).
    pub kind: &'static str,
    pub source: String,
    pub index: usize,
    pub issuer: String,
    /// `thisUpdate`.
    pub this_update: i64,
    /// `nextUpdate`; None: the CRL never expires.
    pub next_update: Option<i64>,
    pub revoked: usize,
    pub used_by: Vec<String>,
}

impl CrlInfo {
    /// Whole days until `nextUpdate` (negative once expired).
    pub fn days_left(&self, now: i64) -> Option<i64> {
        self.next_update.map(|n| (n - now).div_euclid(86_400))
    }

    pub fn to_json(&self, now: i64) -> Value {
        json!({
            "kind": self.kind,
            "source": self.source,
            "index": self.index,
            "issuer": self.issuer,
            "this_update": time(self.this_update),
            "next_update": self.next_update.map(time),
            "days_until_next_update": self.days_left(now),
            "expired": self.next_update.is_some_and(|n| n < now),
            "revoked_certificates": self.revoked,
            "used_by": self.used_by,
        })
    }
}

/// What the plan loaded: its certificates and its CRLs.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub certificates: Vec<CertInfo>,
    pub crls: Vec<CrlInfo>,
}

/// Issuer, thisUpdate, nextUpdate and the number of revoked serials of a DER CRL (`kind`,
/// `source`, `index` and `used_by` left empty).
pub(crate) fn parse_crl(der: &[u8]) -> Option<CrlInfo> {
    let (_, crl) = x509_parser::parse_x509_crl(der).ok()?;
    Some(CrlInfo {
        kind: "",
        source: String::new(),
        index: 0,
        issuer: crl.issuer().to_string(),
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
        revoked: crl.iter_revoked_certificates().count(),
        used_by: Vec::new(),
    })
}

fn source_of(pem: &p::Pem) -> String {
    match pem {
        p::Pem::File { path, .. } => path.display().to_string(),
        p::Pem::Secret { origin, .. } => origin.clone(),
    }
}

/// Every certificate of the plan, once per (kind, source, position), with all its users, and
/// every CRL the same way. A PEM that cannot be read here was already refused by the listener
/// or logged by the cluster; it is left out.
pub fn inventory(http: &p::HttpPlan, streams: &sp::StreamPlan) -> Inventory {
    let mut crls: BTreeMap<(&'static str, String, usize), CrlInfo> = BTreeMap::new();
    let mut add_crl = |kind: &'static str, pem: &p::Pem, user: &str| {
        let Ok((ders, _)) = super::tls::read_crls(pem) else {
            return;
        };
        let source = source_of(pem);
        for (index, der) in ders.iter().enumerate() {
            let key = (kind, source.clone(), index);
            if let Some(c) = crls.get_mut(&key) {
                if !c.used_by.iter().any(|u| u == user) {
                    c.used_by.push(user.to_string());
                }
                continue;
            }
            if let Some(c) = parse_crl(der) {
                let c = CrlInfo {
                    kind,
                    source: source.clone(),
                    index,
                    used_by: vec![user.to_string()],
                    ..c
                };
                crls.insert(key, c);
            }
        }
    };
    let mut seen: BTreeMap<(Kind, String, usize), CertInfo> = BTreeMap::new();
    let mut add = |kind: Kind, pem: &p::Pem, user: &str| {
        let Ok(ders) = super::tls::certs(pem) else {
            return;
        };
        let source = source_of(pem);
        for (index, der) in ders.iter().enumerate() {
            let key = (kind, source.clone(), index);
            if let Some(c) = seen.get_mut(&key) {
                if !c.used_by.iter().any(|u| u == user) {
                    c.used_by.push(user.to_string());
                }
                continue;
            }
            if let Some(c) = parse(kind, &source, index, der, user) {
                seen.insert(key, c);
            }
        }
    };
    let mut server = |s: &p::TlsSettings, user: &str| {
        for c in &s.certificates {
            add(Kind::Server, &c.certificate, user);
        }
        if let Some(ca) = &s.ca_certificates {
            add(Kind::ClientCa, ca, user);
            if let Some(crl) = &s.ca_crl {
                add_crl("client", crl, user);
            }
        }
    };
    for l in &http.listeners {
        for c in &l.tls {
            server(&c.settings, &c.origin);
        }
    }
    for l in &streams.listeners {
        for c in &l.chains {
            if let Some(s) = &c.terminate {
                server(s, &c.origin);
            }
        }
    }
    for c in http.clusters.iter().chain(&streams.clusters) {
        let Some(t) = &c.tls else { continue };
        if let Some(ca) = t
            .ca_certificates
            .as_ref()
            .filter(|_| !t.insecure_skip_verify)
        {
            add(Kind::UpstreamCa, ca, &c.name);
        }
        if let Some(crl) = t.ca_crl.as_ref().filter(|_| !t.insecure_skip_verify) {
            add_crl("upstream", crl, &c.name);
        }
        if let Some(cert) = &t.client_certificate {
            add(Kind::UpstreamClient, cert, &c.name);
        }
    }
    Inventory {
        certificates: seen.into_values().collect(),
        crls: crls.into_values().collect(),
    }
}

fn parse(kind: Kind, source: &str, index: usize, der: &[u8], user: &str) -> Option<CertInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(format!("DNS:{d}")),
                    GeneralName::URI(u) => Some(format!("URI:{u}")),
                    GeneralName::RFC822Name(e) => Some(format!("email:{e}")),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip)
                            .ok()
                            .map(|b| format!("IP:{}", std::net::Ipv4Addr::from(b))),
                        16 => <[u8; 16]>::try_from(*ip)
                            .ok()
                            .map(|b| format!("IP:{}", std::net::Ipv6Addr::from(b))),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let v = cert.validity();
    Some(CertInfo {
        kind,
        source: source.to_string(),
        index,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        subject_alt_names: sans,
        serial_number: cert.raw_serial_as_string().replace(':', ""),
        not_before: v.not_before.timestamp(),
        not_after: v.not_after.timestamp(),
        used_by: vec![user.to_string()],
    })
}

#[cfg(test)]
mod tests {
    use super::{inventory, p, sp, Kind};

    fn pem(data: String) -> p::Pem {
        p::Pem::Secret {
            origin: "Secret istio-system/c key tls.crt".into(),
            data: data.into_bytes(),
        }
    }

    #[test]
    fn reads_names_serial_validity_and_users() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["a.example.com".to_string()]).expect("params");
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0x12, 0x34]));
        params.not_after = rcgen::date_time_ymd(2030, 1, 2);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "a");
        let cert = params.self_signed(&key).expect("cert");
        let upstream = |name: &str| p::Cluster {
            name: name.into(),
            namespace: "default".into(),
            http2: false,
            endpoints: Vec::new(),
            lb: p::Lb::RoundRobin,
            connect_timeout_ms: 1000,
            limits: p::Limits::default(),
            outlier: None,
            tls: Some(p::UpstreamTls {
                mode: "SIMPLE".into(),
                sni: None,
                destination: "a".into(),
                ca_certificates: Some(pem(cert.pem())),
                ca_crl: None,
                client_certificate: None,
                private_key: None,
                subject_alt_names: Vec::new(),
                insecure_skip_verify: false,
                alpn: Vec::new(),
                origin: String::new(),
                error: None,
            }),
        };
        let plan = p::HttpPlan {
            clusters: vec![upstream("outbound|443||a"), upstream("outbound|443||b")],
            ..Default::default()
        };
        let inv = inventory(&plan, &sp::StreamPlan::default()).certificates;
        assert_eq!(inv.len(), 1, "one certificate, two users: {inv:?}");
        let c = &inv[0];
        assert_eq!(c.kind, Kind::UpstreamCa);
        assert_eq!(c.subject, "CN=a");
        assert_eq!(c.subject_alt_names, vec!["DNS:a.example.com"]);
        assert_eq!(c.serial_number, "1234");
        assert_eq!(c.used_by, vec!["outbound|443||a", "outbound|443||b"]);
        let j = c.to_json(c.not_after - 86_400 * 3 - 5);
        assert_eq!(j["expiration_time"], "2030-01-02T00:00:00.000Z");
        assert_eq!(j["days_until_expiration"], 3);
        assert_eq!(c.days_left(c.not_after + 1), -1);
    }
}
