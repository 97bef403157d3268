//! The join stage's helpers. Merging the workers' edges runs once, after the input ends:
//! with tens of thousands of edges it took a fifth of a whole run on one thread (keying
//! edges by their ids, merging, building edge documents). Keying and building are split
//! into contiguous parts on several threads, whose results are concatenated in order, so
//! the document is the same whatever the number of parts; the merge itself runs on one
//! (see [`merge_sorted`]).

use super::{EdgeAgg, EdgeKey};

/// An edge as the document sorts edges: client id, server id, transport, protocol.
pub(super) type DocKey = (String, String, &'static str, &'static str);

/// One worker's edge, keyed for the merge.
pub(super) struct Keyed {
    pub key: DocKey,
    pub edge: EdgeKey,
    /// Boxed: entries are moved several times on the way (sorted, merged), and an aggregate
    /// is hundreds of bytes.
    pub agg: Box<EdgeAgg>,
}

/// Below this many edges the join runs on the calling thread: starting threads would cost
/// more than it saves.
const MIN_PARALLEL_EDGES: usize = 4_096;

/// How many parts to split `edges` edges of work into.
pub(super) fn parts_for(edges: usize) -> usize {
    if edges < MIN_PARALLEL_EDGES {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// `f` applied to every item, in order, the items split into at most `parts` contiguous
/// runs handled by their own threads (the first on the calling one).
pub(super) fn par_map<T, U, F>(items: Vec<T>, parts: usize, f: F) -> Vec<U>
where
    T: Send,
    U: Send,
    F: Fn(T) -> U + Sync,
{
    par_map_ahead(items, parts, |_: &[T]| {}, f)
}

/// [`par_map`], with `ahead` shown the items after each one before `f` takes it: for
/// prefetching what the next items will read.
pub(super) fn par_map_ahead<T, U, A, F>(items: Vec<T>, parts: usize, ahead: A, f: F) -> Vec<U>
where
    T: Send,
    U: Send,
    A: Fn(&[T]) + Sync,
    F: Fn(T) -> U + Sync,
{
    let run_map = |run: Vec<T>| -> Vec<U> {
        let mut out = Vec::with_capacity(run.len());
        let mut rest = run.into_iter();
        while let Some(item) = rest.next() {
            ahead(rest.as_slice());
            out.push(f(item));
        }
        out
    };
    let parts = parts.clamp(1, items.len().max(1));
    if parts == 1 {
        return run_map(items);
    }
    let per = items.len().div_ceil(parts);
    let mut runs: Vec<Vec<T>> = Vec::with_capacity(parts);
    let mut rest = items;
    while rest.len() > per {
        let tail = rest.split_off(per);
        runs.push(rest);
        rest = tail;
    }
    runs.push(rest);
    let run_map = &run_map;
    let mut out: Vec<Vec<U>> = std::thread::scope(|s| {
        let mut runs = runs.into_iter();
        let first = runs.next().unwrap_or_default();
        let handles: Vec<_> = runs.map(|run| s.spawn(move || run_map(run))).collect();
        let mut out = vec![run_map(first)];
        for h in handles {
            match h.join() {
                Ok(v) => out.push(v),
                // A panic in a part is a bug: surface it as the caller's own.
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        out
    });
    let mut all = Vec::with_capacity(out.iter().map(Vec::len).sum());
    for v in out.iter_mut() {
        all.append(v);
    }
    all
}

/// How many edges ahead the join asks for an aggregate (and its keys' texts), and for
/// what the aggregate points to (read from the aggregate, which is in cache by then).
const AGG_AHEAD: usize = 16;
const SIDE_AHEAD: usize = 8;

/// Prefetch for walking `rest` in order: the aggregate and key texts `AGG_AHEAD` places
/// on, the aggregate's vectors `SIDE_AHEAD` places on. The join reads tens of thousands
/// of aggregates the workers' threads left all over the heap: one after another, each
/// miss stalled the walk (the edge documents took 27 ms for 22 k edges on two threads).
pub(super) fn prefetch_ahead(rest: &[Keyed]) {
    if let Some(k) = rest.get(AGG_AHEAD) {
        prefetch_entry(k);
    }
    if let Some(k) = rest.get(SIDE_AHEAD) {
        k.agg.side_memory(crate::prefetch::span);
    }
}

/// Start loading an edge's aggregate and the first bytes of its key's texts.
fn prefetch_entry(k: &Keyed) {
    crate::prefetch::value(&*k.agg);
    crate::prefetch::line(k.key.0.as_ptr());
    crate::prefetch::line(k.key.1.as_ptr());
}

/// `f` on every edge in order, the aggregates and key texts `AGG_AHEAD` places on
/// prefetched (for walks that read an aggregate's own fields, not its vectors).
pub(super) fn walk_ahead(edges: &[Keyed], mut f: impl FnMut(&Keyed)) {
    for (i, e) in edges.iter().enumerate() {
        if let Some(k) = edges.get(i + AGG_AHEAD) {
            prefetch_entry(k);
        }
        f(e);
    }
}

/// Key `edges` and sort them by key, equal keys in their given order.
pub(super) fn sorted_by_key(
    edges: impl Iterator<Item = (EdgeKey, Box<EdgeAgg>)>,
    key: impl Fn(&EdgeKey) -> DocKey,
) -> Vec<Keyed> {
    let mut list: Vec<Keyed> = edges
        .map(|(edge, agg)| Keyed {
            key: key(&edge),
            edge,
            agg,
        })
        .collect();
    // Stable: equal keys keep their order.
    list.sort_by(|a, b| a.key.cmp(&b.key));
    list
}

/// Merge lists each sorted by key into one sorted list where every key appears once: a k-way
/// merge (k is the number of workers: a linear scan of the heads beats a heap). Equal keys
/// are merged in list order (and in order within a list), as if each list were added in
/// turn; that matters where a merge is order-dependent (a capped client set). The
/// aggregates merged into others go to `spent`, to be freed later.
///
/// On the calling thread only. Merging grows the first list's vectors, which its worker's
/// malloc arena holds, and two threads merging key ranges took turns on that arena's lock
/// (perf: a quarter of the merge in futex waits and wake-ups). For 22 k edges from each of
/// two workers, the merge took 29–50 ms on two threads and 25–27 ms on one (medians of
/// alternating runs, in a busy and a quiet hour).
pub(super) fn merge_sorted(lists: Vec<Vec<Keyed>>, spent: &mut Spent) -> Vec<Keyed> {
    let mut out = Vec::with_capacity(lists.iter().map(Vec::len).max().unwrap_or(0));
    let mut iters: Vec<std::vec::IntoIter<Keyed>> = lists.into_iter().map(Vec::into_iter).collect();
    let mut heads: Vec<Option<Keyed>> = iters.iter_mut().map(Iterator::next).collect();
    loop {
        // The smallest head; the first list wins ties.
        let mut min: Option<usize> = None;
        for (i, h) in heads.iter().enumerate() {
            if let Some(h) = h {
                let better = match min.and_then(|m| heads.get(m)).and_then(Option::as_ref) {
                    Some(cur) => h.key < cur.key,
                    None => true,
                };
                if better {
                    min = Some(i);
                }
            }
        }
        let Some(i) = min else { break };
        for it in &iters {
            prefetch_ahead(it.as_slice());
        }
        let Some(mut cur) = take_head(&mut heads, &mut iters, i) else {
            break;
        };
        // Every other entry with this key, first list first, each list's own in order.
        while let Some(j) = heads
            .iter()
            .position(|h| h.as_ref().is_some_and(|h| h.key == cur.key))
        {
            if let Some(next) = take_head(&mut heads, &mut iters, j) {
                cur.agg.merge(&next.agg);
                spent.0.push(next.agg);
            }
        }
        out.push(cur);
    }
    out
}

/// Aggregates the join no longer needs. Freeing them as it goes cost a quarter of the join
/// (tens of thousands of small allocations, made by the workers' threads, freed under the
/// allocator's lock from the join's); they are dropped with the document instead, which a
/// one-shot run never drops before it exits.
// Boxes kept as they are: unboxing would free each box, the cost this avoids.
#[allow(clippy::vec_box)]
#[derive(Default)]
pub struct Spent(pub(super) Vec<Box<EdgeAgg>>);

impl std::fmt::Debug for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spent({} aggregates)", self.0.len())
    }
}

fn take_head(
    heads: &mut [Option<Keyed>],
    iters: &mut [std::vec::IntoIter<Keyed>],
    i: usize,
) -> Option<Keyed> {
    let slot = heads.get_mut(i)?;
    let taken = slot.take();
    *slot = iters.get_mut(i).and_then(Iterator::next);
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Endpoint;

    fn keyed(client: &str, connections: u64) -> Keyed {
        let server = Endpoint {
            ip: [10, 0, 0, 9].into(),
            port: 80,
        };
        Keyed {
            key: (client.to_string(), server.id(), "tcp", "http"),
            edge: EdgeKey {
                client: client.parse().unwrap_or([0, 0, 0, 0].into()),
                vip_port: None,
                server,
                udp: false,
                protocol: "http",
            },
            agg: Box::new(EdgeAgg {
                connections,
                ..EdgeAgg::default()
            }),
        }
    }

    fn sorted(mut v: Vec<Keyed>) -> Vec<Keyed> {
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    #[test]
    fn merging_gives_one_sorted_sum_per_key() {
        // Three workers with overlapping clients; the sums are known by construction.
        let lists: Vec<Vec<Keyed>> = (0..3u64)
            .map(|w| {
                sorted(
                    (0..5_000u64)
                        .filter(|c| c.is_multiple_of(w + 2))
                        .map(|c| keyed(&format!("10.1.{}.{}", c / 250, c % 250), w + 1))
                        .collect(),
                )
            })
            .collect();
        let want = |c: u64| {
            (0..3u64)
                .filter(|w| c.is_multiple_of(w + 2))
                .map(|w| w + 1)
                .sum::<u64>()
        };
        let mut spent = Spent::default();
        let one = merge_sorted(lists, &mut spent);
        assert!(one.windows(2).all(|w| w[0].key < w[1].key));
        for e in &one {
            let ip: std::net::Ipv4Addr = e.key.0.parse().unwrap();
            let [_, _, hi, lo] = ip.octets();
            assert_eq!(e.agg.connections, want(u64::from(hi) * 250 + u64::from(lo)));
        }
        let total: u64 = (0..5_000).map(want).sum();
        assert_eq!(one.iter().map(|e| e.agg.connections).sum::<u64>(), total);
    }

    #[test]
    fn equal_keys_within_one_list_are_merged_too() {
        let lists = vec![
            vec![keyed("10.0.0.1", 1), keyed("10.0.0.1", 2)],
            vec![keyed("10.0.0.1", 4), keyed("10.0.0.2", 8)],
        ];
        let mut spent = Spent::default();
        let m = merge_sorted(lists, &mut spent);
        assert_eq!(spent.0.len(), 2);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].agg.connections, 7);
        assert_eq!(m[1].agg.connections, 8);
    }

    #[test]
    fn par_map_keeps_the_order() {
        let v: Vec<u32> = (0..10_001).collect();
        for parts in [1, 2, 7, 20_000] {
            let out = par_map(v.clone(), parts, |x| x * 2);
            assert_eq!(out, v.iter().map(|x| x * 2).collect::<Vec<_>>());
        }
        assert!(par_map(Vec::<u32>::new(), 4, |x| x).is_empty());
    }
}
