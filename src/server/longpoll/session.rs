//! A long-polling session: the driver of its virtual connection. It keeps the outbound
//! records until the client acknowledges them, holds one GET and one POST at a time,
//! answers the held GET with a batch at the end of a turn with output (or empty after the
//! poll interval: the heartbeat) and closes after the ping timeout without a GET.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::wire::{self, Kind};
use super::{error, reply, response, Carrier, PollReply, PollRequest};
use crate::base::{deadline, earliest, CloseReason};
use crate::proto::http::Request;
use crate::proto::ws::{CloseCode, OpCode, SharedFrames};
use crate::reactor::local;
use crate::reactor::{admit, Admit, ConnCmd, Driver, Io, Offer, Payload};
use crate::server::dispatch::{Event, WsSlot};
use crate::server::handle::Conn;
use crate::server::observe::ConnState;
use crate::Error;

/// A record's payload: owned, or a range of a frame shared with other recipients.
enum Data {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>, usize, usize),
}

impl Data {
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Owned(v) => v,
            Data::Shared(a, s, e) => &a[*s..*e],
        }
    }
}

/// One outbound record and the bytes it was admitted with (uncounted when acknowledged).
struct Rec {
    kind: Kind,
    data: Data,
    admitted: usize,
}

/// The held GET: the connection it came on and when it is answered empty.
struct Held {
    carrier: Carrier,
    until: Option<Instant>,
    /// The client's cap on the batch's payload bytes.
    max: Option<u64>,
}

/// A close this side started: the record is queued; the session goes when the client
/// acknowledges it or at `by`.
struct Closing {
    by: Option<Instant>,
    why: CloseReason,
}

/// A long-polling session's state (see the module docs).
pub(crate) struct Session {
    conn: Conn,
    handler: WsSlot,
    sid: String,
    /// Unacknowledged records; `out[0]` has sequence number `base`.
    out: VecDeque<Rec>,
    base: u64,
    /// `out[..sent]` went out in a response (and may come again).
    sent: usize,
    get: Option<Held>,
    /// A POST whose answer waits for the handler to catch up.
    post: Option<Carrier>,
    /// The last client batch number delivered.
    posts: u64,
    /// When the last GET was answered (or the session opened): the ping timeout's start.
    idle_since: Instant,
    closing: Option<Box<Closing>>,
    /// The close code and reason `on_close` gets.
    close: Option<(CloseCode, String)>,
    /// The handshake, until `on_open` answers it.
    opening: Option<Box<(Conn, Request)>>,
}

impl Session {
    pub(crate) fn new(conn: Conn, sid: String, carrier: Conn, req: Request) -> Self {
        Session {
            conn,
            handler: WsSlot::default(),
            sid,
            out: VecDeque::new(),
            base: 1,
            sent: 0,
            get: None,
            post: None,
            posts: 0,
            idle_since: Instant::now(),
            closing: None,
            close: None,
            opening: Some(Box::new((carrier, req))),
        }
    }

    fn cfg(&self) -> &crate::server::config::PollingConfig {
        super::config(&self.conn)
    }

    fn record_close(&mut self, code: CloseCode, reason: &str) {
        if self.close.is_none() {
            self.close = Some((code, reason.to_owned()));
        }
    }

    fn close_queued(&self) -> bool {
        self.out.back().is_some_and(|r| r.kind == Kind::Close)
    }

    /// Queues a record whose `admitted` bytes were counted when it was sent.
    fn push(&mut self, io: &mut Io<'_>, kind: Kind, data: Data, admitted: usize) {
        if self.close_queued() {
            self.conn.inner.account(-(admitted as isize));
            return;
        }
        self.out.push_back(Rec {
            kind,
            data,
            admitted,
        });
        self.enforce_drop_oldest();
        io.output_ready();
    }

    /// Under drop-oldest, drops the oldest records not yet sent while over the bound.
    fn enforce_drop_oldest(&mut self) {
        let link = &self.conn.inner;
        if link.policy().limits.drop_policy != crate::DropPolicy::DropOldest {
            return;
        }
        let bound = link.policy().limits.max_queued_bytes;
        while link.queued.load(Ordering::Acquire) > bound && self.out.len() > self.sent + 1 {
            if let Some(r) = self.out.remove(self.sent) {
                link.account(-(r.admitted as isize));
                link.policy().counters.dropped(1);
            }
        }
    }

    /// A message `admitted` bytes were counted for: a record by its opcode.
    fn message(&mut self, io: &mut Io<'_>, op: OpCode, data: Data, admitted: usize) {
        match op {
            OpCode::Text => self.push(io, Kind::Text, data, admitted),
            OpCode::Binary => self.push(io, Kind::Binary, data, admitted),
            // Pings and pongs mean nothing here: the GETs are the heartbeat.
            _ => self.conn.inner.account(-(admitted as isize)),
        }
    }

