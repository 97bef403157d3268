//! Latency and RTT distributions: exact while small (so small edges get exact nearest-rank
//! percentiles), a log-bucket sketch (within 1 %, as the contract allows) once large.
//! Merging is order-independent, so results do not depend on the number of workers.
//!
//! Every edge keeps two of these for the whole run, so their size is what memory per edge
//! comes to: 64 exact values (512 bytes), then only the buckets in use — a latency
//! distribution spread over a factor of 10 takes ~120 buckets of 8 bytes, and never more
//! than [`MAX_BUCKETS`]. (An HDR histogram at the same precision is a fixed 10–20 KB.)

const EXACT_MAX: usize = 64;
/// Values kept inline before `heap` allocates: most connections have only a few.
const FEW: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct Digest {
    /// Exact mode: the values are `few[..few_len]` followed by `heap`.
    few: [u64; FEW],
    few_len: u8,
    /// Sketch mode: `heap` holds the sketch's buckets (see [`LogSketch`]), not values.
    sketched: bool,
    /// The exact values past the inline few, or the sketch's buckets: one vector for both
    /// (the two modes never hold data at once), one load from the digest, so a prefetch
    /// of an edge's vectors reaches the buckets before a connection's tally merges in.
    heap: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

/// Nearest-rank summary in the unit the values were recorded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: u64,
}

impl Digest {
    /// Where the values beyond the inline few, or the sketch's buckets, are (for a
    /// prefetch; nothing is read).
    pub fn memory(&self) -> (*const u8, usize) {
        (
            self.heap.as_ptr().cast(),
            std::mem::size_of_val(self.heap.as_slice()),
        )
    }

    /// The sketch, once the values no longer fit exactly.
    fn sketch(&mut self) -> Option<LogSketch<'_>> {
        self.sketched.then_some(LogSketch {
            buckets: &mut self.heap,
        })
    }

    pub fn record(&mut self, v: u64) {
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        self.max = self.max.max(v);
        self.count += 1;
        self.sum += u128::from(v);
        match self.sketch() {
            Some(mut h) => h.record(v, 1),
            None => {
                self.push_exact(v);
                if self.exact_len() > EXACT_MAX {
                    self.spill();
                }
            }
        }
    }

    fn push_exact(&mut self, v: u64) {
        match self.few.get_mut(usize::from(self.few_len)) {
            Some(slot) => {
                *slot = v;
                self.few_len += 1;
            }
            None => self.heap.push(v),
        }
    }

    fn exact_len(&self) -> usize {
        if self.sketched {
            return 0;
        }
        usize::from(self.few_len) + self.heap.len()
    }

    /// The values held in exact mode.
    fn exact_values(&self) -> impl Iterator<Item = u64> + '_ {
        let few = self.few.get(..usize::from(self.few_len)).unwrap_or(&[]);
        let heap: &[u64] = if self.sketched { &[] } else { &self.heap };
        few.iter().chain(heap).copied()
    }

    fn spill(&mut self) {
        let mut buckets = Vec::new();
        let mut h = LogSketch {
            buckets: &mut buckets,
        };
        for v in self.exact_values() {
            h.record(v, 1);
        }
        self.few_len = 0;
        self.heap = buckets;
        self.sketched = true;
    }

    pub fn merge(&mut self, o: &Digest) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 || o.min < self.min {
            self.min = o.min;
        }
        self.max = self.max.max(o.max);
        self.count += o.count;
        self.sum += o.sum;
        for v in o.exact_values() {
            match self.sketch() {
                Some(mut h) => h.record(v, 1),
                None => self.push_exact(v),
            }
        }
        if o.sketched {
            if !self.sketched {
                self.spill();
            }
            if let Some(mut h) = self.sketch() {
                h.merge(&o.heap);
            }
        }
        if !self.sketched && self.exact_len() > EXACT_MAX {
            self.spill();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True when the next value would not fit inline (exact values would allocate).
    pub fn inline_full(&self) -> bool {
        usize::from(self.few_len) >= FEW
    }

    /// Back to empty; the exact values' vector keeps its capacity.
    pub fn clear(&mut self) {
        self.few_len = 0;
        self.heap.clear();
        self.sketched = false;
        self.count = 0;
        self.sum = 0;
        self.min = 0;
        self.max = 0;
    }

    /// Nearest-rank value at quantile `q`: the ceil(q·n)-th smallest.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        if self.sketched {
            value_at_rank(&self.heap, nearest_rank(q, self.count)).clamp(self.min, self.max)
        } else {
            self.exact_at(&self.exact_sorted(), q)
        }
    }

    /// On the stack: a digest holds at most `EXACT_MAX` exact values once recorded or
    /// merged (an allocation per edge and quantile showed in the join).
    fn exact_sorted(&self) -> smallvec::SmallVec<[u64; EXACT_MAX]> {
        let mut v: smallvec::SmallVec<[u64; EXACT_MAX]> = self.exact_values().collect();
        v.sort_unstable();
        v
    }

    /// Quantile `q` of the exact values, `sorted`.
    fn exact_at(&self, sorted: &[u64], q: f64) -> u64 {
        let rank = nearest_rank(q, sorted.len() as u64) as usize;
        sorted.get(rank - 1).copied().unwrap_or(self.max)
    }

    pub fn summary(&self) -> Option<Summary> {
        if self.count == 0 {
            return None;
        }
        // Exact values are sorted once for the three quantiles.
        let sorted = if self.sketched {
            smallvec::SmallVec::new()
        } else {
            self.exact_sorted()
        };
        let at = |q: f64| {
            if self.sketched {
                self.quantile(q)
            } else {
                self.exact_at(&sorted, q)
            }
        };
        Some(Summary {
            count: self.count,
            min: self.min,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: self.max,
            mean: (self.sum / u128::from(self.count)) as u64,
        })
    }
}

