//! Incremental Internet checksum updates (RFC 1624: HC' = ~(~HC + ~m + m')).
//!
//! Values are taken exactly as they sit in the packet (network order read as native words):
//! the one's-complement sum is independent of byte order as long as every word is read the same
//! way, so no byte swapping is needed.

/// Folds a 32-bit accumulator to 16 bits. A fixed number of folds: a `while` loop here is
/// rejected by the verifier as too complex.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
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
