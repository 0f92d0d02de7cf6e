//! Which XDP mode each interface gets, and why.
//!
//! The mode that forwards correctly depends on the driver. A veth's sender usually offloads its
//! TCP/UDP checksum (the default of every veth, as in kind, k3d and most containers): the packet
//! carries only the pseudo-header sum and a CHECKSUM_PARTIAL skb. Native XDP on a veth turns the
//! skb into a raw frame, so after a redirect the receiver verifies the seed as a full checksum
//! and drops the packet; native redirects into a veth also need NAPI (GRO or an XDP program) on
//! its peer. Generic (SKB) XDP keeps the skb, and with it the checksum state, through the
//! redirect; the program then rewrites the seed (`if_flags::CSUM_SEED`). Physical NICs deliver
//! full checksums and keep native mode.

use std::{ffi::CString, io};

use aya::programs::XdpMode;
use gateway_common::if_flags;

use super::Mode;

/// One interface's XDP attachment, as the admin `/config_dump` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IfMode {
    pub iface: String,
    pub ifindex: u32,
    /// The driver name `ethtool -i` reports ("" if the query failed).
    pub driver: String,
    /// "native" or "generic".
    pub mode: &'static str,
    pub reason: String,
    /// `if_flags` the program gets for packets arriving here.
    #[serde(skip)]
    pub flags: u32,
}

impl IfMode {
    pub fn new(iface: &str, driver: &str, mode: XdpMode, reason: String) -> IfMode {
        let generic = matches!(mode, XdpMode::Skb);
        let flags = match (driver == VETH, generic) {
            (true, true) => if_flags::CSUM_SEED,
            (true, false) => if_flags::CSUM_LOST,
            (false, _) => 0,
        };
        IfMode {
            iface: iface.to_string(),
            ifindex: ifindex(iface).unwrap_or(0),
            driver: driver.to_string(),
            mode: if generic { "generic" } else { "native" },
            reason,
            flags,
        }
    }
}

pub const VETH: &str = "veth";

/// The mode to attach in first, with the reason; `fallback`: whether a failed native attach may
/// be retried in generic mode (only when the user left the choice to the agent).
pub fn choose(driver: &str, requested: Mode) -> (XdpMode, String, bool) {
    match requested {
        Mode::Generic => (XdpMode::Skb, "--xdp-mode generic".into(), false),
        Mode::Native if driver == VETH => (
            XdpMode::Driver,
            "--xdp-mode native on a veth: packets with offloaded (partial) checksums are passed \
             to the kernel (pass_csum_partial), and redirects into a veth need GRO on its peer"
                .into(),
            false,
        ),
        Mode::Native => (XdpMode::Driver, "--xdp-mode native".into(), false),
        Mode::Auto if driver == VETH => (
            XdpMode::Skb,
            "veth: senders offload checksums (CHECKSUM_PARTIAL), which only generic XDP keeps \
             through a redirect"
                .into(),
            false,
        ),
        Mode::Auto => (
            XdpMode::Driver,
            format!("driver {driver:?} (native XDP)"),
            true,
        ),
    }
}

/// The interface's driver name, as `ethtool -i` reports it (ETHTOOL_GDRVINFO).
pub fn driver(iface: &str) -> io::Result<String> {
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    if iface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: as above.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: a datagram socket only used for this ioctl and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifr points at `info`, both live across the call; the kernel writes within them.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL, &mut ifr) };
    let err = io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(err);
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Lets the kernel take packets with one of the node's own addresses as source from `iface`
/// (`accept_local`). Generic mode on a veth sees a peer's GSO packets whole; those exceed the
/// MTU, so the program rewrites them and passes them to the kernel to forward and segment
/// (`pass_oversize`). After SNAT their source is the node's address (or, replies, the VIP),
/// which the kernel otherwise drops as a martian.
pub fn accept_local(iface: &str) {
    let path = format!("/proc/sys/net/ipv4/conf/{iface}/accept_local");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
        return;
    }
    match std::fs::write(&path, "1") {
        Ok(()) => log::info!(
            "{iface}: set accept_local=1, so GSO packets the program hands to the kernel after \
             SNAT (pass_oversize) are forwarded, not dropped as martians"
        ),
        Err(e) => log::warn!(
            "{iface}: cannot set accept_local ({e}): GSO packets from its peer that the kernel \
             must forward after SNAT will be dropped; set net.ipv4.conf.{iface}.accept_local=1"
        ),
    }
}