/// The nearest rank of quantile `q` among `n` values: ceil(q·n), within 1..=n.
fn nearest_rank(q: f64, n: u64) -> u64 {
    ((q * n as f64).ceil() as u64).clamp(1, n.max(1))
}

/// Bucket `i ≥ 1` holds values in (γ^(i-2), γ^(i-1)], bucket 0 the value 0. γ = 1.0202 puts
/// every value within 1 % of its bucket's representative (DDSketch, Masson et al. 2019).
const GAMMA: f64 = 1.0202;
/// Most buckets kept: past it the lowest are folded into the lowest kept one, which only
/// moves the fastest values up (still a span of 27,000× between the lowest and highest).
const MAX_BUCKETS: usize = 512;
const COUNT_BITS: u32 = 48;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Sparse log-bucket counts: each entry is a bucket index (high 16 bits) and its count (low
/// 48), sorted by index. A view of the digest's vector in sketch mode.
struct LogSketch<'a> {
    buckets: &'a mut Vec<u64>,
}

fn bucket_of(v: u64) -> u16 {
    if v == 0 {
        return 0;
    }
    if v >> TABLE_BITS != 0 {
        return bucket_by_formula(v);
    }
    // The table gives the bucket of the lowest value of `v`'s sub-range; a sub-range holds
    // at most one bucket boundary, and `upper` says whether `v` is past it.
    let table = &*BUCKET_TABLE;
    let key = table_key(v);
    let i = table.start.get(key).copied().unwrap_or(0);
    let past = table.upper.get(usize::from(i)).is_some_and(|&u| v > u);
    i + u16::from(past)
}

/// The bucket by its definition: ceil(ln v / ln γ) + 1. It is what [`bucket_of`] computes;
/// the logarithm alone was 1.3 % of a live capture's CPU on real traffic (perf), so below
/// 2^[`TABLE_BITS`] it is looked up instead (the table is built from this function, and a
/// test compares the two on every value below 2^24 and on every bucket boundary).
fn bucket_by_formula(v: u64) -> u16 {
    if v == 0 {
        return 0;
    }
    // ln(2^64) / ln(γ) ≈ 2,211: always fits.
    let i = ((v as f64).ln() / GAMMA.ln()).ceil() as i64 + 1;
    i.clamp(1, i64::from(u16::MAX)) as u16
}

/// Values below 2^40 (12.7 days in µs) are bucketed by table.
const TABLE_BITS: u32 = 40;
/// Each power of two is cut into 2^6 sub-ranges, each narrower (at most 1/64 of its
/// lowest value) than a bucket (γ − 1 = 2 %), so a sub-range meets at most two buckets.
const SUB_BITS: u32 = 6;

