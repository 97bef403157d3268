//! Bounds-checked byte access. `be16`/`be32` take a slice already checked to be long
//! enough by the caller's `get(a..b)`; indexing there cannot fail.

pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn get(&self, r: std::ops::Range<usize>) -> Option<&'a [u8]> {
        self.0.get(r)
    }
}

#[inline]
pub fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

#[inline]
pub fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}
