//! Host, service and protocol names in filter expressions, resolved by wiremap itself from
//! /etc/hosts, /etc/services and /etc/protocols. A static binary must not let libpcap ask
//! NSS (it would load shared modules, or fail, on an old host); a name that is not in those
//! files is refused with a clear message rather than guessed.

use super::FilterError;

/// Where name tables come from (the system files, or a test's strings).
pub trait NameTables {
    fn hosts(&self) -> String;
    fn services(&self) -> String;
    fn protocols(&self) -> String;
}

pub struct SystemFiles;

impl NameTables for SystemFiles {
    fn hosts(&self) -> String {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    }
    fn services(&self) -> String {
        std::fs::read_to_string("/etc/services").unwrap_or_default()
    }
    fn protocols(&self) -> String {
        std::fs::read_to_string("/etc/protocols").unwrap_or_default()
    }
}

/// Words of the pcap-filter language that are not names.
const KEYWORDS: &[&str] = &[
    "dst",
    "src",
    "host",
    "gateway",
    "net",
    "netmask",
    "mask",
    "port",
    "portrange",
    "proto",
    "protochain",
    "arp",
    "rarp",
    "ip",
    "sctp",
    "tcp",
    "udp",
    "icmp",
    "igmp",
    "igrp",
    "pim",
    "vrrp",
    "carp",
    "radio",
    "ip6",
    "icmp6",
    "ah",
    "esp",
    "atalk",
    "aarp",
    "decnet",
    "lat",
    "sca",
    "moprc",
    "mopdl",
    "iso",
    "esis",
    "es-is",
    "isis",
    "is-is",
    "l1",
    "l2",
    "iih",
    "lsp",
    "snp",
    "csnp",
    "psnp",
    "clnp",
    "stp",
    "ipx",
    "netbeui",
    "ether",
    "fddi",
    "tr",
    "wlan",
    "link",
    "ppp",
    "slip",
    "less",
    "greater",
    "byte",
    "broadcast",
    "multicast",
    "and",
    "or",
    "not",
    "vlan",
    "mpls",
    "pppoed",
    "pppoes",
    "geneve",
    "vxlan",
    "lane",
    "llc",
    "metac",
    "bcc",
    "oam",
    "oamf4",
    "oamf4ec",
    "oamf4sc",
    "sc",
    "ilmic",
    "connectmsg",
    "metaconnect",
    "inbound",
    "outbound",
    "ifindex",
    "ifname",
    "on",
    "rnr",
    "rset",
    "srnr",
    "reason",
    "action",
    "subrulenum",
    "ruleset",
    "rulenum",
    "type",
    "subtype",
    "direction",
    "dir",
    "addr1",
    "addr2",
    "addr3",
    "addr4",
    "ra",
    "ta",
    "fisu",
    "lssu",
    "lsu",
    "msu",
    "hfisu",
    "hlssu",
    "hmsu",
    "sio",
    "opc",
    "dpc",
    "sls",
    "hsio",
    "hopc",
    "hdpc",
    "hsls",
    "len",
    "tcpflags",
    "icmptype",
    "icmpcode",
    "icmp6type",
    "icmp6code",
    "tcp-fin",
    "tcp-syn",
    "tcp-rst",
    "tcp-push",
    "tcp-ack",
    "tcp-urg",
    "tcp-ece",
    "tcp-cwr",
    "icmp-echoreply",
    "icmp-unreach",
    "icmp-sourcequench",
    "icmp-redirect",
    "icmp-echo",
    "icmp-routeradvert",
    "icmp-routersolicit",
    "icmp-timxceed",
    "icmp-paramprob",
    "icmp-tstamp",
    "icmp-tstampreply",
    "icmp-ireq",
    "icmp-ireqreply",
    "icmp-maskreq",
    "icmp-maskreply",
    "icmp6-destinationunreach",
    "icmp6-packettoobig",
    "icmp6-timeexceeded",
    "icmp6-parameterproblem",
    "icmp6-echo",
    "icmp6-echoreply",
    "icmp6-multicastlistenerquery",
    "icmp6-multicastlistenerreportv1",
    "icmp6-multicastlistenerdone",
    "icmp6-routersolicit",
    "icmp6-routeradvert",
    "icmp6-neighborsolicit",
    "icmp6-neighboradvert",
    "icmp6-redirect",
    "icmp6-routerrenum",
    "icmp6-nodeinformationquery",
    "icmp6-nodeinformationresponse",
    "icmp6-ineighbordiscoverysolicit",
    "icmp6-ineighbordiscoveryadvert",
    "icmp6-multicastlistenerreportv2",
    "icmp6-homeagentdiscoveryrequest",
    "icmp6-homeagentdiscoveryreply",
    "icmp6-mobileprefixsolicit",
    "icmp6-mobileprefixadvert",
    "icmp6-certpathsolicit",
    "icmp6-certpathadvert",
    "icmp6-multicastrouteradvert",
    "icmp6-multicastroutersolicit",
    "icmp6-multicastrouterterm",
    "mgt",
    "ctl",
    "data",
    "assoc-req",
    "assoc-resp",
    "reassoc-req",
    "reassoc-resp",
    "probe-req",
    "probe-resp",
    "beacon",
    "atim",
    "disassoc",
    "auth",
    "deauth",
    "ps-poll",
    "rts",
    "cts",
    "ack",
    "cf-end",
    "cf-end-ack",
    "data-cf-ack",
    "data-cf-poll",
    "data-cf-ack-poll",
    "null",
    "cf-ack",
    "cf-poll",
    "cf-ack-poll",
    "qos-data",
    "qos-data-cf-ack",
    "qos-data-cf-poll",
    "qos-data-cf-ack-poll",
    "qos",
    "qos-cf-poll",
    "qos-cf-ack-poll",
    "tods",
    "fromds",
    "dstods",
    "nods",
    "ip6multicast",
    "ip6broadcast",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Host,
    Port,
    Proto,
    Net,
    Ether,
}

