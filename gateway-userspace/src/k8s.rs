//! `gateway run --kubernetes`: the config from the Kubernetes API instead of a directory.
//!
//! One list-and-watch per kind the gateway reads (Istio's Gateway, VirtualService,
//! DestinationRule, ServiceEntry; Service, EndpointSlice, Pod, Secret), through kube's
//! watcher, which relists after a 410 Gone and backs off on errors. Every object is kept as
//! YAML under `Kind namespace/name@resourceVersion` and loaded by the same loader, admission
//! and compiler as files, so an object from the API is validated and reported exactly as the
//! same object in a file would be, naming its resourceVersion.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;

const ISTIO_GROUP: &str = "networking.istio.io";
/// Istio's API versions, preferred first: every served version returns every object (the
/// API server converts), so one is watched, the newest the cluster serves.
const ISTIO_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];
const ISTIO_KINDS: [&str; 4] = [
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
];
/// (group, version, kind) of the Kubernetes kinds watched.
const KUBE_KINDS: [(&str, &str, &str); 4] = [
    ("", "v1", "Service"),
    ("discovery.k8s.io", "v1", "EndpointSlice"),
    ("", "v1", "Pod"),
    ("", "v1", "Secret"),
];

/// How often discovery is asked again while Istio's CRDs are not served, so CRDs installed
/// after the agent started are picked up without a restart (one `GET /apis` per period).
const ISTIO_REDISCOVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The newest Istio networking version the API server serves; None when Istio's CRDs are
/// not installed. Retries until the API server answers.
async fn istio_version(client: &kube::Client) -> Option<&'static str> {
    let mut said = std::time::Instant::now();
    loop {
        match client.list_api_groups().await {
            Ok(groups) => {
                let served: Vec<String> = groups
                    .groups
                    .iter()
                    .filter(|g| g.name == ISTIO_GROUP)
                    .flat_map(|g| g.versions.iter().map(|v| v.version.clone()))
                    .collect();
                return ISTIO_VERSIONS
                    .into_iter()
                    .find(|v| served.iter().any(|s| s == v));
            }
            Err(e) => {
                if said.elapsed() >= std::time::Duration::from_secs(5) {
                    log::warn!("Kubernetes API discovery: {e}; retrying");
                    said = std::time::Instant::now();
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Istio's CRDs were not served at start: asks discovery again every `ISTIO_REDISCOVERY`
/// until they are, then starts their watches (the rest of the config kept serving meanwhile).
async fn await_istio(
    client: kube::Client,
    scopes: Vec<Option<String>>,
    store: Arc<Store>,
    notify: Arc<tokio::sync::Notify>,
) {
    loop {
        tokio::time::sleep(ISTIO_REDISCOVERY).await;
        if let Some(v) = istio_version(&client).await {
            log::info!("Kubernetes: {ISTIO_GROUP}/{v} is served now; watching it");
            spawn_watches(&client, &scopes, &istio_kinds(v), &store, &notify);
            return;
        }
    }
}

fn istio_kinds(version: &'static str) -> Vec<(&'static str, &'static str, &'static str)> {
    ISTIO_KINDS
        .iter()
        .map(|k| (ISTIO_GROUP, version, *k))
        .collect()
}

/// (kind, namespace, name).
type Key = (&'static str, String, String);
/// Key -> (resourceVersion, YAML).
type Objects = BTreeMap<Key, (String, String)>;

/// The objects the watches have seen, and whether every kind has been listed once.
#[derive(Default)]
pub struct Store {
    objects: Mutex<Objects>,
    /// Moves on every change: the agent's reload fingerprint.
    version: AtomicU64,
    synced: AtomicUsize,
    /// How many (kind, namespace scope) watches must list once before `synced`.
    watches: usize,
}

impl Store {
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// True once every kind's initial list has arrived.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire) >= self.watches
    }

    /// Per kind, the newest resourceVersion among its objects: the revision reflects every
    /// change up to it. (resourceVersions are opaque, but etcd's are integers; they are
    /// compared as such when they are.)
    pub fn resource_versions(&self) -> BTreeMap<String, String> {
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        let key = |rv: &str| (rv.parse::<u128>().ok(), rv.to_string());
        for ((kind, _, _), (rv, _)) in objects.iter() {
            let e = out.entry((*kind).to_string()).or_default();
            if key(rv) > key(e) {
                *e = rv.clone();
            }
        }
        out
    }

    /// Every object as (`Kind namespace/name@resourceVersion`, YAML), in a stable order.
    pub fn texts(&self) -> Vec<(String, String)> {
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        objects
            .iter()
            .map(|((kind, ns, name), (rv, yaml))| {
                (format!("{kind} {ns}/{name}@{rv}"), yaml.clone())
            })
            .collect()
    }

    fn changed(&self, notify: &tokio::sync::Notify) {
        self.version.fetch_add(1, Ordering::AcqRel);
        notify.notify_one();
    }
}

/// A client from `kubeconfig`, or the usual inference (in-cluster service account, then
/// `$KUBECONFIG` / `~/.kube/config`).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", p.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!("no Kubernetes API config (in-cluster or kubeconfig): {e}")
        })?,
    };
    kube::Client::try_from(config).map_err(|e| anyhow::anyhow!("Kubernetes client: {e}"))
}

