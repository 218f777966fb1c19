//! The contract between the reactor and a connection's protocol.
//!
//! The reactor owns the socket, the TLS session, the read buffer and the output queue, and
//! runs the close sequence. A [`Driver`] owns the protocol: the reactor calls it with the
//! bytes read and the time ([`Io::now`]); the driver appends output through [`Io`], asks
//! for a close or a pause through it, and says when it next needs a look
//! ([`Driver::next_deadline`]). Every callback is on the connection's poller thread.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outq::{OutQueue, Payload};
use super::stream::{Accepted, Stream};
use super::{ConnCmd, Link, LinkExt};
use crate::base::{Addr, CloseReason, DropPolicy};
use crate::proto::ws::SharedFrames;
use crate::Error;

/// The limits the reactor enforces for one owner (a server).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_read_per_turn: usize,
    pub(crate) max_queued_bytes: usize,
    pub(crate) drop_policy: DropPolicy,
    pub(crate) max_inbound_pending: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) max_datagram_size: usize,
}

/// Counters of one owner, updated by the reactor and the owner's handles.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) closed: AtomicU64,
    /// Bytes read from and written to sockets (TLS records included).
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Application bytes in and out (after TLS decryption, before encryption); the same as
    /// the socket bytes for plain connections.
    pub(crate) plain_in: AtomicU64,
    pub(crate) plain_out: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// Of `dropped`: older messages thrown out of queues by the drop-oldest policy.
    pub(crate) evicted: AtomicU64,
    pub(crate) queued: AtomicUsize,
    pub(crate) open: AtomicUsize,
    pub(crate) datagrams_in: AtomicU64,
    pub(crate) datagrams_out: AtomicU64,
    /// Output bytes thrown away because a connection went before they were written.
    pub(crate) discarded: AtomicU64,
    /// The runtime's memory budget, shared by all its servers (every byte counted in
    /// `queued`, in handler jobs waiting and in kept input is counted there too).
    pub(crate) budget: Arc<crate::base::Budget>,
}

impl Counters {
    pub(crate) fn add_queued(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::Relaxed);
        self.budget.add(n);
    }
    pub(crate) fn sub_queued(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
        self.budget.sub(n);
    }
    pub(crate) fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the reactor knows of a connection's owner: its limits and counters. The same
/// `Arc` identifies the owner (for draining and shutdown).
pub(crate) struct Policy {
    pub(crate) limits: Limits,
    pub(crate) counters: Counters,
    /// Set when the owner shuts down: every close from then on is flushed by this deadline
    /// (`None`: no limit) instead of `close_timeout` — a shutdown's deadline holds as a whole.
    pub(crate) drain_until: std::sync::OnceLock<Option<Instant>>,
}

/// What the queue policy decided for more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Counted against the queue: send them.
    Queued,
    /// Refused (drop newest); counted as dropped.
    Dropped,
    /// Refused, and the connection is to close with `QueueOverflow`; counted as dropped.
    Overflow,
    /// Refused: larger than the whole queue bound (whatever the policy); counted as dropped.
    TooLarge,
    /// Refused with the runtime's budget spent, and the connection is to close with
    /// `OverBudget` (the disconnect policy); counted as dropped.
    OverBudget,
}

