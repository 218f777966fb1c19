//! Sessions that outlive connections (sans-IO): implicit sequence numbers, the bounded replay
//! buffer, the resume decision, the client's counters, and the wire names both sides share.
//!
//! Numbering is implicit (see `docs/PROTOCOL.md`, "Sessions"): every data message the server
//! sends on a session counts (1, 2, 3…) and the client counts what it receives; every data
//! envelope the client sends counts on the other side. Control envelopes (`session:*`)
//! never count. Nothing here reads a clock or touches a socket: callers pass `now`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Prefix of the control events; such envelopes are never counted.
pub(crate) const PREFIX: &str = "session:";
/// Server → client: a new session (`recovered: false`), the first message on the wire.
pub(crate) const EV_WELCOME: &str = "session:welcome";
/// Server → client: the session resumed; the replay follows at once.
pub(crate) const EV_RESUMED: &str = "session:resumed";
/// Server → client: sessions are not available here; the connection goes on without one.
pub(crate) const EV_REFUSED: &str = "session:refused";
/// Both ways: a cumulative acknowledgement (`data`: messages received so far).
pub(crate) const EV_ACK: &str = "session:ack";
/// Query parameter asking for a new session (`sl_session=1`).
pub(crate) const Q_NEW: &str = "sl_session";
/// Query parameter: the session id to resume.
pub(crate) const Q_SID: &str = "sl_sid";
/// Query parameter: the resume token.
pub(crate) const Q_TOKEN: &str = "sl_token";
/// Query parameter: the number of data messages the client received in the session.
pub(crate) const Q_SEQ: &str = "sl_seq";
/// A side acknowledges at least every this many data messages received.
pub(crate) const ACK_EVERY: u64 = 64;

/// The `data` of `session:welcome` and `session:resumed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Welcome {
    /// The session id.
    pub(crate) sid: String,
    /// The resume token (secret; sent again on `session:resumed`).
    pub(crate) token: String,
    /// The base of the count: data messages of the session before the next one on this
    /// connection (on `session:resumed`, the client's count; the replay continues it).
    pub(crate) seq: u64,
    /// Client data messages the server has received in the session.
    pub(crate) cseq: u64,
    /// Whether this continues the session the client asked to resume.
    pub(crate) recovered: bool,
    /// Why a resume was not possible (`unknown`, `expired`, `gap`, `ahead`, `identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// How long the server keeps the session after its connection ends, in milliseconds.
    pub(crate) window_ms: u64,
    /// Messages replayed after `session:resumed`.
    #[serde(default)]
    pub(crate) replayed: u64,
}

/// Why a resume cannot continue a session: the answer is all or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotRecoverable {
    /// No such session, or a wrong token.
    Unknown,
    /// The session's window ended.
    Expired,
    /// Messages the client has not received were evicted (replay buffer bound).
    Gap,
    /// The client claims more messages than were sent.
    Ahead,
    /// The new connection's identity is not the session's.
    Identity,
    /// Another server of a cluster still carries the session and did not give it up in
    /// time: the connection is closed (4013) so the client tries again, never a new
    /// session.
    Busy,
}

impl NotRecoverable {
    /// The `reason` written on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotRecoverable::Unknown => "unknown",
            NotRecoverable::Expired => "expired",
            NotRecoverable::Gap => "gap",
            NotRecoverable::Ahead => "ahead",
            NotRecoverable::Identity => "identity",
            NotRecoverable::Busy => "busy",
        }
    }
}

/// Whether two tokens are equal, compared in constant time (for equal lengths).
pub(crate) fn tokens_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Server → client messages of one session, numbered implicitly, kept until acknowledged
/// and bounded in bytes: past the bound the oldest are evicted, which makes a resume from
/// before them [`NotRecoverable::Gap`] (never a partial replay).
#[derive(Debug)]
pub(crate) struct Replay {
    /// Sequence number of `buf[0]` (messages are numbered from 1).
    first: u64,
    buf: VecDeque<Arc<str>>,
    bytes: usize,
    max_bytes: usize,
    evicted: u64,
    /// Unacknowledged messages evicted while a connection carries the session, as (seq,
    /// bytes): they may still sit in its queue.
    gone: VecDeque<(u64, usize)>,
    gone_bytes: usize,
    /// Whether a connection carries the session (evictions are then remembered).
    tracking: bool,
}

