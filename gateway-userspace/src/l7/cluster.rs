//! Upstream clusters at run time: endpoints with their counters, load balancing, outlier
//! ejection, circuit breakers and the pooled upstream client. Counters are process-global
//! atomics, as Envoy's are (§4).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::body::UpBody;
use super::upstream_tls::{Connector, Origination};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rand::Rng;

use crate::plan::http as p;

type SniClients =
    std::collections::HashMap<rustls::pki_types::ServerName<'static>, Client<Connector, UpBody>>;

/// SNIs pooled per worker and cluster before the pools start over.
const MAX_SNI_POOLS: usize = 256;

/// Milliseconds since the first call (a monotonic clock that fits an atomic).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What admin `/clusters` shows of an endpoint.
pub struct EndpointStatus {
    pub addr: SocketAddr,
    pub weight: u32,
    pub active_requests: u32,
    /// Ejected by outlier detection for this much longer (0: healthy).
    pub ejected_for_ms: u64,
    pub ejections: u32,
}

impl Endpoint {
    pub fn status(&self) -> EndpointStatus {
        let until = self.ejected_until.load(Relaxed);
        EndpointStatus {
            addr: self.addr,
            weight: self.weight,
            active_requests: self.active.load(Relaxed),
            ejected_for_ms: until.saturating_sub(now_ms()),
            ejections: self.ejections.load(Relaxed),
        }
    }
}

pub struct Endpoint {
    pub addr: SocketAddr,
    /// `addr` as a URI authority, built once (cloning it per request shares the bytes).
    pub authority: http::uri::Authority,
    pub weight: u32,
    pub active: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gw: AtomicU32,
    /// 0 = not ejected; else `now_ms()` at which the host is eligible again.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

pub struct Cluster {
    pub plan: p::Cluster,
    /// `plan.name` shared, and the Istio destination labels it gives (per request, no copy).
    pub name: std::sync::Arc<str>,
    pub dest: std::sync::Arc<crate::metrics::Dest>,
    pub endpoints: Vec<Endpoint>,
    /// Endpoint indices repeated by weight (RR, RANDOM and P2C sample from it).
    schedule: Vec<usize>,
    rr: AtomicUsize,
    /// Ring hash: (point, endpoint), sorted by point.
    ring: Vec<(u64, usize)>,
    /// One pooled client per L7 worker: a worker reuses only connections its own runtime drives.
    clients: Vec<Client<Connector, UpBody>>,
    /// Auto-SNI TLS clusters: per worker, one pooled client per SNI, since a connection's SNI
    /// is fixed by its handshake (Envoy keys its upstream pools by SNI the same way).
    by_sni: Vec<std::sync::Mutex<SniClients>>,
    /// How `by_sni` clients are made.
    builder: hyper_util::client::legacy::Builder,
    conn: Connector,
    /// DestinationRule `tls`: how connections to the endpoints are secured (None: plain).
    pub tls: Option<std::sync::Arc<Origination>>,
    pub active_requests: AtomicU32,
    pub active_retries: AtomicU32,
    /// HTTP/1.1 upstream connections in use, one per request in flight (`maxConnections`).
    pub conn_slots: tokio::sync::Semaphore,
    /// Requests waiting for one of those slots (`http1MaxPendingRequests`).
    pub pending: AtomicU32,
}

/// What an attempt came to, for outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    /// Connect failure, reset or timeout: locally originated, counted as a gateway error.
    LocalFailure,
}

/// FNV-1a: a stable hash, so consistent-hash placement does not change between builds.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    // Final avalanche (splitmix64) so that nearby keys spread around the ring.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58476d1ce4e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d049bb133111eb);
    h ^ (h >> 31)
}

