//! The `wiremap` command: a thin layer over the library (argument parsing, output, exit
//! codes). See `wiremap --help`.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use wiremap::limits::Limits;
use wiremap::pipeline::{self, Options, ReaderWorker, RunError};

const EXIT_INTERNAL: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_INPUT: u8 = 3;
const EXIT_PARTIAL: u8 = 4;

const AFTER_HELP: &str = "\
Exit codes:
  0  success (also for a capture cut mid-record: a warning, and the document for what was read)
  1  internal error (output could not be written, a worker failed)
  2  usage error, or a filter expression that does not compile
  3  an input cannot be used (missing, empty, not a pcap/pcapng capture): no document
  4  an input is corrupt after its start: the document covers what came before the fault";

#[derive(Parser)]
#[command(name = "wiremap", version, about = "Service topology from packets: who talks to whom, how often it fails, how slow it is", after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse capture files and write one topology document (JSON).
    #[command(after_help = "\
Examples:
  wiremap analyze fixtures/lab.pcap
  wiremap analyze --filter 'tcp port 80 or udp port 53' -o topo.json incident.pcapng
  wiremap analyze --threads 2 eth0-a.pcap eth0-b.pcap        # two vantage points, merged by time
  wiremap analyze --one-vantage cap.pcap0 cap.pcap1 cap.pcap2 # a rotated capture of one interface

Exit codes: 0 ok (a cut-off capture gives a warning), 2 usage/filter, 3 unusable input, 4 corrupt input (partial document), 1 internal.")]
    Analyze(AnalyzeArgs),
    /// Capture live from a network interface (AF_PACKET ring) and write topology documents.
    #[command(after_help = "\
Examples:
  wiremap capture -i eth0 --duration 60 -o topo.json
  wiremap capture -i eth0 --interval 10 -o topo.jsonl          # one JSON line per 10 s
  wiremap capture -i eth0 -f 'tcp port 6379' --tpacket 2 --no-fanout

Needs CAP_NET_RAW (root, or: setcap cap_net_raw+ep wiremap). Stops at --duration, SIGINT or
SIGTERM; everything captured is reported.

Exit codes: 0 ok, 2 usage/filter, 3 the interface cannot be captured (missing, no CAP_NET_RAW), 1 internal.")]
    Capture(CaptureArgs),
    /// Print the classic BPF program a filter compiles to, as `tcpdump -d` does.
    #[command(after_help = "\
Examples:
  wiremap filter 'tcp port 80'
  wiremap filter --linktype LINUX_SLL2 'host 10.0.0.1 and udp port 53'

Host, service and protocol names are resolved from /etc/hosts, /etc/services and
/etc/protocols only (never DNS or NSS); other names are refused.")]
    Filter(FilterArgs),
}