impl Replay {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Replay {
            first: 1,
            buf: VecDeque::new(),
            bytes: 0,
            max_bytes,
            evicted: 0,
            gone: VecDeque::new(),
            gone_bytes: 0,
            tracking: true,
        }
    }

    /// What the connection carrying the session may still have queued of it, at most:
    /// every kept message (each was sent to it, live or in its resume's replay) with
    /// `framing` bytes each, and the unacknowledged ones evicted since it took over.
    pub(crate) fn in_flight(&self, framing: usize) -> usize {
        self.bytes + self.buf.len() * framing + self.gone_bytes
    }

    /// Evicted messages [`in_flight`](Self::in_flight) still counts (16 bytes each).
    pub(crate) fn gone_count(&self) -> usize {
        self.gone.len()
    }

    /// A connection carries the session from now (`true`), or none does: nothing evicted
    /// is queued anywhere then.
    pub(crate) fn track(&mut self, on: bool) {
        self.tracking = on;
        self.gone.clear();
        self.gone_bytes = 0;
    }

    fn evict_front(&mut self) -> usize {
        let seq = self.first;
        let n = self.pop_front();
        self.evicted += 1;
        if self.tracking {
            self.gone.push_back((seq, n));
            self.gone_bytes += n;
        }
        n
    }

    /// The last sequence number given (0 before any).
    pub(crate) fn last(&self) -> u64 {
        self.first + self.buf.len() as u64 - 1
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Unacknowledged messages evicted by the bound so far.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// A buffer that continues a session's numbering elsewhere: the client received
    /// `after` messages, `msgs` are the ones numbered after them (none evicted).
    pub(crate) fn restore(max_bytes: usize, after: u64, msgs: Vec<Arc<str>>) -> Self {
        let mut r = Replay::new(max_bytes.max(msgs.iter().map(|m| m.len()).sum()));
        r.first = after + 1;
        for m in msgs {
            r.bytes += m.len();
            r.buf.push_back(m);
        }
        r.max_bytes = max_bytes;
        r
    }

    /// Numbers and keeps `msg`; returns its sequence number and the bytes freed by
    /// evicting older unacknowledged messages to stay within the bound (`msg` itself is
    /// always kept).
    pub(crate) fn push(&mut self, msg: Arc<str>) -> (u64, usize) {
        let mut freed = 0;
        while !self.buf.is_empty() && self.bytes + msg.len() > self.max_bytes {
            freed += self.evict_front();
        }
        self.bytes += msg.len();
        self.buf.push_back(msg);
        (self.last(), freed)
    }

    fn pop_front(&mut self) -> usize {
        let n = self.buf.pop_front().map_or(0, |m| m.len());
        self.bytes -= n;
        self.first += 1;
        n
    }

    /// Evicts the oldest message (a hub-wide bound); returns the bytes freed.
    pub(crate) fn evict_oldest(&mut self) -> usize {
        if self.buf.is_empty() {
            return 0;
        }
        self.evict_front()
    }

    /// The client received every message up to `upto`: forget them. Returns bytes freed.
    /// A claim past the last message is clamped.
    pub(crate) fn ack(&mut self, upto: u64) -> usize {
        let upto = upto.min(self.last());
        while self.gone.front().is_some_and(|g| g.0 <= upto) {
            if let Some((_, n)) = self.gone.pop_front() {
                self.gone_bytes -= n;
            }
        }
        let mut freed = 0;
        while self.first <= upto {
            freed += self.pop_front();
        }
        freed
    }

    /// The resume decision for a client that received `last` messages: everything after
    /// it, or why not. On success the messages up to `last` are forgotten.
    pub(crate) fn resume(&mut self, last: u64) -> Result<Vec<Arc<str>>, NotRecoverable> {
        if last > self.last() {
            return Err(NotRecoverable::Ahead);
        }
        if last + 1 < self.first {
            return Err(NotRecoverable::Gap);
        }
        self.ack(last);
        Ok(self.buf.iter().cloned().collect())
    }
}

/// Client → server data messages received in one session, and the last count told.
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    received: u64,
    told: u64,
}

