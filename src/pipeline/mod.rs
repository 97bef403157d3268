//! The offline pipeline: read files merged by packet time, filter, decode, dispatch by a
//! symmetric hash to N workers in recycled batches; join; build the document.

mod batch;
pub mod fault;
mod worker;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{bounded, Receiver, Sender};

pub use batch::{Batch, PacketMeta};
pub(crate) use worker::Worker;

use crate::decode::{self, Decoder, Outcome};
use crate::filter::FilterSet;
use crate::flow::FlowKey;
use crate::limits::Limits;
use crate::lvs::{LegIndex, Tag};
use crate::report::{self, doc::Document, ReaderStats, WorkerResult};
use crate::source::{CaptureFile, InputError, OrderedFile, OwnedPacket, Vantages};

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub files: Vec<String>,
    pub filter: Option<String>,
    pub threads: usize,
    pub one_vantage: bool,
    pub vlan_key: bool,
    pub l7: bool,
    /// Write one JSON line per exchange here.
    pub records: Option<String>,
    pub limits: Limits,
    pub progress: bool,
    /// Load balancers named by the user (`--lvs-config`, `--lb-local`).
    pub lb: crate::lvs::LbOptions,
    /// Whether the reading thread analyses a share of the connections itself.
    pub reader_worker: ReaderWorker,
}

/// Whether the thread that reads the input also runs one of the `--threads` workers (see
/// [`reader_hosts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReaderWorker {
    /// With L7 parsing, when the workers would otherwise fill every CPU, with at most 2 of
    /// them.
    #[default]
    Auto,
    On,
    Off,
}

/// Whether the reader runs worker 0 itself. With as many worker threads as CPUs, the reader
/// is one thread too many: on 2 cores it needs about a third of one, and three busy threads
/// left the cores idle an eighth of the time, each waiting on the other's queue (perf
/// sched). Hosting a worker, it fills its own core with analysis instead. Only with L7
/// parsing and up to 2 workers: without L7, or from 3 workers on, the reader alone is as
/// busy as a worker, and work added to it slows the whole run (`--no-l7` on 2 cores: 0.23
/// s became 0.27 s).
pub fn reader_hosts(mode: ReaderWorker, threads: usize, cpus: usize, l7: bool) -> bool {
    match mode {
        ReaderWorker::On => true,
        ReaderWorker::Off => false,
        ReaderWorker::Auto => l7 && threads >= cpus && threads <= 2,
    }
}

/// What the hosted worker weighs against 1 for each other worker: the reader spends the
/// rest of its time reading, decoding and dispatching. With 2 workers on 2 cores it takes a
/// quarter of the connections. On the 1 M / 100 k benchmark capture (alternating runs) a
/// quarter and 30 % were fastest, alike; a third was slower, 40 % no faster than not
/// hosting, and 15 % slower than not hosting.
const HOSTED_WEIGHT: f64 = 1.0 / 3.0;

/// How the reader picks a connection's worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dispatch {
    /// Offline: the dispatch hash spread evenly over the workers.
    Even,
    /// Offline, the reader hosting worker 0: hashes below `local_below` go to it, the rest
    /// evenly to the others.
    Hosted { local_below: u64 },
    /// Live with fanout: the kernel's fanout function, so that few packets need forwarding.
    Lanes,
}

/// The share of connections worker `i` of `workers` gets when the reader hosts worker 0,
/// which weighs `weight` against 1 for each of the others (a single worker gets them all).
fn hosted_share(i: usize, workers: usize, weight: f64) -> f64 {
    let total = workers.saturating_sub(1) as f64 + weight;
    if i == 0 {
        weight / total
    } else {
        1.0 / total
    }
}

impl Dispatch {
    /// Hosted dispatch for `workers` workers, worker 0 weighing `weight` against 1 for each
    /// of the others.
    fn hosted(workers: usize, weight: f64) -> Dispatch {
        let share = hosted_share(0, workers, weight);
        let local_below = if share >= 1.0 {
            u64::MAX
        } else {
            (share * u64::MAX as f64) as u64
        };
        Dispatch::Hosted { local_below }
    }
}

