//! End-to-end: the protocol versions an HTTPS server accepts (Gateway `tls.minProtocolVersion` /
//! `maxProtocolVersion`; TLS 1.0 and 1.1 never), checked with OpenSSL's own client from the
//! client namespace through the real `gateway` binary, which must answer with its own alert
//! (a client that gave up locally would prove nothing).

use std::{fs, process::Command};

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    manifests::GATEWAY_HEAD,
    proc::output_timeout,
    tls::{tls_secret, Ca},
    topology::{Topology, VIP},
    Agent, Opts,
};

/// HTTPS servers on 443 for `host` with these extra `tls` fields, all with one certificate
/// Secret, and a direct response behind them.
fn https_gateway(servers: &[(&str, &str)], cert: &(String, String)) -> Vec<(&'static str, String)> {
    let mut gw = GATEWAY_HEAD.to_string();
    for (host, extra) in servers {
        gw.push_str(&format!(
            "  - port: {{number: 443, name: https-{}, protocol: HTTPS}}\n    hosts: [{host}]\n    tls: {{mode: SIMPLE, credentialName: cert{extra}}}\n",
            host.split('.').next().unwrap_or(host)
        ));
    }
    let hosts: Vec<&str> = servers.iter().map(|(h, _)| *h).collect();
    let secret = tls_secret("cert", (&cert.0, &cert.1), None);
    let vs = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ok, namespace: default}}\nspec:\n  hosts: [{}]\n  gateways: [gw]\n  http:\n  - directResponse: {{status: 200, body: {{string: ok}}}}\n",
        hosts.join(", ")
    );
    vec![
        ("gateway.yaml", format!("{gw}---\n{secret}")),
        ("routes.yaml", vs),
    ]
}

/// `openssl s_client` from the client namespace to `host` on the VIP with `args`
/// (`-tls1_2`, ...): whether the handshake completed, and everything it printed.
pub fn s_client(topo: &Topology, host: &str, args: &[&str]) -> Result<(bool, String)> {
    let connect = format!("{VIP}:443");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", topo.client.name(), "openssl", "s_client"])
        .args(["-connect", &connect, "-servername", host, "-brief"])
        .args(args);
    let out = output_timeout(&mut cmd, std::time::Duration::from_secs(15))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((
        out.status.success() && text.contains("CONNECTION ESTABLISHED"),
        text,
    ))
}

#[test]
fn min_and_max_protocol_versions_and_tls10_11_refused() -> Result<()> {
    let topo = Topology::new("tlsv", 1, Opts::no_backends())?;
    let ca = Ca::new("versions CA")?;
    let cert = ca.leaf_for(&[
        "auto.example.com",
        "v13.example.com",
        "v12.example.com",
        "old.example.com",
    ])?;
    let files = https_gateway(
        &[
            ("auto.example.com", ""),
            ("v13.example.com", ", minProtocolVersion: TLSV1_3"),
            ("v12.example.com", ", maxProtocolVersion: TLSV1_2"),
            // Asked for, but never granted: rustls has no TLS 1.0/1.1 (the log warns).
            (
                "old.example.com",
                ", minProtocolVersion: TLSV1_0, cipherSuites: [ECDHE-RSA-AES128-SHA]",
            ),
        ],
        &cert,
    );
    let agent = Agent::start(&topo, &files)?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ca.pem");
    fs::write(&ca_file, ca.cert.pem())?;
    let ca_file = ca_file.to_str().context("path")?;
    let version = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("Protocol version: "))
            .unwrap_or("")
            .to_string()
    };

    // TLS_AUTO: 1.2 and 1.3, 1.3 preferred.
    let (ok, text) = s_client(&topo, "auto.example.com", &["-CAfile", ca_file])?;
    ensure!(ok && version(&text) == "TLSv1.3", "{text}");
    let (ok, text) = s_client(&topo, "auto.example.com", &["-CAfile", ca_file, "-tls1_2"])?;
    ensure!(ok && version(&text) == "TLSv1.2", "{text}");
    // minProtocolVersion TLSV1_3: a TLS 1.2 client gets a protocol_version alert.
    let (ok, text) = s_client(&topo, "v13.example.com", &["-CAfile", ca_file])?;
    ensure!(ok && version(&text) == "TLSv1.3", "{text}");
    let (ok, text) = s_client(&topo, "v13.example.com", &["-tls1_2"])?;
    ensure!(!ok && text.contains("alert protocol version"), "{text}");
    // maxProtocolVersion TLSV1_2: a client offering 1.3 gets 1.2; a 1.3-only client is refused.
    let (ok, text) = s_client(&topo, "v12.example.com", &["-CAfile", ca_file])?;
    ensure!(ok && version(&text) == "TLSv1.2", "{text}");
    let (ok, text) = s_client(&topo, "v12.example.com", &["-tls1_3"])?;
    ensure!(!ok && text.contains("alert protocol version"), "{text}");
    // TLS 1.0 and 1.1, on every server, even one that asks for them. SECLEVEL=0 lets OpenSSL
    // 3 send such a ClientHello at all; "SSL alert number" is an alert the gateway sent
    // (rustls answers a ClientHello without 1.2 with handshake_failure).
    for host in ["auto.example.com", "old.example.com"] {
        for flag in ["-tls1", "-tls1_1"] {
            let (ok, text) = s_client(&topo, host, &[flag, "-cipher", "DEFAULT@SECLEVEL=0"])?;
            ensure!(
                !ok && text.contains("SSL alert number"),
                "{host} {flag}: {text}"
            );
        }
    }
    ensure!(
        agent
            .log()
            .contains("TLS 1.0 and 1.1 are not supported; using TLS 1.2"),
        "no warning for TLSV1_0:\n{}",
        agent.log()
    );
    Ok(())
}

