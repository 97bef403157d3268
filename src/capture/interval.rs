//! Interval boundaries in packet time. Intervals are aligned: interval k covers
//! [k·len, (k+1)·len) nanoseconds since the epoch, so every party (reader, worker) that
//! sees the same times agrees on the index without talking to the others.

/// Past this many empty intervals in one step, jump instead of closing each one (a clock
/// step or a bogus timestamp must not make millions of empty documents).
const MAX_EMPTY_STEPS: i64 = 10_000;

/// Where one party stands.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    len: i64,
    index: Option<i64>,
    /// The end of the current interval (the first time that belongs to the next one).
    next: i64,
}

/// One step towards a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do: the time is inside the current interval.
    Within,
    /// The first time seen: the party starts in this interval (everything before it is,
    /// for this party, done and empty).
    Start(i64),
    /// This interval is over: report it.
    Close(i64),
}

impl Clock {
    /// `len_ns` None: one interval for the whole run.
    pub fn new(len_ns: Option<i64>) -> Clock {
        Clock {
            len: len_ns.unwrap_or(i64::MAX).max(1),
            index: None,
            next: i64::MIN,
        }
    }

    /// A clock that never starts or closes anything (offline analysis).
    pub fn off() -> Clock {
        Clock {
            len: i64::MAX,
            index: Some(0),
            next: i64::MAX,
        }
    }

    /// The first time of the next interval: callers compare packet times against it
    /// (one comparison per packet) and call `step` only when it is reached.
    #[inline]
    pub fn next(&self) -> i64 {
        self.next
    }

    pub fn index(&self) -> Option<i64> {
        self.index
    }

    pub fn bounds(len: i64, index: i64) -> (i64, i64) {
        (
            index.saturating_mul(len),
            index.saturating_add(1).saturating_mul(len),
        )
    }

    /// Move towards time `ts`; call until it returns `Within`.
    pub fn step(&mut self, ts: i64) -> Step {
        match self.index {
            None => {
                let k = ts.div_euclid(self.len);
                self.index = Some(k);
                self.next = Clock::bounds(self.len, k).1;
                Step::Start(k)
            }
            Some(k) if ts >= self.next => {
                let target = ts.div_euclid(self.len);
                let to = if target.saturating_sub(k) > MAX_EMPTY_STEPS {
                    target
                } else {
                    k + 1
                };
                self.index = Some(to);
                self.next = Clock::bounds(self.len, to).1;
                Step::Close(k)
            }
            Some(_) => Step::Within,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn steps(c: &mut Clock, ts: i64) -> Vec<Step> {
        let mut v = Vec::new();
        loop {
            match c.step(ts) {
                Step::Within => return v,
                s => v.push(s),
            }
        }
    }

    #[test]
    fn boundaries_are_aligned_in_packet_time() {
        let mut c = Clock::new(Some(10 * S));
        assert_eq!(steps(&mut c, 1_234 * S + 5), vec![Step::Start(123)]);
        assert_eq!(c.next(), 1_240 * S);
        // Still inside [1230 s, 1240 s).
        assert!(steps(&mut c, 1_239 * S + 999_999_999).is_empty());
        // Exactly on the boundary belongs to the next interval.
        assert_eq!(steps(&mut c, 1_240 * S), vec![Step::Close(123)]);
        // Skipping two intervals closes each one, so every party reports each index.
        assert_eq!(
            steps(&mut c, 1_275 * S),
            vec![Step::Close(124), Step::Close(125), Step::Close(126)]
        );
        assert_eq!(c.index(), Some(127));
    }

    #[test]
    fn a_huge_jump_closes_once_and_moves_on() {
        let mut c = Clock::new(Some(S));
        steps(&mut c, 0);
        let v = steps(&mut c, 1_000_000 * S);
        assert_eq!(v, vec![Step::Close(0)]);
        assert_eq!(c.index(), Some(1_000_000));
    }

    #[test]
    fn whole_run_never_closes_and_negative_times_floor() {
        let mut c = Clock::new(None);
        assert_eq!(steps(&mut c, 5 * S), vec![Step::Start(0)]);
        assert!(steps(&mut c, i64::MAX - 1).is_empty());
        let mut c = Clock::new(Some(S));
        assert_eq!(steps(&mut c, -1), vec![Step::Start(-1)]);
        let mut off = Clock::off();
        assert!(steps(&mut off, 5 * S).is_empty());
    }
}
