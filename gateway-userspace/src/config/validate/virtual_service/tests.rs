//! One table per Istio function, named after it, with the cases of Istio's
//! `validation_test.go`, `virtualservice_test.go` and `agent/validation_test.go` (the YAML is
//! the Go literal of each case), plus cases for this port's own edges.

use serde::de::DeserializeOwned;

use super::http::HttpRouteType;
use crate::config::model::{
    CorsPolicy, Destination, FaultAbort, FaultDelay, HttpDirectResponse, HttpFault, HttpRedirect,
    HttpRetry, HttpRoute, RegexRewrite, StringMatch,
};
use crate::config::validate::Findings;
use crate::config::TcpRoute;
use crate::config::VirtualServiceSpec;

#[track_caller]
fn parse<T: DeserializeOwned>(src: &str) -> T {
    serde_yaml::from_str(src).unwrap_or_else(|e| panic!("test YAML {src:?}: {e}"))
}

/// Runs `check` on each case: (name, YAML of the checked object, valid, warns).
#[track_caller]
fn table<T: DeserializeOwned>(
    check: impl Fn(&mut Findings, &T),
    cases: &[(&str, &str, bool, bool)],
) {
    for (name, src, valid, warns) in cases {
        let mut f = Findings::default();
        check(&mut f, &parse(src));
        assert_eq!(f.errors.is_empty(), *valid, "{name}: {f:?}");
        assert_eq!(!f.warnings.is_empty(), *warns, "{name}: {f:?}");
    }
}

/// For the Istio functions that return one error: (name, YAML, valid).
#[track_caller]
fn results<T: DeserializeOwned>(
    check: impl Fn(&T) -> Result<(), String>,
    cases: &[(&str, &str, bool)],
) {
    for (name, src, valid) in cases {
        let r = check(&parse(src));
        assert_eq!(r.is_ok(), *valid, "{name}: {r:?}");
    }
}

fn vs(f: &mut Findings, s: &VirtualServiceSpec) {
    super::validate_virtual_service(f, "default", s);
}

const ROUTE: &str = "route: [{destination: {host: foo.baz}}]";

#[test]
fn validate_virtual_service() {
    let http = format!("http: [{{{ROUTE}}}]");
    let cases: Vec<(String, String, bool, bool)> = vec![
        ("simple".into(), format!("{{hosts: [foo.bar], {http}}}"), true, false),
        ("allow sni based domains".into(), "{hosts: [outbound_.15010_._.istiod.istio-system.svc.cluster.local], gateways: [ns1/gateway], tls: [{match: [{sniHosts: [outbound_.15010_._.istiod.istio-system.svc.cluster.local]}], route: [{destination: {host: istio.istio-system.svc.cluster.local}}]}]}".into(), true, false),
        ("duplicate hosts".into(), format!("{{hosts: ['*.foo.bar', '*.bar'], {http}}}"), false, false),
        ("with no destination".into(), "{hosts: ['*.foo.bar', '*.bar'], http: [{route: [{}]}]}".into(), false, false),
        ("destination with out hosts".into(), "{hosts: ['*.foo.bar', '*.bar'], http: [{route: [{destination: {}}]}]}".into(), false, false),
        ("delegate with no hosts".into(), format!("{{{http}}}"), true, false),
        ("bad host".into(), format!("{{hosts: [foo.ba!r], {http}}}"), false, false),
        ("no tcp or http routing".into(), "{hosts: [foo.bar]}".into(), false, false),
        ("bad gateway".into(), format!("{{hosts: [foo.bar], gateways: [b@dgateway], {http}}}"), false, false),
        ("FQDN for gateway".into(), format!("{{hosts: [foo.bar], gateways: [gateway.example.com], {http}}}"), true, true),
        ("namespace/name for gateway".into(), format!("{{hosts: [foo.bar], gateways: [ns1/gateway], {http}}}"), true, false),
        ("namespace/* for gateway".into(), format!("{{hosts: [foo.bar], gateways: ['ns1/*'], {http}}}"), false, false),
        ("*/name for gateway".into(), format!("{{hosts: [foo.bar], gateways: ['*/gateway'], {http}}}"), false, false),
        ("wildcard for mesh gateway".into(), format!("{{hosts: ['*'], {http}}}"), false, false),
        ("wildcard for non-mesh gateway".into(), format!("{{hosts: ['*'], gateways: [somegateway], {http}}}"), true, false),
        ("missing tcp route".into(), "{hosts: [foo.bar], tcp: [{match: [{port: 999}]}]}".into(), false, false),
        ("missing tls route".into(), "{hosts: [foo.bar], tls: [{match: [{port: 999, sniHosts: [foo.bar]}]}]}".into(), false, false),
        ("deprecated mirror".into(), format!("{{hosts: [foo.bar], gateways: [ns1/gateway], http: [{{mirrorPercent: 5, {ROUTE}}}]}}"), true, true),
        ("set authority".into(), format!("{{hosts: [foo.bar], http: [{{headers: {{request: {{set: {{':authority': foo}}}}}}, {ROUTE}}}]}}"), true, false),
        ("set authority in destination".into(), "{hosts: [foo.bar], http: [{route: [{destination: {host: foo.baz}, headers: {request: {set: {':authority': foo}}}}]}]}".into(), true, false),
        ("set authority in rewrite and header".into(), format!("{{hosts: [foo.bar], http: [{{headers: {{request: {{set: {{':authority': foo}}}}}}, rewrite: {{authority: bar}}, {ROUTE}}}]}}"), false, false),
        ("non-method-get".into(), format!("{{hosts: [foo.bar], http: [{{{ROUTE}, match: [{{uri: {{prefix: /api/v1/product}}}}, {{uri: {{prefix: /api/v1/products}}, method: {{exact: GET}}}}]}}]}}"), true, true),
        ("uri-with-prefix-exact".into(), format!("{{hosts: [foo.bar], http: [{{{ROUTE}, match: [{{uri: {{prefix: /}}}}, {{uri: {{exact: /}}, method: {{exact: GET}}}}]}}]}}"), true, false),
        ("jwt claim route without gateway".into(), format!("{{hosts: [foo.bar], gateways: [mesh], http: [{{{ROUTE}, match: [{{uri: {{prefix: /}}, headers: {{'@request.auth.claims.foo': {{exact: bar}}}}}}]}}]}}"), false, false),
        ("ip address as sni host".into(), "{hosts: [foo.bar], tls: [{route: [{destination: {host: foo.baz}}], match: [{port: 999, sniHosts: [1.1.1.1]}]}]}".into(), true, true),
        ("invalid wildcard as sni host".into(), "{hosts: [foo.bar], tls: [{route: [{destination: {host: foo.baz}}], match: [{port: 999, sniHosts: [foo.*.com]}]}]}".into(), false, false),
        // This port's cases.
        ("jwt claim route on a gateway: admitted, this gateway warns".into(), format!("{{hosts: [foo.bar], gateways: [gw], http: [{{{ROUTE}, match: [{{withoutHeaders: {{'@request.auth.claims[sub]': {{exact: bar}}}}}}]}}]}}"), true, true),
        ("an IP host".into(), format!("{{hosts: [10.0.0.1], gateways: [gw], {http}}}"), true, false),
        ("a short-name host".into(), format!("{{hosts: [reviews], {http}}}"), true, false),
        ("wildcard with mesh listed".into(), format!("{{hosts: ['*'], gateways: [gw, mesh], {http}}}"), false, false),
        ("./name for gateway (Istio's webhook refuses it)".into(), format!("{{hosts: [foo.bar], gateways: [./gw], {http}}}"), false, false),
        ("exportTo * and a namespace".into(), format!("{{hosts: [foo.bar], exportTo: ['*', ns], {http}}}"), false, false),
        ("http route may not be null".into(), "{hosts: [foo.bar], http: [null]}".into(), false, false),
        ("delegate with tls".into(), "{tls: [{match: [{sniHosts: [a.com]}], route: [{destination: {host: a}}]}]}".into(), false, false),
    ];
    for (name, src, valid, warns) in &cases {
        table(vs, &[(name.as_str(), src.as_str(), *valid, *warns)]);
    }
}