/// The sub-range of `0 < v < 2^TABLE_BITS`: `v` itself below 64, else its power of two and
/// the six bits after the leading one.
fn table_key(v: u64) -> usize {
    let sub = 1u64 << SUB_BITS;
    if v < sub {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let shift = e - SUB_BITS;
    let m = ((v >> shift) & (sub - 1)) as usize;
    sub as usize + shift as usize * sub as usize + m
}

/// The lowest and highest values of sub-range `key` (the inverse of [`table_key`]).
fn table_range(key: usize) -> (u64, u64) {
    let sub = 1usize << SUB_BITS;
    if key < sub {
        return (key as u64, key as u64);
    }
    let (shift, m) = ((key - sub) / sub, (key - sub) % sub);
    let lo = ((sub + m) as u64) << shift;
    (lo, lo + (1u64 << shift) - 1)
}

/// [`bucket_of`]'s lookup tables (15 KB, built once per process, in about a millisecond).
struct BucketTable {
    /// Per sub-range: the bucket of its lowest value.
    start: Vec<u16>,
    /// Per bucket: the highest value below 2^TABLE_BITS in it (0 for the buckets below 50
    /// that hold no integer).
    upper: Vec<u64>,
}

/// Built by the first value recorded; every use after that is one atomic load, no lock.
static BUCKET_TABLE: std::sync::LazyLock<BucketTable> =
    std::sync::LazyLock::new(BucketTable::build);

impl BucketTable {
    fn build() -> BucketTable {
        let keys = table_key((1u64 << TABLE_BITS) - 1) + 1;
        let top = bucket_by_formula((1u64 << TABLE_BITS) - 1);
        let mut start = Vec::with_capacity(keys);
        let mut upper = vec![0u64; usize::from(top) + 1];
        // Key 0: the value 0, bucket 0.
        start.push(0);
        // In rising order, so each bucket's last write is its highest value.
        for key in 1..keys {
            let (lo, hi) = table_range(key);
            let (b_lo, b_hi) = (bucket_by_formula(lo), bucket_by_formula(hi));
            start.push(b_lo);
            if b_hi != b_lo {
                // The first value of b_hi: the formula rises with v.
                let (mut below, mut at) = (lo, hi);
                while at - below > 1 {
                    let mid = below + (at - below) / 2;
                    if bucket_by_formula(mid) == b_lo {
                        below = mid;
                    } else {
                        at = mid;
                    }
                }
                if let Some(u) = upper.get_mut(usize::from(b_lo)) {
                    *u = below;
                }
            }
            if let Some(u) = upper.get_mut(usize::from(b_hi)) {
                *u = hi;
            }
        }
        BucketTable { start, upper }
    }
}

/// The value a bucket stands for: within 1 % of every value in it.
fn representative(i: u16) -> u64 {
    if i == 0 {
        return 0;
    }
    let upper = GAMMA.powi(i32::from(i) - 1);
    (2.0 * upper / (GAMMA + 1.0)).round() as u64
}

impl LogSketch<'_> {
    fn record(&mut self, v: u64, n: u64) {
        self.add_bucket(bucket_of(v), n);
    }

    fn add_bucket(&mut self, i: u16, n: u64) {
        let key = u64::from(i) << COUNT_BITS;
        match self
            .buckets
            .binary_search_by(|e| (e & !COUNT_MASK).cmp(&key))
        {
            Ok(at) => {
                if let Some(e) = self.buckets.get_mut(at) {
                    let c = (*e & COUNT_MASK).saturating_add(n).min(COUNT_MASK);
                    *e = key | c;
                }
            }
            Err(at) => {
                self.buckets.insert(at, key | n.min(COUNT_MASK));
                if self.buckets.len() > MAX_BUCKETS {
                    self.fold_lowest();
                }
            }
        }
    }

    /// Fold the lowest bucket into the next one up.
    fn fold_lowest(&mut self) {
        if self.buckets.len() < 2 {
            return;
        }
        let low = self.buckets.remove(0) & COUNT_MASK;
        if let Some(next) = self.buckets.first_mut() {
            let c = (*next & COUNT_MASK).saturating_add(low).min(COUNT_MASK);
            *next = (*next & !COUNT_MASK) | c;
        }
    }

    /// Add another sketch's buckets.
    fn merge(&mut self, other: &[u64]) {
        for e in other {
            self.add_bucket((e >> COUNT_BITS) as u16, e & COUNT_MASK);
        }
    }
}

