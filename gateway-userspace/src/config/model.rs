//! The parsed resources: one Rust model per kind, whatever the apiVersion alias (Istio's v1,
//! v1beta1 and v1alpha3 are the same schema). Field names follow the YAML (camelCase).
//!
//! Numbers that validation range-checks (ports, weights) are `i64` so that a bad value reaches
//! validation and gets Istio's message instead of a serde type error. Fields this gateway does not
//! use but Istio or Kubernetes define are accepted as `serde_yaml::Value`, so that only truly
//! unknown fields produce a warning.

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
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

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
    pub uid: Option<Value>,
    #[serde(default)]
    pub resource_version: Option<Value>,
    #[serde(default)]
    pub generation: Option<Value>,
    #[serde(default)]
    pub generate_name: Option<Value>,
    #[serde(default)]
    pub managed_fields: Option<Value>,
    #[serde(default)]
    pub owner_references: Option<Value>,
    #[serde(default)]
    pub finalizers: Option<Value>,
    #[serde(default)]
    pub deletion_timestamp: Option<Value>,
    #[serde(default)]
    pub deletion_grace_period_seconds: Option<Value>,
    #[serde(default)]
    pub self_link: Option<Value>,
}

/// `{number: N}` (Istio PortSelector).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSelector {
    #[serde(default)]
    pub number: i64,
}

// ---------------------------------------------------------------------------------------------
// Gateway

pub const NAT_MODE_ANNOTATION: &str = "gateway.dataplane/nat-mode";

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default, deserialize_with = "nullable")]
    pub selector: Labels,
    #[serde(default, deserialize_with = "nullable")]
    pub servers: Vec<Server>,
}

