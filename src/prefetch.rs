//! Cache prefetch hints, for the loops that walk state scattered over the heap (a flow
//! table at 100 k connections, the join's edges): each asks for memory a few items ahead
//! so that its misses overlap instead of stalling one after another.

/// A hint to bring the cache line at `p` in; a no-op where there is no such instruction.
#[inline(always)]
pub(crate) fn line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults and does not dereference in the language sense; any
    // address is allowed.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Every cache line of `len` bytes at `p`.
#[inline(always)]
pub(crate) fn span(p: *const u8, len: usize) {
    let skew = p as usize & 63;
    let first = p.wrapping_sub(skew);
    for k in 0..(skew + len).div_ceil(64) {
        line(first.wrapping_add(k * 64));
    }
}

/// Every cache line of `v`'s value (not of what it points to).
#[inline(always)]
pub(crate) fn value<T>(v: &T) {
    span(v as *const T as *const u8, std::mem::size_of::<T>());
}
