use super::super::load::load_str;
use super::validate;
use crate::config::ConfigError;
use crate::config::Warning;
use std::path::PathBuf;

pub(super) fn errors_of(yaml: &str) -> Vec<ConfigError> {
    let m = load_str("t.yaml", yaml).expect("loads");
    validate(&m).0
}

pub(super) fn warnings_of(yaml: &str) -> Vec<Warning> {
    let m = load_str("t.yaml", yaml).expect("loads");
    let (e, w) = validate(&m);
    assert!(e.is_empty(), "{e:?}");
    w
}

/// Asserts exactly one error, with this field and a message containing `msg`.
#[track_caller]
fn one_error(yaml: &str, resource: &str, field: &str, msg: &str) {
    let errs = errors_of(yaml);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!(e.file, PathBuf::from("t.yaml"));
    assert_eq!(e.resource, resource);
    assert_eq!(e.field, field);
    assert!(
        e.message.contains(msg),
        "{:?} does not contain {msg:?}",
        e.message
    );
}

#[track_caller]
fn has_error(yaml: &str, field: &str, msg: &str) {
    let errs = errors_of(yaml);
    assert!(
        errs.iter()
            .any(|e| e.field == field && e.message.contains(msg)),
        "no {field}: {msg} in {errs:#?}"
    );
}

fn gw(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    )
}

const TCP_SERVER: &str =
    "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n";
const GWR: &str = "Gateway istio-system/gw";

#[test]
fn valid_gateway() {
    assert!(errors_of(&gw(TCP_SERVER)).is_empty());
    let https = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"ns/a.example.com\", \"./b.example.com\", \"*/*.c.com\", \"10.0.0.1\"]\n    tls: {mode: SIMPLE, credentialName: cert}\n";
    assert!(errors_of(&gw(https)).is_empty());
}

#[test]
fn gateway_name_and_servers() {
    let y = gw(TCP_SERVER).replace("name: gw,", "name: gw.x,");
    one_error(
        &y,
        "Gateway istio-system/gw.x",
        "metadata.name",
        "invalid gateway name",
    );
    let y = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec: {}\n";
    one_error(
        y,
        GWR,
        "spec.servers",
        "gateway must have at least one server",
    );
}

#[test]
fn gateway_hosts() {
    let y = gw("  - port: {number: 1, name: tcp, protocol: TCP}\n    hosts: []\n");
    one_error(
        &y,
        GWR,
        "spec.servers[0].hosts",
        "server config must contain at least one host",
    );
    for (host, msg) in [
        ("foo", "short names (non FQDN) are not allowed"),
        ("*foo.com", "partial wildcard \"*foo.com\" not allowed"),
        (
            "a..com",
            "domain name \".com\" invalid (label \"\" invalid)",
        ),
        (
            "bad_ns/a.com",
            "invalid namespace value \"bad_ns\" in gateway",
        ),
    ] {
        let y = gw(&format!(
            "  - port: {{number: 1, name: tcp, protocol: TCP}}\n    hosts: [\"ok.com\", \"{host}\"]\n"
        ));
        has_error(&y, "spec.servers[0].hosts[1]", msg);
    }
}

#[test]
fn gateway_ports() {
    let y = gw("  - hosts: [\"*\"]\n");
    one_error(&y, GWR, "spec.servers[0].port", "port is required");
    let y = gw(&TCP_SERVER.replace("protocol: TCP", "protocol: SCTP"));
    one_error(
        &y,
        GWR,
        "spec.servers[0].port.protocol",
        "invalid protocol \"SCTP\"",
    );
    let y = gw(&TCP_SERVER.replace("31400", "70000"));
    one_error(
        &y,
        GWR,
        "spec.servers[0].port.number",
        "port number 70000 must be in the range 1..65535",
    );
    let y = gw(&TCP_SERVER.replace("protocol: TCP", "protocol: TCP, targetPort: 8080"));
    one_error(
        &y,
        GWR,
        "spec.servers[0].port.targetPort",
        "targetPort has no impact on Gateways",
    );
    let y = gw(&TCP_SERVER.replace("name: tcp, ", ""));
    one_error(
        &y,
        GWR,
        "spec.servers[0].port.name",
        "port name must be set",
    );
    let y = gw(&format!(
        "{TCP_SERVER}{}",
        TCP_SERVER.replace("31400", "31401")
    ));
    one_error(
        &y,
        GWR,
        "spec.servers[1].port.name",
        "port names in servers must be unique: duplicate name tcp",
    );
    // Protocols are case-insensitive, and UDP is accepted.
    assert!(errors_of(&gw(&TCP_SERVER.replace("protocol: TCP", "protocol: udp"))).is_empty());
}

