//! [`TopResources`]: per-resource request and error counts with a fixed number of entries,
//! so an edge whose requests name ever new resources (ids in URL paths, a resolver asked for
//! many names) costs the same memory after a minute as after a day.
//!
//! While an edge has seen at most [`RESOURCES_PER_TALLY`] distinct resources every count is
//! exact. Past that, a new resource takes the place of the entry with the fewest requests
//! (the Space-Saving algorithm of Metwally, Agrawal and El Abbadi, 2005): a resource
//! requested more than 1/N of the time is never the one displaced, so the heavy hitters
//! that `top_resources` shows stay. Each entry counts the requests and errors seen since it
//! came in — never more than the truth — and remembers how many requests the entries it
//! replaced had (`floor`), which is what ranks it for the next displacement. Every
//! displacement is counted (`limits.resources_displaced`).

use protocols::event::Resource;

use crate::limits::RESOURCES_PER_TALLY;

// Entry positions are kept in bytes on the stack (merge order, compaction).
const _: () = assert!(RESOURCES_PER_TALLY <= 256);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tracked {
    /// Requests and errors seen since the entry came in.
    requests: u64,
    errors: u64,
    /// Requests of the entries it displaced: the most it may have missed.
    floor: u64,
}

impl Tracked {
    /// The Space-Saving estimate: at least the true count.
    fn upper(&self) -> u64 {
        self.requests.saturating_add(self.floor)
    }
}

/// Texts up to this long are kept in the entry itself; longer ones in `names`.
const INLINE: usize = 30;

/// One resource. Its text is `inline[..len]` when it fits, else `names[start..start + len]`.
/// 64 bytes, and the first one is held in the list itself: a connection that names one
/// resource (most do) allocates nothing for it.
#[derive(Clone, Copy, Debug)]
struct Entry {
    tracked: Tracked,
    /// Of the text, so a lookup compares texts only on a likely match.
    hash: u32,
    start: u32,
    len: u8,
    /// The resource was cut to its bound (a different key from the same text uncut).
    cut: bool,
    inline: [u8; INLINE],
}

/// Short texts live in their entries and long ones back to back in one buffer, rather than
/// every key taking the 96 bytes a resource may have: a typical resource ("GET
/// /api/v1/cart", "SELECT users") is a fifth of that, and an edge's list is the memory that
/// outlives connections.
#[derive(Clone, Debug, Default)]
pub struct TopResources {
    entries: smallvec::SmallVec<[Entry; 1]>,
    names: Vec<u8>,
    /// Bytes of `names` that displaced entries left behind.
    garbage: usize,
    /// Entries that gave their place to another resource.
    pub displaced: u64,
}

fn text_hash(b: &[u8]) -> u32 {
    // FNV-1a: short keys, no seed needed (a collision only costs a comparison).
    b.iter().fold(0x811c_9dc5u32, |h, &x| {
        (h ^ u32::from(x)).wrapping_mul(0x0100_0193)
    })
}

impl TopResources {
    /// Back to empty; the vectors keep their capacity.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.names.clear();
        self.garbage = 0;
        self.displaced = 0;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where the entries are (for a prefetch; nothing is read).
    pub fn memory(&self) -> (*const u8, usize) {
        (
            self.entries.as_ptr().cast(),
            std::mem::size_of_val(self.entries.as_slice()),
        )
    }

    fn name<'a>(&'a self, e: &'a Entry) -> &'a [u8] {
        let len = usize::from(e.len);
        if len <= INLINE {
            e.inline.get(..len).unwrap_or(&[])
        } else {
            let s = e.start as usize;
            self.names.get(s..s + len).unwrap_or(&[])
        }
    }

    /// Lowest estimate first; ties by name (then the cut flag), so no outcome depends on
    /// the order entries arrived in.
    fn rank(&self, x: &Entry, y: &Entry) -> std::cmp::Ordering {
        x.tracked
            .upper()
            .cmp(&y.tracked.upper())
            .then_with(|| self.name(x).cmp(self.name(y)))
            .then_with(|| x.cut.cmp(&y.cut))
    }

    fn find(&self, hash: u32, text: &[u8], cut: bool) -> Option<usize> {
        self.entries.iter().position(|e| {
            e.hash == hash
                && e.cut == cut
                && usize::from(e.len) == text.len()
                && self.name(e) == text
        })
    }

    /// An entry for `text`, its bytes stored inline or at the end of `names`.
    fn new_entry(&mut self, hash: u32, text: &[u8], cut: bool, tracked: Tracked) -> Entry {
        let mut e = Entry {
            tracked,
            hash,
            start: 0,
            len: text.len() as u8,
            cut,
            inline: [0; INLINE],
        };
        match e.inline.get_mut(..text.len()) {
            Some(dst) => dst.copy_from_slice(text),
            None => {
                e.start = self.names.len() as u32;
                self.names.extend_from_slice(text);
            }
        }
        e
    }

