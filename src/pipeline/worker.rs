//! A worker: owns its flow table (no locks), turns packets into connection state and
//! finished connections into edge sums.

use std::collections::hash_map::Entry;

use super::batch::{Batch, PacketMeta};
use crate::capture::interval::{Clock, Step};
use crate::decode::tcp_flags::{ACK, SYN};
use crate::flow::{Flow, FlowKey, FlowTable};
use crate::l7::{Ctx, L7Conn, RecordSink};
use crate::limits::{Limits, SYN_SERVERS_PER_WORKER, UNDETERMINED_PER_WORKER};
use crate::lvs::{self, evidence, LbEdge, LbOptions, Mode, Stitch, Tag};
use crate::prefetch::span as prefetch_span;
use crate::report::{ConnSummary, EdgeAgg, EdgeKey, NatAgg, WorkerResult};

/// How many packets ahead of the one being processed the worker asks for the index slot,
/// the flow, and the flow's L7 state (each stage needs the one before it in cache).
const PREFETCH_INDEX_AHEAD: usize = 6;
const PREFETCH_FLOW_AHEAD: usize = 4;
const PREFETCH_L7_AHEAD: usize = 2;
const PREFETCH_SESSION_AHEAD: usize = 1;
/// Below this many flows their state stays in the core's own cache (a flow with its L7
/// state and parser session is 1-2 KB): the prefetches would only cost their own work
/// (table probes, a loop over every line of the session), 370 instructions a packet on
/// real servers' traffic (callgrind).
const PREFETCH_MIN_FLOWS: usize = 256;

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
    /// Per expiry list: a packet moves its flow to the front only if the flow was last
    /// moved longer ago than this.
    touch_ns: [i64; 6],
    /// Scratch: the keys, sides and hashes of the batch being processed.
    keys: Vec<(FlowKey, crate::flow::Side, u32)>,
    /// Live fanout: per lane, the keys of its front batch's packets by index (see
    /// `process_run`).
    lane_keys: Vec<Vec<Option<LaneKey>>>,
    /// Bytes of partial L7 messages held by all connections of this worker.
    carry_total: usize,
    /// Bytes of pending requests (queue entries and their texts) held by all connections
    /// of this worker.
    pending_total: usize,
    /// The test hook's fault, if any (see `fault`).
    fault: Option<super::fault::Fault>,
    lb: LbOptions,
    /// Anything to re-attribute without a tag (`--lvs-config`, `--lb-local`)?
    lb_static: bool,
    /// UDP flows whose L7 state went idle: (slot id, flow start, packet time), oldest
    /// first (see `release_idle_udp`).
    idle_udp: std::collections::VecDeque<(u32, i64, i64)>,
    /// Settled connections' tallies waiting for their edges to load (see `settle_l7`),
    /// oldest first.
    merges: std::collections::VecDeque<WaitingMerge>,
}

/// Most settled tallies waiting for their edges at once: settling is a few times per
/// hundred packets, so the queue is almost always shorter.
const MERGES_WAITING: usize = 8;

/// A settled connection's tally and the edge it goes to, `age` packets after it settled.
struct WaitingMerge {
    edge: EdgeKey,
    tally: crate::report::L7Tally,
    age: u8,
}