#[test]
fn gateway_bind() {
    let y = gw(&format!("{TCP_SERVER}    bind: not-an-ip\n"));
    one_error(
        &y,
        GWR,
        "spec.servers[0].bind",
        "not-an-ip is not a valid IP",
    );
    assert!(errors_of(&gw(&format!("{TCP_SERVER}    bind: 10.0.0.1\n"))).is_empty());
}

#[test]
fn gateway_tls_rules() {
    let https = |tls: &str| {
        gw(&format!(
            "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [\"*\"]\n{tls}"
        ))
    };
    one_error(
        &https(""),
        GWR,
        "spec.servers[0].tls",
        "server must have TLS settings for HTTPS/TLS protocols",
    );
    has_error(
        &https("    tls: {mode: SIMPLE}\n"),
        "spec.servers[0].tls.serverCertificate",
        "SIMPLE TLS requires a server certificate",
    );
    has_error(
        &https("    tls: {mode: SIMPLE}\n"),
        "spec.servers[0].tls.privateKey",
        "SIMPLE TLS requires a private key",
    );
    one_error(
        &https("    tls: {mode: MUTUAL, serverCertificate: c, privateKey: k}\n"),
        GWR,
        "spec.servers[0].tls.caCertificates",
        "MUTUAL TLS requires a client CA bundle",
    );
    one_error(
        &https("    tls: {mode: SIMPLE, credentialName: a, serverCertificate: c, privateKey: k}\n"),
        GWR,
        "spec.servers[0].tls",
        "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
    );
    one_error(
        &https("    tls: {mode: ISTIO_MUTUAL, credentialName: a}\n"),
        GWR,
        "spec.servers[0].tls",
        "ISTIO_MUTUAL TLS cannot have associated credentialName",
    );
    one_error(
        &https("    tls: {mode: SIMPLE, serverCertificate: c, privateKey: k, caCrl: x}\n"),
        GWR,
        "spec.servers[0].tls.caCrl",
        "CRL is not supported with SIMPLE TLS",
    );
    // Istio's validateTLSOptions looks at caCertificates only: caCertCredentialName does not
    // stand in for it on a file-based server.
    one_error(
        &https("    tls: {mode: MUTUAL, serverCertificate: c, privateKey: k, caCertCredentialName: ca}\n"),
        GWR,
        "spec.servers[0].tls.caCertificates",
        "MUTUAL TLS requires a client CA bundle",
    );
    // Secrets: no file fields needed, caCrl not checked (as Istio); a third credential warns.
    let w = warnings_of(&https(
        "    tls: {mode: MUTUAL, credentialNames: [a, b, c], caCrl: x}\n",
    ));
    assert!(
        w.iter()
            .any(|w| w.field == "spec.servers[0].tls.credentialNames"),
        "{w:#?}"
    );
    one_error(
        &https("    tls: {mode: BOGUS}\n"),
        GWR,
        "spec.servers[0].tls.mode",
        "invalid TLS mode",
    );
    // No mode = PASSTHROUGH: certificates only warn.
    let w = warnings_of(&https("    tls: {credentialName: x}\n"));
    assert!(w
        .iter()
        .any(|w| w.message == "PASSTHROUGH mode does not use certificates, they will be ignored"));

    let http = |tls: &str| {
        gw(&format!(
            "  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n{tls}"
        ))
    };
    assert!(errors_of(&http("    tls: {httpsRedirect: true}\n")).is_empty());
    one_error(
        &http("    tls: {mode: SIMPLE, credentialName: x}\n"),
        GWR,
        "spec.servers[0].tls",
        "server cannot have TLS settings for plain text HTTP ports",
    );
    one_error(
        &gw(&format!("{TCP_SERVER}    tls: {{httpsRedirect: true}}\n")),
        GWR,
        "spec.servers[0].tls",
        "server cannot have TLS settings for non HTTPS/TLS ports",
    );
}

