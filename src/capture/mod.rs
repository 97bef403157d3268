//! Live capture: AF_PACKET sockets with PACKET_MMAP rings feeding the same decode, dispatch,
//! workers and join as the offline path.
//!
//! Two shapes, chosen by what the kernel accepts:
//! * fanout (the default with `--threads` > 1 where PACKET_FANOUT is accepted): one socket
//!   and ring per worker. Each worker reads its ring, decodes, keeps the packets its owner
//!   function assigns to it and forwards the others in batches to their owner (counted as
//!   `forwarded`). On Linux 4.3+ the group runs a classic BPF program computing that same
//!   function (`fanout`), so nothing needs forwarding; before, the kernel's hash decides,
//!   which may be asymmetric before 4.x and never matches ours. A connection the kernel
//!   spreads over several rings reaches its owner partly late, so each worker merges its
//!   ring's packets and the forwarded ones back into packet-time order before processing
//!   them (`merge`).
//! * one thread (`--threads 1`): one socket whose reader is the worker, the fanout shape
//!   with a ring of one: packets are processed right after they are read, on that core.
//! * one socket (`--no-fanout` or fanout refused, with several workers): one reader thread
//!   walks the ring and feeds the offline `Reader` (software dispatch to the workers).
//!
//! Intervals (`--interval`) are aligned in packet time. Every party (each ring reader,
//! each worker) closes interval k when its packet time reaches the end of k, or when its
//! ring has been idle past that end on the wall clock; the join stage writes interval k once
//! every party has closed it (the watermark is the slowest party). Workers report per
//! interval the growth of each open connection and take its L7 tally, so the interval
//! documents sum to the whole run.

pub mod fanout;
pub mod interval;
pub mod merge;
pub mod ring;
pub mod socket;
pub mod stats;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};

use crate::filter::{FilterError, Insn, Program};
use crate::l7::RecordSink;
use crate::limits::Limits;
use crate::pipeline::{Batch, PacketRef, Reader, Worker};
use crate::report::{self, doc::Document, ReaderStats, WorkerResult};
use crate::source::{Vantage, Vantages};
use interval::{Clock, Step};
use merge::{Merge, Watermarks, DONE};
use ring::{reinsert_vlan, Frame, Version, PACKET_OUTGOING};
pub use socket::{Interface, SetupError, Want};
use socket::{PacketSocket, SocketSpec};
use stats::KernelStats;

/// Snapshot length by default: a full 64 KiB IP datagram (GSO/GRO frames) with its link
/// header and a VLAN tag.
pub const DEFAULT_SNAPLEN: u32 = 65_600;
pub const DEFAULT_RING_MB: usize = 64;
/// A ring idle this long past an interval's end (on the wall clock) closes it: longer than
/// the V3 block retire timeout, so no packet of the interval can still be on its way.
const IDLE_GRACE_NS: i64 = 300_000_000;
/// With `fanout cbpf`, a worker stops waiting for a ring that has forwarded nothing to it
/// for this long (packet time); see `merge::Merge::trust_kernel`.
const QUIET_LANE_NS: i64 = 1_000_000_000;
/// Finished batches a fanout worker keeps for its own reader's next local batches.
const LOCAL_SPARES: usize = 4;

/// Poll timeout: also how often a worker looks at forwarded batches while its ring is idle.
const POLL_MS: i32 = 20;
/// Forwarded batches in flight to one worker (split among its peers, at least 2 each), so
/// many threads do not multiply the batches in flight.
const FORWARD_QUEUE: usize = 16;
/// Test hook: `lb` or `rnd` joins the fanout group in round-robin or random mode, which
/// spreads every connection over the sockets (the case the merge exists for).
const TEST_FANOUT_ENV: &str = "WIREMAP_TEST_FANOUT_MODE";

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    pub interface: String,
    pub filter: Option<String>,
    pub duration: Option<Duration>,
    pub interval: Option<Duration>,
    pub threads: usize,
    pub snaplen: u32,
    pub ring_mb: usize,
    pub tpacket: Want,
    pub fanout: bool,
    pub promisc: bool,
    pub vlan_key: bool,
    pub l7: bool,
    pub records: Option<String>,
    pub limits: Limits,
    /// Load balancers named by the user (`--lvs-config`, `--lb-local`); `window_ns` is
    /// `limits.lb_window_ns`.
    pub lb: crate::lvs::LbOptions,
}

#[derive(Debug)]
pub enum CaptureError {
    Setup(SetupError),
    Filter(String),
    Output(String),
    Internal(String),
}

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaptureError::Setup(e) => write!(f, "{e}"),
            CaptureError::Filter(e) | CaptureError::Output(e) => f.write_str(e),
            CaptureError::Internal(e) => write!(f, "internal error: {e}"),
        }
    }
}

