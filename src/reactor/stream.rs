//! Stream connections (TCP, TLS, Unix stream) on a poller: reading, corked writing, the close
//! sequence and timers.
//!
//! Lifecycle: `Handshake` (TLS only) → `Open` → [`AwaitHandler`: a handler thread finishes the
//! events it has, after the peer's end of stream] → `Closing` (flush, then shut down the write
//! side and linger briefly for the peer's FIN) → removed. Every transition goes through
//! [`StreamConn::set_phase`], which logs `conn=… old=>new`.

use std::io::{self, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Interest, Registry};
use slab::Slab;

use super::outq::{OutQueue, Payload};
use super::poller::{Entry, Poller};
use super::timer::TimerKind;
use crate::base::DropPolicy;
use crate::base::{Addr, CloseReason, ConnId};
use crate::server::config::Dispatch;
use crate::server::dispatch::Job;
use crate::server::handle::{Conn, ConnShared, STATE_CLOSED, STATE_CLOSING, STATE_OPEN};
use crate::server::handler::StreamHandler;
use crate::server::observe::ConnState;
use crate::server::websocket::{WsConn, WsHandler};
use crate::server::ServerShared;
use crate::Error;

pub(crate) use super::wsconn::WsState;

/// How long a closed-for-writing connection waits for the peer's FIN before it is dropped.
const LINGER: Duration = Duration::from_secs(1);

/// The socket under a stream connection.
pub(crate) enum StreamSock {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl StreamSock {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            StreamSock::Tcp(s) => s,
            StreamSock::Unix(s) => s,
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            StreamSock::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            StreamSock::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }
}

