//! A worker: owns its flow table (no locks), turns packets into connection state and
//! finished connections into edge sums.

use std::collections::hash_map::Entry;

use super::batch::{Batch, PacketMeta};
use crate::capture::interval::{Clock, Step};
use crate::decode::tcp_flags::{ACK, SYN};
use crate::flow::{Endpoint, Flow, FlowKey, FlowTable};
use crate::l7::{Ctx, L7Conn, RecordSink};
use crate::limits::Limits;
use crate::report::{ConnSummary, EdgeKey, WorkerResult};

/// How stale a flow's LRU position may get before a packet moves it to the front.
const LRU_TOUCH_NS: i64 = 50_000_000;

pub struct Worker {
    table: FlowTable,
    limits: Limits,
    vlan_key: bool,
    l7: bool,
    out: WorkerResult,
    now: i64,
    since_sweep: u32,
    records: Option<RecordSink>,
    /// Scratch buffer for parser events, shared by all connections of this worker.
    events: protocols::Events,
    /// Out-of-order bytes held by all connections of this worker.
    held_total: usize,
    /// Live intervals (offline: never reached).
    clock: Clock,
    /// Live: closed intervals' results (None: progress only), collected by the caller.
    pub parts: Vec<(i64, Option<WorkerResult>)>,
    ids: Vec<u32>,
    /// Bytes of partial L7 messages held by all connections of this worker.
    carry_total: usize,
    /// The test hook's fault, if any (see `fault`).
    fault: Option<super::fault::Fault>,
}

impl Worker {
    pub fn new(
        limits: Limits,
        max_flows: usize,
        vlan_key: bool,
        l7: bool,
        records: Option<RecordSink>,
        fault: Option<super::fault::Fault>,
    ) -> Worker {
        Worker {
            fault,
            records,
            events: Vec::with_capacity(64),
            held_total: 0,
            carry_total: 0,
            table: FlowTable::new(max_flows),
            limits,
            vlan_key,
            l7,
            out: WorkerResult::default(),
            now: i64::MIN,
            since_sweep: 0,
            clock: Clock::off(),
            parts: Vec::new(),
            ids: Vec::new(),
        }
    }

    /// Live: report per interval of `len_ns` (None: once, at the end).
    pub fn set_interval(&mut self, len_ns: Option<i64>) {
        self.clock = Clock::new(len_ns);
    }

    /// The interval this worker is in (live).
    pub fn interval_index(&self) -> Option<i64> {
        self.clock.index()
    }

    /// Packet time has reached `ts`: close the intervals that ended before it.
    pub fn reach(&mut self, ts: i64) {
        loop {
            match self.clock.step(ts) {
                Step::Within => return,
                Step::Start(k) => self.parts.push((k - 1, None)),
                Step::Close(k) => {
                    let r = self.snapshot();
                    self.parts.push((k, Some(r)));
                }
            }
        }
    }

    /// What happened since the last snapshot: for each open connection, its counters'
    /// growth and its L7 tally (taken), plus everything that finished. A connection whose
    /// protocol is still being detected waits for a later snapshot (or its end), so its
    /// packets land on the edge of its real protocol.
    fn snapshot(&mut self) -> WorkerResult {
        let mut ids = std::mem::take(&mut self.ids);
        self.table.ids(&mut ids);
        for &id in &ids {
            self.emit_delta(id);
        }
        self.ids = ids;
        let syn = self.out.syn_servers.clone();
        let r = std::mem::take(&mut self.out);
        // Orientation evidence stays valid for later intervals.
        self.out.syn_servers = syn;
        r
    }

