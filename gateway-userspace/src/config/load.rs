//! Files -> resources. The only part of `config` that touches the file system.
//!
//! Each file is read twice by the YAML parser: once into untyped values (to find empty
//! documents, kinds and names, and to catch syntax errors), then each known document straight
//! into its typed model, so that type errors keep their line number. Unknown fields are collected
//! as warnings through `serde_ignored`; `serde_path_to_error` names the field of a type error.

use crate::config::model::{
    ConfigError, DestinationRuleSpec, EndpointSliceDoc, EndpointSliceSpec, GatewaySpec, Manifests,
    ObjectMeta, PodDoc, PodInfo, Resource, SecretSpec, ServiceEntrySpec, ServiceSpec, Source,
    SpecDoc, VirtualServiceSpec, Warning,
};
use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

const ISTIO_API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// Guards against symlink loops; manifest trees are never this deep.
const MAX_DEPTH: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DocKind {
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    Service,
    EndpointSlice,
    Pod,
    Secret,
}

fn classify(api_version: &str, kind: &str) -> Option<DocKind> {
    if ISTIO_API_VERSIONS.contains(&api_version) {
        return match kind {
            "Gateway" => Some(DocKind::Gateway),
            "VirtualService" => Some(DocKind::VirtualService),
            "DestinationRule" => Some(DocKind::DestinationRule),
            "ServiceEntry" => Some(DocKind::ServiceEntry),
            _ => None,
        };
    }
    match (api_version, kind) {
        ("v1", "Service") => Some(DocKind::Service),
        ("v1", "Pod") => Some(DocKind::Pod),
        ("v1", "Secret") => Some(DocKind::Secret),
        ("discovery.k8s.io/v1", "EndpointSlice") => Some(DocKind::EndpointSlice),
        _ => None,
    }
}

/// Loads every `*.yaml`/`*.yml` file under `dir` (recursively, sorted by path). Hidden entries
/// (names starting with `.`) are skipped: a ConfigMap volume holds each file twice, once under
/// its `..data` directory, and loading both would report every resource as a duplicate. `dir`
/// may also name a single file.
pub fn load_dir(dir: &Path) -> Result<Manifests, Vec<ConfigError>> {
    let (manifests, errors) = load_dir_partial(dir);
    if errors.is_empty() {
        Ok(manifests)
    } else {
        Err(errors)
    }
}

/// Like [`load_dir`], but keeps every document that parsed beside the errors of those that did
/// not, for admission to decide per object.
pub fn load_dir_partial(dir: &Path) -> (Manifests, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    if dir.is_file() {
        files.push(dir.to_path_buf());
    } else {
        collect_files(dir, 0, &mut files, &mut errors);
    }
    files.sort();
    let mut manifests = Manifests::default();
    for file in &files {
        match fs::read_to_string(file) {
            Ok(text) => parse_into(file, &text, &mut manifests, &mut errors),
            Err(e) => errors.push(file_error(file, format!("cannot read file: {e}"))),
        }
    }
    (manifests, errors)
}

/// Like [`load_dir_partial`] for objects that are not files (the Kubernetes API): each
/// `(name, yaml)` is parsed as a file called `name` in messages.
pub fn load_texts<'a>(
    texts: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (Manifests, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut manifests = Manifests::default();
    for (name, yaml) in texts {
        parse_into(Path::new(name), yaml, &mut manifests, &mut errors);
    }
    (manifests, errors)
}

/// Same as [`load_dir`] for one YAML text; `name` stands for the file in messages.
pub fn load_str(name: &str, yaml: &str) -> Result<Manifests, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut manifests = Manifests::default();
    parse_into(Path::new(name), yaml, &mut manifests, &mut errors);
    if errors.is_empty() {
        Ok(manifests)
    } else {
        Err(errors)
    }
}

fn file_error(file: &Path, message: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        resource: String::new(),
        field: String::new(),
        message,
        doc: None,
    }
}

