//! `gateway`: the agent binary. Thin: parses flags and hands over to the library.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand};
use gateway::{agent, config, dataplane::Mode, plan::NatMode};

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "eBPF-accelerated Istio-compatible gateway data plane"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// How the agent's own log lines are written to stderr: text, or one JSON object per line
    /// (with the connection span's fields). `RUST_LOG` sets the filter (default info).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: gateway::logging::Format,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CheckOutput {
    Text,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Nat {
    Snat,
    PreserveSource,
}

/// Limits on downstream clients (docs/hardening.md): Envoy's edge defaults.
#[derive(clap::Args)]
struct LimitArgs {
    /// Downstream connections open at once, over every listener; beyond it a new connection is
    /// accepted and closed at once (counted in gateway_overload_rejected_connections_total).
    /// 0: no limit.
    #[arg(long, default_value = "0")]
    max_connections: usize,
    /// How long a client may take to send its whole HTTP/1.1 request head (Envoy's
    /// request_headers_timeout); 0s: no limit.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    request_headers_timeout: Duration,
    /// A downstream connection with no byte either way for this long is closed (Envoy's
    /// stream_idle_timeout); 0s: never.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    stream_idle_timeout: Duration,
    /// Request line plus headers, in KiB, beyond which the client gets 431 (Envoy's
    /// max_request_headers_kb).
    #[arg(long, default_value = "60", value_parser = clap::value_parser!(u32).range(8..=8192))]
    max_request_headers_kb: u32,
    /// Header lines per request beyond which the client gets 431 (Envoy's max_headers_count).
    #[arg(long, default_value = "100")]
    max_headers_count: usize,
    /// HTTP/2 streams open at once per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, default_value = "100")]
    h2_max_concurrent_streams: u32,
    /// Heap size (bytes, or with Ki/Mi/Gi) for Envoy's overload actions: from 80 % keep-alive
    /// is off and idle connections are closed, from 95 % new connections are closed at once.
    /// Set it below the pod's memory limit. 0: no overload actions.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    overload_max_heap: u64,
}

