//! What Istio's admission webhook would reject (istio `pkg/config/validation`), for the fields
//! this gateway models, plus basic shape checks on the Kubernetes kinds. Every problem is
//! collected; nothing stops at the first. Messages reuse Istio's wording so that they can be
//! recognised and grepped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::config::model::{ConfigError, Kind, Manifests, Resource, Source, Warning};
use crate::config::names::is_dns1123_label;

mod destination_rule;
mod gateway;
mod kube;
mod service_entry;
mod virtual_service;

use destination_rule::destination_rule;
use gateway::gateway;
pub(crate) use gateway::{HTTP_PROTOCOLS, TLS_PROTOCOLS};
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
mod tests;