#[test]
fn validate_chaining_virtual_service() {
    table(
        vs,
        &[
            ("root simple", "{hosts: [foo.bar], gateways: [test-gateway], http: [{delegate: {name: test, namespace: test}}]}", true, false),
            ("root applies to sidecar with delegate", "{hosts: [foo.bar], http: [{delegate: {name: test, namespace: test}}]}", true, false),
            ("root with delegate and destination in one route", "{hosts: [foo.bar], http: [{delegate: {name: test, namespace: test}, route: [{destination: {host: foo.baz}}]}]}", false, false),
            ("delegate with no destination", "{hosts: [], http: [{}]}", false, false),
            ("delegate with delegate", "{hosts: [], http: [{delegate: {name: test, namespace: test}}]}", false, false),
            ("delegate with TCP route", "{hosts: [], tcp: [{route: [{destination: {host: foo.baz}}]}]}", false, false),
            ("delegate with gateway", "{hosts: [], gateways: [test], http: [{route: [{destination: {host: foo.baz}}]}]}", false, false),
            ("delegate with sourceNamespace", "{hosts: [], http: [{match: [{sourceNamespace: test}], route: [{destination: {host: foo.baz}}]}]}", true, false),
        ],
    );
}

fn route(f: &mut Findings, r: &HttpRoute) {
    super::http::validate_http_route(f, "r", r, false);
}

#[test]
fn validate_http_route() {
    table(
        route,
        &[
            ("empty", "{}", false, false),
            ("simple", "{route: [{destination: {host: foo.baz}}]}", true, false),
            ("no destination", "{route: [{}]}", false, false),
            ("weighted", "{route: [{destination: {host: foo.baz.south}, weight: 25}, {destination: {host: foo.baz.east}, weight: 75}]}", true, false),
            ("total weight > 100", "{route: [{destination: {host: foo.baz.south}, weight: 550}, {destination: {host: foo.baz.east}, weight: 500}]}", true, false),
            ("total weight < 100", "{route: [{destination: {host: foo.baz.south}, weight: 49}, {destination: {host: foo.baz.east}, weight: 50}]}", true, false),
            ("simple redirect", "{redirect: {uri: /lerp, authority: foo.biz}}", true, false),
            ("prefix_rewrite redirect with prefix URI match", "{match: [{uri: {prefix: /foo}}], redirect: {prefixRewrite: /bar}}", true, false),
            ("prefix_rewrite redirect with exact URI match is invalid", "{match: [{uri: {exact: /foo}}], redirect: {prefixRewrite: /bar}}", false, false),
            ("prefix_rewrite redirect with regex URI match is invalid", "{match: [{uri: {regex: /foo.*}}], redirect: {prefixRewrite: /bar}}", false, false),
            ("prefix_rewrite redirect with no URI match (wildcard) is valid", "{match: [{headers: {x-foo: {exact: bar}}}], redirect: {prefixRewrite: /bar}}", true, false),
            ("conflicting redirect and route", "{route: [{destination: {host: foo.baz}}], redirect: {uri: /lerp, authority: foo.biz}}", false, false),
            ("request response headers", "{route: [{destination: {host: foo.baz}}]}", true, false),
            ("valid headers", "{route: [{destination: {host: foo.baz}, headers: {request: {add: {name: ''}, set: {name: ''}, remove: [name]}, response: {add: {name: ''}, set: {name: ''}, remove: [name]}}}]}", true, false),
            ("empty header name - request add", "{route: [{destination: {host: foo.baz}, headers: {request: {add: {'': value}}}}]}", false, false),
            ("empty header name - request set", "{route: [{destination: {host: foo.baz}, headers: {request: {set: {'': value}}}}]}", false, false),
            ("empty header name - request remove", "{route: [{destination: {host: foo.baz}, headers: {request: {remove: ['']}}}]}", false, false),
            ("empty header name - response add", "{route: [{destination: {host: foo.baz}, headers: {response: {add: {'': value}}}}]}", false, false),
            ("empty header name - response set", "{route: [{destination: {host: foo.baz}, headers: {response: {set: {'': value}}}}]}", false, false),
            ("empty header name - response remove", "{route: [{destination: {host: foo.baz}, headers: {response: {remove: ['']}}}]}", false, false),
            ("envoy escaped % set", "{route: [{destination: {host: foo.baz}, headers: {response: {set: {i-love-istio: '100%%'}}}}]}", true, false),
            ("envoy variable set", "{route: [{destination: {host: foo.baz}, headers: {response: {set: {name: '%HOSTNAME%'}}}}]}", true, false),
            ("envoy unescaped % set", "{route: [{destination: {host: foo.baz}, headers: {response: {set: {name: 'abcd%oijasodifj'}}}}]}", false, false),
            ("envoy escaped % add", "{route: [{destination: {host: foo.baz}, headers: {response: {add: {i-love-istio: '100%% and more'}}}}]}", true, false),
            ("envoy variable add", "{route: [{destination: {host: foo.baz}, headers: {response: {add: {name: 'hello %HOSTNAME%'}}}}]}", true, false),
            ("envoy unescaped % add", "{route: [{destination: {host: foo.baz}, headers: {response: {add: {name: 'abcd%oijasodifj'}}}}]}", false, false),
            ("null header match", "{route: [{destination: {host: foo.bar}}], match: [{headers: {header: null}}]}", false, false),
            ("empty prefix header match", "{route: [{destination: {host: foo.bar}}], match: [{headers: {emptyprefix: {prefix: ''}}}]}", false, false),
            ("nil match", "{route: [{destination: {host: foo.bar}}], match: null}", true, false),
            // "match with nil element": a null in a list does not load into the typed model.
            ("invalid mirror percent", "{mirrorPercent: 101, route: [{destination: {host: foo.bar}}]}", false, true),
            ("invalid mirror percentage", "{mirrorPercentage: {value: 101}, route: [{destination: {host: foo.bar}}]}", false, false),
            ("valid mirror percentage", "{mirrorPercentage: {value: 1}, route: [{destination: {host: foo.bar}}]}", true, false),
            ("negative mirror percentage", "{mirrorPercentage: {value: -1}, route: [{destination: {host: foo.bar}}]}", false, false),
            ("mirrors without destination", "{mirrors: [{}], route: [{destination: {host: foo.bar}}]}", false, false),
            ("mirrors invalid mirror percentage", "{mirrors: [{destination: {host: foo.baz}}, {destination: {host: foo.baz}, percentage: {value: 101}}], route: [{destination: {host: foo.bar}}]}", false, false),
            ("mirrors valid mirror percentage", "{mirrors: [{destination: {host: foo.baz}, percentage: {value: 1}}, {destination: {host: foo.baz}, percentage: {value: 50}}], route: [{destination: {host: foo.bar}}]}", true, false),
            ("mirrors negative mirror percentage", "{mirrors: [{destination: {host: foo.baz}, percentage: {value: -1}}], route: [{destination: {host: foo.bar}}]}", false, false),
            ("conflicting mirror and mirrors", "{mirror: {host: foo.baz}, mirrors: [{destination: {host: foo.bar}}], route: [{destination: {host: foo.baz}}]}", false, false),
            // This port's cases.
            ("non-token header name (extra)", "{route: [{destination: {host: a}}], headers: {request: {set: {'a b': x}}}}", false, false),
            ("bad timeout", "{timeout: 0.5ms, route: [{destination: {host: foo.bar}}]}", false, false),
            ("direct response and fault", "{directResponse: {status: 503}, fault: {abort: {httpStatus: 503}}}", false, false),
            ("large direct response body warns", &format!("{{directResponse: {{status: 200, body: {{string: {}}}}}}}", "a".repeat(101 << 10)), true, true),
        ],
    );
}

