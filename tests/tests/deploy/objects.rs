//! The objects of a manifest or a rendered chart: parsed by kind and name into their API
//! types, and the properties the agent requires of them checked.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, ensure, Context as _, Result};
use gateway_tests::agent::Unprivileged;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Probe, SecurityContext, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Deserialize as _;
use serde_json::Value as Json;

use super::{gateway, NAMESPACE};

/// The non-empty YAML documents of `text`, as JSON values (what the API server would receive).
pub(crate) fn documents(text: &str) -> Result<Vec<Json>> {
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(de)?;
        if !v.is_null() {
            out.push(serde_json::to_value(&v)?);
        }
    }
    Ok(out)
}

/// A set of Kubernetes objects, by kind and name.
pub(crate) struct Objects(pub(crate) BTreeMap<(String, String), Json>);

impl Objects {
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut m = BTreeMap::new();
        for d in documents(text)? {
            let kind = d["kind"]
                .as_str()
                .context("document without kind")?
                .to_string();
            let name = d["metadata"]["name"]
                .as_str()
                .with_context(|| format!("{kind} without metadata.name"))?
                .to_string();
            ensure!(
                m.insert((kind.clone(), name.clone()), d).is_none(),
                "{kind}/{name} defined twice"
            );
        }
        Ok(Objects(m))
    }

    /// The only object of type `T`, parsed into its API type (unknown fields are an error, as
    /// the API server's strict field validation makes them).
    pub(crate) fn one<T: k8s_openapi::Resource + DeserializeOwned>(&self) -> Result<T> {
        let all: Vec<&Json> = self
            .0
            .iter()
            .filter(|((k, _), _)| k == T::KIND)
            .map(|(_, v)| v)
            .collect();
        ensure!(all.len() == 1, "{} {} objects, want 1", all.len(), T::KIND);
        ensure!(
            all[0]["apiVersion"] == T::API_VERSION,
            "{} apiVersion {}, want {}",
            T::KIND,
            all[0]["apiVersion"],
            T::API_VERSION
        );
        let v = all[0].clone();
        let mut unknown = Vec::new();
        let t: T = serde_ignored::deserialize(v, |p| unknown.push(p.to_string()))
            .with_context(|| format!("parsing the {} as {}", T::KIND, T::API_VERSION))?;
        ensure!(
            unknown.is_empty(),
            "{}: unknown fields {unknown:?}",
            T::KIND
        );
        Ok(t)
    }

    pub(crate) fn kinds(&self) -> BTreeSet<&str> {
        self.0.keys().map(|(k, _)| k.as_str()).collect()
    }
}

/// The agent container's caps, as Kubernetes names them (`BPF`): the ones the unprivileged
/// end-to-end test runs the agent with.
pub(crate) fn daemonset_caps() -> BTreeSet<String> {
    Unprivileged::daemonset()
        .caps
        .iter()
        .map(|c| c.to_uppercase())
        .collect()
}

/// `CAP_BPF`, `cap_bpf`, `bpf` -> `BPF`.
fn cap_name(c: &str) -> String {
    let c = c.to_uppercase();
    c.strip_prefix("CAP_").unwrap_or(&c).to_string()
}

pub(crate) fn cap_set(list: &[String]) -> Result<BTreeSet<String>> {
    let set: BTreeSet<String> = list.iter().map(|c| cap_name(c)).collect();
    ensure!(set.len() == list.len(), "duplicate capability in {list:?}");
    Ok(set)
}

/// The value after `flag` in `args` (`--flag VALUE` or `--flag=VALUE`); every occurrence.
pub(crate) fn flag_values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == flag {
            if let Some(v) = it.next() {
                out.push(v.as_str());
            }
        } else if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            out.push(v);
        }
    }
    out
}

pub(crate) fn one_flag<'a>(args: &'a [String], flag: &str) -> Result<&'a str> {
    match flag_values(args, flag).as_slice() {
        [v] => Ok(v),
        other => bail!("{flag} given {} times in {args:?}", other.len()),
    }
}

fn port_number(p: &IntOrString) -> Option<i32> {
    match p {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(_) => None,
    }
}