/// How the capture ran (for the caller's summary line).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub tpacket_version: u8,
    pub sockets: usize,
    pub packets: u64,
    pub kernel_drops: u64,
    pub forwarded: u64,
    /// Packets a fanout worker processed before every ring had read past their time.
    pub reorder_forced: u64,
    pub documents: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM end the capture cleanly (everything read is reported).
fn install_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The program attached to a live socket for `expr` on `iface` (what `wiremap filter
/// --interface` prints). Live, the kernel runs it on the frame after stripping a VLAN tag.
pub fn live_program(iface: &Interface, expr: &str, snaplen: u32) -> Result<Program, FilterError> {
    crate::filter::compile(expr, iface.linktype, snaplen)
}

/// One ring reader's counts for one interval.
#[derive(Debug, Default)]
struct LanePart {
    stats: ReaderStats,
    packets: u64,
    bytes: u64,
    drops: u64,
    forwarded: u64,
}

enum Body {
    Worker(Box<WorkerResult>),
    Lane(LanePart),
}

/// A party's report: interval `index` is closed (with what happened in it, or None when
/// the party only says it has nothing before `index + 1`). `last`: the party is done.
struct Part {
    party: usize,
    index: i64,
    body: Option<Body>,
    last: bool,
}

/// Everything a ring reader keeps besides its socket.
struct LaneState {
    party: usize,
    fd: libc::c_int,
    linktype: u32,
    loopback: bool,
    reader: Reader,
    vantages: Vantages,
    clock: Clock,
    kstats: KernelStats,
    reported_drops: u64,
    reported_forwarded: u64,
    reported_frags: u64,
    reported_lb_full: u64,
    scratch: Vec<u8>,
    last_ts: i64,
    /// One socket: batches carry interval marks to the workers.
    marks: bool,
    parts: Sender<Part>,
    malformed: u64,
    /// Workers with their own ring (fanout), 0 otherwise.
    n_workers: usize,
    /// Fanout: this thread's worker's queues (its own ring's packets and forwarded ones).
    merge: Option<Merge>,
    /// Fanout or one thread: a full batch of this lane's own packets joined the merge since
    /// last asked.
    local_pushed: bool,
}

impl LaneState {
    fn frame(&mut self, fr: &Frame<'_>) {
        let ts = fr.ts_ns;
        if ts >= self.clock.next() {
            self.reach(ts);
        }
        self.last_ts = self.last_ts.max(ts);
        let (data, wire_len) = match fr.vlan {
            Some((tpid, tci)) if self.linktype == crate::decode::linktype::EN10MB => (
                reinsert_vlan(fr.data, tpid, tci, &mut self.scratch),
                fr.wire_len.saturating_add(4),
            ),
            _ => (fr.data, fr.wire_len),
        };
        let pkt = PacketRef {
            ts_ns: ts,
            linktype: self.linktype,
            wire_len,
            vantage: 0,
            data,
        };
        if self.loopback && fr.pkttype == PACKET_OUTGOING {
            // On lo every packet is seen leaving and arriving: keep one copy.
            self.reader.duplicate(pkt, &mut self.vantages);
            return;
        }
        // Live filtering is the kernel's: nothing to do here.
        let _ = self.reader.packet(pkt, &mut self.vantages, None);
        if self.reader.local_full {
            self.take_local();
        }
    }

    /// Fanout: the packets this lane kept for its own worker join its queue in the merge,
    /// batch and all (the reader goes on in one the merge has finished with).
    fn take_local(&mut self) {
        let lane = self.party_worker();
        let Some(m) = self.merge.as_mut() else {
            return;
        };
        // A spare of our own, else one from the pool every lane returns its extras to (one
        // made here only when both are empty: while the merge holds batches for the other
        // lanes' watermarks, making and freeing batches cost a 512 KiB mapping each).
        let fresh = m
            .take_spare()
            .or_else(|| self.reader.recycled())
            .unwrap_or_else(Batch::with_capacity);
        match self.reader.swap_local(fresh) {
            Ok(full) => {
                m.push_batch(lane, full);
                self.local_pushed = true;
            }
            Err(unused) => m.give_spare(unused),
        }
    }

    /// With fanout, worker i and lane i share a thread: worker parties are 0..n, lanes n..2n.
    fn party_worker(&self) -> usize {
        self.party.saturating_sub(self.reader_count())
    }

    fn reader_count(&self) -> usize {
        self.n_workers
    }

    /// Packet time (or the idle wall clock) reached `ts`. With fanout only the lane's own
    /// counts close here: its worker's time is the merge's.
    fn reach(&mut self, ts: i64) {
        loop {
            match self.clock.step(ts) {
                Step::Within => break,
                Step::Start(k) => {
                    let _ = self.parts.send(Part {
                        party: self.party,
                        index: k - 1,
                        body: None,
                        last: false,
                    });
                }
                Step::Close(k) => {
                    let body = self.take_part();
                    let _ = self.parts.send(Part {
                        party: self.party,
                        index: k,
                        body: Some(Body::Lane(body)),
                        last: false,
                    });
                }
            }
        }
        if self.marks {
            // Every worker learns the time, even one that got no packet this interval.
            self.reader.flush_marked(Some(ts));
        }
    }

