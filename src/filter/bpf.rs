#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
//! A classic BPF interpreter with libpcap's `bpf_filter` semantics: loads past the end of
//! the captured bytes reject the packet, division by zero rejects, jumps only go forward
//! (checked once at construction), so every run ends within the program's length.

use std::ffi::CStr;

/// One instruction, as in `struct bpf_insn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A validated program.
#[derive(Clone, Debug)]
pub struct Program {
    insns: Vec<Insn>,
}

const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;

const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;

const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const MSH: u16 = 0xa0;

const MEMWORDS: usize = 16;

extern "C" {
    // libpcap: "(%03d) op operands" for one instruction, as `tcpdump -d` prints it.
    fn bpf_image(p: *const Insn, n: libc::c_int) -> *const libc::c_char;
}

impl Program {
    pub fn new(insns: Vec<Insn>) -> Result<Program, String> {
        if insns.is_empty() || insns.len() > 4096 {
            return Err("filter program is empty or too long".into());
        }
        for (pc, i) in insns.iter().enumerate() {
            let class = i.code & 0x07;
            if class == JMP {
                let op = i.code & 0xf0;
                let targets: [usize; 2] = if op == 0x00 {
                    [pc + 1 + i.k as usize, pc + 1 + i.k as usize]
                } else {
                    [pc + 1 + i.jt as usize, pc + 1 + i.jf as usize]
                };
                if targets.iter().any(|t| *t >= insns.len()) {
                    return Err(format!("filter program jumps out of range at {pc}"));
                }
            }
            let uses_memory =
                matches!(class, ST | STX) || (class == LD || class == LDX) && i.code & 0xe0 == MEM;
            if uses_memory && i.k as usize >= MEMWORDS {
                return Err(format!(
                    "filter program uses scratch memory out of range at {pc}"
                ));
            }
        }
        if insns.last().map(|i| i.code & 0x07) != Some(RET) {
            return Err("filter program does not end with a return".into());
        }
        Ok(Program { insns })
    }

    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// The program in `tcpdump -d` form, one instruction per line.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (n, i) in self.insns.iter().enumerate() {
            // SAFETY: bpf_image reads one instruction and returns a pointer to a static
            // buffer holding a NUL-terminated string; we copy it out before the next call.
            let line = unsafe {
                let p = bpf_image(i as *const Insn, n as libc::c_int);
                if p.is_null() {
                    format!(
                        "({n:03}) code={:#x} jt={} jf={} k={}",
                        i.code, i.jt, i.jf, i.k
                    )
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// Run the program: true if it returns non-zero (the packet is accepted).
    pub fn matches(&self, pkt: &[u8], wire_len: u32) -> bool {
        self.run(pkt, wire_len) != 0
    }

    /// Run the program and return what it returns (the accepted length for a packet filter;
    /// other users of classic BPF, such as seccomp test filters, give it other meanings).
    pub fn run(&self, p: &[u8], wire_len: u32) -> u32 {
        self.run_on(p, wire_len, None)
    }

    /// Run the program as the kernel runs it on a socket buffer (`skb`): besides loads from
    /// the packet, loads at [`SKF_NET_OFF`] + n read byte n of the network header and the
    /// ancillary load at [`SKF_AD_OFF`] + [`SKF_AD_PROTOCOL`] gives the EtherType the
    /// kernel saw (after stripping a VLAN tag). Lets a test run a fanout program.
    pub fn run_skb(&self, p: &[u8], wire_len: u32, skb: Skb) -> u32 {
        self.run_on(p, wire_len, Some(skb))
    }

    fn run_on(&self, p: &[u8], wire_len: u32, skb: Option<Skb>) -> u32 {
        let load = |size: u16, at: u64| -> Option<u32> {
            match skb {
                Some(s) => s.load(p, size, at),
                None => load(p, size, at),
            }
        };
        // libpcap rejects an index past the packet; the kernel adds the two as 32-bit
        // values (a negative k reaches the special areas).
        let indexed = |k: u32, x: u32| -> u64 {
            match skb {
                Some(_) => u64::from(k.wrapping_add(x)),
                None => u64::from(k) + u64::from(x),
            }
        };
        let mut a: u32 = 0;
        let mut x: u32 = 0;
        let mut mem = [0u32; MEMWORDS];
        let mut pc = 0usize;
        // Jumps go forward only, so at most len steps.
        while let Some(i) = self.insns.get(pc) {
            pc += 1;
            let k = i.k;
            match i.code & 0x07 {
                LD => match i.code & 0xe0 {
                    ABS => match load(i.code & 0x18, u64::from(k)) {
                        Some(v) => a = v,
                        None => return 0,
                    },
                    IND => match load(i.code & 0x18, indexed(k, x)) {
                        Some(v) => a = v,
                        None => return 0,
                    },
                    IMM => a = k,
                    MEM => a = word(&mem, k),
                    LEN => a = wire_len,
                    _ => return 0,
                },
                LDX => match i.code & 0xe0 {
                    IMM => x = k,
                    MEM => x = word(&mem, k),
                    LEN => x = wire_len,
                    MSH => match p.get(k as usize) {
                        Some(b) => x = u32::from(b & 0x0f) << 2,
                        None => return 0,
                    },
                    _ => return 0,
                },
                ST => set_word(&mut mem, k, a),
                STX => set_word(&mut mem, k, x),
                ALU => {
                    let v = if i.code & 0x08 != 0 { x } else { k };
                    a = match i.code & 0xf0 {
                        0x00 => a.wrapping_add(v),
                        0x10 => a.wrapping_sub(v),
                        0x20 => a.wrapping_mul(v),
                        0x30 => match a.checked_div(v) {
                            Some(r) => r,
                            None => return 0,
                        },
                        0x40 => a | v,
                        0x50 => a & v,
                        0x60 => a.checked_shl(v).unwrap_or(0),
                        0x70 => a.checked_shr(v).unwrap_or(0),
                        0x80 => a.wrapping_neg(),
                        0x90 => match a.checked_rem(v) {
                            Some(r) => r,
                            None => return 0,
                        },
                        0xa0 => a ^ v,
                        _ => return 0,
                    };
                }
                JMP => {
                    let v = if i.code & 0x08 != 0 { x } else { k };
                    let taken = match i.code & 0xf0 {
                        0x00 => {
                            pc += k as usize;
                            continue;
                        }
                        0x10 => a == v,
                        0x20 => a > v,
                        0x30 => a >= v,
                        0x40 => a & v != 0,
                        _ => return 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                RET => return if i.code & 0x18 == 0x10 { a } else { k },
                MISC => {
                    if i.code & 0xf8 == 0x00 {
                        x = a; // TAX
                    } else {
                        a = x; // TXA
                    }
                }
                _ => return 0,
            }
        }
        0
    }
}

/// Where the kernel's special loads point, for [`Program::run_skb`].
#[derive(Clone, Copy, Debug)]
pub struct Skb {
    /// Offset of the network header in the packet.
    pub net: usize,
    /// `skb->protocol` (host order).
    pub protocol: u16,
}

/// Loads at this offset and above (as a signed 32-bit value) read the network header.
pub const SKF_NET_OFF: i32 = -0x0010_0000;
/// Ancillary loads (kernel metadata) start here.
pub const SKF_AD_OFF: i32 = -0x1000;
/// The ancillary field holding `skb->protocol`.
pub const SKF_AD_PROTOCOL: i32 = 0;

impl Skb {
    fn load(self, p: &[u8], size: u16, at: u64) -> Option<u32> {
        // The kernel adds k and X as 32-bit values and reads negative offsets specially.
        let off = at as u32 as i32;
        if off >= 0 {
            return load(p, size, at);
        }
        if off == SKF_AD_OFF + SKF_AD_PROTOCOL && size == W {
            return Some(u32::from(self.protocol));
        }
        if (SKF_NET_OFF..SKF_AD_OFF).contains(&off) {
            let rel = u64::try_from(off.checked_sub(SKF_NET_OFF)?).ok()?;
            return load(p, size, rel.checked_add(self.net as u64)?);
        }
        None
    }
}

/// Scratch memory word `k` (libpcap's validator refuses k >= MEMWORDS; taken modulo here,
/// so any program stays in bounds).
fn word(mem: &[u32; MEMWORDS], k: u32) -> u32 {
    mem.get(k as usize % MEMWORDS).copied().unwrap_or(0)
}

fn set_word(mem: &mut [u32; MEMWORDS], k: u32, v: u32) {
    if let Some(m) = mem.get_mut(k as usize % MEMWORDS) {
        *m = v;
    }
}

fn load(p: &[u8], size: u16, at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    match size {
        W => p
            .get(at..)?
            .first_chunk::<4>()
            .map(|b| u32::from_be_bytes(*b)),
        H => p
            .get(at..)?
            .first_chunk::<2>()
            .map(|b| u32::from(u16::from_be_bytes(*b))),
        B => p.get(at).map(|b| u32::from(*b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )]
    use super::*;

    fn prog(expr: &str) -> Program {
        super::super::compile(expr, 1, 65535).expect("compiles")
    }

    /// An Ethernet + IPv4 + TCP frame from 10.0.0.1:40000 to 10.0.0.2:80.
    fn frame() -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let mut ip = vec![
            0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let tcp = [
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ];
        ip.extend_from_slice(&tcp);
        f.extend_from_slice(&ip);
        f
    }

    #[test]
    fn port_and_host_filters_match_like_tcpdump() {
        let f = frame();
        assert!(prog("tcp port 80").matches(&f, f.len() as u32));
        assert!(!prog("tcp port 81").matches(&f, f.len() as u32));
        assert!(prog("host 10.0.0.2 and tcp[tcpflags] & tcp-syn != 0").matches(&f, f.len() as u32));
        assert!(!prog("udp").matches(&f, f.len() as u32));
    }

    #[test]
    fn len_uses_the_wire_length_not_the_captured_one() {
        let f = frame();
        assert!(prog("greater 1000").matches(&f, 1500));
        assert!(!prog("greater 1000").matches(&f, f.len() as u32));
    }

    #[test]
    fn loads_past_the_capture_reject() {
        let f = frame();
        assert!(!prog("tcp port 80").matches(&f[..20], 54));
    }

    #[test]
    fn backward_or_out_of_range_jumps_are_refused() {
        let bad = vec![
            Insn {
                code: JMP | 0x10,
                jt: 5,
                jf: 0,
                k: 0,
            },
            Insn {
                code: RET,
                jt: 0,
                jf: 0,
                k: 0,
            },
        ];
        assert!(Program::new(bad).is_err());
    }

    #[test]
    fn dump_matches_tcpdump_form() {
        let d = prog("ip").dump();
        assert_eq!(d.lines().next(), Some("(000) ldh      [12]"));
        assert_eq!(d.lines().count(), 4);
    }
}
