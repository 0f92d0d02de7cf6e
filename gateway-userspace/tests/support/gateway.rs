//! Gateways compiled from manifests and served in-process.

use std::net::Ipv4Addr;
use std::path::Path;

use gateway::config::{
    compile, load_and_compile, load_str, validate, CompileInput, IstioVersion, Warning,
};
use gateway::l7::L7;
use gateway::plan::Plan;

/// The compile input of these tests: one VIP, 0.0.0.0, and Istio's current behaviour.
pub fn input() -> CompileInput {
    input_as(IstioVersion::CURRENT)
}

/// [`input`] reproducing the given Istio release's version-dependent behaviour.
pub fn input_as(compat: IstioVersion) -> CompileInput {
    CompileInput {
        vips: vec![Ipv4Addr::UNSPECIFIED.into()],
        compat,
        ..CompileInput::default()
    }
}

/// Loads `yaml`, asserts it validates without errors, and compiles it with `input`.
pub fn compile_valid(yaml: &str, input: &CompileInput) -> (Plan, Vec<Warning>) {
    let m = load_str("t.yaml", yaml).expect("loads");
    let (errs, _) = validate(&m);
    assert!(errs.is_empty(), "{errs:#?}");
    compile(&m, input)
}

/// Loads, validates and compiles `yaml`, and binds its HTTP listeners.
pub async fn serve(yaml: &str) -> L7 {
    serve_as(yaml, IstioVersion::CURRENT).await
}

/// [`serve`] as the given Istio release would.
pub async fn serve_as(yaml: &str, compat: IstioVersion) -> L7 {
    let (plan, _) = compile_valid(yaml, &input_as(compat));
    let mut l7 = L7::default();
    l7.apply(&plan.http).await.expect("binds");
    l7
}

/// Writes `yaml` as `dir/file` and compiles the directory (certificate paths relative to it).
pub fn compile_dir(dir: &Path, file: &str, yaml: &str) -> (Plan, Vec<Warning>) {
    std::fs::write(dir.join(file), yaml).unwrap();
    load_and_compile(dir, &input()).unwrap_or_else(|e| panic!("{e:#?}"))
}

/// No server of the config was left unserved.
pub fn assert_all_served(warnings: &[Warning]) {
    assert!(
        warnings.iter().all(|w| !w.message.contains("not served")),
        "{warnings:#?}"
    );
}
