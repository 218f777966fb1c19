//! Stream connections (TCP, TLS, Unix stream) on a poller: reading, corked writing, the TLS
//! session, the close sequence and timers. The protocol is the connection's [`Driver`].
//!
//! The lifecycle (`Handshake` (TLS only) → `Open` → `Flushing` → `Lingering` → removed) is
//! the sans-IO machine in [`crate::proto::conn`]; every transition goes through
//! [`StreamConn::step`], which logs `conn=… old=>new` and carries out the machine's action.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Interest, Registry};

use super::driver::{Accept, Driver, Io, Requests};
use super::outq::{Extra, OutQueue};
use super::timer::TimerKind;
use super::{Link, Place, STATE_CLOSED, STATE_CLOSING, STATE_OPEN};
use crate::base::{Addr, CloseReason, PeerCred, Stamp};
use crate::proto::conn::{Action, Lifecycle, State};
use crate::Error;

/// The socket under a stream connection.
pub(crate) enum StreamSock {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
    /// No socket: a virtual connection (see [`new_virtual`]).
    Virtual,
}

impl StreamSock {
    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        match self {
            StreamSock::Tcp(s) => Some(s),
            StreamSock::Unix(s) => Some(s),
            StreamSock::Virtual => None,
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            StreamSock::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            StreamSock::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            StreamSock::Virtual => Ok(()),
        };
    }

    fn is_virtual(&self) -> bool {
        matches!(self, StreamSock::Virtual)
    }
}

impl Read for StreamSock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StreamSock::Tcp(s) => s.read(buf),
            StreamSock::Unix(s) => s.read(buf),
            StreamSock::Virtual => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for StreamSock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamSock::Tcp(s) => s.write(buf),
            StreamSock::Unix(s) => s.write(buf),
            StreamSock::Virtual => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            StreamSock::Tcp(s) => s.write_vectored(bufs),
            StreamSock::Unix(s) => s.write_vectored(bufs),
            StreamSock::Virtual => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A freshly accepted socket with what its owner needs to build the connection.
pub(crate) struct Accepted {
    pub(crate) owner: Arc<dyn Accept>,
    pub(crate) sock: StreamSock,
    pub(crate) peer: Addr,
    pub(crate) local: Addr,
    pub(crate) cred: Option<PeerCred>,
    /// The slot reserved for it (set by the poller that adopts it).
    pub(crate) place: Option<Place>,
}

/// One stream connection, owned by one poller. `D` is its driver (`dyn Driver` in the
/// slab: the connection and its driver are one allocation).
pub(crate) struct StreamConn<D: ?Sized + Driver = dyn Driver> {
    link: Arc<Link>,
    sock: StreamSock,
    /// Output, and (in the same box: see [`Extra`]) the TLS session, kept input and groups.
    outq: OutQueue,
    life: Lifecycle,
    /// A timer entry for this connection is pending at this deadline (or due this turn):
    /// later deadlines add none, since its firing re-checks and re-arms them all.
    armed: Option<Stamp>,
    /// Yes/no states, and when bytes last arrived, in one word.
    flags: Flags,
    driver: D,
}

/// A connection's yes/no states, one bit each in the low byte, and when bytes last
/// arrived in the other 56 bits (a [`Stamp`] to 256 ns, which idle timeouts never miss):
/// one word where a byte and a stamp took two, the padding of the connection's head.
#[derive(Clone, Copy)]
struct Flags(u64);

impl Flags {
    const BITS: u64 = 0xff;

    /// No state set; bytes last arrived at `now`.
    fn new(now: Stamp) -> Self {
        let mut f = Flags(0);
        f.set_last_read(now);
        f
    }

    /// When bytes last arrived.
    fn last_read(self) -> Stamp {
        Stamp::from_nanos(self.0 & !Self::BITS)
    }

    /// Bytes arrived at `at`.
    fn set_last_read(&mut self, at: Stamp) {
        self.0 = (at.nanos() & !Self::BITS) | (self.0 & Self::BITS);
    }

