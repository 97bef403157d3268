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
    /// Most bytes a text holds.
    pub const CAPACITY: usize = N;

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

    /// A text kept elsewhere as its stored text and cut flag (see [`Text::is_cut`]), back
    /// as it was.
    pub fn from_parts(s: &str, cut: bool) -> Self {
        let mut t = Self::from_str_lossy(s);
        t.cut |= cut;
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
        core::str::from_utf8(self.used()).unwrap_or("")
    }

    /// The stored bytes: whole UTF-8 characters, so `as_str` of them never fails.
    pub fn as_bytes(&self) -> &[u8] {
        self.used()
    }

    /// The stored bytes (whole UTF-8 characters).
    fn used(&self) -> &[u8] {
        let len = usize::from(self.len).min(N);
        self.buf.get(..len).unwrap_or(&[])
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

    /// Bytes that still fit.
    fn room(&self) -> usize {
        N.min(usize::from(u16::MAX))
            .saturating_sub(usize::from(self.len))
    }

    /// Append as much of `s` as fits, never splitting a character; false (and marked cut)
    /// if not all of it fit. Copies whole runs: this is on the per-request path.
    fn push_fit(&mut self, s: &str) -> bool {
        let room = self.room();
        let (take, fits) = if s.len() <= room {
            (s.len(), true)
        } else {
            // The longest prefix that fits and ends on a character boundary.
            let mut end = room;
            while end > 0 && !s.is_char_boundary(end) {
                end = end.saturating_sub(1);
            }
            (end, false)
        };
        let start = usize::from(self.len);
        let end = start.saturating_add(take);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(start..end), s.as_bytes().get(..take)) {
            dst.copy_from_slice(src);
            // end <= room + len <= u16::MAX.
            self.len = end as u16;
        }
        if !fits {
            self.cut = true;
        }
        fits
    }

    /// Append as much of ASCII `b` as fits (any cut is a character boundary); false (and
    /// marked cut) if not all of it fit.
    fn push_ascii(&mut self, b: &[u8]) -> bool {
        let take = b.len().min(self.room());
        let start = usize::from(self.len);
        let end = start.saturating_add(take);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(start..end), b.get(..take)) {
            dst.copy_from_slice(src);
            // end <= room + len <= u16::MAX.
            self.len = end as u16;
        }
        if take < b.len() {
            self.cut = true;
            return false;
        }
        true
    }

    /// Append as much of `s` as fits, never splitting a character.
    pub fn push_str(&mut self, s: &str) {
        self.push_fit(s);
    }

    /// Append one character; false (and marked cut) if it does not fit.
    pub fn push_char(&mut self, ch: char) -> bool {
        let start = usize::from(self.len);
        let end = start.saturating_add(ch.len_utf8());
        match self.buf.get_mut(start..end) {
            Some(dst) if end <= usize::from(u16::MAX) => {
                ch.encode_utf8(dst);
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
        // Printable ASCII (nearly always all of it) is copied as it is. What follows starts
        // on a character boundary, so its chunks are the ones the whole input would have.
        let n = b
            .iter()
            .position(|c| !(0x20..0x7f).contains(c))
            .unwrap_or(b.len());
        let (ascii, b) = b.split_at(n);
        if !self.push_ascii(ascii) || b.is_empty() {
            return;
        }
        // Valid input skips the chunked walk; its result is the same as one valid chunk.
        if let Ok(s) = core::str::from_utf8(b) {
            self.push_printable(s);
            return;
        }
        for chunk in b.utf8_chunks() {
            if !self.push_printable(chunk.valid()) {
                return;
            }
            if !chunk.invalid().is_empty() && !self.push_char('?') {
                return;
            }
        }
    }

    /// Append `s` with control characters as `?`; false once something did not fit.
    fn push_printable(&mut self, s: &str) -> bool {
        let mut rest = s;
        loop {
            // A run of printable ASCII is copied at once; it ends before an ASCII byte or a
            // character's first byte, so the split is on a character boundary.
            let n = rest
                .bytes()
                .position(|c| !(0x20..0x7f).contains(&c))
                .unwrap_or(rest.len());
            if !self.push_fit(rest.get(..n).unwrap_or("")) {
                return false;
            }
            let mut chars = rest.get(n..).unwrap_or("").chars();
            let Some(ch) = chars.next() else {
                return true;
            };
            let ch = if ch.is_control() { '?' } else { ch };
            if !self.push_char(ch) {
                return false;
            }
            rest = chars.as_str();
        }
    }
}

// Equality and hashing look at the text only, not at bytes left behind by `clear`.
impl<const N: usize> PartialEq for Text<N> {
    fn eq(&self, other: &Self) -> bool {
        self.used() == other.used() && self.cut == other.cut
    }
}

impl<const N: usize> Eq for Text<N> {}

/// Byte order of the text, then uncut before cut: consistent with equality.
impl<const N: usize> Ord for Text<N> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.used().cmp(other.used()).then(self.cut.cmp(&other.cut))
    }
}

