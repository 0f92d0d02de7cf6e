//! Reading fields the model keeps untyped (`serde_yaml::Value`): DestinationRule connection
//! pools, outlier detection, client TLS and friends. A present field of the wrong type is an
//! error, as Istio's protobuf-JSON parser refuses the object; an absent or null field reads as
//! unset. Each reader reports under `{at}.{key}`.

use serde_yaml::Value;

use super::{validate_duration, Findings};

/// The field `key` of an object, `None` when absent or null.
pub(super) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// `v` must be an object (a YAML mapping); reports and returns false otherwise.
pub(super) fn object(f: &mut Findings, at: &str, v: &Value) -> bool {
    if v.is_mapping() {
        true
    } else {
        f.err(at, format!("expected an object, got {}", show(v)));
        false
    }
}

/// An integer field; protobuf JSON also accepts integers written as strings.
pub(super) fn int(f: &mut Findings, at: &str, v: &Value, key: &str) -> Option<i64> {
    int_of(f, &format!("{at}.{key}"), get(v, key)?)
}

/// `x` itself as an integer, reported under `at`.
pub(super) fn int_of(f: &mut Findings, at: &str, x: &Value) -> Option<i64> {
    if x.is_null() {
        return None;
    }
    let n = match x {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    if n.is_none() {
        f.err(
            at,
            format!("invalid value {}: expected an integer", show(x)),
        );
    }
    n
}

pub(super) fn boolean(f: &mut Findings, at: &str, v: &Value, key: &str) -> Option<bool> {
    let x = get(v, key)?;
    let b = x.as_bool();
    if b.is_none() {
        f.err(
            format!("{at}.{key}"),
            format!("invalid value {}: expected true or false", show(x)),
        );
    }
    b
}

pub(super) fn string<'a>(f: &mut Findings, at: &str, v: &'a Value, key: &str) -> Option<&'a str> {
    let x = get(v, key)?;
    let s = x.as_str();
    if s.is_none() {
        f.err(
            format!("{at}.{key}"),
            format!("invalid value {}: expected a string", show(x)),
        );
    }
    s
}

/// A list field; `None` when absent, null or not a list (reported).
pub(super) fn list<'a>(f: &mut Findings, at: &str, v: &'a Value, key: &str) -> Option<&'a [Value]> {
    let x = get(v, key)?;
    let l = x.as_sequence().map(Vec::as_slice);
    if l.is_none() {
        f.err(
            format!("{at}.{key}"),
            format!("invalid value {}: expected a list", show(x)),
        );
    }
    l
}

/// An enum field: one of `names` (protobuf JSON also accepts the value's number, its index
/// in `names`). Returns the name.
pub(super) fn enumeration<'a>(
    f: &mut Findings,
    at: &str,
    v: &Value,
    key: &str,
    names: &[&'a str],
) -> Option<&'a str> {
    let x = get(v, key)?;
    let hit = match x {
        Value::String(s) => names.iter().find(|n| **n == s.as_str()).copied(),
        Value::Number(n) => n
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| names.get(i).copied()),
        _ => None,
    };
    if hit.is_none() {
        f.err(
            format!("{at}.{key}"),
            format!(
                "invalid value {}: expected one of {}",
                show(x),
                names.join(", ")
            ),
        );
    }
    hit
}

/// A `google.protobuf.Duration` field checked with Istio's `ValidateDuration`. Returns the
/// duration text when it parses at all.
pub(super) fn duration<'a>(f: &mut Findings, at: &str, v: &'a Value, key: &str) -> Option<&'a str> {
    let s = string(f, at, v, key)?;
    f.check(&format!("{at}.{key}"), validate_duration(s));
    Some(s)
}

/// A short rendering of a value for messages.
pub(super) fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    }
}
