//! Request/response pairing: in order (HTTP, MySQL, Redis pipelines) or by id (DNS).
//!
//! Pending requests live as long as their connection, and a capture holds many open
//! connections at once, so they are kept small: a fixed 32-byte entry each, with the
//! resource's text (and the record text, only when records are written) in one byte vector
//! beside them, in the same order. Both hold their first request inline (most connections
//! never have two requests outstanding, and a vector of its own was two allocations per
//! connection, with the allocator's cache misses on freeing them) and keep their capacity
//! once they grow, so steady traffic does not allocate.

use protocols::event::{RequestText, Resource};
use protocols::Response;

use crate::limits::LimitHits;

#[derive(Debug, Clone)]
pub struct PendingRequest {
    /// Given back by [`Pairing::response`] only for an error response, its one use there
    /// (rebuilding it checks its UTF-8 again, per response); empty otherwise.
    pub resource: Resource,
    pub id: Option<u32>,
    /// Packet time of the request's first and last packets.
    pub start_ts: i64,
    pub end_ts: i64,
    pub bytes: u64,
}

/// One pending request; its texts are the next `resource_len + text_len` bytes of
/// [`Pairing::texts`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    start_ts: i64,
    end_ts: i64,
    bytes: u64,
    id: u32,
    resource_len: u8,
    flags: u8,
    text_len: u16,
}

const HAS_ID: u8 = 1;
const RESOURCE_CUT: u8 = 2;
const HAS_TEXT: u8 = 4;
const TEXT_CUT: u8 = 8;

// The lengths fit their fields.
const _: () = assert!(Resource::CAPACITY <= u8::MAX as usize);
const _: () = assert!(RequestText::CAPACITY <= u16::MAX as usize);

impl Entry {
    fn id(&self) -> Option<u32> {
        (self.flags & HAS_ID != 0).then_some(self.id)
    }

    fn len(&self) -> usize {
        usize::from(self.resource_len) + usize::from(self.text_len)
    }
}

/// Resource bytes held inline before the texts take an allocation: a typical resource
/// ("GET /api/v1/cart/items", "SELECT products").
const INLINE_TEXT: usize = 32;

/// Answered requests at the front of the queues past which the rest is moved down.
const COMPACT_AFTER: usize = 16;

/// Pending requests in arrival order.
#[derive(Debug, Default)]
pub struct Pairing {
    /// Entries from `head` on are pending; those before it were answered in order and are
    /// dropped once the queue empties or they are half of it (so a pipeline of hundreds
    /// of requests does not move the rest at every response).
    queue: smallvec::SmallVec<[Entry; 1]>,
    head: usize,
    /// Each entry's resource bytes, then its record text's, back to back in queue order;
    /// the pending ones from `text_head` on.
    texts: smallvec::SmallVec<[u8; INLINE_TEXT]>,
    text_head: usize,
}

/// `bytes` (stored from a text of the same kind) back as that text.
fn text<const N: usize>(bytes: Option<&[u8]>, cut: bool) -> protocols::Text<N> {
    let s = bytes
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("");
    protocols::Text::from_parts(s, cut)
}

impl Pairing {
    /// No request is waiting for its response.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests waiting for their response.
    pub fn len(&self) -> usize {
        self.queue.len() - self.head
    }

    /// Bytes the waiting requests take: their entries and texts.
    pub fn bytes(&self) -> usize {
        self.len() * std::mem::size_of::<Entry>() + self.texts.len() - self.text_head
    }

    fn pending_entries(&self) -> &[Entry] {
        self.queue.get(self.head..).unwrap_or_default()
    }

    /// Queue a request (with its record text when records are on). Returns false for a
    /// DNS retransmission (same id and question still pending): the same request, counted
    /// once.
    pub fn request(
        &mut self,
        r: PendingRequest,
        text: Option<&RequestText>,
        max: usize,
        hits: &mut LimitHits,
    ) -> bool {
        if r.id.is_some() && self.pending(r.id, &r.resource) {
            return false;
        }
        if self.len() >= max.max(1) {
            self.take(0, false);
            hits.pending_requests_dropped += 1;
        }
        let resource = r.resource.as_str().as_bytes();
        let resource_len = u8::try_from(resource.len()).unwrap_or(u8::MAX);
        let resource = resource.get(..usize::from(resource_len)).unwrap_or(&[]);
        let text_bytes = text.map(|t| t.as_str().as_bytes()).unwrap_or(&[]);
        let text_len = u16::try_from(text_bytes.len()).unwrap_or(u16::MAX);
        let text_bytes = text_bytes.get(..usize::from(text_len)).unwrap_or(&[]);
        let mut flags = 0;
        for (on, flag) in [
            (r.id.is_some(), HAS_ID),
            (r.resource.is_cut(), RESOURCE_CUT),
            (text.is_some(), HAS_TEXT),
            (text.is_some_and(|t| t.is_cut()), TEXT_CUT),
        ] {
            if on {
                flags |= flag;
            }
        }
        self.queue.push(Entry {
            start_ts: r.start_ts,
            end_ts: r.end_ts,
            bytes: r.bytes,
            id: r.id.unwrap_or(0),
            resource_len,
            flags,
            text_len,
        });
        self.texts.extend_from_slice(resource);
        self.texts.extend_from_slice(text_bytes);
        true
    }

