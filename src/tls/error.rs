//! TLS failures, classified so that callers can tell a rejected certificate from the rest.

use std::fmt;
use std::io;

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

/// Converts an I/O error from a rustls stream, unwrapping a TLS failure rustls carried
/// inside it; timeouts become [`Error::Timeout`](crate::Error::Timeout).
pub(crate) fn io_error(e: io::Error) -> crate::Error {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(t) => crate::Error::Tls(TlsError::from_rustls(t.clone())),
        None => crate::Error::from(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_are_classified() {
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(matches!(
            TlsError::from_rustls(bad),
            TlsError::CertificateRejected(_)
        ));
        assert!(matches!(
            TlsError::from_rustls(rustls::Error::NoCertificatesPresented),
            TlsError::CertificateRejected(_)
        ));
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert!(matches!(
            TlsError::from_rustls(alert),
            TlsError::AlertReceived(rustls::AlertDescription::CertificateRequired)
        ));
    }

    #[test]
    fn io_errors_carrying_rustls_errors_are_unwrapped() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        let e = io::Error::new(io::ErrorKind::InvalidData, inner);
        let got = io_error(e);
        assert!(
            matches!(got, crate::Error::Tls(TlsError::CertificateRejected(_))),
            "{got}"
        );
        assert!(got.to_string().contains("certificate rejected"));
        let timeout = io::Error::from(io::ErrorKind::WouldBlock);
        assert!(matches!(io_error(timeout), crate::Error::Timeout));
    }
}
