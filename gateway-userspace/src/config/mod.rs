//! Manifests: load (files -> resources), validate, compile (resources -> plan).
//!
//! Pure apart from `load`, which reads files. The stages are separate so that tests (and a
//! `--check` mode) can run each one. [`load_admit_compile`] chains them as the agent runs them:
//! admission (`admit`) leaves out each invalid object and serves the rest, as Istio does;
//! [`load_and_compile`] refuses the whole set on any error.
//! Behaviour follows Istio (see `istio-semantics.md`); deliberate differences are documented
//! where they are made (`compile` for routing, `names` for host resolution).

pub mod admit;
mod compile;
mod load;
mod model;
mod names;
pub mod syntax;
mod validate;

use std::path::Path;

pub use admit::{admit, Admission};
pub use compile::{compile, http, tls, CompileInput, IstioVersion};
pub use load::{load_dir, load_dir_partial, load_str, load_texts};
pub use model::{
    Accepted, ConfigError, ConnectionPool, ConsistentHash, CorsPolicy, Delegate, Destination,
    DestinationRule, DestinationRuleSpec, EndpointConditions, EndpointSlice, EndpointSliceSpec,
    FaultAbort, FaultDelay, Gateway, GatewaySpec, HeaderOperations, Headers, HttpBody,
    HttpDirectResponse, HttpFault, HttpMatch, HttpMirrorPolicy, HttpPool, HttpRedirect, HttpRetry,
    HttpRewrite, HttpRoute, HttpRouteDestination, IntOrString, Kind, L4Match, Labels, LoadBalancer,
    Manifests, ObjectMeta, ObjectReference, OutlierDetection, Percent, Pod, PodInfo, PortSelector,
    PortTrafficPolicy, Protocol, RegexRewrite, Resource, RouteDestination, Secret, SecretSpec,
    Server, ServerPort, ServerTls, Service, ServiceEntry, ServiceEntryPort, ServiceEntrySpec,
    ServicePort, ServiceSpec, SliceEndpoint, SlicePort, Source, StringMatch, Subset, TcpPool,
    TcpRoute, TlsCertificate, TlsMatch, TlsRoute, TrafficPolicy, VirtualService,
    VirtualServiceSpec, Warning, WorkloadEntry, NAT_MODE_ANNOTATION, SERVICE_NAME_LABEL,
};
pub use names::{CLUSTER_DOMAIN, ROOT_NAMESPACE};
pub use validate::validate;

use crate::plan::Plan;

/// Load every manifest under `dir`, validate, compile. Any error (load or validation) gives
/// `Err` with all of them; warnings of every stage come with the plan.
pub fn load_and_compile(
    dir: &Path,
    input: &CompileInput,
) -> Result<(Plan, Vec<Warning>), Vec<ConfigError>> {
    let manifests = load_dir(dir)?;
    let (errors, mut warnings) = validate(&manifests);
    if !errors.is_empty() {
        return Err(errors);
    }
    let (mut plan, more) = compile(&manifests, input);
    warnings.extend(more);
    tls::resolve_paths(&mut plan, base_dir(dir));
    Ok((plan, warnings))
}

/// Load every manifest under `dir`, admit it against `previous` (the last admitted set), and
/// compile what was admitted. `None` for the plan only when `strict` and something was
/// rejected. Never fails on manifest content: what was left out is in the admission.
pub fn load_admit_compile(
    dir: &Path,
    input: &CompileInput,
    previous: Option<&Manifests>,
    strict: bool,
) -> (Admission, Option<(Plan, Vec<Warning>)>, StageTimes) {
    let t0 = std::time::Instant::now();
    let (loaded, load_errors) = load_dir_partial(dir);
    admit_compile(
        loaded,
        load_errors,
        base_dir(dir),
        t0,
        input,
        previous,
        strict,
    )
}

/// The stages after loading, for objects from any source (a directory, the Kubernetes API):
/// admission, compilation, certificate paths made absolute against `base`. `t0` is when
/// loading started.
pub fn admit_compile(
    loaded: Manifests,
    load_errors: Vec<ConfigError>,
    base: &Path,
    t0: std::time::Instant,
    input: &CompileInput,
    previous: Option<&Manifests>,
    strict: bool,
) -> (Admission, Option<(Plan, Vec<Warning>)>, StageTimes) {
    let t1 = std::time::Instant::now();
    let mut a = admit(loaded, load_errors, previous, strict);
    a.manifests.shrink_to_fit();
    let t2 = std::time::Instant::now();
    let mut times = StageTimes {
        parse: t1 - t0,
        admit: t2 - t1,
        compile: std::time::Duration::ZERO,
    };
    if strict && !a.rejected.is_empty() {
        return (a, None, times);
    }
    let (mut plan, more) = compile(&a.manifests, input);
    let mut warnings = std::mem::take(&mut a.warnings);
    warnings.extend(more);
    tls::resolve_paths(&mut plan, base);
    times.compile = t2.elapsed();
    (a, Some((plan, warnings)), times)
}

/// How long each stage of one load took (shown with the revision it produced).
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    /// Reading and parsing the files.
    pub parse: std::time::Duration,
    /// Validation and admission (which objects serve).
    pub admit: std::time::Duration,
    pub compile: std::time::Duration,
}

/// Relative certificate paths are relative to the config directory (or a single file's).
fn base_dir(dir: &Path) -> &Path {
    if dir.is_file() {
        dir.parent().unwrap_or(Path::new("."))
    } else {
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::{load_and_compile, CompileInput};
    use std::fs;

    #[test]
    fn load_and_compile_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("gw.yaml"),
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("route.yaml"),
            "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: echo}\nspec:\n  hosts: [\"*\"]\n  gateways: [istio-system/gw]\n  tcp:\n  - route: [{destination: {host: echo.example.com}}]\n---\napiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {name: echo}\nspec:\n  hosts: [echo.example.com]\n  resolution: STATIC\n  ports: [{number: 9000, name: tcp, protocol: TCP}]\n  endpoints: [{address: 10.0.0.1}]\n  unknownField: 1\n",
        )
        .unwrap();
        let input = CompileInput {
            vips: vec!["192.0.2.1".parse().unwrap()],
            ..CompileInput::default()
        };
        let (plan, warnings) = load_and_compile(dir.path(), &input).unwrap();
        assert_eq!(plan.l4.len(), 1);
        assert_eq!(plan.l4[0].backends.len(), 1);
        assert!(warnings.iter().any(|w| w.field == "spec.unknownField"));

        // One bad file: every error is returned, nothing compiled.
        fs::write(
            dir.path().join("bad.yaml"),
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad}\nspec:\n  hosts: [\"a..b\"]\n  gateways: [gw]\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec: {}\n",
        )
        .unwrap();
        let errs = load_and_compile(dir.path(), &input).unwrap_err();
        // bad host, no routes, gateway without servers, duplicate gateway.
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(errs
            .iter()
            .any(|e| e.message.contains("duplicate Gateway istio-system/gw")));
    }

    #[test]
    fn compile_input_defaults() {
        let i = CompileInput::default();
        assert_eq!(i.namespace, "istio-system");
        assert_eq!(
            i.labels.get("istio").map(String::as_str),
            Some("ingressgateway")
        );
    }
}
