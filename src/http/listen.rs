//! The listener: where it listens, with how many workers, over TLS or not, how long a client
//! may take over each step of a connection, and how long the server takes to stop. Declared
//! here once each (see [`crate::settings`]); `server` builds the listener from them.
//!
//! Invariant: no step of a connection waits on the client without a deadline — the TLS
//! handshake (`tls_handshake_timeout`), the first request's head (`request_head_timeout`), a
//! request's body (`request_body_timeout`), the wait for a next request (`keep_alive_timeout`, then the head again: see
//! [`super::connection`]) and the close (`disconnect_timeout`); once a request is read, its
//! handler's own limits apply (a WebSocket's idle timeout, the slow-consumer rule).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::settings::{Invalid, settings};

settings! {
    /// The HTTP listener (REST, dashboard and WebSocket upgrades share it).
    pub struct Listen, args ListenArgs {
        /// Address to listen on.
        bind: String = "127.0.0.1:8080".to_string(), env "TICKERFEED_BIND";
        /// HTTP worker threads.
        workers: usize = available_cpus(), env "TICKERFEED_WORKERS", range(1, 1024), shown "number of CPUs";
        /// Seconds to wait for connections to close at shutdown (SIGINT, SIGTERM).
        shutdown_timeout: f64 = 5.0, env "TICKERFEED_SHUTDOWN_TIMEOUT", range(0, 3600);
        /// TLS: the certificate chain (PEM, the server's certificate first); with --tls-key the
        /// port serves https:// and wss:// instead of http:// and ws://.
        tls_cert: String = String::new(), env "TICKERFEED_TLS_CERT", shown "none: plain HTTP";
        /// TLS: the private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
        tls_key: String = String::new(), env "TICKERFEED_TLS_KEY", shown "none: plain HTTP";
        /// Seconds a client has to complete the TLS handshake.
        tls_handshake_timeout: f64 = 3.0, env "TICKERFEED_TLS_HANDSHAKE_TIMEOUT", range(0.1, 600);
        /// Seconds a client has to send its first request's whole head (line and headers) from
        /// its connect, then 408 and close; a later request's, within keep-alive + this of the
        /// previous answer.
        request_head_timeout: f64 = 5.0, env "TICKERFEED_REQUEST_HEAD_TIMEOUT", range(0.1, 600);
        /// Seconds a client has to send a request's whole body (feed control, Socket.IO polling
        /// POSTs) from its head, then 408 and close.
        request_body_timeout: f64 = 10.0, env "TICKERFEED_REQUEST_BODY_TIMEOUT", range(0.1, 600);
        /// Seconds an idle connection is kept open between requests (0: one request per connection).
        keep_alive_timeout: f64 = 5.0, env "TICKERFEED_KEEP_ALIVE_TIMEOUT", range(0, 3600);
        /// Seconds the server waits for a closing connection to flush (and, over TLS, to exchange
        /// close_notify) before dropping it.
        disconnect_timeout: f64 = 1.0, env "TICKERFEED_DISCONNECT_TIMEOUT", range(0.1, 60);
        /// Test only, never in production: also serve `GET /test/echo`, a WebSocket echo with
        /// /ws's decoder and framing, for Autobahn|Testsuite (docs/CONFORMANCE.md).
        test_echo: bool = false, env "TICKERFEED_TEST_ECHO";
    }
    check = check_listen;
}

fn available_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

fn check_listen(listen: &Listen) -> Result<(), Invalid> {
    parse_bind(&listen.bind)?;
    match (listen.tls_cert.is_empty(), listen.tls_key.is_empty()) {
        (true, false) => Err(Invalid::new("tls_cert", "is missing: --tls-key was given, and TLS needs both --tls-cert and --tls-key")),
        (false, true) => Err(Invalid::new("tls_key", "is missing: --tls-cert was given, and TLS needs both --tls-cert and --tls-key")),
        _ => Ok(()),
    }
}

