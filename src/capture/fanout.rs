//! The fanout group's program: which socket the kernel gives each packet to.
//!
//! With PACKET_FANOUT_HASH the kernel spreads packets by its own flow hash, which is not
//! the workers' owner function: with two workers about half of all packets reached a worker
//! that does not own their connection and had to be forwarded (copied, queued and merged;
//! measured: `forwarded` 495,190 of 1,000,010 packets at top replay speed). Since Linux 4.3
//! a group can run a classic BPF program instead (PACKET_FANOUT_CBPF): its return value
//! modulo the number of sockets picks the socket. This one computes [`FlowKey::lane_hash`],
//! the function the workers own connections by, so each packet arrives where it belongs.
//!
//! The program reads the network header through the kernel's `SKF_NET_OFF` area (on
//! receive the socket buffer starts there, on transmit at the MAC header) and the EtherType
//! from `skb->protocol` (after the kernel stripped any VLAN tag). Where it cannot see the
//! ports the workers see (IPv6 extension headers, fragments the kernel did not reassemble,
//! tunnels) it hashes what it has: the worker still checks every packet and forwards what is
//! not its own, so a mismatch costs a copy, never a wrong result.
//!
//! [`FlowKey::lane_hash`]: crate::flow::FlowKey::lane_hash

use crate::filter::{Insn, SKF_AD_OFF, SKF_AD_PROTOCOL, SKF_NET_OFF};

// Classic BPF opcodes (linux/filter.h).
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LD_MEM: u16 = 0x60;
const LDX_MEM: u16 = 0x61;
const ST: u16 = 0x02;
const ALU_AND_K: u16 = 0x54;
const ALU_LSH_K: u16 = 0x64;
const ALU_XOR_X: u16 = 0xac;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const RET_A: u16 = 0x16;
const TAX: u16 = 0x07;

/// Offset `n` into the network header.
fn net(n: u32) -> u32 {
    (SKF_NET_OFF as u32).wrapping_add(n)
}

