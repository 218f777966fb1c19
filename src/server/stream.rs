//! The raw stream driver: bytes in, bytes out, for a [`StreamHandler`](crate::StreamHandler)
//! (TCP, TLS and Unix stream servers).

use std::time::Instant;

use super::dispatch::{Event, StreamSlot};
use super::handle::Conn;
use super::observe::ConnState;
use crate::base::CloseReason;
use crate::proto::ws::SharedFrames;
use crate::reactor::local::Kind;
use crate::reactor::{ConnCmd, Driver, Io, Offer, Payload};
use crate::Error;

/// A raw byte-stream connection's protocol.
pub(crate) struct RawDriver {
    conn: Conn,
    handler: StreamSlot,
    /// Waiting for the handler thread to catch up before closing with this reason.
    awaiting: Option<Box<CloseReason>>,
}

impl RawDriver {
    pub(crate) fn new(conn: Conn) -> Self {
        RawDriver {
            conn,
            handler: StreamSlot::default(),
            awaiting: None,
        }
    }

    /// Closes once the handler thread has handled everything it was given (at once inline).
    fn close_after_handler(&mut self, io: &mut Io<'_>, reason: CloseReason) {
        if self.awaiting.is_some() {
            return;
        }
        if self.handler.catch_up(&self.conn) {
            self.awaiting = Some(Box::new(reason));
        } else {
            io.close(reason);
        }
    }
}

impl Driver for RawDriver {
    fn on_tls(&mut self, info: crate::tls::TlsInfo) {
        self.conn.set_tls(info);
    }

    fn on_open(&mut self, _io: &mut Io<'_>) {
        let factory = self.conn.server().factory.clone();
        self.handler
            .deliver(&self.conn, None, Event::Open(&factory, None));
    }

    fn on_input(&mut self, io: &mut Io<'_>, data: &mut [u8]) -> usize {
        if self.awaiting.is_none() {
            self.handler
                .deliver(&self.conn, Some(io), Event::Data(data));
        }
        data.len()
    }

    fn on_eof(&mut self, io: &mut Io<'_>) {
        self.close_after_handler(io, CloseReason::PeerClosed);
    }

    fn on_drained(&mut self, _io: &mut Io<'_>) {
        self.handler.deliver(&self.conn, None, Event::Drained);
    }

    fn on_timer(&mut self, io: &mut Io<'_>) {
        let idle = self.conn.server().config.idle_timeout;
        if idle.is_some_and(|d| crate::base::elapsed(io.last_read, io.now, d)) {
            io.close(CloseReason::IdleTimeout);
        }
    }

    fn on_command(&mut self, io: &mut Io<'_>, cmd: ConnCmd) {
        match cmd {
            ConnCmd::Send(p) => {
                let n = p.as_slice().len();
                io.push_admitted(p, n);
            }
            ConnCmd::Message(_, data) => {
                let n = data.len();
                io.push_admitted(Payload::Owned(data), n);
            }
            ConnCmd::Frames(f) => {
                let n = f.plain.len();
                io.push_admitted(Payload::Shared(f.plain), n);
            }
            ConnCmd::Close(reason) => io.close(reason),
            ConnCmd::CloseWith(..) => io.close(CloseReason::Local),
            ConnCmd::Failed(msg) => io.close(CloseReason::HandlerPanic(msg)),
            ConnCmd::CaughtUp => {
                if let Some(reason) = self.awaiting.take() {
                    io.close(*reason);
                }
            }
            ConnCmd::Resume
            | ConnCmd::JoinGroup(_)
            | ConnCmd::LeaveGroup(_)
            | ConnCmd::Driver(_) => {}
        }
    }

    fn on_local(&mut self, io: &mut Io<'_>, _kind: Kind, data: &[u8]) {
        io.push_copy(data);
    }

    fn offer(&mut self, io: &mut Io<'_>, frames: &SharedFrames) -> Offer {
        io.offer_shared(frames.plain.clone())
    }

    fn on_shutdown(&mut self, io: &mut Io<'_>) {
        self.close_after_handler(io, CloseReason::Shutdown);
    }

    fn on_error(&mut self, _io: &mut Io<'_>, error: Error) {
        self.conn
            .server()
            .report_error(Some(self.conn.id()), &error);
        self.handler.deliver_error(&self.conn, error);
    }

    fn on_closing(&mut self) {
        let c = &self.conn;
        c.server()
            .report_state(c.id(), &c.peer_addr(), &ConnState::Closing);
    }

    fn on_closed(&mut self, reason: &CloseReason) {
        let c = &self.conn;
        let server = c.server().clone();
        server.report_state(c.id(), &c.peer_addr(), &ConnState::Closed(reason.clone()));
        self.handler.deliver(c, None, Event::Close(reason));
        server.conn_gone();
    }

    fn next_deadline(&self, last_read: Instant) -> Option<Instant> {
        crate::base::deadline_opt(last_read, self.conn.server().config.idle_timeout)
    }

    fn id(&self) -> u64 {
        self.conn.id().0
    }
}