/// Istio `TestValidateRootHTTPRoute`: routes of a VirtualService with hosts.
#[test]
fn validate_root_http_route() {
    let redirect = "redirect: {uri: /, authority: foo.biz}";
    let delegate = "delegate: {name: test, namespace: test}";
    let cases: Vec<(&str, String, bool)> = vec![
        ("simple", format!("{{{delegate}}}"), true),
        (
            "route and delegate conflict",
            format!("{{{ROUTE}, {delegate}}}"),
            false,
        ),
        (
            "redirect and delegate conflict",
            format!("{{redirect: {{uri: /lerp, authority: foo.biz}}, {delegate}}}"),
            false,
        ),
        (
            "null header match",
            format!("{{{delegate}, match: [{{headers: {{header: null}}}}]}}"),
            false,
        ),
        (
            "prefix header match",
            format!("{{{delegate}, match: [{{headers: {{header: {{prefix: test}}}}}}]}}"),
            true,
        ),
        (
            "empty prefix header match (delegate)",
            format!("{{{delegate}, match: [{{headers: {{header: {{prefix: ''}}}}}}]}}"),
            false,
        ),
        (
            "exact header match",
            format!("{{{delegate}, match: [{{headers: {{header: {{exact: test}}}}}}]}}"),
            true,
        ),
        (
            "regex header match",
            format!("{{{delegate}, match: [{{headers: {{header: {{regex: test}}}}}}]}}"),
            true,
        ),
        (
            "exact without headers match",
            format!("{{{redirect}, match: [{{withoutHeaders: {{header: {{exact: test}}}}}}]}}"),
            true,
        ),
        (
            "regex without headers match",
            format!("{{{redirect}, match: [{{withoutHeaders: {{header: {{regex: test}}}}}}]}}"),
            true,
        ),
        (
            "regex without headers match ?",
            format!("{{{redirect}, match: [{{withoutHeaders: {{header: {{regex: '?'}}}}}}]}}"),
            false,
        ),
        (
            "regex without headers match *",
            format!("{{{redirect}, match: [{{withoutHeaders: {{header: {{regex: '*'}}}}}}]}}"),
            true,
        ),
        (
            "regex uri match",
            format!("{{{delegate}, match: [{{uri: {{regex: test}}}}]}}"),
            true,
        ),
        (
            "prefix uri match",
            format!("{{{delegate}, match: [{{uri: {{prefix: test}}}}]}}"),
            true,
        ),
        (
            "exact uri match",
            format!("{{{delegate}, match: [{{uri: {{exact: test}}}}]}}"),
            true,
        ),
        (
            "prefix queryParams match",
            format!("{{{delegate}, match: [{{queryParams: {{q: {{prefix: test}}}}}}]}}"),
            true,
        ),
        (
            "exact queryParams match",
            format!("{{{delegate}, match: [{{queryParams: {{q: {{exact: test}}}}}}]}}"),
            true,
        ),
        (
            "regex queryParams match",
            format!("{{{delegate}, match: [{{headers: {{q: {{regex: test}}}}}}]}}"),
            true,
        ),
        (
            "empty prefix match in method",
            format!("{{match: [{{method: {{prefix: ''}}}}], {redirect}}}"),
            false,
        ),
        (
            "empty regex match in method",
            format!("{{match: [{{method: {{regex: ''}}}}], {redirect}}}"),
            false,
        ),
        (
            "empty prefix match in uri",
            format!("{{match: [{{uri: {{prefix: ''}}}}], {redirect}}}"),
            true,
        ),
        (
            "empty regex match in uri",
            format!("{{match: [{{uri: {{regex: ''}}}}], {redirect}}}"),
            false,
        ),
        (
            "empty regex match in query",
            format!("{{match: [{{queryParams: {{q: {{regex: ''}}}}}}], {redirect}}}"),
            false,
        ),
        (
            "empty regex match in scheme",
            format!("{{match: [{{scheme: {{regex: ''}}}}], {redirect}}}"),
            false,
        ),
        (
            "empty prefix match in scheme",
            format!("{{match: [{{scheme: {{prefix: ''}}}}], {redirect}}}"),
            false,
        ),
        (
            "empty prefix header match",
            "{match: [{headers: {header: {prefix: ''}}}]}".to_string(),
            false,
        ),
    ];
    for (name, src, valid) in &cases {
        table(route, &[(name, src.as_str(), *valid, false)]);
    }
}

/// Istio `TestValidateDelegateHTTPRoute`: routes of a VirtualService without hosts.
#[test]
fn validate_delegate_http_route() {
    table(
        |f, r: &HttpRoute| super::http::validate_http_route(f, "r", r, true),
        &[
            ("empty", "{}", false, false),
            ("simple", "{route: [{destination: {host: foo.baz}}]}", true, false),
            ("no destination", "{route: [{}]}", false, false),
            ("weighted", "{route: [{destination: {host: foo.baz.south}, weight: 25}, {destination: {host: foo.baz.east}, weight: 75}]}", true, false),
            ("total weight > 100", "{route: [{destination: {host: foo.baz.south}, weight: 550}, {destination: {host: foo.baz.east}, weight: 500}]}", true, false),
            ("total weight < 100", "{route: [{destination: {host: foo.baz.south}, weight: 49}, {destination: {host: foo.baz.east}, weight: 50}]}", true, false),
            ("simple redirect", "{redirect: {uri: /lerp, authority: foo.biz}}", true, false),
            ("conflicting redirect and route", "{route: [{destination: {host: foo.baz}}], redirect: {uri: /lerp, authority: foo.biz}}", false, false),
            ("valid headers", "{route: [{destination: {host: foo.baz}, headers: {request: {add: {name: ''}, set: {name: ''}, remove: [name]}, response: {add: {name: ''}, set: {name: ''}, remove: [name]}}}]}", true, false),
            ("empty header name - request add", "{route: [{destination: {host: foo.baz}, headers: {request: {add: {'': value}}}}]}", false, false),
            ("empty header name - response remove", "{route: [{destination: {host: foo.baz}, headers: {response: {remove: ['']}}}]}", false, false),
            ("null header match", "{route: [{destination: {host: foo.bar}}], match: [{headers: {header: null}}]}", false, false),
            ("nil match", "{route: [{destination: {host: foo.bar}}]}", true, false),
            ("invalid mirror percent", "{mirrorPercent: 101, route: [{destination: {host: foo.bar}}]}", false, true),
            ("invalid mirror percentage", "{mirrorPercentage: {value: 101}, route: [{destination: {host: foo.bar}}]}", false, false),
            ("valid mirror percentage", "{mirrorPercentage: {value: 1}, route: [{destination: {host: foo.bar}}]}", true, false),
            ("negative mirror percentage", "{mirrorPercentage: {value: -1}, route: [{destination: {host: foo.bar}}]}", false, false),
            ("delegate route with delegate", "{delegate: {name: test, namespace: test}}", false, false),
        ],
    );
}

#[test]
fn validate_http_route_conflict() {
    let check = |t: HttpRouteType| {
        move |f: &mut Findings, r: &HttpRoute| {
            super::http::validate_http_route_conflict(f, "r", r, t)
        }
    };
    use HttpRouteType::{Delegate, Independent, Root};
    for (t, name, src, msg) in [
        (Root, "root with redirect", "{name: r1, delegate: {name: d}, redirect: {uri: /}}", Some("root HTTP route r1 must not specify redirect")),
        (Root, "root with route", "{delegate: {name: d}, route: [{destination: {host: a}}]}", Some("root HTTP route  must not specify route")),
        (Root, "root with rewrite and fault (not checked on a root)", "{delegate: {name: d}, rewrite: {uri: /}, fault: {}}", None),
        (Delegate, "delegate with delegate", "{delegate: {name: d}, route: [{destination: {host: a}}]}", Some("delegate HTTP route cannot contain delegate")),
        (Independent, "route and redirect", "{route: [{destination: {host: a}}], redirect: {uri: /}}", Some("HTTP route cannot contain both route and redirect")),
        (Independent, "fault and redirect", "{fault: {}, redirect: {uri: /}}", Some("HTTP route cannot contain both fault and redirect")),
        (Independent, "rewrite and redirect", "{rewrite: {uri: /}, redirect: {uri: /}}", Some("HTTP route rule cannot contain both rewrite and redirect")),
        (Independent, "direct_response and redirect", "{directResponse: {status: 200}, redirect: {uri: /}}", Some("HTTP route rule cannot contain both direct_response and redirect")),
        (Independent, "route and direct_response", "{route: [{destination: {host: a}}], directResponse: {status: 200}}", Some("HTTP route cannot contain both route and direct_response")),
        (Independent, "fault and direct_response", "{fault: {}, directResponse: {status: 200}}", Some("HTTP route cannot contain both fault and direct_response")),
        (Independent, "rewrite and direct_response", "{rewrite: {uri: /}, directResponse: {status: 200}}", Some("HTTP route rule cannot contain both rewrite and direct_response")),
        (Independent, "nothing", "{}", Some("HTTP route, redirect or direct_response is required")),
        (Independent, "mirror and mirrors", "{route: [{destination: {host: a}}], mirror: {host: b}, mirrors: [{destination: {host: c}}]}", Some("HTTP route cannot contain both mirror and mirrors")),
        (Independent, "mirror and empty mirrors", "{route: [{destination: {host: a}}], mirror: {host: b}, mirrors: []}", None),
    ] {
        let mut f = Findings::default();
        check(t)(&mut f, &parse(src));
        match msg {
            None => assert!(f.errors.is_empty(), "{name}: {f:?}"),
            Some(m) => assert!(f.errors.iter().any(|(_, e)| e == m), "{name}: {f:?}"),
        }
    }
}

