//! Istio `validateConnectionPool` and `validateOutlierDetection`.

use serde_yaml::Value;

use crate::config::syntax::parse_duration;
use crate::config::validate::value::{boolean, duration, enumeration, get, int, object, string};
use crate::config::validate::Findings;

const H2_UPGRADE: [&str; 3] = ["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"];

/// Istio `ValidatePercent`.
fn validate_percent(v: i64) -> Result<(), String> {
    if (0..=100).contains(&v) {
        Ok(())
    } else {
        Err(format!("percentage {v} is not in range 0..100"))
    }
}

/// Istio `validateOutlierDetection`.
pub(super) fn validate_outlier_detection(f: &mut Findings, at: &str, od: &Value) {
    if !object(f, at, od) {
        return;
    }
    duration(f, at, od, "baseEjectionTime");
    if int(f, at, od, "consecutiveErrors").is_some_and(|n| n != 0) {
        f.warn(
            format!("{at}.consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    int(f, at, od, "consecutive5xxErrors");
    int(f, at, od, "consecutiveGatewayErrors");
    let split = boolean(f, at, od, "splitExternalLocalOriginErrors").unwrap_or(false);
    if !split && int(f, at, od, "consecutiveLocalOriginFailures").is_some_and(|n| n > 0) {
        f.err(
            format!("{at}.consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    duration(f, at, od, "interval");
    for key in ["maxEjectionPercent", "minHealthPercent"] {
        if let Some(n) = int(f, at, od, key) {
            f.check(&format!("{at}.{key}"), validate_percent(n));
        }
    }
}

/// Istio `validateConnectionPool`.
pub(super) fn validate_connection_pool(f: &mut Findings, at: &str, cp: &Value) {
    if !object(f, at, cp) {
        return;
    }
    let http = get(cp, "http");
    let tcp = get(cp, "tcp");
    if http.is_none() && tcp.is_none() {
        f.err(at, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = http {
        let at = format!("{at}.http");
        if object(f, &at, h) {
            for (key, what) in [
                ("http1MaxPendingRequests", "http1 max pending requests"),
                ("http2MaxRequests", "http2 max requests"),
                ("maxRequestsPerConnection", "max requests per connection"),
                ("maxRetries", "max retries"),
                ("maxConcurrentStreams", "max concurrent streams"),
            ] {
                if int(f, &at, h, key).is_some_and(|n| n < 0) {
                    f.err(
                        format!("{at}.{key}"),
                        format!("{what} must be non-negative"),
                    );
                }
            }
            duration(f, &at, h, "idleTimeout");
            let upgrade = enumeration(f, &at, h, "h2UpgradePolicy", &H2_UPGRADE);
            let client = boolean(f, &at, h, "useClientProtocol").unwrap_or(false);
            if upgrade == Some("UPGRADE") && client {
                f.err(
                    format!("{at}.useClientProtocol"),
                    "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
                );
            }
            if let Some(ka) = get(h, "http2KeepAlive") {
                let kat = format!("{at}.http2KeepAlive");
                if object(f, &kat, ka) {
                    for key in ["interval", "timeout"] {
                        if get(ka, key).is_none() {
                            f.err(
                                format!("{kat}.{key}"),
                                format!("http2 keepalive {key} is required"),
                            );
                        } else {
                            duration(f, &kat, ka, key);
                        }
                    }
                }
            }
        }
    }
    if let Some(t) = tcp {
        let at = format!("{at}.tcp");
        if object(f, &at, t) {
            if int(f, &at, t, "maxConnections").is_some_and(|n| n < 0) {
                f.err(
                    format!("{at}.maxConnections"),
                    "max connections must be non-negative",
                );
            }
            duration(f, &at, t, "connectTimeout");
            duration(f, &at, t, "maxConnectionDuration");
            // 0s disables the idle timeout, so it is exempt from the 1ms minimum.
            if let Some(s) = string(f, &at, t, "idleTimeout") {
                let zero = parse_duration(s).is_some_and(|d| d.as_millis() == 0);
                if !zero {
                    duration(f, &at, t, "idleTimeout");
                }
            }
            if let Some(ka) = get(t, "tcpKeepalive") {
                let kat = format!("{at}.tcpKeepalive");
                if object(f, &kat, ka) {
                    int(f, &kat, ka, "probes");
                    duration(f, &kat, ka, "time");
                    duration(f, &kat, ka, "interval");
                }
            }
        }
    }
}