/// The one queue policy: decides whether `len` more bytes may be queued for `link`, and
/// counts them when they may (and a refusal as a drop). Every send path goes through it.
pub(crate) fn admit<X: ?Sized + LinkExt>(link: &Link<X>, len: usize) -> Admit {
    let policy = link.policy();
    let (limits, counters) = (&policy.limits, &policy.counters);
    let bound = limits.max_queued_bytes;
    if len > bound {
        counters.dropped(1);
        return Admit::TooLarge;
    }
    if limits.drop_policy != DropPolicy::Backpressure && counters.budget.full() {
        // The runtime's budget is spent: message transports refuse (byte streams keep their
        // per-connection bound and backpressure: their bytes must not be cut).
        counters.dropped(1);
        counters.budget.refused_send();
        return match limits.drop_policy {
            DropPolicy::Disconnect => Admit::OverBudget,
            _ => Admit::Dropped,
        };
    }
    let before = link.queued.fetch_add(len, Ordering::AcqRel);
    let fits = before == 0 || before + len <= bound;
    let queued = fits
        || match limits.drop_policy {
            DropPolicy::DropOldest => true,
            DropPolicy::Backpressure => before + len <= bound.saturating_mul(2),
            DropPolicy::DropNewest | DropPolicy::Disconnect => false,
        };
    if queued {
        counters.add_queued(len);
        return Admit::Queued;
    }
    link.queued.fetch_sub(len, Ordering::AcqRel);
    counters.dropped(1);
    match limits.drop_policy {
        DropPolicy::DropNewest => Admit::Dropped,
        _ => Admit::Overflow,
    }
}

/// What a group member's driver did with a shared frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued; `evicted` older messages were dropped to make room (drop-oldest).
    Queued {
        evicted: u64,
    },
    /// Refused by the queue bound; `close`: the policy is to disconnect, for this reason.
    Dropped {
        close: Option<CloseReason>,
    },
    Closed,
}

/// A driver's view of its connection during one callback.
pub(crate) struct Io<'a> {
    /// The time of this turn.
    pub(crate) now: Instant,
    /// When bytes last arrived.
    pub(crate) last_read: Instant,
    pub(crate) link: &'a Link,
    pub(crate) policy: &'a Policy,
    pub(crate) out: &'a mut OutQueue,
    pub(crate) req: &'a mut Requests,
}

/// What a driver asked for during a callback; the reactor applies it afterwards.
#[derive(Default)]
pub(crate) struct Requests {
    /// Close gracefully with this reason (flush first).
    pub(crate) close: Option<CloseReason>,
    /// Output was queued: flush at the end of the turn.
    pub(crate) dirty: bool,
    /// The driver's deadline changed: ask `next_deadline` again.
    pub(crate) rearm: bool,
    /// Stop reading until the handler catches up.
    pub(crate) pause: bool,
    /// Stop reading until the output queue is empty, then hand the kept input back
    /// (one HTTP request at a time).
    pub(crate) hold: bool,
    /// Read again after a [`pause`](Io::pause), starting with the kept input.
    pub(crate) resume: bool,
    /// With `close`: the peer has ended its side of the protocol (a WebSocket close frame
    /// came), so nothing it sends from now on matters (see [`Io::close_done`]).
    pub(crate) peer_done: bool,
}

impl<'a> Io<'a> {
    pub(crate) fn new(
        now: Instant,
        last_read: Instant,
        link: &'a Link,
        out: &'a mut OutQueue,
        req: &'a mut Requests,
    ) -> Self {
        Io {
            now,
            last_read,
            link,
            policy: link.policy(),
            out,
            req,
        }
    }

    /// Whether queued messages keep their boundaries (the drop-oldest policy needs them).
    #[inline]
    pub(crate) fn keep_boundaries(&self) -> bool {
        self.policy.limits.drop_policy == DropPolicy::DropOldest
    }

    /// Appends protocol bytes written by `f` (responses, control frames) and counts them.
    #[inline]
    pub(crate) fn append(&mut self, keep_boundary: bool, f: impl FnOnce(&mut Vec<u8>)) -> usize {
        let n = self.out.append_with(keep_boundary, f);
        self.link.account(n as isize);
        self.req.dirty = true;
        n
    }

    /// Appends a message whose `admitted` bytes were already counted when it was sent.
    #[inline]
    pub(crate) fn push_admitted(&mut self, data: Payload, admitted: usize) -> u64 {
        let n = data.as_slice().len();
        let keep = self.keep_boundaries();
        self.out.push(data, keep);
        self.link.account(n as isize - admitted as isize);
        self.req.dirty = true;
        self.enforce_drop_oldest()
    }