/// `512Mi`, `2Gi`, `1000000`: bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 512Mi"))?;
    let mult: u64 = match unit {
        "" => 1,
        "Ki" | "K" | "k" => 1 << 10,
        "Mi" | "M" => 1 << 20,
        "Gi" | "G" => 1 << 30,
        _ => return Err(format!("{s:?}: unit {unit:?}: use Ki, Mi or Gi")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// The XDP path's connection tables: per-state idle timeouts (Cilium's defaults; IPVS's in
/// brackets) and SNAT pools.
#[derive(clap::Args)]
struct CtArgs {
    /// Idle timeout of an established TCP flow (Cilium --bpf-ct-timeout-regular-tcp; IPVS 900s).
    #[arg(long, default_value = "6h", value_parser = parse_duration)]
    ct_timeout_tcp: Duration,
    /// How long a TCP flow whose client sent only its SYN keeps its entries (Cilium
    /// --bpf-ct-timeout-regular-tcp-syn; IPVS 120s).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    ct_timeout_tcp_syn: Duration,
    /// How long a closed TCP flow (a RST, or a FIN each way) keeps its entries (Cilium
    /// --bpf-ct-timeout-regular-tcp-fin; IPVS 120s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ct_timeout_tcp_fin: Duration,
    /// Idle timeout of a UDP flow (Cilium --bpf-ct-timeout-regular-any; IPVS 300s).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    ct_timeout_any: Duration,
    /// How often the agent's garbage collector walks the connection tables.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    ct_gc_interval: Duration,
    /// SNAT pool of an egress interface, IFACE=ADDR[,ADDR..][:PORTMIN-PORTMAX] (repeatable;
    /// IPv4, up to 8 node addresses, ports default 61000-65535): masqueraded flows leaving by
    /// IFACE take their source from it.
    #[arg(long = "snat-pool", value_parser = gateway::dataplane::snat_pool::parse)]
    snat_pools: Vec<gateway::dataplane::snat_pool::PoolSpec>,
}

impl LimitArgs {
    fn limits(&self) -> gateway::l7::limits::Limits {
        gateway::l7::limits::Limits {
            max_connections: self.max_connections,
            request_headers_timeout: self.request_headers_timeout,
            stream_idle_timeout: self.stream_idle_timeout,
            max_request_headers_kb: self.max_request_headers_kb as usize,
            max_headers_count: self.max_headers_count,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            overload_max_heap: self.overload_max_heap,
            ..Default::default()
        }
    }
}

// Parsed once at start: the size of the Run variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Load manifests, attach the XDP program and serve until stopped.
    Run {
        /// Directory of Istio / Kubernetes YAML manifests (read recursively, watched for changes).
        #[arg(
            long,
            required_unless_present = "kubernetes",
            conflicts_with = "kubernetes"
        )]
        config: Option<PathBuf>,
        /// Read the objects from the Kubernetes API (list and watch) instead of a directory:
        /// the in-cluster service account, or --kubeconfig.
        #[arg(long)]
        kubernetes: bool,
        /// With --kubernetes: the kubeconfig file to use (default: in-cluster, then
        /// $KUBECONFIG, then ~/.kube/config).
        #[arg(long, requires = "kubernetes")]
        kubeconfig: Option<PathBuf>,
        /// With --kubernetes: a namespace to watch (repeatable; default: all namespaces).
        #[arg(long = "watch-namespace", requires = "kubernetes")]
        watch_namespaces: Vec<String>,
        /// With --kubernetes: the agent's own Pod (downward API `metadata.name`), in
        /// --namespace. Its labels, from the watch, are the labels Gateway selectors match
        /// (instead of --label), as Istio matches a gateway pod's labels.
        #[arg(long, env = "POD_NAME")]
        pod_name: Option<String>,
        /// The node this agent runs on (downward API `spec.nodeName`); shown in /config_dump.
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
        /// With --kubernetes: changes closer together than this are applied as one.
        #[arg(long, default_value = "100ms", value_parser = parse_duration)]
        debounce: Duration,
        /// Interface to attach the XDP program to (repeatable). Without it, L4 is served from
        /// userspace sockets.
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        /// The node's addresses (downward API `status.hostIP`; comma-separated or repeated):
        /// without --iface, XDP attaches to the interfaces that hold them, so one DaemonSet
        /// spec fits nodes whose interface names differ.
        #[arg(long = "node-ip", env = "NODE_IP", value_delimiter = ',')]
        node_ips: Vec<IpAddr>,
        /// Address the Gateway's servers listen on, IPv4 or IPv6 (repeatable); default: the
        /// interfaces' addresses (both families, link-local ones left out).
        #[arg(long = "vip")]
        vips: Vec<IpAddr>,
        /// bpffs directory for this agent's pinned maps and links; one per agent.
        #[arg(long, default_value = "/sys/fs/bpf/gateway")]
        pin_root: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: Mode,
        /// Default NAT mode for L4 services (a Gateway's `gateway.dataplane/nat-mode` annotation overrides it).
        #[arg(long, value_enum, default_value = "snat")]
        nat_mode: Nat,
        /// The agent's own labels, matched by Gateway selectors (repeatable, key=value).
        #[arg(long = "label", default_value = "istio=ingressgateway")]
        labels: Vec<String>,
        /// The agent's namespace (exportTo checks).
        #[arg(long, default_value = "istio-system")]
        namespace: String,
        /// Admin endpoint (keep it local): /config_dump, /stats, /metrics, /ready, /drain.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
        /// The admin endpoints also on this Unix socket, which only this agent answers on (the
        /// TCP ports are shared with the next agent during a hand-over): what the DaemonSet's
        /// probes and preStop hook use, as `gateway ready|drain --admin unix:PATH`.
        #[arg(long)]
        admin_socket: Option<PathBuf>,
        /// Health endpoint for probes: /healthz/ready, /healthz/live.
        #[arg(long, default_value = "0.0.0.0:15021")]
        status: SocketAddr,
        /// Prometheus endpoint: /stats/prometheus.
        #[arg(long, default_value = "0.0.0.0:15090")]
        metrics: SocketAddr,
        /// How long a drain (POST /drain on the admin port, as a preStop hook does, or
        /// SIGTERM) keeps serving with readiness failing, HTTP/1.1 responses carrying
        /// `connection: close` and HTTP/2 connections sent GOAWAY, e.g. 5s, 500ms.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        drain_duration: Duration,
        /// At SIGTERM, after the drain duration: how long requests in flight may still take
        /// before the agent exits.
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        shutdown_timeout: Duration,
        /// Remove pinned maps and links on exit (stops the XDP path). Without it the data path
        /// keeps forwarding until a restarted agent adopts it.
        #[arg(long)]
        cleanup_on_exit: bool,
        /// How often the config directory is checked for changes, in milliseconds.
        #[arg(long, default_value = "1000")]
        reload_ms: u64,
        /// Access log of HTTP requests and TCP streams, in Istio's default format, to this file
        /// ("-": standard output).
        #[arg(long)]
        access_log: Option<PathBuf>,
        /// The access log's encoding, as Istio's meshConfig `accessLogEncoding`.
        #[arg(long, value_enum, default_value = "text")]
        access_log_format: gateway::l7::observe::LogFormat,
        /// Reproduce an older Istio's version-dependent behaviour, e.g. 1.23: the default retry
        /// policy then retries 503 (before 1.24) and mirrored Hosts get `-shadow` (before 1.28).
        #[arg(long, default_value = "1.28")]
        istio_compat: config::IstioVersion,
        /// All or nothing: any invalid object rejects the whole config (the last good one keeps
        /// serving). Default: only the invalid objects are left out, as Istio does.
        #[arg(long)]
        strict: bool,
        /// A CRL (`caCrl`, a Secret's `ca.crl`) past its nextUpdate: `enforce` refuses every
        /// certificate it covers, as Envoy (BoringSSL's CRL_HAS_EXPIRED); `ignore` keeps using
        /// it (its revoked serials stay refused).
        #[arg(long, value_enum, default_value = "enforce")]
        crl_expiration: gateway::l7::tls::CrlExpiration,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        ct: CtArgs,
    },
    /// Analyze manifests without touching the kernel, as `istioctl analyze` reports: one line
    /// per finding (`Error [IST0106] (VirtualService ns/name file:line) field: message`); exit
    /// 0, or 79 (istioctl's) when an object would be rejected.
    Check {
        dir: PathBuf,
        /// `text` (one line per finding) or `json` (an array of {level, code, file, line,
        /// document, kind, namespace, name, field, message}, for CI pipelines).
        #[arg(short = 'o', long = "output", default_value = "text")]
        output: CheckOutput,
    },
    /// How the config answers one HTTP request: listener, virtual host, each rule tried and the
    /// condition it failed, the destination and its endpoints, or why it is a 404.
    /// Exit status 0 when a rule answers (a destination with endpoints, a redirect or a direct
    /// response), 1 for a 404, a 503 without endpoints, or no listener.
    Explain {
        /// The config directory to compile and explain.
        #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
        config: Option<PathBuf>,
        /// A running agent's admin address (`ADDR:PORT` or `unix:PATH`): explain with its live
        /// plan instead.
        #[arg(long)]
        admin: Option<AdminAddr>,
        /// `GET http://host:port/path?query` (the method may be left out).
        #[arg(required_unless_present_any = ["tcp", "udp"])]
        request: Option<String>,
        /// Explain a TCP flow to `VIP:PORT` (the L4 service, backends, NAT) instead.
        #[arg(long, conflicts_with = "udp")]
        tcp: Option<std::net::SocketAddr>,
        /// Explain a UDP flow to `VIP:PORT`.
        #[arg(long)]
        udp: Option<std::net::SocketAddr>,
        /// Request header, `name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// TLS server name for https URLs (default: the host).
        #[arg(long)]
        sni: Option<String>,
        /// The VIPs the agent would serve (default: any address).
        #[arg(long = "vip")]
        vips: Vec<IpAddr>,
    },
    /// A running agent's live state, as `istioctl proxy-config` and `cilium-dbg bpf lb list`
    /// show theirs: listeners, routes, clusters, endpoints, secrets (sources only), and the XDP
    /// path's services, backends and verdict counters.
    Dump {
        #[arg(value_enum, default_value = "all")]
        section: gateway::dump::Section,
        /// `ADDR:PORT` or `unix:PATH`.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: AdminAddr,
        #[arg(short = 'o', long = "output", default_value = "text")]
        output: CheckOutput,
        /// Connection-table flows listed by the `bpf` section (the counts cover them all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Ask a running agent to drain (POST /drain on its admin port) and wait until it has: the
    /// Kubernetes preStop hook.
    Drain {
        /// `ADDR:PORT` or `unix:PATH` (the agent's `--admin-socket`: during a hand-over the
        /// TCP port may answer for the other agent).
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: AdminAddr,
    },
    /// Whether a running agent is ready (`--live`: alive): exit 0 if so, 1 if not, 2 if it
    /// cannot be reached. The DaemonSet's exec probes, against the agent's own socket.
    Ready {
        /// `ADDR:PORT` or `unix:PATH`.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: AdminAddr,
        /// Liveness instead of readiness.
        #[arg(long)]
        live: bool,
    },
    /// Remove the pins of an agent (detaches its XDP program).
    Cleanup {
        #[arg(long, default_value = "/sys/fs/bpf/gateway")]
        pin_root: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    gateway::logging::init(cli.log_format);
    match cli.cmd {
        Cmd::Check { dir, output } => check(&dir, output),
        Cmd::Drain { admin } => drain(&admin),
        Cmd::Ready { admin, live } => ready(&admin, live),
        Cmd::Dump {
            section,
            admin,
            output,
            limit,
        } => dump(&admin, section, output, limit),
        Cmd::Explain {
            config,
            admin,
            request,
            tcp,
            udp,
            headers,
            sni,
            vips,
        } => {
            let what = match (tcp, udp, request) {
                (Some(a), _, _) => Explained::L4(a, gateway::plan::Proto::Tcp),
                (_, Some(a), _) => Explained::L4(a, gateway::plan::Proto::Udp),
                (_, _, Some(r)) => Explained::Http(r),
                _ => unreachable!("clap requires one"),
            };
            match (admin, config) {
                (Some(a), _) => explain_live(&a, &what, &headers, sni),
                (None, Some(c)) => explain(&c, &what, &headers, sni, vips),
                (None, None) => unreachable!("clap requires one"),
            }
        }
        Cmd::Cleanup { pin_root } => match gateway::dataplane::remove_pins(&pin_root) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gateway: removing {}: {e}", pin_root.display());
                ExitCode::FAILURE
            }
        },
        Cmd::Run {
            config,
            kubernetes,
            kubeconfig,
            watch_namespaces,
            debounce,
            pod_name,
            node_name,
            ifaces,
            node_ips,
            vips,
            pin_root,
            xdp_mode,
            nat_mode,
            labels,
            namespace,
            admin,
            admin_socket,
            status,
            metrics,
            drain_duration,
            shutdown_timeout,
            cleanup_on_exit,
            reload_ms,
            access_log,
            access_log_format,
            istio_compat,
            strict,
            crl_expiration,
            limits,
            ct,
        } => {
            if ct.ct_gc_interval.is_zero() {
                eprintln!("gateway: --ct-gc-interval: must be above zero");
                return ExitCode::from(2);
            }
            gateway::l7::limits::set(limits.limits());
            gateway::l7::tls::set_crl_expiration(crl_expiration);
            match gateway::l7::limits::raise_nofile() {
                Ok(cap) => log::info!("open files: soft limit raised to the hard limit, {cap} (about {} proxied connections)", cap / 2),
                Err(e) => log::warn!("open files: raising the soft limit: {e}"),
            }
            let mut label_map = BTreeMap::new();
            for l in labels {
                match l.split_once('=') {
                    Some((k, v)) => {
                        label_map.insert(k.to_string(), v.to_string());
                    }
                    None => {
                        eprintln!("gateway: --label {l}: expected key=value");
                        return ExitCode::from(2);
                    }
                }
            }
            let ifaces = if ifaces.is_empty() && !node_ips.is_empty() {
                match agent::node::ifaces_holding(&node_ips) {
                    Ok(found) => {
                        log::info!("XDP on {found:?}: the interfaces holding the node's addresses {node_ips:?}");
                        found
                    }
                    Err(e) => {
                        eprintln!("gateway: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                ifaces
            };
            let args = agent::RunArgs {
                config: config.unwrap_or_default(),
                kubernetes: kubernetes.then_some(agent::KubeArgs {
                    kubeconfig,
                    namespaces: watch_namespaces,
                    debounce,
                    pod_name,
                }),
                node_name,
                ifaces,
                vips,
                pin_root,
                xdp_mode,
                nat_mode: match nat_mode {
                    Nat::Snat => NatMode::Snat,
                    Nat::PreserveSource => NatMode::PreserveSource,
                },
                labels: label_map,
                namespace,
                admin,
                admin_socket,
                status,
                metrics,
                drain_for: drain_duration,
                shutdown_timeout,
                cleanup_on_exit,
                reload_interval: Duration::from_millis(reload_ms),
                access_log,
                access_log_format,
                istio_compat,
                strict,
                ct_timeouts: gateway::dataplane::conntrack::CtTimeouts {
                    tcp: ct.ct_timeout_tcp,
                    tcp_syn: ct.ct_timeout_tcp_syn,
                    tcp_fin: ct.ct_timeout_tcp_fin,
                    any: ct.ct_timeout_any,
                    gc_interval: ct.ct_gc_interval,
                },
                snat_pools: ct.snat_pools,
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(agent::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gateway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `gateway check`: what `run` would leave out of this directory, one line per problem.
fn check(dir: &std::path::Path, output: CheckOutput) -> ExitCode {
    let r = gateway::check::check(dir);
    let failed = r.findings.iter().any(|f| f.level == "Error");
    let status = if failed {
        ExitCode::from(gateway::check::EXIT_ISSUES)
    } else {
        ExitCode::SUCCESS
    };
    if output == CheckOutput::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r.findings).unwrap_or_default()
        );
        return status;
    }
    for f in &r.findings {
        println!("{f}");
    }
    if !failed {
        println!("{}: valid ({} objects)", dir.display(), r.admitted);
    } else {
        let list: Vec<String> = r
            .rejected_by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        println!(
            "{}: {} rejected ({}); the other {} objects would be served",
            dir.display(),
            r.rejected_by_kind.values().sum::<usize>(),
            list.join(", "),
            r.admitted
        );
    }
    status
}

fn explain(
    dir: &std::path::Path,
    what: &Explained,
    headers: &[String],
    sni: Option<String>,
    vips: Vec<IpAddr>,
) -> ExitCode {
    let input = config::CompileInput {
        // Any address of either family: an IPv6 flow is explained with the IPv6 endpoints.
        vips: if vips.is_empty() {
            vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()]
        } else {
            vips
        },
        ..config::CompileInput::default()
    };
    let (admission, compiled, _) = config::load_admit_compile(dir, &input, None, false);
    for e in &admission.rejected {
        eprintln!("rejected (left out): {e}");
    }
    let Some((plan, _)) = compiled else {
        return ExitCode::FAILURE;
    };
    let (text, status) = match what {
        Explained::L4(a, proto) => gateway::explain::explain_l4(&plan, a.ip(), a.port(), *proto),
        Explained::Http(line) => match gateway::explain::Request::parse(line, headers, sni) {
            Ok(req) => gateway::explain::explain(&plan, &req),
            Err(e) => {
                eprintln!("gateway explain: {e}");
                return ExitCode::from(2);
            }
        },
    };
    print!("{text}");
    explain_status(status)
}

enum Explained {
    Http(String),
    L4(std::net::SocketAddr, gateway::plan::Proto),
}

/// 0 when something answers (a route, a redirect, a direct response, an L4 service); 1 for a
/// 404, a 503 without endpoints, or nothing listening.
fn explain_status(status: u16) -> ExitCode {
    if !matches!(status, 0 | 400 | 404 | 503) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `gateway explain --admin`: the running agent explains with its live plan.
fn explain_live(
    admin: &AdminAddr,
    what: &Explained,
    headers: &[String],
    sni: Option<String>,
) -> ExitCode {
    use gateway::explain::query_encode as enc;
    let mut q = match what {
        Explained::Http(line) => format!("request={}", enc(line)),
        Explained::L4(a, gateway::plan::Proto::Tcp) => format!("tcp={a}"),
        Explained::L4(a, gateway::plan::Proto::Udp) => format!("udp={a}"),
    };
    for h in headers {
        q.push_str(&format!("&header={}", enc(h)));
    }
    if let Some(s) = sni {
        q.push_str(&format!("&sni={}", enc(&s)));
    }
    match admin_request(admin, "GET", &format!("/explain?{q}")) {
        Ok((200, head, body)) => {
            print!("{body}");
            let status = head
                .lines()
                .find_map(|l| l.strip_prefix("x-explain-status: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            explain_status(status)
        }
        Ok((code, _, body)) => {
            eprintln!("gateway explain: {admin}: {code}: {}", body.trim());
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("gateway explain: {admin}: {e}");
            ExitCode::from(2)
        }
    }
}

/// Where a running agent's admin endpoints are: a TCP address, or its `--admin-socket`.
#[derive(Clone, Debug)]
enum AdminAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for AdminAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("unix:") {
            Some(p) if !p.is_empty() => Ok(AdminAddr::Unix(PathBuf::from(p))),
            _ => s
                .parse()
                .map(AdminAddr::Tcp)
                .map_err(|_| format!("{s:?}: expected ADDR:PORT or unix:PATH")),
        }
    }
}

impl std::fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAddr::Tcp(a) => write!(f, "{a}"),
            AdminAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One request on the admin port, without a client library (the agent's image has no curl):
/// (status, head, body).
fn admin_request(
    admin: &AdminAddr,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String, String)> {
    fn exchange(mut s: impl std::io::Read + std::io::Write, req: &str) -> std::io::Result<String> {
        s.write_all(req.as_bytes())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp)
    }
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let resp = match admin {
        AdminAddr::Tcp(a) => exchange(
            std::net::TcpStream::connect_timeout(a, Duration::from_secs(2))?,
            &req,
        )?,
        AdminAddr::Unix(p) => exchange(std::os::unix::net::UnixStream::connect(p)?, &req)?,
    };
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, head.to_ascii_lowercase(), body.to_string()))
}

/// `gateway ready`: the agent's readiness (or liveness) as an exit status, for exec probes.
fn ready(admin: &AdminAddr, live: bool) -> ExitCode {
    let path = if live { "/healthz/live" } else { "/ready" };
    match admin_request(admin, "GET", path) {
        Ok((200, _, body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((code, _, body)) => {
            println!("{code} {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gateway ready: {admin}: {e}");
            ExitCode::from(2)
        }
    }
}

fn dump(
    admin: &AdminAddr,
    section: gateway::dump::Section,
    output: CheckOutput,
    limit: usize,
) -> ExitCode {
    let get = |path: &str| -> Result<serde_json::Value, String> {
        match admin_request(admin, "GET", path) {
            Ok((200, _, body)) => serde_json::from_str(&body).map_err(|e| format!("{path}: {e}")),
            Ok((code, _, body)) => Err(format!("{path}: {code} {}", body.trim())),
            Err(e) => Err(format!("{admin}: {e}")),
        }
    };
    let src = (|| {
        Ok::<_, String>(gateway::dump::Sources {
            config_dump: get("/config_dump")?,
            clusters: get("/clusters?format=json")?,
            stats: get("/stats")?,
            certs: get("/certs")?,
            // A walk of every connection entry: only for the sections that show it.
            conntrack: if matches!(
                section,
                gateway::dump::Section::Bpf | gateway::dump::Section::All
            ) {
                get(&format!("/conntrack?limit={limit}"))?
            } else {
                serde_json::Value::Null
            },
        })
    })();
    match src {
        Ok(src) => {
            match output {
                CheckOutput::Text => print!("{}", gateway::dump::text(&src, section)),
                CheckOutput::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&gateway::dump::json(&src, section))
                        .unwrap_or_default()
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway dump: {e}");
            ExitCode::FAILURE
        }
    }
}

/// POST /drain on the admin port; it answers once the drain duration has passed.
fn drain(admin: &AdminAddr) -> ExitCode {
    match admin_request(admin, "POST", "/drain") {
        Ok((200, _, _)) => {
            println!("drained");
            ExitCode::SUCCESS
        }
        Ok((code, _, body)) => {
            eprintln!("gateway drain: {code} {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gateway drain: {admin}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::syntax::parse_duration(s)
        .ok_or_else(|| format!("{s:?}: expected a duration like 5s or 500ms"))
}
