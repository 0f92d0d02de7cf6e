//! Attaching the XDP program to interfaces: a pinned link per interface, adopted across agent
//! restarts when its mode is still the right one (the program is swapped in, traffic never stops).

use std::path::Path;

use aya::programs::{links::FdLink, links::PinnedLink, xdp::XdpLink, Xdp, XdpMode};

use super::{ifmode, DataplaneError, IfMode, Mode};

/// Attaches `prog` to `iface` in the mode that forwards correctly there (`ifmode`), or swaps
/// it into the link a previous agent pinned there if that link has the same mode, and pins the
/// link. A pinned link in another mode is replaced (the maps, and so the flows, stay).
pub(super) fn attach_one(
    prog: &mut Xdp,
    iface: &String,
    links_dir: &Path,
    mode: Mode,
) -> Result<(PinnedLink, IfMode), DataplaneError> {
    let attach = |what: String| DataplaneError::Attach {
        iface: iface.clone(),
        what,
    };
    let driver = ifmode::driver(iface).unwrap_or_else(|e| {
        log::warn!("{iface}: driver unknown (ETHTOOL_GDRVINFO: {e})");
        String::new()
    });
    let (want, mut reason, fallback) = ifmode::choose(&driver, mode);
    let link_path = links_dir.join(iface);
    let mut chosen = want;
    let mut adopted = None;
    if link_path.exists() {
        let idx = ifmode::ifindex(iface).ok_or_else(|| attach("no such interface".into()))?;
        let current = ifmode::attached_mode(idx)
            .map_err(|e| attach(format!("reading its XDP state: {e}")))?;
        let fd: FdLink = PinnedLink::from_pin(&link_path)
            .map_err(|e| attach(format!("opening pinned link: {e}")))?
            .unpin()
            .map_err(|e| attach(format!("unpinning link: {e}")))?;
        let same = match current {
            Some(XdpMode::Skb) => matches!(want, XdpMode::Skb),
            Some(XdpMode::Driver) => matches!(want, XdpMode::Driver),
            _ => false,
        };
        // A previous agent's generic fallback (native refused by the driver) is kept as well.
        let kept_fallback = fallback && matches!(current, Some(XdpMode::Skb));
        if same || kept_fallback {
            // Adopt: swap our program into the running link; traffic never stops.
            let link = XdpLink::try_from(fd).map_err(|e| attach(format!("pinned link: {e}")))?;
            if let Some(c) = current {
                chosen = c;
            }
            if kept_fallback && !same {
                reason = format!("{reason}; kept the generic link of the previous agent");
            }
            adopted = Some(
                prog.attach_to_link(link)
                    .map_err(|e| attach(format!("replacing program in link: {e}")))?,
            );
        } else {
            // Closing the last reference detaches the old program; the new one follows at
            // once (the kernel allows one mode at a time per interface).
            log::warn!(
                "{iface}: pinned XDP link is in {current:?} mode, want {want:?} ({reason}): re-attaching"
            );
            drop(fd);
        }
    }
    let id = match adopted {
        Some(id) => id,
        None => match prog.attach(iface, want) {
            Ok(id) => id,
            Err(e) if fallback => {
                reason = format!("native attach failed ({e}), generic instead");
                chosen = XdpMode::Skb;
                prog.attach(iface, XdpMode::Skb)
                    .map_err(|e| attach(format!("attaching XDP (generic): {e}")))?
            }
            Err(e) => return Err(attach(format!("attaching XDP ({want:?}): {e}"))),
        },
    };
    let link = prog.take_link(id)?;
    let fd = FdLink::try_from(link).map_err(|e| DataplaneError::Attach {
        iface: iface.clone(),
        what: format!("XDP link is not a bpf_link (kernel too old to pin it): {e}"),
    })?;
    let pinned = fd.pin(&link_path).map_err(|e| DataplaneError::Attach {
        iface: iface.clone(),
        what: format!("pinning link at {}: {e}", link_path.display()),
    })?;
    Ok((pinned, IfMode::new(iface, &driver, chosen, reason)))
}

/// The XDP program's FIB lookups fall back to the loopback device when forwarding is off on the
/// ingress device, and the helper requires forwarding on the device it is given. Forwarding on
/// `lo` lets nothing else through: the kernel checks the flag of the device a packet arrived on.
pub(super) fn enable_lo_forwarding() -> Result<(), DataplaneError> {
    enable_forwarding_flag(
        "/proc/sys/net/ipv4/conf/lo/forwarding",
        "net.ipv4.conf.lo.forwarding",
        true,
    )?;
    // IPv6: the per-device flag is what bpf_fib_lookup checks; the kernel's own IPv6
    // forwarding follows `conf.all.forwarding` only, which stays as the node has it. A kernel
    // without IPv6 has no such file: the IPv6 path then finds no route and passes.
    enable_forwarding_flag(
        "/proc/sys/net/ipv6/conf/lo/forwarding",
        "net.ipv6.conf.lo.forwarding",
        false,
    )
}

fn enable_forwarding_flag(path: &str, name: &str, required: bool) -> Result<(), DataplaneError> {
    let cur = match std::fs::read_to_string(path) {
        Ok(c) => c,
        Err(_) if !required => return Ok(()),
        Err(source) => {
            return Err(DataplaneError::Io {
                what: "reading lo forwarding",
                source,
            })
        }
    };
    if cur.trim() != "1" {
        if let Err(source) = std::fs::write(path, "1") {
            if !required {
                log::warn!("cannot enable {name} ({source}): IPv6 backends will not resolve; set {name}=1 on the node");
                return Ok(());
            }
            return Err(DataplaneError::Io {
                // A container's /proc/sys is read-only: the node must set it (docs/deploy.md).
                what: "enabling forwarding on lo (set net.ipv4.conf.lo.forwarding=1 on the node)",
                source,
            });
        }
        log::info!("enabled {name} for bpf_fib_lookup (forwarding on other devices unchanged)");
    }
    Ok(())
}
