//! deploy/: the plain manifest, the Helm chart and the Dockerfile, checked without a cluster.
//!
//! Every document is parsed into its `k8s-openapi` type (so a misspelt field or a wrong shape
//! fails here, as the API server would reject it), then the properties the agent depends on are
//! asserted: host network, the exact privilege set (the one `tests/tests/unprivileged.rs` proves
//! enough), probes and preStop drain on the agent's ports, the bpffs mount, read-only RBAC on
//! exactly what the agent reads, and a config that the gateway itself accepts.
//!
//! helm is not available here: the chart is rendered by `gtmpl` (Go's text/template) with the
//! few Helm functions its templates use implemented below (`helm` module). The chart keeps to
//! that subset: `.Values`/`.Release`/`.Chart`, if/with/range, toYaml, nindent, indent, quote,
//! default, keys, sortAlpha. With default values it must give the same objects as the manifest.
//! No root, no network; the config check runs the built `gateway check` (no kernel state).

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::{ensure, Context as _, Result};
use gateway_tests::agent::gateway_check;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;

const MANIFEST: &str = "deploy/kubernetes/gateway.yaml";
const CHART: &str = "deploy/helm/gateway";
const RELEASE: &str = "gateway";
const NAMESPACE: &str = "istio-system";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> Result<String> {
    fs::read_to_string(repo().join(rel)).with_context(|| format!("reading {rel}"))
}

#[path = "deploy/helm.rs"]
mod helm;
#[path = "deploy/objects.rs"]
mod objects;

use objects::{
    cap_set, check_objects, daemonset_caps, documents, flag_values, one_flag, security, Objects,
};

/// The ConfigMap's files, written as the kubelet's volume shows them, pass `gateway check`.
fn check_config(o: &Objects) -> Result<()> {
    let cm: ConfigMap = o.one()?;
    check_files(cm.data.unwrap_or_default())
}

/// Config files (name -> YAML) pass `gateway check` without warnings.
fn check_files(data: BTreeMap<String, String>) -> Result<()> {
    ensure!(!data.is_empty(), "ConfigMap has no data");
    let dir = tempfile::tempdir()?;
    for (name, text) in &data {
        ensure!(
            name.ends_with(".yaml") || name.ends_with(".yml"),
            "ConfigMap key {name}: the agent reads only *.yaml/*.yml"
        );
        let docs = documents(text)?;
        ensure!(
            docs.iter().any(|d| d["kind"] == "Gateway"),
            "{name}: no Gateway"
        );
        fs::write(dir.path().join(name), text)?;
    }
    let (ok, stdout, stderr) = gateway_check(dir.path())?;
    ensure!(ok, "gateway check rejects the ConfigMap:\n{stdout}{stderr}");
    // The example is clean: no unknown field or other warning either.
    ensure!(
        !stdout.contains("Warning [") && !stderr.contains("warning"),
        "gateway check warns about the ConfigMap:\n{stdout}{stderr}"
    );
    Ok(())
}
#[test]
fn manifest_objects() -> Result<()> {
    let o = Objects::parse(&read(MANIFEST)?)?;
    check_objects(&o, false)?;
    let svc: Service = o.one()?;
    ensure!(svc.spec.and_then(|s| s.type_).as_deref() == Some("LoadBalancer"));
    Ok(())
}

/// The example objects to apply next to gateway.yaml pass `gateway check`.
#[test]
fn example_routes_pass_gateway_check() -> Result<()> {
    check_files(BTreeMap::from([(
        "example-routes.yaml".to_string(),
        read("deploy/kubernetes/example-routes.yaml")?,
    )]))
}

