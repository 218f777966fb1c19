//! The WebSocket driver: the HTTP upgrade (and the plain HTTP hook), frame decoding into
//! handler events, framing of outgoing messages, heartbeats and the closing handshake. The
//! protocol itself is the sans-IO engine in [`crate::proto::ws`]; this file moves its bytes
//! and events between the reactor and the handler.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use super::dispatch::{Event, WsSlot};
use super::handle::Conn;
use super::longpoll::{self, PollReply};

/// The carrier side of long-polling: this driver's HTTP phase handing polling requests to
/// their sessions (a child module: it works on the driver's private state).
#[path = "longpoll/carrier.rs"]
mod carrier;
use super::observe::ConnState;
use super::websocket::WsServerConfig;
use crate::base::{deadline, deadline_opt, earliest, elapsed, CloseReason, Stamp, Tick};
use crate::proto::http::{parse_request, ParseOutcome, Request};
use crate::proto::ws::handshake::{accept, is_upgrade, write_rejection};
use crate::proto::ws::{
    close_reply, CloseCode, Incoming, OpCode, Role, Scratch, SharedChoice, SharedFrames, WsSession,
};
use crate::reactor::local::{self, Kind};
use crate::reactor::stream::describe_panic;
use crate::reactor::{ConnCmd, Driver, Io, Offer, Payload};
use crate::Error;

thread_local! {
    /// The compressor, inflater and buffers every WebSocket of this poller thread shares.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// Runs `f` with this thread's scratch (a fresh one if it is busy, which never happens on
/// a poller: callbacks do not nest).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::new()),
    })
}

/// Where a WebSocket connection is: the HTTP request phase, or upgraded.
enum Phase {
    /// Waiting for a request (`None`: no deadline).
    Http {
        deadline: Option<Stamp>,
        /// Requests answered so far on this connection.
        requests: u32,
    },
    /// The upgrade request is with the authenticator on the handler pool; reading is paused
    /// until it answers (bounded by the handshake deadline).
    Auth(Box<PendingUpgrade>),
    /// A long-polling request is with its session (`super::longpoll`); the next request
    /// waits (kept, bounded) until the session's answer is written.
    Poll(Box<carrier::PollWait>),
    Ws(WsState),
}

/// An upgrade waiting for its authenticator: the 101 already written (sent if accepted).
struct PendingUpgrade {
    answer: Vec<u8>,
    deflate: Option<crate::proto::ws::DeflateParams>,
    deadline: Option<Stamp>,
    /// A long-polling handshake (no 101: the verdict opens a session).
    polling: bool,
}

/// What the authenticator said, sent back to the connection's driver from the pool.
pub(crate) struct AuthOutcome {
    pub(crate) result: Result<Option<super::websocket::Identity>, super::websocket::Rejection>,
    pub(crate) req: Box<Request>,
}

