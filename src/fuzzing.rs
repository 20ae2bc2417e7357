//! Entry points for the cargo-fuzz targets in `tests/fuzz/` (compiled with the `fuzzing`
//! feature only). Each takes the fuzzer's bytes, runs one crate-private decoder or state machine
//! on them and asserts the invariants its module states, through the same checks its property
//! tests use (the `properties` module beside each one's unit tests): a panic here is a bug the
//! fuzzer found. Nothing else is exposed: the decoders stay `pub(crate)`.

use crate::bus::properties::{bus_with, check_find};
use crate::feed::replay::{format, timestamp};
use crate::quote;
use crate::session::{protocol, throttle};
use crate::socketio::packet;
use crate::ws::inbound;

/// Protocol v1: a client's text frame parsed into a request (`session::protocol`). Input that is
/// not UTF-8 is read lossily, as no text frame could carry it.
pub fn protocol_message(data: &[u8]) {
    protocol::properties::check_any_text(&String::from_utf8_lossy(data));
}

/// A replay CSV file loaded into ticks (`feed::replay::format`), and each of its lines as a
/// timestamp (`feed::replay::timestamp`).
pub fn replay_csv(data: &[u8]) {
    format::properties::check_any_file(data);
    for line in String::from_utf8_lossy(data).lines() {
        timestamp::properties::check_any_text(line);
    }
}

/// The one symbol rule (`quote::normalise_symbol`) and a client's symbol looked up on a bus
/// (`Bus::find`), for each line of the input.
pub fn symbol(data: &[u8]) {
    let bus = bus_with(&["AAPL", "MSFT", "BRK.B", "EURUSD=X", "^GSPC"]);
    for line in String::from_utf8_lossy(data).split('\n') {
        quote::properties::check_any_text(line);
        check_find(&bus, line);
    }
}

/// Engine.IO packets, polling payloads and Socket.IO packets (`socketio::packet`).
pub fn socketio(data: &[u8]) {
    packet::properties::check_any_text(&String::from_utf8_lossy(data));
}

/// Client WebSocket frames (`ws::inbound`). The first byte sets the message limit (0–255) and
/// the second how the rest is cut into chunks; what is decoded must not depend on the cuts.
pub fn ws_inbound(data: &[u8]) {
    let [limit, step, frames @ ..] = data else { return };
    let step = usize::from(*step).max(1);
    let cuts: Vec<usize> = (step..frames.len()).step_by(step).collect();
    let whole = inbound::properties::check_any_bytes(frames, &[], usize::from(*limit));
    assert_eq!(inbound::properties::check_any_bytes(frames, &cuts, usize::from(*limit)), whole, "the chunking changed what was decoded");
}

/// A session's subscriptions (`session::throttle`) driven by steps read from the input, two
/// bytes each, beside a model of what the client asked for.
pub fn throttle(data: &[u8]) {
    throttle::properties::check_steps(&throttle::properties::steps_from_bytes(data));
}
