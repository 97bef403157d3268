//! A worker's flow table: a chunked slab of flows, a hash index holding only slab ids
//! (keyed hashing, so crafted 5-tuples cannot force collisions), and an intrusive LRU list
//! used to expire idle flows and to evict the least recently seen one when the table is
//! full. Memory grows in fixed chunks with the number of concurrent flows (no doubling
//! spikes), and nothing is allocated once the chunks exist.

use hashbrown::HashTable;

use super::{Flow, FlowKey};

pub(crate) const NIL: u32 = u32::MAX;
const CHUNK: usize = 4096;

pub struct FlowTable {
    hasher: ahash::RandomState,
    index: HashTable<u32>,
    chunks: Vec<Box<[Option<Flow>]>>,
    /// Slots never used yet start here; freed slots go to `free`.
    next_fresh: u32,
    free: Vec<u32>,
    len: usize,
    head: u32,
    tail: u32,
    max: usize,
}

impl FlowTable {
    pub fn new(max: usize) -> Self {
        FlowTable {
            hasher: ahash::RandomState::new(),
            index: HashTable::new(),
            chunks: Vec::new(),
            next_fresh: 0,
            free: Vec::new(),
            len: 0,
            head: NIL,
            tail: NIL,
            max: max.clamp(1, NIL as usize - 1),
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
        let h = self.hasher.hash_one(key);
        self.index
            .find(h, |&id| self.slot(id).is_some_and(|f| f.key == *key))
            .copied()
    }

    pub fn get_mut(&mut self, id: u32) -> &mut Flow {
        match self.slot_mut(id) {
            Some(f) => f,
            None => unreachable!("flow ids come from the index"),
        }
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
                }
                self.next_fresh += 1;
                id
            }
        };
        let h = self.hasher.hash_one(flow.key);
        *self.slot_mut(id) = Some(flow);
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.index.insert_unique(h, id, |&other| {
            let (c, i) = (other as usize / CHUNK, other as usize % CHUNK);
            chunks
                .get(c)
                .and_then(|ch| ch.get(i))
                .and_then(Option::as_ref)
                .map(|f| hasher.hash_one(f.key))
                .unwrap_or(0)
        });
        self.len += 1;
        self.link_front(id);
        id
    }

    /// Remove a flow and return it.
    pub fn remove(&mut self, id: u32) -> Flow {
        self.unlink(id);
        let flow = match self.slot_mut(id).take() {
            Some(f) => f,
            None => unreachable!("flow ids come from the index"),
        };
        let h = self.hasher.hash_one(flow.key);
        if let Ok(entry) = self.index.find_entry(h, |&x| x == id) {
            entry.remove();
        }
        self.free.push(id);
        self.len -= 1;
        flow
    }

    /// Mark a flow as just seen.
    pub fn touch(&mut self, id: u32) {
        if self.head != id {
            self.unlink(id);
            self.link_front(id);
        }
    }

    /// The least recently seen flow.
    pub fn oldest(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// The ids of every flow, most recent first, into `out` (reused).
    pub fn ids(&self, out: &mut Vec<u32>) {
        out.clear();
        let mut id = self.head;
        while id != NIL && out.len() < self.len {
            out.push(id);
            id = self.get(id).lru_next;
        }
    }

    /// Take every flow out (end of input), oldest first.
    pub fn drain(&mut self) -> Vec<Flow> {
        let mut out = Vec::with_capacity(self.len());
        while let Some(id) = self.oldest() {
            out.push(self.remove(id));
        }
        out
    }

    fn link_front(&mut self, id: u32) {
        let old = self.head;
        {
            let f = self.get_mut(id);
            f.lru_prev = NIL;
            f.lru_next = old;
        }
        if old != NIL {
            self.get_mut(old).lru_prev = id;
        } else {
            self.tail = id;
        }
        self.head = id;
    }

    fn unlink(&mut self, id: u32) {
        let (prev, next) = {
            let f = self.get(id);
            (f.lru_prev, f.lru_next)
        };
        if prev != NIL {
            self.get_mut(prev).lru_next = next;
        } else if self.head == id {
            self.head = next;
        }
        if next != NIL {
            self.get_mut(next).lru_prev = prev;
        } else if self.tail == id {
            self.tail = prev;
        }
        let f = self.get_mut(id);
        f.lru_prev = NIL;
        f.lru_next = NIL;
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
        t.touch(first);
        assert_eq!(t.get(t.oldest().unwrap()).key, key(1));
        let f = t.remove(id);
        assert_eq!(f.key, key(7));
        assert!(t.find(&key(7)).is_none());
        // A freed slot is reused.
        let again = t.insert(Flow::new(key(99_999), 0, 0, true));
        assert_eq!(again, id);
        assert_eq!(t.drain().len(), 5000);
        assert!(t.is_empty());
    }
}
