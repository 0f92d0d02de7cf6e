//! Hostile clients against the real agent (docs/hardening.md): raw bytes over TCP from the
//! client namespace, through the XDP-attached node to the L7 listener on port 80, with one
//! `test-backend --http` behind it whose stdout lists every request it received in full.
//!
//! - HTTP/1.1 parsing and smuggling: conflicting framing, obs-fold, bare CR, NUL, a bad chunk
//!   size, an oversized request line, header block and header count → 400 / 431 or a close,
//!   and the backend never sees the request (nor a request smuggled in its body).
//! - Slow clients: slowloris (heads sent byte by byte) is cut at `--request-headers-timeout`
//!   while a normal client is served; a silent connection is closed at `--stream-idle-timeout`.
//! - HTTP/2 floods, with hand-built frames: rapid reset → GOAWAY; a CONTINUATION flood → closed
//!   after a bounded amount; PING and SETTINGS floods → bounded (h2 stops reading until the
//!   client reads) and closed at the idle timeout, other clients served throughout.
//! - `--max-connections`: beyond it connections are accepted and closed, counted and logged.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    manifests::{service_entry, GATEWAY_HEAD},
    proc::rss_kib,
    test_backend_bin,
    topology::{start_backend, Topology, BACKEND_HTTP_PORT, VIP},
    wait_until, Agent, ChildGuard, Opts,
};

const HOST: &str = "web.example.com";

fn files(topo: &Topology) -> Vec<(&'static str, String)> {
    let gateway = format!(
        "{GATEWAY_HEAD}  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n"
    );
    let se = service_entry(
        "web",
        "default",
        HOST,
        &format!("{{number: {BACKEND_HTTP_PORT}, name: http, protocol: HTTP}}"),
        &[format!("{{address: {}}}", topo.backends[0].addr)],
    );
    let vs = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: {HOST}}}}}]
"
    );
    vec![
        ("gateway.yaml", gateway),
        ("service-entry.yaml", se),
        ("vs.yaml", vs),
    ]
}

/// A topology with one backend whose requests the test reads, and the agent with `extra` flags.
fn setup(tag: &str, extra: &[&str]) -> Result<(Topology, Agent, ChildGuard)> {
    let topo = Topology::new(tag, 1, Opts::no_backends())?;
    let bin = test_backend_bin()?;
    let bin = bin.to_str().context("non-UTF-8 path")?;
    let backend = start_backend(
        &topo.backends[0].ns,
        bin,
        "b1",
        None,
        None,
        Some(BACKEND_HTTP_PORT),
    )?;
    let agent = Agent::start_with(&topo, &files(&topo), extra)?;
    Ok((topo, agent, backend))
}

fn vip() -> SocketAddr {
    SocketAddr::from((VIP, 80))
}

/// A TCP connection to the listener from the client namespace.
fn connect(topo: &Topology) -> Result<TcpStream> {
    topo.client.run_in(|| {
        let s = TcpStream::connect_timeout(&vip(), Duration::from_secs(3))?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}

/// Sends `bytes` and reads until the gateway closes or `wait` passes without a byte; returns
/// what was read and whether the connection was closed.
fn exchange(topo: &Topology, bytes: &[u8], wait: Duration) -> Result<(Vec<u8>, bool)> {
    let mut s = connect(topo)?;
    // The gateway may answer and close before it has read everything: a failed write is fine.
    let _ = s.write_all(bytes);
    read_all(&mut s, wait)
}

fn read_all(s: &mut TcpStream, wait: Duration) -> Result<(Vec<u8>, bool)> {
    s.set_read_timeout(Some(wait))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok((out, true)),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok((out, false))
            }
            // A reset: closed by the gateway.
            Err(_) => return Ok((out, true)),
        }
    }
}

fn status(reply: &[u8]) -> Option<u16> {
    let line = reply.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Whether a test-backend stdout line records a request whose target contains `marker`.
fn got(lines: &[String], marker: &str) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with("request ") && l.contains(marker))
}