impl Worker {
    pub fn new(
        limits: Limits,
        max_flows: usize,
        vlan_key: bool,
        l7: bool,
        records: Option<RecordSink>,
        fault: Option<super::fault::Fault>,
        lb: LbOptions,
    ) -> Worker {
        Worker {
            fault,
            lb_static: lb.config.is_some() || !lb.lb_local.is_empty(),
            idle_udp: std::collections::VecDeque::new(),
            merges: std::collections::VecDeque::with_capacity(MERGES_WAITING),
            lb,
            records,
            events: Vec::with_capacity(64),
            held_total: 0,
            carry_total: 0,
            pending_total: 0,
            table: FlowTable::new(max_flows),
            // An eighth of each list's timeout: how stale a flow's place may get. A stale
            // place only delays freeing an idle flow's memory by as much (expiry itself is
            // decided on arrival, from the flow's own last packet time).
            touch_ns: [
                limits.udp_timeout_ns,
                limits.tcp_closed_linger_ns,
                limits.tcp_attempt_timeout_ns,
                limits.tcp_idle_timeout_ns,
                limits.tcp_closed_linger_ns,
                limits.udp_timeout_ns,
            ]
            .map(|t| t / 8),
            limits,
            vlan_key,
            l7,
            out: WorkerResult::default(),
            now: i64::MIN,
            since_sweep: 0,
            clock: Clock::off(),
            parts: Vec::new(),
            ids: Vec::new(),
            keys: Vec::with_capacity(super::batch::BATCH_PACKETS),
            lane_keys: Vec::new(),
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
        self.drain_merges();
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
        if self.lb_static
            && flow
                .lb
                .as_ref()
                .is_none_or(|s| s.vip.is_none() && !s.direct)
            && self.now.saturating_sub(flow.first_ts) <= self.lb.window_ns.saturating_mul(2)
        {
            // Asked to stitch (--lvs-config or --lb-local): the reader may still pair this
            // leg (a first request is matched within the window of its SYN, the other leg's
            // within the window of that; a DNS query within the window), so it waits, like a
            // protocol still being detected, and none of it lands on the natural edge before
            // its stitch arrives. Without those flags nothing waits, so a request counts in
            // the interval in which it completes (the contract); a stitch found after part
            // of a leg was reported counts in `lb_stitch_late`.
            return;
        }
        let tally = flow.l7.as_mut().map(|c| c.take_tally()).unwrap_or_default();
        let mut summary = ConnSummary::from_flow(flow, protocol, l7_server, tally);
        // Failure is only known when the attempt ends.
        summary.failed = false;
        let base = flow.reported.get_or_insert_with(Default::default);
        base.take_delta(&mut summary);
        if summary.is_empty() {
            return;
        }
        // The same placement as a finished leg (`account`), so the interval documents sum
        // to the whole run edge by edge.
        let edges = EdgeSink {
            out: &mut self.out,
            lb: &self.lb,
            lb_static: self.lb_static,
            limits: &self.limits,
        };
        edges.place(flow, summary, l7_server);
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
        // Keys and hashes first, so the table can be asked to load the index slots, flows
        // and L7 states of packets a few places ahead: with tens of thousands of open
        // connections those loads miss the cache, and overlapping them is most of the gain.
        let keys = self.keys_of(&batch.packets);
        let mut tags = batch.tags.iter().peekable();
        for (i, m) in batch.packets.iter().enumerate() {
            self.prefetch_ahead(|k| keys.get(i + k).map(|&(_, _, h)| h));
            while let Some((_, tag)) = tags.next_if(|(at, _)| *at as usize <= i) {
                self.apply_tag(tag);
            }
            position.store(m.order, std::sync::atomic::Ordering::Relaxed);
            if let Some(&(key, side, h)) = keys.get(i) {
                self.process_keyed(m, batch.payload(m), key, side, h);
            }
        }
        self.keys = keys;
        for (_, tag) in tags {
            self.apply_tag(tag);
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

    /// Live fanout: packets `run` of `batch` (from lane `lane`), in the order the capture's
    /// merge chose, each after the load-balancer tags the reader put before it (as
    /// `process_batch` applies them), with the same prefetch pipeline as `process_batch`.
    /// Lanes interleaving in time make runs of a few packets, and the prefetch stages look
    /// past a run's end: keys come from the lane's cache, so each packet's is computed once.
    pub(crate) fn process_run(
        &mut self,
        batch: &Batch,
        run: std::ops::Range<usize>,
        lane: usize,
        position: &std::sync::atomic::AtomicU64,
    ) {
        let Some(packets) = batch.packets.get(run.clone()) else {
            return;
        };
        if self.lane_keys.len() <= lane {
            self.lane_keys.resize_with(lane + 1, Vec::new);
        }
        let mut cache = self
            .lane_keys
            .get_mut(lane)
            .map(std::mem::take)
            .unwrap_or_default();
        // The run and the packets its last prefetches look at; entries past that may be
        // from an earlier batch.
        let known = (run.end + PREFETCH_INDEX_AHEAD).min(batch.packets.len());
        if cache.len() < known {
            // At most a batch's packets: grows once, then reused.
            cache.resize(known, None);
        }
        for (m, slot) in batch
            .packets
            .iter()
            .zip(cache.iter_mut())
            .take(known)
            .skip(run.start)
        {
            if slot.is_none_or(|c: LaneKey| c.order != m.order) {
                let (key, side) = self.key_of(m);
                let hash = self.table.hash(&key);
                *slot = Some(LaneKey {
                    order: m.order,
                    key,
                    side,
                    hash,
                });
            }
        }
        for (m, i) in packets.iter().zip(run) {
            position.store(m.order, std::sync::atomic::Ordering::Relaxed);
            if let Some(super::fault::Fault::PanicAt(at)) = self.fault {
                // The test hook (`fault`); None unless WIREMAP_FAULT_INJECT is set.
                // At or past it: the packet numbered `at` may not have come to this worker.
                #[allow(clippy::panic)]
                if m.order >= at {
                    panic!("injected fault ({})", super::fault::FAULT_ENV);
                }
            }
            if !batch.tags.is_empty() {
                for (_, tag) in batch.tags.iter().filter(|(at, _)| *at as usize == i) {
                    self.apply_tag(tag);
                }
            }
            self.prefetch_ahead(|a| {
                (i + a < known)
                    .then(|| cache.get(i + a).copied().flatten())
                    .flatten()
                    .map(|c| c.hash)
            });
            if let Some(Some(c)) = cache.get(i).copied() {
                self.process_keyed(m, batch.payload(m), c.key, c.side, c.hash);
            }
        }
        if let Some(slot) = self.lane_keys.get_mut(lane) {
            *slot = cache;
        }
    }

    /// After the runs of one merge pass (`process_run`): the periodic expiry
    /// `process_batch` does per batch.
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

    /// Ask for the state of the packets `k` places ahead (`hash_ahead(k)`: their table hash):
    /// the index slot 6 ahead, the flow 4 ahead, its L7 state 2 ahead, its parser session
    /// 1 ahead, each stage finding in cache what the one before it asked for.
    fn prefetch_ahead(&self, hash_ahead: impl Fn(usize) -> Option<u32>) {
        if self.table.len() < PREFETCH_MIN_FLOWS {
            return;
        }
        if let Some(h) = hash_ahead(PREFETCH_INDEX_AHEAD) {
            self.table.prefetch_index(h);
        }
        if let Some(id) = hash_ahead(PREFETCH_FLOW_AHEAD).and_then(|h| self.table.probable(h)) {
            self.table.prefetch_flow(id);
        }
        if let Some(id) = hash_ahead(PREFETCH_L7_AHEAD).and_then(|h| self.table.probable(h)) {
            self.table.prefetch_l7(id);
        }
        if let Some(id) = hash_ahead(PREFETCH_SESSION_AHEAD).and_then(|h| self.table.probable(h)) {
            self.table.prefetch_session(id);
        }
    }

    /// The keys, sides and hashes of `packets`, in the worker's scratch vector (give it back
    /// to `self.keys` when done, so steady traffic does not allocate).
    fn keys_of(&mut self, packets: &[PacketMeta]) -> Vec<(FlowKey, crate::flow::Side, u32)> {
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        for m in packets {
            let (key, side) = self.key_of(m);
            keys.push((key, side, self.table.hash(&key)));
        }
        keys
    }

    fn key_of(&self, m: &PacketMeta) -> (FlowKey, crate::flow::Side) {
        FlowKey::of(&m.t, if self.vlan_key { m.t.vlan } else { 0 })
    }

    fn process(&mut self, m: &PacketMeta, payload: &[u8]) {
        let (key, side) = self.key_of(m);
        let h = self.table.hash(&key);
        self.process_keyed(m, payload, key, side, h);
    }

    fn process_keyed(
        &mut self,
        m: &PacketMeta,
        payload: &[u8],
        key: FlowKey,
        side: crate::flow::Side,
        hash: u32,
    ) {
        let t = &m.t;
        let ts = m.ts_ns;
        if !self.merges.is_empty() {
            self.advance_merges();
        }
        if ts >= self.clock.next() {
            self.reach(ts);
        }
        self.now = self.now.max(ts);
        let tcp = t.proto == 6;
        let id = match self.table.find_hashed(hash, &key) {
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
        // Keep each list in order to within an eighth of its timeout: moving a busy flow to
        // the front on every packet costs two cache misses (its neighbours) for no change
        // in what expires. A 300 s connection moves every 37 s, a closed one every 1.25 s.
        let (list, moved) = self.table.listed(id);
        let touch_ns = self.touch_ns.get(usize::from(list)).copied();
        if ts.saturating_sub(moved) > touch_ns.unwrap_or(0) {
            self.table.touch(id, ts);
        }
        let l7_on = self.l7;
        let mut resumed = false;
        let flow = self.table.get_mut(id);
        if let Some((ip, _)) = t.tcp.toa {
            // A TOA option from the opening side: this is a FULLNAT real-server leg, and
            // `ip` its real client (the SYN sender is the opener; `client` is set later).
            if ip != t.src
                && flow.client.is_none_or(|c| c == side)
                && flow
                    .lb
                    .as_ref()
                    .is_none_or(|s| s.evidence & evidence::TOA == 0)
            {
                let s = Stitch {
                    vip: None,
                    client: Some(ip),
                    local: Some(t.src),
                    mode: Mode::FullNat,
                    evidence: evidence::TOA,
                    paired: false,
                    direct: false,
                };
                match &mut flow.lb {
                    Some(b) => b.merge(&s),
                    None => flow.lb = Some(Box::new(s)),
                }
            }
        }
        if tcp {
            // Where each direction stood before this segment: seeds L7 reassembly when the
            // first payload creates it (SYN-only attempts never pay for L7 state).
            let before = [flow.seq[0].next(), flow.seq[1].next()];
            let class = flow.timeout_class();
            let kind = flow.update_tcp(side, t, payload.len(), ts);
            if flow.timeout_class() != class {
                // Established or closed: another idle timeout, another expiry list.
                self.table.relist(id);
            }
            let flow = self.table.get_mut(id);
            if t.tcp.flags & (SYN | ACK) == (SYN | ACK) && flow.client == Some(side.other()) {
                let ep = key.endpoint(side);
                if self.out.syn_servers.len() < SYN_SERVERS_PER_WORKER
                    || self.out.syn_servers.contains(&ep)
                {
                    self.out.syn_servers.insert(ep);
                } else {
                    self.out.limits.syn_answers_dropped += 1;
                }
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
                    pending_full: self.pending_total >= self.limits.max_pending_bytes_total,
                };
                let before = conn.held_bytes();
                let carried = conn.carry_bytes();
                let pending = conn.pending_bytes();
                conn.on_tcp(side, client, mid, t, kind, payload, ts, &mut cx);
                self.pending_total =
                    self.pending_total.saturating_sub(pending) + conn.pending_bytes();
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
                    self.settle_l7(id, client);
                }
            }
        } else {
            flow.update_udp(side, t, ts);
            if l7_on && !payload.is_empty() {
                let client = flow.client;
                let done = flow.l7_done;
                // A settled flow speaks again: back among the UDP flows a full table keeps.
                resumed = flow.l7.is_none() && done.is_some();
                let conn = flow.l7.get_or_insert_with(|| {
                    let mut c = Box::new(L7Conn::new(false));
                    if let Some((name, server)) = done {
                        // Its earlier state was released while idle (`release_idle_udp`).
                        c.resume(protocols::Protocol::from_name(name), server);
                    }
                    c
                });
                let mut cx = Ctx {
                    limits: &self.limits,
                    hits: &mut self.out.limits,
                    records: self.records.as_mut(),
                    key,
                    events: &mut self.events,
                    pending_full: self.pending_total >= self.limits.max_pending_bytes_total,
                };
                let pending = conn.pending_bytes();
                conn.on_udp(side, client, payload, ts, &mut cx);
                self.pending_total =
                    self.pending_total.saturating_sub(pending) + conn.pending_bytes();
                if conn.is_idle() && !conn.set_queued(true) {
                    self.idle_udp.push_back((id, flow.first_ts, ts));
                }
            }
        }
        if resumed {
            self.table.relist(id);
        }
        let flow = self.table.get_mut(id);
        if flow.l7.as_deref().is_some_and(L7Conn::tally_is_heavy) {
            flush_heavy_tally(
                &mut self.out,
                &self.lb,
                self.lb_static,
                self.now,
                &self.limits,
                flow,
            );
        }
    }

    fn create(&mut self, key: FlowKey, vantage: u16, ts: i64, tcp: bool) -> u32 {
        if self.table.is_full() {
            if let Some(old) = self.table.evictable() {
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
        while let Some(old) = self.table.expired(self.now, &self.limits) {
            self.table.prefetch_after(old);
            self.finish(old);
        }
        self.release_idle_udp();
    }

    /// Release the L7 state of UDP flows idle (nothing pending) for twice the load-balancer
    /// window: their tally goes to the edge and only the protocol's name stays, as for a
    /// closed TCP connection. A UDP flow is tracked for 60 s of silence (the contract's
    /// flow), but a DNS exchange is over in milliseconds: a resolver answering 10,000
    /// clients' ports a second would otherwise hold 600,000 L7 states (~1.2 KB each)
    /// where it now holds 40,000. A later datagram on the flow gets a new state that takes
    /// up the same protocol ([`L7Conn::resume`]). Twice the window: until then a stitch
    /// may still move the flow to another edge (as for [`flush_heavy_tally`]).
    fn release_idle_udp(&mut self) {
        let horizon = self.lb.window_ns.saturating_mul(2);
        while let Some(&(id, first_ts, at)) = self.idle_udp.front() {
            if self.now.saturating_sub(at) <= horizon {
                break;
            }
            self.idle_udp.pop_front();
            let Some(flow) = self.table.get_mut_if_present(id) else {
                continue;
            };
            if flow.tcp || flow.first_ts != first_ts {
                continue; // the flow ended; its slot holds another one
            }
            let Some(conn) = flow.l7.as_deref_mut() else {
                continue;
            };
            if !conn.is_idle() {
                conn.set_queued(false); // queued again at its next idle moment
                continue;
            }
            if flow.last_ts > at {
                // Busy since: look again a horizon after its last packet.
                self.idle_udp.push_back((id, first_ts, flow.last_ts));
                continue;
            }
            let client = match conn.l7_server() {
                Some(server) => server.other(),
                None => match flow.client {
                    Some(c) => c,
                    None => {
                        conn.set_queued(false);
                        continue;
                    }
                },
            };
            self.settle_l7(id, client);
        }
    }

    /// End a connection's L7 state: deliver what it still holds, take its buffers off the
    /// worker's totals, and return its protocol, L7-decided server side and tally.
    fn finish_l7(
        &mut self,
        conn: Box<L7Conn>,
        key: FlowKey,
    ) -> (
        &'static str,
        Option<crate::flow::Side>,
        crate::report::L7Tally,
    ) {
        self.pending_total = self.pending_total.saturating_sub(conn.pending_bytes());
        self.held_total = self.held_total.saturating_sub(conn.held_bytes());
        self.carry_total = self.carry_total.saturating_sub(conn.carry_bytes());
        let mut cx = Ctx {
            limits: &self.limits,
            hits: &mut self.out.limits,
            records: self.records.as_mut(),
            key,
            events: &mut self.events,
            pending_full: true,
        };
        conn.finish(&mut cx)
    }

    /// Settle flow `id`'s L7 state while the flow stays (a closed TCP connection, an idle
    /// UDP flow): its tally goes to its edge, `client` being the client side, and the flow
    /// keeps only the protocol's name and L7-decided server side.
    fn settle_l7(&mut self, id: u32, client: crate::flow::Side) {
        let flow = self.table.get_mut(id);
        let Some(conn) = flow.l7.take() else {
            return;
        };
        let key = flow.key;
        let (protocol, l7_server, tally) = self.finish_l7(conn, key);
        let flow = self.table.get_mut(id);
        flow.l7_done = Some((protocol, l7_server));
        let (edge, paired) = l7_edge(flow, client, protocol, self.lb_static, &self.lb);
        if paired {
            self.out.lb_duplicate_requests += tally.requests;
        }
        let (edge, agg) = admit_edge(&mut self.out, edge, &self.limits);
        let at = &*agg as *const EdgeAgg;
        // The merge waits two packets (`advance_merges`): the edge is cold (one of
        // thousands), and its aggregate and then its vectors load meanwhile.
        prefetch_span(at.cast(), std::mem::size_of::<EdgeAgg>());
        self.table.get_mut(id).edge_hint = at as usize;
        if self.merges.len() >= MERGES_WAITING {
            self.merge_oldest();
        }
        self.merges.push_back(WaitingMerge {
            edge,
            tally,
            age: 0,
        });
        // A settled UDP flow is among the first a full table evicts.
        self.table.relist(id);
    }

    /// A packet went by: ask for the vectors of the edges of tallies queued a packet ago,
    /// merge those queued two packets ago.
    fn advance_merges(&mut self) {
        for w in self.merges.iter_mut() {
            w.age = w.age.saturating_add(1);
            if w.age == 1 {
                if let Some(agg) = self.out.edges.get(&w.edge) {
                    agg.l7_memory(prefetch_span);
                }
            }
        }
        while self.merges.front().is_some_and(|w| w.age >= 2) {
            self.merge_oldest();
        }
    }

    fn merge_oldest(&mut self) {
        if let Some(w) = self.merges.pop_front() {
            edge_l7(&mut self.out, w.edge, &self.limits)
                .l7
                .merge(&w.tally);
        }
    }

    /// Every queued tally to its edge (before the edges are read or handed over).
    fn drain_merges(&mut self) {
        while !self.merges.is_empty() {
            self.merge_oldest();
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
            (Some(conn), _) => self.finish_l7(conn, flow.key),
            (None, Some((protocol, l7_server))) => (protocol, l7_server, Default::default()),
            (None, None) => ("unknown", None, Default::default()),
        };
        let mut summary = ConnSummary::from_flow(&flow, protocol, l7_server, tally);
        if let Some(mut base) = flow.reported.take() {
            // Live intervals: earlier snapshots already reported part of it.
            base.take_delta(&mut summary);
        }
        let edges = EdgeSink {
            out: &mut self.out,
            lb: &self.lb,
            lb_static: self.lb_static,
            limits: &self.limits,
        };
        edges.place(&flow, summary, l7_server);
    }

    /// A stitch from the reader for one of this worker's flows.
    fn apply_tag(&mut self, tag: &Tag) {
        let Some(id) = self.table.find(&tag.key) else {
            // The leg already finished (legs further apart than its linger time).
            self.out.limits.lb_stitch_late += 1;
            return;
        };
        let flow = self.table.get_mut(id);
        let had_vip = flow.lb.as_ref().is_some_and(|s| s.vip.is_some());
        if (flow.l7_done.is_some()
            || flow.reported.is_some()
            || flow.l7.as_ref().is_some_and(|c| c.flushed()))
            && !had_vip
            && tag.stitch.vip.is_some()
        {
            // Its requests (or, live, an interval's share of it) were already summed on the
            // natural edge.
            self.out.limits.lb_stitch_late += 1;
        }
        match &mut flow.lb {
            Some(s) => s.merge(&tag.stitch),
            None => flow.lb = Some(Box::new(tag.stitch)),
        }
    }

    pub fn into_result(mut self) -> WorkerResult {
        self.drain_merges();
        // One at a time: collecting them first would hold every flow twice.
        let mut table = std::mem::replace(&mut self.table, FlowTable::new(1));
        while let Some(flow) = table.drain_oldest() {
            self.account(flow);
        }
        if let Some(r) = &mut self.records {
            r.flush();
        }
        self.out
    }
}

/// A packet's flow key, side and table hash, tagged with its order (unique per lane).
#[derive(Clone, Copy)]
struct LaneKey {
    order: u64,
    key: FlowKey,
    side: crate::flow::Side,
    hash: u32,
}

/// Where a connection's sums go: its edge, oriented, re-routed to a load balancer's edge
/// when it is a stitched leg, within the edge limit. Shared by finished connections and
/// live interval shares, so both land on the same edge.
struct EdgeSink<'a> {
    out: &'a mut WorkerResult,
    lb: &'a LbOptions,
    lb_static: bool,
    limits: &'a Limits,
}

impl EdgeSink<'_> {
    fn place(self, flow: &Flow, summary: ConnSummary, l7_server: Option<crate::flow::Side>) {
        // UDP: a response seen first (a DNS answer) makes its receiver the client. TCP
        // without a handshake is oriented in the join stage, where every worker's SYN
        // answers are known.
        let client = match (flow.tcp, l7_server) {
            (false, Some(server)) => Some(server.other()),
            _ => flow.client,
        };
        let client = match client {
            Some(c) => c,
            None if self.out.undetermined.len() < UNDETERMINED_PER_WORKER => {
                self.out.undetermined.push(summary);
                return;
            }
            None => {
                // The list for the join is full: orient with this worker's evidence.
                self.out.limits.undetermined_oriented += 1;
                crate::report::server_side(&summary, &self.out.syn_servers).other()
            }
        };
        let routed = self.lb_static || flow.lb.is_some();
        if !routed {
            // Most connections end on an edge that exists: add to it directly.
            if let Some(e) = self.out.edges.get_mut(&summary.edge_key(client)) {
                summary.add_to(e, client);
                return;
            }
        }
        let (mut k, mut agg) = summary.into_edge(client);
        if routed {
            let src = flow.key.endpoint(client);
            if let Some(r) =
                lvs::lb_edge(flow.lb.as_deref(), flow.key.proto, src, k.server, self.lb)
            {
                if r.paired {
                    self.out.lb_duplicate_requests += agg.l7.requests;
                }
                route_edge(&mut k, &mut agg, &r, self.limits.lb_max_clients);
            }
            // Not routed, the edge was looked up above and is new.
            if let Some(e) = self.out.edges.get_mut(&k) {
                e.merge(&agg);
                return;
            }
        }
        if agg.only_failed() && self.out.edges.len() >= self.limits.max_edges {
            // A flood of failed attempts must not grow the edge map without bound.
            fold_failed(
                self.out,
                k.server,
                agg.failed_connections,
                self.limits.max_edges,
            );
            self.out.limits.edges_folded += 1;
            return;
        }
        let admitted = admit_new_edge(self.out, k, self.limits);
        if admitted.server != k.server {
            self.out.limits.traffic_folded += 1;
        } else if admitted != k {
            self.out.limits.clients_folded += 1;
        }
        match self.out.edges.entry(admitted) {
            Entry::Occupied(mut e) => e.get_mut().merge(&agg),
            Entry::Vacant(v) => {
                v.insert(Box::new(agg));
            }
        }
    }
}

/// The unspecified address of `ip`'s family: the client of a service's "other clients"
/// edge, the address of a port's "other services" node.
fn unspecified(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        std::net::IpAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// Count `n` failed attempts on `server`'s node, past the edge limit. A host scanning the
/// network tries a new service with each attempt: past `cap` services in this worker, new
/// ones are counted on their port's "other services" node (`0.0.0.0:PORT`), so the
/// document shows which port was scanned and stays bounded.
fn fold_failed(out: &mut WorkerResult, server: crate::flow::Endpoint, n: u64, cap: usize) {
    let key = if out.folded_failed.len() < cap || out.folded_failed.contains_key(&server) {
        server
    } else {
        out.limits.services_folded += n;
        crate::flow::Endpoint {
            ip: unspecified(server.ip),
            port: server.port,
        }
    };
    *out.folded_failed.entry(key).or_default() += n;
}

/// The aggregate of edge `k` (for its L7 tally), made if it is new (see
/// [`admit_new_edge`]).
fn edge_l7<'a>(out: &'a mut WorkerResult, k: EdgeKey, limits: &Limits) -> &'a mut EdgeAgg {
    admit_edge(out, k, limits).1
}

/// The edge `k`'s sums go to (`k` itself, or the edge it folds into; see
/// [`admit_new_edge`]), created if new: its key and aggregate.
fn admit_edge<'a>(
    out: &'a mut WorkerResult,
    k: EdgeKey,
    limits: &Limits,
) -> (EdgeKey, &'a mut EdgeAgg) {
    let k = if out.edges.contains_key(&k) {
        k
    } else {
        admit_new_edge(out, k, limits)
    };
    (k, &mut **out.edges.entry(k).or_default())
}

