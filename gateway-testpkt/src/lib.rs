//! Test packet frames for the XDP program's packet tests (`gateway-userspace/tests/xdp_prog`),
//! its fuzzing (`xdp_fuzz`) and its per-packet benchmark (`cargo xtask bench --only xdp`):
//! Ethernet + IPv4 (no options) or IPv6 (with extension headers) + TCP, UDP, ICMP or ICMPv6,
//! with valid checksums, and the parsers that read the program's output back, checking every
//! checksum from scratch.
//!
//! One owner, so a test, the fuzzer and the bench feed the program the same bytes. Frames go
//! from [`CLIENT_MAC`] to [`NODE_MAC`]; IPv4 carries id 1, DF and TTL 64, IPv6 hop limit 64,
//! TCP sequence number 1, a 20-byte header and window 65535. The parsers panic (with what is
//! wrong) on a frame that is not what they expect: they are for tests.

pub mod v4;
pub mod v6;

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMPV6: u8 = 58;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// The destination MAC of every frame built here: the node's interface.
pub const NODE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x01];
/// The source MAC of every frame built here: the client's (or the previous hop's).
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0c];

/// The Internet checksum of `data` on top of the unfolded sum `init`: folded and complemented,
/// so it is 0 over data that holds a valid checksum.
pub fn csum(data: &[u8], init: u32) -> u16 {
    let mut sum = init;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The unfolded pseudo-header sum of IPv4 (RFC 793) or IPv6 (RFC 8200 8.1), by the length of
/// the addresses: both addresses, the protocol, the L4 length.
pub fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let mut s = 0u32;
    for c in src.chunks(2).chain(dst.chunks(2)) {
        s += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    s + proto as u32 + (len >> 16) as u32 + (len & 0xffff) as u32
}

/// The folded pseudo-header sum a sender offloading its L4 checksum leaves in the field.
pub fn seed(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u16 {
    !csum(&[], pseudo(src, dst, proto, len))
}

/// The L4 header (ports, then TCP's 20 bytes with `tcp_flags` or UDP's 8) and `payload`, its
/// checksum over the pseudo-header of `src` and `dst` filled in.
fn l4(
    proto: u8,
    src: &[u8],
    sport: u16,
    dst: &[u8],
    dport: u16,
    tcp_flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let l4_len = if proto == TCP { 20 } else { 8 } + payload.len();
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
    let c = csum(&l4, pseudo(src, dst, proto, l4_len));
    let off = l4_csum_offset(proto);
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    l4
}

/// Where the checksum field sits in a TCP or UDP header.
pub fn l4_csum_offset(proto: u8) -> usize {
    if proto == TCP {
        16
    } else {
        6
    }
}

/// The Ethernet header of every frame: [`NODE_MAC`] <- [`CLIENT_MAC`], then `ethertype`.
fn ethernet(ethertype: [u8; 2], capacity: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(capacity);
    p.extend_from_slice(&NODE_MAC);
    p.extend_from_slice(&CLIENT_MAC);
    p.extend_from_slice(&ethertype);
    p
}

/// `frame` with a VLAN tag (`tpid`, VLAN 100) inserted after its MACs: 802.1Q for
/// `[0x81, 0x00]`, an outer 802.1ad tag for `[0x88, 0xa8]`.
pub fn vlan(tpid: [u8; 2], frame: &[u8]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid);
    f.extend_from_slice(&[0x00, 0x64]);
    f.extend_from_slice(&frame[12..]);
    f
}

/// An ICMP or ICMPv6 message read back by [`v4::parse_icmp`] or [`v6::parse_icmp`].
#[derive(Debug)]
pub struct Msg<A> {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub src: A,
    pub dst: A,
    /// TTL or hop limit.
    pub hops: u8,
    pub ty: u8,
    pub code: u8,
    /// The 4 bytes after the checksum (an MTU, or unused).
    pub rest: [u8; 4],
    /// The quoted packet, from its IP header on.
    pub quote: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use crate::{v4, v6, ACK, SYN, TCP, UDP};

    fn hex(p: &[u8]) -> String {
        p.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes the XDP tests, the fuzzer and the bench have always sent (taken from the
    /// builders each of them had before this crate): a change here changes what they measure.
    #[test]
    fn frames_are_stable() {
        let (client, vip) = ([198, 18, 0, 2], [198, 18, 0, 1]);
        let (client6, vip6) = (
            "2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        let (r, node) = ([198, 18, 1, 9], [198, 18, 1, 1]);
        let (r6, node6) = (
            "2001:db8:1::9"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            "2001:db8:1::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        let hop = v6::Ext(v6::NEXTHDR_HOP, vec![1, 4, 0, 0, 0, 0]);
        for (name, frame, want) in [
            (
                "IPv4 TCP SYN",
                v4::packet(TCP, client, 40001, vip, 31400, SYN, b""),
                "02000000000102000000000c080045000028000140004006aea7c6120002c61200019c417aa8\
                 00000001000000005002ffff0cd00000",
            ),
            (
                "IPv4 UDP",
                v4::packet(UDP, client, 50000, vip, 5353, 0, b"query"),
                "02000000000102000000000c080045000021000140004011aea3c6120002c6120001c35014e9\
                 000d4b8a7175657279",
            ),
            (
                "IPv6 TCP behind hop-by-hop",
                v6::packet(TCP, client6, 40100, vip6, 31401, ACK, b"xyz", &[hop]),
                "02000000000102000000000c86dd60000000001f004020010db8000000000000000000000002\
                 20010db800000000000000000000000106000104000000009ca47aa900000001000000005010\
                 ffff4a94000078797a",
            ),
            (
                "ICMP fragmentation needed",
                v4::icmp(
                    r,
                    node,
                    64,
                    3,
                    4,
                    [0, 0, 5, 0x78],
                    &[0x45, 0, 0, 28, 1, 2, 3, 4],
                ),
                "02000000000102000000000c080045000024000200004001eca8c6120109c612010103\
                 04ae61000005784500001c01020304",
            ),
            (
                "ICMPv6 packet too big",
                v6::icmp(r6, node6, 64, 2, 0, [0, 0, 5, 0], b"quote"),
                "02000000000102000000000c86dd60000000000d3a4020010db8000100000000000000000009\
                 20010db8000100000000000000000001020057500000050071756f7465",
            ),
        ] {
            assert_eq!(hex(&frame), want, "{name}");
        }
    }

    /// The parsers read back what the builders wrote, and refuse a broken checksum.
    #[test]
    fn parsers_check_checksums() {
        let p = v4::packet(TCP, [198, 18, 0, 2], 1, [198, 18, 0, 1], 2, SYN, b"x");
        let o = v4::parse(&p);
        assert_eq!(
            (o.src, o.sport, o.dst, o.dport),
            ([198, 18, 0, 2], 1, [198, 18, 0, 1], 2)
        );
        let mut bad = p.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(std::panic::catch_unwind(|| v4::parse(&bad)).is_err());
        let src: [u8; 16] = "2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let dst: [u8; 16] = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let p = v6::packet(UDP, src, 3, dst, 4, 0, b"y", &[]);
        assert_eq!(v6::parse(&p).dport, 4);
        let mut bad = p.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(std::panic::catch_unwind(|| v6::parse(&bad)).is_err());
    }
}
