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