    fn take_part(&mut self) -> LanePart {
        let mut stats = std::mem::take(&mut self.reader.stats);
        // Ring frames whose headers did not add up: counted as undecodable.
        stats.undecodable += std::mem::take(&mut self.malformed);
        let frags = self.reader.fragments_dropped();
        stats.fragments_dropped = frags.saturating_sub(self.reported_frags);
        self.reported_frags = frags;
        let lb_full = self.reader.lb_index_full();
        stats.lb_index_full = lb_full.saturating_sub(self.reported_lb_full);
        self.reported_lb_full = lb_full;
        let (packets, bytes) = match self.vantages.list.first_mut() {
            Some(v) => (std::mem::take(&mut v.packets), std::mem::take(&mut v.bytes)),
            None => (0, 0),
        };
        self.kstats.poll(self.fd);
        let drops = self.kstats.drops - self.reported_drops;
        self.reported_drops = self.kstats.drops;
        let forwarded = self.reader.forwarded - self.reported_forwarded;
        self.reported_forwarded = self.reader.forwarded;
        LanePart {
            stats,
            packets,
            bytes,
            drops,
            forwarded,
        }
    }
}

fn send_worker_parts(w: &mut Worker, party: usize, parts: &Sender<Part>) {
    for (index, r) in w.parts.drain(..) {
        let _ = parts.send(Part {
            party,
            index,
            body: r.map(|r| Body::Worker(Box::new(r))),
            last: false,
        });
    }
}

/// Drops: one stderr line at most once a minute.
struct DropWarn {
    last_poll: Instant,
    last_warn: Option<Instant>,
    unwarned: u64,
}

impl DropWarn {
    fn new() -> Self {
        DropWarn {
            last_poll: Instant::now(),
            last_warn: None,
            unwarned: 0,
        }
    }

    fn check(&mut self, lane: &mut LaneState, iface: &str) {
        if self.last_poll.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_poll = Instant::now();
        self.unwarned += lane.kstats.poll(lane.fd);
        let due = match self.last_warn {
            None => true,
            Some(t) => t.elapsed() >= Duration::from_secs(60),
        };
        if self.unwarned > 0 && due {
            eprintln!(
                "wiremap: {iface}: the kernel dropped {} packets (ring full; try --ring-mb or --snaplen)",
                self.unwarned
            );
            self.unwarned = 0;
            self.last_warn = Some(Instant::now());
        }
    }
}

/// The fanout mode: hash, unless the test hook asks for one that spreads connections.
/// The fanout modes to try, in order, with their names: the program (Linux 4.3+), then the
/// kernel's hash; tests may force one (`WIREMAP_TEST_FANOUT_MODE`).
fn fanout_modes() -> Result<&'static [(u32, &'static str)], SetupError> {
    const CBPF: (u32, &str) = (socket::PACKET_FANOUT_CBPF, "cbpf");
    const HASH: (u32, &str) = (socket::PACKET_FANOUT_HASH, "hash");
    match std::env::var(TEST_FANOUT_ENV).as_deref() {
        Err(_) | Ok("") => Ok(&[CBPF, HASH]),
        Ok("cbpf") => Ok(&[CBPF]),
        Ok("hash") => Ok(&[HASH]),
        Ok("lb") => Ok(&[(socket::PACKET_FANOUT_LB, "lb")]),
        Ok("rnd") => Ok(&[(socket::PACKET_FANOUT_RND, "rnd")]),
        Ok(_) => Err(SetupError::Os(
            "WIREMAP_TEST_FANOUT_MODE must be cbpf, hash, lb or rnd",
            std::io::Error::from_raw_os_error(libc::EINVAL),
        )),
    }
}

/// Join the first socket to fanout group `group` in `mode` (with its program for CBPF).
fn join_first(s: &PacketSocket, group: u16, mode: u32) -> std::io::Result<()> {
    s.join_fanout(group, mode)?;
    if mode == socket::PACKET_FANOUT_CBPF {
        s.set_fanout_program(&fanout::program())?;
    }
    Ok(())
}

