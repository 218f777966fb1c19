//! A blocking HTTP long-polling client (docs/PROTOCOL.md, "Long-polling transport"), with
//! the same methods as [`WsClient`](crate::client::ws::WsClient): where WebSocket is
//! blocked, the same program talks to the same handlers over plain HTTP requests.
//!
//! One internal thread holds the GET and hands received messages over; sends are POSTs
//! made by the caller's thread. A response lost on the way (a cut connection) is asked
//! for again with the same acknowledgement, so nothing is lost or duplicated; a POST whose
//! answer was lost is sent again with the same batch number, which the server delivers
//! once. `http://` (or `ws://`), and `https://` (or `wss://`) with
//! [`PollingOptions::tls`].
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use sockloop::client::polling::{PollingClient, PollingOptions};
//! use sockloop::client::ws::Message;
//!
//! let mut c = PollingClient::connect("http://127.0.0.1:9001/", PollingOptions::default())?;
//! c.send_text("hello")?;
//! if let Some(Message::Text(echo)) = c.recv_timeout(Duration::from_secs(5))? {
//!     assert_eq!(echo, "hello");
//! }
//! c.close()?;
//! # Ok::<(), sockloop::Error>(())
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::client::ws::Message;
use crate::error::{Error, Result};
use crate::proto::ws::{CloseCode, WsError};
use crate::server::longpoll::wire::{self, Kind};

/// Most response-head bytes the client reads.
const MAX_HEAD: usize = 16 << 10;
/// Pause before asking again after a refused (409) or failed GET.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Options of a [`PollingClient`]. Every default is listed on its setter.
#[derive(Debug, Clone)]
pub struct PollingOptions {
    connect_timeout: Duration,
    request_timeout: Duration,
    headers: Vec<(String, String)>,
    tls: Option<Arc<rustls::ClientConfig>>,
    retry_for: Duration,
}

impl Default for PollingOptions {
    fn default() -> Self {
        PollingOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            headers: Vec::new(),
            tls: None,
            retry_for: Duration::from_secs(30),
        }
    }
}

impl PollingOptions {
    /// Time to connect each HTTP connection (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Time for the server to answer a handshake or POST; a GET may take the server's
    /// poll interval more (default 10 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// How long a send keeps trying, on new connections, after its request failed or timed
    /// out (default 30 s; the server delivers a batch once however often it arrives).
    pub fn retry_for(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    /// The TLS configuration for `https://` URLs (its roots decide which servers are
    /// trusted; default: none is, so `https://` needs this).
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// An extra header sent with every request (cookies, authorization, `Origin`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Where the server is: the socket address, `Host`, the path and the user's query.
#[derive(Debug, Clone)]
struct Target {
    /// TLS, with this server name.
    tls: Option<String>,
    addr: String,
    authority: String,
    path: String,
    query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target> {
        let bad = || Error::Config(format!("invalid long-polling URL: {url:?}"));
        let is = |s: &str, names: [&str; 2]| names.iter().any(|n| s.eq_ignore_ascii_case(n));
        let (tls, rest) = match url.split_once("://") {
            Some((s, rest)) if is(s, ["http", "ws"]) => (false, rest),
            Some((s, rest)) if is(s, ["https", "wss"]) => (true, rest),
            _ => return Err(bad()),
        };
        let rest = rest.split('#').next().unwrap_or("");
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.is_empty() {
            return Err(bad());
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let (host, addr) = match authority.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (h, authority.to_owned()),
            _ => (
                authority,
                format!("{authority}:{}", if tls { 443 } else { 80 }),
            ),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Target {
            tls: tls.then(|| host.to_owned()),
            addr,
            authority: authority.to_owned(),
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
            query: query.to_owned(),
        })
    }

    fn handshake(&self) -> String {
        match self.query.is_empty() {
            true => format!("{}?transport=polling", self.path),
            false => format!("{}?{}&transport=polling", self.path, self.query),
        }
    }

    fn session(&self, sid: &str, extra: &str) -> String {
        format!("{}?transport=polling&sid={sid}&{extra}", self.path)
    }
}

/// One keep-alive HTTP/1.1 connection, reopened when the server closed it.
struct Http {
    target: Target,
    opts: PollingOptions,
    sock: Option<Sock>,
    /// Where a clone of the socket is published so another thread can cut a wait short.
    shared: Option<Arc<Mutex<Option<TcpStream>>>>,
}

impl Http {
    fn new(target: Target, opts: PollingOptions) -> Self {
        Http {
            target,
            opts,
            sock: None,
            shared: None,
        }
    }

    fn socket(&mut self) -> Result<&mut Sock> {
        if self.sock.is_none() {
            let deadline = crate::base::saturating(Instant::now(), self.opts.connect_timeout);
            let s = crate::client::connect::tcp(self.target.addr.as_str(), deadline)?;
            s.set_nodelay(true)?;
            if let Some(shared) = &self.shared {
                *shared.lock().unwrap_or_else(|e| e.into_inner()) = s.try_clone().ok();
            }
            self.sock = Some(match &self.target.tls {
                None => Sock::Plain(s),
                Some(host) => Sock::Tls(Box::new(self.tls(s, host, deadline)?)),
            });
        }
        Ok(self.sock.as_mut().expect("just set"))
    }

    /// The TLS session over `tcp`, its handshake done before `deadline`.
    fn tls(&self, tcp: TcpStream, host: &str, deadline: Instant) -> Result<TlsStream> {
        let Some(config) = self.opts.tls.clone() else {
            return Err(Error::Config("https:// needs PollingOptions::tls".into()));
        };
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| Error::Config(format!("invalid TLS server name {host:?}")))?;
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| Error::Tls(crate::tls::TlsError::Rustls(e)))?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        crate::client::connect::tls_handshake(&mut s, deadline)?;
        Ok(s)
    }

