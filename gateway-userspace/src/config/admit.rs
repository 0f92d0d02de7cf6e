//! Admission: which loaded objects are served. Istio never refuses a whole config for one bad
//! object: the API server's validating webhook turns that one object away (so the previous
//! version of it, if any, stays in place) and istiod skips what it cannot use. Here:
//! - an object with an error is left out; if the last admitted set held an object of the same
//!   kind, namespace and name, that previous version keeps serving (the webhook analogue);
//! - a file that cannot be read or parsed as YAML is rejected whole, and the objects it held in
//!   the last admitted set keep serving (its content is unknown, not empty);
//! - of two objects with the same kind, namespace and name, the first in file order wins.
//!
//! Everything left out is reported with its file, object and field. `strict` restores the
//! all-or-nothing rule: any error rejects the whole set.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::model::{ConfigError, Kind, Manifests, Resource, Warning};
use super::validate::{duplicate_errors, validate_objects};

/// The outcome of admitting a loaded set.
#[derive(Debug, Default)]
pub struct Admission {
    /// What to compile: the valid objects, plus previous versions kept for rejected ones.
    pub manifests: Manifests,
    /// Every error, naming the object (or file) it rejects.
    pub rejected: Vec<ConfigError>,
    /// `VirtualService default/web (a.yaml)`: rejected objects whose previous version serves.
    pub kept_previous: Vec<String>,
    pub warnings: Vec<Warning>,
}

impl Admission {
    /// Rejections per kind (`VirtualService` -> 2), for metrics; file-level errors count as
    /// kind `File`.
    pub fn rejected_by_kind(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        let objects: BTreeSet<(String, PathBuf, Option<usize>)> = self
            .rejected
            .iter()
            .map(|e| (e.resource.clone(), e.file.clone(), e.doc))
            .collect();
        for (resource, _, _) in objects {
            let kind = resource.split(' ').next().filter(|k| !k.is_empty());
            *m.entry(kind.unwrap_or("File").to_string()).or_insert(0) += 1;
        }
        m
    }
}

/// Admits the objects of `loaded` (whose loading found `load_errors`), against `previous`, the
/// last admitted set. With `strict`, any error admits nothing (an empty `manifests` and every
/// error in `rejected`): the caller keeps serving what it had.
pub fn admit(
    loaded: Manifests,
    load_errors: Vec<ConfigError>,
    previous: Option<&Manifests>,
    strict: bool,
) -> Admission {
    let (mut rejected, warnings) = validate_objects(&loaded);
    rejected.splice(0..0, load_errors);
    if strict {
        rejected.extend(duplicate_errors(&loaded));
        if !rejected.is_empty() {
            return Admission {
                rejected,
                warnings,
                ..Admission::default()
            };
        }
        return Admission {
            manifests: loaded,
            warnings,
            ..Admission::default()
        };
    }
    let bad = Rejections::of(&rejected);
    let mut m = loaded;
    let kept = bad.filter_all(&mut m, &previous.cloned().unwrap_or_default());
    // Duplicates last: an invalid first copy must not make a valid second one a duplicate.
    let dups = duplicate_errors(&m);
    if !dups.is_empty() {
        Rejections::of(&dups).filter_all(&mut m, &Manifests::default());
        rejected.extend(dups);
    }
    Admission {
        manifests: m,
        rejected,
        kept_previous: kept,
        warnings,
    }
}

/// What the errors reject: single documents, and whole files.
struct Rejections {
    docs: BTreeSet<(PathBuf, usize)>,
    /// `Kind namespace/name` of every rejected object, for finding its previous version.
    ids: BTreeSet<String>,
    files: BTreeSet<PathBuf>,
}

impl Rejections {
    fn of(errors: &[ConfigError]) -> Self {
        let mut r = Rejections {
            docs: BTreeSet::new(),
            ids: BTreeSet::new(),
            files: BTreeSet::new(),
        };
        for e in errors {
            match e.doc {
                Some(doc) => {
                    r.docs.insert((e.file.clone(), doc));
                    if !e.resource.is_empty() {
                        r.ids.insert(e.resource.clone());
                    }
                }
                None => {
                    r.files.insert(e.file.clone());
                }
            }
        }
        r
    }

    /// [`Rejections::filter`] over every kind; returns what was kept from `prev`.
    fn filter_all(&self, m: &mut Manifests, prev: &Manifests) -> Vec<String> {
        let mut kept = self.filter(&mut m.gateways, &prev.gateways);
        kept.extend(self.filter(&mut m.virtual_services, &prev.virtual_services));
        kept.extend(self.filter(&mut m.destination_rules, &prev.destination_rules));
        kept.extend(self.filter(&mut m.service_entries, &prev.service_entries));
        kept.extend(self.filter(&mut m.services, &prev.services));
        kept.extend(self.filter(&mut m.endpoint_slices, &prev.endpoint_slices));
        kept.extend(self.filter(&mut m.pods, &prev.pods));
        kept.extend(self.filter(&mut m.secrets, &prev.secrets));
        kept
    }