#[test]
fn validate_http_route_match_request() {
    let base = "route: [{destination: {host: a}}]";
    let cases: Vec<(&str, String, bool)> = vec![
        (
            "null withoutHeaders value is admitted",
            format!("{{{base}, match: [{{withoutHeaders: {{x: null}}}}]}}"),
            true,
        ),
        (
            "null queryParams value is admitted",
            format!("{{{base}, match: [{{queryParams: {{q: null}}}}]}}"),
            true,
        ),
        (
            "regex * in headers is a bad regex",
            format!("{{{base}, match: [{{headers: {{x: {{regex: '*'}}}}}}]}}"),
            false,
        ),
        (
            "pseudo header name",
            format!("{{{base}, match: [{{headers: {{':path': {{exact: /}}}}}}]}}"),
            true,
        ),
        (
            "bad header name",
            format!("{{{base}, match: [{{headers: {{'a b': {{exact: x}}}}}}]}}"),
            false,
        ),
        (
            "empty header name",
            format!("{{{base}, match: [{{headers: {{'': {{exact: x}}}}}}]}}"),
            false,
        ),
        (
            "empty prefix in authority",
            format!("{{{base}, match: [{{authority: {{prefix: ''}}}}]}}"),
            false,
        ),
        (
            "empty exact in uri",
            format!("{{{base}, match: [{{uri: {{exact: ''}}}}]}}"),
            true,
        ),
        (
            "port 0 is unset",
            format!("{{{base}, match: [{{port: 0}}]}}"),
            true,
        ),
        (
            "port out of range",
            format!("{{{base}, match: [{{port: 65536}}]}}"),
            false,
        ),
        (
            "bad source label",
            format!("{{{base}, match: [{{sourceLabels: {{'a b': c}}}}]}}"),
            false,
        ),
        (
            "bad gateway",
            format!("{{{base}, match: [{{gateways: ['x/y/z']}}]}}"),
            false,
        ),
        (
            "bad sourceNamespace",
            format!("{{{base}, match: [{{sourceNamespace: Not_A_Label}}]}}"),
            false,
        ),
        (
            "two match types (protobuf oneof)",
            format!("{{{base}, match: [{{uri: {{exact: /a, prefix: /b}}}}]}}"),
            false,
        ),
        (
            "regex too long",
            format!(
                "{{{base}, match: [{{uri: {{regex: '{}'}}}}]}}",
                "a".repeat(1025)
            ),
            false,
        ),
        (
            "lookahead is not RE2",
            format!("{{{base}, match: [{{uri: {{regex: '/a(?=b)'}}}}]}}"),
            false,
        ),
    ];
    for (name, src, valid) in &cases {
        table(
            |f, r: &HttpRoute| super::http::validate_http_route_match_request(f, "r", r),
            &[(name, src.as_str(), *valid, false)],
        );
    }
}

#[test]
fn validate_authority_rewrite() {
    results(
        |r: &HttpRoute| {
            super::http::validate_authority_rewrite(r.rewrite.as_ref(), r.headers.as_ref())
        },
        &[
            ("rewrite only", "{rewrite: {authority: a}}", true),
            (
                "header only",
                "{headers: {request: {set: {host: a}}}}",
                true,
            ),
            (
                "rewrite and :authority",
                "{rewrite: {authority: a}, headers: {request: {set: {':authority': b}}}}",
                false,
            ),
            (
                "rewrite and Host add",
                "{rewrite: {authority: a}, headers: {request: {add: {Host: b}}}}",
                false,
            ),
            (
                "host and :authority",
                "{headers: {request: {set: {host: a, ':authority': b}}}}",
                false,
            ),
            (
                "response host is not the authority",
                "{rewrite: {authority: a}, headers: {response: {set: {host: b}}}}",
                true,
            ),
            (
                "empty rewrite authority",
                "{rewrite: {authority: '', uri: /}, headers: {request: {set: {host: b}}}}",
                true,
            ),
        ],
    );
}

#[test]
fn validate_http_header_name_or_jwt_claim_route() {
    // Istio `TestValidateHTTPHeaderName`, plus claim forms.
    for (name, valid) in [
        ("header1", true),
        ("X-Requested-With", true),
        (":authority", true),
        ("funky!$#_", true),
        ("", false),
        ("::", false),
        ("illegal\"char", false),
        ("@request.auth.claims.sub", true),
        ("@request.auth.claims[a][b]", true),
        ("@request.auth.claims.", false),
        ("@request.auth.claims[]", false),
    ] {
        let r = super::http::validate_http_header_name_or_jwt_claim_route(name);
        assert_eq!(r.is_ok(), valid, "{name:?}: {r:?}");
    }
}

#[test]
fn validate_http_header_operation_name() {
    for (name, with_authority, remove_or_response) in [
        ("x-a", true, true),
        ("", false, false),
        ("host", true, false),
        ("Host", true, false),
        (":authority", true, false),
        (":path", false, false),
    ] {
        let a = super::http::validate_http_header_with_authority_operation_name(name);
        let b = super::http::validate_http_header_operation_name(name);
        assert_eq!(a.is_ok(), with_authority, "{name:?}: {a:?}");
        assert_eq!(b.is_ok(), remove_or_response, "{name:?}: {b:?}");
    }
    assert_eq!(
        super::http::validate_http_header_operation_name("Host"),
        Err("invalid header \"Host\": cannot set Host header".into())
    );
}

#[test]
fn validate_http_header_value() {
    for (v, valid) in [
        ("foo", true),
        ("%HOSTNAME%", true),
        ("100%%", true),
        ("prefix %HOSTNAME% suffix", true),
        ("%DOWNSTREAM_PEER_CERT_V_END(%b %d %H:%M:%S %Y %Z)%", true),
        ("%DYNAMIC_METADATA(com.test.my_filter)%", true),
        ("%START_TIME%%", false),
        ("abc%123", false),
        // This port's cases: the state machine's other exits and the control characters.
        ("%REQ([\"a\",\"b\"])%", true),
        ("%REQ([\"a\" x])%", false),
        ("%REQ([x])%", false),
        ("%REQ(x) y%", false),
        ("tab\tok", true),
        ("new\nline", false),
        ("", true),
    ] {
        let r = super::http::validate_http_header_value(v);
        assert_eq!(r.is_ok(), valid, "{v:?}: {r:?}");
    }
}

#[test]
fn validate_cors_policy() {
    table(
        |f, c: &CorsPolicy| super::http::actions::validate_cors_policy(f, "c", c),
        &[
            ("valid", "{allowMethods: [GET, POST], allowHeaders: [header1, header2], exposeHeaders: [header3], maxAge: 2s}", true, false),
            ("bad method", "{allowMethods: [GET, PUTT], allowHeaders: [header1, header2], exposeHeaders: [header3], maxAge: 2s}", false, false),
            ("bad header", "{allowMethods: [GET, POST], allowHeaders: [header1, header2], exposeHeaders: [''], maxAge: 2s}", false, false),
            ("bad max age", "{allowMethods: [GET, POST], allowHeaders: [header1, header2], exposeHeaders: [header3], maxAge: 2.000000042s}", false, false),
            ("empty matchType AllowOrigins", "{allowOrigins: [{exact: ''}, {prefix: ''}, {regex: ''}], allowMethods: [GET, POST], allowHeaders: [header1, header2], exposeHeaders: [header3], maxAge: 2s}", false, false),
            ("non empty matchType AllowOrigins", "{allowOrigins: [{exact: exact}, {prefix: prefix}, {regex: regex}], allowMethods: [GET, POST], allowHeaders: [header1, header2], exposeHeaders: [header3], maxAge: 2s}", true, false),
            // This port's cases.
            ("method *", "{allowMethods: ['*']}", true, false),
            ("lower-case method", "{allowMethods: [get]}", false, false),
            ("header *", "{allowHeaders: ['*']}", true, false),
            ("origin without match type", "{allowOrigins: [{}]}", false, false),
            ("bad origin regex", "{allowOrigins: [{regex: '('}]}", false, false),
            ("maxAge 0s is below 1ms", "{maxAge: 0s}", false, false),
        ],
    );
}