    /// Sends a request and reads the whole response, once more on a new connection if
    /// the kept one failed (every request of the protocol may be repeated).
    fn request(
        &mut self,
        method: &str,
        target: &str,
        body: &[u8],
        wait: Duration,
    ) -> Result<(u16, Vec<u8>)> {
        let reused = self.sock.is_some();
        match self.exchange(method, target, body, wait) {
            Err(_) if reused => {
                self.sock = None;
                self.exchange(method, target, body, wait)
            }
            r => r,
        }
    }

    fn exchange(
        &mut self,
        method: &str,
        target: &str,
        body: &[u8],
        wait: Duration,
    ) -> Result<(u16, Vec<u8>)> {
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\n",
            self.target.authority
        );
        for (k, v) in &self.opts.headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        let timeout = self.opts.request_timeout.saturating_add(wait);
        let sock = self.socket()?;
        sock.tcp().set_write_timeout(Some(timeout))?;
        sock.tcp().set_read_timeout(Some(timeout))?;
        let r = sock
            .write_all(&bytes)
            .and_then(|()| sock.flush())
            .map_err(Error::from)
            .and_then(|()| read_response(sock));
        if r.is_err() {
            self.sock = None;
        }
        r
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A connection to the server, plain or TLS.
enum Sock {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Sock {
    fn tcp(&self) -> &TcpStream {
        match self {
            Sock::Plain(s) => s,
            Sock::Tls(s) => &s.sock,
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Plain(s) => s.read(buf),
            Sock::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sock::Plain(s) => s.write(buf),
            Sock::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sock::Plain(s) => s.flush(),
            Sock::Tls(s) => s.flush(),
        }
    }
}

/// Reads one response with a Content-Length body.
fn read_response(sock: &mut Sock) -> Result<(u16, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 16 << 10];
    let (status, head, len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                break (resp.code.unwrap_or(0), n, len);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Err(Error::Closed),
        }
        let n = read_some(sock, &mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut body = buf.split_off(head);
    while body.len() < len {
        let n = read_some(sock, &mut chunk)?;
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok((status, body))
}

fn read_some(sock: &mut Sock, chunk: &mut [u8]) -> Result<usize> {
    loop {
        match sock.read(chunk) {
            Ok(0) => return Err(Error::Closed),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Error::Timeout)
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A refusal: the status and the body's text.
fn refused(status: u16, body: &[u8]) -> Error {
    let reason = String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(512)
        .collect();
    Error::WebSocket(WsError::Refused { status, reason })
}

/// What the handshake told the client.
struct Opened {
    sid: String,
    poll_interval: Duration,
    ping_timeout: Duration,
}

fn parse_handshake(body: &[u8]) -> Result<Opened> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::Config(format!("bad handshake answer: {e}")))?;
    let ms = |k: &str| Duration::from_millis(v[k].as_u64().unwrap_or(25_000));
    let sid = v["sid"]
        .as_str()
        .ok_or_else(|| Error::Config("handshake answer without sid".into()))?;
    Ok(Opened {
        sid: sid.to_owned(),
        poll_interval: ms("pingInterval"),
        ping_timeout: ms("pingTimeout"),
    })
}

/// A blocking long-polling client: one session, its messages in order, exactly once.
pub struct PollingClient {
    target: Target,
    sid: String,
    post: Http,
    posts: u64,
    rx: Receiver<Message>,
    stop: Arc<AtomicBool>,
    get_sock: Arc<Mutex<Option<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
    closed: bool,
}

impl std::fmt::Debug for PollingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollingClient")
            .field("server", &self.target.addr)
            .field("sid", &self.sid)
            .finish()
    }
}

impl PollingClient {
    /// Opens a session at `url` (`http://host:port/path?query`; `ws://` is taken as
    /// `http://`; the query goes to the authenticator) and starts the GET thread.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad URL or answer; [`Error::Io`] or [`Error::Timeout`] for
    /// network failures; [`Error::WebSocket`] with [`WsError::Refused`] when the server
    /// refused the handshake (its status and body text).
    pub fn connect(url: &str, opts: PollingOptions) -> Result<PollingClient> {
        let target = Target::parse(url)?;
        let mut post = Http::new(target.clone(), opts.clone());
        let (status, body) = post.request("GET", &target.handshake(), b"", Duration::ZERO)?;
        if status != 200 {
            return Err(refused(status, &body));
        }
        let opened = parse_handshake(&body)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let get_sock = Arc::new(Mutex::new(None));
        let mut get = Http::new(target.clone(), opts);
        get.shared = Some(get_sock.clone());
        let poller = Poller {
            http: get,
            sid: opened.sid.clone(),
            ack: 0,
            tx,
            stop: stop.clone(),
            wait: opened.poll_interval,
            give_up: opened.ping_timeout,
            limit: None,
        };
        let thread = std::thread::Builder::new()
            .name("lp-client-get".into())
            .spawn(move || poller.run())?;
        Ok(PollingClient {
            target,
            sid: opened.sid,
            post,
            posts: 0,
            rx,
            stop,
            get_sock,
            thread: Some(thread),
            closed: false,
        })
    }

