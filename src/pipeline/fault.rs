//! Worker failures: a panic in a worker is caught, its message and place kept, and reported
//! as an error naming the packet being processed (never a hang: the worker's channel closes
//! at once, so a reader blocked sending to it stops).
//!
//! Test hook: `WIREMAP_FAULT_INJECT=panic-at-packet:N` makes the worker that gets the N-th
//! packet of the input (1-based, in reading order) panic on it. Read once per run; the
//! per-packet path pays nothing for it (the check is per batch of 512 packets).

use std::cell::RefCell;

/// The environment variable of the test hook.
pub const FAULT_ENV: &str = "WIREMAP_FAULT_INJECT";

/// A fault the test hook asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Panic in the worker on the packet with this reading order (0-based).
    PanicAt(u64),
}

/// Read the test hook from the environment. An unknown value is an error (a test that
/// misspells it must not silently pass).
pub fn from_env() -> Result<Option<Fault>, String> {
    match std::env::var(FAULT_ENV) {
        Ok(v) => parse(&v).map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(format!("{FAULT_ENV}: {e}")),
    }
}

fn parse(v: &str) -> Result<Fault, String> {
    v.strip_prefix("panic-at-packet:")
        .and_then(|n| n.trim().parse::<u64>().ok())
        .and_then(|n| n.checked_sub(1))
        .map(Fault::PanicAt)
        .ok_or_else(|| format!("{FAULT_ENV}={v}: expected panic-at-packet:N (N from 1)"))
}

thread_local! {
    /// Where the last panic on this thread happened (set by the quiet hook).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replace the default panic output (several lines on standard error) with nothing: the
/// panic is caught and reported as one line by whoever catches it. For the binary only.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(place));
    }));
}

/// The message of a caught panic, with where it happened when the quiet hook saw it
/// (call on the thread that panicked).
pub fn message(payload: &(dyn std::any::Any + Send)) -> String {
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".to_string());
    match LAST_PANIC.with(|p| p.borrow_mut().take()) {
        Some(place) if !place.is_empty() => format!("{msg} ({place})"),
        _ => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_value_is_checked() {
        assert_eq!(parse("panic-at-packet:1"), Ok(Fault::PanicAt(0)));
        assert_eq!(parse("panic-at-packet:200"), Ok(Fault::PanicAt(199)));
        assert!(parse("panic-at-packet:0").is_err());
        assert!(parse("panic-at-packet:x").is_err());
        assert!(parse("panic").is_err());
    }
}
