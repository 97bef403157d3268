//! Fanout: putting a worker's packets back in packet-time order.
//!
//! With one socket per worker, the kernel may spread one connection over several rings
//! (an asymmetric RSS hash before 4.x, frames it dissects differently in each direction, or
//! any non-hash fanout mode). The worker that owns the connection then gets its packets from
//! its own ring at once and from the others late, through forwarded batches. Processed in
//! arrival order, requests meet responses they precede and TCP sees segments out of order.
//!
//! So every lane (ring reader) publishes a watermark: the packet time up to which it has read
//! its ring and handed every packet to its owner. A worker keeps its own ring's packets and
//! the forwarded ones in per-lane queues (copies, in recycled batches) and processes them
//! earliest first, only as far as every lane has vouched for: a lane with packets queued
//! vouches up to its next one (its ring is read in order), an empty one up to its watermark.
//! Past `Limits::max_reorder_bytes` it processes the earliest anyway and counts it
//! (`limits.reorder_forced`). Where the kernel already dispatches by the workers' owner
//! function (`fanout cbpf`), a ring that has sent nothing for a while is not waited for
//! ([`Merge::trust_kernel`]); what it sends late is counted the same way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::pipeline::{Batch, PacketMeta};

/// What a lane has finished: nothing of it is still to come.
pub const DONE: i64 = i64::MAX;

/// What one queued packet costs against the bound: its payload and its record.
const META_BYTES: usize = std::mem::size_of::<PacketMeta>();

/// One watermark per lane, shared by all threads.
pub struct Watermarks(Vec<AtomicI64>);

impl Watermarks {
    pub fn new(lanes: usize) -> Watermarks {
        Watermarks((0..lanes).map(|_| AtomicI64::new(i64::MIN)).collect())
    }

    /// Lane `lane` has read its ring up to `ts` and handed every packet to its owner. Only
    /// moves forward. Release: whoever sees the value sees the batches sent before it.
    pub fn publish(&self, lane: usize, ts: i64) {
        if let Some(w) = self.0.get(lane) {
            w.fetch_max(ts, Ordering::Release);
        }
    }

    /// Every lane's watermark. Read *before* taking the forwarded batches, so that what a
    /// lane vouched for is already in the channel.
    pub fn snapshot(&self, out: &mut [i64]) {
        for (o, w) in out.iter_mut().zip(&self.0) {
            *o = w.load(Ordering::Acquire);
        }
    }
}

#[derive(Default)]
struct Lane {
    batches: VecDeque<Batch>,
    /// The next packet of the front batch.
    head: usize,
    /// Load-balancer tags that came after a batch's last packet: they go with this lane's
    /// next packet (tags are rare; this stays empty).
    trailing: Vec<crate::lvs::Tag>,
}

impl Lane {
    fn head(&self) -> Option<&PacketMeta> {
        self.batches.front()?.packets.get(self.head)
    }

    fn head_ts(&self) -> Option<i64> {
        self.head().map(|m| m.ts_ns)
    }
}

/// One worker's queues, one per lane.
pub struct Merge {
    lanes: Vec<Lane>,
    /// Finished batches: the caller takes them back (`take_spare`).
    spare: Vec<Batch>,
    held: usize,
    max_bytes: usize,
    /// Set when the kernel's fanout already sends every connection to its owner's ring
    /// (see [`Merge::trust_kernel`]).
    trust: Option<Trust>,
    /// The latest packet time handed out (i64::MIN before the first).
    last_out: i64,
    /// Packets that came from a lane not waited for, behind what was already handed out.
    late: u64,
}

/// Waiting for a ring that never sends anything costs a worker dearly: its own packets sit
/// queued until the other rings have read past them, up to a V3 block's worth, and are
/// cold in the cache by the time they are processed. Where the kernel runs the workers' own
/// owner function (`fanout cbpf`) the other rings have nothing to send, so a lane silent
/// for `quiet_ns` of packet time is no longer waited for; one that sends again is, from
/// then on, and what it sent behind the packets already handed out is counted (`late`).
struct Trust {
    own: usize,
    quiet_ns: i64,
    /// Per lane: the merged packet time when it last sent something (i64::MIN: never).
    heard: Vec<i64>,
    /// The first packet time handed out: silence is counted from there.
    first_out: i64,
}

impl Trust {
    /// Lane `lane` has sent nothing for the quiet time, `now` being the merged packet time.
    fn quiet(&self, lane: usize, now: i64) -> bool {
        let since = self
            .heard
            .get(lane)
            .copied()
            .unwrap_or(i64::MIN)
            .max(self.first_out);
        self.first_out != i64::MIN && now.saturating_sub(since) >= self.quiet_ns
    }
}

