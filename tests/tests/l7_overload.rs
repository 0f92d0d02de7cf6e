//! Connection load and the overload manager, through the real agent on the demo config:
//!
//! - 10,000 downstream connections (half HTTP/1.1 keep-alive, half HTTP/2), each having made
//!   one request, are held while wrk keeps requesting; all of them still answer afterwards, and
//!   the agent's memory per held connection is reported (docs/benchmarks.md).
//! - `--overload-max-heap`: past 80 % of it idle keep-alive connections are closed and
//!   keep-alive is off, past 95 % new connections are closed at once; below again, the agent
//!   serves normally.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{http::HttpClient, wait_until, Agent, Opts, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const VIP: &str = "198.18.0.1";
const HELD: usize = 10_000;

fn demo_agent(topo: &Topology, extra: &[&str]) -> Result<Agent> {
    let files = gateway_tests::manifests::demo_files()?;
    let borrowed: Vec<(&str, String)> =
        files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let mut args = vec!["--vip", VIP];
    args.extend_from_slice(extra);
    Agent::start_with(topo, &borrowed, &args)
}

/// The agent's resident memory, in bytes.
fn rss_bytes(agent: &Agent) -> Result<u64> {
    Ok(gateway_tests::proc::rss_kib(agent.pid().context("agent pid")?)? * 1024)
}

const REQUEST: &[u8] = b"GET /x HTTP/1.1\r\nhost: web.demo.local\r\n\r\n";

/// Reads one HTTP/1.1 response (headers and a Content-Length or chunked body); returns the
/// status and whether the server said `connection: close`.
async fn read_response(s: &mut TcpStream) -> Result<(u16, bool)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        ensure!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("status line")?;
    let close = head.contains("\r\nconnection: close");
    let mut body = buf[head_end..].to_vec();
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while body.len() < len {
            let n = s.read(&mut chunk).await?;
            ensure!(n > 0, "connection closed inside a body");
            body.extend_from_slice(&chunk[..n]);
        }
    } else if head.contains("transfer-encoding: chunked") {
        while !body.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut chunk).await?;
            ensure!(n > 0, "connection closed inside a chunked body");
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Ok((status, close))
}

/// An HTTP/1.1 connection that made one request and is kept open.
async fn http1_held(addr: SocketAddr) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(REQUEST).await?;
    let (status, _) = read_response(&mut s).await?;
    ensure!(status == 200, "status {status}");
    Ok(s)
}

type H2Send = h2::client::SendRequest<bytes::Bytes>;

/// An HTTP/2 connection that made one request and is kept open.
async fn h2_held(addr: SocketAddr) -> Result<H2Send> {
    let tcp = TcpStream::connect(addr).await?;
    let (send, conn) = h2::client::handshake(tcp).await?;
    tokio::spawn(conn);
    h2_request(send.clone(), addr).await?;
    Ok(send)
}