/// Whether the client asked to close after this request (HTTP/1.0, `Connection: close`).
fn wants_close(req: &Request) -> bool {
    req.version() == 0
        || req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

/// HTTP requests one connection may make before it is closed (keep-alive).
const MAX_REQUESTS_PER_CONN: u32 = 100;

/// Pongs answered per input chunk, at most; past it only the latest ping is answered (RFC
/// 6455 §5.5.3 allows that), so a ping flood costs one pending pong, not one per ping.
const MAX_PONGS_PER_INPUT: usize = 16;

/// An upgraded connection's state.
struct WsState {
    session: WsSession,
    /// When our last ping left, rounded down (a pong or any input after it proves
    /// liveness, and clears it). 4 bytes: see [`Tick`].
    ping_sent: Option<Tick>,
    /// The close exchanged or awaited (boxed: only closing connections pay for it).
    close: Option<Box<CloseInfo>>,
    /// When the message in progress (a partial frame or fragments) began, rounded up.
    partial_since: Option<Tick>,
}

/// The close code and reason exchanged (ours or the peer's), for `on_close`, how long we
/// wait for the peer's answer to ours, and the close waiting for the handler thread.
#[derive(Default)]
struct CloseInfo {
    exchanged: Option<(CloseCode, String)>,
    deadline: Option<Instant>,
    /// Waiting for the handler thread to catch up before closing with this reason.
    awaiting: Option<CloseReason>,
}

impl WsState {
    fn close_deadline(&self) -> Option<Instant> {
        self.close.as_ref().and_then(|c| c.deadline)
    }

    fn close_info(&mut self) -> &mut CloseInfo {
        self.close.get_or_insert_with(Box::default)
    }

    fn record_close(&mut self, code: CloseCode, reason: &str) {
        let info = self.close_info();
        if info.exchanged.is_none() {
            info.exchanged = Some((code, reason.to_owned()));
        }
    }

    /// What `on_close` reports: the exchanged close, or 1006 when there was none.
    fn close_for_handler(&self) -> (CloseCode, String) {
        match self.close.as_ref().and_then(|c| c.exchanged.as_ref()) {
            Some((code, reason)) => (*code, reason.clone()),
            None => (CloseCode::ABNORMAL, String::new()),
        }
    }
}

/// The WebSocket configuration of the server `conn` belongs to.
fn ws_config(conn: &Conn) -> &WsServerConfig {
    match &conn.server().ws {
        Some(ws) => ws,
        None => unreachable!("WsDriver only serves WebSocket servers"),
    }
}

/// A WebSocket server connection's protocol.
pub(crate) struct WsDriver {
    conn: Conn,
    handler: WsSlot,
    phase: Phase,
}

impl WsDriver {
    pub(crate) fn new(conn: Conn) -> Self {
        debug_assert!(
            conn.server().ws.is_some(),
            "a WebSocket server's connection"
        );
        WsDriver {
            conn,
            handler: WsSlot::default(),
            phase: Phase::Http {
                deadline: None,
                requests: 0,
            },
        }
    }

    /// Whether a close waits for the handler thread to catch up (see
    /// [`close_after_handler`](Self::close_after_handler)).
    fn awaiting(&self) -> bool {
        match &self.phase {
            Phase::Ws(st) => st.close.as_ref().is_some_and(|c| c.awaiting.is_some()),
            _ => false,
        }
    }

    /// The server's WebSocket configuration (kept once per server, not per connection).
    fn cfg(&self) -> &WsServerConfig {
        ws_config(&self.conn)
    }

    fn http_deadline(&self, now: Instant) -> Phase {
        Phase::Http {
            deadline: deadline(now, self.cfg().ws.handshake_timeout).map(Stamp::of),
            requests: 0,
        }
    }

    /// Frames this connection's pending local sends (inline replies, pongs) so that what
    /// the driver queues next comes after them.
    fn take_local(&mut self, io: &mut Io<'_>) {
        let (slot, gen) = (self.conn.inner.slot, self.conn.inner.gen);
        local::take_for(slot, gen, |kind, data| self.frame_local(io, kind, data));
    }

    fn frame_local(&mut self, io: &mut Io<'_>, kind: Kind, data: &[u8]) {
        match kind {
            Kind::Ws(op) => self.frame_admitted(io, op, data, data.len()),
            Kind::Raw => io.push_copy(data),
        }
    }

    /// Consumes what it can of `buf`: HTTP requests, then WebSocket frames.
    fn process(&mut self, io: &mut Io<'_>, buf: &mut [u8]) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            if io.req.close.is_some() {
                return buf.len(); // closing: discard
            }
            match self.phase {
                Phase::Http { .. } => match self.http_step(io, &buf[pos..]) {
                    Some(used) => {
                        pos += used;
                        let answered = matches!(self.phase, Phase::Http { .. });
                        if answered && pos < buf.len() && io.req.close.is_none() {
                            // One request at a time: the next waits until this answer
                            // is written (pipelining cannot pile up responses).
                            io.hold();
                            return pos;
                        }
                    }
                    None => return pos,
                },
                Phase::Ws(_) => return pos + self.decode(io, &mut buf[pos..]),
                // A client must wait for the 101 before it sends more: keep it for then.
                Phase::Auth(_) => return pos,
                Phase::Poll(_) => return pos + self.poll_kept(io, buf.len() - pos),
            }
        }
        pos
    }

    /// Parses one HTTP request. `None` when more bytes are needed.
    fn http_step(&mut self, io: &mut Io<'_>, buf: &[u8]) -> Option<usize> {
        let mut limits = self.cfg().ws.http_limits();
        if let Some(p) = &self.cfg().polling {
            limits = limits.max_body(limits.max_body.max(p.max_body));
        }
        match parse_request(buf, &limits) {
            ParseOutcome::Partial => None,
            ParseOutcome::Error { status } => {
                self.reject(io, status, "malformed or oversized request");
                Some(buf.len())
            }
            ParseOutcome::Complete {
                mut request,
                consumed,
            } => {
                if let Some(peer) = self.conn.peer_addr().as_inet() {
                    request.set_peer(peer);
                }
                let on_path = self
                    .cfg()
                    .path
                    .as_deref()
                    .is_none_or(|p| p == request.path());
                if is_upgrade(&request) && on_path {
                    self.upgrade(io, request);
                } else if on_path && self.cfg().polling.is_some() && longpoll::is_polling(&request)
                {
                    self.poll(io, request);
                } else if request.body().len() > self.cfg().ws.max_request_size {
                    self.reject(io, 413, "request body too large");
                } else {
                    self.http_hook(io, &request);
                }
                Some(consumed)
            }
        }
    }

    /// Answers a refused request with `status` and closes.
    fn reject(&mut self, io: &mut Io<'_>, status: u16, reason: &str) {
        log::debug!("upgrade refused: {status} {reason}");
        io.append(false, |out| write_rejection(status, reason, out));
        let why = format!("request refused with {status}: {reason}");
        io.close(CloseReason::Protocol(why));
    }

    fn http_hook(&mut self, io: &mut Io<'_>, req: &Request) {
        let resp = match &self.cfg().http {
            Some(hook) => catch_unwind(AssertUnwindSafe(|| hook(req))).unwrap_or_else(|p| {
                log::error!("http hook panicked: {}", describe_panic(&*p));
                crate::proto::http::Response::text(500, "internal error")
            }),
            None => crate::proto::http::Response::not_found(),
        };
        let requests = match &mut self.phase {
            Phase::Http { requests, .. } => {
                *requests += 1;
                *requests
            }
            Phase::Ws(_) | Phase::Auth(_) | Phase::Poll(_) => 0,
        };
        let close = wants_close(req) || requests >= MAX_REQUESTS_PER_CONN;
        let head_only = req.method() == "HEAD";
        io.append(false, |out| match head_only {
            true => resp.write_head(out),
            false => resp.write_to(out),
        });
        if close {
            io.close(CloseReason::Local);
        }
        // Keep-alive keeps the deadline from accept: it is absolute, so a peer cannot
        // hold the connection by sending a complete request now and then.
    }

    /// Checks origin, authenticator and per-IP cap, answers 101 and opens the handler.
    /// Checks origin and the handshake, then has the authenticator (on the handler pool,
    /// where it may block) or nobody decide; [`finish_upgrade`](Self::finish_upgrade) answers.
    fn upgrade(&mut self, io: &mut Io<'_>, req: Request) {
        let Some(cfg) = self.conn.server().ws.clone() else {
            return;
        };
        if !cfg.origins.allows(req.header("origin")) {
            return self.reject(io, 403, "origin not allowed");
        }
        let budget = &io.policy.counters.budget;
        if budget.tight() {
            // Three quarters of the runtime's memory budget is held: the rest is for the
            // connections already open.
            budget.refused_upgrade();
            return self.reject(io, 503, "server busy (memory budget)");
        }
        // One allocation for the whole 101 (~130 B, ~200 with deflate), in the request
        // head's size class (512 B, see `http::request::build`) so it does not fragment
        // the 256 B chunks long-lived connections use.
        let mut answer = Vec::with_capacity(512);
        let accepted = match accept(&req, &cfg.ws, &[], &mut answer) {
            Ok(a) => a,
            Err(crate::proto::ws::WsError::Handshake { status, reason }) => {
                return self.reject(io, status, reason)
            }
            Err(e) => return self.reject(io, 400, e.reason()),
        };
        let deadline = match &self.phase {
            Phase::Http { deadline, .. } => *deadline,
            _ => None,
        };
        let pending = PendingUpgrade {
            answer,
            deflate: accepted.deflate,
            deadline,
            polling: false,
        };
        if cfg.auth.is_none() && cfg.middleware.is_empty() {
            return self.finish_upgrade(io, pending, Ok(None), &req);
        }
        self.phase = Phase::Auth(Box::new(pending));
        io.pause();
        let job = super::dispatch::Job::Authenticate {
            conn: self.conn.clone(),
            cfg,
            req: Box::new(req),
        };
        let pool = &self.conn.server().pool;
        pool.dispatch(self.conn.id().0, job);
    }

    /// Answers the upgrade as the authenticator decided: 101 and the handler, or the
    /// rejection's status.
    fn finish_upgrade(
        &mut self,
        io: &mut Io<'_>,
        pending: PendingUpgrade,
        verdict: Result<Option<super::websocket::Identity>, super::websocket::Rejection>,
        req: &Request,
    ) {
        let identity = match verdict {
            Ok(id) => id,
            Err(rej) => return self.reject(io, rej.status, &rej.reason),
        };
        let server = self.conn.server().clone();
        let cap = server.ws.as_ref().and_then(|w| w.max_per_ip);
        if !server.ws_admit(&self.conn.peer_addr(), cap) {
            return self.reject(io, 429, "too many connections from this address");
        }
        if let Some(id) = identity {
            let _ = self.conn.inner.ext.cold_mut().identity.set(id);
        }
        self.phase = Phase::Ws(WsState {
            session: WsSession::new(Role::Server, pending.deflate),
            ping_sent: None,
            close: None,
            partial_since: None,
        });
        io.rearm();
        io.append(false, |o| o.extend_from_slice(&pending.answer));
        let factory = server.factory.clone();
        self.handler
            .deliver(&self.conn, None, Event::Open(&factory, Some(req)));
    }

    /// The authenticator answered (on the pool): finish the upgrade and read on.
    fn authenticated(&mut self, io: &mut Io<'_>, outcome: AuthOutcome) {
        let Phase::Auth(_) = self.phase else {
            return; // timed out or closed meanwhile
        };
        let Phase::Auth(pending) = std::mem::replace(
            &mut self.phase,
            Phase::Http {
                deadline: None,
                requests: 0,
            },
        ) else {
            return;
        };
        match pending.polling {
            true => self.open_session(io, *outcome.req, outcome.result),
            false => self.finish_upgrade(io, *pending, outcome.result, &outcome.req),
        }
        io.resume();
    }

    /// Decodes frames, delivering messages to the handler; answers pings and closes.
    fn decode(&mut self, io: &mut Io<'_>, buf: &mut [u8]) -> usize {
        let WsDriver {
            conn,
            handler,
            phase,
            ..
        } = self;
        let cfg = ws_config(conn);
        let Phase::Ws(st) = phase else {
            return buf.len();
        };
        let link = &conn.inner;
        let mut pings: Vec<Vec<u8>> = Vec::new();
        let mut pongs = 0usize;
        let mut latest_ping: Option<Vec<u8>> = None;
        let mut peer_close: Option<(CloseCode, String)> = None;
        let result = with_scratch(|scratch| {
            st.session.decode_while(buf, &cfg.ws, scratch, |m| {
                let ev = match m {
                    Incoming::Text(t) => Event::Text(t),
                    Incoming::Binary(b) => Event::Binary(b),
                    Incoming::Ping(p) => {
                        if pongs >= MAX_PONGS_PER_INPUT {
                            latest_ping = Some(p.to_vec());
                            return true;
                        }
                        pongs += 1;
                        // Through the local outbox, so the pong keeps its place among replies.
                        link.account(p.len() as isize);
                        let op = Kind::Ws(OpCode::Pong);
                        if !local::try_send_local(link.poller.id, link.slot, link.gen, op, p) {
                            link.account(-(p.len() as isize));
                            pings.push(p.to_vec());
                        }
                        return true;
                    }
                    Incoming::Pong(_) => return true,
                    Incoming::Close(code, reason) => {
                        peer_close = Some((code, reason.to_owned()));
                        return true;
                    }
                };
                handler.deliver(conn, Some(&mut *io), ev);
                // Reading paused (the handler threads are behind): decode no further, so
                // one read of many tiny frames cannot queue past the bound; the rest is kept.
                !io.req.pause
            })
        });
        self.take_local(io);
        for p in pings.iter().chain(latest_ping.iter()) {
            self.frame_admitted(io, OpCode::Pong, p, 0);
        }
        match result {
            Ok(used) => {
                if let Some((code, reason)) = peer_close {
                    self.peer_closed(io, code, reason);
                }
                used
            }
            Err(e) => {
                let code = e.close_code().unwrap_or(CloseCode::PROTOCOL);
                self.close_frame(io, Some(code), e.reason());
                let reason = CloseReason::Protocol(e.to_string());
                self.report(Error::WebSocket(e));
                io.close(reason);
                buf.len()
            }
        }
    }

    fn report(&mut self, err: Error) {
        self.conn.server().report_error(Some(self.conn.id()), &err);
        self.handler.deliver_error(&self.conn, err);
    }

    /// The peer sent close: answer it (unless we started), then close the TCP connection.
    fn peer_closed(&mut self, io: &mut Io<'_>, code: CloseCode, reason: String) {
        let Phase::Ws(st) = &mut self.phase else {
            return;
        };
        let ours = st.session.close_sent();
        if !ours {
            st.record_close(code, &reason);
            self.close_frame(io, close_reply(code), "");
        }
        // The close handshake is complete: nothing the peer sends after its close frame
        // matters, so the socket may close once our output is flushed.
        io.close_done(if ours {
            CloseReason::Local
        } else {
            CloseReason::PeerClosed
        });
    }

    /// Sends a close frame with `code` if none was sent yet, and records it for `on_close`.
    fn close_frame(&mut self, io: &mut Io<'_>, code: Option<CloseCode>, reason: &str) {
        let Phase::Ws(st) = &mut self.phase else {
            return;
        };
        let mut sent = false;
        with_scratch(|scratch| {
            io.append(false, |out| {
                sent = st.session.encode_close(out, code, reason, &mut scratch.tx);
            })
        });
        if sent {
            st.record_close(code.unwrap_or(CloseCode::STATUS), reason);
        }
    }

    /// Frames one message; `admitted` bytes were already counted against the queue bound.
    fn frame_admitted(&mut self, io: &mut Io<'_>, op: OpCode, payload: &[u8], admitted: usize) {
        let keep = io.keep_boundaries() && !op.is_control();
        match &mut self.phase {
            Phase::Ws(st) if !st.session.close_sent() => {
                let cfg = &ws_config(&self.conn).ws;
                with_scratch(|scratch| {
                    io.append_admitted(keep, admitted, |out| {
                        st.session.encode(out, op, payload, cfg, &mut scratch.tx)
                    })
                })
            }
            _ => io.unadmit(admitted),
        }
    }

    /// The user asked to close: send the close frame and wait for the peer's answer.
    fn user_close(&mut self, io: &mut Io<'_>, code: CloseCode, reason: &str) {
        if !matches!(self.phase, Phase::Ws(_)) {
            return io.close(CloseReason::Local);
        }
        self.close_frame(io, Some(code), reason);
        let at = deadline(io.now, self.cfg().ws.close_timeout);
        if let Phase::Ws(st) = &mut self.phase {
            if let Some(info) = st.close.as_mut().filter(|c| c.exchanged.is_some()) {
                info.deadline = at;
            }
        }
        io.rearm();
    }

    /// Closes once the handler thread has handled everything it was given (at once inline).
    fn close_after_handler(&mut self, io: &mut Io<'_>, reason: CloseReason) {
        if self.awaiting() {
            return;
        }
        let opened = matches!(self.phase, Phase::Ws(_));
        if opened && self.handler.catch_up(&self.conn) {
            if let Phase::Ws(st) = &mut self.phase {
                st.close_info().awaiting = Some(reason);
            }
        } else {
            io.close(reason);
        }
    }

    /// A message began and did not complete in this input: start its deadline. A timer is
    /// armed only if none comes first (the next timer re-checks every deadline), so partial
    /// reads never pile timers up.
    fn partial_began(&mut self, io: &mut Io<'_>) {
        let before = self.next_deadline(io.last_read);
        let at = deadline(io.now, self.cfg().ws.message_timeout);
        if let Phase::Ws(st) = &mut self.phase {
            st.partial_since = Some(Tick::after(io.now));
        }
        if at.is_some_and(|at| before.is_none_or(|b| at < b)) {
            io.rearm();
        }
    }

    fn idle_timeout(&self) -> Option<std::time::Duration> {
        self.cfg()
            .ws
            .idle_timeout
            .or(self.conn.server().config.idle_timeout)
    }
}

