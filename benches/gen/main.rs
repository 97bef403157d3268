//! `wiremap-gen`: writes a synthetic but protocol-exact capture for benchmarks and scale tests,
//! and optionally the topology counts it contains, known by construction.
//!
//! Self-contained on purpose: it does not use the wiremap library, so a bug there cannot hide
//! in the expected answer. See `benches/gen/README.md` for the traffic model.

mod pcap;
mod proto;
mod rng;

use clap::Parser;
use pcap::{Out, ACK, FIN, PSH, SYN};
use rng::Rng;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const ABOUT: &str = "Write a synthetic pcap (HTTP/1.1, Redis, MySQL, DNS over UDP and TCP) for benchmarks and scale tests";
const LONG_ABOUT: &str = "\
Write a synthetic pcap for benchmarks and scale tests: K client hosts (10.20.x.y) talk to
HTTP 10.30.0.1:80, Redis 10.30.0.2:6379, MySQL 10.30.0.3:3306 and DNS 10.30.0.4:53 (UDP, and
some TCP). About C connections are open at once and interleaved; every TCP connection has a
full handshake, exact sequence/acknowledgment numbers, 1448-byte segments and a FIN teardown.

Every connection is finished cleanly: once the packets written plus those the open
connections still need reach N, no new connection is opened and the open ones run to
completion. So the file holds at least N packets and fewer than one connection's worth more
(the exact count is printed and written to --expected). The output is a pure function of the
arguments (same seed, same bytes).

--mix gives the share of new connections per protocol: keys http, redis, mysql, dns (split
80 % UDP / 20 % TCP), dns-udp, dns-tcp.";

#[derive(Parser, Debug)]
#[command(name = "wiremap-gen", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Args {
    /// Packets to write (at least; open connections are finished cleanly, see --help)
    #[arg(long, value_name = "N")]
    packets: u64,
    /// Connections open at once
    #[arg(long, value_name = "C", default_value_t = 1000)]
    flows_concurrent: usize,
    /// Client hosts (10.20.0.1, 10.20.0.2, ...), at most 65024
    #[arg(long, value_name = "K", default_value_t = 200)]
    clients: u32,
    /// PRNG seed
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// Share of new connections per protocol
    #[arg(long, default_value = "http=40,redis=25,mysql=20,dns=15")]
    mix: String,
    /// Output pcap file
    #[arg(short = 'o', long, value_name = "FILE")]
    output: PathBuf,
    /// Also write the expected topology counts (JSON) to this file
    #[arg(long, value_name = "FILE")]
    expected: Option<PathBuf>,
    /// Time of the first packet, Unix seconds
    #[arg(long, value_name = "SECS", default_value_t = 1_704_067_200)]
    start: u64,
    /// Mean gap between consecutive packets, microseconds (uniform jitter 1..2*STEP-1)
    #[arg(long, value_name = "US", default_value_t = 10)]
    step_us: u64,

    /// At most this many requests per TCP connection (0: no cap; by default HTTP makes
    /// 1-9, Redis 1-19, MySQL 1-11 and DNS over TCP 1-2). A cap of 1 makes connections of
    /// about 10 packets, so 1 M packets can hold 100 k connections open at once.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_requests: u32,

    /// Each TCP connection makes K times its usual number of requests: long-lived
    /// connections, as from connection pools (applied before --max-requests)
    #[arg(long, value_name = "K", default_value_t = 1)]
    pooled: u32,
}

// Services.
const HTTP: usize = 0;
const REDIS: usize = 1;
const MYSQL: usize = 2;
const DNS_UDP: usize = 3;
const DNS_TCP: usize = 4;
const NSVC: usize = 5;
const SVC_IP: [u32; NSVC] = [
    0x0a1e_0001,
    0x0a1e_0002,
    0x0a1e_0003,
    0x0a1e_0004,
    0x0a1e_0004,
];
const SVC_PORT: [u16; NSVC] = [80, 6379, 3306, 53, 53];
const SVC_PROTO: [&str; NSVC] = ["http", "redis", "mysql", "dns", "dns"];
const SVC_UDP: [bool; NSVC] = [false, false, false, true, false];

// Response codes, as the topology contract names them.
const CODES: [&str; 9] = [
    "200",
    "404",
    "500",
    "OK",
    "ERR 1146",
    "ERR",
    "WRONGTYPE",
    "NOERROR",
    "NXDOMAIN",
];
const C_200: usize = 0;
const C_404: usize = 1;
const C_500: usize = 2;
const C_OK: usize = 3;
const C_ERR1146: usize = 4;
const C_ERR: usize = 5;
const C_WRONGTYPE: usize = 6;
const C_NOERROR: usize = 7;
const C_NXDOMAIN: usize = 8;

