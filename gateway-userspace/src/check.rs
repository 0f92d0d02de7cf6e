//! `gateway check DIR`: what `istioctl analyze` reports for local files, in its form.
//!
//! Every finding of admission (an object Istio's webhook would refuse: it is left out) and of
//! the compiler (a reference to nothing, a conflict Istio resolves, a setting ignored) becomes
//! one line `Level [CODE] (Kind namespace/name file:line) field: message`, with Istio's
//! analyzer code where Istio has one for that finding, and ours (`GTW...`) for what Istio's
//! analyzers do not report. The exit status is istioctl's: 0, or 79 when there is an error.

use std::path::{Path, PathBuf};

use crate::config::{self, CompileInput};

/// istioctl analyze's exit status when it found issues at or above the failure threshold.
pub const EXIT_ISSUES: u8 = 79;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub level: &'static str,
    pub code: &'static str,
    pub file: PathBuf,
    /// 1-based line where the object's document starts; None for a file-level problem.
    pub line: Option<usize>,
    pub document: Option<usize>,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self.file.display();
        let at = match self.line {
            Some(l) => format!("{file}:{l}"),
            None => file.to_string(),
        };
        let object = match (self.kind.is_empty(), self.file.as_os_str().is_empty()) {
            (true, _) => at,
            (false, true) => format!("{} {}/{}", self.kind, self.namespace, self.name),
            (false, false) => format!("{} {}/{} {at}", self.kind, self.namespace, self.name),
        };
        let field = if self.field.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.field)
        };
        write!(
            f,
            "{} [{}] ({object}) {field}{}",
            self.level, self.code, self.message
        )
    }
}

/// The report for a directory: admission errors first (in file order), then warnings.
pub struct Report {
    pub findings: Vec<Finding>,
    /// Objects that would be served.
    pub admitted: usize,
    pub rejected_by_kind: std::collections::BTreeMap<String, usize>,
}

pub fn check(dir: &Path) -> Report {
    let (loaded, load_errors) = config::load_dir_partial(dir);
    let a = config::admit(loaded, load_errors, None, false);
    // Any address: what is checked is the config, not this machine's interfaces.
    let input = CompileInput {
        vips: vec![std::net::Ipv4Addr::UNSPECIFIED.into()],
        ..CompileInput::default()
    };
    let (_, compile_warnings) = config::compile(&a.manifests, &input);
    let mut lines = LineIndex::default();
    let mut findings: Vec<Finding> = a
        .rejected
        .iter()
        .map(|e| {
            finding(
                "Error",
                // A file that does not parse is Istio's "file parse error"; an object that fails
                // validation is its schema validation error.
                if e.doc.is_none() {
                    "IST0162"
                } else {
                    "IST0106"
                },
                &e.file,
                lines.line_of(&e.file, &e.resource, e.doc),
                e.doc,
                &e.resource,
                &e.field,
                &e.message,
            )
        })
        .collect();
    for w in a.warnings.iter().chain(compile_warnings.iter()) {
        let doc = lines.doc_of(&w.file, &w.resource);
        findings.push(finding(
            "Warning",
            warning_code(&w.resource, &w.field, &w.message),
            &w.file,
            lines.line_of(&w.file, &w.resource, None),
            doc,
            &w.resource,
            &w.field,
            &w.message,
        ));
    }
    findings.dedup();
    let m = &a.manifests;
    Report {
        admitted: m.gateways.len()
            + m.virtual_services.len()
            + m.destination_rules.len()
            + m.service_entries.len()
            + m.services.len()
            + m.endpoint_slices.len()
            + m.pods.len()
            + m.secrets.len(),
        rejected_by_kind: a.rejected_by_kind(),
        findings,
    }
}

#[allow(clippy::too_many_arguments)]
fn finding(
    level: &'static str,
    code: &'static str,
    file: &Path,
    line: Option<usize>,
    document: Option<usize>,
    resource: &str,
    field: &str,
    message: &str,
) -> Finding {
    // `Kind namespace/name`, or empty for a file-level problem.
    let (kind, ns_name) = resource.split_once(' ').unwrap_or(("", ""));
    let (namespace, name) = ns_name.split_once('/').unwrap_or(("", ""));
    Finding {
        level,
        code,
        file: file.to_path_buf(),
        line,
        document,
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        field: field.into(),
        message: message.into(),
    }
}