/// Malformed or oversized HTTP/1.1 requests are refused as Envoy refuses them (400 or 431,
/// then a close) and never reach the backend; a request smuggled in a body never runs; a head
/// just under the limits and a plain request do reach it.
#[test]
fn http1_malformed_and_smuggling_requests_never_reach_the_backend() -> Result<()> {
    let (topo, _agent, mut backend) = setup("hh", &[])?;
    let big = "a".repeat(70 * 1024);
    let kib = "b".repeat(1000);
    let many_1k: String = (0..70).map(|i| format!("x-h{i}: {kib}\r\n")).collect();
    let many_small: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    // (what, bytes, the statuses Envoy answers with; empty: a close is the answer)
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "two different Content-Length values",
            b"POST /hostile-2cl HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde".to_vec(),
            &[400],
        ),
        (
            "obs-fold header continuation",
            b"GET /hostile-fold HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "bare CR in a header value",
            b"GET /hostile-cr HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "NUL in a header value",
            b"GET /hostile-nul HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "space before the colon",
            b"GET /hostile-space HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "Transfer-Encoding other than chunked",
            b"POST /hostile-te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc".to_vec(),
            &[400, 501],
        ),
        (
            "invalid chunk size",
            b"POST /hostile-chunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(),
            &[400, 502, 503],
        ),
        (
            "oversized request line (70 KiB)",
            format!("GET /hostile-line?{big} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            &[431],
        ),
        (
            "oversized header block (70 x 1 KiB)",
            format!("GET /hostile-block HTTP/1.1\r\nHost: x\r\n{many_1k}\r\n").into_bytes(),
            &[431],
        ),
        (
            "101 headers",
            format!("GET /hostile-count HTTP/1.1\r\nHost: x\r\n{many_small}\r\n").into_bytes(),
            &[431],
        ),
    ];
    let mut failures = Vec::new();
    for (what, bytes, want) in &cases {
        let (reply, closed) = exchange(&topo, bytes, Duration::from_secs(3))?;
        let st = status(&reply);
        let ok = match st {
            Some(s) => want.contains(&s) && closed,
            None => closed,
        };
        if !ok {
            failures.push(format!(
                "{what}: status {st:?}, closed {closed}, want one of {want:?} then a close: {:?}",
                String::from_utf8_lossy(&reply[..reply.len().min(300)])
            ));
        }
    }
    // Content-Length and Transfer-Encoding both: chunked wins (RFC 9112 §6.3), the
    // Content-Length is not forwarded and the connection closes after the response, so the
    // request hidden in the body is never parsed (Envoy answers 400 instead).
    let (reply, closed) = exchange(
        &topo,
        b"POST /hostile-clte HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(3),
    )?;
    let text = String::from_utf8_lossy(&reply).to_string();
    if !(closed && matches!(status(&reply), Some(200 | 400))) || text.contains("content-length: 40")
    {
        failures.push(format!("CL+TE: closed {closed}: {text}"));
    }
    // Just under the limits: 50 headers of 1 KiB (50 KiB) reach the backend.
    let under: String = (0..50).map(|i| format!("x-h{i}: {kib}\r\n")).collect();
    let (reply, _) = exchange(
        &topo,
        format!("GET /under-limit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{under}\r\n")
            .as_bytes(),
        Duration::from_secs(3),
    )?;
    if status(&reply) != Some(200) {
        failures.push(format!(
            "50 KiB head: {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(300)])
        ));
    }
    // The backend prints each request once it has read it whole; give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let lines = backend.take_lines();
    ensure!(
        got(&lines, "/under-limit"),
        "the control request did not reach the backend: {lines:?}"
    );
    for marker in ["/hostile-", "/smuggled"] {
        for l in lines.iter().filter(|l| l.starts_with("request ")) {
            // CL+TE's own request may pass (chunked, empty body); nothing else may.
            if l.contains(marker) && !l.contains("/hostile-clte") {
                failures.push(format!("the backend received {l:?}"));
            }
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Whether the gateway has closed `s` (EOF or reset), looking for `wait`.
fn is_closed(s: &mut TcpStream, wait: Duration) -> Result<bool> {
    Ok(read_all(s, wait)?.1)
}

/// Slowloris: 100 connections sending their heads a byte at a time do not keep a normal client
/// from being served, and are closed once `--request-headers-timeout` (2 s here) has passed.
#[test]
fn slowloris_heads_are_cut_at_the_request_headers_timeout() -> Result<()> {
    let (topo, _agent, _backend) = setup("hs", &["--request-headers-timeout", "2s"])?;
    let mut slow = Vec::new();
    for _ in 0..100 {
        slow.push(connect(&topo)?);
    }
    let head = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let start = Instant::now();
    let mut i = 0;
    let mut served = false;
    let mut cut = vec![false; slow.len()];
    // Dribble for 4 s: one byte per connection every 100 ms.
    while start.elapsed() < Duration::from_secs(4) {
        for (j, s) in slow.iter_mut().enumerate() {
            if !cut[j] && s.write_all(&head[i % head.len()..][..1]).is_err() {
                cut[j] = true;
            }
        }
        i += 1;
        if !served && start.elapsed() > Duration::from_millis(500) {
            let r = topo
                .http_client()
                .get(&format!("http://{VIP}/normal"), &[])?;
            ensure!(r.status == 200, "normal client during slowloris: {r:#?}");
            served = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(served, "the normal client was never tried");
    let mut open = 0;
    for (j, s) in slow.iter_mut().enumerate() {
        if !cut[j] && !is_closed(s, Duration::from_millis(100))? {
            open += 1;
        }
    }
    ensure!(
        open == 0,
        "{open} of {} slowloris connections still open 4 s in (timeout 2 s)",
        slow.len()
    );
    Ok(())
}

/// The head timeout runs from a head's first byte, as Envoy's `request_headers_timeout`: a
/// kept-alive HTTP/1.1 connection idle between requests for longer than it, and an HTTP/2
/// connection that waits before its first request, are not cut (hyper's own timer, which this
/// replaced, closed both).
#[test]
fn idle_keepalives_outlive_the_request_headers_timeout() -> Result<()> {
    let (topo, _agent, _backend) = setup("hk", &["--request-headers-timeout", "1s"])?;
    let mut kept = connect(&topo)?;
    let mut h2c = connect(&topo)?;
    h2c.write_all(PREFACE)?;
    h2c.write_all(&frame(SETTINGS, 0, 0, &[]))?;
    for round in 0..2 {
        kept.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")?;
        kept.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut first = [0u8; 12];
        kept.read_exact(&mut first)
            .with_context(|| format!("kept-alive request {round} after an idle 2.5 s"))?;
        ensure!(
            &first == b"HTTP/1.1 200",
            "{:?}",
            String::from_utf8_lossy(&first)
        );
        // Drain the rest of the response.
        let _ = read_all(&mut kept, Duration::from_millis(300))?;
        std::thread::sleep(Duration::from_millis(2500));
    }
    ensure!(
        !is_closed(&mut h2c, Duration::from_millis(100))?,
        "an HTTP/2 connection without a request yet was cut at the head timeout"
    );
    Ok(())
}

/// The agent's open downstream connections (its gauge).
fn downstream(agent: &Agent) -> Result<u64> {
    let (_, m) = agent.get_at("127.0.0.1:15090".parse()?, "/stats/prometheus")?;
    m.lines()
        .find_map(|l| l.strip_prefix("gateway_downstream_connections "))
        .and_then(|v| v.trim().parse().ok())
        .context("gateway_downstream_connections")
}

/// Clients that never read their responses (HTTP/1.1, and HTTP/2 with a zero window) and
/// clients that half-close their socket stall nobody: the agent's memory stays bounded
/// (backpressure: it stops reading the upstream), others are served, the half-closed ones are
/// closed at once and the stalled ones at the idle timeout.
#[test]
fn clients_that_never_read_or_half_close_stall_nothing() -> Result<()> {
    let (topo, agent, _backend) = setup("hn", &["--stream-idle-timeout", "3s"])?;
    let pid = agent.pid().context("agent pid")?;
    let before = rss_kib(pid)? as f64 / 1024.0;
    // 20 HTTP/1.1 clients each ask for 100 MB and read none of it.
    let mut sinks = Vec::new();
    for _ in 0..20 {
        let mut s = connect(&topo)?;
        s.write_all(b"GET /bytes/100000000 HTTP/1.1\r\nHost: x\r\n\r\n")?;
        sinks.push(s);
    }
    // An HTTP/2 client that allows no DATA at all (SETTINGS_INITIAL_WINDOW_SIZE 0).
    let mut stalled = connect(&topo)?;
    stalled.write_all(PREFACE)?;
    stalled.write_all(&frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]))?;
    let mut block = vec![0x82, 0x86, 0x04, 16];
    block.extend_from_slice(b"/bytes/100000000");
    block.extend_from_slice(&[0x01, 0x01, b'x']);
    stalled.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))?;
    std::thread::sleep(Duration::from_millis(1500));
    let during = rss_kib(pid)? as f64 / 1024.0;
    let r = topo
        .http_client()
        .get(&format!("http://{VIP}/normal"), &[])?;
    ensure!(
        r.status == 200,
        "a normal client beside the stalled ones: {r:#?}"
    );

    // 50 clients send half a head, then shut their write side: each is closed at once.
    let start = Instant::now();
    for i in 0..50 {
        let mut s = connect(&topo)?;
        s.write_all(b"GET /half HTTP/1.1\r\nHost")?;
        s.shutdown(std::net::Shutdown::Write)?;
        let (_, closed) = read_all(&mut s, Duration::from_secs(2))?;
        ensure!(closed, "half-closed connection {i} still open after 2 s");
    }
    ensure!(
        start.elapsed() < Duration::from_secs(10),
        "half-closed connections took {:?}",
        start.elapsed()
    );
    eprintln!(
        "agent RSS {before:.1} MiB -> {during:.1} MiB with 20 HTTP/1.1 and 1 HTTP/2 responses of 100 MB unread"
    );
    ensure!(
        during - before < 64.0,
        "the agent grew {:.1} MiB holding unread responses",
        during - before
    );
    // The stalled connections move no byte: closed at the 3 s idle timeout.
    wait_until(
        Duration::from_secs(10),
        "the stalled connections to close",
        || Ok(downstream(&agent)? == 0),
    )?;
    drop(sinks);
    Ok(())
}

