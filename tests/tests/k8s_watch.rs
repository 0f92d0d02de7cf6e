//! `gateway run --kubernetes` against a stand-in API server that speaks the real list/watch
//! protocol (tests/src/apiserver.rs), with objects in the form a real API server sends them
//! (tests/fixtures/k8s/): the objects go through the same pipeline as files, a burst of
//! EndpointSlice updates becomes a few applies, terminating endpoints stop taking new requests,
//! and the API server going away, 410 Gone, relists and bookmarks never interrupt serving.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use gateway_tests::agent::rejected;
use gateway_tests::apiserver::{fixture, ApiServer};
use gateway_tests::session::HttpsSession;
use gateway_tests::tls::{b64, Ca};
use gateway_tests::{http::HttpClient, wait_until, Agent, Opts, Topology};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
const URL: &str = "http://198.18.0.1:8080/";

/// The recorded EndpointSlice with these endpoints: (address, ready, serving, terminating).
fn slice(eps: &[(Ipv4Addr, bool, bool, bool)]) -> Result<Value> {
    let mut s = fixture("endpointslice.json")?;
    let template = s["endpoints"][0].clone();
    s["endpoints"] = eps
        .iter()
        .enumerate()
        .map(|(i, (addr, ready, serving, terminating))| {
            let mut e = template.clone();
            e["addresses"] = json!([addr.to_string()]);
            e["conditions"] =
                json!({"ready": ready, "serving": serving, "terminating": terminating});
            e["targetRef"]["name"] = json!(format!("echo-7d9c6b5f4-{i}"));
            e
        })
        .collect();
    Ok(s)
}

