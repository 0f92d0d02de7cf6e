//! TLS and TCP routes: SNI hosts and matches.

use super::{parse, table};
use crate::config::validate::virtual_service;
use crate::config::validate::Findings;
use crate::config::TcpRoute;
use crate::config::VirtualServiceSpec;

#[test]
fn validate_tls_route() {
    table(
        |f, s: &VirtualServiceSpec| virtual_service::validate_tls_route(f, "t", &s.tls[0], s),
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
        |f, s: &VirtualServiceSpec| virtual_service::validate_tls_match(f, "m", &s.tls[0].matches[0], s),
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
        virtual_service::validate_sni_host(&mut f, "s", sni, &s);
        assert_eq!(f.errors.is_empty(), valid, "{spec} {sni}: {f:?}");
        assert_eq!(!f.warnings.is_empty(), warns, "{spec} {sni}: {f:?}");
    }
    let s: VirtualServiceSpec = parse("{hosts: [a.com, c.com]}");
    let mut f = Findings::default();
    virtual_service::validate_sni_host(&mut f, "s", "b.com", &s);
    assert_eq!(
        f.errors[0].1,
        "SNI host \"b.com\" is not a compatible subset of any of the virtual service hosts: [a.com, c.com]"
    );
}

#[test]
fn validate_tcp_route() {
    table(
        |f, t: &TcpRoute| virtual_service::validate_tcp_route(f, "t", t),
        &[
            ("valid", "{match: [{port: 31400, destinationSubnets: [10.0.0.0/8]}], route: [{destination: {host: a, port: {number: 80}}}]}", true, false),
            ("no match is fine", "{route: [{destination: {host: a}}]}", true, false),
            ("no route", "{match: [{port: 1}]}", false, false),
            ("bad match", "{match: [{port: 70000, destinationSubnets: ['10.0.0.0/40'], sourceLabels: {'bad key': v}}], route: [{destination: {host: a}}]}", false, false),
            ("bad gateway in match", "{match: [{gateways: ['x/y/z']}], route: [{destination: {host: a}}]}", false, false),
        ],
    );
}