/// Open the sockets: fanout when wanted and accepted (with the mode's name), else one.
fn open_sockets(
    opts: &CaptureOptions,
    iface: &Interface,
    program: &[Insn],
) -> Result<(Vec<PacketSocket>, Option<&'static str>), SetupError> {
    let ring_bytes = opts.ring_mb.max(1).saturating_mul(1 << 20);
    let snaplen = opts.snaplen as usize;
    let threads = opts.threads.max(1);
    fn spec<'a>(
        opts: &CaptureOptions,
        iface: &'a Interface,
        snaplen: usize,
        program: &'a [Insn],
        ring_bytes: usize,
    ) -> SocketSpec<'a> {
        SocketSpec {
            iface,
            want: opts.tpacket,
            snaplen,
            ring_bytes,
            program,
            promisc: opts.promisc,
        }
    }
    if opts.fanout && threads > 1 {
        // Every socket starts with a drop-all program: a socket bound but not yet in the
        // group would see every packet, and one in the group before its real filter must
        // not pass unfiltered ones. The real program replaces it once all are in.
        let none = socket::drop_all();
        let group = (std::process::id() & 0xffff) as u16;
        let each = ring_bytes / threads;
        for &(mode, name) in fanout_modes()? {
            let first = PacketSocket::open(&spec(opts, iface, snaplen, &none, each))?;
            if join_first(&first, group, mode).is_err() {
                // Not on this kernel: the group (if joined) goes with the socket; try the
                // next mode.
                drop(first);
                continue;
            }
            let mut socks = vec![first];
            for _ in 1..threads {
                let s = PacketSocket::open(&spec(opts, iface, snaplen, &none, each))?;
                s.join_fanout(group, mode)
                    .map_err(|e| SetupError::Os("PACKET_FANOUT refused for a second socket", e))?;
                socks.push(s);
            }
            for s in &socks {
                socket::attach_filter(s.fd(), program).map_err(|e| {
                    SetupError::Os("cannot attach the filter (SO_ATTACH_FILTER)", e)
                })?;
            }
            return Ok((socks, Some(name)));
        }
        // No fanout on this kernel: one socket, software dispatch.
    }
    let one = PacketSocket::open(&spec(opts, iface, snaplen, program, ring_bytes))?;
    Ok((vec![one], None))
}

/// The records channel (full buffers out, spare ones back) and the writer thread.
type RecordChannel = (
    Option<(Sender<Vec<u8>>, Receiver<Vec<u8>>)>,
    Option<thread::JoinHandle<std::io::Result<()>>>,
);

fn record_writer(path: &Option<String>, threads: usize) -> Result<RecordChannel, CaptureError> {
    let Some(path) = path else {
        return Ok((None, None));
    };
    let file = std::fs::File::create(path)
        .map_err(|e| CaptureError::Output(format!("{path}: cannot create: {e}")))?;
    let (rec_tx, rec_rx) = bounded::<Vec<u8>>(threads * 4);
    let (spare_tx, spare_rx) = bounded::<Vec<u8>>(threads * 4);
    let h = thread::spawn(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(file);
        for mut buf in rec_rx.iter() {
            out.write_all(&buf)?;
            out.flush()?;
            buf.clear();
            let _ = spare_tx.try_send(buf);
        }
        out.flush()
    });
    Ok((Some((rec_tx, spare_rx)), Some(h)))
}

