//! Golden files for what operators read: `gateway check` (text and JSON) and
//! `gateway explain --config`, run as a user runs them on `tests/fixtures/check` (a Gateway, a
//! VirtualService with a shadowed rule, a duplicate host, one with a typo, a DestinationRule).
//! `UPDATE_GOLDEN=1 cargo test -p gateway-tests --test cli_golden` rewrites them after an
//! intended change; the diff is then the review.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _, Result};
use gateway_tests::gateway_bin;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Runs `gateway ARGS` in the fixture directory; stdout, stderr and the exit code as one text.
fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(std::fs::canonicalize(gateway_bin()?)?)
        .args(args)
        .current_dir(root().join("fixtures/check"))
        .env("RUST_LOG", "off")
        .output()
        .context("running gateway")?;
    Ok(format!(
        "$ gateway {}\n{}{}exit: {}\n",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code().unwrap_or(-1)
    ))
}

fn golden(name: &str, got: &str) -> Result<()> {
    let path = root().join("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got)?;
    }
    let want = std::fs::read_to_string(&path)
        .with_context(|| format!("{} (UPDATE_GOLDEN=1 creates it)", path.display()))?;
    ensure!(
        got == want,
        "output differs from {} (UPDATE_GOLDEN=1 to accept):\n{got}",
        path.display()
    );
    Ok(())
}

#[test]
fn check_text() -> Result<()> {
    golden("check.txt", &run(&["check", "."])?)
}

#[test]
fn check_json() -> Result<()> {
    golden("check.json.txt", &run(&["check", "-o", "json", "."])?)
}

#[test]
fn explain() -> Result<()> {
    let mut got = run(&[
        "explain",
        "--config",
        ".",
        "GET http://web.example.com:8080/api/x",
    ])?;
    got += &run(&[
        "explain",
        "--config",
        ".",
        "GET http://nobody.example.com:8080/",
    ])?;
    golden("explain.txt", &got)
}

/// `gateway dump` against a running agent on the demo config: the live plan's listeners,
/// routes, clusters and endpoints, as `istioctl proxy-config` shows them, and the layout of the
/// XDP section's connection tables.
#[test]
fn dump_of_a_running_agent() -> Result<()> {
    use gateway_tests::{Agent, Opts, Topology};
    let topo = Topology::new("dg", 3, Opts::http_backends())?;
    let files = gateway_tests::manifests::demo_files()?;
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let agent = Agent::start_with(&topo, &files, &["--vip", "198.18.0.1"])?;
    let mut got = String::new();
    for section in ["listeners", "routes", "clusters", "endpoints"] {
        let out = agent.cli(&["dump", section])?;
        ensure!(out.status.success(), "gateway dump {section}: {out:?}");
        got += &format!(
            "$ gateway dump {section}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The XDP section's connection-table part (counters above it vary with the kernel's own
    // traffic; with no client yet the tables are empty, the layout is what is checked).
    let out = agent.cli(&["dump", "bpf"])?;
    ensure!(out.status.success(), "gateway dump bpf: {out:?}");
    let bpf = String::from_utf8_lossy(&out.stdout);
    // The program's verifier count varies with the build and the kernel: its presence is checked.
    ensure!(
        bpf.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&"gateway_xdp")
                && f.get(1)
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n > 0)
        }),
        "no XDP PROGRAM row with the verifier's count in:\n{bpf}"
    );
    let ct = bpf
        .find("XDP CONNTRACK ENTRIES")
        .with_context(|| format!("no conntrack section in:\n{bpf}"))?;
    got += &format!(
        "$ gateway dump bpf (from XDP CONNTRACK ENTRIES)\n{}",
        &bpf[ct..]
    );
    // The apply time is the one thing that changes from run to run.
    let got: String = got
        .lines()
        .map(|l| match l.find(", applied ") {
            Some(i) if l.starts_with("generation ") => format!("{}, applied <time>)\n", &l[..i]),
            _ => format!("{l}\n"),
        })
        .collect();
    golden("dump.txt", &got)
}