impl Read for StreamSock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StreamSock::Tcp(s) => s.read(buf),
            StreamSock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for StreamSock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamSock::Tcp(s) => s.write(buf),
            StreamSock::Unix(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            StreamSock::Tcp(s) => s.write_vectored(bufs),
            StreamSock::Unix(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Phase {
    /// TLS handshake.
    Handshake {
        deadline: Instant,
    },
    /// Waiting for the HTTP request (WebSocket upgrade or the HTTP hook).
    Upgrade {
        deadline: Instant,
    },
    Open,
    AwaitHandler(Box<CloseReason>),
    Closing(Box<CloseReason>),
}

/// A user handler of either protocol.
pub(crate) enum UserHandler {
    Stream(Box<dyn StreamHandler>),
    Ws(Box<dyn WsHandler>),
}

/// The protocol a stream connection speaks.
pub(crate) enum Proto {
    /// Raw bytes to a [`StreamHandler`].
    Raw,
    /// HTTP/1.1 before a WebSocket upgrade (and the HTTP hook).
    Http,
    /// WebSocket frames.
    Ws(WsState),
}

/// Where a connection's handler lives.
pub(crate) enum HandlerSlot {
    /// Runs on this poller; `None` before open or after it panicked.
    Inline(Option<UserHandler>),
    /// Runs on a handler thread, reached through the pool.
    Threads,
}

/// One stream connection, owned by one poller.
pub(crate) struct StreamConn {
    pub(crate) handle: Conn,
    sock: StreamSock,
    tls: Option<Box<rustls::ServerConnection>>,
    pub(crate) handler: HandlerSlot,
    pub(crate) proto: Proto,
    /// Input kept between reads (a partial frame or request); empty when idle.
    pub(crate) rbuf: Vec<u8>,
    pub(crate) outq: OutQueue,
    /// Fan-out groups this connection belongs to (empty: no heap memory).
    pub(crate) groups: Vec<crate::base::GroupId>,
    pub(crate) phase: Phase,
    pub(crate) last_read: Instant,
    writable_interest: bool,
    read_closed: bool,
    write_shut: bool,
    paused: bool,
    in_dirty: bool,
}

/// What one read attempt produced.
enum ReadOutcome {
    Data(usize),
    WouldBlock,
    Eof,
    Failed(CloseReason, Error),
}

impl StreamConn {
    pub(crate) fn shared(&self) -> &ConnShared {
        &self.handle.inner
    }

    pub(crate) fn server(&self) -> &Arc<ServerShared> {
        &self.handle.inner.server
    }

    pub(crate) fn set_phase(&mut self, next: Phase) {
        log::trace!("conn={} {:?}=>{:?}", self.handle.inner.id, self.phase, next);
        self.phase = next;
    }

    pub(crate) fn deregister(&mut self, reg: &Registry) -> io::Result<()> {
        reg.deregister(self.sock.source())
    }

    /// Appends bytes an inline handler sent. Returns true when the connection must be added
    /// to the dirty list.
    pub(crate) fn push_local(&mut self, bytes: &[u8]) -> bool {
        let keep = self.server().config.drop_policy == DropPolicy::DropOldest;
        self.outq.push_bytes(bytes, keep);
        self.mark_dirty()
    }

    pub(crate) fn mark_dirty(&mut self) -> bool {
        !std::mem::replace(&mut self.in_dirty, true)
    }

    /// Reading goes on in every phase until end of stream (while closing, input is read and
    /// discarded so that closing never turns into a reset that loses our queued output).
    fn can_read(&self) -> bool {
        !self.read_closed && !self.paused
    }

    fn read_some(&mut self, buf: &mut [u8]) -> ReadOutcome {
        match &mut self.tls {
            None => match self.sock.read(buf) {
                Ok(0) => ReadOutcome::Eof,
                Ok(n) => ReadOutcome::Data(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => ReadOutcome::Data(0),
                Err(e) => ReadOutcome::Failed(CloseReason::Reset(e.to_string()), e.into()),
            },
            Some(tls) => tls_read(tls, &mut self.sock, buf),
        }
    }

    /// Writes queued output. Returns plaintext bytes taken from the queue and socket bytes.
    fn write_out(&mut self) -> io::Result<(usize, usize)> {
        match &mut self.tls {
            None => {
                let n = self.outq.flush_to(&mut self.sock)?;
                Ok((n, n))
            }
            Some(tls) => tls_write(tls, &mut self.outq, &mut self.sock),
        }
    }

    fn output_pending(&self) -> bool {
        !self.outq.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Registers or drops write interest to match whether output is pending.
    fn update_interest(&mut self, reg: &Registry, slot: usize, gen: u32) {
        let want = self.output_pending();
        if want == self.writable_interest {
            return;
        }
        self.writable_interest = want;
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let tok = super::poller::token(slot, gen);
        if let Err(e) = reg.reregister(self.sock.source(), tok, interest) {
            log::warn!("conn={} reregister failed: {e}", self.shared().id);
        }
    }

    /// The next time this connection's timers need a look, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match (&self.phase, &self.proto) {
            (Phase::Handshake { deadline } | Phase::Upgrade { deadline }, _) => Some(*deadline),
            (Phase::Open, Proto::Ws(ws)) => ws.next_deadline(self.last_read, self.server()),
            (Phase::Open, _) => self
                .server()
                .config
                .idle_timeout
                .map(|d| self.last_read + d),
            _ => None,
        }
    }
}

fn tls_read(
    tls: &mut rustls::ServerConnection,
    sock: &mut StreamSock,
    buf: &mut [u8],
) -> ReadOutcome {
    loop {
        match tls.reader().read(buf) {
            Ok(0) => return ReadOutcome::Eof,
            Ok(n) => return ReadOutcome::Data(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return ReadOutcome::Failed(CloseReason::Reset(e.to_string()), e.into()),
        }
        match tls.read_tls(sock) {
            Ok(0) => return ReadOutcome::Eof,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return ReadOutcome::Failed(CloseReason::Reset(e.to_string()), e.into()),
        }
        if let Err(e) = tls.process_new_packets() {
            // rustls queued an alert; it is written before the connection closes.
            let _ = tls.write_tls(sock);
            let reason = CloseReason::Protocol(e.to_string());
            return ReadOutcome::Failed(reason, Error::Tls(crate::tls::TlsError::Rustls(e)));
        }
        if tls.is_handshaking() && tls.wants_write() {
            // Handshake messages to send: let the caller flush them.
            let _ = tls.write_tls(sock);
        }
    }
}

fn tls_write(
    tls: &mut rustls::ServerConnection,
    outq: &mut OutQueue,
    sock: &mut StreamSock,
) -> io::Result<(usize, usize)> {
    let (mut plain, mut wire) = (0, 0);
    loop {
        while let Some(front) = outq.front() {
            let n = tls.writer().write(front)?;
            if n == 0 {
                break; // rustls' buffer is full: "would block"
            }
            outq.consume(n);
            plain += n;
        }
        if !tls.wants_write() {
            return Ok((plain, wire));
        }
        while tls.wants_write() {
            match tls.write_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => wire += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((plain, wire)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if outq.is_empty() {
            return Ok((plain, wire));
        }
    }
}

pub(crate) fn stream_in<'a>(
    entries: &'a mut Slab<Entry>,
    gens: &[u32],
    slot: u32,
    gen: u32,
) -> Option<&'a mut StreamConn> {
    if gens.get(slot as usize) != Some(&gen) {
        return None;
    }
    match entries.get_mut(slot as usize) {
        Some(Entry::Stream(c)) => Some(c),
        _ => None,
    }
}

/// The message of a caught panic.
pub(crate) fn describe_panic(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// A handler event, borrowed for inline handlers and owned when sent to a handler thread.
pub(crate) enum Event<'a> {
    Open,
    Data(&'a [u8]),
    Text(&'a str),
    Binary(&'a [u8]),
    Drained,
    Error(Error),
}

/// Calls the inline handler's method for `ev`.
fn call_inline(h: &mut UserHandler, conn: &Conn, ev: Event<'_>) {
    match h {
        UserHandler::Stream(h) => match ev {
            Event::Open => h.on_open(conn),
            Event::Data(d) => h.on_data(conn, d),
            Event::Drained => h.on_drained(conn),
            Event::Error(e) => h.on_error(conn, &e),
            Event::Text(_) | Event::Binary(_) => {}
        },
        UserHandler::Ws(h) => {
            let ws = WsConn::from_conn(conn);
            match ev {
                Event::Text(t) => h.on_text(ws, t),
                Event::Binary(b) => h.on_binary(ws, b),
                Event::Drained => h.on_drained(ws),
                Event::Error(e) => h.on_error(ws, &e),
                Event::Open | Event::Data(_) => {}
            }
        }
    }
}

static NEXT_CONN_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A freshly accepted socket with what the poller needs to adopt it.
pub(crate) struct Accepted {
    pub(crate) sock: StreamSock,
    pub(crate) server: Arc<ServerShared>,
    pub(crate) peer: Addr,
    pub(crate) local: Addr,
    pub(crate) cred: Option<crate::base::PeerCred>,
}

impl Poller {
    /// Takes ownership of an accepted connection (already counted as open).
    pub(crate) fn adopt_stream(&mut self, acc: Accepted) {
        let (slot, gen) = self.reserve();
        let server = acc.server;
        let shared = Arc::new(ConnShared {
            id: ConnId(NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)),
            poller: self.shared.clone(),
            slot: slot as u32,
            gen,
            server: server.clone(),
            queued: Default::default(),
            state: Default::default(),
            peer: acc.peer,
            local: (acc.local != server.local).then(|| Box::new(acc.local)),
            cred: acc.cred.map(Box::new),
            inbound: Default::default(),
            paused: Default::default(),
            identity: Default::default(),
        });
        let now = Instant::now();
        let tls = match server
            .tls
            .as_ref()
            .map(|t| rustls::ServerConnection::new(t.clone()))
        {
            None => None,
            Some(Ok(t)) => Some(Box::new(t)),
            Some(Err(e)) => {
                server
                    .observer
                    .on_error(None, &Error::Tls(crate::tls::TlsError::Rustls(e)));
                server.conn_gone();
                return;
            }
        };
        let phase = match (&tls, &server.ws) {
            (Some(_), _) => Phase::Handshake {
                deadline: now + server.handshake_timeout,
            },
            (None, Some(ws)) => Phase::Upgrade {
                deadline: now + ws.ws.handshake_timeout,
            },
            (None, None) => Phase::Open,
        };
        let proto = if server.ws.is_some() {
            Proto::Http
        } else {
            Proto::Raw
        };
        let handler = match server.config.dispatch {
            Dispatch::Inline => HandlerSlot::Inline(None),
            Dispatch::Threads => HandlerSlot::Threads,
        };
        let mut conn = Box::new(StreamConn {
            handle: Conn { inner: shared },
            sock: acc.sock,
            tls,
            handler,
            proto,
            rbuf: Vec::new(),
            outq: OutQueue::default(),
            groups: Vec::new(),
            phase,
            last_read: now,
            writable_interest: false,
            read_closed: false,
            write_shut: false,
            paused: false,
            in_dirty: false,
        });
        if let Err(e) = self.register(conn.sock.source(), slot, gen, Interest::READABLE) {
            server.observer.on_error(None, &e.into());
            server.conn_gone();
            return;
        }
        let id = conn.handle.id();
        server
            .observer
            .on_conn_state(id, conn.handle.peer_addr(), &ConnState::Accepted);
        if let Some(at) = conn.next_deadline() {
            self.timers.add(at, slot as u32, gen, TimerKind::Conn);
        }
        let open_now = conn.phase == Phase::Open;
        self.entries.insert(Entry::Stream(conn));
        if open_now {
            self.open_handler(slot as u32, gen);
        }
        // Data may have arrived before registration (edge-triggered): read now.
        self.stream_ready(slot as u32, gen, true, false, false);
    }

    /// Creates the handler and delivers the open event.
    fn open_handler(&mut self, slot: u32, gen: u32) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        let factory = c.server().factory.clone();
        match &mut c.handler {
            HandlerSlot::Inline(h) => {
                let conn = c.handle.clone();
                match catch_unwind(AssertUnwindSafe(|| factory.create(&conn))) {
                    Ok(made) => *h = Some(UserHandler::Stream(made)),
                    Err(p) => {
                        self.handler_panicked(slot, gen, describe_panic(&*p));
                        return;
                    }
                }
                self.dispatch(slot, gen, Event::Open);
            }
            HandlerSlot::Threads => {
                let conn = c.handle.clone();
                self.pool.dispatch(conn.id().0, Job::Open { conn, factory });
            }
        }
    }

    /// Hands an event to the connection's handler, inline or on its handler thread.
    pub(crate) fn dispatch(&mut self, slot: u32, gen: u32, ev: Event<'_>) {
        let Poller {
            entries,
            gens,
            pool,
            ..
        } = self;
        let Some(c) = stream_in(entries, gens, slot, gen) else {
            return;
        };
        match &mut c.handler {
            HandlerSlot::Inline(None) => {}
            HandlerSlot::Inline(Some(h)) => {
                let conn = &c.handle;
                let r = catch_unwind(AssertUnwindSafe(|| call_inline(h, conn, ev)));
                if let Err(p) = r {
                    self.handler_panicked(slot, gen, describe_panic(&*p));
                }
                self.drain_local();
            }
            HandlerSlot::Threads => {
                let conn = c.handle.clone();
                let job = match ev {
                    Event::Open => return,
                    Event::Data(d) => Job::Data {
                        conn,
                        data: d.to_vec(),
                    },
                    Event::Text(t) => Job::Text {
                        conn,
                        text: t.to_owned(),
                    },
                    Event::Binary(b) => Job::Binary {
                        conn,
                        data: b.to_vec(),
                    },
                    Event::Drained => Job::Drained { conn },
                    Event::Error(error) => Job::Error { conn, error },
                };
                pool.dispatch(c.handle.id().0, job);
            }
        }
    }

    pub(crate) fn handler_panicked(&mut self, slot: u32, gen: u32, msg: String) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        log::error!("conn={} handler panicked: {msg}", c.shared().id);
        c.handler = HandlerSlot::Inline(None);
        let server = c.server().clone();
        let id = c.shared().id;
        server
            .observer
            .on_error(Some(id), &Error::HandlerPanic(msg.clone()));
        self.ws_fail(
            slot,
            gen,
            crate::proto::ws::CloseCode::ERROR,
            "handler failed",
        );
        self.begin_close(slot, gen, CloseReason::HandlerPanic(msg));
    }

    /// Readiness on a stream connection. `short_ok`: the event carried no hang-up, so a
    /// short plain read proves the socket drained (see [`read_stream`](Self::read_stream)).
    pub(crate) fn stream_ready(
        &mut self,
        slot: u32,
        gen: u32,
        readable: bool,
        writable: bool,
        short_ok: bool,
    ) {
        if writable {
            self.flush_stream(slot, gen);
        }
        if readable {
            self.read_stream(slot, gen, short_ok);
        }
    }

    /// Reads until `WouldBlock`, end of stream or the per-turn budget.
    ///
    /// With `short_ok`, a plain read that returns less than the buffer stops the loop
    /// without the extra `WouldBlock` read: epoll reports every later arrival as a new
    /// edge, and a hang-up that came before this event is excluded by the caller.
    fn read_stream(&mut self, slot: u32, gen: u32, short_ok: bool) {
        let mut total = 0usize;
        loop {
            let Poller {
                entries,
                gens,
                read_buf,
                ..
            } = self;
            let Some(c) = stream_in(entries, gens, slot, gen) else {
                return;
            };
            if !c.can_read() {
                break;
            }
            let budget = c.server().config.max_read_per_turn;
            let plain = c.tls.is_none();
            let outcome = c.read_some(read_buf);
            let was_handshaking = matches!(c.phase, Phase::Handshake { .. });
            if was_handshaking && c.tls.as_ref().is_some_and(|t| !t.is_handshaking()) {
                match &c.server().ws {
                    Some(ws) => {
                        let deadline = Instant::now() + ws.ws.handshake_timeout;
                        c.set_phase(Phase::Upgrade { deadline });
                    }
                    None => {
                        c.set_phase(Phase::Open);
                        self.open_handler(slot, gen);
                    }
                }
            }
            match outcome {
                ReadOutcome::Data(0) => continue,
                ReadOutcome::Data(n) => {
                    total += n;
                    let short = short_ok && plain && n < self.read_buf.len();
                    self.on_data(slot, gen, n);
                    if short {
                        break;
                    }
                    if total >= budget {
                        self.again.push((slot, gen));
                        break;
                    }
                }
                ReadOutcome::WouldBlock => break,
                ReadOutcome::Eof => {
                    self.on_eof(slot, gen);
                    break;
                }
                ReadOutcome::Failed(reason, err) => {
                    self.fail(slot, gen, reason, err);
                    return;
                }
            }
        }
        if let Some(c) = self.stream_mut(slot, gen) {
            if c.output_pending() && c.mark_dirty() {
                self.dirty.push((slot, gen));
            }
        }
    }

    /// `n` bytes are in the read buffer.
    fn on_data(&mut self, slot: u32, gen: u32, n: usize) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        c.last_read = Instant::now();
        let server = c.server().clone();
        server.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let framed = !matches!(c.proto, Proto::Raw);
        if c.write_shut || !(c.phase == Phase::Open || framed) {
            return; // closing: input is discarded
        }
        if framed {
            self.framed_input(slot, gen, n);
            return;
        }
        if matches!(c.handler, HandlerSlot::Threads) {
            self.note_inbound(slot, gen, n);
        }
        let data = std::mem::take(&mut self.read_buf);
        self.dispatch(slot, gen, Event::Data(&data[..n]));
        self.read_buf = data;
    }

    /// Counts bytes handed to a handler thread; pauses reading past the bound.
    pub(crate) fn note_inbound(&mut self, slot: u32, gen: u32, n: usize) {
        if let Some(c) = self.stream_mut(slot, gen) {
            c.shared().inbound.fetch_add(n, Ordering::SeqCst);
            self.pause_if_behind(slot, gen);
        }
    }

    /// Pauses reading while the handler thread has more than `max_inbound_pending` bytes
    /// to consume (the bytes are counted before they are handed over, so the handler's
    /// subtraction never runs ahead of the count).
    pub(crate) fn pause_if_behind(&mut self, slot: u32, gen: u32) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        let max = c.server().config.max_inbound_pending;
        let sh = c.shared();
        if sh.inbound.load(Ordering::SeqCst) <= max {
            return;
        }
        sh.paused.store(true, Ordering::SeqCst);
        if sh.inbound.load(Ordering::SeqCst) <= max / 2 && sh.paused.swap(false, Ordering::SeqCst) {
            return;
        }
        c.paused = true;
    }

    pub(crate) fn cmd_resume(&mut self, slot: u32, gen: u32) {
        if let Some(c) = self.stream_mut(slot, gen) {
            c.paused = false;
            self.read_stream(slot, gen, false);
        }
    }

    /// The peer finished sending.
    fn on_eof(&mut self, slot: u32, gen: u32) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        c.read_closed = true;
        if c.write_shut {
            let reason = match &c.phase {
                Phase::Closing(r) => (**r).clone(),
                _ => CloseReason::PeerClosed,
            };
            self.finalize_stream(slot, gen, reason);
            return;
        }
        match (&c.handler, &c.phase) {
            (HandlerSlot::Threads, Phase::Open) => {
                c.set_phase(Phase::AwaitHandler(Box::new(CloseReason::PeerClosed)));
                let conn = c.handle.clone();
                self.pool.dispatch(conn.id().0, Job::CatchUp { conn });
            }
            (_, Phase::Closing(_)) | (_, Phase::AwaitHandler(_)) => {}
            _ => self.begin_close(slot, gen, CloseReason::PeerClosed),
        }
    }

    pub(crate) fn cmd_caught_up(&mut self, slot: u32, gen: u32) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        if let Phase::AwaitHandler(reason) = &c.phase {
            let reason = (**reason).clone();
            c.set_phase(Phase::Open);
            self.begin_close(slot, gen, reason);
        }
    }

    /// A fatal error: report it and close at once.
    pub(crate) fn fail(&mut self, slot: u32, gen: u32, reason: CloseReason, err: Error) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        let server = c.server().clone();
        let id = c.shared().id;
        server.observer.on_error(Some(id), &err);
        self.dispatch(slot, gen, Event::Error(err));
        self.finalize_stream(slot, gen, reason);
    }

    /// Starts a graceful close: flush queued output, then shut down the write side.
    pub(crate) fn begin_close(&mut self, slot: u32, gen: u32, reason: CloseReason) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        if matches!(c.phase, Phase::Closing(_)) {
            return;
        }
        if matches!(c.phase, Phase::Handshake { .. }) {
            self.finalize_stream(slot, gen, reason);
            return;
        }
        c.rbuf = Vec::new();
        let _ = c.shared().state.compare_exchange(
            STATE_OPEN,
            STATE_CLOSING,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        c.set_phase(Phase::Closing(Box::new(reason)));
        if let Some(tls) = &mut c.tls {
            tls.send_close_notify();
        }
        let deadline = Instant::now() + c.server().config.close_timeout;
        let server = c.server().clone();
        let (id, peer) = (c.shared().id, c.handle.peer_addr().clone());
        let dirty = c.mark_dirty();
        server
            .observer
            .on_conn_state(id, &peer, &ConnState::Closing);
        self.timers
            .add(deadline, slot, gen, TimerKind::CloseDeadline);
        if dirty {
            self.dirty.push((slot, gen));
        }
    }

    pub(crate) fn cmd_close(&mut self, slot: u32, gen: u32, reason: CloseReason) {
        self.begin_close(slot, gen, reason);
    }

    /// Queues bytes sent from another thread.
    pub(crate) fn cmd_send(&mut self, conn: &Arc<ConnShared>, data: Payload) {
        let n = data.as_slice().len();
        let Some(c) = self
            .stream_mut(conn.slot, conn.gen)
            .filter(|c| !c.write_shut)
        else {
            conn.queued.fetch_sub(n, Ordering::AcqRel);
            conn.server.stats.sub_queued(n);
            return;
        };
        let cfg = &c.handle.inner.server.config;
        let keep = cfg.drop_policy == DropPolicy::DropOldest;
        c.outq.push(data, keep);
        if keep && c.outq.len() > cfg.max_queued_bytes {
            let (msgs, bytes) = c.outq.drop_oldest(cfg.max_queued_bytes);
            conn.queued.fetch_sub(bytes, Ordering::AcqRel);
            conn.server.stats.sub_queued(bytes);
            conn.server.stats.dropped(msgs);
        }
        if c.mark_dirty() {
            self.dirty.push((conn.slot, conn.gen));
        }
    }

    /// Writes a connection's output; handles drained, close and write interest.
    pub(crate) fn flush_stream(&mut self, slot: u32, gen: u32) {
        let Poller {
            entries,
            gens,
            poll,
            ..
        } = self;
        let Some(c) = stream_in(entries, gens, slot, gen) else {
            return;
        };
        c.in_dirty = false;
        if c.write_shut {
            return;
        }
        let had_interest = c.writable_interest;
        let result = c.write_out();
        let server = c.server().clone();
        match result {
            Ok((plain, wire)) => {
                if plain > 0 {
                    c.shared().queued.fetch_sub(plain, Ordering::AcqRel);
                    server.stats.sub_queued(plain);
                }
                if wire > 0 {
                    server
                        .stats
                        .bytes_out
                        .fetch_add(wire as u64, Ordering::Relaxed);
                }
            }
            Err(e) => {
                let reason = CloseReason::Reset(e.to_string());
                self.fail(slot, gen, reason, e.into());
                return;
            }
        }
        let pending = c.output_pending();
        c.update_interest(poll.registry(), slot as usize, gen);
        if pending {
            return;
        }
        if let Phase::Closing(_) = c.phase {
            self.shut_write(slot, gen);
        } else if had_interest {
            self.dispatch(slot, gen, Event::Drained);
        }
    }

    /// Output is flushed on a closing connection: send FIN, linger for the peer's.
    fn shut_write(&mut self, slot: u32, gen: u32) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        c.sock.shutdown_write();
        c.write_shut = true;
        if c.read_closed {
            let reason = match &c.phase {
                Phase::Closing(r) => (**r).clone(),
                _ => CloseReason::Local,
            };
            self.finalize_stream(slot, gen, reason);
            return;
        }
        self.timers
            .add(Instant::now() + LINGER, slot, gen, TimerKind::CloseDeadline);
        // The peer's FIN (or more data to discard) may already be buffered.
        self.read_stream(slot, gen, false);
    }

    /// The close deadline passed: drop whatever is left.
    pub(crate) fn close_deadline(&mut self, slot: u32, gen: u32) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        if let Phase::Closing(reason) = &c.phase {
            let reason = (**reason).clone();
            self.finalize_stream(slot, gen, reason);
        }
    }

    /// Handshake timeout and idle timeout.
    pub(crate) fn stream_timer(&mut self, slot: u32, gen: u32, now: Instant) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        match c.phase {
            Phase::Handshake { deadline } if now >= deadline => {
                let err = Error::Timeout;
                self.fail(slot, gen, CloseReason::HandshakeTimeout, err);
                return;
            }
            Phase::Upgrade { deadline } if now >= deadline => {
                self.begin_close(slot, gen, CloseReason::HandshakeTimeout);
                return;
            }
            Phase::Open if matches!(c.proto, Proto::Ws(_)) => {
                let closed = self.ws_timer(slot, gen, now);
                if closed {
                    return;
                }
            }
            Phase::Open => {
                if let Some(idle) = c.server().config.idle_timeout {
                    if now.duration_since(c.last_read) >= idle {
                        self.begin_close(slot, gen, CloseReason::IdleTimeout);
                        return;
                    }
                }
            }
            _ => {}
        }
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        if let Some(at) = c.next_deadline() {
            self.timers.add(at, slot, gen, TimerKind::Conn);
        }
    }

    /// Removes the connection, releases everything, tells the observer and the handler.
    pub(crate) fn finalize_stream(&mut self, slot: u32, gen: u32, reason: CloseReason) {
        if self.stream_mut(slot, gen).is_none() {
            return;
        }
        let Some(Entry::Stream(mut c)) = self.remove_entry(slot as usize) else {
            return;
        };
        let server = c.server().clone();
        let sh = c.handle.inner.clone();
        sh.state.store(STATE_CLOSED, Ordering::Release);
        let groups = std::mem::take(&mut c.groups);
        self.leave_all_groups(slot, gen, groups);
        let left = c.outq.clear();
        sh.queued.fetch_sub(left, Ordering::AcqRel);
        server.stats.sub_queued(left);
        server.stats.closed.fetch_add(1, Ordering::Relaxed);
        server
            .observer
            .on_conn_state(sh.id, &sh.peer, &ConnState::Closed(reason.clone()));
        let ws_close = match &c.proto {
            Proto::Ws(ws) => {
                server.ws_conn_gone(&sh.peer);
                Some(ws.close_for_handler())
            }
            _ => None,
        };
        match &mut c.handler {
            HandlerSlot::Inline(Some(h)) => {
                let conn = &c.handle;
                let r = catch_unwind(AssertUnwindSafe(|| match (h, ws_close) {
                    (UserHandler::Stream(h), _) => h.on_close(conn, &reason),
                    (UserHandler::Ws(h), Some((code, why))) => {
                        h.on_close(WsConn::from_conn(conn), code, &why)
                    }
                    (UserHandler::Ws(_), None) => {}
                }));
                if let Err(p) = r {
                    log::error!("conn={} on_close panicked: {}", sh.id, describe_panic(&*p));
                }
                self.drain_local();
            }
            HandlerSlot::Inline(None) => {}
            HandlerSlot::Threads => {
                let conn = c.handle.clone();
                let job = match ws_close {
                    Some((code, reason)) => Job::WsClose { conn, code, reason },
                    None => Job::Close { conn, reason },
                };
                self.pool.dispatch(c.handle.id().0, job);
            }
        }
        drop(c);
        server.conn_gone();
    }
}