    /// Queues a message framed once for many recipients, its payload shared.
    fn frames(&mut self, io: &mut Io<'_>, frames: &SharedFrames, admitted: usize) {
        let plain = &frames.plain;
        let Some((op, payload)) = wire::unframe(plain) else {
            return self.conn.inner.account(-(admitted as isize));
        };
        let data = match payload {
            std::borrow::Cow::Borrowed(p) => {
                let start = p.as_ptr() as usize - plain.as_ptr() as usize;
                Data::Shared(plain.clone(), start, start + p.len())
            }
            std::borrow::Cow::Owned(v) => Data::Owned(v),
        };
        let op = match op {
            1 => OpCode::Text,
            2 => OpCode::Binary,
            _ => OpCode::Ping,
        };
        self.message(io, op, data, admitted);
    }

    /// Drops the records the client confirmed (up to `ack`, at most what it was sent).
    fn ack(&mut self, io: &mut Io<'_>, ack: u64) {
        let highest = self.base + self.sent as u64;
        let ack = ack.min(highest.saturating_sub(1));
        while self.base <= ack {
            let Some(r) = self.out.pop_front() else {
                break;
            };
            self.base += 1;
            self.sent -= 1;
            self.conn.inner.account(-(r.admitted as isize));
            if r.kind == Kind::Close {
                // The client has our close: the session is done.
                let why = self.closing.take().map_or(CloseReason::Local, |c| c.why);
                io.close(why);
            }
        }
    }

    /// The batch for the held GET: every unacknowledged record from the first, up to the
    /// batch size (at least one). Marks them sent.
    fn batch(&mut self, cap: Option<u64>) -> Vec<u8> {
        let max = self.cfg().max_batch;
        let max = cap.map_or(max, |c| max.min(usize::try_from(c).unwrap_or(usize::MAX)));
        let (mut n, mut payload, mut bytes) = (0, 0, 0);
        for r in &self.out {
            let len = r.data.bytes().len();
            if n > 0 && payload + len > max {
                break;
            }
            payload += len;
            bytes += wire::record_len(len);
            n += 1;
        }
        let mut body = Vec::with_capacity(bytes + 24);
        wire::write_batch_head(&mut body, self.base);
        for r in self.out.iter().take(n) {
            wire::write_record(&mut body, r.kind, r.data.bytes());
        }
        self.sent = self.sent.max(n);
        response(200, "application/octet-stream", body)
    }

    /// Answers the held GET if there is something to send (or with an empty batch when
    /// `force`). True when it was answered.
    fn answer_get(&mut self, now: Instant, force: bool) -> bool {
        if self.get.is_none() || (self.out.is_empty() && !force) {
            return false;
        }
        if let Some(held) = self.get.take() {
            let bytes = self.batch(held.max);
            reply(&held.carrier, bytes);
        }
        self.idle_since = now;
        true
    }

    fn on_get(&mut self, io: &mut Io<'_>, carrier: Carrier, ack: u64, max: Option<u64>) {
        if let Some(held) = &self.get {
            if held.carrier.is_open() {
                return reply(
                    &carrier,
                    error(409, "a GET is already pending for this session"),
                );
            }
            // Its connection went: this GET takes its place.
        }
        self.ack(io, ack);
        let until = deadline(io.now, self.cfg().poll_interval);
        self.get = Some(Held {
            carrier,
            until,
            max,
        });
        io.rearm();
        if !self.out.is_empty() {
            io.output_ready();
        }
    }

    fn on_post(&mut self, io: &mut Io<'_>, carrier: Carrier, seq: Option<u64>, body: &[u8]) {
        if let Some(held) = &self.post {
            if seq.is_none() || seq != Some(self.posts) {
                let busy = "a POST is already pending for this session";
                return reply(&carrier, error(409, busy));
            }
            // The held batch sent again (its connection was lost): this one takes its
            // place, and its answer comes when the handler catches up.
            reply(held, error(409, "replaced by a retransmission"));
            self.post = Some(carrier);
            return;
        }
        let records = match wire::parse_records(body) {
            Ok(r) => r,
            Err(e) => return reply(&carrier, error(400, &format!("malformed body: {e}"))),
        };
        match seq {
            Some(s) if s <= self.posts => return reply(&carrier, ok()), // a repeat
            Some(s) if s != self.posts + 1 => {
                let want = self.posts + 1;
                return reply(
                    &carrier,
                    error(400, &format!("seq {s} out of order: {want} next")),
                );
            }
            Some(s) => self.posts = s,
            None => {}
        }
        let mut peer_close = None;
        for r in records {
            let ev = match r.kind {
                Kind::Text => Event::Text(r.text()),
                Kind::Binary => Event::Binary(r.payload),
                Kind::Close => {
                    peer_close = Some(r.close());
                    break;
                }
            };
            self.handler.deliver(&self.conn, Some(&mut *io), ev);
        }
        if let Some((code, reason)) = peer_close {
            self.record_close(CloseCode::from(code), reason);
            reply(&carrier, ok());
            return io.close(CloseReason::PeerClosed);
        }
        if self.conn.inner.paused.load(Ordering::SeqCst) {
            self.post = Some(carrier); // answered when the handler catches up
        } else {
            reply(&carrier, ok());
        }
    }

