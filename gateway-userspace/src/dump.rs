//! `gateway dump`: a running agent's live state as `istioctl proxy-config` and
//! `cilium-dbg bpf lb list` show theirs: listeners, routes, clusters, endpoints, secrets (what
//! each server reads, never the key material), and the XDP path's services, backends and
//! verdict counters, connection-table entries and SNAT ports in use. Built from the admin's
//! `/config_dump`, `/clusters?format=json`, `/stats`, `/certs` and `/conntrack?limit=N`, so the
//! CLI needs nothing but the admin port.

use serde_json::{json, Value};

/// What to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    Secrets,
    /// The XDP path: L4 services with their backends, packet and byte counters, verdicts.
    Bpf,
    All,
}

/// The admin's answers a dump is made of.
pub struct Sources {
    pub config_dump: Value,
    pub clusters: Value,
    pub stats: Value,
    /// `/certs`.
    pub certs: Value,
    /// `/conntrack?limit=N` (Null when the section does not show it).
    pub conntrack: Value,
}

/// One table: a title, column names, rows (for text) and the same rows as objects (for JSON).
struct Table {
    title: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// The elements of `v` if it is an array, none otherwise (a part the agent left out).
fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// The elements of the array `v` in one cell, joined by `,` (`None` if `v` is no array).
fn joined(v: &Value) -> Option<String> {
    v.as_array()
        .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
}

/// Where a certificate or CRL came from, with its place in the file when not the first.
fn source(c: &Value) -> String {
    let source = s(&c["source"]);
    if c["index"].as_u64().is_some_and(|i| i > 0) {
        format!("{source} [{}]", s(&c["index"]))
    } else {
        source
    }
}

impl Table {
    /// One row per element of the array `list`, made by `row`.
    fn of(
        title: &'static str,
        columns: &'static [&'static str],
        list: &Value,
        row: impl Fn(&Value) -> Vec<String>,
    ) -> Table {
        Table {
            title,
            columns,
            rows: items(list).map(row).collect(),
        }
    }
}

fn listeners(src: &Sources) -> Table {
    let plan = &src.config_dump["plan"];
    let mut rows = Vec::new();
    for l in items(&plan["http"]["listeners"]) {
        let addr = format!("{}:{}", s(&l["bind"]), s(&l["port"]));
        let chains = l["tls"].as_array().map_or(0, Vec::len);
        if chains == 0 {
            rows.push(vec![
                addr.clone(),
                "HTTP".into(),
                "L7 (agent)".into(),
                s(&l["origin"]),
            ]);
        }
        for c in items(&l["tls"]) {
            let sni = joined(&c["server_names"])
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "*".into());
            rows.push(vec![
                addr.clone(),
                format!("HTTPS {} sni={sni}", s(&c["settings"]["mode"])),
                "L7 (agent)".into(),
                s(&c["origin"]),
            ]);
        }
    }
    for l in items(&plan["streams"]["listeners"]) {
        rows.push(vec![
            format!("{}:{}", s(&l["bind"]), s(&l["port"])),
            // A plain one is a TCP server kept off XDP because its route originates TLS.
            if l["plain"] == Value::Bool(true) {
                "TCP stream (TLS upstream)".into()
            } else {
                "TLS stream".into()
            },
            "L4 (agent)".into(),
            s(&l["origin"]),
        ]);
    }
    for svc in items(&plan["l4"]) {
        rows.push(vec![
            format!("{}:{}", s(&svc["vip"]), s(&svc["port"])),
            s(&svc["proto"]).to_uppercase(),
            format!(
                "{} ({})",
                src.config_dump["l4_path"].as_str().unwrap_or("-"),
                s(&svc["nat"])
            ),
            s(&svc["origin"]),
        ]);
    }
    Table {
        title: "LISTENERS",
        columns: &["ADDRESS", "TYPE", "PATH", "FROM"],
        rows,
    }
}