    /// Appends bytes written by `f` for a message whose `admitted` bytes were counted.
    #[inline]
    pub(crate) fn append_admitted(
        &mut self,
        keep_boundary: bool,
        admitted: usize,
        f: impl FnOnce(&mut Vec<u8>),
    ) {
        let n = self.out.append_with(keep_boundary, f);
        self.link.account(n as isize - admitted as isize);
        self.enforce_drop_oldest();
        self.req.dirty = true;
    }

    /// Under drop-oldest, drops the oldest whole messages past the bound (counted);
    /// returns how many.
    #[inline]
    fn enforce_drop_oldest(&mut self) -> u64 {
        if !self.keep_boundaries() {
            return 0;
        }
        let limit = self.policy.limits.max_queued_bytes;
        if self.out.len() <= limit {
            return 0;
        }
        let (msgs, bytes) = self.out.drop_oldest(limit);
        self.link.account(-(bytes as isize));
        self.policy.counters.dropped(msgs);
        (self.policy.counters.evicted).fetch_add(msgs, Ordering::Relaxed);
        msgs
    }

    /// Copies bytes admitted when they were sent (an inline handler's send).
    #[inline]
    pub(crate) fn push_copy(&mut self, data: &[u8]) {
        let keep = self.keep_boundaries();
        self.out.push_bytes(data, keep);
        self.enforce_drop_oldest();
        self.req.dirty = true;
    }

    /// Uncounts `n` admitted bytes that will not be queued.
    #[inline]
    pub(crate) fn unadmit(&mut self, n: usize) {
        self.link.account(-(n as isize));
    }