    /// This side closes: the close record goes to the client, and the session waits for
    /// its acknowledgement (at most the close timeout).
    fn close_gracefully(
        &mut self,
        io: &mut Io<'_>,
        code: CloseCode,
        reason: &str,
        why: CloseReason,
    ) {
        if self.closing.is_some() || self.close_queued() {
            return;
        }
        self.queue_close(code, reason);
        let policy = &self.conn.inner.policy();
        let by = match policy.drain_until.get() {
            Some(until) => *until,
            None => deadline(io.now, policy.limits.close_timeout),
        };
        self.closing = Some(Box::new(Closing { by, why }));
        io.rearm();
        io.output_ready();
    }

    /// Records the close and queues its record (once).
    fn queue_close(&mut self, code: CloseCode, reason: &str) {
        self.record_close(code, reason);
        if self.close_queued() {
            return;
        }
        let mut p = Vec::with_capacity(2 + reason.len());
        p.extend_from_slice(&code.as_u16().to_be_bytes());
        p.extend_from_slice(reason.as_bytes());
        self.out.push_back(Rec {
            kind: Kind::Close,
            data: Data::Owned(p),
            admitted: 0,
        });
    }

    /// Closes now; the held GET (if any) gets the last records with the close record.
    fn close_now(&mut self, io: &mut Io<'_>, code: CloseCode, reason: &str, why: CloseReason) {
        self.queue_close(code, reason);
        io.close(why);
    }

    fn report(&mut self, err: Error) {
        self.conn.server().report_error(Some(self.conn.id()), &err);
        self.handler.deliver_error(&self.conn, err);
    }
}

fn ok() -> Vec<u8> {
    response(200, "text/plain; charset=utf-8", "ok")
}

/// The handshake's answer: the session id and the timing the client must keep.
fn handshake(sid: &str, cfg: &crate::server::config::PollingConfig) -> Vec<u8> {
    let body = serde_json::json!({
        "sid": sid,
        "pingInterval": cfg.poll_interval.as_millis() as u64,
        "pingTimeout": cfg.ping_timeout.as_millis() as u64,
        "maxPayload": cfg.max_body,
    });
    response(200, "application/json", body.to_string())
}

impl Driver for Session {
    fn on_open(&mut self, io: &mut Io<'_>) {
        self.idle_since = io.now;
        io.rearm();
        let Some(opening) = self.opening.take() else {
            return;
        };
        let (carrier, req) = *opening;
        let server = self.conn.server().clone();
        server.report_state(self.conn.id(), &self.conn.peer_addr(), &ConnState::Accepted);
        reply(&carrier, handshake(&self.sid, self.cfg()));
        let factory = server.factory.clone();
        self.handler
            .deliver(&self.conn, None, Event::Open(&factory, Some(&req)));
    }

    fn on_input(&mut self, _io: &mut Io<'_>, data: &mut [u8]) -> usize {
        data.len() // never called: a virtual connection reads nothing
    }

