//! WebSocket connections on a poller: the HTTP upgrade (and the plain HTTP hook), frame
//! decoding into handler events, framing of outgoing messages, heartbeats and the closing
//! handshake. The protocol itself is the sans-IO engine in [`crate::proto::ws`]; this file only
//! moves its bytes and events.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use super::local::{self, Kind};
use super::poller::Poller;
use super::stream::{
    describe_panic, stream_in, Event, HandlerSlot, Phase, Proto, StreamConn, UserHandler,
};
use crate::base::CloseReason;
use crate::proto::http::{parse_request, ParseOutcome, Request};
use crate::proto::ws::handshake::{accept, is_upgrade, write_rejection};
use crate::proto::ws::{
    close_reply, CloseCode, Incoming, OpCode, Role, SharedChoice, SharedFrames, WsSession,
};
use crate::server::dispatch::Job;
use crate::server::handle::{account, ConnShared};
use crate::server::websocket::{WsConn, WsServerConfig};
use crate::server::ServerShared;
use crate::Error;

/// Per-connection WebSocket state kept by the reactor (boxed: only WebSocket connections
/// pay for it).
pub(crate) struct WsState {
    session: WsSession,
    /// When our last ping left (a pong or any input after it proves liveness).
    ping_sent: Option<Instant>,
    /// The close exchanged (boxed: only closing connections pay for it).
    close: Option<Box<CloseInfo>>,
}

/// The close code and reason exchanged (ours or the peer's), for `on_close`, and how long
/// we wait for the peer's answer to ours.
struct CloseInfo {
    code: CloseCode,
    reason: String,
    deadline: Option<Instant>,
}

impl WsState {
    fn new(session: WsSession) -> Self {
        WsState {
            session,
            ping_sent: None,
            close: None,
        }
    }

    fn close_deadline(&self) -> Option<Instant> {
        self.close.as_ref().and_then(|c| c.deadline)
    }

    fn record_close(&mut self, code: CloseCode, reason: &str) {
        if self.close.is_none() {
            self.close = Some(Box::new(CloseInfo {
                code,
                reason: reason.to_owned(),
                deadline: None,
            }));
        }
    }

    /// The nearest heartbeat, pong, idle or close deadline.
    pub(crate) fn next_deadline(
        &self,
        last_read: Instant,
        server: &ServerShared,
    ) -> Option<Instant> {
        let cfg = &server.ws.as_ref()?.ws;
        let mut next = self.close_deadline();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        match self.ping_sent {
            Some(sent) if sent >= last_read => consider(Some(sent + cfg.pong_timeout)),
            _ => consider(cfg.ping_interval.map(|i| last_read + i)),
        }
        consider(
            cfg.idle_timeout
                .or(server.config.idle_timeout)
                .map(|i| last_read + i),
        );
        next
    }

    /// Whether our close frame went out (no more messages may follow it).
    pub(crate) fn close_sent(&self) -> bool {
        self.session.close_sent()
    }

    /// How this session takes frames encoded once for many.
    pub(crate) fn shared_choice(&self) -> SharedChoice {
        self.session.shared_choice()
    }

    /// What `on_close` reports: the exchanged close, or 1006 when there was none.
    pub(crate) fn close_for_handler(&self) -> (CloseCode, String) {
        match &self.close {
            Some(c) => (c.code, c.reason.clone()),
            None => (CloseCode::ABNORMAL, String::new()),
        }
    }
}

fn ws_of(c: &mut StreamConn) -> Option<&mut WsState> {
    match &mut c.proto {
        Proto::Ws(ws) => Some(ws),
        _ => None,
    }
}