/// Starts one watch per kind (per namespace of `namespaces`, or cluster-wide when it is
/// empty); `notify` fires on every change (the agent debounces).
pub async fn start(
    client: kube::Client,
    namespaces: &[String],
    notify: Arc<tokio::sync::Notify>,
) -> Arc<Store> {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let istio = istio_version(&client).await;
    let mut kinds = match istio {
        Some(v) => {
            log::info!("Kubernetes: watching {ISTIO_GROUP}/{v}");
            istio_kinds(v)
        }
        None => {
            log::warn!(
                "Kubernetes: {ISTIO_GROUP} is not served (Istio's CRDs not installed?): no Gateway, VirtualService, DestinationRule or ServiceEntry is watched until they are (discovery is asked again every {}s)",
                ISTIO_REDISCOVERY.as_secs()
            );
            Vec::new()
        }
    };
    kinds.extend(KUBE_KINDS);
    // The first plan waits for the kinds served now; Istio's, if they come later, add to a
    // config that already serves.
    let store = Arc::new(Store {
        watches: kinds.len() * scopes.len(),
        ..Store::default()
    });
    spawn_watches(&client, &scopes, &kinds, &store, &notify);
    if istio.is_none() {
        tokio::spawn(await_istio(client, scopes, store.clone(), notify));
    }
    store
}

/// One watch task per kind and namespace scope.
fn spawn_watches(
    client: &kube::Client,
    scopes: &[Option<String>],
    kinds: &[(&str, &str, &'static str)],
    store: &Arc<Store>,
    notify: &Arc<tokio::sync::Notify>,
) {
    for scope in scopes {
        for &(group, version, kind) in kinds {
            let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
            let api: Api<DynamicObject> = match scope {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            tokio::spawn(watch_kind(
                api,
                ar,
                kind,
                scope.clone(),
                store.clone(),
                notify.clone(),
            ));
        }
    }
}

async fn watch_kind(
    api: Api<DynamicObject>,
    ar: ApiResource,
    kind: &'static str,
    scope: Option<String>,
    store: Arc<Store>,
    notify: Arc<tokio::sync::Notify>,
) {
    let mut stream =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    // The objects of a (re)list in progress: they replace the kind's set at InitDone, so a
    // relist after 410 Gone also forgets objects deleted meanwhile.
    let mut relist: Option<Objects> = None;
    let mut listed_once = false;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                log::warn!("watching {kind}: {e}; retrying");
                continue;
            }
        };
        match ev {
            Event::Init => relist = Some(Objects::new()),
            Event::InitApply(o) => {
                if let (Some(r), Some((k, v))) = (relist.as_mut(), entry(&ar, kind, o)) {
                    r.insert(k, v);
                }
            }
            Event::InitDone => {
                let fresh = relist.take().unwrap_or_default();
                {
                    let mut objects = store.objects.lock().unwrap_or_else(|e| e.into_inner());
                    objects.retain(|(k, ns, _), _| {
                        *k != kind || scope.as_ref().is_some_and(|s| s != ns)
                    });
                    objects.extend(fresh);
                }
                if !listed_once {
                    listed_once = true;
                    store.synced.fetch_add(1, Ordering::AcqRel);
                    log::info!(
                        "Kubernetes: {kind} listed ({})",
                        scope.as_deref().unwrap_or("all namespaces")
                    );
                }
                store.changed(&notify);
            }
            Event::Apply(o) => {
                let key = key_of(kind, &o);
                let mut objects = store.objects.lock().unwrap_or_else(|e| e.into_inner());
                match entry(&ar, kind, o) {
                    Some((k, v)) => {
                        objects.insert(k, v);
                    }
                    // A Secret that no longer holds certificates is forgotten.
                    None => {
                        objects.remove(&key);
                    }
                }
                drop(objects);
                store.changed(&notify);
            }
            Event::Delete(o) => {
                let key = key_of(kind, &o);
                store
                    .objects
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                store.changed(&notify);
            }
        }
    }
}

