//! dns: placeholder until its parser lands (recognises nothing, reports nothing).
#![allow(unused_imports)]

use crate::detect::Probe;
use crate::{Direction, Events, Limits, Session, Transport};

pub struct DnsSession {}

impl DnsSession {
    pub fn new(transport: Transport, limits: &Limits) -> Self { let _ = (transport, limits); DnsSession {} }
}

pub fn probe(transport: Transport, data: &[u8]) -> Probe { let _ = (transport, data); Probe::No }

impl Session for DnsSession {
    fn feed(&mut self, _dir: Direction, data: &[u8], _out: &mut Events) -> usize {
        data.len()
    }
    fn gap(&mut self, _dir: Direction) {}
    fn close(&mut self, _dir: Direction, _out: &mut Events) {}
    fn in_message(&self, _dir: Direction) -> bool {
        false
    }
}