const MSS: usize = proto::MSS;
const EPHEMERAL_LO: u16 = 32768;
const EPHEMERAL_HI: u16 = 60999;
const UDP_IDLE_US: u64 = 60_000_000;

#[derive(Default, Clone)]
struct Edge {
    conns: u64,
    requests: u64,
    responses: u64,
    errors: u64,
    codes: [u64; CODES.len()],
    packets: [u64; 2],
    bytes: [u64; 2],
}

impl Edge {
    fn answer(&mut self, code: usize, error: bool) {
        self.responses += 1;
        self.codes[code] += 1;
        self.errors += error as u64;
    }
}

struct Ctx {
    rng: Rng,
    filler: Vec<u8>,
    edges: Vec<Edge>,
    next_port: Vec<u16>,
    dns_seq: Vec<u16>,
    /// (client << 16 | port) of open connections: a port is never reused while open.
    in_use: HashSet<u64>,
    /// (client << 16 | port) -> time of the last DNS/UDP packet on that socket, to count UDP
    /// flows the way the contract does (a 5-tuple idle for 60 s ends its flow).
    udp_last: HashMap<u64, u64>,
    mysql_conn_id: u32,
    insert_id: u64,
    tcp_conns: u64,
    udp_flows: u64,
    /// --max-requests (0: no cap).
    max_requests: u32,
    /// --pooled.
    pooled: u32,
}

fn client_ip(i: u32) -> u32 {
    0x0a14_0000 | ((i / 254) << 8) | (i % 254 + 1)
}

fn ip_str(ip: u32) -> String {
    let b = ip.to_be_bytes();
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Syn,
    SynAck,
    HsAck,
    Data,
    FinC,
    FinS,
    LastAck,
    Done,
}

/// One connection (or UDP flow): TCP state, the message being sent, and the protocol script.
struct Conn {
    svc: usize,
    client: u32,
    cip: u32,
    cport: u16,
    edge: usize,
    c_nxt: u32,
    s_nxt: u32,
    c_ipid: u16,
    s_ipid: u16,
    phase: Phase,
    /// The whole L7 script, built when the connection opens (reused buffer): all messages
    /// back to back, `msgs` holding each one's end offset and sender (true: client).
    script: Vec<u8>,
    msgs: Vec<(usize, bool)>,
    /// The message being sent, the offset of its next byte in `script`, and its sender.
    mi: usize,
    off: usize,
    c2s: bool,
    /// Data segments of the current sender not yet acknowledged by the receiver.
    unacked: u8,
    pkts: u64,
    /// Packets this connection writes in all, known when it opens.
    planned: u64,
    // Protocol script.
    step: u8,
    remaining: u32,
    http: proto::HttpPlan,
    redis: [u8; 5],
    nredis: u8,
    my: (u8, u8, u32),
    dns: proto::DnsPlan,
}

impl Conn {
    fn new() -> Self {
        Conn {
            svc: 0,
            client: 0,
            cip: 0,
            cport: 0,
            edge: 0,
            c_nxt: 0,
            s_nxt: 0,
            c_ipid: 0,
            s_ipid: 0,
            phase: Phase::Done,
            script: Vec::with_capacity(32 * 1024),
            msgs: Vec::with_capacity(64),
            mi: 0,
            off: 0,
            c2s: true,
            unacked: 0,
            pkts: 0,
            planned: 0,
            step: 0,
            remaining: 0,
            http: proto::HttpPlan {
                status: 200,
                post: false,
                res: 0,
                n: 0,
            },
            redis: [0; 5],
            nredis: 0,
            my: (0, 0, 0),
            dns: proto::DnsPlan {
                id: 0,
                nx: false,
                name: 0,
                n: 0,
            },
        }
    }

    fn key(&self) -> u64 {
        (self.client as u64) << 16 | self.cport as u64
    }