impl Cluster {
    pub fn new(plan: &p::Cluster) -> Cluster {
        let endpoints: Vec<Endpoint> = plan
            .endpoints
            .iter()
            .map(|e| Endpoint {
                addr: SocketAddr::from((e.addr, e.port)),
                authority: SocketAddr::from((e.addr, e.port))
                    .to_string()
                    .parse()
                    .expect("a socket address is a valid authority"),
                weight: e.weight.max(1),
                active: AtomicU32::new(0),
                consecutive_5xx: AtomicU32::new(0),
                consecutive_gw: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
                ejections: AtomicU32::new(0),
            })
            .collect();
        // Weights reduced by their gcd, and capped, so the schedule stays small.
        let g = endpoints.iter().fold(0u32, |g, e| gcd(g, e.weight)).max(1);
        let mut schedule = Vec::new();
        for (i, e) in endpoints.iter().enumerate() {
            for _ in 0..(e.weight / g).min(1000) {
                schedule.push(i);
            }
        }
        // Interleave (stable order by position-in-share) so RR alternates hosts.
        schedule.sort_by_key(|&i| {
            let n = (endpoints[i].weight / g).min(1000) as usize;
            let k = schedule_rank(i);
            (k % n.max(1), i)
        });
        let mut ring = Vec::new();
        if plan.lb.is_hash() {
            // Ring hash: entries per host proportional to weight, at least 1024 in total.
            let total: u64 = endpoints
                .iter()
                .map(|e| u64::from(e.weight))
                .sum::<u64>()
                .max(1);
            for (i, e) in endpoints.iter().enumerate() {
                let n = (1024 * u64::from(e.weight)).div_ceil(total).max(1);
                for k in 0..n {
                    ring.push((fnv(format!("{}_{k}", e.addr).as_bytes()), i));
                }
            }
            ring.sort_unstable();
        }
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(Duration::from_millis(plan.connect_timeout_ms)));
        conn.set_nodelay(true);
        // The URI scheme says https when the cluster originates TLS; the connector does it.
        conn.enforce_http(false);
        let tls = plan.tls.as_ref().map(|t| Origination::new(t, &plan.name));
        let conn = Connector {
            http: conn,
            tls: tls.clone(),
            sni: None,
        };
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(Duration::from_secs(3600));
        if plan.limits.max_requests_per_connection == 1 {
            // One request per connection: nothing is kept for reuse.
            b.pool_max_idle_per_host(0);
        }
        if plan.http2 {
            b.http2_only(true);
        }
        let clients = (0..super::worker_count())
            .map(|_| b.build(conn.clone()))
            .collect();
        Cluster {
            plan: plan.clone(),
            name: plan.name.as_str().into(),
            dest: crate::metrics::Dest::from_cluster(&plan.name, &plan.namespace),
            endpoints,
            schedule,
            rr: AtomicUsize::new(rand::thread_rng().gen()),
            ring,
            clients,
            by_sni: (0..super::worker_count())
                .map(|_| Default::default())
                .collect(),
            builder: b,
            conn,
            tls,
            active_requests: AtomicU32::new(0),
            active_retries: AtomicU32::new(0),
            conn_slots: tokio::sync::Semaphore::new(
                (plan.limits.max_connections as usize).min(tokio::sync::Semaphore::MAX_PERMITS),
            ),
            pending: AtomicU32::new(0),
        }
    }

    /// The upstream client of the worker running this request, for a request with this
    /// `Host` (it picks the SNI of an auto-SNI TLS cluster).
    pub fn client(&self, host: Option<&str>) -> Client<Connector, UpBody> {
        let w = super::worker_index() % self.clients.len();
        let Some(t) = self.tls.as_ref().filter(|t| t.auto_sni()) else {
            return self.clients[w].clone();
        };
        let sni = t.sni_for(host);
        let mut pools = self.by_sni[w].lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a client sending random Host values must not grow pools without end; the
        // dropped clients' idle connections close.
        if pools.len() >= MAX_SNI_POOLS && !pools.contains_key(&sni) {
            pools.clear();
        }
        pools
            .entry(sni.clone())
            .or_insert_with(|| {
                self.builder.build(Connector {
                    sni: Some(sni),
                    ..self.conn.clone()
                })
            })
            .clone()
    }

    fn eligible(&self, i: usize, now: u64) -> bool {
        let until = self.endpoints[i].ejected_until.load(Relaxed);
        until == 0 || now >= until
    }

    /// Picks an endpoint; `avoid` are hosts already tried (Envoy `previous_hosts`, given up
    /// when nothing else is eligible). `hash` is the consistent-hash key's hash, if any.
    /// None: every endpoint is ejected (or there are none): 503 `no healthy upstream`.
    pub fn pick(&self, hash: Option<u64>, avoid: &[usize]) -> Option<usize> {
        self.pick_inner(hash, avoid, true)
    }

    /// [`Cluster::pick`] for a retry: round robin scans on from the current position without
    /// advancing it, so that retries do not consume the turns of first attempts (with two
    /// hosts, each request's first attempt would otherwise land on the same, failing, host).
    pub fn pick_retry(&self, hash: Option<u64>, avoid: &[usize]) -> Option<usize> {
        self.pick_inner(hash, avoid, false)
    }

    fn pick_inner(&self, hash: Option<u64>, avoid: &[usize], advance: bool) -> Option<usize> {
        if self.endpoints.is_empty() {
            return None;
        }
        let now = now_ms();
        let ok = |i: usize| self.eligible(i, now) && !avoid.contains(&i);
        let first = self.pick_with(hash, &ok, advance);
        first.or_else(|| self.pick_with(hash, &|i| self.eligible(i, now), advance))
    }

    fn pick_with(
        &self,
        hash: Option<u64>,
        ok: &dyn Fn(usize) -> bool,
        advance: bool,
    ) -> Option<usize> {
        let mut rng = rand::thread_rng();
        let n = self.schedule.len();
        if self.plan.lb.is_hash() {
            let h = hash.unwrap_or_else(|| rng.gen());
            let start = self.ring.partition_point(|(p, _)| *p < h);
            for k in 0..self.ring.len() {
                let (_, i) = self.ring[(start + k) % self.ring.len()];
                if ok(i) {
                    return Some(i);
                }
            }
            return None;
        }
        match self.plan.lb {
            p::Lb::RoundRobin => {
                let at = self.rr.load(Relaxed);
                for k in 0..n {
                    let slot = if advance {
                        self.rr.fetch_add(1, Relaxed)
                    } else {
                        at + k
                    };
                    let i = self.schedule[slot % n];
                    if ok(i) {
                        return Some(i);
                    }
                }
                None
            }
            p::Lb::Random => {
                for _ in 0..4 {
                    let i = self.schedule[rng.gen_range(0..n)];
                    if ok(i) {
                        return Some(i);
                    }
                }
                self.scan(rng.gen_range(0..n), ok)
            }
            _ => {
                // LEAST_REQUEST: power of two choices over the weighted schedule.
                let mut best: Option<usize> = None;
                for _ in 0..2 {
                    let mut c = None;
                    for _ in 0..4 {
                        let i = self.schedule[rng.gen_range(0..n)];
                        if ok(i) {
                            c = Some(i);
                            break;
                        }
                    }
                    if let Some(i) = c {
                        best = match best {
                            Some(b)
                                if self.endpoints[b].active.load(Relaxed)
                                    <= self.endpoints[i].active.load(Relaxed) =>
                            {
                                Some(b)
                            }
                            _ => Some(i),
                        };
                    }
                }
                best.or_else(|| self.scan(rng.gen_range(0..n), ok))
            }
        }
    }

    fn scan(&self, start: usize, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.schedule.len();
        (0..n)
            .map(|k| self.schedule[(start + k) % n])
            .find(|&i| ok(i))
    }

    /// Outlier detection (§3.23): consecutive errors eject at once, within maxEjectionPercent
    /// (the first ejection is always allowed); the host returns at the first interval
    /// boundary after baseEjectionTime × ejections (capped at 300 s).
    pub fn record(&self, i: usize, outcome: Outcome) {
        let Some(od) = &self.plan.outlier else { return };
        let e = &self.endpoints[i];
        let (is_5xx, is_gw) = match outcome {
            Outcome::Status(s) => (s >= 500, matches!(s, 502..=504)),
            Outcome::LocalFailure => (true, true),
        };
        if !is_5xx {
            e.consecutive_5xx.store(0, Relaxed);
            e.consecutive_gw.store(0, Relaxed);
            return;
        }
        let c5 = e.consecutive_5xx.fetch_add(1, Relaxed) + 1;
        let cg = if is_gw {
            e.consecutive_gw.fetch_add(1, Relaxed) + 1
        } else {
            e.consecutive_gw.store(0, Relaxed);
            0
        };
        let trip = (od.consecutive_5xx > 0 && c5 >= od.consecutive_5xx)
            || (od.consecutive_gateway_errors > 0 && cg >= od.consecutive_gateway_errors);
        if !trip {
            return;
        }
        let now = now_ms();
        let ejected = (0..self.endpoints.len())
            .filter(|&k| !self.eligible(k, now))
            .count();
        let allowed = ejected == 0
            || (ejected + 1) * 100 <= od.max_ejection_percent as usize * self.endpoints.len();
        if !allowed || !self.eligible(i, now) {
            return;
        }
        let k = u64::from(e.ejections.fetch_add(1, Relaxed) + 1);
        let dur = (od.base_ejection_ms * k).min(300_000);
        let interval = od.interval_ms.max(1);
        let until = now + dur.div_ceil(interval) * interval;
        e.ejected_until.store(until, Relaxed);
        e.consecutive_5xx.store(0, Relaxed);
        e.consecutive_gw.store(0, Relaxed);
        log::info!(
            "outlier detection: ejected {} of {} for {} ms",
            e.addr,
            self.plan.name,
            until - now
        );
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A fixed permutation rank used to interleave the weighted schedule.
fn schedule_rank(i: usize) -> usize {
    i.wrapping_mul(2654435761) >> 4
}

/// Guard for a counted resource (active requests, retries): decremented on drop.
pub struct Counted<'a>(pub &'a AtomicU32);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Increments `c` unless it is at `limit` (Envoy circuit breakers).
pub fn try_acquire(c: &AtomicU32, limit: u32) -> Option<Counted<'_>> {
    let mut cur = c.load(Relaxed);
    loop {
        if cur >= limit {
            return None;
        }
        match c.compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed) {
            Ok(_) => return Some(Counted(c)),
            Err(v) => cur = v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fnv, now_ms, try_acquire, Cluster, Outcome};
    use crate::plan::http as p;
    use std::net::Ipv4Addr;
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    fn cluster(lb: p::Lb, n: u8, outlier: Option<p::Outlier>) -> Cluster {
        Cluster::new(&p::Cluster {
            name: "c".into(),
            namespace: String::new(),
            http2: false,
            endpoints: (1..=n)
                .map(|k| p::Endpoint {
                    addr: Ipv4Addr::new(10, 0, 0, k).into(),
                    port: 80,
                    weight: 1,
                })
                .collect(),
            lb,
            connect_timeout_ms: 1000,
            limits: p::Limits::default(),
            outlier,
            tls: None,
        })
    }

    #[tokio::test]
    async fn retries_leave_first_attempts_spread() {
        let c = cluster(p::Lb::RoundRobin, 2, None);
        // Each request: a first attempt, then a retry avoiding it. The first attempts alternate.
        let firsts: Vec<usize> = (0..6)
            .map(|_| {
                let a = c.pick(None, &[]).unwrap();
                let b = c.pick_retry(None, &[a]).unwrap();
                assert_ne!(a, b);
                a
            })
            .collect();
        // (The schedule's starting point is random, so which host comes first is not fixed.)
        assert!(firsts.windows(2).all(|w| w[0] != w[1]), "{firsts:?}");
    }

    #[tokio::test]
    async fn round_robin_cycles_and_avoids_tried_hosts() {
        let c = cluster(p::Lb::RoundRobin, 3, None);
        let mut seen = [0; 3];
        for _ in 0..30 {
            seen[c.pick(None, &[]).unwrap()] += 1;
        }
        assert_eq!(seen, [10, 10, 10]);
        for _ in 0..10 {
            let i = c.pick(None, &[0, 1]).unwrap();
            assert_eq!(i, 2);
        }
        // All tried: the predicate gives up and any host is picked.
        assert!(c.pick(None, &[0, 1, 2]).is_some());
    }

    #[tokio::test]
    async fn least_request_prefers_idle_host() {
        let c = cluster(p::Lb::LeastRequest, 2, None);
        c.endpoints[0].active.store(100, Relaxed);
        let idle = (0..200).filter(|_| c.pick(None, &[]) == Some(1)).count();
        // P2C picks the busy host only when both samples are it (1/4 of the time).
        assert!(idle > 120, "{idle}");
    }

    #[tokio::test]
    async fn consistent_hash_is_sticky() {
        let c = cluster(p::Lb::HashHeader("x".into()), 5, None);
        let h = fnv(b"user-1");
        let first = c.pick(Some(h), &[]).unwrap();
        assert!((0..50).all(|_| c.pick(Some(h), &[]) == Some(first)));
        let spread: std::collections::BTreeSet<_> = (0..200)
            .map(|k| c.pick(Some(fnv(format!("u{k}").as_bytes())), &[]).unwrap())
            .collect();
        assert_eq!(spread.len(), 5);
    }

    #[tokio::test]
    async fn outlier_ejection_respects_max_percent() {
        let od = p::Outlier {
            consecutive_5xx: 2,
            consecutive_gateway_errors: 0,
            interval_ms: 10,
            base_ejection_ms: 50,
            max_ejection_percent: 50,
        };
        let c = cluster(p::Lb::RoundRobin, 2, Some(od));
        c.record(0, Outcome::Status(500));
        assert!(c.eligible(0, now_ms()));
        c.record(0, Outcome::Status(503));
        assert!(!c.eligible(0, now_ms()));
        // The second host would make 100 % ejected: not allowed.
        c.record(1, Outcome::LocalFailure);
        c.record(1, Outcome::LocalFailure);
        assert!(c.eligible(1, now_ms()));
        assert!((0..10).all(|_| c.pick(None, &[]) == Some(1)));
        std::thread::sleep(Duration::from_millis(70));
        assert!(c.eligible(0, now_ms()));
    }

    #[test]
    fn breaker_limits() {
        let a = AtomicU32::new(0);
        let g1 = try_acquire(&a, 2).unwrap();
        let _g2 = try_acquire(&a, 2).unwrap();
        assert!(try_acquire(&a, 2).is_none());
        drop(g1);
        assert!(try_acquire(&a, 2).is_some());
    }
}
