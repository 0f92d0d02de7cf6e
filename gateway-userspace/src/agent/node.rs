//! The node's identity as the downward API gives it to a DaemonSet pod (`status.hostIP`): the
//! interface that carries the node's address is where the XDP program belongs, without naming
//! it per node (interface names differ between nodes; addresses are what Kubernetes knows).

use std::net::IpAddr;

/// The interfaces of this network namespace that hold any of `addrs`, in the order of `addrs`
/// (each once). Fails naming the first address no interface holds.
pub fn ifaces_holding(addrs: &[IpAddr]) -> anyhow::Result<Vec<String>> {
    let all = crate::dataplane::interface_addrs();
    let mut out: Vec<String> = Vec::new();
    for a in addrs {
        let mut idx: Vec<u32> = all
            .iter()
            .filter(|(_, v)| v.contains(a))
            .map(|(i, _)| *i)
            .collect();
        idx.sort();
        let Some(&i) = idx.first() else {
            anyhow::bail!(
                "--node-ip {a}: no interface in this network namespace holds it (is the pod hostNetwork? else name the interface with --iface)"
            );
        };
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(i, buf.as_mut_ptr()) };
        anyhow::ensure!(!p.is_null(), "interface {i} of {a} vanished");
        // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
        let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::ifaces_holding;

    #[test]
    fn loopback_holds_127_0_0_1_and_unknown_addresses_are_named() {
        let lo = ifaces_holding(&["127.0.0.1".parse().unwrap()]).unwrap();
        assert_eq!(lo, ["lo"]);
        let err = ifaces_holding(&["198.18.255.254".parse().unwrap()]).unwrap_err();
        assert!(
            err.to_string().contains("--node-ip 198.18.255.254"),
            "{err}"
        );
    }
}