impl Poller {
    /// Closes every connection of `server` gracefully (flush, then close), for shutdown.
    pub(crate) fn drain_server(&mut self, server: &Arc<ServerShared>) {
        let conns: Vec<(u32, u32, bool)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Stream(c) if Arc::ptr_eq(c.server(), server) => Some((
                    k as u32,
                    c.shared().gen,
                    matches!(c.handler, HandlerSlot::Threads),
                )),
                _ => None,
            })
            .collect();
        for (slot, gen, threads) in conns {
            self.ws_fail(
                slot,
                gen,
                crate::proto::ws::CloseCode::AWAY,
                "server shutdown",
            );
            let Some(c) = self.stream_mut(slot, gen) else {
                continue;
            };
            if threads && c.phase == Phase::Open {
                c.set_phase(Phase::AwaitHandler(Box::new(CloseReason::Shutdown)));
                let conn = c.handle.clone();
                self.pool.dispatch(conn.id().0, Job::CatchUp { conn });
            } else {
                self.begin_close(slot, gen, CloseReason::Shutdown);
            }
        }
    }

    /// Drops every remaining connection of `server` at once.
    pub(crate) fn force_close_server(&mut self, server: &Arc<ServerShared>) {
        let conns: Vec<(u32, u32)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Stream(c) if Arc::ptr_eq(c.server(), server) => {
                    Some((k as u32, c.shared().gen))
                }
                _ => None,
            })
            .collect();
        for (slot, gen) in conns {
            self.finalize_stream(slot, gen, CloseReason::Shutdown);
        }
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn print_sizes() {
        eprintln!(
            "StreamConn={} ConnShared={} WsState={} Entry={} Phase={} OutQueue={}",
            std::mem::size_of::<super::StreamConn>(),
            std::mem::size_of::<crate::server::handle::ConnShared>(),
            std::mem::size_of::<super::WsState>(),
            std::mem::size_of::<super::super::poller::Entry>(),
            std::mem::size_of::<super::Phase>(),
            std::mem::size_of::<super::OutQueue>(),
        );
    }
}