pub fn ifindex(iface: &str) -> Option<u32> {
    let c = CString::new(iface).ok()?;
    // SAFETY: c is a NUL-terminated name that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// How XDP is attached to `ifindex` now (IFLA_XDP_ATTACHED over rtnetlink): `Some(Skb)`,
/// `Some(Driver)`, or None (nothing attached, offloaded, or unknown).
pub fn attached_mode(ifindex: u32) -> io::Result<Option<XdpMode>> {
    const RTM_GETLINK: u16 = 18;
    const RTM_NEWLINK: u16 = 16;
    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_ATTACHED: u16 = 2;
    const NLMSG_ERROR: u16 = 2;
    // SAFETY: a netlink socket used for one request and closed below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    struct Fd(i32);
    impl Drop for Fd {
        fn drop(&mut self) {
            // SAFETY: the fd is ours.
            unsafe { libc::close(self.0) };
        }
    }
    let fd = Fd(fd);
    // nlmsghdr (16) + ifinfomsg (16).
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNSPEC as u8;
    req[20..24].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    // SAFETY: req is a valid buffer of its length.
    let n = unsafe { libc::send(fd.0, req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 65536];
    // SAFETY: buf is a valid, writable buffer of its length.
    let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let msg = &buf[..n as usize];
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short netlink reply");
    let u16_at = |b: &[u8], o: usize| -> io::Result<u16> {
        Ok(u16::from_ne_bytes(
            b.get(o..o + 2).ok_or_else(bad)?.try_into().unwrap(),
        ))
    };
    let ty = u16_at(msg, 4)?;
    if ty == NLMSG_ERROR {
        let errno = i32::from_ne_bytes(msg.get(16..20).ok_or_else(bad)?.try_into().unwrap());
        return Err(io::Error::from_raw_os_error(-errno));
    }
    if ty != RTM_NEWLINK {
        return Err(bad());
    }
    // Attributes follow the headers, each 4-byte aligned; IFLA_XDP nests IFLA_XDP_ATTACHED.
    let attrs = |b: &[u8]| -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut o = 0;
        while o + 4 <= b.len() {
            let len = u16::from_ne_bytes([b[o], b[o + 1]]) as usize;
            let ty = u16::from_ne_bytes([b[o + 2], b[o + 3]]) & 0x3fff;
            if len < 4 || o + len > b.len() {
                break;
            }
            out.push((ty, b[o + 4..o + len].to_vec()));
            o += (len + 3) & !3;
        }
        out
    };
    for (ty, val) in attrs(&msg[32.min(msg.len())..]) {
        if ty != IFLA_XDP {
            continue;
        }
        for (ty, val) in attrs(&val) {
            if ty == IFLA_XDP_ATTACHED {
                return Ok(match val.first() {
                    Some(1) => Some(XdpMode::Driver),
                    Some(2) => Some(XdpMode::Skb),
                    _ => None,
                });
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::{attached_mode, choose, driver, if_flags, IfMode, Mode, XdpMode, VETH};

    #[test]
    fn auto_takes_generic_on_veth_and_native_elsewhere() {
        let (m, why, fallback) = choose(VETH, Mode::Auto);
        assert!(matches!(m, XdpMode::Skb) && !fallback, "{why}");
        let (m, _, fallback) = choose("ixgbe", Mode::Auto);
        assert!(matches!(m, XdpMode::Driver) && fallback);
        // An explicit choice is kept, and never silently changed.
        assert!(matches!(
            choose(VETH, Mode::Native),
            (XdpMode::Driver, _, false)
        ));
        assert!(matches!(
            choose("ixgbe", Mode::Generic),
            (XdpMode::Skb, _, false)
        ));
    }

    #[test]
    fn flags_follow_driver_and_mode() {
        assert_eq!(
            IfMode::new("x", VETH, XdpMode::Skb, String::new()).flags,
            if_flags::CSUM_SEED
        );
        assert_eq!(
            IfMode::new("x", VETH, XdpMode::Driver, String::new()).flags,
            if_flags::CSUM_LOST
        );
        assert_eq!(
            IfMode::new("x", "mlx5_core", XdpMode::Driver, String::new()).flags,
            0
        );
    }

    #[test]
    fn loopback_driver_and_attach_state_are_read() {
        // Every network namespace has `lo` (ifindex 1), with nothing attached to it here.
        assert_eq!(attached_mode(1).unwrap(), None);
        assert!(driver("no-such-if0").is_err());
    }
}