/// The uninstall DaemonSet removes exactly the agent's pin root on every node, unprivileged.
#[test]
fn cleanup_removes_the_agents_pins() -> Result<()> {
    let agent: DaemonSet = Objects::parse(&read(MANIFEST)?)?.one()?;
    let agent_args = agent
        .spec
        .template
        .spec
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.args)
        .unwrap_or_default();
    let pin_root = one_flag(&agent_args, "--pin-root")?;

    let ds: DaemonSet = Objects::parse(&read("deploy/kubernetes/cleanup.yaml")?)?.one()?;
    ensure!(ds.metadata.namespace.as_deref() == Some(NAMESPACE));
    ensure!(
        ds.spec.selector.match_labels != agent.spec.selector.match_labels,
        "the cleanup DaemonSet selects the agent's pods"
    );
    let pod = ds.spec.template.spec.context("pod spec")?;
    ensure!(
        pod.host_network != Some(true),
        "cleanup needs no host network"
    );
    ensure!(pod.automount_service_account_token == Some(false));
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    ensure!(
        ["NoSchedule", "NoExecute"]
            .iter()
            .all(|e| tolerations.iter().any(
                |t| t.operator.as_deref() == Some("Exists") && t.effect.as_deref() == Some(*e)
            )),
        "cleanup does not reach every node: {tolerations:?}"
    );
    let inits = pod.init_containers.as_deref().unwrap_or_default();
    ensure!(inits.len() == 1, "{} init containers", inits.len());
    let c = &inits[0];
    let mut cmd = c.command.clone().unwrap_or_default();
    cmd.extend(c.args.clone().unwrap_or_default());
    ensure!(
        cmd == ["/usr/local/bin/gateway", "cleanup", "--pin-root", pin_root],
        "cleanup runs {cmd:?}"
    );
    let sc = security(c)?;
    ensure!(sc.privileged != Some(true), "cleanup is privileged");
    ensure!(sc.allow_privilege_escalation == Some(false));
    let caps = sc.capabilities.as_ref().context("cleanup capabilities")?;
    ensure!(caps.drop.as_deref() == Some(&["ALL".to_string()][..]));
    // The binary's file capabilities must be in the bounding set for it to exec at all.
    let mut want = daemonset_caps();
    want.insert("DAC_OVERRIDE".into());
    let add = cap_set(caps.add.as_deref().unwrap_or_default())?;
    ensure!(add == want, "cleanup capabilities {add:?}, want {want:?}");
    let mount = c
        .volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|m| m.mount_path == "/sys/fs/bpf")
        .context("cleanup does not mount bpffs")?;
    let vol = pod
        .volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.host_path.clone())
        .context("cleanup bpffs is not a hostPath")?;
    ensure!(vol.path == "/sys/fs/bpf" && vol.type_.as_deref() == Some("Directory"));
    Ok(())
}

/// `setcap` in the image grants the same capabilities the DaemonSet adds.
#[test]
fn dockerfile_file_caps_match_daemonset() -> Result<()> {
    let docker = read("deploy/Dockerfile")?;
    let line = docker
        .lines()
        .find(|l| l.trim_start().starts_with("RUN setcap"))
        .context("no `RUN setcap` in deploy/Dockerfile")?;
    let arg = line
        .split_whitespace()
        .nth(2)
        .context("setcap without arguments")?
        .trim_matches('"');
    // cap_a,cap_b${EXTRA_FILE_CAPS}+ep: the default build (EXTRA_FILE_CAPS empty).
    let (list, flags) = arg.rsplit_once('+').context("setcap list without +flags")?;
    ensure!(flags == "ep", "setcap flags {flags}: want +ep");
    let list = list.replace("${EXTRA_FILE_CAPS}", "");
    let file_caps = cap_set(&list.split(',').map(String::from).collect::<Vec<_>>())?;
    ensure!(
        file_caps == daemonset_caps(),
        "Dockerfile setcap {file_caps:?}"
    );
    let o = Objects::parse(&read(MANIFEST)?)?;
    let ds: DaemonSet = o.one()?;
    let add = ds
        .spec
        .template
        .spec
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.security_context)
        .and_then(|s| s.capabilities)
        .and_then(|c| c.add)
        .unwrap_or_default();
    ensure!(
        cap_set(&add)? == file_caps,
        "DaemonSet adds {add:?}, image has {file_caps:?}"
    );
    ensure!(
        docker.lines().any(|l| l.trim() == "USER 65534:65534"),
        "the image does not run as 65534"
    );
    ensure!(docker.contains("COPY target/release/gateway /usr/local/bin/gateway"));
    Ok(())
}