    /// Count `requests` and `errors` for `r`.
    pub fn add(&mut self, r: &Resource, requests: u64, errors: u64) {
        let text = r.as_bytes();
        let t = Tracked {
            requests,
            errors,
            floor: 0,
        };
        self.add_tracked(text_hash(text), text, r.is_cut(), t);
    }

    fn add_tracked(&mut self, hash: u32, text: &[u8], cut: bool, t: Tracked) {
        if let Some(i) = self.find(hash, text, cut) {
            if let Some(e) = self.entries.get_mut(i) {
                e.tracked.requests += t.requests;
                e.tracked.errors += t.errors;
                e.tracked.floor += t.floor;
            }
            return;
        }
        // Texts are resources, at most 96 bytes.
        let text = text.get(..usize::from(u8::MAX)).unwrap_or(text);
        if self.entries.len() < RESOURCES_PER_TALLY {
            if self.entries.len() == self.entries.capacity() {
                // Doubling from the one inline entry up to the bound, never past it:
                // every edge and connection holds one of these.
                let len = self.entries.len();
                let want = (2 * len).clamp(1, RESOURCES_PER_TALLY);
                self.entries.reserve_exact(want - len);
            }
            let e = self.new_entry(hash, text, cut, t);
            self.entries.push(e);
            return;
        }
        // Full: the entry with the lowest estimate goes (ties: the smallest name, so the
        // result does not depend on arrival order within a tie).
        let Some(gone) =
            (0..self.entries.len()).min_by(|&a, &b| self.rank(&self.entries[a], &self.entries[b]))
        else {
            return;
        };
        let old = self.entries[gone];
        if usize::from(old.len) > INLINE {
            self.garbage += usize::from(old.len);
            if self.garbage > self.names.len() / 2 {
                self.entries[gone].len = 0;
                self.compact();
            }
        }
        let floor = old.tracked.upper().saturating_add(t.floor);
        let e = self.new_entry(hash, text, cut, Tracked { floor, ..t });
        self.entries[gone] = e;
        self.displaced += 1;
    }

    /// Drop the texts of displaced entries (at most half the buffer, so the buffer stays
    /// within twice the live texts). In place: a fresh buffer per compaction was an
    /// allocation every few requests on an edge whose resources carry ids.
    fn compact(&mut self) {
        // Live long texts in buffer order, each moved down to the end of the ones before.
        let mut long = [0u8; RESOURCES_PER_TALLY];
        let mut n = 0;
        for (i, e) in self.entries.iter().enumerate() {
            if usize::from(e.len) > INLINE {
                if let Some(slot) = long.get_mut(n) {
                    *slot = i as u8;
                    n += 1;
                }
            }
        }
        let long = long.get_mut(..n).unwrap_or_default();
        long.sort_unstable_by_key(|&i| self.entries.get(usize::from(i)).map_or(0, |e| e.start));
        let mut end = 0usize;
        for &i in long.iter() {
            let Some(e) = self.entries.get_mut(usize::from(i)) else {
                continue;
            };
            let (s, len) = (e.start as usize, usize::from(e.len));
            if s + len <= self.names.len() {
                self.names.copy_within(s..s + len, end);
            }
            e.start = end as u32;
            end += len;
        }
        self.names.truncate(end);
        self.garbage = 0;
    }

    /// Add another tally's counts (a connection's into its edge, one worker's into
    /// another's).
    pub fn merge(&mut self, o: &TopResources) {
        self.displaced += o.displaced;
        // No reserve for the incoming entries: most are usually there already (a
        // connection's resources on its edge), and reserving room for them anyway crept
        // edges' vectors past the bound (41 MB of 350 on a 10 M packet capture).
        let full = self.entries.len() + o.entries.len() > RESOURCES_PER_TALLY;
        if full && o.entries.len() > 1 {
            // Heaviest first (ties in reverse name order): a fixed order, so the same
            // inputs give the same entries.
            let mut order = [0u8; RESOURCES_PER_TALLY];
            let n = o.entries.len().min(RESOURCES_PER_TALLY);
            for (i, slot) in order.iter_mut().enumerate().take(n) {
                *slot = i as u8;
            }
            let order = order.get_mut(..n).unwrap_or_default();
            order.sort_unstable_by(|&a, &b| {
                o.rank(&o.entries[usize::from(a)], &o.entries[usize::from(b)])
                    .reverse()
            });
            for &i in order.iter() {
                if let Some(e) = o.entries.get(usize::from(i)) {
                    self.add_tracked(e.hash, o.name(e), e.cut, e.tracked);
                }
            }
        } else {
            // Nothing can be displaced (or only by one entry): the order does not matter.
            for e in &o.entries {
                self.add_tracked(e.hash, o.name(e), e.cut, e.tracked);
            }
        }
    }

