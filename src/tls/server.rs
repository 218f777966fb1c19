//! The server side: [`TlsServerConfig`] and its builder.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;

use super::{alpn_list, pem, provider, TlsError};
use crate::error::{Error, Result};

/// Default time a client has to complete the TLS handshake.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS settings for a listener ([`Listen::tls`](crate::Listen::tls)): a rustls server
/// configuration plus the handshake timeout the reactor enforces.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sockloop::tls::{ClientCertMode, TlsServerConfig};
///
/// # let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// # let (cert_pem, key_pem) = (ck.cert.pem(), ck.key_pair.serialize_pem());
/// # let clients_ca_pem = cert_pem.clone();
/// let tls = TlsServerConfig::builder(cert_pem.as_bytes(), key_pem.as_bytes())
///     .client_auth_roots(clients_ca_pem.as_bytes(), ClientCertMode::Required)
///     .alpn(["h2", "http/1.1"])
///     .handshake_timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(tls.handshake_timeout(), Duration::from_secs(5));
/// assert_eq!(tls.alpn_protocols()[0], b"h2");
/// # Ok::<(), sockloop::Error>(())
/// ```
#[derive(Clone)]
pub struct TlsServerConfig {
    cfg: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("alpn", &self.cfg.alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsServerConfig {
    /// Wraps a rustls configuration as it is (handshake timeout: 10 s).
    pub fn from_rustls(cfg: Arc<rustls::ServerConfig>) -> Self {
        TlsServerConfig {
            cfg,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// A configuration from a PEM certificate chain (leaf first) and private key, with no
    /// client authentication and no ALPN. Shorthand for `builder(cert, key).build()`.
    ///
    /// # Errors
    ///
    /// As [`TlsServerBuilder::build`].
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self> {
        Self::builder(cert, key).build()
    }

    /// As [`from_pem`](Self::from_pem), reading the two PEM files.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the file when one cannot be read (`read cert.pem: No such file
    /// or directory (os error 2)`); otherwise as [`from_pem`](Self::from_pem).
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        Self::from_pem(
            &super::read_pem_file(cert.as_ref())?,
            &super::read_pem_file(key.as_ref())?,
        )
    }

    /// Starts a builder from the two things every server needs: its PEM certificate chain
    /// (leaf first) and its PEM private key.
    pub fn builder(cert_pem: &[u8], key_pem: &[u8]) -> TlsServerBuilder {
        TlsServerBuilder {
            cert_pem: cert_pem.to_vec(),
            key_pem: key_pem.to_vec(),
            client_auth: None,
            alpn: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Returns this configuration with another handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Time a client has to complete the handshake; past it the connection is closed with
    /// [`CloseReason::HandshakeTimeout`](crate::CloseReason::HandshakeTimeout).
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The ALPN protocols offered, most preferred first (empty: no ALPN).
    pub fn alpn_protocols(&self) -> &[Vec<u8>] {
        &self.cfg.alpn_protocols
    }

    /// The underlying rustls configuration.
    pub fn rustls_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.cfg)
    }

    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.cfg)
    }
}

/// Whether a server with client-certificate verification also admits clients without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertMode {
    /// A client must present a certificate signed by one of the roots; otherwise the
    /// handshake fails.
    Required,
    /// A client may present no certificate; one it does present must verify.
    Optional,
}

/// Builds a [`TlsServerConfig`]; from [`TlsServerConfig::builder`]. Everything is validated
/// once, in [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct TlsServerBuilder {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_auth: Option<(Vec<u8>, ClientCertMode)>,
    alpn: Vec<Vec<u8>>,
    handshake_timeout: Duration,
}

impl TlsServerBuilder {
    /// Verifies client certificates against the CA certificates in `roots_pem`.
    /// Default: no client authentication (no certificate is requested).
    pub fn client_auth_roots(mut self, roots_pem: &[u8], mode: ClientCertMode) -> Self {
        self.client_auth = Some((roots_pem.to_vec(), mode));
        self
    }

    /// The ALPN protocols to accept, most preferred first. A client offering none of them
    /// fails the handshake; a client offering no ALPN at all is accepted. Default: none.
    pub fn alpn<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn = alpn_list(protocols);
        self
    }

    /// Time a client has to complete the handshake. Default: 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Parses the PEM inputs and builds the configuration.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] with [`TlsError::Pem`] when the certificate, key or client roots hold
    /// nothing usable; [`TlsError::Rustls`] when rustls rejects the key for the certificate;
    /// [`Error::Config`] for an empty ALPN protocol name or an empty handshake timeout.
    pub fn build(self) -> Result<TlsServerConfig> {
        self.validate()?;
        let certs = pem::certs(&self.cert_pem, "server certificate")?;
        let key = pem::key(&self.key_pem)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?;
        let builder = match &self.client_auth {
            None => builder.with_no_client_auth(),
            Some((roots, mode)) => builder.with_client_cert_verifier(verifier(roots, *mode)?),
        };
        let mut cfg = builder
            .with_single_cert(certs, key)
            .map_err(TlsError::Rustls)?;
        cfg.alpn_protocols = self.alpn;
        Ok(TlsServerConfig {
            cfg: Arc::new(cfg),
            handshake_timeout: self.handshake_timeout,
        })
    }

    fn validate(&self) -> Result<()> {
        if self.alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
            return Err(Error::Config(
                "ALPN protocol names must be 1 to 255 bytes".into(),
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::Config(
                "the TLS handshake timeout must be > 0".into(),
            ));
        }
        Ok(())
    }
}

fn verifier(
    roots_pem: &[u8],
    mode: ClientCertMode,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let builder = WebPkiClientVerifier::builder_with_provider(pem::roots(roots_pem)?, provider());
    let builder = match mode {
        ClientCertMode::Required => builder,
        ClientCertMode::Optional => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|e| Error::Config(format!("client certificate verifier: {e}")))
}