/// The key a connection's sums go under when `k` is not yet an edge: `k` itself while its
/// service has fewer than `max_clients_per_service` clients with edges of their own in this
/// worker, else the service's "other clients" edge (client `0.0.0.0`, or `::` for IPv6): a
/// service answering millions of (possibly spoofed) sources keeps bounded memory and a
/// readable document. Past `max_edges_per_worker` edges in all, a new edge goes to its
/// port's "other traffic" edge (`0.0.0.0` to `0.0.0.0:PORT`): reflected traffic from
/// millions of services stays bounded too. Load-balancer edges (from a VIP) are never
/// folded.
fn admit_new_edge(out: &mut WorkerResult, k: EdgeKey, limits: &Limits) -> EdgeKey {
    if k.vip_port.is_some() {
        return k;
    }
    let anyone = unspecified(k.server.ip);
    let other_clients = EdgeKey {
        client: anyone,
        ..k
    };
    if out.edges.len() >= limits.max_edges_per_worker {
        if out.edges.contains_key(&other_clients) {
            return other_clients;
        }
        return EdgeKey {
            client: anyone,
            server: crate::flow::Endpoint {
                ip: anyone,
                port: k.server.port,
            },
            ..k
        };
    }
    let clients = out.clients_per_service.entry(k.server).or_default();
    if (*clients as usize) < limits.max_clients_per_service {
        *clients += 1;
        return k;
    }
    other_clients
}

