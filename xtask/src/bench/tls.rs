//! Part 3b: TLS termination, the agent against HAProxy with the same certificates: full
//! handshakes per second (a new connection per request, TLS 1.3 and 1.2, ECDSA P-256 and RSA
//! 2048 certificates) and requests per second over keep-alive TLS. Both answer a fixed `200 ok`
//! themselves (a VirtualService `directResponse`, HAProxy's `http-request return`), so the rows
//! compare the TLS and HTTP work of the two servers, not an origin.

use std::{fmt::Write as _, process::Command, time::Duration};

use anyhow::Context as _;
use gateway_tests::{
    netns::Netns,
    proc::output_timeout,
    topology::{Topology, VIP},
    Agent, Opts,
};

use super::{
    l7::{cores, parse_wrk, start_haproxy},
    util::{self, check_interrupt, median},
    Ctx, Section,
};

/// One listener per (certificate, version): the agent's at `AGENT_BASE + i`, HAProxy's at
/// `HAPROXY_BASE + i`.
const AGENT_BASE: u16 = 8443;
const HAPROXY_BASE: u16 = 9443;
const HOST: &str = "bench.local";

struct Listener {
    cert: &'static str,
    version: &'static str,
}

const LISTENERS: [Listener; 4] = [
    Listener {
        cert: "ECDSA P-256",
        version: "TLS 1.3",
    },
    Listener {
        cert: "ECDSA P-256",
        version: "TLS 1.2",
    },
    Listener {
        cert: "RSA 2048",
        version: "TLS 1.3",
    },
    Listener {
        cert: "RSA 2048",
        version: "TLS 1.2",
    },
];

/// (certificate PEM path, key PEM path, combined PEM path for HAProxy) for `cert`, made by
/// openssl in `dir`.
fn make_cert(dir: &std::path::Path, cert: &str) -> anyhow::Result<(String, String, String)> {
    let tag = if cert.starts_with("RSA") { "rsa" } else { "ec" };
    let (c, k, both) = (
        dir.join(format!("{tag}.crt")),
        dir.join(format!("{tag}.key")),
        dir.join(format!("{tag}.pem")),
    );
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={HOST}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{HOST}"))
        .arg("-keyout")
        .arg(&k)
        .arg("-out")
        .arg(&c);
    if tag == "rsa" {
        cmd.args(["-newkey", "rsa:2048"]);
    } else {
        cmd.args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]);
    }
    let out = output_timeout(&mut cmd, Duration::from_secs(30))?;
    anyhow::ensure!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        &both,
        format!(
            "{}{}",
            std::fs::read_to_string(&c)?,
            std::fs::read_to_string(&k)?
        ),
    )?;
    let s = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    Ok((s(c), s(k), s(both)))
}

fn manifests(certs: &[(String, String, String)]) -> Vec<(&'static str, String)> {
    let mut servers = String::new();
    for (i, l) in LISTENERS.iter().enumerate() {
        let (c, k, _) = &certs[usize::from(l.cert.starts_with("RSA"))];
        let max = if l.version == "TLS 1.2" {
            "TLSV1_2"
        } else {
            "TLSV1_3"
        };
        let _ = write!(
            servers,
            "  - port: {{number: {}, name: https-{i}, protocol: HTTPS}}\n    hosts: [\"*\"]\n    \
             tls: {{mode: SIMPLE, serverCertificate: {c}, privateKey: {k}, minProtocolVersion: TLSV1_2, maxProtocolVersion: {max}}}\n",
            AGENT_BASE + i as u16
        );
    }
    let gw = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: bench-tls, namespace: istio-system}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    );
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ok, namespace: bench}\n\
              spec:\n  hosts: [\"*\"]\n  gateways: [istio-system/bench-tls]\n  http:\n  \
              - directResponse: {status: 200, body: {string: \"ok\\n\"}}\n"
        .to_string();
    vec![("gateway.yaml", gw), ("routes.yaml", vs)]
}

fn haproxy_cfg(certs: &[(String, String, String)]) -> String {
    let mut cfg = format!(
        "global\n  maxconn 4000\n  nbthread {}\ndefaults\n  mode http\n  timeout connect 5s\n  \
         timeout client 30s\n  timeout server 30s\n",
        cores()
    );
    for (i, l) in LISTENERS.iter().enumerate() {
        let (_, _, pem) = &certs[usize::from(l.cert.starts_with("RSA"))];
        let max = if l.version == "TLS 1.2" {
            "TLSv1.2"
        } else {
            "TLSv1.3"
        };
        let _ = write!(
            cfg,
            "frontend tls{i}\n  bind {VIP}:{} ssl crt {pem} alpn http/1.1 ssl-min-ver TLSv1.2 ssl-max-ver {max}\n  \
             http-request return status 200 content-type text/plain string \"ok\"\n",
            HAPROXY_BASE + i as u16
        );
    }
    cfg
}

struct Load {
    rps: f64,
    p99_ms: f64,
}

/// wrk over TLS; `close`: a new connection (a full handshake) per request.
fn wrk(
    client: &Netns,
    wrk: &str,
    port: u16,
    close: bool,
    secs: u32,
    conns: u32,
) -> anyhow::Result<Load> {
    let url = format!("https://{VIP}:{port}/");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", client.name(), wrk, "-t", "2", "-c"])
        .arg(conns.to_string())
        .arg("-d")
        .arg(format!("{secs}s"))
        .args(["--latency", "-H", &format!("Host: {HOST}")]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(&url);
    let out = output_timeout(&mut cmd, Duration::from_secs(secs as u64 + 30))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (rps, _, p99_ms) = parse_wrk(&text)?;
    // A server that refuses every handshake gives wrk connect errors and no requests.
    anyhow::ensure!(rps > 0.0, "no request completed: {text}");
    Ok(Load { rps, p99_ms })
}

/// `openssl s_client` against `port`: the negotiated version, so each row is what it says.
fn negotiated(client: &Netns, port: u16) -> anyhow::Result<String> {
    let out = output_timeout(
        Command::new("ip")
            .args(["netns", "exec", client.name(), "openssl", "s_client"])
            .arg("-connect")
            .arg(format!("{VIP}:{port}"))
            .args(["-servername", HOST, "-brief"])
            .stdin(std::process::Stdio::null()),
        Duration::from_secs(10),
    )?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("Protocol version:"))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no TLS handshake on {port}: {text}"))
}

