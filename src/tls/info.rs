//! What a completed server-side handshake negotiated: [`TlsInfo`].

use rustls::pki_types::CertificateDer;

/// The negotiated parameters of a TLS connection, recorded when its handshake completed
/// (see [`Conn::tls`](crate::Conn::tls)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    alpn: Option<Vec<u8>>,
    server_name: Option<String>,
    peer_certificates: Vec<CertificateDer<'static>>,
    version: Option<rustls::ProtocolVersion>,
}

impl TlsInfo {
    /// Reads what `conn` negotiated (call once its handshake is complete).
    pub(crate) fn of_server(conn: &rustls::ServerConnection) -> TlsInfo {
        TlsInfo {
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            server_name: conn.server_name().map(str::to_owned),
            peer_certificates: conn
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                .unwrap_or_default(),
            version: conn.protocol_version(),
        }
    }

    /// The ALPN protocol both sides agreed on, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// The server name the client asked for (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The client's certificate chain, leaf first (empty when it presented none).
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.peer_certificates
    }

    /// The negotiated TLS version.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.version
    }
}
