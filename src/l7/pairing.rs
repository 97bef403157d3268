//! Request/response pairing: in order (HTTP, MySQL, Redis pipelines) or by id (DNS).

use std::collections::VecDeque;

use protocols::event::{RequestText, Resource};
use protocols::Response;

use crate::limits::LimitHits;

#[derive(Debug, Clone)]
pub struct PendingRequest {
    pub resource: Resource,
    pub text: RequestText,
    pub id: Option<u32>,
    /// Packet time of the request's first and last packets.
    pub start_ts: i64,
    pub end_ts: i64,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub struct Pairing {
    queue: VecDeque<PendingRequest>,
}

impl Pairing {
    /// Queue a request. Returns false for a DNS retransmission (same id and question
    /// still pending), which is the same request and counts once.
    pub fn request(&mut self, r: PendingRequest, max: usize, hits: &mut LimitHits) -> bool {
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
            hits.pending_requests_dropped += 1;
        }
        self.queue.push_back(r);
        true
    }

    /// The request this response answers, if any is pending.
    pub fn response(&mut self, resp: &Response) -> Option<PendingRequest> {
        match resp.id {
            Some(id) => {
                let i = self.queue.iter().position(|p| p.id == Some(id))?;
                self.queue.remove(i)
            }
            None => self.queue.pop_front(),
        }
    }

    /// Requests still waiting (the connection ended without their response).
    pub fn drain(&mut self) -> impl Iterator<Item = PendingRequest> + '_ {
        self.queue.drain(..)
    }
}