#[test]
fn validate_http_status() {
    for (s, valid) in [
        (-100, false),
        (0, false),
        (200, true),
        (600, true),
        (601, false),
    ] {
        assert_eq!(
            super::http::actions::validate_http_status(s).is_ok(),
            valid,
            "{s}"
        );
    }
}

#[test]
fn validate_http_fault_injection_abort() {
    table(
        |f, a: &FaultAbort| super::http::actions::validate_http_fault_injection_abort(f, "a", a),
        &[
            (
                "valid",
                "{percentage: {value: 20}, httpStatus: 200}",
                true,
                false,
            ),
            ("valid default", "{httpStatus: 200}", true, false),
            (
                "invalid http status",
                "{percentage: {value: 20}, httpStatus: 9000}",
                false,
                false,
            ),
            (
                "invalid low http status",
                "{percentage: {value: 20}, httpStatus: 100}",
                false,
                false,
            ),
            (
                "valid percentage",
                "{percentage: {value: 0.001}, httpStatus: 200}",
                true,
                false,
            ),
            (
                "invalid fractional percent",
                "{percentage: {value: -10.0}, httpStatus: 200}",
                false,
                false,
            ),
            (
                "grpc: valid",
                "{percentage: {value: 20}, grpcStatus: DEADLINE_EXCEEDED}",
                true,
                false,
            ),
            (
                "grpc: valid default percentage",
                "{grpcStatus: DEADLINE_EXCEEDED}",
                true,
                false,
            ),
            (
                "grpc: invalid status",
                "{percentage: {value: 20}, grpcStatus: BAD_STATUS}",
                false,
                false,
            ),
            (
                "grpc: valid percentage",
                "{percentage: {value: 0.001}, grpcStatus: INTERNAL}",
                true,
                false,
            ),
            (
                "grpc: invalid fractional percent",
                "{percentage: {value: -10.0}, grpcStatus: DEADLINE_EXCEEDED}",
                false,
                false,
            ),
            // This port's cases.
            (
                "no error type warns",
                "{percentage: {value: 20}}",
                true,
                true,
            ),
            ("http2Error", "{http2Error: x}", false, false),
            (
                "percentage below 0.0001",
                "{percentage: {value: 0.00001}, httpStatus: 503}",
                false,
                false,
            ),
            (
                "two error types (protobuf oneof)",
                "{httpStatus: 503, grpcStatus: INTERNAL}",
                false,
                false,
            ),
        ],
    );
}

#[test]
fn validate_http_fault_injection_delay() {
    table(
        |f, d: &FaultDelay| super::http::actions::validate_http_fault_injection_delay(f, "d", d),
        &[
            (
                "valid fixed",
                "{percentage: {value: 20}, fixedDelay: 3s}",
                true,
                false,
            ),
            ("valid default", "{fixedDelay: 3s}", true, false),
            (
                "invalid percent",
                "{percentage: {value: 101}, fixedDelay: 3s}",
                false,
                false,
            ),
            (
                "invalid delay",
                "{percentage: {value: 20}, fixedDelay: 3.000000042s}",
                false,
                false,
            ),
            (
                "valid fractional percentage",
                "{percentage: {value: 0.001}, fixedDelay: 3s}",
                true,
                false,
            ),
            (
                "invalid fractional percentage",
                "{percentage: {value: -10.0}, fixedDelay: 3s}",
                false,
                false,
            ),
            // This port's cases.
            ("exponential delay", "{exponentialDelay: 3s}", false, false),
            (
                "no delay type is admitted (and dropped)",
                "{percentage: {value: 20}}",
                true,
                false,
            ),
            (
                "deprecated percent is not validated",
                "{percent: 200, fixedDelay: 1s}",
                true,
                false,
            ),
        ],
    );
}

#[test]
fn validate_http_fault_injection() {
    table(
        |f, fa: &HttpFault| super::http::actions::validate_http_fault_injection(f, "f", fa),
        &[
            ("neither abort nor delay", "{}", false, false),
            ("abort", "{abort: {httpStatus: 503}}", true, false),
            ("delay", "{delay: {fixedDelay: 1s}}", true, false),
            (
                "bad abort and delay",
                "{abort: {httpStatus: 1}, delay: {fixedDelay: 0s}}",
                false,
                false,
            ),
        ],
    );
}

#[test]
fn validate_http_retry() {
    table(
        |f, r: &HttpRetry| super::http::actions::validate_http_retry(f, "r", r),
        &[
            (
                "valid",
                "{attempts: 10, perTryTimeout: 2s, retryOn: '5xx,gateway-error'}",
                true,
                false,
            ),
            ("disable retries", "{attempts: 0}", true, false),
            (
                "invalid, retry policy configured but attempts set to zero",
                "{attempts: 0, perTryTimeout: 2s, retryOn: '5xx,gateway-error'}",
                false,
                false,
            ),
            ("valid default", "{attempts: 10}", true, false),
            (
                "valid http status retryOn",
                "{attempts: 10, perTryTimeout: 2s, retryOn: '503,connect-failure'}",
                true,
                false,
            ),
            (
                "invalid attempts",
                "{attempts: -1, perTryTimeout: 2s}",
                false,
                false,
            ),
            (
                "invalid timeout",
                "{attempts: 10, perTryTimeout: 2.000000001s}",
                false,
                false,
            ),
            (
                "timeout too small",
                "{attempts: 10, perTryTimeout: 0.000000999s}",
                false,
                false,
            ),
            (
                "invalid backoff",
                "{attempts: 10, backoff: 0.000000999s}",
                false,
                false,
            ),
            (
                "invalid policy retryOn",
                "{attempts: 10, perTryTimeout: 2s, retryOn: '5xx,invalid policy'}",
                false,
                false,
            ),
            (
                "invalid http status retryOn",
                "{attempts: 10, perTryTimeout: 2s, retryOn: '600,connect-failure'}",
                false,
                false,
            ),
            (
                "invalid, retryRemoteLocalities configured but attempts set to zero",
                "{attempts: 0, retryRemoteLocalities: false}",
                false,
                false,
            ),
            // This port's cases: Go's net/http names 418 but not 499, and nothing is trimmed.
            (
                "418 is a known status",
                "{attempts: 1, retryOn: '418'}",
                true,
                false,
            ),
            ("499 is not", "{attempts: 1, retryOn: '499'}", false, false),
            (
                "a space after the comma",
                "{attempts: 1, retryOn: '5xx, reset'}",
                false,
                false,
            ),
            (
                "a trailing comma",
                "{attempts: 1, retryOn: '5xx,'}",
                false,
                false,
            ),
            (
                "grpc policies",
                "{attempts: 1, retryOn: 'cancelled,unavailable,resource-exhausted'}",
                true,
                false,
            ),
        ],
    );
}

#[test]
fn validate_http_rewrite() {
    results(
        super::http::actions::validate_http_rewrite,
        &[
            ("uri and authority", "{uri: /path/to/resource, authority: foobar.org}", true),
            ("uri", "{uri: /path/to/resource}", true),
            ("authority", "{authority: foobar.org}", true),
            ("uriRegexRewrite", "{uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}}", true),
            ("uriRegexRewrite and authority", "{authority: foobar.org, uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}}", true),
            ("uriRegexRewrite and uri", "{uri: /path/to/resource, uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}}", false),
            ("no uri, uriRegexRewrite, or authority", "{}", false),
            ("empty uri counts as unset", "{uri: ''}", false),
        ],
    );
}

#[test]
fn validate_uri_regex_rewrite() {
    results(
        super::http::actions::validate_uri_regex_rewrite,
        &[
            (
                "uriRegexRewrite happy path",
                "{match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}",
                true,
            ),
            (
                "uriRegexRewrite missing match",
                "{rewrite: '\\2/instance/\\1'}",
                false,
            ),
            (
                "uriRegexRewrite missing rewrite",
                "{match: '^/service/([^/]+)(/.*)$'}",
                false,
            ),
            (
                "uriRegexRewrite invalid regex patterns",
                "{match: '[', rewrite: '['}",
                false,
            ),
        ],
    );
    let rr: RegexRewrite = parse("{match: '[', rewrite: x}");
    let e = super::http::actions::validate_uri_regex_rewrite(&rr).unwrap_err();
    assert!(
        e.starts_with("\"HTTPRewrite.UriRegexRewrite.Match\": error parsing regexp: "),
        "{e}"
    );
    assert!(
        e.ends_with(
            "; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
        ),
        "{e}"
    );
}

