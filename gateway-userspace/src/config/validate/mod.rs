//! What Istio's admission webhook would reject (istio `pkg/config/validation`), for the fields
//! this gateway models, plus basic shape checks on the Kubernetes kinds. Every problem is
//! collected; nothing stops at the first. Messages reuse Istio's wording so that they can be
//! recognised and grepped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::config::model::{ConfigError, Kind, Manifests, Resource, Source, Warning};
use crate::config::names::is_dns1123_label;
use crate::config::syntax::parse_duration;

mod destination_rule;
mod gateway;
mod kube;
mod service_entry;
mod value;
mod virtual_service;

use destination_rule::destination_rule;
use gateway::gateway;
use kube::{endpoint_slice, pod, service};
use service_entry::service_entry;
use virtual_service::virtual_service;

/// Checks everything; returns all errors and all warnings (the loader's warnings first).
pub fn validate(m: &Manifests) -> (Vec<ConfigError>, Vec<Warning>) {
    let (mut errors, warnings) = validate_objects(m);
    errors.extend(duplicate_errors(m));
    (errors, warnings)
}

/// The checks that look at one object at a time (what a validating webhook sees).
pub fn validate_objects(m: &Manifests) -> (Vec<ConfigError>, Vec<Warning>) {
    let mut d = Diags {
        errors: Vec::new(),
        warnings: m.warnings.clone(),
    };
    for r in &m.gateways {
        gateway(&mut d.on(r), r);
    }
    for r in &m.virtual_services {
        virtual_service(&mut d.on(r), r);
    }
    for r in &m.destination_rules {
        destination_rule(&mut d.on(r), r);
    }
    for r in &m.service_entries {
        service_entry(&mut d.on(r), r);
    }
    for r in &m.services {
        service(&mut d.on(r), r);
    }
    for r in &m.endpoint_slices {
        endpoint_slice(&mut d.on(r), r);
    }
    for r in &m.pods {
        pod(&mut d.on(r), r);
    }
    (d.errors, d.warnings)
}

/// Objects defined twice (same kind, namespace, name): the first one in file order is the
/// object, each later one is an error, as the API server would refuse to create it.
pub fn duplicate_errors(m: &Manifests) -> Vec<ConfigError> {
    let mut d = Diags {
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    duplicates(&mut d, m);
    d.errors
}

pub(super) struct Diags {
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

impl Diags {
    fn on<S: Kind>(&mut self, r: &Resource<S>) -> Diag<'_> {
        Diag {
            out: self,
            file: r.source.file.clone(),
            resource: r.id(),
            doc: r.source.index,
        }
    }
}

/// Diagnostics about one resource.
pub(super) struct Diag<'a> {
    out: &'a mut Diags,
    file: PathBuf,
    resource: String,
    doc: usize,
}

impl Diag<'_> {
    pub(super) fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.out.errors.push(ConfigError {
            file: self.file.clone(),
            resource: self.resource.clone(),
            field: field.into(),
            message: message.into(),
            doc: Some(self.doc),
        });
    }

    pub(super) fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.out.warnings.push(Warning {
            file: self.file.clone(),
            resource: self.resource.clone(),
            field: field.into(),
            message: message.into(),
        });
    }

    /// Files what a rule found on this object.
    pub(super) fn take(&mut self, f: Findings) {
        for (at, msg) in f.errors {
            self.err(at, msg);
        }
        for (at, msg) in f.warnings {
            self.warn(at, msg);
        }
    }

    pub(super) fn errs(&mut self, field: &str, messages: Vec<String>) {
        for m in messages {
            self.err(field, m);
        }
    }

    pub(super) fn check(&mut self, field: &str, r: Result<(), String>) {
        if let Err(m) = r {
            self.err(field, m);
        }
    }
}

/// Problems found in one part of an object: (field, message) pairs, handed to the object's
/// `Diag` with `take`. Lets a rule be checked (and tested) on its own.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub errors: Vec<(String, String)>,
    pub warnings: Vec<(String, String)>,
}

impl Findings {
    pub(super) fn err(&mut self, at: impl Into<String>, msg: impl Into<String>) {
        self.errors.push((at.into(), msg.into()));
    }
    pub(super) fn warn(&mut self, at: impl Into<String>, msg: impl Into<String>) {
        self.warnings.push((at.into(), msg.into()));
    }
    pub(super) fn check(&mut self, at: &str, r: Result<(), String>) {
        if let Err(m) = r {
            self.err(at, m);
        }
    }
    pub(super) fn errs(&mut self, at: &str, messages: Vec<String>) {
        for m in messages {
            self.err(at, m);
        }
    }
}