/// Istio's analyzer code for a warning, where one of its analyzers reports the same thing.
fn warning_code(resource: &str, field: &str, message: &str) -> &'static str {
    let kind = resource.split(' ').next().unwrap_or("");
    if message.contains("unknown field") {
        // Istio: "Unknown field" is part of schema validation.
        "IST0106"
    } else if message.contains("is already defined by") {
        // Two servers or VirtualServices claiming one host: ConflictingGateways /
        // ConflictingMeshGatewayVirtualServiceHosts.
        if kind == "Gateway" {
            "IST0145"
        } else {
            "IST0109"
        }
    } else if message.contains("not found")
        || message.contains("unknown host")
        || message.contains("unknown subset")
        || message.contains("has no port")
    {
        // ReferencedResourceNotFound.
        "IST0101"
    } else if message.contains("no endpoints") || message.contains("no ready endpoints") {
        "GTW0002"
    } else if field.contains("insecureSkipVerify")
        || field.contains("cipherSuites")
        || field.contains("ProtocolVersion")
        || field.contains("caCertificates")
        || field.contains("caCrl")
        || message.contains("TLS")
    {
        "GTW0003"
    } else {
        "GTW0001"
    }
}

fn has_content_line(l: &str) -> bool {
    !l.trim().is_empty() && !l.trim_start().starts_with('#')
}

fn has_content(doc: &str) -> bool {
    doc.lines().any(has_content_line)
}

/// Document start lines of the files findings name, read once per file.
#[derive(Default)]
struct LineIndex {
    files: std::collections::HashMap<PathBuf, Vec<(usize, String)>>,
}

impl LineIndex {
    /// (first line, text) of each document in `file`, in order; documents are split at `---`
    /// lines as the loader splits them.
    fn docs(&mut self, file: &Path) -> &[(usize, String)] {
        self.files.entry(file.to_path_buf()).or_insert_with(|| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let mut docs = Vec::new();
            let mut start = 1;
            let mut cur = String::new();
            for (i, l) in text.lines().enumerate() {
                if l.trim_end() == "---" || l.starts_with("--- ") {
                    docs.push((start, std::mem::take(&mut cur)));
                    start = i + 2;
                } else {
                    cur.push_str(l);
                    cur.push('\n');
                }
            }
            docs.push((start, cur));
            // As in YAML, text before the first `---` is a document only if it has content;
            // every explicit document counts, empty or not (the loader's indices).
            if docs.len() > 1 && !has_content(&docs[0].1) {
                docs.remove(0);
            }
            docs
        })
    }

    /// The line of document `doc` (0-based), at its first non-blank, non-comment line.
    fn line_of(&mut self, file: &Path, resource: &str, doc: Option<usize>) -> Option<usize> {
        let doc = self.doc_of(file, resource).or(doc)?;
        self.line(file, doc)
    }

    fn line(&mut self, file: &Path, doc: usize) -> Option<usize> {
        let (start, text) = self.docs(file).get(doc)?;
        let skip = text.lines().position(has_content_line).unwrap_or(0);
        Some(start + skip)
    }

    /// Which document of `file` holds `Kind namespace/name` (warnings name the object only).
    fn doc_of(&mut self, file: &Path, resource: &str) -> Option<usize> {
        let (kind, ns_name) = resource.split_once(' ')?;
        let (ns, name) = ns_name.split_once('/')?;
        self.docs(file).iter().position(|(_, d)| {
            let v: serde_yaml::Value = serde_yaml::from_str(d).unwrap_or_default();
            v["kind"].as_str() == Some(kind)
                && v["metadata"]["name"].as_str() == Some(name)
                && v["metadata"]["namespace"].as_str().unwrap_or("default") == ns
        })
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn findings_read_as_istioctl_analyze() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vs.yaml"),
            "# routes\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: edge}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\n\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: edge}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - timeout: forever\n    route:\n    - destination: {host: web.edge.svc.cluster.local}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: edge}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {host: nowhere.edge.svc.cluster.local}\n",
        )
        .unwrap();
        let r = check(dir.path());
        let text: Vec<String> = r.findings.iter().map(ToString::to_string).collect();
        let err = text
            .iter()
            .find(|l| l.starts_with("Error [IST0106] (VirtualService edge/web "))
            .unwrap_or_else(|| panic!("{text:#?}"));
        assert!(err.contains("vs.yaml:12) spec.http[0].timeout: "), "{err}");
        let warn = text
            .iter()
            .find(|l| l.starts_with("Warning [IST0101] (VirtualService edge/api "))
            .unwrap_or_else(|| panic!("{text:#?}"));
        assert!(warn.contains("vs.yaml:23) "), "{warn}");
        assert_eq!(r.rejected_by_kind.get("VirtualService"), Some(&1));
    }
}