/// Why an analysis failed.
#[derive(Debug)]
pub enum RunError {
    /// Nothing usable was read: no document.
    Input(InputError),
    Filter(String),
    /// A worker crashed: an internal error, reported with the packet it was on.
    Internal(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Input(e) => write!(f, "{e}"),
            RunError::Filter(e) => write!(f, "{e}"),
            RunError::Internal(e) => write!(f, "internal error: {e}"),
        }
    }
}

/// The document, plus warnings and a fault that stopped reading early (the document then
/// covers what came before it).
pub struct Analysis {
    pub document: Document,
    pub warnings: Vec<String>,
    pub fault: Option<InputError>,
}

pub fn analyze(opts: &Options) -> Result<Analysis, RunError> {
    let mut vantages = Vantages::new(opts.one_vantage);
    let mut inputs = Vec::with_capacity(opts.files.len());
    for path in &opts.files {
        let file =
            CaptureFile::open(path, opts.limits.max_record_bytes).map_err(RunError::Input)?;
        inputs.push(OrderedFile::new(file));
    }
    let mut filter = opts.filter.as_deref().map(FilterSet::new);
    if let Some(f) = &mut filter {
        // Surface a bad expression before reading anything.
        f.prepare(decode::linktype::EN10MB)
            .map_err(|e| RunError::Filter(e.0))?;
    }

    let fault = fault::from_env().map_err(RunError::Internal)?;
    let threads = opts.threads.max(1);
    // Records: workers hand full buffers to one writer thread; empty ones come back.
    let (rec_tx, rec_rx) = bounded::<Vec<u8>>(threads * 4);
    let (spare_tx, spare_rx) = bounded::<Vec<u8>>(threads * 4);
    // Set when the records writer fails: the run has failed, so reading stops early.
    let records_failed = Arc::new(AtomicBool::new(false));
    let writer = match &opts.records {
        Some(path) => {
            let failed = Arc::clone(&records_failed);
            let file = std::fs::File::create(path).map_err(|e| {
                RunError::Input(InputError::Read(
                    path.clone(),
                    format!("cannot create: {e}"),
                ))
            })?;
            Some(thread::spawn(move || -> std::io::Result<()> {
                use std::io::Write;
                let mut out = std::io::BufWriter::new(file);
                let written = (|| {
                    for mut buf in rec_rx.iter() {
                        out.write_all(&buf)?;
                        buf.clear();
                        let _ = spare_tx.try_send(buf);
                    }
                    out.flush()
                })();
                if written.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                written
            }))
        }
        None => {
            drop(rec_rx);
            drop(spare_tx);
            None
        }
    };
    let (result_tx, result_rx) = bounded::<(usize, Result<WorkerResult, String>)>(threads);
    let mut senders: Vec<Sender<Batch>> = Vec::with_capacity(threads);
    let (recycle_tx, recycle_rx) = bounded::<Batch>(threads * 20);
    let mut handles = Vec::with_capacity(threads);
    let positions: Vec<Arc<AtomicU64>> =
        (0..threads).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let hosts = reader_hosts(opts.reader_worker, threads, cpus, opts.l7);
    // The flow table is shared out as the connections are: a worker that gets three times
    // the connections needs three times the flows.
    let max_flows = |i: usize| {
        let flows = if hosts {
            (opts.limits.max_flows as f64 * hosted_share(i, threads, HOSTED_WEIGHT)) as usize
        } else {
            opts.limits.max_flows / threads
        };
        flows.max(1)
    };
    let mut hosted: Option<HostedWorker> = None;
    // Worker 0's channel when the reader runs it: never sent to, held open to the end.
    let mut _hosted_rx = None;
    for (i, position) in positions.iter().enumerate() {
        let (tx, rx) = bounded::<Batch>(16);
        senders.push(tx);
        if i == 0 && hosts {
            let sink = opts
                .records
                .as_ref()
                .map(|_| crate::l7::RecordSink::new(rec_tx.clone(), spare_rx.clone()));
            let worker = Worker::new(
                opts.limits.clone(),
                max_flows(0),
                opts.vlan_key,
                opts.l7,
                sink,
                fault,
                lb_options(opts),
            );
            hosted = Some(HostedWorker {
                worker,
                position: Arc::clone(position),
                failure: None,
            });
            _hosted_rx = Some(rx);
            continue;
        }
        let recycle = recycle_tx.clone();
        let results = result_tx.clone();
        let limits = opts.limits.clone();
        let max_flows = max_flows(i);
        let (vlan_key, l7) = (opts.vlan_key, opts.l7);
        let lb = lb_options(opts);
        let position = Arc::clone(position);
        let sink = opts
            .records
            .as_ref()
            .map(|_| crate::l7::RecordSink::new(rec_tx.clone(), spare_rx.clone()));
        handles.push((
            i,
            thread::Builder::new()
                .name(format!("wiremap-worker-{i}"))
                .spawn(move || {
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let mut w = Worker::new(limits, max_flows, vlan_key, l7, sink, fault, lb);
                        work(&mut w, &rx, &recycle, &position);
                        w.into_result()
                    }));
                    // Close this worker's channel first: a reader blocked sending to it
                    // must see it gone, not wait forever.
                    drop(rx);
                    let result = run.map_err(|panic| worker_failed(i, &position, panic.as_ref()));
                    let _ = results.send((i, result));
                }),
        ));
    }
    drop(result_tx);
    drop(recycle_tx);
    drop(rec_tx);
    drop(spare_rx);

    let mut reader = Reader::new(&opts.limits, senders, recycle_rx, None);
    if hosted.is_some() {
        reader.host_worker(HOSTED_WEIGHT);
    }
    reader.records_failed = records_failed;
    reader.index_legs(lb_options(opts), opts.limits.lb_max_entries, opts.vlan_key);
    let mut warnings = Vec::new();
    let mut fault = None;
    let progress = opts.progress && std::io::stderr().is_terminal();
    // A share of the input only where every input's size is known: plain files, not
    // standard input, a pipe or a compressed capture (whose offsets count the bytes inside).
    let total_bytes: Option<u64> = opts
        .files
        .iter()
        .zip(&inputs)
        .map(|(p, i)| {
            std::fs::metadata(p)
                .ok()
                .filter(|m| m.is_file() && p != crate::source::STDIN && !i.file.compressed())
                .map(|m| m.len())
        })
        .sum();

    // Merge by packet time; ties go to the earlier file.
    loop {
        for inp in inputs.iter_mut() {
            match inp.fill(&mut vantages) {
                Ok(None) => {}
                Ok(Some(offset)) => {
                    let where_ = if inp.file.gzip_cut() {
                        format!("the gzip stream ends early, after byte {offset} of the capture inside it")
                    } else {
                        format!("the file ends in the middle of a record at byte {offset}")
                    };
                    warnings.push(format!(
                        "{}: {where_} (a capture that was cut short); the document covers what came before",
                        crate::source::shown_path(&inp.file.path)
                    ));
                }
                Err(e) => {
                    // Stop reading that file; what it held, and the other files, still count.
                    fault.get_or_insert(e);
                }
            }
        }
        let next = inputs
            .iter()
            .enumerate()
            .filter_map(|(idx, i)| i.peek_ts().map(|ts| (ts, idx)))
            .min()
            .map(|(_, idx)| idx);
        let Some(idx) = next else { break };
        let Some(slot) = inputs[idx].pop() else { break };
        if let Some(pkt) = inputs[idx].packet(slot) {
            if let Err(e) = reader.packet(pkt, &mut vantages, filter.as_mut()) {
                return Err(RunError::Filter(e));
            }
        }
        inputs[idx].release(slot);
        if let Some(h) = hosted.as_mut() {
            if reader.local_full || reader.has_stalled() {
                h.process_local(&mut reader);
                if !reader.retry_stalled() && !reader.workers_gone {
                    // Our own share is done and a worker's queue is still full: wait.
                    reader.send_stalled_blocking();
                }
            }
        }
        if reader.workers_gone {
            break;
        }
        if progress && reader.order.is_multiple_of(1_000_000) {
            match total_bytes {
                Some(total) => {
                    let done: u64 = inputs.iter().map(|i| i.file.offset()).sum();
                    eprint!(
                        "\rwiremap: {} packets, {}% of input",
                        reader.order,
                        done * 100 / total.max(1)
                    );
                }
                None => eprint!("\rwiremap: {} packets", reader.order),
            }
        }
    }
    if progress && reader.order >= 1_000_000 {
        eprintln!();
    }
    reader.flush_all();
    if let Some(h) = hosted.as_mut() {
        h.process_local(&mut reader);
        while reader.has_stalled() && !reader.workers_gone {
            reader.send_stalled_blocking();
        }
    }
    let stats = reader.finish();
    // The reader's own worker ends its connections while the others end theirs.
    let hosted_result = hosted.map(HostedWorker::finish);

    let mut results: Vec<Option<WorkerResult>> = (0..threads).map(|_| None).collect();
    let mut failure = None;
    match hosted_result {
        Some(Ok(r)) => results[0] = Some(r),
        Some(Err(e)) => failure = Some(e),
        None => {}
    }
    for (i, r) in result_rx.iter() {
        match r {
            Ok(r) => results[i] = Some(r),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    for (i, h) in handles {
        let joined = match h {
            Ok(h) => h.join(),
            Err(e) => return Err(RunError::Internal(format!("cannot start worker: {e}"))),
        };
        if let Err(panic) = joined {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(RunError::Internal(format!(
                "worker {i} failed at packet {} of the input: {msg}",
                positions[i].load(Ordering::Relaxed) + 1
            )));
        }
    }
    if let Some(e) = failure {
        return Err(RunError::Internal(e));
    }
    let results: Vec<WorkerResult> = results.into_iter().flatten().collect();
    if let Some(w) = writer {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(RunError::Internal(format!("cannot write records: {e}"))),
            Err(_) => return Err(RunError::Internal("the records writer failed".into())),
        }
    }
    let kind = "pcap";
    let document = report::build_document(report::DocumentInput {
        results,
        reader: stats,
        vantages: &vantages,
        filter: opts.filter.as_deref(),
        max_edges: opts.limits.max_edges,
        kind,
        lb_config: opts.lb.config.as_deref(),
    });
    Ok(Analysis {
        document,
        warnings,
        fault,
    })
}

