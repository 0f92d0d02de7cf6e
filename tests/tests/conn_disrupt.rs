//! Connection disruption, in the style of Cilium's conn-disrupt check: long-lived clients of
//! every kind run while the config changes 100 times and the agent is replaced 10 times, and
//! the test reports what they lost (nothing may be lost).
//!
//! - TCP through the XDP path (demo port 31400): one connection streams a counter and checks
//!   every echoed byte; a reset or a gap ends it.
//! - UDP through the XDP path (demo port 5353): one socket sends numbered datagrams, one at a
//!   time, and waits for each echo (no retry: a lost datagram counts).
//! - HTTP/1.1 keep-alive (wrk, 50 connections) and HTTP/2 (20 connections of the client below,
//!   one stream at a time) through the L7 path on port 8080. The HTTP/2 client does what real
//!   ones do at GOAWAY: it opens a new connection, and a request refused by the GOAWAY (above
//!   its last stream id, so never processed: RFC 9113 6.8) is sent again there; that is
//!   counted as refused, not failed. A stream that fails in any other way is a failure.
//!
//! A replacement is a hand-over as a surge upgrade does it ([`Agent::replace`]): the next agent
//! starts beside the running one (ports shared with SO_REUSEPORT, the pinned XDP state
//! adopted), then the old one drains (`connection: close`, GOAWAY) and exits; connections
//! queued on its listeners move to the new one (`tcp_migrate_req`).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{wait_until, Agent, Opts, Topology};

const VIP: &str = "198.18.0.1";
const RELOADS: usize = 100;
const RESTARTS: usize = 10;
/// How long wrk runs: longer than the reloads and replacements take (about 40 s here, 46.5 s
/// seen in a CI run), so that every disruption happens under load.
const LOAD_SECS: u64 = 65;

#[derive(Default)]
struct Counts {
    tcp_bytes: AtomicU64,
    udp_sent: AtomicU64,
    udp_answered: AtomicU64,
}

