//! TLS configuration (rustls with the ring provider): server certificates, client-certificate
//! verification, ALPN, and client configurations built from PEM.
//!
//! Servers take a [`TlsServerConfig`] (see [`TlsServerConfig::builder`]); the blocking
//! [`TlsClient`](crate::client::TlsClient) and the `wss://` client take an
//! `Arc<rustls::ClientConfig>`, which [`TlsClientConfig`] or [`client_config_from_pem`]
//! build from PEM roots.

mod client;
mod error;
mod info;
mod pem;
mod server;

pub use client::{client_config_from_pem, TlsClientConfig};
pub(crate) use error::io_error;
pub use error::TlsError;
pub use info::TlsInfo;
pub use server::{ClientCertMode, TlsServerBuilder, TlsServerConfig};

use std::sync::Arc;

/// The one crypto provider sockloop uses: ring.
/// ALPN protocol names as rustls takes them.
fn alpn_list<I, P>(protocols: I) -> Vec<Vec<u8>>
where
    I: IntoIterator<Item = P>,
    P: AsRef<[u8]>,
{
    protocols.into_iter().map(|p| p.as_ref().to_vec()).collect()
}

/// Reads a PEM file; the error names it (`read cert.pem: No such file or directory`).
///
/// # Errors
///
/// [`Error::Io`](crate::Error::Io) naming the path.
pub fn read_pem_file(path: &std::path::Path) -> crate::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| crate::error::io_at("read", path.display(), e).into())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