fn lb_options(opts: &Options) -> crate::lvs::LbOptions {
    crate::lvs::LbOptions {
        window_ns: opts.limits.lb_window_ns,
        ..opts.lb.clone()
    }
}

/// Worker 0 run by the reader's thread (see [`reader_hosts`]). A panic in it is caught and
/// reported as any worker's is.
struct HostedWorker {
    worker: Worker,
    position: Arc<AtomicU64>,
    failure: Option<String>,
}

impl HostedWorker {
    /// Process what the reader holds for this worker, if anything. After a failure the
    /// reader stops (its `workers_gone`).
    fn process_local(&mut self, reader: &mut Reader) {
        if self.failure.is_some() {
            reader.workers_gone = true;
            return;
        }
        let fresh = reader.fresh_batch();
        let batch = match reader.swap_local(fresh) {
            Ok(batch) => batch,
            Err(unused) => {
                reader.give_back(unused);
                return;
            }
        };
        let (worker, position) = (&mut self.worker, &self.position);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            worker.process_batch(&batch, position);
        }));
        reader.give_back(batch);
        if let Err(panic) = run {
            self.failure = Some(worker_failed(0, &self.position, panic.as_ref()));
            reader.workers_gone = true;
        }
    }

    /// The worker's sums once the input has ended, or why it failed.
    fn finish(self) -> Result<WorkerResult, String> {
        if let Some(e) = self.failure {
            return Err(e);
        }
        let HostedWorker {
            worker, position, ..
        } = self;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.into_result()))
            .map_err(|panic| worker_failed(0, &position, panic.as_ref()))
    }
}

