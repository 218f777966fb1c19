//! TLS configuration (rustls with the ring provider).

use std::fmt;

/// A TLS failure. (Stub: to be filled by the TLS work.)
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls reported an error.
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Rustls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsError {}
