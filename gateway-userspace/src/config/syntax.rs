//! Leaf syntax helpers shared by `config`, `plan` and `l7`: duration strings and the anchored
//! regex form. Imports nothing from the crate, so any module may use it without a cycle.

/// Protobuf-JSON style durations as Istio accepts them: `1.5s`, `500ms`, `1m`, `1h`, `10us`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let idx = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(idx);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "h" => v * 3600.0,
        "m" => v * 60.0,
        "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "ns" => v / 1e9,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| std::time::Duration::from_secs_f64(secs))
}

/// The anchored form the router compiles: Envoy's safe_regex matches the whole value.
pub fn anchored(re: &str) -> String {
    format!("^(?:{re})$")
}

/// Standard base64 (certificates and keys given inline in manifests).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}