    /// The session id the server gave.
    pub fn session_id(&self) -> &str {
        &self.sid
    }

    /// Sends a text message (one POST).
    ///
    /// # Errors
    /// See [`send_batch`](Self::send_batch).
    pub fn send_text(&mut self, text: &str) -> Result<()> {
        self.send_records(|b| wire::write_record(b, Kind::Text, text.as_bytes()))
    }

    /// Sends a binary message (one POST).
    ///
    /// # Errors
    /// See [`send_batch`](Self::send_batch).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<()> {
        self.send_records(|b| wire::write_record(b, Kind::Binary, data))
    }

    /// Sends several text and binary messages in one POST, delivered in order (other
    /// kinds of [`Message`] are skipped).
    ///
    /// # Errors
    /// [`Error::Closed`] after [`close`](Self::close) or the session's end; [`Error::Io`]
    /// or [`Error::Timeout`] when the server cannot be reached (a batch cut on the way is
    /// sent again on new connections for [`PollingOptions::retry_for`]; the server
    /// delivers it once); an
    /// [`Error::WebSocket`] [`WsError::Refused`] with the server's status and text when
    /// it refused the batch (413 too large, 400 unknown session…).
    pub fn send_batch(&mut self, messages: &[Message]) -> Result<()> {
        self.send_records(|b| {
            for m in messages {
                match m {
                    Message::Text(t) => wire::write_record(b, Kind::Text, t.as_bytes()),
                    Message::Binary(d) => wire::write_record(b, Kind::Binary, d),
                    _ => {}
                }
            }
        })
    }

