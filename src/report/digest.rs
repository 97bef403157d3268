//! Latency and RTT distributions: exact while small (so small edges get exact nearest-rank
//! percentiles), an HDR histogram (1 % precision, as the contract allows) once large.
//! Merging is order-independent, so results do not depend on the number of workers.

use hdrhistogram::Histogram;

const EXACT_MAX: usize = 512;
/// Values kept inline before `exact` allocates: most connections have only a few.
const FEW: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct Digest {
    /// Exact mode: the values are `few[..few_len]` followed by `exact`.
    few: [u64; FEW],
    few_len: u8,
    exact: Vec<u64>,
    hist: Option<Box<Histogram<u64>>>,
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
    pub fn record(&mut self, v: u64) {
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        self.max = self.max.max(v);
        self.count += 1;
        self.sum += u128::from(v);
        match &mut self.hist {
            Some(h) => {
                let _ = h.record(v);
            }
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
            None => self.exact.push(v),
        }
    }

    fn exact_len(&self) -> usize {
        usize::from(self.few_len) + self.exact.len()
    }

    /// The values held in exact mode.
    fn exact_values(&self) -> impl Iterator<Item = u64> + '_ {
        let few = self.few.get(..usize::from(self.few_len)).unwrap_or(&[]);
        few.iter().chain(&self.exact).copied()
    }

    fn spill(&mut self) {
        let mut h = match Histogram::<u64>::new(2) {
            Ok(h) => h,
            Err(_) => return,
        };
        h.auto(true);
        for v in self.exact_values() {
            let _ = h.record(v);
        }
        self.few_len = 0;
        self.exact = Vec::new();
        self.hist = Some(Box::new(h));
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
            match &mut self.hist {
                Some(h) => {
                    let _ = h.record(v);
                }
                None => self.push_exact(v),
            }
        }
        if let Some(oh) = &o.hist {
            if self.hist.is_none() {
                self.spill();
            }
            if let Some(h) = &mut self.hist {
                let _ = h.add(oh.as_ref());
            }
        }
        if self.hist.is_none() && self.exact_len() > EXACT_MAX {
            self.spill();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Nearest-rank value at quantile `q`: the ceil(q·n)-th smallest.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        match &self.hist {
            Some(h) => h.value_at_quantile(q).clamp(self.min, self.max),
            None => {
                let mut v: Vec<u64> = self.exact_values().collect();
                v.sort_unstable();
                let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
                v[rank - 1]
            }
        }
    }

    pub fn summary(&self) -> Option<Summary> {
        (self.count > 0).then(|| Summary {
            count: self.count,
            min: self.min,
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            max: self.max,
            mean: (self.sum / u128::from(self.count)) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(big.hist.is_some() && parts.hist.is_some());
        assert_eq!(big.summary(), parts.summary());
    }
}
