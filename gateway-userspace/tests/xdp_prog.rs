//! Packet-level tests of the real XDP program through BPF_PROG_TEST_RUN: build a packet, fill the
//! maps through the agent's own apply path, run the program once, check the verdict, the output
//! packet (addresses, ports, MACs, checksums) and the counters.
//!
//! Each test runs in a private network namespace (unshare on its own thread) holding a veth
//! towards the backends with permanent neighbour entries, so FIB lookups resolve without any
//! traffic (`fixture`). Frames come from `gateway-testpkt`. Needs root; fails (does not skip)
//! without it.
//!
//! One module a topic; a new topic is a new file here and one `mod` line below. Modules take
//! the fixture and the frames from this root (`use super::{...}`).

#[path = "xdp_prog/backends.rs"]
mod backends;
#[path = "xdp_prog/conntrack.rs"]
mod conntrack;
#[path = "xdp_prog/fixture.rs"]
mod fixture;
#[path = "xdp_prog/forward.rs"]
mod forward;
#[path = "xdp_prog/icmp.rs"]
mod icmp;
#[path = "xdp_prog/ipv6.rs"]
mod ipv6;
#[path = "xdp_prog/maglev_mmap.rs"]
mod maglev_mmap;
#[path = "xdp_prog/offload.rs"]
mod offload;
#[path = "xdp_prog/pin_guard.rs"]
mod pin_guard;

use fixture::{
    env, env_on, ifindex, plan, run, service, sh, svc, verdict, Env, Net, PinDir, B1, B2, CLIENT,
    NODE_B, VIP, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
};
use gateway_testpkt::{
    csum, seed,
    v4::{packet, parse, partial, with_ttl},
    ACK, CLIENT_MAC, NODE_MAC, SYN,
};
