//! Destinations, weighted route destinations and mirrors.

use super::table;
use crate::config::model::{Destination, HttpRoute};
use crate::config::validate::virtual_service::{self, http};
use crate::config::validate::Findings;
use crate::config::TcpRoute;

#[test]
fn validate_destination() {
    table(
        |f, d: &Destination| http::validate_destination(f, "d", d),
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
    virtual_service::validate_route_destinations(f, "r", &r.route);
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
        |f, r: &HttpRoute| http::actions::validate_http_route_destinations(f, "r", &r.route),
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
            http::actions::validate_http_mirrors(f, "m", r.mirrors.as_deref().unwrap_or(&[]))
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
