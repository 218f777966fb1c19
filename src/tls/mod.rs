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

/// TEMPORARY stand-in until the TLS configuration module lands.
#[derive(Clone)]
pub struct TlsServerConfig {
    cfg: std::sync::Arc<rustls::ServerConfig>,
}

impl TlsServerConfig {
    /// Wraps a rustls configuration.
    pub fn from_rustls(cfg: std::sync::Arc<rustls::ServerConfig>) -> Self {
        TlsServerConfig { cfg }
    }
    pub(crate) fn server_config(&self) -> std::sync::Arc<rustls::ServerConfig> {
        self.cfg.clone()
    }
    /// Handshake timeout.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(10)
    }
}