async fn h2_request(send: H2Send, addr: SocketAddr) -> Result<()> {
    let mut send = send.ready().await?;
    let req = http::Request::get(format!("http://{addr}/x")).body(())?;
    let (resp, _) = send.send_request(req, true)?;
    let resp = resp.await?;
    ensure!(resp.status() == 200, "status {}", resp.status());
    let mut body = resp.into_body();
    while let Some(c) = body.data().await {
        let c = c?;
        let _ = body.flow_control().release_capacity(c.len());
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[test]
fn ten_thousand_connections_held_while_serving() -> Result<()> {
    let topo = Topology::new("ho", 3, Opts::http_backends())?;
    let agent = demo_agent(&topo, &[])?;
    let addr: SocketAddr = format!("{VIP}:8080").parse()?;
    let http = HttpClient::new(topo.client.name());
    ensure!(http.get(&format!("http://{VIP}:8080/x"), &[])?.status == 200);
    let rss0 = rss_bytes(&agent)?;
    let client = topo.client_api();

    // The connections live on one client thread's runtime for the whole test.
    let (tx, rx) = std::sync::mpsc::channel::<Result<String>>();
    let (go_on, wait) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let err_tx = tx.clone();
        let r = client.run(move || {
            let rt = runtime()?;
            rt.block_on(async move {
                // A bounded number of handshakes at once: the listen backlog is finite.
                let gate = Arc::new(Semaphore::new(200));
                let mut h1 = Vec::new();
                let mut h2 = Vec::new();
                for i in 0..HELD {
                    let gate = gate.clone();
                    if i % 2 == 0 {
                        h1.push(tokio::spawn(async move {
                            let _p = gate.acquire().await?;
                            http1_held(addr).await
                        }));
                    } else {
                        h2.push(tokio::spawn(async move {
                            let _p = gate.acquire().await?;
                            h2_held(addr).await
                        }));
                    }
                }
                let mut h1s = Vec::new();
                for (i, t) in h1.into_iter().enumerate() {
                    h1s.push(
                        t.await?
                            .with_context(|| format!("HTTP/1.1 connection {i}"))?,
                    );
                }
                let mut h2s = Vec::new();
                for (i, t) in h2.into_iter().enumerate() {
                    h2s.push(t.await?.with_context(|| format!("HTTP/2 connection {i}"))?);
                }
                let _ = tx.send(Ok(format!(
                    "{} HTTP/1.1 + {} HTTP/2 held",
                    h1s.len(),
                    h2s.len()
                )));
                // Held until the test has measured and loaded the agent.
                let _ = tokio::task::spawn_blocking(move || wait.recv()).await;
                // Every held connection still answers.
                for (i, s) in h1s.iter_mut().enumerate() {
                    s.write_all(REQUEST).await?;
                    let (status, _) = read_response(s)
                        .await
                        .with_context(|| format!("held HTTP/1.1 connection {i}"))?;
                    ensure!(status == 200, "held HTTP/1.1 connection {i}: {status}");
                }
                for (i, s) in h2s.into_iter().enumerate() {
                    h2_request(s, addr)
                        .await
                        .with_context(|| format!("held HTTP/2 connection {i}"))?;
                }
                Ok(())
            })
        });
        if let Err(e) = &r {
            let _ = err_tx.send(Err(anyhow::anyhow!("{e:#}")));
        }
        r
    });
    let held = rx
        .recv_timeout(Duration::from_secs(240))
        .context("connections not opened within 240 s")??;
    std::thread::sleep(Duration::from_millis(500));
    let rss1 = rss_bytes(&agent)?;
    let (_, metrics) = agent.get_at("127.0.0.1:15090".parse()?, "/stats/prometheus")?;
    let heap = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gateway_overload_heap_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("gateway_overload_heap_bytes")?;

    // Requests keep being served beside them.
    let wrk = topo.client.spawn(
        "wrk",
        &[
            "-t1",
            "-c20",
            "-d3",
            "--timeout",
            "5s",
            &format!("http://{VIP}:8080/x"),
        ],
        true,
    )?;
    let wrk_out = wrk.wait_output(Duration::from_secs(30))?;
    go_on.send(()).ok();
    holder
        .join()
        .expect("holder thread panicked")
        .context("the held connections")?;

    let per_conn = rss1.saturating_sub(rss0) / HELD as u64;
    eprintln!(
        "{held}: agent RSS {:.1} MiB -> {:.1} MiB ({:.1} KiB per connection; heap in use {:.1} MiB); wrk beside them: {}",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        per_conn as f64 / 1024.0,
        heap / 1048576.0,
        wrk_out
            .lines()
            .find(|l| l.contains("Requests/sec"))
            .unwrap_or("?")
            .trim()
    );
    ensure!(
        wrk_out.contains("Requests/sec:")
            && !wrk_out.contains("Socket errors")
            && !wrk_out.contains("Non-2xx"),
        "wrk beside {HELD} held connections:\n{wrk_out}"
    );
    // Bounded: hyper's buffers and the task of each connection, far below a thread per
    // connection (which alone would be 8 MiB of stack reserved).
    ensure!(
        per_conn < 64 * 1024,
        "{per_conn} bytes of RSS per held connection"
    );
    Ok(())
}