    /// (Re)starts this slot as a new connection of `svc` from client `client` and builds its
    /// script; returns the number of packets it will write.
    fn open(&mut self, ctx: &mut Ctx, svc: usize, client: u32, ts_us: u64) -> u64 {
        let r = &mut ctx.rng;
        self.svc = svc;
        self.client = client;
        self.cip = client_ip(client);
        self.edge = client as usize * NSVC + svc;
        loop {
            let p = ctx.next_port[client as usize];
            ctx.next_port[client as usize] = if p >= EPHEMERAL_HI {
                EPHEMERAL_LO
            } else {
                p + 1
            };
            if ctx.in_use.insert((client as u64) << 16 | p as u64) {
                self.cport = p;
                break;
            }
        }
        self.c_nxt = r.next_u32();
        self.s_nxt = r.next_u32();
        self.c_ipid = r.next_u32() as u16;
        self.s_ipid = r.next_u32() as u16;
        self.unacked = 0;
        self.pkts = 0;
        self.step = 0;
        self.remaining = match svc {
            HTTP => r.range(1, 10),
            REDIS => r.range(1, 20),
            MYSQL => r.range(1, 12),
            DNS_TCP => r.range(1, 3),
            _ => 1,
        } as u32;
        if svc != DNS_UDP {
            self.remaining = self.remaining.saturating_mul(ctx.pooled.max(1));
        }
        if ctx.max_requests > 0 {
            self.remaining = self.remaining.min(ctx.max_requests);
        }
        self.script.clear();
        self.msgs.clear();
        while let Some(c2s) = self.next_msg(ctx, ts_us) {
            self.msgs.push((self.script.len(), c2s));
        }
        self.mi = 0;
        self.off = 0;
        self.c2s = true;
        if SVC_UDP[svc] {
            self.phase = Phase::Data;
        } else {
            self.phase = Phase::Syn;
            ctx.edges[self.edge].conns += 1;
            ctx.tcp_conns += 1;
        }
        self.planned = self.count_packets();
        self.planned
    }

    /// The packets `step` will write for this script (mirrors its segmentation and ACKs).
    fn count_packets(&self) -> u64 {
        if SVC_UDP[self.svc] {
            return self.msgs.len() as u64;
        }
        let mut n = 6; // SYN, SYN-ACK, ACK; FIN, FIN, ACK
        let (mut start, mut unacked, mut dir) = (0, 0, true);
        for &(end, c2s) in &self.msgs {
            if c2s != dir {
                unacked = 0;
            }
            dir = c2s;
            let mut off = start;
            while off < end {
                if unacked >= 2 {
                    unacked = 0;
                } else {
                    off = (off + MSS).min(end);
                    unacked += 1;
                }
                n += 1;
            }
            start = end;
        }
        n
    }

    /// Appends the next message of the script to `script` and counts it in the expected
    /// answer; `None` when the script is over. Returns who sends it (true: client).
    fn next_msg(&mut self, ctx: &mut Ctx, ts_us: u64) -> Option<bool> {
        let Ctx {
            rng, filler, edges, ..
        } = ctx;
        let edge = &mut edges[self.edge];
        let m = &mut self.script;
        match (self.svc, self.step) {
            (HTTP, 0) => {
                if self.remaining == 0 {
                    return None;
                }
                self.http = proto::http_plan(rng);
                proto::http_request(m, rng, filler, &self.http);
                edge.requests += 1;
                self.step = 1;
                Some(true)
            }
            (HTTP, _) => {
                proto::http_response(m, rng, filler, &self.http, ts_us / 1_000_000);
                let code = match self.http.status {
                    200 => C_200,
                    404 => C_404,
                    _ => C_500,
                };
                edge.answer(code, self.http.status >= 400);
                self.remaining -= 1;
                self.step = 0;
                Some(false)
            }
            (REDIS, 0) => {
                if self.remaining == 0 {
                    return None;
                }
                self.nredis = if rng.pct(10) { 5 } else { 1 }; // a pipeline: 5 commands in one segment
                for i in 0..self.nredis as usize {
                    self.redis[i] = proto::redis_pick(rng);
                    proto::redis_command(m, rng, filler, self.redis[i]);
                }
                edge.requests += self.nredis as u64;
                self.step = 1;
                Some(true)
            }
            (REDIS, _) => {
                for i in 0..self.nredis as usize {
                    let c = self.redis[i];
                    proto::redis_reply(m, rng, filler, c);
                    match c {
                        proto::R_WRONGTYPE => edge.answer(C_WRONGTYPE, true),
                        proto::R_ERR => edge.answer(C_ERR, true),
                        _ => edge.answer(C_OK, false),
                    }
                }
                self.remaining -= 1;
                self.step = 0;
                Some(false)
            }
            (MYSQL, 0) => {
                ctx.mysql_conn_id = ctx.mysql_conn_id.wrapping_add(1);
                proto::mysql_greeting(m, rng, ctx.mysql_conn_id);
                self.step = 1;
                Some(false)
            }
            (MYSQL, 1) => {
                proto::mysql_login(m, rng);
                self.step = 2;
                Some(true)
            }
            (MYSQL, 2) => {
                proto::mysql_ok(m, 2, 0, 0, b"");
                self.step = 3;
                Some(false)
            }
            (MYSQL, 3) => {
                if self.remaining == 0 {
                    proto::mysql_quit(m); // not a request: no response
                    self.step = 5;
                    return Some(true);
                }
                self.my = (
                    proto::mysql_pick(rng),
                    rng.below(3) as u8,
                    rng.range(1, 99_999) as u32,
                );
                proto::mysql_query(m, self.my.0, self.my.1, self.my.2);
                edge.requests += 1;
                self.step = 4;
                Some(true)
            }
            (MYSQL, 4) => {
                if self.my.0 == proto::Q_INSERT {
                    ctx.insert_id += 1;
                }
                proto::mysql_response(m, rng, self.my.0, self.my.1, self.my.2, ctx.insert_id);
                if self.my.0 == proto::Q_MISSING_TABLE {
                    edge.answer(C_ERR1146, true);
                } else {
                    edge.answer(C_OK, false);
                }
                self.remaining -= 1;
                self.step = 3;
                Some(false)
            }
            (MYSQL, _) => None,
            (_, 0) => {
                if self.remaining == 0 {
                    return None;
                }
                // Ids are a bijection of a per-client counter: unique over 65536 queries of a client.
                let s = &mut ctx.dns_seq[self.client as usize];
                *s = s.wrapping_add(1);
                self.dns = proto::dns_plan(rng, s.wrapping_mul(0x9e37) ^ 0x5a5a);
                proto::dns_query(m, &self.dns, self.svc == DNS_TCP);
                edge.requests += 1;
                self.step = 1;
                Some(true)
            }
            (_, _) => {
                proto::dns_response(m, rng, &self.dns, self.svc == DNS_TCP);
                if self.dns.nx {
                    edge.answer(C_NXDOMAIN, true);
                } else {
                    edge.answer(C_NOERROR, false);
                }
                self.remaining -= 1;
                self.step = 0;
                Some(false)
            }
        }
    }

