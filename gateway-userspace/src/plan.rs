//! The compiled, immutable plan: what the data plane must do, with nothing left to resolve.
//!
//! `config::compile` produces it from validated manifests; `dataplane` (XDP maps) and `l4proxy`
//! (the userspace fallback) apply it. It is plain data, so it can be diffed, dumped and tested.

use std::net::IpAddr;

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
    /// Of the service's VIP's family (the compiler keeps each family's endpoints apart).
    pub addr: IpAddr,
    pub port: u16,
    /// Relative share in the Maglev ring (> 0).
    pub weight: u32,
}

/// One L4 service on the fast path: packets to (vip, port, proto) are balanced over `backends`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct L4Service {
    /// IPv4 or IPv6.
    pub vip: IpAddr,
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
    pub vip: IpAddr,
    pub port: u16,
    pub origin: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Sorted by (vip, port, proto); at most one per key.
    pub l4: Vec<L4Service>,
    /// Sorted by (vip, port).
    pub local: Vec<LocalPort>,
    /// What the agent's own HTTP listeners serve (see [`http`]).
    pub http: http::HttpPlan,
    /// TLS connections the agent proxies as byte streams (see [`stream`]).
    #[serde(skip_serializing_if = "stream::StreamPlan::is_empty")]
    pub streams: stream::StreamPlan,
    /// The destination of each L4 service (by [`l4_name`]), for Istio's labels on the XDP
    /// path's `istio_tcp_*` series.
    #[serde(skip)]
    pub l4_dests: std::collections::BTreeMap<String, L4Dest>,
}

/// An L4 service's destination as Istio names it: the cluster of its tcp route's first
/// destination (`outbound|port|subset|host`) and that service's namespace. A route split over
/// several destinations is labelled by the first: the program does not know which one a
/// backend came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L4Dest {
    pub cluster: String,
    pub namespace: String,
}

/// An L4 service's name in the data plane's counters: `vip:port/tcp` or `/udp`.
pub fn l4_name(vip: IpAddr, port: u16, proto: Proto) -> String {
    let p = match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    format!("{}/{p}", std::net::SocketAddr::new(vip, port))
}

impl Plan {
    /// Drops the spare capacity the compiler's pushes left: a plan serves until the next
    /// config, and a virtual host of one route kept room for four (three quarters of a
    /// 10,000-route plan's memory).
    pub fn shrink_to_fit(&mut self) {
        for l in &mut self.http.listeners {
            l.vhosts.shrink_to_fit();
            let chains = l.tls.iter_mut().map(|t| &mut t.vhosts);
            for vhosts in std::iter::once(&mut l.vhosts).chain(chains) {
                vhosts.shrink_to_fit();
                for vh in vhosts.iter_mut() {
                    vh.routes.shrink_to_fit();
                    for r in &mut vh.routes {
                        // Not yet shared: the compiler hands out one Arc per route.
                        if let Some(r) = std::sync::Arc::get_mut(r) {
                            if let http::Action::Forward(f) = &mut r.action {
                                f.clusters.shrink_to_fit();
                            }
                        }
                    }
                }
            }
        }
    }
}

pub mod stream {
    //! TLS servers proxied as byte streams by the agent (GWBUILD
    //! `createGatewayTCPFilterChainOpts`): PASSTHROUGH servers route the raw connection by the
    //! ClientHello's SNI with the VirtualService `tls` routes; `TLS` servers with SIMPLE, MUTUAL
    //! or OPTIONAL_MUTUAL terminate TLS and forward the plain stream by the `tcp` routes. They
    //! share their (bind, port) with any HTTPS servers there: one socket, chains chosen per
    //! connection as Envoy's filter-chain match does.

    use std::net::Ipv4Addr;

    use serde::Serialize;

    use super::http::{Cluster, TlsSettings};

    #[derive(Clone, Debug, Default, PartialEq, Serialize)]
    pub struct StreamPlan {
        /// Sorted by (bind, port).
        pub listeners: Vec<StreamListener>,
        /// Sorted by name. A destination naming a cluster that is not here closes the
        /// connection (Envoy: cluster not found).
        pub clusters: Vec<Cluster>,
    }

    impl StreamPlan {
        pub fn is_empty(&self) -> bool {
            self.listeners.is_empty()
        }
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct StreamListener {
        pub bind: Ipv4Addr,
        pub port: u16,
        /// In Istio's order; the first of equally good matches wins.
        pub chains: Vec<StreamChain>,
        /// A `TCP` server whose route originates TLS: one chain, taken without reading a
        /// ClientHello (the client speaks plain TCP, maybe server-first).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        pub plain: bool,
    }