/// Run a capture until `--duration`, SIGINT or SIGTERM; hand each document to `emit`.
pub fn run(
    opts: &CaptureOptions,
    emit: &mut dyn FnMut(&mut Document) -> std::io::Result<()>,
) -> Result<Summary, CaptureError> {
    let iface = Interface::lookup(&opts.interface).map_err(CaptureError::Setup)?;
    let program: Vec<Insn> = match &opts.filter {
        Some(expr) => live_program(&iface, expr, opts.snaplen)
            .map_err(|e| CaptureError::Filter(e.0))?
            .instructions()
            .to_vec(),
        None => socket::accept_all(opts.snaplen).to_vec(),
    };
    STOP.store(false, Ordering::Relaxed);
    install_signals();
    let (socks, fanout_name) = open_sockets(opts, &iface, &program).map_err(CaptureError::Setup)?;
    let version = socks.first().map(|s| s.version).unwrap_or(Version::V2);
    let fanout = socks.len() > 1;
    let threads = opts.threads.max(1);
    // Scripts wait for this line: from here on, nothing is missed.
    eprintln!(
        "wiremap: capturing on {} (TPACKET_V{}, {} socket(s){}{}{})",
        iface.name,
        version.number(),
        socks.len(),
        if fanout { ", fanout " } else { "" },
        fanout_name.filter(|_| fanout).unwrap_or(""),
        if socks.iter().all(|s| s.locked) {
            ", ring locked"
        } else {
            ""
        }
    );
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let len_ns = opts.interval.map(|d| {
        i64::try_from(d.as_nanos())
            .unwrap_or(i64::MAX)
            .max(1_000_000)
    });
    let (records, writer) = record_writer(&opts.records, threads)?;
    // A worker that panics reports here (with the packet it was on); the others stop.
    let failure: Arc<std::sync::Mutex<Option<String>>> = Arc::new(std::sync::Mutex::new(None));
    let fault = crate::pipeline::fault::from_env().map_err(CaptureError::Internal)?;
    let sink = || {
        records
            .as_ref()
            .map(|(tx, spare)| RecordSink::new(tx.clone(), spare.clone()))
    };
    let new_worker = |sink: Option<RecordSink>| {
        let mut w = Worker::new(
            opts.limits.clone(),
            (opts.limits.max_flows / threads).max(1),
            opts.vlan_key,
            opts.l7,
            sink,
            fault,
            opts.lb.clone(),
        );
        w.set_interval(len_ns);
        w
    };
    let (part_tx, part_rx) = bounded::<Part>(threads * 64);
    let (recycle_tx, recycle_rx) = bounded::<Batch>(threads * 16);
    let mut handles = Vec::new();
    let parties;
    let lane_state = |party: usize,
                      sock: &PacketSocket,
                      reader: Reader,
                      marks: bool,
                      n_workers: usize,
                      merge: Option<Merge>,
                      parts: Sender<Part>| {
        let mut vantages = Vantages::new(false);
        vantages.list.push(Vantage {
            files: vec![iface.name.clone()],
            interface: None,
            format: "af_packet",
            linktype: iface.linktype,
            packets: 0,
            bytes: 0,
        });
        LaneState {
            party,
            fd: sock.fd(),
            linktype: iface.linktype,
            loopback: iface.loopback,
            reader,
            vantages,
            clock: Clock::new(len_ns),
            kstats: KernelStats::default(),
            reported_drops: 0,
            reported_forwarded: 0,
            reported_frags: 0,
            reported_lb_full: 0,
            scratch: Vec::with_capacity(opts.snaplen as usize + 64),
            last_ts: i64::MIN,
            marks,
            parts,
            malformed: 0,
            n_workers,
            merge,
            local_pushed: false,
        }
    };
    // One worker: the ring's reader is that worker's thread, as with fanout (a ring of
    // one), so packets are processed right after they are read, on the same core.
    let inline = fanout || (threads == 1 && socks.len() == 1);
    if inline {
        let n = socks.len();
        parties = 2 * n;
        // One channel per pair of workers: each lane's batches arrive in its ring's order,
        // and the owner tells the lanes apart to merge them by time.
        let mut tx: Vec<Vec<Option<Sender<Batch>>>> = (0..n).map(|_| vec![None; n]).collect();
        let mut rx: Vec<Vec<Option<Receiver<Batch>>>> = (0..n).map(|_| vec![None; n]).collect();
        for (from, row) in tx.iter_mut().enumerate() {
            for (to, slot) in row.iter_mut().enumerate() {
                if from != to {
                    let (t, r) = bounded::<Batch>((FORWARD_QUEUE / (n - 1)).max(2));
                    *slot = Some(t);
                    rx[to][from] = Some(r);
                }
            }
        }
        let marks = Arc::new(Watermarks::new(n));
        for (i, ((sock, row), inbox)) in socks.into_iter().zip(tx).zip(rx).enumerate() {
            let senders: Vec<Sender<Batch>> = row
                .into_iter()
                // Our own slot is never sent to (the local batch joins the merge in place).
                .map(|t| t.unwrap_or_else(|| bounded::<Batch>(1).0))
                .collect();
            let mut reader = Reader::new(&opts.limits, senders, recycle_rx.clone(), Some(i));
            // Each lane pairs the legs it sees itself (see the README).
            reader.index_legs(opts.lb.clone(), opts.limits.lb_max_entries, opts.vlan_key);
            let mut merge = Merge::new(n, opts.limits.max_reorder_bytes);
            if fanout_name == Some("cbpf") {
                // The kernel runs our owner function: the other rings send nothing.
                merge = merge.trust_kernel(i, QUIET_LANE_NS);
            }
            let st = lane_state(n + i, &sock, reader, false, n, Some(merge), part_tx.clone());
            let worker = new_worker(sink());
            let position = Arc::new(AtomicU64::new(0));
            let fw = Forwarded {
                inbox,
                recycle: recycle_tx.clone(),
                marks: Arc::clone(&marks),
                position: Arc::clone(&position),
            };
            let name = iface.name.clone();
            let failure = Arc::clone(&failure);
            handles.push(
                thread::Builder::new()
                    .name(format!("wiremap-capture-{i}"))
                    .spawn(move || {
                        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            fanout_loop(sock, st, worker, fw, deadline, &name)
                        }));
                        if let Err(panic) = run {
                            record_failure(&failure, i, &position, panic.as_ref());
                        }
                    })
                    .map_err(|e| CaptureError::Internal(format!("cannot start a worker: {e}")))?,
            );
        }
    } else {
        parties = threads + 1;
        let mut senders = Vec::with_capacity(threads);
        for i in 0..threads {
            let (tx, rx) = bounded::<Batch>(8);
            senders.push(tx);
            let mut w = new_worker(sink());
            let recycle = recycle_tx.clone();
            let parts = part_tx.clone();
            let failure = Arc::clone(&failure);
            handles.push(
                thread::Builder::new()
                    .name(format!("wiremap-worker-{i}"))
                    .spawn(move || {
                        let pos = AtomicU64::new(0);
                        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            for mut b in rx.iter() {
                                w.process_batch(&b, &pos);
                                send_worker_parts(&mut w, i, &parts);
                                b.clear();
                                let _ = recycle.try_send(b);
                            }
                            finish_worker(w, i, &parts);
                        }));
                        if let Err(panic) = run {
                            // Close the channel first: the reader sending to it stops.
                            drop(rx);
                            record_failure(&failure, i, &pos, panic.as_ref());
                        }
                    })
                    .map_err(|e| CaptureError::Internal(format!("cannot start a worker: {e}")))?,
            );
        }
        let mut reader = Reader::new(&opts.limits, senders, recycle_rx.clone(), None);
        reader.index_legs(opts.lb.clone(), opts.limits.lb_max_entries, opts.vlan_key);
        let mut socks = socks;
        let sock = socks.remove(0);
        let st = lane_state(threads, &sock, reader, true, 0, None, part_tx.clone());
        let name = iface.name.clone();
        handles.push(
            thread::Builder::new()
                .name("wiremap-capture".into())
                .spawn(move || single_loop(sock, st, deadline, &name))
                .map_err(|e| CaptureError::Internal(format!("cannot start the reader: {e}")))?,
        );
    }
    drop(part_tx);
    drop(records);

    // The join stage: an interval is written once every party has closed it.
    let mut progress: Vec<Option<i64>> = vec![None; parties];
    let mut done = vec![false; parties];
    let mut pending: BTreeMap<i64, (Vec<WorkerResult>, LanePart)> = BTreeMap::new();
    let mut summary = Summary {
        tpacket_version: version.number(),
        sockets: if fanout { threads } else { 1 },
        ..Summary::default()
    };
    let mut write_err = None;
    let mut release = |pending: &mut BTreeMap<i64, (Vec<WorkerResult>, LanePart)>,
                       upto: i64,
                       summary: &mut Summary|
     -> std::io::Result<()> {
        while let Some(entry) = pending.first_entry() {
            if *entry.key() > upto {
                break;
            }
            let (k, (results, lane)) = entry.remove_entry();
            let mut doc = build(
                opts,
                &iface,
                version,
                fanout,
                summary.sockets,
                len_ns,
                k,
                results,
                lane,
                summary,
            );
            emit(&mut doc)?;
            summary.documents += 1;
        }
        Ok(())
    };
    for part in part_rx.iter() {
        let p = part.party.min(parties - 1);
        if let Some(body) = part.body {
            let e = pending.entry(part.index).or_default();
            match body {
                Body::Worker(r) => e.0.push(*r),
                Body::Lane(l) => add_lane(&mut e.1, l),
            }
        }
        progress[p] = Some(progress[p].map_or(part.index, |x| x.max(part.index)));
        done[p] |= part.last;
        let upto = (0..parties)
            .map(|i| {
                if done[i] {
                    i64::MAX
                } else {
                    progress[i].unwrap_or(i64::MIN)
                }
            })
            .min()
            .unwrap_or(i64::MAX);
        if write_err.is_none() {
            if let Err(e) = release(&mut pending, upto, &mut summary) {
                write_err = Some(e);
                STOP.store(true, Ordering::Relaxed);
            }
        }
    }
    let mut failed = None;
    for h in handles {
        if h.join().is_err() {
            failed = Some("a capture thread failed".to_string());
        }
    }
    if let Some(msg) = failure.lock().ok().and_then(|mut f| f.take()) {
        failed = Some(msg);
    }
    // Whatever is left (a thread that failed never closed its intervals).
    if write_err.is_none() {
        if let Err(e) = release(&mut pending, i64::MAX, &mut summary) {
            write_err = Some(e);
        }
    }
    if let Some(w) = writer {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(CaptureError::Output(format!("cannot write records: {e}"))),
            Err(_) => return Err(CaptureError::Internal("the records writer failed".into())),
        }
    }
    if let Some(e) = write_err {
        return Err(CaptureError::Output(format!(
            "cannot write the document: {e}"
        )));
    }
    if let Some(f) = failed {
        return Err(CaptureError::Internal(f));
    }
    Ok(summary)
}

