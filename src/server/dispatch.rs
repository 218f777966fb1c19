//! Where handlers run, and the one path by which they are called.
//!
//! [`event`] calls a connection's handler for an [`Event`], containing panics, wherever the
//! handler is kept (a [`Keeper`]): in its driver's [`HandlerSlot`] (inline dispatch, on the
//! poller, with borrowed data) or in the pool's [`Handlers`] of its key (threaded dispatch:
//! the driver sends a [`Job`] with owned data, and the pool's thread calls the same
//! [`event`]). A panic is handled once, in [`panicked`], for both.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::base::{Addr, CloseReason, ConnId};
use crate::proto::http::Request;
use crate::proto::ws::CloseCode;
use crate::reactor::stream::describe_panic;
use crate::reactor::{ConnCmd, Io};
use crate::server::handle::Conn;
use crate::server::handler::{
    DatagramFactory, DatagramHandler, DatagramSender, StreamFactory, StreamHandler,
};
use crate::server::websocket::{WsConn, WsFactory, WsHandler};
use crate::Error;

/// A user handler of either protocol (a WebSocket handler keeps its `WsConn`).
pub(crate) enum UserHandler {
    Stream(Box<dyn StreamHandler>),
    /// The handler's `WsConn` is made from the event's `Conn` for each call (a count
    /// increment): keeping one here would cost every connection a word.
    Ws(Box<dyn WsHandler>),
}

/// A user handler, borrowed for one call.
pub(crate) enum UserRef<'a> {
    Stream(&'a mut dyn StreamHandler),
    Ws(&'a mut dyn WsHandler),
}

/// What keeps a connection's handler between events: the pool's [`Handlers`] (either
/// kind), or a driver's inline slot, which holds its driver's kind only (16 bytes where a
/// slot for either kind takes 24, in every idle inline connection).
pub(crate) trait Keeper {
    /// The handler, if one is kept.
    fn user(&mut self) -> Option<UserRef<'_>>;
    /// Keeps `h`, made by the connection's factory.
    fn keep(&mut self, h: UserHandler);
    /// Drops the handler (closed, or it panicked).
    fn clear(&mut self);
}

impl Keeper for Handlers {
    fn user(&mut self) -> Option<UserRef<'_>> {
        match self {
            Handlers::Stream(UserHandler::Stream(h)) => Some(UserRef::Stream(h.as_mut())),
            Handlers::Stream(UserHandler::Ws(h)) => Some(UserRef::Ws(h.as_mut())),
            _ => None,
        }
    }
    fn keep(&mut self, h: UserHandler) {
        *self = Handlers::Stream(h);
    }
    fn clear(&mut self) {
        *self = Handlers::None;
    }
}

impl Keeper for Option<Box<dyn WsHandler>> {
    #[inline]
    fn user(&mut self) -> Option<UserRef<'_>> {
        self.as_mut().map(|h| UserRef::Ws(h.as_mut()))
    }
    fn keep(&mut self, h: UserHandler) {
        match h {
            UserHandler::Ws(h) => *self = Some(h),
            // A WebSocket server's factory makes WebSocket handlers only.
            UserHandler::Stream(_) => unreachable!("a stream handler for a WebSocket driver"),
        }
    }
    fn clear(&mut self) {
        *self = None;
    }
}

impl Keeper for Option<Box<dyn StreamHandler>> {
    #[inline]
    fn user(&mut self) -> Option<UserRef<'_>> {
        self.as_mut().map(|h| UserRef::Stream(h.as_mut()))
    }
    fn keep(&mut self, h: UserHandler) {
        match h {
            UserHandler::Stream(h) => *self = Some(h),
            UserHandler::Ws(_) => unreachable!("a WebSocket handler for a stream driver"),
        }
    }
    fn clear(&mut self) {
        *self = None;
    }
}

/// How a connection's handler is created.
#[derive(Clone)]
pub(crate) enum Factory {
    Stream(Arc<dyn StreamFactory>),
    Ws(Arc<dyn WsFactory>),
}

