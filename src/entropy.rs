//! Random bytes for the static build: the `getrandom` crate's custom backend.
//!
//! ahash seeds its hashers (the flow table's keyed hashing) through `getrandom`, whose Linux
//! backend finds glibc's `getrandom()` with `dlsym`. In a static binary `dlsym` finds nothing,
//! so it always reads `/dev/urandom`, which an empty chroot or a bare container does not have:
//! the first hash map would panic. The static build (`.cargo/static.toml`) therefore selects
//! `getrandom_backend="custom"`, and this function does what the dynamic build does: the
//! getrandom system call (Linux 3.17+), and on ENOSYS (Linux 3.10) or EPERM (a seccomp policy)
//! `/dev/urandom`. Ordinary builds do not use it.

use std::io::Read;

/// getrandom(2), looping over short reads and EINTR. Err(errno) when the call fails.
fn syscall_fill(mut buf: &mut [u8]) -> Result<(), i32> {
    while !buf.is_empty() {
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let n = unsafe { libc::syscall(libc::SYS_getrandom, buf.as_mut_ptr(), buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        let n = usize::try_from(n).unwrap_or(0).min(buf.len());
        buf = &mut buf[n..];
    }
    Ok(())
}

/// Fill `buf` from the kernel's random number generator.
pub fn fill(buf: &mut [u8]) -> std::io::Result<()> {
    match syscall_fill(buf) {
        Ok(()) => Ok(()),
        Err(e) if e == libc::ENOSYS || e == libc::EPERM => {
            std::fs::File::open("/dev/urandom")?.read_exact(buf)
        }
        Err(e) => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// The `getrandom` 0.3 custom backend (linked only when built with
/// `--cfg getrandom_backend="custom"`, as `.cargo/static.toml` does).
///
/// # Safety
/// `dest` must be valid for writes of `len` bytes (getrandom's contract for this hook).
#[no_mangle]
pub unsafe extern "Rust" fn __getrandom_v03_custom(
    dest: *mut u8,
    len: usize,
) -> Result<(), getrandom::Error> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller guarantees dest is valid for len bytes; getrandom's buffers may be
    // uninitialised, which is fine for a byte slice we only write before anyone reads it.
    let buf = unsafe { std::slice::from_raw_parts_mut(dest, len) };
    fill(buf).map_err(|e| {
        let code = e.raw_os_error().and_then(|c| u16::try_from(c).ok());
        getrandom::Error::new_custom(code.unwrap_or(u16::MAX))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_with_random_bytes() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        fill(&mut a).unwrap();
        fill(&mut b).unwrap();
        // 2^-512 chance of a false failure.
        assert_ne!(a, b);
        let mut c = [0u8; 32];
        // SAFETY: c is valid for 32 bytes.
        unsafe { __getrandom_v03_custom(c.as_mut_ptr(), c.len()) }.unwrap();
        assert_ne!(c, [0u8; 32]);
    }
}
