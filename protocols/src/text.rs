//! [`Text`]: a bounded, inline, allocation-free string for event fields.

use core::fmt;

/// At most `N` bytes of UTF-8 text stored inline. Longer input is cut at a character
/// boundary and marked as cut, so an event never allocates and never grows unbounded.
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: u16,
    cut: bool,
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Text<N> {
    pub const fn new() -> Self {
        Text {
            buf: [0; N],
            len: 0,
            cut: false,
        }
    }

    /// Text from `s`, cut to capacity.
    pub fn from_str_lossy(s: &str) -> Self {
        let mut t = Self::new();
        t.push_str(s);
        t
    }

    /// Text from wire bytes: invalid UTF-8 and control characters become `?`.
    pub fn from_bytes_lossy(b: &[u8]) -> Self {
        let mut t = Self::new();
        t.push_bytes_lossy(b);
        t
    }

    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 characters are ever stored.
        let len = usize::from(self.len).min(N);
        core::str::from_utf8(self.buf.get(..len).unwrap_or(&[])).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if something pushed did not fit.
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.cut = false;
    }

    /// Append as much of `s` as fits, never splitting a character.
    pub fn push_str(&mut self, s: &str) {
        for ch in s.chars() {
            if !self.push_char(ch) {
                break;
            }
        }
    }

    /// Append one character; false (and marked cut) if it does not fit.
    pub fn push_char(&mut self, ch: char) -> bool {
        let mut enc = [0u8; 4];
        let bytes = ch.encode_utf8(&mut enc).as_bytes();
        let start = usize::from(self.len);
        let end = start.saturating_add(bytes.len());
        match self.buf.get_mut(start..end) {
            Some(dst) if end <= usize::from(u16::MAX) => {
                dst.copy_from_slice(bytes);
                self.len = end as u16;
                true
            }
            _ => {
                self.cut = true;
                false
            }
        }
    }

    /// Append wire bytes: valid UTF-8 kept, anything else (and control characters) as `?`.
    pub fn push_bytes_lossy(&mut self, b: &[u8]) {
        for chunk in b.utf8_chunks() {
            for ch in chunk.valid().chars() {
                let ch = if ch.is_control() { '?' } else { ch };
                if !self.push_char(ch) {
                    return;
                }
            }
            if !chunk.invalid().is_empty() && !self.push_char('?') {
                return;
            }
        }
    }
}

// Equality and hashing look at the text only, not at bytes left behind by `clear`.
impl<const N: usize> PartialEq for Text<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() && self.cut == other.cut
    }
}

impl<const N: usize> Eq for Text<N> {}

impl<const N: usize> core::hash::Hash for Text<N> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_capacity_on_char_boundary() {
        let t = Text::<5>::from_str_lossy("abcé€");
        assert_eq!(t.as_str(), "abcé");
        assert!(t.is_cut());
    }

    #[test]
    fn equality_ignores_bytes_left_by_clear() {
        let mut a = Text::<8>::from_str_lossy("abcdef");
        a.clear();
        a.push_str("ab");
        assert_eq!(a, Text::<8>::from_str_lossy("ab"));
    }

    #[test]
    fn control_and_invalid_bytes_become_question_marks() {
        let t = Text::<16>::from_bytes_lossy(b"a\r\n\xffb");
        assert_eq!(t.as_str(), "a???b");
    }
}