pub(crate) fn security(c: &Container) -> Result<&SecurityContext> {
    c.security_context
        .as_ref()
        .with_context(|| format!("container {} has no securityContext", c.name))
}

/// The properties of the rendered objects that the agent and the issue require.
/// `sys_resource`: whether CAP_SYS_RESOURCE is expected (the chart's `sysResource`).
pub(crate) fn check_objects(o: &Objects, sys_resource: bool) -> Result<()> {
    let ds: DaemonSet = o.one()?;
    let args = ds
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers.first())
        .and_then(|c| c.args.clone())
        .unwrap_or_default();
    // `--kubernetes` (the default) reads the API and needs no ConfigMap; `--config` reads one.
    let from_api = args.iter().any(|a| a == "--kubernetes");
    ensure!(
        from_api != args.iter().any(|a| a == "--config"),
        "exactly one of --kubernetes and --config: {args:?}"
    );
    let mut want_kinds: BTreeSet<&str> = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Service",
    ]
    .into();
    if !from_api {
        want_kinds.insert("ConfigMap");
    }
    ensure!(o.kinds() == want_kinds, "kinds {:?}", o.kinds());

    let sa: ServiceAccount = o.one()?;
    let role: ClusterRole = o.one()?;
    let binding: ClusterRoleBinding = o.one()?;
    let cm: Option<ConfigMap> = if from_api { None } else { Some(o.one()?) };
    let svc: Service = o.one()?;
    for (kind, ns) in [
        ("DaemonSet", &ds.metadata.namespace),
        ("ServiceAccount", &sa.metadata.namespace),
        ("Service", &svc.metadata.namespace),
    ]
    .into_iter()
    .chain(cm.as_ref().map(|cm| ("ConfigMap", &cm.metadata.namespace)))
    {
        ensure!(ns.as_deref() == Some(NAMESPACE), "{kind} namespace {ns:?}");
    }

    let spec = &ds.spec;
    let strategy = spec.update_strategy.as_ref().context("no updateStrategy")?;
    ensure!(strategy.type_.as_deref() == Some("RollingUpdate"));
    // A surge: the next pod runs beside the old one before it goes (no gap on the node).
    let rolling = strategy
        .rolling_update
        .as_ref()
        .context("no rollingUpdate")?;
    ensure!(
        rolling.max_surge == Some(IntOrString::Int(1))
            && rolling.max_unavailable == Some(IntOrString::Int(0)),
        "rollingUpdate {rolling:?}"
    );
    let pod = spec.template.spec.as_ref().context("no pod spec")?;
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone());
    ensure!(pod.host_network == Some(true), "hostNetwork not set");
    ensure!(
        pod.priority_class_name.as_deref() == Some("system-node-critical"),
        "priorityClassName {:?}",
        pod.priority_class_name
    );
    ensure!(
        spec.selector.match_labels.is_some() && spec.selector.match_labels == pod_labels,
        "selector {:?} vs pod labels {pod_labels:?}",
        spec.selector.match_labels
    );
    // A node agent: tolerates every NoSchedule and NoExecute taint.
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    for effect in ["NoSchedule", "NoExecute"] {
        ensure!(
            tolerations
                .iter()
                .any(|t| t.operator.as_deref() == Some("Exists")
                    && t.key.is_none()
                    && t.effect.as_deref() == Some(effect)),
            "no `operator: Exists` toleration for {effect}: {tolerations:?}"
        );
    }

    // Identity: the binding grants the role to the ServiceAccount the pods run as.
    let sa_name = sa.metadata.name.as_deref().context("ServiceAccount name")?;
    ensure!(
        pod.service_account_name.as_deref() == Some(sa_name),
        "pods run as {:?}, ServiceAccount is {sa_name}",
        pod.service_account_name
    );
    ensure!(binding.role_ref.kind == "ClusterRole");
    ensure!(binding.role_ref.api_group.as_deref() == Some("rbac.authorization.k8s.io"));
    ensure!(Some(&binding.role_ref.name) == role.metadata.name.as_ref());
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    ensure!(
        subjects.len() == 1
            && subjects[0].kind == "ServiceAccount"
            && subjects[0].name == sa_name
            && subjects[0].namespace.as_deref() == Some(NAMESPACE),
        "binding subjects {subjects:?}"
    );

    // RBAC: get/list/watch, on exactly what the agent reads; nothing else, no wildcards.
    let mut granted = BTreeSet::new();
    for rule in role.rules.as_deref().unwrap_or_default() {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        ensure!(
            verbs == ["get", "list", "watch"].into(),
            "rule {rule:?}: verbs {verbs:?}"
        );
        ensure!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "rule {rule:?}"
        );
        for g in rule.api_groups.as_deref().unwrap_or_default() {
            for r in rule.resources.as_deref().unwrap_or_default() {
                ensure!(
                    granted.insert((g.clone(), r.clone())),
                    "{g}/{r} granted twice"
                );
            }
        }
    }
    let want: BTreeSet<(String, String)> = [
        ("networking.istio.io", "gateways"),
        ("networking.istio.io", "virtualservices"),
        ("networking.istio.io", "destinationrules"),
        ("networking.istio.io", "serviceentries"),
        ("", "services"),
        ("", "pods"),
        ("", "secrets"),
        ("discovery.k8s.io", "endpointslices"),
    ]
    .iter()
    .map(|(g, r)| (g.to_string(), r.to_string()))
    .collect();
    ensure!(
        granted == want,
        "ClusterRole grants {granted:?}, want {want:?}"
    );

    // The agent container.
    ensure!(
        pod.containers.len() == 1,
        "{} containers",
        pod.containers.len()
    );
    let c = &pod.containers[0];
    ensure!(
        c.command.as_deref() == Some(&["/usr/local/bin/gateway".to_string()][..]),
        "command {:?}",
        c.command
    );
    let args = c.args.clone().unwrap_or_default();
    ensure!(
        args.first().map(String::as_str) == Some("run"),
        "args {args:?}"
    );

    let sc = security(c)?;
    ensure!(
        sc.run_as_non_root == Some(true),
        "runAsNonRoot {:?}",
        sc.run_as_non_root
    );
    ensure!(
        sc.run_as_user == Some(65534),
        "runAsUser {:?}",
        sc.run_as_user
    );
    ensure!(
        sc.run_as_group == Some(65534),
        "runAsGroup {:?}",
        sc.run_as_group
    );
    ensure!(
        sc.privileged != Some(true),
        "the agent container is privileged"
    );
    // File capabilities are granted at exec only without no_new_privs.
    ensure!(
        sc.allow_privilege_escalation == Some(true),
        "allowPrivilegeEscalation {:?}",
        sc.allow_privilege_escalation
    );
    ensure!(sc.read_only_root_filesystem == Some(true));
    ensure!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()) == Some("RuntimeDefault"),
        "seccompProfile {:?}",
        sc.seccomp_profile
    );
    let caps = sc.capabilities.as_ref().context("no capabilities")?;
    ensure!(
        caps.drop.as_deref() == Some(&["ALL".to_string()][..]),
        "capabilities.drop {:?}",
        caps.drop
    );
    let mut want_caps = daemonset_caps();
    if sys_resource {
        want_caps.insert("SYS_RESOURCE".into());
    }
    let add = cap_set(caps.add.as_deref().unwrap_or_default())?;
    ensure!(
        add == want_caps,
        "capabilities.add {add:?}, want {want_caps:?}"
    );
    // The pod-level context must not widen it.
    if let Some(psc) = &pod.security_context {
        ensure!(
            psc.run_as_user.is_none_or(|u| u == 65534),
            "pod runAsUser {psc:?}"
        );
    }

    // Probes and the preStop hook ask the pod's own agent, on its admin socket (the TCP
    // ports are shared with the other pod during a surge), with the image's own binary.
    let socket = one_flag(&args, "--admin-socket")?;
    let own = format!("unix:{socket}");
    let exec = |p: Option<&Probe>, what: &str| -> Result<Vec<String>> {
        p.with_context(|| format!("no {what}"))?
            .exec
            .as_ref()
            .and_then(|e| e.command.clone())
            .with_context(|| format!("{what} is not an exec probe"))
    };
    let bin = "/usr/local/bin/gateway";
    ensure!(
        exec(c.readiness_probe.as_ref(), "readinessProbe")? == [bin, "ready", "--admin", &own],
        "readiness {:?}",
        c.readiness_probe
    );
    for (p, what) in [
        (c.liveness_probe.as_ref(), "livenessProbe"),
        (c.startup_probe.as_ref(), "startupProbe"),
    ] {
        ensure!(
            exec(p, what)? == [bin, "ready", "--live", "--admin", &own],
            "{what} {p:?}"
        );
    }
    ensure!(one_flag(&args, "--status")?.ends_with(":15021"), "{args:?}");
    ensure!(
        one_flag(&args, "--metrics")?.ends_with(":15090"),
        "{args:?}"
    );
    let admin = one_flag(&args, "--admin")?;
    ensure!(
        admin == "127.0.0.1:15000",
        "--admin {admin}: keep it on loopback"
    );
    let pre_stop = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.as_ref())
        .context("no preStop exec")?;
    ensure!(
        pre_stop.iter().map(String::as_str).collect::<Vec<_>>() == [bin, "drain", "--admin", &own],
        "preStop {pre_stop:?}"
    );
    // The socket's directory is the pod's own (an emptyDir), not shared with the other pod.
    let dir = std::path::Path::new(socket)
        .parent()
        .context("socket directory")?;
    let run_mount = c
        .volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|m| std::path::Path::new(&m.mount_path) == dir)
        .with_context(|| format!("no volume mounted at {}", dir.display()))?;
    ensure!(
        pod.volumes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|v| v.name == run_mount.name && v.empty_dir.is_some()),
        "{} is not an emptyDir",
        dir.display()
    );
    let drain = gateway::parse_duration_secs(one_flag(&args, "--drain-duration")?)?;
    let grace = pod
        .termination_grace_period_seconds
        .context("no grace period")?;
    ensure!(
        grace as f64 > drain,
        "terminationGracePeriodSeconds {grace} not above the drain {drain}s"
    );
    let res = c.resources.as_ref().context("no resources")?;
    for (what, m) in [("requests", &res.requests), ("limits", &res.limits)] {
        let m = m.as_ref().with_context(|| format!("no resources.{what}"))?;
        ensure!(
            m.contains_key("cpu") && m.contains_key("memory"),
            "resources.{what} {m:?}"
        );
    }
    let annotations = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    ensure!(
        annotations.get("prometheus.io/scrape").map(String::as_str) == Some("true")
            && annotations.get("prometheus.io/port").map(String::as_str) == Some("15090")
            && annotations.get("prometheus.io/path").map(String::as_str)
                == Some("/stats/prometheus"),
        "prometheus annotations {annotations:?}"
    );
    // The downward API gives the agent its namespace; `--namespace` uses it.
    let env = c.env.as_deref().unwrap_or_default();
    for (name, field) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
        ("NODE_NAME", "spec.nodeName"),
        // --node-ip: XDP on the interface holding the node's address, whatever its name.
        ("NODE_IP", "status.hostIP"),
    ] {
        ensure!(
            env.iter().any(|e| e.name == name
                && e.value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .is_some_and(|f| f.field_path == field)),
            "env {name} from {field} missing"
        );
    }
    ensure!(one_flag(&args, "--namespace")? == "$(POD_NAMESPACE)");
    // The agent's labels are the pods' labels (Gateway selectors match them).
    let labels: BTreeSet<String> = flag_values(&args, "--label")
        .into_iter()
        .map(String::from)
        .collect();
    let pod_label_args: BTreeSet<String> = pod_labels
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    ensure!(labels == pod_label_args, "--label {labels:?} vs pod labels");

    // Volumes: with --config, the config is the ConfigMap, mounted where --config points (with
    // --kubernetes, nothing but bpffs); bpffs is the node's.
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    let mounts = c.volume_mounts.as_deref().unwrap_or_default();
    if let Some(cm) = &cm {
        let config_dir = one_flag(&args, "--config")?;
        let config_mount = mounts
            .iter()
            .find(|m| m.mount_path == config_dir)
            .with_context(|| format!("nothing mounted at --config {config_dir}"))?;
        ensure!(
            config_mount.read_only == Some(true),
            "config mount {config_mount:?}"
        );
        let config_vol = volumes
            .iter()
            .find(|v| v.name == config_mount.name)
            .context("config volume")?;
        ensure!(
            config_vol.config_map.as_ref().map(|c| &c.name) == cm.metadata.name.as_ref(),
            "config volume {config_vol:?} is not ConfigMap {:?}",
            cm.metadata.name
        );
    } else {
        ensure!(
            mounts
                .iter()
                .all(|m| m.mount_path == "/sys/fs/bpf" || m.mount_path == "/run/gateway"),
            "--kubernetes mounts only bpffs and the admin socket's emptyDir: {mounts:?}"
        );
    }
    let bpf_mount = mounts
        .iter()
        .find(|m| m.mount_path == "/sys/fs/bpf")
        .context("nothing mounted at /sys/fs/bpf")?;
    ensure!(
        bpf_mount.mount_propagation.as_deref() == Some("HostToContainer"),
        "bpffs mount {bpf_mount:?}"
    );
    ensure!(bpf_mount.read_only != Some(true), "bpffs mounted read-only");
    let bpf_vol = volumes
        .iter()
        .find(|v| v.name == bpf_mount.name)
        .context("bpffs volume")?;
    let host = bpf_vol
        .host_path
        .as_ref()
        .context("bpffs is not a hostPath")?;
    ensure!(
        host.path == "/sys/fs/bpf" && host.type_.as_deref() == Some("Directory"),
        "bpffs hostPath {host:?}"
    );
    let pin_root = one_flag(&args, "--pin-root")?;
    ensure!(
        pin_root.starts_with("/sys/fs/bpf/"),
        "--pin-root {pin_root} is not on the mounted bpffs"
    );

    // bpffs-init: the only root in the pod, with only CHOWN and FOWNER, never privileged,
    // preparing exactly the agent's pin root.
    let inits = pod.init_containers.as_deref().unwrap_or_default();
    ensure!(inits.len() == 1, "{} init containers", inits.len());
    let init = &inits[0];
    let isc = security(init)?;
    ensure!(isc.privileged != Some(true), "init container privileged");
    ensure!(isc.allow_privilege_escalation == Some(false));
    let icaps = isc.capabilities.as_ref().context("init capabilities")?;
    ensure!(icaps.drop.as_deref() == Some(&["ALL".to_string()][..]));
    ensure!(
        cap_set(icaps.add.as_deref().unwrap_or_default())?
            == ["CHOWN", "FOWNER"].map(String::from).into(),
        "init capabilities {icaps:?}"
    );
    let script = init.command.clone().unwrap_or_default().join(" ");
    ensure!(
        script.contains(&format!("-o 65534 -g 65534 -m 0700 {pin_root} ")),
        "init does not prepare {pin_root} for uid 65534: {script}"
    );
    ensure!(
        init.image == c.image,
        "init image {:?} vs {:?}",
        init.image,
        c.image
    );

    // Service: the pods, Istio's ports, each targetPort one the pod declares.
    let sspec = svc.spec.as_ref().context("Service spec")?;
    ensure!(
        sspec.selector.is_some() && sspec.selector == spec.selector.match_labels,
        "Service selector {:?}",
        sspec.selector
    );
    let ports = sspec.ports.as_deref().unwrap_or_default();
    // Declared ports are host ports under hostNetwork: one pod per node, no surge.
    ensure!(
        c.ports.as_deref().unwrap_or_default().is_empty(),
        "the container declares ports {:?}",
        c.ports
    );
    for (name, port, target) in [
        ("status-port", 15021, 15021),
        ("http2", 80, 8080),
        ("https", 443, 8443),
    ] {
        let p = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .with_context(|| format!("Service port {name} missing"))?;
        ensure!(
            p.port == port && p.target_port.as_ref().and_then(port_number) == Some(target),
            "Service port {p:?}, want {port} -> {target}"
        );
    }
    Ok(())
}
