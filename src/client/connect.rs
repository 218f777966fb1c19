//! Connecting within a deadline: TCP (every resolved address), Unix streams (a full
//! backlog is retried), and the TLS handshake.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{io_at, Error, Result};

/// A TLS stream over TCP, as the TLS client drives it.
pub(crate) type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Pause between attempts while a Unix listener's backlog is full.
const BACKLOG_RETRY: Duration = Duration::from_millis(5);

/// Time left before `deadline`; [`Error::Timeout`] once it has passed.
pub(crate) fn remaining(deadline: Instant) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout);
    }
    Ok(left)
}

/// Connects to the first resolved address that answers before `deadline`.
/// Errors name the address: `connect 127.0.0.1:7000: Connection refused (os error 111)`.
pub(crate) fn tcp(addr: impl ToSocketAddrs, deadline: Instant) -> Result<TcpStream> {
    let mut last = None;
    let all = addr.to_socket_addrs().map_err(|e| match e.kind() {
        io::ErrorKind::InvalidInput => e,
        _ => io_at("resolve", "the address", e),
    })?;
    for a in all {
        match TcpStream::connect_timeout(&a, remaining(deadline)?) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(io_at("connect", a, e)),
        }
    }
    Err(last
        .map(Error::from)
        .unwrap_or_else(|| Error::Config("the address resolves to nothing".into())))
}

/// Connects to a Unix stream socket, retrying while its backlog is full, until `deadline`.
/// Errors name the path: `connect /run/app.sock: No such file or directory (os error 2)`.
pub(crate) fn unix(path: &Path, deadline: Instant) -> Result<UnixStream> {
    let named = |e| Error::from(io_at("connect", path.display(), e));
    let sock = crate::sys::UnixConnect::new(path).map_err(named)?;
    loop {
        match sock.attempt() {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(remaining(deadline)?.min(BACKLOG_RETRY));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(named(e)),
        }
    }
    sock.finish().map_err(named)
}

/// Drives the client handshake to completion before `deadline`.
pub(crate) fn tls_handshake(s: &mut TlsStream, deadline: Instant) -> Result<()> {
    let peer = s.sock.peer_addr()?.to_string();
    let io_error = |e| super::stream::located("handshake", &peer, e);
    while s.conn.is_handshaking() {
        let left = remaining(deadline)?;
        s.sock.set_read_timeout(Some(left))?;
        s.sock.set_write_timeout(Some(left))?;
        match s.conn.complete_io(&mut s.sock) {
            Ok((0, 0)) if s.conn.is_handshaking() => return Err(Error::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(Error::Closed),
            Err(e) => return Err(io_error(e)),
        }
    }
    while s.conn.wants_write() {
        s.conn.write_tls(&mut s.sock).map_err(io_error)?;
    }
    Ok(())
}
