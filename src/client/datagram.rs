//! [`UdpClient`] and [`UnixDatagramClient`]: blocking datagram clients.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::connect::remaining;
use super::ClientOptions;
use crate::error::{io_at, Error, Result};

/// Largest datagram a client receives, whatever `max_reply_size` says.
const MAX_DATAGRAM: usize = 64 << 10;
/// Attempts at a fresh temporary path before giving up.
const BIND_ATTEMPTS: u32 = 16;

/// A connected datagram socket the clients can drive.
pub(crate) trait Dgram {
    fn send(&self, data: &[u8]) -> io::Result<usize>;
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

macro_rules! impl_dgram {
    ($sock:ty) => {
        impl Dgram for $sock {
            fn send(&self, data: &[u8]) -> io::Result<usize> {
                <$sock>::send(self, data)
            }
            fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$sock>::recv(self, buf)
            }
            fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
                <$sock>::set_read_timeout(self, t)
            }
            fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
                <$sock>::set_write_timeout(self, t)
            }
        }
    };
}

impl_dgram!(UdpSocket);
impl_dgram!(UnixDatagram);

/// A connected datagram socket with its timeouts and size limit.
#[derive(Debug)]
pub(crate) struct DatagramCore<S: Dgram> {
    sock: S,
    /// The server's address or path, for error messages.
    peer: Box<str>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    limit: usize,
}

impl<S: Dgram> DatagramCore<S> {
    fn new(sock: S, peer: impl std::fmt::Display, opts: &ClientOptions) -> Result<Self> {
        sock.set_read_timeout(opts.read_timeout)?;
        sock.set_write_timeout(opts.write_timeout)?;
        Ok(DatagramCore {
            sock,
            peer: peer.to_string().into(),
            read_timeout: opts.read_timeout,
            write_timeout: opts.write_timeout,
            limit: opts.max_reply_size.min(MAX_DATAGRAM),
        })
    }

    pub(crate) fn send(&self, data: &[u8]) -> Result<usize> {
        retry("send", &self.peer, || self.sock.send(data))
    }

    pub(crate) fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        retry("recv", &self.peer, || self.sock.recv(buf))
    }

    /// Receives one whole datagram, refusing one larger than the limit.
    fn recv_datagram(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.limit + 1];
        let n = self.recv(&mut buf)?;
        if n > self.limit {
            return Err(Error::DatagramTooLarge {
                received: n,
                limit: self.limit,
            });
        }
        buf.truncate(n);
        Ok(buf)
    }

    pub(crate) fn once(&self, request: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let deadline = crate::base::saturating(Instant::now(), timeout);
        let result = self.exchange(request, deadline);
        let restored = self.restore_timeouts();
        let reply = result?;
        restored?;
        Ok(reply)
    }

    fn exchange(&self, request: &[u8], deadline: Instant) -> Result<Vec<u8>> {
        self.sock.set_write_timeout(Some(remaining(deadline)?))?;
        self.send(request)?;
        self.sock.set_read_timeout(Some(remaining(deadline)?))?;
        self.recv_datagram()
    }

    fn restore_timeouts(&self) -> Result<()> {
        self.sock.set_read_timeout(self.read_timeout)?;
        self.sock.set_write_timeout(self.write_timeout)?;
        Ok(())
    }

    pub(crate) fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        self.sock.set_read_timeout(t)?;
        self.read_timeout = t;
        Ok(())
    }

    pub(crate) fn set_write_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        self.sock.set_write_timeout(t)?;
        self.write_timeout = t;
        Ok(())
    }
}

/// Runs a socket call again when a signal interrupted it; an error names `op` and `peer`
/// (a timeout is [`Error::Timeout`]).
fn retry(
    op: &'static str,
    peer: &str,
    mut call: impl FnMut() -> io::Result<usize>,
) -> Result<usize> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_at(op, peer, e).into()),
            Ok(n) => return Ok(n),
        }
    }
}

/// The methods both datagram clients share, delegated to `core`.
macro_rules! datagram_methods {
    () => {
        /// Sends one datagram to the server; returns the bytes sent.
        ///
        /// # Errors
        ///
        /// [`Error::Timeout`] past the write timeout; [`Error::Io`] otherwise (for
        /// instance a datagram too large for the socket, or no server listening).
        pub fn send(&self, data: &[u8]) -> Result<usize> {
            self.core.send(data)
        }

        /// Receives one datagram from the server into `buf`; returns its length. A datagram
        /// longer than `buf` is truncated by the kernel.
        ///
        /// # Errors
        ///
        /// [`Error::Timeout`] past the read timeout; [`Error::Io`] otherwise.
        pub fn recv(&self, buf: &mut [u8]) -> Result<usize> {
            self.core.recv(buf)
        }

        /// Sends `request` and returns the next datagram received (any datagram that
        /// arrived earlier and was not read comes first); both within `timeout`.
        ///
        /// # Errors
        ///
        /// [`Error::Timeout`] when no datagram arrived in time;
        /// [`Error::DatagramTooLarge`] for one longer than
        /// [`max_reply_size`](ClientOptions::max_reply_size) (capped at 64 KiB; it was
        /// consumed); [`Error::Io`] otherwise.
        pub fn once(&self, request: &[u8], timeout: Duration) -> Result<Vec<u8>> {
            self.core.once(request, timeout)
        }

        /// Sets the read timeout of [`recv`](Self::recv) (`None`: block).
        ///
        /// # Errors
        ///
        /// As `set_read_timeout` on the socket: a zero duration is refused.
        pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
            self.core.set_read_timeout(timeout)
        }

        /// Sets the write timeout of [`send`](Self::send) (`None`: block).
        ///
        /// # Errors
        ///
        /// As `set_write_timeout` on the socket: a zero duration is refused.
        pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
            self.core.set_write_timeout(timeout)
        }
    };
}