    /// Moves to the next message of the script, or to teardown after the last.
    fn advance(&mut self) {
        self.mi += 1;
        match self.msgs.get(self.mi) {
            Some(&(_, c2s)) => {
                if c2s != self.c2s {
                    self.unacked = 0; // the new sender's first segment acknowledges everything
                }
                self.c2s = c2s;
            }
            None => {
                self.phase = if SVC_UDP[self.svc] {
                    Phase::Done
                } else {
                    Phase::FinC
                }
            }
        }
    }

    /// One TCP segment from the client (`c2s`) or the server, with payload `msg[a..b]`.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        out: &mut Out,
        edges: &mut [Edge],
        c2s: bool,
        flags: u8,
        mss: bool,
        a: usize,
        b: usize,
    ) -> io::Result<()> {
        let (sip, sport) = (SVC_IP[self.svc], SVC_PORT[self.svc]);
        let len = if c2s {
            self.c_ipid = self.c_ipid.wrapping_add(1);
            let ack = if flags & ACK != 0 { self.s_nxt } else { 0 };
            out.tcp(
                self.cip,
                sip,
                self.cport,
                sport,
                self.c_nxt,
                ack,
                flags,
                64240,
                self.c_ipid,
                mss,
                &self.script[a..b],
            )?
        } else {
            self.s_ipid = self.s_ipid.wrapping_add(1);
            out.tcp(
                sip,
                self.cip,
                sport,
                self.cport,
                self.s_nxt,
                self.c_nxt,
                flags,
                65160,
                self.s_ipid,
                mss,
                &self.script[a..b],
            )?
        };
        let adv = (b - a) as u32 + (flags & (SYN | FIN) != 0) as u32;
        if c2s {
            self.c_nxt = self.c_nxt.wrapping_add(adv);
        } else {
            self.s_nxt = self.s_nxt.wrapping_add(adv);
        }
        let d = (!c2s) as usize;
        let e = &mut edges[self.edge];
        e.packets[d] += 1;
        e.bytes[d] += len as u64;
        self.pkts += 1;
        Ok(())
    }

    /// Emits this connection's next packet; true when that was its last.
    fn step(&mut self, out: &mut Out, ctx: &mut Ctx) -> io::Result<bool> {
        let ts = out.ts_us;
        match self.phase {
            Phase::Syn => {
                self.send(out, &mut ctx.edges, true, SYN, true, 0, 0)?;
                self.phase = Phase::SynAck;
            }
            Phase::SynAck => {
                self.send(out, &mut ctx.edges, false, SYN | ACK, true, 0, 0)?;
                self.phase = Phase::HsAck;
            }
            Phase::HsAck => {
                self.send(out, &mut ctx.edges, true, ACK, false, 0, 0)?;
                self.phase = Phase::Data;
                self.c2s = self.msgs[0].1;
            }
            Phase::Data if SVC_UDP[self.svc] => {
                let key = self.key();
                if self.pkts == 0 {
                    let fresh = match ctx.udp_last.get(&key) {
                        Some(&t) => ts - t >= UDP_IDLE_US,
                        None => true,
                    };
                    if fresh {
                        ctx.edges[self.edge].conns += 1;
                        ctx.udp_flows += 1;
                    }
                }
                let (sip, sport) = (SVC_IP[self.svc], SVC_PORT[self.svc]);
                let (a, b) = (self.off, self.msgs[self.mi].0);
                let len = if self.c2s {
                    self.c_ipid = self.c_ipid.wrapping_add(1);
                    out.udp(
                        self.cip,
                        sip,
                        self.cport,
                        sport,
                        self.c_ipid,
                        &self.script[a..b],
                    )?
                } else {
                    self.s_ipid = self.s_ipid.wrapping_add(1);
                    out.udp(
                        sip,
                        self.cip,
                        sport,
                        self.cport,
                        self.s_ipid,
                        &self.script[a..b],
                    )?
                };
                self.off = b;
                let d = (!self.c2s) as usize;
                let e = &mut ctx.edges[self.edge];
                e.packets[d] += 1;
                e.bytes[d] += len as u64;
                self.pkts += 1;
                ctx.udp_last.insert(key, ts);
                self.advance();
                return Ok(self.phase == Phase::Done);
            }
            Phase::Data => {
                if self.unacked >= 2 {
                    // The receiver acknowledges every second full segment.
                    self.send(out, &mut ctx.edges, !self.c2s, ACK, false, 0, 0)?;
                    self.unacked = 0;
                    return Ok(false);
                }
                let (a, end) = (self.off, self.msgs[self.mi].0);
                let b = (a + MSS).min(end);
                let flags = if b == end { ACK | PSH } else { ACK };
                self.send(out, &mut ctx.edges, self.c2s, flags, false, a, b)?;
                self.off = b;
                self.unacked += 1;
                if b == end {
                    self.advance();
                }
            }
            Phase::FinC => {
                self.send(out, &mut ctx.edges, true, FIN | ACK, false, 0, 0)?;
                self.phase = Phase::FinS;
            }
            Phase::FinS => {
                self.send(out, &mut ctx.edges, false, FIN | ACK, false, 0, 0)?;
                self.phase = Phase::LastAck;
            }
            Phase::LastAck => {
                self.send(out, &mut ctx.edges, true, ACK, false, 0, 0)?;
                self.phase = Phase::Done;
                return Ok(true);
            }
            Phase::Done => return Ok(true),
        }
        Ok(false)
    }
}

