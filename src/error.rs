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

/// An I/O error that says what was being done, and to what, as Go's errors do:
/// `connect 127.0.0.1:7000: Connection refused (os error 111)`, `read cert.pem: No such file
/// or directory (os error 2)`. Its kind is the original's, and the original is its
/// [`source`](std::error::Error::source).
#[derive(Debug)]
struct At {
    op: &'static str,
    target: String,
    source: io::Error,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.target, self.source)
    }
}

impl std::error::Error for At {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `e`, naming the operation (`connect`, `read`, `write`…) and its address or path.
pub(crate) fn io_at(op: &'static str, target: impl fmt::Display, e: io::Error) -> io::Error {
    let kind = e.kind();
    let target = target.to_string();
    io::Error::new(
        kind,
        At {
            op,
            target,
            source: e,
        },
    )
}

/// A read or write timeout as `TimedOut` (the socket says `WouldBlock`, "os error 11"),
/// naming the operation and the peer; other errors get the same context.
pub(crate) fn io_timed(op: &'static str, target: impl fmt::Display, e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock => io_at(op, target, io::ErrorKind::TimedOut.into()),
        _ => io_at(op, target, e),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn located_errors_name_the_operation_and_target_and_keep_the_kind() {
        let e = io_at(
            "connect",
            "127.0.0.1:7000",
            io::ErrorKind::ConnectionRefused.into(),
        );
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(e.to_string().starts_with("connect 127.0.0.1:7000: "), "{e}");
        let source = std::error::Error::source(&e).unwrap();
        assert!(source.to_string().contains("refused"), "{source}");
        let t = io_timed("read", "/run/app.sock", io::ErrorKind::WouldBlock.into());
        assert_eq!(t.kind(), io::ErrorKind::TimedOut);
        assert!(t.to_string().starts_with("read /run/app.sock: "), "{t}");
        assert!(!t.to_string().contains("os error 11"), "{t}");
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