fn collect_files(
    dir: &Path,
    depth: usize,
    files: &mut Vec<PathBuf>,
    errors: &mut Vec<ConfigError>,
) {
    if depth > MAX_DEPTH {
        errors.push(file_error(
            dir,
            format!("directory nesting deeper than {MAX_DEPTH} (symlink loop?)"),
        ));
        return;
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(file_error(dir, format!("cannot read directory: {e}")));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                errors.push(file_error(dir, format!("cannot read directory: {e}")));
                continue;
            }
        };
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // `metadata` follows symlinks, so linked files and directories are loaded.
        match fs::metadata(&path) {
            Ok(md) if md.is_dir() => collect_files(&path, depth + 1, files, errors),
            Ok(md) if md.is_file() => {
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml") {
                    files.push(path);
                }
            }
            Ok(_) => {}
            Err(e) => errors.push(file_error(&path, format!("cannot stat: {e}"))),
        }
    }
}

/// `Kind namespace/name` read leniently from an untyped document, for messages.
fn describe(v: &Value, kind: &str) -> String {
    let meta = v.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    if name.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} {ns}/{name}")
    }
}

fn parse_into(file: &Path, text: &str, m: &mut Manifests, errors: &mut Vec<ConfigError>) {
    // Pass 1: untyped, to classify documents and catch syntax errors.
    let mut values = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        match Value::deserialize(de) {
            Ok(v) => values.push(v),
            Err(e) => {
                // The parser cannot resynchronise after a syntax error: stop at the first.
                errors.push(file_error(file, format!("YAML syntax error: {e}")));
                break;
            }
        }
    }

    // Pass 2: typed, document by document.
    let docs = serde_yaml::Deserializer::from_str(text);
    for (index, (de, value)) in docs.zip(values.iter()).enumerate() {
        if value.is_null() {
            continue; // empty document
        }
        let source = Source {
            file: file.to_path_buf(),
            index,
        };
        if !value.is_mapping() {
            errors.push(ConfigError {
                file: file.to_path_buf(),
                resource: String::new(),
                field: String::new(),
                message: format!(
                    "document {index} is not a resource (expected a mapping with apiVersion and kind)"
                ),
                doc: Some(index),
            });
            continue;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        let resource = describe(value, kind);
        let Some(doc_kind) = classify(api_version, kind) else {
            let what = if kind.is_empty() || api_version.is_empty() {
                format!("document {index} has no apiVersion/kind")
            } else {
                format!("unsupported kind {kind} (apiVersion {api_version})")
            };
            m.warnings.push(Warning {
                file: file.to_path_buf(),
                resource,
                field: String::new(),
                message: format!("{what}; ignored"),
            });
            continue;
        };
        let ctx = DocCtx {
            file,
            resource: &resource,
            source,
            api_version,
        };
        let result = match doc_kind {
            DocKind::Gateway => typed::<SpecDoc<GatewaySpec>>(de, &ctx, &mut m.warnings).map(|d| {
                m.gateways.push(ctx.resource_from(d.metadata, d.spec));
            }),
            DocKind::VirtualService => {
                typed::<SpecDoc<VirtualServiceSpec>>(de, &ctx, &mut m.warnings).map(|d| {
                    m.virtual_services
                        .push(ctx.resource_from(d.metadata, d.spec));
                })
            }
            DocKind::DestinationRule => {
                typed::<SpecDoc<DestinationRuleSpec>>(de, &ctx, &mut m.warnings).map(|d| {
                    m.destination_rules
                        .push(ctx.resource_from(d.metadata, d.spec));
                })
            }
            DocKind::ServiceEntry => typed::<SpecDoc<ServiceEntrySpec>>(de, &ctx, &mut m.warnings)
                .map(|d| {
                    m.service_entries
                        .push(ctx.resource_from(d.metadata, d.spec));
                }),
            DocKind::Service => typed::<SpecDoc<ServiceSpec>>(de, &ctx, &mut m.warnings).map(|d| {
                m.services.push(ctx.resource_from(d.metadata, d.spec));
            }),
            DocKind::EndpointSlice => {
                typed::<EndpointSliceDoc>(de, &ctx, &mut m.warnings).map(|d| {
                    let spec = EndpointSliceSpec {
                        address_type: d.address_type,
                        endpoints: d.endpoints,
                        ports: d.ports,
                    };
                    m.endpoint_slices.push(ctx.resource_from(d.metadata, spec));
                })
            }
            DocKind::Pod => typed::<PodDoc>(de, &ctx, &mut m.warnings).map(|d| {
                let pod_ip = d
                    .status
                    .as_ref()
                    .and_then(|s| s.get("podIP"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                m.pods
                    .push(ctx.resource_from(d.metadata, PodInfo { pod_ip }));
            }),
            DocKind::Secret => typed::<SecretSpec>(de, &ctx, &mut m.warnings).map(|mut d| {
                let meta = std::mem::take(&mut d.metadata);
                m.secrets.push(ctx.resource_from(meta, d));
            }),
        };
        if let Err(e) = result {
            errors.push(e);
        }
    }
}

struct DocCtx<'a> {
    file: &'a Path,
    resource: &'a str,
    source: Source,
    api_version: &'a str,
}

impl DocCtx<'_> {
    fn resource_from<S>(&self, mut metadata: ObjectMeta, spec: S) -> Resource<S> {
        if metadata.namespace.is_empty() {
            metadata.namespace = "default".to_string();
        }
        Resource {
            source: self.source.clone(),
            api_version: self.api_version.to_string(),
            metadata,
            spec,
        }
    }
}

