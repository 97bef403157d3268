#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
//! Where packets come from: capture files (pcap, pcapng), merged by packet time.
//! The live AF_PACKET source joins here later; both yield [`Packet`]s.

mod file;
mod legacy;
mod reorder;

pub use file::{shown_path, CaptureFile, InputError, ReadOutcome, STDIN};
pub use legacy::Span;
pub use reorder::OrderedFile;

/// One packet as read, before decoding. `data` is what the capture holds; `wire_len` is
/// the length on the wire (larger when the snaplen cut the packet).
#[derive(Clone, Debug, Default)]
pub struct OwnedPacket {
    pub ts_ns: i64,
    pub linktype: u32,
    pub wire_len: u32,
    pub vantage: u16,
    pub data: Vec<u8>,
}

/// A capture position. The document's `sources` has one entry per vantage point.
#[derive(Clone, Debug)]
pub struct Vantage {
    /// Files that make up this vantage point (several only with `--one-vantage`).
    pub files: Vec<String>,
    /// pcapng interface index and name, where the file has interfaces.
    pub interface: Option<(u32, Option<String>)>,
    pub format: &'static str,
    pub linktype: u32,
    pub packets: u64,
    pub bytes: u64,
}

/// Assigns vantage points to (file, interface) pairs.
#[derive(Debug, Default)]
pub struct Vantages {
    pub one_vantage: bool,
    pub list: Vec<Vantage>,
}

impl Vantages {
    pub fn new(one_vantage: bool) -> Self {
        Vantages {
            one_vantage,
            list: Vec::new(),
        }
    }

    /// The vantage index for `interface` (pcapng interface index, 0 for pcap) of file
    /// `path`, whose section `section` (pcapng sections restart interface numbering).
    pub fn assign(
        &mut self,
        path: &str,
        section: u32,
        interface: Option<(u32, Option<String>)>,
        format: &'static str,
        linktype: u32,
    ) -> u16 {
        if self.one_vantage {
            // Files continue one another: interface i of every file is one position.
            let idx = interface.as_ref().map(|(i, _)| *i).unwrap_or(0);
            let found = self.list.iter_mut().enumerate().find(|(_, v)| {
                v.interface.as_ref().map(|(i, _)| *i).unwrap_or(0) == idx && v.linktype == linktype
            });
            if let Some((pos, v)) = found {
                if !v.files.iter().any(|f| f == path) {
                    v.files.push(path.to_string());
                }
                return pos as u16;
            }
        }
        let _ = section;
        self.list.push(Vantage {
            files: vec![path.to_string()],
            interface,
            format,
            linktype,
            packets: 0,
            bytes: 0,
        });
        (self.list.len() - 1).min(u16::MAX as usize) as u16
    }
}

/// The libpcap name of a link type, as tcpdump prints it.
pub fn linktype_name(linktype: u32) -> String {
    match linktype {
        0 => "NULL".into(),
        1 => "EN10MB".into(),
        12 | 101 => "RAW".into(),
        108 => "LOOP".into(),
        113 => "LINUX_SLL".into(),
        228 => "IPV4".into(),
        229 => "IPV6".into(),
        276 => "LINUX_SLL2".into(),
        other => format!("LINKTYPE_{other}"),
    }
}

/// The link type number for a name accepted by `--linktype`.
pub fn linktype_from_name(name: &str) -> Option<u32> {
    Some(match name.to_ascii_uppercase().as_str() {
        "NULL" => 0,
        "EN10MB" | "ETHER" | "ETHERNET" => 1,
        "RAW" => 101,
        "LOOP" => 108,
        "LINUX_SLL" | "SLL" => 113,
        "IPV4" => 228,
        "IPV6" => 229,
        "LINUX_SLL2" | "SLL2" => 276,
        other => return other.parse().ok(),
    })
}
