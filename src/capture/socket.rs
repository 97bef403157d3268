//! An AF_PACKET socket with its mmap'ed receive ring, set up in the order that never lets
//! an unfiltered packet through: socket(protocol 0: nothing queued yet) → PACKET_VERSION →
//! SO_ATTACH_FILTER → PACKET_RX_RING → mmap → bind(ETH_P_ALL) → PACKET_FANOUT. Features
//! are probed by trying them and falling back on the error, never from the kernel version.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::ring::{Geometry, RingWalker, Version};
use crate::filter::Insn;

const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_RX_RING: libc::c_int = 5;
pub(crate) const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_FANOUT: libc::c_int = 18;
/// The fanout group's program (Linux 4.3+).
const PACKET_FANOUT_DATA: libc::c_int = 22;
const PACKET_MR_PROMISC: u16 = 1;
/// Fanout modes: hash by flow (what captures use), and, for tests only, round-robin and
/// random, which spread every connection over the sockets.
pub const PACKET_FANOUT_HASH: u32 = 0;
pub const PACKET_FANOUT_LB: u32 = 1;
pub const PACKET_FANOUT_RND: u32 = 3;
/// A classic BPF program picks the socket (Linux 4.3+; see `fanout`).
pub const PACKET_FANOUT_CBPF: u32 = 6;
const PACKET_FANOUT_FLAG_DEFRAG: u32 = 0x8000;
const ETH_P_ALL: u16 = 0x0003;
const TPACKET_V2: libc::c_int = 1;
const TPACKET_V3: libc::c_int = 2;
/// Block retire timeout (ms): a partly filled V3 block is handed over after this long.
const RETIRE_BLK_TOV_MS: u32 = 50;

/// A V2 frame ring wakes poll for every frame. At tens of thousands of frames a second a
/// reader that wakes, reads a frame or two and sleeps again spends more time switching in
/// and out than reading (measured: 2 µs a packet at 200 k packets/s, against 1 µs with V3's
/// blocks). So after a pass that read fewer frames than this and left the ring empty, the
/// reader naps before it waits again, and frames gather. V3 hands over whole blocks.
const V2_SPARSE_PASS: usize = 128;
/// The nap: at most this long a frame waits for it.
const V2_NAP: std::time::Duration = std::time::Duration::from_micros(100);
/// No nap on a ring of fewer frames: 256 frames in 100 µs is 2.5 M frames a second, more
/// than a V2 ring is read at, so a nap cannot fill the ring.
const V2_NAP_MIN_FRAMES: usize = 256;

/// Whether a reader should nap after a pass (see [`V2_SPARSE_PASS`]).
fn nap_after(geometry: Geometry, read: usize, ring_empty: bool) -> bool {
    geometry.version == Version::V2
        && geometry.units >= V2_NAP_MIN_FRAMES
        && read > 0
        && read < V2_SPARSE_PASS
        && ring_empty
}

/// Why a capture socket could not be set up: one line for the user.
#[derive(Debug)]
pub enum SetupError {
    /// socket() refused: the process lacks CAP_NET_RAW.
    Permission,
    Interface(String),
    Os(&'static str, io::Error),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Permission => f.write_str(
                "live capture needs the CAP_NET_RAW capability (run as root, or grant it: setcap cap_net_raw+ep wiremap)",
            ),
            SetupError::Interface(e) => f.write_str(e),
            SetupError::Os(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

/// Which ring version to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// V3, else V2 when the kernel refuses V3.
    Auto,
    Only(Version),
}

/// The interface to capture on.
#[derive(Clone, Debug)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    /// libpcap link type of what the socket delivers (SOCK_RAW: the link header as is).
    pub linktype: u32,
    pub loopback: bool,
}

/// tcpdump's name for all interfaces at once.
const ANY: &str = "any";
/// Why `any` is refused (unless an interface has that name).
const ANY_REFUSED: &str = "--interface any (all interfaces at once) is not supported: a packet that crosses several interfaces (a container's veth, a bridge, the uplink) would be counted once on each. Capture on the interface the traffic crosses, one wiremap per interface if several";

/// ARPHRD_ types (linux/if_arp.h) wiremap can decode from a SOCK_RAW packet socket.
const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;
const ARPHRD_NONE: u32 = 0xfffe;

