//! Table tests for each DestinationRule check, and whole objects through `validate`.

use serde_yaml::Value;

use super::{load_balancer, pool, tls};
use crate::config::model::{LoadBalancer, TrafficPolicy};
use crate::config::validate::tests::{errors_of, warnings_of};
use crate::config::validate::Findings;

fn yaml(s: &str) -> Value {
    serde_yaml::from_str(s).expect("test YAML parses")
}

/// Runs `check` on each case: (name, YAML, valid, warns).
#[track_caller]
fn table(check: impl Fn(&mut Findings, &Value), cases: &[(&str, &str, bool, bool)]) {
    for (name, src, valid, warns) in cases {
        let mut f = Findings::default();
        check(&mut f, &yaml(src));
        assert_eq!(f.errors.is_empty(), *valid, "{name}: {f:?}");
        assert_eq!(!f.warnings.is_empty(), *warns, "{name}: {f:?}");
    }
}

#[test]
fn validate_traffic_policy() {
    table(
        |f, v| {
            let tp: TrafficPolicy = serde_yaml::from_value(v.clone()).expect("policy");
            super::validate_traffic_policy(f, "tp", "ns", &tp)
        },
        &[
            ("valid traffic policy", "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 7}, http: {http2MaxRequests: 11}}, outlierDetection: {minHealthPercent: 20}}", true, false),
            ("nil entries", "{}", false, false),
            ("missing port in port level settings", "{portLevelSettings: [{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 7}}, outlierDetection: {minHealthPercent: 20}}]}", false, false),
            ("bad connection pool", "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {}, outlierDetection: {minHealthPercent: 20}}", false, false),
            ("bad max connection duration", "{connectionPool: {tcp: {maxConnectionDuration: 500ns}}}", false, false),
            ("panic threshold too low", "{connectionPool: {tcp: {maxConnections: 7}}, outlierDetection: {minHealthPercent: -1}}", false, false),
            ("both upgrade and use client protocol set", "{connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}", false, false),
            ("tunnel and proxyProtocol together", "{tunnel: {targetHost: a.example.com, targetPort: 80}, proxyProtocol: {version: V1}}", false, false),
            ("retryBudget alone is a field", "{retryBudget: {percent: {value: 10}}}", true, false),
            ("port level outlier checked", "{portLevelSettings: [{port: {number: 80}, outlierDetection: {maxEjectionPercent: 105}}]}", false, false),
            ("port level without fields", "{portLevelSettings: [{port: {number: 80}}]}", false, false),
        ],
    );
}

#[test]
fn validate_connection_pool() {
    table(
        |f, v| pool::validate_connection_pool(f, "cp", v),
        &[
            ("tcp and http", "{tcp: {maxConnections: 7, connectTimeout: 2s}, http: {http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5, maxRetries: 4, idleTimeout: 30s, maxConcurrentStreams: 5}}", true, false),
            ("tcp only", "{tcp: {maxConnections: 7, connectTimeout: 2s}}", true, false),
            ("http only", "{http: {http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5, maxRetries: 4, idleTimeout: 30s, maxConcurrentStreams: 5}}", true, false),
            ("http only with empty idle timeout", "{http: {http1MaxPendingRequests: 2, maxRetries: 4}}", true, false),
            ("http2 keepalive", "{http: {http2KeepAlive: {interval: 15s, timeout: 5s}}}", true, false),
            ("empty", "{}", false, false),
            ("bad max connections", "{tcp: {maxConnections: -1}}", false, false),
            ("bad connect timeout", "{tcp: {connectTimeout: 2.000000005s}}", false, false),
            ("bad max pending requests", "{http: {http1MaxPendingRequests: -1}}", false, false),
            ("bad max requests", "{http: {http2MaxRequests: -1}}", false, false),
            ("bad max requests per connection", "{http: {maxRequestsPerConnection: -1}}", false, false),
            ("bad max retries", "{http: {maxRetries: -1}}", false, false),
            ("bad idle timeout", "{http: {idleTimeout: 30.000000005s}}", false, false),
            ("tcp timeout disabled", "{tcp: {idleTimeout: 0s}}", true, false),
            ("bad max concurrent streams", "{http: {maxConcurrentStreams: -1}}", false, false),
            ("http2 keepalive without interval", "{http: {http2KeepAlive: {timeout: 5s}}}", false, false),
            ("http2 keepalive without timeout", "{http: {http2KeepAlive: {interval: 15s}}}", false, false),
            ("bad http2 keepalive interval", "{http: {http2KeepAlive: {interval: 15.000000005s, timeout: 5s}}}", false, false),
            ("tcp keepalive below 1ms", "{tcp: {tcpKeepalive: {time: 500us}}}", false, false),
            ("not a number", "{tcp: {maxConnections: many}}", false, false),
            ("unknown h2UpgradePolicy", "{http: {h2UpgradePolicy: SOMETIMES}}", false, false),
        ],
    );
}