    fn on_drained(&mut self, _io: &mut Io<'_>) {}

    fn on_resume(&mut self, _io: &mut Io<'_>) {
        if let Some(carrier) = self.post.take() {
            reply(&carrier, ok());
        }
    }

    fn on_flush(&mut self, io: &mut Io<'_>) {
        if self.answer_get(io.now, false) {
            io.rearm();
        }
    }

    /// The heartbeat, the ping timeout and the close deadline.
    fn on_timer(&mut self, io: &mut Io<'_>) {
        let now = io.now;
        if let Some(c) = &self.closing {
            if c.by.is_some_and(|by| now >= by) {
                let why = c.why.clone();
                return io.close(why);
            }
        }
        match &self.get {
            Some(held) if held.until.is_some_and(|u| now >= u) => {
                self.answer_get(now, true);
            }
            Some(_) => {}
            None => {
                let timeout = self.cfg().ping_timeout;
                if crate::base::elapsed(self.idle_since, now, timeout) {
                    self.close_now(
                        io,
                        CloseCode::AWAY,
                        "ping timeout",
                        CloseReason::PongTimeout,
                    );
                }
            }
        }
    }

    fn on_command(&mut self, io: &mut Io<'_>, cmd: ConnCmd) {
        match cmd {
            ConnCmd::Message(op, data) => {
                let n = data.len();
                self.message(io, op, Data::Owned(data), n);
            }
            ConnCmd::Frames(f) => {
                let n = f.plain.len();
                self.frames(io, &f, n);
            }
            ConnCmd::Send(p) => {
                let n = p.as_slice().len();
                let data = match p {
                    Payload::Owned(v) => Data::Owned(v),
                    Payload::Shared(a) => Data::Shared(a.clone(), 0, a.len()),
                };
                self.push(io, Kind::Binary, data, n);
            }
            ConnCmd::Close(why) => self.close_gracefully(io, CloseCode::NORMAL, "", why),
            ConnCmd::CloseWith(code, reason) => {
                self.close_gracefully(io, code, &reason, CloseReason::Local)
            }
            ConnCmd::Failed(msg) => self.close_now(
                io,
                CloseCode::ERROR,
                "handler failed",
                CloseReason::HandlerPanic(msg),
            ),
            ConnCmd::Driver(msg) => match msg.downcast::<PollRequest>() {
                Ok(r) => match *r {
                    PollRequest::Get { carrier, ack, max } => self.on_get(io, carrier, ack, max),
                    PollRequest::Post { carrier, seq, body } => {
                        self.on_post(io, carrier, seq, &body)
                    }
                },
                Err(other) => {
                    if other.downcast::<PollReply>().is_ok() {
                        log::debug!("conn={} a session got a reply", self.conn.id());
                    }
                }
            },
            ConnCmd::CaughtUp
            | ConnCmd::Resume
            | ConnCmd::JoinGroup(_)
            | ConnCmd::LeaveGroup(_) => {}
        }
    }

    fn on_local(&mut self, io: &mut Io<'_>, kind: local::Kind, data: &[u8]) {
        let n = data.len();
        match kind {
            local::Kind::Ws(op) => self.message(io, op, Data::Owned(data.to_vec()), n),
            local::Kind::Raw => self.push(io, Kind::Binary, Data::Owned(data.to_vec()), n),
        }
    }

    fn offer(&mut self, io: &mut Io<'_>, frames: &SharedFrames) -> Offer {
        if self.closing.is_some() || self.close_queued() {
            return Offer::Closed;
        }
        let len = frames.plain.len();
        match admit(&self.conn.inner, len) {
            Admit::Queued => {
                self.frames(io, frames, len);
                Offer::Queued { evicted: 0 }
            }
            Admit::Dropped | Admit::TooLarge => Offer::Dropped { close: None },
            Admit::Overflow => Offer::Dropped {
                close: Some(CloseReason::QueueOverflow),
            },
            Admit::OverBudget => Offer::Dropped {
                close: Some(CloseReason::OverBudget),
            },
        }
    }

    fn on_shutdown(&mut self, io: &mut Io<'_>) {
        self.close_now(
            io,
            CloseCode::AWAY,
            "server shutdown",
            CloseReason::Shutdown,
        );
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
        let server = c.server().clone();
        server.polls.remove(&self.sid);
        if !self.close_queued() {
            self.queue_close(CloseCode::AWAY, "session closed");
        }
        self.answer_get(Instant::now(), true);
        if let Some(carrier) = self.post.take() {
            reply(&carrier, ok());
        }
        let (mut admitted, mut unsent) = (0usize, 0u64);
        for (i, r) in self.out.drain(..).enumerate() {
            admitted += r.admitted;
            if i >= self.sent && r.kind != Kind::Close {
                unsent += r.data.bytes().len() as u64;
            }
        }
        c.inner.account(-(admitted as isize));
        if unsent > 0 {
            let counters = &c.inner.policy().counters;
            counters.discarded.fetch_add(unsent, Ordering::Relaxed);
        }
        server.report_state(c.id(), &c.peer_addr(), &ConnState::Closed(reason.clone()));
        server.ws_conn_gone(&c.peer_addr());
        let (code, why) = self
            .close
            .clone()
            .unwrap_or((CloseCode::ABNORMAL, String::new()));
        self.handler.deliver(&c, None, Event::WsClose(code, &why));
        server.conn_gone();
    }

    fn next_deadline(&self, _last_read: Instant) -> Option<Instant> {
        let beat = match &self.get {
            Some(held) => held.until,
            None => deadline(self.idle_since, self.cfg().ping_timeout),
        };
        earliest(self.closing.as_ref().and_then(|c| c.by), beat)
    }

    fn id(&self) -> u64 {
        self.conn.id().0
    }
}