/// One step of the program, jumps by label.
enum Op {
    I(u16, u32),
    /// Conditional jump: code, k, label if true, label if false.
    J(u16, u32, &'static str, &'static str),
    Label(&'static str),
}

use Op::{Label, I, J};

/// `M[1] ^= A` where A holds the next word to fold in.
fn fold_in(ops: &mut Vec<Op>) {
    ops.extend([I(LDX_MEM, 1), I(ALU_XOR_X, 0), I(ST, 1)]);
}

/// A = M[1] ^ (the 16-bit words at the two given loads), returned.
fn ports_and_return(ops: &mut Vec<Op>, first: Op, second: Op) {
    ops.extend([
        first,
        I(ST, 2),
        second,
        I(LDX_MEM, 2),
        I(ALU_XOR_X, 0),
        I(LDX_MEM, 1),
        I(ALU_XOR_X, 0),
        I(RET_A, 0),
    ]);
}

/// Go on at `ports` when the protocol number at network offset `at` is TCP or UDP, else
/// return the addresses' hash; `udp` is a label of its own for the second test.
fn if_tcp_or_udp(ops: &mut Vec<Op>, at: u32, udp: &'static str, ports: &'static str) {
    ops.extend([
        I(LD_B_ABS, net(at)),
        J(JEQ_K, 6, ports, udp),
        Label(udp),
        J(JEQ_K, 17, ports, "addresses"),
        Label(ports),
    ]);
}

fn ops() -> Vec<Op> {
    let mut ops = vec![
        I(LD_W_ABS, (SKF_AD_OFF + SKF_AD_PROTOCOL) as u32),
        J(JEQ_K, 0x0800, "v4", "not_v4"),
        Label("not_v4"),
        J(JEQ_K, 0x86dd, "v6", "other"),
        // IPv4: addresses, then the ports of an unfragmented TCP or UDP datagram.
        Label("v4"),
        I(LD_W_ABS, net(12)),
        I(ST, 1),
        I(LD_W_ABS, net(16)),
    ];
    fold_in(&mut ops);
    if_tcp_or_udp(&mut ops, 9, "v4_udp", "v4_ports");
    ops.extend([
        I(LD_H_ABS, net(6)),
        J(JSET_K, 0x3fff, "addresses", "v4_header"),
        Label("v4_header"),
        I(LD_B_ABS, net(0)),
        I(ALU_AND_K, 0x0f),
        I(ALU_LSH_K, 2),
        I(TAX, 0),
    ]);
    ports_and_return(&mut ops, I(LD_H_IND, net(0)), I(LD_H_IND, net(2)));
    // IPv6: the eight words of both addresses, then the ports when TCP or UDP comes next.
    ops.extend([Label("v6"), I(LD_W_ABS, net(8)), I(ST, 1)]);
    for off in (12..40).step_by(4) {
        ops.push(I(LD_W_ABS, net(off)));
        fold_in(&mut ops);
    }
    if_tcp_or_udp(&mut ops, 6, "v6_udp", "v6_ports");
    ports_and_return(&mut ops, I(LD_H_ABS, net(40)), I(LD_H_ABS, net(42)));
    ops.extend([
        Label("addresses"),
        I(LD_MEM, 1),
        I(RET_A, 0),
        // Not IP: the first socket (nothing to own).
        Label("other"),
        I(RET_K, 0),
    ]);
    ops
}

/// The fanout program (see the module comment).
pub fn program() -> Vec<Insn> {
    let ops = ops();
    let mut at = std::collections::HashMap::new();
    let mut pc = 0usize;
    for op in &ops {
        match op {
            Label(l) => {
                at.insert(*l, pc);
            }
            _ => pc += 1,
        }
    }
    let mut out = Vec::with_capacity(pc);
    for op in &ops {
        let here = out.len();
        // Jumps go forward (labels follow their jumps); a missing label is a bug caught by
        // the tests, and jumps to the next instruction in that case.
        let rel = |l: &str| {
            at.get(l)
                .and_then(|&t| t.checked_sub(here + 1))
                .and_then(|d| u8::try_from(d).ok())
                .unwrap_or(0)
        };
        match op {
            I(code, k) => out.push(Insn {
                code: *code,
                jt: 0,
                jf: 0,
                k: *k,
            }),
            J(code, k, t, f) => out.push(Insn {
                code: *code,
                jt: rel(t),
                jf: rel(f),
                k: *k,
            }),
            Label(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;
    use crate::decode::frames::{self, eth, ipv6};
    use crate::decode::{Decoder, Outcome};
    use crate::filter::{Program, Skb};
    use crate::flow::FlowKey;

    /// Every label a jump names exists and lies ahead of it.
    #[test]
    fn every_jump_lands_on_its_label() {
        let ops = ops();
        let labels: Vec<&str> = ops
            .iter()
            .filter_map(|o| match o {
                Label(l) => Some(*l),
                _ => None,
            })
            .collect();
        let mut seen = Vec::new();
        for o in &ops {
            match o {
                Label(l) => seen.push(*l),
                J(_, _, t, f) => {
                    for l in [t, f] {
                        assert!(labels.contains(l), "{l}");
                        assert!(!seen.contains(l), "{l} is behind its jump");
                    }
                }
                I(..) => {}
            }
        }
        // Short: it runs for every packet the interface sees.
        assert_eq!(Program::new(program()).unwrap().instructions().len(), 70);
    }

    fn tcp(sport: u16, dport: u16) -> Vec<u8> {
        frames::tcp(sport, dport, 1, 0x18, &[], b"GET / HTTP/1.1\r\n\r\n")
    }

    fn udp(sport: u16, dport: u16) -> Vec<u8> {
        frames::udp(sport, dport, &[1, 2, 3, 4])
    }

    fn ipv4(
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        options: usize,
        frag: u16,
        l4: &[u8],
    ) -> Vec<u8> {
        frames::ipv4_with_options(proto, src, dst, 1, frag, options, l4)
    }

    /// The workers' owner hash of what the decoder makes of `frame`.
    fn owner_hash(frame: &[u8]) -> u32 {
        let mut d = Decoder::new(16, 1_000_000_000);
        match d.decode(1, frame, 0) {
            Outcome::Flow(t, _) => {
                let (key, _) = FlowKey::of(&t, 0);
                key.lane_hash()
            }
            other => panic!("not a flow: {other:?}"),
        }
    }

    /// The program, run as the kernel runs it, returns the workers' owner hash for both
    /// directions of TCP and UDP over IPv4 (with and without options) and IPv6, on receive
    /// (the buffer starts at the network header) and on transmit (at the MAC header).
    #[test]
    fn the_kernel_picks_the_socket_the_workers_own_by() {
        let prog = Program::new(program()).unwrap();
        let a4 = [10, 0, 0, 1];
        let b4 = [192, 168, 7, 33];
        let mut a6 = [0u8; 16];
        a6[0] = 0xfd;
        a6[15] = 1;
        let mut b6 = [0x20u8; 16];
        b6[15] = 0x99;
        let mut cases: Vec<(u16, Vec<u8>)> = Vec::new();
        for (sport, dport) in [(40_000u16, 80u16), (80, 40_000), (53, 53), (1, 65_535)] {
            for options in [0, 4, 12] {
                cases.push((0x0800, ipv4(a4, b4, 6, options, 0x4000, &tcp(sport, dport))));
                cases.push((0x0800, ipv4(b4, a4, 6, options, 0, &tcp(dport, sport))));
            }
            cases.push((0x0800, ipv4(a4, b4, 17, 0, 0, &udp(sport, dport))));
            cases.push((0x86dd, ipv6(a6, b6, 6, &tcp(sport, dport))));
            cases.push((0x86dd, ipv6(b6, a6, 17, &udp(dport, sport))));
        }
        let mut distinct = std::collections::HashSet::new();
        for (ethertype, l3) in &cases {
            let frame = eth(*ethertype, l3);
            let want = owner_hash(&frame);
            distinct.insert(want);
            let len = frame.len() as u32;
            let tx = Skb {
                net: 14,
                protocol: *ethertype,
            };
            let rx = Skb {
                net: 0,
                protocol: *ethertype,
            };
            assert_eq!(prog.run_skb(&frame, len, tx), want, "{l3:02x?}");
            assert_eq!(prog.run_skb(&frame[14..], len - 14, rx), want, "{l3:02x?}");
        }
        assert!(distinct.len() >= 6, "the cases differ: {distinct:?}");
        // Not IP: the first socket.
        let arp = eth(0x0806, &[0; 28]);
        let skb = Skb {
            net: 14,
            protocol: 0x0806,
        };
        assert_eq!(prog.run_skb(&arp, arp.len() as u32, skb), 0);
    }

    /// Where the program cannot see ports (a fragment) it returns the addresses' hash; a
    /// packet cut inside its addresses gets the first socket. Both only cost a forward.
    #[test]
    fn what_the_program_cannot_see_is_hashed_on_what_it_can() {
        let prog = Program::new(program()).unwrap();
        let frag = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 17, 0, 0x2000, &udp(5, 6));
        let skb = Skb {
            net: 0,
            protocol: 0x0800,
        };
        assert_eq!(
            prog.run_skb(&frag, frag.len() as u32, skb),
            0x0a00_0001 ^ 0x0a00_0002
        );
        assert_eq!(prog.run_skb(&frag[..15], 15, skb), 0);
    }
}
