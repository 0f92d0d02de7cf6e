//! Kubernetes `Service`, `EndpointSlice`, `Pod` and `Secret`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_yaml::Value;

use super::{nullable, EndpointSlice, Kind, Labels, ObjectMeta, Secret};

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
