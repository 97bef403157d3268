//! A worker's flow table: a chunked slab of flows, an open-addressing index holding only
//! slab ids and hash bits (keyed hashing, so crafted 5-tuples cannot force collisions), and
//! LRU lists used to expire idle flows and, when the table is full, to evict a connection
//! whose close is complete or else the least recently seen flow. The lists' links live in
//! a dense array beside the slab, not in the flows: moving a flow rewrites its neighbours'
//! links, and as fields of flows hundreds of bytes apart those were two cache misses per
//! move (4 % of a worker's time in a profile).
//!
//! There is one list per timeout class (UDP, closed, attempt, established, and the two that
//! eviction takes first: closed with both FINs acknowledged, and UDP with its L7 state
//! settled): in a single list a busy connection with a 300 s timeout at the old end would
//! hold back every closed one behind it, whose 10 s linger had long passed, and memory
//! would grow with the length of the capture instead of with the flows open at once. A
//! packet moves its flow to the front only after an eighth of its list's timeout (the
//! worker decides), so a list's order may be that stale.
//!
//! Memory grows in fixed chunks with the number of concurrent flows (no doubling spikes
//! for flows), and nothing is allocated once the chunks exist.
//!
//! The index is written here rather than taken from hashbrown because its layout is known:
//! the worker prefetches the index slot and then the flow of packets a few places ahead in
//! its batch, which hides most of the cache misses a large table costs per packet.

use super::{Flow, FlowKey};
use crate::prefetch::{line as prefetch, span as prefetch_span};

pub(crate) const NIL: u32 = u32::MAX;
const CHUNK: usize = 4096;

/// An index slot: the low 32 bits of the key's hash (high half) and the flow id (low half).
/// Empty when the id is NIL.
const EMPTY: u64 = NIL as u64;
const MIN_SLOTS: usize = 1024;

/// Linear probing at a load factor of at most one half, deletion by backward shift (no
/// tombstones, so probe lengths stay short however many flows come and go).
struct Index {
    slots: Vec<u64>,
    mask: usize,
    len: usize,
}

fn slot_id(e: u64) -> u32 {
    e as u32
}

fn slot_hash(e: u64) -> u32 {
    (e >> 32) as u32
}

impl Index {
    fn new() -> Index {
        Index {
            slots: vec![EMPTY; MIN_SLOTS],
            mask: MIN_SLOTS - 1,
            len: 0,
        }
    }

    fn home(&self, h: u32) -> usize {
        h as usize & self.mask
    }

    fn at(&self, i: usize) -> u64 {
        self.slots.get(i & self.mask).copied().unwrap_or(EMPTY)
    }

    fn set(&mut self, i: usize, e: u64) {
        if let Some(s) = self.slots.get_mut(i & self.mask) {
            *s = e;
        }
    }

    fn prefetch(&self, h: u32) {
        if let Some(s) = self.slots.get(self.home(h)) {
            prefetch(s as *const u64 as *const u8);
        }
    }

    fn find(&self, h: u32, mut eq: impl FnMut(u32) -> bool) -> Option<(usize, u32)> {
        let mut i = self.home(h);
        // At most half the slots are used, so an empty one ends every probe.
        for _ in 0..=self.mask {
            let e = self.at(i);
            let id = slot_id(e);
            if id == NIL {
                return None;
            }
            if slot_hash(e) == h && eq(id) {
                return Some((i & self.mask, id));
            }
            i = i.wrapping_add(1);
        }
        None
    }

    /// Insert without checking for a duplicate (the caller looked first).
    fn insert(&mut self, h: u32, id: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.place(h, id);
        self.len += 1;
    }

    fn place(&mut self, h: u32, id: u32) {
        let mut i = self.home(h);
        for _ in 0..=self.mask {
            if slot_id(self.at(i)) == NIL {
                self.set(i, (u64::from(h) << 32) | u64::from(id));
                return;
            }
            i = i.wrapping_add(1);
        }
    }

    fn grow(&mut self) {
        let doubled = vec![EMPTY; self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, doubled);
        self.mask = self.slots.len() - 1;
        for e in old {
            if slot_id(e) != NIL {
                self.place(slot_hash(e), slot_id(e));
            }
        }
    }

