#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../fuzz-regressions/harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::redis(data));
