//! Capture filters in tcpdump syntax: compiled to classic BPF by libpcap (the reference
//! compiler), executed here by a small interpreter so the per-packet path makes no FFI call
//! and sees the packet's real wire length. The same program is what the live path attaches
//! to its socket, and what `wiremap filter` prints in `tcpdump -d` form.

mod bpf;
mod names;

pub use bpf::{Insn, Program};
pub use names::resolve_names;

/// A filter that cannot be used: one line for the user.
#[derive(Debug)]
pub struct FilterError(pub String);

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Compile `expr` for `linktype` (libpcap LINKTYPE_ number). Host, service and protocol
/// names are resolved from /etc/hosts, /etc/services and /etc/protocols first: a static
/// binary cannot rely on NSS, and libpcap would otherwise ask it.
pub fn compile(expr: &str, linktype: u32) -> Result<Program, FilterError> {
    let resolved = resolve_names(expr, &names::SystemFiles)?;
    let dead = pcap::Capture::dead(pcap::Linktype(linktype as i32))
        .map_err(|e| FilterError(format!("cannot compile for link type {linktype}: {e}")))?;
    let prog = dead.compile(&resolved, true).map_err(|e| {
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

/// Compiled programs per link type, for inputs that mix link types (pcapng interfaces).
pub struct FilterSet {
    expr: String,
    programs: Vec<(u32, Program)>,
}

impl FilterSet {
    pub fn new(expr: &str) -> Self {
        FilterSet { expr: expr.to_string(), programs: Vec::new() }
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// Compile ahead of time for a link type (so errors surface before reading).
    pub fn prepare(&mut self, linktype: u32) -> Result<(), FilterError> {
        if !self.programs.iter().any(|(l, _)| *l == linktype) {
            let p = compile(&self.expr, linktype)?;
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
