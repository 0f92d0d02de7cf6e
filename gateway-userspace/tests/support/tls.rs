//! Certificates made with rcgen, and rustls configs for clients and servers that use them.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;

/// A certificate authority: a self-signed certificate that may sign certificates and CRLs.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

/// A certificate and key in PEM, and the certificate's DER.
pub struct Leaf {
    pub pem: String,
    pub key: String,
    pub der: Vec<u8>,
}

/// What a leaf certificate is for (its extended key usage).
#[derive(Clone, Copy)]
pub enum Usage {
    Server,
    Client,
}

impl Ca {
    /// A CA with this common name.
    pub fn new(cn: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (ECDSA P-256, random serial).
    pub fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, Usage::Server, None, None)
    }

    /// A client certificate for `names` (ECDSA P-256, random serial).
    pub fn client(&self, names: &[&str]) -> Leaf {
        self.leaf(names, Usage::Client, None, None)
    }

    /// A leaf with common name `names[0]` and these subject alternative names (an IP address,
    /// a URI when it has `://`, else a DNS name); the serial is random unless given, the key
    /// ECDSA P-256 unless given.
    pub fn leaf(
        &self,
        names: &[&str],
        usage: Usage,
        serial: Option<u64>,
        key: Option<KeyPair>,
    ) -> Leaf {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        for n in names {
            p.subject_alt_names
                .push(if let Ok(ip) = n.parse::<IpAddr>() {
                    SanType::IpAddress(ip)
                } else if n.contains("://") {
                    SanType::URI(n.to_string().try_into().unwrap())
                } else {
                    SanType::DnsName(n.to_string().try_into().unwrap())
                });
        }
        p.distinguished_name.push(DnType::CommonName, names[0]);
        p.serial_number = serial.map(SerialNumber::from);
        p.extended_key_usages = vec![match usage {
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        let key = key.unwrap_or_else(|| KeyPair::generate().unwrap());
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            pem: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A CRL revoking these serials.
    pub fn crl(&self, revoked: &[u64]) -> String {
        // Fixed dates: the CRL is current (rustls does not enforce nextUpdate by default).
        CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2020, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap()
        .pem()
        .unwrap()
    }

    /// A root store holding only this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem().as_bytes()).unwrap())
            .unwrap();
        roots
    }

    /// A client trusting only this CA, with rustls' default versions, no ALPN and no
    /// certificate of its own.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::new(client_config(
            self,
            rustls::crypto::ring::default_provider(),
            rustls::DEFAULT_VERSIONS,
            None,
            &[],
        ))
    }
}

/// A client trusting only `ca`, verifying with `provider`, offering `versions` and `alpn`, and
/// presenting `cert` when given.
pub fn client_config(
    ca: &Ca,
    provider: CryptoProvider,
    versions: &[&'static SupportedProtocolVersion],
    cert: Option<&Leaf>,
    alpn: &[&[u8]],
) -> ClientConfig {
    let b = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca.roots());
    let mut cfg = match cert {
        Some(l) => b
            .with_client_auth_cert(
                vec![CertificateDer::from(l.der.clone())],
                PrivateKeyDer::from_pem_slice(l.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}

/// A server presenting `leaf`, asking no client certificate.
pub fn server_config(leaf: &Leaf) -> Arc<ServerConfig> {
    let cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der.clone())],
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
            )
            .unwrap();
    Arc::new(cfg)
}

/// An RSA 2048 key pair (ring signs with RSA but cannot generate keys).
pub fn rsa_key() -> KeyPair {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl genpkey");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8(out.stdout).unwrap();
    KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap()
}

/// Standard base64, as Kubernetes Secrets carry data.
pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