/// The edge a flow's L7 tally goes to, `client` being its client side; and whether the
/// flow is the real-server leg of a stitched pair (its requests count on the client leg).
fn l7_edge(
    flow: &Flow,
    client: crate::flow::Side,
    protocol: &'static str,
    lb_static: bool,
    lb: &LbOptions,
) -> (EdgeKey, bool) {
    let key = flow.key;
    let mut edge = EdgeKey {
        client: key.endpoint(client).ip,
        vip_port: None,
        server: key.endpoint(client.other()),
        udp: !flow.tcp,
        protocol,
    };
    let mut paired = false;
    if lb_static || flow.lb.is_some() {
        let src = key.endpoint(client);
        if let Some(r) = lvs::lb_edge(flow.lb.as_deref(), key.proto, src, edge.server, lb) {
            edge.client = r.client;
            edge.vip_port = r.vip_port;
            paired = r.paired;
        }
    }
    (edge, paired)
}

/// Move an open connection's tally to its edge once it is heavy (see
/// [`crate::l7::L7Conn::tally_is_heavy`]), so a long connection's L7 memory stays a few
/// hundred bytes. Only when nothing can move the tally to another edge any more: the
/// protocol is decided, the client is known (as the connection's end will place it), and
/// the window in which a load-balancer stitch can still arrive has passed (as for live
/// interval snapshots). The sums are the same as when the whole tally goes at the end.
#[inline(never)]
fn flush_heavy_tally(
    out: &mut WorkerResult,
    lb: &LbOptions,
    lb_static: bool,
    now: i64,
    limits: &Limits,
    flow: &mut Flow,
) {
    let Some(conn) = flow.l7.as_deref() else {
        return;
    };
    if !conn.tally_is_heavy() || now.saturating_sub(flow.first_ts) <= lb.window_ns * 2 {
        return;
    }
    let Some(protocol) = conn.settled() else {
        return;
    };
    let client = match (flow.tcp, conn.l7_server()) {
        (false, Some(server)) => Some(server.other()),
        _ => flow.client,
    };
    let Some(client) = client else {
        return;
    };
    let (edge, paired) = l7_edge(flow, client, protocol, lb_static, lb);
    if let Some(conn) = flow.l7.as_deref_mut() {
        let requests = conn.flush_tally(&mut edge_l7(out, edge, limits).l7);
        if paired {
            out.lb_duplicate_requests += requests;
        }
    }
}

