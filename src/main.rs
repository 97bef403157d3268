//! The `wiremap` command: a thin layer over the library (argument parsing, output, exit
//! codes). See `wiremap --help`.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use wiremap::limits::Limits;
use wiremap::pipeline::{self, Options, RunError};

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
    /// Capture files (pcap or pcapng). Several files are merged by packet time; each file,
    /// and each interface of a pcapng, is a vantage point.
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
    /// Connections tracked at once (the least recently seen is evicted past it).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_flows)]
    max_flows: usize,
    /// Edges in the document (past it, edges with only failed attempts fold into their service).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_edges)]
    max_edges: usize,
    /// Requests waiting for a response per connection.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_pending_requests)]
    max_pending: usize,
    /// Out-of-order bytes buffered per direction of a TCP connection.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_reassembly_bytes_per_direction)]
    reassembly_bytes: usize,
    /// Out-of-order bytes held across all connections of one worker.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_reassembly_bytes_total)]
    reassembly_total_bytes: usize,
    /// Longest L7 head or frame buffered while waiting for its end (HTTP head, RESP line).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().parser.max_buffered)]
    max_message_bytes: usize,
    /// No progress line on standard error.
    #[arg(long, short = 'q')]
    quiet: bool,
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
    #[arg(long, default_value_t = wiremap::filter::DEFAULT_SNAPLEN)]
    snaplen: u32,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Analyze(a) => analyze(a),
        Command::Filter(f) => filter(f),
    }
}

fn analyze(a: AnalyzeArgs) -> ExitCode {
    let mut limits = Limits {
        max_flows: a.max_flows.max(1),
        max_edges: a.max_edges,
        max_pending_requests: a.max_pending.max(1),
        max_reassembly_bytes_per_direction: a.reassembly_bytes,
        max_reassembly_bytes_total: a.reassembly_total_bytes,
        ..Limits::default()
    };
    limits.parser.max_buffered = a.max_message_bytes.max(1024);
    if !(a.lb_window.is_finite() && (0.0..=3600.0).contains(&a.lb_window)) {
        eprintln!("wiremap: --lb-window must be between 0 and 3600 seconds");
        return ExitCode::from(EXIT_USAGE);
    }
    limits.lb_window_ns = (a.lb_window * 1e9) as i64;
    limits.lb_max_entries = a.lb_max_entries;
    let config = match &a.lvs_config {
        None => None,
        Some(path) => {
            let text = match std::fs::read(path) {
                Ok(t) => String::from_utf8_lossy(&t).into_owned(),
                Err(e) => {
                    eprintln!("wiremap: --lvs-config {path}: {e}");
                    return ExitCode::from(EXIT_INPUT);
                }
            };
            match wiremap::lvs::LvsConfig::parse(&text) {
                Ok(c) => Some(std::sync::Arc::new(c)),
                Err(e) => {
                    eprintln!("wiremap: --lvs-config {path}: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
    };
    limits.parser.max_pending = limits.max_pending_requests;
    let threads = a
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .clamp(1, 256);
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
        lb: wiremap::lvs::LbOptions {
            config,
            lb_local: a.lb_local,
            window_ns: 0,
        },
    };
    let analysis = match pipeline::analyze(&opts) {
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
    let mut json = match serde_json::to_vec_pretty(&analysis.document) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("wiremap: cannot serialise the document: {e}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    json.push(b'\n');
    let written = match &a.output {
        Some(path) => std::fs::write(path, &json).map_err(|e| format!("{path}: {e}")),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&json)
                .and_then(|_| out.flush())
                .map_err(|e| format!("standard output: {e}"))
        }
    };
    if let Err(e) = written {
        eprintln!("wiremap: cannot write the document: {e}");
        return ExitCode::from(EXIT_INTERNAL);
    }
    if let Some(fault) = analysis.fault {
        eprintln!("wiremap: {fault}; the document covers what was read before it");
        return ExitCode::from(EXIT_PARTIAL);
    }
    ExitCode::SUCCESS
}

fn filter(f: FilterArgs) -> ExitCode {
    let Some(linktype) = wiremap::source::linktype_from_name(&f.linktype) else {
        eprintln!("wiremap: unknown link type '{}'", f.linktype);
        return ExitCode::from(EXIT_USAGE);
    };
    let expr = f.expr.join(" ");
    match wiremap::filter::compile(&expr, linktype, f.snaplen) {
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