#[test]
fn gateway_nat_annotation() {
    let y = gw(TCP_SERVER).replace(
        "namespace: istio-system}",
        "namespace: istio-system, annotations: {gateway.dataplane/nat-mode: dsr}}",
    );
    one_error(
        &y,
        GWR,
        "metadata.annotations[gateway.dataplane/nat-mode]",
        "invalid NAT mode \"dsr\"",
    );
}

fn vs(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: echo, namespace: default}}\nspec:\n{spec}"
    )
}

const VSR: &str = "VirtualService default/echo";
const TCP_OK: &str = "  tcp:\n  - route:\n    - destination: {host: echo}\n";

#[test]
fn valid_virtual_service() {
    let y = vs(&format!(
        "  hosts: [\"*\"]\n  gateways: [istio-system/gw]\n{TCP_OK}"
    ));
    assert!(errors_of(&y).is_empty(), "{:?}", errors_of(&y));
}

#[test]
fn vs_routes_required() {
    let y = vs("  hosts: [a.com]\n  gateways: [gw]\n");
    one_error(
        &y,
        VSR,
        "spec",
        "http, tcp or tls must be provided in virtual service",
    );
    let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  http: [null]\n");
    one_error(&y, VSR, "spec.http[0]", "http route may not be null");
    let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  tcp:\n  - match: [{port: 1}]\n");
    one_error(&y, VSR, "spec.tcp[0].route", "TCP route is required");
}

#[test]
fn vs_hosts() {
    let y = vs(&format!("  hosts: [\"*\"]\n{TCP_OK}"));
    one_error(
        &y,
        VSR,
        "spec.hosts[0]",
        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
    );
    let y = vs(&format!(
        "  hosts: [\"*\"]\n  gateways: [gw, mesh]\n{TCP_OK}"
    ));
    one_error(&y, VSR, "spec.hosts[0]", "wildcard host * is not allowed");
    let y = vs(&format!("  hosts: [\"a..b\"]\n  gateways: [gw]\n{TCP_OK}"));
    one_error(&y, VSR, "spec.hosts[0]", "invalid (label \"\" invalid)");
    let y = vs(&format!(
        "  hosts: [\"*.a.com\", b.a.com]\n  gateways: [gw]\n{TCP_OK}"
    ));
    one_error(
        &y,
        VSR,
        "spec.hosts[1]",
        "duplicate hosts in virtual service: *.a.com & b.a.com",
    );
    // IPs are fine.
    let y = vs(&format!(
        "  hosts: [\"10.0.0.1\"]\n  gateways: [gw]\n{TCP_OK}"
    ));
    assert!(errors_of(&y).is_empty());
}

#[test]
fn vs_gateway_refs() {
    let y = vs(&format!(
        "  hosts: [a.com]\n  gateways: [\"Bad_Ns/gw\"]\n{TCP_OK}"
    ));
    one_error(
        &y,
        VSR,
        "spec.gateways[0]",
        "invalid value for namespace: \"Bad_Ns\"",
    );
    let y = vs(&format!(
        "  hosts: [a.com]\n  gateways: [\"ns/gw.x\"]\n{TCP_OK}"
    ));
    one_error(
        &y,
        VSR,
        "spec.gateways[0]",
        "invalid value for gateway name: \"gw.x\"",
    );
    let y = vs(
        "  hosts: [a.com]\n  gateways: [gw]\n  tcp:\n  - match: [{gateways: [\"x/y/z\"]}]\n    route: [{destination: {host: a}}]\n",
    );
    one_error(
        &y,
        VSR,
        "spec.tcp[0].match[0].gateways[0]",
        "invalid value for gateway name",
    );
}

