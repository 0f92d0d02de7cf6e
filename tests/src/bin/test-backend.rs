//! `test-backend --name NAME [--tcp PORT] [--udp PORT] [--http PORT] [--tls PORT] [--h2tls PORT]
//! [--cert PEM --key PEM] [--client-ca PEM]`: the server the integration tests put behind the
//! gateway.
//!
//! - TCP: each connection first receives `NAME PEERIP\n` (so a test learns which backend it hit
//!   and which source address the backend saw), then every byte sent is echoed back.
//! - UDP: each datagram is answered with `NAME:` followed by the payload.
//! - HTTP/1.1 (keep-alive): every request gets 200 with `x-backend: NAME`, `content-type:
//!   text/plain` and the body `NAME METHOD PATH\n` followed by the request headers as received
//!   (`name: value` per line), so a test sees who answered and what the gateway sent upstream.
//!   `/status/NNN` answers with that status, `/delay/MS` sleeps first, `/bytes/N` sends N
//!   bytes of body as fast as the reader takes them.
//! - TLS (rustls, certificate and key from PEM files): the same HTTP/1.1 server inside TLS, so
//!   a client that verifies the certificate proves whose TLS it talked to. The body also carries
//!   `tls-sni: NAME`, `tls-alpn: PROTO`, `tls-client: SANS|none` and `tls-resumed: yes|no`
//!   lines, so a test sees what the TLS client (the gateway) offered; each handshake prints
//!   `tls handshake sni=NAME resumed=yes|no`. `--client-ca` demands a client certificate that
//!   chains to that CA (the handshake fails without one). `--h2tls` is the same over HTTP/2
//!   (ALPN `h2` only; see `h2tls.rs`).
//!
//! TCP, UDP and HTTP serve IPv4 and IPv6 clients alike (dual-stack sockets).
//!
//! Prints `ready` on stdout once every socket is bound, so the spawner knows when to go on.
//! Std only, one thread per connection: a handful of connections at a time in tests.

#[path = "test-backend/h2tls.rs"]
mod h2tls;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    process::ExitCode,
    thread,
};

