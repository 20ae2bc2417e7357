#![no_main]
//! See `tickerfeed::fuzzing::replay_csv` for what is run and the invariants asserted.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickerfeed::fuzzing::replay_csv(data));