fn add_lane(acc: &mut LanePart, l: LanePart) {
    let (a, b) = (&mut acc.stats, &l.stats);
    a.packets += b.packets;
    a.bytes += b.bytes;
    a.other += b.other;
    a.undecodable += b.undecodable;
    a.truncated += b.truncated;
    a.duplicates += b.duplicates;
    a.fragments_dropped += b.fragments_dropped;
    a.lb_index_full += b.lb_index_full;
    a.first_ts = match (a.first_ts, b.first_ts) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    a.last_ts = match (a.last_ts, b.last_ts) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    acc.packets += l.packets;
    acc.bytes += l.bytes;
    acc.drops += l.drops;
    acc.forwarded += l.forwarded;
}

#[allow(clippy::too_many_arguments)]
fn build(
    opts: &CaptureOptions,
    iface: &Interface,
    version: Version,
    fanout: bool,
    sockets: usize,
    len_ns: Option<i64>,
    index: i64,
    results: Vec<WorkerResult>,
    lane: LanePart,
    summary: &mut Summary,
) -> Document {
    let mut vantages = Vantages::new(false);
    vantages.list.push(Vantage {
        files: vec![iface.name.clone()],
        interface: None,
        format: "af_packet",
        linktype: iface.linktype,
        packets: lane.packets,
        bytes: lane.bytes,
    });
    let mut doc = report::build_document(report::DocumentInput {
        results,
        reader: lane.stats,
        vantages: &vantages,
        filter: opts.filter.as_deref(),
        max_edges: opts.limits.max_edges,
        kind: "live",
        lb_config: opts.lb.config.as_deref(),
    });
    if let Some(len) = len_ns {
        // An interval document covers its interval, whatever packets it held.
        let (start, end) = Clock::bounds(len, index);
        doc.window.start = report::time::rfc3339_micros(start);
        doc.window.end = report::time::rfc3339_micros(end);
    }
    if let Some(s) = doc.sources.first_mut() {
        s.tpacket_version = Some(version.number());
        s.kernel_drops = Some(lane.drops);
        s.sockets = Some(sockets);
        s.forwarded = fanout.then_some(lane.forwarded);
    }
    summary.packets += lane.packets;
    summary.kernel_drops += lane.drops;
    summary.forwarded += lane.forwarded;
    summary.reorder_forced += doc.limits.reorder_forced;
    doc
}