#[derive(Args)]
struct AnalyzeArgs {
    /// Capture files (pcap or pcapng, gzip-compressed or not; `-` reads standard input).
    /// Several files are merged by packet time; each file, and each interface of a pcapng,
    /// is a vantage point.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,
    /// Only packets matching this tcpdump expression.
    #[arg(long, short = 'f', value_name = "EXPR")]
    filter: Option<String>,
    /// Write the document here instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<String>,
    /// Worker threads (default: the number of CPUs). The output does not depend on it.
    #[arg(long, short = 't', value_name = "N")]
    threads: Option<usize>,
    /// Whether the thread reading the input also analyses a share of the connections, as
    /// one of the workers: auto (with L7, when the workers fill every CPU and are at most
    /// 2), on, off.
    #[arg(long, value_name = "WHEN", default_value = "auto")]
    reader_worker: String,
    /// The files continue one another (a rotated capture): one vantage point, not several.
    #[arg(long)]
    one_vantage: bool,
    /// Make VLAN ids part of the connection key (by default the same 5-tuple on two VLANs
    /// is one connection).
    #[arg(long)]
    vlan_key: bool,
    /// Skip L7 parsing: connections and TCP health only.
    #[arg(long)]
    no_l7: bool,
    /// Also write one JSON line per request/response exchange to FILE (secrets removed).
    #[arg(long, value_name = "FILE")]
    records: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    lb: LbArgs,
    /// No progress line on standard error.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Bounds shared by `analyze` and `capture`.
#[derive(Args)]
struct LimitArgs {
    /// Connections tracked at once; past it a connection whose close is complete is evicted
    /// first, then a UDP flow whose L7 state was settled, else the least recently seen flow.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_flows)]
    max_flows: usize,
    /// Edges in the document (past it, edges with only failed attempts fold into their
    /// service; past that many such services in a worker, into the port's 0.0.0.0:PORT node).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_edges)]
    max_edges: usize,
    /// Clients with an edge of their own per service and worker (past it, a new client's
    /// connections are summed on the service's "other clients" edge, client 0.0.0.0 or ::).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_clients_per_service)]
    max_clients_per_service: usize,
    /// Edges each worker holds (past it, a new edge's connections are summed on its port's
    /// "other traffic" edge, 0.0.0.0 to 0.0.0.0:PORT).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_edges_per_worker)]
    max_edges_per_worker: usize,
    /// Requests waiting for a response per connection.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_pending_requests)]
    max_pending: usize,
    /// Bytes of pending requests held across all connections of one worker (past it, a
    /// connection's new request displaces its oldest pending one).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_pending_bytes_total)]
    pending_total_bytes: usize,
    /// Out-of-order bytes buffered per direction of a TCP connection.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_reassembly_bytes_per_direction)]
    reassembly_bytes: usize,
    /// Out-of-order bytes held across all connections of one worker.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_reassembly_bytes_total)]
    reassembly_total_bytes: usize,
    /// Bytes of partial L7 messages held across all connections of one worker (past it, the
    /// connection that grew gives up its partial message and resynchronises).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_message_bytes_total)]
    message_total_bytes: usize,
    /// Longest L7 head or frame buffered while waiting for its end (HTTP head, RESP line).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().parser.max_buffered)]
    max_message_bytes: usize,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        let mut limits = Limits {
            max_flows: self.max_flows.max(1),
            max_edges: self.max_edges,
            max_clients_per_service: self.max_clients_per_service,
            max_edges_per_worker: self.max_edges_per_worker,
            max_pending_requests: self.max_pending.max(1),
            max_pending_bytes_total: self.pending_total_bytes,
            max_reassembly_bytes_per_direction: self.reassembly_bytes,
            max_reassembly_bytes_total: self.reassembly_total_bytes,
            max_message_bytes_total: self.message_total_bytes,
            ..Limits::default()
        };
        limits.parser.max_buffered = self.max_message_bytes.max(1024);
        limits.parser.max_pending = limits.max_pending_requests;
        limits
    }
}

fn default_threads(t: Option<usize>) -> usize {
    t.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
    .clamp(1, 256)
}

