//! Capture filters in tcpdump syntax: compiled to classic BPF by libpcap (the reference
//! compiler), executed here by a small interpreter so the per-packet path makes no FFI call
//! and sees the packet's real wire length. The same program is what the live path attaches
//! to its socket, and what `wiremap filter` prints in `tcpdump -d` form.

mod bpf;
mod names;

pub use bpf::{Insn, Program, Skb, SKF_AD_OFF, SKF_AD_PROTOCOL, SKF_NET_OFF};
pub use names::resolve_names;

/// A filter that cannot be used: one line for the user.
#[derive(Debug)]
pub struct FilterError(pub String);

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The snapshot length programs are compiled for when none is given (tcpdump's default).
pub const DEFAULT_SNAPLEN: u32 = 262_144;

/// Compile `expr` for `linktype` (libpcap LINKTYPE_ number) and `snaplen`. Host, service
/// and protocol names are resolved from /etc/hosts, /etc/services and /etc/protocols first:
/// a static binary cannot rely on NSS, and libpcap would otherwise ask it.
///
/// The program is compiled on a savefile handle, exactly as `tcpdump -r FILE` does: libpcap
/// generates different code for a file than for `pcap_open_dead` (DLT_NULL accepts every
/// BSD AF_INET6 value; LINKTYPE_RAW maps to the host's DLT_RAW).
pub fn compile(expr: &str, linktype: u32, snaplen: u32) -> Result<Program, FilterError> {
    let resolved = resolve_names(expr, &names::SystemFiles)?;
    let handle = savefile_handle(linktype, snaplen)
        .map_err(|e| FilterError(format!("cannot compile for link type {linktype}: {e}")))?;
    let prog = handle.compile(&resolved, true).map_err(|e| {
        let msg = e.to_string();
        FilterError(format!("bad filter expression '{expr}': {}", msg.trim()))
    })?;
    let insns = prog
        .get_instructions()
        .iter()
        .map(|i| {
            // `BpfInstruction` is repr(transparent) over libpcap's bpf_insn, whose fields the
            // crate prints as "code jt jf k".
            let s = i.to_string();
            let mut it = s.split(' ').map(|x| x.parse::<u32>().unwrap_or(0));
            Insn {
                code: it.next().unwrap_or(0) as u16,
                jt: it.next().unwrap_or(0) as u8,
                jf: it.next().unwrap_or(0) as u8,
                k: it.next().unwrap_or(0),
            }
        })
        .collect();
    Program::new(insns).map_err(FilterError)
}

/// A libpcap savefile handle for an empty capture of `linktype`, read from a pipe (no
/// temporary file, no system call newer than Linux 2.6).
fn savefile_handle(linktype: u32, snaplen: u32) -> Result<pcap::Capture<pcap::Offline>, String> {
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
    header.extend_from_slice(&2u16.to_ne_bytes());
    header.extend_from_slice(&4u16.to_ne_bytes());
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&snaplen.to_ne_bytes());
    header.extend_from_slice(&linktype.to_ne_bytes());
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe writes two descriptors into the array we own.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: fds[1] is the pipe's write end, open and ours; 24 bytes fit in any pipe buffer.
    let written = unsafe { libc::write(fds[1], header.as_ptr().cast(), header.len()) };
    // SAFETY: closing our own descriptor once.
    unsafe { libc::close(fds[1]) };
    if written != header.len() as isize {
        // SAFETY: as above, for the read end that no one else owns yet.
        unsafe { libc::close(fds[0]) };
        return Err("cannot prepare the filter compiler".into());
    }
    // SAFETY: fds[0] is an open pipe read end that the returned Capture now owns.
    unsafe { pcap::Capture::from_raw_fd(fds[0]) }.map_err(|e| e.to_string())
}

/// Compiled programs per link type, for inputs that mix link types (pcapng interfaces).
pub struct FilterSet {
    expr: String,
    programs: Vec<(u32, Program)>,
}

impl FilterSet {
    pub fn new(expr: &str) -> Self {
        FilterSet {
            expr: expr.to_string(),
            programs: Vec::new(),
        }
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// Compile ahead of time for a link type (so errors surface before reading).
    pub fn prepare(&mut self, linktype: u32) -> Result<(), FilterError> {
        if !self.programs.iter().any(|(l, _)| *l == linktype) {
            let p = compile(&self.expr, linktype, DEFAULT_SNAPLEN)?;
            self.programs.push((linktype, p));
        }
        Ok(())
    }

    /// True if the packet passes. Link types never prepared do not pass.
    pub fn matches(&self, linktype: u32, data: &[u8], wire_len: u32) -> bool {
        match self.programs.iter().find(|(l, _)| *l == linktype) {
            Some((_, p)) => p.matches(data, wire_len),
            None => false,
        }
    }
}