    /// A request with this id and resource is pending.
    fn pending(&self, id: Option<u32>, resource: &Resource) -> bool {
        let bytes = &self.texts;
        let mut at = self.text_head;
        for e in self.pending_entries() {
            let len = usize::from(e.resource_len);
            if e.id() == id
                && (e.flags & RESOURCE_CUT != 0) == resource.is_cut()
                && bytes.get(at..at.saturating_add(len)) == Some(resource.as_str().as_bytes())
            {
                return true;
            }
            at = at.saturating_add(e.len());
        }
        false
    }

    /// Remove the `i`th pending request (its resource left empty unless `with_resource`).
    fn take(
        &mut self,
        i: usize,
        with_resource: bool,
    ) -> Option<(PendingRequest, Option<RequestText>)> {
        let pending = self.pending_entries();
        let e = *pending.get(i)?;
        let at = self.text_head + pending.iter().take(i).map(Entry::len).sum::<usize>();
        let bytes = &self.texts;
        let mid = at.saturating_add(usize::from(e.resource_len));
        let end = mid.saturating_add(usize::from(e.text_len));
        let resource = if with_resource {
            text(bytes.get(at..mid), e.flags & RESOURCE_CUT != 0)
        } else {
            Resource::new()
        };
        let record =
            (e.flags & HAS_TEXT != 0).then(|| text(bytes.get(mid..end), e.flags & TEXT_CUT != 0));
        let end = end.min(self.texts.len());
        if i == 0 {
            self.head += 1;
            self.text_head = end;
        } else {
            self.queue.remove(self.head + i);
            self.texts.drain(at.min(end)..end);
        }
        self.compact();
        let req = PendingRequest {
            resource,
            id: e.id(),
            start_ts: e.start_ts,
            end_ts: e.end_ts,
            bytes: e.bytes,
        };
        Some((req, record))
    }

    /// Drop the answered entries at the front when nothing is pending or they are half
    /// the queue.
    fn compact(&mut self) {
        if self.head == self.queue.len() {
            self.queue.clear();
            self.texts.clear();
        } else if self.head >= COMPACT_AFTER && self.head * 2 >= self.queue.len() {
            self.queue.drain(..self.head);
            self.texts.drain(..self.text_head.min(self.texts.len()));
        } else {
            return;
        }
        self.head = 0;
        self.text_head = 0;
    }

    /// The request this response answers, if any is pending, with its record text.
    pub fn response(&mut self, resp: &Response) -> Option<(PendingRequest, Option<RequestText>)> {
        let i = match resp.id {
            Some(id) => self
                .pending_entries()
                .iter()
                .position(|p| p.id() == Some(id))?,
            // In order (all but DNS): the oldest.
            None => 0,
        };
        self.take(i, resp.error)
    }

    /// Where the oldest pending requests and their texts are (for a prefetch; nothing is
    /// read).
    pub fn memory(&self) -> [(*const u8, usize); 2] {
        let texts = self.texts.get(self.text_head..).unwrap_or_default();
        let pending = self.pending_entries();
        [
            (pending.as_ptr().cast(), std::mem::size_of_val(pending)),
            (texts.as_ptr(), texts.len()),
        ]
    }

