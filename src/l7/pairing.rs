//! Request/response pairing: in order (HTTP, MySQL, Redis pipelines) or by id (DNS).
//!
//! Pending requests live as long as their connection, and a capture holds many open
//! connections at once, so they are kept small: a fixed 32-byte entry each, with the
//! resource's text (and the record text, only when records are written) in one byte vector
//! beside them, in the same order. Both queues start at what the first request needs (most
//! connections never have two requests outstanding) and keep their capacity, so steady
//! traffic does not allocate.

use std::collections::VecDeque;

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

/// Pending requests in arrival order.
#[derive(Debug, Default)]
pub struct Pairing {
    queue: VecDeque<Entry>,
    /// Each entry's resource bytes, then its record text's, back to back in queue order.
    /// A plain vector: taking from the front moves what follows, which is nothing unless
    /// requests are pipelined (and at most `max_pending_requests` entries' worth).
    texts: Vec<u8>,
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
        self.queue.is_empty()
    }

    /// Requests waiting for their response.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Bytes the waiting requests take: their entries and texts.
    pub fn bytes(&self) -> usize {
        self.queue.len() * std::mem::size_of::<Entry>() + self.texts.len()
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
        if self.queue.len() >= max.max(1) {
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
        if self.queue.capacity() == 0 {
            self.queue.reserve_exact(1);
        }
        self.queue.push_back(Entry {
            start_ts: r.start_ts,
            end_ts: r.end_ts,
            bytes: r.bytes,
            id: r.id.unwrap_or(0),
            resource_len,
            flags,
            text_len,
        });
        if self.texts.capacity() == 0 {
            self.texts
                .reserve_exact(resource.len().saturating_add(text_bytes.len()));
        }
        self.texts.extend_from_slice(resource);
        self.texts.extend_from_slice(text_bytes);
        true
    }

    /// A request with this id and resource is pending.
    fn pending(&self, id: Option<u32>, resource: &Resource) -> bool {
        let bytes = &self.texts;
        let mut at = 0usize;
        for e in &self.queue {
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
        let at: usize = self.queue.iter().take(i).map(Entry::len).sum();
        let e = self.queue.remove(i)?;
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
        self.texts.drain(at.min(end)..end);
        let req = PendingRequest {
            resource,
            id: e.id(),
            start_ts: e.start_ts,
            end_ts: e.end_ts,
            bytes: e.bytes,
        };
        Some((req, record))
    }

    /// The request this response answers, if any is pending, with its record text.
    pub fn response(&mut self, resp: &Response) -> Option<(PendingRequest, Option<RequestText>)> {
        let i = match resp.id {
            Some(id) => self.queue.iter().position(|p| p.id() == Some(id))?,
            // In order (all but DNS): the oldest.
            None => 0,
        };
        self.take(i, resp.error)
    }

    /// Where the oldest pending requests and their texts are (for a prefetch; nothing is
    /// read).
    pub fn memory(&self) -> [(*const u8, usize); 2] {
        let front = self.queue.as_slices().0;
        [
            (front.as_ptr().cast(), std::mem::size_of_val(front)),
            (self.texts.as_ptr(), self.texts.len()),
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
