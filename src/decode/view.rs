#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
//! Bounds-checked byte access. `be16`/`be32` take a slice already checked to be long
//! enough by the caller's `get(a..b)`; indexing there cannot fail.

pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn get(&self, r: std::ops::Range<usize>) -> Option<&'a [u8]> {
        self.0.get(r)
    }
}

/// The byte at `at`, or 0 past the end (callers have checked the length already).
#[inline]
pub fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// `N` bytes at `at`, as an array.
#[inline]
pub fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

#[inline]
pub fn be16(b: &[u8], at: usize) -> u16 {
    array::<2>(b, at).map(u16::from_be_bytes).unwrap_or(0)
}

#[inline]
pub fn be32(b: &[u8], at: usize) -> u32 {
    array::<4>(b, at).map(u32::from_be_bytes).unwrap_or(0)
}
