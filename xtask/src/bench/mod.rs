//! `cargo xtask bench [--quick]`: this project against the alternatives a user would pick, in the
//! same run on the same machine, written as a table of ratios with the conditions.
//!
//! 1. XDP per-packet cost through BPF_PROG_TEST_RUN, net of an empty program (`xdp`).
//! 2. L4 through network namespaces: connections/s and iperf3 throughput, XDP vs IPVS, iptables
//!    DNAT and HAProxy (`l4`); 2b. the same in a qemu guest whose kernel has IPVS (`l4vm`).
//! 3. L7: requests/s and latency through the agent vs HAProxy and nginx (`l7`).
//! 4. Config scale: load + validate + compile + apply time, agent RSS, BPF map memory (`scale`).
//! 5. Connection-table pressure (`xdp`).
//! 6. L7 route selection, indexed vs linear (`router`).
//!
//! Full mode writes docs/benchmarks.md; `--quick` (CI smoke: tiny counts, seconds) writes
//! target/bench-quick.md. Peers are installed from Debian packages when missing; one that cannot
//! be installed is reported in the table. Every namespace, link, pin and process created is owned
//! by a guard and removed on exit, on error and on Ctrl-C.

mod baseline;
mod l4;
mod l7;
mod scale;
mod tls;
mod util;
pub mod vm;
mod xdp;

use std::{fmt::Write as _, path::PathBuf, process::Command, time::Instant};

use anyhow::{Context as _, Result};

pub struct Section {
    pub title: String,
    pub body: String,
}

impl Section {
    pub fn new(title: &str, body: String) -> Self {
        Section {
            title: title.into(),
            body,
        }
    }

    fn failed(title: &str, e: &anyhow::Error) -> Self {
        Section::new(
            title,
            format!(
                "**Not measured: this part failed:** `{}`\n",
                format!("{e:#}").replace('\n', " ")
            ),
        )
    }
}

