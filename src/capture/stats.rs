//! Kernel counters: PACKET_STATISTICS returns and *resets* the socket's counts, so they are
//! accumulated here.

use super::socket::PACKET_STATISTICS;

const SOL_PACKET: libc::c_int = 263;

/// Running totals of one socket's kernel counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the kernel passed to the socket (including those it then dropped).
    pub packets: u64,
    /// Packets dropped because the ring was full.
    pub drops: u64,
    /// V3: times the queue was frozen.
    pub freezes: u64,
}

impl KernelStats {
    /// Add what one PACKET_STATISTICS reply held (`tpacket_stats` or `tpacket_stats_v3`).
    pub fn add_raw(&mut self, raw: &[u32; 3], len: usize) {
        self.packets += u64::from(raw[0]);
        self.drops += u64::from(raw[1]);
        if len >= 12 {
            self.freezes += u64::from(raw[2]);
        }
    }

    /// Read and reset the socket's counters, adding them here. Returns the drops just read.
    pub fn poll(&mut self, fd: libc::c_int) -> u64 {
        let mut raw = [0u32; 3];
        let mut len = std::mem::size_of_val(&raw) as libc::socklen_t;
        // SAFETY: raw has room for the larger (V3) reply; len says how much.
        let r = unsafe {
            libc::getsockopt(
                fd,
                SOL_PACKET,
                PACKET_STATISTICS,
                raw.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r != 0 {
            return 0;
        }
        let before = self.drops;
        self.add_raw(&raw, len as usize);
        self.drops - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_accumulate_because_the_kernel_resets_them() {
        let mut s = KernelStats::default();
        s.add_raw(&[10, 2, 1], 12);
        s.add_raw(&[5, 0, 9], 8);
        assert_eq!(
            s,
            KernelStats {
                packets: 15,
                drops: 2,
                freezes: 1
            }
        );
    }
}