#[derive(Args)]
struct CaptureArgs {
    /// Network interface to capture on.
    #[arg(long, short = 'i', value_name = "IFACE")]
    interface: String,
    /// Only packets matching this tcpdump expression (compiled by libpcap, run by the
    /// kernel on the socket; see `wiremap filter --interface`).
    #[arg(long, short = 'f', value_name = "EXPR")]
    filter: Option<String>,
    /// Stop after this many seconds (default: at SIGINT or SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Write one document per interval of this many seconds (aligned in packet time), one
    /// JSON line each, instead of one document at the end.
    #[arg(long, value_name = "SECS")]
    interval: Option<f64>,
    /// Write documents here (appended with --interval) instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<String>,
    /// Also write one JSON line per request/response exchange to FILE (secrets removed).
    #[arg(long, value_name = "FILE")]
    records: Option<String>,
    /// Worker threads (default: the number of CPUs); with fanout, one socket each. With 1,
    /// one thread reads the ring and processes it: the least CPU a packet.
    #[arg(long, short = 't', value_name = "N")]
    threads: Option<usize>,
    /// Bytes captured per packet.
    #[arg(long, value_name = "N", default_value_t = wiremap::capture::DEFAULT_SNAPLEN)]
    snaplen: u32,
    /// Capture ring size in MiB (shared by the sockets with fanout).
    #[arg(long, value_name = "N", default_value_t = wiremap::capture::DEFAULT_RING_MB)]
    ring_mb: usize,
    /// Ring version: auto (3, else 2 when the kernel refuses it), 2 or 3.
    #[arg(long, value_name = "auto|2|3", default_value = "auto")]
    tpacket: String,
    /// One socket per worker in a PACKET_FANOUT group where the kernel accepts it: the
    /// default, so this flag changes nothing (kept for scripts that say so).
    #[arg(long, conflicts_with = "no_fanout")]
    fanout: bool,
    /// One socket and software dispatch to the workers, even where fanout is available.
    #[arg(long)]
    no_fanout: bool,
    /// With fanout: bytes each worker may hold to put its own ring's packets and the ones
    /// forwarded to it back in time order (past it they go early, counted in
    /// limits.reorder_forced).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_reorder_bytes)]
    reorder_bytes: usize,
    /// Put the interface in promiscuous mode while capturing.
    #[arg(long)]
    promisc: bool,
    /// Make VLAN ids part of the connection key.
    #[arg(long)]
    vlan_key: bool,
    /// Skip L7 parsing: connections and TCP health only.
    #[arg(long)]
    no_l7: bool,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    lb: LbArgs,
    /// No summary line on standard error at the end.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Load-balancer stitching (analyze and capture).
#[derive(Args)]
struct LbArgs {
    /// Virtual services and their real servers: the output of `ipvsadm -Ln`. Names VIPs and
    /// backends even when only one side of the load balancer was captured.
    #[arg(long, value_name = "FILE")]
    lvs_config: Option<String>,
    /// A load balancer's local address block (FULLNAT source addresses; repeatable). Such an
    /// address is shown as a load balancer, never as a client.
    #[arg(long, value_name = "CIDR")]
    lb_local: Vec<wiremap::lvs::Cidr>,
    /// Seconds of packet time within which the two legs of one load-balanced connection are
    /// matched: the director's delay plus the clock skew between captures.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    lb_window: f64,
    /// Load-balancer leg evidence held at once, per kind (SYNs, first request bytes, TOA).
    #[arg(long, value_name = "N", default_value_t = Limits::default().lb_max_entries)]
    lb_max_entries: usize,
}

impl LbArgs {
    /// The window and bound go into `limits`; the rest is returned (or the exit code).
    fn options(&self, limits: &mut Limits) -> Result<wiremap::lvs::LbOptions, ExitCode> {
        if !(self.lb_window.is_finite() && (0.0..=3600.0).contains(&self.lb_window)) {
            eprintln!("wiremap: --lb-window must be between 0 and 3600 seconds");
            return Err(ExitCode::from(EXIT_USAGE));
        }
        limits.lb_window_ns = (self.lb_window * 1e9) as i64;
        limits.lb_max_entries = self.lb_max_entries;
        let config = match &self.lvs_config {
            None => None,
            Some(path) => {
                let text = match std::fs::read(path) {
                    Ok(t) => String::from_utf8_lossy(&t).into_owned(),
                    Err(e) => {
                        eprintln!("wiremap: --lvs-config {path}: {e}");
                        return Err(ExitCode::from(EXIT_INPUT));
                    }
                };
                match wiremap::lvs::LvsConfig::parse(&text) {
                    Ok(c) => Some(std::sync::Arc::new(c)),
                    Err(e) => {
                        eprintln!("wiremap: --lvs-config {path}: {e}");
                        return Err(ExitCode::from(EXIT_USAGE));
                    }
                }
            }
        };
        Ok(wiremap::lvs::LbOptions {
            config,
            lb_local: self.lb_local.clone(),
            window_ns: limits.lb_window_ns,
        })
    }
}

#[derive(Args)]
struct FilterArgs {
    /// A tcpdump filter expression.
    #[arg(required = true, value_name = "EXPR", num_args = 1..)]
    expr: Vec<String>,
    /// Link type to compile for (EN10MB, LINUX_SLL, LINUX_SLL2, RAW, IPV4, IPV6, NULL, LOOP,
    /// or a number).
    #[arg(long, default_value = "EN10MB")]
    linktype: String,
    /// Snapshot length the program is compiled for (it sets the accepting return value).
    #[arg(long)]
    snaplen: Option<u32>,
    /// Print the program as `capture --interface IFACE` attaches it to its socket (compiled
    /// for the interface's link type and the capture's default snaplen).
    #[arg(long, value_name = "IFACE", conflicts_with = "linktype")]
    interface: Option<String>,
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Panics are caught and reported as one line (exit 1), never the default trace: the
    // workers catch their own (naming the packet), this catches the rest.
    pipeline::fault::quiet_panics();
    std::panic::catch_unwind(|| match cli.command {
        Command::Analyze(a) => analyze(a),
        Command::Filter(f) => filter(f),
        Command::Capture(c) => capture(c),
    })
    .unwrap_or_else(|panic| {
        eprintln!(
            "wiremap: internal error: {}",
            pipeline::fault::message(panic.as_ref())
        );
        ExitCode::from(EXIT_INTERNAL)
    })
}

/// Two glibc malloc settings, measured on the 1 M packet, 100 k connection file:
/// * glibc makes a worker thread's arena writable one page at a time as it grows: one
///   `mprotect` call, each taking the address space's lock for writing, for each new 4 KiB
///   page (22,000 calls). With a 32 MiB top pad a new arena heap is made writable 32 MiB at
///   once (15,800 calls; -3 % wall); its pages are still only faulted in when touched. A
///   64 MiB pad (a whole heap, 28 calls) was 3 % faster again but stops arenas giving freed
///   memory back: +10 MB peak RSS.
/// * No fast bins: with them, every request of 1 KiB or more (an edge's resource list
///   growing past 16 entries) first merges all freed small blocks (`malloc_consolidate`,
///   2.7 % of samples). Small blocks are still reused through the per-thread cache: -2 to
///   -7 % wall, -4 % CPU, the same peak RSS.
///
/// Set once, before any thread starts.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 32 << 20);
        libc::mallopt(libc::M_MXFAST, 0);
    }
}