/// Worker `i` panicked, `position` holding the reading order of the packet it was on (call
/// on the thread that panicked: see [`fault::message`]).
fn worker_failed(i: usize, position: &AtomicU64, panic: &(dyn std::any::Any + Send)) -> String {
    format!(
        "worker {i} failed at packet {} of the input: {}",
        position.load(Ordering::Relaxed).saturating_add(1),
        fault::message(panic)
    )
}

fn work(w: &mut Worker, rx: &Receiver<Batch>, recycle: &Sender<Batch>, position: &AtomicU64) {
    for mut batch in rx.iter() {
        if w.fault_in(&batch).is_some() {
            // Test hook: fail while the reader is blocked on this worker's full queue, the
            // case that must not hang (bounded: a short input never fills it).
            let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while !rx.is_full() && std::time::Instant::now() < until {
                thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        w.process_batch(&batch, position);
        batch.clear();
        let _ = recycle.try_send(batch);
    }
}

/// The reader's side of dispatch: filter, decode, count, and batch packets for the worker
/// that owns their connection. Files and the live ring share it.
pub struct Reader {
    decoder: Decoder,
    pub stats: ReaderStats,
    batches: Vec<Batch>,
    senders: Vec<Sender<Batch>>,
    recycle: Receiver<Batch>,
    order: u64,
    /// A worker stopped (it failed), or the records writer did: stop reading.
    pub workers_gone: bool,
    /// Set by the records writer when it fails.
    pub(crate) records_failed: Arc<AtomicBool>,
    /// This reader's own worker, whose batch the reader's thread processes (live with
    /// fanout; offline when the reader hosts worker 0).
    local: Option<usize>,
    dispatch: Dispatch,
    /// The local batch is full: the caller processes it before the next packet.
    pub local_full: bool,
    /// Batches a worker had no room for yet (whenever the reader runs a worker of its own),
    /// in order per worker.
    stalled: Vec<(usize, Batch)>,
    /// Packets handed to a worker other than the local one (reported live with fanout).
    pub forwarded: u64,
    /// Load-balancer legs: the reader sees every packet in order, so stitching decided here
    /// is the same whatever the number of workers (live with fanout: each lane's own legs).
    lvs: Option<LegIndex>,
    tags: Vec<Tag>,
    /// Emptied batches taken from `recycle`, the most recently returned last: the next one
    /// filled is the one a worker finished last, still in a cache, not the one that waited
    /// longest in the channel (one reader only; live fanout readers share the channel).
    spare: Vec<Batch>,
}

/// A packet as read, borrowed from its source (a file reader's buffer or the live ring).
#[derive(Clone, Copy, Debug)]
pub struct PacketRef<'a> {
    pub ts_ns: i64,
    pub linktype: u32,
    pub wire_len: u32,
    pub vantage: u16,
    pub data: &'a [u8],
}

impl PacketRef<'_> {
    pub fn to_owned_packet(&self) -> OwnedPacket {
        OwnedPacket {
            ts_ns: self.ts_ns,
            linktype: self.linktype,
            wire_len: self.wire_len,
            vantage: self.vantage,
            data: self.data.to_vec(),
        }
    }
}

