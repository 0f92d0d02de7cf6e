//! The fixture of every `xdp_prog` module (and of `xdp_fuzz`): a dataplane loaded in a private
//! network namespace, with the maps filled by the agent's own apply path, its pins removed
//! whatever happens ([`PinDir`]); the addresses it serves, and the plan most tests apply.
//!
//! The namespace belongs to the calling thread (unshare), so each test runs its body on a
//! thread of its own ([`run`]). Its link towards the backends is `gwd0` (a veth, MAC
//! 02:00:00:00:00:01) with permanent neighbour entries, so FIB lookups resolve without any
//! traffic. Needs root; fails (does not skip) without it.
#![allow(dead_code, reason = "xdp_fuzz uses only a part of the fixture")]

use std::{
    net::{IpAddr, Ipv4Addr},
    process::Command,
};

use gateway::{
    dataplane::{Dataplane, Mode},
    plan::{Backend, HashMode, L4Service, LocalPort, NatMode, Plan, Proto},
};

#[path = "../support/pins.rs"]
mod pins;
pub(crate) use pins::PinDir;

pub(crate) const XDP_DROP: u32 = 1;
pub(crate) const XDP_PASS: u32 = 2;
pub(crate) const XDP_TX: u32 = 3;
pub(crate) const XDP_REDIRECT: u32 = 4;

pub(crate) const CLIENT: [u8; 4] = [198, 18, 0, 2];
pub(crate) const VIP: [u8; 4] = [198, 18, 0, 1];
/// The node's address on `gwd0`, the SNAT source.
pub(crate) const NODE_B: [u8; 4] = [198, 18, 1, 1];
pub(crate) const B1: [u8; 4] = [198, 18, 1, 2];
pub(crate) const B2: [u8; 4] = [198, 18, 1, 3];

/// What the test namespace holds besides `lo`.
#[derive(Clone, Copy)]
pub(crate) enum Net {
    /// `gwd0` on 198.18.1.1/24; B1 and B2 its neighbours (MACs ending 02 and 03).
    V4,
    /// `gwd0` on 2001:db8:1::1/64 (IPv6 forwarding off: only the program forwards) and
    /// 198.18.1.1/24; neighbours 2001:db8:1::2 and ::3 (MACs ending 02 and 03) and
    /// 198.18.1.2 (MAC ending 42).
    Dual,
}

/// A dataplane in a fresh network namespace; its pins go with it.
pub(crate) struct Env {
    pub(crate) dp: Dataplane,
    // After `dp`: the pins are removed once the dataplane is closed.
    _pins: PinDir,
}

impl Env {
    /// Sets up `net` in a new network namespace of this thread, loads the program with its maps
    /// pinned in `pins`, attaches it to `ifaces` in `mode` and applies `plan`. Panics on any
    /// failure; `pins` is removed then too.
    pub(crate) fn open(net: Net, pins: PinDir, plan: &Plan, ifaces: &[&str], mode: Mode) -> Env {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "these tests load BPF programs: run them as root");
        // SAFETY: unshare only affects this test's thread, which owns the namespace until it ends.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET)");
        match net {
            Net::V4 => sh("ip link set lo up && ip link add gwd0 type veth peer name gwd1 && ip link set gwd1 up && ip link set gwd0 address 02:00:00:00:00:01 \
                && ip addr add 198.18.1.1/24 dev gwd0 && ip link set gwd0 up \
                && ip neigh add 198.18.1.2 lladdr 02:00:00:00:01:02 dev gwd0 nud permanent \
                && ip neigh add 198.18.1.3 lladdr 02:00:00:00:01:03 dev gwd0 nud permanent"),
            Net::Dual => {
                // `nodad`: the address is usable at once (no duplicate address detection).
                sh(
                    "ip link set lo up && ip link add gwd0 type veth peer name gwd1 && ip link set gwd1 up \
                    && ip link set gwd0 address 02:00:00:00:00:01 \
                    && ip -6 addr add 2001:db8:1::1/64 dev gwd0 nodad && ip addr add 198.18.1.1/24 dev gwd0 \
                    && ip link set gwd0 up \
                    && ip -6 neigh add 2001:db8:1::2 lladdr 02:00:00:00:01:02 dev gwd0 nud permanent \
                    && ip -6 neigh add 2001:db8:1::3 lladdr 02:00:00:00:01:03 dev gwd0 nud permanent \
                    && ip neigh add 198.18.1.2 lladdr 02:00:00:00:01:42 dev gwd0 nud permanent",
                );
                assert_eq!(
                    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
                        .unwrap()
                        .trim(),
                    "0"
                );
            }
        }
        let ifaces: Vec<String> = ifaces.iter().map(|s| s.to_string()).collect();
        let mut dp = Dataplane::open(pins.path(), &ifaces, mode).expect("load the XDP object");
        dp.apply(plan).expect("apply plan");
        Env { dp, _pins: pins }
    }
}