impl Interface {
    pub fn lookup(name: &str) -> Result<Interface, SetupError> {
        let bad = || SetupError::Interface(format!("no such network interface: '{name}'"));
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0']) {
            return Err(bad());
        }
        let c = std::ffi::CString::new(name).map_err(|_| bad())?;
        // SAFETY: c is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index == 0 && name == ANY {
            return Err(SetupError::Interface(ANY_REFUSED.into()));
        }
        if index == 0 {
            return Err(bad());
        }
        let hwtype = std::fs::read_to_string(format!("/sys/class/net/{name}/type"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(ARPHRD_ETHER);
        let linktype = match hwtype {
            ARPHRD_ETHER | ARPHRD_LOOPBACK => crate::decode::linktype::EN10MB,
            ARPHRD_NONE => crate::decode::linktype::RAW,
            other => {
                return Err(SetupError::Interface(format!(
                    "{name}: hardware type {other} is not supported (Ethernet, loopback and raw IP are)"
                )))
            }
        };
        Ok(Interface {
            name: name.to_string(),
            index,
            linktype,
            loopback: hwtype == ARPHRD_LOOPBACK,
        })
    }
}

/// A bound packet socket and its ring.
pub struct PacketSocket {
    fd: OwnedFd,
    map: *mut libc::c_void,
    map_len: usize,
    pub version: Version,
    pub locked: bool,
    pub walker: RingWalker,
}

// SAFETY: the mapping is owned by this socket and used from one thread at a time.
unsafe impl Send for PacketSocket {}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: map/map_len describe our own live mapping; unmapped once.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

fn setsockopt<T>(fd: libc::c_int, level: libc::c_int, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: v points to a live T of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const Insn,
}

/// Attach (or replace) the socket's classic BPF program.
pub fn attach_filter(fd: libc::c_int, prog: &[Insn]) -> io::Result<()> {
    let fprog = SockFprog {
        len: prog.len() as u16,
        filter: prog.as_ptr(),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

#[repr(C)]
struct TpacketReq {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
}

#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

fn request_ring(fd: libc::c_int, g: &Geometry) -> io::Result<()> {
    let u = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    match g.version {
        Version::V2 => setsockopt(
            fd,
            SOL_PACKET,
            PACKET_RX_RING,
            &TpacketReq {
                block_size: u(g.unit_size),
                block_nr: u(g.units),
                frame_size: u(g.unit_size),
                frame_nr: u(g.units),
            },
        ),
        Version::V3 => setsockopt(
            fd,
            SOL_PACKET,
            PACKET_RX_RING,
            &TpacketReq3 {
                block_size: u(g.unit_size),
                block_nr: u(g.units),
                frame_size: u(g.frame_size),
                frame_nr: u(g.unit_size / g.frame_size * g.units),
                retire_blk_tov: RETIRE_BLK_TOV_MS,
                sizeof_priv: 0,
                feature_req_word: 0,
            },
        ),
    }
}

/// What to set up.
pub struct SocketSpec<'a> {
    pub iface: &'a Interface,
    pub want: Want,
    pub snaplen: usize,
    pub ring_bytes: usize,
    /// The program attached before the ring exists (the real filter, or drop-all when a
    /// fanout group is joined first and the real one swapped in afterwards).
    pub program: &'a [Insn],
    pub promisc: bool,
}

impl PacketSocket {
    pub fn open(spec: &SocketSpec<'_>) -> Result<PacketSocket, SetupError> {
        // SAFETY: plain socket(2); protocol 0 so nothing is queued before bind.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => SetupError::Permission,
                _ => SetupError::Os("cannot open a packet socket", e),
            });
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let f = fd.as_raw_fd();
        let versions: &[Version] = match spec.want {
            Want::Auto => &[Version::V3, Version::V2],
            Want::Only(v) => match v {
                Version::V3 => &[Version::V3],
                Version::V2 => &[Version::V2],
            },
        };
        let mut chosen = None;
        let mut filter_attached = false;
        let mut last_err = None;
        for &v in versions {
            let num = match v {
                Version::V2 => TPACKET_V2,
                Version::V3 => TPACKET_V3,
            };
            if let Err(e) = setsockopt(f, SOL_PACKET, PACKET_VERSION, &num) {
                last_err = Some(("PACKET_VERSION refused", e));
                continue;
            }
            if !filter_attached {
                attach_filter(f, spec.program).map_err(|e| {
                    SetupError::Os("cannot attach the filter (SO_ATTACH_FILTER)", e)
                })?;
                filter_attached = true;
            }
            let g = Geometry::for_snaplen(v, spec.snaplen, spec.ring_bytes);
            match request_ring(f, &g) {
                Ok(()) => {
                    chosen = Some(g);
                    break;
                }
                Err(e) => last_err = Some(("PACKET_RX_RING refused", e)),
            }
        }
        let Some(geom) = chosen else {
            let (what, e) =
                last_err.unwrap_or(("no ring", io::Error::from_raw_os_error(libc::EINVAL)));
            return Err(SetupError::Os(what, e));
        };
        let len = geom.total();
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: mapping the ring the kernel just allocated for this socket.
        let mut map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED | libc::MAP_LOCKED,
                f,
                0,
            )
        };
        let mut locked = true;
        if map == libc::MAP_FAILED {
            // Locking needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK: plain is fine.
            locked = false;
            // SAFETY: as above, without MAP_LOCKED.
            map = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, f, 0) };
        }
        if map == libc::MAP_FAILED {
            return Err(SetupError::Os(
                "cannot map the capture ring",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: map is a fresh mapping of exactly geom.total() bytes, page aligned.
        let walker = unsafe { RingWalker::new(map.cast(), geom) };
        let sock = PacketSocket {
            fd,
            map,
            map_len: len,
            version: geom.version,
            locked,
            walker,
        };
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = spec.iface.index as i32;
        // SAFETY: sll is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                f,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(SetupError::Os(
                "cannot bind the packet socket to the interface",
                io::Error::last_os_error(),
            ));
        }
        if spec.promisc {
            let mreq = libc::packet_mreq {
                mr_ifindex: spec.iface.index as i32,
                mr_type: PACKET_MR_PROMISC,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setsockopt(f, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)
                .map_err(|e| SetupError::Os("cannot enable promiscuous mode", e))?;
        }
        Ok(sock)
    }

    pub fn fd(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// Join fanout group `group` in `mode` (PACKET_FANOUT_HASH but in tests), IP fragments
    /// reassembled first. An error means the kernel has no fanout (before 3.1) or refused it.
    pub fn join_fanout(&self, group: u16, mode: u32) -> io::Result<()> {
        let arg: u32 = u32::from(group) | ((mode | PACKET_FANOUT_FLAG_DEFRAG) << 16);
        setsockopt(self.fd(), SOL_PACKET, PACKET_FANOUT, &arg)
    }

    /// Give the fanout group (joined in PACKET_FANOUT_CBPF mode) its program. An error
    /// means the kernel has no program-driven fanout (before 4.3).
    pub fn set_fanout_program(&self, prog: &[Insn]) -> io::Result<()> {
        let fprog = SockFprog {
            len: prog.len() as u16,
            filter: prog.as_ptr(),
        };
        setsockopt(self.fd(), SOL_PACKET, PACKET_FANOUT_DATA, &fprog)
    }

    /// After a pass that read `read` frames: nap if the ring is a V2 one that wakes its
    /// reader too often (see [`V2_SPARSE_PASS`]).
    pub fn settle(&self, read: usize) {
        if nap_after(self.walker.geometry(), read, !self.walker.ready()) {
            std::thread::sleep(V2_NAP);
        }
    }

    /// Wait up to `timeout_ms` for the ring to have something. Before Linux 3.19 a retired
    /// V3 block does not always wake poll, so callers re-check the ring after a timeout
    /// anyway (see `RingWalker::ready`).
    pub fn wait(&self, timeout_ms: i32) {
        if self.walker.ready() {
            return;
        }
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) };
    }
}