    fn emit_delta(&mut self, id: u32) {
        let l7_on = self.l7;
        let flow = self.table.get_mut(id);
        let (protocol, l7_server) = match (&flow.l7, flow.l7_done) {
            (Some(conn), _) => match conn.settled() {
                Some(p) => (p, conn.l7_server()),
                None => return,
            },
            (None, Some(done)) => done,
            (None, None) if l7_on => return,
            (None, None) => ("unknown", None),
        };
        let tally = flow.l7.as_mut().map(|c| c.take_tally()).unwrap_or_default();
        let mut summary = ConnSummary::from_flow(flow, protocol, l7_server, tally);
        // Failure is only known when the attempt ends.
        summary.failed = false;
        let base = flow.reported.get_or_insert_with(Default::default);
        base.take_delta(&mut summary);
        if summary.is_empty() {
            return;
        }
        let client = match (flow.tcp, l7_server) {
            (false, Some(server)) => Some(server.other()),
            _ => flow.client,
        };
        match client {
            Some(c) => {
                let (k, agg) = summary.into_edge(c);
                self.add_edge(k, agg);
            }
            None => self.out.undetermined.push(summary),
        }
    }

    /// The packet of this batch the test hook fails on, if any. Checked once per batch
    /// (orders rise within a batch).
    pub fn fault_in(&self, batch: &Batch) -> Option<u64> {
        match (self.fault, batch.packets.first(), batch.packets.last()) {
            (Some(super::fault::Fault::PanicAt(at)), Some(a), Some(b)) => {
                (a.order..=b.order).contains(&at).then_some(at)
            }
            _ => None,
        }
    }

    pub fn process_batch(&mut self, batch: &Batch, position: &std::sync::atomic::AtomicU64) {
        if let Some(at) = self.fault_in(batch) {
            for m in batch.packets.iter().take_while(|m| m.order < at) {
                position.store(m.order, std::sync::atomic::Ordering::Relaxed);
                self.process(m, batch.payload(m));
            }
            position.store(at, std::sync::atomic::Ordering::Relaxed);
            #[allow(clippy::panic)]
            {
                panic!("injected fault ({})", super::fault::FAULT_ENV);
            }
        }
        for m in &batch.packets {
            position.store(m.order, std::sync::atomic::Ordering::Relaxed);
            self.process(m, batch.payload(m));
        }
        if let Some(mark) = batch.mark {
            self.reach(mark);
        }
        self.since_sweep += 1;
        if self.since_sweep >= 16 {
            self.since_sweep = 0;
            self.sweep();
        }
    }

    /// Live fanout: one packet of `batch`, in the order the capture's merge chose.
    pub(crate) fn process_one(&mut self, batch: &Batch, m: &PacketMeta) {
        self.process(m, batch.payload(m));
    }

    /// After a run of `process_one`: the periodic expiry `process_batch` does per batch.
    pub(crate) fn end_run(&mut self) {
        self.since_sweep += 1;
        if self.since_sweep >= 16 {
            self.since_sweep = 0;
            self.sweep();
        }
    }

    /// Live fanout: packets processed before every ring had vouched for their time.
    pub(crate) fn count_reorder_forced(&mut self, n: u64) {
        self.out.limits.reorder_forced += n;
    }