/// A blocking UDP client bound to an ephemeral port and connected to one server, so only
/// that server's datagrams are received.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use sockloop::client::{ClientOptions, UdpClient};
///
/// let c = UdpClient::connect("127.0.0.1:9000", ClientOptions::default())?;
/// let reply = c.once(b"ping", Duration::from_secs(1))?;
/// # let _ = reply;
/// # Ok::<(), sockloop::Error>(())
/// ```
#[derive(Debug)]
pub struct UdpClient {
    core: DatagramCore<UdpSocket>,
    sock_addrs: (SocketAddr, SocketAddr),
}

impl UdpClient {
    /// Resolves `addr`, binds an ephemeral port of the first address's family, and connects
    /// the socket to it. Nothing is sent, so nothing waits:
    /// [`connect_timeout`](ClientOptions::connect_timeout) does not apply.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for invalid options or an address resolving to nothing;
    /// [`Error::Io`] when binding or connecting fails.
    pub fn connect(addr: impl ToSocketAddrs, opts: ClientOptions) -> Result<UdpClient> {
        opts.validate()?;
        let mut last = None;
        for peer in addr.to_socket_addrs()? {
            match bind_connected(peer) {
                Ok(sock) => {
                    let local = sock.local_addr()?;
                    return Ok(UdpClient {
                        core: DatagramCore::new(sock, peer, &opts)?,
                        sock_addrs: (peer, local),
                    });
                }
                Err(e) => last = Some(io_at("connect", peer, e)),
            }
        }
        Err(last
            .map(Error::from)
            .unwrap_or_else(|| Error::Config("the address resolves to nothing".into())))
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.sock_addrs.0
    }

    /// Our address.
    pub fn local_addr(&self) -> SocketAddr {
        self.sock_addrs.1
    }

    datagram_methods!();
}

fn bind_connected(peer: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(any)?;
    sock.connect(peer)?;
    Ok(sock)
}

/// A blocking Unix datagram client. It binds a path of its own so that the server can
/// reply, and removes that path when dropped.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use sockloop::client::{ClientOptions, UnixDatagramClient};
///
/// let c = UnixDatagramClient::connect("/run/app.dgram", ClientOptions::default())?;
/// let reply = c.once(b"ping", Duration::from_secs(1))?;
/// # let _ = reply;
/// # Ok::<(), sockloop::Error>(())
/// ```
#[derive(Debug)]
pub struct UnixDatagramClient {
    core: DatagramCore<UnixDatagram>,
    local: PathBuf,
    peer: PathBuf,
}

impl UnixDatagramClient {
    /// Binds a fresh path in the temporary directory (`sockloop-<pid>-<n>.sock`) and
    /// connects to the server at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for invalid options; [`Error::Io`] when binding or connecting fails
    /// (no server at `path`, a path too long).
    pub fn connect(path: impl AsRef<Path>, opts: ClientOptions) -> Result<UnixDatagramClient> {
        opts.validate()?;
        let (sock, local) = bind_temp()?;
        Self::finish(sock, local, path.as_ref(), &opts)
    }

    /// As [`connect`](Self::connect), binding `local` (which must not exist; it is removed
    /// when the client is dropped) instead of a temporary path.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); [`Error::Io`] (`AddrInUse`) when `local` exists.
    pub fn connect_from(
        path: impl AsRef<Path>,
        local: impl AsRef<Path>,
        opts: ClientOptions,
    ) -> Result<UnixDatagramClient> {
        opts.validate()?;
        let local = local.as_ref().to_path_buf();
        let sock = UnixDatagram::bind(&local)?;
        Self::finish(sock, local, path.as_ref(), &opts)
    }

    fn finish(
        sock: UnixDatagram,
        local: PathBuf,
        peer: &Path,
        opts: &ClientOptions,
    ) -> Result<UnixDatagramClient> {
        if let Err(e) = sock.connect(peer) {
            let _ = std::fs::remove_file(&local);
            return Err(io_at("connect", peer.display(), e).into());
        }
        Ok(UnixDatagramClient {
            core: DatagramCore::new(sock, peer.display(), opts)?,
            local,
            peer: peer.to_path_buf(),
        })
    }

    /// The server's path.
    pub fn peer_path(&self) -> &Path {
        &self.peer
    }

    /// The path this client bound (removed on drop).
    pub fn local_path(&self) -> &Path {
        &self.local
    }

    datagram_methods!();
}

impl Drop for UnixDatagramClient {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.local);
    }
}

/// Binds a not-yet-existing path under the temporary directory.
fn bind_temp() -> Result<(UnixDatagram, PathBuf)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..BIND_ATTEMPTS {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("sockloop-{}-{n}.sock", std::process::id()));
        match UnixDatagram::bind(&path) {
            Ok(sock) => return Ok((sock, path)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map(Error::from).unwrap_or(Error::Closed))
}
