//! The engine shared by the stream clients: buffered replies, deadlines, and clean close.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connect::{remaining, TlsStream};
use super::{ClientOptions, ReplyEnd};
use crate::error::{io_at, io_timed, Error, Result};
use crate::tls::io_error;

/// `e` as the crate's error, naming the operation and the peer (a TLS failure carried
/// inside it stays a TLS error; a timeout stays [`Error::Timeout`]).
pub(crate) fn located(op: &'static str, peer: &str, e: io::Error) -> Error {
    match io_error(e) {
        Error::Io(e) => Error::Io(io_at(op, peer, e)),
        other => other,
    }
}

/// A socket that can be duplicated, as `TcpStream::try_clone` does.
pub(crate) trait TryClone: Sized {
    /// Another handle to the same socket.
    fn try_clone_io(&self) -> io::Result<Self>;
}

impl TryClone for TcpStream {
    fn try_clone_io(&self) -> io::Result<Self> {
        self.try_clone()
    }
}

impl TryClone for UnixStream {
    fn try_clone_io(&self) -> io::Result<Self> {
        self.try_clone()
    }
}

/// Bytes read per call while waiting for a reply.
const READ_CHUNK: usize = 16 << 10;
/// Largest single write of a request under a deadline (about one TLS record).
const WRITE_CHUNK: usize = 16 << 10;
/// Most bytes `close` discards while waiting for the peer to finish.
const MAX_DRAIN: usize = 1 << 20;

/// A connected byte stream the clients can drive: a socket, or TLS over one.
pub(crate) trait Duplex: Read + Write {
    /// The socket's read timeout (`None`: block).
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// The socket's write timeout (`None`: block).
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// Shuts down the socket.
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// Announces the end of our data above the socket (TLS: close_notify) and flushes it.
    fn close_notify(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Duplex for TcpStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, t)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
}

impl Duplex for UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, t)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        UnixStream::shutdown(self, how)
    }
}

impl Duplex for TlsStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(t)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.sock.shutdown(how)
    }
    fn close_notify(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}

/// Whether the client may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Closed,
}

/// A stream plus the bytes read past the end of the last reply.
pub(crate) struct StreamCore<S: Duplex> {
    pub(crate) io: S,
    /// The peer's address or path, for error messages.
    peer: Arc<str>,
    /// One per handle to the socket ([`try_clone`](Self::try_clone)): dropping a handle
    /// closes the connection only when it was the last one.
    handles: Arc<()>,
    pending: Vec<u8>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    close_timeout: Duration,
    max_reply: usize,
    state: State,
}

impl<S: Duplex> StreamCore<S> {
    /// Wraps a stream connected to `peer` and applies the options' timeouts.
    pub(crate) fn new(io: S, peer: impl std::fmt::Display, opts: &ClientOptions) -> Result<Self> {
        io.set_read_timeout(opts.read_timeout)?;
        io.set_write_timeout(opts.write_timeout)?;
        Ok(StreamCore {
            io,
            peer: peer.to_string().into(),
            handles: Arc::new(()),
            pending: Vec::new(),
            read_timeout: opts.read_timeout,
            write_timeout: opts.write_timeout,
            close_timeout: opts.close_timeout,
            max_reply: opts.max_reply_size,
            state: State::Open,
        })
    }

