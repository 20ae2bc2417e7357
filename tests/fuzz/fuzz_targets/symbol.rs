#![no_main]
//! See `tickerfeed::fuzzing::symbol` for what is run and the invariants asserted.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickerfeed::fuzzing::symbol(data));