fn key_of(kind: &'static str, o: &DynamicObject) -> Key {
    (
        kind,
        o.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        o.metadata.name.clone().unwrap_or_default(),
    )
}

/// The store entry of one object: its YAML with apiVersion and kind set (list items often
/// lack them), and without what the gateway never reads (status, managedFields), so that
/// the loader does not warn about unknown fields the API server adds.
fn entry(
    ar: &ApiResource,
    kind: &'static str,
    mut o: DynamicObject,
) -> Option<(Key, (String, String))> {
    // Only the Secrets that can hold certificates (credentialName): service account tokens
    // and other Secrets are never kept in memory.
    if kind == "Secret" && !is_certificate_secret(&o) {
        return None;
    }
    let name = o.metadata.name.clone()?;
    let ns = o
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let rv = o.metadata.resource_version.clone().unwrap_or_default();
    o.types = Some(kube::api::TypeMeta {
        api_version: ar.api_version.clone(),
        kind: kind.to_string(),
    });
    o.metadata.managed_fields = None;
    if kind != "Pod" {
        if let Some(m) = o.data.as_object_mut() {
            m.remove("status");
        }
    }
    let yaml = serde_yaml::to_string(&o).ok()?;
    Some(((kind, ns, name), (rv, yaml)))
}

/// A `kubernetes.io/tls` Secret, or a generic one with the keys Istio's credentialName reads
/// (tls.crt/tls.key, cert/key, ca.crt/cacert).
fn is_certificate_secret(o: &DynamicObject) -> bool {
    if o.data.get("type").and_then(|t| t.as_str()) == Some("kubernetes.io/tls") {
        return true;
    }
    let keys = ["tls.crt", "cert", "ca.crt", "cacert"];
    ["data", "stringData"].iter().any(|f| {
        o.data
            .get(f)
            .and_then(|d| d.as_object())
            .is_some_and(|d| keys.iter().any(|k| d.contains_key(*k)))
    })
}

#[cfg(test)]
mod tests {
    use super::{entry, ApiResource, DynamicObject, GroupVersionKind};

    fn store_text(group: &str, version: &str, kind: &'static str, json: &str) -> (String, String) {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let o: DynamicObject = serde_json::from_str(json).unwrap();
        let ((k, ns, name), (rv, yaml)) = entry(&ar, kind, o).unwrap();
        (format!("{k} {ns}/{name}@{rv}"), yaml)
    }

    /// Objects as the API server sends them (list items lack apiVersion/kind; status and
    /// managedFields present) load as the same objects in files would, without warnings.
    #[test]
    fn api_objects_load_like_files() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/k8s/");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap();
        let texts = [
            store_text(
                "networking.istio.io",
                "v1",
                "Gateway",
                &read("gateway.json"),
            ),
            store_text(
                "networking.istio.io",
                "v1",
                "VirtualService",
                &read("virtualservice.json"),
            ),
            store_text("", "v1", "Service", &read("service.json")),
            store_text(
                "discovery.k8s.io",
                "v1",
                "EndpointSlice",
                &read("endpointslice.json"),
            ),
        ];
        let (m, errors) =
            crate::config::load_texts(texts.iter().map(|(n, y)| (n.as_str(), y.as_str())));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(m.gateways.len(), 1, "{}", texts[0].1);
        assert_eq!(m.virtual_services.len(), 1);
        assert_eq!(texts[0].0, "Gateway istio-system/ingress@1");
    }

    #[test]
    fn only_certificate_secrets_are_kept() {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Secret"));
        let token: DynamicObject = serde_json::from_str(
            r#"{"metadata":{"name":"sa-token","namespace":"apps"},"type":"kubernetes.io/service-account-token","data":{"token":"c2VjcmV0"}}"#,
        )
        .unwrap();
        assert!(entry(&ar, "Secret", token).is_none());
        let tls: DynamicObject = serde_json::from_str(
            r#"{"metadata":{"name":"cert","namespace":"istio-system"},"type":"kubernetes.io/tls","data":{"tls.crt":"","tls.key":""}}"#,
        )
        .unwrap();
        assert!(entry(&ar, "Secret", tls).is_some());
        let generic: DynamicObject = serde_json::from_str(
            r#"{"metadata":{"name":"ca","namespace":"istio-system"},"type":"Opaque","data":{"ca.crt":""}}"#,
        )
        .unwrap();
        assert!(entry(&ar, "Secret", generic).is_some());
    }
}
