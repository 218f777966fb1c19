//! The crate's one error type, with a sub-enum per domain.

use std::fmt;
use std::io;

/// Result alias used across sockloop.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in sockloop.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error; the affected connection (if any) was closed.
    Io(io::Error),
    /// A TLS failure (handshake, certificate, or configuration).
    Tls(TlsError),
    /// A WebSocket protocol or handshake failure.
    WebSocket(crate::proto::ws::WsError),
    /// Invalid configuration, detected when a server or client was built.
    Config(String),
    /// The operation did not finish before its deadline.
    Timeout,
    /// The connection or runtime is closed.
    Closed,
    /// A datagram larger than the configured maximum arrived; it was dropped and the socket
    /// keeps serving.
    DatagramTooLarge {
        /// Bytes received (at least `limit + 1`: the rest was truncated by the kernel).
        received: usize,
        /// The configured `max_datagram_size`.
        limit: usize,
    },
    /// A handler panicked (with the panic message). Only its own connection was closed.
    HandlerPanic(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::Tls(e) => write!(f, "tls error: {e}"),
            Error::WebSocket(e) => write!(f, "websocket error: {e}"),
            Error::Config(m) => write!(f, "configuration error: {m}"),
            Error::Timeout => f.write_str("timed out"),
            Error::Closed => f.write_str("closed"),
            Error::DatagramTooLarge { received, limit } => {
                write!(
                    f,
                    "datagram of {received}+ bytes exceeds the {limit}-byte limit; dropped"
                )
            }
            Error::HandlerPanic(m) => write!(f, "handler panicked: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Tls(e) => Some(e),
            Error::WebSocket(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) {
            return Error::Timeout;
        }
        Error::Io(e)
    }
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Self {
        Error::Tls(e)
    }
}

impl From<crate::proto::ws::WsError> for Error {
    fn from(e: crate::proto::ws::WsError) -> Self {
        Error::WebSocket(e)
    }
}

/// A TLS failure.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls reported an error not covered by a more specific variant (a protocol
    /// violation, an unsupported peer, a configuration rustls refused).
    Rustls(rustls::Error),
    /// The peer's certificate was rejected by our verifier (unknown issuer, wrong name,
    /// expired, or none presented when one was required). The rustls error says why; an
    /// alert was sent and the handshake was abandoned.
    CertificateRejected(rustls::Error),
    /// The peer aborted the connection with a TLS alert, for instance because it rejected
    /// our certificate or required one we did not present.
    AlertReceived(rustls::AlertDescription),
    /// PEM input held no usable item (the message says which: certificates, a private key,
    /// or trust roots), or a certificate in it could not be parsed.
    Pem(String),
}

impl TlsError {
    /// Classifies a rustls error into the most specific variant.
    pub fn from_rustls(e: rustls::Error) -> TlsError {
        match e {
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                TlsError::CertificateRejected(e)
            }
            rustls::Error::AlertReceived(alert) => TlsError::AlertReceived(alert),
            other => TlsError::Rustls(other),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Rustls(e) => write!(f, "{e}"),
            TlsError::CertificateRejected(e) => write!(f, "certificate rejected: {e}"),
            TlsError::AlertReceived(a) => write!(f, "peer sent fatal alert {a:?}"),
            TlsError::Pem(m) => write!(f, "bad PEM: {m}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Rustls(e) | TlsError::CertificateRejected(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::from_rustls(e)
    }
}
