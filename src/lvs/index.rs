//! The leg index: fed by the reader thread with every decoded packet, in packet-time order,
//! it recognises the two legs of one load-balanced connection and emits a [`Tag`] for the
//! real-server leg. Evidence (strongest first): a TOA option naming a client whose SYN to
//! another destination was seen; equal client address, port and ISN on two SYNs to different
//! destinations (NAT keeps them); equal first request bytes at equal relative sequence offsets
//! (FULLNAT shifts sequence numbers, so ISNs are never compared there), or equal DNS
//! transaction id and question for UDP. Every entry lives at most `window` of packet time and
//! every map is bounded; hits are counted, never silent.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use smallvec::SmallVec;

use super::{evidence, LbOptions, Mode, Stitch, Tag};
use crate::decode::tcp_flags::{ACK, SYN};
use crate::decode::Transport;
use crate::flow::{Endpoint, FlowKey};

/// Bytes of the first request that identify it.
const FIRST_BYTES: usize = 64;
/// Legs remembered per first-bytes key (identical requests from concurrent connections).
const SLOT_LEGS: usize = 4;

type Tuple = (Endpoint, Endpoint);

/// Counters of the pending-connection filter (32 KiB: stays in cache; a few thousand
/// pending handshakes leave most of them zero).
const PENDING_SLOTS: usize = 1 << 15;
const _: () = assert!(PENDING_SLOTS <= 1 << 16, "a slot is kept as u16");
/// A counter that reached this has lost count: it stays "maybe" until the next sweep.
const PENDING_STUCK: u8 = u8::MAX;

#[derive(Clone, Copy, Debug)]
struct SynEntry {
    isn: u32,
    dst: Endpoint,
    vlan: u32,
    ts: i64,
    vantage: u16,
    /// The destination of the other leg, once paired.
    paired: Option<Endpoint>,
    direct: bool,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    isn: u32,
    /// The tuple's [`pending_slot`] (the map keeps only the tuple's hash).
    filter_slot: u16,
    ts: i64,
}

#[derive(Clone, Copy, Debug)]
struct Leg {
    src: Endpoint,
    dst: Endpoint,
    vlan: u32,
    ts: i64,
    vantage: u16,
    /// The other leg, once paired (later sightings of either are recognised).
    partner: Option<Tuple>,
}

/// The legs that sent one first-bytes key: up to [`SLOT_LEGS`] places, the first inline
/// (nearly every key has one leg, and a slot of four inline made this map the reader's
/// biggest cache footprint). A place emptied by expiry stays, so positions, which break
/// ties between legs seen at one time, are those of a fixed array.
#[derive(Clone, Debug, Default)]
struct Slot {
    legs: SmallVec<[Option<Leg>; 1]>,
}

/// For each map, a time no entry that a sweep could drop is older than: lowered at every
/// insert, exact after a sweep. A full map whose floor is inside the window has nothing a
/// sweep could free, so filling it does not sweep (on busy captures the first-bytes map
/// stays full of live entries, and each such sweep scanned every map for nothing).
#[derive(Clone, Copy, Debug)]
struct Floors {
    syns: i64,
    pending: i64,
    toa: i64,
    payloads: i64,
}

impl Floors {
    const EMPTY: Floors = Floors {
        syns: i64::MAX,
        pending: i64::MAX,
        toa: i64::MAX,
        payloads: i64::MAX,
    };
}

pub struct LegIndex {
    opts: LbOptions,
    max_entries: usize,
    vlan_key: bool,
    /// SYNs by client address and port.
    syns: HashMap<(IpAddr, u16), SynEntry, ahash::RandomState>,
    /// Connections whose first client payload has not been seen yet, by the keyed 64-bit
    /// hash of their TCP tuple ([`LegIndex::tuple_key`]): 24 bytes a bucket instead of 64,
    /// for a map that every connection's SYN and first payload look into.
    pending: HashMap<u64, Pending, ahash::RandomState>,
    /// How many tuples in `pending` fall on each [`pending_slot`], so that a removal can
    /// tell when a slot empties. Counted on insert and remove, rebuilt from the map at each
    /// sweep.
    pending_counts: Vec<u8>,
    /// One bit a slot: its count is not zero. A clear bit proves the tuple has no entry,
    /// so most data packets skip hashing two endpoints for the map. This, not the counts,
    /// is what every data packet reads (4 KiB, an eighth of the counts: the counts fell out
    /// of cache between packets, and that one load was 3 % of a live capture's profile).
    pending_bits: Vec<u64>,
    /// First request bytes -> legs that sent them.
    payloads: HashMap<u64, Slot, ahash::RandomState>,
    /// Real-server legs whose TOA option was already looked up.
    toa_seen: HashMap<Tuple, i64, ahash::RandomState>,
    hasher: ahash::RandomState,
    /// How much later a real-server leg is seen than its client leg (forwarding delay plus
    /// clock skew), learned from pairs that had only one possible partner; it picks among
    /// identical first requests when a leg is missing from the captures.
    delay: Option<i64>,
    last_sweep: i64,
    floors: Floors,
    /// Entries not stored (or displaced) because a map was full.
    pub full_hits: u64,
}

