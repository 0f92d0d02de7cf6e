//! `test-backend --name NAME [--tcp PORT] [--udp PORT]`: the server the integration tests put
//! behind the gateway.
//!
//! - TCP: each connection first receives `NAME PEERIP\n` (so a test learns which backend it hit
//!   and which source address the backend saw), then every byte sent is echoed back.
//! - UDP: each datagram is answered with `NAME:` followed by the payload.
//!
//! Prints `ready` on stdout once every socket is bound, so the spawner knows when to go on.
//! Std only, one thread per connection: a handful of connections at a time in tests.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    process::ExitCode,
    thread,
};

fn main() -> ExitCode {
    let mut name = None;
    let mut tcp = None;
    let mut udp = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v) {
            ("--name", Some(v)) => name = Some(v),
            ("--tcp", Some(v)) => tcp = v.parse::<u16>().ok(),
            ("--udp", Some(v)) => udp = v.parse::<u16>().ok(),
            _ => {
                eprintln!("usage: test-backend --name NAME [--tcp PORT] [--udp PORT]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(name) = name else {
        eprintln!("test-backend: --name is required");
        return ExitCode::from(2);
    };
    if tcp.is_none() && udp.is_none() {
        eprintln!("test-backend: give --tcp and/or --udp");
        return ExitCode::from(2);
    }

    let mut handles = Vec::new();
    if let Some(port) = tcp {
        let l = match TcpListener::bind(("0.0.0.0", port)) {
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
        let s = match UdpSocket::bind(("0.0.0.0", port)) {
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
        .map(|a| a.ip().to_string())
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