fn finish_worker(w: Worker, party: usize, parts: &Sender<Part>) {
    let index = w.interval_index().unwrap_or(0);
    let r = w.into_result();
    let _ = parts.send(Part {
        party,
        index,
        body: Some(Body::Worker(Box::new(r))),
        last: true,
    });
}

/// Keep the first worker failure, naming the packet it was on, and stop the capture.
fn record_failure(
    slot: &std::sync::Mutex<Option<String>>,
    worker: usize,
    position: &AtomicU64,
    panic: &(dyn std::any::Any + Send),
) {
    let msg = format!(
        "worker {worker} failed at packet {} read from the capture: {}",
        position.load(Ordering::Relaxed).saturating_add(1),
        crate::pipeline::fault::message(panic)
    );
    if let Ok(mut f) = slot.lock() {
        f.get_or_insert(msg);
    }
    STOP.store(true, Ordering::Relaxed);
}

fn stopping(deadline: Option<Instant>) -> bool {
    if deadline.is_some_and(|d| Instant::now() >= d) {
        STOP.store(true, Ordering::Relaxed);
    }
    STOP.load(Ordering::Relaxed)
}

/// Close the lane: time reaches the end (the later of the wall clock and the last packet)
/// and its last part goes out.
fn lane_end(st: &mut LaneState) -> i64 {
    let end = wall_ns().max(st.last_ts);
    st.reach(end);
    let index = st.clock.index().unwrap_or(0);
    let body = st.take_part();
    let _ = st.parts.send(Part {
        party: st.party,
        index,
        body: Some(Body::Lane(body)),
        last: true,
    });
    end
}

/// One socket: read the ring, dispatch to the workers through the shared Reader.
fn single_loop(mut sock: PacketSocket, mut st: LaneState, deadline: Option<Instant>, name: &str) {
    let mut warn = DropWarn::new();
    while !stopping(deadline) && !st.reader.workers_gone {
        sock.wait(POLL_MS);
        let n = sock.walker.drain(|fr| st.frame(fr));
        if n == 0 && !sock.walker.ready() {
            idle(&mut st);
        }
        warn.check(&mut st, name);
        sock.settle(n);
    }
    // Nothing seen is lost: what the ring still holds is read before the end.
    sock.walker.drain(|fr| st.frame(fr));
    st.malformed += sock.walker.malformed;
    lane_end(&mut st);
    st.reader.flush_marked(None);
    st.reader.close();
}

/// The ring has nothing: intervals whose end passed long enough ago are closed.
fn idle(st: &mut LaneState) {
    let t = wall_ns().saturating_sub(IDLE_GRACE_NS);
    if t >= st.clock.next() && t > st.last_ts {
        st.reach(t);
    }
}

/// Fanout: what other workers forward to this one, and the lanes' watermarks.
struct Forwarded {
    /// Indexed by the sending lane (None for our own).
    inbox: Vec<Option<Receiver<Batch>>>,
    recycle: Sender<Batch>,
    marks: Arc<Watermarks>,
    /// The packet this worker is on (its reading lane's count), for a failure report.
    position: Arc<AtomicU64>,
}

/// A fanout worker's side: the merge of its own ring's packets and the forwarded ones.
struct Owner {
    worker: Worker,
    me: usize,
    fw: Forwarded,
    /// Each lane's watermark as last read (DONE once its channel is closed).
    bounds: Vec<i64>,
    closed: Vec<bool>,
}