impl LegIndex {
    pub fn new(opts: LbOptions, max_entries: usize, vlan_key: bool) -> LegIndex {
        LegIndex {
            opts,
            max_entries: max_entries.max(16),
            vlan_key,
            syns: HashMap::default(),
            pending: HashMap::default(),
            pending_counts: vec![0; PENDING_SLOTS],
            pending_bits: vec![0; PENDING_SLOTS / 64],
            payloads: HashMap::default(),
            toa_seen: HashMap::default(),
            hasher: ahash::RandomState::new(),
            delay: None,
            last_sweep: i64::MIN,
            floors: Floors::EMPTY,
            full_hits: 0,
        }
    }

    fn window(&self) -> i64 {
        self.opts.window_ns.max(1)
    }

    /// Look at one packet; push tags for real-server legs recognised by it.
    #[inline]
    pub fn observe(
        &mut self,
        t: &Transport,
        payload: &[u8],
        ts: i64,
        vantage: u16,
        out: &mut Vec<Tag>,
    ) {
        if self.last_sweep == i64::MIN {
            self.last_sweep = ts;
        } else if ts.saturating_sub(self.last_sweep) > self.window() {
            self.sweep(ts);
        }
        // Most packets are none of: a SYN, a TOA carrier, the first payload of a connection
        // whose SYN is pending, a DNS query. Decide that here, inline and without hashing;
        // `evidence` checks each case again itself.
        let relevant = match t.proto {
            6 => {
                let flags = t.tcp.flags;
                flags & (SYN | ACK) == SYN
                    || t.tcp.toa.is_some()
                    || (flags & SYN == 0 && t.payload_wire_len > 0 && !payload.is_empty() && {
                        let (src, dst) = Endpoint::of(t);
                        self.may_be_pending(&src, &dst)
                    })
            }
            17 => is_dns_query(payload),
            _ => false,
        };
        if relevant {
            self.evidence(t, payload, ts, vantage, out);
        }
    }

    /// The work of [`LegIndex::observe`] for a packet that may carry evidence.
    #[inline(never)]
    fn evidence(
        &mut self,
        t: &Transport,
        payload: &[u8],
        ts: i64,
        vantage: u16,
        out: &mut Vec<Tag>,
    ) {
        let (src, dst) = Endpoint::of(t);
        let vlan = if self.vlan_key { t.vlan } else { 0 };
        if t.proto == 6 {
            let flags = t.tcp.flags;
            if flags & (SYN | ACK) == SYN {
                let isn = t.tcp.seq;
                if let Some(other) = self.syn(src, dst, vlan, isn, ts, vantage, out) {
                    // Paired on the SYNs (NAT): neither leg needs its first bytes indexed.
                    if let Some(p) = self.pending.remove(&self.tuple_key(&src, &other)) {
                        self.pending_count(p.filter_slot, false);
                    }
                } else {
                    let p = Pending {
                        isn,
                        filter_slot: pending_slot(&src, &dst),
                        ts,
                    };
                    self.insert_pending(self.tuple_key(&src, &dst), p, ts);
                }
            }
            if let Some((ip, port)) = t.tcp.toa {
                if ip != src.ip {
                    self.toa(src, dst, vlan, ip, port, ts, out);
                }
            }
            if t.payload_wire_len > 0
                && flags & SYN == 0
                && !payload.is_empty()
                && self.may_be_pending(&src, &dst)
            {
                if let Some(p) = self.pending.remove(&self.tuple_key(&src, &dst)) {
                    self.pending_count(p.filter_slot, false);
                    if ts.saturating_sub(p.ts) <= self.window() {
                        // Relative offset of this segment in the client's byte stream.
                        let offset = t.tcp.seq.wrapping_sub(p.isn).wrapping_sub(1);
                        let h = self.first_bytes_key(6, offset, payload);
                        self.payload_leg(6, h, (src, dst), vlan, ts, vantage, out);
                    }
                }
            }
        } else if t.proto == 17 && is_dns_query(payload) && unicast(&t.dst) {
            let h = self.first_bytes_key(17, 0, payload);
            self.payload_leg(17, h, (src, dst), vlan, ts, vantage, out);
        }
    }

    fn first_bytes_key(&self, proto: u8, offset: u32, payload: &[u8]) -> u64 {
        let bytes = payload.get(..FIRST_BYTES).unwrap_or(payload);
        let mut h = self.hasher.build_hasher();
        proto.hash(&mut h);
        offset.hash(&mut h);
        bytes.hash(&mut h);
        h.finish()
    }

    /// Which of two legs (`x` seen first) is the client's: the one to a configured VIP, or
    /// the one not to a configured real server, or not from a director's local address;
    /// else the one seen first (the director forwards after it receives).
    fn roles(&self, proto: u8, x: &Leg, y: &Leg) -> bool {
        if let Some(c) = &self.opts.config {
            if c.is_vip(proto, &y.dst) || c.is_real(proto, &x.dst) {
                return false;
            }
            if c.is_vip(proto, &x.dst) || c.is_real(proto, &y.dst) {
                return true;
            }
        }
        if self.opts.is_local(&x.src.ip) && !self.opts.is_local(&y.src.ip) {
            return false;
        }
        // A leg that carried a TOA option is the real server's.
        let toa = |l: &Leg| self.toa_seen.contains_key(&(l.src, l.dst));
        if toa(x) && !toa(y) {
            return false;
        }
        true
    }

