//! Istio `VirtualService`: the resource, its TCP and TLS routes and destinations (HTTP routes
//! are in `http_route`).

use serde::Deserialize;

use super::http_route::HttpRoute;
use super::{nullable, Kind, Labels, PortSelector};

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
    pub http: Vec<Option<HttpRoute>>,
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