#[test]
fn validate_http_redirect() {
    results(
        |r: &HttpRedirect| super::http::actions::validate_http_redirect(r, &[]).map_err(|e| e.1),
        &[
            ("empty uri and authority", "{uri: '', authority: ''}", false),
            (
                "too small redirect code",
                "{uri: t, authority: '', redirectCode: 299}",
                false,
            ),
            (
                "too large redirect code",
                "{uri: t, authority: '', redirectCode: 400}",
                false,
            ),
            ("empty authority", "{uri: t, authority: ''}", true),
            ("empty uri", "{uri: '', authority: t}", true),
            (
                "empty redirect code",
                "{uri: t, authority: t, redirectCode: 0}",
                true,
            ),
            (
                "normal redirect",
                "{uri: t, authority: t, redirectCode: 308}",
                true,
            ),
            ("prefix_rewrite alone", "{prefixRewrite: /bar}", true),
            (
                "prefix_rewrite with authority",
                "{authority: foo.example.com, prefixRewrite: /}",
                true,
            ),
            (
                "uri and prefix_rewrite mutually exclusive",
                "{uri: /old, prefixRewrite: /new}",
                false,
            ),
            // This port's cases.
            ("scheme only", "{scheme: https}", true),
            ("bad scheme", "{scheme: ftp}", false),
            ("port only", "{port: 8443}", true),
            ("port 0 counts as set", "{port: 0}", true),
            ("port out of range", "{port: 70000}", false),
            ("derivePort only", "{derivePort: FROM_REQUEST_PORT}", true),
        ],
    );
    // Codes Istio admits but cannot emit are refused here (an extra check).
    for (code, ok) in [(301, true), (304, false), (308, true)] {
        let mut f = Findings::default();
        let r: HttpRoute = parse(&format!("{{redirect: {{uri: /, redirectCode: {code}}}}}"));
        super::http::validate_http_route(&mut f, "r", &r, false);
        assert_eq!(f.errors.is_empty(), ok, "{code}: {f:?}");
    }
}

#[test]
fn validate_http_direct_response() {
    let big = |n: usize| "a".repeat(n);
    let b64 = |n: usize| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(vec![b'a'; n])
    };
    let cases: Vec<(&str, String, bool, bool)> = vec![
        ("status 200", "{status: 200}".into(), true, false),
        ("status 100", "{status: 199}".into(), false, false),
        ("status 600", "{status: 601}".into(), false, false),
        (
            "with string body",
            "{status: 200, body: {string: hello}}".into(),
            true,
            false,
        ),
        (
            "with string body over 100kb",
            format!("{{status: 200, body: {{string: {}}}}}", big(101 << 10)),
            true,
            true,
        ),
        (
            "with string body over 1mb",
            format!("{{status: 200, body: {{string: {}}}}}", big(2 << 20)),
            false,
            false,
        ),
        (
            "with bytes body",
            format!("{{status: 200, body: {{bytes: {}}}}}", b64(5)),
            true,
            false,
        ),
        (
            "with bytes body over 100kb",
            format!("{{status: 200, body: {{bytes: {}}}}}", b64((100 << 10) + 1)),
            true,
            true,
        ),
        (
            "with bytes body over 1mb",
            format!("{{status: 200, body: {{bytes: {}}}}}", b64((1 << 20) + 1)),
            false,
            false,
        ),
        // This port's cases (protobuf parse).
        (
            "bytes not base64",
            "{status: 200, body: {bytes: '***'}}".into(),
            false,
            false,
        ),
        (
            "string and bytes",
            "{status: 200, body: {string: a, bytes: YQ==}}".into(),
            false,
            false,
        ),
    ];
    for (name, src, valid, warns) in &cases {
        table(
            |f, d: &HttpDirectResponse| {
                super::http::actions::validate_http_direct_response(f, "d", d)
            },
            &[(name, src.as_str(), *valid, *warns)],
        );
    }
}

#[test]
fn validate_destination() {
    table(
        |f, d: &Destination| super::http::validate_destination(f, "d", d),
        &[
            ("empty", "{}", false, false),
            ("simple", "{host: foo.bar}", true, false),
            (
                "full",
                "{host: foo.bar, subset: shiny, port: {number: 5000}}",
                true,
                false,
            ),
            (
                "unnumbered-selector",
                "{host: foo.bar, subset: shiny, port: {}}",
                false,
                false,
            ),
            ("bad subset", "{host: foo.bar, subset: v1.0}", false, false),
        ],
    );
}

fn route_destinations(f: &mut Findings, r: &TcpRoute) {
    super::validate_route_destinations(f, "r", &r.route);
}

#[test]
fn validate_route_destinations() {
    table(
        route_destinations,
        &[
            ("simple", "{route: [{destination: {host: foo.baz}}]}", true, false),
            ("wildcard dash", "{route: [{destination: {host: '*-foo.baz'}}]}", true, false),
            ("wildcard prefix", "{route: [{destination: {host: '*foo.baz'}}]}", true, false),
            ("wildcard", "{route: [{destination: {host: '*'}}]}", false, false),
            ("bad wildcard", "{route: [{destination: {host: 'foo.*'}}]}", false, false),
            ("bad fqdn", "{route: [{destination: {host: default/baz}}]}", false, false),
            ("no destination", "{route: [{}]}", false, false),
            ("weighted", "{route: [{destination: {host: foo.baz.south}, weight: 25}, {destination: {host: foo.baz.east}, weight: 75}]}", true, false),
            ("weight < 0", "{route: [{destination: {host: foo.baz.south}, weight: 5}, {destination: {host: foo.baz.east}, weight: -1}]}", false, false),
            ("total weight > 100", "{route: [{destination: {host: foo.baz.south}, weight: 550}, {destination: {host: foo.baz.east}, weight: 500}]}", true, false),
            ("total weight < 100", "{route: [{destination: {host: foo.baz.south}, weight: 49}, {destination: {host: foo.baz.east}, weight: 50}]}", true, false),
            ("total weight = 100", "{route: [{destination: {host: foo.baz.south}, weight: 100}, {destination: {host: foo.baz.east}, weight: 0}]}", true, false),
            ("weight = 0", "{route: [{destination: {host: foo.baz.south}, weight: 0}]}", true, false),
            ("total weight = 0 with multi RouteDestination", "{route: [{destination: {host: foo.baz.south}, weight: 0}, {destination: {host: foo.baz.east}, weight: 0}]}", false, false),
        ],
    );
}

#[test]
fn validate_http_route_destinations() {
    table(
        |f, r: &HttpRoute| super::http::actions::validate_http_route_destinations(f, "r", &r.route),
        &[
            (
                "simple",
                "{route: [{destination: {host: foo.baz}}]}",
                true,
                false,
            ),
            ("no destination", "{route: [{weight: 1}]}", false, false),
            (
                "total weight = 0",
                "{route: [{destination: {host: a}}, {destination: {host: b}}]}",
                false,
                false,
            ),
            (
                "negative weight",
                "{route: [{destination: {host: a}, weight: -1}]}",
                false,
                false,
            ),
            (
                "destination headers checked",
                "{route: [{destination: {host: a}, headers: {response: {set: {host: x}}}}]}",
                false,
                false,
            ),
            (
                "destination authority",
                "{route: [{destination: {host: a}, headers: {request: {set: {host: x}}}}]}",
                true,
                false,
            ),
        ],
    );
}

#[test]
fn validate_http_mirrors() {
    table(
        |f, r: &HttpRoute| {
            super::http::actions::validate_http_mirrors(f, "m", r.mirrors.as_deref().unwrap_or(&[]))
        },
        &[
            (
                "valid",
                "{mirrors: [{destination: {host: a}, percentage: {value: 50}}]}",
                true,
                false,
            ),
            (
                "without destination",
                "{mirrors: [{percentage: {value: 500}}]}",
                false,
                false,
            ),
            (
                "bad destination",
                "{mirrors: [{destination: {host: '*'}}]}",
                false,
                false,
            ),
            (
                "above 100",
                "{mirrors: [{destination: {host: a}, percentage: {value: 100.5}}]}",
                false,
                false,
            ),
            (
                "below 0",
                "{mirrors: [{destination: {host: a}, percentage: {value: -0.5}}]}",
                false,
                false,
            ),
        ],
    );
}