    fn send_records(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        let mut body = Vec::new();
        f(&mut body);
        let seq = self.posts + 1;
        let target = self.target.session(&self.sid, &format!("seq={seq}"));
        // The batch may go any number of times: the server delivers its `seq` once.
        let give_up = crate::base::saturating(Instant::now(), self.post.opts.retry_for);
        loop {
            let retry = match self.post.request("POST", &target, &body, Duration::ZERO) {
                Ok((200, _)) => break,
                // The server still waits on an earlier try of this batch (its handler is
                // behind): ask again, which takes that try's place.
                Ok((409, _)) => None,
                Ok((status, reply)) => return Err(refused(status, &reply)),
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(Error::Io(e))
                }
                Err(e) => Some(e), // cut on the way: send it again on a new connection
            };
            if Instant::now() >= give_up {
                return Err(retry.unwrap_or(Error::Timeout));
            }
            std::thread::sleep(RETRY_PAUSE);
        }
        self.posts = seq;
        Ok(())
    }

    /// The next message, waiting at most `timeout`; `None` when none came in time. The
    /// last message of a session is [`Message::Close`] (1006 when the session was lost
    /// without one).
    ///
    /// # Errors
    /// [`Error::Closed`] once the session ended and every message was taken.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Message>> {
        match self.rx.recv_timeout(timeout) {
            Ok(m @ Message::Close(..)) => {
                self.ended();
                Ok(Some(m))
            }
            Ok(m) => Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }

    /// Closes the session (a close record, 1000) and stops the GET thread. Harmless twice.
    ///
    /// # Errors
    /// None in practice: a server that cannot be reached expires the session itself.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let _ = self.send_records(|b| wire::write_close(b, CloseCode::NORMAL.as_u16(), ""));
        self.stop.store(true, Ordering::Release);
        self.ended();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }
}