fn typed<'de, T: DeserializeOwned>(
    de: serde_yaml::Deserializer<'de>,
    ctx: &DocCtx<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<T, ConfigError> {
    let mut unknown = Vec::new();
    let mut note = |p: serde_ignored::Path| unknown.push(ignored_path(&p));
    let result = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut note));
    match result {
        Ok(t) => {
            for field in unknown {
                warnings.push(Warning {
                    file: ctx.file.to_path_buf(),
                    resource: ctx.resource.to_string(),
                    field,
                    message: "unknown field, ignored".to_string(),
                });
            }
            Ok(t)
        }
        Err(e) => {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            // serde_yaml prefixes its message with the same path: keep it once.
            let message = e.into_inner().to_string();
            let message = message
                .strip_prefix(&format!("{field}: "))
                .map(str::to_string)
                .unwrap_or(message);
            Err(ConfigError {
                file: ctx.file.to_path_buf(),
                resource: ctx.resource.to_string(),
                field,
                message,
                doc: Some(ctx.source.index),
            })
        }
    }
}

/// `spec.servers[0].foo`, the same notation as `serde_path_to_error` and our validation.
fn ignored_path(p: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match p {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_dir;
    use crate::config::load_str;
    use crate::config::model::IntOrString;
    use std::fs;
    use std::path::Path;
    use std::path::PathBuf;

    const GW: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
"#;

    #[test]
    fn multi_document_and_empty_documents() {
        let yaml = format!(
            "---\n{GW}\n---\n---\n# only a comment\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: echo}}\nspec:\n  ports: [{{port: 80}}]\n"
        );
        let m = load_str("a.yaml", &yaml).unwrap();
        assert_eq!(m.gateways.len(), 1);
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.gateways[0].source.file, PathBuf::from("a.yaml"));
        // Index counts empty documents: gw is 0 (a leading `---` opens the first document).
        assert_eq!(m.gateways[0].source.index, 0);
        assert!(m.services[0].source.index > m.gateways[0].source.index);
        assert_eq!(m.services[0].metadata.namespace, "default");
        assert_eq!(m.gateways[0].metadata.namespace, "istio-system");
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn api_version_aliases() {
        for v in ["v1", "v1beta1", "v1alpha3"] {
            let yaml = GW.replace(
                "networking.istio.io/v1",
                &format!("networking.istio.io/{v}"),
            );
            let m = load_str("a.yaml", &yaml).unwrap();
            assert_eq!(m.gateways.len(), 1, "{v}");
            assert_eq!(
                m.gateways[0].api_version,
                format!("networking.istio.io/{v}")
            );
            assert_eq!(
                m.gateways[0].spec.servers[0].port.as_ref().unwrap().number,
                31400
            );
        }
    }

    #[test]
    fn unknown_kind_and_api_version_are_warnings() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\n---\napiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: g}\n---\nfoo: bar\n";
        let m = load_str("k.yaml", yaml).unwrap();
        assert!(m.is_empty());
        assert_eq!(m.warnings.len(), 3);
        assert_eq!(m.warnings[0].resource, "Sidecar default/s");
        assert!(m.warnings[0].message.contains("unsupported kind Sidecar"));
        assert!(m.warnings[1].message.contains("networking.istio.io/v2"));
        assert!(m.warnings[2].message.contains("no apiVersion/kind"));
    }

    #[test]
    fn unknown_fields_are_warnings_with_paths() {
        let yaml = GW.replace("    hosts:", "    bogus: 1\n    hosts:") + "status: {}\n";
        let m = load_str("u.yaml", &yaml).unwrap();
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        let w = &m.warnings[0];
        assert_eq!(w.resource, "Gateway istio-system/gw");
        assert_eq!(w.field, "spec.servers[0].bogus");
        assert_eq!(
            w.to_string(),
            "u.yaml: Gateway istio-system/gw: spec.servers[0].bogus: unknown field, ignored"
        );
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n";
        let errs = load_str("bad.yaml", yaml).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].file, PathBuf::from("bad.yaml"));
        assert!(
            errs[0].message.starts_with("YAML syntax error"),
            "{}",
            errs[0]
        );
        assert!(errs[0].message.contains("line"), "{}", errs[0]);
    }

    #[test]
    fn type_error_names_field_and_line() {
        let yaml = GW.replace("number: 31400", "number: abc");
        let errs = load_str("t.yaml", &yaml).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].resource, "Gateway istio-system/gw");
        assert_eq!(errs[0].field, "spec.servers[0].port.number");
        assert!(
            errs[0].message.starts_with("invalid type: string \"abc\""),
            "{}",
            errs[0]
        );
        assert!(errs[0].message.contains("line 11"), "{}", errs[0]);
    }

    #[test]
    fn all_documents_are_checked() {
        let yaml = format!(
            "{}\n---\n{}",
            GW.replace("number: 31400", "number: x"),
            GW.replace("hosts: [\"*\"]", "hosts: 5")
        );
        let errs = load_str("t.yaml", &yaml).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[1].field, "spec.servers[0].hosts");
    }

    #[test]
    fn non_mapping_document_is_an_error() {
        let errs = load_str("l.yaml", "- a\n- b\n").unwrap_err();
        assert!(errs[0].message.contains("not a resource"));
    }

    #[test]
    fn kubernetes_kinds() {
        let yaml = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-abc
  namespace: apps
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
endpoints:
- addresses: ["10.1.0.5"]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: echo-1, namespace: apps}
ports:
- {name: tcp, port: 9000, protocol: TCP}
---
apiVersion: v1
kind: Pod
metadata: {name: echo-1, namespace: apps, labels: {version: v1}}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 10.1.0.5, phase: Running}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: apps}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: tcp, port: 9000, targetPort: tcp-port}]
"#;
        let m = load_str("k.yaml", yaml).unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(m.endpoint_slices[0].service_name(), Some("echo"));
        assert_eq!(m.endpoint_slices[0].spec.ports[0].port, Some(9000));
        assert_eq!(m.pods[0].spec.pod_ip.as_deref(), Some("10.1.0.5"));
        assert_eq!(
            m.services[0].spec.ports[0].target_port,
            Some(IntOrString::String("tcp-port".into()))
        );
        assert_eq!(m.services[0].spec.cluster_ip.as_deref(), Some("10.96.0.10"));
    }

    #[test]
    fn load_dir_recursive_sorted_skips_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("b/sub")).unwrap();
        fs::create_dir_all(root.join("..data")).unwrap();
        fs::write(
            root.join("b/sub/z.yml"),
            GW.replace("name: gw", "name: gw-z"),
        )
        .unwrap();
        fs::write(root.join("a.yaml"), GW).unwrap();
        fs::write(root.join("notes.txt"), "not yaml: [").unwrap();
        fs::write(root.join("..data/a.yaml"), GW).unwrap();
        let m = load_dir(root).unwrap();
        let names: Vec<_> = m.gateways.iter().map(|g| g.name().to_string()).collect();
        assert_eq!(names, ["gw", "gw-z"]);
        assert_eq!(m.gateways[1].source.file, root.join("b/sub/z.yml"));

        fs::write(root.join("c.yaml"), "a: [").unwrap();
        let errs = load_dir(root).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].file, root.join("c.yaml"));
    }

    #[test]
    fn load_dir_missing_directory() {
        let errs = load_dir(Path::new("/nonexistent/dir/for/test")).unwrap_err();
        assert!(errs[0].message.contains("cannot read directory"));
    }
}
