//! The XDP object, organised like Cilium's `bpf/`: one thin file per attach point, feature modules
//! written once and shared.
//!
//! Attach points:
//! - `xdp`: `gateway_xdp`, the data path attached to each interface (parse, look up the flow or
//!   the service, pick a backend, rewrite, forward), and `gateway_xdp_baseline`, the empty program
//!   benchmarks subtract;
//! - `resolve`: `gateway_resolve` and `gateway_resolve6`, run by the agent through BPF_PROG_TEST_RUN to resolve backends'
//!   next hops into `BACKENDS`.
//!
//! Features: `family` (IPv4 and IPv6 as one trait: their maps, keys, headers and checksums; the
//! modules below are generic over it), `packet` (parsing and the NAT rewrite), `ipv6` (the IPv6
//! header and extension-header walk), `csum` (incremental checksums), `lb` (Maglev
//! backend selection and the new-flow path), `conntrack` (established flows and replies), `snat`
//! (source address and port search), `fib` (next-hop lookups), `forward` (rewrite and send),
//! `metrics` (per-CPU counters and the verdict of every return), `maps` (every map, declared once).
//!
//! Every return of the data path goes through `metrics::count`, which counts the verdict by
//! reason so an operator can see why packets were passed or dropped. Nothing logs per packet.
#![no_std]
#![no_main]

mod conntrack;
mod csum;
mod family;
mod fib;
mod forward;
mod icmp;
mod ipv6;
mod lb;
mod maps;
mod metrics;
mod packet;
mod resolve;
mod snat;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