impl WsDriver {
    /// Bytes of a partial message the session holds (see [`Driver::on_input`]).
    fn held_bytes(&self) -> usize {
        match &self.phase {
            Phase::Ws(st) => st.session.held_bytes(),
            _ => 0,
        }
    }
}

impl Driver for WsDriver {
    fn on_tls(&mut self, info: crate::tls::TlsInfo) {
        self.conn.set_tls(info);
    }

    fn on_open(&mut self, io: &mut Io<'_>) {
        self.phase = self.http_deadline(io.now);
        io.rearm();
    }

    fn on_input(&mut self, io: &mut Io<'_>, data: &mut [u8]) -> usize {
        if self.awaiting() {
            return data.len();
        }
        let held = self.held_bytes();
        let used = self.process(io, data);
        self.take_local(io);
        // A message reassembled from fragments is held here, not in the reactor's kept
        // input: count what it grew or freed in the runtime's budget.
        let budget = &io.policy.counters.budget;
        match self.held_bytes() {
            now if now > held => budget.add(now - held),
            now => budget.sub(held - now),
        }
        let Phase::Ws(st) = &mut self.phase else {
            return used;
        };
        // Bytes after our ping: the peer is alive, the ping answered (a tick kept for long
        // would read back wrong).
        if st.ping_sent.is_some_and(|t| io.last_read > t.at(io.now)) {
            st.ping_sent = None;
        }
        // Input kept because reading paused is whole frames waiting, not a partial message.
        let partial = (used < data.len() && !io.req.pause) || st.session.in_message();
        match (partial, st.partial_since.is_some()) {
            (true, false) => self.partial_began(io),
            (false, true) => {
                if let Phase::Ws(st) = &mut self.phase {
                    st.partial_since = None;
                }
            }
            _ => {}
        }
        used
    }

