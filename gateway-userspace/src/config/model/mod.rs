//! The parsed resources: one Rust model per kind, whatever the apiVersion alias (Istio's v1,
//! v1beta1 and v1alpha3 are the same schema). Field names follow the YAML (camelCase).
//!
//! Numbers that validation range-checks (ports, weights) are `i64` so that a bad value reaches
//! validation and gets Istio's message instead of a serde type error. Fields this gateway does not
//! use but Istio or Kubernetes define are accepted as `serde_yaml::Value`, so that only truly
//! unknown fields produce a warning.

mod destination_rule;
mod gateway;
mod http_route;
mod kube;
mod service_entry;
mod virtual_service;

pub use destination_rule::{
    ConnectionPool, ConsistentHash, DestinationRuleSpec, HttpPool, LoadBalancer, OutlierDetection,
    PortTrafficPolicy, Subset, TcpPool, TrafficPolicy,
};
pub use gateway::{
    GatewaySpec, Server, ServerPort, ServerTls, TlsCertificate, NAT_MODE_ANNOTATION,
};
pub(crate) use http_route::GRPC_CODES;
pub use http_route::{
    CorsPolicy, Delegate, FaultAbort, FaultDelay, HeaderOperations, Headers, HttpBody,
    HttpDirectResponse, HttpFault, HttpMatch, HttpMirrorPolicy, HttpRedirect, HttpRetry,
    HttpRewrite, HttpRoute, HttpRouteDestination, Percent, RegexRewrite, StringMatch,
};
pub use kube::{
    EndpointConditions, EndpointSliceSpec, IntOrString, ObjectReference, PodInfo, SecretSpec,
    ServicePort, ServiceSpec, SliceEndpoint, SlicePort, SERVICE_NAME_LABEL,
};
pub use service_entry::{ServiceEntryPort, ServiceEntrySpec, WorkloadEntry};
pub use virtual_service::{
    Destination, L4Match, RouteDestination, TcpRoute, TlsMatch, TlsRoute, VirtualServiceSpec,
};

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use serde_yaml::Value;

pub type Labels = BTreeMap<String, String>;

// ---------------------------------------------------------------------------------------------
// Diagnostics

/// One problem that rejects the configuration. Display: `{file}: {resource}: {field}: {message}`,
/// empty parts skipped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{}", join_parts(file, resource, field, message))]
pub struct ConfigError {
    pub file: PathBuf,
    /// `VirtualService default/echo`, or empty when unknown (e.g. a YAML syntax error).
    pub resource: String,
    /// `spec.tcp[0].route[1].weight`, or empty.
    pub field: String,
    pub message: String,
    /// The document's index in `file` when the error is about one object; `None` when it is
    /// about the whole file (unreadable, YAML syntax), which then rejects all of it.
    pub doc: Option<usize>,
}

/// Something accepted but worth telling the operator (unknown field, ignored setting, a route
/// that leads nowhere). Same shape and display as [`ConfigError`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Warning {
    pub file: PathBuf,
    pub resource: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&join_parts(
            &self.file,
            &self.resource,
            &self.field,
            &self.message,
        ))
    }
}

fn join_parts(file: &std::path::Path, resource: &str, field: &str, message: &str) -> String {
    let file = file.display().to_string();
    [file.as_str(), resource, field, message]
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(": ")
}

// ---------------------------------------------------------------------------------------------
// Resources

/// Where a resource was read from: the file and the 0-based position of its document in it
/// (empty documents count, so the index is what an editor shows between `---` separators).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    pub file: PathBuf,
    pub index: usize,
}

/// Gives a model its Kubernetes kind, for messages and duplicate detection.
pub trait Kind {
    const KIND: &'static str;
}

/// A parsed resource: metadata plus the kind-specific body.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource<S> {
    pub source: Source,
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: S,
}

impl<S: Kind> Resource<S> {
    /// `VirtualService default/echo`: how messages name the resource.
    pub fn id(&self) -> String {
        format!(
            "{} {}/{}",
            S::KIND,
            self.metadata.namespace,
            self.metadata.name
        )
    }