/// Cumulative weights per service from "http=40,redis=25,mysql=20,dns=15".
fn parse_mix(s: &str) -> Result<[u64; NSVC], String> {
    let mut w = [0u64; NSVC];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--mix: '{part}' is not NAME=WEIGHT"))?;
        let v: u64 = v
            .trim()
            .parse()
            .map_err(|_| format!("--mix: '{v}' is not a whole number"))?;
        match k.trim() {
            "http" => w[HTTP] += v * 100,
            "redis" => w[REDIS] += v * 100,
            "mysql" => w[MYSQL] += v * 100,
            "dns" => {
                w[DNS_UDP] += v * 80;
                w[DNS_TCP] += v * 20;
            }
            "dns-udp" => w[DNS_UDP] += v * 100,
            "dns-tcp" => w[DNS_TCP] += v * 100,
            other => {
                return Err(format!(
                    "--mix: unknown protocol '{other}' (http, redis, mysql, dns, dns-udp, dns-tcp)"
                ))
            }
        }
    }
    let mut acc = 0;
    for x in &mut w {
        acc += *x;
        *x = acc;
    }
    if acc == 0 {
        return Err("--mix: all weights are zero".into());
    }
    Ok(w)
}

fn rfc3339(us: u64) -> String {
    let s = us / 1_000_000;
    let (y, m, d) = proto::civil((s / 86_400) as i64);
    let t = s % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        t / 3600,
        t / 60 % 60,
        t % 60,
        us % 1_000_000
    )
}

struct Run {
    first_ts: u64,
    last_ts: u64,
    conns_total: u64,
    /// Most connections open at once: below `--flows-concurrent` when N packets cannot
    /// hold that many complete connections (a connection opens only if it fits).
    peak_concurrent: usize,
}

