//! Throughput of `RedisSession` on a pipelined SET/GET workload (100-byte values) and its
//! replies, fed in 1448-byte chunks (one Ethernet MSS) through the caller's re-feed loop.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use protocols::redis::RedisSession;
use protocols::{Direction, Events, Limits, Session};

const PAIRS: usize = 1000;
const CHUNK: usize = 1448;

/// Client and server byte streams of `PAIRS` SET and GET commands and their replies.
fn workload() -> (Vec<u8>, Vec<u8>) {
    let value = [b'v'; 100];
    let mut client = Vec::new();
    let mut server = Vec::new();
    for i in 0..PAIRS {
        let key = format!("key:{i:012}");
        client.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$100\r\n", key.len()).as_bytes(),
        );
        client.extend_from_slice(&value);
        client.extend_from_slice(b"\r\n");
        client.extend_from_slice(
            format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes(),
        );
        server.extend_from_slice(b"+OK\r\n$100\r\n");
        server.extend_from_slice(&value);
        server.extend_from_slice(b"\r\n");
    }
    (client, server)
}

/// The caller's loop: append a chunk to the unconsumed bytes, feed, drop what was consumed.
struct Feeder {
    held: Vec<u8>,
}

impl Feeder {
    fn push(&mut self, s: &mut RedisSession, dir: Direction, chunk: &[u8], out: &mut Events) {
        if self.held.is_empty() {
            let n = s.feed(dir, chunk, out).min(chunk.len());
            self.held.extend_from_slice(&chunk[n..]);
        } else {
            self.held.extend_from_slice(chunk);
            let n = s.feed(dir, &self.held, out).min(self.held.len());
            self.held.drain(..n);
        }
    }
}

fn bench(c: &mut Criterion) {
    let (client, server) = workload();
    let limits = Limits::default();
    let mut group = c.benchmark_group("parse_redis");
    group.throughput(Throughput::Bytes((client.len() + server.len()) as u64));
    group.bench_function("set_get_pipeline_1448", |b| {
        let mut out = Events::with_capacity(64);
        b.iter(|| {
            let mut s = RedisSession::new(&limits);
            let mut fc = Feeder {
                held: Vec::with_capacity(4096),
            };
            let mut fs = Feeder {
                held: Vec::with_capacity(4096),
            };
            let mut events = 0usize;
            let mut cs = client.chunks(CHUNK);
            let mut ss = server.chunks(CHUNK);
            loop {
                let (a, b) = (cs.next(), ss.next());
                if a.is_none() && b.is_none() {
                    break;
                }
                out.clear();
                if let Some(chunk) = a {
                    fc.push(&mut s, Direction::ToServer, chunk, &mut out);
                }
                if let Some(chunk) = b {
                    fs.push(&mut s, Direction::ToClient, chunk, &mut out);
                }
                events += out.len();
            }
            assert_eq!(events, 4 * PAIRS);
            events
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
