//! Socket addresses of either family and Unix peer credentials.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A socket address of either family sockloop serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// An IP address and port.
    Inet(SocketAddr),
    /// A Unix socket path (`None` for an unnamed socket).
    Unix(Option<PathBuf>),
}

impl Addr {
    /// The IP address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(a) => Some(*a),
            Addr::Unix(_) => None,
        }
    }
}

/// An inet `Addr` connects as its `SocketAddr` does, so a server's
/// [`local_addr`](crate::Server::local_addr) goes straight to `TcpStream::connect` or a
/// client; a Unix address is an `InvalidInput` error.
impl std::net::ToSocketAddrs for Addr {
    type Iter = std::option::IntoIter<SocketAddr>;

    fn to_socket_addrs(&self) -> std::io::Result<Self::Iter> {
        match self {
            Addr::Inet(a) => Ok(Some(*a).into_iter()),
            Addr::Unix(_) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{self} is a Unix socket address, not an IP address"),
            )),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(a) => write!(f, "{a}"),
            Addr::Unix(Some(p)) => write!(f, "{}", p.display()),
            Addr::Unix(None) => f.write_str("(unnamed)"),
        }
    }
}

/// An [`Addr`] as a connection keeps it: an IPv4 address and port inline (8 bytes of
/// payload, 16 in all), any other address boxed. Most peers are IPv4, and the address is
/// read rarely (at accept, upgrade and close), so a connection pays 16 bytes for it
/// instead of the 32 an `Addr` takes.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum PeerAddr {
    /// An IPv4 address and port.
    V4([u8; 4], u16),
    /// Anything else (IPv6, Unix).
    Boxed(Box<Addr>),
}

impl PeerAddr {
    /// `a`, kept compactly.
    pub(crate) fn new(a: Addr) -> Self {
        match a {
            Addr::Inet(SocketAddr::V4(v4)) => PeerAddr::V4(v4.ip().octets(), v4.port()),
            other => PeerAddr::Boxed(Box::new(other)),
        }
    }

    /// The address.
    pub(crate) fn get(&self) -> Addr {
        match self {
            PeerAddr::V4(ip, port) => Addr::Inet(SocketAddr::from((*ip, *port))),
            PeerAddr::Boxed(a) => (**a).clone(),
        }
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

/// Credentials of the process at the other end of a Unix stream connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id.
    pub pid: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addr_keeps_every_family_and_ipv4_inline() {
        let v4: Addr = Addr::Inet("10.1.2.3:4567".parse().unwrap());
        let v6: Addr = Addr::Inet("[::1]:9".parse().unwrap());
        let unix = Addr::Unix(Some(PathBuf::from("/tmp/s.sock")));
        for a in [&v4, &v6, &unix, &Addr::Unix(None)] {
            assert_eq!(&PeerAddr::new(a.clone()).get(), a);
        }
        assert!(matches!(PeerAddr::new(v4), PeerAddr::V4(..)));
        assert!(matches!(PeerAddr::new(v6), PeerAddr::Boxed(..)));
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<PeerAddr>(), 16);
    }
}
