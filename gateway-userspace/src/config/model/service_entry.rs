//! Istio `ServiceEntry` and its workload entries.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

use super::{nullable, Kind, Labels};

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