    /// Requests still waiting (the connection ended without their response).
    pub fn drain(&mut self) -> Vec<(PendingRequest, Option<RequestText>)> {
        std::iter::from_fn(|| self.take(0, true)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(resource: &str, id: Option<u32>, ts: i64) -> PendingRequest {
        PendingRequest {
            resource: Resource::from_str_lossy(resource),
            id,
            start_ts: ts,
            end_ts: ts + 1,
            bytes: ts as u64 * 10,
        }
    }

    /// An error response: the resource comes back with it.
    fn resp(id: Option<u32>) -> Response {
        Response {
            code: protocols::event::Code::from_str_lossy("500"),
            error: true,
            kind: protocols::event::Code::from_str_lossy("200"),
            id,
            bytes: 1,
        }
    }

    #[test]
    fn in_order_requests_come_back_whole_with_their_texts() {
        let mut p = Pairing::default();
        let mut hits = LimitHits::default();
        let long = "GET /".to_string() + &"é".repeat(80);
        let t1 = RequestText::from_str_lossy("GET /a?x=");
        assert!(p.request(req("GET /a", None, 1), Some(&t1), 8, &mut hits));
        assert!(p.request(req(&long, None, 2), None, 8, &mut hits));
        assert!(p.request(req("", None, 3), Some(&RequestText::new()), 8, &mut hits));
        let (r, t) = p.response(&resp(None)).unwrap();
        assert_eq!(
            (r.resource.as_str(), r.start_ts, r.end_ts, r.bytes),
            ("GET /a", 1, 2, 10)
        );
        assert_eq!(t, Some(t1));
        let (r, t) = p.response(&resp(None)).unwrap();
        assert_eq!(r.resource, Resource::from_str_lossy(&long));
        assert!(r.resource.is_cut());
        assert_eq!(t, None);
        let (r, t) = p.response(&resp(None)).unwrap();
        assert_eq!((r.resource.as_str(), t), ("", Some(RequestText::new())));
        assert!(p.response(&resp(None)).is_none());
    }

    #[test]
    fn a_success_gives_no_resource_back() {
        let mut p = Pairing::default();
        let mut hits = LimitHits::default();
        assert!(p.request(req("GET /a", None, 1), None, 8, &mut hits));
        let ok = Response {
            error: false,
            ..resp(None)
        };
        let (r, _) = p.response(&ok).unwrap();
        assert_eq!((r.resource.as_str(), r.start_ts), ("", 1));
    }

    #[test]
    fn by_id_pairs_out_of_order_and_retransmissions_count_once() {
        let mut p = Pairing::default();
        let mut hits = LimitHits::default();
        assert!(p.request(req("a.example A", Some(1), 1), None, 8, &mut hits));
        assert!(p.request(req("b.example A", Some(2), 2), None, 8, &mut hits));
        assert!(!p.request(req("a.example A", Some(1), 3), None, 8, &mut hits));
        assert!(p.request(req("a.example AAAA", Some(1), 4), None, 8, &mut hits));
        let (r, _) = p.response(&resp(Some(2))).unwrap();
        assert_eq!(r.resource.as_str(), "b.example A");
        let (r, _) = p.response(&resp(Some(1))).unwrap();
        assert_eq!((r.resource.as_str(), r.start_ts), ("a.example A", 1));
        assert!(p.response(&resp(Some(2))).is_none());
        let left = p.drain();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0.resource.as_str(), "a.example AAAA");
    }

    #[test]
    fn a_long_pipeline_pairs_in_order_through_compactions() {
        let mut p = Pairing::default();
        let mut hits = LimitHits::default();
        // What should come back, in order: a plain queue as the model.
        let mut model = std::collections::VecDeque::new();
        // Requests and responses interleaved so the answered front is dropped at various
        // points: when the queue empties, and when it is half of what is held.
        for round in 0..40i64 {
            for k in 0..(round % 7 + 1) * 9 {
                let ts = round * 1000 + k;
                let t = RequestText::from_str_lossy(&format!("text {ts}"));
                let r = req(&format!("GET /{ts}"), None, ts);
                assert!(p.request(r, Some(&t), 1024, &mut hits));
                model.push_back(ts);
            }
            for _ in 0..(round % 5 + 1) * 8 {
                let got = p.response(&resp(None));
                let Some(want) = model.pop_front() else {
                    assert!(got.is_none());
                    break;
                };
                let (r, t) = got.unwrap();
                assert_eq!(r.start_ts, want);
                assert_eq!(r.resource.as_str(), format!("GET /{want}"));
                assert_eq!(t.unwrap().as_str(), format!("text {want}"));
            }
            assert_eq!(p.len(), model.len());
            assert_eq!(p.bytes() == 0, model.is_empty());
        }
        assert!(p.head < 2 * COMPACT_AFTER || p.head * 2 < p.queue.len());
        assert_eq!(hits.pending_requests_dropped, 0);
    }

    #[test]
    fn the_oldest_is_dropped_at_the_limit_and_counted() {
        let mut p = Pairing::default();
        let mut hits = LimitHits::default();
        for i in 0..5 {
            assert!(p.request(req(&format!("GET /{i}"), None, i), None, 3, &mut hits));
        }
        assert_eq!(hits.pending_requests_dropped, 2);
        let left: Vec<_> = p.drain().into_iter().map(|(r, _)| r.start_ts).collect();
        assert_eq!(left, [2, 3, 4]);
    }
}