/// Reads `name value` from a Prometheus scrape.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn overload_heap_limit_closes_idle_connections_then_refuses_new_ones() -> Result<()> {
    let topo = Topology::new("ov", 3, Opts::http_backends())?;
    let metrics_at: SocketAddr = "127.0.0.1:15090".parse()?;
    // The heap this agent needs to serve the demo: the limit is set from it.
    let mut agent = demo_agent(&topo, &[])?;
    let http = HttpClient::new(topo.client.name());
    ensure!(http.get(&format!("http://{VIP}:8080/x"), &[])?.status == 200);
    std::thread::sleep(Duration::from_millis(600));
    let (_, m) = agent.get_at(metrics_at, "/stats/prometheus")?;
    let base = metric(&m, "gateway_overload_heap_bytes").context("heap gauge")? as u64;
    ensure!(base > 0, "heap gauge 0");

    // Part 1: 8 MiB of headroom. Idle keep-alive connections pile up until 80 %; the agent
    // then closes them (keep-alive off), and once below the threshold serves normally again.
    let limit = base + (8 << 20);
    agent.set_extra_args(&["--vip", VIP, "--overload-max-heap", &limit.to_string()]);
    agent.restart()?;
    let addr: SocketAddr = format!("{VIP}:8080").parse()?;
    let client = topo.client_api();
    let (opened, closed_by_server) = client.run(move || {
        runtime()?.block_on(async move {
            let mut held = Vec::new();
            // Open in batches until the server starts closing idle ones.
            for _ in 0..40 {
                for _ in 0..100 {
                    match http1_held(addr).await {
                        Ok(s) => held.push(s),
                        Err(_) => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut closed = 0;
                for s in &mut held {
                    let mut b = [0u8; 1];
                    // An idle kept-alive connection is readable only at EOF.
                    if let Ok(Ok(0)) =
                        tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await
                    {
                        closed += 1;
                    }
                }
                if closed > 0 {
                    return Ok::<_, anyhow::Error>((held.len(), closed));
                }
            }
            Ok((held.len(), 0))
        })
    })?;
    let log = agent.log();
    eprintln!(
        "limit {:.1} MiB (heap at start {:.1} MiB): {opened} idle connections opened, {closed_by_server} closed by the agent",
        limit as f64 / 1048576.0,
        base as f64 / 1048576.0
    );
    ensure!(
        closed_by_server > 0,
        "{opened} idle keep-alive connections held and none closed under --overload-max-heap {limit}; log:\n{log}"
    );
    ensure!(
        log.contains("overload: heap"),
        "no overload log line:\n{log}"
    );
    wait_until(Duration::from_secs(10), "the overload to end", || {
        Ok(agent.log().contains("overload over"))
    })?;
    ensure!(
        http.get(&format!("http://{VIP}:8080/x"), &[])?.status == 200,
        "not serving after the overload"
    );

    // Part 2: a limit below what the agent needs: past 95 % at once, so every new connection
    // is accepted and closed without an answer, and counted; the status port still answers.
    agent.set_extra_args(&["--vip", VIP, "--overload-max-heap", &(base / 2).to_string()]);
    agent.restart()?;
    wait_until(Duration::from_secs(5), "stop_accepting_connections", || {
        let (_, m) = agent.get_at(metrics_at, "/stats/prometheus")?;
        Ok(metric(
            &m,
            "gateway_overload_action_active{action=\"stop_accepting_connections\"}",
        ) == Some(1.0))
    })?;
    let refused = client.run(move || {
        runtime()?.block_on(async move {
            let mut s = TcpStream::connect(addr).await?;
            let _ = s.write_all(REQUEST).await;
            let mut b = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut b)).await;
            Ok::<_, anyhow::Error>(matches!(r, Ok(Ok(0)) | Ok(Err(_))) && b.is_empty())
        })
    })?;
    ensure!(
        refused,
        "a new connection was answered at 2x the heap limit"
    );
    let (_, m) = agent.get_at(metrics_at, "/stats/prometheus")?;
    let rejected = metric(&m, "gateway_overload_rejected_connections_total").unwrap_or(0.0);
    ensure!(rejected >= 1.0, "rejections not counted:\n{m}");
    Ok(())
}