    /// Write interest is registered.
    const WRITABLE_INTEREST: u8 = 1;
    /// Reading paused until the handler thread catches up with inbound bytes.
    const PAUSED: u8 = 1 << 1;
    /// Reading paused while the output queue is above its high-water mark.
    const OUT_PAUSED: u8 = 1 << 2;
    /// Reading held until the output queue is empty; then the kept input is fed again.
    const HELD: u8 = 1 << 3;
    /// Reading stopped because the runtime's memory budget is spent; the poller resumes
    /// it when the budget is relieved.
    const STARVED: u8 = 1 << 4;
    /// In the poller's list of connections to flush this turn.
    const IN_DIRTY: u8 = 1 << 5;

    /// Whether any of the bits in `f` is set.
    fn has(self, f: u8) -> bool {
        self.0 & u64::from(f) != 0
    }

    /// Sets or clears `f`; returns whether it was set before.
    fn set(&mut self, f: u8, on: bool) -> bool {
        let was = self.has(f);
        match on {
            true => self.0 |= u64::from(f),
            false => self.0 &= !u64::from(f),
        }
        was
    }
}

/// A connection in the slab.
pub(crate) type Stream = StreamConn<dyn Driver>;

/// Builds a connection around an accepted socket (the owner calls it from
/// [`Accept::open`]). With `tls`, the connection starts with the handshake, bounded by
/// `handshake_timeout`.
pub(crate) fn new_stream<D: Driver>(
    sock: StreamSock,
    link: Arc<Link>,
    tls: Option<(rustls::ServerConnection, Duration)>,
    driver: D,
) -> Box<Stream> {
    let now = Instant::now();
    let mut outq = OutQueue::default();
    let handshake = tls.map(|(t, timeout)| {
        outq.extra_mut().tls = Some(Box::new(t));
        timeout
    });
    Box::new(StreamConn {
        link,
        sock,
        outq,
        life: Lifecycle::new(now, handshake),
        armed: None,
        flags: Flags::new(Stamp::of(now)),
        driver,
    })
}

/// Builds a virtual connection: a slot with a link, timers, groups, commands and the
/// close sequence, but no socket. It never reads; its driver delivers its output itself
/// (on other connections, by command) from [`Driver::on_flush`], called at the end of
/// each turn in which it asked for it ([`Io::output_ready`]), and never queues output
/// through [`Io`]. Its close needs no flushing or lingering: once closing, it is removed.
/// Placed on a poller by [`Command::AddVirtual`](super::Command::AddVirtual).
pub(crate) fn new_virtual<D: Driver>(link: Arc<Link>, driver: D) -> Box<Stream> {
    new_stream(StreamSock::Virtual, link, None, driver)
}

/// What one read attempt produced.
enum ReadOutcome {
    Data(usize),
    WouldBlock,
    Eof,
    Failed(CloseReason, Error),
}

/// After a step: keep the connection, or remove it now with this reason.
#[must_use]
pub(crate) enum Step {
    Live,
    Gone(CloseReason),
}

/// What a connection's work may touch besides the connection itself.
pub(crate) struct Ctx<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) read_buf: &'a mut Vec<u8>,
    pub(crate) timers: &'a mut super::timer::Timers,
    pub(crate) dirty: &'a mut Vec<(u32, u32)>,
    pub(crate) again: &'a mut Vec<(u32, u32)>,
    /// Connections not read because the memory budget is spent (see [`StreamConn::revive`]).
    pub(crate) starved: &'a mut Vec<(u32, u32)>,
    pub(crate) now: Instant,
}

impl Stream {
    pub(crate) fn id(&self) -> u64 {
        self.driver.id()
    }

    pub(crate) fn is_of(&self, owner: &Arc<super::Policy>) -> bool {
        Arc::ptr_eq(self.link.policy(), owner)
    }

    /// Feeds the lifecycle machine one event (logging the transition) and returns what the
    /// reactor must do.
    fn step(&mut self, f: impl FnOnce(&mut Lifecycle) -> Action) -> Action {
        let before = std::mem::discriminant(self.life.state());
        let old = log::log_enabled!(log::Level::Trace).then(|| self.life.state().clone());
        let action = f(&mut self.life);
        if let Some(old) = old {
            if std::mem::discriminant(self.life.state()) != before {
                log::trace!("conn={} {old:?}=>{:?}", self.driver.id(), self.life.state());
            }
        }
        action
    }