#[test]
fn vs_destinations() {
    let route = |r: &str| {
        vs(&format!(
            "  hosts: [a.com]\n  gateways: [gw]\n  tcp:\n  - route:\n{r}"
        ))
    };
    one_error(
        &route("    - weight: 1\n"),
        VSR,
        "spec.tcp[0].route[0].destination",
        "destination is required",
    );
    one_error(
        &route("    - destination: {host: \"*\"}\n"),
        VSR,
        "spec.tcp[0].route[0].destination.host",
        "invalid destination host *",
    );
    one_error(
        &route("    - destination: {port: {number: 80}}\n"),
        VSR,
        "spec.tcp[0].route[0].destination.host",
        "empty domain name not allowed",
    );
    one_error(
        &route("    - destination: {host: a, subset: v1.0}\n"),
        VSR,
        "spec.tcp[0].route[0].destination.subset",
        "subset name is invalid: v1.0",
    );
    one_error(
        &route("    - destination: {host: a, port: {number: 0}}\n"),
        VSR,
        "spec.tcp[0].route[0].destination.port.number",
        "port number 0 must be in the range 1..65535",
    );
    let y = route("    - destination: {host: a}\n      weight: 100\n    - destination: {host: b}\n      weight: -1\n");
    one_error(&y, VSR, "spec.tcp[0].route[1].weight", "weight -1 < 0");
    let y = route("    - destination: {host: a}\n    - destination: {host: b}\n");
    one_error(&y, VSR, "spec.tcp[0].route", "total destination weight = 0");
    // A single destination may have weight 0.
    assert!(errors_of(&route("    - destination: {host: a}\n      weight: 0\n")).is_empty());
}

#[test]
fn vs_match_fields() {
    let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  tcp:\n  - match:\n    - port: 70000\n      destinationSubnets: [\"10.0.0.0/40\", \"10.0.0.1\"]\n      sourceLabels: {\"bad key\": v}\n    route: [{destination: {host: a}}]\n");
    let errs = errors_of(&y);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(errs[0].field, "spec.tcp[0].match[0].destinationSubnets[0]");
    assert!(errs[0].message.contains("is not a valid CIDR block"));
    assert_eq!(errs[1].field, "spec.tcp[0].match[0].port");
    assert_eq!(errs[2].field, "spec.tcp[0].match[0].sourceLabels");
}

#[test]
fn vs_tls_routes() {
    let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  tls:\n  - match: [{sniHosts: [b.com]}]\n    route: [{destination: {host: a}}]\n");
    one_error(
        &y,
        VSR,
        "spec.tls[0].match[0].sniHosts[0]",
        "SNI host \"b.com\" is not a compatible subset of any of the virtual service hosts",
    );
    let y =
        vs("  hosts: [a.com]\n  gateways: [gw]\n  tls:\n  - route: [{destination: {host: a}}]\n");
    one_error(
        &y,
        VSR,
        "spec.tls[0].match",
        "TLS route must have at least one match condition",
    );
    let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  tls:\n  - match: [{port: 443}]\n    route: [{destination: {host: a}}]\n");
    one_error(
        &y,
        VSR,
        "spec.tls[0].match[0].sniHosts",
        "TLS match must have at least one SNI host",
    );
    let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  tls:\n  - match: [{sniHosts: [a.com]}]\n");
    one_error(&y, VSR, "spec.tls[0].route", "TLS route is required");
}

#[test]
fn vs_export_to_and_delegate() {
    let y = vs(&format!(
        "  hosts: [a.com]\n  gateways: [gw]\n  exportTo: [\"*\", ns]\n{TCP_OK}"
    ));
    one_error(
        &y,
        VSR,
        "spec.exportTo",
        "cannot have both public (*) and non-public exportTo values",
    );
    let y = vs(&format!("  gateways: [gw]\n{TCP_OK}"));
    has_error(
        &y,
        "spec.gateways",
        "delegate virtual service must have no gateways specified",
    );
    has_error(
        &y,
        "spec.tcp",
        "delegate virtual service must have no tcp route specified",
    );
}

#[test]
fn vs_unreachable_rule_warns() {
    let y = vs("  hosts: [a.com]\n  gateways: [gw]\n  tcp:\n  - route: [{destination: {host: a}}]\n  - match: [{port: 1}]\n    route: [{destination: {host: b}}]\n");
    let w = warnings_of(&y);
    assert!(
        w.iter()
            .any(|w| w.field == "spec.tcp[1]" && w.message.contains("not used")),
        "{w:?}"
    );
}

