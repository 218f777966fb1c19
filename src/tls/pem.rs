//! PEM parsing into rustls types, with errors that say what was missing.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;
use crate::error::Result;

/// Every certificate in `pem` (a chain, leaf first); at least one.
pub(super) fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..]).collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!("no certificate in the {what} PEM")).into());
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in `pem`.
pub(super) fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut &pem[..])?
        .ok_or_else(|| TlsError::Pem("no private key in the key PEM".into()).into())
}

/// A root store holding every certificate in `pem`; each must parse as a trust anchor.
pub(super) fn roots(pem: &[u8]) -> Result<Arc<rustls::RootCertStore>> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certs(pem, "roots")? {
        store
            .add(cert)
            .map_err(|e| TlsError::Pem(format!("unusable root certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_names_what_is_missing() {
        let e = certs(b"", "server").unwrap_err().to_string();
        assert!(e.contains("no certificate in the server PEM"), "{e}");
        let e = key(b"not pem").unwrap_err().to_string();
        assert!(e.contains("no private key"), "{e}");
        assert!(roots(b"").is_err());
    }
}
