//! Ethernet + IPv4 (no options) frames: TCP, UDP and ICMP, and their parsers.

use crate::{csum, ethernet, l4, l4_csum_offset, pseudo, seed, Msg, ICMP, UDP};

/// The IPv4 header (id `id`, fragment field `frag`) for `len` bytes after it, checksum filled in.
fn header(proto: u8, src: [u8; 4], dst: [u8; 4], len: usize, id: u8, frag: u8, ttl: u8) -> Vec<u8> {
    let tot = (20 + len) as u16;
    let mut ip = vec![
        0x45,
        0,
        (tot >> 8) as u8,
        tot as u8,
        0,
        id,
        frag,
        0,
        ttl,
        proto,
        0,
        0,
    ];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}

/// A TCP (`proto` [`TCP`], with `tcp_flags`) or UDP ([`UDP`]) packet from `src:sport` to
/// `dst:dport` carrying `payload`; IPv4 id 1, DF, TTL 64; both checksums valid.
pub fn packet(
    proto: u8,
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    tcp_flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let l4 = l4(proto, &src, sport, &dst, dport, tcp_flags, payload);
    let mut p = ethernet([0x08, 0x00], 34 + l4.len());
    p.extend_from_slice(&header(proto, src, dst, l4.len(), 1, 0x40, 64));
    p.extend_from_slice(&l4);
    p
}

/// An ICMP message from `src` to `dst` (IPv4 id 2, no DF, TTL `ttl`): `ty`, `code`, the 4
/// bytes `rest`, then `quote` (the packet the message is about, from its IP header on).
pub fn icmp(
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    quote: &[u8],
) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(quote);
    let c = csum(&m, 0);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut p = ethernet([0x08, 0x00], 34 + m.len());
    p.extend_from_slice(&header(ICMP, src, dst, m.len(), 2, 0, ttl));
    p.extend_from_slice(&m);
    p
}

/// `p` with its TTL set to `ttl` (header checksum recomputed).
pub fn with_ttl(mut p: Vec<u8>, ttl: u8) -> Vec<u8> {
    p[22] = ttl;
    p[24..26].copy_from_slice(&[0, 0]);
    let c = csum(&p[14..34], 0);
    p[24..26].copy_from_slice(&c.to_be_bytes());
    p
}

/// `p` as a veth peer with TX checksum offload sends it: the L4 field holds the seed only.
pub fn partial(mut p: Vec<u8>) -> Vec<u8> {
    let proto = p[23];
    let (src, dst) = (p[26..30].to_vec(), p[30..34].to_vec());
    let l4_len = p.len() - 34;
    let off = 34 + l4_csum_offset(proto);
    p[off..off + 2].copy_from_slice(&seed(&src, &dst, proto, l4_len).to_be_bytes());
    p
}

/// A TCP or UDP packet read back by [`parse`].
#[derive(Debug)]
pub struct Parsed {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
}

/// Reads a TCP or UDP packet and asserts both checksums are valid (a zero UDP checksum is
/// "none" and passes).
pub fn parse(p: &[u8]) -> Parsed {
    let ip = &p[14..34];
    assert_eq!(csum(ip, 0), 0, "IPv4 header checksum invalid");
    let proto = ip[9];
    let l4 = &p[34..];
    let (src, dst): ([u8; 4], [u8; 4]) = (
        ip[12..16].try_into().unwrap(),
        ip[16..20].try_into().unwrap(),
    );
    let udp_no_csum = proto == UDP && l4[6] == 0 && l4[7] == 0;
    if !udp_no_csum {
        assert_eq!(
            csum(l4, pseudo(&src, &dst, proto, l4.len())),
            0,
            "L4 checksum invalid"
        );
    }
    Parsed {
        dmac: p[0..6].try_into().unwrap(),
        smac: p[6..12].try_into().unwrap(),
        src,
        dst,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
    }
}

/// Destination address and port of a packet, without checks (`None` if too short for them).
pub fn dst_of(p: &[u8]) -> Option<([u8; 4], u16)> {
    if p.len() < 38 {
        return None;
    }
    Some((
        p[30..34].try_into().ok()?,
        u16::from_be_bytes([p[36], p[37]]),
    ))
}

/// Reads an ICMP message, asserting its IPv4 header (no options, total length) and both
/// checksums.
pub fn parse_icmp(p: &[u8]) -> Msg<[u8; 4]> {
    assert_eq!(&p[12..14], &[0x08, 0x00]);
    let ip = &p[14..34];
    assert_eq!(csum(ip, 0), 0, "IPv4 header checksum invalid");
    assert_eq!((ip[0], ip[9]), (0x45, ICMP), "IPv4 without options, ICMP");
    assert_eq!(
        u16::from_be_bytes([ip[2], ip[3]]) as usize,
        p.len() - 14,
        "total length"
    );
    let m = &p[34..];
    assert_eq!(csum(m, 0), 0, "ICMP checksum invalid");
    Msg {
        dmac: p[0..6].try_into().unwrap(),
        smac: p[6..12].try_into().unwrap(),
        src: ip[12..16].try_into().unwrap(),
        dst: ip[16..20].try_into().unwrap(),
        hops: ip[8],
        ty: m[0],
        code: m[1],
        rest: m[4..8].try_into().unwrap(),
        quote: m[8..].to_vec(),
    }
}

/// The quoted packet's addresses and ports; its header checksum is checked, and its L4
/// checksum too when the quote holds the whole segment.
pub fn quoted(q: &[u8]) -> ([u8; 4], u16, [u8; 4], u16) {
    assert_eq!(csum(&q[..20], 0), 0, "quoted IPv4 header checksum invalid");
    let (src, dst): ([u8; 4], [u8; 4]) =
        (q[12..16].try_into().unwrap(), q[16..20].try_into().unwrap());
    let l4 = &q[20..];
    if u16::from_be_bytes([q[2], q[3]]) as usize == q.len() {
        assert_eq!(
            csum(l4, pseudo(&src, &dst, q[9], l4.len())),
            0,
            "quoted L4 checksum invalid"
        );
    }
    (
        src,
        u16::from_be_bytes([l4[0], l4[1]]),
        dst,
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}
