//! Istio `Gateway`: servers, ports and their TLS settings.

use serde::Deserialize;
use serde_yaml::Value;

use super::{nullable, Kind, Labels};

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

impl ServerPort {
    /// The server's protocol, by Istio's name (case-insensitive).
    pub fn protocol(&self) -> super::Protocol {
        super::Protocol::parse(&self.protocol)
    }
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

#[cfg(test)]
mod protocol_tests {
    use crate::config::model::Protocol;

    #[test]
    fn server_protocols_parse_case_insensitively_into_their_classes() {
        // (name, HTTP family, carried in TLS)
        let table = [
            ("HTTP", true, false),
            ("HTTPS", false, true),
            ("HTTP2", true, false),
            ("GRPC", true, false),
            ("GRPC-WEB", true, false),
            ("TCP", false, false),
            ("TLS", false, true),
            ("MONGO", false, false),
            ("REDIS", false, false),
            ("MYSQL", false, false),
            ("UDP", false, false),
        ];
        for (name, http, tls) in table {
            for n in [name.to_string(), name.to_ascii_lowercase()] {
                let p = Protocol::parse(&n);
                assert!(p.is_server_protocol(), "{n}");
                assert_eq!(p.is_http(), http, "{n}");
                assert_eq!(p.is_tls(), tls, "{n}");
                assert_eq!(p == Protocol::Udp, name == "UDP", "{n}");
            }
        }
        assert_eq!(Protocol::parse("Grpc-Web"), Protocol::GrpcWeb);
        assert_eq!(Protocol::parse("QUIC"), Protocol::Unknown);
        assert_eq!(Protocol::parse(""), Protocol::Unknown);
    }
}