/// The program that accepts nothing: attached first when sockets join a fanout group, so
/// no packet is read before every socket of the group is in place.
pub fn drop_all() -> [Insn; 1] {
    [Insn {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0,
    }]
}

/// The program that accepts everything, cut to `snaplen` bytes (the kernel captures the
/// number of bytes a filter returns).
pub fn accept_all(snaplen: u32) -> [Insn; 1] {
    [Insn {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: snaplen,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_interfaces_at_once_is_refused_with_its_reason() {
        let Err(SetupError::Interface(why)) = Interface::lookup("any") else {
            panic!("'any' was accepted");
        };
        assert_eq!(why, ANY_REFUSED);
        let Err(SetupError::Interface(why)) = Interface::lookup("wm-no-such-if") else {
            panic!("a missing interface was accepted");
        };
        assert!(why.contains("no such network interface"), "{why}");
        assert!(Interface::lookup("lo").is_ok());
    }

    #[test]
    fn only_a_sparse_pass_over_a_large_v2_ring_naps() {
        let v2 = Geometry::for_snaplen(Version::V2, 65_600, 64 << 20);
        let v3 = Geometry::for_snaplen(Version::V3, 65_600, 64 << 20);
        assert!(v2.units >= V2_NAP_MIN_FRAMES, "{v2:?}");
        assert!(nap_after(v2, 3, true));
        // Nothing read (the ring is idle: wait blocks anyway), a full pass, frames left.
        assert!(!nap_after(v2, 0, true));
        assert!(!nap_after(v2, V2_SPARSE_PASS, true));
        assert!(!nap_after(v2, 3, false));
        // V3 blocks, and a V2 ring too small to hold what a nap lets in.
        assert!(!nap_after(v3, 3, true));
        let small = Geometry::for_snaplen(Version::V2, 65_600, 4 << 20);
        assert!(small.units < V2_NAP_MIN_FRAMES, "{small:?}");
        assert!(!nap_after(small, 3, true));
    }
}