    /// Every entry: resource, requests and errors seen since it came in.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.entries.iter().map(|e| {
            (
                std::str::from_utf8(self.name(e)).unwrap_or(""),
                e.tracked.requests,
                e.tracked.errors,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resource {
        Resource::from_str_lossy(s)
    }

    fn counts(t: &TopResources) -> Vec<(String, u64, u64)> {
        let mut v: Vec<_> = t.iter().map(|(r, n, e)| (r.to_string(), n, e)).collect();
        v.sort();
        v
    }

    #[test]
    fn exact_while_the_entries_suffice() {
        let mut t = TopResources::default();
        for i in 0..RESOURCES_PER_TALLY * 3 {
            let name = format!("GET /p{}", i % RESOURCES_PER_TALLY);
            t.add(&res(&name), 1, u64::from(i % 2 == 0));
        }
        assert_eq!(t.len(), RESOURCES_PER_TALLY);
        assert_eq!(t.displaced, 0);
        assert!(t.iter().all(|(_, n, _)| n == 3));
    }

    /// A stream where most requests carry a fresh id and a few resources are heavy, some
    /// of them first seen only after the entries filled up: the heavy ones are all kept,
    /// their counts never exceed the truth, and those that came in before the first
    /// displacement are exact.
    #[test]
    fn heavy_hitters_survive_a_stream_of_unique_resources() {
        let mut t = TopResources::default();
        let mut truth = std::collections::HashMap::<String, u64>::new();
        let mut x: u32 = 12345;
        for i in 0..20_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let name = match (x >> 16) % 10 {
                0 | 1 => "GET /".to_string(),
                2 => "GET /index.html".to_string(),
                3 if i > 5_000 => "GET /late".to_string(),
                4 => "GET /static/css/main.3c2f1a.css".to_string(),
                // Short ids in the entries, long ones in the shared buffer.
                5 | 6 => format!("GET /item/{i}"),
                _ => format!("GET /api/v1/users/{i}/orders?page=2"),
            };
            *truth.entry(name.clone()).or_default() += 1;
            t.add(&res(&name), 1, 0);
        }
        assert!(t.displaced > 10_000);
        assert_eq!(t.len(), RESOURCES_PER_TALLY);
        let got: std::collections::HashMap<String, u64> =
            t.iter().map(|(r, n, _)| (r.to_string(), n)).collect();
        for (name, &n) in &got {
            assert!(n <= truth[name], "{name}: {n} > {}", truth[name]);
        }
        assert_eq!(got["GET /"], truth["GET /"]);
        assert_eq!(got["GET /index.html"], truth["GET /index.html"]);
        let css = "GET /static/css/main.3c2f1a.css";
        assert_eq!(got[css], truth[css]);
        // Displaced long texts are dropped from the buffer as they accumulate.
        let live: usize = t.entries.iter().map(|e| t.name(e).len()).sum();
        assert!(t.names.len() <= 2 * live + 96, "{} {live}", t.names.len());
        // Came in late, so it missed at most what it displaced; still far ahead of the ids.
        assert!(got["GET /late"] * 10 > truth["GET /late"] * 9);
        let mut top: Vec<(&String, &u64)> = got.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut names: Vec<&str> = top.iter().take(4).map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "GET /");
        names.sort_unstable();
        let css = "GET /static/css/main.3c2f1a.css";
        assert_eq!(names, ["GET /", "GET /index.html", "GET /late", css]);
    }

    #[test]
    fn merging_is_deterministic_and_keeps_sums_while_exact() {
        let (mut a, mut b) = (TopResources::default(), TopResources::default());
        for i in 0..40 {
            a.add(&res(&format!("r{i}")), 2, 1);
            b.add(&res(&format!("r{}", i + 20)), 3, 0);
        }
        let mut ab = a.clone();
        ab.merge(&b);
        // 60 distinct: still exact.
        assert_eq!(ab.displaced, 0);
        let r25 = ab.iter().find(|(r, _, _)| *r == "r25").unwrap();
        assert_eq!((r25.1, r25.2), (5, 1));
        // Past the bound the outcome depends only on the contents.
        let mut c = TopResources::default();
        for i in 0..60 {
            c.add(&res(&format!("s{i}")), 1 + i % 3, 0);
        }
        let (mut x, mut y) = (ab.clone(), ab.clone());
        x.merge(&c);
        y.merge(&c.clone());
        assert_eq!(counts(&x), counts(&y));
        assert_eq!(x.len(), RESOURCES_PER_TALLY);
        assert!(x.displaced > 0);
    }
}