/// Runs `f` on a thread of its own (which the fixture's namespace then belongs to).
pub(crate) fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

pub(crate) fn sh(args: &str) {
    let st = Command::new("sh").arg("-c").arg(args).status().expect("sh");
    assert!(st.success(), "command failed: {args}");
}

/// [`Net::V4`], nothing attached.
pub(crate) fn env(plan: &Plan) -> Env {
    env_on(plan, &[], Mode::Auto)
}

/// [`env`] with XDP attached to `ifaces` of the test namespace in `mode`.
pub(crate) fn env_on(plan: &Plan, ifaces: &[&str], mode: Mode) -> Env {
    Env::open(Net::V4, PinDir::new("gwunit"), plan, ifaces, mode)
}

/// An L4 service at `vip:port` whose backends (`addr`, weight) listen on port 9000.
pub(crate) fn service(
    vip: IpAddr,
    port: u16,
    proto: Proto,
    nat: NatMode,
    backends: &[(IpAddr, u32)],
) -> L4Service {
    L4Service {
        vip,
        port,
        proto,
        nat,
        hash: HashMode::FiveTuple,
        backends: backends
            .iter()
            .map(|&(addr, weight)| Backend {
                addr,
                port: 9000,
                weight,
            })
            .collect(),
        origin: "test".into(),
    }
}

/// [`service`] on [`VIP`].
pub(crate) fn svc(port: u16, proto: Proto, nat: NatMode, backends: &[([u8; 4], u32)]) -> L4Service {
    let backends: Vec<(IpAddr, u32)> = backends.iter().map(|&(a, w)| (a.into(), w)).collect();
    service(Ipv4Addr::from(VIP).into(), port, proto, nat, &backends)
}

/// On [`VIP`]: 31400 SNAT to B1 and B2, 31401 preserve-source to B1, 31402 SNAT without
/// backends, UDP 5353 SNAT to B2; port 80 is the local (L7) stack's.
pub(crate) fn plan() -> Plan {
    Plan {
        l4: vec![
            svc(31400, Proto::Tcp, NatMode::Snat, &[(B1, 1), (B2, 1)]),
            svc(31401, Proto::Tcp, NatMode::PreserveSource, &[(B1, 1)]),
            svc(31402, Proto::Tcp, NatMode::Snat, &[]),
            svc(5353, Proto::Udp, NatMode::Snat, &[(B2, 1)]),
        ],
        local: vec![LocalPort {
            vip: Ipv4Addr::from(VIP).into(),
            port: 80,
            origin: "test".into(),
        }],
        ..Default::default()
    }
}

/// Packets counted for the verdict `name`.
pub(crate) fn verdict(e: &Env, name: &str) -> u64 {
    e.dp.stats().unwrap().verdicts[name].packets
}

pub(crate) fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: c is a NUL-terminated name that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}