fn generate(a: &Args, mix: &[u64; NSVC], out: &mut Out, ctx: &mut Ctx) -> io::Result<Run> {
    let n = a.packets;
    let c = a.flows_concurrent;
    let mut active: Vec<Conn> = Vec::with_capacity(c);
    let pick = |ctx: &mut Ctx| {
        let x = ctx.rng.below(mix[NSVC - 1]);
        let svc = mix.iter().position(|&cum| x < cum).unwrap();
        (svc, ctx.rng.below(a.clients as u64) as u32)
    };
    // Packets that the open connections still have to write (known exactly: scripts are built
    // when a connection opens). A new connection opens only while written + to_go < N, so the
    // file ends with fewer than one connection's packets beyond N.
    let mut to_go = 0u64;
    let mut conns_total = 0u64;
    let first_ts = out.ts_us;
    while active.len() < c && to_go < n {
        let mut conn = Conn::new();
        let (svc, cl) = pick(ctx);
        to_go += conn.open(ctx, svc, cl, out.ts_us);
        conns_total += 1;
        active.push(conn);
    }
    let peak_concurrent = active.len();
    let jitter = 2 * a.step_us - 1;
    // The client acknowledges the server's FIN as soon as it arrives (its kernel does): left
    // to the random pick, that last ACK came on average C x step after the FIN and, over
    // hundreds of thousands of connections, some came more than 10 s later, past an
    // analyser's linger for closed connections (on the 10 M-packet benchmark capture, 15
    // last ACKs each opened a one-packet connection in wiremap's document).
    let mut urgent: Option<usize> = None;
    loop {
        if active.is_empty() {
            if out.packets >= n {
                break;
            }
            let mut conn = Conn::new();
            let (svc, cl) = pick(ctx);
            to_go += conn.open(ctx, svc, cl, out.ts_us);
            conns_total += 1;
            active.push(conn);
        }
        if out.packets > 0 {
            out.ts_us += 1 + ctx.rng.below(jitter);
        }
        // A connection whose next packet its peer's stack sends at once goes next; any
        // other is picked at random.
        let i = match urgent.take() {
            Some(i) => i,
            None => ctx.rng.below(active.len() as u64) as usize,
        };
        let done = active[i].step(out, ctx)?;
        to_go -= 1;
        if active[i].phase == Phase::LastAck {
            urgent = Some(i);
        }
        if done {
            let conn = &mut active[i];
            assert_eq!(
                conn.pkts, conn.planned,
                "packet plan of a {} connection",
                SVC_PROTO[conn.svc]
            );
            let key = conn.key();
            ctx.in_use.remove(&key);
            if out.packets + to_go < n {
                let (svc, cl) = pick(ctx);
                to_go += active[i].open(ctx, svc, cl, out.ts_us);
                conns_total += 1;
            } else {
                active.swap_remove(i);
            }
        }
    }
    debug_assert_eq!(to_go, 0);
    Ok(Run {
        first_ts,
        last_ts: out.ts_us,
        conns_total,
        peak_concurrent,
    })
}

fn expected_json(a: &Args, out: &Out, ctx: &Ctx, run: &Run) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut rows: Vec<(String, String, &str, &str, &Edge)> = Vec::new();
    for (i, e) in ctx.edges.iter().enumerate() {
        if e.packets[0] + e.packets[1] == 0 {
            continue;
        }
        let (client, svc) = ((i / NSVC) as u32, i % NSVC);
        rows.push((
            ip_str(client_ip(client)),
            format!("{}:{}", ip_str(SVC_IP[svc]), SVC_PORT[svc]),
            if SVC_UDP[svc] { "udp" } else { "tcp" },
            SVC_PROTO[svc],
            e,
        ));
    }
    rows.sort_by(|x, y| (&x.0, &x.1, x.2, x.3).cmp(&(&y.0, &y.1, y.2, y.3)));
    let (mut req, mut resp, mut err) = (0, 0, 0);
    let mut codes_total = [0u64; CODES.len()];
    let edges: Vec<Value> = rows
        .iter()
        .map(|(cl, sv, tr, pr, e)| {
            req += e.requests;
            resp += e.responses;
            err += e.errors;
            let mut codes = Map::new();
            for (k, &v) in CODES.iter().zip(&e.codes) {
                if v > 0 {
                    codes.insert((*k).into(), v.into());
                }
            }
            for (t, v) in codes_total.iter_mut().zip(&e.codes) {
                *t += v;
            }
            let mut o = json!({
                "client": cl, "server": sv, "transport": tr, "protocol": pr,
                "connections": e.conns,
                "packets": {"to_server": e.packets[0], "to_client": e.packets[1]},
                "bytes": {"to_server": e.bytes[0], "to_client": e.bytes[1]},
                "requests": e.requests, "responses": e.responses, "errors": e.errors,
                "codes": codes,
            });
            if *tr == "tcp" {
                o["failed_connections"] = 0.into();
            }
            o
        })
        .collect();
    let mut codes = Map::new();
    for (k, &v) in CODES.iter().zip(&codes_total) {
        if v > 0 {
            codes.insert((*k).into(), v.into());
        }
    }
    let mut per_protocol = Map::new();
    for svc in 0..NSVC {
        let key = format!(
            "{}/{}",
            if SVC_UDP[svc] { "udp" } else { "tcp" },
            SVC_PROTO[svc]
        );
        let (mut c, mut r, mut s, mut e) = (0u64, 0u64, 0u64, 0u64);
        for ed in ctx.edges.iter().skip(svc).step_by(NSVC) {
            c += ed.conns;
            r += ed.requests;
            s += ed.responses;
            e += ed.errors;
        }
        per_protocol.insert(
            key,
            json!({"connections": c, "requests": r, "responses": s, "errors": e}),
        );
    }
    json!({
        "generator": {"name": "wiremap-gen", "version": env!("CARGO_PKG_VERSION")},
        "params": {
            "packets": a.packets, "flows_concurrent": a.flows_concurrent, "clients": a.clients,
            "seed": a.seed, "mix": a.mix, "start": a.start, "step_us": a.step_us,
        },
        "window": {"start": rfc3339(run.first_ts), "end": rfc3339(run.last_ts)},
        "totals": {
            "packets": out.packets,
            "bytes": out.ip_bytes,
            "flows": ctx.tcp_conns + ctx.udp_flows,
            "tcp_connections": ctx.tcp_conns,
            "udp_flows": ctx.udp_flows,
            "failed_connections": 0,
            "l7_requests": req,
            "requests": req,
            "responses": resp,
            "errors": err,
            "codes": codes,
            "other": 0, "undecodable": 0, "truncated": 0,
        },
        "per_protocol": per_protocol,
        "edges": edges,
    })
}

