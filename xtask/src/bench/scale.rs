//! Part 4: config scale. Generated manifests of 100, 1,000 and 10,000 VirtualService routes
//! (host/path HTTP routes, one VirtualService each) and of 1,000 L4 services x 100 endpoints:
//! load + validate + compile timed in-process (`config::load_dir`, `validate`, `compile`),
//! `Dataplane::apply` timed against a dataplane in a private network namespace, and the real
//! agent started on each config in a namespace for its RSS and the memory of its BPF maps.

use std::{fmt::Write as _, net::Ipv4Addr, path::Path, time::Instant};

use anyhow::Context as _;
use gateway::config::{self, CompileInput};
use gateway_tests::{topology::Topology, Agent, Opts};

use super::{
    util::{self, check_interrupt, median},
    xdp, Ctx, Section,
};

/// 198.18.0.0/15 offset by `i`, past the first 4 /24s used elsewhere.
fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 4, 0)) + i as u32)
}

fn http_routes(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: scale, namespace: istio-system}\n\
         spec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n\
         ---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: web, namespace: bench}\n\
         spec:\n  hosts: [web.bench.local]\n  resolution: STATIC\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n\
         \x20 endpoints: [{address: 198.18.11.2}, {address: 198.18.12.2}]\n",
    );
    for i in 0..n {
        let _ = write!(
            s,
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r{i}, namespace: bench}}\n\
             spec:\n  hosts: [svc{i}.bench.local]\n  gateways: [istio-system/scale]\n  http:\n  - match: [{{uri: {{prefix: /r{i}/}}}}]\n\
             \x20   route: [{{destination: {{host: web.bench.local, port: {{number: 8080}}}}}}]\n"
        );
    }
    s
}

fn l4_services(services: usize, endpoints: usize) -> String {
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: scale, namespace: istio-system}\n\
         spec:\n  selector: {istio: ingressgateway}\n  servers:\n",
    );
    for i in 0..services {
        let _ = writeln!(
            s,
            "  - port: {{number: {}, name: tcp-{i}, protocol: TCP}}\n    hosts: [\"*\"]",
            20000 + i
        );
    }
    for i in 0..services {
        let _ = write!(
            s,
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{i}, namespace: bench}}\n\
             spec:\n  hosts: [s{i}.bench.local]\n  resolution: STATIC\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  endpoints:\n"
        );
        for e in 0..endpoints {
            let _ = writeln!(s, "  - address: {}", addr(i * endpoints + e));
        }
        let _ = write!(
            s,
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: s{i}, namespace: bench}}\n\
             spec:\n  hosts: [\"*\"]\n  gateways: [istio-system/scale]\n  tcp:\n  - match: [{{port: {}}}]\n\
             \x20   route: [{{destination: {{host: s{i}.bench.local, port: {{number: 9000}}}}}}]\n",
            20000 + i
        );
    }
    s
}

struct Timing {
    load: f64,
    validate: f64,
    compile: f64,
    l4: usize,
    http_routes: String,
    errors: usize,
}

fn time_config(dir: &Path, runs: usize) -> anyhow::Result<Timing> {
    let input = CompileInput {
        vips: vec![Ipv4Addr::new(198, 18, 0, 1).into()],
        ..CompileInput::default()
    };
    let (mut l, mut v, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let m = config::load_dir(dir)
            .map_err(|e| anyhow::anyhow!("load: {} errors, first: {:?}", e.len(), e.first()))?;
        l.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let (errors, _) = config::validate(&m);
        v.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let (plan, _) = config::compile(&m, &input);
        c.push(t.elapsed().as_secs_f64() * 1e3);
        let routes: usize = plan
            .http
            .listeners
            .iter()
            .map(|x| {
                serde_json::to_value(x)
                    .ok()
                    .map(|v| count_routes(&v))
                    .unwrap_or(0)
            })
            .sum();
        out = Some((plan.l4.len(), routes, errors.len()));
    }
    let (l4, routes, errors) = out.context("no run")?;
    Ok(Timing {
        load: median(&l),
        validate: median(&v),
        compile: median(&c),
        l4,
        http_routes: routes.to_string(),
        errors,
    })
}