/// A connection that moves no byte either way is closed at `--stream-idle-timeout`.
#[test]
fn silent_connections_are_closed_at_the_stream_idle_timeout() -> Result<()> {
    let (topo, _agent, _backend) = setup(
        "hi",
        &[
            "--stream-idle-timeout",
            "2s",
            "--request-headers-timeout",
            "0s",
        ],
    )?;
    // One served request, then silence on the kept-alive connection; and one that never spoke.
    let mut used = connect(&topo)?;
    used.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut first = [0u8; 12];
    used.set_read_timeout(Some(Duration::from_secs(3)))?;
    used.read_exact(&mut first)?;
    ensure!(
        &first == b"HTTP/1.1 200",
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    let mut mute = connect(&topo)?;
    let start = Instant::now();
    for (what, s) in [("kept-alive", &mut used), ("mute", &mut mute)] {
        let (_, closed) = read_all(s, Duration::from_secs(6).saturating_sub(start.elapsed()))?;
        ensure!(
            closed,
            "{what} connection still open after 6 s (idle timeout 2 s)"
        );
    }
    ensure!(
        start.elapsed() >= Duration::from_millis(1500),
        "closed before the idle timeout: {:?}",
        start.elapsed()
    );
    Ok(())
}

// ---- HTTP/2, hand-built frames ----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK: GET, http, `/`, authority `x` (static-table indices, a literal never indexed).
const GET_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x01, 0x01, b'x'];

