//! [`UnixClient`]: a blocking Unix stream socket client.

use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::Path;
use std::time::Instant;

use super::connect;
use super::stream::{stream_io, stream_methods, StreamCore};
use super::ClientOptions;
use crate::error::Result;

/// A blocking Unix stream client: `std::io::Read` + `Write`, request/reply helpers with
/// deadlines, and a clean close (also on drop).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use sockloop::client::{ClientOptions, UnixClient};
///
/// let mut c = UnixClient::connect("/run/app.sock", ClientOptions::default())?;
/// let reply = c.once(b"status", Duration::from_secs(1))?;
/// # let _ = reply;
/// # Ok::<(), sockloop::Error>(())
/// ```
pub struct UnixClient {
    core: StreamCore<UnixStream>,
}

impl UnixClient {
    /// Connects to the socket at `path`. A listener whose backlog is full is retried until
    /// [`ClientOptions::connect_timeout`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) for invalid options; [`Error::Timeout`](crate::Error::Timeout)
    /// when the backlog stayed full; [`Error::Io`](crate::Error::Io) otherwise (no such file,
    /// connection refused, a path too long).
    pub fn connect(path: impl AsRef<Path>, opts: ClientOptions) -> Result<UnixClient> {
        opts.validate()?;
        let sock = connect::unix(
            path.as_ref(),
            crate::base::saturating(Instant::now(), opts.connect_timeout),
        )?;
        Ok(UnixClient {
            core: StreamCore::new(sock, path.as_ref().display(), &opts)?,
        })
    }

    /// Another handle to the same connection, as [`UnixStream::try_clone`] gives: one
    /// thread reads while another writes. As [`TcpClient::try_clone`](super::TcpClient::try_clone):
    /// each handle has its own reply buffer, timeouts are shared, and the last handle
    /// dropped closes the connection.
    ///
    /// # Errors
    ///
    /// As [`UnixStream::try_clone`].
    pub fn try_clone(&self) -> Result<UnixClient> {
        Ok(UnixClient {
            core: self.core.try_clone()?,
        })
    }

    /// The server's address.
    ///
    /// # Errors
    ///
    /// As [`UnixStream::peer_addr`].
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        Ok(self.core.io.peer_addr()?)
    }

    /// Our (normally unnamed) address.
    ///
    /// # Errors
    ///
    /// As [`UnixStream::local_addr`].
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.core.io.local_addr()?)
    }

    stream_methods!();
}

stream_io!(UnixClient);

impl std::fmt::Debug for UnixClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixClient")
            .field("peer", &self.peer_addr().ok())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}