    fn tag(&self, client: &Leg, rs: &Leg, proto: u8, ev: u8) -> Tag {
        let nat = rs.src == client.src;
        let (key, _) = FlowKey::new(rs.src, rs.dst, proto, rs.vlan);
        Tag {
            key,
            stitch: Stitch {
                vip: Some(client.dst),
                client: Some(client.src.ip),
                local: (!nat).then_some(rs.src.ip),
                mode: if nat { Mode::Nat } else { Mode::FullNat },
                evidence: ev | if nat { evidence::TUPLE } else { 0 },
                paired: true,
                direct: false,
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn syn(
        &mut self,
        src: Endpoint,
        dst: Endpoint,
        vlan: u32,
        isn: u32,
        ts: i64,
        vantage: u16,
        out: &mut Vec<Tag>,
    ) -> Option<Endpoint> {
        let window = self.window();
        let want_direct = self.opts.config.is_some();
        let key = (src.ip, src.port);
        if let Some(e) = self.syns.get_mut(&key) {
            if ts.saturating_sub(e.ts) <= window && e.isn == isn {
                if e.dst == dst {
                    // The same leg again: a retransmission, or another capture position.
                    if e.vantage != vantage && e.paired.is_none() && !e.direct {
                        e.direct = true;
                        if want_direct {
                            let (k, _) = FlowKey::new(src, dst, 6, vlan);
                            out.push(Tag {
                                key: k,
                                stitch: Stitch::direct(),
                            });
                        }
                    }
                    return e.paired;
                }
                if e.paired == Some(dst) {
                    return Some(e.dst); // the other leg seen again
                }
                if e.paired.is_some() {
                    return None; // a third destination: ignored
                }
                e.paired = Some(dst);
                let x = Leg {
                    src,
                    dst: e.dst,
                    vlan: e.vlan,
                    ts: e.ts,
                    vantage: e.vantage,
                    partner: None,
                };
                let y = Leg {
                    src,
                    dst,
                    vlan,
                    ts,
                    vantage,
                    partner: None,
                };
                let tag = if self.roles(6, &x, &y) {
                    self.learn(y.ts.saturating_sub(x.ts));
                    self.tag(&x, &y, 6, evidence::ISN)
                } else {
                    self.learn(x.ts.saturating_sub(y.ts));
                    self.tag(&y, &x, 6, evidence::ISN)
                };
                out.push(tag);
                return Some(x.dst);
            }
        }
        let entry = SynEntry {
            isn,
            dst,
            vlan,
            ts,
            vantage,
            paired: None,
            direct: false,
        };
        if self.syns.len() >= self.max_entries && !self.syns.contains_key(&key) {
            self.make_room(ts, self.floors.syns);
            if self.syns.len() >= self.max_entries {
                self.full_hits += 1;
                return None;
            }
        }
        self.syns.insert(key, entry);
        self.floors.syns = self.floors.syns.min(ts);
        None
    }

    /// The key of a TCP tuple in `pending`. Keyed like the maps' own hashes, so a collision
    /// (two tuples, one key: about one in 10^10 at the bound) cannot be crafted; it would
    /// only lose or misplace one first-bytes entry.
    fn tuple_key(&self, src: &Endpoint, dst: &Endpoint) -> u64 {
        self.hasher.hash_one((src, dst))
    }

    fn insert_pending(&mut self, k: u64, p: Pending, ts: i64) {
        if self.pending.len() >= self.max_entries && !self.pending.contains_key(&k) {
            self.make_room(ts, self.floors.pending);
            if self.pending.len() >= self.max_entries {
                self.full_hits += 1;
                return;
            }
        }
        self.floors.pending = self.floors.pending.min(p.ts);
        if self.pending.insert(k, p).is_none() {
            self.pending_count(p.filter_slot, true);
        }
    }

    /// Count a tuple into (`add`) or out of the pending filter, by its slot.
    fn pending_count(&mut self, slot: u16, add: bool) {
        let slot = usize::from(slot);
        if let Some(c) = self.pending_counts.get_mut(slot) {
            if *c != PENDING_STUCK {
                *c = if add {
                    c.saturating_add(1)
                } else {
                    c.saturating_sub(1)
                };
            }
            set_bit(&mut self.pending_bits, slot, *c != 0);
        }
    }

    /// False when `pending` surely holds no entry for this tuple.
    #[inline]
    fn may_be_pending(&self, src: &Endpoint, dst: &Endpoint) -> bool {
        // A slot is always in range; a missing one would answer "maybe".
        bit(&self.pending_bits, usize::from(pending_slot(src, dst))) != Some(false)
    }

    #[allow(clippy::too_many_arguments)]
    fn toa(
        &mut self,
        src: Endpoint,
        dst: Endpoint,
        vlan: u32,
        ip: IpAddr,
        port: u16,
        ts: i64,
        out: &mut Vec<Tag>,
    ) {
        // Once per real-server leg: TOA may ride on several early segments (and a flood of
        // them must not cost a lookup each).
        if let Some(seen) = self.toa_seen.get(&(src, dst)) {
            if ts.saturating_sub(*seen) <= self.window() {
                return;
            }
        }
        if self.toa_seen.len() >= self.max_entries && !self.toa_seen.contains_key(&(src, dst)) {
            self.make_room(ts, self.floors.toa);
            if self.toa_seen.len() >= self.max_entries {
                self.full_hits += 1;
                return;
            }
        }
        self.toa_seen.insert((src, dst), ts);
        self.floors.toa = self.floors.toa.min(ts);
        let window = self.window();
        let Some(e) = self.syns.get_mut(&(ip, port)) else {
            return;
        };
        if ts.saturating_sub(e.ts) > window || e.dst == dst {
            return;
        }
        if e.paired.is_none() {
            e.paired = Some(dst);
        }
        let (vip, d) = (e.dst, ts.saturating_sub(e.ts));
        self.learn(d);
        let (key, _) = FlowKey::new(src, dst, 6, vlan);
        out.push(Tag {
            key,
            stitch: Stitch {
                vip: Some(vip),
                client: Some(ip),
                local: Some(src.ip),
                mode: Mode::FullNat,
                evidence: evidence::TOA,
                paired: true,
                direct: false,
            },
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn payload_leg(
        &mut self,
        proto: u8,
        h: u64,
        (src, dst): Tuple,
        vlan: u32,
        ts: i64,
        vantage: u16,
        out: &mut Vec<Tag>,
    ) {
        let window = self.window();
        if !self.payloads.contains_key(&h) && self.payloads.len() >= self.max_entries / 4 {
            self.make_room(ts, self.floors.payloads);
            if self.payloads.len() >= self.max_entries / 4 {
                self.full_hits += 1;
                return;
            }
        }
        let mut slot = self.payloads.get(&h).cloned().unwrap_or_default();
        for l in slot.legs.iter_mut() {
            if l.is_some_and(|l| ts.saturating_sub(l.ts) > window) {
                *l = None;
            }
        }
        let me = Leg {
            src,
            dst,
            vlan,
            ts,
            vantage,
            partner: None,
        };
        // Another sighting of a leg already known (a second capture position).
        if let Some(l) = slot
            .legs
            .iter_mut()
            .flatten()
            .find(|l| (l.src == src && l.dst == dst) || l.partner == Some((src, dst)))
        {
            if l.partner.is_none() && l.vantage != vantage && self.opts.config.is_some() {
                // Seen untranslated at two capture positions and never paired: direct
                // traffic, whatever the configuration says about its server.
                l.vantage = vantage;
                let (key, _) = FlowKey::new(src, dst, proto, vlan);
                out.push(Tag {
                    key,
                    stitch: Stitch::direct(),
                });
                self.payloads.insert(h, slot);
            }
            return;
        }
        // Looked up only for a candidate from this very source (rare: most first bytes
        // are new, and the others come from other sources).
        let syns = &self.syns;
        let isn_pair = |other: Endpoint| {
            syns.get(&(src.ip, src.port)).is_some_and(|e| {
                (e.dst == other && e.paired == Some(dst))
                    || (e.dst == dst && e.paired == Some(other))
            })
        };
        let cfg = self.opts.config.as_deref();
        let both_real = |other: &Endpoint| {
            cfg.is_some_and(|c| c.is_real(proto, other) && c.is_real(proto, &dst))
        };
        // An unpaired leg to another service (never the reverse direction): the one whose
        // distance in time is closest to the learned delay, else the oldest.
        let delay = self.delay.map(i64::saturating_abs);
        let mut n = 0usize;
        let cand = slot
            .legs
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.map(|l| (i, l)))
            .filter(|(_, l)| {
                l.partner.is_none()
                    && l.dst != dst
                    // LVS keeps the address family (NAT64 directors are not modelled):
                    // an IPv4 and an IPv6 query with one id are two queries.
                    && l.dst.ip.is_ipv4() == dst.ip.is_ipv4()
                    && !(l.src == dst && l.dst == src)
                    // TCP through NAT keeps the source and the ISN (matched on the SYNs);
                    // through FULLNAT the source changes: two TCP legs from one source that
                    // the SYNs did not pair are two connections (a director reuses a local
                    // port towards different servers).
                    && (proto == 17 || l.src != src || isn_pair(l.dst))
                    // FULLNAT replaces the client's address: legs from one address on two
                    // ports are two connections of that client (seen at two servers).
                    && (l.src == src || l.src.ip != src.ip)
                    && !both_real(&l.dst)
                    // Two legs carrying TOA are both real-server legs.
                    && !(self.toa_seen.contains_key(&(l.src, l.dst))
                        && self.toa_seen.contains_key(&(src, dst)))
            })
            .inspect(|_| n += 1)
            .min_by_key(|(i, l)| {
                let off = delay.map_or(0, |d| {
                    ts.saturating_sub(l.ts)
                        .saturating_abs()
                        .saturating_sub(d)
                        .saturating_abs()
                });
                (off, l.ts, *i)
            });
        let mut me = me;
        if let Some((i, x)) = cand {
            let client_first = self.roles(proto, &x, &me);
            if n == 1 {
                // Only one possible partner: a trustworthy measure of the delay.
                let d = me.ts.saturating_sub(x.ts);
                self.learn(if client_first { d } else { d.saturating_neg() });
            }
            let tag = if client_first {
                self.tag(&x, &me, proto, evidence::PAYLOAD)
            } else {
                self.tag(&me, &x, proto, evidence::PAYLOAD)
            };
            out.push(tag);
            if let Some(Some(l)) = slot.legs.get_mut(i) {
                l.partner = Some((src, dst));
            }
            me.partner = Some((x.src, x.dst));
        }
        // Store this leg: a free place, else the oldest paired leg (only remembered to
        // recognise later sightings), else the oldest waiting one (counted: it can no
        // longer be paired).
        let free = slot.legs.iter().position(Option::is_none).or_else(|| {
            (slot.legs.len() < SLOT_LEGS).then(|| {
                slot.legs.push(None);
                slot.legs.len() - 1
            })
        });
        let place = free.unwrap_or_else(|| {
            let oldest = |paired: bool| {
                slot.legs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, l)| l.map(|l| (i, l)))
                    .filter(|(_, l)| l.partner.is_some() == paired)
                    .min_by_key(|(i, l)| (l.ts, *i))
                    .map(|(i, _)| i)
            };
            oldest(true).unwrap_or_else(|| {
                self.full_hits += 1;
                oldest(false).unwrap_or(0)
            })
        });
        if let Some(p) = slot.legs.get_mut(place) {
            *p = Some(me);
        }
        self.payloads.insert(h, slot);
        self.floors.payloads = self.floors.payloads.min(ts);
    }

    /// Fold one measured delay (real-server leg minus client leg) into the estimate.
    fn learn(&mut self, d: i64) {
        self.delay = Some(match self.delay {
            None => d,
            // a moving average: follows a drifting skew, shrugs off one odd pair
            Some(e) => e.saturating_add(d.saturating_sub(e) / 8),
        });
    }

    /// Drop what is older than the window for a full map whose `floor` says it holds such
    /// entries, at most a few times per window (a flood that keeps a map full must not make
    /// every packet scan it).
    fn make_room(&mut self, ts: i64, floor: i64) {
        let w = self.window();
        if ts.saturating_sub(floor) > w && ts.saturating_sub(self.last_sweep) >= w / 8 {
            self.sweep(ts);
        }
    }

    #[cold]
    fn sweep(&mut self, ts: i64) {
        let w = self.window();
        self.last_sweep = ts;
        let mut floors = Floors::EMPTY;
        // Keep what is inside the window; the floors become the oldest kept.
        let keep = |floor: &mut i64, t: i64| {
            let kept = ts.saturating_sub(t) <= w;
            if kept {
                *floor = (*floor).min(t);
            }
            kept
        };
        self.syns.retain(|_, e| keep(&mut floors.syns, e.ts));
        self.pending.retain(|_, p| keep(&mut floors.pending, p.ts));
        self.pending_counts.fill(0);
        self.pending_bits.fill(0);
        for p in self.pending.values() {
            let slot = usize::from(p.filter_slot);
            if let Some(c) = self.pending_counts.get_mut(slot) {
                *c = c.saturating_add(1);
            }
            set_bit(&mut self.pending_bits, slot, true);
        }
        self.toa_seen.retain(|_, t| keep(&mut floors.toa, *t));
        // A slot goes when its newest leg is out of the window.
        self.payloads.retain(|_, s| {
            let newest = s.legs.iter().flatten().map(|l| l.ts).max();
            newest.is_some_and(|n| keep(&mut floors.payloads, n))
        });
        self.floors = floors;
    }

    /// Entries held now (for tests of the bounds).
    pub fn entries(&self) -> usize {
        self.syns.len() + self.pending.len() + self.payloads.len() + self.toa_seen.len()
    }
}

/// Bit `slot` of a bitmap; None past its end.
fn bit(bits: &[u64], slot: usize) -> Option<bool> {
    bits.get(slot / 64).map(|w| w >> (slot % 64) & 1 == 1)
}

/// Set (`on`) or clear bit `slot` of a bitmap; a slot past its end changes nothing.
fn set_bit(bits: &mut [u64], slot: usize, on: bool) {
    if let Some(w) = bits.get_mut(slot / 64) {
        let bit = 1u64 << (slot % 64);
        *w = if on { *w | bit } else { *w & !bit };
    }
}

/// The filter slot of a (source, destination) tuple: a fixed multiplicative hash, cheap next
/// to the map's keyed one. Crafted collisions only cost the lookup the filter saves.
#[inline]
fn pending_slot(src: &Endpoint, dst: &Endpoint) -> u16 {
    fn fold(ip: &IpAddr) -> u64 {
        match ip {
            IpAddr::V4(a) => u64::from(u32::from(*a)),
            IpAddr::V6(a) => {
                let v = u128::from(*a);
                (v as u64) ^ ((v >> 64) as u64).rotate_left(17)
            }
        }
    }
    let ports = (u64::from(src.port) << 16) | u64::from(dst.port);
    let x = fold(&src.ip).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ fold(&dst.ip).rotate_left(29)
        ^ ports.rotate_left(40);
    let h = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (h >> (64 - PENDING_SLOTS.trailing_zeros())) as u16
}

/// A VIP or a real server is a unicast address (LLMNR and mDNS queries go to groups).
fn unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_multicast() && !a.is_broadcast(),
        IpAddr::V6(a) => !a.is_multicast(),
    }
}

/// A DNS query: QR clear, opcode QUERY, one question.
fn is_dns_query(p: &[u8]) -> bool {
    match (p.get(2), p.get(4), p.get(5)) {
        (Some(flags), Some(0), Some(1)) => p.len() >= 17 && flags & 0xF8 == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TcpFields;

    const SEC: i64 = 1_000_000_000;

    fn ep(s: &str) -> Endpoint {
        let sa: std::net::SocketAddr = s.parse().unwrap();
        Endpoint {
            ip: sa.ip(),
            port: sa.port(),
        }
    }

    fn pkt(src: &str, dst: &str, flags: u8, seq: u32, len: u32) -> Transport {
        let (s, d) = (ep(src), ep(dst));
        Transport {
            src: s.ip,
            dst: d.ip,
            sport: s.port,
            dport: d.port,
            proto: 6,
            vlan: 0,
            ip_bytes: 40 + len,
            fragments: 1,
            truncated: false,
            tcp: TcpFields {
                seq,
                ack: 0,
                flags,
                window: 1000,
                toa: None,
            },
            payload_wire_len: len,
        }
    }

    fn index() -> LegIndex {
        LegIndex::new(
            LbOptions {
                window_ns: 2 * SEC,
                ..LbOptions::default()
            },
            1000,
            false,
        )
    }

    const C: &str = "10.213.0.2:40000";
    const VIP: &str = "10.213.9.10:80";
    const RS: &str = "10.213.1.11:80";
    const LOCAL: &str = "10.213.8.1:20000";

    /// The pending filter never hides an entry: after every packet of a long mixed run
    /// (SYNs, first and later payloads, both directions, window expiries, a map at its bound)
    /// each pending tuple passes the filter and the counters add up to the map's size.
    #[test]
    fn the_pending_filter_never_hides_a_pending_connection() {
        let mut ix = LegIndex::new(
            LbOptions {
                window_ns: 2 * SEC,
                ..LbOptions::default()
            },
            200, // small: the map's bound and make_room are exercised too
            false,
        );
        let mut out = Vec::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut removed_by_payload = 0;
        // Every tuple that sent a SYN: the map keeps only their hashes.
        let mut syn_tuples = std::collections::HashSet::new();
        for i in 0..20_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = format!(
                "10.213.{}.{}:{}",
                x % 3,
                (x >> 8) % 7,
                40000 + (x >> 16) % 60
            );
            let v = format!("10.213.9.{}:{}", (x >> 24) % 2, 80 + (x >> 32) % 2);
            let (src, dst) = if (x >> 40).is_multiple_of(4) {
                (v, c)
            } else {
                (c, v)
            };
            let ts = i * (SEC / 1000); // 20 s in all: ten windows
            let before = ix.pending.len();
            match (x >> 44) % 3 {
                0 => {
                    syn_tuples.insert((ep(&src), ep(&dst)));
                    ix.observe(&pkt(&src, &dst, SYN, 1, 0), &[], ts, 0, &mut out)
                }
                _ => ix.observe(&pkt(&src, &dst, ACK, 2, 5), b"hello", ts, 0, &mut out),
            }
            if ix.pending.len() < before {
                removed_by_payload += 1;
            }
            // Every tuple with an entry passes the filter (all of them now and then, and
            // the packet's own tuple each time).
            let (s, d) = (ep(&src), ep(&dst));
            let check = |(a, b): &(Endpoint, Endpoint)| {
                if ix.pending.contains_key(&ix.tuple_key(a, b)) {
                    assert!(ix.may_be_pending(a, b), "packet {i}: {a:?} -> {b:?} hidden");
                }
            };
            check(&(s, d));
            if i % 64 == 0 {
                syn_tuples.iter().for_each(check);
            }
            if ix.pending_counts.iter().all(|&n| n != PENDING_STUCK) {
                let total: usize = ix.pending_counts.iter().map(|&n| usize::from(n)).sum();
                assert_eq!(total, ix.pending.len(), "packet {i}");
            }
            // The bits are the counts' summary: set exactly where a count is not zero (the
            // packet's own slot each time, all of them now and then).
            let summarised = |slot: usize| {
                let counted = ix.pending_counts.get(slot).map(|&n| n != 0);
                assert_eq!(
                    bit(&ix.pending_bits, slot),
                    counted,
                    "packet {i}, slot {slot}"
                );
            };
            summarised(usize::from(pending_slot(&s, &d)));
            if i % 64 == 0 {
                (0..PENDING_SLOTS).for_each(summarised);
            }
        }
        // The run really removed entries through first payloads (not only by expiry).
        assert!(removed_by_payload > 100, "{removed_by_payload}");
    }

    #[test]
    fn nat_legs_pair_on_address_port_and_isn() {
        let mut ix = index();
        let mut out = Vec::new();
        ix.observe(&pkt(C, VIP, SYN, 7, 0), &[], 0, 0, &mut out);
        // the same SYN at another capture position, and retransmitted: not a pair
        ix.observe(&pkt(C, VIP, SYN, 7, 0), &[], 10, 1, &mut out);
        ix.observe(&pkt(C, VIP, SYN, 7, 0), &[], 20, 0, &mut out);
        assert!(out.is_empty());
        // another ISN to the real server: another connection
        ix.observe(&pkt(C, RS, SYN, 8, 0), &[], 30, 1, &mut out);
        assert!(out.is_empty());
        let c2 = "10.213.0.2:40001";
        ix.observe(&pkt(c2, VIP, SYN, 9, 0), &[], 40, 0, &mut out);
        ix.observe(&pkt(c2, RS, SYN, 9, 0), &[], 50, 1, &mut out);
        assert_eq!(out.len(), 1);
        let t = out[0];
        assert_eq!(t.key, FlowKey::new(ep(c2), ep(RS), 6, 0).0);
        assert_eq!(t.stitch.vip, Some(ep(VIP)));
        assert_eq!(t.stitch.mode, Mode::Nat);
        assert_eq!(t.stitch.evidence, evidence::ISN | evidence::TUPLE);
        assert!(t.stitch.paired);
        // later sightings of either leg add nothing
        out.clear();
        ix.observe(&pkt(c2, RS, SYN, 9, 0), &[], 60, 2, &mut out);
        ix.observe(&pkt(c2, VIP, SYN, 9, 0), &[], 70, 2, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn fullnat_legs_pair_on_first_bytes_at_equal_offsets_within_the_window() {
        let req = b"GET / HTTP/1.1\r\nHost: 10.213.9.10\r\n\r\n";
        let mut ix = index();
        let mut out = Vec::new();
        ix.observe(&pkt(C, VIP, SYN, 100, 0), &[], 0, 0, &mut out);
        ix.observe(&pkt(LOCAL, RS, SYN, 5000, 0), &[], 10, 1, &mut out);
        ix.observe(
            &pkt(C, VIP, ACK, 101, req.len() as u32),
            req,
            20,
            0,
            &mut out,
        );
        assert!(out.is_empty(), "ISNs differ: no SYN pair");
        ix.observe(
            &pkt(LOCAL, RS, ACK, 5001, req.len() as u32),
            req,
            30,
            1,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let t = out[0];
        assert_eq!(t.key, FlowKey::new(ep(LOCAL), ep(RS), 6, 0).0);
        assert_eq!(t.stitch.vip, Some(ep(VIP)));
        assert_eq!(t.stitch.client, Some(ep(C).ip));
        assert_eq!(t.stitch.local, Some(ep(LOCAL).ip));
        assert_eq!(t.stitch.mode, Mode::FullNat);
        assert_eq!(t.stitch.evidence, evidence::PAYLOAD);

        // the same bytes at another offset (the first segment was missed): no pair
        let mut ix = index();
        out.clear();
        ix.observe(&pkt(C, VIP, SYN, 100, 0), &[], 0, 0, &mut out);
        ix.observe(&pkt(LOCAL, RS, SYN, 5000, 0), &[], 10, 1, &mut out);
        ix.observe(
            &pkt(C, VIP, ACK, 101, req.len() as u32),
            req,
            20,
            0,
            &mut out,
        );
        ix.observe(
            &pkt(LOCAL, RS, ACK, 5011, req.len() as u32),
            req,
            30,
            1,
            &mut out,
        );
        assert!(out.is_empty());

        // further apart than the window: no pair
        let mut ix = index();
        ix.observe(&pkt(C, VIP, SYN, 100, 0), &[], 0, 0, &mut out);
        ix.observe(
            &pkt(C, VIP, ACK, 101, req.len() as u32),
            req,
            20,
            0,
            &mut out,
        );
        ix.observe(&pkt(LOCAL, RS, SYN, 5000, 0), &[], 3 * SEC, 1, &mut out);
        ix.observe(
            &pkt(LOCAL, RS, ACK, 5001, req.len() as u32),
            req,
            3 * SEC,
            1,
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_toa_option_finds_the_client_leg() {
        let mut ix = index();
        let mut out = Vec::new();
        ix.observe(&pkt(C, VIP, SYN, 100, 0), &[], 0, 0, &mut out);
        let mut ack = pkt(LOCAL, RS, ACK, 5001, 0);
        ack.tcp.toa = Some((ep(C).ip, ep(C).port));
        ix.observe(&ack, &[], 10, 1, &mut out);
        ix.observe(&ack, &[], 11, 1, &mut out); // once per leg
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].stitch.vip, Some(ep(VIP)));
        assert_eq!(out[0].stitch.evidence, evidence::TOA);
        assert_eq!(out[0].key, FlowKey::new(ep(LOCAL), ep(RS), 6, 0).0);
    }

    fn udp(src: &str, dst: &str, len: u32) -> Transport {
        Transport {
            proto: 17,
            tcp: TcpFields::default(),
            ..pkt(src, dst, 0, 0, len)
        }
    }

    #[test]
    fn dns_queries_pair_on_id_and_question_but_not_across_families_or_to_groups() {
        // id 0x1234, RD, one question: lvs.test A
        let q =
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03lvs\x04test\x00\x00\x01\x00\x01";
        let mut ix = index();
        let mut out = Vec::new();
        ix.observe(
            &udp("10.213.0.2:5000", "10.213.9.10:53", 27),
            q,
            0,
            0,
            &mut out,
        );
        ix.observe(
            &udp("10.213.8.1:6000", "10.213.1.11:53", 27),
            q,
            10,
            1,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].stitch.vip, Some(ep("10.213.9.10:53")));
        assert_eq!(out[0].key.proto, 17);
        // an answer is not a query
        let mut a = q.to_vec();
        a[2] |= 0x80;
        out.clear();
        ix.observe(
            &udp("10.213.1.11:53", "10.213.8.1:6000", 27),
            &a,
            20,
            1,
            &mut out,
        );
        assert!(out.is_empty());
        // LLMNR: one query to the IPv4 and the IPv6 group
        let mut ix = index();
        ix.observe(
            &udp("10.213.0.2:5355", "224.0.0.252:5355", 27),
            q,
            0,
            0,
            &mut out,
        );
        ix.observe(
            &udp("[fd00:213::2]:5355", "[ff02::1:3]:5355", 27),
            q,
            10,
            0,
            &mut out,
        );
        // and unicast across families
        ix.observe(
            &udp("10.213.0.2:5000", "10.213.9.10:53", 27),
            q,
            20,
            0,
            &mut out,
        );
        ix.observe(
            &udp("[fd00:213::2]:5000", "[fd00:213::53]:53", 27),
            q,
            30,
            0,
            &mut out,
        );
        assert!(out.is_empty());
    }

    /// A map full of entries inside the window is not swept for a new one (nothing could
    /// go); once its oldest entry is out of the window, the next new one sweeps and is kept.
    #[test]
    fn a_full_map_is_swept_only_when_something_in_it_expired() {
        let mut ix = index(); // 250 first-bytes slots
        let mut out = Vec::new();
        let mut first_request = |ix: &mut LegIndex, i: u32, ts: i64| {
            let src = format!("10.213.{}.{}:{}", 100 + (i >> 8), i & 0xff, 1024 + i);
            let req = format!("GET /{i} HTTP/1.1\r\n\r\n");
            ix.observe(&pkt(&src, RS, SYN, i, 0), &[], ts, 0, &mut out);
            let data = pkt(&src, RS, ACK, i + 1, req.len() as u32);
            ix.observe(&data, req.as_bytes(), ts, 0, &mut out);
        };
        for i in 0..250 {
            first_request(&mut ix, i, i64::from(i) * 1_000_000); // 0.25 s in all
        }
        assert_eq!((ix.payloads.len(), ix.full_hits), (250, 0));
        let swept = ix.last_sweep;
        first_request(&mut ix, 250, SEC);
        assert_eq!(ix.full_hits, 1, "no room");
        assert_eq!(
            ix.last_sweep, swept,
            "a sweep could free nothing, so none ran"
        );
        // 2.05 s: the regular sweep drops the first 50; refilled, the map is full again.
        first_request(&mut ix, 251, 2 * SEC + SEC / 20);
        assert_eq!(
            (ix.last_sweep, ix.payloads.len()),
            (2 * SEC + SEC / 20, 201)
        );
        for i in 252..301 {
            first_request(&mut ix, i, 2 * SEC + SEC / 20);
        }
        assert_eq!((ix.payloads.len(), ix.full_hits), (250, 1));
        // 2.1 s: the oldest has expired, but a sweep ran 50 ms ago: no room yet.
        first_request(&mut ix, 301, 2 * SEC + SEC / 10);
        assert_eq!(ix.full_hits, 2);
        // 2.3 s: a quarter window later, the full map is swept for the new entry.
        first_request(&mut ix, 302, 2 * SEC + 3 * SEC / 10);
        assert_eq!(ix.last_sweep, 2 * SEC + 3 * SEC / 10, "swept");
        assert_eq!((ix.payloads.len(), ix.full_hits), (51, 2), "kept");
        assert_eq!(ix.floors.payloads, 2 * SEC + SEC / 20);
    }

    #[test]
    fn floods_stay_within_the_bound() {
        let mut ix = index();
        let mut out = Vec::new();
        let req = b"GET / HTTP/1.1\r\n\r\n";
        for i in 0..200_000u32 {
            let src = format!(
                "10.213.{}.{}:{}",
                100 + (i >> 16),
                (i >> 8) & 0xff,
                1024 + (i & 0xff)
            );
            let mut syn = pkt(&src, RS, SYN, i, 0);
            syn.tcp.toa = Some((ep(C).ip, (i & 0xffff) as u16));
            let ts = i64::from(i) * 1000; // 200 ms in all: nothing expires
            ix.observe(&syn, &[], ts, 0, &mut out);
            ix.observe(
                &pkt(&src, RS, ACK, i + 1, req.len() as u32),
                req,
                ts,
                0,
                &mut out,
            );
            assert!(ix.entries() <= 4 * 1000);
        }
        assert!(ix.full_hits > 0);
        assert!(out.len() < 200_000);
    }
}