impl PollingClient {
    /// The session is over: no more sends, and the POST connection goes.
    fn ended(&mut self) {
        self.closed = true;
        self.post.sock = None;
        let get = self
            .get_sock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(s) = get {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for PollingClient {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Drop for Poller {
    /// The thread ends: its socket must not stay open through the published clone.
    fn drop(&mut self) {
        if let Some(shared) = &self.http.shared {
            shared.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }
}

/// The GET thread: polls, acknowledges, hands messages over in order, once each.
struct Poller {
    http: Http,
    sid: String,
    /// The last sequence number received whole.
    ack: u64,
    tx: Sender<Message>,
    stop: Arc<AtomicBool>,
    wait: Duration,
    give_up: Duration,
    /// The batch size asked for (`None`: the server's): halved after each failed GET,
    /// doubled after each answered one, so a path that cuts long responses still moves.
    limit: Option<usize>,
}

/// The smallest batch cap asked for (one record is always sent, however large).
const MIN_LIMIT: usize = 256;
/// Past this cap the server's own applies again.
const MAX_LIMIT: usize = 1 << 20;

impl Poller {
    fn run(mut self) {
        let mut failing_since: Option<Instant> = None;
        while !self.stop.load(Ordering::Acquire) {
            let query = match self.limit {
                Some(l) => format!("ack={}&max={l}", self.ack),
                None => format!("ack={}", self.ack),
            };
            let target = self.http.target.session(&self.sid, &query);
            match self.http.request("GET", &target, b"", self.wait) {
                Ok((200, body)) => {
                    failing_since = None;
                    self.limit = self.limit.map(|l| l * 2).filter(|&l| l < MAX_LIMIT);
                    if self.batch(&body) {
                        return;
                    }
                }
                Ok((409, _)) => std::thread::sleep(RETRY_PAUSE),
                Ok((status, body)) => {
                    let reason = String::from_utf8_lossy(&body).trim().to_owned();
                    log::debug!("long-poll GET refused: {status} {reason}");
                    return self.end("session lost");
                }
                Err(_) if self.stop.load(Ordering::Acquire) => return,
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // Nobody listens: the server (and its sessions) is gone.
                    return self.end("server unreachable");
                }
                Err(_) => {
                    let smaller = self.limit.map_or(64 << 10, |l| l / 2);
                    self.limit = Some(smaller.max(MIN_LIMIT));
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.give_up {
                        return self.end("server unreachable");
                    }
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
    }

    /// Delivers a batch's new records; true when it held the close.
    fn batch(&mut self, body: &[u8]) -> bool {
        let Ok((seq, records)) = wire::parse_batch(body) else {
            std::thread::sleep(RETRY_PAUSE);
            return false; // asked again with the same ack
        };
        for (i, r) in records.iter().enumerate() {
            let s = seq + i as u64;
            if s <= self.ack {
                continue; // a batch sent again: already delivered
            }
            self.ack = s;
            let m = match r.kind {
                Kind::Text => Message::Text(r.text().to_owned()),
                Kind::Binary => Message::Binary(r.payload.to_vec()),
                Kind::Close => {
                    let (code, reason) = r.close();
                    self.confirm();
                    let _ = self
                        .tx
                        .send(Message::Close(CloseCode::from(code), reason.into()));
                    return true;
                }
            };
            let _ = self.tx.send(m);
        }
        false
    }

    /// Acknowledges the close record (the server then ends the session at once).
    fn confirm(&mut self) {
        let target = self
            .http
            .target
            .session(&self.sid, &format!("ack={}", self.ack));
        let _ = self.http.request("GET", &target, b"", Duration::ZERO);
    }

    fn end(&mut self, why: &str) {
        let _ = self
            .tx
            .send(Message::Close(CloseCode::ABNORMAL, why.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_path_query_port_and_tls() {
        let t = Target::parse("http://127.0.0.1:9/chat?user=ann").unwrap();
        assert_eq!((t.addr.as_str(), t.path.as_str()), ("127.0.0.1:9", "/chat"));
        assert_eq!(t.handshake(), "/chat?user=ann&transport=polling");
        assert_eq!(
            t.session("s", "ack=3"),
            "/chat?transport=polling&sid=s&ack=3"
        );
        let t = Target::parse("ws://example.com").unwrap();
        assert_eq!((t.addr.as_str(), t.path.as_str()), ("example.com:80", "/"));
        assert_eq!(t.handshake(), "/?transport=polling");
        let t = Target::parse("https://example.com/p").unwrap();
        assert_eq!(t.addr, "example.com:443");
        assert_eq!(t.tls.as_deref(), Some("example.com"));
        let t = Target::parse("wss://[::1]:9/").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.tls.as_deref()),
            ("[::1]:9", Some("::1"))
        );
        assert!(matches!(Target::parse("ftp://x/"), Err(Error::Config(_))));
        assert!(matches!(Target::parse("http:///"), Err(Error::Config(_))));
    }

    #[test]
    fn the_handshake_answer_gives_sid_and_timing() {
        let o = parse_handshake(br#"{"sid":"ab","pingInterval":100,"pingTimeout":50}"#).unwrap();
        assert_eq!(o.sid, "ab");
        assert_eq!(o.poll_interval, Duration::from_millis(100));
        assert_eq!(o.ping_timeout, Duration::from_millis(50));
        assert!(parse_handshake(b"{}").is_err());
        assert!(parse_handshake(b"nope").is_err());
    }
}
