//! tls: placeholder until its parser lands (recognises nothing, reports nothing).
#![allow(unused_imports)]

use crate::detect::Probe;
use crate::{Direction, Events, Limits, Session, Transport};

pub struct TlsSession {}

impl TlsSession {
    pub fn new(limits: &Limits) -> Self { let _ = limits; TlsSession {} }
}

pub fn probe(data: &[u8]) -> Probe { let _ = data; Probe::No }

impl Session for TlsSession {
    fn feed(&mut self, _dir: Direction, data: &[u8], _out: &mut Events) -> usize {
        data.len()
    }
    fn gap(&mut self, _dir: Direction) {}
    fn close(&mut self, _dir: Direction, _out: &mut Events) {}
    fn in_message(&self, _dir: Direction) -> bool {
        false
    }
}