    /// One filter chain: which connections it takes, and where they go.
    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct StreamChain {
        /// Lower-cased exact names and `*.suffix` wildcards; empty: any SNI, and no SNI.
        pub server_names: Vec<String>,
        /// `destinationSubnets` of the `tls` match, tested against the address the client
        /// connected to (as for `tcp` routes); empty: any.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub destination_subnets: Vec<String>,
        /// ALPN values the client must offer one of (AUTO_PASSTHROUGH); empty: any.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub alpn: Vec<String>,
        /// Some: terminate TLS with these settings, then forward the plain stream (a `TLS`
        /// server with `tcp` routes). None: pass the TLS bytes through untouched.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub terminate: Option<TlsSettings>,
        /// One entry takes every connection; several are chosen by weight per connection.
        pub routes: Vec<StreamRoute>,
        /// `Gateway default/gw server tls:443 -> VirtualService default/x tls[0].match[1]`.
        pub origin: String,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct StreamRoute {
        pub cluster: String,
        pub weight: u32,
    }
}

pub mod http {
    //! The L7 part of the plan: HTTP listeners with their route tables, and the clusters the
    //! routes point at. Plain data (patterns as strings); `l7::router` compiles it into the
    //! lookup structure once per apply.

    use std::net::Ipv4Addr;

    use serde::Serialize;

    #[derive(Clone, Debug, Default, PartialEq, Serialize)]
    pub struct HttpPlan {
        /// Sorted by (bind, port).
        pub listeners: Vec<Listener>,
        /// Sorted by name. A route naming a cluster that is not here gets 503 (Envoy NC).
        pub clusters: Vec<Cluster>,
    }

    /// One socket: every HTTP-family server on (bind, port) shares its route table.
    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct Listener {
        /// 0.0.0.0 unless the servers set `bind`.
        pub bind: Ipv4Addr,
        pub port: u16,
        /// Exact domains, `*.suffix` wildcards and `*`, lower-cased; at most one per domain.
        pub vhosts: Vec<VirtualHost>,
        pub origin: String,
        /// TLS-terminating HTTPS servers on this port, selected by SNI, each with its own route
        /// table (§3.7); `vhosts` is then empty. Empty: a plain-text listener.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub tls: Vec<TlsChain>,
    }