/// Which backends answer `n` requests (all must be 200).
fn answering(http: &HttpClient, n: usize) -> Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    for (status, backend) in http.many(URL, n, &[])? {
        ensure!(status == 200, "request answered {status}");
        seen.insert(backend);
    }
    Ok(seen)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn kubernetes_watch_feeds_the_pipeline_and_survives_the_api_server() -> Result<()> {
    let topo = Topology::new("k8w", 3, Opts::http_backends())?;
    let [b1, b2, b3] = [0, 1, 2].map(|i| topo.backends[i].addr);
    let api = ApiServer::start(&topo.node)?;
    for f in ["gateway.json", "virtualservice.json", "service.json"] {
        api.apply(fixture(f)?);
    }
    api.apply(slice(&[(b1, true, true, false)])?);

    let agent = Agent::start_kubernetes(&topo, &api, &["--vip", "198.18.0.1"])?;
    let http = HttpClient::new(topo.client.name());
    ensure!(
        answering(&http, 4)? == set(&["b1"]),
        "first config from the API"
    );
    // Every watched kind was listed once, then watched from the list's resourceVersion.
    for plural in [
        "gateways",
        "virtualservices",
        "services",
        "endpointslices",
        "pods",
        "secrets",
    ] {
        ensure!(
            api.requests(&format!("/{plural}?"))
                .iter()
                .any(|r| r.contains("watch=true")),
            "no watch on {plural}: {:?}",
            api.requests(plural)
        );
    }
    let dump = agent.config_dump()?;
    ensure!(
        rejected(&dump).is_empty(),
        "recorded objects rejected: {:?}",
        dump["rejected"]
    );

    // An invalid object from the API is left out and named with its resourceVersion; the rest
    // keeps serving.
    let mut bad = fixture("virtualservice.json")?;
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["hosts"] = json!(["bad.example"]);
    bad["spec"]["http"][0]["timeout"] = json!("soon");
    let bad_rv = api.apply(bad);
    let named = format!("VirtualService apps/bad@{bad_rv}");
    wait_until(WAIT, "the invalid VirtualService reported", || {
        Ok(rejected(&agent.config_dump()?)
            .iter()
            .any(|r| r.contains(&named)))
    })?;
    let r = rejected(&agent.config_dump()?);
    ensure!(
        r.iter().any(|m| m.contains("timeout")),
        "the rejection names the field: {r:?}"
    );
    ensure!(
        answering(&http, 2)? == set(&["b1"]),
        "serving after a rejection"
    );

    // A terminating endpoint (ready false, still serving) takes no new requests.
    api.apply(slice(&[(b1, false, true, true), (b2, true, true, false)])?);
    wait_until(WAIT, "b2 serving, b1 draining", || {
        Ok(answering(&http, 4)? == set(&["b2"]))
    })?;

    // A burst of 1,000 EndpointSlice updates is applied as a few plans, not 1,000.
    let before = agent.generation()?;
    let mut last_rv = 0;
    for i in 0..1000 {
        let eps = if i % 2 == 0 {
            vec![(b2, true, true, false), (b3, true, true, false)]
        } else {
            vec![(b3, true, true, false)]
        };
        last_rv = api.apply(slice(&eps)?);
    }
    wait_until(WAIT, "the burst's last state applied", || {
        let d = agent.config_dump()?;
        Ok(d["revision"]["resource_versions"]["EndpointSlice"] == json!(last_rv.to_string()))
    })?;
    ensure!(
        answering(&http, 4)? == set(&["b3"]),
        "the burst's final endpoints"
    );
    let applies = agent.generation()? - before;
    ensure!(
        applies <= 30,
        "1,000 EndpointSlice updates took {applies} applies"
    );
    eprintln!("1,000 EndpointSlice updates: {applies} applies");

    // The API server goes away: serving and readiness continue.
    api.set_down(true);
    std::thread::sleep(Duration::from_millis(500));
    ensure!(
        answering(&http, 4)? == set(&["b3"]),
        "serving while the API is away"
    );
    let (ready, _) = agent.get_at("127.0.0.1:15021".parse()?, "/healthz/ready")?;
    ensure!(ready == 200, "readiness while the API is away: {ready}");
    // Meanwhile the endpoints change, the invalid object is deleted and etcd compacts: the
    // watches resume from a resourceVersion that is gone (410) and must relist to see it.
    let lists_before = api
        .requests("/endpointslices?")
        .iter()
        .filter(|r| !r.contains("watch="))
        .count();
    api.apply(slice(&[(b1, true, true, false)])?);
    api.delete("networking.istio.io/v1", "VirtualService", "apps", "bad");
    api.compact();
    api.set_down(false);
    wait_until(WAIT, "the relisted endpoints applied", || {
        Ok(answering(&http, 4)? == set(&["b1"]))
    })?;
    wait_until(WAIT, "the deleted object forgotten", || {
        Ok(rejected(&agent.config_dump()?).is_empty())
    })?;
    let lists_after = api
        .requests("/endpointslices?")
        .iter()
        .filter(|r| !r.contains("watch="))
        .count();
    ensure!(
        lists_after > lists_before,
        "no relist after 410 Gone: {:?}",
        api.requests("/endpointslices?")
    );

    // Bookmarks: a change of another kind moves the resourceVersion; the EndpointSlice watch
    // learns it from a BOOKMARK and resumes from there when its stream ends.
    let mut other = fixture("service.json")?;
    other["metadata"]["name"] = json!("other");
    let rv = api.apply(other);
    std::thread::sleep(Duration::from_millis(300));
    api.bookmark();
    std::thread::sleep(Duration::from_millis(300));
    api.end_watches();
    let resumed = format!("resourceVersion={rv}");
    wait_until(
        WAIT,
        "the EndpointSlice watch resumed from the bookmark",
        || {
            Ok(api
                .requests("/endpointslices?")
                .iter()
                .any(|r| r.contains("watch=true") && r.contains(&resumed)))
        },
    )
    .with_context(|| format!("{:?}", api.requests("/endpointslices?")))?;
    ensure!(
        answering(&http, 2)? == set(&["b1"]),
        "serving after the bookmark"
    );
    Ok(())
}

/// A `kubernetes.io/tls` Secret in istio-system, as the API server returns it.
fn tls_secret(name: &str, pair: &(String, String)) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "istio-system",
            "creationTimestamp": "2026-12-01T09:20:00Z"},
        "data": {"tls.crt": b64(&pair.0), "tls.key": b64(&pair.1)},
    })
}

