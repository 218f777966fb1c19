//! A blocking WebSocket client (ws:// and wss://) for scripts and tests, on the crate's own
//! sans-IO engine.
//!
//! # Examples
//!
//! ```no_run
//! use sockloop::client::ws::{Message, WsClient, WsClientOptions};
//!
//! let mut ws = WsClient::connect("ws://127.0.0.1:9001/", WsClientOptions::default())?;
//! ws.send_text("hello")?;
//! if let Message::Text(echo) = ws.recv()? {
//!     assert_eq!(echo, "hello");
//! }
//! ws.close(sockloop::ws::CloseCode::NORMAL, "bye")?;
//! # Ok::<(), sockloop::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::error::{Error, Result};
use crate::proto::ws::handshake::ClientHandshake;
use crate::proto::ws::session::{close_reply, Decoded, Incoming, Scratch, WsSession};
use crate::proto::ws::{CloseCode, DeflateMode, DeflateParams, OpCode, Role, WsConfig, WsError};
use crate::tls::TlsError;

/// Bytes read from the socket per `read` call.
const READ_CHUNK: usize = 16 << 10;

/// A message received by [`WsClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping from the server (already answered with a pong).
    Ping(Vec<u8>),
    /// A pong (the answer to [`WsClient::ping`]).
    Pong(Vec<u8>),
    /// The server closed (1005 when its close frame had no code); the close was answered.
    Close(CloseCode, String),
}

/// Options for [`WsClient::connect`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sockloop::client::ws::WsClientOptions;
///
/// let opts = WsClientOptions::default()
///     .header("Authorization", "Bearer token")
///     .connect_timeout(Duration::from_secs(2))
///     .deflate(false);
/// assert!(!opts.deflate);
/// ```
#[derive(Debug, Clone)]
pub struct WsClientOptions {
    /// Extra request headers (cookies, authorization). Default: none.
    pub headers: Vec<(String, String)>,
    /// Time allowed for the TCP connect (per resolved address). Default: 10 s.
    pub connect_timeout: Duration,
    /// Time allowed for the TLS and WebSocket handshakes after connecting. Default: 10 s.
    pub handshake_timeout: Duration,
    /// TLS settings for `wss://`. `None` uses a configuration with **no trusted roots**, so
    /// every certificate fails verification: pass a config with the roots you trust (a test
    /// CA, or the platform roots loaded by your program). Default: `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Offer permessage-deflate. Default: `true`.
    pub deflate: bool,
    /// Limits, subprotocols to offer, close timeout and compression settings.
    /// Default: [`WsConfig::default`].
    pub config: WsConfig,
}

impl Default for WsClientOptions {
    fn default() -> Self {
        WsClientOptions {
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            tls: None,
            deflate: true,
            config: WsConfig::default(),
        }
    }
}

impl WsClientOptions {
    /// Adds a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`tls`](Self::tls).
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Sets [`deflate`](Self::deflate).
    pub fn deflate(mut self, on: bool) -> Self {
        self.deflate = on;
        self
    }

    /// Sets [`config`](Self::config).
    pub fn config(mut self, config: WsConfig) -> Self {
        self.config = config;
        self
    }

    fn ws_config(&self) -> WsConfig {
        let mut cfg = self.config.clone();
        if !self.deflate {
            cfg.deflate.mode = DeflateMode::Off;
        } else if !cfg.deflate.enabled() {
            cfg.deflate.mode = DeflateMode::NoContextTakeover;
        }
        cfg
    }
}

/// A plain or TLS byte stream.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    tls: bool,
    host: String,
    port: u16,
    authority: String,
    target: String,
}

fn parse_url(url: &str) -> Result<Url> {
    let bad = || Error::Config(format!("invalid WebSocket URL: {url:?}"));
    let (tls, rest) = match url.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("ws") => (false, rest),
        Some((s, rest)) if s.eq_ignore_ascii_case("wss") => (true, rest),
        _ => return Err(bad()),
    };
    let rest = rest.split('#').next().unwrap_or("");
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    let authority = authority.rsplit('@').next().unwrap_or("");
    let target = match target {
        "" => "/".to_owned(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_owned(),
    };
    let (host, port) = split_host_port(authority).ok_or_else(bad)?;
    let port = port.unwrap_or(if tls { 443 } else { 80 });
    Ok(Url {
        tls,
        host,
        port,
        authority: authority.to_owned(),
        target,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((host.to_owned(), port))
}

/// A TLS configuration trusting nothing (see [`WsClientOptions::tls`]).
fn no_roots_tls() -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(TlsError::Rustls(e)))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn connect_tcp(url: &Url, timeout: Duration) -> Result<TcpStream> {
    let mut last = None;
    for addr in (url.host.as_str(), url.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(crate::error::io_at("connect", addr, e)),
        }
    }
    Err(last
        .map(Error::from)
        .unwrap_or_else(|| Error::Config(format!("{} resolves to no address", url.host))))
}