    /// `default/echo`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    pub fn namespace(&self) -> &str {
        &self.metadata.namespace
    }
}

pub type Gateway = Resource<GatewaySpec>;
pub type VirtualService = Resource<VirtualServiceSpec>;
pub type DestinationRule = Resource<DestinationRuleSpec>;
pub type ServiceEntry = Resource<ServiceEntrySpec>;
pub type Service = Resource<ServiceSpec>;
pub type EndpointSlice = Resource<EndpointSliceSpec>;
pub type Pod = Resource<PodInfo>;
pub type Secret = Resource<SecretSpec>;

/// Everything loaded, per kind, in load order (files sorted by path, documents in file order).
/// Load order carries no meaning: compile orders by creation time and name, as Istio does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifests {
    pub gateways: Vec<Gateway>,
    pub virtual_services: Vec<VirtualService>,
    pub destination_rules: Vec<DestinationRule>,
    pub service_entries: Vec<ServiceEntry>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub pods: Vec<Pod>,
    /// `credentialName` material for HTTPS servers.
    pub secrets: Vec<Secret>,
    /// Found while loading (unknown kinds and fields); `validate` reports them again.
    pub warnings: Vec<Warning>,
}

impl Manifests {
    pub fn extend(&mut self, other: Manifests) {
        self.gateways.extend(other.gateways);
        self.virtual_services.extend(other.virtual_services);
        self.destination_rules.extend(other.destination_rules);
        self.service_entries.extend(other.service_entries);
        self.services.extend(other.services);
        self.endpoint_slices.extend(other.endpoint_slices);
        self.pods.extend(other.pods);
        self.secrets.extend(other.secrets);
        self.warnings.extend(other.warnings);
    }

    /// Drops the spare capacity of every list: the admitted set is kept until the next load.
    pub fn shrink_to_fit(&mut self) {
        self.gateways.shrink_to_fit();
        self.virtual_services.shrink_to_fit();
        self.destination_rules.shrink_to_fit();
        self.service_entries.shrink_to_fit();
        self.services.shrink_to_fit();
        self.endpoint_slices.shrink_to_fit();
        self.pods.shrink_to_fit();
        self.secrets.shrink_to_fit();
        self.warnings.shrink_to_fit();
    }

    pub fn is_empty(&self) -> bool {
        self.gateways.is_empty()
            && self.virtual_services.is_empty()
            && self.destination_rules.is_empty()
            && self.service_entries.is_empty()
            && self.services.is_empty()
            && self.endpoint_slices.is_empty()
            && self.pods.is_empty()
            && self.secrets.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// Treats an explicit YAML `null` like an absent field (kubectl output has `labels: null` etc.).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default + Shrink,
{
    let mut v = Option::<T>::deserialize(d)?.unwrap_or_default();
    v.shrink();
    Ok(v)
}

/// [`nullable`] for a generic spec.
pub(crate) fn nullable_spec<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Gives back the spare capacity a deserialised value holds. serde grows a list element by
/// element (a `Vec` of one route keeps room for four), which for 10,000 VirtualServices was
/// half of the parsed model's memory, kept for as long as the objects serve.
pub(crate) trait Shrink {
    fn shrink(&mut self) {}
}

impl<T> Shrink for Vec<T> {
    fn shrink(&mut self) {
        self.shrink_to_fit();
    }
}

impl Shrink for String {
    fn shrink(&mut self) {
        self.shrink_to_fit();
    }
}

impl<K, V> Shrink for BTreeMap<K, V> {}
impl Shrink for ObjectMeta {}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// "default" when absent (filled in by the loader).
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: Labels,
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: Labels,
    /// RFC 3339; orders resources like Istio does. Absent sorts first (as a zero time).
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    // Set by the API server; accepted so `kubectl get -o yaml` output loads without warnings.
    #[serde(default)]
    pub uid: Option<Accepted>,
    #[serde(default)]
    pub resource_version: Option<Accepted>,
    #[serde(default)]
    pub generation: Option<Accepted>,
    #[serde(default)]
    pub generate_name: Option<Accepted>,
    #[serde(default)]
    pub managed_fields: Option<Accepted>,
    #[serde(default)]
    pub owner_references: Option<Accepted>,
    #[serde(default)]
    pub finalizers: Option<Accepted>,
    #[serde(default)]
    pub deletion_timestamp: Option<Accepted>,
    #[serde(default)]
    pub deletion_grace_period_seconds: Option<Accepted>,
    #[serde(default)]
    pub self_link: Option<Accepted>,
}

/// A field the API server sets that the gateway accepts and never reads: parsed (so it is not
/// an unknown field) and dropped, one byte instead of a YAML tree per object.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Accepted;

impl<'de> Deserialize<'de> for Accepted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through deserialize_any, not deserialize_ignored_any: serde_ignored would report
        // the latter as an unknown field.
        Value::deserialize(d)?;
        Ok(Accepted)
    }
}