#[test]
fn validate_string_match() {
    for (src, where_, ok) in [
        ("{exact: ''}", "headers", true),
        ("{prefix: ''}", "headers", false),
        ("{prefix: ''}", "uri", false),
        ("{regex: ''}", "method", false),
        ("{regex: 'a+'}", "method", true),
        ("{regex: '(a'}", "scheme", false),
        ("{}", "headers", true),
    ] {
        let sm: StringMatch = parse(src);
        let r = super::http::validate_string_match(&sm, where_);
        assert_eq!(r.is_ok(), ok, "{src} {where_}: {r:?}");
    }
    let sm: StringMatch = parse("{prefix: ''}");
    assert_eq!(
        super::http::validate_string_match(&sm, "scheme"),
        Err("\"scheme\": prefix string match should not be empty".into())
    );
    // The uri is checked with validateStringMatchRegexp only: an empty prefix is fine.
    assert!(super::http::validate_string_match_regexp(&sm, "uri").is_ok());
    let sm: StringMatch = parse("{regex: ''}");
    assert_eq!(
        super::http::validate_string_match_regexp(&sm, "uri"),
        Err("\"uri\": regex string match should not be empty".into())
    );
    let long = "a".repeat(1025);
    assert_eq!(
        super::http::validate_string_regexp(&long, "uri"),
        Err("\"uri\": regex is too large, max length allowed is 1024".into())
    );
    assert!(super::http::validate_string_regexp(&"a".repeat(1024), "uri").is_ok());
}

#[test]
fn validate_gateway_names() {
    for (names, valid, warns) in [
        (vec!["ns1/gateway"], true, false),
        (vec!["gateway"], true, false),
        (vec!["mesh"], true, false),
        (vec!["gateway.example.com"], true, true),
        (vec!["b@dgateway"], false, false),
        (vec!["ns1/*"], false, false),
        (vec!["*/gateway"], false, false),
        (vec!["/gateway"], false, false),
        (vec!["ns/"], false, false),
        (vec!["./gateway"], false, false),
        (vec!["ns/gw.x"], false, false),
        // Istio stops at the first name without a slash: what follows is not looked at.
        (vec!["gateway", "Bad_Ns/gw"], true, false),
        (vec!["Bad_Ns/gw", "gateway"], false, false),
    ] {
        let names: Vec<String> = names.into_iter().map(String::from).collect();
        let mut f = Findings::default();
        super::validate_gateway_names(&mut f, "g", &names);
        assert_eq!(f.errors.is_empty(), valid, "{names:?}: {f:?}");
        assert_eq!(!f.warnings.is_empty(), warns, "{names:?}: {f:?}");
    }
    let mut f = Findings::default();
    super::validate_gateway_names(&mut f, "g", &["gw.ns.svc.cluster.local".to_string()]);
    assert_eq!(
        f.warnings[0].1,
        "using legacy gatewayName format \"gw.ns.svc.cluster.local\"; prefer the <namespace>/<name> format: \"ns/gw\""
    );
}

#[test]
fn validate_wildcard_domain() {
    // Istio `TestValidateWildcardDomain` (the VirtualService host check off gateways).
    for (name, host, out) in [
        ("empty", String::new(), "empty"),
        ("too long", "x".repeat(256), "too long"),
        ("happy", "x".repeat(63), ""),
        ("wildcard", "*".into(), ""),
        ("wildcard multi-segment", "*.bar.com".into(), ""),
        ("wildcard single segment", "*foo".into(), ""),
        ("wildcard prefix", "*foo.bar.com".into(), ""),
        ("wildcard prefix dash", "*-foo.bar.com".into(), ""),
        ("bad wildcard", "foo.*.com".into(), "invalid"),
        ("bad wildcard", "foo*.bar.com".into(), "invalid"),
        ("IP address", "1.1.1.1".into(), "invalid"),
    ] {
        let r = crate::config::names::validate_wildcard_domain(&host);
        match r {
            Ok(()) => assert!(out.is_empty(), "{name}: wanted {out:?}"),
            Err(e) => assert!(!out.is_empty() && e.contains(out), "{name}: {e}"),
        }
    }
}

#[test]
fn validate_wildcard_domain_for_virtual_service_bound_to_gateway() {
    for (name, host, sni, out) in [
        ("empty", String::new(), false, "empty"),
        ("too long", "x".repeat(256), false, "too long"),
        ("happy", "x".repeat(63), false, ""),
        ("wildcard", "*".into(), false, ""),
        ("wildcard multi-segment", "*.bar.com".into(), false, ""),
        ("wildcard single segment", "*foo".into(), false, ""),
        ("wildcard prefix", "*foo.bar.com".into(), false, ""),
        ("wildcard prefix dash", "*-foo.bar.com".into(), false, ""),
        ("bad wildcard", "foo.*.com".into(), false, "invalid"),
        ("bad wildcard", "foo*.bar.com".into(), false, "invalid"),
        ("IP address", "1.1.1.1".into(), false, "invalid"),
        (
            "SNI domain",
            "outbound_.80_._.e2e.foobar.mesh".into(),
            true,
            "",
        ),
        ("happy", "outbound.com".into(), true, ""),
        (
            "invalid SNI domain",
            "neverbound_.80_._.e2e.foobar.mesh".into(),
            true,
            "invalid",
        ),
        (
            "invalid SNI domain",
            "outbound_.thisIsNotAPort_._.e2e.foobar.mesh".into(),
            true,
            "invalid",
        ),
        (
            "invalid SNI domain",
            "outbound_.80_._".into(),
            true,
            "invalid",
        ),
        // Without SNI the outbound_ form is an ordinary (invalid) name.
        (
            "SNI domain without sni",
            "outbound_.80_._.e2e.foobar.mesh".into(),
            false,
            "invalid",
        ),
    ] {
        match super::validate_wildcard_domain_for_virtual_service_bound_to_gateway(sni, &host) {
            Ok(()) => assert!(out.is_empty(), "{name}: wanted {out:?}"),
            Err(e) => assert!(!out.is_empty() && e.contains(out), "{name}: {e}"),
        }
    }
}

#[test]
fn parse_auto_generated_sni_domain() {
    assert_eq!(
        super::parse_auto_generated_sni_domain("foobar.com"),
        Err(
            "domain name foobar.com invalid, should follow 'outbound_.<PORT>_._.<HOSTNAME>' format"
                .into()
        )
    );
    assert_eq!(
        super::parse_auto_generated_sni_domain("outbound_.80_._.e2e.foobar.mesh"),
        Ok(("outbound", "80", "e2e.foobar.mesh"))
    );
}

#[test]
fn validate_tls_route() {
    table(
        |f, s: &VirtualServiceSpec| super::validate_tls_route(f, "t", &s.tls[0], s),
        &[
            ("valid", "{hosts: [a.com], tls: [{match: [{sniHosts: [a.com]}], route: [{destination: {host: a}}]}]}", true, false),
            ("no match", "{hosts: [a.com], tls: [{route: [{destination: {host: a}}]}]}", false, false),
            ("no route", "{hosts: [a.com], tls: [{match: [{sniHosts: [a.com]}]}]}", false, false),
            ("bad destination", "{hosts: [a.com], tls: [{match: [{sniHosts: [a.com]}], route: [{destination: {host: '*'}}]}]}", false, false),
        ],
    );
}

#[test]
fn validate_tls_match() {
    table(
        |f, s: &VirtualServiceSpec| super::validate_tls_match(f, "m", &s.tls[0].matches[0], s),
        &[
            ("valid", "{hosts: ['*.a.com'], tls: [{match: [{sniHosts: [b.a.com], destinationSubnets: [10.0.0.0/8, 10.1.1.1], port: 443, sourceLabels: {app: x}, gateways: [ns/gw]}]}]}", true, false),
            ("no sni hosts", "{hosts: [a.com], tls: [{match: [{port: 443}]}]}", false, false),
            ("bad subnet", "{hosts: [a.com], tls: [{match: [{sniHosts: [a.com], destinationSubnets: [10.0.0.0/40]}]}]}", false, false),
            ("bad port", "{hosts: [a.com], tls: [{match: [{sniHosts: [a.com], port: 65536}]}]}", false, false),
            ("bad source labels", "{hosts: [a.com], tls: [{match: [{sniHosts: [a.com], sourceLabels: {'a b': c}}]}]}", false, false),
            ("bad gateway", "{hosts: [a.com], tls: [{match: [{sniHosts: [a.com], gateways: ['x/y/z']}]}]}", false, false),
        ],
    );
}