/// Number of `routes` entries anywhere in a listener's JSON (the HTTP route table's size).
fn count_routes(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, x)| {
                if k == "routes" {
                    x.as_array().map(|a| a.len()).unwrap_or(0) + count_routes(x)
                } else {
                    count_routes(x)
                }
            })
            .sum(),
        serde_json::Value::Array(a) => a.iter().map(count_routes).sum(),
        _ => 0,
    }
}

/// The agent's PID, found by its unique pin root on its command line (read-only scan).
fn agent_pid(pin_root: &Path) -> Option<u32> {
    let want = pin_root.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.iter().any(|a| *a == b"run") && args.contains(&want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let configs: Vec<(String, String)> = if ctx.quick {
        vec![
            ("100 HTTP routes".into(), http_routes(100)),
            ("10 services x 10 endpoints".into(), l4_services(10, 10)),
        ]
    } else {
        vec![
            ("100 HTTP routes".into(), http_routes(100)),
            ("1,000 HTTP routes".into(), http_routes(1000)),
            ("10,000 HTTP routes".into(), http_routes(10000)),
            ("200 services x 100 endpoints".into(), l4_services(200, 100)),
            (
                "1,000 services x 100 endpoints".into(),
                l4_services(1000, 100),
            ),
        ]
    };
    let runs = if ctx.quick { 1 } else { 3 };
    let mut body = String::new();
    let _ = writeln!(
        body,
        "Manifests are generated: *N HTTP routes* = one HTTP Gateway server, one ServiceEntry, N \
         VirtualServices each with host `svc<i>.bench.local` and one `prefix: /r<i>/` route; *S services \
         x E endpoints* = one Gateway with S TCP servers, S STATIC ServiceEntries of E distinct endpoints \
         each and S VirtualServices with one `tcp` route. Load, validate and compile are timed in-process \
         (the `gateway` library, {} build; median of {runs} runs). Apply is `Dataplane::apply` of the \
         compiled plan to a fresh dataplane in a private network namespace (first apply, then the same \
         plan again, which the diff makes a no-op); the first apply writes the Maglev rings through a \
         mapping of `MAGLEV`, and is timed again on another fresh dataplane with the rings written by \
         syscall (one BPF_MAP_UPDATE_BATCH per ring, the path for a pinned map without \
         BPF_F_MMAPABLE). RSS is the real agent (`gateway run` with XDP on a \
         veth in a namespace) once `/ready`; BPF map memory is the `memlock` of the agent's map fds \
         (/proc/PID/fdinfo).\n",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    let _ = writeln!(body, "| config | YAML size | load ms | validate ms | compile ms | L4 services / HTTP routes in plan | apply ms (first) | apply ms (first, rings by syscall) | apply ms (no change) | agent RSS | BPF maps (memlock) |");
    let _ = writeln!(
        body,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut map_detail = None;
    let mut slow_apply: Vec<(String, f64)> = Vec::new();
    for (label, yaml) in &configs {
        check_interrupt()?;
        eprintln!("bench:   config scale: {label}");
        let dir = tempfile::Builder::new()
            .prefix("gwbench-scale-")
            .tempdir()?;
        std::fs::write(dir.path().join("config.yaml"), yaml)?;
        let t = match time_config(dir.path(), runs) {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(
                    body,
                    "| {label} | | **failed: {}** | | | | | | | | |",
                    cell(&format!("{e:#}"))
                );
                continue;
            }
        };
        // Apply, in a private namespace.
        let d = dir.path().to_path_buf();
        let apply = xdp::time_apply(move || {
            let input = CompileInput {
                vips: vec![Ipv4Addr::new(198, 18, 0, 1).into()],
                ..CompileInput::default()
            };
            config::load_and_compile(&d, &input)
                .map(|(p, _)| p)
                .map_err(|e| anyhow::anyhow!("{} config errors", e.len()))
        });
        let (a1, a2, a3) = match apply {
            Ok(a) => (
                format!(
                    "{:.0}{}",
                    a.first,
                    if a.mapped {
                        ""
                    } else {
                        " (by syscall: map not mmapable)"
                    }
                ),
                format!("{:.1}", a.again),
                a.first_by_syscall
                    .map(|s| format!("{s:.0}"))
                    .unwrap_or_else(|| "-".into()),
            ),
            Err(e) => (
                format!("**{}**", cell(&format!("{e:#}"))),
                String::new(),
                String::new(),
            ),
        };
        // The real agent on this config.
        let (rss, maps) = match agent_memory(dir.path(), yaml) {
            Ok((rss, total, detail)) => {
                map_detail = Some(detail);
                (util::human_bytes(rss * 1024), util::human_bytes(total))
            }
            Err(e) => {
                let e = format!("{e:#}");
                if e.contains("not ready within") {
                    ("**agent not ready within the test harness's 30 s (its first apply takes longer: see the apply column)**".into(), String::new())
                } else {
                    (format!("**{}**", cell(&e)), String::new())
                }
            }
        };
        if let Some(ms) = a1.split(' ').next().and_then(|a| a.parse::<f64>().ok()) {
            if ms > 1000.0 {
                slow_apply.push((label.clone(), ms));
            }
        }
        let _ =
            writeln!(
            body,
            "| {label} | {} | {:.0} | {:.0} | {:.0} | {} / {}{} | {a1} | {a3} | {a2} | {rss} | {maps} |",
            util::human_bytes(yaml.len() as u64),
            t.load,
            t.validate,
            t.compile,
            t.l4,
            t.http_routes,
            if t.errors > 0 { format!(" ({} validation errors)", t.errors) } else { String::new() },
        );
    }
    if let Some(detail) = map_detail {
        let _ = writeln!(body, "\nBPF maps of the agent (memlock per map; preallocated, so the same for every config):\n");
        let _ = writeln!(body, "| map | memlock |\n|---|---:|");
        for (name, m) in detail {
            let _ = writeln!(body, "| {name} | {} |", util::human_bytes(m));
        }
    }
    let _ = writeln!(
        body,
        "\nThe backend table holds {} backends (`MAX_BACKENDS`) and the service table {} services \
         (`MAX_SERVICES`, L4 and L7 ports together); a config beyond either is refused whole with an \
         error naming the limit, and the agent keeps serving its last good config.",
        gateway_common::MAX_BACKENDS,
        gateway_common::MAX_SERVICES
    );
    if slow_apply.iter().any(|(_, ms)| *ms > 5000.0) {
        let _ = writeln!(
            body,
            "\n### Where we lose, and why\n\n- **Applying many backends is slow: {}.** Read off the code of \
             `Dataplane::apply` (not profiled): each new backend gets the lowest free id by scanning ids from 0 \
             (quadratic in the number of backends), and every Maglev slot is one map-update syscall ({} slots \
             per service). A free-id cursor and batched map updates (`BPF_MAP_UPDATE_BATCH`) would fix both. \
             HTTP routes are not affected: they do not touch BPF maps. The first apply of a large L4 config also \
             delays the agent's `/ready`.",
            slow_apply
                .iter()
                .map(|(l, ms)| format!("{l}: {:.1} s", ms / 1000.0))
                .collect::<Vec<_>>()
                .join(", "),
            gateway_common::MAGLEV_RING
        );
    }
    Ok(Section::new("4. Config scale", body))
}

fn cell(s: &str) -> String {
    s.replace('|', "/")
        .replace('\n', " ")
        .chars()
        .take(240)
        .collect()
}

/// What `agent_memory` measures: RSS KiB, BPF map bytes, and bytes per map.
type Memory = (u64, u64, Vec<(String, u64)>);

/// Starts the agent on `yaml` in a one-backend topology and measures its memory.
fn agent_memory(_dir: &Path, yaml: &str) -> anyhow::Result<Memory> {
    let topo = Topology::new(
        "bs",
        1,
        Opts {
            start_backends: false,
            ..Opts::default()
        },
    )?;
    // One VIP, as the in-process compile above uses (by default every node address is one).
    let agent = Agent::start_with(
        &topo,
        &[("config.yaml", yaml.to_string())],
        &["--vip", "198.18.0.1"],
    )?;
    let dump = agent.config_dump()?;
    let rejected = dump["rejected"].as_array().map(|a| a.len()).unwrap_or(0);
    let pid = agent_pid(&agent.pin_root).context("agent PID not found")?;
    let rss = util::rss_kib(pid).context("agent RSS")?;
    let (total, detail) = util::bpf_map_memlock(pid);
    anyhow::ensure!(
        rejected == 0,
        "agent rejected the config: {}",
        dump["rejected"]
    );
    Ok((rss, total, detail))
}
