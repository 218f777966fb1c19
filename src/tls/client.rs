//! The client side: rustls client configurations built from PEM.

use std::sync::Arc;

use super::{alpn_list, pem, provider, TlsError};
use crate::error::{Error, Result};

/// A `rustls::ClientConfig` trusting exactly the CA certificates in `roots_pem`, with no
/// client certificate and no ALPN. Shorthand for `TlsClientConfig::new(roots_pem).build()`.
///
/// # Examples
///
/// ```no_run
/// use sockloop::client::{ClientOptions, TlsClient};
///
/// let roots = sockloop::tls::client_config_from_pem(&std::fs::read("ca.pem")?)?;
/// let tls = TlsClient::connect("127.0.0.1:4433", "localhost", roots, ClientOptions::default())?;
/// # drop(tls);
/// # Ok::<(), sockloop::Error>(())
/// ```
///
/// # Errors
///
/// As [`TlsClientConfig::build`].
pub fn client_config_from_pem(roots_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    TlsClientConfig::new(roots_pem).build()
}

/// Builds a `rustls::ClientConfig` (ring provider, TLS 1.2 and 1.3) from PEM: the roots to
/// trust, optionally a client certificate for mutual TLS, and ALPN protocols.
///
/// # Examples
///
/// ```
/// use sockloop::tls::TlsClientConfig;
///
/// # let ck = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
/// # let (ca_pem, cert_pem, key_pem) = (ck.cert.pem(), ck.cert.pem(), ck.key_pair.serialize_pem());
/// let config = TlsClientConfig::new(ca_pem.as_bytes())
///     .client_cert(cert_pem.as_bytes(), key_pem.as_bytes())
///     .alpn(["h2"])
///     .build()?;
/// assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
/// # Ok::<(), sockloop::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TlsClientConfig {
    roots_pem: Vec<u8>,
    client_cert: Option<(Vec<u8>, Vec<u8>)>,
    alpn: Vec<Vec<u8>>,
}

impl TlsClientConfig {
    /// Trusts exactly the CA certificates in `roots_pem` (no platform roots).
    pub fn new(roots_pem: &[u8]) -> Self {
        TlsClientConfig {
            roots_pem: roots_pem.to_vec(),
            client_cert: None,
            alpn: Vec::new(),
        }
    }

    /// Presents this PEM certificate chain (leaf first) and private key when the server
    /// asks for a client certificate. Default: none.
    pub fn client_cert(mut self, chain_pem: &[u8], key_pem: &[u8]) -> Self {
        self.client_cert = Some((chain_pem.to_vec(), key_pem.to_vec()));
        self
    }

    /// The ALPN protocols to offer, most preferred first. Default: none.
    pub fn alpn<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn = alpn_list(protocols);
        self
    }

    /// Parses the PEM inputs and builds the configuration.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] with [`TlsError::Pem`] when the roots, client certificate or key hold
    /// nothing usable; [`TlsError::Rustls`] when rustls rejects the client key;
    /// [`Error::Config`] for an empty ALPN protocol name.
    pub fn build(self) -> Result<Arc<rustls::ClientConfig>> {
        if self.alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
            return Err(Error::Config(
                "ALPN protocol names must be 1 to 255 bytes".into(),
            ));
        }
        let roots = pem::roots(&self.roots_pem)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_root_certificates(roots);
        let mut cfg = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(pem::certs(chain, "client certificate")?, pem::key(key)?)
                .map_err(TlsError::Rustls)?,
        };
        cfg.alpn_protocols = self.alpn;
        Ok(Arc::new(cfg))
    }
}