    fn on_eof(&mut self, io: &mut Io<'_>) {
        self.close_after_handler(io, CloseReason::PeerClosed);
    }

    fn on_drained(&mut self, _io: &mut Io<'_>) {
        if matches!(self.phase, Phase::Ws(_)) {
            self.handler.deliver(&self.conn, None, Event::Drained);
        }
    }

    /// Handshake, heartbeat, pong, idle and close timeouts.
    fn on_timer(&mut self, io: &mut Io<'_>) {
        let now = io.now;
        let idle = self.idle_timeout();
        let (ping_interval, pong_timeout) =
            (self.cfg().ws.ping_interval, self.cfg().ws.pong_timeout);
        let st = match &mut self.phase {
            Phase::Http { deadline, .. } => {
                if deadline.is_some_and(|d| now >= d.at()) {
                    io.close(CloseReason::HandshakeTimeout);
                }
                return;
            }
            Phase::Auth(p) => {
                if p.deadline.is_some_and(|d| now >= d.at()) {
                    io.close(CloseReason::HandshakeTimeout);
                }
                return;
            }
            Phase::Poll(w) => {
                if w.deadline.is_some_and(|d| now >= d.at()) {
                    io.close(CloseReason::IdleTimeout);
                }
                return;
            }
            Phase::Ws(st) => st,
        };
        if st.close_deadline().is_some_and(|t| now >= t) {
            return io.close(CloseReason::Local);
        }
        let message_timeout = ws_config(&self.conn).ws.message_timeout;
        if st
            .partial_since
            .is_some_and(|t| elapsed(t.at(now), now, message_timeout))
        {
            st.partial_since = None;
            self.close_frame(io, Some(CloseCode::POLICY), "message timeout");
            let why = format!("a message did not complete within {message_timeout:?}");
            return io.close(CloseReason::Protocol(why));
        }
        if idle.is_some_and(|i| elapsed(io.last_read, now, i)) {
            self.close_frame(io, Some(CloseCode::AWAY), "idle timeout");
            return io.close(CloseReason::IdleTimeout);
        }
        match st.ping_sent.map(|t| t.at(now)) {
            Some(sent) if sent >= io.last_read => {
                if elapsed(sent, now, pong_timeout) {
                    self.close_frame(io, Some(CloseCode::AWAY), "pong timeout");
                    io.close(CloseReason::PongTimeout);
                }
            }
            _ => {
                if ping_interval.is_some_and(|i| elapsed(io.last_read, now, i)) {
                    st.ping_sent = Some(Tick::before(now));
                    self.frame_admitted(io, OpCode::Ping, b"", 0);
                }
            }
        }
    }

