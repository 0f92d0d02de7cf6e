//! A rotated certificate is picked up without a restart, also when its files live outside the
//! config directory (as a mounted Secret volume does): the agent watches the files the plan
//! reads, new handshakes get the new certificate, and a half-written rotation (the key replaced
//! before the certificate) never leaves the listener without a working pair.

use std::{fs, time::Duration};

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    manifests::GATEWAY_HEAD, tls::Ca, topology::VIP, wait_until, Agent, Opts, Topology,
};

#[test]
fn certificate_files_rotate_without_restart() -> Result<()> {
    let topo = Topology::new("rot", 1, Opts::http_backends())?;
    let certs = tempfile::tempdir()?;
    let (crt, key) = (certs.path().join("gw.crt"), certs.path().join("gw.key"));
    let (old_ca, new_ca) = (Ca::new("old CA")?, Ca::new("new CA")?);
    let write = |pair: &(String, String)| -> Result<()> {
        // Each file replaced atomically, the key first: for a moment the pair does not match.
        for (path, pem) in [(&key, &pair.1), (&crt, &pair.0)] {
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, pem)?;
            fs::rename(&tmp, path)?;
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(())
    };
    write(&old_ca.leaf("rot.example.com")?)?;
    let ca_files = tempfile::tempdir()?;
    let ca_path = |name: &str, ca: &Ca| -> Result<String> {
        let p = ca_files.path().join(name);
        fs::write(&p, ca.cert.pem())?;
        Ok(p.to_str().context("path")?.to_string())
    };
    let (old_pem, new_pem) = (ca_path("old.pem", &old_ca)?, ca_path("new.pem", &new_ca)?);
    let gateway = format!(
        "{GATEWAY_HEAD}  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [rot.example.com]\n    tls: {{mode: SIMPLE, serverCertificate: {}, privateKey: {}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: rot, namespace: default}}\nspec:\n  hosts: [rot.example.com]\n  gateways: [gw]\n  http:\n  - directResponse: {{status: 200, body: {{string: rotated}}}}\n",
        crt.display(),
        key.display()
    );
    let _agent = Agent::start(&topo, &[("gateway.yaml", gateway)])?;
    let c = topo.http_client();
    let get = |cacert: &str| c.https_get(cacert, "rot.example.com", &VIP.to_string());
    ensure!(get(&old_pem)?.status == 200, "the first certificate");
    ensure!(
        get(&new_pem).is_err(),
        "trusted by a CA that did not sign it"
    );

    write(&new_ca.leaf("rot.example.com")?)?;
    wait_until(Duration::from_secs(20), "the rotated certificate", || {
        Ok(get(&new_pem).is_ok_and(|r| r.status == 200))
    })?;
    ensure!(get(&old_pem).is_err(), "the old certificate still served");
    Ok(())
}