impl OwnedPacket {
    pub fn view(&self) -> PacketRef<'_> {
        PacketRef {
            ts_ns: self.ts_ns,
            linktype: self.linktype,
            wire_len: self.wire_len,
            vantage: self.vantage,
            data: &self.data,
        }
    }
}

/// The worker of `workers` that owns connection `key`. Live with fanout, the function the
/// kernel's fanout program computes (`capture::fanout`), so that few packets need
/// forwarding; otherwise the dispatch hash, which keeps a file's worker assignment the same
/// from run to run (spread evenly, or weighted toward the other workers when the reader
/// runs worker 0).
fn owner(key: &FlowKey, workers: usize, dispatch: Dispatch) -> usize {
    let n = workers.max(1);
    match dispatch {
        Dispatch::Lanes => key.lane_hash() as usize % n,
        Dispatch::Even => key.worker(n),
        Dispatch::Hosted { local_below } => {
            let h = key.dispatch_hash();
            if h <= local_below || n == 1 {
                return 0;
            }
            // The rest of the range, evenly over workers 1..n.
            let above = u128::from(h - local_below - 1);
            let span = u128::from(u64::MAX - local_below);
            1 + (above * (n as u128 - 1) / span) as usize
        }
    }
}

impl Reader {
    pub(crate) fn new(
        limits: &Limits,
        senders: Vec<Sender<Batch>>,
        recycle: Receiver<Batch>,
        local: Option<usize>,
    ) -> Reader {
        Reader {
            decoder: Decoder::new(limits.max_fragment_datagrams, limits.fragment_timeout_ns),
            stats: ReaderStats::default(),
            batches: (0..senders.len()).map(|_| Batch::with_capacity()).collect(),
            senders,
            recycle,
            order: 0,
            workers_gone: false,
            records_failed: Arc::new(AtomicBool::new(false)),
            local,
            dispatch: if local.is_some() {
                Dispatch::Lanes
            } else {
                Dispatch::Even
            },
            local_full: false,
            stalled: Vec::new(),
            forwarded: 0,
            lvs: None,
            tags: Vec::new(),
            spare: Vec::new(),
        }
    }

