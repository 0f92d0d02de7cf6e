//! Istio's fidelity on bad input: a directory that mixes valid and invalid objects serves the
//! valid ones at first start and after reloads, each rejection is visible (log, /config_dump,
//! metric), a broken edit of a serving object leaves its previous version serving, a reference
//! to a rejected object behaves like one to a missing object, and `--strict` keeps the
//! all-or-nothing rule.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use gateway_tests::agent::rejected;
use gateway_tests::{http::HttpClient, wait_until, Agent, Opts, Topology};
use serde_json::Value;

const RELOAD: Duration = Duration::from_secs(20);

/// A VirtualService for `broken.example` answering 299 itself, with an invalid timeout when
/// `valid` is false (Istio's webhook refuses it: "timeout: invalid duration").
fn broken_vs(valid: bool) -> String {
    let timeout = if valid { "2s" } else { "soon" };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: broken, namespace: demo}}\nspec:\n  hosts: [broken.example]\n  gateways: [istio-system/demo-gateway]\n  http:\n  - timeout: {timeout}\n    directResponse: {{status: 299, body: {{string: own}}}}\n"
    )
}

/// A Gateway on 8081 whose host is not a FQDN (rejected), and a valid VirtualService bound to it.
const EXTRA_GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: extra-gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8081, name: http-extra, protocol: HTTP}\n    hosts: [shortname]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: extra, namespace: demo}\nspec:\n  hosts: [\"*\"]\n  gateways: [istio-system/extra-gw]\n  http:\n  - directResponse: {status: 200, body: {string: extra}}\n";

fn demo_with(extra: &[(&str, String)]) -> Result<Vec<(String, String)>> {
    let mut files = gateway_tests::manifests::demo_files()?;
    for (n, c) in extra {
        files.push((n.to_string(), c.clone()));
    }
    Ok(files)
}

fn borrowed(files: &[(String, String)]) -> Vec<(&str, String)> {
    files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect()
}

#[test]
fn invalid_objects_are_left_out_and_the_rest_serves() -> Result<()> {
    let topo = Topology::new("adm", 3, Opts::http_backends())?;
    let files = demo_with(&[
        ("broken.yaml", broken_vs(false)),
        ("extra-gateway.yaml", EXTRA_GATEWAY.to_string()),
        // A YAML syntax error: the file is rejected whole.
        (
            "typo.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: x\n".to_string(),
        ),
    ])?;
    let agent = Agent::start_with(&topo, &borrowed(&files), &["--vip", "198.18.0.1"])?;
    let http = HttpClient::new(topo.client.name());

    // The valid objects serve, on both paths.
    let ok = http.get("http://198.18.0.1:8080/v1/x", &[])?;
    ensure!(ok.status == 200, "demo route: {}", ok.status);
    let hits = topo.client_api().tcp_hits("198.18.0.1:31400".parse()?, 5)?;
    ensure!(hits.len() == 5, "TCP service not served: {hits:?}");
    // The rejected VirtualService is absent: its host falls to the demo's catch-all route.
    let r = http.get("http://198.18.0.1:8080/", &["host: broken.example"])?;
    ensure!(
        r.status != 299,
        "the invalid VirtualService serves: {}",
        r.status
    );
    // A VirtualService bound to a rejected Gateway binds nothing: no listener on 8081.
    ensure!(
        http.get("http://198.18.0.1:8081/", &[]).is_err(),
        "port 8081 of a rejected Gateway answers"
    );

    let dump = agent.config_dump()?;
    let rej = rejected(&dump);
    for (file, what) in [
        (
            "broken.yaml",
            "VirtualService demo/broken: spec.http[0].timeout",
        ),
        (
            "extra-gateway.yaml",
            "Gateway istio-system/extra-gw: spec.servers[0].hosts",
        ),
        ("typo.yaml", "YAML"),
    ] {
        ensure!(
            rej.iter().any(|e| e.contains(file) && e.contains(what)),
            "no rejection naming {file} and {what:?}: {rej:#?}"
        );
    }
    ensure!(dump["applied"] == true, "{dump}");
    let (_, metrics) = agent.get("/metrics")?;
    for line in [
        "gateway_config_rejected_objects{kind=\"VirtualService\"} 1",
        "gateway_config_rejected_objects{kind=\"Gateway\"} 1",
        "gateway_config_rejected_objects{kind=\"File\"} 1",
        "gateway_config_last_rejected 0",
    ] {
        ensure!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }
    ensure!(agent.log().contains("rejected: "), "rejections not logged");

    // A broken edit of a serving object: its previous version keeps serving.
    let web = files
        .iter()
        .find(|(n, _)| n == "web.yaml")
        .context("demo web.yaml")?
        .1
        .replace("weight: 90", "weight: -90");
    agent.write_config(&[("web.yaml", web)])?;
    wait_until(
        RELOAD,
        "the broken web VirtualService to be reported",
        || {
            let d = agent.config_dump()?;
            Ok(d["kept_previous"].as_array().is_some_and(|k| {
                k.iter().any(|v| {
                    v.as_str()
                        .is_some_and(|v| v.starts_with("VirtualService demo/web"))
                })
            }))
        },
    )?;
    ensure!(http.get("http://198.18.0.1:8080/v1/x", &[])?.status == 200);
    ensure!(http.get("http://198.18.0.1:8080/teapot", &[])?.status == 418);

    // Fixing the broken object admits it on the next reload.
    agent.write_config(&[("broken.yaml", broken_vs(true))])?;
    wait_until(RELOAD, "the fixed VirtualService to serve", || {
        Ok(http
            .get("http://198.18.0.1:8080/", &["host: broken.example"])?
            .status
            == 299)
    })?;
    let rej = rejected(&agent.config_dump()?);
    ensure!(
        !rej.iter().any(|e| e.contains("broken.yaml")),
        "fixed object still reported: {rej:#?}"
    );
    Ok(())
}

#[test]
fn strict_keeps_all_or_nothing() -> Result<()> {
    let topo = Topology::new("ads", 1, Opts::http_backends())?;
    let files = demo_with(&[("broken.yaml", broken_vs(false))])?;
    // Never exits on content: with --strict an invalid set serves nothing and is not ready.
    let agent = Agent::start_unready(
        &topo,
        &borrowed(&files),
        &["--vip", "198.18.0.1", "--strict"],
    )?;
    let (code, body) = agent.get("/ready")?;
    ensure!(code == 503, "ready with a rejected set: {code} {body}");
    let dump = agent.config_dump()?;
    ensure!(
        dump["generation"] == 0 && dump["applied"] == false,
        "{dump}"
    );
    ensure!(
        rejected(&dump)
            .iter()
            .any(|e| e.contains("VirtualService demo/broken")),
        "{dump}"
    );
    let http = HttpClient::new(topo.client.name());
    ensure!(
        http.get("http://198.18.0.1:8080/v1/x", &[]).is_err(),
        "serves L7 with a rejected set"
    );

    // A valid set applies and makes it ready.
    agent.write_config(&[("broken.yaml", broken_vs(true))])?;
    wait_until(RELOAD, "ready after a valid set", || {
        Ok(agent.get("/ready")?.0 == 200)
    })?;
    ensure!(http.get("http://198.18.0.1:8080/v1/x", &[])?.status == 200);
    let g = agent.generation()?;

    // One invalid object rejects the whole new set; the last good one keeps serving.
    agent.write_config(&[("broken.yaml", broken_vs(false))])?;
    wait_until(RELOAD, "the strict rejection", || {
        Ok(agent.config_dump()?["applied"] == false)
    })?;
    ensure!(
        agent.generation()? == g,
        "generation moved on a rejected set"
    );
    ensure!(
        http.get("http://198.18.0.1:8080/", &["host: broken.example"])?
            .status
            == 299
    );
    ensure!(
        agent.get("/ready")?.0 == 200,
        "a rejected reload must not fail readiness"
    );
    let (_, metrics) = agent.get("/metrics")?;
    ensure!(
        metrics
            .lines()
            .any(|l| l == "gateway_config_last_rejected 1"),
        "{metrics}"
    );
    Ok(())
}

/// `gateway explain` on the demo's manifests, as an operator runs it: the rule that matched and
/// the ones before it, or why the answer is a 404; the exit status says which.
#[test]
fn explain_names_the_rule_or_the_404() -> Result<()> {
    let bin = gateway_tests::gateway_bin()?;
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo");
    let run = |args: &[&str]| -> Result<(bool, String)> {
        let out = std::process::Command::new(&bin)
            .arg("explain")
            .arg("--config")
            .arg(&demo)
            .args(args)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    let (ok, text) = run(&["GET http://web.example.com:8080/teapot"])?;
    ensure!(ok, "{text}");
    ensure!(
        text.contains("rule 2: VirtualService demo/web http[1]")
            && text.contains("no match (uri")
            && text.contains("rule 3: VirtualService demo/web http[2].match[0]: MATCH")
            && text.contains("direct response 418"),
        "{text}"
    );
    let (ok, text) = run(&["GET http://web.example.com:8080/x", "-H", "x-canary: true"])?;
    ensure!(
        ok && text.contains("rule 1: VirtualService demo/web http[0].match[0]: MATCH"),
        "{text}"
    );
    ensure!(
        text.contains("198.18.13.2:8000"),
        "canary endpoints (v2): {text}"
    );
    let (ok, text) = run(&["GET http://web.example.com:8081/"])?;
    ensure!(
        !ok && text.contains("no HTTP listener on port 8081"),
        "{text}"
    );
    Ok(())
}

/// `gateway check` as a CI step, in `istioctl analyze`'s form: the text names code, object,
/// file:line and field and says what would still be served; `-o json` gives the same findings
/// as data; both exit 79, as istioctl does.
#[test]
fn check_reports_each_rejected_object_as_text_and_json() -> Result<()> {
    let bin = gateway_tests::gateway_bin()?;
    let dir = tempfile::tempdir()?;
    for (name, content) in demo_with(&[("broken.yaml", broken_vs(false))])? {
        std::fs::write(dir.path().join(name), content)?;
    }
    let run = |args: &[&str]| -> Result<(bool, String)> {
        let out = std::process::Command::new(&bin)
            .arg("check")
            .args(args)
            .arg(dir.path())
            .output()?;
        ensure!(
            out.status.success() || out.status.code() == Some(79),
            "exit status {:?}",
            out.status
        );
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    let (ok, text) = run(&[])?;
    ensure!(!ok, "check accepted an invalid object: {text}");
    ensure!(
        text.lines().any(
            |l| l.starts_with("Error [IST0106] (VirtualService demo/broken ")
                && l.contains("broken.yaml:")
                && l.contains(") spec.http[0].timeout: ")
        ),
        "{text}"
    );
    ensure!(
        text.contains("1 rejected (1 VirtualService); the other"),
        "{text}"
    );
    let (ok, json) = run(&["-o", "json"])?;
    ensure!(!ok);
    let v: Value = serde_json::from_str(&json).with_context(|| json.clone())?;
    let errors: Vec<&Value> = v
        .as_array()
        .context("an array")?
        .iter()
        .filter(|e| e["level"] == "Error")
        .collect();
    ensure!(errors.len() == 1, "{json}");
    let e = errors[0];
    ensure!(
        e["kind"] == "VirtualService"
            && e["namespace"] == "demo"
            && e["name"] == "broken"
            && e["field"] == "spec.http[0].timeout"
            && e["code"] == "IST0106"
            && e["line"].as_u64().is_some_and(|l| l >= 1)
            && e["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("broken.yaml")),
        "{e}"
    );
    Ok(())
}
