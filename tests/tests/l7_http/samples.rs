//! Third-party upstreams and configurations: nginx as the upstream, and Istio's own gateway
//! samples (httpbin, its ingress task, bookinfo) applied unmodified.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};
use gateway_tests::{
    http::expect,
    manifests::{self, GATEWAY_HEAD},
    test_backend_bin,
    topology::{start_backend, Topology, VIP},
    wait_until, Agent, ChildGuard, Opts,
};

use super::url;

/// A third-party upstream: nginx, started by the test in a backend namespace. Its `Server`
/// header is replaced, and it sees the forwarding headers.
#[test]
fn nginx_upstream() -> Result<()> {
    let topo = Topology::new("ng", 1, Opts::default())?;
    let b1 = topo.backend("b1");
    let dir = tempfile::tempdir()?;
    let d = dir.path().display();
    let conf = format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 8080;
    location / {{
      default_type text/plain;
      add_header x-backend nginx;
      return 200 \"nginx $request_method $request_uri\\nhost: $host\\nx-forwarded-proto: $http_x_forwarded_proto\\nx-forwarded-for: $http_x_forwarded_for\\n\";
    }}
  }}
}}
"
    );
    fs::write(dir.path().join("nginx.conf"), conf)?;
    let nginx = which("nginx").context(
        "nginx not installed (Debian package nginx-light; scripts/setup.sh installs it)",
    )?;
    let _nginx: ChildGuard = b1.ns.spawn(
        &nginx,
        &[
            "-c",
            &format!("{d}/nginx.conf"),
            "-e",
            &format!("{d}/error.log"),
        ],
        false,
    )?;
    let addr = SocketAddr::new(b1.addr.into(), 8080);
    b1.ns.run_in(move || {
        wait_until(Duration::from_secs(10), "nginx listening", || {
            Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
        })
    })?;

    let se = manifests::service_entry(
        "nginx",
        "default",
        "nginx.internal",
        "{number: 8080, name: http, protocol: HTTP}",
        &[format!("{{address: {}}}", b1.addr)],
    );
    let cfg = format!(
        "{GATEWAY_HEAD}  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [nginx.example.com]
---
{se}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: nginx, namespace: default}}
spec:
  hosts: [nginx.example.com]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /api}}}}]
    rewrite: {{uri: /v2/api}}
    route: [{{destination: {{host: nginx.internal}}}}]
"
    );
    let _agent = Agent::start(&topo, &[("nginx.yaml", cfg)])?;
    let c = topo.http_client();
    for h2 in [false, true] {
        let mut a = vec!["-H", "Host: nginx.example.com"];
        if h2 {
            a.push("--http2-prior-knowledge");
        }
        let u = url("/api/items?x=1");
        a.push(&u);
        let r = c.curl(&a)?;
        expect(&r, 200, "nginx", "nginx upstream")?;
        ensure!(
            r.body.starts_with("nginx GET /v2/api/items?x=1\n"),
            "rewrite: {r:#?}"
        );
        ensure!(
            r.upstream_header("x-forwarded-proto") == Some("http"),
            "{r:#?}"
        );
        ensure!(
            r.upstream_header("host") == Some("nginx.example.com"),
            "{r:#?}"
        );
        ensure!(
            r.header("server") == Some("istio-envoy"),
            "nginx's Server header must be overwritten: {r:#?}"
        );
    }
    expect(
        &c.get(&url("/api"), &["-H", "Host: other.example.com"])?,
        404,
        "",
        "host not on the server",
    )?;
    Ok(())
}

fn which(prog: &str) -> Option<String> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| format!("{d}/{prog}"))
    .find(|p| Path::new(p).is_file())
}