#[test]
fn validate_sni_host() {
    for (spec, sni, valid, warns) in [
        ("{hosts: [a.com]}", "a.com", true, false),
        ("{hosts: ['*.a.com']}", "b.a.com", true, false),
        ("{hosts: ['*.a.com']}", "*.b.a.com", true, false),
        ("{hosts: [b.a.com]}", "*.a.com", false, false),
        ("{hosts: [a.com]}", "b.com", false, false),
        ("{hosts: [a.com]}", "1.1.1.1", true, true),
        ("{hosts: [a.com]}", "foo.*.com", false, false),
        // Bound to a gateway (also when no gateway is listed), the outbound_ form is a name.
        (
            "{hosts: ['outbound_.80_._.a.com']}",
            "outbound_.80_._.a.com",
            true,
            false,
        ),
        (
            "{hosts: ['outbound_.80_._.a.com'], gateways: [mesh]}",
            "outbound_.80_._.a.com",
            false,
            false,
        ),
    ] {
        let s: VirtualServiceSpec = parse(spec);
        let mut f = Findings::default();
        super::validate_sni_host(&mut f, "s", sni, &s);
        assert_eq!(f.errors.is_empty(), valid, "{spec} {sni}: {f:?}");
        assert_eq!(!f.warnings.is_empty(), warns, "{spec} {sni}: {f:?}");
    }
    let s: VirtualServiceSpec = parse("{hosts: [a.com, c.com]}");
    let mut f = Findings::default();
    super::validate_sni_host(&mut f, "s", "b.com", &s);
    assert_eq!(
        f.errors[0].1,
        "SNI host \"b.com\" is not a compatible subset of any of the virtual service hosts: [a.com, c.com]"
    );
}

#[test]
fn validate_tcp_route() {
    table(
        |f, t: &TcpRoute| super::validate_tcp_route(f, "t", t),
        &[
            ("valid", "{match: [{port: 31400, destinationSubnets: [10.0.0.0/8]}], route: [{destination: {host: a, port: {number: 80}}}]}", true, false),
            ("no match is fine", "{route: [{destination: {host: a}}]}", true, false),
            ("no route", "{match: [{port: 1}]}", false, false),
            ("bad match", "{match: [{port: 70000, destinationSubnets: ['10.0.0.0/40'], sourceLabels: {'bad key': v}}], route: [{destination: {host: a}}]}", false, false),
            ("bad gateway in match", "{match: [{gateways: ['x/y/z']}], route: [{destination: {host: a}}]}", false, false),
        ],
    );
}

fn warnings(s: &str) -> Vec<String> {
    let spec: VirtualServiceSpec = parse(s);
    let mut f = Findings::default();
    super::validate_virtual_service(&mut f, "default", &spec);
    assert!(f.errors.is_empty(), "{s}: {f:?}");
    f.warnings.into_iter().map(|(_, m)| m).collect()
}

#[test]
fn analyze_unreachable_http_rules() {
    let r = "route: [{destination: {host: a}}]";
    for (name, http, want) in [
        ("no matches last", format!("[{{match: [{{uri: {{exact: /a}}}}], {r}}}, {{{r}}}]"), vec![]),
        ("two rules without matches", format!("[{{{r}}}, {{{r}}}]"), vec!["virtualService rule #1 not used (only the last rule can have no matches)"]),
        ("a rule after one without matches", format!("[{{name: all, {r}}}, {{name: late, match: [{{uri: {{exact: /a}}}}, {{uri: {{exact: /b}}}}], {r}}}]"), vec![
            "virtualService rule \"late\" not used (route without matches defined before)",
            "virtualService rule \"late\" not used (route without matches defined before)",
        ]),
        ("duplicate match (names ignored)", format!("[{{match: [{{name: one, uri: {{exact: /a}}}}], {r}}}, {{match: [{{name: two, uri: {{exact: /a}}}}, {{uri: {{exact: /b}}}}], {r}}}]"), vec![
            "virtualService rule #1 match \"two\" is not used (duplicate/overlapping match in rule #0)",
        ]),
        ("all matches duplicate", format!("[{{match: [{{uri: {{exact: /a}}}}], {r}}}, {{match: [{{uri: {{exact: /a}}}}], {r}}}]"), vec![
            "virtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0)",
            "virtualService rule #1 not used (all matches used by prior rules)",
        ]),
        ("overlapping prefix", format!("[{{match: [{{uri: {{prefix: /api}}}}], {r}}}, {{match: [{{uri: {{prefix: /api/v1}}}}], {r}}}]"), vec![
            "virtualService rule #1 match #0 of prefix /api/v1 is not used (duplicate/overlapping match in rule #0 of prefix /api on #0)",
        ]),
        ("later prefix is shorter", format!("[{{match: [{{uri: {{prefix: /api/v1}}}}], {r}}}, {{match: [{{uri: {{prefix: /api}}}}], {r}}}]"), vec![]),
        ("a header makes the later one narrower: not covered", format!("[{{match: [{{uri: {{prefix: /api}}}}], {r}}}, {{match: [{{uri: {{prefix: /api/v1}}, headers: {{x: {{exact: y}}}}}}], {r}}}]"), vec![]),
        ("a different port: not covered", format!("[{{match: [{{uri: {{prefix: /api}}}}], {r}}}, {{match: [{{uri: {{prefix: /api/v1}}, port: 8080}}], {r}}}]"), vec![]),
        ("a POST after the default GET: not covered", format!("[{{match: [{{uri: {{prefix: /api}}}}], {r}}}, {{match: [{{uri: {{prefix: /api/v1}}, method: {{exact: POST}}}}], {r}}}]"), vec![]),
        ("prefix / before exact: not compared", format!("[{{match: [{{uri: {{prefix: /}}}}], {r}}}, {{match: [{{uri: {{exact: /a}}}}], {r}}}]"), vec![]),
    ] {
        let got = warnings(&format!("{{hosts: [a.com], http: {http}}}"));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn analyze_unreachable_tcp_rules() {
    let r = "route: [{destination: {host: a}}]";
    for (name, tcp, want) in [
        ("fine", format!("[{{match: [{{port: 1}}], {r}}}, {{{r}}}]"), vec![]),
        ("two without matches", format!("[{{{r}}}, {{{r}}}]"), vec!["virtualService rule #1 not used (only the last rule can have no matches)"]),
        ("after one without matches", format!("[{{{r}}}, {{match: [{{port: 1}}], {r}}}]"), vec!["virtualService rule #1 not used (route without matches defined before)"]),
        ("duplicate", format!("[{{match: [{{port: 1}}], {r}}}, {{match: [{{port: 1}}, {{port: 2}}], {r}}}]"), vec!["virtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0)"]),
        ("all duplicate", format!("[{{match: [{{port: 1}}], {r}}}, {{match: [{{port: 1}}], {r}}}]"), vec![
            "virtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0)",
            "virtualService rule #1 not used (all matches used by prior rules)",
        ]),
    ] {
        let got = warnings(&format!("{{hosts: [a.com], gateways: [gw], tcp: {tcp}}}"));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn analyze_unreachable_tls_rules() {
    let r = "route: [{destination: {host: a}}]";
    for (name, tls, want) in [
        ("fine", format!("[{{match: [{{sniHosts: [a.com]}}], {r}}}, {{match: [{{sniHosts: [b.a.com]}}], {r}}}]"), vec![]),
        ("duplicate", format!("[{{match: [{{sniHosts: [a.com]}}], {r}}}, {{match: [{{sniHosts: [a.com]}}, {{sniHosts: [b.a.com]}}], {r}}}]"), vec!["virtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0)"]),
        ("all duplicate", format!("[{{match: [{{sniHosts: [a.com]}}], {r}}}, {{match: [{{sniHosts: [a.com]}}], {r}}}]"), vec![
            "virtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0)",
            "virtualService rule #1 not used (all matches used by prior rules)",
        ]),
    ] {
        let got = warnings(&format!("{{hosts: ['*.a.com', a.com], gateways: [gw], tls: {tls}}}"));
        assert_eq!(got, want, "{name}");
    }
}
