//! `test-backend --name NAME [--tcp PORT] [--udp PORT] [--http PORT] [--tls PORT --cert PEM
//! --key PEM]`: the server the integration tests put behind the gateway.
//!
//! - TCP: each connection first receives `NAME PEERIP\n` (so a test learns which backend it hit
//!   and which source address the backend saw), then every byte sent is echoed back.
//! - UDP: each datagram is answered with `NAME:` followed by the payload.
//! - HTTP/1.1 (keep-alive): every request gets 200 with `x-backend: NAME`, `content-type:
//!   text/plain` and the body `NAME METHOD PATH\n` followed by the request headers as received
//!   (`name: value` per line), so a test sees who answered and what the gateway sent upstream.
//!   `/status/NNN` answers with that status, `/delay/MS` sleeps first.
//! - TLS (rustls, certificate and key from PEM files): the same HTTP/1.1 server inside TLS, so
//!   a client that verifies the certificate proves whose TLS it talked to.
//!
//! TCP, UDP and HTTP serve IPv4 and IPv6 clients alike (dual-stack sockets).
//!
//! Prints `ready` on stdout once every socket is bound, so the spawner knows when to go on.
//! Std only, one thread per connection: a handful of connections at a time in tests.

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
    let mut cert = None;
    let mut key = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v) {
            ("--name", Some(v)) => name = Some(v),
            ("--tcp", Some(v)) => tcp = v.parse::<u16>().ok(),
            ("--udp", Some(v)) => udp = v.parse::<u16>().ok(),
            ("--http", Some(v)) => http = v.parse::<u16>().ok(),
            ("--tls", Some(v)) => tls = v.parse::<u16>().ok(),
            ("--cert", Some(v)) => cert = Some(v),
            ("--key", Some(v)) => key = Some(v),
            _ => {
                eprintln!(
                    "usage: test-backend --name NAME [--tcp PORT] [--udp PORT] [--http PORT] [--tls PORT --cert PEM --key PEM]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let Some(name) = name else {
        eprintln!("test-backend: --name is required");
        return ExitCode::from(2);
    };
    if tcp.is_none() && udp.is_none() && http.is_none() && tls.is_none() {
        eprintln!("test-backend: give --tcp, --udp, --http and/or --tls");
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
    if let Some(port) = tls {
        let (Some(cert), Some(key)) = (&cert, &key) else {
            eprintln!("test-backend {name}: --tls needs --cert and --key");
            return ExitCode::from(2);
        };
        let cfg = match tls_config(cert, key) {
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
        handles.push(thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (name, cfg) = (name.clone(), cfg.clone());
                thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                        return;
                    };
                    serve_http(&name, rustls::StreamOwned::new(conn, s));
                });
            }
        }));
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

fn tls_config(cert: &str, key: &str) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| e.to_string())
}

/// One HTTP/1.1 connection: requests answered in order until the peer closes or asks to.
fn serve_http<S: Read + Write>(name: &str, s: S) {
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
        let mut body = format!("{name} {method} {target}\n");
        for (k, v) in &headers {
            body.push_str(&format!("{k}: {v}\n"));
        }
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