impl Poller {
    /// `n` bytes of HTTP or WebSocket input are in the read buffer.
    pub(crate) fn framed_input(&mut self, slot: u32, gen: u32, n: usize) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let pending = match self.stream_mut(slot, gen) {
            Some(c) => std::mem::take(&mut c.rbuf),
            None => return self.read_buf = buf,
        };
        if pending.is_empty() {
            let used = self.framed_process(slot, gen, &mut buf[..n]);
            if used < n {
                if let Some(c) = self.stream_mut(slot, gen) {
                    c.rbuf = buf[used..n].to_vec();
                }
            }
        } else {
            let mut acc = pending;
            acc.extend_from_slice(&buf[..n]);
            let used = self.framed_process(slot, gen, &mut acc);
            acc.drain(..used);
            if let Some(c) = self.stream_mut(slot, gen) {
                if !acc.is_empty() {
                    c.rbuf = acc;
                }
            }
        }
        self.read_buf = buf;
        self.drain_local();
    }

    /// Consumes what it can of `buf`: HTTP requests, then WebSocket frames.
    fn framed_process(&mut self, slot: u32, gen: u32, buf: &mut [u8]) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let Some(c) = self.stream_mut(slot, gen) else {
                return buf.len();
            };
            if !matches!(c.phase, Phase::Open | Phase::Upgrade { .. }) {
                return buf.len(); // closing: discard
            }
            match c.proto {
                Proto::Http => match self.http_step(slot, gen, &buf[pos..]) {
                    Some(used) => pos += used,
                    None => return pos,
                },
                Proto::Ws(_) => return pos + self.ws_decode(slot, gen, &mut buf[pos..]),
                Proto::Raw => return buf.len(),
            }
        }
        pos
    }

    /// Parses one HTTP request. `None` when more bytes are needed.
    fn http_step(&mut self, slot: u32, gen: u32, buf: &[u8]) -> Option<usize> {
        let ws = self.stream_mut(slot, gen)?.server().ws.clone()?;
        match parse_request(buf, &ws.ws.http_limits()) {
            ParseOutcome::Partial => None,
            ParseOutcome::Error { status } => {
                self.reject(slot, gen, status, "malformed or oversized request");
                Some(buf.len())
            }
            ParseOutcome::Complete {
                mut request,
                consumed,
            } => {
                if let Some(peer) = self.stream_mut(slot, gen)?.handle.peer_addr().as_inet() {
                    request.set_peer(peer);
                }
                let on_path = ws.path.as_deref().is_none_or(|p| p == request.path());
                if is_upgrade(&request) && on_path {
                    self.upgrade(slot, gen, request, &ws);
                } else {
                    self.http_hook(slot, gen, &request, &ws);
                }
                Some(consumed)
            }
        }
    }

    /// Appends protocol bytes (responses, control frames) to a connection's queue.
    fn push_proto(&mut self, slot: u32, gen: u32, f: impl FnOnce(&mut Vec<u8>)) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        let n = c.outq.append_with(false, f);
        account(c.shared(), n as isize);
        if c.mark_dirty() {
            self.dirty.push((slot, gen));
        }
    }

    /// Answers a refused request with `status` and closes.
    fn reject(&mut self, slot: u32, gen: u32, status: u16, reason: &str) {
        log::debug!("upgrade refused: {status} {reason}");
        self.push_proto(slot, gen, |out| write_rejection(status, reason, out));
        let why = format!("request refused with {status}: {reason}");
        self.begin_close(slot, gen, CloseReason::Protocol(why));
    }

    fn http_hook(&mut self, slot: u32, gen: u32, req: &Request, ws: &WsServerConfig) {
        let resp = match &ws.http {
            Some(hook) => catch_unwind(AssertUnwindSafe(|| hook(req))).unwrap_or_else(|p| {
                log::error!("http hook panicked: {}", describe_panic(&*p));
                crate::proto::http::Response::text(500, "internal error")
            }),
            None => crate::proto::http::Response::not_found(),
        };
        let close = req.version() == 0
            || req
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        self.push_proto(slot, gen, |out| resp.write_to(out));
        if close {
            self.begin_close(slot, gen, CloseReason::Local);
        } else if let Some(c) = self.stream_mut(slot, gen) {
            // Keep-alive: the next request gets a fresh handshake deadline.
            let deadline = Instant::now() + ws.ws.handshake_timeout;
            c.set_phase(Phase::Upgrade { deadline });
        }
    }

    /// Checks origin, authenticator and per-IP cap, answers 101 and opens the handler.
    fn upgrade(&mut self, slot: u32, gen: u32, req: Request, ws: &Arc<WsServerConfig>) {
        if !ws.origins.allows(req.header("origin")) {
            return self.reject(slot, gen, 403, "origin not allowed");
        }
        let identity = match &ws.auth {
            None => None,
            Some(auth) => match catch_unwind(AssertUnwindSafe(|| auth(&req))) {
                Ok(Ok(id)) => id,
                Ok(Err(rej)) => return self.reject(slot, gen, rej.status, &rej.reason),
                Err(p) => {
                    log::error!("authenticator panicked: {}", describe_panic(&*p));
                    return self.reject(slot, gen, 500, "authenticator failed");
                }
            },
        };
        let mut out = Vec::new();
        let accepted = match accept(&req, &ws.ws, &[], &mut out) {
            Ok(a) => a,
            Err(crate::proto::ws::WsError::Handshake { status, reason }) => {
                return self.reject(slot, gen, status, reason)
            }
            Err(e) => return self.reject(slot, gen, 400, e.reason()),
        };
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        let server = c.server().clone();
        if !server.ws_admit(c.handle.peer_addr(), ws.max_per_ip) {
            return self.reject(slot, gen, 429, "too many connections from this address");
        }
        if let Some(id) = identity {
            let _ = c.shared().identity.set(Box::new(id));
        }
        let session = WsSession::new(Role::Server, accepted.deflate);
        c.proto = Proto::Ws(WsState::new(session));
        c.set_phase(Phase::Open);
        c.last_read = Instant::now();
        if let Some(at) = c.next_deadline() {
            self.timers
                .add(at, slot, gen, super::timer::TimerKind::Conn);
        }
        self.push_proto(slot, gen, |o| o.extend_from_slice(&out));
        self.open_ws_handler(slot, gen, req);
    }

    fn open_ws_handler(&mut self, slot: u32, gen: u32, req: Request) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        let Some(factory) = c.server().ws_factory.clone() else {
            return;
        };
        match &mut c.handler {
            HandlerSlot::Inline(h) => {
                let ws = WsConn::from_conn(&c.handle);
                let r = catch_unwind(AssertUnwindSafe(|| {
                    let mut made = factory.create(ws, &req);
                    made.on_open(ws, &req);
                    made
                }));
                match r {
                    Ok(made) => *h = Some(UserHandler::Ws(made)),
                    Err(p) => self.handler_panicked(slot, gen, describe_panic(&*p)),
                }
                self.drain_local();
            }
            HandlerSlot::Threads => {
                let conn = c.handle.clone();
                let key = conn.id().0;
                let job = Job::WsOpen { conn, factory, req };
                self.pool.dispatch(key, job);
            }
        }
    }

    /// Decodes frames, delivering messages to the handler; answers pings and closes.
    fn ws_decode(&mut self, slot: u32, gen: u32, buf: &mut [u8]) -> usize {
        let Poller {
            entries,
            gens,
            pool,
            ws_scratch,
            ..
        } = self;
        let Some(c) = stream_in(entries, gens, slot, gen) else {
            return buf.len();
        };
        let server = c.server().clone();
        let Some(cfg) = server.ws.as_ref() else {
            return buf.len();
        };
        let StreamConn {
            proto,
            handler,
            handle,
            ..
        } = &mut *c;
        let Proto::Ws(st) = proto else {
            return buf.len();
        };
        let mut pings: Vec<Vec<u8>> = Vec::new();
        let mut peer_close: Option<(CloseCode, String)> = None;
        let mut panicked: Option<String> = None;
        let mut inbound = 0usize;
        let result = st.session.decode(buf, &cfg.ws, ws_scratch, |m| {
            let ev = match m {
                Incoming::Text(t) => Event::Text(t),
                Incoming::Binary(b) => Event::Binary(b),
                Incoming::Ping(p) => {
                    // Through the local outbox, so the pong keeps its place among replies.
                    account(&handle.inner, p.len() as isize);
                    if !local::try_send_local(&handle.inner, Kind::Ws(OpCode::Pong), p) {
                        account(&handle.inner, -(p.len() as isize));
                        pings.push(p.to_vec());
                    }
                    return;
                }
                Incoming::Pong(_) => return,
                Incoming::Close(code, reason) => {
                    peer_close = Some((code, reason.to_owned()));
                    return;
                }
            };
            deliver(handler, handle, pool, ev, &mut panicked, &mut inbound);
        });
        if inbound > 0 {
            self.pause_if_behind(slot, gen);
        }
        if let Some(msg) = panicked {
            self.handler_panicked(slot, gen, msg);
        }
        self.drain_local();
        for p in pings {
            self.ws_frame(slot, gen, OpCode::Pong, &p);
        }
        match result {
            Ok(used) => {
                if let Some((code, reason)) = peer_close {
                    self.ws_peer_closed(slot, gen, code, reason);
                }
                used
            }
            Err(e) => {
                let code = e.close_code().unwrap_or(CloseCode::PROTOCOL);
                self.ws_fail(slot, gen, code, e.reason());
                let reason = CloseReason::Protocol(e.to_string());
                self.fail_soft(slot, gen, reason, Error::WebSocket(e));
                buf.len()
            }
        }
    }

    /// The peer sent close: answer it (unless we started), then close the TCP connection.
    fn ws_peer_closed(&mut self, slot: u32, gen: u32, code: CloseCode, reason: String) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        let ours = ws_of(c).is_some_and(|ws| ws.session.close_sent());
        if !ours {
            if let Some(ws) = ws_of(c) {
                ws.record_close(code, &reason);
            }
            let reply = close_reply(code);
            self.ws_close_frame(slot, gen, reply, "");
        }
        let why = if ours {
            CloseReason::Local
        } else {
            CloseReason::PeerClosed
        };
        self.begin_close(slot, gen, why);
    }

    /// A protocol failure: report it, then close gracefully (the close frame is flushed).
    fn fail_soft(&mut self, slot: u32, gen: u32, reason: CloseReason, err: Error) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        let server = c.server().clone();
        let id = c.shared().id;
        server.observer.on_error(Some(id), &err);
        self.dispatch(slot, gen, Event::Error(err));
        self.begin_close(slot, gen, reason);
    }

    /// Sends a close frame with `code` if none was sent yet, and records it for `on_close`.
    pub(crate) fn ws_fail(&mut self, slot: u32, gen: u32, code: CloseCode, reason: &str) {
        self.ws_close_frame(slot, gen, Some(code), reason);
    }

    fn ws_close_frame(&mut self, slot: u32, gen: u32, code: Option<CloseCode>, reason: &str) {
        let Poller {
            entries,
            gens,
            ws_scratch,
            dirty,
            ..
        } = self;
        let Some(c) = stream_in(entries, gens, slot, gen) else {
            return;
        };
        let StreamConn {
            proto,
            outq,
            handle,
            ..
        } = &mut *c;
        let Proto::Ws(st) = proto else {
            return;
        };
        let mut sent = false;
        let n = outq.append_with(false, |out| {
            sent = st
                .session
                .encode_close(out, code, reason, &mut ws_scratch.tx);
        });
        if sent {
            st.record_close(code.unwrap_or(CloseCode::STATUS), reason);
        }
        account(&handle.inner, n as isize);
        if c.mark_dirty() {
            dirty.push((slot, gen));
        }
    }

    /// Frames one message for a WebSocket connection (or appends raw bytes otherwise).
    /// `admitted` bytes were already counted against the queue bound.
    fn ws_frame_admitted(
        &mut self,
        slot: u32,
        gen: u32,
        op: OpCode,
        payload: &[u8],
        admitted: usize,
    ) {
        let Poller {
            entries,
            gens,
            ws_scratch,
            dirty,
            ..
        } = self;
        let Some(c) = stream_in(entries, gens, slot, gen) else {
            return;
        };
        let keep =
            c.server().config.drop_policy == crate::DropPolicy::DropOldest && !op.is_control();
        let StreamConn {
            proto,
            outq,
            handle,
            ..
        } = &mut *c;
        let server = handle.inner.server.clone();
        let Some(cfg) = server.ws.as_ref() else {
            return;
        };
        let n = match proto {
            Proto::Ws(st) if !st.session.close_sent() => outq.append_with(keep, |out| {
                st.session
                    .encode(out, op, payload, &cfg.ws, &mut ws_scratch.tx)
            }),
            _ => 0,
        };
        account(&handle.inner, n as isize - admitted as isize);
        if c.mark_dirty() {
            dirty.push((slot, gen));
        }
    }

    fn ws_frame(&mut self, slot: u32, gen: u32, op: OpCode, payload: &[u8]) {
        self.ws_frame_admitted(slot, gen, op, payload, 0);
    }

    /// A WebSocket message sent from another thread.
    pub(crate) fn cmd_ws_send(&mut self, conn: &Arc<ConnShared>, op: OpCode, data: &[u8]) {
        if self.stream_mut(conn.slot, conn.gen).is_none() {
            account(conn, -(data.len() as isize));
            return;
        }
        self.ws_frame_admitted(conn.slot, conn.gen, op, data, data.len());
    }

    /// A broadcast frame: the shared bytes go out as they are unless this session must
    /// compress itself.
    pub(crate) fn cmd_send_frames(&mut self, conn: &Arc<ConnShared>, frames: SharedFrames) {
        let admitted = frames.plain.len();
        let Some(c) = self.stream_mut(conn.slot, conn.gen) else {
            account(conn, -(admitted as isize));
            return;
        };
        let choice = match &c.proto {
            Proto::Ws(st) if !st.session.close_sent() => st.session.shared_choice(),
            _ => {
                account(conn, -(admitted as isize));
                return;
            }
        };
        let bytes = match (choice, &frames.deflated) {
            (SharedChoice::Deflated, Some(d)) => d.clone(),
            _ => frames.plain.clone(),
        };
        account(conn, bytes.len() as isize - admitted as isize);
        let keep = c.server().config.drop_policy == crate::DropPolicy::DropOldest;
        c.outq.push(super::Payload::Shared(bytes), keep);
        if c.mark_dirty() {
            self.dirty.push((conn.slot, conn.gen));
        }
    }

    /// The user asked to close: send the close frame and wait for the peer's answer.
    pub(crate) fn cmd_ws_close(&mut self, conn: &Arc<ConnShared>, code: CloseCode, reason: &str) {
        let (slot, gen) = (conn.slot, conn.gen);
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        if !matches!(c.proto, Proto::Ws(_)) {
            return self.begin_close(slot, gen, CloseReason::Local);
        }
        self.ws_fail(slot, gen, code, reason);
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        let timeout = c.server().ws.as_ref().map(|w| w.ws.close_timeout);
        if let (Some(ws), Some(t)) = (ws_of(c), timeout) {
            let at = Instant::now() + t;
            if let Some(info) = ws.close.as_mut() {
                info.deadline = Some(at);
            }
            self.timers
                .add(at, slot, gen, super::timer::TimerKind::Conn);
        }
    }

    /// Heartbeat, pong timeout, idle timeout and close timeout. True when it closed.
    pub(crate) fn ws_timer(&mut self, slot: u32, gen: u32, now: Instant) -> bool {
        let Some(c) = self.stream_mut(slot, gen) else {
            return true;
        };
        let last_read = c.last_read;
        let server = c.server().clone();
        let Some(cfg) = server.ws.as_ref().map(|w| &w.ws) else {
            return false;
        };
        let Some(ws) = ws_of(c) else {
            return false;
        };
        if ws.close_deadline().is_some_and(|t| now >= t) {
            self.begin_close(slot, gen, CloseReason::Local);
            return true;
        }
        let idle = cfg.idle_timeout.or(server.config.idle_timeout);
        if idle.is_some_and(|i| now.duration_since(last_read) >= i) {
            self.ws_fail(slot, gen, CloseCode::AWAY, "idle timeout");
            self.begin_close(slot, gen, CloseReason::IdleTimeout);
            return true;
        }
        match ws.ping_sent {
            Some(sent) if sent >= last_read => {
                if now >= sent + cfg.pong_timeout {
                    self.ws_fail(slot, gen, CloseCode::AWAY, "pong timeout");
                    self.begin_close(slot, gen, CloseReason::PongTimeout);
                    return true;
                }
            }
            _ => {
                if cfg
                    .ping_interval
                    .is_some_and(|i| now.duration_since(last_read) >= i)
                {
                    ws.ping_sent = Some(now);
                    self.ws_frame(slot, gen, OpCode::Ping, b"");
                }
            }
        }
        false
    }

    /// Frames a local (inline-handler) send for its connection.
    pub(crate) fn local_ws_send(&mut self, slot: u32, gen: u32, op: OpCode, data: &[u8]) {
        self.ws_frame_admitted(slot, gen, op, data, data.len());
    }
}