    /// Another handle to the same connection, with its own (empty) reply buffer and the
    /// same timeout settings (the socket's, shared by both handles).
    pub(crate) fn try_clone(&self) -> Result<Self>
    where
        S: TryClone,
    {
        let io = self
            .io
            .try_clone_io()
            .map_err(|e| located("clone", &self.peer, e))?;
        Ok(StreamCore {
            io,
            peer: self.peer.clone(),
            handles: self.handles.clone(),
            pending: Vec::new(),
            read_timeout: self.read_timeout,
            write_timeout: self.write_timeout,
            close_timeout: self.close_timeout,
            max_reply: self.max_reply,
            state: self.state,
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    fn check_open(&self) -> Result<()> {
        match self.state {
            State::Open => Ok(()),
            State::Closed => Err(Error::Closed),
        }
    }

    pub(crate) fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    pub(crate) fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        self.io.set_read_timeout(t)?;
        self.read_timeout = t;
        Ok(())
    }

    pub(crate) fn set_write_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        self.io.set_write_timeout(t)?;
        self.write_timeout = t;
        Ok(())
    }

    /// Sends `request`, then reads until `end` is met; both before `timeout` elapses.
    pub(crate) fn exchange(
        &mut self,
        request: &[u8],
        end: ReplyEnd<'_>,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        self.check_open()?;
        end.validate()?;
        let deadline = crate::base::saturating(Instant::now(), timeout);
        let result = self
            .send_by(request, deadline)
            .and_then(|()| self.reply_by(end, deadline));
        let restored = self.restore_timeouts();
        let reply = result?;
        restored?;
        Ok(reply)
    }

    fn restore_timeouts(&mut self) -> Result<()> {
        self.io.set_read_timeout(self.read_timeout)?;
        self.io.set_write_timeout(self.write_timeout)?;
        Ok(())
    }

    fn send_by(&mut self, request: &[u8], deadline: Instant) -> Result<()> {
        if request.is_empty() {
            return Ok(());
        }
        // Each write gets only the time left, so a peer that keeps reading slowly cannot
        // stretch the call past its deadline (one timeout for a whole `write_all` could).
        let mut rest = request;
        while !rest.is_empty() {
            self.io.set_write_timeout(Some(remaining(deadline)?))?;
            let chunk = rest.len().min(WRITE_CHUNK);
            match self.io.write(&rest[..chunk]) {
                Ok(0) => return Err(Error::Closed),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(located("write", &self.peer, e)),
            }
        }
        self.io.set_write_timeout(Some(remaining(deadline)?))?;
        let peer = &self.peer;
        self.io.flush().map_err(|e| located("write", peer, e))
    }

    fn reply_by(&mut self, end: ReplyEnd<'_>, deadline: Instant) -> Result<Vec<u8>> {
        loop {
            if let Some(reply) = end.take(&mut self.pending) {
                return Ok(reply);
            }
            if self.pending.len() >= self.max_reply {
                return Err(too_large(self.max_reply));
            }
            let mut chunk = [0u8; READ_CHUNK];
            match self.read_by(&mut chunk, deadline)? {
                0 => return end.at_eof(&mut self.pending),
                n => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// One read before `deadline`; `Ok(0)` at end of stream (for TLS, also when the peer
    /// closed TCP without close_notify).
    fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize> {
        loop {
            self.io.set_read_timeout(Some(remaining(deadline)?))?;
            match self.io.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(located("read", &self.peer, e)),
            }
        }
    }

    /// Shuts our side down (TLS: close_notify first), then discards what still arrives
    /// until the peer closes, `close_timeout` passes, or 1 MiB was discarded.
    pub(crate) fn close(&mut self) -> Result<()> {
        if self.state == State::Closed {
            return Ok(());
        }
        self.state = State::Closed;
        self.pending = Vec::new();
        let deadline = crate::base::saturating(Instant::now(), self.close_timeout);
        let _ = self.io.set_write_timeout(Some(self.close_timeout));
        let sent = self
            .io
            .close_notify()
            .and_then(|()| self.io.shutdown(Shutdown::Write));
        if let Err(e) = sent {
            let _ = self.io.shutdown(Shutdown::Both);
            return match e.kind() {
                io::ErrorKind::NotConnected => Ok(()),
                _ => Err(located("close", &self.peer, e)),
            };
        }
        self.drain(deadline);
        let _ = self.io.shutdown(Shutdown::Both);
        Ok(())
    }

    fn drain(&mut self, deadline: Instant) {
        let mut chunk = [0u8; READ_CHUNK];
        let mut left = MAX_DRAIN;
        while left > 0 {
            match self.read_by(&mut chunk, deadline) {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => return,
            }
        }
    }
}

impl<S: Duplex> Drop for StreamCore<S> {
    /// The last handle to a connection closes it; a clone's drop leaves it open.
    fn drop(&mut self) {
        if Arc::strong_count(&self.handles) == 1 {
            let _ = self.close();
        }
    }
}

impl<S: Duplex> Read for StreamCore<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.pending.is_empty() {
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            return Ok(n);
        }
        if self.is_closed() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        self.io
            .read(buf)
            .map_err(|e| io_timed("read", &self.peer, e))
    }
}

impl<S: Duplex> Write for StreamCore<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.is_closed() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        self.io
            .write(buf)
            .map_err(|e| io_timed("write", &self.peer, e))
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.is_closed() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        self.io
            .flush()
            .map_err(|e| io_timed("write", &self.peer, e))
    }
}

