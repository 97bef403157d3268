//! A worker's flow table: a slab of flows, a keyed hash index (resistant to hash
//! flooding), and an intrusive LRU list used to expire idle flows and to evict the least
//! recently seen one when the table is full. No allocation once the slab has grown.

use std::collections::HashMap;

use super::{Flow, FlowKey};

pub(crate) const NIL: u32 = u32::MAX;

pub struct FlowTable {
    index: HashMap<FlowKey, u32, ahash::RandomState>,
    slab: Vec<Option<Flow>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    max: usize,
}

impl FlowTable {
    pub fn new(max: usize) -> Self {
        FlowTable {
            index: HashMap::with_hasher(ahash::RandomState::new()),
            slab: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            max: max.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.index.len() >= self.max
    }

    pub fn find(&self, key: &FlowKey) -> Option<u32> {
        self.index.get(key).copied()
    }

    pub fn get_mut(&mut self, id: u32) -> &mut Flow {
        match self.slab.get_mut(id as usize).and_then(Option::as_mut) {
            Some(f) => f,
            None => unreachable!("flow ids come from the index"),
        }
    }

    pub fn get(&self, id: u32) -> &Flow {
        match self.slab.get(id as usize).and_then(Option::as_ref) {
            Some(f) => f,
            None => unreachable!("flow ids come from the index"),
        }
    }

    /// Insert a new flow (the caller made room first) and make it most recent.
    pub fn insert(&mut self, flow: Flow) -> u32 {
        let key = flow.key;
        let id = match self.free.pop() {
            Some(id) => {
                self.slab[id as usize] = Some(flow);
                id
            }
            None => {
                self.slab.push(Some(flow));
                (self.slab.len() - 1) as u32
            }
        };
        self.index.insert(key, id);
        self.link_front(id);
        id
    }

    /// Remove a flow and return it.
    pub fn remove(&mut self, id: u32) -> Flow {
        self.unlink(id);
        let flow = match self.slab.get_mut(id as usize).and_then(Option::take) {
            Some(f) => f,
            None => unreachable!("flow ids come from the index"),
        };
        self.index.remove(&flow.key);
        self.free.push(id);
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