#[test]
fn validate_load_balancer() {
    table(
        |f, v| {
            let lb: LoadBalancer = serde_yaml::from_value(v.clone()).expect("lb");
            load_balancer::validate_load_balancer(f, "lb", &lb, false)
        },
        &[
            ("simple", "{simple: ROUND_ROBIN}", true, false),
            ("consistentHash with cookie and minimumRingSize (deprecated)", "{consistentHash: {minimumRingSize: 1024, httpCookie: {name: test, ttl: 3600s}}}", true, true),
            ("cookie missing name", "{consistentHash: {minimumRingSize: 1024, httpCookie: {ttl: 3600s}}}", false, true),
            ("maglev not prime", "{consistentHash: {maglev: {tableSize: 1000}}}", false, false),
            ("maglev prime", "{consistentHash: {maglev: {tableSize: 65537}}}", true, false),
            ("maglev without tableSize", "{consistentHash: {maglev: {}}}", false, false),
            ("maglev too large", "{consistentHash: {maglev: {tableSize: 5000011}}}", false, false),
            ("minimumRingSize and ringHash", "{consistentHash: {minimumRingSize: 1024, ringHash: {minimumRingSize: 1024}}}", false, true),
            ("unique cookie attributes", "{consistentHash: {httpCookie: {name: c, ttl: 3600s, attributes: [{name: SameSite, value: Strict}, {name: Secure, value: 'true'}, {name: HttpOnly, value: 'true'}]}}}", true, false),
            ("duplicate cookie attribute names", "{consistentHash: {httpCookie: {name: c, attributes: [{name: SameSite, value: Strict}, {name: SameSite, value: Lax}]}}}", false, false),
            ("empty cookie attribute name", "{consistentHash: {httpCookie: {name: c, attributes: [{name: '', value: v}]}}}", false, false),
            ("localityLbSetting and zoneAwareLbSetting both set", "{localityLbSetting: {}, zoneAwareLbSetting: {}}", false, false),
            ("zoneAwareLbSetting only (no outlier detection: warns)", "{zoneAwareLbSetting: {failover: [{from: us-east, to: eu-west}]}}", true, true),
            ("unknown simple", "{simple: FASTEST}", false, false),
            ("simple and consistentHash (oneof)", "{simple: RANDOM, consistentHash: {useSourceIp: true}}", false, false),
            ("two hash keys (oneof)", "{consistentHash: {useSourceIp: true, httpHeaderName: x}}", false, false),
        ],
    );
}

#[test]
fn validate_warmup() {
    table(
        |f, v| load_balancer::validate_warmup(f, "w", v),
        &[
            ("duration only", "{duration: 60s}", true, false),
            (
                "all fields",
                "{duration: 60s, minimumPercent: 10, aggression: 1.5}",
                true,
                false,
            ),
            ("duration missing", "{minimumPercent: 10}", false, false),
            ("duration below 1ms", "{duration: 0s}", false, false),
            (
                "minimumPercent above 100",
                "{duration: 1s, minimumPercent: 101}",
                false,
                false,
            ),
            (
                "aggression zero",
                "{duration: 1s, aggression: 0}",
                false,
                false,
            ),
            (
                "aggression negative",
                "{duration: 1s, aggression: -1}",
                false,
                false,
            ),
        ],
    );
}

