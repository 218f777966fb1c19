//! What a handler thread does with one connection's job: creates the handler, calls its
//! methods, contains its panics. The pool ([`super::pool`]) decides which thread runs which
//! connection's jobs; this file holds everything that runs once a job is taken.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::base::{Addr, CloseReason};
use crate::proto::http::Request;
use crate::proto::ws::CloseCode;
use crate::reactor::stream::{describe_panic, UserHandler};
use crate::reactor::Command;
use crate::server::handle::Conn;
use crate::server::handler::{
    DatagramFactory, DatagramHandler, DatagramSender, StreamFactory, StreamHandler,
};
use crate::server::websocket::{WsConn, WsFactory, WsHandler};
use crate::Error;

/// Work for a handler thread.
pub(crate) enum Job {
    Open {
        conn: Conn,
        factory: Arc<dyn StreamFactory>,
    },
    Data {
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
    WsOpen {
        conn: Conn,
        factory: Arc<dyn WsFactory>,
        req: Request,
    },
    Text {
        conn: Conn,
        text: String,
    },
    Binary {
        conn: Conn,
        data: Vec<u8>,
    },
    WsClose {
        conn: Conn,
        code: CloseCode,
        reason: String,
    },
    /// Reply `HandlerCaughtUp` to the poller once every earlier event was handled.
    CatchUp {
        conn: Conn,
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
/// runs the key's jobs at the moment.
#[derive(Default)]
pub(crate) struct Handlers {
    stream: Option<UserHandler>,
    datagram: Option<Box<dyn DatagramHandler>>,
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

/// The key a datagram socket's jobs are queued under (disjoint from connection ids).
pub(crate) fn datagram_key(sock: u64) -> u64 {
    sock | 1 << 63
}

impl Handlers {
    /// No handler exists for this key (none created yet, or dropped): nothing to keep.
    pub(crate) fn is_idle(&self) -> bool {
        self.stream.is_none() && self.datagram.is_none()
    }

    /// Runs one job of this key.
    pub(crate) fn run(&mut self, job: Job) -> Ran {
        let mut ran = Ran::default();
        match job {
            Job::Open { conn, factory } => self.open(conn, factory, &mut ran),
            Job::Data { conn, data } => {
                self.call(&conn, &mut ran, |h, c| h.on_data(c, &data), |_, _| {});
                consumed(&conn, data.len());
            }
            Job::Drained { conn } => self.call(
                &conn,
                &mut ran,
                |h, c| h.on_drained(c),
                |h, w| h.on_drained(w),
            ),
            Job::Error { conn, error } => self.call(
                &conn,
                &mut ran,
                |h, c| h.on_error(c, &error),
                |h, w| h.on_error(w, &error),
            ),
            Job::Close { conn, reason } => {
                self.call(&conn, &mut ran, |h, c| h.on_close(c, &reason), |_, _| {});
                self.stream = None;
                ran.finished = true;
            }
            Job::WsOpen { conn, factory, req } => self.open_ws(conn, factory, req, &mut ran),
            Job::Text { conn, text } => {
                self.call(&conn, &mut ran, |_, _| {}, |h, w| h.on_text(w, &text));
                consumed(&conn, text.len());
            }
            Job::Binary { conn, data } => {
                self.call(&conn, &mut ran, |_, _| {}, |h, w| h.on_binary(w, &data));
                consumed(&conn, data.len());
            }
            Job::WsClose { conn, code, reason } => {
                self.call(
                    &conn,
                    &mut ran,
                    |_, _| {},
                    |h, w| h.on_close(w, code, &reason),
                );
                self.stream = None;
                ran.finished = true;
            }
            Job::CatchUp { conn } => {
                let (slot, gen) = (conn.inner.slot, conn.inner.gen);
                conn.inner
                    .poller
                    .command(Command::HandlerCaughtUp { slot, gen });
            }
            Job::Datagram {
                sender,
                factory,
                peer,
                data,
            } => self.datagram(&sender, factory, &mut ran, |h, s| {
                h.on_datagram(s, &peer, &data)
            }),
            Job::DatagramError {
                sender,
                factory,
                error,
            } => self.datagram(&sender, factory, &mut ran, |h, _| h.on_error(&error)),
        }
        ran
    }

    fn open(&mut self, conn: Conn, factory: Arc<dyn StreamFactory>, ran: &mut Ran) {
        match catch_unwind(AssertUnwindSafe(|| factory.create(&conn))) {
            Ok(h) => {
                self.stream = Some(UserHandler::Stream(h));
                self.call(&conn, ran, |h, c| h.on_open(c), |_, _| {});
            }
            Err(p) => panicked(&conn, describe_panic(&*p), ran),
        }
    }

    fn open_ws(&mut self, conn: Conn, factory: Arc<dyn WsFactory>, req: Request, ran: &mut Ran) {
        let ws = WsConn::from_conn(&conn);
        match catch_unwind(AssertUnwindSafe(|| factory.create(ws, &req))) {
            Ok(h) => {
                self.stream = Some(UserHandler::Ws(h));
                self.call(&conn, ran, |_, _| {}, |h, w| h.on_open(w, &req));
            }
            Err(p) => panicked(&conn, describe_panic(&*p), ran),
        }
    }

    /// Runs a handler method (`s` for stream handlers, `w` for WebSocket handlers); a panic
    /// drops the handler and closes the connection.
    fn call(
        &mut self,
        conn: &Conn,
        ran: &mut Ran,
        s: impl FnOnce(&mut dyn StreamHandler, &Conn),
        w: impl FnOnce(&mut dyn WsHandler, &WsConn),
    ) {
        let Some(h) = self.stream.as_mut() else {
            return;
        };
        let r = catch_unwind(AssertUnwindSafe(|| match h {
            UserHandler::Stream(h) => s(h.as_mut(), conn),
            UserHandler::Ws(h) => w(h.as_mut(), WsConn::from_conn(conn)),
        }));
        if let Err(p) = r {
            self.stream = None;
            panicked(conn, describe_panic(&*p), ran);
        }
    }

    fn datagram(
        &mut self,
        sender: &DatagramSender,
        factory: Arc<dyn DatagramFactory>,
        ran: &mut Ran,
        f: impl FnOnce(&mut dyn DatagramHandler, &DatagramSender),
    ) {
        let h = self.datagram.get_or_insert_with(|| factory.create());
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(h.as_mut(), sender))) {
            let msg = describe_panic(&*p);
            log::error!("datagram handler panicked: {msg}");
            let server = &sender.inner.server;
            server
                .observer
                .on_error(None, &Error::HandlerPanic(msg.clone()));
            ran.panicked = Some(msg);
        }
    }
}

/// A handler panicked: its connection closes, and the thread is to report it.
fn panicked(conn: &Conn, msg: String, ran: &mut Ran) {
    log::error!("conn={} handler panicked: {msg}", conn.id());
    let server = &conn.inner.server;
    server
        .observer
        .on_error(Some(conn.id()), &Error::HandlerPanic(msg.clone()));
    if server.ws.is_some() {
        WsConn::from_conn(conn).close(CloseCode::ERROR, "handler failed");
    } else {
        conn.close_with(CloseReason::HandlerPanic(msg.clone()));
    }
    ran.panicked = Some(msg);
}

/// The handler consumed `n` inbound bytes: resume a paused reader once it caught up.
fn consumed(conn: &Conn, n: usize) {
    let sh = &conn.inner;
    let left = sh.inbound.fetch_sub(n, Ordering::SeqCst) - n;
    let max = sh.server.config.max_inbound_pending;
    if left <= max / 2
        && sh.paused.load(Ordering::SeqCst)
        && sh.paused.swap(false, Ordering::SeqCst)
    {
        sh.poller.command(Command::Resume {
            slot: sh.slot,
            gen: sh.gen,
        });
    }
}