/// A handler event, borrowed (inline) or taken from a [`Job`] (threads).
pub(crate) enum Event<'a> {
    /// Create the handler and call `on_open` (with the upgrade request for WebSocket).
    Open(&'a Factory, Option<&'a Request>),
    Data(&'a [u8]),
    Text(&'a str),
    Binary(&'a [u8]),
    Drained,
    Error(&'a Error),
    Close(&'a CloseReason),
    WsClose(CloseCode, &'a str),
}

/// Work for a handler thread: one connection's event with owned data, or a datagram.
pub(crate) enum Job {
    Open {
        conn: Conn,
        factory: Factory,
        req: Option<Box<Request>>,
    },
    Data {
        conn: Conn,
        data: Vec<u8>,
    },
    Text {
        conn: Conn,
        text: String,
    },
    Binary {
        conn: Conn,
        data: Vec<u8>,
    },
    Drained {
        conn: Conn,
    },
    Error {
        conn: Conn,
        error: Error,
    },
    Close {
        conn: Conn,
        reason: CloseReason,
    },
    WsClose {
        conn: Conn,
        code: CloseCode,
        reason: String,
    },
    /// Tell the poller once every earlier event was handled.
    CatchUp {
        conn: Conn,
    },
    /// Run the WebSocket authenticator on the upgrade request (it may block) and send its
    /// verdict to the connection's driver.
    Authenticate {
        conn: Conn,
        cfg: Arc<crate::server::websocket::WsServerConfig>,
        req: Box<Request>,
    },
    Datagram {
        sender: DatagramSender,
        factory: Arc<dyn DatagramFactory>,
        peer: Addr,
        data: Vec<u8>,
    },
    DatagramError {
        sender: DatagramSender,
        factory: Arc<dyn DatagramFactory>,
        error: Error,
    },
}

/// The handlers of one key (a connection or a datagram socket), owned by whichever thread
/// runs the key's jobs at the moment (or by the connection's driver, inline).
#[derive(Default)]
pub(crate) enum Handlers {
    /// None yet (or dropped after a panic or the close).
    #[default]
    None,
    Stream(UserHandler),
    Datagram(Box<dyn DatagramHandler>),
}

/// What running one job did.
#[derive(Debug, Default)]
pub(crate) struct Ran {
    /// The key is finished (its connection closed): its state may be dropped.
    pub(crate) finished: bool,
    /// A handler panicked (with this message): its connection is closing; the thread that
    /// ran it reports the fault to its supervisor.
    pub(crate) panicked: Option<String>,
}

/// What one queued job costs beyond its payload (the job and its queue slot), counted with
/// the payload against `max_inbound_pending`: a flood of tiny messages is bounded too.
pub(crate) const JOB_COST: usize = std::mem::size_of::<Job>() + 16;

/// The key a datagram socket's jobs are queued under (disjoint from connection ids).
pub(crate) fn datagram_key(sock: u64) -> u64 {
    sock | 1 << 63
}

impl Handlers {
    /// No handler exists for this key (none created yet, or dropped): nothing to keep.
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self, Handlers::None)
    }

    /// Runs one job of this key (on a handler thread).
    pub(crate) fn run(&mut self, job: Job) -> Ran {
        match job {
            Job::Open { conn, factory, req } => {
                self.event(&conn, Event::Open(&factory, req.as_deref()))
            }
            Job::Data { conn, data } => {
                let ran = self.event(&conn, Event::Data(&data));
                consumed(&conn, data.len() + JOB_COST);
                ran
            }
            Job::Text { conn, text } => {
                let ran = self.event(&conn, Event::Text(&text));
                consumed(&conn, text.len() + JOB_COST);
                ran
            }
            Job::Binary { conn, data } => {
                let ran = self.event(&conn, Event::Binary(&data));
                consumed(&conn, data.len() + JOB_COST);
                ran
            }
            Job::Drained { conn } => self.event(&conn, Event::Drained),
            Job::Error { conn, error } => self.event(&conn, Event::Error(&error)),
            Job::Close { conn, reason } => self.event(&conn, Event::Close(&reason)),
            Job::WsClose { conn, code, reason } => self.event(&conn, Event::WsClose(code, &reason)),
            Job::CatchUp { conn } => {
                conn.inner.command(ConnCmd::CaughtUp);
                Ran::default()
            }
            Job::Authenticate { conn, cfg, req } => {
                authenticate(&conn, &cfg, req);
                Ran::default()
            }
            Job::Datagram {
                sender,
                factory,
                peer,
                data,
            } => {
                let ran = self.datagram(&sender, factory, |h, s| h.on_datagram(s, &peer, &data));
                sender.inner.handled(data.len());
                ran
            }
            Job::DatagramError {
                sender,
                factory,
                error,
            } => self.datagram(&sender, factory, |h, _| h.on_error(&error)),
        }
    }

    /// Calls the handler for one event of `conn` (see [`event`]).
    pub(crate) fn event(&mut self, conn: &Conn, ev: Event<'_>) -> Ran {
        event(self, conn, ev)
    }
    fn datagram(
        &mut self,
        sender: &DatagramSender,
        factory: Arc<dyn DatagramFactory>,
        f: impl FnOnce(&mut dyn DatagramHandler, &DatagramSender),
    ) -> Ran {
        let mut ran = Ran::default();
        let r = catch_unwind(AssertUnwindSafe(|| {
            if !matches!(self, Handlers::Datagram(_)) {
                *self = Handlers::Datagram(factory.create());
            }
            if let Handlers::Datagram(h) = self {
                f(h.as_mut(), sender)
            }
        }));
        if let Err(p) = r {
            let msg = describe_panic(&*p);
            log::error!("datagram handler panicked: {msg}");
            sender
                .inner
                .server
                .report_error(None, &Error::HandlerPanic(msg.clone()));
            ran.panicked = Some(msg);
        }
        ran
    }
}

/// Calls the handler kept in `k` for one event of `conn` — the one invocation path, inline
/// and on handler threads. A panic drops the handler and closes the connection.
pub(crate) fn event<K: Keeper + ?Sized>(k: &mut K, conn: &Conn, ev: Event<'_>) -> Ran {
    let _call = crate::server::trace::handler_call(conn, &ev);
    let mut ran = Ran::default();
    if let Event::Open(factory, req) = ev {
        return open(k, conn, factory, req);
    }
    let last = matches!(ev, Event::Close(_) | Event::WsClose(..));
    if let Some(h) = k.user() {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| call(h, conn, ev))) {
            k.clear();
            ran.panicked = Some(panicked(conn, describe_panic(&*p), !last));
        }
    }
    if last {
        k.clear();
        ran.finished = true;
    }
    ran
}

fn open<K: Keeper + ?Sized>(
    k: &mut K,
    conn: &Conn,
    factory: &Factory,
    req: Option<&Request>,
) -> Ran {
    let made = catch_unwind(AssertUnwindSafe(|| match (factory, req) {
        (Factory::Stream(f), _) => {
            let mut h = f.create(conn);
            h.on_open(conn);
            UserHandler::Stream(h)
        }
        (Factory::Ws(f), req) => {
            let ws = &WsConn { conn: conn.clone() };
            let empty = Request::default();
            let req = req.unwrap_or(&empty);
            let mut h = f.create(ws, req);
            h.on_open(ws, req);
            UserHandler::Ws(h)
        }
    }));
    match made {
        Ok(h) => {
            k.keep(h);
            Ran::default()
        }
        Err(p) => Ran {
            finished: false,
            panicked: Some(panicked(conn, describe_panic(&*p), true)),
        },
    }
}

// Inlined into each keeper's `event` (one for the pool, one per driver kind), as it was into
// the one `event` before: a call here costs the echo path 2 % of its instructions.
#[inline(always)]
fn call(h: UserRef<'_>, conn: &Conn, ev: Event<'_>) {
    match h {
        UserRef::Stream(h) => match ev {
            Event::Data(d) => h.on_data(conn, d),
            Event::Drained => h.on_drained(conn),
            Event::Error(e) => h.on_error(conn, e),
            Event::Close(r) => h.on_close(conn, r),
            _ => {}
        },
        UserRef::Ws(h) => {
            let ws = &WsConn { conn: conn.clone() };
            match ev {
                Event::Text(t) => h.on_text(ws, t),
                Event::Binary(b) => h.on_binary(ws, b),
                Event::Drained => h.on_drained(ws),
                Event::Error(e) => h.on_error(ws, e),
                Event::WsClose(code, reason) => h.on_close(ws, code, reason),
                Event::Close(_) => h.on_close(ws, CloseCode::ABNORMAL, ""),
                _ => {}
            }
        }
    }
}

/// A handler panicked: report it and (unless the connection is already gone) close the
/// connection with [`CloseReason::HandlerPanic`] (1011 for WebSocket). Returns the message.
fn panicked(conn: &Conn, msg: String, close: bool) -> String {
    log::error!("conn={} handler panicked: {msg}", conn.id());
    let server = conn.server();
    server.report_error(Some(conn.id()), &Error::HandlerPanic(msg.clone()));
    if close && conn.begin_closing() {
        conn.inner.command(ConnCmd::Failed(msg.clone()));
    }
    msg
}

/// Runs the authenticator, then the connection middleware in order (contained: a panic
/// is a 500), and hands the verdict, with the request, back to the connection's driver.
fn authenticate(conn: &Conn, cfg: &crate::server::websocket::WsServerConfig, req: Box<Request>) {
    use crate::server::websocket::Rejection;
    let verdict = || -> Result<Option<crate::Identity>, Rejection> {
        let identity = match &cfg.auth {
            Some(auth) => auth(&req)?,
            None => None,
        };
        for mw in &cfg.middleware {
            mw(&req, identity.as_ref())?;
        }
        Ok(identity)
    };
    let result = match catch_unwind(AssertUnwindSafe(verdict)) {
        Ok(r) => r,
        Err(p) => {
            let msg = describe_panic(&*p);
            log::error!("authenticator or connection middleware panicked: {msg}");
            Err(Rejection::new(500, "authenticator failed"))
        }
    };
    let outcome = crate::server::ws_driver::AuthOutcome { result, req };
    conn.inner.command(ConnCmd::Driver(Box::new(outcome)));
}

/// The handler consumed `n` inbound bytes: resume a paused reader once it caught up.
fn consumed(conn: &Conn, n: usize) {
    let sh = &conn.inner;
    let n = crate::reactor::inbound_cost(n);
    let left = sh.inbound.fetch_sub(n, Ordering::SeqCst).saturating_sub(n) as usize;
    sh.policy().counters.budget.sub(n as usize);
    let max = sh.policy().limits.max_inbound_pending;
    if left <= max / 2
        && sh.paused.load(Ordering::SeqCst)
        && sh.paused.swap(false, Ordering::SeqCst)
    {
        sh.command(ConnCmd::Resume);
    }
}

/// A connection's handler, as its driver keeps it: inline (the handler lives here) or on
/// the pool (its server's: nothing is kept here). Which one is the server's
/// [`Dispatch`](crate::Dispatch), read through the connection, so the slot is one
/// `Option<Box<dyn …>>` of the driver's kind: 16 bytes. Both go through [`event`].
pub(crate) struct HandlerSlot<H: ?Sized>(Option<Box<H>>);

/// A WebSocket driver's handler.
pub(crate) type WsSlot = HandlerSlot<dyn WsHandler>;

/// A stream driver's handler.
pub(crate) type StreamSlot = HandlerSlot<dyn StreamHandler>;

impl<H: ?Sized> Default for HandlerSlot<H> {
    fn default() -> Self {
        HandlerSlot(None)
    }
}

impl<H: ?Sized> HandlerSlot<H>
where
    Option<Box<H>>: Keeper,
{
    /// Hands an event to the handler: called here, or queued for the pool. Inbound bytes
    /// handed to the pool are counted, and reading pauses past the bound.
    pub(crate) fn deliver(&mut self, conn: &Conn, io: Option<&mut Io<'_>>, ev: Event<'_>) {
        match conn.server().inline() {
            true => {
                let _ = event(&mut self.0, conn, ev);
            }
            false => {
                let pool = &conn.server().pool;
                let conn_ = conn.clone();
                let (job, inbound) = match ev {
                    Event::Open(f, req) => (
                        Job::Open {
                            conn: conn_,
                            factory: f.clone(),
                            req: req.map(|r| Box::new(r.clone())),
                        },
                        0,
                    ),
                    Event::Data(d) => (
                        Job::Data {
                            conn: conn_,
                            data: d.to_vec(),
                        },
                        d.len() + JOB_COST,
                    ),
                    Event::Text(t) => (
                        Job::Text {
                            conn: conn_,
                            text: t.to_owned(),
                        },
                        t.len() + JOB_COST,
                    ),
                    Event::Binary(b) => (
                        Job::Binary {
                            conn: conn_,
                            data: b.to_vec(),
                        },
                        b.len() + JOB_COST,
                    ),
                    Event::Drained => (Job::Drained { conn: conn_ }, 0),
                    Event::Error(_) => unreachable!("errors go through deliver_error"),
                    Event::Close(r) => (
                        Job::Close {
                            conn: conn_,
                            reason: r.clone(),
                        },
                        0,
                    ),
                    Event::WsClose(code, reason) => (
                        Job::WsClose {
                            conn: conn_,
                            code,
                            reason: reason.to_owned(),
                        },
                        0,
                    ),
                };
                if inbound > 0 {
                    let cost = crate::reactor::inbound_cost(inbound);
                    conn.inner.inbound.fetch_add(cost, Ordering::SeqCst);
                    conn.inner.policy().counters.budget.add(cost as usize);
                }
                pool.dispatch(conn.id().0, job);
                if let (true, Some(io)) = (inbound > 0, io) {
                    pause_if_behind(conn, io);
                }
            }
        }
    }

    /// Hands an error (owned: it goes to a handler thread as it is) to the handler.
    pub(crate) fn deliver_error(&mut self, conn: &Conn, error: Error) {
        match conn.server().inline() {
            true => {
                let _ = event(&mut self.0, conn, Event::Error(&error));
            }
            false => {
                let conn_ = conn.clone();
                conn.server()
                    .pool
                    .dispatch(conn.id().0, Job::Error { conn: conn_, error });
            }
        }
    }

    /// Queues a job that reports back once every earlier event was handled (threads only).
    pub(crate) fn catch_up(&self, conn: &Conn) -> bool {
        if conn.server().inline() {
            return false;
        }
        conn.server()
            .pool
            .dispatch(conn.id().0, Job::CatchUp { conn: conn.clone() });
        true
    }
}

/// Pauses reading while the handler thread has more than `max_inbound_pending` bytes to
/// consume (the bytes are counted before they are handed over, so the handler's
/// subtraction never runs ahead of the count).
fn pause_if_behind(conn: &Conn, io: &mut Io<'_>) {
    let sh = &conn.inner;
    let max = sh.policy().limits.max_inbound_pending;
    if sh.inbound.load(Ordering::SeqCst) as usize <= max {
        return;
    }
    sh.paused.store(true, Ordering::SeqCst);
    if sh.inbound.load(Ordering::SeqCst) as usize <= max / 2
        && sh.paused.swap(false, Ordering::SeqCst)
    {
        return;
    }
    io.pause();
}

/// Connection ids are process-unique.
pub(crate) fn next_conn_id() -> ConnId {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
}