    /// Offers a shared frame under the queue bound and drop policy (group fan-out).
    pub(crate) fn offer_shared(&mut self, bytes: Arc<[u8]>) -> Offer {
        let len = bytes.len();
        match admit(self.link, len) {
            Admit::Queued => {
                let evicted = self.push_admitted(Payload::Shared(bytes), len);
                Offer::Queued { evicted }
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

    /// Asks for a graceful close (queued output is flushed first).
    pub(crate) fn close(&mut self, reason: CloseReason) {
        if self.req.close.is_none() {
            self.req.close = Some(reason);
        }
    }

    /// Like [`close`](Self::close), when the peer has ended its side of the protocol
    /// (its WebSocket close frame came): once the output is flushed the socket is closed at
    /// once, without the half-close and the wait for the peer's FIN, which only serve to
    /// keep data the peer may still send from turning into a reset. Plain sockets only: a
    /// TLS peer still sends its `close_notify`, so a TLS connection lingers as usual.
    pub(crate) fn close_done(&mut self, reason: CloseReason) {
        self.close(reason);
        self.req.peer_done = true;
    }

    /// The driver's deadline changed.
    pub(crate) fn rearm(&mut self) {
        self.req.rearm = true;
    }

    /// Stops reading (and keeps the unconsumed input) until everything queued is written;
    /// then [`Driver::on_input`] gets the kept input again.
    pub(crate) fn hold(&mut self) {
        self.req.hold = true;
    }

    /// Ends a [`pause`](Self::pause): the kept input is fed again, then the socket read.
    pub(crate) fn resume(&mut self) {
        self.req.resume = true;
    }

    /// Output is ready without being queued here: the reactor calls
    /// [`Driver::on_flush`] at the end of this turn (a virtual connection's corking).
    pub(crate) fn output_ready(&mut self) {
        self.req.dirty = true;
    }

    /// Stops reading from the socket until [`ConnCmd::Resume`] or [`resume`](Self::resume).
    pub(crate) fn pause(&mut self) {
        self.req.pause = true;
    }
}

/// A connection's protocol, driven by the reactor on the connection's poller.
pub(crate) trait Driver: Send + 'static {
    /// The connection is established (after the TLS handshake, if any).
    fn on_open(&mut self, io: &mut Io<'_>);
    /// The TLS handshake completed with these parameters (just before `on_open`).
    fn on_tls(&mut self, info: crate::tls::TlsInfo) {
        let _ = info;
    }
    /// Bytes arrived (decrypted). Returns how many were consumed; the reactor keeps the
    /// rest and hands it back, with more, next time.
    fn on_input(&mut self, io: &mut Io<'_>, data: &mut [u8]) -> usize;
    /// The peer finished sending (end of stream). The default closes gracefully.
    fn on_eof(&mut self, io: &mut Io<'_>) {
        io.close(CloseReason::PeerClosed);
    }
    /// The output queue emptied after the socket had pushed back.
    fn on_drained(&mut self, io: &mut Io<'_>);
    /// Reading resumed after a [`pause`](Io::pause) ([`ConnCmd::Resume`]: the handler
    /// caught up). The default does nothing; a virtual connection, which reads no
    /// socket, takes up the input it held back here.
    fn on_resume(&mut self, io: &mut Io<'_>) {
        let _ = io;
    }
    /// The end of a turn in which a virtual connection asked for it
    /// ([`Io::output_ready`]): the driver delivers its output (to other connections).
    /// Socket connections write their queue instead; the default does nothing.
    fn on_flush(&mut self, io: &mut Io<'_>) {
        let _ = io;
    }
    /// The deadline from [`next_deadline`](Self::next_deadline) passed (or may have).
    fn on_timer(&mut self, io: &mut Io<'_>);
    /// A request from a handle.
    fn on_command(&mut self, io: &mut Io<'_>, cmd: ConnCmd);
    /// A send an inline handler made on this thread (through the local outbox), admitted.
    fn on_local(&mut self, io: &mut Io<'_>, kind: super::local::Kind, data: &[u8]);
    /// A frame for a fan-out group this connection is in.
    fn offer(&mut self, io: &mut Io<'_>, frames: &SharedFrames) -> Offer;
    /// The owner is shutting down: finish gracefully (the default closes).
    fn on_shutdown(&mut self, io: &mut Io<'_>) {
        io.close(CloseReason::Shutdown);
    }
    /// A fatal I/O or TLS error; the connection is closed right after.
    fn on_error(&mut self, io: &mut Io<'_>, error: Error);
    /// The graceful close began (the handle's state is closing).
    fn on_closing(&mut self) {}
    /// The connection is gone; the driver is dropped after this.
    fn on_closed(&mut self, reason: &CloseReason);
    /// When the driver next needs [`on_timer`](Self::on_timer) (`None`: never).
    fn next_deadline(&self, last_read: Instant) -> Option<Instant>;
    /// The connection's id, for logs.
    fn id(&self) -> u64;
}

/// A listener's owner: decides admission and builds each accepted connection.
pub(crate) trait Accept: Send + Sync + 'static {
    /// The owner's policy (limits, counters; its identity for draining).
    fn policy(&self) -> &Arc<Policy>;
    /// Counts an accepted socket; false refuses it (limit reached, draining), and the
    /// socket is closed at once.
    fn admit(&self, peer: &Addr) -> bool;
    /// Builds the connection (its link and driver), or `None` to refuse it.
    fn open(&self, acc: Accepted) -> Option<Box<Stream>>;
    /// Accepting failed (other than "nothing to accept").
    fn on_error(&self, error: Error);
}

/// A datagram socket's protocol: every datagram goes to it.
pub(crate) trait DatagramDriver: Send + 'static {
    /// One datagram from `peer` (at most the owner's `max_datagram_size`).
    fn on_datagram(&mut self, peer: &Addr, data: &[u8]);
    /// A datagram larger than the limit was dropped, or a socket error occurred.
    fn on_error(&mut self, error: Error);
    /// Bytes of a queued reply left the queue (sent or failed).
    fn sent(&mut self, n: usize);
}
