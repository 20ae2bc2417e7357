//! The log setup the binary installs: `tracing` events formatted to stdout, filtered by
//! `RUST_LOG` (default `info`), with one correction.
//!
//! actix-http reports a peer's malformed request (a head over its 96 headers, a request line
//! that is not HTTP, a bad header, a connection reset) as `ERROR stream error: …` from
//! `actix_http::h1::dispatcher`, after it has already answered 431 or 400. Those are the
//! client's mistakes, and any client could fill the log with ERRORs. [`DemotePeerErrors`]
//! re-reports them at DEBUG under the target [`PEER_TARGET`], so an ERROR line means something
//! for the operator again. Everything else, including actix-http's errors about the server's own
//! side (a response body that failed, a service that would not start), passes unchanged.
//!
//! The correction is a [`Subscriber`] wrapped around the formatting one rather than a layer: a
//! layer cannot change an event's level, and an event emitted from inside a subscriber's callback
//! is dropped by `tracing` whenever a scoped dispatcher is set (tests set one), so the demoted
//! event is built here and handed straight to the inner subscriber.

use std::any::TypeId;

use tracing::callsite::{Callsite, Identifier};
use tracing::field::{Field, FieldSet, Visit};
use tracing::level_filters::LevelFilter;
use tracing::metadata::Kind;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// The target under which a peer's mistakes are reported (at DEBUG):
/// `RUST_LOG=info,tickerfeed::peer=debug` shows them.
pub const PEER_TARGET: &str = "tickerfeed::peer";

/// Where actix-http's connection errors come from.
const DISPATCHER_TARGET: &str = "actix_http::h1::dispatcher";

/// What the dispatcher's message starts with when a connection ended in error; the rest is
/// actix-http's `DispatchError` as text, the only form the event carries.
const STREAM_ERROR: &str = "stream error: ";

/// `DispatchError` texts a peer causes. The parse errors (`request parse error: message head is
/// too large`, `… invalid HTTP version specified`, `… invalid Header provided`, …) come from the
/// bytes the client sent; the timeouts from a client that stalls; the I/O errors listed from a
/// peer that went away. An I/O error of another kind, a body error or an internal error stays
/// an ERROR.
const PEER_CAUSES: &[&str] = &[
    "request parse error: ",
    "request did not complete within the specified timeout",
    "connection shutdown timeout",
    "handler dropped payload before reading EOF",
    "I/O error: Connection reset by peer",
    "I/O error: Broken pipe",
    "I/O error: Connection timed out",
    "I/O error: Software caused connection abort",
];

/// Whether an event is actix-http's report of a connection a peer broke; returns the cause.
pub fn peer_caused<'m>(metadata: &Metadata<'_>, message: &'m str) -> Option<&'m str> {
    if *metadata.level() != Level::ERROR || metadata.target() != DISPATCHER_TARGET {
        return None;
    }
    let cause = message.strip_prefix(STREAM_ERROR)?;
    PEER_CAUSES.iter().any(|known| cause.starts_with(known)).then_some(cause)
}

/// The binary's subscriber: `filter` decides what is written to `writer`, after actix-http's
/// peer errors were demoted (see the module docs).
pub fn subscriber<W>(filter: EnvFilter, writer: W, ansi: bool) -> DemotePeerErrors<impl Subscriber + Send + Sync + 'static>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    DemotePeerErrors::new(tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi).finish())
}

/// Installs [`subscriber`] for the process: `RUST_LOG` or `info`, to stdout, colours only on
/// a terminal.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    subscriber(filter, std::io::stdout, ansi).init();
}

/// A subscriber that passes every call to `inner`, except that actix-http's ERROR for a
/// connection the peer broke is handed on as a DEBUG event of [`PEER_TARGET`].
pub struct DemotePeerErrors<S> {
    inner: S,
}

impl<S: Subscriber> DemotePeerErrors<S> {
    /// Wraps `inner`, which receives every event, a peer's errors demoted.
    pub fn new(inner: S) -> DemotePeerErrors<S> {
        DemotePeerErrors { inner }
    }
}

/// The callsite of the demoted events, which no macro declares.
struct PeerCallsite;

static PEER_CALLSITE: PeerCallsite = PeerCallsite;

static PEER_METADATA: Metadata<'static> = Metadata::new(
    "peer error",
    PEER_TARGET,
    Level::DEBUG,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(&["message"], Identifier(&PEER_CALLSITE)),
    Kind::EVENT,
);

impl Callsite for PeerCallsite {
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        &PEER_METADATA
    }
}

/// Reads an event's `message` field.
#[derive(Default)]
struct MessageText(String);