impl<const N: usize> PartialOrd for Text<N> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize> core::hash::Hash for Text<N> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes (bytes, then 0xff), without re-validating the UTF-8.
        state.write(self.used());
        state.write_u8(0xff);
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
    #![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

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
    /// The character-at-a-time definition the bulk copies must match.
    fn reference<const N: usize>(b: &[u8]) -> (String, bool) {
        let mut out = String::new();
        let mut cut = false;
        let mut push = |ch: char, out: &mut String| {
            if out.len() + ch.len_utf8() > N {
                cut = true;
                false
            } else {
                out.push(ch);
                true
            }
        };
        'outer: for chunk in b.utf8_chunks() {
            for ch in chunk.valid().chars() {
                let ch = if ch.is_control() { '?' } else { ch };
                if !push(ch, &mut out) {
                    break 'outer;
                }
            }
            if !chunk.invalid().is_empty() && !push('?', &mut out) {
                break;
            }
        }
        (out, cut)
    }

    #[test]
    fn bulk_push_matches_char_by_char_definition() {
        // Pieces mixing printable ASCII, controls, multi-byte and invalid sequences,
        // concatenated pseudo-randomly (xorshift, fixed seed).
        let pieces: [&[u8]; 10] = [
            b"GET /a/b",
            b"\r\n",
            "é€😀".as_bytes(),
            b"\xff",
            b"\xe2\x82",
            b"\x7f",
            "\u{85}x".as_bytes(),
            b"SELECT * FROM t WHERE id = 1",
            b"",
            b"\xf0\x9f\x98",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..(x % 7) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                input.extend_from_slice(pieces[(x % 10) as usize]);
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (want, cut) = reference::<13>(&input);
            let t = Text::<13>::from_bytes_lossy(&input);
            assert_eq!((t.as_str(), t.is_cut()), (want.as_str(), cut), "{input:?}");
            // Pushed in two parts: the second continues where the first stopped.
            let (a, b) = input.split_at(input.len() / 2);
            let mut t2 = Text::<40>::from_bytes_lossy(a);
            t2.push_bytes_lossy(b);
            // Each push stands alone: a cut first part does not stop a second one that fits.
            let (first, first_cut) = reference::<40>(a);
            let rest = reference::<40>(b);
            let (more, more_cut) = reference_prefix(&rest.0, 40 - first.len());
            let want2 = (first + &more, first_cut || rest.1 || more_cut);
            assert_eq!(
                (t2.as_str(), t2.is_cut()),
                (want2.0.as_str(), want2.1),
                "{a:?} {b:?}"
            );
        }
    }

    /// The longest prefix of `s` within `room` bytes, and whether that cut something.
    fn reference_prefix(s: &str, room: usize) -> (String, bool) {
        let mut out = String::new();
        for ch in s.chars() {
            if out.len() + ch.len_utf8() > room {
                return (out, true);
            }
            out.push(ch);
        }
        (out, false)
    }

    #[test]
    fn push_str_cuts_on_char_boundary_and_marks_cut() {
        let mut t = Text::<6>::new();
        t.push_str("ab");
        t.push_str("c€");
        assert_eq!((t.as_str(), t.is_cut()), ("abc€", false));
        t.push_str("e");
        assert_eq!((t.as_str(), t.is_cut()), ("abc€", true));
        let mut full = Text::<2>::from_str_lossy("ab");
        assert!(!full.is_cut());
        full.push_str("");
        assert!(!full.is_cut());
    }

    #[test]
    fn equal_texts_hash_equal() {
        use core::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let mut a = Text::<8>::from_str_lossy("abcdef");
        a.clear();
        a.push_str("ab");
        let b = Text::<8>::from_str_lossy("ab");
        assert_eq!(h.hash_one(a), h.hash_one(b));
        assert_eq!(h.hash_one(b), h.hash_one("ab"));
    }
}