/// The representative of the bucket of `buckets` holding the `rank`-th smallest value
/// (1-based).
fn value_at_rank(buckets: &[u64], rank: u64) -> u64 {
    let mut seen = 0u64;
    for e in buckets {
        seen = seen.saturating_add(e & COUNT_MASK);
        if seen >= rank {
            return representative((e >> COUNT_BITS) as u16);
        }
    }
    buckets
        .last()
        .map_or(0, |e| representative((e >> COUNT_BITS) as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is the formula: on every value below 2^24 (16.8 s in µs), on both
    /// sides of every bucket boundary and sub-range end below 2^40, and above it.
    #[test]
    fn bucket_table_is_the_formula() {
        for v in 0..1u64 << 24 {
            assert_eq!(bucket_of(v), bucket_by_formula(v), "{v}");
        }
        let table = &*BUCKET_TABLE;
        // Below 50 a bucket is narrower than 1 and some hold no integer: upper 0.
        for (b, &u) in table.upper.iter().enumerate().filter(|&(_, &u)| u > 0) {
            for v in [u - 1, u, u + 1] {
                assert_eq!(bucket_of(v), bucket_by_formula(v), "bucket {b}: {v}");
            }
            assert_eq!(usize::from(bucket_by_formula(u)), b);
        }
        for key in 1..table.start.len() {
            let (lo, hi) = table_range(key);
            assert_eq!(table_key(lo), key);
            assert_eq!(table_key(hi), key);
            assert!(
                bucket_by_formula(hi) - bucket_by_formula(lo) <= 1,
                "{lo}..{hi}"
            );
            for v in [lo, hi] {
                assert_eq!(bucket_of(v), bucket_by_formula(v), "{v}");
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..1_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = x >> (x % 64);
            assert_eq!(bucket_of(v), bucket_by_formula(v), "{v}");
        }
        assert_eq!(bucket_of(u64::MAX), bucket_by_formula(u64::MAX));
    }

    #[test]
    fn nearest_rank_on_small_sets() {
        let mut d = Digest::default();
        for v in [15, 20, 35, 40, 50] {
            d.record(v);
        }
        let s = d.summary().unwrap();
        // Nearest rank: p50 = 3rd of 5, p90 = 5th, p99 = 5th.
        assert_eq!(
            (s.min, s.p50, s.p90, s.p99, s.max, s.mean),
            (15, 35, 50, 50, 50, 32)
        );
    }

    #[test]
    fn merge_is_order_independent_and_large_sets_stay_within_one_percent() {
        let (mut a, mut b) = (Digest::default(), Digest::default());
        for v in 1..=1000u64 {
            if v % 2 == 0 {
                a.record(v * 100)
            } else {
                b.record(v * 100)
            }
        }
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab.summary(), ba.summary());
        let p90 = ab.summary().unwrap().p90 as f64;
        assert!((p90 - 90_000.0).abs() / 90_000.0 <= 0.01, "{p90}");
    }
    #[test]
    fn inline_and_heap_values_count_alike() {
        // 1..=20 shuffled: past the inline values, still exact.
        let vals: Vec<u64> = (1..=20u64).map(|i| (i * 7) % 20 + 1).collect();
        let mut one = Digest::default();
        let mut merged = Digest::default();
        for chunk in vals.chunks(3) {
            let mut part = Digest::default();
            for &v in chunk {
                one.record(v);
                part.record(v);
            }
            merged.merge(&part);
        }
        let s = one.summary().unwrap();
        // Nearest rank over 1..=20: p50 = 10th, p90 = 18th, p99 = 20th.
        assert_eq!(
            (s.count, s.min, s.p50, s.p90, s.p99, s.max, s.mean),
            (20, 1, 10, 18, 20, 20, 10)
        );
        assert_eq!(merged.summary(), Some(s));
        // Crossing EXACT_MAX through merges of small parts spills like recording does.
        let (mut big, mut parts) = (Digest::default(), Digest::default());
        for i in 0..600u64 {
            big.record(i * 37 % 1000);
            let mut p = Digest::default();
            p.record(i * 37 % 1000);
            parts.merge(&p);
        }
        assert!(big.sketched && parts.sketched);
        assert_eq!(big.summary(), parts.summary());
    }

    /// Nearest-rank percentiles from the sketch stay within 1 % of the exact ones, for
    /// spreads from narrow to six decades.
    #[test]
    fn sketch_percentiles_stay_within_one_percent() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for decades in [1u32, 3, 6] {
            let mut d = Digest::default();
            let mut all = Vec::new();
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let f = (x % 1_000_000) as f64 / 1_000_000.0;
                let v = (100.0 * 10f64.powf(f * f64::from(decades))) as u64;
                d.record(v);
                all.push(v);
            }
            all.sort_unstable();
            for q in [0.5, 0.9, 0.99] {
                let exact = all[nearest_rank(q, all.len() as u64) as usize - 1] as f64;
                let got = d.quantile(q) as f64;
                assert!(
                    (got - exact).abs() <= exact * 0.01 + 1.0,
                    "{decades}: {q} {got} {exact}"
                );
            }
            assert!(d.heap.len() <= MAX_BUCKETS);
        }
    }

    /// However wide the values, the sketch keeps at most MAX_BUCKETS, and folding the lowest
    /// gives the same result in any merge order.
    #[test]
    fn sketch_is_bounded_and_merges_in_any_order() {
        let (mut a, mut b) = (Digest::default(), Digest::default());
        for i in 0..3000u64 {
            // 1,400 values 3 % apart: more buckets than are kept.
            let v = (10.0 * 1.03f64.powi(((i * 3) % 1400) as i32)) as u64;
            if i % 3 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
        }
        assert!(a.heap.len() <= MAX_BUCKETS);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab.summary(), ba.summary());
        assert_eq!(ab.heap, ba.heap);
        assert_eq!(ab.heap.len(), MAX_BUCKETS);
    }
}
