//! The userspace L4 path: the same TCP and UDP services as the XDP program, served from sockets,
//! for hosts where XDP cannot attach (or is not asked for).
//!
//! The backend choice is the data plane's: the same Maglev ring indexed by the same flow hash, so
//! a flow lands on the same backend whichever path carries it. Userspace always masquerades (the
//! kernel picks the source address); `preserve-source` needs the XDP path. Both families: each
//! listener is bound on its VIP, IPv4 or IPv6, and its backends are of that family.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
};

use crate::{
    maglev,
    plan::{Backend, HashMode, L4Service, Plan, Proto},
};

/// Envoy's default connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A UDP flow with no datagram either way for this long is forgotten.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// Backends of one service and their ring, replaced whole on a config change.
struct Table {
    backends: Vec<Backend>,
    ring: Vec<u32>,
    hash: HashMode,
}

impl Table {
    fn new(s: &L4Service) -> Table {
        Table {
            ring: maglev::build(&s.backends, gateway_common::MAGLEV_RING),
            backends: s.backends.clone(),
            hash: s.hash,
        }
    }

    /// The XDP program's choice for this flow: the same hash of the same fields, per family.
    fn pick(&self, client: SocketAddr, vip: SocketAddr, proto: Proto) -> Option<SocketAddr> {
        let (sp, dp, n) = (client.port().to_be(), vip.port().to_be(), proto.number());
        let h = match (client.ip(), vip.ip()) {
            (IpAddr::V4(c), IpAddr::V4(v)) => {
                let c = u32::from(c).to_be();
                match self.hash {
                    HashMode::SourceIp => gateway_common::src_hash(c),
                    HashMode::FiveTuple => {
                        gateway_common::flow_hash(c, u32::from(v).to_be(), sp, dp, n)
                    }
                }
            }
            (IpAddr::V6(c), IpAddr::V6(v)) => {
                let c = gateway_common::addr6(c.octets());
                match self.hash {
                    HashMode::SourceIp => gateway_common::src_hash6(c),
                    HashMode::FiveTuple => {
                        gateway_common::flow_hash6(c, gateway_common::addr6(v.octets()), sp, dp, n)
                    }
                }
            }
            _ => return None,
        };
        let b = &self.backends[maglev::pick(&self.ring, h)? as usize];
        Some(SocketAddr::new(b.addr, b.port))
    }
}

type Key = (IpAddr, u16, Proto);

struct Listener {
    table: Arc<ArcSwap<Table>>,
    task: JoinHandle<()>,
}

/// Listeners by (vip, port, proto). Removing a listener stops new flows; flows in progress keep
/// their own tasks and finish normally.
#[derive(Default)]
pub struct L4Proxy {
    listeners: HashMap<Key, Listener>,
}

impl L4Proxy {
    /// Binds listeners for new services, swaps tables of existing ones, closes removed ones.
    /// Bind errors are returned together; the other services are still applied.
    pub async fn apply(&mut self, plan: &Plan) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let wanted: HashMap<Key, &L4Service> = plan
            .l4
            .iter()
            .map(|s| ((s.vip, s.port, s.proto), s))
            .collect();
        self.listeners.retain(|k, l| {
            let keep = wanted.contains_key(k);
            if !keep {
                l.task.abort();
            }
            keep
        });
        for (key, svc) in wanted {
            if let Some(l) = self.listeners.get(&key) {
                l.table.store(Arc::new(Table::new(svc)));
                continue;
            }
            let table = Arc::new(ArcSwap::from_pointee(Table::new(svc)));
            let addr = SocketAddr::new(svc.vip, svc.port);
            let task = match svc.proto {
                Proto::Tcp => match TcpListener::bind(addr).await {
                    Ok(l) => tokio::spawn(serve_tcp(l, addr, table.clone())),
                    Err(e) => {
                        errors.push(format!("tcp {addr}: {e}"));
                        continue;
                    }
                },
                Proto::Udp => match UdpSocket::bind(addr).await {
                    Ok(s) => tokio::spawn(serve_udp(Arc::new(s), addr, table.clone())),
                    Err(e) => {
                        errors.push(format!("udp {addr}: {e}"));
                        continue;
                    }
                },
            };
            self.listeners.insert(key, Listener { table, task });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// `a` with an IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) turned
/// back into IPv4, so the hash sees what the XDP program sees.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        a => a,
    }
}

async fn serve_tcp(listener: TcpListener, vip: SocketAddr, table: Arc<ArcSwap<Table>>) {
    loop {
        let (mut client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("tcp {vip}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = canonical(peer);
        // A wildcard listener reports the address the client actually used.
        let local = client.local_addr().map(canonical).unwrap_or(vip);
        let Some(backend) = table.load().pick(peer, local, Proto::Tcp) else {
            // No backend: close, as Envoy's tcp_proxy does.
            continue;
        };
        tokio::spawn(async move {
            let up = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    log::debug!("tcp {peer} -> {backend}: connect: {e}");
                    return;
                }
                Err(_) => {
                    log::debug!("tcp {peer} -> {backend}: connect timeout");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let mut up = up;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        });
    }
}

/// One UDP flow of the userspace path: the connected upstream socket and when the flow last
/// carried a datagram either way (milliseconds since the listener started).
struct UdpFlow {
    up: UdpSocket,
    last_ms: std::sync::atomic::AtomicU64,
}

async fn serve_udp(sock: Arc<UdpSocket>, vip: SocketAddr, table: Arc<ArcSwap<Table>>) {
    use std::sync::atomic::Ordering::Relaxed;
    // One connected upstream socket per client address; its reply task forwards back.
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpFlow>>>> = Arc::default();
    let start = tokio::time::Instant::now();
    let now_ms = move || start.elapsed().as_millis() as u64;
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                log::warn!("udp {vip}: recv: {e}");
                continue;
            }
        };
        let peer = canonical(peer);
        let existing = flows.lock().unwrap().get(&peer).cloned();
        let flow = match existing {
            Some(f) => f,
            None => {
                let Some(backend) = table.load().pick(peer, vip, Proto::Udp) else {
                    continue;
                };
                let any = if backend.is_ipv6() {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                };
                let Ok(up) = UdpSocket::bind(any).await else {
                    continue;
                };
                if up.connect(backend).await.is_err() {
                    continue;
                }
                let flow = Arc::new(UdpFlow {
                    up,
                    last_ms: now_ms().into(),
                });
                flows.lock().unwrap().insert(peer, flow.clone());
                let (down, flows, f) = (sock.clone(), flows.clone(), flow.clone());
                tokio::spawn(async move {
                    let mut b = vec![0u8; 65535];
                    loop {
                        match tokio::time::timeout(UDP_IDLE, f.up.recv(&mut b)).await {
                            Ok(Ok(n)) => {
                                f.last_ms.store(now_ms(), Relaxed);
                                let _ = down.send_to(&b[..n], peer).await;
                            }
                            Ok(Err(_)) => break,
                            // Idle only if neither direction moved for UDP_IDLE.
                            Err(_)
                                if now_ms() - f.last_ms.load(Relaxed)
                                    >= UDP_IDLE.as_millis() as u64 =>
                            {
                                break
                            }
                            Err(_) => {}
                        }
                    }
                    flows.lock().unwrap().remove(&peer);
                });
                flow
            }
        };
        flow.last_ms.store(now_ms(), Relaxed);
        let _ = flow.up.send(&buf[..n]).await;
    }
}
