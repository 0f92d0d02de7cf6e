//! Istio manifests for the tests, one document each, ending in `---`.

/// The head of Gateway `istio-system/gw` (selector istio=ingressgateway), up to `servers:`.
pub const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n";

/// Gateway `istio-system/gw` (selector istio=ingressgateway) with these `servers` entries.
pub fn gateway(servers: &str) -> String {
    format!("{GATEWAY}{servers}---\n")
}

/// A `servers` entry: plain HTTP on `port` for every host.
pub fn http_server(port: u16) -> String {
    format!("  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n")
}

/// Gateway `gw` serving plain HTTP on `port` for every host.
pub fn http_gateway(port: u16) -> String {
    gateway(&http_server(port))
}

/// ServiceEntry `default/NAME` for `host` (resolution STATIC) with one port `{number: 80,
/// name: http, protocol: PROTOCOL}` and these `endpoints` entries (see [`endpoint`]).
pub fn service_entry(name: &str, host: &str, protocol: &str, endpoints: &str) -> String {
    service_entry_on(name, host, (80, "http", protocol), endpoints)
}

/// ServiceEntry `default/NAME` for `host` (resolution STATIC) with one port `(number, name,
/// protocol)` and these `endpoints` entries.
pub fn service_entry_on(
    name: &str,
    host: &str,
    (number, port_name, protocol): (u16, &str, &str),
    endpoints: &str,
) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{host}]\n  resolution: STATIC\n  ports: [{{number: {number}, name: {port_name}, protocol: {protocol}}}]\n  endpoints:\n{endpoints}---\n"
    )
}

/// [`service_entry_on`] with one endpoint: 127.0.0.1, its port at `port`.
pub fn local_service(name: &str, host: &str, svc_port: (u16, &str, &str), port: u16) -> String {
    service_entry_on(name, host, svc_port, &endpoint_on(svc_port.1, port, ""))
}

/// An `endpoints` entry: 127.0.0.1 with its `http` port at `port`, and these extra fields.
pub fn endpoint(port: u16, extra: &str) -> String {
    endpoint_on("http", port, extra)
}

/// An `endpoints` entry: 127.0.0.1 with its port `port_name` at `port`, and these extra fields.
pub fn endpoint_on(port_name: &str, port: u16, extra: &str) -> String {
    format!("  - {{address: 127.0.0.1, ports: {{{port_name}: {port}}}{extra}}}\n")
}

/// VirtualService `default/NAME` for every host, bound to `istio-system/gw`, with these route
/// sections (`  http:` and its rules, `  tcp:` ...).
pub fn virtual_service_for(name: &str, routes: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [\"*\"]\n  gateways: [istio-system/gw]\n{routes}---\n"
    )
}

/// VirtualService `default/v` for every host, bound to `istio-system/gw`, with these `http`
/// rules.
pub fn virtual_service(http: &str) -> String {
    virtual_service_for("v", &format!("  http:\n{http}"))
}
