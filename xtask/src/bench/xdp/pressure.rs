//! Part 5: the connection table under pressure, filled through the program as new flows would.

use std::fmt::Write as _;

use gateway_testpkt::{v4, ACK, SYN, TCP};

use super::{
    flow_src, in_private_netns, plan, Dp, Opts, PRESERVE_PORT, SNAT_PORT, VIP, XDP_REDIRECT,
};
use crate::bench::{
    baseline::Baseline,
    util::{check_interrupt, median},
    Section,
};

/// Part 5: the connection table under pressure.
pub fn pressure(opts: &Opts) -> anyhow::Result<Section> {
    let fill = opts.fill;
    in_private_netns(8, move || {
        let mut base = Baseline::load()?;
        let mut body = String::new();
        let cap = gateway_common::CONNTRACK_MAX as usize;
        let flows_to_fill = cap / 2; // two entries per flow
        let total = if fill { flows_to_fill * 3 / 2 } else { 2000 };
        let _ = writeln!(
            body,
            "`CONNTRACK` is an LRU hash of {cap} entries, two per flow (one per direction), so it \
             holds {flows_to_fill} flows. {} new flows (distinct client address/port) are sent as SYNs \
             through `BPF_PROG_TEST_RUN` to a preserve-source service over 8 backends; the verdict \
             counters and the net cost of a new flow are read at each step.{}\n",
            total,
            if fill { "" } else { " (Quick mode: the table is not filled.)" }
        );
        let mut d = Dp::open(&plan(8))?;
        let steps = 6;
        let per_step = total / steps;
        let _ = writeln!(
            body,
            "| flows sent | table load (entries / capacity) | fwd_new | drop_ct_full | drop_nat_exhausted | other drops | new-flow net ns (median of step) |"
        );
        let _ = writeln!(body, "|---:|---:|---:|---:|---:|---:|---:|");
        let mut first_backend: Vec<[u8; 4]> = Vec::with_capacity(total);
        let mut sent = 0usize;
        for _ in 0..steps {
            check_interrupt()?;
            let mut prog = Vec::new();
            let mut bl = Vec::new();
            for _ in 0..per_step {
                let (src, sport) = flow_src(sent);
                let syn = v4::packet(TCP, src, sport, VIP, PRESERVE_PORT, SYN, b"");
                let (a, out, dur) = d.dp.test_run(&syn)?;
                first_backend.push(if a == XDP_REDIRECT {
                    v4::dst_of(&out).map(|x| x.0).unwrap_or([0; 4])
                } else {
                    [0; 4]
                });
                prog.push(dur.as_nanos() as f64);
                if sent.is_multiple_of(16) {
                    bl.push(base.run(&syn)?.1.as_nanos() as f64);
                }
                sent += 1;
            }
            let v = d.verdicts()?;
            let drops: u64 = v
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("drop_") && **k != "drop_ct_full" && **k != "drop_nat_exhausted"
                })
                .map(|(_, n)| n)
                .sum();
            let _ = writeln!(
                body,
                "| {sent} | {:.0}% | {} | {} | {} | {drops} | {:.0} |",
                100.0 * (2 * sent).min(cap) as f64 / cap as f64,
                v["fwd_new"],
                v["drop_ct_full"],
                v["drop_nat_exhausted"],
                median(&prog) - median(&bl)
            );
        }
        // The oldest flows were evicted (LRU) once the table was full; a non-SYN packet of such a
        // flow is decided again: same Maglev ring, same hash, so the same backend.
        let sample = 1000.min(sent / 2);
        for (label, range) in [("oldest", 0..sample), ("newest", sent - sample..sent)] {
            let before = d.verdicts()?;
            let mut same = 0;
            for i in range {
                let (src, sport) = flow_src(i);
                let ack = v4::packet(TCP, src, sport, VIP, PRESERVE_PORT, ACK, b"x");
                let (_, out, _) = d.dp.test_run(&ack)?;
                if v4::dst_of(&out).map(|x| x.0) == Some(first_backend[i]) {
                    same += 1;
                }
            }
            let after = d.verdicts()?;
            let _ = writeln!(
                body,
                "\nAn ACK of each of the {label} {sample} flows: {} found their entry (`fwd_established`), {} \
                 had been evicted and were decided again (`fwd_new`); {same} of {sample} reached the backend \
                 their SYN went to.",
                after["fwd_established"] - before["fwd_established"],
                after["fwd_new"] - before["fwd_new"],
            );
        }

        // SNAT: the reply entry is keyed by (backend, snat address, snat port), so one backend
        // takes at most NAT_PORT_MAX - NAT_PORT_MIN + 1 flows per SNAT address.
        let ports = (gateway_common::NAT_PORT_MAX - gateway_common::NAT_PORT_MIN) as usize + 1;
        let snat_total = if fill { 2 * ports * 3 / 2 } else { 1000 };
        let mut d = Dp::open(&plan(2))?;
        let _ = writeln!(
            body,
            "\nSNAT mode: the reply entry is keyed by (backend, SNAT address, SNAT port), and SNAT ports \
             come from {}-{} ({ports} per backend and SNAT address, {} candidates tried per flow). \
             {snat_total} new flows to an SNAT service with 2 backends:\n",
            gateway_common::NAT_PORT_MIN,
            gateway_common::NAT_PORT_MAX,
            gateway_common::NAT_PORT_TRIES
        );
        let _ = writeln!(
            body,
            "The same flows are sent twice, each time to a fresh table: left open (SYN only), and \
             closed right after their SYN (the client's FIN, then the backend's FIN through its SNAT \
             port), whose SNAT ports new flows may then take over.\n"
        );
        let _ = writeln!(body, "| flows sent | flows per backend port range | open: fwd_new | open: drop_nat_exhausted | closed: fwd_new | closed: drop_nat_exhausted | new-flow net ns (open) |");
        let _ = writeln!(body, "|---:|---:|---:|---:|---:|---:|---:|");
        let mut closed = Dp::open(&plan(2))?;
        let per_step = snat_total / steps;
        let mut sent = 0usize;
        for _ in 0..steps {
            check_interrupt()?;
            let mut prog = Vec::new();
            let mut bl = Vec::new();
            for _ in 0..per_step {
                let (src, sport) = flow_src(sent);
                let syn = v4::packet(TCP, src, sport, VIP, SNAT_PORT, SYN, b"");
                let (_, _, dur) = d.dp.test_run(&syn)?;
                prog.push(dur.as_nanos() as f64);
                if sent.is_multiple_of(8) {
                    bl.push(base.run(&syn)?.1.as_nanos() as f64);
                }
                // The closed run: SYN, client FIN, backend FIN to the SNAT port it was given.
                let (action, out, _) = closed.dp.test_run(&syn)?;
                if action == XDP_REDIRECT && out.len() >= 38 {
                    let fin = 0x01 | 0x10;
                    let snat: [u8; 4] = out[26..30].try_into()?;
                    let backend: [u8; 4] = out[30..34].try_into()?;
                    let nat_port = u16::from_be_bytes([out[34], out[35]]);
                    let bport = u16::from_be_bytes([out[36], out[37]]);
                    closed
                        .dp
                        .test_run(&v4::packet(TCP, src, sport, VIP, SNAT_PORT, fin, b""))?;
                    closed
                        .dp
                        .test_run(&v4::packet(TCP, backend, bport, snat, nat_port, fin, b""))?;
                }
                sent += 1;
            }
            let v = d.verdicts()?;
            let c = closed.verdicts()?;
            let _ = writeln!(
                body,
                "| {sent} | {:.0}% | {} | {} | {} | {} | {:.0} |",
                100.0 * sent as f64 / (2 * ports) as f64,
                v["fwd_new"],
                v["drop_nat_exhausted"],
                c["fwd_new"],
                c["drop_nat_exhausted"],
                median(&prog) - median(&bl)
            );
        }
        let _ = writeln!(
            body,
            "\nNo silent cliff: every refused flow is counted (`drop_ct_full`, `drop_nat_exhausted` in \
             `/stats` and `/metrics`) and SNAT exhaustion also logs a warning. A TCP flow that closed (FIN \
             both ways, or a RST) gives its SNAT port to the next flow that wants it, so short connections \
             do not exhaust a backend's range (the `closed` columns); flows left open, half-closed flows and \
             UDP flows keep their ports until LRU eviction, so a backend with more than its port range of \
             open flows from one SNAT address refuses the excess (the `open` columns): a bigger SNAT \
             address pool would lift that. In preserve-source mode a full table evicts the least \
             recently used flows, and their next packet is decided again (same backend while the \
             backend set is unchanged)."
        );
        Ok(Section::new("5. Connection-table pressure", body))
    })
}