    pub(crate) fn packet(
        &mut self,
        pkt: PacketRef<'_>,
        vantages: &mut Vantages,
        filter: Option<&mut FilterSet>,
    ) -> Result<(), String> {
        let order = self.order;
        self.order += 1;
        let vantage = vantages.list.get_mut(pkt.vantage as usize);
        if let Some(f) = filter {
            f.prepare(pkt.linktype).map_err(|e| e.0)?;
            if !f.matches(pkt.linktype, pkt.data, pkt.wire_len) {
                // Sources count every packet read, with its IP bytes, filtered or not.
                if let Some(v) = vantage {
                    v.packets += 1;
                    v.bytes += u64::from(decode::ip_bytes_of(pkt.linktype, pkt.data));
                }
                return Ok(());
            }
        }
        let st = &mut self.stats;
        st.packets += 1;
        st.first_ts = Some(st.first_ts.map_or(pkt.ts_ns, |t| t.min(pkt.ts_ns)));
        st.last_ts = Some(st.last_ts.map_or(pkt.ts_ns, |t| t.max(pkt.ts_ns)));
        let (workers, dispatch) = (self.senders.len(), self.dispatch);
        match self.decoder.decode(pkt.linktype, pkt.data, pkt.ts_ns) {
            Outcome::Flow(t, payload) => {
                if t.truncated {
                    st.truncated += 1;
                }
                let (key, _) = FlowKey::of(&t, 0);
                let w = owner(&key, workers, dispatch);
                self.batches[w].push(t, pkt.ts_ns, pkt.vantage, order, payload);
                if let Some(lvs) = self.lvs.as_mut() {
                    lvs.observe(&t, payload, pkt.ts_ns, pkt.vantage, &mut self.tags);
                }
                match self.local {
                    Some(l) if l == w => {
                        if self.batches[w].is_full() {
                            self.local_full = true;
                        }
                    }
                    Some(_) => {
                        self.forwarded += 1;
                        if self.batches[w].is_full() {
                            self.send(w);
                        }
                    }
                    None => {
                        if self.batches[w].is_full() {
                            self.send(w);
                        }
                    }
                }
                for tag in self.tags.drain(..) {
                    // The worker that owns the tagged leg (dispatch ignores VLANs).
                    let to = owner(&FlowKey { vlan: 0, ..tag.key }, workers, dispatch);
                    if let Some(b) = self.batches.get_mut(to) {
                        b.push_tag(tag);
                    }
                }
            }
            Outcome::Other { truncated, .. } => {
                st.other += 1;
                if truncated {
                    st.truncated += 1;
                }
            }
            Outcome::FragmentHeld { .. } => {}
            Outcome::Duplicate => st.duplicates += 1,
            Outcome::Undecodable { truncated, .. } => {
                st.undecodable += 1;
                if truncated {
                    st.truncated += 1;
                }
            }
        }
        let ip_bytes = u64::from(self.decoder.outer_ip_bytes());
        self.stats.bytes += ip_bytes;
        if let Some(v) = vantages.list.get_mut(pkt.vantage as usize) {
            v.packets += 1;
            v.bytes += ip_bytes;
        }
        Ok(())
    }

    /// Keep the load-balancer leg index (see `crate::lvs`).
    pub(crate) fn index_legs(
        &mut self,
        opts: crate::lvs::LbOptions,
        max_entries: usize,
        vlan_key: bool,
    ) {
        self.lvs = Some(LegIndex::new(opts, max_entries, vlan_key));
    }

    /// Evidence the leg index could not keep since the start (`limits.lb_index_full`).
    pub(crate) fn lb_index_full(&self) -> u64 {
        self.lvs.as_ref().map_or(0, |i| i.full_hits)
    }

    /// A second copy of a packet already counted (the outgoing copy on a live `lo`):
    /// counted as the offline cooked path counts its duplicates, not decoded.
    pub(crate) fn duplicate(&mut self, pkt: PacketRef<'_>, vantages: &mut Vantages) {
        self.order += 1;
        let st = &mut self.stats;
        st.packets += 1;
        st.duplicates += 1;
        st.first_ts = Some(st.first_ts.map_or(pkt.ts_ns, |t| t.min(pkt.ts_ns)));
        st.last_ts = Some(st.last_ts.map_or(pkt.ts_ns, |t| t.max(pkt.ts_ns)));
        let ip_bytes = u64::from(decode::ip_bytes_of(pkt.linktype, pkt.data));
        st.bytes += ip_bytes;
        if let Some(v) = vantages.list.get_mut(pkt.vantage as usize) {
            v.packets += 1;
            v.bytes += ip_bytes;
        }
    }