/// A route's match in one cell: path, then the other conditions by name.
fn match_summary(m: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(p) = m["path"].as_object().and_then(|o| o.iter().next()) {
        parts.push(format!("{} {}", p.0, s(p.1)));
    }
    for k in ["method", "scheme", "authority"] {
        if !m[k].is_null() {
            parts.push(format!("{k}={}", s(&m[k])));
        }
    }
    for (k, what) in [("headers", "headers"), ("query", "query")] {
        if let Some(n) = m[k].as_array().map(Vec::len).filter(|n| *n > 0) {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(" ")
}

fn action_summary(a: &Value) -> String {
    if let Some(f) = a.get("forward") {
        let cs: Vec<String> = items(&f["clusters"])
            .map(|c| format!("{} ({})", s(&c["cluster"]), s(&c["weight"])))
            .collect();
        return cs.join(", ");
    }
    if let Some(r) = a.get("redirect") {
        return format!("redirect {}", r);
    }
    if let Some(d) = a.get("direct") {
        return format!("direct {}", s(&d["status"]));
    }
    a.to_string()
}

fn routes(src: &Sources) -> Table {
    let mut rows = Vec::new();
    for l in items(&src.config_dump["plan"]["http"]["listeners"]) {
        let port = s(&l["port"]);
        let mut tables: Vec<(String, &Value)> = vec![(port.clone(), &l["vhosts"])];
        for c in items(&l["tls"]) {
            tables.push((format!("{port} (https)"), &c["vhosts"]));
        }
        for (at, vhosts) in tables {
            for vh in items(vhosts) {
                for r in items(&vh["routes"]) {
                    rows.push(vec![
                        at.clone(),
                        s(&vh["domain"]),
                        match_summary(&r["match"]),
                        action_summary(&r["action"]),
                        s(&r["origin"]),
                    ]);
                }
            }
        }
    }
    Table {
        title: "ROUTES",
        columns: &["PORT", "DOMAIN", "MATCH", "DESTINATION", "FROM"],
        rows,
    }
}

fn clusters(src: &Sources) -> Table {
    Table::of(
        "CLUSTERS",
        &["NAME", "LB", "HEALTHY", "RQ_ACTIVE"],
        &src.clusters["clusters"],
        |c| {
            let hosts = c["hosts"].as_array().map_or(0, Vec::len);
            let healthy = items(&c["hosts"])
                .filter(|h| h["health"] == "healthy")
                .count();
            vec![
                s(&c["name"]),
                s(&c["lb"]),
                format!("{healthy}/{hosts}"),
                s(&c["rq_active"]),
            ]
        },
    )
}

fn endpoints(src: &Sources) -> Table {
    let mut rows = Vec::new();
    for c in items(&src.clusters["clusters"]) {
        for h in items(&c["hosts"]) {
            rows.push(vec![
                s(&h["address"]),
                s(&h["health"]),
                s(&h["weight"]),
                s(&h["rq_active"]),
                s(&h["ejections"]),
                s(&c["name"]),
            ]);
        }
    }
    Table {
        title: "ENDPOINTS",
        columns: &[
            "ENDPOINT",
            "STATUS",
            "WEIGHT",
            "RQ_ACTIVE",
            "EJECTIONS",
            "CLUSTER",
        ],
        rows,
    }
}

/// Every loaded certificate (the admin's `/certs`): what it is, where it came from (a file or
/// a Secret, never key material), its names, serial, validity and who uses it.
fn secrets(src: &Sources) -> Table {
    let join = |v: &Value| {
        joined(v)
            .filter(|j| !j.is_empty())
            .unwrap_or_else(|| "-".into())
    };
    Table::of(
        "SECRETS",
        &[
            "KIND",
            "SOURCE",
            "SUBJECT",
            "SANS",
            "SERIAL",
            "NOT BEFORE",
            "NOT AFTER",
            "DAYS LEFT",
            "USED BY",
        ],
        &src.certs["certificates"],
        |c| {
            vec![
                s(&c["kind"]),
                source(c),
                s(&c["subject"]),
                join(&c["subject_alt_names"]),
                s(&c["serial_number"]),
                s(&c["valid_from"]),
                s(&c["expiration_time"]),
                s(&c["days_until_expiration"]),
                join(&c["used_by"]),
            ]
        },
    )
}

/// Every loaded CRL (the admin's `/certs` `revocation_lists`): whose certificates it checks
/// (`client`: a MUTUAL server's clients; `upstream`: a cluster's upstream), where it came from,
/// its issuer, this and next update, how many serials it revokes, who uses it.
fn revocation_lists(src: &Sources) -> Table {
    Table::of(
        "REVOCATION LISTS",
        &[
            "KIND",
            "SOURCE",
            "ISSUER",
            "THIS UPDATE",
            "NEXT UPDATE",
            "DAYS LEFT",
            "REVOKED",
            "USED BY",
        ],
        &src.certs["revocation_lists"],
        |c| {
            let mut days = s(&c["days_until_next_update"]);
            if c["expired"].as_bool() == Some(true) {
                days += " (expired)";
            }
            vec![
                s(&c["kind"]),
                source(c),
                s(&c["issuer"]),
                s(&c["this_update"]),
                s(&c["next_update"]),
                days,
                s(&c["revoked_certificates"]),
                joined(&c["used_by"]).unwrap_or_else(|| "-".into()),
            ]
        },
    )
}

/// `addr:port`, or `[addr]:port` for an IPv6 address.
fn host_port(addr: &str, port: &str) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

fn bpf(src: &Sources) -> Vec<Table> {
    let mut services = Vec::new();
    for svc in items(&src.config_dump["plan"]["l4"]) {
        // The stats' key: `addr:port/proto`, IPv6 addresses in brackets.
        let key = format!(
            "{}/{}",
            host_port(&s(&svc["vip"]), &s(&svc["port"])),
            s(&svc["proto"]).to_lowercase()
        );
        let c = &src.stats["services"][&key];
        let backends: Vec<String> = items(&svc["backends"])
            .map(|b| {
                let hp = host_port(&s(&b["addr"]), &s(&b["port"]));
                format!("{hp} ({})", s(&b["weight"]))
            })
            .collect();
        services.push(vec![
            key,
            s(&svc["nat"]),
            backends.join(", "),
            s(&c["packets"]),
            s(&c["bytes"]),
        ]);
    }
    let counters = |what: &str| -> Vec<Vec<String>> {
        src.stats[what]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, c)| vec![k.clone(), s(&c["packets"]), s(&c["bytes"])])
            .collect()
    };
    let ct = &src.conntrack;
    let entries: Vec<Vec<String>> = ct["entries"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, n)| {
            // `family/table/state`
            let mut r: Vec<String> = k.splitn(3, '/').map(str::to_string).collect();
            r.resize(3, "-".into());
            r.push(s(n));
            r
        })
        .collect();
    // The program's verifier figures (absent on the userspace path, whose stats are empty).
    let p = &src.stats["program"];
    let program: Vec<Vec<String>> = if p.is_object() {
        let limit = p["verifier_limit"].as_u64().unwrap_or(0);
        let headroom = match p["verified_insns"].as_u64() {
            Some(n) if limit > 0 => format!(
                "{} ({:.1}%)",
                limit.saturating_sub(n),
                100.0 * limit.saturating_sub(n) as f64 / limit as f64
            ),
            _ => "-".into(),
        };
        vec![vec![
            s(&p["name"]),
            s(&p["verified_insns"]),
            s(&p["verifier_limit"]),
            headroom,
            s(&p["insns"]),
            s(&p["jited_bytes"]),
        ]]
    } else {
        Vec::new()
    };
    vec![
        Table {
            title: "XDP PROGRAM",
            columns: &[
                "PROGRAM",
                "VERIFIED INSNS",
                "LIMIT",
                "HEADROOM",
                "INSNS",
                "JITED BYTES",
            ],
            rows: program,
        },
        Table {
            title: "XDP SERVICES",
            columns: &["SERVICE", "NAT", "BACKENDS (WEIGHT)", "PACKETS", "BYTES"],
            rows: services,
        },
        Table {
            title: "XDP BACKENDS",
            columns: &["BACKEND", "PACKETS", "BYTES"],
            rows: counters("backends"),
        },
        Table {
            title: "XDP VERDICTS",
            columns: &["VERDICT", "PACKETS", "BYTES"],
            rows: counters("verdicts"),
        },
        Table {
            title: "XDP CONNTRACK ENTRIES",
            columns: &["FAMILY", "TABLE", "STATE", "ENTRIES"],
            rows: entries,
        },
        Table::of(
            "XDP CONNTRACK FLOWS",
            &[
                "PROTO", "CLIENT", "VIP", "BACKEND", "SNAT", "STATE", "IDLE S", "TABLE",
            ],
            &ct["flows"],
            |f| {
                vec![
                    s(&f["proto"]).to_uppercase(),
                    s(&f["client"]),
                    s(&f["vip"]),
                    s(&f["backend"]),
                    s(&f["snat"]),
                    s(&f["state"]),
                    s(&f["idle_s"]),
                    format!(
                        "{}{}",
                        s(&f["table"]),
                        if f["paired"] == Value::Bool(false) {
                            " (one entry)"
                        } else {
                            ""
                        }
                    ),
                ]
            },
        ),
        Table::of(
            "XDP SNAT PORTS",
            &[
                "IFACE",
                "ADDRESS",
                "SOURCE",
                "FLOWS",
                "PORTS USED",
                "BUSIEST BACKEND",
            ],
            &ct["snat"],
            |u| {
                vec![
                    s(&u["iface"]),
                    s(&u["addr"]),
                    if u["pool"] == Value::Bool(true) {
                        "pool".into()
                    } else {
                        "interface".into()
                    },
                    s(&u["flows"]),
                    format!("{}/{}", s(&u["ports_used"]), s(&u["capacity"])),
                    format!("{}/{}", s(&u["busiest_backend"]), s(&u["capacity"])),
                ]
            },
        ),
    ]
}