impl Inbound {
    /// Counts one data message; returns its number.
    pub(crate) fn count(&mut self) -> u64 {
        self.received += 1;
        self.received
    }

    /// Messages received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// The count to acknowledge now, if any: every [`ACK_EVERY`] messages, or whenever
    /// asked (`force`) and something is unacknowledged.
    pub(crate) fn ack_due(&mut self, force: bool) -> Option<u64> {
        let behind = self.received - self.told;
        if behind == 0 || (!force && behind < ACK_EVERY) {
            return None;
        }
        self.told = self.received;
        Some(self.received)
    }
}

/// Whether the session has a connection, and since when it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// A connection carries the session.
    Attached,
    /// The last connection ended at `since`; the session ends at `until`.
    Detached { since: Instant, until: Instant },
    /// The session is over (expired, or ended by the server).
    Ended,
}

/// One session's engine on the server: token, numbering, replay, window.
#[derive(Debug)]
pub(crate) struct ServerSession {
    sid: String,
    token: String,
    pub(crate) replay: Replay,
    pub(crate) inbound: Inbound,
    link: Link,
    window: Duration,
    /// Bumped at every attach and detach: a stale expiry finds another epoch.
    epoch: u64,
}

impl ServerSession {
    pub(crate) fn new(sid: String, token: String, max_bytes: usize, window: Duration) -> Self {
        ServerSession {
            sid,
            token,
            replay: Replay::new(max_bytes),
            inbound: Inbound::default(),
            link: Link::Attached,
            window,
            epoch: 0,
        }
    }

    pub(crate) fn sid(&self) -> &str {
        &self.sid
    }

    /// A session continued on this server after another one carried it (a cluster): the
    /// client received `after` messages, `msgs` were numbered after them, and the other
    /// server received `cseq` of the client's. Detached until the client's connection
    /// takes it over (`resume(after, …)`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn restore(
        sid: String,
        token: String,
        max_bytes: usize,
        window: Duration,
        after: u64,
        msgs: Vec<Arc<str>>,
        cseq: u64,
        now: Instant,
    ) -> Self {
        let mut s = ServerSession::new(sid, token, max_bytes, window);
        s.replay = Replay::restore(max_bytes, after, msgs);
        s.replay.track(false);
        s.inbound = Inbound {
            received: cseq,
            told: cseq,
        };
        let until = crate::base::saturating(now, window);
        s.link = Link::Detached { since: now, until };
        s
    }

    /// The token (a cluster stores it with the session).
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    pub(crate) fn link(&self) -> Link {
        self.link
    }

    /// Whether `token` is this session's (compared in constant time).
    pub(crate) fn token_matches(&self, token: &str) -> bool {
        tokens_equal(&self.token, token)
    }

    /// The connection ended at `now`: the window starts. Returns when it ends and the
    /// epoch an expiry must match.
    pub(crate) fn detach(&mut self, now: Instant) -> (Instant, u64) {
        let until = crate::base::saturating(now, self.window);
        self.replay.track(false);
        self.link = Link::Detached { since: now, until };
        self.epoch += 1;
        (until, self.epoch)
    }

    /// Whether the session is past its window at `now` for an expiry of `epoch`; if so it
    /// is ended.
    pub(crate) fn expire(&mut self, epoch: u64, now: Instant) -> bool {
        match self.link {
            Link::Detached { until, .. } if epoch == self.epoch && now >= until => {
                self.link = Link::Ended;
                true
            }
            _ => false,
        }
    }

    /// Ends the session (the server disconnected it).
    pub(crate) fn end(&mut self) {
        self.link = Link::Ended;
    }

    /// A resume from a client that received `last` messages, at `now`: the messages to
    /// replay, in order, or why not. On success the session is attached again.
    pub(crate) fn resume(
        &mut self,
        last: u64,
        now: Instant,
    ) -> Result<Vec<Arc<str>>, NotRecoverable> {
        match self.link {
            Link::Ended => return Err(NotRecoverable::Expired),
            Link::Detached { until, .. } if now >= until => return Err(NotRecoverable::Expired),
            _ => {}
        }
        let replay = self.replay.resume(last)?;
        // The new connection gets exactly the kept messages: nothing evicted is on it.
        self.replay.track(true);
        self.link = Link::Attached;
        self.epoch += 1;
        Ok(replay)
    }

    /// The welcome (or resumed) data for this session.
    pub(crate) fn welcome(&self, recovered: bool, reason: Option<NotRecoverable>) -> Welcome {
        Welcome {
            sid: self.sid.clone(),
            token: self.token.clone(),
            seq: self.replay.last(),
            cseq: self.inbound.received(),
            recovered,
            reason: reason.map(|r| r.as_str().to_owned()),
            window_ms: u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX),
            replayed: 0,
        }
    }
}

