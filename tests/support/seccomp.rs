//! `wiremap-seccomp`: run a command as if on an older kernel (a test tool, not part of the
//! product; it lives under tests/ for that reason and is a `[[bin]]` only so that cargo builds
//! it and integration tests find it through `CARGO_BIN_EXE_wiremap-seccomp`).
//!
//! ```text
//! wiremap-seccomp PROFILE -- COMMAND [ARGS...]
//! wiremap-seccomp --print PROFILE
//! ```
//!
//! It sets `PR_SET_NO_NEW_PRIVS`, installs a seccomp filter (classic BPF over `struct
//! seccomp_data`) and execs COMMAND; the filter survives exec and is inherited by every thread
//! and child. Profiles:
//!
//! * `no-fanout-no-v3` — a kernel before 3.1: `setsockopt(SOL_PACKET, PACKET_FANOUT)` and
//!   `setsockopt(SOL_PACKET, PACKET_RX_RING)` with a `tpacket_req3`-sized argument (28 bytes)
//!   fail with EINVAL, as a kernel without fanout or TPACKET_V3 answers. A 16-byte
//!   `tpacket_req` (V1/V2) still gets a ring.
//! * `linux-3.10` — the system-call surface of Linux 3.10 (CentOS 7): every x86-64 system call
//!   numbered 314 or above (sched_setattr, getrandom 318, statx 332, clone3 435, ...) fails
//!   with ENOSYS, which is what 3.10 answers to a number it does not know.
//!
//! Both profiles first check that the call uses the x86-64 ABI and kill the process when it
//! does not: system-call numbers are per ABI (an `int 0x80` i386 call 54 is not setsockopt),
//! so letting another ABI through would let a call reach the feature the profile is meant to
//! refuse, and the test would prove nothing. An x86-64 binary never makes such calls, so the
//! kill only fires on a real surprise, and loudly.
//!
//! Only arguments passed as `int` are compared, on their low 32 bits: the kernel truncates
//! `int` arguments, so a check on the full 64 bits could be dodged with garbage above them.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// `struct sock_filter` is `struct bpf_insn`: wiremap's own type, so the unit tests can run
/// these programs through wiremap's classic BPF interpreter too.
use wiremap::filter::Insn;

// Classic BPF opcodes used here (linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

// struct seccomp_data { u32 nr @0; u32 arch @4; u64 ip @8; u64 args[6] @16 } (little-endian:
// an argument's low word is at its own offset).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg(i: u32) -> u32 {
    16 + 8 * i
}

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

const NR_SETSOCKOPT: u32 = 54;
/// Linux 3.10's last x86-64 system call is 313 (finit_module).
const FIRST_NR_AFTER_3_10: u32 = 314;
const SOL_PACKET: u32 = 263;
const PACKET_RX_RING: u32 = 5;
const PACKET_FANOUT: u32 = 18;
/// sizeof(struct tpacket_req3); tpacket_req (V1/V2) is 16.
const TPACKET_REQ3_LEN: u32 = 28;

const EINVAL: u32 = libc::EINVAL as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;

const PROFILES: [&str; 2] = ["no-fanout-no-v3", "linux-3.10"];

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// The filter for a profile, or None for an unknown name.
fn program(profile: &str) -> Option<Vec<Insn>> {
    Some(match profile {
        "no-fanout-no-v3" => vec![
            /* 0 */ stmt(LD_W_ABS, OFF_ARCH),
            /* 1 */ jump(JEQ_K, AUDIT_ARCH_X86_64, 0, 11), // else -> 13 kill
            /* 2 */ stmt(LD_W_ABS, OFF_NR),
            /* 3 */ jump(JEQ_K, NR_SETSOCKOPT, 0, 7), // else -> 11 allow
            /* 4 */ stmt(LD_W_ABS, off_arg(1)), // level
            /* 5 */ jump(JEQ_K, SOL_PACKET, 0, 5), // else -> 11 allow
            /* 6 */ stmt(LD_W_ABS, off_arg(2)), // optname
            /* 7 */ jump(JEQ_K, PACKET_FANOUT, 4, 0), // -> 12 EINVAL
            /* 8 */ jump(JEQ_K, PACKET_RX_RING, 0, 2), // else -> 11 allow
            /* 9 */ stmt(LD_W_ABS, off_arg(4)), // optlen
            /* 10 */ jump(JEQ_K, TPACKET_REQ3_LEN, 1, 0), // -> 12 EINVAL, else 11 allow
            /* 11 */ stmt(RET_K, SECCOMP_RET_ALLOW),
            /* 12 */ stmt(RET_K, SECCOMP_RET_ERRNO | EINVAL),
            /* 13 */ stmt(RET_K, SECCOMP_RET_KILL_PROCESS),
        ],
        "linux-3.10" => vec![
            /* 0 */ stmt(LD_W_ABS, OFF_ARCH),
            /* 1 */ jump(JEQ_K, AUDIT_ARCH_X86_64, 0, 4), // else -> 6 kill
            /* 2 */ stmt(LD_W_ABS, OFF_NR),
            /* 3 */ jump(JGE_K, FIRST_NR_AFTER_3_10, 1, 0), // -> 5 ENOSYS, else 4 allow
            /* 4 */ stmt(RET_K, SECCOMP_RET_ALLOW),
            /* 5 */ stmt(RET_K, SECCOMP_RET_ERRNO | ENOSYS),
            /* 6 */ stmt(RET_K, SECCOMP_RET_KILL_PROCESS),
        ],
        _ => return None,
    })
}

