//! Protocol detection by payload. Ports are only a tie-breaking hint.

use crate::{Direction, Protocol, Transport};

/// Which side of an exchange the probed bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The bytes are a request: their sender is the client.
    Request,
    /// The bytes are a response or a server greeting: their sender is the server.
    Response,
}

/// What a protocol probe thinks of the first payload bytes of a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Confidently this protocol; the bytes came from the given role.
    Match(Role),
    /// Could be this protocol, but too few bytes to say.
    NeedMore,
    /// Not this protocol.
    No,
}

/// The outcome of [`detect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    Found(Protocol, Role),
    /// Some probe wants more bytes before deciding.
    NeedMore,
    /// No probe recognises these bytes.
    Unknown,
}

/// Detect the protocol of a flow from the first payload bytes seen in one direction.
///
/// `dir` is the caller's current belief about the direction (it may be wrong for
/// connections whose start was not seen); `server_port` is the port believed to be the
/// server's, used only to order probes and break ties between equally plausible matches.
pub fn detect(transport: Transport, dir: Direction, data: &[u8], server_port: u16) -> Detection {
    let _ = dir;
    let mut need_more = false;
    let mut order: [Protocol; 5] = match transport {
        Transport::Udp => [Protocol::Dns; 5],
        Transport::Tcp => [
            Protocol::Http,
            Protocol::Tls,
            Protocol::Redis,
            Protocol::Mysql,
            Protocol::Dns,
        ],
    };
    // Port hint: try the protocol usually found on this port first.
    let hinted = match server_port {
        53 | 5353 => Some(Protocol::Dns),
        3306 => Some(Protocol::Mysql),
        6379 => Some(Protocol::Redis),
        443 | 8443 => Some(Protocol::Tls),
        _ => None,
    };
    if let (Transport::Tcp, Some(h)) = (transport, hinted) {
        if let Some(head) = order
            .iter()
            .position(|p| *p == h)
            .and_then(|pos| order.get_mut(..=pos))
        {
            head.rotate_right(1);
        }
    }
    let probes = if transport == Transport::Udp {
        1
    } else {
        order.len()
    };
    for proto in order.iter().take(probes) {
        let probe = match proto {
            Protocol::Http => crate::http::probe(data),
            Protocol::Dns => crate::dns::probe(transport, data),
            Protocol::Mysql => crate::mysql::probe(data, hinted == Some(Protocol::Mysql)),
            Protocol::Redis => crate::redis::probe(data, hinted == Some(Protocol::Redis)),
            Protocol::Tls => crate::tls::probe(data),
        };
        match probe {
            Probe::Match(role) => return Detection::Found(*proto, role),
            Probe::NeedMore => need_more = true,
            Probe::No => {}
        }
    }
    if need_more {
        Detection::NeedMore
    } else {
        Detection::Unknown
    }
}