fn analyze(a: AnalyzeArgs) -> ExitCode {
    if a.files
        .iter()
        .filter(|f| *f == wiremap::source::STDIN)
        .count()
        > 1
    {
        eprintln!("wiremap: standard input (-) can be read only once");
        return ExitCode::from(EXIT_USAGE);
    }
    let mut limits = a.limits.limits();
    let lb = match a.lb.options(&mut limits) {
        Ok(lb) => lb,
        Err(code) => return code,
    };
    let threads = default_threads(a.threads);
    let reader_worker = match a.reader_worker.as_str() {
        "auto" => ReaderWorker::Auto,
        "on" => ReaderWorker::On,
        "off" => ReaderWorker::Off,
        other => {
            eprintln!("wiremap: --reader-worker must be auto, on or off, not '{other}'");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let opts = Options {
        files: a.files,
        filter: a.filter,
        threads,
        one_vantage: a.one_vantage,
        vlan_key: a.vlan_key,
        l7: !a.no_l7,
        records: a.records,
        limits,
        progress: !a.quiet,
        lb,
        reader_worker,
    };
    let mut analysis = match pipeline::analyze(&opts) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("wiremap: {e}");
            return ExitCode::from(match e {
                RunError::Input(_) => EXIT_INPUT,
                RunError::Filter(_) => EXIT_USAGE,
                RunError::Internal(_) => EXIT_INTERNAL,
            });
        }
    };
    for w in &analysis.warnings {
        eprintln!("wiremap: warning: {w}");
    }

    let fault = analysis.fault.map(|f| f.to_string());
    let document = &mut analysis.document;
    let mut write = |out: &mut dyn Write| -> std::io::Result<()> {
        wiremap::report::doc::write_json_pretty(document, out)?;
        out.write_all(b"\n")?;
        out.flush()
    };
    let written = match &a.output {
        Some(path) => std::fs::File::create(path)
            .and_then(|mut f| write(&mut f))
            .map_err(|e| format!("{path}: {e}")),
        None => write(&mut std::io::stdout().lock()).map_err(|e| format!("standard output: {e}")),
    };
    // The process ends next: freeing tens of thousands of edges one allocation at a time
    // would only delay the exit.
    std::mem::forget(analysis.document);
    if let Err(e) = written {
        eprintln!("wiremap: cannot write the document: {e}");
        return ExitCode::from(EXIT_INTERNAL);
    }
    if let Some(fault) = fault {
        eprintln!("wiremap: {fault}; the document covers what was read before it");
        return ExitCode::from(EXIT_PARTIAL);
    }
    ExitCode::SUCCESS
}