/// Reads frames until a GOAWAY (its error code), the end of the connection (`None`), or
/// `wait` without a byte (`Err`).
fn goaway_or_close(s: &mut TcpStream, wait: Duration) -> Result<Option<u32>> {
    s.set_read_timeout(Some(wait))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == GOAWAY && len >= 8 {
                return Ok(Some(u32::from_be_bytes([
                    buf[13], buf[14], buf[15], buf[16],
                ])));
            }
            buf.drain(..9 + len);
        }
        match s.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                anyhow::bail!("connection still open, no GOAWAY, after {wait:?} without a byte")
            }
            Err(_) => return Ok(None),
        }
    }
}

/// An h2c connection (prior knowledge) that has sent its preface and empty SETTINGS.
fn h2(topo: &Topology) -> Result<TcpStream> {
    let mut s = connect(topo)?;
    s.write_all(PREFACE)?;
    s.write_all(&frame(SETTINGS, 0, 0, &[]))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(s)
}

/// Writes `f` repeatedly (from another thread, so a server that stops reading cannot block the
/// test) until `bytes` are out, the gateway closes the connection (a write fails other than by
/// timing out: `true`) or 15 s pass; returns how much went out and whether it was closed.
fn flood(mut s: TcpStream, f: Vec<u8>, bytes: usize) -> std::thread::JoinHandle<(usize, bool)> {
    std::thread::spawn(move || {
        let batch: Vec<u8> = f.iter().copied().cycle().take(f.len() * 256).collect();
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        let start = Instant::now();
        let mut sent = 0;
        while sent < bytes && start.elapsed() < Duration::from_secs(15) {
            match s.write(&batch) {
                Ok(0) => return (sent, true),
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return (sent, true),
            }
        }
        (sent, false)
    })
}

