//! [`ClientOptions`]: timeouts and socket settings shared by every blocking client.

use std::time::Duration;

use crate::error::{Error, Result};

/// Settings for the blocking clients ([`TcpClient`](super::TcpClient),
/// [`TlsClient`](super::TlsClient), [`UnixClient`](super::UnixClient),
/// [`UdpClient`](super::UdpClient), [`UnixDatagramClient`](super::UnixDatagramClient)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sockloop::client::ClientOptions;
///
/// let opts = ClientOptions::default()
///     .connect_timeout(Duration::from_secs(2))
///     .read_timeout(Some(Duration::from_secs(5)))
///     .nodelay(false);
/// assert_eq!(opts.connect_timeout, Duration::from_secs(2));
/// assert_eq!(opts.write_timeout, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Time allowed for the whole connect: every resolved address is tried within it, and for
    /// TLS the handshake must finish within it too. Datagram clients do not wait (their
    /// connect is local). Default: 10 s.
    pub connect_timeout: Duration,
    /// Read timeout of the socket after connecting (`None`: reads block until data arrives).
    /// A read past it fails with `WouldBlock`/`TimedOut` through `std::io::Read`, and with
    /// [`Error::Timeout`] through the clients' own methods. Default: `None`.
    pub read_timeout: Option<Duration>,
    /// Write timeout of the socket after connecting (`None`: writes block until the peer
    /// makes room). Default: `None`.
    pub write_timeout: Option<Duration>,
    /// Disables Nagle's algorithm on TCP and TLS connections. Default: `true`.
    pub nodelay: bool,
    /// How long `close()` (and drop) waits for the peer to finish after our side is shut
    /// down, discarding what still arrives. Default: 1 s.
    pub close_timeout: Duration,
    /// Largest reply a stream client's `once_until`/`exchange` buffers before giving up,
    /// and the largest datagram a datagram client accepts. Default: 16 MiB for streams'
    /// replies; datagram clients cap their buffer at 64 KiB regardless.
    pub max_reply_size: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: None,
            write_timeout: None,
            nodelay: true,
            close_timeout: Duration::from_secs(1),
            max_reply_size: 16 << 20,
        }
    }
}

impl ClientOptions {
    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`read_timeout`](Self::read_timeout).
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Sets [`write_timeout`](Self::write_timeout).
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets [`nodelay`](Self::nodelay).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// Sets [`close_timeout`](Self::close_timeout).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`max_reply_size`](Self::max_reply_size).
    pub fn max_reply_size(mut self, bytes: usize) -> Self {
        self.max_reply_size = bytes;
        self
    }

    /// Checks the options once, before connecting.
    pub(crate) fn validate(&self) -> Result<()> {
        let zero = |t: Option<Duration>| t.is_some_and(|t| t.is_zero());
        if self.connect_timeout.is_zero() || self.close_timeout.is_zero() {
            return Err(Error::Config(
                "connect_timeout and close_timeout must be > 0".into(),
            ));
        }
        if zero(self.read_timeout) || zero(self.write_timeout) {
            return Err(Error::Config(
                "a read or write timeout must be > 0 (use None for no timeout)".into(),
            ));
        }
        if self.max_reply_size == 0 {
            return Err(Error::Config("max_reply_size must be > 0".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let o = ClientOptions::default();
        assert_eq!(o.connect_timeout, Duration::from_secs(10));
        assert_eq!((o.read_timeout, o.write_timeout), (None, None));
        assert!(o.nodelay);
        assert_eq!(o.close_timeout, Duration::from_secs(1));
        assert_eq!(o.max_reply_size, 16 << 20);
        assert!(o.validate().is_ok());
    }

    #[test]
    fn zero_timeouts_are_rejected() {
        let zero = Duration::ZERO;
        assert!(ClientOptions::default()
            .connect_timeout(zero)
            .validate()
            .is_err());
        assert!(ClientOptions::default()
            .read_timeout(Some(zero))
            .validate()
            .is_err());
        assert!(ClientOptions::default()
            .max_reply_size(0)
            .validate()
            .is_err());
    }
}
