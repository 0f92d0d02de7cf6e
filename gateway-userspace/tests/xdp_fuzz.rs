//! Packet fuzzing of the real XDP program through BPF_PROG_TEST_RUN (docs/hardening.md):
//! random frames and mutations of valid ones (TCP and UDP to every kind of service, replies to
//! SNAT ports, the L7 port, packets not ours) with flipped bytes, cut or grown lengths, odd IHLs,
//! fragments, VLAN and IPv6 ethertypes. Every run must return one of the four XDP actions
//! the program uses, without an error, and every packet must be counted in exactly one verdict
//! counter (counts per action and per verdict are printed).
//!
//! `XDP_FUZZ_PACKETS` sets the number (default 100 000, a few seconds; 1 000 000 for a longer
//! run: `XDP_FUZZ_PACKETS=1000000 cargo test -p gateway-userspace --test xdp_fuzz -- --nocapture`),
//! `XDP_FUZZ_SEED` the seed (default: fixed, so a failure reproduces). Needs root.

use std::collections::BTreeMap;

use gateway_testpkt::v4;
use rand::{rngs::SmallRng, Rng, SeedableRng};

const XDP_ACTIONS: [&str; 5] = ["aborted", "drop", "pass", "tx", "redirect"];

// The xdp_prog fixture: its namespace, its plan and addresses.
#[path = "xdp_prog/fixture.rs"]
mod fixture;

use fixture::{env, plan, B1, B2, CLIENT, NODE_B, VIP};

/// Ethernet + IPv4 + TCP or UDP with valid checksums and a 4-byte payload.
fn packet(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    v4::packet(proto, src, sport, dst, dport, flags, b"fuzz")
}

/// Valid packets of every kind the program tells apart.
fn seeds() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (port, flags) in [(31400, 0x02), (31400, 0x10), (31400, 0x11), (31400, 0x04)] {
        v.push(packet(6, CLIENT, 40000, VIP, port, flags));
    }
    v.push(packet(6, CLIENT, 40001, VIP, 31401, 0x02));
    v.push(packet(6, CLIENT, 40002, VIP, 31402, 0x02));
    v.push(packet(6, CLIENT, 40003, VIP, 80, 0x02));
    v.push(packet(6, CLIENT, 40004, VIP, 22, 0x02));
    v.push(packet(17, CLIENT, 40005, VIP, 5353, 0));
    v.push(packet(17, CLIENT, 40006, [198, 18, 0, 9], 5353, 0));
    // Replies from a backend to SNAT ports (most unknown, so counted as such).
    v.push(packet(6, B1, 9000, NODE_B, 61000, 0x12));
    v.push(packet(17, B2, 9000, NODE_B, 61001, 0));
    v
}

fn mutate(rng: &mut SmallRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.gen_range(0..10) {
        // Random bytes behind a plausible Ethernet header, or none.
        0 => {
            let len = rng.gen_range(14..200);
            let mut p: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if rng.gen_bool(0.5) {
                p[12] = 0x08;
                p[13] = 0x00;
            }
            p
        }
        _ => {
            let mut p = seeds[rng.gen_range(0..seeds.len())].clone();
            for _ in 0..rng.gen_range(1..5) {
                match rng.gen_range(0..8) {
                    // A byte in the headers.
                    0..=2 => {
                        let i = rng.gen_range(0..p.len().min(54));
                        p[i] = rng.gen();
                    }
                    3 => {
                        let n = rng.gen_range(14..=p.len());
                        p.truncate(n);
                    }
                    4 => {
                        let n = rng.gen_range(1..1500);
                        p.extend((0..n).map(|_| rng.gen::<u8>()));
                    }
                    5 if p.len() > 14 => p[14] = 0x40 | rng.gen_range(0..16), // IHL
                    6 if p.len() > 21 => {
                        p[20] = rng.gen(); // flags / fragment offset
                        p[21] = rng.gen();
                    }
                    _ => {
                        let et: [u8; 2] = [[0x81, 0x00], [0x86, 0xdd], [0x08, 0x06], [0x88, 0xa8]]
                            [rng.gen_range(0..4)];
                        p[12..14].copy_from_slice(&et);
                    }
                }
            }
            p
        }
    }
}

#[test]
fn random_and_mutated_packets_get_an_accounted_verdict() {
    std::thread::spawn(|| {
        let mut e = env(&plan());
        let dp = &mut e.dp;

        let n: u64 = std::env::var("XDP_FUZZ_PACKETS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let seed: u64 = std::env::var("XDP_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x005e_ed15);
        let mut rng = SmallRng::seed_from_u64(seed);
        let seeds = seeds();
        let before = dp.stats().expect("stats").verdicts;
        let start = std::time::Instant::now();
        let mut actions: BTreeMap<&str, u64> = BTreeMap::new();
        for i in 0..n {
            let p = mutate(&mut rng, &seeds);
            let (action, out, _) = dp
                .test_run(&p)
                .unwrap_or_else(|e| panic!("packet {i} ({} bytes) {p:02x?}: {e}", p.len()));
            let name = XDP_ACTIONS.get(action as usize).copied();
            assert!(
                matches!(name, Some("drop" | "pass" | "tx" | "redirect")),
                "packet {i}: action {action} for {p:02x?}"
            );
            // A packet handed to the kernel unparsed or not ours keeps its bytes; every packet
            // keeps at least its Ethernet header's worth.
            assert!(out.len() >= 14, "packet {i}: output of {} bytes", out.len());
            *actions.entry(name.unwrap_or("?")).or_default() += 1;
        }
        let took = start.elapsed();
        let after = dp.stats().expect("stats").verdicts;
        let mut verdicts = BTreeMap::new();
        let mut counted = 0;
        for (k, v) in &after {
            let d = v.packets - before.get(k).map_or(0, |b| b.packets);
            if d > 0 {
                verdicts.insert(*k, d);
            }
            counted += d;
        }
        println!(
            "{n} packets (seed {seed}) in {took:?}: actions {actions:?}, verdicts {verdicts:?}"
        );
        assert_eq!(
            counted, n,
            "every packet must be counted in exactly one verdict: {verdicts:?}"
        );
        // Each action agrees with its verdicts: redirect + tx = fwd_* + tx_* (a backend behind
        // the ingress interface is a hairpin, XDP_TX, counted fwd_*; a time exceeded sent back
        // is tx_*), drop = drop_*, pass = pass_*.
        let tx = actions.get("tx").copied().unwrap_or(0);
        for (action, prefixes, extra) in [
            ("redirect", &["fwd_", "tx_"][..], tx),
            ("drop", &["drop_"][..], 0),
            ("pass", &["pass_"][..], 0),
        ] {
            let by_verdict: u64 = verdicts
                .iter()
                .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
                .map(|(_, v)| v)
                .sum();
            assert_eq!(
                actions.get(action).copied().unwrap_or(0) + extra,
                by_verdict,
                "{action} vs {prefixes:?} verdicts: {actions:?} {verdicts:?}"
            );
        }
        // The mutations reach every action the program has.
        for a in ["drop", "pass", "redirect"] {
            assert!(actions.contains_key(a), "no {a} in {actions:?}");
        }
    })
    .join()
    .unwrap();
}