    /// The socket to register (`None`: a virtual connection).
    pub(crate) fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        self.sock.source()
    }

    fn slot_gen(&self) -> (u32, u32) {
        (self.link.slot, self.link.gen)
    }

    /// Calls the driver with an [`Io`] for this connection, then applies its requests.
    pub(crate) fn drive<R>(
        &mut self,
        ctx: &mut Ctx<'_>,
        f: impl FnOnce(&mut dyn Driver, &mut Io<'_>) -> R,
    ) -> (R, Step) {
        let mut req = Requests::default();
        let StreamConn {
            link,
            outq,
            driver,
            flags,
            ..
        } = self;
        let mut io = Io::new(ctx.now, flags.last_read().at(), link, outq, &mut req);
        let r = f(driver, &mut io);
        (r, self.apply(ctx, req))
    }

    #[inline]
    fn apply(&mut self, ctx: &mut Ctx<'_>, req: Requests) -> Step {
        let rare = req.pause || req.hold || req.resume || req.rearm || req.close.is_some();
        if !rare {
            if req.dirty {
                self.mark_dirty(ctx);
                if self.outq.len() > self.high_water() {
                    self.flags.set(Flags::OUT_PAUSED, true);
                }
            }
            return Step::Live;
        }
        self.apply_rare(ctx, req)
    }

    /// The requests beyond "output queued" (pause, hold, resume, rearm, close).
    fn apply_rare(&mut self, ctx: &mut Ctx<'_>, req: Requests) -> Step {
        if req.pause {
            self.flags.set(Flags::PAUSED, true);
        }
        if req.hold && self.output_pending() {
            self.flags.set(Flags::HELD, true);
        }
        if req.resume && self.flags.has(Flags::PAUSED) {
            self.flags.set(Flags::PAUSED, false);
            // What the peer sent meanwhile: the kept part now, the socket's next turn.
            ctx.again.push(self.slot_gen());
            if self.has_kept() {
                if let Step::Gone(r) = self.refeed(ctx) {
                    return Step::Gone(r);
                }
            }
        }
        if req.rearm {
            self.arm(ctx);
        }
        if req.dirty {
            self.mark_dirty(ctx);
            if self.outq.len() > self.high_water() {
                self.flags.set(Flags::OUT_PAUSED, true);
            }
        }
        match req.close {
            Some(reason) => {
                let step = self.begin_close(ctx, reason);
                if req.peer_done && self.tls().is_none() && matches!(step, Step::Live) {
                    // Nothing more to read: the flush ends it (see `Io::close_done`).
                    let _ = self.step(|l| l.eof());
                }
                step
            }
            None => Step::Live,
        }
    }

    /// Adds a timer at the next deadline of the lifecycle or (while open) the driver,
    /// unless one no later is already pending (one entry per idle connection, however
    /// often it re-arms).
    fn arm(&mut self, ctx: &mut Ctx<'_>) {
        let driver = match self.life.is_open() {
            true => self.driver.next_deadline(self.flags.last_read().at()),
            false => None,
        };
        let Some(at) = crate::base::earliest(self.life.poll_at(), driver) else {
            return;
        };
        let at = Stamp::of(at);
        if self.armed.is_some_and(|pending| pending <= at) {
            return;
        }
        self.armed = Some(at);
        let (slot, gen) = self.slot_gen();
        ctx.timers.add(at.at(), slot, gen, TimerKind::Conn);
    }

    fn mark_dirty(&mut self, ctx: &mut Ctx<'_>) {
        if !self.flags.set(Flags::IN_DIRTY, true) {
            ctx.dirty.push(self.slot_gen());
        }
    }

    /// Registers the connection's first timer and opens the driver (plain connections).
    pub(crate) fn start(&mut self, ctx: &mut Ctx<'_>) -> Step {
        self.arm(ctx);
        if self.life.is_open() {
            let ((), step) = self.drive(ctx, |d, io| d.on_open(io));
            if let Step::Gone(r) = step {
                return Step::Gone(r);
            }
        }
        // No read now: data that arrived before registration is reported by the first
        // wait (epoll checks readiness when a socket is added, edge-triggered or not), and
        // a fresh connection usually has sent nothing yet — a read here is mostly EAGAIN.
        Step::Live
    }

    /// Reading goes on in every phase until end of stream (while closing, input is read and
    /// discarded so that closing never turns into a reset that loses our queued output).
    fn can_read(&self) -> bool {
        self.life.reads()
            && !self
                .flags
                .has(Flags::PAUSED | Flags::OUT_PAUSED | Flags::HELD)
    }

    /// Output queued past this pauses reading (half the queue bound).
    fn high_water(&self) -> usize {
        self.link.policy().limits.max_queued_bytes / 2
    }

    /// Reading resumes once output is down to this (a quarter of the bound).
    fn low_water(&self) -> usize {
        self.link.policy().limits.max_queued_bytes / 4
    }

    fn read_some(&mut self, buf: &mut [u8]) -> ReadOutcome {
        let counters = &self.link.policy().counters;
        match self.outq.extra_if().and_then(|e| e.tls.as_deref_mut()) {
            None => match self.sock.read(buf) {
                Ok(0) => ReadOutcome::Eof,
                Ok(n) => {
                    counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    ReadOutcome::Data(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => ReadOutcome::Data(0),
                Err(e) => ReadOutcome::Failed(CloseReason::Reset(e.to_string()), e.into()),
            },
            Some(tls) => tls_read(tls, &mut self.sock, buf, &counters.bytes_in),
        }
    }

    /// Readiness: flush if writable, then read (`short_ok`: see [`read`](Self::read)).
    pub(crate) fn ready(
        &mut self,
        ctx: &mut Ctx<'_>,
        readable: bool,
        writable: bool,
        short_ok: bool,
    ) -> Step {
        if writable {
            if let Step::Gone(r) = self.flush(ctx) {
                return Step::Gone(r);
            }
        }
        if readable {
            return self.read(ctx, short_ok);
        }
        Step::Live
    }

    /// Reads until `WouldBlock`, end of stream or the per-turn budget.
    ///
    /// With `short_ok`, a plain read that returns less than the buffer stops the loop
    /// without the extra `WouldBlock` read: epoll reports every later arrival as a new
    /// edge, and a hang-up that came before this event is excluded by the caller.
    pub(crate) fn read(&mut self, ctx: &mut Ctx<'_>, short_ok: bool) -> Step {
        let mut total = 0usize;
        let budget = self.link.policy().limits.max_read_per_turn;
        while self.can_read() {
            if self.link.policy().counters.budget.full() {
                self.starve(ctx);
                break;
            }
            let plain = self.tls().is_none();
            let outcome = self.read_some(ctx.read_buf);
            if let Step::Gone(r) = self.after_handshake(ctx) {
                return Step::Gone(r);
            }
            match outcome {
                ReadOutcome::Data(0) => continue,
                ReadOutcome::Data(n) => {
                    total += n;
                    let short = short_ok && plain && n < ctx.read_buf.len();
                    if let Step::Gone(r) = self.input(ctx, n) {
                        return Step::Gone(r);
                    }
                    if short {
                        break;
                    }
                    if total >= budget {
                        ctx.again.push(self.slot_gen());
                        break;
                    }
                }
                ReadOutcome::WouldBlock => break,
                ReadOutcome::Eof => return self.eof(ctx),
                ReadOutcome::Failed(reason, err) => return self.fail(ctx, reason, err),
            }
        }
        if self.output_pending() {
            self.mark_dirty(ctx);
        }
        Step::Live
    }

    fn tls(&self) -> Option<&rustls::ServerConnection> {
        self.outq.extra().and_then(|e| e.tls.as_deref())
    }

    /// Runs `f` on the connection's extra (made if there is none, freed when empty).
    fn with_extra<R>(&mut self, f: impl FnOnce(&mut Extra) -> R) -> R {
        let r = f(self.outq.extra_mut());
        self.outq.settle();
        r
    }

    /// Runs `f` on the connection's groups.
    pub(crate) fn with_groups<R>(&mut self, f: impl FnOnce(&mut super::group::Groups) -> R) -> R {
        self.with_extra(|e| f(&mut e.groups))
    }

    fn has_kept(&self) -> bool {
        self.outq.extra().is_some_and(|e| !e.kept.is_empty())
    }

    /// Keeps unconsumed input for the next read, counted against the memory budget.
    fn keep(&mut self, v: Vec<u8>) {
        if v.is_empty() {
            return;
        }
        self.link.policy().counters.budget.add(v.capacity());
        let extra = self.outq.extra_mut();
        debug_assert!(extra.kept.is_empty());
        extra.kept = v;
    }

    /// Takes the kept input (empty when none), uncounting it from the memory budget.
    fn unkeep(&mut self) -> Vec<u8> {
        if !self.has_kept() {
            return Vec::new();
        }
        let v = self.with_extra(|e| std::mem::take(&mut e.kept));
        self.link.policy().counters.budget.sub(v.capacity());
        v
    }

    /// Stops reading while the runtime's memory budget is spent (TCP pushes back on the
    /// peer); the poller calls [`revive`](Self::revive) until it is relieved.
    fn starve(&mut self, ctx: &mut Ctx<'_>) {
        if !self.flags.has(Flags::STARVED) {
            self.flags.set(Flags::STARVED, true);
            self.link.policy().counters.budget.paused_read();
            ctx.starved.push(self.slot_gen());
        }
    }

    /// A starved connection: read again once the budget is relieved, else stay starved.
    pub(crate) fn revive(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if !self.link.policy().counters.budget.relieved() {
            ctx.starved.push(self.slot_gen());
            return Step::Live;
        }
        self.flags.set(Flags::STARVED, false);
        self.read(ctx, false)
    }

    /// The TLS handshake just completed: the driver gets the connection.
    fn after_handshake(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let done = matches!(self.life.state(), State::Handshake { .. })
            && self.tls().is_some_and(|t| !t.is_handshaking());
        if !done || self.step(|l| l.handshake_done()) != Action::Open {
            return Step::Live;
        }
        self.flags.set_last_read(Stamp::of(ctx.now));
        self.arm(ctx);
        let info = self.tls().map(crate::tls::TlsInfo::of_server);
        let ((), step) = self.drive(ctx, |d, io| {
            if let Some(info) = info {
                d.on_tls(info);
            }
            d.on_open(io)
        });
        step
    }

    /// `n` bytes are in the read buffer: hand them (with any kept input) to the driver.
    fn input(&mut self, ctx: &mut Ctx<'_>, n: usize) -> Step {
        self.flags.set_last_read(Stamp::of(ctx.now));
        let counters = &self.link.policy().counters;
        counters.plain_in.fetch_add(n as u64, Ordering::Relaxed);
        if !self.life.is_open() {
            return Step::Live; // closing: input is discarded
        }
        let mut kept = self.unkeep();
        let step = if kept.is_empty() {
            let buf = std::mem::take(ctx.read_buf);
            let mut data = buf;
            let (used, step) = self.drive(ctx, |d, io| d.on_input(io, &mut data[..n]));
            if used < n && matches!(step, Step::Live) && self.life.is_open() {
                self.keep(data[used..n].to_vec());
            }
            *ctx.read_buf = data;
            step
        } else {
            kept.extend_from_slice(&ctx.read_buf[..n]);
            let (used, step) = self.drive(ctx, |d, io| d.on_input(io, &mut kept));
            kept.drain(..used.min(kept.len()));
            if !kept.is_empty() && matches!(step, Step::Live) && self.life.is_open() {
                self.keep(kept);
            }
            step
        };
        if let Step::Gone(r) = step {
            return Step::Gone(r);
        }
        self.apply_local(ctx)
    }

    /// Hands the kept input to the driver again (after a hold).
    fn refeed(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if !self.has_kept() || !self.life.is_open() {
            return Step::Live;
        }
        let mut kept = self.unkeep();
        let (used, step) = self.drive(ctx, |d, io| d.on_input(io, &mut kept));
        kept.drain(..used.min(kept.len()));
        if !kept.is_empty() && matches!(step, Step::Live) && self.life.is_open() {
            self.keep(kept);
        }
        if let Step::Gone(r) = step {
            return Step::Gone(r);
        }
        if self.output_pending() {
            self.mark_dirty(ctx);
        }
        self.apply_local(ctx)
    }

    /// Applies this connection's sends that inline handlers made during the last callback
    /// (so they keep their place before anything the driver queues next); sends for other
    /// connections stay in the outbox for the poller.
    pub(crate) fn apply_local(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if !super::local::pending() {
            return Step::Live;
        }
        let (slot, gen) = self.slot_gen();
        let ((), step) = self.drive(ctx, |d, io| {
            super::local::take_for(slot, gen, |kind, data| d.on_local(io, kind, data))
        });
        step
    }

    /// The peer finished sending.
    fn eof(&mut self, ctx: &mut Ctx<'_>) -> Step {
        match self.step(|l| l.eof()) {
            Action::Remove(r) => Step::Gone(r),
            Action::AskDriver => self.drive(ctx, |d, io| d.on_eof(io)).1,
            _ => Step::Live,
        }
    }

    /// A fatal error: the driver reports it, and the connection goes at once.
    fn fail(&mut self, ctx: &mut Ctx<'_>, reason: CloseReason, err: Error) -> Step {
        let ((), _) = self.drive(ctx, |d, io| d.on_error(io, err));
        match self.step(|l| l.fail(reason)) {
            Action::Remove(r) => Step::Gone(r),
            _ => unreachable!("fail always removes"),
        }
    }

    /// Starts a graceful close: flush queued output, then shut down the write side.
    pub(crate) fn begin_close(&mut self, ctx: &mut Ctx<'_>, reason: CloseReason) -> Step {
        let policy = self.link.policy();
        let by = match policy.drain_until.get() {
            Some(until) => *until,
            None => crate::base::deadline(ctx.now, policy.limits.close_timeout),
        };
        match self.step(|l| l.close_by(reason, by)) {
            Action::Remove(r) => Step::Gone(r),
            Action::StartClose => {
                drop(self.unkeep());
                let _ = self.link.state.compare_exchange(
                    STATE_OPEN,
                    STATE_CLOSING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if let Some(tls) = self.outq.extra_if().and_then(|e| e.tls.as_deref_mut()) {
                    tls.send_close_notify();
                }
                self.driver.on_closing();
                self.arm(ctx);
                self.mark_dirty(ctx);
                Step::Live
            }
            _ => Step::Live,
        }
    }

    /// Writes queued output. Returns plaintext bytes taken from the queue and socket bytes
    /// — also when an error stopped it (then with the error): what left the queue before
    /// it must be uncounted all the same.
    fn write_out(&mut self) -> (usize, usize, Option<io::Error>) {
        match self.tls() {
            None => {
                let (n, err) = self.outq.flush_some(&mut self.sock);
                (n, n, err)
            }
            Some(_) => {
                let mut done = (0, 0);
                let err = self.outq.flush_tls(&mut self.sock, &mut done).err();
                (done.0, done.1, err)
            }
        }
    }

    pub(crate) fn output_pending(&self) -> bool {
        !self.outq.is_empty() || self.tls().is_some_and(|t| t.wants_write())
    }

    /// Registers or drops write interest to match whether output is pending.
    fn update_interest(&mut self, reg: &Registry) {
        let want = self.output_pending();
        if want == self.flags.has(Flags::WRITABLE_INTEREST) {
            return;
        }
        self.flags.set(Flags::WRITABLE_INTEREST, want);
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let (slot, gen) = self.slot_gen();
        let tok = super::poller::token(slot as usize, gen);
        let Some(src) = self.sock.source() else {
            return;
        };
        if let Err(e) = reg.reregister(src, tok, interest) {
            log::warn!("conn={} reregister failed: {e}", self.driver.id());
        }
    }

    /// Writes the connection's output; handles drained, close and write interest.
    pub(crate) fn flush(&mut self, ctx: &mut Ctx<'_>) -> Step {
        self.flags.set(Flags::IN_DIRTY, false);
        if !self.life.writes() {
            return Step::Live;
        }
        if self.sock.is_virtual() {
            return self.flush_virtual(ctx);
        }
        let had_interest = self.flags.has(Flags::WRITABLE_INTEREST);
        let (plain, wire, err) = self.write_out();
        if plain > 0 {
            self.link.account(-(plain as isize));
            let c = &self.link.policy().counters;
            c.plain_out.fetch_add(plain as u64, Ordering::Relaxed);
        }
        if wire > 0 {
            let c = &self.link.policy().counters;
            c.bytes_out.fetch_add(wire as u64, Ordering::Relaxed);
        }
        if let Some(e) = err {
            return self.fail(ctx, CloseReason::Reset(e.to_string()), e.into());
        }
        if self.flags.has(Flags::HELD) && !self.output_pending() {
            self.flags.set(Flags::HELD, false);
            if let Step::Gone(r) = self.refeed(ctx) {
                return Step::Gone(r);
            }
            ctx.again.push(self.slot_gen());
        }
        if self.flags.has(Flags::OUT_PAUSED) && self.outq.len() <= self.low_water() {
            // Edge-triggered: what the peer sent meanwhile waits in the socket; read it.
            self.flags.set(Flags::OUT_PAUSED, false);
            ctx.again.push(self.slot_gen());
        }
        let pending = self.output_pending();
        self.update_interest(ctx.registry);
        if pending {
            return Step::Live;
        }
        if self.life.closing() {
            return self.shut_write(ctx);
        }
        if had_interest {
            let ((), step) = self.drive(ctx, |d, io| d.on_drained(io));
            return step;
        }
        Step::Live
    }

    /// A virtual connection's end of turn: its driver sends its output; a closing one goes.
    fn flush_virtual(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if self.life.is_open() {
            let ((), step) = self.drive(ctx, |d, io| d.on_flush(io));
            if let Step::Gone(r) = step {
                return Step::Gone(r);
            }
        }
        if !self.life.closing() {
            return Step::Live;
        }
        match self.step(|l| l.flushed(ctx.now)) {
            Action::Remove(r) => Step::Gone(r),
            // No peer to wait for: the end of stream is now.
            Action::ShutWrite => self.eof(ctx),
            _ => Step::Live,
        }
    }

    /// Output is flushed on a closing connection: send FIN, linger for the peer's.
    fn shut_write(&mut self, ctx: &mut Ctx<'_>) -> Step {
        match self.step(|l| l.flushed(ctx.now)) {
            Action::Remove(r) => Step::Gone(r),
            Action::ShutWrite => {
                self.sock.shutdown_write();
                self.arm(ctx);
                // The peer's FIN (or more data to discard) may already be buffered.
                self.read(ctx, false)
            }
            _ => Step::Live,
        }
    }

    /// A timer of this connection fired (or a stale one: every deadline is re-checked, and
    /// the next one armed).
    pub(crate) fn timer(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if self.armed.is_some_and(|at| at.at() <= ctx.now) {
            self.armed = None; // popped now (or due in this same round of timers)
        }
        let step = match self.step(|l| l.timer(ctx.now)) {
            Action::Remove(r) => return Step::Gone(r),
            Action::TimedOut => {
                let ((), _) = self.drive(ctx, |d, io| d.on_error(io, Error::Timeout));
                return Step::Gone(CloseReason::HandshakeTimeout);
            }
            _ if self.life.is_open() => self.drive(ctx, |d, io| d.on_timer(io)).1,
            _ => Step::Live,
        };
        if matches!(step, Step::Live) {
            self.arm(ctx);
        }
        step
    }

    /// A handle's request.
    pub(crate) fn command(&mut self, ctx: &mut Ctx<'_>, cmd: super::ConnCmd) -> Step {
        if let super::ConnCmd::Resume = cmd {
            self.flags.set(Flags::PAUSED, false);
            if let (_, Step::Gone(r)) = self.drive(ctx, |d, io| d.on_resume(io)) {
                return Step::Gone(r);
            }
            return self.read(ctx, false);
        }
        if !self.life.writes() {
            unadmit_stale(&self.link, &cmd);
            return Step::Live;
        }
        let ((), step) = self.drive(ctx, |d, io| d.on_command(io, cmd));
        step
    }

    /// The owner shuts down.
    pub(crate) fn shutdown(&mut self, ctx: &mut Ctx<'_>) -> Step {
        match self.life.is_open() {
            true => self.drive(ctx, |d, io| d.on_shutdown(io)).1,
            false => self.begin_close(ctx, CloseReason::Shutdown),
        }
    }

    /// Offers a shared frame (group fan-out).
    pub(crate) fn offer(
        &mut self,
        ctx: &mut Ctx<'_>,
        frames: &crate::proto::ws::SharedFrames,
    ) -> super::Offer {
        if self.link.state.load(Ordering::Acquire) != STATE_OPEN || !self.life.writes() {
            return super::Offer::Closed;
        }
        let (offer, step) = self.drive(ctx, |d, io| d.offer(io, frames));
        if let (
            super::Offer::Dropped {
                close: Some(reason),
            },
            Step::Live,
        ) = (&offer, &step)
        {
            // Through the driver, so a WebSocket peer gets its close frame (1008 / 1013).
            let cmd = super::ConnCmd::Close(reason.clone());
            let ((), step) = self.drive(ctx, |d, io| d.on_command(io, cmd));
            if let Step::Gone(r) = step {
                let _ = self.begin_close(ctx, r);
            }
            return offer;
        }
        if let Step::Gone(r) = step {
            // Rare: the driver aborted while taking a frame; close it on the next turn.
            let _ = self.begin_close(ctx, r);
        }
        offer
    }

    /// Tears the connection down (it was removed from the slab): releases its queue,
    /// marks it closed and tells the driver.
    /// The connection's link (its counters and handle state).
    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.link
    }

    pub(crate) fn finish(&mut self, reason: &CloseReason) {
        self.link.state.store(STATE_CLOSED, Ordering::Release);
        drop(self.unkeep());
        let left = self.outq.clear();
        self.link.account(-(left as isize));
        let c = &self.link.policy().counters;
        c.closed.fetch_add(1, Ordering::Relaxed);
        if left > 0 {
            // Queued output that never reached the peer: counted, never silent.
            c.discarded.fetch_add(left as u64, Ordering::Relaxed);
        }
        self.driver.on_closed(reason);
    }
}

/// Uncounts the bytes a command for a closed connection had admitted.
pub(crate) fn unadmit_stale(link: &Link, cmd: &super::ConnCmd) {
    let n = match cmd {
        super::ConnCmd::Send(p) => p.as_slice().len(),
        super::ConnCmd::Message(_, d) => d.len(),
        super::ConnCmd::Frames(f) => f.plain.len(),
        _ => 0,
    };
    if n > 0 {
        link.account(-(n as isize));
    }
}

fn tls_read(
    tls: &mut rustls::ServerConnection,
    sock: &mut StreamSock,
    buf: &mut [u8],
    wire_in: &std::sync::atomic::AtomicU64,
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
            Ok(n) => {
                wire_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return ReadOutcome::Failed(CloseReason::Reset(e.to_string()), e.into()),
        }
        if let Err(e) = tls.process_new_packets() {
            // rustls queued an alert; it is written before the connection closes.
            let _ = tls.write_tls(sock);
            let reason = CloseReason::Protocol(e.to_string());
            return ReadOutcome::Failed(reason, Error::Tls(crate::tls::TlsError::from_rustls(e)));
        }
        if tls.is_handshaking() && tls.wants_write() {
            // Handshake messages to send: let the caller flush them.
            let _ = tls.write_tls(sock);
        }
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

#[cfg(test)]
mod size_tests {
    #[test]
    fn print_sizes() {
        eprintln!(
            "StreamConn<()>={} Lifecycle={} OutQueue={} StreamSock={}",
            std::mem::size_of::<super::StreamConn<NoDriver>>(),
            std::mem::size_of::<super::Lifecycle>(),
            std::mem::size_of::<super::OutQueue>(),
            std::mem::size_of::<super::StreamSock>(),
        );
    }

    /// A zero-sized driver, to measure the reactor's part of a connection.
    struct NoDriver;

    impl super::Driver for NoDriver {
        fn on_open(&mut self, _: &mut super::Io<'_>) {}
        fn on_input(&mut self, _: &mut super::Io<'_>, d: &mut [u8]) -> usize {
            d.len()
        }
        fn on_drained(&mut self, _: &mut super::Io<'_>) {}
        fn on_timer(&mut self, _: &mut super::Io<'_>) {}
        fn on_command(&mut self, _: &mut super::Io<'_>, _: crate::reactor::ConnCmd) {}
        fn on_local(&mut self, _: &mut super::Io<'_>, _: crate::reactor::local::Kind, _: &[u8]) {}
        fn offer(
            &mut self,
            _: &mut super::Io<'_>,
            _: &crate::proto::ws::SharedFrames,
        ) -> crate::reactor::Offer {
            crate::reactor::Offer::Closed
        }
        fn on_error(&mut self, _: &mut super::Io<'_>, _: crate::Error) {}
        fn on_closed(&mut self, _: &crate::base::CloseReason) {}
        fn next_deadline(&self, _: std::time::Instant) -> Option<std::time::Instant> {
            None
        }
        fn id(&self) -> u64 {
            0
        }
    }
}