impl Kind for GatewaySpec {
    const KIND: &'static str = "Gateway";
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    #[serde(default)]
    pub port: Option<ServerPort>,
    #[serde(default, deserialize_with = "nullable")]
    pub bind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub tls: Option<ServerTls>,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Not implemented by Istio either; accepted and ignored.
    #[serde(default)]
    pub default_endpoint: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerPort {
    #[serde(default)]
    pub number: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub protocol: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Deprecated in Istio; any non-zero value is a validation error.
    #[serde(default)]
    pub target_port: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTls {
    #[serde(default)]
    pub https_redirect: bool,
    /// Absent means PASSTHROUGH (the proto enum's zero value).
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub server_certificate: String,
    #[serde(default, deserialize_with = "nullable")]
    pub private_key: String,
    #[serde(default, deserialize_with = "nullable")]
    pub ca_certificates: String,
    #[serde(default, deserialize_with = "nullable")]
    pub ca_crl: String,
    #[serde(default, deserialize_with = "nullable")]
    pub credential_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub credential_names: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ca_cert_credential_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub tls_certificates: Vec<TlsCertificate>,
    #[serde(default, deserialize_with = "nullable")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default)]
    pub min_protocol_version: Option<String>,
    #[serde(default)]
    pub max_protocol_version: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
}

impl ServerTls {
    /// The effective mode, upper-cased; PASSTHROUGH when absent (Istio's default).
    pub fn mode(&self) -> String {
        self.mode
            .as_deref()
            .map(str::to_ascii_uppercase)
            .unwrap_or_else(|| "PASSTHROUGH".to_string())
    }

    pub fn is_passthrough(&self) -> bool {
        matches!(self.mode().as_str(), "PASSTHROUGH" | "AUTO_PASSTHROUGH")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificate {
    #[serde(default, deserialize_with = "nullable")]
    pub server_certificate: String,
    #[serde(default, deserialize_with = "nullable")]
    pub private_key: String,
}

// ---------------------------------------------------------------------------------------------
// VirtualService

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    #[serde(default, deserialize_with = "nullable")]
    pub hosts: Vec<String>,
    /// Empty means `[mesh]`: the VS binds to no gateway.
    #[serde(default, deserialize_with = "nullable")]
    pub gateways: Vec<String>,
    /// `None` entries are YAML nulls (rejected by validation).
    #[serde(default, deserialize_with = "nullable")]
    pub http: Vec<Option<super::http::HttpRoute>>,
    #[serde(default, deserialize_with = "nullable")]
    pub tls: Vec<TlsRoute>,
    #[serde(default, deserialize_with = "nullable")]
    pub tcp: Vec<TcpRoute>,
    #[serde(default, deserialize_with = "nullable")]
    pub export_to: Vec<String>,
}

impl Kind for VirtualServiceSpec {
    const KIND: &'static str = "VirtualService";
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    #[serde(rename = "match", default, deserialize_with = "nullable")]
    pub matches: Vec<L4Match>,
    #[serde(default, deserialize_with = "nullable")]
    pub route: Vec<RouteDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4Match {
    #[serde(default, deserialize_with = "nullable")]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub source_labels: Labels,
    #[serde(default, deserialize_with = "nullable")]
    pub gateways: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub source_namespace: String,
    #[serde(default, deserialize_with = "nullable")]
    pub source_subnet: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsRoute {
    #[serde(rename = "match", default, deserialize_with = "nullable")]
    pub matches: Vec<TlsMatch>,
    #[serde(default, deserialize_with = "nullable")]
    pub route: Vec<RouteDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsMatch {
    #[serde(default, deserialize_with = "nullable")]
    pub sni_hosts: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub source_labels: Labels,
    #[serde(default, deserialize_with = "nullable")]
    pub gateways: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub source_namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    #[serde(default)]
    pub destination: Option<Destination>,
    /// Absent is 0, which Istio treats as "no traffic" when there are several destinations.
    #[serde(default)]
    pub weight: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    #[serde(default, deserialize_with = "nullable")]
    pub host: String,
    #[serde(default, deserialize_with = "nullable")]
    pub subset: String,
    #[serde(default)]
    pub port: Option<PortSelector>,
}

// ---------------------------------------------------------------------------------------------
// DestinationRule

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    #[serde(default, deserialize_with = "nullable")]
    pub host: String,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default, deserialize_with = "nullable")]
    pub subsets: Vec<Subset>,
    #[serde(default, deserialize_with = "nullable")]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub workload_selector: Option<Value>,
}

impl Kind for DestinationRuleSpec {
    const KIND: &'static str = "DestinationRule";
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default)]
    pub connection_pool: Option<Value>,
    #[serde(default)]
    pub outlier_detection: Option<Value>,
    #[serde(default)]
    pub tls: Option<Value>,
    #[serde(default)]
    pub port_level_settings: Option<Vec<PortTrafficPolicy>>,
    #[serde(default)]
    pub tunnel: Option<Value>,
    #[serde(default)]
    pub proxy_protocol: Option<Value>,
    #[serde(default)]
    pub retry_budget: Option<Value>,
}

impl TrafficPolicy {
    /// The port-level entry for `port`, which replaces the top-level components for that port.
    pub fn port_level(&self, port: u16) -> Option<&PortTrafficPolicy> {
        self.port_level_settings.as_ref().and_then(|pls| {
            pls.iter()
                .find(|p| p.port.as_ref().map(|s| s.number) == Some(i64::from(port)))
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    #[serde(default)]
    pub port: Option<PortSelector>,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default)]
    pub connection_pool: Option<Value>,
    #[serde(default)]
    pub outlier_detection: Option<Value>,
    #[serde(default)]
    pub tls: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    #[serde(default)]
    pub simple: Option<String>,
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHash>,
    #[serde(default)]
    pub locality_lb_setting: Option<Value>,
    #[serde(default)]
    pub warmup_duration_secs: Option<Value>,
    #[serde(default)]
    pub warmup: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHash {
    #[serde(default)]
    pub http_header_name: Option<String>,
    #[serde(default)]
    pub http_cookie: Option<Value>,
    #[serde(default)]
    pub use_source_ip: Option<bool>,
    #[serde(default)]
    pub http_query_parameter_name: Option<String>,
    #[serde(default)]
    pub ring_hash: Option<Value>,
    #[serde(default)]
    pub maglev: Option<Value>,
    #[serde(default)]
    pub minimum_ring_size: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: Labels,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

// ---------------------------------------------------------------------------------------------
// ServiceEntry

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    #[serde(default, deserialize_with = "nullable")]
    pub hosts: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub addresses: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<ServiceEntryPort>,
    #[serde(default)]
    pub location: Option<String>,
    /// Absent means NONE (the proto enum's zero value).
    #[serde(default)]
    pub resolution: Option<String>,
    /// `None` vs `Some(empty)` matters: Istio rejects endpoints together with workloadSelector.
    #[serde(default)]
    pub endpoints: Option<Vec<WorkloadEntry>>,
    #[serde(default)]
    pub workload_selector: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub export_to: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub subject_alt_names: Vec<String>,
}

impl Kind for ServiceEntrySpec {
    const KIND: &'static str = "ServiceEntry";
}

impl ServiceEntrySpec {
    /// Upper-cased; NONE when absent.
    pub fn resolution(&self) -> String {
        self.resolution
            .as_deref()
            .map(str::to_ascii_uppercase)
            .unwrap_or_else(|| "NONE".to_string())
    }

    pub fn endpoints(&self) -> &[WorkloadEntry] {
        self.endpoints.as_deref().unwrap_or_default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntryPort {
    #[serde(default)]
    pub number: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub protocol: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// 0 = unset: the endpoint port then defaults to `number`.
    #[serde(default)]
    pub target_port: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntry {
    #[serde(default, deserialize_with = "nullable")]
    pub address: String,
    /// Service port name -> endpoint port.
    #[serde(default, deserialize_with = "nullable")]
    pub ports: BTreeMap<String, i64>,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: Labels,
    #[serde(default, deserialize_with = "nullable")]
    pub network: String,
    #[serde(default, deserialize_with = "nullable")]
    pub locality: String,
    /// 0 = unset, which means 1.
    #[serde(default)]
    pub weight: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub service_account: String,
}

// ---------------------------------------------------------------------------------------------
// Kubernetes Service, EndpointSlice, Pod

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<ServicePort>,
    #[serde(default, deserialize_with = "nullable")]
    pub selector: Labels,
    #[serde(rename = "clusterIP", default)]
    pub cluster_ip: Option<String>,
    #[serde(rename = "type", default)]
    pub type_: Option<String>,
    // Accepted, no effect here.
    #[serde(rename = "clusterIPs", default)]
    pub cluster_ips: Option<Value>,
    #[serde(rename = "externalIPs", default)]
    pub external_ips: Option<Value>,
    #[serde(rename = "loadBalancerIP", default)]
    pub load_balancer_ip: Option<Value>,
    #[serde(default)]
    pub load_balancer_source_ranges: Option<Value>,
    #[serde(default)]
    pub load_balancer_class: Option<Value>,
    #[serde(default)]
    pub session_affinity: Option<Value>,
    #[serde(default)]
    pub session_affinity_config: Option<Value>,
    #[serde(default)]
    pub external_traffic_policy: Option<Value>,
    #[serde(default)]
    pub internal_traffic_policy: Option<Value>,
    #[serde(default)]
    pub ip_families: Option<Value>,
    #[serde(default)]
    pub ip_family_policy: Option<Value>,
    #[serde(default)]
    pub external_name: Option<Value>,
    #[serde(default)]
    pub publish_not_ready_addresses: Option<Value>,
    #[serde(default)]
    pub allocate_load_balancer_node_ports: Option<Value>,
    #[serde(default)]
    pub health_check_node_port: Option<Value>,
    #[serde(default)]
    pub traffic_distribution: Option<Value>,
}

impl Kind for ServiceSpec {
    const KIND: &'static str = "Service";
}

/// A Kubernetes `IntOrString` (Service `targetPort`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default)]
    pub port: i64,
    /// Absent means the same as `port`.
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    /// Absent means TCP.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub node_port: Option<Value>,
    #[serde(default)]
    pub app_protocol: Option<Value>,
}

/// The body of an EndpointSlice (top-level fields; the kind has no `spec`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointSliceSpec {
    pub address_type: String,
    pub endpoints: Vec<SliceEndpoint>,
    pub ports: Vec<SlicePort>,
}

impl Kind for EndpointSliceSpec {
    const KIND: &'static str = "EndpointSlice";
}

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl EndpointSlice {
    /// The Service this slice belongs to (same namespace), from the standard label.
    pub fn service_name(&self) -> Option<&str> {
        self.metadata
            .labels
            .get(SERVICE_NAME_LABEL)
            .map(String::as_str)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceEndpoint {
    #[serde(default, deserialize_with = "nullable")]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: Option<EndpointConditions>,
    #[serde(default)]
    pub target_ref: Option<ObjectReference>,
    #[serde(default)]
    pub node_name: Option<Value>,
    #[serde(default)]
    pub zone: Option<Value>,
    #[serde(default)]
    pub hints: Option<Value>,
    #[serde(default)]
    pub hostname: Option<Value>,
    #[serde(default)]
    pub deprecated_topology: Option<Value>,
}

impl SliceEndpoint {
    /// Kubernetes: an absent `ready` means ready.
    pub fn is_ready(&self) -> bool {
        self.conditions
            .as_ref()
            .and_then(|c| c.ready)
            .unwrap_or(true)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConditions {
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub serving: Option<bool>,
    #[serde(default)]
    pub terminating: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,
    #[serde(default)]
    pub uid: Option<Value>,
    #[serde(default)]
    pub api_version: Option<Value>,
    #[serde(default)]
    pub resource_version: Option<Value>,
    #[serde(default)]
    pub field_path: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicePort {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<Value>,
}

/// What a Pod contributes: its labels (in metadata) for subset selection of EndpointSlice
/// endpoints that reference it. Pod spec and status are otherwise not looked at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodInfo {
    pub pod_ip: Option<String>,
}

impl Kind for PodInfo {
    const KIND: &'static str = "Pod";
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
    #[serde(default, deserialize_with = "nullable")]
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

/// A Kubernetes `v1/Secret` (top-level fields): `data` values are base64, `stringData` plain.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretSpec {
    #[serde(default)]
    #[allow(dead_code)]
    pub api_version: String,
    #[serde(default)]
    #[allow(dead_code)]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: ObjectMeta,
    #[serde(default, rename = "type", deserialize_with = "nullable")]
    pub secret_type: String,
    #[serde(default, deserialize_with = "nullable")]
    pub data: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub string_data: BTreeMap<String, String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub immutable: Option<bool>,
}

impl Kind for SecretSpec {
    const KIND: &'static str = "Secret";
}

impl Secret {
    /// The decoded value of `key` (`stringData` wins, as the API server merges it over `data`);
    /// Err when `data` holds invalid base64.
    pub fn value(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        use base64::Engine as _;
        if let Some(v) = self.spec.string_data.get(key) {
            return Ok(Some(v.as_bytes().to_vec()));
        }
        match self.spec.data.get(key) {
            None => Ok(None),
            Some(v) => {
                let compact: String = v.split_whitespace().collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map(Some)
                    .map_err(|e| format!("data.{key} is not valid base64: {e}"))
            }
        }
    }
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
