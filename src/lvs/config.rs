//! `--lvs-config FILE`: the output of `ipvsadm -Ln` (virtual services and their real servers),
//! and `--lb-local CIDR` (the directors' local addresses, which `ipvsadm -Ln` does not show).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use super::Mode;
use crate::flow::Endpoint;

/// How a real server is reached (ipvsadm's "Forward" column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// `Masq`: LVS NAT.
    Masq,
    /// `FullNat` (Alibaba LVS, DPVS).
    FullNat,
    /// `Route` (DR), `Tunnel` (TUN), `Local`: the client address reaches the real server,
    /// addressed to the VIP itself; nothing to re-attribute.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealServer {
    pub addr: Endpoint,
    pub forward: Forward,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub vip: Endpoint,
    pub scheduler: String,
    pub reals: Vec<RealServer>,
}

/// The parsed table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LvsConfig {
    pub services: Vec<Service>,
    /// (proto, real server) -> the VIPs in front of it and how.
    by_real: BTreeMap<(u8, Endpoint), Vec<(Endpoint, Forward)>>,
}

/// Most virtual services and real servers read from one file (a bound on user input too).
const MAX_ENTRIES: usize = 100_000;

impl LvsConfig {
    /// Parse `ipvsadm -Ln` output. Headers, firewall-mark services and blank lines are
    /// skipped; anything else that does not parse is an error naming its line.
    pub fn parse(text: &str) -> Result<LvsConfig, String> {
        let mut cfg = LvsConfig::default();
        let mut current: Option<Service> = None;
        let mut entries = 0usize;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let lineno = n + 1;
            let mut words = line.split_whitespace();
            let Some(first) = words.next() else { continue };
            match first {
                "TCP" | "UDP" | "SCTP" => {
                    if let Some(s) = current.take() {
                        cfg.push(s);
                    }
                    let addr = words
                        .next()
                        .ok_or_else(|| format!("line {lineno}: a service without an address"))?;
                    let vip = parse_endpoint(addr)
                        .ok_or_else(|| format!("line {lineno}: not an address:port: {addr}"))?;
                    let proto = match first {
                        "TCP" => 6,
                        "UDP" => 17,
                        _ => 132,
                    };
                    current = Some(Service {
                        proto,
                        vip,
                        scheduler: words.next().unwrap_or("").to_string(),
                        reals: Vec::new(),
                    });
                    entries += 1;
                }
                "->" => {
                    let addr = words.next().unwrap_or("");
                    if addr == "RemoteAddress:Port" {
                        continue; // the column header
                    }
                    let addr = parse_endpoint(addr)
                        .ok_or_else(|| format!("line {lineno}: not an address:port: {addr}"))?;
                    let forward = match words.next().unwrap_or("") {
                        "Masq" => Forward::Masq,
                        f if f.eq_ignore_ascii_case("fullnat") => Forward::FullNat,
                        "Route" | "Tunnel" | "Local" | "Bypass" => Forward::Other,
                        f => return Err(format!("line {lineno}: unknown forwarding method {f:?}")),
                    };
                    let weight = words
                        .next()
                        .and_then(|w| w.parse().ok())
                        .ok_or_else(|| format!("line {lineno}: no weight"))?;
                    let Some(s) = current.as_mut() else {
                        // A real server under a firewall-mark service (FWM): no VIP to name.
                        continue;
                    };
                    s.reals.push(RealServer {
                        addr,
                        forward,
                        weight,
                    });
                    entries += 1;
                }
                "FWM" => {
                    if let Some(s) = current.take() {
                        cfg.push(s);
                    }
                }
                "IP" | "Prot" => {}
                _ if first.starts_with("persistent") || first.starts_with("pe") => {}
                _ => return Err(format!("line {lineno}: not ipvsadm -Ln output: {line:?}")),
            }
            if entries > MAX_ENTRIES {
                return Err(format!("more than {MAX_ENTRIES} services and real servers"));
            }
        }
        if let Some(s) = current.take() {
            cfg.push(s);
        }
        Ok(cfg)
    }

    fn push(&mut self, s: Service) {
        for r in &s.reals {
            let v = self.by_real.entry((s.proto, r.addr)).or_default();
            if !v.iter().any(|(vip, _)| *vip == s.vip) {
                v.push((s.vip, r.forward));
            }
        }
        self.services.push(s);
    }

    /// The VIP in front of a real server, when exactly one NAT or FULLNAT service names it.
    pub fn vip_of(&self, proto: u8, real: &Endpoint) -> Option<(Endpoint, Mode)> {
        match self.by_real.get(&(proto, *real))?.as_slice() {
            [(vip, Forward::Masq)] => Some((*vip, Mode::Nat)),
            [(vip, Forward::FullNat)] => Some((*vip, Mode::FullNat)),
            _ => None,
        }
    }

    /// Is this endpoint a virtual service?
    pub fn is_vip(&self, proto: u8, ep: &Endpoint) -> bool {
        self.services
            .iter()
            .any(|s| s.proto == proto && s.vip == *ep)
    }

    /// Is this endpoint a real server of some service?
    pub fn is_real(&self, proto: u8, ep: &Endpoint) -> bool {
        self.by_real.contains_key(&(proto, *ep))
    }

    /// The real servers of a VIP (any protocol), as node ids.
    pub fn backends(&self, vip: &Endpoint) -> Vec<Endpoint> {
        let mut v: Vec<Endpoint> = self
            .services
            .iter()
            .filter(|s| s.vip == *vip)
            .flat_map(|s| s.reals.iter().map(|r| r.addr))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `10.0.0.1:80` or `[2001:db8::1]:80`.
fn parse_endpoint(s: &str) -> Option<Endpoint> {
    let sa: std::net::SocketAddr = s.parse().ok()?;
    Some(Endpoint {
        ip: canonical(sa.ip()),
        port: sa.port(),
    })
}

/// IPv4-mapped IPv6 addresses are IPv4 (as the decoder reports them).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// An address block: `10.0.8.0/24`, `fd00::/64`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32u32.saturating_sub(u32::from(self.len)))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(*b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128u32.saturating_sub(u32::from(self.len)))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(*b) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("not an address: {a:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("not a prefix length: {l:?}"))?,
            None => max,
        };
        Ok(Cidr { addr, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        parse_endpoint(s).unwrap()
    }

    // As printed by ipvsadm v1.31 (kernel IPVS) and Alibaba's ipvsadm (FULLNAT).
    const TEXT: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.213.9.10:80 rr
  -> 10.213.1.11:80               Masq    1      0          3
  -> 10.213.2.12:80               Masq    2      1          0
TCP  10.213.9.10:6379 wlc persistent 360
  -> 10.213.1.11:6379             FullNat 1      0          0
UDP  10.213.9.10:53 rr
  -> 10.213.1.11:53               Masq    1      0          4
TCP  [fd00:213:0:9::10]:443 sh
  -> [fd00:213:0:1::11]:8443      FullNat 100    0          0
TCP  10.213.9.20:80 rr
  -> 10.213.3.1:80                Route   1      0          0
FWM  7 rr
  -> 10.213.4.1:80                Masq    1      0          0
";

    #[test]
    fn parses_services_reals_forwarding_and_weights() {
        let c = LvsConfig::parse(TEXT).unwrap();
        assert_eq!(c.services.len(), 5);
        assert_eq!(c.services[0].reals.len(), 2);
        assert_eq!(c.services[0].reals[1].weight, 2);
        assert_eq!(c.services[1].scheduler, "wlc");
        assert_eq!(c.services[2].proto, 17);
        assert_eq!(
            c.vip_of(6, &ep("10.213.2.12:80")),
            Some((ep("10.213.9.10:80"), Mode::Nat))
        );
        assert_eq!(
            c.vip_of(6, &ep("10.213.1.11:6379")),
            Some((ep("10.213.9.10:6379"), Mode::FullNat))
        );
        assert_eq!(
            c.vip_of(6, &ep("[fd00:213:0:1::11]:8443")),
            Some((ep("[fd00:213:0:9::10]:443"), Mode::FullNat))
        );
        // UDP and TCP are separate services
        assert_eq!(c.vip_of(6, &ep("10.213.1.11:53")), None);
        assert!(c.vip_of(17, &ep("10.213.1.11:53")).is_some());
        // DR keeps the VIP as the destination: nothing to re-attribute
        assert_eq!(c.vip_of(6, &ep("10.213.3.1:80")), None);
        // the firewall-mark service has no VIP
        assert_eq!(c.vip_of(6, &ep("10.213.4.1:80")), None);
        assert!(c.is_vip(6, &ep("10.213.9.10:80")));
        assert!(!c.is_vip(17, &ep("10.213.9.10:80")));
        assert_eq!(
            c.backends(&ep("10.213.9.10:80")),
            vec![ep("10.213.1.11:80"), ep("10.213.2.12:80")]
        );
    }

    #[test]
    fn a_real_server_behind_two_vips_is_ambiguous() {
        let c = LvsConfig::parse(
            "TCP  10.0.0.1:80 rr\n  -> 10.0.1.1:80 Masq 1 0 0\nTCP  10.0.0.2:80 rr\n  -> 10.0.1.1:80 Masq 1 0 0\n",
        )
        .unwrap();
        assert_eq!(c.vip_of(6, &ep("10.0.1.1:80")), None);
    }

    #[test]
    fn rejects_what_is_not_ipvsadm_output() {
        assert!(LvsConfig::parse("hello world\n").is_err());
        assert!(LvsConfig::parse("TCP  10.0.0.1 rr\n").is_err());
        assert!(
            LvsConfig::parse("TCP  10.0.0.1:80 rr\n  -> 10.0.1.1:80 Teleport 1 0 0\n").is_err()
        );
        assert!(LvsConfig::parse("TCP  10.0.0.1:80 rr\n  -> 10.0.1.1:80 Masq x 0 0\n").is_err());
        assert_eq!(LvsConfig::parse("").unwrap().services.len(), 0);
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.213.8.0/24".parse().unwrap();
        assert!(c.contains(&"10.213.8.1".parse().unwrap()));
        assert!(!c.contains(&"10.213.9.1".parse().unwrap()));
        assert!(!c.contains(&"fd00::1".parse().unwrap()));
        let c: Cidr = "fd00:213:0:8::/64".parse().unwrap();
        assert!(c.contains(&"fd00:213:0:8::1".parse().unwrap()));
        assert!(!c.contains(&"fd00:213:0:9::1".parse().unwrap()));
        let one: Cidr = "10.0.0.1".parse().unwrap();
        assert_eq!(one.len, 32);
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&"1.2.3.4".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
    }
}