#[test]
fn chart_defaults_render_the_manifest() -> Result<()> {
    let rendered = helm::render(&repo().join(CHART), RELEASE, NAMESPACE, &[])?;
    let chart = Objects::parse(&rendered)?;
    let plain = Objects::parse(&read(MANIFEST)?)?;
    let names = |o: &Objects| o.0.keys().cloned().collect::<Vec<_>>();
    ensure!(
        names(&chart) == names(&plain),
        "chart renders {:?}, manifest has {:?}",
        names(&chart),
        names(&plain)
    );
    for (key, want) in &plain.0 {
        let got = &chart.0[key];
        ensure!(
            got == want,
            "{key:?} differs:\nchart:    {}\nmanifest: {}",
            serde_json::to_string(got)?,
            serde_json::to_string(want)?
        );
    }
    check_objects(&chart, false)
}

#[test]
fn chart_values() -> Result<()> {
    let chart = repo().join(CHART);
    let o = Objects::parse(&helm::render(
        &chart,
        RELEASE,
        NAMESPACE,
        &[("service.type", "NodePort")],
    )?)?;
    let svc: Service = o.one()?;
    ensure!(svc.spec.and_then(|s| s.type_).as_deref() == Some("NodePort"));

    // configSource=files: the config from a ConfigMap mounted at --config, which passes
    // `gateway check`.
    let o = Objects::parse(&helm::render(
        &chart,
        RELEASE,
        NAMESPACE,
        &[("configSource", "files")],
    )?)?;
    check_objects(&o, false)?;
    check_config(&o)?;

    // sysResource adds CAP_SYS_RESOURCE, and nothing else changes in the privilege set.
    let o = Objects::parse(&helm::render(
        &chart,
        RELEASE,
        NAMESPACE,
        &[("sysResource", "true")],
    )?)?;
    check_objects(&o, true)?;

    // Interfaces, VIPs, extra args, image and another release/namespace.
    let o = Objects::parse(&helm::render(
        &chart,
        "edge",
        NAMESPACE,
        &[
            ("dataplane.interfaces", "[eth0, eth1]"),
            ("dataplane.vips", "[198.18.0.1]"),
            ("extraArgs", "[--nat-mode, preserve-source]"),
            ("image.repository", "registry.example/gateway"),
            ("image.tag", "v1"),
            ("nodeSelector", "{gateway: \"true\"}"),
        ],
    )?)?;
    check_objects(&o, false)?;
    let ds: DaemonSet = o.one()?;
    ensure!(ds.metadata.name.as_deref() == Some("edge"));
    let pod = ds.spec.template.spec.context("pod spec")?;
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap_or_default();
    ensure!(
        flag_values(&args, "--iface") == ["eth0", "eth1"],
        "{args:?}"
    );
    ensure!(flag_values(&args, "--vip") == ["198.18.0.1"], "{args:?}");
    ensure!(
        args.ends_with(&["--nat-mode".to_string(), "preserve-source".to_string()]),
        "{args:?}"
    );
    ensure!(c.image.as_deref() == Some("registry.example/gateway:v1"));
    ensure!(
        pod.node_selector
            .unwrap_or_default()
            .get("gateway")
            .map(String::as_str)
            == Some("true")
    );
    let binding: ClusterRoleBinding = o.one()?;
    ensure!(binding.subjects.unwrap_or_default()[0].name == "edge");
    Ok(())
}
/// Small helpers of this test that stand for the agent's own parsing.
mod gateway {
    use anyhow::{Context as _, Result};

    /// `5s`, `500ms`, `1m` in seconds (the forms `--drain-duration` takes).
    pub fn parse_duration_secs(s: &str) -> Result<f64> {
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .with_context(|| format!("duration {s} without unit"))?;
        let (n, unit) = s.split_at(split);
        let n: f64 = n.parse().with_context(|| format!("duration {s}"))?;
        Ok(match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            _ => anyhow::bail!("duration {s}: unit {unit}"),
        })
    }
}