    fn on_command(&mut self, io: &mut Io<'_>, cmd: ConnCmd) {
        match cmd {
            ConnCmd::Message(op, data) => self.frame_admitted(io, op, &data, data.len()),
            ConnCmd::Frames(f) => {
                let admitted = f.plain.len();
                match &self.phase {
                    Phase::Ws(st) if !st.session.close_sent() => {
                        let bytes = match (st.session.shared_choice(), &f.deflated) {
                            (SharedChoice::Deflated, Some(d)) => d.clone(),
                            _ => f.plain.clone(),
                        };
                        io.push_admitted(Payload::Shared(bytes), admitted);
                    }
                    _ => io.unadmit(admitted),
                }
            }
            ConnCmd::Send(p) => {
                let n = p.as_slice().len();
                io.push_admitted(p, n);
            }
            ConnCmd::Close(reason) => {
                // A close the reactor or a queue decided: tell the peer why.
                match &reason {
                    CloseReason::QueueOverflow => {
                        self.close_frame(io, Some(CloseCode::POLICY), "outbound queue overflow")
                    }
                    CloseReason::OverBudget => {
                        self.close_frame(io, Some(CloseCode::TRY_AGAIN), "server over budget")
                    }
                    _ => {}
                }
                io.close(reason)
            }
            ConnCmd::CloseWith(code, reason) => self.user_close(io, code, &reason),
            ConnCmd::Failed(msg) => {
                self.close_frame(io, Some(CloseCode::ERROR), "handler failed");
                io.close(CloseReason::HandlerPanic(msg));
            }
            ConnCmd::CaughtUp => {
                let awaited = match &mut self.phase {
                    Phase::Ws(st) => st.close.as_mut().and_then(|c| c.awaiting.take()),
                    _ => None,
                };
                if let Some(reason) = awaited {
                    io.close(reason);
                }
            }
            ConnCmd::Driver(msg) => match msg.downcast::<AuthOutcome>() {
                Ok(outcome) => self.authenticated(io, *outcome),
                Err(msg) => {
                    if let Ok(reply) = msg.downcast::<PollReply>() {
                        self.poll_reply(io, *reply);
                    }
                }
            },
            ConnCmd::Resume | ConnCmd::JoinGroup(_) | ConnCmd::LeaveGroup(_) => {}
        }
    }

    fn on_local(&mut self, io: &mut Io<'_>, kind: Kind, data: &[u8]) {
        self.frame_local(io, kind, data);
    }

    fn offer(&mut self, io: &mut Io<'_>, frames: &SharedFrames) -> Offer {
        let bytes = match &self.phase {
            Phase::Ws(st) if !st.session.close_sent() => {
                match (st.session.shared_choice(), &frames.deflated) {
                    (SharedChoice::Deflated, Some(d)) => d.clone(),
                    _ => frames.plain.clone(),
                }
            }
            _ => return Offer::Closed,
        };
        io.offer_shared(bytes)
    }

    fn on_shutdown(&mut self, io: &mut Io<'_>) {
        if let Phase::Poll(wait) = &mut self.phase {
            // Its session closes too and answers (with the close): pass that on, then close.
            wait.close = true;
            return;
        }
        self.close_frame(io, Some(CloseCode::AWAY), "server shutdown");
        self.close_after_handler(io, CloseReason::Shutdown);
    }