/// How many flows the listing left out (`--limit`), after the flows table.
fn flows_left_out(src: &Sources, title: &str) -> Option<(u64, u64)> {
    if title != "XDP CONNTRACK FLOWS" {
        return None;
    }
    let ct = &src.conntrack;
    Some((ct["flows_total"].as_u64()?, ct["left_out"].as_u64()?))
}

fn tables(src: &Sources, section: Section) -> Vec<Table> {
    match section {
        Section::Listeners => vec![listeners(src)],
        Section::Routes => vec![routes(src)],
        Section::Clusters => vec![clusters(src)],
        Section::Endpoints => vec![endpoints(src)],
        Section::Secrets => vec![secrets(src), revocation_lists(src)],
        Section::Bpf => bpf(src),
        Section::All => {
            let mut t = vec![
                listeners(src),
                routes(src),
                clusters(src),
                endpoints(src),
                secrets(src),
                revocation_lists(src),
            ];
            t.extend(bpf(src));
            t
        }
    }
}

/// Aligned text tables, one per section, each headed by the revision.
pub fn text(src: &Sources, section: Section) -> String {
    let rev = &src.config_dump["revision"];
    let mut out = format!(
        "generation {} (hash {}, applied {})\n",
        s(&rev["generation"]),
        s(&rev["hash"]),
        s(&rev["applied_at"])
    );
    for t in tables(src, section) {
        out.push('\n');
        out.push_str(t.title);
        out.push('\n');
        let mut width: Vec<usize> = t.columns.iter().map(|c| c.len()).collect();
        for r in &t.rows {
            for (i, c) in r.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(c);
                } else {
                    l.push_str(&format!("{c:<w$}  ", w = width[i]));
                }
            }
            l.trim_end().to_string() + "\n"
        };
        out.push_str(&line(t.columns.to_vec()));
        for r in &t.rows {
            out.push_str(&line(r.iter().map(String::as_str).collect()));
        }
        if let Some((total, left)) = flows_left_out(src, t.title).filter(|(_, l)| *l > 0) {
            out.push_str(&format!(
                "({left} of {total} flows left out: raise --limit)\n"
            ));
        }
    }
    out
}

