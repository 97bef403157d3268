//! The topology document (contract `wiremap.topology/v1`), as serialised. Field order is
//! the struct order; maps are BTreeMaps, so output is byte-stable.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::limits::LimitHits;

pub const SCHEMA: &str = "wiremap.topology/v1";

#[derive(Serialize, Debug)]
pub struct Document {
    pub schema: &'static str,
    pub generator: Generator,
    pub sources: Vec<SourceDoc>,
    pub window: Window,
    pub totals: Totals,
    /// How often each limit was hit (all zero when nothing was cut).
    pub limits: LimitHits,
    pub nodes: Vec<NodeDoc>,
    pub edges: Vec<EdgeDoc>,
}

#[derive(Serialize, Debug)]
pub struct Generator {
    pub name: &'static str,
    pub version: &'static str,
}

#[derive(Serialize, Debug)]
pub struct SourceDoc {
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    /// Every file of this vantage point, when `--one-vantage` joined several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    pub format: &'static str,
    pub linktype: String,
    pub packets: u64,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Live: the PACKET_MMAP ring version in use (2 or 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpacket_version: Option<u8>,
    /// Live: packets the kernel dropped because the ring was full (PACKET_STATISTICS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_drops: Option<u64>,
    /// Live: capture sockets (more than one when the kernel accepted PACKET_FANOUT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<usize>,
    /// Live with fanout: packets a worker read but another owns (its symmetric hash),
    /// forwarded to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<u64>,
}

#[derive(Serialize, Debug)]
pub struct Window {
    pub start: String,
    pub end: String,
}

#[derive(Serialize, Debug, Default, Clone)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    pub l7_requests: u64,
    pub failed_connections: u64,
    pub other: u64,
    pub undecodable: u64,
    pub truncated: u64,
    /// Outgoing copies of loopback packets in cooked captures, skipped.
    pub duplicates: u64,
    /// Packets of a connection seen again at a vantage point other than its first.
    pub other_vantage_packets: u64,
}

#[derive(Serialize, Debug)]
pub struct NodeDoc {
    pub id: String,
    pub ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_connections: Option<u64>,
}

#[derive(Serialize, Debug)]
pub struct Directional {
    pub to_server: u64,
    pub to_client: u64,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: u64,
}

#[derive(Serialize, Debug)]
pub struct ResourceDoc {
    pub resource: String,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Serialize, Debug)]
pub struct TcpDoc {
    pub rtt_us: Option<u64>,
    pub retransmissions: u64,
    pub resets: u64,
    pub missed_bytes: u64,
}

#[derive(Serialize, Debug)]
pub struct EdgeDoc {
    pub client: String,
    pub server: String,
    pub transport: &'static str,
    pub protocol: &'static str,
    pub connections: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_connections: Option<u64>,
    pub packets: Directional,
    pub bytes: Directional,
    pub requests: u64,
    pub responses: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Latency>,
    pub codes: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_resources: Option<Vec<ResourceDoc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpDoc>,
    /// Load-balancer stitching (contract: edges created or re-attributed by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatDoc>,
}

#[derive(Serialize, Debug)]
pub struct NatDoc {
    pub mode: &'static str,
    pub evidence: Vec<&'static str>,
    /// Real client ids (may be empty when only the director's address is known).
    pub clients: Vec<String>,
    /// The director's local addresses (FULLNAT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb_local: Option<Vec<String>>,
}