/// `{number: N}` (Istio PortSelector).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSelector {
    #[serde(default)]
    pub number: i64,
}

// ---------------------------------------------------------------------------------------------
// Protocols

/// A port's protocol name, parsed case-insensitively as Istio's `protocol.Parse` does. Names
/// Istio does not know parse as `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Http2,
    HttpProxy,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Mongo,
    Redis,
    Mysql,
    Udp,
    Unknown,
}

impl Protocol {
    pub fn parse(s: &str) -> Protocol {
        match s.to_ascii_uppercase().as_str() {
            "HTTP" => Protocol::Http,
            "HTTP2" => Protocol::Http2,
            "HTTP_PROXY" => Protocol::HttpProxy,
            "GRPC" => Protocol::Grpc,
            "GRPC-WEB" => Protocol::GrpcWeb,
            "HTTPS" => Protocol::Https,
            "TLS" => Protocol::Tls,
            "TCP" => Protocol::Tcp,
            "MONGO" => Protocol::Mongo,
            "REDIS" => Protocol::Redis,
            "MYSQL" => Protocol::Mysql,
            "UDP" => Protocol::Udp,
            _ => Protocol::Unknown,
        }
    }

    /// The HTTP family a Gateway server terminates (`HTTP_PROXY` is a service protocol only).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp | Protocol::Mongo | Protocol::Redis | Protocol::Mysql
        )
    }

    /// Spoken to upstreams over HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// Server protocols the gateway accepts: Istio's list plus UDP (our extension; Istio parses
    /// it too but has no UDP listener at the gateway).
    pub fn is_server_protocol(self) -> bool {
        self.is_http() || self.is_tls() || self.is_tcp() || self == Protocol::Udp
    }

    /// Istio `protocol.Parse` knows it (service ports).
    pub fn is_known(self) -> bool {
        self != Protocol::Unknown
    }
}

// ---------------------------------------------------------------------------------------------
// Whole documents, as they appear in YAML (the loader turns them into `Resource`s).

#[derive(Debug, Default, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "S: Deserialize<'de> + Default")
)]
pub(crate) struct SpecDoc<S> {
    #[serde(default)]
    #[allow(dead_code)] // checked on the untyped value before this parse
    pub api_version: String,
    #[serde(default)]
    #[allow(dead_code)]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable_spec")]
    pub spec: S,
    /// Written by controllers; ignored.
    #[serde(default)]
    #[allow(dead_code)]
    pub status: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EndpointSliceDoc {
    #[serde(default)]
    #[allow(dead_code)]
    pub api_version: String,
    #[serde(default)]
    #[allow(dead_code)]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub address_type: String,
    #[serde(default, deserialize_with = "nullable")]
    pub endpoints: Vec<SliceEndpoint>,
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<SlicePort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodDoc {
    #[serde(default)]
    #[allow(dead_code)]
    pub api_version: String,
    #[serde(default)]
    #[allow(dead_code)]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: ObjectMeta,
    /// Only `status.podIP` is read; the rest of the Pod is none of our business.
    #[serde(default)]
    #[allow(dead_code)]
    pub spec: Option<Value>,
    #[serde(default)]
    pub status: Option<Value>,
}
