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