/// The same tables as JSON: `{ "revision": ..., "<title>": [ {column: value, ...}, ... ] }`.
pub fn json(src: &Sources, section: Section) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("revision".into(), src.config_dump["revision"].clone());
    for t in tables(src, section) {
        let rows: Vec<Value> = t
            .rows
            .iter()
            .map(|r| {
                let m: serde_json::Map<String, Value> = t
                    .columns
                    .iter()
                    .zip(r)
                    .map(|(c, v)| (c.to_lowercase(), json!(v)))
                    .collect();
                Value::Object(m)
            })
            .collect();
        let key = t.title.to_lowercase().replace(' ', "_");
        if let Some((total, left)) = flows_left_out(src, t.title) {
            o.insert(format!("{key}_total"), json!(total));
            o.insert(format!("{key}_left_out"), json!(left));
        }
        o.insert(key, Value::Array(rows));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::{json, text, Section, Sources};

    fn sources() -> Sources {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo");
        let input = crate::config::CompileInput {
            vips: vec!["198.18.0.1".parse().unwrap()],
            ..crate::config::CompileInput::default()
        };
        let (_, compiled, _) = crate::config::load_admit_compile(&dir, &input, None, false);
        let (plan, _) = compiled.expect("the demo compiles");
        Sources {
            config_dump: json!({
                "plan": serde_json::to_value(&plan).unwrap(),
                "l4_path": "xdp",
                "revision": {"generation": 3, "hash": "abcd", "applied_at": "2026-12-07T00:00:00.000Z"},
            }),
            clusters: json!({"clusters": [{"name": "outbound|8000|v1|web.demo.local", "lb": "LeastRequest", "rq_active": 0,
                "hosts": [{"address": "198.18.11.2:8000", "weight": 1, "rq_active": 0, "health": "healthy", "ejections": 0}]}]}),
            stats: json!({"services": {"198.18.0.1:31400/tcp": {"packets": 7, "bytes": 420}}, "backends": {}, "verdicts": {"tx": {"packets": 7, "bytes": 420}},
                "program": {"name": "gateway_xdp", "verified_insns": 250000, "verifier_limit": 1000000, "insns": 9000, "jited_bytes": 50000}}),
            certs: json!({"certificates": [{"kind": "server", "source": "/etc/certs/a.pem", "index": 1, "subject": "CN=a",
                "subject_alt_names": ["DNS:a.example.com"], "serial_number": "1234", "valid_from": "2026-01-01T00:00:00.000Z",
                "expiration_time": "2027-01-01T00:00:00.000Z", "days_until_expiration": 25, "used_by": ["Gateway default/gw spec.servers[0].tls"]}],
                "revocation_lists": [{"kind": "client", "source": "/etc/certs/ca.crl", "index": 0, "issuer": "CN=ca",
                "this_update": "2026-12-01T00:00:00.000Z", "next_update": "2026-12-06T00:00:00.000Z", "days_until_next_update": -2,
                "expired": true, "revoked_certificates": 3, "used_by": ["Gateway default/gw spec.servers[0].tls"]}]}),
            conntrack: json!({"entries": {"ipv4/main/established": 2, "ipv6/new/syn_sent": 1}, "flows_total": 3, "left_out": 2,
                "flows": [{"family": "ipv4", "table": "main", "proto": "tcp", "client": "198.18.2.1:40000", "vip": "198.18.0.1:31400",
                    "backend": "198.18.11.2:9000", "snat": "198.18.1.10:20001", "state": "established", "idle_s": 4, "paired": true}],
                "snat": [{"iface": "eth1", "addr": "198.18.1.10", "pool": true, "flows": 1, "ports_used": 1, "capacity": 10000, "busiest_backend": 1}]}),
        }
    }

    #[test]
    fn tables_show_the_live_plan() {
        let src = sources();
        let t = text(&src, Section::All);
        assert!(t.starts_with("generation 3 (hash abcd"), "{t}");
        assert!(t.contains("LISTENERS\nADDRESS"), "{t}");
        assert!(
            t.lines().any(|l| l.starts_with("198.18.0.1:31400")
                && l.contains("TCP")
                && l.contains("xdp")),
            "{t}"
        );
        assert!(
            t.lines().any(|l| l.starts_with("8080")
                && l.contains("prefix /v1/")
                && l.contains("outbound|8000|v1|web.demo.local (1)")),
            "{t}"
        );
        assert!(
            t.lines().any(|l| l.starts_with("198.18.0.1:31400/tcp")
                && l.split_whitespace().rev().take(2).eq(["420", "7"])),
            "{t}"
        );
        assert!(
            t.lines().any(|l| l.starts_with("server")
                && l.contains("/etc/certs/a.pem [1]")
                && l.contains("DNS:a.example.com")
                && l.contains(" 25 ")
                && l.ends_with("  Gateway default/gw spec.servers[0].tls")),
            "{t}"
        );
        assert!(
            t.lines().any(|l| l.starts_with("client")
                && l.contains("/etc/certs/ca.crl")
                && l.contains("CN=ca")
                && l.contains("-2 (expired)")
                && l.contains(" 3 ")),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.split_whitespace().eq(["ipv6", "new", "syn_sent", "1"])),
            "{t}"
        );
        assert!(
            t.lines().any(|l| l.split_whitespace().eq([
                "TCP",
                "198.18.2.1:40000",
                "198.18.0.1:31400",
                "198.18.11.2:9000",
                "198.18.1.10:20001",
                "established",
                "4",
                "main"
            ])),
            "{t}"
        );
        assert!(t.contains("(2 of 3 flows left out: raise --limit)"), "{t}");
        assert!(
            t.lines().any(|l| l.split_whitespace().eq([
                "eth1",
                "198.18.1.10",
                "pool",
                "1",
                "1/10000",
                "1/10000"
            ])),
            "{t}"
        );
        assert!(
            t.lines().any(|l| l.split_whitespace().eq([
                "gateway_xdp",
                "250000",
                "1000000",
                "750000",
                "(75.0%)",
                "9000",
                "50000"
            ])),
            "{t}"
        );
        let j = json(&src, Section::Bpf);
        assert_eq!(j["xdp_program"][0]["verified insns"], "250000", "{j}");
        assert_eq!(j["xdp_conntrack_flows_left_out"], 2, "{j}");
        assert_eq!(j["xdp_snat_ports"][0]["ports used"], "1/10000", "{j}");
        let j = json(&src, Section::Endpoints);
        assert_eq!(j["endpoints"][0]["status"], "healthy", "{j}");
    }
}
