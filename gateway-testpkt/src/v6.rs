//! Ethernet + IPv6 frames, with extension headers: TCP, UDP and ICMPv6, and their parsers.

use std::net::Ipv6Addr;

use crate::{csum, ethernet, l4, pseudo, Msg, ICMPV6, UDP};

pub const NEXTHDR_HOP: u8 = 0;
pub const NEXTHDR_ROUTING: u8 = 43;
pub const NEXTHDR_FRAGMENT: u8 = 44;
pub const NEXTHDR_ESP: u8 = 50;
pub const NEXTHDR_DEST: u8 = 60;

/// One extension header: its type and its body after the next-header and length bytes (padded
/// to a multiple of 8 with those two bytes).
pub struct Ext(pub u8, pub Vec<u8>);

/// The 40-byte IPv6 header for `len` bytes after it, first next header `next`.
fn header(next: u8, src: &[u8; 16], dst: &[u8; 16], len: usize, hops: u8) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0, (len >> 8) as u8, len as u8, next, hops];
    ip.extend_from_slice(src);
    ip.extend_from_slice(dst);
    ip
}

/// A TCP or UDP packet from `src:sport` to `dst:dport` behind the extension headers `exts`
/// (hop limit 64), its L4 checksum valid.
#[allow(
    clippy::too_many_arguments,
    reason = "the fields of the frame, in the order a packet lists them"
)]
pub fn packet(
    proto: u8,
    src: [u8; 16],
    sport: u16,
    dst: [u8; 16],
    dport: u16,
    tcp_flags: u8,
    payload: &[u8],
    exts: &[Ext],
) -> Vec<u8> {
    let l4 = l4(proto, &src, sport, &dst, dport, tcp_flags, payload);
    let mut ext = Vec::new();
    for (i, Ext(_, body)) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(proto, |e| e.0);
        assert_eq!((body.len() + 2) % 8, 0, "extension header body padded to 8");
        ext.push(next);
        ext.push(((body.len() + 2) / 8 - 1) as u8);
        ext.extend_from_slice(body);
    }
    let first = exts.first().map_or(proto, |e| e.0);
    let mut p = ethernet([0x86, 0xdd], 54 + ext.len() + l4.len());
    p.extend_from_slice(&header(first, &src, &dst, ext.len() + l4.len(), 64));
    p.extend_from_slice(&ext);
    p.extend_from_slice(&l4);
    p
}

/// An ICMPv6 message from `src` to `dst` (hop limit `hops`): `ty`, `code`, the 4 bytes `rest`,
/// then `quote`; its checksum covers the pseudo-header.
pub fn icmp(
    src: [u8; 16],
    dst: [u8; 16],
    hops: u8,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    quote: &[u8],
) -> Vec<u8> {
    let len = 8 + quote.len();
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(quote);
    let c = csum(&m, pseudo(&src, &dst, ICMPV6, len));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut p = ethernet([0x86, 0xdd], 54 + len);
    p.extend_from_slice(&header(ICMPV6, &src, &dst, len, hops));
    p.extend_from_slice(&m);
    p
}

/// A TCP or UDP packet read back by [`parse`].
#[derive(Debug)]
pub struct Parsed {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub sport: u16,
    pub dport: u16,
}

/// Reads a TCP or UDP packet (walking its hop-by-hop, routing and destination options
/// headers), asserting its payload length and its L4 checksum (which IPv6 UDP must carry).
pub fn parse(p: &[u8]) -> Parsed {
    assert_eq!(&p[12..14], &[0x86, 0xdd]);
    let ip = &p[14..54];
    assert_eq!(ip[0] >> 4, 6);
    let payload_len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    assert_eq!(payload_len, p.len() - 54, "payload length");
    let (src, dst): ([u8; 16], [u8; 16]) = (
        ip[8..24].try_into().unwrap(),
        ip[24..40].try_into().unwrap(),
    );
    let mut next = ip[6];
    let mut off = 54;
    while matches!(next, NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST) {
        next = p[off];
        off += (p[off + 1] as usize + 1) * 8;
    }
    let l4 = &p[off..];
    let udp_no_csum = next == UDP && l4[6] == 0 && l4[7] == 0;
    assert!(!udp_no_csum, "IPv6 UDP needs a checksum");
    assert_eq!(
        csum(l4, pseudo(&src, &dst, next, l4.len())),
        0,
        "L4 checksum invalid"
    );
    Parsed {
        dmac: p[0..6].try_into().unwrap(),
        smac: p[6..12].try_into().unwrap(),
        src: src.into(),
        dst: dst.into(),
        hop_limit: ip[7],
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
    }
}

/// Reads an ICMPv6 message, asserting its payload length and its checksum (pseudo-header
/// included).
pub fn parse_icmp(p: &[u8]) -> Msg<Ipv6Addr> {
    assert_eq!(&p[12..14], &[0x86, 0xdd]);
    let ip = &p[14..54];
    assert_eq!((ip[0] >> 4, ip[6]), (6, ICMPV6));
    assert_eq!(u16::from_be_bytes([ip[4], ip[5]]) as usize, p.len() - 54);
    let (s, d): ([u8; 16], [u8; 16]) = (
        ip[8..24].try_into().unwrap(),
        ip[24..40].try_into().unwrap(),
    );
    let m = &p[54..];
    assert_eq!(
        csum(m, pseudo(&s, &d, ICMPV6, m.len())),
        0,
        "ICMPv6 checksum invalid"
    );
    Msg {
        dmac: p[0..6].try_into().unwrap(),
        smac: p[6..12].try_into().unwrap(),
        src: s.into(),
        dst: d.into(),
        hops: ip[7],
        ty: m[0],
        code: m[1],
        rest: m[4..8].try_into().unwrap(),
        quote: m[8..].to_vec(),
    }
}

/// The quoted packet's addresses and ports, its L4 checksum checked when whole.
pub fn quoted(q: &[u8]) -> (Ipv6Addr, u16, Ipv6Addr, u16) {
    let (s, d): ([u8; 16], [u8; 16]) =
        (q[8..24].try_into().unwrap(), q[24..40].try_into().unwrap());
    let l4 = &q[40..];
    if u16::from_be_bytes([q[4], q[5]]) as usize == l4.len() {
        assert_eq!(
            csum(l4, pseudo(&s, &d, q[6], l4.len())),
            0,
            "quoted L4 checksum invalid"
        );
    }
    (
        s.into(),
        u16::from_be_bytes([l4[0], l4[1]]),
        d.into(),
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}