impl Visit for MessageText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Subscriber for DemotePeerErrors<S> {
    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        if *metadata.level() == Level::ERROR && metadata.target() == DISPATCHER_TARGET {
            let mut message = MessageText::default();
            event.record(&mut message);
            if let Some(cause) = peer_caused(metadata, &message.0) {
                if self.inner.enabled(&PEER_METADATA) {
                    let text = format!("a client's request failed: {cause}");
                    let fields = PEER_METADATA.fields();
                    // PEER_METADATA declares exactly this one field.
                    let field = fields.field("message").expect("the peer callsite declares 'message'");
                    let values = [(&field, Some(&text.as_str() as &dyn tracing::Value))];
                    let values = fields.value_set(&values);
                    let demoted = Event::new(&PEER_METADATA, &values);
                    if self.inner.event_enabled(&demoted) {
                        self.inner.event(&demoted);
                    }
                }
                return;
            }
        }
        self.inner.event(event);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.inner.max_level_hint()
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.inner.new_span(span)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        self.inner.record(span, values)
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.inner.record_follows_from(span, follows)
    }

    fn event_enabled(&self, event: &Event<'_>) -> bool {
        self.inner.event_enabled(event)
    }

    fn enter(&self, span: &Id) {
        self.inner.enter(span)
    }

    fn exit(&self, span: &Id) {
        self.inner.exit(span)
    }

    fn clone_span(&self, id: &Id) -> Id {
        self.inner.clone_span(id)
    }

    fn try_close(&self, id: Id) -> bool {
        self.inner.try_close(id)
    }

    fn current_span(&self) -> tracing_core::span::Current {
        self.inner.current_span()
    }

    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber)
    }

    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        // SAFETY: forwarded as is; the inner subscriber answers for its own types.
        unsafe { self.inner.downcast_raw(id) }
    }
}

/// A writer for [`subscriber`] that keeps what is logged in memory, for tests that check what
/// the server logs (the real server, the real subscriber, a readable log).
#[derive(Clone, Default)]
pub struct MemoryWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl MemoryWriter {
    /// Everything written so far.
    pub fn text(&self) -> String {
        // A writer only appends under the lock, so a poisoned lock still holds whole lines.
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl std::io::Write for MemoryWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for MemoryWriter {
    type Writer = MemoryWriter;

    fn make_writer(&'a self) -> MemoryWriter {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `emit` under the binary's subscriber with `filter`; returns what was written.
    fn logged(filter: &str, emit: impl FnOnce()) -> String {
        let memory = MemoryWriter::default();
        tracing::subscriber::with_default(subscriber(EnvFilter::new(filter), memory.clone(), false), emit);
        memory.text()
    }

    fn actix_events() {
        // As actix-http's dispatcher logs them.
        tracing::error!(target: "actix_http::h1::dispatcher", "stream error: {}", "request parse error: message head is too large");
        tracing::error!(target: "actix_http::h1::dispatcher", "stream error: {}", "I/O error: Connection reset by peer (os error 104)");
        tracing::error!(target: "actix_http::h1::dispatcher", "stream error: {}", "body error: the quote stream failed");
        tracing::error!(target: "actix_http::h1::dispatcher", "Internal server error: unexpected eof");
        tracing::error!(target: "tickerfeed::other", "stream error: request parse error: not actix's");
    }

    #[test]
    fn peer_errors_are_debug_lines_of_the_peer_target_and_server_errors_stay_errors() {
        let log = logged("info,tickerfeed::peer=debug", actix_events);
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 5, "{log}");
        assert!(lines[0].contains(" DEBUG tickerfeed::peer: a client's request failed: request parse error: message head is too large"), "{}", lines[0]);
        assert!(lines[1].contains(" DEBUG tickerfeed::peer: a client's request failed: I/O error: Connection reset by peer"), "{}", lines[1]);
        for (line, text) in lines[2..].iter().zip(["body error", "unexpected eof", "not actix's"]) {
            assert!(line.contains(" ERROR ") && line.contains(text), "{line}");
        }
    }

    #[test]
    fn at_the_default_level_peer_errors_are_silent() {
        let log = logged("info", actix_events);
        assert_eq!(log.lines().count(), 3, "{log}");
        assert!(!log.contains("message head is too large") && !log.contains("reset by peer"), "{log}");
    }

    #[test]
    fn only_the_dispatcher_error_level_is_recognised() {
        let error = tracing::Metadata::new("e", DISPATCHER_TARGET, Level::ERROR, None, None, None, FieldSet::new(&[], Identifier(&PEER_CALLSITE)), Kind::EVENT);
        let warn = tracing::Metadata::new("w", DISPATCHER_TARGET, Level::WARN, None, None, None, FieldSet::new(&[], Identifier(&PEER_CALLSITE)), Kind::EVENT);
        assert_eq!(peer_caused(&error, "stream error: request parse error: invalid Method specified"), Some("request parse error: invalid Method specified"));
        assert_eq!(peer_caused(&error, "stream error: I/O error: Too many open files (os error 24)"), None);
        assert_eq!(peer_caused(&error, "request parse error: without the prefix"), None);
        assert_eq!(peer_caused(&warn, "stream error: request parse error: x"), None);
    }
}
