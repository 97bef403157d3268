//! wiremap: service topology from packets.
//!
//! Libraries here, a thin binary in `main.rs` (ripgrep's split): `source` reads captures,
//! `decode` turns frames into TCP/UDP packets, `filter` runs tcpdump-syntax BPF, `flow`
//! tracks connections, `l7` reassembles and parses (with the pure parsers of `protocols`),
//! `pipeline` runs it all on N workers, and `report` merges the deterministic document.
pub mod capture;
pub mod decode;
pub mod entropy;
pub mod filter;
pub mod flow;
pub mod l7;
pub mod limits;
pub mod lvs;
pub mod pipeline;
mod prefetch;
pub mod report;
pub mod source;