/// What a welcome meant to the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Welcomed<T> {
    /// A new session: nothing to resend. `unconfirmed` were sent in the previous session
    /// and may or may not have arrived (a resume that was not recoverable).
    Fresh {
        /// Sent, never confirmed, not resent.
        unconfirmed: Vec<T>,
    },
    /// The session continues: `resend` (in order) are the messages the server has not
    /// received; the server counts them from `cseq + 1`.
    Resumed {
        /// To send again, in order.
        resend: Vec<T>,
    },
    /// The welcome contradicts the client's count (a broken server): treated as fresh.
    Mismatch,
}

/// One session's engine on the client: the counts of both directions and the messages sent
/// but not yet confirmed.
#[derive(Debug)]
pub(crate) struct ClientSession<T> {
    sid: Option<String>,
    token: String,
    received: u64,
    told: u64,
    sent: u64,
    unacked: VecDeque<(u64, T)>,
}

impl<T: Clone> Default for ClientSession<T> {
    fn default() -> Self {
        ClientSession {
            sid: None,
            token: String::new(),
            received: 0,
            told: 0,
            sent: 0,
            unacked: VecDeque::new(),
        }
    }
}

impl<T: Clone> ClientSession<T> {
    /// The session id, once welcomed.
    pub(crate) fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    /// Query parameters for the next connection: a resume when there is a session.
    pub(crate) fn query(&self) -> String {
        match &self.sid {
            Some(sid) => format!(
                "{Q_SID}={sid}&{Q_TOKEN}={}&{Q_SEQ}={}",
                self.token, self.received
            ),
            None => format!("{Q_NEW}=1"),
        }
    }

    /// Applies a welcome or resumed message.
    pub(crate) fn welcome(&mut self, w: &Welcome) -> Welcomed<T> {
        let same = self.sid.as_deref() == Some(w.sid.as_str());
        if w.recovered && same && w.seq == self.received && w.cseq <= self.sent {
            self.confirm(w.cseq);
            let resend = self.unacked.iter().map(|(_, t)| t.clone()).collect();
            return Welcomed::Resumed { resend };
        }
        let unconfirmed = self.unacked.drain(..).map(|(_, t)| t).collect();
        *self = ClientSession {
            sid: Some(w.sid.clone()),
            token: w.token.clone(),
            received: w.seq,
            told: w.seq,
            sent: w.cseq,
            unacked: VecDeque::new(),
        };
        if w.recovered {
            return Welcomed::Mismatch;
        }
        Welcomed::Fresh { unconfirmed }
    }

    /// Records a data message sent; returns its number.
    pub(crate) fn sent(&mut self, msg: T) -> u64 {
        self.sent += 1;
        self.unacked.push_back((self.sent, msg));
        self.sent
    }

    /// Counts a data message received; returns its number.
    pub(crate) fn received(&mut self) -> u64 {
        self.received += 1;
        self.received
    }

    /// The server received `upto` messages: forget them. Returns them, oldest first.
    pub(crate) fn confirm(&mut self, upto: u64) -> Vec<T> {
        let mut out = Vec::new();
        while self.unacked.front().is_some_and(|(n, _)| *n <= upto) {
            if let Some((_, t)) = self.unacked.pop_front() {
                out.push(t);
            }
        }
        out
    }

    /// Data messages received in the session so far.
    pub(crate) fn received_count(&self) -> u64 {
        self.received
    }