/// Install `prog` for this thread and everything it execs or spawns from now on.
///
/// Only raw system calls, no allocation: the unit tests call it in a forked child of a
/// multi-threaded process.
fn install(prog: &[Insn]) -> Result<(), String> {
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "prctl(PR_SET_NO_NEW_PRIVS): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fprog points at `prog`, which outlives the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(format!("seccomp(SECCOMP_SET_MODE_FILTER): {err}"));
    }
    // seccomp(2) itself is 3.17 (number 317): under the linux-3.10 profile it is refused, and
    // 3.5's prctl form installs the same filter (so profiles can be stacked).
    // SAFETY: as above.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(format!(
            "prctl(PR_SET_SECCOMP): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The program in `tcpdump -d` style, for `--print`.
fn dump(prog: &[Insn]) -> String {
    let mut out = String::new();
    for (n, i) in prog.iter().enumerate() {
        let line = match i.code {
            LD_W_ABS => format!("({n:03}) ld       [{}]", i.k),
            JEQ_K | JGE_K => format!(
                "({n:03}) {}      #{:#x}          jt {}\tjf {}",
                if i.code == JEQ_K { "jeq" } else { "jge" },
                i.k,
                n + 1 + usize::from(i.jt),
                n + 1 + usize::from(i.jf)
            ),
            RET_K => format!("({n:03}) ret      #{:#x}", i.k),
            _ => format!("({n:03}) code={:#x} k={:#x}", i.code, i.k),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: wiremap-seccomp PROFILE -- COMMAND [ARGS...]\n       wiremap-seccomp --print PROFILE\nprofiles: {}",
        PROFILES.join(", ")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, profile] if flag == "--print" => match program(profile) {
            Some(p) => {
                print!("{}", dump(&p));
                ExitCode::SUCCESS
            }
            None => usage(),
        },
        [profile, sep, cmd, rest @ ..] if sep == "--" => {
            let Some(prog) = program(profile) else {
                return usage();
            };
            if let Err(e) = install(&prog) {
                eprintln!("wiremap-seccomp: {e}");
                return ExitCode::from(1);
            }
            // exec only returns on failure.
            let err = Command::new(cmd).args(rest).exec();
            eprintln!("wiremap-seccomp: cannot run {cmd}: {err}");
            ExitCode::from(127)
        }
        _ => usage(),
    }
}

#[cfg(test)]
mod tests {
    //! Two independent checks: wiremap's cBPF interpreter (every branch, including the
    //! foreign-ABI one no x86-64 process can reach), and the real kernel (a forked child
    //! installs the filter and reports the errno of probe calls).
    use super::*;
    use wiremap::filter::Program;