    fn on_error(&mut self, _io: &mut Io<'_>, error: Error) {
        self.report(error);
    }

    fn on_closing(&mut self) {
        let c = &self.conn;
        c.server()
            .report_state(c.id(), &c.peer_addr(), &ConnState::Closing);
    }

    fn on_closed(&mut self, reason: &CloseReason) {
        let c = self.conn.clone();
        c.server().policy.counters.budget.sub(self.held_bytes());
        let server = c.server().clone();
        server.report_state(c.id(), &c.peer_addr(), &ConnState::Closed(reason.clone()));
        if let Phase::Ws(st) = &self.phase {
            server.ws_conn_gone(&c.peer_addr());
            let (code, why) = st.close_for_handler();
            self.handler.deliver(&c, None, Event::WsClose(code, &why));
        }
        server.conn_gone();
    }

    fn next_deadline(&self, last_read: Instant) -> Option<Instant> {
        let st = match &self.phase {
            Phase::Http { deadline, .. } => return deadline.map(Stamp::at),
            Phase::Auth(p) => return p.deadline.map(Stamp::at),
            Phase::Poll(w) => return w.deadline.map(Stamp::at),
            Phase::Ws(st) => st,
        };
        let cfg = &self.cfg().ws;
        let beat = match st.ping_sent.map(|t| t.at(last_read)) {
            Some(sent) if sent >= last_read => deadline(sent, cfg.pong_timeout),
            _ => deadline_opt(last_read, cfg.ping_interval),
        };
        let idle = deadline_opt(last_read, self.idle_timeout());
        let partial = st
            .partial_since
            .and_then(|t| deadline(t.at(last_read), cfg.message_timeout));
        earliest(earliest(st.close_deadline(), partial), earliest(beat, idle))
    }

    fn id(&self) -> u64 {
        self.conn.id().0
    }
}

#[cfg(test)]
mod tests {
    //! The WebSocket driver alone, with fake time: bytes in, bytes and requests out.

    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::proto::ws::WsConfig;
    use crate::reactor::driver::Requests;
    use crate::reactor::outq::OutQueue;
    use crate::reactor::{Link, Place};
    use crate::server::handle::ConnInfo;
    use crate::{Listen, Runtime, ServerConfig, WsMessage};

    struct Rig {
        _rt: Runtime,
        driver: WsDriver,
        link: Arc<Link>,
        out: OutQueue,
        now: Instant,
        last_read: Instant,
    }

