#![no_main]
//! See `tickerfeed::fuzzing::protocol_message` for what is run and the invariants asserted.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickerfeed::fuzzing::protocol_message(data));
