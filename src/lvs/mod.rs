//! Load balancers (LVS NAT and FULLNAT): putting the two legs of one connection back
//! together. The legs have different 5-tuples, so they hash to different workers; the
//! single-threaded reader sees every packet in deterministic time order, so it keeps a small
//! bounded index of leg evidence (`index`), and when it recognises a pair it sends a tag, in
//! order, to the worker that owns the real-server leg. That worker stores the tag on the flow
//! and, when the flow finishes, sums it into the stitched edge (`VIP:vport → RS:rport`)
//! instead of its natural one. `config` reads `ipvsadm -Ln` (`--lvs-config`).

pub mod config;
pub mod index;

use std::net::IpAddr;
use std::sync::Arc;

pub use config::{Cidr, LvsConfig};
pub use index::LegIndex;

use crate::flow::{Endpoint, FlowKey};

/// Evidence bits, in the order the document lists them.
pub mod evidence {
    pub const TOA: u8 = 1;
    pub const ISN: u8 = 2;
    pub const TUPLE: u8 = 4;
    pub const PAYLOAD: u8 = 8;
    pub const VIP_MAP: u8 = 16;
    /// The client address is one of `--lb-local`: the director itself.
    pub const LB_LOCAL: u8 = 32;

    pub const NAMES: [(u8, &str); 6] = [
        (TOA, "toa"),
        (ISN, "isn"),
        (TUPLE, "tuple"),
        (PAYLOAD, "payload"),
        (VIP_MAP, "vip-map"),
        (LB_LOCAL, "lb-local"),
    ];
}

/// How the director forwarded: NAT keeps the client address, FULLNAT replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    Nat,
    FullNat,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Nat => "nat",
            Mode::FullNat => "fullnat",
        }
    }
}

/// What is known about a real-server leg (kept boxed on its flow: most flows have none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stitch {
    /// The virtual service the client connected to.
    pub vip: Option<Endpoint>,
    /// The real client (NAT: the leg's own client; FULLNAT: from the other leg or TOA).
    pub client: Option<IpAddr>,
    /// The director's local address (FULLNAT: the leg's source).
    pub local: Option<IpAddr>,
    pub mode: Mode,
    pub evidence: u8,
    /// The client leg was seen too: this leg's requests are already counted there.
    pub paired: bool,
    /// Seen untranslated on both sides of the director: not load-balanced, whatever
    /// `--lvs-config` says about its server.
    pub direct: bool,
}

impl Stitch {
    pub fn direct() -> Stitch {
        Stitch {
            vip: None,
            client: None,
            local: None,
            mode: Mode::Nat,
            evidence: 0,
            paired: false,
            direct: true,
        }
    }

    /// Combine two pieces of evidence about one leg.
    pub fn merge(&mut self, o: &Stitch) {
        if self.vip.is_none() {
            self.vip = o.vip;
        }
        if self.client.is_none() {
            self.client = o.client;
        }
        if self.local.is_none() {
            self.local = o.local;
        }
        if o.mode == Mode::FullNat {
            self.mode = Mode::FullNat;
        }
        self.evidence |= o.evidence;
        self.paired |= o.paired;
        // A recognised pair outweighs an untranslated sighting.
        self.direct = (self.direct || o.direct) && self.vip.is_none();
    }
}

/// A control record from the reader: apply `stitch` to the flow with this key.
#[derive(Clone, Copy, Debug)]
pub struct Tag {
    pub key: FlowKey,
    pub stitch: Stitch,
}

/// What the user told us about load balancers, shared by the reader and the workers.
#[derive(Clone, Debug, Default)]
pub struct LbOptions {
    pub config: Option<Arc<LvsConfig>>,
    pub lb_local: Vec<Cidr>,
    /// How far apart in packet time two legs may be seen (forwarding delay + clock skew).
    pub window_ns: i64,
}

impl LbOptions {
    pub fn is_local(&self, ip: &IpAddr) -> bool {
        self.lb_local.iter().any(|c| c.contains(ip))
    }
}

/// The edge a finished real-server leg belongs to, when it is not its natural one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbEdge {
    /// The edge's client: a VIP endpoint (`vip_port` set) or an address.
    pub client: IpAddr,
    pub vip_port: Option<u16>,
    pub mode: Mode,
    pub evidence: u8,
    pub real_client: Option<IpAddr>,
    pub local: Option<IpAddr>,
    pub paired: bool,
}

