//! A stand-in for the Kubernetes API server: the list/watch protocol only, on loopback in a
//! test namespace, so `gateway run --kubernetes` can be tested without a cluster.
//!
//! What it speaks is what a real API server sends a client of `GET .../{plural}`:
//! - list: `{"kind":"XList","apiVersion":..,"metadata":{"resourceVersion":"N"},"items":[..]}`
//!   (items without kind/apiVersion, as the real one sends them);
//! - watch (`?watch=true&resourceVersion=N`): a chunked stream of one JSON event per line,
//!   `{"type":"ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR","object":..}`, replaying every
//!   change after N; a watch from before the compaction point gets the `410 Expired` ERROR
//!   event (the status the real one sends), then the stream ends.
//!
//! The test drives it: [`ApiServer::apply`] / [`ApiServer::delete`] change objects (each
//! change gets the next resourceVersion), [`ApiServer::compact`] expires every older
//! resourceVersion, [`ApiServer::set_down`] makes it go away (connections reset, new ones
//! closed) and come back, [`ApiServer::bookmark`] sends a BOOKMARK on every open watch,
//! [`ApiServer::end_watches`] ends open watches as the real one does at `timeoutSeconds`.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::Netns;

/// (collection path without namespace, namespace, name).
type Key = (String, String, String);

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Every change: (resourceVersion, collection, event type, object).
    events: Vec<(u64, String, &'static str, Value)>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    /// Bumped to end every open watch (with 410 when it started before `compacted`).
    epoch: u64,
    /// Bumped to send a BOOKMARK on every open watch.
    bookmarks: u64,
    down: bool,
    /// The networking.istio.io versions `/apis` announces (None: the default three).
    istio_versions: Option<Vec<String>>,
    /// Request lines seen ("GET /api/v1/services?..."), for assertions.
    requests: Vec<String>,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
}

/// The collection path of a kind: `/api/v1/pods`, `/apis/networking.istio.io/v1/gateways`.
fn collection(api_version: &str, kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    // The plural kube derives for every kind the gateway watches.
    let plural = if lower.ends_with('y') && !lower.ends_with("ay") {
        format!("{}ies", &lower[..lower.len() - 1])
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    };
    if api_version.contains('/') {
        format!("/apis/{api_version}/{plural}")
    } else {
        format!("/api/{api_version}/{plural}")
    }
}

impl ApiServer {
    /// Listens on loopback inside `ns` (where the agent under test runs).
    pub fn start(ns: &Netns) -> anyhow::Result<ApiServer> {
        let listener = ns.run_in(|| Ok(TcpListener::bind("127.0.0.1:0")?))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (st, sp) = (st.clone(), sp.clone());
                        std::thread::spawn(move || {
                            let _ = serve_conn(conn, &st, &sp);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(ApiServer { addr, state, stop })
    }

    /// A kubeconfig for this server (plain HTTP, no credentials), written into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let p = dir.join("kubeconfig");
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster: {{server: \"http://{}\"}}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: standin\n  context: {{cluster: standin, user: test}}\ncurrent-context: standin\n",
                self.addr
            ),
        )?;
        Ok(p)
    }

    fn change<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (m, cv) = &*self.state;
        let mut st = m.lock().unwrap();
        let r = f(&mut st);
        cv.notify_all();
        r
    }

    /// Creates or replaces an object (JSON with apiVersion, kind, metadata.name and maybe
    /// metadata.namespace); returns its new resourceVersion.
    pub fn apply(&self, mut obj: Value) -> u64 {
        self.change(|st| {
            st.rv += 1;
            let rv = st.rv;
            let av = obj["apiVersion"].as_str().unwrap_or_default().to_string();
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            let md = obj["metadata"].as_object_mut().expect("metadata");
            let ns = md
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string();
            let name = md["name"].as_str().unwrap_or_default().to_string();
            md.insert("namespace".into(), json!(ns));
            md.insert("resourceVersion".into(), json!(rv.to_string()));
            md.entry("uid")
                .or_insert_with(|| json!(format!("00000000-0000-4000-8000-{rv:012}")));
            md.entry("creationTimestamp")
                .or_insert_with(|| json!("2026-12-07T00:00:00Z"));
            let key = (collection(&av, &kind), ns, name);
            let ty = if st.objects.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            st.events.push((rv, key.0.clone(), ty, obj.clone()));
            st.objects.insert(key, obj);
            rv
        })
    }