fn parse_bind(text: &str) -> Result<SocketAddr, Invalid> {
    text.parse().map_err(|e| Invalid::new("bind", format!("'{text}' is not an address like 127.0.0.1:8080 ({e})")))
}

impl Listen {
    /// The address to bind (checked when the settings were resolved).
    pub fn addr(&self) -> SocketAddr {
        parse_bind(&self.bind).expect("bind was checked when the settings were resolved")
    }

    /// Whether the port serves TLS (both files given: checked when the settings were resolved).
    pub fn tls(&self) -> bool {
        !self.tls_cert.is_empty()
    }

    /// `request_head_timeout` as a duration.
    pub(crate) fn request_head(&self) -> Duration {
        Duration::from_secs_f64(self.request_head_timeout)
    }

    /// `request_body_timeout` as a duration.
    pub(crate) fn request_body(&self) -> Duration {
        Duration::from_secs_f64(self.request_body_timeout)
    }

    /// `keep_alive_timeout` as a duration (zero: no keep-alive).
    pub(crate) fn keep_alive(&self) -> Duration {
        Duration::from_secs_f64(self.keep_alive_timeout)
    }

    /// The rustls configuration of `tls_cert` and `tls_key`, or `None` without TLS.
    pub(crate) fn tls_config(&self) -> Result<Option<rustls::ServerConfig>, TlsError> {
        if !self.tls() {
            return Ok(None);
        }
        tls_config(Path::new(&self.tls_cert), Path::new(&self.tls_key)).map(Some)
    }
}

/// Why the TLS certificate or key cannot be used: the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    /// The certificate or key file.
    pub path: String,
    /// What is wrong (unreadable, not PEM, no certificate or key, key not the certificate's).
    pub message: String,
}

impl TlsError {
    fn new(path: &Path, message: impl Into<String>) -> TlsError {
        TlsError { path: path.display().to_string(), message: message.into() }
    }
}

/// The server's TLS configuration. ALPN is left to actix-http, which offers `http/1.1`, and `h2`
/// only with actix-web's `http2` feature, which stays off: HTTP/1.1 only, because the WebSocket
/// upgrade is an HTTP/1.1 exchange, and the output's backpressure (the write buffer and the
/// socket's send buffer, `session::output`) is HTTP/1.1's: over HTTP/2 a stream's data would
/// wait in flow-control windows instead, and SSE would lose its slow-consumer rule.
///
/// The crypto provider is aws-lc-rs (for its post-quantum key exchange), given here explicitly
/// rather than installed as the process default: nothing depends on which provider another
/// crate compiled in or installed first.
fn tls_config(cert_path: &Path, key_path: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| TlsError::new(path, format!("cannot read it ({e})")));
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::new(cert_path, format!("is not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(TlsError::new(cert_path, "holds no certificate (expected PEM blocks 'BEGIN CERTIFICATE')"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::new(key_path, format!("holds no usable PEM private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(cert_path, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::new(key_path, format!("cannot be used with {} ({e})", cert_path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(cert: &str, key: &str) -> Result<Listen, Invalid> {
        ListenArgs { tls_cert: Some(cert.into()), tls_key: Some(key.into()), ..Default::default() }.resolve()
    }

    #[test]
    fn tls_needs_both_files_and_names_the_missing_one() {
        assert_eq!(listen("cert.pem", "").unwrap_err().key, "tls_key");
        assert_eq!(listen("", "key.pem").unwrap_err().key, "tls_cert");
        assert!(!listen("", "").unwrap().tls());
        assert!(listen("cert.pem", "key.pem").unwrap().tls());
    }

    #[test]
    fn an_unreadable_or_invalid_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let error = tls_config(&missing, &garbage).unwrap_err();
        assert!(error.path.ends_with("missing.pem") && error.message.contains("cannot read"), "{error}");
        let error = tls_config(&garbage, &garbage).unwrap_err();
        assert!(error.path.ends_with("garbage.pem") && error.message.contains("no certificate"), "{error}");
    }
}