    /// A driver for a connection of a real (idle) server, driven by hand.
    fn rig(ws: WsConfig) -> Rig {
        let rt = Runtime::builder()
            .pollers(1)
            .handler_threads(1)
            .build()
            .unwrap();
        let server = rt
            .serve(Listen::tcp("127.0.0.1:0"))
            .config(ServerConfig::new().dispatch(crate::Dispatch::Inline))
            .websocket(
                WsServerConfig::new().ws(ws),
                crate::on_message(|ws: &crate::WsConn, m: WsMessage<'_>| {
                    if let WsMessage::Text(t) = m {
                        let _ = ws.send_text(t);
                    }
                }),
            )
            .unwrap();
        let shared = server.shared.clone();
        let poller = rt.poller_for_tests();
        // This thread stands in for the poller: inline handlers' sends use its outbox.
        local::enter(poller.id);
        let place = Place {
            poller,
            slot: 9999,
            gen: 1,
        };
        let info = ConnInfo::new(
            crate::server::dispatch::next_conn_id(),
            crate::server::trace::no_span(),
            shared.clone(),
            crate::Addr::Inet("127.0.0.1:1".parse().unwrap()),
            None,
            None,
        );
        let link: Arc<crate::server::handle::ConnShared> = Arc::new(Link::new(place, info));
        // The link's policy is the server's own (its counters), not a copy.
        assert!(Arc::ptr_eq(link.policy(), &shared.policy));
        let conn = Conn {
            inner: link.clone(),
        };
        let now = Instant::now();
        Rig {
            _rt: rt,
            driver: WsDriver::new(conn),
            link,
            out: OutQueue::default(),
            now,
            last_read: now,
        }
    }

    impl Rig {
        fn call<R>(&mut self, f: impl FnOnce(&mut WsDriver, &mut Io<'_>) -> R) -> (R, Requests) {
            let mut req = Requests::default();
            let mut io = Io::new(
                self.now,
                self.last_read,
                &self.link,
                &mut self.out,
                &mut req,
            );
            let r = f(&mut self.driver, &mut io);
            (r, req)
        }

        fn input(&mut self, bytes: &[u8]) -> Requests {
            self.last_read = self.now;
            let mut buf = bytes.to_vec();
            let (used, req) = self.call(|d, io| d.on_input(io, &mut buf));
            assert_eq!(used, bytes.len());
            req
        }

        fn output(&mut self) -> Vec<u8> {
            let mut w = Vec::new();
            self.out.flush_to(&mut w).unwrap();
            w
        }

        fn open(&mut self) {
            let (_, req) = self.call(|d, io| d.on_open(io));
            assert!(req.rearm, "the upgrade deadline is armed");
            let req = self.input(UPGRADE.as_bytes());
            assert!(req.close.is_none());
            let out = String::from_utf8(self.output()).unwrap();
            assert!(out.starts_with("HTTP/1.1 101"), "{out}");
        }
    }

    const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    /// A masked client text frame.
    fn text(t: &str) -> Vec<u8> {
        let mut f = vec![0x81, 0x80 | t.len() as u8, 1, 2, 3, 4];
        f.extend(t.bytes().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
        f
    }

    #[test]
    fn the_upgrade_answers_101_and_messages_reach_the_inline_handler() {
        let mut r = rig(WsConfig::default());
        r.open();
        let _ = r.input(&text("hi"));
        // The inline handler's echo went to the local outbox, framed by `take_local`.
        assert_eq!(r.output(), vec![0x81, 2, b'h', b'i']);
    }

    #[test]
    fn the_handshake_deadline_closes_a_silent_client() {
        let mut r = rig(WsConfig::default().handshake_timeout(Duration::from_secs(2)));
        let (_, _) = r.call(|d, io| d.on_open(io));
        let at = r.driver.next_deadline(r.last_read).unwrap();
        assert_eq!(at, r.now + Duration::from_secs(2));
        r.now += Duration::from_secs(1);
        let (_, req) = r.call(|d, io| d.on_timer(io));
        assert!(req.close.is_none());
        r.now += Duration::from_secs(1);
        let (_, req) = r.call(|d, io| d.on_timer(io));
        assert_eq!(req.close, Some(CloseReason::HandshakeTimeout));
    }

    #[test]
    fn heartbeat_pings_then_a_silent_peer_times_out() {
        let cfg = WsConfig::default()
            .ping_interval(Some(Duration::from_secs(10)))
            .pong_timeout(Duration::from_secs(5));
        let mut r = rig(cfg);
        r.open();
        assert_eq!(
            r.driver.next_deadline(r.last_read),
            Some(r.last_read + Duration::from_secs(10))
        );
        r.now += Duration::from_secs(10);
        let (_, req) = r.call(|d, io| d.on_timer(io));
        assert!(req.close.is_none());
        assert_eq!(r.output(), vec![0x89, 0], "an empty ping");
        // The ping's time is kept to the millisecond, rounded down.
        let at = r.driver.next_deadline(r.last_read).unwrap();
        let due = r.now + Duration::from_secs(5);
        assert!(
            at <= due && due - at < Duration::from_millis(1),
            "{at:?} {due:?}"
        );
        r.now += Duration::from_secs(5);
        let (_, req) = r.call(|d, io| d.on_timer(io));
        assert_eq!(req.close, Some(CloseReason::PongTimeout));
        let out = r.output();
        assert_eq!(
            &out[..4],
            &[0x88, 14, 0x03, 0xe9],
            "close 1001 'pong timeout'"
        );
    }

    #[test]
    fn input_after_a_ping_proves_liveness() {
        let cfg = WsConfig::default()
            .ping_interval(Some(Duration::from_secs(10)))
            .pong_timeout(Duration::from_secs(5));
        let mut r = rig(cfg);
        r.open();
        r.now += Duration::from_secs(10);
        let _ = r.call(|d, io| d.on_timer(io));
        r.now += Duration::from_secs(1);
        let _ = r.input(&text("x"));
        r.now += Duration::from_secs(4);
        let (_, req) = r.call(|d, io| d.on_timer(io));
        assert!(req.close.is_none(), "the peer spoke after our ping");
        // The answered ping is forgotten: its 4-byte tick is never read back weeks later.
        assert!(matches!(&r.driver.phase, Phase::Ws(st) if st.ping_sent.is_none()));
    }

    #[test]
    fn a_protocol_error_sends_1002_and_closes() {
        let mut r = rig(WsConfig::default());
        r.open();
        // An unmasked client frame is a protocol error (RFC 6455 5.1).
        let req = r.input(&[0x81, 1, b'x']);
        assert!(matches!(req.close, Some(CloseReason::Protocol(_))));
        let out = r.output();
        assert_eq!(&out[..4], &[0x88, out[1], 0x03, 0xea], "close 1002");
    }

    /// A masked client ping.
    fn ping(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x89, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_partial_message_is_cut_at_the_message_timeout() {
        let cfg = WsConfig::default().message_timeout(Duration::from_secs(10));
        let mut r = rig(cfg);
        r.open();
        // A frame header announcing 10 bytes, and 2 of them.
        let mut part = text("0123456789");
        part.truncate(8);
        let (used, req) = r.call(|d, io| d.on_input(io, &mut part.clone()));
        assert_eq!(used, 0, "the partial frame stays with the reactor");
        assert!(req.rearm, "10 s comes before the 30 s ping");
        assert!(req.close.is_none());
        // The message's start is kept to the millisecond, rounded up: never early.
        let at = r.driver.next_deadline(r.last_read).unwrap();
        let due = r.now + Duration::from_secs(10);
        assert!(
            at >= due && at - due < Duration::from_millis(1),
            "{at:?} {due:?}"
        );
        r.now += Duration::from_secs(9);
        let (_, req) = r.call(|d, io| d.on_timer(io));
        assert!(req.close.is_none());
        r.now = at;
        let (_, req) = r.call(|d, io| d.on_timer(io));
        assert!(matches!(req.close, Some(CloseReason::Protocol(_))));
        let out = r.output();
        assert_eq!(&out[2..4], &[0x03, 0xf0], "close 1008");
    }

    #[test]
    fn a_partial_message_arms_no_timer_when_one_comes_first() {
        let mut r = rig(WsConfig::default().message_timeout(Duration::from_secs(30)));
        r.open();
        let mut part = text("0123456789");
        part.truncate(8);
        let (_, req) = r.call(|d, io| d.on_input(io, &mut part.clone()));
        assert!(!req.rearm, "the 30 s ping timer will look at it");
        assert_eq!(
            r.driver.next_deadline(r.last_read),
            Some(r.now + Duration::from_secs(30))
        );
    }

    #[test]
    fn a_completed_message_clears_the_message_deadline() {
        let mut r = rig(WsConfig::default().ping_interval(None));
        r.open();
        let whole = text("0123456789");
        let (used, _) = r.call(|d, io| d.on_input(io, &mut whole[..8].to_vec()));
        assert_eq!(used, 0);
        let _ = r.input(&whole);
        assert_eq!(r.driver.next_deadline(r.last_read), None);
    }

    #[test]
    fn a_ping_flood_costs_a_bounded_number_of_pongs() {
        let mut r = rig(WsConfig::default());
        r.open();
        let flood: Vec<u8> = (0..1000u32).flat_map(|i| ping(&i.to_be_bytes())).collect();
        let _ = r.input(&flood);
        let out = r.output();
        let pongs = out.chunks(6).filter(|f| f[0] == 0x8a).count();
        assert_eq!(out.len(), pongs * 6, "only pongs of 4-byte payloads");
        assert_eq!(pongs, MAX_PONGS_PER_INPUT + 1);
        assert_eq!(
            &out[out.len() - 4..],
            &999u32.to_be_bytes(),
            "the latest is answered"
        );
    }

    #[test]
    fn head_answers_without_a_body_and_keep_alive_keeps_the_deadline() {
        let mut r = rig(WsConfig::default().handshake_timeout(Duration::from_secs(10)));
        let _ = r.call(|d, io| d.on_open(io));
        let first = r.driver.next_deadline(r.last_read);
        r.now += Duration::from_secs(5);
        let req = r.input(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(req.close.is_none(), "keep-alive");
        let out = String::from_utf8(r.output()).unwrap();
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "no body after the head: {out:?}");
        assert!(out.contains("Content-Length: "), "{out}");
        assert_eq!(
            r.driver.next_deadline(r.last_read),
            first,
            "absolute deadline"
        );
    }

    #[test]
    fn pipelined_requests_are_answered_one_at_a_time() {
        let mut r = rig(WsConfig::default());
        let _ = r.call(|d, io| d.on_open(io));
        let two = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut buf = two.to_vec();
        let (used, req) = r.call(|d, io| d.on_input(io, &mut buf));
        assert_eq!(used, two.len() / 2, "the second waits");
        assert!(req.hold);
    }

    #[test]
    fn an_upgrade_without_host_or_with_two_keys_is_400() {
        for bad in [
            UPGRADE.replace("Host: x\r\n", ""),
            UPGRADE.replace(
                "Sec-WebSocket-Version",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version",
            ),
        ] {
            let mut r = rig(WsConfig::default());
            let _ = r.call(|d, io| d.on_open(io));
            let req = r.input(bad.as_bytes());
            assert!(matches!(req.close, Some(CloseReason::Protocol(_))));
            let out = String::from_utf8(r.output()).unwrap();
            assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        }
    }

    #[test]
    fn duration_max_timeouts_arm_nothing() {
        let cfg = WsConfig::default()
            .handshake_timeout(Duration::MAX)
            .ping_interval(Some(Duration::MAX))
            .idle_timeout(Some(Duration::MAX));
        let mut r = rig(cfg);
        let _ = r.call(|d, io| d.on_open(io));
        assert_eq!(r.driver.next_deadline(r.last_read), None);
        r.open();
        assert_eq!(r.driver.next_deadline(r.last_read), None);
        r.now += Duration::from_secs(1 << 30);
        let (_, req) = r.call(|d, io| d.on_timer(io));
        assert!(req.close.is_none());
    }
}

#[cfg(test)]
mod size_tests {
    /// What an idle WebSocket connection holds (run with `--nocapture` to read it).
    #[test]
    fn print_sizes() {
        use crate::reactor::stream::StreamConn;
        eprintln!(
            "StreamConn<WsDriver>={} WsDriver={} WsState={} ConnShared={} StreamConn<RawDriver>={}",
            std::mem::size_of::<StreamConn<super::WsDriver>>(),
            std::mem::size_of::<super::WsDriver>(),
            std::mem::size_of::<super::WsState>(),
            std::mem::size_of::<crate::server::handle::ConnShared>(),
            std::mem::size_of::<StreamConn<crate::server::stream::RawDriver>>(),
        );
        eprintln!(
            "HandlerSlot={} Phase={} WsSession={} ConnInfo={} Addr={} Link<()>={} Timer={}",
            std::mem::size_of::<crate::server::dispatch::WsSlot>(),
            std::mem::size_of::<super::Phase>(),
            std::mem::size_of::<crate::proto::ws::WsSession>(),
            std::mem::size_of::<crate::server::handle::ConnInfo>(),
            std::mem::size_of::<crate::base::Addr>(),
            std::mem::size_of::<crate::reactor::Link<()>>(),
            std::mem::size_of::<crate::reactor::timer::Timer>(),
        );
        eprintln!(
            "Handlers={} UserHandler={}",
            std::mem::size_of::<crate::server::dispatch::Handlers>(),
            std::mem::size_of::<crate::server::dispatch::UserHandler>(),
        );
    }

    /// The idle-memory budget of BENCHMARKS.md ("Idle memory, fifth session"): a struct
    /// that grows past it moves a connection into a larger malloc chunk. The socket's size
    /// differs in debug builds (mio keeps a selector id), so the connection is checked in
    /// release only; the tracing span adds to the shared handle.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn idle_connection_structs_stay_within_their_chunks() {
        use crate::reactor::stream::StreamConn;
        // With the `Arc`'s two counts: 88 B, a 96 B chunk (the span takes 40 more).
        let shared = if cfg!(feature = "tracing") { 112 } else { 72 };
        assert!(std::mem::size_of::<crate::server::handle::ConnShared>() <= shared);
        assert!(std::mem::size_of::<crate::server::dispatch::WsSlot>() <= 16);
        assert!(std::mem::size_of::<super::WsDriver>() <= 56);
        if !cfg!(debug_assertions) {
            // 120 B, a 128 B chunk.
            assert!(std::mem::size_of::<StreamConn<super::WsDriver>>() <= 120);
        }
    }
}