    /// Deletes an object; true if it existed.
    pub fn delete(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> bool {
        self.change(|st| {
            let key = (
                collection(api_version, kind),
                ns.to_string(),
                name.to_string(),
            );
            let Some(mut obj) = st.objects.remove(&key) else {
                return false;
            };
            st.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
            let rv = st.rv;
            st.events.push((rv, key.0, "DELETED", obj));
            true
        })
    }

    /// Expires every resourceVersion up to now (etcd compaction): open watches get 410 Gone,
    /// and so does any watch that resumes from before now; clients must relist.
    pub fn compact(&self) {
        self.change(|st| {
            st.compacted = st.rv + 1;
            st.epoch += 1;
        });
    }

    /// Ends every open watch normally (as at the end of `timeoutSeconds`); clients resume from
    /// the last resourceVersion they saw (an event's or a bookmark's).
    pub fn end_watches(&self) {
        self.change(|st| st.epoch += 1);
    }

    /// Sends a BOOKMARK with the current resourceVersion on every open watch.
    pub fn bookmark(&self) {
        self.change(|st| st.bookmarks += 1);
    }

    /// Down: every open connection is reset and new ones are closed at once. Up: serving again.
    pub fn set_down(&self, down: bool) {
        self.change(|st| {
            st.down = down;
            st.epoch += 1;
        });
    }

    /// The networking.istio.io versions discovery (`GET /apis`) announces: an older Istio
    /// serves no v1, a cluster without Istio none.
    pub fn set_istio_versions(&self, versions: &[&str]) {
        self.change(|st| {
            st.istio_versions = Some(versions.iter().map(|v| v.to_string()).collect())
        });
    }

    pub fn resource_version(&self) -> u64 {
        self.state.0.lock().unwrap().rv
    }

    /// The request lines seen so far that contain `needle`.
    pub fn requests(&self, needle: &str) -> Vec<String> {
        let st = self.state.0.lock().unwrap();
        st.requests
            .iter()
            .filter(|r| r.contains(needle))
            .cloned()
            .collect()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.set_down(true);
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Splits `/apis/g/v/namespaces/ns/plural` into (`/apis/g/v/plural`, Some(ns)).
fn split_namespace(path: &str) -> (String, Option<String>) {
    let parts: Vec<&str> = path.split('/').collect();
    if let Some(i) = parts.iter().position(|p| *p == "namespaces") {
        if parts.len() == i + 3 {
            let mut p = parts[..i].to_vec();
            p.push(parts[i + 2]);
            return (p.join("/"), Some(parts[i + 1].to_string()));
        }
    }
    (path.to_string(), None)
}

fn serve_conn(
    conn: TcpStream,
    state: &Arc<(Mutex<State>, Condvar)>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    conn.set_nonblocking(false)?;
    let epoch0 = {
        let st = state.0.lock().unwrap();
        if st.down {
            return Ok(()); // dropped: the client sees the connection closed
        }
        st.epoch
    };
    conn.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        // One request head (GET only: no bodies).
        let mut line = String::new();
        loop {
            if stop.load(Ordering::Relaxed) || state.0.lock().unwrap().epoch != epoch0 {
                return Ok(());
            }
            match reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) => break,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            }
        }
        let request_line = line.trim_end().to_string();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        let target = request_line.split(' ').nth(1).unwrap_or("/").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let (coll, ns) = split_namespace(path);
        state.0.lock().unwrap().requests.push(request_line.clone());
        if path == "/apis" {
            discovery(&mut out, state)?;
            continue;
        }
        if !served(state, &coll) {
            // As the API server answers for a group whose CRDs are not installed.
            let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": "the server could not find the requested resource",
                "reason": "NotFound", "code": 404})
            .to_string();
            write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        }
        if matches!(query_param(query, "watch"), Some("true" | "1")) {
            let from: u64 = query_param(query, "resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return watch(&mut out, state, stop, &coll, ns.as_deref(), from);
        }
        list(&mut out, state, &coll, ns.as_deref())?;
    }
}

fn list(
    out: &mut TcpStream,
    state: &Arc<(Mutex<State>, Condvar)>,
    coll: &str,
    ns: Option<&str>,
) -> anyhow::Result<()> {
    let body = {
        let st = state.0.lock().unwrap();
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((c, n, _), _)| c == coll && ns.is_none_or(|ns| ns == n))
            .map(|(_, o)| {
                let mut o = o.clone();
                let m = o.as_object_mut().expect("object");
                m.remove("apiVersion");
                m.remove("kind");
                o
            })
            .collect();
        let api_version = coll
            .trim_start_matches("/apis/")
            .trim_start_matches("/api/")
            .rsplit_once('/')
            .map(|(v, _)| v.to_string())
            .unwrap_or_default();
        json!({
            "kind": "List",
            "apiVersion": api_version,
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        })
        .to_string()
    };
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// The networking.istio.io versions discovery announces.
fn istio_versions(state: &Arc<(Mutex<State>, Condvar)>) -> Vec<String> {
    state
        .0
        .lock()
        .unwrap()
        .istio_versions
        .clone()
        .unwrap_or_else(|| vec!["v1".into(), "v1beta1".into(), "v1alpha3".into()])
}