/// sslscan (Debian's, OpenSSL-based) against a SIMPLE server, as an auditor would run it:
/// nothing below TLS 1.2, no weak suite (every accepted one is an AEAD with forward secrecy),
/// and the chain is complete: a client trusting only the root verifies the leaf, because the
/// server sends the intermediate (and `/certs` lists both, in order).
#[test]
fn sslscan_finds_no_old_protocol_weak_suite_or_missing_chain() -> Result<()> {
    let topo = Topology::new("sscan", 1, Opts::no_backends())?;
    let root = Ca::new("sslscan root CA")?;
    let inter = root.intermediate("sslscan intermediate CA")?;
    let (leaf, key) = inter.leaf("scan.example.com")?;
    let chain = format!("{leaf}{}", inter.cert.pem());
    let files = https_gateway(&[("scan.example.com", "")], &(chain, key));
    let agent = Agent::start(&topo, &files)?;
    // /certs lists both certificates of the chain, in order, with the server using them.
    let certs = agent.get_json_at("/certs")?;
    let chain: Vec<(String, String)> = certs["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["kind"] == "server")
        .map(|c| {
            (
                c["index"].to_string(),
                c["issuer"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    ensure!(
        chain
            == [
                ("0".to_string(), "CN=sslscan intermediate CA".to_string()),
                ("1".to_string(), "CN=sslscan root CA".to_string())
            ],
        "{certs:#}"
    );
    let target = format!("{VIP}:443");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", topo.client.name(), "sslscan"])
        .args(["--no-colour", "--xml=-", "--no-heartbleed"])
        .args(["--sni-name=scan.example.com", &target]);
    let out = output_timeout(&mut cmd, std::time::Duration::from_secs(120))?;
    let xml = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success() && xml.contains("<ssltest"),
        "sslscan: {xml}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `<protocol type="tls" version="1.2" enabled="1" />`, one per version.
    let enabled = |version: &str| {
        xml.contains(&format!(
            "<protocol type=\"tls\" version=\"{version}\" enabled=\"1\""
        ))
    };
    for v in ["1.0", "1.1"] {
        ensure!(!enabled(v), "TLS {v} enabled:\n{xml}");
    }
    ensure!(
        !xml.contains("<protocol type=\"ssl\" version=\"2\" enabled=\"1\"")
            && !xml.contains("<protocol type=\"ssl\" version=\"3\" enabled=\"1\""),
        "SSL enabled:\n{xml}"
    );
    ensure!(
        enabled("1.2") && enabled("1.3"),
        "TLS 1.2 and 1.3 expected:\n{xml}"
    );
    let ciphers: Vec<&str> = xml
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("<cipher ")
                && (l.contains("status=\"accepted\"") || l.contains("status=\"preferred\""))
        })
        .collect();
    ensure!(!ciphers.is_empty(), "no accepted cipher:\n{xml}");
    for c in &ciphers {
        let attr = |name: &str| {
            c.split(&format!(" {name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
        };
        let (version, name, bits, strength) = (
            attr("sslversion"),
            attr("cipher"),
            attr("bits"),
            attr("strength"),
        );
        let aead = name.contains("GCM") || name.contains("CHACHA20");
        let forward_secret = version == "TLSv1.3" || name.starts_with("ECDHE-");
        ensure!(
            (version == "TLSv1.2" || version == "TLSv1.3")
                && aead
                && forward_secret
                && bits.parse::<u32>().is_ok_and(|b| b >= 128)
                // sslscan's own rating: 128-bit AES is "acceptable", weaker ones are
                // "medium", "weak", "null" or "anonymous".
                && (strength == "strong" || strength == "acceptable"),
            "weak suite accepted: {c}"
        );
    }
    // The chain: verified against the root alone (the intermediate came from the server).
    let dir = tempfile::tempdir()?;
    let root_file = dir.path().join("root.pem");
    fs::write(&root_file, root.cert.pem())?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", topo.client.name(), "openssl", "s_client"])
        .args([
            "-connect",
            &target,
            "-servername",
            "scan.example.com",
            "-showcerts",
        ])
        .args([
            "-verify_return_error",
            "-CAfile",
            root_file.to_str().context("path")?,
        ]);
    let out = output_timeout(&mut cmd, std::time::Duration::from_secs(15))?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("Verify return code: 0 (ok)")
            && text.matches("-----BEGIN CERTIFICATE-----").count() == 2,
        "chain:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
