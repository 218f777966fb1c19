//! [`TcpClient`] and [`TlsClient`]: blocking TCP and TLS-over-TCP clients.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;

use super::connect::{self, TlsStream};
use super::stream::{stream_io, stream_methods, StreamCore};
use super::ClientOptions;
use crate::error::{Error, Result};
use crate::tls::TlsError;

/// A blocking TCP client: `std::io::Read` + `Write`, request/reply helpers with deadlines,
/// and a clean close (also on drop).
///
/// # Examples
///
/// ```no_run
/// use std::io::Write;
/// use std::time::Duration;
/// use sockloop::client::{ClientOptions, TcpClient};
///
/// let mut c = TcpClient::connect("127.0.0.1:7000", ClientOptions::default())?;
/// let reply = c.once_until(b"PING\n", b"\n", Duration::from_secs(2))?;
/// assert_eq!(reply, b"PONG\n");
/// c.write_all(b"QUIT\n")?;
/// c.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TcpClient {
    core: StreamCore<TcpStream>,
}

impl TcpClient {
    /// Resolves `addr` and connects to the first address that answers, all within
    /// [`ClientOptions::connect_timeout`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for invalid options or an address resolving to nothing;
    /// [`Error::Timeout`] when no address answered in time; [`Error::Io`] otherwise (the
    /// last address's error, such as connection refused).
    pub fn connect(addr: impl ToSocketAddrs, opts: ClientOptions) -> Result<TcpClient> {
        opts.validate()?;
        let tcp = connect::tcp(
            addr,
            crate::base::saturating(Instant::now(), opts.connect_timeout),
        )?;
        tcp.set_nodelay(opts.nodelay)?;
        let peer = tcp.peer_addr()?;
        Ok(TcpClient {
            core: StreamCore::new(tcp, peer, &opts)?,
        })
    }

    /// Another handle to the same connection, as [`TcpStream::try_clone`] gives: one thread
    /// reads while another writes. Each handle has its own reply buffer (bytes an earlier
    /// `once_until` read past its delimiter stay with the handle that read them); timeouts
    /// are the socket's, shared by both. Dropping a handle closes the connection only when
    /// it is the last one; [`close`](Self::close) on any handle shuts the socket down for
    /// all.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::{BufRead, BufReader, Write};
    /// use sockloop::client::{ClientOptions, TcpClient};
    ///
    /// let mut writer = TcpClient::connect("127.0.0.1:7000", ClientOptions::default())?;
    /// let reader = writer.try_clone()?;
    /// let printer = std::thread::spawn(move || {
    ///     for line in BufReader::new(reader).lines() {
    ///         println!("{}", line?);
    ///     }
    ///     Ok::<(), std::io::Error>(())
    /// });
    /// writer.write_all(b"hello\n")?;
    /// # let _ = printer;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`TcpStream::try_clone`].
    pub fn try_clone(&self) -> Result<TcpClient> {
        Ok(TcpClient {
            core: self.core.try_clone()?,
        })
    }

    /// The server's address.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        Ok(self.core.io.peer_addr()?)
    }

    /// Our address.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::local_addr`].
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.core.io.local_addr()?)
    }

    stream_methods!();
}

stream_io!(TcpClient);

impl std::fmt::Debug for TcpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpClient")
            .field("peer", &self.peer_addr().ok())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// A blocking TLS client over TCP (rustls, ring provider), verifying the server against the
/// roots of the `rustls::ClientConfig` it is given (build one with
/// [`tls::TlsClientConfig`](crate::tls::TlsClientConfig)). The handshake completes inside
/// [`connect`](Self::connect); then it behaves like [`TcpClient`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use sockloop::client::{ClientOptions, TlsClient};
/// use sockloop::tls::TlsClientConfig;
///
/// let config = TlsClientConfig::new(&std::fs::read("ca.pem")?).alpn(["echo"]).build()?;
/// let mut c = TlsClient::connect("127.0.0.1:4433", "localhost", config, ClientOptions::default())?;
/// assert_eq!(c.alpn_protocol(), Some(&b"echo"[..]));
/// let reply = c.once(b"hello", Duration::from_secs(2))?;
/// c.close()?; // close_notify, then wait for the server to finish
/// # let _ = reply;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TlsClient {
    core: StreamCore<TlsStream>,
}

impl TlsClient {
    /// Connects to `addr` as [`TcpClient::connect`] does and completes the TLS handshake
    /// for `server_name` (a DNS name or an IP address, checked against the certificate);
    /// connect and handshake together take at most [`ClientOptions::connect_timeout`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for invalid options or server name; [`Error::Timeout`] when the
    /// connect or the handshake did not finish in time; [`Error::Tls`] with
    /// [`TlsError::CertificateRejected`] when the server's certificate failed verification
    /// (the rustls error says why; an alert was sent), [`TlsError::AlertReceived`] when the
    /// server aborted the handshake, [`TlsError::Rustls`] for other TLS failures;
    /// [`Error::Closed`] when the server hung up mid-handshake; [`Error::Io`] otherwise.
    ///
    /// With TLS 1.3 a server that rejects *our* certificate does so after our side of the
    /// handshake finished: its alert then surfaces from the first read.
    pub fn connect(
        addr: impl ToSocketAddrs,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
        opts: ClientOptions,
    ) -> Result<TlsClient> {
        opts.validate()?;
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| Error::Config(format!("invalid TLS server name {server_name:?}")))?;
        let deadline = crate::base::saturating(Instant::now(), opts.connect_timeout);
        let tcp = connect::tcp(addr, deadline)?;
        tcp.set_nodelay(opts.nodelay)?;
        let peer = tcp.peer_addr()?;
        let conn = rustls::ClientConnection::new(config, name).map_err(TlsError::from_rustls)?;
        let mut stream = TlsStream::new(conn, tcp);
        connect::tls_handshake(&mut stream, deadline)?;
        Ok(TlsClient {
            core: StreamCore::new(stream, peer, &opts)?,
        })
    }

    /// The ALPN protocol the server chose, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.core.io.conn.alpn_protocol()
    }

    /// The negotiated TLS version.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.core.io.conn.protocol_version()
    }

    /// The server's address.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        Ok(self.core.io.sock.peer_addr()?)
    }

    /// Our address.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::local_addr`].
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.core.io.sock.local_addr()?)
    }

    stream_methods!();
}

stream_io!(TlsClient);

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("peer", &self.peer_addr().ok())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}