pub fn run(ctx: &Ctx) -> anyhow::Result<(Section, Vec<String>)> {
    let (secs, runs, conns) = if ctx.quick { (1, 1, 8) } else { (3, 3, 32) };
    let wrk_bin = util::ensure_tool("wrk", "wrk").map_err(anyhow::Error::msg)?;
    let haproxy_bin = util::ensure_tool("haproxy", "haproxy").ok();
    let dir = tempfile::Builder::new().prefix("gwbench-tls-").tempdir()?;
    let certs = vec![
        make_cert(dir.path(), "ECDSA")?,
        make_cert(dir.path(), "RSA")?,
    ];
    let topo = Topology::new("bt", 1, Opts::default())?;
    let agent = Agent::start(&topo, &manifests(&certs))?;
    let haproxy = haproxy_bin
        .as_deref()
        .map(|h| start_haproxy(&topo.node, h, haproxy_cfg(&certs)))
        .transpose()?;
    // Both listen once their first handshake succeeds (the agent applies, HAProxy starts).
    for port in [AGENT_BASE, HAPROXY_BASE] {
        let _ = gateway_tests::wait_until(Duration::from_secs(10), "a TLS listener", || {
            Ok(negotiated(&topo.client, port).is_ok())
        });
    }
    let mut body = String::new();
    let _ = writeln!(
        body,
        "Client and node namespaces as in part 2. On the node: the agent (one Gateway HTTPS server \
         per row, `SIMPLE` with the row's certificate, `maxProtocolVersion` the row's version, a \
         VirtualService `directResponse` 200) and HAProxy {} (`bind ... ssl crt` with the same \
         certificate and key, `ssl-max-ver` the row's version, `http-request return status 200`, \
         `nbthread {}`). Certificates made by `openssl req -x509` at bench time. The agent's TLS is \
         rustls 0.23 with the ring provider.\n\n\
         - Handshakes/s: `wrk -t 2 -c {conns} -d {secs}s -H 'Connection: close' https://198.18.0.1:PORT/`: \
         every request on a new connection, a full handshake (wrk keeps no session for resumption).\n\
         - Keep-alive: the same without `Connection: close`.\n\
         - The version each listener negotiates is checked with `openssl s_client -brief`.\n\
         - Medians of {runs} runs.\n",
        haproxy_bin
            .as_deref()
            .map(|_| "2.6")
            .unwrap_or("(not installed)"),
        cores()
    );
    let _ = writeln!(
        body,
        "| certificate | version | load | agent /s | HAProxy /s | agent / HAProxy | agent p99 ms | HAProxy p99 ms |"
    );
    let _ = writeln!(body, "|---|---|---|---:|---:|---:|---:|---:|");
    let mut headline = Vec::new();
    let mut rows: Vec<(usize, bool)> = (0..LISTENERS.len()).map(|i| (i, true)).collect();
    rows.push((0, false));
    for (i, close) in rows {
        check_interrupt()?;
        let l = &LISTENERS[i];
        let (ap, hp) = (AGENT_BASE + i as u16, HAPROXY_BASE + i as u16);
        let cell = |port: u16| -> Result<Load, String> {
            let v = negotiated(&topo.client, port).map_err(|e| format!("{e:#}"))?;
            let want = l.version.replace(' ', "v");
            if v != want {
                return Err(format!("negotiated {v}, not {want}"));
            }
            let mut got = Vec::new();
            for _ in 0..runs {
                got.push(
                    wrk(&topo.client, &wrk_bin, port, close, secs, conns)
                        .map_err(|e| format!("{e:#}"))?,
                );
            }
            Ok(Load {
                rps: median(&got.iter().map(|g| g.rps).collect::<Vec<_>>()),
                p99_ms: median(&got.iter().map(|g| g.p99_ms).collect::<Vec<_>>()),
            })
        };
        let a = cell(ap);
        let h = if haproxy.is_some() {
            cell(hp)
        } else {
            Err("HAProxy not installed".into())
        };
        let load = if close {
            "new connection per request"
        } else {
            "keep-alive"
        };
        let fmt = |r: &Result<Load, String>| match r {
            Ok(l) => (format!("{:.0}", l.rps), format!("{:.2}", l.p99_ms)),
            Err(e) => (
                format!(
                    "**{}**",
                    e.replace(['|', '\n'], " ")
                        .chars()
                        .take(160)
                        .collect::<String>()
                ),
                String::new(),
            ),
        };
        let ((ar, alat), (hr, hlat)) = (fmt(&a), fmt(&h));
        let ratio = match (&a, &h) {
            (Ok(a), Ok(h)) => {
                let r = a.rps / h.rps;
                headline.push(format!(
                    "TLS {} {}, {load}: agent {r:.2}x HAProxy",
                    l.cert, l.version
                ));
                format!("{r:.2}x")
            }
            _ => String::new(),
        };
        let _ = writeln!(
            body,
            "| {} | {} | {load} | {ar} | {hr} | {ratio} | {alat} | {hlat} |",
            l.cert, l.version
        );
    }
    drop(haproxy);
    drop(agent);
    Ok((Section::new("3b. TLS termination", body), headline))
}