    /// Drops the rejected objects of `list`, then adds back from `prev` the previous version of
    /// each rejected object and the previous objects of each rejected file (unless the new set
    /// has a valid object of that id). Returns what was kept from `prev`.
    fn filter<S: Kind + Clone>(
        &self,
        list: &mut Vec<Resource<S>>,
        prev: &[Resource<S>],
    ) -> Vec<String> {
        list.retain(|r| {
            !self.files.contains(&r.source.file)
                && !self.docs.contains(&(r.source.file.clone(), r.source.index))
        });
        let present: BTreeSet<String> = list.iter().map(Resource::id).collect();
        let mut kept = Vec::new();
        for p in prev {
            let id = p.id();
            if present.contains(&id) {
                continue;
            }
            if self.ids.contains(&id) || self.files.contains(&p.source.file) {
                kept.push(format!("{id} ({})", p.source.file.display()));
                list.push(p.clone());
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::load_str;
    use super::admit;
    use crate::config::ConfigError;
    use crate::config::Manifests;

    const GW: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";

    fn vs(name: &str, weight: i64) -> String {
        format!("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [\"{name}.example.com\"]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {{host: a.default.svc.cluster.local}}\n      weight: {weight}\n")
    }

    fn load(name: &str, yaml: &str) -> (Manifests, Vec<ConfigError>) {
        match load_str(name, yaml) {
            Ok(m) => (m, Vec::new()),
            Err(e) => (Manifests::default(), e),
        }
    }

    #[test]
    fn invalid_object_is_left_out_and_the_rest_admitted() {
        let (m, e) = load(
            "a.yaml",
            &format!("{GW}{}{}", vs("good", 100), vs("bad", -1)),
        );
        let a = admit(m, e, None, false);
        assert_eq!(a.manifests.gateways.len(), 1);
        let names: Vec<&str> = a
            .manifests
            .virtual_services
            .iter()
            .map(|v| v.name())
            .collect();
        assert_eq!(names, ["good"]);
        assert!(!a.rejected.is_empty());
        assert!(a
            .rejected
            .iter()
            .all(|e| e.resource == "VirtualService default/bad"
                && e.file == std::path::Path::new("a.yaml")));
        assert_eq!(a.rejected_by_kind().get("VirtualService"), Some(&1));
        assert!(a.kept_previous.is_empty());
    }

    #[test]
    fn strict_rejects_everything() {
        let (m, e) = load(
            "a.yaml",
            &format!("{GW}{}{}", vs("good", 100), vs("bad", -1)),
        );
        let a = admit(m, e, None, true);
        assert!(a.manifests.is_empty());
        assert!(!a.rejected.is_empty());
        let (m, e) = load("a.yaml", &format!("{GW}{}", vs("good", 100)));
        let a = admit(m, e, None, true);
        assert_eq!(a.manifests.virtual_services.len(), 1);
        assert!(a.rejected.is_empty());
    }

    #[test]
    fn previous_version_of_a_rejected_object_keeps_serving() {
        let (m, e) = load("a.yaml", &format!("{GW}{}", vs("web", 100)));
        let first = admit(m, e, None, false);
        assert!(first.rejected.is_empty());
        // The same VirtualService, now invalid; a new invalid one has no previous version.
        let (m, e) = load("a.yaml", &format!("{GW}{}{}", vs("web", -5), vs("new", -1)));
        let a = admit(m, e, Some(&first.manifests), false);
        assert_eq!(a.manifests.virtual_services.len(), 1);
        assert_eq!(
            a.manifests.virtual_services[0],
            first.manifests.virtual_services[0]
        );
        assert_eq!(a.kept_previous, ["VirtualService default/web (a.yaml)"]);
        assert_eq!(a.rejected_by_kind().get("VirtualService"), Some(&2));
        // Deleting the object (not breaking it) removes it.
        let (m, e) = load("a.yaml", GW);
        let a = admit(m, e, Some(&first.manifests), false);
        assert!(a.manifests.virtual_services.is_empty());
    }

    #[test]
    fn unparsable_file_keeps_its_previous_objects() {
        let (m, e) = load("a.yaml", &format!("{GW}{}", vs("web", 100)));
        let first = admit(m, e, None, false);
        let (m, e) = load("a.yaml", "kind: [unclosed\n");
        assert!(e.iter().any(|e| e.doc.is_none()), "{e:?}");
        let a = admit(m, e, Some(&first.manifests), false);
        assert_eq!(a.manifests.gateways.len(), 1);
        assert_eq!(a.manifests.virtual_services.len(), 1);
        assert_eq!(a.kept_previous.len(), 2);
    }

    #[test]
    fn first_duplicate_wins_unless_it_is_invalid() {
        let (m, e) = load(
            "a.yaml",
            &format!("{GW}{}{}", vs("web", 100), vs("web", 100)),
        );
        let a = admit(m, e, None, false);
        assert_eq!(a.manifests.virtual_services.len(), 1);
        assert_eq!(a.manifests.virtual_services[0].source.index, 1);
        assert!(a.rejected.iter().any(|e| e.message.contains("duplicate")));
        // An invalid first copy is rejected for what it is; the valid second one serves.
        let (m, e) = load(
            "a.yaml",
            &format!("{GW}{}{}", vs("web", -1), vs("web", 100)),
        );
        let a = admit(m, e, None, false);
        assert_eq!(a.manifests.virtual_services.len(), 1);
        assert_eq!(a.manifests.virtual_services[0].source.index, 2);
        assert!(!a.rejected.iter().any(|e| e.message.contains("duplicate")));
    }
}