    /// Remove the entry at slot `i`, shifting later entries of its probe run back.
    fn remove_at(&mut self, i: usize) {
        let mut hole = i & self.mask;
        let mut j = hole;
        for _ in 0..self.mask {
            j = (j + 1) & self.mask;
            let e = self.at(j);
            if slot_id(e) == NIL {
                break;
            }
            // An entry may move into the hole only if its home is not after the hole
            // (cyclically) on the way to where it sits.
            let home = self.home(slot_hash(e));
            let dist_home = j.wrapping_sub(home) & self.mask;
            let dist_hole = j.wrapping_sub(hole) & self.mask;
            if dist_home >= dist_hole {
                self.set(hole, e);
                hole = j;
            }
        }
        self.set(hole, EMPTY);
        self.len -= 1;
    }
}

pub struct FlowTable {
    hasher: ahash::RandomState,
    index: Index,
    chunks: Vec<Box<[Option<Flow>]>>,
    /// Per slot id: its place in its expiry list.
    links: Vec<Link>,
    /// Slots never used yet start here; freed slots go to `free`.
    next_fresh: u32,
    free: Vec<u32>,
    len: usize,
    /// Per timeout class ([`Flow::timeout_class`]): most recent first.
    lists: [List; LISTS],
    max: usize,
}

const LISTS: usize = 6;
/// Most flows eviction moves to the front before taking the oldest regardless.
const EVICT_MOVES: usize = 16;

/// A flow's place in its expiry list.
#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
    /// The list the flow is on ([`Flow::timeout_class`] when it was last linked).
    list: u8,
    /// Packet time of the flow's last move to the front of its list.
    ts: i64,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
    list: 0,
    ts: 0,
};

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY_LIST: List = List {
    head: NIL,
    tail: NIL,
};

impl FlowTable {
    pub fn new(max: usize) -> Self {
        FlowTable {
            hasher: ahash::RandomState::new(),
            index: Index::new(),
            chunks: Vec::new(),
            links: Vec::new(),
            next_fresh: 0,
            free: Vec::new(),
            len: 0,
            lists: [EMPTY_LIST; LISTS],
            max: max.clamp(1, NIL as usize - 1),
        }
    }

    /// The keyed hash of `key`, for the `_hashed` lookups and prefetches.
    pub fn hash(&self, key: &FlowKey) -> u32 {
        self.hasher.hash_one(key) as u32
    }

    /// Start loading the index slot where `hash`'s probe begins.
    pub fn prefetch_index(&self, hash: u32) {
        self.index.prefetch(hash);
    }

    /// The id the index probably holds for `hash`: the first entry with the same hash bits,
    /// without comparing keys (which would load the flow). Only for prefetching.
    pub fn probable(&self, hash: u32) -> Option<u32> {
        self.index.find(hash, |_| true).map(|(_, id)| id)
    }

    /// Start loading flow `id` and its list link, without reading them. Every line of the
    /// flow: its fields are laid out by the compiler, and the ones a packet needs were
    /// measured missing the cache when only the first four lines were asked for.
    pub fn prefetch_flow(&self, id: u32) {
        let (c, i) = (id as usize / CHUNK, id as usize % CHUNK);
        if let Some(ch) = self.chunks.get(c) {
            prefetch_span(
                ch.as_ptr().wrapping_add(i) as *const u8,
                std::mem::size_of::<Option<Flow>>(),
            );
        }
        if let Some(l) = self.links.get(id as usize) {
            prefetch(l as *const Link as *const u8);
        }
    }

    /// Start loading the L7 state of flow `id` (its pointer is read, so the flow's line
    /// should be in cache already).
    pub fn prefetch_l7(&self, id: u32) {
        if let Some(conn) = self.slot(id).and_then(|f| f.l7.as_deref()) {
            prefetch_span(
                conn as *const crate::l7::L7Conn as *const u8,
                std::mem::size_of::<crate::l7::L7Conn>(),
            );
        }
    }

    /// Start loading the parser session, pending requests and tally vectors of flow `id`
    /// (its L7 state should be in cache).
    pub fn prefetch_session(&self, id: u32) {
        if let Some(conn) = self.slot(id).and_then(|f| f.l7.as_deref()) {
            conn.side_memory(|p, len| {
                if len > 0 {
                    prefetch_span(p, len);
                }
            });
        }
    }