/// `credentialName` Secrets come from the API, and a changed Secret is served to new
/// handshakes without a restart.
#[test]
fn credential_secrets_from_the_api_rotate() -> Result<()> {
    let topo = Topology::new("k8s", 1, Opts::http_backends())?;
    let api = ApiServer::start(&topo.node)?;
    let (old_ca, new_ca) = (Ca::new("old CA")?, Ca::new("new CA")?);
    api.apply(tls_secret("gw-cert", &old_ca.leaf("k8s.example.com")?));
    let mut gw = fixture("gateway.json")?;
    gw["spec"]["servers"] = json!([{
        "hosts": ["k8s.example.com"],
        "port": {"name": "https", "number": 443, "protocol": "HTTPS"},
        "tls": {"mode": "SIMPLE", "credentialName": "gw-cert"},
    }]);
    api.apply(gw);
    let mut vs = fixture("virtualservice.json")?;
    vs["spec"]["http"] = json!([{"directResponse": {"status": 200, "body": {"string": "tls"}}}]);
    api.apply(vs);
    let _agent = Agent::start_kubernetes(&topo, &api, &["--vip", "198.18.0.1"])?;

    let dir = tempfile::tempdir()?;
    let pem = |name: &str, ca: &Ca| -> Result<String> {
        let p = dir.path().join(name);
        std::fs::write(&p, ca.cert.pem())?;
        Ok(p.to_string_lossy().into_owned())
    };
    let (old_pem, new_pem) = (pem("old.pem", &old_ca)?, pem("new.pem", &new_ca)?);
    let c = topo.http_client();
    let get = |cacert: &str| c.https_get(cacert, "k8s.example.com", "198.18.0.1");
    ensure!(get(&old_pem)?.status == 200, "the Secret's certificate");
    ensure!(
        get(&new_pem).is_err(),
        "trusted by a CA that did not sign it"
    );
    // A connection established before the rotation, kept alive across it.
    let addr = "198.18.0.1:443".parse()?;
    let mut held = HttpsSession::connect(
        &topo.client_api(),
        addr,
        "k8s.example.com",
        &old_ca.cert.pem(),
    )?;
    ensure!(held.get("/")? == (200, "tls".to_string()));

    api.apply(tls_secret("gw-cert", &new_ca.leaf("k8s.example.com")?));
    wait_until(WAIT, "the rotated Secret served", || {
        Ok(get(&new_pem).is_ok_and(|r| r.status == 200))
    })?;
    ensure!(get(&old_pem).is_err(), "the old certificate still served");
    // Established connections continue with the certificate they were opened with.
    ensure!(
        held.get("/")? == (200, "tls".to_string()),
        "the connection opened before the rotation"
    );
    Ok(())
}

/// The agent's identity comes from its own Pod (downward API `POD_NAME`): Gateway selectors
/// match the Pod's labels as the watch reports them, not a fixed `--label` set.
#[test]
fn own_pod_labels_select_gateways() -> Result<()> {
    let topo = Topology::new("k8p", 1, Opts::http_backends())?;
    let api = ApiServer::start(&topo.node)?;
    let pod = |istio: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "gateway-x7k2p", "namespace": "istio-system",
                "labels": {"app": "gateway", "istio": istio},
                "creationTimestamp": "2026-12-01T09:00:00Z"},
            "spec": {"containers": [{"name": "gateway", "image": "gateway:latest"}],
                "hostNetwork": true, "nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": "198.18.0.1", "hostIP": "198.18.0.1"},
        })
    };
    api.apply(pod("custom-gw"));
    let mut gw = fixture("gateway.json")?;
    gw["spec"]["selector"] = json!({"istio": "custom-gw"});
    api.apply(gw);
    let mut vs = fixture("virtualservice.json")?;
    vs["spec"]["http"] = json!([{"directResponse": {"status": 200, "body": {"string": "pod"}}}]);
    api.apply(vs);
    let agent = Agent::start_kubernetes(
        &topo,
        &api,
        &[
            "--vip",
            "198.18.0.1",
            "--pod-name",
            "gateway-x7k2p",
            "--node-name",
            "node-1",
        ],
    )?;
    let http = HttpClient::new(topo.client.name());
    let r = http.get(URL, &[])?;
    ensure!(
        r.status == 200,
        "the Gateway selecting the Pod's labels: {}",
        r.status
    );
    let dump = agent.config_dump()?;
    ensure!(dump["revision"]["node"] == "node-1", "{}", dump["revision"]);
    ensure!(
        dump["revision"]["source"] == "the Kubernetes API",
        "{}",
        dump["revision"]
    );

    // Relabelled: the Gateway no longer selects this agent, its port closes.
    api.apply(pod("other"));
    wait_until(WAIT, "the Gateway unselected", || {
        Ok(http.get(URL, &[]).is_err())
    })?;
    ensure!(
        agent
            .log()
            .contains("labels from Pod istio-system/gateway-x7k2p"),
        "the identity is logged"
    );
    Ok(())
}