/// A sample's manifest as published (`dir/file` under examples/istio-samples), plus the cluster
/// state (Services, EndpointSlices) from `cluster_dir/cluster.yaml`.
fn sample_files(
    dir: &str,
    file: &'static str,
    cluster_dir: &str,
) -> Result<Vec<(&'static str, String)>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/istio-samples");
    let read = |p: std::path::PathBuf| {
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    Ok(vec![
        (file, read(root.join(dir).join(file))?),
        (
            "cluster.yaml",
            read(root.join(cluster_dir).join("cluster.yaml"))?,
        ),
    ])
}

/// Starts `test-backend --http PORT` named `name` in backend `b`.
fn http_server(topo: &Topology, b: &str, name: &str, port: u16) -> Result<ChildGuard> {
    let bin = test_backend_bin()?;
    let bin = bin.to_str().context("non-UTF-8 path")?;
    start_backend(&topo.backend(b).ns, bin, name, None, None, Some(port))
}

/// Istio's samples/httpbin/httpbin-gateway.yaml: every host and path on port 80 reaches httpbin.
#[test]
fn istio_sample_httpbin() -> Result<()> {
    let topo = Topology::new("hs", 1, Opts::no_backends())?;
    let _httpbin = http_server(&topo, "b1", "httpbin", 8080)?;
    let _agent = Agent::start(
        &topo,
        &sample_files("httpbin", "httpbin-gateway.yaml", "httpbin")?,
    )?;
    let c = topo.http_client();
    for (path, host) in [
        ("/headers", "httpbin.example.com"),
        ("/anything/x?y=1", "any.example.org"),
        ("/", "198.18.0.1"),
    ] {
        let r = c.get(&url(path), &["-H", &format!("Host: {host}")])?;
        expect(&r, 200, "httpbin", path)?;
        ensure!(r.upstream_header("host") == Some(host), "{r:#?}");
    }
    Ok(())
}

/// Istio's ingress task with httpbin: Host httpbin.example.com, /status and /delay exposed,
/// everything else 404.
#[test]
fn istio_ingress_task_httpbin() -> Result<()> {
    let topo = Topology::new("hb", 1, Opts::no_backends())?;
    // The pod's container port (Service port 8000 -> targetPort 8080).
    let _httpbin = http_server(&topo, "b1", "httpbin", 8080)?;
    let _agent = Agent::start(
        &topo,
        &sample_files("httpbin-ingress-task", "httpbin-gateway.yaml", "httpbin")?,
    )?;
    let c = topo.http_client();
    let host = ["-H", "Host: httpbin.example.com"];
    let r = c.get(&url("/status/200"), &host)?;
    expect(&r, 200, "httpbin", "/status/200")?;
    ensure!(
        r.upstream_header("host") == Some("httpbin.example.com"),
        "{r:#?}"
    );
    expect(
        &c.get(&url("/status/418"), &host)?,
        418,
        "httpbin",
        "/status/418",
    )?;
    expect(&c.get(&url("/delay/1"), &host)?, 200, "httpbin", "/delay/1")?;
    // "Accessing any other URL that has not been explicitly exposed should see an HTTP 404."
    expect(
        &c.get(&url("/headers"), &host)?,
        404,
        "",
        "/headers not exposed",
    )?;
    // Another Host has no virtual host on this server.
    expect(
        &c.get(&url("/status/200"), &[])?,
        404,
        "",
        "Host is the VIP",
    )?;
    expect(
        &c.curl(&[
            "--http2-prior-knowledge",
            "-H",
            "Host: httpbin.example.com",
            &url("/status/200"),
        ])?,
        200,
        "httpbin",
        "h2c",
    )?;
    Ok(())
}

/// Istio's bookinfo gateway: the five documented paths reach productpage, nothing else does.
#[test]
fn istio_sample_bookinfo() -> Result<()> {
    let topo = Topology::new("bi", 1, Opts::no_backends())?;
    let _productpage = http_server(&topo, "b1", "productpage", 9080)?;
    let _agent = Agent::start(
        &topo,
        &sample_files("bookinfo", "bookinfo-gateway.yaml", "bookinfo")?,
    )?;
    let c = topo.http_client();
    let gw = |p: &str| format!("http://{VIP}:8080{p}");
    for p in [
        "/productpage",
        "/productpage?u=normal",
        "/static/bootstrap/css/bootstrap.min.css",
        "/login",
        "/logout",
        "/api/v1/products",
        "/api/v1/products/0/reviews",
    ] {
        let r = c.get(&gw(p), &[])?;
        expect(&r, 200, "productpage", p)?;
        ensure!(
            r.upstream_request_line() == format!("GET {p}"),
            "{p}: {r:#?}"
        );
    }
    let r = c.curl(&["-X", "POST", "-d", "username=jason", &gw("/login")])?;
    expect(&r, 200, "productpage", "POST /login")?;
    for p in [
        "/",
        "/productpage/x",
        "/login/",
        "/api/v2/products",
        "/details/0",
    ] {
        expect(&c.get(&gw(p), &[])?, 404, "", p)?;
    }
    Ok(())
}