#[test]
fn clients_lose_nothing_across_reloads_and_restarts() -> Result<()> {
    let topo = Topology::new("cd", 3, Opts::http_backends())?;
    let files = gateway_tests::manifests::demo_files()?;
    let borrowed: Vec<(&str, String)> =
        files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let mut agent = Agent::start_with(&topo, &borrowed, &["--vip", VIP, "--reload-ms", "50"])?;
    let (web_name, web) = gateway_tests::manifests::demo_web(&files)?;

    let counts = Arc::new(Counts::default());
    let h2_stats = Arc::new(H2Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let client = topo.client_api();
    let tcp_addr: SocketAddr = format!("{VIP}:31400").parse()?;
    let udp_addr: SocketAddr = format!("{VIP}:5353").parse()?;

    let mut stream = client.open_stream(tcp_addr)?;
    let tcp = {
        let (counts, stop) = (counts.clone(), stop.clone());
        thread::spawn(move || -> Result<()> {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let line = format!("{i:015}\n");
                stream
                    .echo(line.as_bytes())
                    .with_context(|| format!("TCP echo #{i}"))?;
                counts
                    .tcp_bytes
                    .fetch_add(line.len() as u64, Ordering::Relaxed);
                i += 1;
                thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
    };
    let udp = {
        let (counts, stop, client) = (counts.clone(), stop.clone(), client.clone());
        thread::spawn(move || -> Result<Vec<u64>> {
            client.run(move || {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.connect(udp_addr)?;
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                let mut lost = Vec::new();
                let mut buf = [0u8; 256];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let msg = format!("seq {i}");
                    s.send(msg.as_bytes())?;
                    counts.udp_sent.fetch_add(1, Ordering::Relaxed);
                    // Skip stale echoes of earlier datagrams (a late answer is not a loss).
                    let deadline = Instant::now() + Duration::from_secs(1);
                    loop {
                        match s.recv(&mut buf) {
                            // The backend answers `NAME:` and the payload.
                            Ok(n) if buf[..n].ends_with(format!(":{msg}").as_bytes()) => {
                                counts.udp_answered.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(_) if Instant::now() < deadline => continue,
                            _ => {
                                lost.push(i);
                                break;
                            }
                        }
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(lost)
            })
        })
    };
    let secs = LOAD_SECS.to_string();
    let wrk = topo.client.spawn(
        "wrk",
        &[
            "-t1",
            "-c50",
            "-d",
            &secs,
            "--timeout",
            "5s",
            &format!("http://{VIP}:8080/x"),
        ],
        true,
    )?;
    let h2 = {
        let (stats, stop, client) = (h2_stats.clone(), stop.clone(), client.clone());
        let addr: SocketAddr = format!("{VIP}:8080").parse()?;
        thread::spawn(move || -> Result<()> {
            client.run(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let tasks: Vec<_> = (0..H2_CONNECTIONS)
                        .map(|_| tokio::spawn(h2_client(addr, stop.clone(), stats.clone())))
                        .collect();
                    for t in tasks {
                        t.await??;
                    }
                    Ok(())
                })
            })
        })
    };
    let started = Instant::now();
    let progress = |what: &str| -> Result<()> {
        let (b, u) = (
            counts.tcp_bytes.load(Ordering::Relaxed),
            counts.udp_answered.load(Ordering::Relaxed),
        );
        wait_until(Duration::from_secs(5), what, || {
            Ok((counts.tcp_bytes.load(Ordering::Relaxed) > b + 160
                && counts.udp_answered.load(Ordering::Relaxed) > u + 10)
                || tcp.is_finished()
                || udp.is_finished()
                || h2.is_finished())
        })?;
        ensure!(
            !tcp.is_finished() && !udp.is_finished() && !h2.is_finished(),
            "a client ended while {what}"
        );
        Ok(())
    };
    progress("starting")?;

    let g0 = agent.generation()?;
    for i in 0..RELOADS {
        let changed = web.replace(
            "  - name: default\n    route:\n",
            &format!(
                "  - name: default\n    headers: {{response: {{set: {{x-revision: \"{i}\"}}}}}}\n    route:\n"
            ),
        );
        agent.write_config(&[(web_name, changed)])?;
        thread::sleep(Duration::from_millis(110));
    }
    let applied = agent.generation()? - g0;
    progress("after the reloads")?;
    for i in 0..RESTARTS {
        agent
            .replace()
            .with_context(|| format!("replacement {}", i + 1))?;
        progress(&format!("after replacement {}", i + 1))?;
    }
    let took = started.elapsed();
    ensure!(
        took < Duration::from_secs(LOAD_SECS - 5),
        "reloads and replacements took {took:?}: longer than the load ({LOAD_SECS} s)"
    );
    stop.store(true, Ordering::Relaxed);
    let tcp_result = tcp.join().expect("TCP client panicked");
    let lost = udp.join().expect("UDP client panicked")?;
    let wrk_out = wrk.wait_output(Duration::from_secs(LOAD_SECS + 30))?;
    let h2_result = h2.join().expect("HTTP/2 client panicked");
    let wrk_line = wrk_out
        .lines()
        .find(|l| l.contains("requests in"))
        .with_context(|| format!("wrk output:\n{wrk_out}"))?;
    eprintln!(
        "conn-disrupt: {applied} of {RELOADS} reloads applied, {RESTARTS} replacements in {took:?}\n  \
         TCP (XDP): {} bytes echoed, {}\n  UDP (XDP): {} of {} datagrams answered, lost {:?}\n  \
         HTTP/1.1 (wrk): {}\n  HTTP/2: {} requests answered 200 on {} connections, {} refused by GOAWAY \
         and sent again, {}",
        counts.tcp_bytes.load(Ordering::Relaxed),
        match &tcp_result {
            Ok(()) => "0 lost".to_string(),
            Err(e) => format!("broken: {e:#}"),
        },
        counts.udp_answered.load(Ordering::Relaxed),
        counts.udp_sent.load(Ordering::Relaxed),
        lost,
        wrk_line.trim(),
        h2_stats.ok.load(Ordering::Relaxed),
        h2_stats.connections.load(Ordering::Relaxed),
        h2_stats.refused.load(Ordering::Relaxed),
        match &h2_result {
            Ok(()) => "0 failed".to_string(),
            Err(e) => format!("failed: {e:#}"),
        },
    );
    tcp_result?;
    ensure!(lost.is_empty(), "UDP datagrams lost: {lost:?}");
    ensure!(
        applied >= 50,
        "only {applied} of {RELOADS} changes were applied as new generations"
    );
    ensure!(
        !wrk_out.contains("Socket errors") && !wrk_out.contains("Non-2xx"),
        "wrk saw errors:\n{wrk_out}"
    );
    h2_result?;
    ensure!(
        h2_stats.ok.load(Ordering::Relaxed) > 1000,
        "HTTP/2: only {} requests answered",
        h2_stats.ok.load(Ordering::Relaxed)
    );
    Ok(())
}

const H2_CONNECTIONS: usize = 20;

#[derive(Default)]
struct H2Stats {
    ok: AtomicU64,
    refused: AtomicU64,
    connections: AtomicU64,
}

/// Requests `GET /x` one after another until `stop`, moving to a new connection at GOAWAY.
/// Any answer but 200, or a stream that fails other than refused by GOAWAY, is an error.
async fn h2_client(addr: SocketAddr, stop: Arc<AtomicBool>, stats: Arc<H2Stats>) -> Result<()> {
    let mut n = 0u64;
    'connection: while !stop.load(Ordering::Relaxed) {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("HTTP/2 connect after {n} requests"))?;
        let (mut send, conn) = h2::client::handshake(tcp)
            .await
            .context("HTTP/2 handshake")?;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            // Not ready: the connection got GOAWAY (or ended): go to a new one.
            send = match send.ready().await {
                Ok(s) => s,
                Err(_) => continue 'connection,
            };
            let req = http::Request::get(format!("http://{addr}/x")).body(())?;
            let (resp, _) = match send.send_request(req, true) {
                Ok(r) => r,
                Err(e) if e.is_go_away() => continue 'connection,
                Err(e) => return Err(e).context(format!("HTTP/2 request #{n}")),
            };
            let resp = match resp.await {
                Ok(r) => r,
                Err(e) if refused(&e) => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    continue 'connection;
                }
                Err(e) => return Err(e).context(format!("HTTP/2 request #{n}")),
            };
            ensure!(
                resp.status() == 200,
                "HTTP/2 request #{n}: {}",
                resp.status()
            );
            let mut body = resp.into_body();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.with_context(|| format!("HTTP/2 body #{n}"))?;
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            stats.ok.fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
    }
    Ok(())
}

/// A stream the server never processed: refused, or above the last stream id of a graceful
/// GOAWAY.
fn refused(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM)
        || (e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR))
}