fn too_large(limit: usize) -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the reply exceeds max_reply_size ({limit} bytes)"),
    ))
}

/// The methods every stream client shares, delegated to its `core`.
macro_rules! stream_methods {
    () => {
        /// Sends `request`, then returns the bytes of the first read that returns any (the
        /// peer's first burst; bytes left over from an earlier reply come first). Both must
        /// happen within `timeout`.
        ///
        /// # Errors
        ///
        /// [`Error::Timeout`](crate::Error::Timeout) when no reply arrived in time;
        /// [`Error::Closed`](crate::Error::Closed) when the peer closed before replying or
        /// after [`close`](Self::close); I/O (and for TLS, [`Error::Tls`](crate::Error::Tls))
        /// errors.
        pub fn once(&mut self, request: &[u8], timeout: std::time::Duration) -> Result<Vec<u8>> {
            self.core
                .exchange(request, super::ReplyEnd::FirstRead, timeout)
        }

        /// Sends `request`, then reads until `delimiter` (non-empty) has arrived, and
        /// returns the reply including the delimiter; bytes past it stay buffered for the
        /// next read. Both must happen within `timeout`.
        ///
        /// # Errors
        ///
        /// As [`once`](Self::once); [`Error::Config`](crate::Error::Config) for an empty
        /// delimiter; [`Error::Io`](crate::Error::Io) (`InvalidData`) past
        /// [`max_reply_size`](super::ClientOptions::max_reply_size). On a timeout the
        /// partial reply stays buffered.
        pub fn once_until(
            &mut self,
            request: &[u8],
            delimiter: &[u8],
            timeout: std::time::Duration,
        ) -> Result<Vec<u8>> {
            self.core
                .exchange(request, super::ReplyEnd::Delimiter(delimiter), timeout)
        }

        /// Sends `request` (nothing when empty), then reads until `end` is met; both within
        /// `timeout`. The general form of [`once`](Self::once) and
        /// [`once_until`](Self::once_until).
        ///
        /// # Errors
        ///
        /// As [`once_until`](Self::once_until).
        pub fn exchange(
            &mut self,
            request: &[u8],
            end: super::ReplyEnd<'_>,
            timeout: std::time::Duration,
        ) -> Result<Vec<u8>> {
            self.core.exchange(request, end, timeout)
        }

        /// Sets the read timeout used by `std::io::Read` (`None`: block).
        ///
        /// # Errors
        ///
        /// As `set_read_timeout` on the socket: a zero duration is refused.
        pub fn set_read_timeout(&mut self, timeout: Option<std::time::Duration>) -> Result<()> {
            self.core.set_read_timeout(timeout)
        }

        /// Sets the write timeout used by `std::io::Write` (`None`: block).
        ///
        /// # Errors
        ///
        /// As `set_write_timeout` on the socket: a zero duration is refused.
        pub fn set_write_timeout(&mut self, timeout: Option<std::time::Duration>) -> Result<()> {
            self.core.set_write_timeout(timeout)
        }

        /// The current read timeout.
        pub fn read_timeout(&self) -> Option<std::time::Duration> {
            self.core.read_timeout()
        }

        /// The current write timeout.
        pub fn write_timeout(&self) -> Option<std::time::Duration> {
            self.core.write_timeout()
        }

        /// Closes cleanly: announces the end of our data (TLS: close_notify; then a write
        /// shutdown), discards what the peer still sends until it closes, for at most
        /// [`close_timeout`](super::ClientOptions::close_timeout) and 1 MiB, then shuts the
        /// socket down. Dropping the client does the same. Closing twice is a no-op; after
        /// it, reads and writes fail with `NotConnected` and the client's own methods with
        /// [`Error::Closed`](crate::Error::Closed).
        ///
        /// # Errors
        ///
        /// I/O errors while sending close_notify or shutting down (the socket is shut down
        /// anyway). A peer that does not close in time is not an error.
        pub fn close(&mut self) -> Result<()> {
            self.core.close()
        }

        /// Whether [`close`](Self::close) was called.
        pub fn is_closed(&self) -> bool {
            self.core.is_closed()
        }
    };
}