    /// Flow `id` is about to end and the flows after it in its expiry list probably end
    /// next (the final drain, a sweep of expired flows): start loading the one after next,
    /// and the L7 state, session and edge of the next (its flow is loaded by now).
    pub fn prefetch_after(&self, id: u32) {
        let next = self.link(id).prev;
        if next != NIL {
            let after = self.link(next).prev;
            if after != NIL {
                self.prefetch_flow(after);
            }
            self.prefetch_l7(next);
            self.prefetch_session(next);
            self.prefetch_edge(next);
        }
    }

    /// Start loading the edge aggregate flow `id`'s counters will go to, if its L7 state
    /// was settled there (the flow should be in cache).
    pub fn prefetch_edge(&self, id: u32) {
        if let Some(f) = self.slot(id) {
            if f.edge_hint != 0 {
                prefetch_span(
                    f.edge_hint as *const u8,
                    std::mem::size_of::<crate::report::EdgeAgg>(),
                );
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.max
    }

    fn slot(&self, id: u32) -> Option<&Flow> {
        let (c, i) = (id as usize / CHUNK, id as usize % CHUNK);
        self.chunks
            .get(c)
            .and_then(|ch| ch.get(i))
            .and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, id: u32) -> &mut Option<Flow> {
        let (c, i) = (id as usize / CHUNK, id as usize % CHUNK);
        match self.chunks.get_mut(c).and_then(|ch| ch.get_mut(i)) {
            Some(s) => s,
            None => unreachable!("slot ids are allocated before use"),
        }
    }

    pub fn find(&self, key: &FlowKey) -> Option<u32> {
        self.find_hashed(self.hash(key), key)
    }

    /// `find` with the hash already computed by [`FlowTable::hash`].
    pub fn find_hashed(&self, hash: u32, key: &FlowKey) -> Option<u32> {
        self.index
            .find(hash, |id| self.slot(id).is_some_and(|f| f.key == *key))
            .map(|(_, id)| id)
    }

    pub fn get_mut(&mut self, id: u32) -> &mut Flow {
        match self.slot_mut(id) {
            Some(f) => f,
            None => unreachable!("flow ids come from the index"),
        }
    }

    /// The flow in slot `id`, if the slot holds one (an id kept across batches may have
    /// been freed, or reused by another flow).
    pub fn get_mut_if_present(&mut self, id: u32) -> Option<&mut Flow> {
        let (c, i) = (id as usize / CHUNK, id as usize % CHUNK);
        self.chunks
            .get_mut(c)
            .and_then(|ch| ch.get_mut(i))
            .and_then(Option::as_mut)
    }

    pub fn get(&self, id: u32) -> &Flow {
        match self.slot(id) {
            Some(f) => f,
            None => unreachable!("flow ids come from the index"),
        }
    }

    /// Insert a new flow (the caller made room first) and make it most recent.
    pub fn insert(&mut self, flow: Flow) -> u32 {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let id = self.next_fresh;
                if id as usize / CHUNK >= self.chunks.len() {
                    self.chunks.push((0..CHUNK).map(|_| None).collect());
                    self.links.resize(self.chunks.len() * CHUNK, UNLINKED);
                }
                self.next_fresh += 1;
                id
            }
        };
        let h = self.hash(&flow.key);
        let (list, ts) = (flow.timeout_class(), flow.last_ts);
        *self.slot_mut(id) = Some(flow);
        self.index.insert(h, id);
        self.len += 1;
        self.link_front(id, list, ts);
        id
    }

    /// Remove a flow and return it.
    pub fn remove(&mut self, id: u32) -> Flow {
        self.unlink(id);
        let flow = match self.slot_mut(id).take() {
            Some(f) => f,
            None => unreachable!("flow ids come from the index"),
        };
        let h = self.hash(&flow.key);
        if let Some((at, _)) = self.index.find(h, |x| x == id) {
            self.index.remove_at(at);
        }
        self.free.push(id);
        self.len -= 1;
        flow
    }