fn normal_h2_request_works(topo: &Topology) -> Result<()> {
    let r = topo.http_client().curl(&[
        "--http2-prior-knowledge",
        &format!("http://{VIP}/normal-h2"),
    ])?;
    ensure!(
        r.status == 200 && r.version == "2",
        "normal h2 client: {r:#?}"
    );
    Ok(())
}

/// Rapid reset (CVE-2023-44487): HEADERS then RST_STREAM, 5000 times in a row → GOAWAY
/// ENHANCE_YOUR_CALM (or a close) long before; most streams never reach the backend; another
/// client is served.
#[test]
fn h2_rapid_reset_gets_goaway() -> Result<()> {
    let (topo, _agent, mut backend) = setup("hr", &[])?;
    let mut s = h2(&topo)?;
    let mut burst = Vec::new();
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, GET_BLOCK));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let w = s.try_clone()?;
    let writer = std::thread::spawn(move || {
        let mut w = w;
        let _ = w.write_all(&burst);
    });
    let code = goaway_or_close(&mut s, Duration::from_secs(5))?;
    let _ = writer.join();
    ensure!(
        matches!(code, Some(0xb) | None),
        "rapid reset: GOAWAY {code:?}, want ENHANCE_YOUR_CALM (0xb) or a close"
    );
    normal_h2_request_works(&topo)?;
    std::thread::sleep(Duration::from_millis(300));
    let reached = backend
        .take_lines()
        .iter()
        .filter(|l| l.starts_with("request GET / "))
        .count();
    ensure!(
        reached < 500,
        "{reached} of 5000 reset streams reached the backend"
    );
    Ok(())
}

/// CONTINUATION flood: a HEADERS frame without END_HEADERS followed by endless CONTINUATION
/// frames → the connection is closed (GOAWAY or reset) after a bounded amount, not buffered.
#[test]
fn h2_continuation_flood_is_cut() -> Result<()> {
    let (topo, agent, _backend) = setup("hc", &[])?;
    let pid = agent.pid().context("agent pid")?;
    let rss_before = rss_kib(pid)?;
    let mut s = h2(&topo)?;
    s.write_all(&frame(HEADERS, 0, 1, GET_BLOCK))?;
    // Literal header `x-a: <16 KiB - 5>`, never indexed, in each CONTINUATION frame.
    let mut lit = vec![0x10, 0x03, b'x', b'-', b'a', 0x7f];
    let n = 16 * 1024 - 16;
    // HPACK integer continuation of the value length (n - 127), then the value.
    let mut rest = n - 127;
    while rest >= 128 {
        lit.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    lit.push(rest as u8);
    lit.extend(std::iter::repeat_n(b'v', n));
    let cont = frame(CONTINUATION, 0, 1, &lit);
    let total = 64 * 1024 * 1024;
    let writer = flood(s.try_clone()?, cont, total);
    let code = goaway_or_close(&mut s, Duration::from_secs(5));
    let (sent, _) = writer.join().unwrap_or((0, false));
    ensure!(
        sent < total,
        "64 MiB of CONTINUATION accepted without a close (GOAWAY {code:?})"
    );
    ensure!(code.is_ok(), "{code:?}");
    let grown = rss_kib(pid)?.saturating_sub(rss_before);
    ensure!(
        grown < 32 * 1024,
        "the agent grew by {grown} KiB during the flood"
    );
    normal_h2_request_works(&topo)?;
    Ok(())
}

/// HPACK bomb: one 4 KB header put in the dynamic table, then referenced 10,000 times in one
/// HEADERS frame of 14 KB, which decodes to 40 MB of headers. The decoded list is bounded by
/// the header list size (60 KiB): the stream is refused (never answered 200), the agent does
/// not grow, others are served.
#[test]
fn h2_hpack_bomb_is_refused() -> Result<()> {
    let (topo, agent, _backend) = setup("hb", &[])?;
    let pid = agent.pid().context("agent pid")?;
    let rss_before = rss_kib(pid)?;
    let mut s = h2(&topo)?;
    let mut block = GET_BLOCK.to_vec();
    // Literal with incremental indexing, new name `x-b`, a 4000-byte value.
    block.extend_from_slice(&[0x40, 0x03, b'x', b'-', b'b', 0x7f]);
    let mut rest = 4000 - 127;
    while rest >= 128 {
        block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    block.push(rest as u8);
    block.extend(std::iter::repeat_n(b'v', 4000));
    // Index 62: the entry just added.
    block.extend(std::iter::repeat_n(0xbe, 10_000));
    s.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))?;
    // Read what comes back for 3 s: a 200 on stream 1 would mean the bomb was decoded whole.
    s.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let mut answered_200 = false;
    let mut refused = false;
    let mut i = 0;
    while i + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[i], got[i + 1], got[i + 2]]) as usize;
        let (ty, stream) = (
            got[i + 3],
            u32::from_be_bytes([got[i + 5], got[i + 6], got[i + 7], got[i + 8]]) & 0x7fff_ffff,
        );
        let payload = &got[(i + 9).min(got.len())..(i + 9 + len).min(got.len())];
        if ty == HEADERS && stream == 1 {
            // :status 200 is static index 8 (0x88); anything else (431) is a refusal.
            answered_200 |= payload.first() == Some(&0x88);
            refused |= payload.first() != Some(&0x88);
        }
        refused |= ty == RST_STREAM || ty == GOAWAY;
        i += 9 + len;
    }
    ensure!(!answered_200, "the HPACK bomb was decoded and answered 200");
    ensure!(
        refused || got.is_empty(),
        "no refusal, reset or GOAWAY for the bomb: {} bytes back",
        got.len()
    );
    let grown = rss_kib(pid)?.saturating_sub(rss_before);
    ensure!(grown < 32 * 1024, "the agent grew by {grown} KiB");
    normal_h2_request_works(&topo)?;
    Ok(())
}

