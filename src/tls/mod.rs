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
    /// TEMPORARY: from PEM bytes.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> crate::Result<Self> {
        let certs: Vec<_> = rustls_pemfile::certs(&mut &cert[..]).collect::<Result<_, _>>()?;
        let key = rustls_pemfile::private_key(&mut &key[..])?.ok_or(crate::Error::Closed)?;
        let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::Error::Tls(TlsError::Rustls(e)))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| crate::Error::Tls(TlsError::Rustls(e)))?;
        Ok(Self::from_rustls(std::sync::Arc::new(cfg)))
    }
    /// TEMPORARY: from PEM files.
    pub fn from_pem_files(cert: &str, key: &str) -> crate::Result<Self> {
        Self::from_pem(&std::fs::read(cert)?, &std::fs::read(key)?)
    }
    /// Handshake timeout.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(10)
    }
}
