//! `validateHTTPRoute` and the checks of a route's match, headers, CORS and status.

use super::{parse, results, table, ROUTE};
use crate::config::model::{CorsPolicy, HttpRoute};
use crate::config::validate::virtual_service::http::{self, HttpRouteType};
use crate::config::validate::Findings;

fn route(f: &mut Findings, r: &HttpRoute) {
    http::validate_http_route(f, "r", r, false);
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
        |f, r: &HttpRoute| http::validate_http_route(f, "r", r, true),
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
        move |f: &mut Findings, r: &HttpRoute| http::validate_http_route_conflict(f, "r", r, t)
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
            |f, r: &HttpRoute| http::validate_http_route_match_request(f, "r", r),
            &[(name, src.as_str(), *valid, false)],
        );
    }
}

#[test]
fn validate_authority_rewrite() {
    results(
        |r: &HttpRoute| http::validate_authority_rewrite(r.rewrite.as_ref(), r.headers.as_ref()),
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
        let r = http::validate_http_header_name_or_jwt_claim_route(name);
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
        let a = http::validate_http_header_with_authority_operation_name(name);
        let b = http::validate_http_header_operation_name(name);
        assert_eq!(a.is_ok(), with_authority, "{name:?}: {a:?}");
        assert_eq!(b.is_ok(), remove_or_response, "{name:?}: {b:?}");
    }
    assert_eq!(
        http::validate_http_header_operation_name("Host"),
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
        let r = http::validate_http_header_value(v);
        assert_eq!(r.is_ok(), valid, "{v:?}: {r:?}");
    }
}

#[test]
fn validate_cors_policy() {
    table(
        |f, c: &CorsPolicy| http::actions::validate_cors_policy(f, "c", c),
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
        assert_eq!(http::actions::validate_http_status(s).is_ok(), valid, "{s}");
    }
}