    /// seccomp_data as wiremap's interpreter reads it: its word loads are big-endian (network
    /// order), the kernel's are native, so each 32-bit word is stored big-endian here.
    fn data(nr: u32, arch: u32, args: [u64; 6]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&nr.to_be_bytes());
        d.extend_from_slice(&arch.to_be_bytes());
        d.extend_from_slice(&[0; 8]);
        for a in args {
            d.extend_from_slice(&(a as u32).to_be_bytes());
            d.extend_from_slice(&((a >> 32) as u32).to_be_bytes());
        }
        d
    }

    fn verdict(profile: &str, nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let prog = Program::new(program(profile).unwrap()).expect("a valid classic BPF program");
        let d = data(nr, arch, args);
        prog.run(&d, d.len() as u32)
    }

    const X86: u32 = AUDIT_ARCH_X86_64;
    const I386: u32 = 0x4000_0003;

    #[test]
    fn interpreter_no_fanout_no_v3() {
        let p = "no-fanout-no-v3";
        let einval = SECCOMP_RET_ERRNO | EINVAL;
        // setsockopt(fd, SOL_PACKET, PACKET_FANOUT, &arg, 4)
        assert_eq!(verdict(p, 54, X86, [3, 263, 18, 0x1000, 4, 0]), einval);
        // PACKET_RX_RING with tpacket_req3 (28) refused, with tpacket_req (16) allowed
        assert_eq!(verdict(p, 54, X86, [3, 263, 5, 0x1000, 28, 0]), einval);
        assert_eq!(
            verdict(p, 54, X86, [3, 263, 5, 0x1000, 16, 0]),
            SECCOMP_RET_ALLOW
        );
        // int arguments compare on their low word: garbage above it does not dodge the check
        assert_eq!(
            verdict(p, 54, X86, [3, 0xdead_0000_0000_0107, 18, 0, 4, 0]),
            einval
        );
        // PACKET_VERSION, another level, another call: allowed
        assert_eq!(
            verdict(p, 54, X86, [3, 263, 10, 0x1000, 4, 0]),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(
            verdict(p, 54, X86, [3, 1, 18, 0x1000, 4, 0]),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(
            verdict(p, 55, X86, [3, 263, 18, 0x1000, 4, 0]),
            SECCOMP_RET_ALLOW
        );
        // another ABI is killed, whatever the call
        assert_eq!(
            verdict(p, 54, I386, [3, 263, 18, 0, 4, 0]),
            SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(verdict(p, 1, I386, [0; 6]), SECCOMP_RET_KILL_PROCESS);
    }

    #[test]
    fn interpreter_linux_3_10() {
        let p = "linux-3.10";
        let enosys = SECCOMP_RET_ERRNO | ENOSYS;
        for nr in [0, 54, 59, 231, 313] {
            assert_eq!(verdict(p, nr, X86, [0; 6]), SECCOMP_RET_ALLOW, "nr {nr}");
        }
        for nr in [314, 318, 332, 334, 435, 439, 0x4000_0000 | 54] {
            assert_eq!(verdict(p, nr, X86, [0; 6]), enosys, "nr {nr}");
        }
        assert_eq!(verdict(p, 0, I386, [0; 6]), SECCOMP_RET_KILL_PROCESS);
    }

    #[test]
    fn unknown_profile_and_dump() {
        assert!(program("linux-2.6").is_none());
        let d = dump(&program("linux-3.10").unwrap());
        assert!(d.contains("jge      #0x13a"), "{d}");
        assert_eq!(d.lines().count(), 7);
    }

    fn errno_of(rc: libc::c_long) -> i32 {
        if rc < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    }

    /// Run `probes` in a forked child, under `profile` when given; the errnos (0 = success)
    /// come back through a pipe. The child makes raw system calls only (the parent is
    /// multi-threaded, so the child must not allocate or take locks).
    fn in_child<const N: usize>(profile: Option<&str>, probes: fn() -> [i32; N]) -> [i32; N] {
        let prog = profile.map(|p| program(p).unwrap());
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child below only makes system calls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            if let Some(p) = &prog {
                if install(p).is_err() {
                    // SAFETY: _exit has no preconditions.
                    unsafe { libc::_exit(99) };
                }
            }
            let out = probes();
            // SAFETY: out is N i32s; _exit has no preconditions.
            unsafe {
                libc::write(fds[1], out.as_ptr().cast(), std::mem::size_of_val(&out));
                libc::_exit(0);
            }
        }
        // SAFETY: closing our copy of the write end.
        unsafe { libc::close(fds[1]) };
        let mut out = [0i32; N];
        // SAFETY: reading at most size_of_val(out) bytes into out.
        let n = unsafe { libc::read(fds[0], out.as_mut_ptr().cast(), std::mem::size_of_val(&out)) };
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe {
            libc::close(fds[0]);
            libc::waitpid(pid, &mut status, 0);
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
        assert_eq!(n as usize, std::mem::size_of_val(&out));
        out
    }

    fn syscall_probes() -> [i32; 4] {
        let mut buf = [0u8; 8];
        // SAFETY: raw system calls with valid buffers or invalid descriptors.
        unsafe {
            [
                errno_of(libc::syscall(
                    libc::SYS_getrandom,
                    buf.as_mut_ptr(),
                    8usize,
                    0,
                )),
                // syncfs (306, a 3.x call) on a bad descriptor: EBADF from the kernel itself.
                // (The 313/314 boundary is checked by the interpreter test: finit_module
                // answers ENOSYS anyway on a kernel built without modules, like this one.)
                errno_of(libc::syscall(libc::SYS_syncfs, -1)),
                errno_of(libc::syscall(libc::SYS_getpid)),
                // statx(AT_FDCWD, "/", 0, STATX_BASIC_STATS, NULL): EFAULT from the kernel
                errno_of(libc::syscall(
                    libc::SYS_statx,
                    libc::AT_FDCWD,
                    c"/".as_ptr(),
                    0,
                    0x7ff,
                    std::ptr::null_mut::<u8>(),
                )),
            ]
        }
    }

    #[test]
    fn kernel_linux_3_10_refuses_newer_calls_only() {
        let free = in_child(None, syscall_probes);
        assert_eq!(free[0], 0, "getrandom works on this kernel");
        assert_eq!(free[1], libc::EBADF);
        assert_eq!(free[2], 0);
        assert_eq!(free[3], libc::EFAULT);
        let old = in_child(Some("linux-3.10"), syscall_probes);
        assert_eq!(old[0], libc::ENOSYS, "getrandom (318)");
        assert_eq!(old[1], libc::EBADF, "syncfs (306) is a 3.10 call");
        assert_eq!(old[2], 0, "getpid");
        assert_eq!(old[3], libc::ENOSYS, "statx (332)");
    }

    /// setsockopt(SOL_PACKET, ...) on a UDP socket: the kernel itself answers ENOPROTOOPT
    /// (not a packet socket), so EINVAL can only come from the filter. Needs no privilege.
    fn udp_probes() -> [i32; 3] {
        let v: libc::c_int = 0;
        let req = [0u8; 28];
        // SAFETY: raw system calls with valid buffers of the stated lengths.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            let r = [
                errno_of(libc::setsockopt(fd, 263, 18, (&v as *const libc::c_int).cast(), 4) as _),
                errno_of(libc::setsockopt(fd, 263, 5, req.as_ptr().cast(), 28) as _),
                errno_of(libc::setsockopt(fd, 263, 5, req.as_ptr().cast(), 16) as _),
            ];
            libc::close(fd);
            r
        }
    }

    #[test]
    fn kernel_no_fanout_no_v3_on_any_socket() {
        let free = in_child(None, udp_probes);
        assert_eq!(free, [libc::ENOPROTOOPT; 3]);
        let old = in_child(Some("no-fanout-no-v3"), udp_probes);
        assert_eq!(old, [libc::EINVAL, libc::EINVAL, libc::ENOPROTOOPT]);
    }

    /// A real packet socket on lo: fanout after bind, a V3 ring, a V2 ring.
    fn packet_probes() -> [i32; 3] {
        const PACKET_VERSION: libc::c_int = 10;
        // SAFETY: raw system calls with valid buffers of the stated lengths.
        unsafe {
            let all = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
            let mut out = [0; 3];
            // fanout: bound socket, hash with the defrag flag, group pid & 0xffff
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, all);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = all as u16;
            sll.sll_ifindex = 1; // lo
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            let arg: libc::c_int = (libc::getpid() & 0xffff) | (0x8000 << 16);
            out[0] = errno_of(
                libc::setsockopt(fd, 263, 18, (&arg as *const libc::c_int).cast(), 4) as _,
            );
            libc::close(fd);
            // V3 ring: tpacket_req3 {block_size, block_nr, frame_size, frame_nr, tov, priv, feat}
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            let v3: libc::c_int = 2;
            libc::setsockopt(
                fd,
                263,
                PACKET_VERSION,
                (&v3 as *const libc::c_int).cast(),
                4,
            );
            let req3: [u32; 7] = [4096, 1, 2048, 2, 10, 0, 0];
            out[1] = errno_of(libc::setsockopt(fd, 263, 5, req3.as_ptr().cast(), 28) as _);
            libc::close(fd);
            // V2 ring: tpacket_req {block_size, block_nr, frame_size, frame_nr}
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            let v2: libc::c_int = 1;
            libc::setsockopt(
                fd,
                263,
                PACKET_VERSION,
                (&v2 as *const libc::c_int).cast(),
                4,
            );
            let req: [u32; 4] = [4096, 1, 2048, 2];
            out[2] = errno_of(libc::setsockopt(fd, 263, 5, req.as_ptr().cast(), 16) as _);
            libc::close(fd);
            out
        }
    }

    #[test]
    fn kernel_no_fanout_no_v3_on_a_packet_socket() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: needs root (CAP_NET_RAW) for packet sockets; CI runs as root");
            return;
        }
        assert_eq!(
            in_child(None, packet_probes),
            [0, 0, 0],
            "this kernel has all three"
        );
        assert_eq!(
            in_child(Some("no-fanout-no-v3"), packet_probes),
            [libc::EINVAL, libc::EINVAL, 0],
            "fanout and the V3 ring refused, the V2 ring kept"
        );
    }
}