    fn send(&mut self, w: usize) {
        let fresh = self.fresh_batch();
        let full = std::mem::replace(&mut self.batches[w], fresh);
        if self.records_failed.load(Ordering::Relaxed) {
            self.workers_gone = true;
        }
        if self.local.is_none() {
            if self.senders[w].send(full).is_err() {
                self.workers_gone = true;
            }
            return;
        }
        // The reader runs a worker too: never block on a full peer (live, two workers
        // waiting on each other; offline, a core left idle), keep the batch and retry after
        // working through our own.
        if self.stalled.iter().any(|(x, _)| *x == w) {
            self.stalled.push((w, full));
            return;
        }
        match self.senders[w].try_send(full) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(b)) => self.stalled.push((w, b)),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => self.workers_gone = true,
        }
    }

    /// Deliver stalled batches in order while there is room. True when none are left.
    pub(crate) fn retry_stalled(&mut self) -> bool {
        while !self.stalled.is_empty() {
            let (w, b) = self.stalled.remove(0);
            match self.senders[w].try_send(b) {
                Ok(()) => {}
                Err(crossbeam_channel::TrySendError::Full(b)) => {
                    self.stalled.insert(0, (w, b));
                    return false;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                    self.workers_gone = true;
                }
            }
        }
        true
    }

    /// An empty batch: the one a worker returned last when this is the only reader (it is
    /// still in a cache), else any returned one, else a new one.
    pub(crate) fn fresh_batch(&mut self) -> Batch {
        if self.dispatch == Dispatch::Lanes {
            self.recycle.try_recv().ok()
        } else {
            self.spare.extend(self.recycle.try_iter());
            self.spare.pop()
        }
        .unwrap_or_else(Batch::with_capacity)
    }

    /// An emptied batch back for reuse (one the reader's own worker processed).
    pub(crate) fn give_back(&mut self, mut batch: Batch) {
        batch.clear();
        self.spare.push(batch);
    }

    /// Offline, the reader hosting worker 0: hashes up to a share that weighs `weight`
    /// against 1 for each other worker go to it; its batch is the caller's to process when
    /// [`Reader::local_full`] says so, and batches for workers whose queue is full wait
    /// ([`Reader::retry_stalled`]) instead of blocking.
    pub(crate) fn host_worker(&mut self, weight: f64) {
        self.local = Some(0);
        self.dispatch = Dispatch::hosted(self.senders.len(), weight);
    }

    /// Batches wait for a worker's queue.
    pub(crate) fn has_stalled(&self) -> bool {
        !self.stalled.is_empty()
    }

    /// Send the first waiting batch, blocking until its worker takes it, then any others
    /// there is room for (when the reader's own worker has nothing left to do).
    pub(crate) fn send_stalled_blocking(&mut self) {
        if self.stalled.is_empty() {
            return;
        }
        let (w, b) = self.stalled.remove(0);
        if self.senders[w].send(b).is_err() {
            self.workers_gone = true;
        }
        self.retry_stalled();
    }

    /// An emptied batch from the shared pool, if one is there.
    pub(crate) fn recycled(&self) -> Option<Batch> {
        self.recycle.try_recv().ok()
    }

    /// The local worker's batch (live with fanout, or offline when the reader runs worker 0),
    /// when it holds anything, exchanged for
    /// `fresh` (an empty batch).
    pub(crate) fn swap_local(&mut self, fresh: Batch) -> Result<Batch, Batch> {
        self.local_full = false;
        match self.local.and_then(|l| self.batches.get_mut(l)) {
            Some(b) if !b.packets.is_empty() || !b.tags.is_empty() => {
                Ok(std::mem::replace(b, fresh))
            }
            _ => Err(fresh),
        }
    }

    /// Send every non-empty batch (except the local one); with `mark`, every worker gets a
    /// batch carrying it, empty or not (the time reached, for interval ends).
    pub(crate) fn flush_marked(&mut self, mark: Option<i64>) {
        for w in 0..self.batches.len() {
            if Some(w) == self.local {
                continue;
            }
            if mark.is_some() || !self.batches[w].packets.is_empty() {
                self.batches[w].mark = mark;
                self.send(w);
            }
        }
    }

    fn flush_all(&mut self) {
        self.flush_marked(None);
    }

    /// Fragments dropped by the decoder since the start.
    pub(crate) fn fragments_dropped(&self) -> u64 {
        self.decoder.fragments_dropped()
    }

    /// Drop the senders (workers see the end of input once every reader has).
    pub(crate) fn close(&mut self) {
        self.senders.clear();
    }

    fn finish(mut self) -> ReaderStats {
        self.stats.fragments_dropped = self.decoder.fragments_dropped();
        self.stats.lb_index_full = self.lb_index_full();
        self.senders.clear();
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reader fills next the batch a worker returned last (still in a cache), not the
    /// one that waited longest.
    #[test]
    fn the_reader_reuses_the_most_recently_returned_batch() {
        let (tx, rx) = bounded::<Batch>(4);
        let (recycle_tx, recycle_rx) = bounded::<Batch>(4);
        let mut reader = Reader::new(&Limits::default(), vec![tx], recycle_rx, None);
        let (older, newer) = (Batch::with_capacity(), Batch::with_capacity());
        let newer_bytes = newer.bytes.as_ptr();
        recycle_tx.send(older).ok();
        recycle_tx.send(newer).ok();
        reader.send(0);
        assert_eq!(reader.batches[0].bytes.as_ptr(), newer_bytes);
        assert_eq!(reader.spare.len(), 1);
        assert!(rx.try_recv().is_ok(), "the full batch went to its worker");
    }

    fn keys(n: u32) -> impl Iterator<Item = FlowKey> {
        (0..n).map(|i| {
            let client = crate::flow::Endpoint {
                ip: std::net::Ipv4Addr::from(0x0a14_0000 + i / 50_000).into(),
                port: 1024 + (i % 50_000) as u16,
            };
            let server = crate::flow::Endpoint {
                ip: [10, 30, 0, (i % 4) as u8 + 1].into(),
                port: 80,
            };
            FlowKey::new(client, server, 6, 0).0
        })
    }

    /// Hosted dispatch gives the reader's worker its weight's share and spreads the rest
    /// evenly; one worker gets everything; both directions of a connection have one owner.
    #[test]
    fn hosted_dispatch_gives_the_reader_its_share() {
        const N: u32 = 200_000;
        for (workers, want) in [
            (2usize, [0.25, 0.75, 0.0]),
            (3, [1.0 / 7.0, 3.0 / 7.0, 3.0 / 7.0]),
        ] {
            let d = Dispatch::hosted(workers, HOSTED_WEIGHT);
            let mut counts = [0u32; 3];
            for k in keys(N) {
                counts[owner(&k, workers, d)] += 1;
            }
            for (got, want) in counts.iter().zip(want) {
                let share = f64::from(*got) / f64::from(N);
                assert!((share - want).abs() < 0.01, "{workers} workers: {counts:?}");
            }
        }
        // The flow table is shared out the same way.
        for workers in 1..5 {
            let sum: f64 = (0..workers)
                .map(|i| hosted_share(i, workers, HOSTED_WEIGHT))
                .sum();
            assert!((sum - 1.0).abs() < 1e-9, "{workers}: {sum}");
        }
        let one = Dispatch::hosted(1, HOSTED_WEIGHT);
        assert!(keys(10_000).all(|k| owner(&k, 1, one) == 0));
        let d = Dispatch::hosted(2, HOSTED_WEIGHT);
        for k in keys(10_000) {
            let reverse = FlowKey::new(k.b, k.a, 6, 0).0;
            assert_eq!(owner(&k, 2, d), owner(&reverse, 2, d));
        }
    }

    #[test]
    fn the_reader_hosts_a_worker_only_where_it_has_time_for_one() {
        use ReaderWorker::*;
        // (threads, CPUs, L7) -> hosting by default.
        for (threads, cpus, l7, want) in [
            (2, 2, true, true),
            (1, 1, true, true),
            (2, 1, true, true),
            (1, 2, true, false),
            (2, 4, true, false),
            (4, 4, true, false),
            (2, 2, false, false),
        ] {
            assert_eq!(
                reader_hosts(Auto, threads, cpus, l7),
                want,
                "{threads} {cpus} {l7}"
            );
            assert!(reader_hosts(On, threads, cpus, l7));
            assert!(!reader_hosts(Off, threads, cpus, l7));
        }
    }
}
