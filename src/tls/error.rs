//! TLS failures out of rustls streams, as [`Error`](crate::Error)s.

pub use crate::error::TlsError;

use std::io;

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