/// `std::io::Read` and `Write` for a stream client, delegated to its `core`.
macro_rules! stream_io {
    ($client:ty) => {
        impl std::io::Read for $client {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                std::io::Read::read(&mut self.core, buf)
            }
        }

        impl std::io::Write for $client {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::io::Write::write(&mut self.core, buf)
            }

            fn flush(&mut self) -> std::io::Result<()> {
                std::io::Write::flush(&mut self.core)
            }
        }
    };
}

pub(crate) use {stream_io, stream_methods};

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(100);
    const LONG: Duration = Duration::from_secs(10);

    fn pair() -> (StreamCore<UnixStream>, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_read_timeout(Some(LONG)).unwrap();
        let opts = ClientOptions::default().close_timeout(SHORT);
        (StreamCore::new(a, "peer", &opts).unwrap(), b)
    }

    #[test]
    fn a_timed_out_reply_keeps_its_partial_bytes() {
        let (mut core, mut peer) = pair();
        peer.write_all(b"par").unwrap();
        let end = ReplyEnd::Delimiter(b"\n");
        assert!(matches!(
            core.exchange(b"", end, SHORT),
            Err(Error::Timeout)
        ));
        peer.write_all(b"tial\nmore").unwrap();
        assert_eq!(core.exchange(b"", end, LONG).unwrap(), b"partial\n");
        let mut rest = [0u8; 4];
        core.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"more");
    }

    #[test]
    fn the_request_reaches_the_peer() {
        let (mut core, mut peer) = pair();
        let t = std::thread::spawn(move || {
            let mut req = [0u8; 3];
            peer.read_exact(&mut req).unwrap();
            peer.write_all(&req).unwrap();
            peer
        });
        assert_eq!(
            core.exchange(b"abc", ReplyEnd::Length(3), LONG).unwrap(),
            b"abc"
        );
        drop(t.join().unwrap());
    }

    #[test]
    fn a_reply_past_the_limit_is_refused() {
        let (a, mut peer) = UnixStream::pair().unwrap();
        let opts = ClientOptions::default().max_reply_size(8);
        let mut core = StreamCore::new(a, "peer", &opts).unwrap();
        peer.write_all(b"0123456789").unwrap();
        let err = core
            .exchange(b"", ReplyEnd::Delimiter(b"\n"), LONG)
            .unwrap_err();
        assert!(err.to_string().contains("max_reply_size"), "{err}");
    }

    #[test]
    fn close_shuts_down_writes_and_is_bounded_by_a_silent_peer() {
        let (mut core, mut peer) = pair();
        core.close().unwrap(); // the peer never closes: bounded by close_timeout
        let mut buf = [0u8; 1];
        assert_eq!(
            peer.read(&mut buf).unwrap(),
            0,
            "the peer sees end of stream"
        );
        assert!(matches!(
            core.exchange(b"x", ReplyEnd::FirstRead, LONG),
            Err(Error::Closed)
        ));
        assert_eq!(
            core.write(b"x").unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
        core.close().unwrap();
    }

    #[test]
    fn close_returns_once_the_peer_closes() {
        let (mut core, peer) = pair();
        let t = std::thread::spawn(move || {
            let mut peer = peer;
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            peer.write_all(b"late bytes are discarded").unwrap();
            all
        });
        core.write_all(b"last").unwrap();
        core.close().unwrap();
        assert_eq!(t.join().unwrap(), b"last");
    }
}
