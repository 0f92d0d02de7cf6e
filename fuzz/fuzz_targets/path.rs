//! The route matcher's path normaliser (RFC 3986 dot segments, `%2e`): no panic, and a
//! normalised path starts with `/`, keeps no dot segment and normalises to itself.
#![no_main]

use gateway::l7::router::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(n) = normalize_path(path) {
        assert!(n.starts_with('/'), "{path:?} -> {n:?}");
        assert!(
            !n.split('/').any(|s| s == "." || s == ".."),
            "{path:?} -> {n:?}"
        );
        let again = normalize_path(&n).expect("a normalised path stays valid");
        assert_eq!(again, n, "not idempotent on {path:?}");
    }
});