fn dr(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: r, namespace: default}}\nspec:\n{spec}"
    )
}
const DRR: &str = "DestinationRule default/r";

#[test]
fn destination_rules() {
    assert!(errors_of(&dr("  host: echo\n  subsets: [{name: v1, labels: {version: v1}}]\n  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}, connectionPool: {tcp: {maxConnections: 1}}}\n")).is_empty());
    one_error(
        &dr("  subsets: []\n"),
        DRR,
        "spec.host",
        "empty domain name not allowed",
    );
    one_error(&dr("  host: a..b\n"), DRR, "spec.host", "invalid");
    one_error(
        &dr("  host: a\n  subsets: [{name: v1}, {name: v1}]\n"),
        DRR,
        "spec.subsets[1].name",
        "duplicate subset names: v1",
    );
    one_error(
        &dr("  host: a\n  subsets: [{name: V_1}]\n"),
        DRR,
        "spec.subsets[0].name",
        "subset name is invalid: V_1",
    );
    one_error(
        &dr("  host: a\n  subsets: [{labels: {a: b}}]\n"),
        DRR,
        "spec.subsets[0].name",
        "subset name cannot be empty",
    );
    one_error(
        &dr("  host: a\n  subsets: [{name: v1, labels: {version: \"-x\"}}]\n"),
        DRR,
        "spec.subsets[0].labels",
        "invalid tag value",
    );
    one_error(
        &dr("  host: a\n  trafficPolicy: {}\n"),
        DRR,
        "spec.trafficPolicy",
        "traffic policy must have at least one field",
    );
    one_error(
        &dr("  host: a\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n"),
        DRR,
        "spec.trafficPolicy.loadBalancer.simple",
        "invalid load balancer",
    );
    one_error(
        &dr("  host: a\n  trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 0s}}}}\n"),
        DRR,
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        "name required for HttpCookie",
    );
    one_error(
        &dr(
            "  host: a\n  trafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}\n",
        ),
        DRR,
        "spec.trafficPolicy.portLevelSettings[0].port",
        "portTrafficPolicy must have valid port",
    );
}

fn se(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext, namespace: default}}\nspec:\n{spec}"
    )
}
const SER: &str = "ServiceEntry default/ext";

#[test]
fn service_entries() {
    let ok = "  hosts: [a.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: tcp, protocol: TCP}]\n  endpoints: [{address: 10.0.0.1, ports: {tcp: 8080}, labels: {v: a}}]\n";
    assert!(errors_of(&se(ok)).is_empty());
    one_error(
        &se("  resolution: STATIC\n"),
        SER,
        "spec.hosts",
        "service entry must have at least one host",
    );
    one_error(
        &se("  hosts: [\"*\"]\n  resolution: STATIC\n"),
        SER,
        "spec.hosts[0]",
        "invalid host *",
    );
    one_error(
        &se("  hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: tcp}, {number: 81, name: tcp}]\n"),
        SER,
        "spec.ports[1].name",
        "service entry port name \"tcp\" already defined",
    );
    one_error(
        &se("  hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: a}, {number: 80, name: b}]\n"),
        SER,
        "spec.ports[1].number",
        "service entry port 80 already defined",
    );
    one_error(
        &se("  hosts: [a.com]\n  resolution: STATIC\n  endpoints: [{address: db.example.com}]\n"),
        SER,
        "spec.endpoints[0].address",
        "endpoint address \"db.example.com\" is not a valid IP address",
    );
    one_error(
        &se("  hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: tcp}]\n  endpoints: [{address: 10.0.0.1, ports: {http: 8080}}]\n"),
        SER,
        "spec.endpoints[0].ports.http",
        "endpoint port 8080 is not defined by the service entry",
    );
    one_error(
        &se("  hosts: [a.com]\n  resolution: MAGIC\n"),
        SER,
        "spec.resolution",
        "unsupported resolution type MAGIC",
    );
    one_error(
        &se("  hosts: [a.com]\n  resolution: NONE\n  endpoints: [{address: 10.0.0.1}]\n"),
        SER,
        "spec.endpoints",
        "no endpoints should be provided for resolution type none",
    );
    one_error(
        &se("  hosts: [a.com, b.com]\n  resolution: STATIC\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n"),
        SER,
        "spec.hosts",
        "multiple hosts provided with non-HTTP, non-TLS ports",
    );
}

