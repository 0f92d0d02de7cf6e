//! Test packets: Ethernet + IPv4 (no options) or IPv6 (no extension headers) + TCP or UDP, with
//! valid checksums. The same shape the XDP program's unit tests use, built here so the bench owns
//! its inputs.

pub const TCP: u8 = 6;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

pub const NODE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x01];
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0c];

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum16(data: &[u8], init: u32) -> u32 {
    data.chunks(2).fold(init, |s, c| {
        s + u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32
    })
}

fn pseudo(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
    sum16(&dst, sum16(&src, 0)) + proto as u32 + len as u32
}

/// A TCP (proto 6) or UDP (17) packet from `src:sport` to `dst:dport`.
pub fn build(
    proto: u8,
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    tcp_flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let l4_len = if proto == TCP { 20 } else { 8 } + payload.len();
    let tot = (20 + l4_len) as u16;
    let mut p = Vec::with_capacity(14 + tot as usize);
    p.extend_from_slice(&NODE_MAC);
    p.extend_from_slice(&CLIENT_MAC);
    p.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![
        0x45,
        0,
        (tot >> 8) as u8,
        tot as u8,
        0,
        1,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&ip);
    let mut l4 = Vec::with_capacity(l4_len);
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if proto == TCP {
        l4.extend_from_slice(&[
            0, 0, 0, 1, 0, 0, 0, 0, 0x50, tcp_flags, 0xff, 0xff, 0, 0, 0, 0,
        ]);
    } else {
        l4.extend_from_slice(&(l4_len as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(payload);
    let c = fold(sum16(&l4, pseudo(src, dst, proto, l4_len)));
    let off = if proto == TCP { 16 } else { 6 };
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&l4);
    p
}

/// Destination address and port of an output packet (to check where it was sent).
pub fn dst_of(p: &[u8]) -> Option<([u8; 4], u16)> {
    if p.len() < 38 {
        return None;
    }
    Some((
        p[30..34].try_into().ok()?,
        u16::from_be_bytes([p[36], p[37]]),
    ))
}

/// [`build`] for IPv6 (hop limit 64): a TCP or UDP packet from `src:sport` to `dst:dport`.
pub fn build6(
    proto: u8,
    src: [u8; 16],
    sport: u16,
    dst: [u8; 16],
    dport: u16,
    tcp_flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let l4_len = if proto == TCP { 20 } else { 8 } + payload.len();
    let mut p = Vec::with_capacity(54 + l4_len);
    p.extend_from_slice(&NODE_MAC);
    p.extend_from_slice(&CLIENT_MAC);
    p.extend_from_slice(&[0x86, 0xdd]);
    p.extend_from_slice(&[0x60, 0, 0, 0, (l4_len >> 8) as u8, l4_len as u8, proto, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let mut l4 = Vec::with_capacity(l4_len);
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if proto == TCP {
        l4.extend_from_slice(&[
            0, 0, 0, 1, 0, 0, 0, 0, 0x50, tcp_flags, 0xff, 0xff, 0, 0, 0, 0,
        ]);
    } else {
        l4.extend_from_slice(&(l4_len as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(payload);
    let pseudo = sum16(&dst, sum16(&src, 0)) + proto as u32 + l4_len as u32;
    let c = fold(sum16(&l4, pseudo));
    let off = if proto == TCP { 16 } else { 6 };
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&l4);
    p
}