impl Merge {
    pub fn new(lanes: usize, max_bytes: usize) -> Merge {
        Merge {
            lanes: (0..lanes).map(|_| Lane::default()).collect(),
            spare: Vec::new(),
            held: 0,
            max_bytes,
            trust: None,
            last_out: i64::MIN,
            late: 0,
        }
    }

    /// The kernel dispatches by the workers' owner function: lane `own` (this worker's
    /// ring) does not wait for a lane that has sent nothing for `quiet_ns` of packet time.
    pub fn trust_kernel(mut self, own: usize, quiet_ns: i64) -> Merge {
        self.trust = Some(Trust {
            own,
            quiet_ns: quiet_ns.max(1),
            heard: vec![i64::MIN; self.lanes.len()],
            first_out: i64::MIN,
        });
        self
    }

    /// Packets processed out of packet-time order because their lane was not waited for
    /// (taken: the count restarts).
    pub fn take_late(&mut self) -> u64 {
        std::mem::take(&mut self.late)
    }

    /// Whether lane `j` is waited for (by lane `li`'s packets): always, unless the kernel is
    /// trusted and `j` has been silent long enough.
    fn awaited(&self, li: usize, j: usize) -> bool {
        match &self.trust {
            Some(t) if li == t.own && j != t.own => !t.quiet(j, self.last_out),
            _ => true,
        }
    }