/// Runs the generator; on failure, the exit code and the message.
fn run(a: &Args) -> Result<String, (u8, String)> {
    let usage = |m: String| Err((2, m));
    let mix = match parse_mix(&a.mix) {
        Ok(m) => m,
        Err(e) => return usage(e),
    };
    if a.packets == 0 {
        return usage("--packets must be at least 1".into());
    }
    if a.clients == 0 || a.clients > 254 * 256 {
        return usage("--clients must be in 1..=65024".into());
    }
    if a.flows_concurrent == 0 {
        return usage("--flows-concurrent must be at least 1".into());
    }
    let ports = (EPHEMERAL_HI - EPHEMERAL_LO + 1) as u64;
    if a.flows_concurrent as u64 > a.clients as u64 * ports / 2 {
        return usage(format!(
            "--flows-concurrent {} is too many for {} clients ({} ports each)",
            a.flows_concurrent, a.clients, ports
        ));
    }
    if a.step_us == 0 {
        return usage("--step-us must be at least 1".into());
    }
    let mut rng = Rng::new(a.seed);
    let k = a.clients as usize;
    let next_port = (0..k)
        .map(|_| EPHEMERAL_LO + rng.below(ports) as u16)
        .collect();
    let dns_seq = (0..k).map(|_| rng.next_u32() as u16).collect();
    let mut ctx = Ctx {
        rng,
        filler: proto::filler(),
        edges: vec![Edge::default(); k * NSVC],
        next_port,
        dns_seq,
        in_use: HashSet::with_capacity(a.flows_concurrent * 2),
        udp_last: HashMap::new(),
        mysql_conn_id: 1000,
        insert_id: 0,
        tcp_conns: 0,
        udp_flows: 0,
        max_requests: a.max_requests,
        pooled: a.pooled,
    };
    let t0 = Instant::now();
    let mut out = Out::create(&a.output, a.start * 1_000_000)
        .map_err(|e| (3, format!("{}: {e}", a.output.display())))?;
    let run = generate(a, &mix, &mut out, &mut ctx)
        .and_then(|r| out.flush().map(|_| r))
        .map_err(|e| (1, format!("writing {}: {e}", a.output.display())))?;
    let secs = t0.elapsed().as_secs_f64();
    if let Some(p) = &a.expected {
        let doc = expected_json(a, &out, &ctx, &run);
        let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
        std::fs::write(p, text).map_err(|e| (1, format!("{}: {e}", p.display())))?;
    }
    Ok(format!(
        "{} packets, {} connections ({} TCP, {} UDP flows, at most {} open at once), {:.1} MB in {:.2} s: {:.2} M packets/s, {:.0} MB/s",
        out.packets,
        run.conns_total,
        ctx.tcp_conns,
        ctx.udp_flows,
        run.peak_concurrent,
        out.file_bytes as f64 / 1e6,
        secs,
        out.packets as f64 / secs / 1e6,
        out.file_bytes as f64 / secs / 1e6
    ))
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(summary) => {
            eprintln!("wiremap-gen: {summary}");
            ExitCode::SUCCESS
        }
        Err((code, msg)) => {
            eprintln!("wiremap-gen: {msg}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a classic pcap: (timestamp µs, frame) per record.
    fn records(data: &[u8]) -> Vec<(u64, &[u8])> {
        assert_eq!(&data[..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(u32::from_le_bytes(data[20..24].try_into().unwrap()), 1);
        let (mut v, mut o) = (Vec::new(), 24);
        while o < data.len() {
            let f =
                |i: usize| u32::from_le_bytes(data[o + i..o + i + 4].try_into().unwrap()) as u64;
            let (ts, len) = (f(0) * 1_000_000 + f(4), f(8) as usize);
            assert_eq!(f(8), f(12));
            v.push((ts, &data[o + 16..o + 16 + len]));
            o += 16 + len;
        }
        assert_eq!(o, data.len());
        v
    }

    fn ones_complement_ok(data: &[u8], init: u64) -> bool {
        let mut acc = init;
        for c in data.chunks(2) {
            acc += ((c[0] as u64) << 8) | *c.get(1).unwrap_or(&0) as u64;
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc == 0xffff
    }

    #[test]
    fn capture_matches_its_expected_counts() {
        let dir = std::env::temp_dir().join(format!("wiremap-gen-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (pcap, exp) = (dir.join("t.pcap"), dir.join("t.json"));
        let a = Args::try_parse_from([
            "wiremap-gen",
            "--packets",
            "20000",
            "--flows-concurrent",
            "150",
            "--clients",
            "12",
            "--seed",
            "9",
            "-o",
            pcap.to_str().unwrap(),
            "--expected",
            exp.to_str().unwrap(),
        ])
        .unwrap();
        run(&a).unwrap();
        let data = std::fs::read(&pcap).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&exp).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).ok();

        let recs = records(&data);
        let t = &doc["totals"];
        assert_eq!(recs.len() as u64, t["packets"].as_u64().unwrap());
        assert!(recs.len() >= 20_000 && recs.len() < 20_000 + 2_000);
        let (mut syn, mut synack, mut fin, mut udp, mut ip_bytes) = (0, 0, 0, 0, 0u64);
        for w in recs.windows(2) {
            assert!(w[0].0 < w[1].0, "timestamps increase");
        }
        for (_, f) in &recs {
            assert_eq!(&f[12..14], &[0x08, 0x00]);
            let ip = &f[14..];
            let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            assert_eq!(tot, ip.len());
            ip_bytes += tot as u64;
            assert!(ones_complement_ok(&ip[..20], 0), "IPv4 header checksum");
            let pseudo = ip[12..20]
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]) as u64)
                .sum::<u64>()
                + ip[9] as u64
                + (tot - 20) as u64;
            assert!(ones_complement_ok(&ip[20..], pseudo), "L4 checksum");
            match ip[9] {
                6 => {
                    let fl = ip[33];
                    syn += (fl & SYN != 0 && fl & ACK == 0) as u64;
                    synack += (fl & SYN != 0 && fl & ACK != 0) as u64;
                    fin += (fl & FIN != 0) as u64;
                    assert!(tot - 20 - (ip[32] >> 4) as usize * 4 <= MSS);
                }
                17 => udp += 1,
                p => panic!("protocol {p}"),
            }
        }
        assert_eq!(ip_bytes, t["bytes"].as_u64().unwrap());
        let tcp = t["tcp_connections"].as_u64().unwrap();
        assert_eq!((syn, synack, fin), (tcp, tcp, 2 * tcp));
        assert_eq!(
            udp,
            2 * doc["per_protocol"]["udp/dns"]["requests"].as_u64().unwrap()
        );
        assert_eq!(t["requests"], t["responses"]);
        let mut edge_packets = 0;
        for e in doc["edges"].as_array().unwrap() {
            assert_eq!(e["requests"], e["responses"]);
            edge_packets += e["packets"]["to_server"].as_u64().unwrap()
                + e["packets"]["to_client"].as_u64().unwrap();
            let codes: u64 = e["codes"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum();
            assert_eq!(codes, e["responses"].as_u64().unwrap());
        }
        assert_eq!(edge_packets, recs.len() as u64);
        for p in ["tcp/http", "tcp/redis", "tcp/mysql", "tcp/dns", "udp/dns"] {
            assert!(
                doc["per_protocol"][p]["requests"].as_u64().unwrap() > 0,
                "{p} present"
            );
        }
    }

    #[test]
    fn mix_is_parsed() {
        assert_eq!(parse_mix("http=1").unwrap(), [100, 100, 100, 100, 100]);
        assert_eq!(
            parse_mix("dns=10,redis=1").unwrap(),
            [0, 100, 100, 900, 1100]
        );
        assert!(parse_mix("smtp=3").is_err());
        assert!(parse_mix("http=0").is_err());
    }
}