    fn process(&mut self, m: &PacketMeta, payload: &[u8]) {
        let t = &m.t;
        let ts = m.ts_ns;
        if ts >= self.clock.next() {
            self.reach(ts);
        }
        self.now = self.now.max(ts);
        let src = Endpoint {
            ip: t.src,
            port: t.sport,
        };
        let dst = Endpoint {
            ip: t.dst,
            port: t.dport,
        };
        let (key, side) = FlowKey::new(src, dst, t.proto, if self.vlan_key { t.vlan } else { 0 });
        let tcp = t.proto == 6;
        let id = match self.table.find(&key) {
            Some(id) => {
                let f = self.table.get(id);
                let renew = f.expired(ts, &self.limits) || f.is_new_connection(t);
                if renew {
                    self.finish(id);
                    self.create(key, m.vantage, ts, tcp)
                } else if f.vantage != m.vantage {
                    // The same connection seen again from another capture position: its
                    // counters come from the first one (the contract's vantage rule).
                    self.out.other_vantage_packets += u64::from(t.fragments);
                    return;
                } else {
                    id
                }
            }
            None => self.create(key, m.vantage, ts, tcp),
        };
        // Keep LRU order to within 50 ms of packet time: moving a busy flow to the front
        // on every packet costs two cache misses for no change in what expires or is evicted.
        if ts.saturating_sub(self.table.get(id).last_ts) > LRU_TOUCH_NS {
            self.table.touch(id);
        }
        let l7_on = self.l7;
        let flow = self.table.get_mut(id);
        if tcp {
            // Where each direction stood before this segment: seeds L7 reassembly when the
            // first payload creates it (SYN-only attempts never pay for L7 state).
            let before = [flow.seq[0].next(), flow.seq[1].next()];
            let kind = flow.update_tcp(side, t, payload.len(), ts);
            if t.tcp.flags & (SYN | ACK) == (SYN | ACK) && flow.client == Some(side.other()) {
                self.out.syn_servers.insert(key.endpoint(side));
            }
            if l7_on && flow.l7_done.is_none() && (flow.l7.is_some() || t.payload_wire_len > 0) {
                let client = flow.client;
                let mid = !flow.syn_seen && !flow.synack_seen;
                let conn = flow
                    .l7
                    .get_or_insert_with(|| Box::new(L7Conn::new_tcp(before)));
                let mut cx = Ctx {
                    limits: &self.limits,
                    hits: &mut self.out.limits,
                    records: self.records.as_mut(),
                    key,
                    events: &mut self.events,
                };
                let before = conn.held_bytes();
                let carried = conn.carry_bytes();
                conn.on_tcp(side, client, mid, t, kind, payload, ts, &mut cx);
                self.held_total = self.held_total.saturating_sub(before) + conn.held_bytes();
                if self.held_total > self.limits.max_reassembly_bytes_total {
                    // The worker's reassembly memory is full: this connection gives up on
                    // its holes rather than growing further.
                    let held = conn.held_bytes();
                    conn.release_held(&mut cx);
                    self.held_total = self
                        .held_total
                        .saturating_sub(held.saturating_sub(conn.held_bytes()));
                    cx.hits.reassembly_dropped_segments += 1;
                }
                let now = conn.carry_bytes();
                self.carry_total = self.carry_total.saturating_sub(carried) + now;
                if now > carried && self.carry_total > self.limits.max_message_bytes_total {
                    // The worker's memory for partial messages is full: the connection
                    // that grew gives up its partial messages and resynchronises.
                    conn.release_carry(ts, &mut cx);
                    self.carry_total = self.carry_total.saturating_sub(now) + conn.carry_bytes();
                    cx.hits.message_buffers_dropped += 1;
                }
            }
            // FINs from both sides, not a RST: a RST ends nothing reliably (stacks and
            // evasion tricks keep sending after one), and late data must still be parsed.
            if flow.fin[0] && flow.fin[1] && flow.l7.is_some() {
                if let Some(client) = flow.client {
                    // Closed with a known client: settle L7 now and keep only its name, so
                    // a connection lingering for late packets costs no L7 memory.
                    if let Some(conn) = flow.l7.take() {
                        self.held_total = self.held_total.saturating_sub(conn.held_bytes());
                        self.carry_total = self.carry_total.saturating_sub(conn.carry_bytes());
                        let mut cx = Ctx {
                            limits: &self.limits,
                            hits: &mut self.out.limits,
                            records: self.records.as_mut(),
                            key,
                            events: &mut self.events,
                        };
                        let (protocol, l7_server, tally) = conn.finish(&mut cx);
                        flow.l7_done = Some((protocol, l7_server));
                        let edge = EdgeKey {
                            client: key.endpoint(client).ip,
                            server: key.endpoint(client.other()),
                            udp: false,
                            protocol,
                        };
                        self.out.edges.entry(edge).or_default().l7.merge(&tally);
                    }
                }
            }
        } else {
            flow.update_udp(side, t, ts);
            if l7_on && !payload.is_empty() {
                let client = flow.client;
                let conn = flow.l7.get_or_insert_with(|| Box::new(L7Conn::new(false)));
                let mut cx = Ctx {
                    limits: &self.limits,
                    hits: &mut self.out.limits,
                    records: self.records.as_mut(),
                    key,
                    events: &mut self.events,
                };
                conn.on_udp(side, client, payload, ts, &mut cx);
            }
        }
    }