/// Rewrite `expr` with names replaced by numbers. Everything else is kept byte for byte.
pub fn resolve_names(expr: &str, tables: &dyn NameTables) -> Result<String, FilterError> {
    let mut out = String::with_capacity(expr.len());
    let mut ctx = Context::Host;
    let mut hosts: Option<String> = None;
    let mut services: Option<String> = None;
    let mut protocols: Option<String> = None;
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let word_char = |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | ':');
        if c == '\\' {
            // An escaped keyword (`proto \tcp`) is passed through as it is.
            let start = i;
            i += 1;
            while i < chars.len() && word_char(chars[i]) {
                i += 1;
            }
            out.extend(&chars[start..i]);
            continue;
        }
        if !word_char(c) {
            out.push(c);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() {
            let ch = chars[i];
            // A hyphen belongs to a word only between letters (tcp-syn, my-host), so that
            // `len-20` stays arithmetic.
            let hyphen = ch == '-' && chars.get(i + 1).is_some_and(|n| n.is_ascii_alphabetic());
            if word_char(ch) || hyphen {
                i += 1;
            } else {
                break;
            }
        }
        let word: String = chars[start..i].iter().collect();
        let lower = word.to_ascii_lowercase();
        if KEYWORDS.contains(&lower.as_str()) {
            ctx = match lower.as_str() {
                "host" | "gateway" => Context::Host,
                "port" | "portrange" => Context::Port,
                "proto" | "protochain" => Context::Proto,
                "net" => Context::Net,
                "ether" => Context::Ether,
                "src" | "dst" => {
                    if ctx == Context::Ether {
                        Context::Ether
                    } else {
                        Context::Host
                    }
                }
                "tcp" | "udp" | "sctp" | "ip" | "ip6" | "and" | "or" | "not" => ctx,
                _ => Context::Host,
            };
            out.push_str(&word);
            continue;
        }
        let numeric = word.starts_with(|ch: char| ch.is_ascii_digit()) || word.contains(':');
        if numeric {
            out.push_str(&word);
            continue;
        }
        let replacement = match ctx {
            Context::Host => {
                let table = hosts.get_or_insert_with(|| tables.hosts());
                lookup_host(table, &word).ok_or_else(|| {
                    FilterError(format!(
                        "host name '{word}' is not in /etc/hosts (wiremap resolves names only from /etc/hosts; use an address)"
                    ))
                })?
            }
            Context::Port => {
                let table = services.get_or_insert_with(|| tables.services());
                lookup_service(table, &word).ok_or_else(|| {
                    FilterError(format!(
                        "service name '{word}' is not in /etc/services (use a port number)"
                    ))
                })?
            }
            Context::Proto => {
                let table = protocols.get_or_insert_with(|| tables.protocols());
                lookup_protocol(table, &word).ok_or_else(|| {
                    FilterError(format!(
                        "protocol name '{word}' is not in /etc/protocols (use a protocol number)"
                    ))
                })?
            }
            Context::Net | Context::Ether => {
                return Err(FilterError(format!(
                    "'{word}': network and Ethernet names are not resolved (wiremap does not read /etc/networks or /etc/ethers); use an address"
                )))
            }
        };
        out.push_str(&replacement);
    }
    Ok(out)
}

