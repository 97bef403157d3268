//! Request/response pairing: in order (HTTP, MySQL, Redis pipelines) or by id (DNS).

use std::collections::VecDeque;

use protocols::event::{RequestText, Resource};
use protocols::Response;

use crate::limits::LimitHits;

#[derive(Debug, Clone)]
pub struct PendingRequest {
    pub resource: Resource,
    pub id: Option<u32>,
    /// Packet time of the request's first and last packets.
    pub start_ts: i64,
    pub end_ts: i64,
    pub bytes: u64,
}

/// Pending requests in arrival order. Their record texts are kept in a parallel queue only
/// when records are written, so without `--records` a pending request stays small.
#[derive(Debug, Default)]
pub struct Pairing {
    queue: VecDeque<PendingRequest>,
    texts: VecDeque<RequestText>,
}

impl Pairing {
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
        if r.id.is_some()
            && self
                .queue
                .iter()
                .any(|p| p.id == r.id && p.resource == r.resource)
        {
            return false;
        }
        if self.queue.len() >= max.max(1) {
            self.queue.pop_front();
            self.texts.pop_front();
            hits.pending_requests_dropped += 1;
        }
        self.queue.push_back(r);
        if let Some(t) = text {
            self.texts.push_back(*t);
        }
        true
    }

    /// The request this response answers, if any is pending, with its record text.
    pub fn response(&mut self, resp: &Response) -> Option<(PendingRequest, Option<RequestText>)> {
        match resp.id {
            Some(id) => {
                let i = self.queue.iter().position(|p| p.id == Some(id))?;
                let req = self.queue.remove(i)?;
                Some((req, self.texts.remove(i)))
            }
            // In order (all but DNS): the oldest, without the general removal's shuffling.
            None => {
                let req = self.queue.pop_front()?;
                Some((req, self.texts.pop_front()))
            }
        }
    }

    /// Requests still waiting (the connection ended without their response).
    pub fn drain(&mut self) -> Vec<(PendingRequest, Option<RequestText>)> {
        let mut texts = std::mem::take(&mut self.texts).into_iter();
        self.queue.drain(..).map(|p| (p, texts.next())).collect()
    }
}