    fn create(&mut self, key: FlowKey, vantage: u16, ts: i64, tcp: bool) -> u32 {
        if self.table.is_full() {
            if let Some(old) = self.table.oldest() {
                if !self.table.get(old).expired(ts, &self.limits) {
                    self.out.limits.flows_evicted += 1;
                }
                self.finish(old);
            }
        }
        self.table.insert(Flow::new(key, vantage, ts, tcp))
    }

    /// Expire idle flows from the old end of the LRU list. Only frees memory: a packet
    /// for an expired flow would have started a new one anyway.
    fn sweep(&mut self) {
        while let Some(old) = self.table.oldest() {
            if self.table.get(old).expired(self.now, &self.limits) {
                self.finish(old);
            } else {
                break;
            }
        }
    }

    fn finish(&mut self, id: u32) {
        let flow = self.table.remove(id);
        self.account(flow);
    }

    fn account(&mut self, mut flow: Flow) {
        flow.finish();
        self.out.flows += 1;
        if flow.failed() {
            self.out.failed_connections += 1;
        }
        let (protocol, l7_server, tally) = match (flow.l7.take(), flow.l7_done) {
            (Some(conn), _) => {
                self.held_total = self.held_total.saturating_sub(conn.held_bytes());
                self.carry_total = self.carry_total.saturating_sub(conn.carry_bytes());
                let mut cx = Ctx {
                    limits: &self.limits,
                    hits: &mut self.out.limits,
                    records: self.records.as_mut(),
                    key: flow.key,
                    events: &mut self.events,
                };
                conn.finish(&mut cx)
            }
            (None, Some((protocol, l7_server))) => (protocol, l7_server, Default::default()),
            (None, None) => ("unknown", None, Default::default()),
        };
        let mut summary = ConnSummary::from_flow(&flow, protocol, l7_server, tally);
        if let Some(mut base) = flow.reported.take() {
            // Live intervals: earlier snapshots already reported part of it.
            base.take_delta(&mut summary);
        }
        // UDP: a response seen first (a DNS answer) makes its receiver the client. TCP
        // without a handshake is oriented in the join stage, where every worker's SYN
        // answers are known.
        let client = match (flow.tcp, l7_server) {
            (false, Some(server)) => Some(server.other()),
            _ => flow.client,
        };
        let Some(client) = client else {
            self.out.undetermined.push(summary);
            return;
        };
        let (k, agg) = summary.into_edge(client);
        self.add_edge(k, agg);
    }

    fn add_edge(&mut self, k: EdgeKey, agg: crate::report::EdgeAgg) {
        let room = self.out.edges.len() < self.limits.max_edges;
        match self.out.edges.entry(k) {
            Entry::Occupied(mut e) => e.get_mut().merge(&agg),
            Entry::Vacant(v) => {
                if room || !agg.only_failed() {
                    v.insert(agg);
                } else {
                    // A flood of failed attempts must not grow the edge map without bound.
                    *self.out.folded_failed.entry(k.server).or_default() += agg.failed_connections;
                    self.out.limits.edges_folded += 1;
                }
            }
        }
    }

    pub fn into_result(mut self) -> WorkerResult {
        // One at a time: collecting them first would hold every flow twice.
        while let Some(id) = self.table.oldest() {
            let flow = self.table.remove(id);
            self.account(flow);
        }
        if let Some(r) = &mut self.records {
            r.flush();
        }
        self.out
    }
}