/// Istio `ValidateDuration`: at least 1 ms, at most ms precision.
pub(super) fn validate_duration(s: &str) -> Result<(), String> {
    let d = parse_duration(s).ok_or_else(|| format!("invalid duration {s:?}"))?;
    if d < std::time::Duration::from_millis(1) {
        return Err("duration must be greater than 1ms".into());
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err("only durations to ms precision are supported".into());
    }
    Ok(())
}

pub(super) fn validate_port(n: i64) -> Result<(), String> {
    if (1..=65535).contains(&n) {
        Ok(())
    } else {
        Err(format!("port number {n} must be in the range 1..65535"))
    }
}

/// Name and namespace checks common to every kind.
pub(super) fn metadata<S: Kind>(d: &mut Diag<'_>, r: &Resource<S>) {
    if r.metadata.name.is_empty() {
        d.err("metadata.name", "name is required");
    }
    if !is_dns1123_label(&r.metadata.namespace) {
        d.err(
            "metadata.namespace",
            format!("invalid namespace {:?}", r.metadata.namespace),
        );
    }
}

/// Istio `validateExportTo`.
pub(super) fn export_to(
    namespace: &str,
    export_to: &[String],
    is_service_entry: bool,
    is_destination_rule_with_selector: bool,
) -> Vec<String> {
    let mut errs = Vec::new();
    let mut set = BTreeSet::new();
    for e in export_to {
        let key = if e == "." { namespace } else { e.as_str() };
        if set.contains(key) {
            if key != e {
                errs.push(format!(
                    "duplicate entries in exportTo: . and current namespace {namespace}"
                ));
            } else {
                errs.push(format!("duplicate entries in exportTo for entry {e}"));
            }
            continue;
        }
        if is_service_entry && e == "~" {
            set.insert(key.to_string());
            continue;
        }
        match key {
            "*" | "." => {
                set.insert(key.to_string());
            }
            "~" => errs.push(
                "exportTo ~ (none) is not allowed for Istio configuration objects".to_string(),
            ),
            ns if is_dns1123_label(ns) => {
                set.insert(key.to_string());
            }
            _ => errs.push(
                "only .,*, or a valid DNS 1123 label is allowed as exportTo entry".to_string(),
            ),
        }
    }
    // A selector-based DestinationRule applies in its own namespace only.
    if is_destination_rule_with_selector && !set.is_empty() {
        if set.contains(namespace) {
            if set.len() > 1 {
                errs.push(
                    "destination rule with workload selector cannot have multiple entries in exportTo"
                        .to_string(),
                );
            }
        } else {
            errs.push(
                "destination rule with workload selector cannot have exportTo beyond current namespace"
                    .to_string(),
            );
        }
    }
    if set.contains("*") && export_to.len() > 1 {
        errs.push(
            "cannot have both public (*) and non-public exportTo values for a resource".to_string(),
        );
    }
    if set.contains("~") && export_to.len() > 1 {
        errs.push("cannot export service entry to no one (~) and someone".to_string());
    }
    errs
}

/// The same kind/namespace/name twice: an error on the second, naming the first.
fn duplicates(d: &mut Diags, m: &Manifests) {
    fn check<S: Kind>(d: &mut Diags, list: &[Resource<S>]) {
        let mut seen: BTreeMap<String, &Source> = BTreeMap::new();
        for r in list {
            if r.metadata.name.is_empty() {
                continue; // already an error
            }
            match seen.get(&r.key()) {
                Some(first) => {
                    let msg = format!(
                        "duplicate {}: also defined in {} (document {})",
                        r.id(),
                        first.file.display(),
                        first.index
                    );
                    d.on(r).err("metadata.name", msg);
                }
                None => {
                    seen.insert(r.key(), &r.source);
                }
            }
        }
    }
    check(d, &m.gateways);
    check(d, &m.virtual_services);
    check(d, &m.destination_rules);
    check(d, &m.service_entries);
    check(d, &m.services);
    check(d, &m.endpoint_slices);
    check(d, &m.pods);
}

#[cfg(test)]
pub(super) mod tests;