    /// One HTTPS server: a filter chain keyed by SNI.
    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct TlsChain {
        /// Server hosts without namespace, lower-cased; empty when a host is `*` (any SNI, and
        /// clients without SNI).
        pub server_names: Vec<String>,
        pub settings: TlsSettings,
        pub vhosts: Vec<VirtualHost>,
        pub origin: String,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub enum TlsMode {
        Simple,
        Mutual,
        OptionalMutual,
    }

    /// Downstream TLS of one HTTPS server.
    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct TlsSettings {
        pub mode: TlsMode,
        /// One, or several (`credentialNames`, `tlsCertificates`: RSA and ECDSA) picked by
        /// the client's signature schemes.
        pub certificates: Vec<ServerCertificate>,
        /// Client CA bundle (MUTUAL, OPTIONAL_MUTUAL).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub ca_certificates: Option<Pem>,
        /// `caCrl` (or the credential's `ca.crl`): revoked client certificates are refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub ca_crl: Option<Pem>,
        /// Checks on a verified client certificate beyond its chain (MUTUAL, OPTIONAL_MUTUAL).
        #[serde(skip_serializing_if = "ClientPins::is_empty")]
        pub pins: ClientPins,
        /// 12 or 13 (rustls has nothing older); defaults 12 and 13.
        pub min_version: u8,
        pub max_version: u8,
        /// `cipherSuites` as IANA names (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`), in order: the
        /// only TLS 1.2 suites offered. Empty: rustls' defaults. TLS 1.3 suites are not
        /// configurable, as in Envoy.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub cipher_suites: Vec<String>,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct ServerCertificate {
        pub certificate: Pem,
        pub private_key: Pem,
    }

    /// `subjectAltNames`, `verifyCertificateSpki`, `verifyCertificateHash` as written; parsed
    /// when the listener is built, so a malformed pin rejects the config like a bad file.
    #[derive(Clone, Debug, Default, PartialEq, Serialize)]
    pub struct ClientPins {
        pub subject_alt_names: Vec<String>,
        pub spki: Vec<String>,
        pub hash: Vec<String>,
        /// `Gateway istio-system/gw spec.servers[1].tls`: named in errors.
        pub origin: String,
    }

    impl ClientPins {
        pub fn is_empty(&self) -> bool {
            self.subject_alt_names.is_empty() && self.spki.is_empty() && self.hash.is_empty()
        }
    }

    /// PEM material: a file (read when the listener is built, so a rotated file is picked up
    /// on the next reload) or the data of a `kind: Secret`, never shown in dumps.
    #[derive(Clone, Debug, PartialEq, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Pem {
        File {
            path: std::path::PathBuf,
            /// `Gateway default/gw spec.servers[1].tls.serverCertificate`: named in errors.
            origin: String,
        },
        Secret {
            /// `Secret istio-system/name key tls.crt`.
            origin: String,
            #[serde(skip)]
            data: Vec<u8>,
        },
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct VirtualHost {
        pub domain: String,
        /// `tls.httpsRedirect`: every plain-text request is answered 301 to https.
        pub require_tls: bool,
        /// In Istio's order: VirtualServices by creation time, catch-alls moved last. Shared:
        /// a VirtualService's routes serve every host it names, and the L7 table points at
        /// the same routes instead of copying them.
        pub routes: Vec<std::sync::Arc<Route>>,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct Route {
        /// `VirtualService default/x http[0].match[1]`.
        pub origin: String,
        /// The rule's `name` (`.match name`), Envoy's route name in the access log.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub name: Option<String>,
        #[serde(rename = "match")]
        pub matcher: RouteMatch,
        pub action: Action,
        pub request_headers: HeaderOps,
        pub response_headers: HeaderOps,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub fault: Option<Fault>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub mirrors: Vec<Mirror>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub cors: Option<Cors>,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum StrMatch {
        Exact(String),
        Prefix(String),
        /// RE2 syntax, full match.
        Regex(String),
        Present,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum PathMatch {
        Exact(String),
        /// Plain string prefix (not segment-aware); a rule without uri match is `Prefix("/")`.
        Prefix(String),
        Regex(String),
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct HeaderMatch {
        /// Lower-cased.
        pub name: String,
        pub value: StrMatch,
        /// `withoutHeaders`: absent, or (for a value matcher) not matching.
        pub invert: bool,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct QueryMatch {
        pub name: String,
        pub value: StrMatch,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct RouteMatch {
        pub path: PathMatch,
        /// ASCII case-insensitive exact/prefix path (never regex).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        pub ignore_case: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub method: Option<StrMatch>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub scheme: Option<StrMatch>,
        /// Against the Host verbatim, port included.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub authority: Option<StrMatch>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub headers: Vec<HeaderMatch>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub query: Vec<QueryMatch>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize)]
    pub struct HeaderOps {
        /// Applied first.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub remove: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub set: Vec<(String, String)>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub add: Vec<(String, String)>,
    }

    impl HeaderOps {
        pub fn is_empty(&self) -> bool {
            self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
        }
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Action {
        Forward(Forward),
        Redirect(Redirect),
        Direct {
            status: u16,
            #[serde(skip_serializing_if = "Option::is_none")]
            body: Option<String>,
        },
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct WeightedCluster {
        pub cluster: String,
        pub weight: u32,
        pub request_headers: HeaderOps,
        pub response_headers: HeaderOps,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Rewrite {
        /// Envoy `prefix_rewrite`: the matched prefix (the whole path for exact/regex
        /// matches) is replaced.
        Prefix(String),
        /// Every match of `pattern` in the path is replaced by `substitution` (`${1}` groups).
        Regex {
            pattern: String,
            substitution: String,
        },
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct Forward {
        /// One entry takes everything; several are chosen by weight per request.
        pub clusters: Vec<WeightedCluster>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub rewrite: Option<Rewrite>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub authority: Option<String>,
        /// None: no timeout (Istio's default).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub timeout_ms: Option<u64>,
        /// None: `attempts: 0`, no retries.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub retry: Option<RetryPolicy>,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct RetryPolicy {
        pub num_retries: u32,
        /// Envoy conditions (`connect-failure`, `5xx`, ...).
        pub retry_on: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub retriable_status_codes: Vec<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub per_try_timeout_ms: Option<u64>,
        pub backoff_base_ms: u64,
        /// Avoid already tried endpoints (off with consistent hashing).
        pub previous_hosts: bool,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct Redirect {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub scheme: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub authority: Option<String>,
        /// Explicit or derived (listener) port; None keeps the request's.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub port: Option<u16>,
        /// `derivePort: FROM_PROTOCOL_DEFAULT`: drop any port.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        pub strip_port: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub path: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub prefix_rewrite: Option<String>,
        pub code: u16,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct Fault {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub delay: Option<FaultDelay>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub abort: Option<FaultAbort>,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct FaultDelay {
        pub delay_ms: u64,
        /// Parts per million (percentage × 10,000).
        pub ppm: u32,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct FaultAbort {
        /// HTTP status, or None with `grpc_status`.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub http_status: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub grpc_status: Option<u32>,
        pub ppm: u32,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct Mirror {
        pub cluster: String,
        pub ppm: u32,
        /// Append `-shadow` to the mirrored request's Host (Istio < 1.28 profile).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        pub shadow_host: bool,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct Cors {
        pub allow_origins: Vec<StrMatch>,
        pub allow_methods: String,
        pub allow_headers: String,
        pub expose_headers: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub max_age: Option<String>,
        pub allow_credentials: bool,
        /// `unmatchedPreflights: IGNORE`: answer disallowed preflights locally.
        pub ignore_unmatched_preflights: bool,
    }

    /// `outbound|<port>|<subset>|<host>`: a service port (and subset) with its policy.
    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct Cluster {
        pub name: String,
        /// The destination service's namespace (metrics' `destination_service_namespace`).
        #[serde(skip_serializing_if = "String::is_empty")]
        pub namespace: String,
        /// HTTP/2 (h2c) upstream: service port protocol HTTP2, GRPC or GRPC-WEB.
        pub http2: bool,
        /// Empty: 503 `no healthy upstream`.
        pub endpoints: Vec<Endpoint>,
        pub lb: Lb,
        pub connect_timeout_ms: u64,
        pub limits: Limits,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub outlier: Option<Outlier>,
        /// DestinationRule `trafficPolicy.tls` SIMPLE/MUTUAL: TLS to the endpoints. None:
        /// plain text (DISABLE, or no tls).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub tls: Option<UpstreamTls>,
    }

    /// Upstream TLS origination (Envoy's `UpstreamTlsContext`). Only paths and Secret names are
    /// ever shown (`Pem` skips the data).
    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct UpstreamTls {
        /// `SIMPLE` or `MUTUAL`.
        pub mode: String,
        /// `tls.sni`: sent as SNI, and then (without `subjectAltNames`) only the chain is
        /// verified, as Envoy does. None: Istio's auto-SNI and auto-SAN: an HTTP request's
        /// `Host` (after rewrites) is the SNI and the name the certificate must be valid for;
        /// a stream sends no SNI and the chain alone is verified.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub sni: Option<String>,
        /// Where `sni` falls back to when a request has no usable `Host`: the destination.
        pub destination: String,
        /// The trust anchors; None: the system roots (webpki-roots), unless `insecure`.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub ca_certificates: Option<Pem>,
        /// `caCrl` (or the credential's `ca.crl`): a revoked upstream certificate fails the
        /// handshake like an untrusted one.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub ca_crl: Option<Pem>,
        /// MUTUAL: the client certificate chain and its key.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub client_certificate: Option<Pem>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub private_key: Option<Pem>,
        /// Names the upstream certificate must be valid for, one of (instead of the SNI).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub subject_alt_names: Vec<String>,
        /// `insecureSkipVerify`: no chain or name check.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        pub insecure_skip_verify: bool,
        /// ALPN offered: `h2` for HTTP2/GRPC ports, else none (Istio's `ALPNH2Only`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub alpn: Vec<String>,
        /// `DestinationRule default/x spec.trafficPolicy.tls`: named in errors.
        pub origin: String,
        /// Some: the settings cannot be used (a missing `credentialName` Secret): every
        /// connection fails with this TLS error.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub error: Option<String>,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
    pub struct Endpoint {
        pub addr: std::net::IpAddr,
        pub port: u16,
        pub weight: u32,
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Lb {
        LeastRequest,
        RoundRobin,
        Random,
        HashHeader(String),
        HashCookie {
            name: String,
            path: String,
            /// Some: a cookie is generated when the request has none.
            ttl_s: Option<u64>,
        },
        HashSourceIp,
        HashQuery(String),
    }

    impl Lb {
        pub fn is_hash(&self) -> bool {
            !matches!(self, Lb::LeastRequest | Lb::RoundRobin | Lb::Random)
        }
    }

    /// Circuit breakers per cluster; `u32::MAX` = unlimited (Istio's default).
    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct Limits {
        pub max_connections: u32,
        pub max_pending_requests: u32,
        pub max_requests: u32,
        pub max_retries: u32,
        /// 0 = unlimited.
        pub max_requests_per_connection: u32,
    }

    impl Default for Limits {
        fn default() -> Self {
            Limits {
                max_connections: u32::MAX,
                max_pending_requests: u32::MAX,
                max_requests: u32::MAX,
                max_retries: u32::MAX,
                max_requests_per_connection: 0,
            }
        }
    }

    #[derive(Clone, Debug, PartialEq, Serialize)]
    pub struct Outlier {
        /// 0 = disabled.
        pub consecutive_5xx: u32,
        pub consecutive_gateway_errors: u32,
        pub interval_ms: u64,
        pub base_ejection_ms: u64,
        pub max_ejection_percent: u32,
    }
}