/// An Istio that serves no `networking.istio.io/v1` (before 1.22): the agent discovers the
/// served version and watches v1beta1 instead of waiting forever for v1.
#[test]
fn older_istio_api_versions_are_watched() -> Result<()> {
    let topo = Topology::new("k8v", 1, Opts::http_backends())?;
    let api = ApiServer::start(&topo.node)?;
    api.set_istio_versions(&["v1beta1", "v1alpha3"]);
    for f in ["gateway.json", "virtualservice.json"] {
        let mut o = fixture(f)?;
        o["apiVersion"] = json!("networking.istio.io/v1beta1");
        if f == "virtualservice.json" {
            o["spec"]["http"] =
                json!([{"directResponse": {"status": 200, "body": {"string": "beta"}}}]);
        }
        api.apply(o);
    }
    let agent = Agent::start_kubernetes(&topo, &api, &["--vip", "198.18.0.1"])?;
    let r = HttpClient::new(topo.client.name()).get(URL, &[])?;
    ensure!(
        r.status == 200 && r.body == "beta",
        "{} {}",
        r.status,
        r.body
    );
    ensure!(
        !api.requests("/apis/networking.istio.io/v1beta1/gateways?")
            .is_empty()
            && api.requests("/apis/networking.istio.io/v1/").is_empty(),
        "watched {:?}",
        api.requests("networking.istio.io")
    );
    ensure!(agent.log().contains("watching networking.istio.io/v1beta1"));
    Ok(())
}

/// Istio's CRDs installed after the agent started (discovery first said the group is not
/// served): the agent finds them by asking discovery again and serves their objects, without
/// a restart, while the Kubernetes kinds kept syncing meanwhile.
#[test]
fn istio_crds_installed_later_are_watched() -> Result<()> {
    let topo = Topology::new("k8c", 1, Opts::http_backends())?;
    let api = ApiServer::start(&topo.node)?;
    api.set_istio_versions(&[]);
    let agent = Agent::start_kubernetes(&topo, &api, &["--vip", "198.18.0.1"])?;
    ensure!(
        agent.log().contains("networking.istio.io is not served"),
        "the missing CRDs are reported"
    );
    let http = HttpClient::new(topo.client.name());
    ensure!(http.get(URL, &[]).is_err(), "no Gateway yet, no listener");

    api.set_istio_versions(&["v1"]);
    api.apply(fixture("gateway.json")?);
    let mut vs = fixture("virtualservice.json")?;
    vs["spec"]["http"] = json!([{"directResponse": {"status": 200, "body": {"string": "late"}}}]);
    api.apply(vs);
    wait_until(WAIT, "the Gateway from the late CRDs served", || {
        Ok(http
            .get(URL, &[])
            .is_ok_and(|r| r.status == 200 && r.body == "late"))
    })?;
    ensure!(agent.log().contains("networking.istio.io/v1 is served now"));
    Ok(())
}