#[test]
fn validate_outlier_detection() {
    table(
        |f, v| pool::validate_outlier_detection(f, "od", v),
        &[
            (
                "valid",
                "{interval: 2s, baseEjectionTime: 2s, maxEjectionPercent: 50}",
                true,
                false,
            ),
            ("bad interval", "{interval: 2.000000005s}", false, false),
            (
                "bad base ejection time",
                "{baseEjectionTime: 2.000000005s}",
                false,
                false,
            ),
            (
                "bad max ejection percent",
                "{maxEjectionPercent: 105}",
                false,
                false,
            ),
            (
                "panic threshold too low",
                "{minHealthPercent: -1}",
                false,
                false,
            ),
            (
                "panic threshold too high",
                "{minHealthPercent: 101}",
                false,
                false,
            ),
            (
                "deprecated consecutiveErrors",
                "{consecutiveErrors: 101}",
                true,
                true,
            ),
            (
                "local origin failures without split",
                "{consecutiveLocalOriginFailures: 10}",
                false,
                false,
            ),
            (
                "local origin failures with split",
                "{consecutiveLocalOriginFailures: 10, splitExternalLocalOriginErrors: true}",
                true,
                false,
            ),
        ],
    );
}

#[test]
fn validate_tls() {
    table(
        |f, v| tls::validate_tls(f, "tls", "ns", v),
        &[
            (
                "SIMPLE: credentialName set",
                "{mode: SIMPLE, credentialName: c}",
                true,
                false,
            ),
            (
                "SIMPLE: credentialName with clientCertificate",
                "{mode: SIMPLE, credentialName: c, clientCertificate: cert}",
                false,
                false,
            ),
            (
                "SIMPLE: credentialName with privateKey",
                "{mode: SIMPLE, credentialName: c, privateKey: key}",
                false,
                false,
            ),
            (
                "SIMPLE: credentialName with caCertificates",
                "{mode: SIMPLE, credentialName: c, caCertificates: ca}",
                false,
                false,
            ),
            (
                "MUTUAL: credentialName set",
                "{mode: MUTUAL, credentialName: c}",
                true,
                false,
            ),
            (
                "MUTUAL: credentialName with clientCertificate",
                "{mode: MUTUAL, credentialName: c, clientCertificate: cert}",
                false,
                false,
            ),
            (
                "MUTUAL: credentialName with privateKey",
                "{mode: MUTUAL, credentialName: c, privateKey: key}",
                false,
                false,
            ),
            (
                "MUTUAL: credentialName with caCertificates",
                "{mode: MUTUAL, credentialName: c, caCertificates: ca}",
                false,
                false,
            ),
            (
                "MUTUAL: credentialName with caCrl",
                "{mode: MUTUAL, credentialName: c, caCrl: ca}",
                false,
                false,
            ),
            (
                "MUTUAL: certificate and key",
                "{mode: MUTUAL, clientCertificate: cert, privateKey: key}",
                true,
                false,
            ),
            (
                "MUTUAL: key missing",
                "{mode: MUTUAL, clientCertificate: cert}",
                false,
                false,
            ),
            (
                "MUTUAL: certificate missing",
                "{mode: MUTUAL, privateKey: key}",
                false,
                false,
            ),
            (
                "SIMPLE: insecureSkipVerify with caCertificates",
                "{mode: SIMPLE, insecureSkipVerify: true, caCertificates: ca}",
                false,
                false,
            ),
            (
                "SIMPLE: insecureSkipVerify with credentialName",
                "{mode: SIMPLE, insecureSkipVerify: true, credentialName: c}",
                false,
                false,
            ),
            (
                "SIMPLE: insecureSkipVerify with subjectAltNames",
                "{mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a]}",
                false,
                false,
            ),
            (
                "SIMPLE: insecureSkipVerify false with caCertificates",
                "{mode: SIMPLE, insecureSkipVerify: false, caCertificates: ca}",
                true,
                false,
            ),
            (
                "MUTUAL: insecureSkipVerify with credentialName only",
                "{mode: MUTUAL, insecureSkipVerify: true, credentialName: c}",
                true,
                false,
            ),
            (
                "MUTUAL: insecureSkipVerify with subjectAltNames",
                "{mode: MUTUAL, insecureSkipVerify: true, credentialName: c, subjectAltNames: [a]}",
                false,
                false,
            ),
            (
                "configmap in own namespace",
                "{mode: SIMPLE, credentialName: 'configmap://ns/ca'}",
                true,
                false,
            ),
            (
                "configmap in another namespace",
                "{mode: SIMPLE, credentialName: 'configmap://other/ca'}",
                false,
                false,
            ),
            (
                "configmap without namespace",
                "{mode: SIMPLE, credentialName: 'configmap://ca'}",
                false,
                false,
            ),
            ("unknown mode", "{mode: STRICT}", false, false),
        ],
    );
}

