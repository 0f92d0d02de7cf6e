//! One table per Istio function, named after it, with the cases of Istio's
//! `validation_test.go`, `virtualservice_test.go` and `agent/validation_test.go` (the YAML is
//! the Go literal of each case), plus cases for this port's own edges.

use serde::de::DeserializeOwned;

use crate::config::model::StringMatch;
use crate::config::validate::Findings;
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

mod actions;
mod destination;
mod http;
mod tcp_tls;

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