    /// Bytes queued (payloads and packet records).
    pub fn held(&self) -> usize {
        self.held
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.head().is_none())
    }

    /// Queue `batch` as lane `lane`'s next packets, as it is (no copy): the reader's own
    /// batches and forwarded ones alike. Its load-balancer tags stay before the packets the
    /// reader put them before; tags after its last packet go before the lane's next packet.
    pub fn push_batch(&mut self, lane: usize, mut batch: Batch) {
        let Some(q) = self.lanes.get_mut(lane) else {
            return;
        };
        batch.mark = None;
        let sign_of_life = !batch.packets.is_empty() || !batch.tags.is_empty();
        if let Some(t) = self
            .trust
            .as_mut()
            .filter(|t| t.own != lane && sign_of_life)
        {
            if t.quiet(lane, self.last_out) {
                // Not waited for: what it sent behind our processed packets is late.
                let behind = batch
                    .packets
                    .iter()
                    .filter(|m| m.ts_ns < self.last_out)
                    .count();
                self.late += behind as u64;
            }
            if let Some(h) = t.heard.get_mut(lane) {
                *h = self.last_out;
            }
        }
        if !q.trailing.is_empty() {
            // Tags are rare: rebuilding the list costs nothing in the common case.
            let mut tags: Vec<(u32, crate::lvs::Tag)> =
                q.trailing.drain(..).map(|t| (0, t)).collect();
            tags.append(&mut batch.tags);
            batch.tags = tags;
        }
        let n = batch.packets.len() as u32;
        if batch.tags.iter().any(|(at, _)| *at >= n) {
            q.trailing.extend(
                batch
                    .tags
                    .iter()
                    .filter(|(at, _)| *at >= n)
                    .map(|(_, t)| *t),
            );
            batch.tags.retain(|(at, _)| *at < n);
        }
        if batch.packets.is_empty() {
            batch.clear();
            self.spare.push(batch);
            return;
        }
        let bytes: usize = batch
            .packets
            .iter()
            .map(|m| m.payload_len as usize + META_BYTES)
            .sum();
        self.held = self.held.saturating_add(bytes);
        q.batches.push_back(batch);
    }

    /// An emptied batch the merge has finished with, for the caller to fill or give back.
    pub fn take_spare(&mut self) -> Option<Batch> {
        self.spare.pop()
    }

    /// Keep an empty batch for later (`take_spare`).
    pub fn give_spare(&mut self, mut b: Batch) {
        b.clear();
        self.spare.push(b);
    }

    /// Emptied batches held.
    pub fn spares(&self) -> usize {
        self.spare.len()
    }

    /// Hand packets to `f` earliest first, as far as every lane vouches for (`bounds`: each
    /// lane's watermark, read before the last `push` of forwarded batches). `f` gets a batch,
    /// the indices of a run of its packets to process in order, and its lane: a lane's
    /// packets go in runs as long as the other lanes allow (usually the rest of a batch), so
    /// the worker can prefetch ahead within a run as it does offline. Returns how many went
    /// early because the queues were over their bound.
    pub fn run(
        &mut self,
        bounds: &[i64],
        mut f: impl FnMut(&Batch, std::ops::Range<usize>, usize),
    ) -> u64 {
        let mut forced = 0;
        loop {
            let mut best: Option<(i64, usize)> = None;
            for (i, l) in self.lanes.iter().enumerate() {
                match (l.head_ts(), best) {
                    (Some(ts), Some((b, _))) if ts >= b => {}
                    (Some(ts), _) => best = Some((ts, i)),
                    (None, _) => {}
                }
            }
            let Some((_, li)) = best else { break };
            // How far lane `li` may go: no other lane can still bring anything earlier.
            let limit = self.vouched(bounds, Some(li));
            let mut progressed = false;
            while let Some(b) = self.lanes.get(li).and_then(|q| q.batches.front()) {
                let from = self.lanes.get(li).map_or(0, |q| q.head);
                // The lane's packets in ring order, up to the first one past the limit.
                let within = b
                    .packets
                    .get(from..)
                    .map_or(0, |p| p.iter().take_while(|m| m.ts_ns <= limit).count());
                if within == 0 {
                    if self.held > self.max_bytes && from < b.packets.len() {
                        forced += 1;
                        self.hand_out(li, from + 1, &mut f);
                        progressed = true;
                    }
                    // Another lane's next packet may now be the earliest.
                    break;
                }
                self.hand_out(li, from + within, &mut f);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        forced
    }

    /// The time before which every packet has been handed out (none can still come): what
    /// the worker may close intervals up to.
    pub fn safe(&self, bounds: &[i64]) -> i64 {
        self.vouched(bounds, None)
    }

    /// How far lane `except` may go (None: how far everything has been handed out, for
    /// intervals, which waits for every lane): the earliest next packet queued on the other
    /// lanes, or for an empty one its watermark if it is waited for.
    fn vouched(&self, bounds: &[i64], except: Option<usize>) -> i64 {
        self.lanes
            .iter()
            .enumerate()
            .filter(|(j, _)| Some(*j) != except)
            .map(|(j, l)| {
                l.head_ts().unwrap_or_else(|| match except {
                    Some(li) if !self.awaited(li, j) => DONE,
                    _ => bounds.get(j).copied().unwrap_or(DONE),
                })
            })
            .min()
            .unwrap_or(DONE)
    }

    /// Hand out lane `li`'s packets from its head up to index `to` of its front batch.
    fn hand_out(
        &mut self,
        li: usize,
        to: usize,
        f: &mut impl FnMut(&Batch, std::ops::Range<usize>, usize),
    ) {
        let Some(q) = self.lanes.get_mut(li) else {
            return;
        };
        let Some(b) = q.batches.front() else { return };
        let from = q.head;
        let Some(run) = b.packets.get(from..to) else {
            return;
        };
        f(b, from..to, li);
        if let Some(last) = run.last() {
            self.last_out = self.last_out.max(last.ts_ns);
            if let Some(t) = self.trust.as_mut().filter(|t| t.first_out == i64::MIN) {
                t.first_out = run.first().map_or(last.ts_ns, |m| m.ts_ns);
            }
        }
        let bytes: usize = run
            .iter()
            .map(|m| m.payload_len as usize + META_BYTES)
            .sum();
        self.held = self.held.saturating_sub(bytes);
        q.head = to;
        if q.head < b.packets.len() {
            return;
        }
        q.head = 0;
        if let Some(mut b) = q.batches.pop_front() {
            b.clear();
            self.spare.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Transport;

    fn t(sport: u16) -> Transport {
        Transport {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
            sport,
            dport: 80,
            proto: 6,
            vlan: 0,
            ip_bytes: 0,
            fragments: 1,
            truncated: false,
            tcp: Default::default(),
            payload_wire_len: 0,
        }
    }

    fn batch(times: &[i64]) -> Batch {
        let mut b = Batch::with_capacity();
        for &ts in times {
            b.push(t(1), ts, 0, ts as u64, &ts.to_be_bytes());
        }
        b
    }

    fn tag(port: u16) -> crate::lvs::Tag {
        let ep = |ip: [u8; 4], port| crate::flow::Endpoint {
            ip: ip.into(),
            port,
        };
        crate::lvs::Tag {
            key: crate::flow::FlowKey::new(ep([10, 0, 0, 1], port), ep([10, 0, 0, 2], 80), 6, 0).0,
            stitch: crate::lvs::Stitch {
                vip: None,
                client: None,
                local: None,
                mode: crate::lvs::Mode::Nat,
                evidence: 0,
                paired: false,
                direct: false,
            },
        }
    }

    #[test]
    fn tags_travel_before_the_same_packet() {
        // Reader order: p1, tag A, p2, p3, tag B (after the batch's last packet); then p4.
        let mut first = batch(&[1]);
        first.push_tag(tag(1001));
        let rest = batch(&[2, 3]);
        for m in &rest.packets {
            first.push(m.t, m.ts_ns, m.vantage, m.order, rest.payload(m));
        }
        first.push_tag(tag(1002));
        let mut m = Merge::new(1, 1 << 20);
        m.push_batch(0, first);
        m.push_batch(0, batch(&[4]));
        let mut seen = Vec::new();
        m.run(&[DONE], |b, run, _| {
            for i in run {
                let p = &b.packets[i];
                for (_, t) in b.tags.iter().filter(|(at, _)| *at as usize == i) {
                    seen.push((t.key.a.port.max(t.key.b.port), p.ts_ns));
                }
            }
        });
        // A before p2 (as the reader placed it); B, which followed p3, before p4.
        assert_eq!(seen, vec![(1001, 2), (1002, 4)]);
    }

    fn run(m: &mut Merge, bounds: &[i64]) -> (Vec<i64>, u64) {
        let mut out = Vec::new();
        let forced = m.run(bounds, |b, run, _| {
            for p in &b.packets[run] {
                // The payload travels with its packet.
                assert_eq!(b.payload(p), &p.ts_ns.to_be_bytes());
                out.push(p.ts_ns);
            }
        });
        (out, forced)
    }

    #[test]
    fn interleaves_lanes_by_time_and_waits_for_the_slowest() {
        let mut m = Merge::new(2, 1 << 20);
        m.push_batch(0, batch(&[1, 3, 5]));
        m.push_batch(1, batch(&[2, 4, 6]));
        // Lane 0 has said nothing yet: once its queue is empty, lane 1's 6 must wait.
        let (out, forced) = run(&mut m, &[i64::MIN, i64::MIN]);
        assert_eq!(out, vec![1, 2, 3, 4, 5]);
        assert_eq!(forced, 0);
        assert_eq!(m.safe(&[i64::MIN, i64::MIN]), i64::MIN);
        // Lane 0 read up to 5 only: 6 still waits; at 6 it goes.
        assert!(run(&mut m, &[5, i64::MIN]).0.is_empty());
        assert_eq!(run(&mut m, &[6, i64::MIN]).0, vec![6]);
        assert!(m.is_empty());
        assert_eq!(m.held(), 0);
        assert_eq!(m.safe(&[7, 9]), 7);
    }

    #[test]
    fn trusting_the_kernel_stops_waiting_for_a_silent_ring_only_after_the_quiet_time() {
        // Lane 0 is ours; lane 1 has read nothing yet (watermark MIN) and sends nothing.
        let mut m = Merge::new(2, 1 << 20).trust_kernel(0, 10);
        let silent = [DONE, i64::MIN];
        m.push_batch(0, batch(&[100, 105]));
        // The first packet starts the quiet time; lane 1 is waited for until then.
        assert!(run(&mut m, &silent).0.is_empty());
        assert_eq!(run(&mut m, &[DONE, 100]).0, vec![100]);
        assert!(run(&mut m, &silent).0.is_empty(), "105: only 5 of quiet");
        // Once 10 of packet time has passed with nothing from lane 1 (at 111, which its
        // watermark allows), ours go at once, in the same pass.
        m.push_batch(0, batch(&[111, 112, 130]));
        assert_eq!(run(&mut m, &[DONE, 111]).0, vec![105, 111, 112, 130]);
        m.push_batch(0, batch(&[131]));
        assert_eq!(run(&mut m, &silent).0, vec![131]);
        assert_eq!(m.take_late(), 0);
        // Intervals still wait for every ring.
        assert_eq!(m.safe(&silent), i64::MIN);
        // Without trust the same queue waits for lane 1 whatever the time.
        let mut w = Merge::new(2, 1 << 20);
        w.push_batch(0, batch(&[100, 200]));
        assert_eq!(run(&mut w, &[DONE, 100]).0, vec![100]);
        assert!(run(&mut w, &silent).0.is_empty());
    }

    #[test]
    fn a_silent_ring_that_sends_again_is_counted_late_and_waited_for() {
        let mut m = Merge::new(2, 1 << 20).trust_kernel(0, 50);
        m.push_batch(0, batch(&[100, 160, 200]));
        // 160 is allowed by lane 1's watermark and ends the quiet time: 200 goes too.
        assert_eq!(run(&mut m, &[DONE, 170]).0, vec![100, 160, 200]);
        // Lane 1 forwards 180 and 210 after 200 went: 180 is behind, counted.
        m.push_batch(1, batch(&[180, 210]));
        m.push_batch(0, batch(&[205, 260]));
        assert_eq!(m.take_late(), 1);
        assert_eq!(m.take_late(), 0, "taken once");
        // It is waited for again: in time order with ours, and ours stop at its watermark.
        assert_eq!(run(&mut m, &[DONE, 210]).0, vec![180, 205, 210]);
        assert!(
            run(&mut m, &[DONE, 255]).0.is_empty(),
            "260 waits for lane 1"
        );
        assert_eq!(run(&mut m, &[DONE, 260]).0, vec![260]);
    }

    #[test]
    fn a_lane_goes_in_runs_as_long_as_the_others_allow() {
        let mut m = Merge::new(2, 1 << 20);
        m.push_batch(0, batch(&[1, 2, 3, 7, 8]));
        m.push_batch(1, batch(&[5, 6]));
        m.push_batch(1, batch(&[9]));
        let mut runs = Vec::new();
        m.run(&[DONE, 9], |b, run, lane| {
            runs.push((
                lane,
                b.packets[run].iter().map(|p| p.ts_ns).collect::<Vec<_>>(),
            ));
        });
        assert_eq!(
            runs,
            vec![
                (0, vec![1, 2, 3]),
                (1, vec![5, 6]),
                (0, vec![7, 8]),
                (1, vec![9])
            ]
        );
        assert!(m.is_empty());
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn a_forwarded_packet_earlier_than_the_own_ring_goes_first() {
        // The bad case: the owner's ring ran ahead (a response at 20) of a request (10)
        // read by another lane and forwarded late.
        let mut m = Merge::new(2, 1 << 20);
        m.push_batch(0, batch(&[20, 30]));
        // Lane 1 has vouched for nothing past 5: nothing goes.
        assert!(run(&mut m, &[30, 5]).0.is_empty());
        m.push_batch(1, batch(&[10]));
        assert_eq!(run(&mut m, &[30, 25]).0, vec![10, 20]);
        assert_eq!(m.safe(&[30, 25]), 25);
        assert_eq!(run(&mut m, &[DONE, DONE]).0, vec![30]);
        assert_eq!(m.safe(&[DONE, DONE]), DONE);
    }

    #[test]
    fn past_the_bound_the_earliest_goes_anyway_and_is_counted() {
        let per = 8 + META_BYTES;
        let mut m = Merge::new(2, 3 * per);
        m.push_batch(0, batch(&[1, 2, 3, 4, 5]));
        // Lane 1 is silent: 5 packets held, 3 allowed, so the 2 earliest go early.
        let (out, forced) = run(&mut m, &[i64::MIN, i64::MIN]);
        assert_eq!(out, vec![1, 2]);
        assert_eq!(forced, 2);
        assert_eq!(m.held(), 3 * per);
        // A later lane-1 packet earlier than what is left still goes in order.
        m.push_batch(1, batch(&[2]));
        let (out, forced) = run(&mut m, &[DONE, DONE]);
        assert_eq!(out, vec![2, 3, 4, 5]);
        assert_eq!(forced, 0);
    }

    #[test]
    fn finished_batches_come_back() {
        let mut m = Merge::new(2, 64 << 20);
        for round in 0..200i64 {
            let base = round * 1000;
            let a: Vec<i64> = (0..300).map(|i| base + 2 * i).collect();
            let b: Vec<i64> = (0..300).map(|i| base + 2 * i + 1).collect();
            m.push_batch(0, batch(&a));
            m.push_batch(1, batch(&b));
            let (out, _) = run(&mut m, &[base + 999, base + 999]);
            assert_eq!(out.len(), 600);
            assert!(out.windows(2).all(|w| w[0] < w[1]));
            // Every finished batch comes back.
            assert_eq!(m.spares(), 2 * (round as usize + 1));
        }
    }

    /// A real capture (fixtures/lab.pcap: HTTP, redis, MySQL, DNS) spread packet by packet
    /// over two lanes, as round-robin fanout does, lane 1 running three chunks behind lane 0:
    /// through the merge the worker's edges are those of the plain sequence; processed as
    /// they arrive they are not (so this test can fail).
    #[test]
    fn a_capture_spread_over_two_lanes_gives_the_sequential_result() {
        use crate::decode::{Decoder, Outcome};
        use crate::pipeline::Worker;
        use crate::report::{build_document, DocumentInput, ReaderStats};
        use crate::source::{CaptureFile, OrderedFile, Vantages};

        let limits = crate::limits::Limits::default();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/lab.pcap");
        let mut input = OrderedFile::new(CaptureFile::open(path, limits.max_record_bytes).unwrap());
        let mut vantages = Vantages::new(false);
        let mut dec = Decoder::new(limits.max_fragment_datagrams, limits.fragment_timeout_ns);
        // Chunks of 8 packets per lane, alternating packets between the lanes.
        let mut lanes: [Vec<Batch>; 2] = [Vec::new(), Vec::new()];
        let mut seq = Vec::new();
        let mut n = 0u64;
        loop {
            input.fill(&mut vantages).unwrap();
            let Some(slot) = input.pop() else { break };
            let p = input.packet(slot).unwrap().to_owned_packet();
            input.release(slot);
            if let Outcome::Flow(t, payload) = dec.decode(p.linktype, &p.data, p.ts_ns) {
                let lane = &mut lanes[(n % 2) as usize];
                if !matches!(lane.last(), Some(b) if b.packets.len() < 8) {
                    lane.push(Batch::with_capacity());
                }
                lane.last_mut().unwrap().push(t, p.ts_ns, 0, n, payload);
                seq.push((t, p.ts_ns, n, payload.to_vec()));
                n += 1;
            }
        }
        assert!(n > 100, "{n} packets");
        let edges = |w: Worker| {
            let doc = build_document(DocumentInput {
                results: vec![w.into_result()],
                reader: ReaderStats::default(),
                vantages: &vantages,
                filter: None,
                max_edges: limits.max_edges,
                kind: "pcap",
                lb_config: None,
            });
            serde_json::to_value(&doc).unwrap()["edges"].clone()
        };
        let worker = || {
            Worker::new(
                limits.clone(),
                1 << 16,
                false,
                true,
                None,
                None,
                Default::default(),
            )
        };
        let pos = std::sync::atomic::AtomicU64::new(0);

        let mut plain = worker();
        for (t, ts, order, payload) in &seq {
            let mut b = Batch::with_capacity();
            b.push(*t, *ts, 0, *order, payload);
            plain.process_batch(&b, &pos);
        }
        let want = edges(plain);
        assert!(want.as_array().unwrap().len() >= 4, "{want}");

        // Arrival: lane 0's chunk k with lane 1's chunk k - 3; each lane vouches up to the
        // last packet it handed over.
        const LAG: usize = 3;
        let steps = lanes[0].len().max(lanes[1].len()) + LAG;
        let chunk = |l: usize, k: Option<usize>| k.and_then(|k| lanes[l].get(k));
        let mut merged = worker();
        let mut naive = worker();
        let mut m = Merge::new(2, 64 << 20);
        let mut bounds = [i64::MIN; 2];
        for k in 0..steps {
            for (l, c) in [(0, chunk(0, Some(k))), (1, chunk(1, k.checked_sub(LAG)))] {
                if let Some(b) = c {
                    naive.process_batch(b, &pos);
                    let mut copy = Batch::with_capacity();
                    for p in &b.packets {
                        copy.push(p.t, p.ts_ns, p.vantage, p.order, b.payload(p));
                    }
                    m.push_batch(l, copy);
                    bounds[l] = b.packets.last().unwrap().ts_ns;
                }
            }
            if k + 1 == steps {
                bounds = [DONE; 2];
            }
            assert_eq!(
                m.run(&bounds, |b, run, lane| merged
                    .process_run(b, run, lane, &pos)),
                0
            );
        }
        assert!(m.is_empty());
        assert_eq!(edges(merged), want, "merged by time");
        assert_ne!(
            edges(naive),
            want,
            "arrival order must differ, or this proves nothing"
        );
    }

    #[test]
    fn watermarks_only_move_forward() {
        let w = Watermarks::new(2);
        let mut s = [0i64; 2];
        w.snapshot(&mut s);
        assert_eq!(s, [i64::MIN, i64::MIN]);
        w.publish(0, 10);
        w.publish(0, 5);
        w.publish(1, DONE);
        w.publish(7, 1);
        w.snapshot(&mut s);
        assert_eq!(s, [10, DONE]);
    }
}