impl Owner {
    /// Read the watermarks, then take what was forwarded (so everything a lane vouched for
    /// is queued), then process in time order as far as every lane vouches for.
    fn serve(&mut self, st: &mut LaneState) {
        self.fw.marks.snapshot(&mut self.bounds);
        let Some(merge) = st.merge.as_mut() else {
            return;
        };
        for (from, rx) in self.fw.inbox.iter().enumerate() {
            let Some(rx) = rx else { continue };
            loop {
                match rx.try_recv() {
                    Ok(b) => merge.push_batch(from, b),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        // That lane is finished (or failed): nothing more will come.
                        if let Some(c) = self.closed.get_mut(from) {
                            *c = true;
                        }
                        break;
                    }
                }
            }
        }
        for (b, c) in self.bounds.iter_mut().zip(&self.closed) {
            if *c {
                *b = DONE;
            }
        }
        let w = &mut self.worker;
        let position = &self.fw.position;
        let forced = merge.run(&self.bounds, |b, run, lane| {
            w.process_run(b, run, lane, position)
        });
        w.end_run();
        let forced = forced + merge.take_late();
        if forced > 0 {
            w.count_reorder_forced(forced);
        }
        // Finished batches beyond what our own reader needs go back to the pool every
        // lane draws from (the forwarded ones came from it); a full pool frees them.
        while merge.spares() > LOCAL_SPARES {
            match merge.take_spare() {
                Some(b) => {
                    let _ = self.fw.recycle.try_send(b);
                }
                None => break,
            }
        }
        // Intervals close in merged time: every packet before `safe` has been processed.
        let safe = merge.safe(&self.bounds);
        if safe > i64::MIN && safe < DONE {
            w.reach(safe);
        }
        send_worker_parts(w, self.me, &st.parts);
    }

    /// Every other lane has finished and everything it sent is processed.
    fn all_done(&self, st: &LaneState) -> bool {
        let queued = st.merge.as_ref().is_some_and(|m| !m.is_empty());
        !queued
            && self
                .bounds
                .iter()
                .enumerate()
                .all(|(j, b)| j == self.me || *b == DONE)
    }
}

/// Publish how far this lane has handed everything over: the last packet time read, or
/// with an idle ring the wall clock less the grace (what could still be on its way). Only
/// once nothing is stalled: a batch not yet delivered is not vouched for.
fn publish(st: &mut LaneState, marks: &Watermarks, idle: bool) {
    if !st.reader.retry_stalled() {
        return;
    }
    let mut w = st.last_ts;
    if idle {
        w = w.max(wall_ns().saturating_sub(IDLE_GRACE_NS));
    }
    marks.publish(st.party_worker(), w);
}

/// Fanout: this worker's own ring, plus the batches other workers forward to it.
fn fanout_loop(
    mut sock: PacketSocket,
    mut st: LaneState,
    worker: Worker,
    fw: Forwarded,
    deadline: Option<Instant>,
    name: &str,
) {
    let mut warn = DropWarn::new();
    let me = st.party_worker();
    let lanes = fw.inbox.len();
    let marks = Arc::clone(&fw.marks);
    let mut owner = Owner {
        worker,
        me,
        fw,
        bounds: vec![i64::MIN; lanes],
        // Our own lane counts on its own watermark (DONE only once its ring is read out).
        closed: vec![false; lanes],
    };
    let pause = || thread::sleep(Duration::from_micros(200));
    while !stopping(deadline) && !st.reader.workers_gone {
        owner.serve(&mut st);
        if !st.reader.retry_stalled() {
            // A peer is behind: let it catch up rather than read more.
            pause();
            continue;
        }
        sock.wait(POLL_MS);
        // A bounded share of the ring per pass, so forwarded batches never pile up.
        let n = sock.walker.drain_at_most(64, |fr| {
            st.frame(fr);
            if std::mem::take(&mut st.local_pushed) {
                owner.serve(&mut st);
            }
        });
        st.take_local();
        st.reader.flush_marked(None);
        let idle_ring = n == 0 && !sock.walker.ready();
        if idle_ring {
            idle(&mut st);
        }
        publish(&mut st, &marks, idle_ring);
        warn.check(&mut st, name);
        sock.settle(n);
    }
    sock.walker.drain(|fr| st.frame(fr));
    st.malformed += sock.walker.malformed;
    st.take_local();
    st.reader.flush_marked(None);
    let end = lane_end(&mut st);
    // Deliver what we owe the others, serving our own queues meanwhile (they may owe us).
    while !st.reader.retry_stalled() {
        owner.serve(&mut st);
        pause();
    }
    marks.publish(me, DONE);
    st.reader.close();
    // Then take what they forward until every other lane has finished.
    loop {
        owner.serve(&mut st);
        if owner.all_done(&st) {
            break;
        }
        pause();
    }
    let mut w = owner.worker;
    w.reach(end);
    send_worker_parts(&mut w, me, &st.parts);
    finish_worker(w, me, &st.parts);
}