#[test]
fn validate_locality_lb_setting() {
    table(
        |f, v| load_balancer::validate_locality_lb_setting(f, "l", v, true),
        &[
            ("distribute", "{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 20}}]}", true, false),
            ("total weight > 100", "{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 25}}]}", false, false),
            ("total weight < 100", "{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 15}}]}", false, false),
            ("weight = 0", "{distribute: [{from: a/b/c, to: {a/b/c: 0, a/b1: 100}}]}", false, false),
            ("distribute and failover", "{distribute: [{from: a, to: {b: 100}}], failover: [{from: a, to: b}]}", false, false),
            ("failover same region", "{failover: [{from: r1, to: r1}]}", false, false),
            ("failover src with '*'", "{failover: [{from: 'r*', to: r2}]}", false, false),
            ("failover dst with '*'", "{failover: [{from: r1, to: 'r*'}]}", false, false),
            ("failover src with '/'", "{failover: [{from: r1/z1, to: r2}]}", false, false),
            ("failover dst with '/'", "{failover: [{from: r1, to: r2/z1}]}", false, false),
            ("failoverPriority with failover and region label", "{failover: [{from: r1, to: r2}], failoverPriority: [topology.kubernetes.io/region]}", false, false),
            ("overlapping sources", "{distribute: [{from: a, to: {b: 100}}, {from: a/z, to: {b: 100}}]}", false, false),
            ("wildcard not last", "{distribute: [{from: '*/z', to: {b: 100}}]}", false, false),
        ],
    );
    // Without outlier detection, failover warns (Istio: a warning, not an error).
    table(
        |f, v| load_balancer::validate_locality_lb_setting(f, "l", v, false),
        &[
            (
                "failover priority without outlier detection",
                "{failoverPriority: [a]}",
                true,
                true,
            ),
            (
                "failover without outlier detection",
                "{failover: [{from: r1, to: r2}]}",
                true,
                true,
            ),
        ],
    );
}

#[test]
fn validate_zone_aware_lb_setting() {
    table(
        |f, v| load_balancer::validate_zone_aware_lb_setting(f, "z", v, true),
        &[
            (
                "failover",
                "{failover: [{from: us-east, to: eu-west}]}",
                true,
                false,
            ),
            (
                "failoverPriority with zone label",
                "{failoverPriority: [topology.kubernetes.io/zone]}",
                false,
                false,
            ),
            (
                "custom failoverPriority",
                "{failoverPriority: [network]}",
                true,
                false,
            ),
            (
                "same region",
                "{failover: [{from: r1, to: r1}]}",
                false,
                false,
            ),
            (
                "zone in failover",
                "{failover: [{from: r1/z, to: r2}]}",
                false,
                false,
            ),
            (
                "wildcard",
                "{failover: [{from: r1, to: '*'}]}",
                false,
                false,
            ),
        ],
    );
}