/// Move a finished leg's sums to its load-balancer edge.
fn route_edge(k: &mut EdgeKey, agg: &mut EdgeAgg, r: &LbEdge, cap: usize) {
    k.client = r.client;
    k.vip_port = r.vip_port;
    let mut n = NatAgg {
        modes: match r.mode {
            Mode::Nat => 1,
            Mode::FullNat => 2,
        },
        evidence: r.evidence,
        cap,
        ..NatAgg::default()
    };
    if let Some(c) = r.real_client {
        n.add_client(c);
    }
    if let Some(l) = r.local {
        n.add_local(l);
    }
    agg.nat = Some(Box::new(n));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tcp_flags::PSH;
    use crate::decode::{TcpFields, Transport};
    use crate::flow::Endpoint;
    use std::net::IpAddr;
    use std::sync::atomic::AtomicU64;

    const SEC: i64 = 1_000_000_000;

    fn ep(s: &str) -> Endpoint {
        let a: std::net::SocketAddr = s.parse().unwrap();
        crate::flow::Endpoint {
            ip: a.ip(),
            port: a.port(),
        }
    }

    fn seg(from: Endpoint, to: Endpoint, seq: u32, ack: u32, flags: u8, len: u32) -> Transport {
        Transport {
            src: from.ip,
            dst: to.ip,
            sport: from.port,
            dport: to.port,
            proto: 6,
            vlan: 0,
            ip_bytes: 40 + len,
            fragments: 1,
            truncated: false,
            tcp: TcpFields {
                seq,
                ack,
                flags,
                window: 1000,
                toa: None,
            },
            payload_wire_len: len,
        }
    }

    /// A real-server leg open across six 1 s intervals, its stitch arriving at `tag_at`:
    /// returns every interval's edges and the end's.
    /// `asked`: the user gave a load-balancer flag (here `--lb-local` for an unrelated
    /// block), which makes young legs wait for their stitch.
    fn long_leg(tag_at: i64, asked: bool) -> Vec<WorkerResult> {
        let (cli, rs, vip) = (ep("10.0.0.2:40000"), ep("10.0.1.11:80"), ep("10.0.9.10:80"));
        let mut w = Worker::new(
            Limits::default(),
            64,
            false,
            false,
            None,
            None,
            LbOptions {
                window_ns: SEC / 2,
                lb_local: if asked {
                    vec!["10.0.5.0/24".parse().unwrap()]
                } else {
                    Vec::new()
                },
                ..LbOptions::default()
            },
        );
        w.set_interval(Some(SEC));
        let pos = AtomicU64::new(0);
        let mut b = Batch::with_capacity();
        let t0 = SEC / 10;
        b.push(seg(cli, rs, 100, 0, SYN, 0), t0, 0, 0, &[]);
        b.push(seg(rs, cli, 500, 101, SYN | ACK, 0), t0 + 1000, 0, 1, &[]);
        b.push(seg(cli, rs, 101, 501, ACK, 0), t0 + 2000, 0, 2, &[]);
        let mut tagged = false;
        let mut seq = 101;
        for i in 1..12u64 {
            let ts = t0 + i as i64 * SEC / 2;
            if !tagged && ts >= tag_at {
                tagged = true;
                b.push_tag(Tag {
                    key: FlowKey::new(cli, rs, 6, 0).0,
                    stitch: Stitch {
                        vip: Some(vip),
                        client: Some(cli.ip),
                        local: None,
                        mode: Mode::Nat,
                        evidence: evidence::ISN | evidence::TUPLE,
                        paired: true,
                        direct: false,
                    },
                });
            }
            b.push(seg(cli, rs, seq, 501, ACK, 10), ts, 0, 2 + i, &[0u8; 10]);
            seq += 10;
            // one batch per packet: the worker closes intervals as packet time passes
            w.process_batch(&b, &pos);
            b.clear();
        }
        let mut out: Vec<WorkerResult> = w.parts.drain(..).filter_map(|(_, r)| r).collect();
        out.push(w.into_result());
        out
    }

    fn natural(r: &WorkerResult) -> u64 {
        let cli: IpAddr = "10.0.0.2".parse().unwrap();
        r.edges
            .iter()
            .filter(|(k, _)| k.client == cli)
            .map(|(_, a)| a.packets[0] + a.packets[1])
            .sum()
    }

    fn stitched(r: &WorkerResult) -> u64 {
        let vip: IpAddr = "10.0.9.10".parse().unwrap();
        r.edges
            .iter()
            .filter(|(k, a)| k.client == vip && k.vip_port == Some(80) && a.nat.is_some())
            .map(|(_, a)| a.packets[0] + a.packets[1])
            .sum()
    }

    #[test]
    fn interval_shares_of_a_stitched_leg_go_to_the_vip_edge() {
        let parts = long_leg(0, false);
        assert!(parts.len() >= 6, "{} parts", parts.len());
        // more than one interval carries a share of the open connection
        assert!(parts.iter().filter(|r| stitched(r) > 0).count() >= 3);
        assert_eq!(parts.iter().map(natural).sum::<u64>(), 0);
        assert_eq!(parts.iter().map(stitched).sum::<u64>(), 3 + 11);
    }

    #[test]
    fn a_young_leg_waits_for_its_stitch() {
        // The stitch arrives 0.4 s into the second interval (within twice the 0.5 s window
        // of the leg's start): nothing went to the natural edge before it.
        let parts = long_leg(SEC + 400_000_000, true);
        assert_eq!(parts.iter().map(natural).sum::<u64>(), 0);
        assert_eq!(parts.iter().map(stitched).sum::<u64>(), 3 + 11);
        assert_eq!(
            parts.iter().map(|r| r.limits.lb_stitch_late).sum::<u64>(),
            0
        );
    }

    #[test]
    fn without_lb_flags_a_young_leg_reports_at_once() {
        // The same stitch 0.4 s into the second interval, but nobody asked for stitching:
        // the first interval's share is reported on its natural edge (a request counts in
        // the interval in which it completes), the rest moves, and the split is counted.
        let parts = long_leg(SEC + 400_000_000, false);
        assert!(natural(&parts[0]) > 0);
        assert_eq!(
            parts.iter().map(natural).sum::<u64>() + parts.iter().map(stitched).sum::<u64>(),
            3 + 11
        );
        assert_eq!(
            parts.iter().map(|r| r.limits.lb_stitch_late).sum::<u64>(),
            1
        );
    }

    #[test]
    fn a_stitch_after_the_window_is_late_and_counted() {
        // 2.6 s after the start: the leg's earlier intervals were reported on its natural
        // edge; the rest moves to the VIP edge and the split is counted.
        let parts = long_leg(2 * SEC + 600_000_000, true);
        assert!(natural(&parts[0]) + natural(&parts[1]) + natural(&parts[2]) > 0);
        assert_eq!(
            parts.iter().map(natural).sum::<u64>() + parts.iter().map(stitched).sum::<u64>(),
            3 + 11
        );
        assert_eq!(
            parts.iter().map(|r| r.limits.lb_stitch_late).sum::<u64>(),
            1
        );
    }

    /// A worker with L7 parsing on and a load-balancer window of `window_ns`.
    /// Pushes packets into a batch, numbered in the order they are pushed.
    fn packet_pusher() -> impl FnMut(&mut Batch, Transport, i64, &[u8]) {
        let mut order = 0u64;
        move |b, t, ts, payload| {
            b.push(t, ts, 0, order, payload);
            order += 1;
        }
    }

    fn l7_worker(window_ns: i64) -> Worker {
        Worker::new(
            Limits::default(),
            64,
            false,
            true,
            None,
            None,
            LbOptions {
                window_ns,
                ..LbOptions::default()
            },
        )
    }

    /// A closed connection's tally waits two packets for its edge (`advance_merges`), but
    /// an interval that closes meanwhile, and the end, still get it: the request counts in
    /// the interval in which it completed, once.
    #[test]
    fn a_waiting_tally_lands_in_the_interval_it_settled_in() {
        use crate::decode::tcp_flags::FIN;
        let (cli, srv) = (ep("10.0.0.2:40000"), ep("10.0.1.1:80"));
        let other = ep("10.0.0.3:40001");
        for next_interval_packet in [true, false] {
            let mut w = l7_worker(0);
            w.set_interval(Some(SEC));
            let pos = AtomicU64::new(0);
            let mut b = Batch::with_capacity();
            let mut push = packet_pusher();
            let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
            let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
            let (q, r) = (req.len() as u32, resp.len() as u32);
            let ms = SEC / 1000;
            push(&mut b, seg(cli, srv, 100, 0, SYN, 0), 100 * ms, &[]);
            push(&mut b, seg(srv, cli, 500, 101, SYN | ACK, 0), 101 * ms, &[]);
            push(&mut b, seg(cli, srv, 101, 501, ACK, 0), 102 * ms, &[]);
            push(&mut b, seg(cli, srv, 101, 501, ACK | PSH, q), 103 * ms, req);
            push(
                &mut b,
                seg(srv, cli, 501, 101 + q, ACK | PSH, r),
                104 * ms,
                resp,
            );
            push(
                &mut b,
                seg(cli, srv, 101 + q, 501 + r, FIN | ACK, 0),
                105 * ms,
                &[],
            );
            push(
                &mut b,
                seg(srv, cli, 501 + r, 102 + q, FIN | ACK, 0),
                106 * ms,
                &[],
            );
            w.process_batch(&b, &pos);
            b.clear();
            // Both FINs seen: settled, its tally still waiting for the edge.
            assert_eq!(w.merges.len(), 1);
            assert!(w.out.edges.values().all(|a| a.l7.requests == 0));
            if next_interval_packet {
                // The next packet is in the next interval: the first one closes with it.
                push(&mut b, seg(other, srv, 7, 0, SYN, 0), 1500 * ms, &[]);
                w.process_batch(&b, &pos);
            }
            let mut parts: Vec<(i64, WorkerResult)> = w
                .parts
                .drain(..)
                .filter_map(|(k, r)| r.map(|r| (k, r)))
                .collect();
            let last = w.into_result();
            let requests = |r: &WorkerResult| r.edges.values().map(|a| a.l7.requests).sum::<u64>();
            if next_interval_packet {
                assert_eq!(parts.len(), 1);
                let (k, first) = parts.remove(0);
                assert_eq!((k, requests(&first)), (0, 1));
                assert_eq!(requests(&last), 0);
            } else {
                assert!(parts.is_empty());
                assert_eq!(requests(&last), 1);
            }
        }
    }

    /// A keep-alive connection with a new resource and latency per request: once past the
    /// window in which a stitch could still move it, its tally goes to the edge whenever it
    /// grows (so the connection holds a few entries, not 64 resources and a sketch), and
    /// the edge ends with every request, each latency and resource counted once.
    #[test]
    fn a_long_connection_moves_its_tally_to_the_edge() {
        let (cli, srv) = (ep("10.0.0.2:40000"), ep("10.0.1.1:80"));
        let mut w = l7_worker(2 * SEC);
        let window = w.lb.window_ns;
        let pos = AtomicU64::new(0);
        let mut b = Batch::with_capacity();
        let mut push = packet_pusher();
        push(&mut b, seg(cli, srv, 100, 0, SYN, 0), 0, &[]);
        push(&mut b, seg(srv, cli, 500, 101, SYN | ACK, 0), 1000, &[]);
        push(&mut b, seg(cli, srv, 101, 501, ACK, 0), 2000, &[]);
        w.process_batch(&b, &pos);
        b.clear();
        let (mut cseq, mut sseq) = (101u32, 501u32);
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let key = FlowKey::new(cli, srv, 6, 0).0;
        let n = 200u32;
        let step = SEC / 20;
        let mut latencies_before_window = 0;
        for i in 0..n {
            let ts = SEC / 100 + i64::from(i) * step;
            let req = format!("GET /item/{i} HTTP/1.1\r\nHost: x\r\n\r\n");
            let len = req.len() as u32;
            push(
                &mut b,
                seg(cli, srv, cseq, sseq, ACK | PSH, len),
                ts,
                req.as_bytes(),
            );
            cseq += len;
            // A latency of its own per request: i + 1 ms.
            let at = ts + (i64::from(i) + 1) * 1_000_000;
            let rlen = resp.len() as u32;
            push(&mut b, seg(srv, cli, sseq, cseq, ACK | PSH, rlen), at, resp);
            sseq += rlen;
            w.process_batch(&b, &pos);
            b.clear();
            let id = w.table.find(&key).unwrap();
            let tally = w.table.get(id).l7.as_ref().unwrap().tally();
            if at <= 2 * window {
                // A stitch could still move the connection: nothing went anywhere yet.
                latencies_before_window = i + 1;
                assert_eq!(tally.requests, u64::from(i + 1));
                assert!(w.out.edges.is_empty());
            } else {
                assert!(tally.resources.len() <= crate::l7::FLUSH_RESOURCES, "{i}");
                assert!(
                    tally.latency_us.summary().map_or(0, |s| s.count) <= 8,
                    "{i}"
                );
            }
        }
        assert!(
            latencies_before_window > 8,
            "the window held more than the inline values"
        );
        let r = w.into_result();
        assert_eq!(r.edges.len(), 1);
        let a = r.edges.values().next().unwrap();
        assert_eq!(
            (a.l7.requests, a.l7.responses),
            (u64::from(n), u64::from(n))
        );
        let lat = a.l7.latency_us.summary().unwrap();
        assert_eq!(
            (lat.count, lat.min, lat.max),
            (u64::from(n), 1000, u64::from(n) * 1000)
        );
        assert_eq!(a.l7.resources.len(), 64);
        assert_eq!(a.l7.resources.displaced, u64::from(n) - 64);
        assert_eq!(a.connections, 1);
    }

    /// A UDP flow's L7 state is released once idle for twice the load-balancer window (its
    /// tally on the edge, only the protocol's name kept), and a later exchange on the same
    /// flow takes up the same protocol: one flow, both exchanges counted.
    #[test]
    fn an_idle_udp_flow_releases_its_l7_state_and_resumes_it() {
        let (cli, srv, other) = (ep("10.0.0.2:40000"), ep("10.0.1.53:53"), ep("10.0.0.3:1"));
        let mut w = l7_worker(SEC);
        let pos = AtomicU64::new(0);
        let mut order = 0u64;
        let mut send = |w: &mut Worker, from: Endpoint, to: Endpoint, ts: i64, msg: &[u8]| {
            let t = Transport {
                src: from.ip,
                dst: to.ip,
                sport: from.port,
                dport: to.port,
                proto: 17,
                vlan: 0,
                ip_bytes: 28 + msg.len() as u32,
                fragments: 1,
                truncated: false,
                tcp: TcpFields::default(),
                payload_wire_len: msg.len() as u32,
            };
            let mut b = Batch::with_capacity();
            b.push(t, ts, 0, order, msg);
            order += 1;
            w.process_batch(&b, &pos);
        };
        let dns = |id: u8, answer: bool| {
            let mut m = vec![
                0,
                id,
                if answer { 0x81 } else { 0x01 },
                if answer { 0x80 } else { 0 },
            ];
            m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 7]);
            m.extend_from_slice(b"example");
            m.extend_from_slice(&[0, 0, 1, 0, 1]);
            m
        };
        let key = FlowKey::new(cli, srv, 17, 0).0;
        send(&mut w, cli, srv, SEC / 10, &dns(1, false));
        send(&mut w, srv, cli, SEC / 10 + 1_000_000, &dns(1, true));
        let id = w.table.find(&key).unwrap();
        assert!(w.table.get(id).l7.is_some());
        // 1.5 s later (within twice the window): still held.
        send(&mut w, other, srv, SEC * 16 / 10, b"x");
        w.sweep();
        assert!(w.table.get(id).l7.is_some());
        // 3 s later: released, the exchange on the edge.
        send(&mut w, other, srv, SEC * 31 / 10, b"x");
        w.sweep();
        let flow = w.table.get(id);
        assert!(flow.l7.is_none());
        // Settled: on the list a full table evicts from first, after completed closes.
        assert_eq!(w.table.listed(id).0, crate::flow::Flow::UDP_SETTLED_CLASS);
        let flow = w.table.get(id);
        let (protocol, server) = flow.l7_done.unwrap();
        assert_eq!(protocol, "dns");
        // The opener (the first datagram's sender) is the client: no L7-decided side.
        assert_eq!(server, None);
        // 10 s after the start: the same flow (UDP ends after 60 s of silence) asks again.
        send(&mut w, cli, srv, SEC * 10, &dns(2, false));
        send(&mut w, srv, cli, SEC * 10 + 3_000_000, &dns(2, true));
        assert_eq!(w.table.find(&key), Some(id));
        assert_eq!(
            w.table.listed(id).0,
            0,
            "speaking again: an ordinary UDP flow"
        );
        let r = w.into_result();
        let cli_ip: IpAddr = "10.0.0.2".parse().unwrap();
        let edges: Vec<_> = r.edges.iter().filter(|(k, _)| k.client == cli_ip).collect();
        assert_eq!(edges.len(), 1);
        let (k, a) = edges[0];
        assert_eq!((k.server, k.protocol, k.udp), (srv, "dns", true));
        assert_eq!((a.connections, a.l7.requests, a.l7.responses), (1, 2, 2));
        let lat = a.l7.latency_us.summary().unwrap();
        assert_eq!((lat.count, lat.min, lat.max), (2, 1000, 3000));
        assert_eq!(a.packets, [2, 2]);
    }

    /// A full table evicts the flow seen least recently, not the one opened first: a busy
    /// connection keeps its place however long ago it started.
    #[test]
    fn a_full_table_evicts_the_least_recently_seen_flow() {
        let srv = ep("10.0.1.1:80");
        let (a, b, c) = (
            ep("10.0.0.1:1000"),
            ep("10.0.0.2:1000"),
            ep("10.0.0.3:1000"),
        );
        let mut w = Worker::new(
            Limits::default(),
            2,
            false,
            false,
            None,
            None,
            LbOptions::default(),
        );
        let pos = AtomicU64::new(0);
        let mut batch = Batch::with_capacity();
        let mut order = 0;
        let mut send = |w: &mut Worker, from: Endpoint, at_ms: i64| {
            batch.push(
                seg(from, srv, 1, 1, ACK, 0),
                at_ms * SEC / 1000,
                0,
                order,
                &[],
            );
            order += 1;
            w.process_batch(&batch, &pos);
            batch.clear();
        };
        send(&mut w, a, 0);
        send(&mut w, b, 200);
        // a every half second: never idle for long, but seen well after b
        for at in (500..=3000).step_by(500) {
            send(&mut w, a, at);
        }
        send(&mut w, c, 4000); // evicts b
        send(&mut w, a, 4500); // still a's first flow
        let r = w.into_result();
        assert_eq!(r.limits.flows_evicted, 1);
        assert_eq!(r.flows, 3);
    }
}