    /// Take the oldest flow out, to empty the table at the end of a run. The first call
    /// drops the whole index: finding and removing each flow's entry costs a hash and a
    /// cache miss per flow (30 % of the final drain in a profile), and nothing is looked up
    /// in a table being emptied. Once called, only `drain_oldest` may be used.
    pub fn drain_oldest(&mut self) -> Option<Flow> {
        if self.index.len > 0 {
            self.index = Index::new();
        }
        let id = self.oldest()?;
        self.prefetch_after(id);
        self.unlink(id);
        let flow = match self.slot_mut(id).take() {
            Some(f) => f,
            None => unreachable!("listed flows are in the slab"),
        };
        self.free.push(id);
        self.len -= 1;
        Some(flow)
    }

    fn link(&self, id: u32) -> Link {
        self.links.get(id as usize).copied().unwrap_or(UNLINKED)
    }

    fn link_mut(&mut self, id: u32) -> &mut Link {
        match self.links.get_mut(id as usize) {
            Some(l) => l,
            None => unreachable!("slot ids are allocated before use"),
        }
    }

    /// The expiry list flow `id` is on, and the packet time it was last moved to its front.
    pub fn listed(&self, id: u32) -> (u8, i64) {
        let l = self.link(id);
        (l.list, l.ts)
    }

    /// Mark a flow as seen at `ts`: the front of its list.
    pub fn touch(&mut self, id: u32, ts: i64) {
        let list = self.link(id).list;
        self.unlink(id);
        self.link_front(id, list, ts);
    }

    /// Move a flow whose state changed its idle timeout to the list of that timeout.
    pub fn relist(&mut self, id: u32) {
        let f = self.get(id);
        let (list, ts) = (f.timeout_class(), f.last_ts);
        if list != self.link(id).list {
            self.unlink(id);
            self.link_front(id, list, ts);
        }
    }

    /// The least recently seen flow (to within the worker's touch interval).
    pub fn oldest(&self) -> Option<u32> {
        self.lists
            .iter()
            .filter(|l| l.tail != NIL)
            .min_by_key(|l| self.link(l.tail).ts)
            .map(|l| l.tail)
    }

    /// A flow to evict when the table is full. First a connection whose close is complete
    /// (both FINs sent and acknowledged; its own list), the one completed longest ago: its
    /// counts went to its edge when it closed and nothing but a retransmission can follow,
    /// so evicting it loses nothing. Then a UDP flow whose L7 state was settled while idle
    /// (its own list too): its tally is in its edge, and evicting it costs at most a second
    /// flow if its 5-tuple speaks again within the UDP timeout. Evicting an open connection
    /// instead loses what it has not yet said (requests in flight; the rest of it becomes a
    /// connection without an opener). Otherwise the oldest of the lists' old ends that had
    /// no packet since it was last moved; those that had go to the front first (their place
    /// may be an eighth of a timeout stale), at most [`EVICT_MOVES`], then the oldest goes.
    pub fn evictable(&mut self) -> Option<u32> {
        for class in [Flow::CLOSE_COMPLETE_CLASS, Flow::UDP_SETTLED_CLASS] {
            let settled = self.lists.get(usize::from(class));
            if let Some(l) = settled.filter(|l| l.tail != NIL) {
                return Some(l.tail);
            }
        }
        for _ in 0..EVICT_MOVES {
            let id = self.oldest()?;
            let ts = self.get(id).last_ts;
            if ts <= self.link(id).ts {
                return Some(id);
            }
            self.touch(id, ts);
        }
        self.oldest()
    }

    /// A flow idle past its timeout at `now`, if the old end of a list holds one. Each list
    /// has one timeout and is ordered by time of last touch, so once a list's oldest flow
    /// is still live the rest of that list is too (to within the touch interval).
    pub fn expired(&self, now: i64, limits: &crate::limits::Limits) -> Option<u32> {
        self.lists
            .iter()
            .map(|l| l.tail)
            .find(|&t| t != NIL && self.get(t).expired(now, limits))
    }

    /// The ids of every flow into `out` (reused).
    pub fn ids(&self, out: &mut Vec<u32>) {
        out.clear();
        for l in &self.lists {
            let mut id = l.head;
            while id != NIL && out.len() < self.len {
                out.push(id);
                id = self.link(id).next;
            }
        }
    }