#[test]
fn service_entry_dns_warns() {
    let w = warnings_of(&se("  hosts: [a.example.com]\n  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n"));
    assert!(
        w.iter()
            .any(|w| w.field == "spec.resolution" && w.message.contains("resolves no DNS")),
        "{w:?}"
    );
    let w = warnings_of(&se(
        "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n",
    ));
    assert!(
        w.iter().any(|w| w.message.contains("resolution NONE")),
        "{w:?}"
    );
}

#[test]
fn kubernetes_shapes() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: apps}\nspec:\n  ports:\n  - {name: a, port: 0}\n  - {port: 81, targetPort: Bad_Name, protocol: HTTP}\n";
    let errs = errors_of(svc);
    let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.ports[0].port",
            "spec.ports[1].name",
            "spec.ports[1].targetPort",
            "spec.ports[1].protocol"
        ],
        "{errs:#?}"
    );
    assert!(errs.iter().all(|e| e.resource == "Service apps/s"));

    let es = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-1, namespace: apps, labels: {kubernetes.io/service-name: s}}\naddressType: IPv4\nendpoints: [{addresses: [\"10.0.0.300\"]}]\nports: [{name: a, port: 99999}]\n";
    let errs = errors_of(es);
    let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["ports[0].port", "endpoints[0].addresses[0]"],
        "{errs:#?}"
    );

    // IPv6 slices are served; their addresses must be IPv6 ones.
    let v6 = es
        .replace("IPv4", "IPv6")
        .replace("99999", "80")
        .replace("10.0.0.300", "2001:db8::7");
    assert!(errors_of(&v6).is_empty(), "{:#?}", errors_of(&v6));
    assert!(warnings_of(&v6).is_empty(), "{:?}", warnings_of(&v6));
    let mixed = v6.replace("2001:db8::7", "10.0.0.7");
    let fields: Vec<_> = errors_of(&mixed).into_iter().map(|e| e.field).collect();
    assert_eq!(fields, ["endpoints[0].addresses[0]"]);
    let fqdn = es.replace("IPv4", "FQDN").replace("99999", "80");
    let w = warnings_of(&fqdn);
    assert!(w.iter().any(|w| w.field == "addressType"), "{w:?}");
}

#[test]
fn duplicates_name_both_files() {
    let a = load_str("a.yaml", &gw(TCP_SERVER)).unwrap();
    let mut m = load_str("b.yaml", &gw(TCP_SERVER)).unwrap();
    m.extend(a);
    let (errs, _) = validate(&m);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].file, PathBuf::from("a.yaml"));
    assert_eq!(errs[0].resource, GWR);
    assert_eq!(errs[0].field, "metadata.name");
    assert!(
        errs[0]
            .message
            .contains("also defined in b.yaml (document 0)"),
        "{}",
        errs[0]
    );
    // Same name, other kind or namespace: fine.
    let other = gw(TCP_SERVER).replace("namespace: istio-system", "namespace: other");
    let mut m = load_str("b.yaml", &gw(TCP_SERVER)).unwrap();
    m.extend(load_str("c.yaml", &other).unwrap());
    assert!(validate(&m).0.is_empty());
}

#[test]
fn all_errors_collected_and_displayed() {
    let y = format!(
        "{}---\n{}",
        gw(&TCP_SERVER.replace("31400", "0")),
        vs("  hosts: [a.com]\n  gateways: [gw]\n")
    );
    let errs = errors_of(&y);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(
        errs[0].to_string(),
        "t.yaml: Gateway istio-system/gw: spec.servers[0].port.number: port number 0 must be in the range 1..65535"
    );
    assert_eq!(
        errs[1].to_string(),
        "t.yaml: VirtualService default/echo: spec: http, tcp or tls must be provided in virtual service"
    );
}

#[test]
fn load_warnings_are_passed_on() {
    let y = gw(TCP_SERVER) + "    extra: 1\n";
    let w = warnings_of(&y);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].field, "spec.servers[0].extra");
}