fn main() -> ExitCode {
    let mut name = None;
    let mut tcp = None;
    let mut udp = None;
    let mut http = None;
    let mut tls = None;
    let mut h2tls = None;
    let mut cert = None;
    let mut key = None;
    let mut client_ca = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v) {
            ("--name", Some(v)) => name = Some(v),
            ("--tcp", Some(v)) => tcp = v.parse::<u16>().ok(),
            ("--udp", Some(v)) => udp = v.parse::<u16>().ok(),
            ("--http", Some(v)) => http = v.parse::<u16>().ok(),
            ("--tls", Some(v)) => tls = v.parse::<u16>().ok(),
            ("--h2tls", Some(v)) => h2tls = v.parse::<u16>().ok(),
            ("--client-ca", Some(v)) => client_ca = Some(v),
            ("--cert", Some(v)) => cert = Some(v),
            ("--key", Some(v)) => key = Some(v),
            _ => {
                eprintln!(
                    "usage: test-backend --name NAME [--tcp PORT] [--udp PORT] [--http PORT] [--tls PORT] [--h2tls PORT] [--cert PEM --key PEM] [--client-ca PEM]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let Some(name) = name else {
        eprintln!("test-backend: --name is required");
        return ExitCode::from(2);
    };
    if tcp.is_none() && udp.is_none() && http.is_none() && tls.is_none() && h2tls.is_none() {
        eprintln!("test-backend: give --tcp, --udp, --http, --tls and/or --h2tls");
        return ExitCode::from(2);
    }

    let mut handles = Vec::new();
    // TCP, UDP and HTTP on `[::]`: one dual-stack socket serves IPv4 (as mapped addresses,
    // reported as plain IPv4) and IPv6 clients.
    if let Some(port) = tcp {
        let l = match TcpListener::bind(("::", port)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("test-backend {name}: tcp bind {port}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let name = name.clone();
        handles.push(thread::spawn(move || {
            for s in l.incoming().flatten() {
                let name = name.clone();
                thread::spawn(move || serve_tcp(&name, s));
            }
        }));
    }
    if let Some(port) = udp {
        let s = match UdpSocket::bind(("::", port)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("test-backend {name}: udp bind {port}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let name = name.clone();
        handles.push(thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, peer)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let mut reply = format!("{name}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&reply, peer);
            }
        }));
    }
    if let Some(port) = http {
        let l = match TcpListener::bind(("::", port)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("test-backend {name}: http bind {port}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let name = name.clone();
        handles.push(thread::spawn(move || {
            for s in l.incoming().flatten() {
                let name = name.clone();
                thread::spawn(move || serve_http(&name, s));
            }
        }));
    }
    if tls.is_some() || h2tls.is_some() {
        let (Some(cert), Some(key)) = (&cert, &key) else {
            eprintln!("test-backend {name}: --tls/--h2tls need --cert and --key");
            return ExitCode::from(2);
        };
        for (port, h2) in [(tls, false), (h2tls, true)] {
            let Some(port) = port else { continue };
            let cfg = match tls_config(cert, key, client_ca.as_deref(), h2) {
                Ok(c) => std::sync::Arc::new(c),
                Err(e) => {
                    eprintln!("test-backend {name}: tls: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let l = match TcpListener::bind(("0.0.0.0", port)) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("test-backend {name}: tls bind {port}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let name = name.clone();
            if h2 {
                handles.push(thread::spawn(move || h2tls::serve(&name, l, cfg)));
                continue;
            }
            handles.push(thread::spawn(move || {
                for s in l.incoming().flatten() {
                    let (name, cfg) = (name.clone(), cfg.clone());
                    thread::spawn(move || serve_tls(&name, s, cfg));
                }
            }));
        }
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    for h in handles {
        let _ = h.join();
    }
    ExitCode::SUCCESS
}

fn serve_tcp(name: &str, mut s: TcpStream) {
    let peer = s
        .peer_addr()
        .map(|a| a.ip().to_canonical().to_string())
        .unwrap_or_else(|_| "?".into());
    if s.write_all(format!("{name} {peer}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = vec![0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// The server side: `client_ca` demands a client certificate chaining to it; ALPN `h2` only
/// (`--h2tls`) or `http/1.1` only (`--tls`), so an offer the server cannot speak fails.
fn tls_config(
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
    h2: bool,
) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let pems = |f: &str| {
        CertificateDer::pem_file_iter(f)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{f}: {e}"))
    };
    let certs = pems(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let b = match client_ca {
        None => b.with_no_client_auth(),
        Some(f) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in pems(f)? {
                roots.add(c).map_err(|e| format!("{f}: {e}"))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("{f}: {e}"))?;
            b.with_client_cert_verifier(v)
        }
    };
    let mut cfg = b.with_single_cert(certs, key).map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(cfg)
}

/// What the TLS client negotiated, as `(name, value)` lines for the response body.
fn tls_facts(c: &rustls::ServerConnection) -> Vec<(String, String)> {
    let alpn = c
        .alpn_protocol()
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let client = c
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf_names(leaf.as_ref()));
    let resumed = c.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let facts = vec![
        ("tls-sni".into(), c.server_name().unwrap_or("none").into()),
        ("tls-alpn".into(), alpn.unwrap_or_else(|| "none".into())),
        ("tls-client".into(), client.unwrap_or_else(|| "none".into())),
        (
            "tls-resumed".into(),
            if resumed { "yes" } else { "no" }.into(),
        ),
    ];
    // One line per handshake, so a test can count connections (pooling) and resumptions.
    println!("tls handshake sni={} resumed={}", facts[0].1, facts[3].1);
    facts
}

/// The DNS SANs of a DER certificate, comma-separated (how a test tells two clients apart).
fn leaf_names(der: &[u8]) -> String {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return "unparsable".into();
    };
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        "unnamed".into()
    } else {
        names.join(",")
    }
}

/// One `--tls` connection: the handshake first (so its facts can be reported), then HTTP/1.1.
fn serve_tls(name: &str, mut s: TcpStream, cfg: std::sync::Arc<rustls::ServerConfig>) {
    let Ok(mut conn) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut s) {
            println!("tls handshake failed: {e}");
            return;
        }
    }
    let facts = tls_facts(&conn);
    serve_http_with(name, rustls::StreamOwned::new(conn, s), &facts);
}

/// One HTTP/1.1 connection: requests answered in order until the peer closes or asks to.
fn serve_http<S: Read + Write>(name: &str, s: S) {
    serve_http_with(name, s, &[]);
}

/// [`serve_http`], with `extra` lines appended to every body (what the TLS handshake saw).
fn serve_http_with<S: Read + Write>(name: &str, s: S, extra: &[(String, String)]) {
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_string(), target.to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            match r.read_line(&mut h) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        // Bodies are consumed (Content-Length or chunked) so the next request parses cleanly.
        if let Some(n) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
            if std::io::copy(&mut (&mut r).take(n), &mut std::io::sink()).is_err() {
                return;
            }
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
            && skip_chunked(&mut r).is_err()
        {
            return;
        }
        // One line per request on stdout, so a test can wait for a request it cannot see
        // answered (a mirrored one).
        println!(
            "request {method} {target} host={}",
            header("host").unwrap_or("")
        );
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let path = target.split('?').next().unwrap_or("");
        let mut status = 200u16;
        if let Some(code) = path.strip_prefix("/status/") {
            status = code.parse().unwrap_or(400);
        }
        if let Some(ms) = path
            .strip_prefix("/delay/")
            .and_then(|m| m.parse::<u64>().ok())
        {
            thread::sleep(std::time::Duration::from_millis(ms));
        }
        // `/bytes/N`: N bytes of body, written as the client takes them (a test of clients
        // that never read).
        if let Some(n) = path
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse::<u64>().ok())
        {
            let w = r.get_mut();
            let head = format!(
                "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-type: application/octet-stream\r\ncontent-length: {n}\r\n\r\n"
            );
            if w.write_all(head.as_bytes()).is_err() {
                return;
            }
            let chunk = [b'x'; 65536];
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                if w.write_all(&chunk[..k]).is_err() {
                    return;
                }
                left -= k as u64;
            }
            continue;
        }
        let mut body = describe(name, &method, &target, headers.iter().chain(extra));
        // These statuses have no body (RFC 9110); a proxy would reject one.
        if status < 200 || status == 204 || status == 304 {
            body.clear();
        }
        let resp = format!(
            "HTTP/1.1 {status} {}\r\nx-backend: {name}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}",
            reason(status),
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        let w = r.get_mut();
        if w.write_all(resp.as_bytes())
            .and_then(|()| w.flush())
            .is_err()
            || close
        {
            return;
        }
    }
}

/// The body every HTTP answer carries: `NAME METHOD TARGET`, then `name: value` lines.
fn describe<'a>(
    name: &str,
    method: &str,
    target: &str,
    lines: impl Iterator<Item = &'a (String, String)>,
) -> String {
    let mut body = format!("{name} {method} {target}\n");
    for (k, v) in lines {
        body.push_str(&format!("{k}: {v}\n"));
    }
    body
}

fn skip_chunked(r: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let mut size = String::new();
        r.read_line(&mut size)?;
        let n = u64::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        if n == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut l = String::new();
                if r.read_line(&mut l)? == 0 || l.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        std::io::copy(&mut (&mut *r).take(n + 2), &mut std::io::sink())?;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        400 => "Bad Request",
        404 => "Not Found",
        418 => "I'm a teapot",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
