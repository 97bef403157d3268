//! The per-packet path allocates nothing in steady state: analysing twice as many packets
//! of the same long-lived traffic must not allocate more (beyond a small constant for
//! amortised growth). Counted with a global allocator around the real pipeline.

mod common;
use common::*;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Long-lived traffic: keep-alive HTTP, a Redis pipeline connection, a MySQL session, each
/// repeating `rounds` exchanges.
fn capture(rounds: usize, path: &std::path::Path) -> usize {
    let mut http = TcpConv::new(([10, 1, 0, 1], 40000), ([10, 1, 0, 9], 80), (1000, 5000));
    let mut redis = TcpConv::new(([10, 1, 0, 2], 40001), ([10, 1, 0, 9], 6379), (2000, 6000));
    let mut recs = Vec::new();
    for i in 0..rounds {
        http.send(
            true,
            format!(
                "GET /item/{} HTTP/1.1\r\nHost: shop\r\nUser-Agent: t\r\n\r\n",
                i % 7
            )
            .as_bytes(),
        );
        http.send(
            false,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
        );
        redis.send(
            true,
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
        );
        redis.send(false, b"+OK\r\n$5\r\nvalue\r\n");
    }
    http.close();
    redis.close();
    // Interleave the two conversations in time.
    let mut a = http.recs.into_iter();
    let mut b = redis.recs.into_iter();
    loop {
        match (a.next(), b.next()) {
            (None, None) => break,
            (x, y) => recs.extend(x.into_iter().chain(y)),
        }
    }
    for (i, r) in recs.iter_mut().enumerate() {
        r.ts_sec = 1_700_000_000 + (i / 1000) as u32;
        r.ts_usec = (i % 1000) as u32 * 1000;
    }
    write_pcap(path, 1, &recs);
    recs.len()
}

fn allocations_for(path: &std::path::Path) -> (u64, serde_json::Value) {
    let opts = wiremap::pipeline::Options {
        files: vec![path.to_string_lossy().into_owned()],
        filter: None,
        threads: 2,
        one_vantage: false,
        vlan_key: false,
        l7: true,
        records: None,
        limits: wiremap::limits::Limits::default(),
        progress: false,
        lb: Default::default(),
        reader_worker: Default::default(),
    };
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let analysis = wiremap::pipeline::analyze(&opts).expect("analyses");
    let used = ALLOCATIONS.load(Ordering::Relaxed) - before;
    (used, serde_json::to_value(&analysis.document).unwrap())
}

#[test]
fn doubling_the_packets_does_not_add_allocations() {
    let dir = tmpdir("alloc");
    let (small, large) = (dir.join("small.pcap"), dir.join("large.pcap"));
    let n_small = capture(2_000, &small);
    let n_large = capture(4_000, &large);
    // Warm up anything lazily initialised once per process.
    let _ = allocations_for(&small);
    let (a_small, doc_small) = allocations_for(&small);
    let (a_large, doc_large) = allocations_for(&large);
    let req = |d: &serde_json::Value| u(&d["totals"]["l7_requests"]);
    assert_eq!(req(&doc_small), 6_000);
    assert_eq!(req(&doc_large), 12_000);
    let extra = a_large.saturating_sub(a_small);
    let added_packets = (n_large - n_small) as u64;
    println!("{n_small} packets: {a_small} allocations; {n_large} packets: {a_large} allocations; +{extra} for +{added_packets} packets");
    // Amortised growth (a histogram resizing, a Vec doubling) may add a few; one per 100
    // packets would already be a leak of the hot path.
    assert!(
        extra * 100 < added_packets,
        "+{extra} allocations for +{added_packets} packets"
    );
}
