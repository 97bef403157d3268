//! mysql: placeholder until its parser lands (recognises nothing, reports nothing).
#![allow(unused_imports)]

use crate::detect::Probe;
use crate::{Direction, Events, Limits, Session, Transport};

pub struct MysqlSession {}

impl MysqlSession {
    pub fn new(mid_stream: bool, limits: &Limits) -> Self { let _ = (mid_stream, limits); MysqlSession {} }
}

pub fn probe(data: &[u8], port_hint: bool) -> Probe { let _ = (data, port_hint); Probe::No }

impl Session for MysqlSession {
    fn feed(&mut self, _dir: Direction, data: &[u8], _out: &mut Events) -> usize {
        data.len()
    }
    fn gap(&mut self, _dir: Direction) {}
    fn close(&mut self, _dir: Direction, _out: &mut Events) {}
    fn in_message(&self, _dir: Direction) -> bool {
        false
    }
}
