//! Manifest text → load (YAML, typed objects) → admit (Istio's validation) → compile (the
//! plan): no input may panic, hang or fail to terminate.
#![no_main]

use gateway::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (loaded, errors) = match config::load_str("fuzz.yaml", text) {
        Ok(m) => (m, Vec::new()),
        Err(e) => (config::Manifests::default(), e),
    };
    for strict in [false, true] {
        let a = config::admit(loaded.clone(), errors.clone(), None, strict);
        let _ = config::compile(&a.manifests, &config::CompileInput::default());
    }
});