fn wrap_tls(tcp: TcpStream, url: &Url, opts: &WsClientOptions) -> Result<Stream> {
    if !url.tls {
        return Ok(Stream::Plain(tcp));
    }
    let config = match &opts.tls {
        Some(c) => Arc::clone(c),
        None => no_roots_tls()?,
    };
    let name = ServerName::try_from(url.host.clone())
        .map_err(|_| Error::Config(format!("invalid TLS server name {:?}", url.host)))?;
    let conn =
        rustls::ClientConnection::new(config, name).map_err(|e| Error::Tls(TlsError::Rustls(e)))?;
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

/// A blocking WebSocket connection. Pings are answered automatically; a close from the
/// server is answered, reported once as [`Message::Close`], and then every call returns
/// [`Error::Closed`].
pub struct WsClient {
    stream: Stream,
    session: WsSession,
    cfg: WsConfig,
    scratch: Scratch,
    rbuf: Vec<u8>,
    rpos: usize,
    out: Vec<u8>,
    protocol: Option<String>,
    done: bool,
}

impl WsClient {
    /// Connects to `url` (`ws://host[:port]/path?query` or `wss://...`) and completes the
    /// opening handshake.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL; [`Error::Io`] or [`Error::Timeout`] for network
    /// failures (TLS verification failures arrive as [`Error::Io`] wrapping the rustls
    /// error); [`Error::WebSocket`] with [`WsError::Refused`] when the server refused (its
    /// HTTP status and the reason it gave), or [`WsError::Handshake`] when it answered with
    /// an invalid 101.
    pub fn connect(url: &str, opts: WsClientOptions) -> Result<WsClient> {
        let url = parse_url(url)?;
        let tcp = connect_tcp(&url, opts.connect_timeout)?;
        tcp.set_nodelay(true)?;
        let deadline = crate::base::saturating(Instant::now(), opts.handshake_timeout);
        let stream = wrap_tls(tcp, &url, &opts)?;
        let mut client = WsClient {
            stream,
            session: WsSession::new(Role::Client, None),
            cfg: opts.ws_config(),
            scratch: Scratch::new(),
            rbuf: Vec::new(),
            rpos: 0,
            out: Vec::new(),
            protocol: None,
            done: false,
        };
        client.handshake(&url, &opts.headers, deadline)?;
        Ok(client)
    }

    fn handshake(
        &mut self,
        url: &Url,
        headers: &[(String, String)],
        deadline: Instant,
    ) -> Result<()> {
        let hs = ClientHandshake::request(
            &url.authority,
            &url.target,
            headers,
            &self.cfg,
            nonce(),
            &mut self.out,
        );
        self.set_write_deadline(Some(deadline))?;
        self.flush_out()?;
        let accepted = loop {
            if let Some(a) = hs.response(&self.rbuf, &self.cfg)? {
                break a;
            }
            if !self.fill(Some(deadline))? {
                return Err(Error::Timeout);
            }
        };
        self.set_write_deadline(None)?;
        self.rpos = accepted.consumed;
        self.session = WsSession::new(Role::Client, accepted.deflate);
        self.protocol = accepted.protocol;
        Ok(())
    }

    /// The negotiated permessage-deflate parameters (`None`: uncompressed).
    pub fn deflate(&self) -> Option<DeflateParams> {
        self.session.deflate()
    }

    /// The subprotocol the server chose, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The server's address.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        Ok(self.stream.tcp().peer_addr()?)
    }

    /// Sends a text message.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after a close; I/O errors.
    pub fn send_text(&mut self, text: &str) -> Result<()> {
        self.send(OpCode::Text, text.as_bytes())
    }

    /// Sends a binary message.
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<()> {
        self.send(OpCode::Binary, data)
    }

    /// Sends a ping (payload cut to 125 bytes); its pong arrives through [`recv`](Self::recv).
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    pub fn ping(&mut self, payload: &[u8]) -> Result<()> {
        self.send(OpCode::Ping, payload)
    }

    /// Writes `bytes` to the connection as they are, bypassing framing and masking: for
    /// tests that send protocol violations.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()?;
        Ok(())
    }

    fn send(&mut self, op: OpCode, payload: &[u8]) -> Result<()> {
        if self.done || self.session.close_sent() {
            return Err(Error::Closed);
        }
        self.session
            .encode(&mut self.out, op, payload, &self.cfg, &mut self.scratch.tx);
        self.flush_out()
    }

    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the close was reported or the server hung up;
    /// [`Error::WebSocket`] when the server broke the protocol (a close with the matching
    /// code was sent to it); I/O errors.
    pub fn recv(&mut self) -> Result<Message> {
        self.stream.tcp().set_read_timeout(None)?;
        match self.recv_until(None)? {
            Some(m) => Ok(m),
            None => Err(Error::Timeout),
        }
    }

    /// Waits up to `timeout` for the next message; `Ok(None)` when none came in time.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Message>> {
        self.recv_until(Some(crate::base::saturating(Instant::now(), timeout)))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<Option<Message>> {
        loop {
            if let Some(m) = self.decode_one()? {
                return Ok(Some(m));
            }
            if self.done {
                return Err(Error::Closed);
            }
            if !self.fill(deadline)? {
                return Ok(None);
            }
        }
    }

    /// Decodes one message from the buffered bytes, answering pings and closes.
    fn decode_one(&mut self) -> Result<Option<Message>> {
        while !self.done && self.rpos < self.rbuf.len() {
            let decoded = self.session.decode_next(
                &mut self.rbuf[self.rpos..],
                &self.cfg,
                &mut self.scratch.rx,
            );
            let (msg, consumed) = match decoded {
                Err(e) => return Err(self.fail(e)),
                Ok(Decoded::NeedMore(_)) => break,
                Ok(Decoded::Frame { msg, consumed }) => (msg.map(owned), consumed),
            };
            self.rpos += consumed;
            if let Some(m) = msg {
                self.answer(&m)?;
                return Ok(Some(m));
            }
        }
        self.compact();
        Ok(None)
    }

    fn answer(&mut self, msg: &Message) -> Result<()> {
        match msg {
            Message::Ping(p) if !self.session.close_sent() => {
                let tx = &mut self.scratch.tx;
                self.session
                    .encode(&mut self.out, OpCode::Pong, p, &self.cfg, tx);
                self.flush_out()
            }
            Message::Close(code, _) => {
                self.done = true;
                let reply = close_reply(*code);
                let tx = &mut self.scratch.tx;
                if self.session.encode_close(&mut self.out, reply, "", tx) {
                    let _ = self.flush_out();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The server broke the protocol: tell it why, stop, and report the error.
    fn fail(&mut self, e: WsError) -> Error {
        self.done = true;
        let tx = &mut self.scratch.tx;
        if self
            .session
            .encode_close(&mut self.out, e.close_code(), e.reason(), tx)
        {
            let _ = self.flush_out();
        }
        Error::WebSocket(e)
    }

    fn compact(&mut self) {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > READ_CHUNK {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
    }

    /// Reads more bytes; `Ok(false)` when the deadline passed first.
    fn fill(&mut self, deadline: Option<Instant>) -> Result<bool> {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.stream.tcp().set_read_timeout(Some(left))?;
        }
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.done = true;
                    return Err(Error::Closed);
                }
                Ok(n) => {
                    self.rbuf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn set_write_deadline(&self, deadline: Option<Instant>) -> Result<()> {
        let left = deadline.map(|d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        self.stream.tcp().set_write_timeout(left)?;
        self.stream.tcp().set_read_timeout(left)?;
        Ok(())
    }

    fn flush_out(&mut self) -> Result<()> {
        let result = self
            .stream
            .write_all(&self.out)
            .and_then(|()| self.stream.flush());
        self.out.clear();
        Ok(result?)
    }

    /// Sends a close frame and waits (up to the configured close timeout) for the server's
    /// close, discarding any messages still arriving; then shuts the connection down.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the connection was already closed; I/O errors while sending.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        if self.done {
            return Err(Error::Closed);
        }
        let tx = &mut self.scratch.tx;
        if self
            .session
            .encode_close(&mut self.out, Some(code), reason, tx)
        {
            self.flush_out()?;
        }
        let deadline = crate::base::saturating(Instant::now(), self.cfg.close_timeout);
        while !self.done {
            match self.recv_until(Some(deadline)) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.done = true;
        let _ = self.stream.tcp().shutdown(std::net::Shutdown::Both);
        Ok(())
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn owned(m: Incoming<'_>) -> Message {
    match m {
        Incoming::Text(t) => Message::Text(t.to_owned()),
        Incoming::Binary(b) => Message::Binary(b.to_vec()),
        Incoming::Ping(b) => Message::Ping(b.to_vec()),
        Incoming::Pong(b) => Message::Pong(b.to_vec()),
        Incoming::Close(c, r) => Message::Close(c, r.to_owned()),
    }
}

/// 16 random bytes for `Sec-WebSocket-Key`.
fn nonce() -> [u8; 16] {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut key).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        key = t.to_le_bytes();
    }
    key
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;
