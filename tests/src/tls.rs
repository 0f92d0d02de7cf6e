//! Certificates made at test time (rcgen) for the TLS tests, base64 for Secrets, PEM files and
//! TLS backends.

use std::{fs, path::Path, time::Duration};

use anyhow::{Context as _, Result};

use crate::{test_backend_bin, ChildGuard, Topology};

/// A certificate authority: a self-signed certificate that signs the leaf certificates.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: rcgen::KeyPair,
}

impl Ca {
    /// A CA with this common name.
    pub fn new(cn: &str) -> Result<Ca> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    /// An intermediate CA signed by this one (its certificate PEM goes after a leaf's in a
    /// server's chain file).
    pub fn intermediate(&self, cn: &str) -> Result<Ca> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        Ok(Ca { cert, key })
    }

    /// (certificate PEM, key PEM) for `name`.
    pub fn leaf(&self, name: &str) -> Result<(String, String)> {
        self.leaf_for(&[name])
    }

    /// (certificate PEM, key PEM) valid for all of `names` (DNS SANs).
    pub fn leaf_for(&self, names: &[&str]) -> Result<(String, String)> {
        let key = rcgen::KeyPair::generate()?;
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let cert = rcgen::CertificateParams::new(names)?.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

impl Ca {
    /// A CRL this CA signs, revoking the certificates (PEM) in `revoked`: its `nextUpdate` is
    /// `next_update_in` seconds from now (negative: already expired), its `thisUpdate` a minute
    /// ago or, for an expired one, an hour before its `nextUpdate`.
    pub fn crl(&self, revoked: &[&str], next_update_in: i64) -> Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        // rcgen takes `time` dates: the epoch plus seconds, without naming the crate.
        let at = |unix: i64| {
            rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(unix.max(0) as u64)
        };
        let next = now + next_update_in;
        let this = (now - 60).min(next - 3600);
        let mut revoked_certs = Vec::new();
        for pem in revoked {
            let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())?;
            let cert = p.parse_x509()?;
            revoked_certs.push(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(cert.raw_serial()),
                revocation_time: at(this),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let crl = rcgen::CertificateRevocationListParams {
            this_update: at(this),
            next_update: at(next),
            crl_number: rcgen::SerialNumber::from(now as u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)?;
        Ok(crl.pem()?)
    }
}

/// Standard base64, as Kubernetes Secrets carry data.
pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A `kubernetes.io/tls` Secret `name` in istio-system (where a Gateway's `credentialName` and
/// a DestinationRule's look), carrying a PEM certificate chain and key; `ca` adds `ca.crt`.
pub fn tls_secret(name: &str, (cert, key): (&str, &str), ca: Option<&str>) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(cert),
        b64(key)
    );
    if let Some(ca) = ca {
        s.push_str(&format!("  ca.crt: {}\n", b64(ca)));
    }
    s
}

/// Writes `pem` to `dir/name` (write and rename, as a secret mount does, so the agent never
/// reads half a file) and returns the path as a string.
pub fn write_pem(dir: &Path, name: &str, pem: &str) -> Result<String> {
    let p = dir.join(name);
    let tmp = dir.join(format!(".{name}.new"));
    fs::write(&tmp, pem)?;
    fs::rename(&tmp, &p)?;
    Ok(p.to_str().context("non-UTF-8 temp path")?.to_string())
}

/// `test-backend --name NAME` in backend `b`'s namespace with these extra (TLS) arguments,
/// once it says it is ready.
pub fn tls_backend(topo: &Topology, b: &str, args: &[&str]) -> Result<ChildGuard> {
    let bin = test_backend_bin()?;
    let bin = bin.to_str().context("non-UTF-8 path")?;
    let mut a = vec!["--name", b];
    a.extend_from_slice(args);
    let mut child = topo.backend(b).ns.spawn(bin, &a, true)?;
    child.wait_for_line("ready", Duration::from_secs(10))?;
    Ok(child)
}