fn lookup_host(table: &str, name: &str) -> Option<String> {
    for line in table.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut f = line.split_whitespace();
        let Some(addr) = f.next() else { continue };
        if f.any(|n| n.eq_ignore_ascii_case(name)) && addr.parse::<std::net::IpAddr>().is_ok() {
            return Some(addr.to_string());
        }
    }
    None
}

fn lookup_service(table: &str, name: &str) -> Option<String> {
    for line in table.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut f = line.split_whitespace();
        let (Some(svc), Some(port_proto)) = (f.next(), f.next()) else {
            continue;
        };
        let port = port_proto.split('/').next().unwrap_or("");
        if (svc.eq_ignore_ascii_case(name) || f.any(|a| a.eq_ignore_ascii_case(name)))
            && port.parse::<u16>().is_ok()
        {
            return Some(port.to_string());
        }
    }
    None
}

fn lookup_protocol(table: &str, name: &str) -> Option<String> {
    for line in table.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut f = line.split_whitespace();
        let (Some(proto), Some(num)) = (f.next(), f.next()) else {
            continue;
        };
        if (proto.eq_ignore_ascii_case(name) || f.any(|a| a.eq_ignore_ascii_case(name)))
            && num.parse::<u8>().is_ok()
        {
            return Some(num.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl NameTables for Fake {
        fn hosts(&self) -> String {
            "127.0.0.1 localhost\n10.1.2.3 db.internal db # primary\n".into()
        }
        fn services(&self) -> String {
            "http 80/tcp www # WorldWideWeb\nmysql 3306/tcp\ndomain 53/udp\n".into()
        }
        fn protocols(&self) -> String {
            "ospf 89 OSPFIGP\n".into()
        }
    }

    #[test]
    fn names_become_numbers_and_keywords_stay() {
        let r = resolve_names("tcp port http and host db or src port 3306", &Fake).unwrap();
        assert_eq!(r, "tcp port 80 and host 10.1.2.3 or src port 3306");
        let r = resolve_names("port www or mysql", &Fake).unwrap();
        assert_eq!(r, "port 80 or 3306");
        assert_eq!(
            resolve_names("ip proto ospf", &Fake).unwrap(),
            "ip proto 89"
        );
        assert_eq!(resolve_names("proto \\tcp", &Fake).unwrap(), "proto \\tcp");
    }

    #[test]
    fn arithmetic_addresses_and_flags_are_untouched() {
        let e = "ip[2:2]-20 > 0 and tcp[tcpflags] & (tcp-syn|tcp-ack) != 0 and host fe80::1";
        assert_eq!(resolve_names(e, &Fake).unwrap(), e);
        let e = "ether host aa:bb:cc:dd:ee:ff and len-20 > 100";
        assert_eq!(resolve_names(e, &Fake).unwrap(), e);
    }

    #[test]
    fn unknown_names_are_refused_clearly() {
        let e = resolve_names("host nosuchhost", &Fake).unwrap_err();
        assert!(
            e.0.contains("nosuchhost") && e.0.contains("/etc/hosts"),
            "{}",
            e.0
        );
        let e = resolve_names("port nosuchsvc", &Fake).unwrap_err();
        assert!(e.0.contains("/etc/services"));
    }
}