    /// Messages sent and not confirmed.
    pub(crate) fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// The count to acknowledge now, if any (every [`ACK_EVERY`], or `force`).
    pub(crate) fn ack_due(&mut self, force: bool) -> Option<u64> {
        let behind = self.received - self.told;
        if behind == 0 || (!force && behind < ACK_EVERY) {
            return None;
        }
        self.told = self.received;
        Some(self.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_session_continues_the_numbering() {
        let now = Instant::now();
        let msgs: Vec<Arc<str>> = vec![Arc::from("m6"), Arc::from("m7")];
        let w = Duration::from_secs(60);
        let mut s = ServerSession::restore("s".into(), "t".into(), 1 << 20, w, 5, msgs, 3, now);
        assert!(matches!(s.link(), Link::Detached { .. }));
        assert_eq!(s.replay.last(), 7);
        assert_eq!(s.inbound.received(), 3);
        assert_eq!(s.resume(6, now).unwrap(), vec![Arc::<str>::from("m7")]);
        assert_eq!(s.replay.push(Arc::from("m8")).0, 8);
        let mut g = ServerSession::restore("s".into(), "t".into(), 1 << 20, w, 5, vec![], 0, now);
        assert_eq!(g.resume(4, now).unwrap_err(), NotRecoverable::Gap);
        assert_eq!(g.resume(6, now).unwrap_err(), NotRecoverable::Ahead);
        assert!(g.resume(5, now).unwrap().is_empty());
    }

    fn msg(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn numbering_starts_at_one_and_acks_free_bytes() {
        let mut r = Replay::new(1 << 10);
        assert_eq!(r.last(), 0);
        assert_eq!(r.push(msg("aa")).0, 1);
        assert_eq!(r.push(msg("bbb")).0, 2);
        assert_eq!(r.bytes(), 5);
        assert_eq!(r.ack(1), 2);
        assert_eq!(r.ack(99), 3, "a claim past the end is clamped");
        assert_eq!((r.bytes(), r.last()), (0, 2));
        assert_eq!(r.push(msg("c")).0, 3);
    }

    #[test]
    fn resume_is_all_or_nothing() {
        let mut r = Replay::new(10);
        for m in ["aaaa", "bbbb", "cccc"] {
            r.push(msg(m));
        }
        // 12 bytes > 10: message 1 was evicted.
        assert_eq!(r.evicted(), 1);
        assert_eq!(r.resume(0), Err(NotRecoverable::Gap));
        assert_eq!(r.resume(4), Err(NotRecoverable::Ahead));
        let got = r.resume(1).unwrap();
        assert_eq!(got, vec![msg("bbbb"), msg("cccc")]);
        let got = r.resume(2).unwrap();
        assert_eq!(got, vec![msg("cccc")]);
        assert!(r.resume(3).unwrap().is_empty());
        assert_eq!(
            r.resume(1),
            Err(NotRecoverable::Gap),
            "acked by the resume from 3"
        );
    }

    #[test]
    fn a_message_larger_than_the_bound_is_kept_alone() {
        let mut r = Replay::new(4);
        r.push(msg("ab"));
        let (seq, freed) = r.push(msg("0123456789"));
        assert_eq!((seq, freed), (2, 2));
        assert_eq!(r.bytes(), 10);
        assert_eq!(r.evict_oldest(), 10);
        assert_eq!(r.evict_oldest(), 0);
        assert_eq!(r.resume(1), Err(NotRecoverable::Gap));
        assert!(r.resume(2).unwrap().is_empty());
    }

    #[test]
    fn in_flight_counts_kept_and_evicted_unacknowledged_messages() {
        let mut r = Replay::new(10);
        r.push(msg("aaaa"));
        r.push(msg("bbbb"));
        assert_eq!((r.in_flight(2), r.gone_count()), (12, 0));
        r.push(msg("cccc")); // evicts 1, which may still be queued
        assert_eq!((r.in_flight(2), r.gone_count()), (16, 1));
        r.ack(1);
        assert_eq!((r.in_flight(2), r.gone_count()), (12, 0));
        r.push(msg("dddd")); // evicts 2
        assert_eq!(r.gone_count(), 1);
        r.track(false); // the connection is gone: nothing is queued anywhere
        assert_eq!((r.in_flight(0), r.gone_count()), (8, 0));
        r.push(msg("eeee")); // evicts 3, not remembered
        assert_eq!(r.gone_count(), 0);
        assert!(r.resume(3).is_ok());
        r.track(true);
        assert_eq!((r.in_flight(0), r.gone_count()), (8, 0));
    }

    #[test]
    fn inbound_acks_every_ack_every_or_when_forced() {
        let mut i = Inbound::default();
        assert_eq!(i.ack_due(true), None);
        for _ in 0..ACK_EVERY - 1 {
            i.count();
        }
        assert_eq!(i.ack_due(false), None);
        assert_eq!(i.count(), ACK_EVERY);
        assert_eq!(i.ack_due(false), Some(ACK_EVERY));
        assert_eq!(i.ack_due(true), None);
        i.count();
        assert_eq!(i.ack_due(true), Some(ACK_EVERY + 1));
    }

    #[test]
    fn the_window_and_epochs_decide_expiry() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut ss = ServerSession::new("s".into(), "t".into(), 1 << 10, s(120));
        assert!(ss.token_matches("t") && !ss.token_matches("u") && !ss.token_matches(""));
        let (until, epoch) = ss.detach(t0);
        assert_eq!(until, t0 + s(120));
        assert!(!ss.expire(epoch, t0 + s(119)));
        assert!(ss.resume(0, t0 + s(60)).is_ok());
        assert!(
            !ss.expire(epoch, t0 + s(200)),
            "a resume cancels the old expiry"
        );
        let (_, epoch) = ss.detach(t0 + s(61));
        assert!(ss.expire(epoch, t0 + s(181)));
        assert_eq!(ss.link(), Link::Ended);
        assert_eq!(ss.resume(0, t0 + s(182)), Err(NotRecoverable::Expired));
        let mut late = ServerSession::new("s".into(), "t".into(), 1 << 10, s(1));
        late.detach(t0);
        assert_eq!(late.resume(0, t0 + s(2)), Err(NotRecoverable::Expired));
    }

    #[test]
    fn the_client_resends_what_the_server_did_not_count() {
        let mut c: ClientSession<&str> = ClientSession::default();
        assert_eq!(c.query(), "sl_session=1");
        let mut srv = ServerSession::new("S".into(), "T".into(), 1 << 10, Duration::from_secs(1));
        assert_eq!(
            c.welcome(&srv.welcome(false, None)),
            Welcomed::Fresh {
                unconfirmed: vec![]
            }
        );
        for m in ["a", "b", "c"] {
            c.sent(m);
        }
        srv.inbound.count();
        srv.replay.push(msg("x"));
        c.received();
        assert_eq!(c.query(), "sl_sid=S&sl_token=T&sl_seq=1");
        let w = srv.welcome(true, None);
        assert_eq!(
            c.welcome(&w),
            Welcomed::Resumed {
                resend: vec!["b", "c"]
            }
        );
        assert_eq!(c.unacked(), 2);
        assert_eq!(c.confirm(3), vec!["b", "c"]);
    }

    #[test]
    fn a_lost_session_reports_the_unconfirmed() {
        let mut c: ClientSession<u32> = ClientSession::default();
        let srv = ServerSession::new("S".into(), "T".into(), 1 << 10, Duration::from_secs(1));
        c.welcome(&srv.welcome(false, None));
        c.sent(1);
        c.sent(2);
        let fresh = ServerSession::new("S2".into(), "T2".into(), 1, Duration::from_secs(1));
        let w = fresh.welcome(false, Some(NotRecoverable::Expired));
        assert_eq!(w.reason.as_deref(), Some("expired"));
        assert_eq!(
            c.welcome(&w),
            Welcomed::Fresh {
                unconfirmed: vec![1, 2]
            }
        );
        assert_eq!((c.sid(), c.unacked()), (Some("S2"), 0));
        // A "recovered" welcome that does not match the count is not trusted.
        let mut wrong = fresh.welcome(true, None);
        wrong.seq = 5;
        assert_eq!(c.welcome(&wrong), Welcomed::Mismatch);
    }

    #[test]
    fn client_acks_are_cumulative() {
        let mut c: ClientSession<()> = ClientSession::default();
        for _ in 0..ACK_EVERY {
            c.received();
        }
        assert_eq!(c.ack_due(false), Some(ACK_EVERY));
        assert_eq!(c.ack_due(true), None);
        c.received();
        assert_eq!(c.ack_due(false), None);
        assert_eq!(c.ack_due(true), Some(ACK_EVERY + 1));
    }
}