pub struct Ctx {
    pub quick: bool,
    /// The gateway agent and test-backend binaries (release builds in full mode).
    pub gateway_bin: PathBuf,
    pub backend_bin: PathBuf,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn run(quick: bool, only: &[String]) -> Result<()> {
    crate::require_root()?;
    const SECTIONS: [&str; 9] = [
        "xdp", "l4", "l4vm", "l7", "tls", "scale", "pressure", "router", "observe",
    ];
    if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        anyhow::bail!(
            "--only {bad}: not a section (one of {})",
            SECTIONS.join(", ")
        );
    }
    let want = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    // Full figures come from optimised code: a debug xtask rebuilds itself (and the agent) in
    // release and hands over. Quick mode only proves the harness, so it keeps the debug build.
    if !quick && cfg!(debug_assertions) {
        crate::cargo(&[
            "build",
            "--release",
            "-p",
            "xtask",
            "-p",
            "gateway-userspace",
            "-p",
            "gateway-tests",
            "--bins",
        ])?;
        let exe = target_dir().join("release/xtask");
        let mut cmd = Command::new(&exe);
        cmd.arg("bench");
        if !only.is_empty() {
            cmd.arg(format!("--only={}", only.join(",")));
        }
        let st = cmd
            .status()
            .with_context(|| format!("running {}", exe.display()))?;
        anyhow::ensure!(st.success(), "bench failed ({st})");
        return Ok(());
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    if cfg!(debug_assertions) {
        crate::cargo(&[
            "build",
            "-p",
            "gateway-userspace",
            "-p",
            "gateway-tests",
            "--bins",
        ])?;
    }
    let ctx = Ctx {
        quick,
        gateway_bin: target_dir().join(profile).join("gateway"),
        backend_bin: target_dir().join(profile).join("test-backend"),
    };
    // The namespace harness finds its binaries through these.
    std::env::set_var("GATEWAY_BIN", &ctx.gateway_bin);
    std::env::set_var("TEST_BACKEND_BIN", &ctx.backend_bin);
    util::install_signal_handlers();
    let started = Instant::now();
    let cond = util::conditions();

    let xopts = if quick {
        xdp::Opts {
            packets: 200,
            rounds: 2,
            repeat: 1000,
            fill: false,
        }
    } else {
        xdp::Opts {
            packets: 5000,
            rounds: 7,
            repeat: 1_000_000,
            fill: true,
        }
    };
    let mut sections = Vec::new();
    let mut headline = Vec::new();

    if want("xdp") {
        eprintln!("bench: 1. XDP per-packet cost");
        match xdp::per_packet(&xopts) {
            Ok(p) => {
                headline.extend(p.headline);
                sections.push(p.section);
            }
            Err(e) => sections.push(Section::failed("1. XDP per-packet cost", &e)),
        }
        util::check_interrupt()?;
    }

    if want("l4") {
        eprintln!("bench: 2. L4 through network namespaces");
        match l4::run(&ctx) {
            Ok((s, h)) => {
                headline.extend(h);
                sections.push(s);
            }
            Err(e) => sections.push(Section::failed("2. L4 through network namespaces", &e)),
        }
        util::check_interrupt()?;
    }

    if want("l4vm") {
        eprintln!("bench: {}", vm::TITLE);
        match vm::run(&ctx) {
            Ok((s, h)) => {
                headline.extend(h);
                sections.push(s);
            }
            Err(e) => sections.push(Section::failed(vm::TITLE, &e)),
        }
        util::check_interrupt()?;
    }

    if want("l7") {
        eprintln!("bench: 3. L7");
        match l7::run(&ctx) {
            Ok((s, h)) => {
                headline.extend(h);
                sections.push(s);
            }
            Err(e) => sections.push(Section::failed("3. L7 (HTTP/1.1 and HTTP/2)", &e)),
        }
        util::check_interrupt()?;
    }

    if want("tls") {
        eprintln!("bench: 3b. TLS termination");
        match tls::run(&ctx) {
            Ok((s, h)) => {
                headline.extend(h);
                sections.push(s);
            }
            Err(e) => sections.push(Section::failed("3b. TLS termination", &e)),
        }
        util::check_interrupt()?;
    }

    if want("scale") {
        eprintln!("bench: 4. config scale");
        match scale::run(&ctx) {
            Ok(s) => sections.push(s),
            Err(e) => sections.push(Section::failed("4. Config scale", &e)),
        }
        util::check_interrupt()?;
    }

    if want("pressure") {
        eprintln!("bench: 5. connection-table pressure");
        match xdp::pressure(&xopts) {
            Ok(s) => sections.push(s),
            Err(e) => sections.push(Section::failed("5. Connection-table pressure", &e)),
        }
        util::check_interrupt()?;
    }

    if want("router") {
        eprintln!("bench: 6. L7 route selection");
        sections.push(router_lookups(quick));
    }

    if want("observe") {
        eprintln!("bench: 7. Per-request observability cost");
        sections.push(observe_cost(quick));
    }

    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let doc = render(&cond, command, started.elapsed(), &headline, &sections);
    let out = if !only.is_empty() {
        target_dir().join("bench-only.md")
    } else if quick {
        target_dir().join("bench-quick.md")
    } else {
        workspace_root().join("docs/benchmarks.md")
    };
    // Figures measured by tests (held connections, conn-disrupt) follow a marker in
    // docs/benchmarks.md: a full run keeps them.
    let mut doc = doc;
    if let Ok(old) = std::fs::read_to_string(&out) {
        if let Some(i) = old.find(KEPT_MARKER) {
            doc.push('\n');
            doc.push_str(&old[i..]);
        }
    }
    std::fs::write(&out, &doc).with_context(|| format!("writing {}", out.display()))?;
    println!("{doc}");
    eprintln!("bench: wrote {}", out.display());
    Ok(())
}

/// Where docs/benchmarks.md's hand-kept part starts (figures measured by tests).
const KEPT_MARKER: &str = "<!-- kept: figures measured by tests, not by cargo xtask bench -->";

/// The metrics and access-log work of one request, in-process
/// (`gateway::l7::observe::bench_observe`); the access log's write is measured end to end in
/// section 3.
fn observe_cost(quick: bool) -> Section {
    use std::fmt::Write as _;
    let n = if quick { 2_000 } else { 500_000 };
    let (m, t, j) = gateway::l7::observe::bench_observe(n);
    let mut body = String::new();
    let _ = writeln!(
        body,
        "`gateway::l7::observe::bench_observe({n})`, {} build, median of 5 runs: what the agent adds \
         to each HTTP request for Istio's metrics (`istio_requests_total`, the duration and size \
         histograms: one label-set lookup each) and for formatting the access-log line. The write of \
         the line to its file, and the whole effect on requests/s, is the `+ access log` row of \
         section 3.\n\n\
         | work per request | ns |\n|---|---:|\n\
         | Istio metrics (4 series) | {m:.0} |\n\
         | access-log line, text | {t:.0} |\n\
         | access-log line, JSON | {j:.0} |\n",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    Section::new("7. Per-request observability cost", body)
}

/// Route selection alone (`gateway::l7::router`, in-process): mean time of a lookup that matches
/// near the end of tables of 10 to 10,000 routes on one vhost, median of 5 runs, through the
/// per-vhost index and, in the same run, through the linear scan (Envoy's order) as the baseline.
fn router_lookups(quick: bool) -> Section {
    use gateway::l7::router::{bench_router, BenchTable, Strategy, INDEX_MIN_ROUTES};
    use std::fmt::Write as _;
    // A linear lookup near the end of n routes tries all n: keep each table's work about equal.
    // An indexed lookup costs about the same at any size: a fixed count.
    let budget = if quick { 20_000 } else { 20_000_000 };
    let indexed_lookups = if quick { 2_000 } else { 1_000_000 };
    let sizes = [10usize, 100, 1_000, 10_000];
    let median = |n: usize, lookups: usize, table, strategy| {
        let mut v: Vec<f64> = (0..5)
            .map(|_| bench_router(n, lookups, table, strategy))
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[2]
    };
    let mut body = String::new();
    let _ = writeln!(
        body,
        "`gateway::l7::router::bench_router(n, lookups, table, strategy)`, {} build, median of 5 runs; \
         lookups: {budget} / n where the cost grows with the routes, {indexed_lookups} for the index on \
         the mixed table (a twentieth of those for the unprefixed regexes). Host selection is \
         one hash lookup whatever the table size. A vhost of {INDEX_MIN_ROUTES} routes or more uses the \
         index when it leaves out at least a fifth of them (else, and below, `select` costs the linear \
         figure).\n",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    let tables = [
        (
            BenchTable::Mixed,
            "Mixed table: a third each `prefix`, `exact` and `regex` + header matches, in Istio's \
             first-match order; the request hits a prefix route near the end. The index (a byte trie of \
             exact and prefix URIs and of the literal prefix every match of a regex must start with) \
             offers only the routes whose URI can match, so the cost no longer grows with the table.",
        ),
        (
            BenchTable::HeaderOnly,
            "Header-only table: every route `prefix: /` with its own `x-tenant` header, the request \
             hits the last one. Only the URI is indexed, so every route is a candidate and the index \
             costs what the linear scan does: such a vhost stays linear in its routes.",
        ),
        (
            BenchTable::UnprefixedRegex,
            "Unprefixed-regex table: every route a regex with no literal prefix (`.*/u{i}/[a-z]+`), the \
             request hits the last one. These routes are gated by one `RegexSet` over their regexes: a \
             request none of them can match skips them all, but one that matches any (as here) tries \
             each in order, so this case too stays linear, plus the gate's scan.",
        ),
    ];
    for (table, text) in tables {
        let _ = writeln!(body, "{text}\n");
        let _ = writeln!(
            body,
            "| routes | indexed ns per lookup | linear ns per lookup | linear / indexed | indexed, ratio to 10 routes |\n\
             |---:|---:|---:|---:|---:|"
        );
        let mut base = None;
        for n in sizes {
            // Each regex try costs more than a header check: fewer lookups there.
            let scaled = match table {
                BenchTable::UnprefixedRegex => (budget / n / 20).max(10),
                _ => (budget / n).max(10),
            };
            let idx_lookups = match table {
                BenchTable::Mixed => indexed_lookups,
                BenchTable::HeaderOnly | BenchTable::UnprefixedRegex => scaled,
            };
            let idx = median(n, idx_lookups, table, Strategy::Indexed);
            let lin = median(n, scaled, table, Strategy::Linear);
            let base = *base.get_or_insert(idx);
            let _ = writeln!(
                body,
                "| {n} | {idx:.0} | {lin:.0} | {:.1} | {:.1} |",
                lin / idx,
                idx / base
            );
        }
        let _ = writeln!(body);
    }
    Section::new("6. L7 route selection", body)
}

fn render(
    c: &util::Conditions,
    command: &str,
    took: std::time::Duration,
    headline: &[String],
    sections: &[Section],
) -> String {
    let mut d = String::new();
    let _ = writeln!(d, "# Benchmarks\n");
    let _ = writeln!(
        d,
        "Generated by `{command}` (as root; it installs the peers it compares against from Debian \
         packages). Do not edit by hand: run it again. The harness is `xtask/src/bench/`; each section \
         below names the exact commands and programs that produced its figures.\n"
    );
    let _ = writeln!(d, "| condition | value |\n|---|---|");
    let _ = writeln!(d, "| kernel (`uname -r`) | {} |", c.kernel);
    let _ = writeln!(d, "| CPU (/proc/cpuinfo) | {} |", c.cpu);
    let _ = writeln!(d, "| cores | {} |", c.cores);
    let _ = writeln!(d, "| date | {} |", c.date);
    let _ = writeln!(d, "| command | `{command}` |");
    let _ = writeln!(d, "| run time | {:.0} s |", took.as_secs_f64());
    let _ = writeln!(
        d,
        "\nThe machine is shared and noisy: figures are medians of several runs and are given as \
         ratios against peers measured in the same run; absolute numbers are shown only to make the \
         ratios checkable. Network namespaces share the machine's CPUs, so the client, the node and \
         the backends compete for the same cores.\n"
    );
    if !headline.is_empty() {
        let _ = writeln!(d, "## Headline\n");
        for h in headline {
            let _ = writeln!(d, "- {h}");
        }
        let _ = writeln!(d);
    }
    for s in sections {
        let _ = writeln!(d, "## {}\n\n{}", s.title, s.body.trim_end());
        let _ = writeln!(d);
    }
    d
}