    fn link_front(&mut self, id: u32, list: u8, ts: i64) {
        let list = usize::from(list).min(LISTS - 1);
        let old = self.lists[list].head;
        *self.link_mut(id) = Link {
            prev: NIL,
            next: old,
            list: list as u8,
            ts,
        };
        if old != NIL {
            self.link_mut(old).prev = id;
        } else {
            self.lists[list].tail = id;
        }
        self.lists[list].head = id;
    }

    fn unlink(&mut self, id: u32) {
        let Link {
            prev, next, list, ..
        } = self.link(id);
        let list = usize::from(list).min(LISTS - 1);
        if prev != NIL {
            self.link_mut(prev).next = next;
        } else if self.lists[list].head == id {
            self.lists[list].head = next;
        }
        if next != NIL {
            self.link_mut(next).prev = prev;
        } else if self.lists[list].tail == id {
            self.lists[list].tail = prev;
        }
        let l = self.link_mut(id);
        l.prev = NIL;
        l.next = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Endpoint;

    fn key(i: u32) -> FlowKey {
        let a = Endpoint {
            ip: std::net::IpAddr::from(i.to_be_bytes()),
            port: 1000,
        };
        let b = Endpoint {
            ip: "10.0.0.1".parse().unwrap(),
            port: 80,
        };
        FlowKey::new(a, b, 6, 0).0
    }

    #[test]
    fn insert_find_remove_and_lru_order() {
        let mut t = FlowTable::new(10_000);
        for i in 0..5000 {
            t.insert(Flow::new(key(i), 0, i64::from(i), true));
        }
        assert_eq!(t.len(), 5000);
        let id = t.find(&key(7)).unwrap();
        assert_eq!(t.get(id).key, key(7));
        // The oldest is the first inserted until it is touched.
        assert_eq!(t.get(t.oldest().unwrap()).key, key(0));
        let first = t.find(&key(0)).unwrap();
        t.touch(first, 10_000);
        assert_eq!(t.get(t.oldest().unwrap()).key, key(1));
        // Eviction gives a flow seen since its last move a second chance.
        let second = t.find(&key(1)).unwrap();
        t.get_mut(second).last_ts = 20_000;
        let e = t.evictable().unwrap();
        assert_eq!(t.get(e).key, key(2));
        let f = t.remove(id);
        assert_eq!(f.key, key(7));
        assert!(t.find(&key(7)).is_none());
        // A freed slot is reused.
        let again = t.insert(Flow::new(key(99_999), 0, 0, true));
        assert_eq!(again, id);
        // Draining gives every flow once, least recently moved first: the untouched ones
        // in insertion order, then 0 and 1 (moved by the touch and the eviction), then the
        // one inserted last.
        let mut order = Vec::new();
        while let Some(f) = t.drain_oldest() {
            order.push(f.key);
        }
        let mut want: Vec<FlowKey> = (2..5000).filter(|&i| i != 7).map(key).collect();
        want.extend([key(0), key(1), key(99_999)]);
        assert_eq!(order, want);
        assert!(t.is_empty());
        assert!(t.drain_oldest().is_none());
    }

    /// A full table evicts a connection whose close is complete before an open one that
    /// was seen longer ago; a connection whose last FIN is not yet acknowledged is not
    /// preferred (its last ACK would start a flow of its own). Next come UDP flows whose L7
    /// state was settled.
    #[test]
    fn eviction_takes_completed_closes_then_settled_udp_flows_before_open_connections() {
        // Both sides' FINs at the given sequence numbers, acknowledged up to `acks`.
        fn closing(k: u32, ts: i64, acks: [u32; 2]) -> Flow {
            let mut f = Flow::new(key(k), 0, ts, true);
            f.established = true;
            f.seq[0].syn(100);
            f.seq[1].syn(500);
            // The FINs take one sequence number each: 101 and 501.
            f.seq[0].segment(101, 1, false);
            f.seq[1].segment(501, 1, false);
            f.fin = [true, true];
            f.max_ack = [Some(acks[0]), Some(acks[1])];
            f
        }
        let mut t = FlowTable::new(3);
        let mut open = Flow::new(key(1), 0, 0, true);
        open.established = true;
        let open = t.insert(open);
        // Side 1 has acknowledged side 0's FIN (102), side 0 not yet side 1's (502).
        let half = t.insert(closing(2, 10, [501, 102]));
        assert!(!t.get(half).close_complete());
        assert_eq!(t.evictable(), Some(open), "least recently seen, as before");
        let done = t.insert(closing(3, 20, [502, 102]));
        assert!(t.get(done).close_complete());
        assert!(t.is_full());
        assert_eq!(t.evictable(), Some(done));
        t.remove(done);
        assert_eq!(t.evictable(), Some(open));
        // A UDP flow whose L7 state was settled comes next, before the open connection;
        // one that may still say something does not.
        let mut dns = Flow::new(key(4), 0, 30, false);
        dns.l7_done = Some(("dns", None));
        let dns = t.insert(dns);
        assert_eq!(t.evictable(), Some(dns));
        t.remove(dns);
        let active = t.insert(Flow::new(key(5), 0, 40, false));
        assert_eq!(t.evictable(), Some(open));
        t.remove(active);
        let done = t.insert(closing(6, 50, [502, 102]));
        let mut dns = Flow::new(key(7), 0, 5, false);
        dns.l7_done = Some(("dns", None));
        t.remove(half);
        t.insert(dns);
        assert_eq!(
            t.evictable(),
            Some(done),
            "a completed close before a settled UDP flow"
        );
    }

    /// A closed connection expires after its short linger even when a busy connection with
    /// the long idle timeout was linked before it; eviction takes the least recently seen
    /// flow across the lists.
    #[test]
    fn each_timeout_expires_in_its_own_list() {
        let limits = crate::limits::Limits::default();
        let sec = 1_000_000_000i64;
        let mut t = FlowTable::new(10);
        let mut busy = Flow::new(key(1), 0, 0, true);
        busy.established = true;
        let busy = t.insert(busy);
        let closing = t.insert(Flow::new(key(2), 0, sec, true));
        let dns = t.insert(Flow::new(key(3), 0, 2 * sec, false));
        assert_eq!(t.oldest(), Some(busy));
        {
            let f = t.get_mut(closing);
            f.established = true;
            f.fin = [true, true];
            f.last_ts = 3 * sec;
        }
        t.relist(closing);
        t.get_mut(busy).last_ts = 20 * sec;
        t.touch(busy, 20 * sec);
        assert_eq!(t.oldest(), Some(dns));
        // At 14 s only the closed one is past its timeout (10 s linger); at 63 s the UDP
        // flow too (60 s); the busy one, seen at 20 s, lasts to 320 s.
        assert_eq!(t.expired(14 * sec, &limits), Some(closing));
        t.remove(closing);
        assert_eq!(t.expired(14 * sec, &limits), None);
        assert_eq!(t.expired(63 * sec, &limits), Some(dns));
        t.remove(dns);
        assert_eq!(t.expired(319 * sec, &limits), None);
        assert_eq!(t.expired(321 * sec, &limits), Some(busy));
        let mut ids = Vec::new();
        t.ids(&mut ids);
        assert_eq!(ids, vec![busy]);
    }

    /// The index against a model, with hashes forced into few home slots so probe runs
    /// are long, wrap around the end, and deletions shift entries back across the wrap.
    #[test]
    fn index_matches_a_model_under_churn() {
        let mut idx = Index::new();
        let mut model: std::collections::HashMap<u32, u32> = Default::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = (x % 3000) as u32;
            // Homes near the end of the table: runs wrap to slot 0.
            let h = (id % 7) | 0x3f8 | ((id & 0xfff) << 16);
            match model.get(&id) {
                Some(&mh) if step % 3 != 0 => {
                    let (at, found) = idx.find(mh, |i| i == id).expect("present");
                    assert_eq!(found, id);
                    idx.remove_at(at);
                    model.remove(&id);
                }
                Some(_) => {}
                None => {
                    idx.insert(h, id);
                    model.insert(id, h);
                }
            }
            assert_eq!(idx.len, model.len());
        }
        for (&id, &h) in &model {
            assert_eq!(idx.find(h, |i| i == id).map(|(_, i)| i), Some(id));
        }
        let absent = (0..3000).find(|i| !model.contains_key(i)).unwrap();
        let h = (absent % 7) | 0x3f8 | ((absent & 0xfff) << 16);
        assert!(idx.find(h, |i| i == absent).is_none());
    }
}