/// Whether a collection path is served: Istio's only at the versions discovery announces.
fn served(state: &Arc<(Mutex<State>, Condvar)>, coll: &str) -> bool {
    match coll.strip_prefix("/apis/networking.istio.io/") {
        Some(rest) => {
            let version = rest.split('/').next().unwrap_or("");
            istio_versions(state).iter().any(|v| v == version)
        }
        None => true,
    }
}

/// `GET /apis`: the APIGroupList of the groups the gateway reads.
fn discovery(out: &mut TcpStream, state: &Arc<(Mutex<State>, Condvar)>) -> anyhow::Result<()> {
    let istio = istio_versions(state);
    let group = |name: &str, versions: &[String]| {
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
            .collect();
        let mut g = json!({"name": name, "versions": vs});
        if let Some(first) = g["versions"].get(0).cloned() {
            g["preferredVersion"] = first;
        }
        g
    };
    let mut groups = vec![group("discovery.k8s.io", &["v1".to_string()])];
    if !istio.is_empty() {
        groups.push(group("networking.istio.io", &istio));
    }
    let body = json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}).to_string();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

fn chunk(out: &mut TcpStream, ev: &Value) -> std::io::Result<()> {
    let line = format!("{ev}\n");
    write!(out, "{:x}\r\n{line}\r\n", line.len())?;
    out.flush()
}

fn watch(
    out: &mut TcpStream,
    state: &Arc<(Mutex<State>, Condvar)>,
    stop: &AtomicBool,
    coll: &str,
    ns: Option<&str>,
    from: u64,
) -> anyhow::Result<()> {
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    let gone = json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410}});
    let (m, cv) = &**state;
    let mut st = m.lock().unwrap();
    if from < st.compacted {
        drop(st);
        chunk(out, &gone)?;
        write!(out, "0\r\n\r\n")?;
        return Ok(());
    }
    let mut cursor = from;
    let mut bookmarks = st.bookmarks;
    let epoch = st.epoch;
    let deadline = Instant::now() + Duration::from_secs(290);
    loop {
        let pending: Vec<Value> = st
            .events
            .iter()
            .filter(|(rv, c, _, o)| {
                *rv > cursor
                    && c == coll
                    && ns.is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
            })
            .map(|(_, _, ty, o)| json!({"type": ty, "object": o}))
            .collect();
        cursor = st.rv;
        let bookmark = (st.bookmarks != bookmarks).then(|| {
            let (av, kind) = coll
                .rsplit_once('/')
                .map(|(p, _)| {
                    (
                        p.trim_start_matches("/apis/")
                            .trim_start_matches("/api/")
                            .to_string(),
                        "Bookmark",
                    )
                })
                .unwrap_or_default();
            json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": av,
                "metadata": {"resourceVersion": st.rv.to_string()}}})
        });
        bookmarks = st.bookmarks;
        let (ended, down, expired) = (st.epoch != epoch, st.down, st.compacted > from);
        drop(st);
        for ev in &pending {
            chunk(out, ev)?;
        }
        if let Some(b) = bookmark {
            chunk(out, &b)?;
        }
        if stop.load(Ordering::Relaxed) || down {
            // Gone: the connection is reset, without the terminating chunk.
            let _ = out.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        if ended {
            if expired {
                chunk(out, &gone)?;
            }
            write!(out, "0\r\n\r\n")?;
            return Ok(());
        }
        if Instant::now() > deadline {
            write!(out, "0\r\n\r\n")?;
            return Ok(());
        }
        st = m.lock().unwrap();
        if st.rv == cursor && st.epoch == epoch && st.bookmarks == bookmarks {
            st = cv.wait_timeout(st, Duration::from_millis(200)).unwrap().0;
        }
    }
}

/// Reads a JSON fixture recorded from a real API server, under `tests/fixtures/k8s/`.
pub fn fixture(name: &str) -> anyhow::Result<Value> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/k8s")
        .join(name);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}