/// PING and SETTINGS floods from a client that never reads: the gateway answers only as fast
/// as the client reads (h2 reads no further frame while an answer is pending), so memory stays
/// bounded, and the stalled connection is closed at the idle timeout; others are served.
#[test]
fn h2_ping_and_settings_floods_are_bounded_and_closed() -> Result<()> {
    let (topo, agent, _backend) = setup("hp", &["--stream-idle-timeout", "3s"])?;
    let pid = agent.pid().context("agent pid")?;
    let rss_before = rss_kib(pid)?;
    for (what, f) in [
        ("PING", frame(PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8])),
        ("SETTINGS", frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])),
    ] {
        let s = h2(&topo)?;
        let total = 256 * 1024 * 1024;
        let start = Instant::now();
        let writer = flood(s.try_clone()?, f, total);
        std::thread::sleep(Duration::from_secs(1));
        normal_h2_request_works(&topo).with_context(|| format!("during the {what} flood"))?;
        // The writer ends when the gateway closes the connection (or after 15 s).
        let (sent, closed) = writer.join().unwrap_or((0, false));
        ensure!(
            closed,
            "{what} flood: connection still open {:?} in (idle timeout 3 s), {sent} bytes sent",
            start.elapsed()
        );
        ensure!(sent < total, "{what} flood: all {total} bytes accepted");
        drop(s);
    }
    let grown = rss_kib(pid)?.saturating_sub(rss_before);
    ensure!(
        grown < 32 * 1024,
        "the agent grew by {grown} KiB during the floods"
    );
    Ok(())
}

/// `--max-connections 4`: with 4 connections open, a fifth is accepted and closed at once,
/// counted in `gateway_overload_rejected_connections_total` and logged once; once they close,
/// new connections are served again.
#[test]
fn max_connections_closes_the_excess_at_once() -> Result<()> {
    let (topo, agent, _backend) = setup("hm", &["--max-connections", "4"])?;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&topo)?);
    }
    // Let the workers accept them.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let (reply, closed) = exchange(
            &topo,
            b"GET /over HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(2),
        )?;
        ensure!(
            closed && reply.is_empty(),
            "connection beyond the limit: closed {closed}, {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    let (code, metrics) = agent.get_at("127.0.0.1:15090".parse()?, "/stats/prometheus")?;
    ensure!(code == 200, "{metrics}");
    let rejected: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gateway_overload_rejected_connections_total "))
        .context("no gateway_overload_rejected_connections_total")?
        .trim()
        .parse()?;
    ensure!(rejected >= 3.0, "rejected {rejected}, want >= 3");
    ensure!(
        agent.log().matches("overload:").count() == 1,
        "want one overload log line: {}",
        agent.log()
    );
    ensure!(
        agent.log().contains("open files: soft limit raised"),
        "no RLIMIT_NOFILE line: {}",
        agent.log()
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let r = topo
        .http_client()
        .get(&format!("http://{VIP}/after"), &[])?;
    ensure!(r.status == 200, "after the held connections closed: {r:#?}");
    Ok(())
}