fn filter(f: FilterArgs) -> ExitCode {
    let expr = f.expr.join(" ");
    let compiled = if let Some(name) = &f.interface {
        let iface = match wiremap::capture::Interface::lookup(name) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("wiremap: {e}");
                return ExitCode::from(EXIT_INPUT);
            }
        };
        let snaplen = f.snaplen.unwrap_or(wiremap::capture::DEFAULT_SNAPLEN);
        wiremap::capture::live_program(&iface, &expr, snaplen)
    } else {
        let Some(linktype) = wiremap::source::linktype_from_name(&f.linktype) else {
            eprintln!("wiremap: unknown link type '{}'", f.linktype);
            return ExitCode::from(EXIT_USAGE);
        };
        let snaplen = f.snaplen.unwrap_or(wiremap::filter::DEFAULT_SNAPLEN);
        wiremap::filter::compile(&expr, linktype, snaplen)
    };
    match compiled {
        Ok(p) => {
            print!("{}", p.dump());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wiremap: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn seconds(what: &str, v: Option<f64>) -> Result<Option<std::time::Duration>, String> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => {
            Ok(Some(std::time::Duration::from_secs_f64(s)))
        }
        Some(s) => Err(format!(
            "--{what} must be a positive number of seconds, not {s}"
        )),
    }
}

fn capture(c: CaptureArgs) -> ExitCode {
    use wiremap::capture::{CaptureError, CaptureOptions, Want};
    let tpacket = match c.tpacket.as_str() {
        "auto" => Want::Auto,
        "2" => Want::Only(wiremap::capture::ring::Version::V2),
        "3" => Want::Only(wiremap::capture::ring::Version::V3),
        other => {
            eprintln!("wiremap: --tpacket must be auto, 2 or 3, not '{other}'");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (duration, interval) = match (
        seconds("duration", c.duration),
        seconds("interval", c.interval),
    ) {
        (Ok(d), Ok(i)) => (d, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("wiremap: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if c.snaplen < 64 || c.snaplen > 262_144 {
        eprintln!("wiremap: --snaplen must be between 64 and 262144");
        return ExitCode::from(EXIT_USAGE);
    }
    let mut limits = Limits {
        max_reorder_bytes: c.reorder_bytes,
        ..c.limits.limits()
    };
    let lb = match c.lb.options(&mut limits) {
        Ok(lb) => lb,
        Err(code) => return code,
    };
    let opts = CaptureOptions {
        interface: c.interface,
        filter: c.filter,
        duration,
        interval,
        threads: default_threads(c.threads),
        snaplen: c.snaplen,
        ring_mb: c.ring_mb.clamp(1, 1 << 16),
        tpacket,
        fanout: !c.no_fanout,
        promisc: c.promisc,
        vlan_key: c.vlan_key,
        l7: !c.no_l7,
        records: c.records,
        limits,
        lb,
    };
    // Interval documents are appended, one line each; the whole-run one is written at the end.
    let mut out: Box<dyn Write> = match &c.output {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(interval.is_some())
                .write(true)
                .truncate(interval.is_none())
                .open(path);
            match f {
                Ok(f) => Box::new(f),
                Err(e) => {
                    eprintln!("wiremap: cannot write the document: {path}: {e}");
                    return ExitCode::from(EXIT_INTERNAL);
                }
            }
        }
        None => Box::new(std::io::stdout()),
    };
    let lines = interval.is_some();
    let mut emit = |doc: &mut wiremap::report::doc::Document| -> std::io::Result<()> {
        if lines {
            let mut json = serde_json::to_vec(doc).map_err(std::io::Error::other)?;
            json.push(b'\n');
            out.write_all(&json)?;
        } else {
            wiremap::report::doc::write_json_pretty(doc, &mut out)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    match wiremap::capture::run(&opts, &mut emit) {
        Ok(s) => {
            if !c.quiet {
                eprintln!(
                    "wiremap: {} packets, {} dropped by the kernel, TPACKET_V{}, {} socket(s){}",
                    s.packets,
                    s.kernel_drops,
                    s.tpacket_version,
                    s.sockets,
                    if s.sockets > 1 {
                        format!(
                            ", {} forwarded between workers{}",
                            s.forwarded,
                            if s.reorder_forced > 0 {
                                format!(
                                    ", {} processed out of time order (reorder buffer full, or late from a ring that had been quiet)",
                                    s.reorder_forced
                                )
                            } else {
                                String::new()
                            }
                        )
                    } else {
                        String::new()
                    }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wiremap: {e}");
            ExitCode::from(match e {
                CaptureError::Setup(_) => EXIT_INPUT,
                CaptureError::Filter(_) => EXIT_USAGE,
                CaptureError::Output(_) | CaptureError::Internal(_) => EXIT_INTERNAL,
            })
        }
    }
}