#[test]
fn validate_tunnel_settings() {
    table(
        |f, v| super::validate_tunnel_settings(f, "t", v),
        &[
            (
                "CONNECT to FQDN",
                "{protocol: CONNECT, targetHost: example.com, targetPort: 443}",
                true,
                false,
            ),
            (
                "POST to IP",
                "{protocol: POST, targetHost: 192.0.2.1, targetPort: 80}",
                true,
                false,
            ),
            (
                "default protocol",
                "{targetHost: example.com, targetPort: 80}",
                true,
                false,
            ),
            (
                "bad protocol",
                "{protocol: GET, targetHost: example.com, targetPort: 80}",
                false,
                false,
            ),
            (
                "bad host",
                "{targetHost: 'not a host', targetPort: 80}",
                false,
                false,
            ),
            ("no port", "{targetHost: example.com}", false, false),
            (
                "port out of range",
                "{targetHost: example.com, targetPort: 70000}",
                false,
                false,
            ),
        ],
    );
}

#[test]
fn validate_proxy_protocol() {
    table(
        |f, v| super::validate_proxy_protocol(f, "p", v),
        &[
            ("V1", "{version: V1}", true, false),
            ("V2", "{version: V2}", true, false),
            ("default", "{}", true, false),
            ("V3", "{version: V3}", false, false),
        ],
    );
}

#[test]
fn is_prime_matches_envoy() {
    let primes: Vec<u64> = (0..30).filter(|n| load_balancer::is_prime(*n)).collect();
    // Envoy's quirk, kept: 1 counts as prime, 0 does not.
    assert_eq!(primes, [1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    assert!(load_balancer::is_prime(65537));
    assert!(!load_balancer::is_prime(65535));
}

fn dr(spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r, namespace: ns}}\nspec:\n{spec}")
}

/// Whole objects through `validate`, the path `gateway check` takes.
#[test]
fn validate_destination_rule() {
    let cases: &[(&str, &str, bool, bool)] = &[
        ("simple", "  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}]", true, false),
        ("selector without labels warns", "  host: reviews\n  workloadSelector: {}", true, true),
        ("missing host", "  subsets: [{name: v1}]", false, false),
        ("missing subset name", "  host: reviews\n  subsets: [{labels: {version: v1}}]", false, false),
        ("duplicate subset names", "  host: reviews\n  subsets: [{name: v1}, {name: v1}]", false, false),
        ("valid traffic policy, top level", "  host: reviews\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 7}}, outlierDetection: {minHealthPercent: 20}}", true, false),
        ("invalid traffic policy, top level", "  host: reviews\n  trafficPolicy: {outlierDetection: {minHealthPercent: -1}}", false, false),
        ("invalid traffic policy, subset level", "  host: reviews\n  subsets: [{name: v1, trafficPolicy: {connectionPool: {}}}]", false, false),
        ("insecureSkipVerify with caCertificates", "  host: reviews\n  trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: ca}}", false, false),
        ("selector with exportTo beyond own namespace", "  host: reviews\n  workloadSelector: {matchLabels: {app: a}}\n  exportTo: ['*']", false, false),
        ("selector with exportTo .", "  host: reviews\n  workloadSelector: {matchLabels: {app: a}}\n  exportTo: ['.']", true, false),
        ("selector with two exportTo entries", "  host: reviews\n  workloadSelector: {matchLabels: {app: a}}\n  exportTo: ['.', other]", false, false),
        ("selector with wildcard label", "  host: reviews\n  workloadSelector: {matchLabels: {app: 'a*'}}", false, false),
    ];
    for (name, spec, valid, warns) in cases {
        let y = dr(spec);
        let errs = errors_of(&y);
        assert_eq!(errs.is_empty(), *valid, "{name}: {errs:#?}");
        if *valid {
            let w = warnings_of(&y);
            assert_eq!(!w.is_empty(), *warns, "{name}: {w:#?}");
        }
    }
}