/// Decide where a finished real-server leg goes. `src` opened the connection to `server`;
/// `stitch` is what the reader and the flow's own TOA options said.
pub fn lb_edge(
    stitch: Option<&Stitch>,
    proto: u8,
    src: Endpoint,
    server: Endpoint,
    opts: &LbOptions,
) -> Option<LbEdge> {
    let s = stitch.copied();
    if let Some(s) = s {
        if let Some(vip) = s.vip {
            return Some(LbEdge {
                client: vip.ip,
                vip_port: Some(vip.port),
                mode: s.mode,
                evidence: s.evidence,
                real_client: s.client,
                local: s.local,
                paired: s.paired,
            });
        }
        if s.direct {
            return None;
        }
    }
    let local = opts.is_local(&src.ip);
    let toa = s.and_then(|s| s.client);
    // The user's map of virtual services: names the VIP of a backend seen without its
    // client leg.
    if let Some((vip, mode)) = opts.config.as_ref().and_then(|c| c.vip_of(proto, &server)) {
        let fullnat = mode == Mode::FullNat || local || toa.is_some();
        if fullnat && !local && toa.is_none() && !opts.lb_local.is_empty() {
            // FULLNAT legs come from a director's local address; this one does not.
            return None;
        }
        let mut ev = evidence::VIP_MAP;
        if toa.is_some() {
            ev |= evidence::TOA;
        }
        return Some(LbEdge {
            client: vip.ip,
            vip_port: Some(vip.port),
            mode: if fullnat { Mode::FullNat } else { Mode::Nat },
            evidence: ev,
            real_client: if fullnat { toa } else { Some(src.ip) },
            local: fullnat.then_some(src.ip),
            paired: false,
        });
    }
    if let Some(real) = toa {
        return Some(LbEdge {
            client: real,
            vip_port: None,
            mode: Mode::FullNat,
            evidence: evidence::TOA,
            real_client: Some(real),
            local: Some(src.ip),
            paired: false,
        });
    }
    if local {
        return Some(LbEdge {
            client: src.ip,
            vip_port: None,
            mode: Mode::FullNat,
            evidence: evidence::LB_LOCAL,
            real_client: None,
            local: Some(src.ip),
            paired: false,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        let sa: std::net::SocketAddr = s.parse().unwrap();
        Endpoint {
            ip: sa.ip(),
            port: sa.port(),
        }
    }

    #[test]
    fn a_pair_goes_to_the_vip_edge() {
        let s = Stitch {
            vip: Some(ep("10.0.0.10:80")),
            client: Some("10.0.0.2".parse().unwrap()),
            local: None,
            mode: Mode::Nat,
            evidence: evidence::ISN | evidence::TUPLE,
            paired: true,
            direct: false,
        };
        let e = lb_edge(
            Some(&s),
            6,
            ep("10.0.0.2:40000"),
            ep("10.0.1.11:80"),
            &LbOptions::default(),
        )
        .unwrap();
        assert_eq!(e.client, "10.0.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(e.vip_port, Some(80));
        assert!(e.paired);
    }

    #[test]
    fn toa_alone_names_the_real_client_and_lb_local_the_director() {
        let s = Stitch {
            vip: None,
            client: Some("198.51.100.7".parse().unwrap()),
            local: Some("10.0.8.1".parse().unwrap()),
            mode: Mode::FullNat,
            evidence: evidence::TOA,
            paired: false,
            direct: false,
        };
        let opts = LbOptions::default();
        let e = lb_edge(Some(&s), 6, ep("10.0.8.1:5000"), ep("10.0.1.11:80"), &opts).unwrap();
        assert_eq!(e.client, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(e.vip_port, None);
        assert_eq!(e.local, Some("10.0.8.1".parse().unwrap()));
        assert_eq!(
            lb_edge(None, 6, ep("10.0.8.1:5000"), ep("10.0.1.11:80"), &opts),
            None
        );
        let opts = LbOptions {
            lb_local: vec!["10.0.8.0/24".parse().unwrap()],
            ..LbOptions::default()
        };
        let e = lb_edge(None, 6, ep("10.0.8.1:5000"), ep("10.0.1.11:80"), &opts).unwrap();
        assert_eq!(e.evidence, evidence::LB_LOCAL);
        assert_eq!(
            lb_edge(
                Some(&Stitch::direct()),
                6,
                ep("10.0.8.1:1"),
                ep("10.0.1.11:80"),
                &opts
            ),
            None
        );
    }
}
