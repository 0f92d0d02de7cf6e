//! Incremental Internet checksum updates (RFC 1624: HC' = ~(~HC + ~m + m')).
//!
//! Values are taken exactly as they sit in the packet (network order read as native words):
//! the one's-complement sum is independent of byte order as long as every word is read the same
//! way, so no byte swapping is needed.

/// Folds a 32-bit accumulator to 16 bits. A fixed number of folds: a `while` loop here is
/// rejected by the verifier as too complex.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Updates `check` for a 32-bit field changing from `old` to `new`.
#[inline(always)]
pub fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let sum = (!check) as u32 + ((!old) >> 16) + ((!old) & 0xffff) + (new >> 16) + (new & 0xffff);
    !fold(sum)
}

/// Updates `check` for a 16-bit field changing from `old` to `new`.
#[inline(always)]
pub fn replace2(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u32 + (!old) as u32 + new as u32;
    !fold(sum)
}

/// The folded pseudo-header sum (not complemented) of an IPv4 TCP/UDP packet: what a sender that
/// offloads its checksum (CHECKSUM_PARTIAL) leaves in the L4 checksum field. `l4_len` is in host
/// order; addresses as they sit in the packet.
#[inline(always)]
pub fn pseudo_seed(saddr: u32, daddr: u32, proto: u8, l4_len: u16) -> u16 {
    let sum = (saddr >> 16)
        + (saddr & 0xffff)
        + (daddr >> 16)
        + (daddr & 0xffff)
        + (proto as u16).to_be() as u32
        + l4_len.to_be() as u32;
    fold(sum)
}

/// Updates a partial checksum's seed (a plain, uncomplemented sum) for a 32-bit pseudo-header
/// field changing from `old` to `new`.
#[inline(always)]
pub fn seed_replace4(seed: u16, old: u32, new: u32) -> u16 {
    !replace4(!seed, old, new)
}

/// [`pseudo_seed`] of an IPv6 TCP/UDP packet (RFC 8200 section 8.1: both addresses, the
/// upper-layer length and the next header; as a one's-complement sum of 16-bit words the
/// 32-bit fields add the same as their low halves).
#[inline(always)]
pub fn pseudo_seed6(saddr: &[u32; 4], daddr: &[u32; 4], proto: u8, l4_len: u16) -> u16 {
    let mut sum = (proto as u16).to_be() as u32 + l4_len.to_be() as u32;
    let mut i = 0;
    while i < 4 {
        sum += (saddr[i] >> 16) + (saddr[i] & 0xffff) + (daddr[i] >> 16) + (daddr[i] & 0xffff);
        i += 1;
    }
    fold(sum)
}