/// Hands one decoded message to the handler (inline, or as a job for its thread).
fn deliver(
    handler: &mut HandlerSlot,
    handle: &crate::Conn,
    pool: &crate::server::pool::HandlerPool,
    ev: Event<'_>,
    panicked: &mut Option<String>,
    inbound: &mut usize,
) {
    match handler {
        HandlerSlot::Inline(Some(UserHandler::Ws(h))) => {
            let ws = WsConn::from_conn(handle);
            let r = catch_unwind(AssertUnwindSafe(|| match ev {
                Event::Text(t) => h.on_text(ws, t),
                Event::Binary(b) => h.on_binary(ws, b),
                _ => {}
            }));
            if let Err(p) = r {
                *panicked = Some(describe_panic(&*p));
                *handler = HandlerSlot::Inline(None);
            }
        }
        HandlerSlot::Inline(_) => {}
        HandlerSlot::Threads => {
            let conn = handle.clone();
            let job = match ev {
                Event::Text(t) => {
                    count_inbound(handle, t.len(), inbound);
                    Job::Text {
                        conn,
                        text: t.to_owned(),
                    }
                }
                Event::Binary(b) => {
                    count_inbound(handle, b.len(), inbound);
                    Job::Binary {
                        conn,
                        data: b.to_vec(),
                    }
                }
                _ => return,
            };
            pool.dispatch(handle.id().0, job);
        }
    }
}

/// Counts bytes for a handler thread before they are handed over, so that the thread's
/// subtraction on consumption can never run ahead of the count.
fn count_inbound(handle: &crate::Conn, n: usize, inbound: &mut usize) {
    handle
        .inner
        .inbound
        .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    *inbound += n;
}
