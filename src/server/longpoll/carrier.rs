//! The carrier side of long-polling: a WebSocket-port connection in its HTTP phase routes
//! a polling request to its session ([`longpoll::route`]), waits for the session's
//! [`PollReply`] (its kept input bounded) and writes it. A child module of the WebSocket
//! driver, whose state it works on.

use super::*;

/// A long-polling request waiting for its session's answer.
pub(super) struct PollWait {
    pub(super) deadline: Option<Stamp>,
    pub(super) requests: u32,
    /// Close the connection once the answer is written (HTTP/1.0, `Connection: close`,
    /// or the server is shutting down).
    pub(super) close: bool,
}

impl WsDriver {
    /// A long-polling request: a handshake (origin, authenticator, then a session), or a
    /// GET or POST handed to its session, whose answer comes back as a [`PollReply`].
    pub(super) fn poll(&mut self, io: &mut Io<'_>, req: Request) {
        let max = longpoll::config(&self.conn).max_body;
        if req.body().len() > max {
            return self.reject(io, 413, "long-polling body too large");
        }
        match longpoll::route(&self.conn, &req) {
            longpoll::Route::Answer(bytes) => self.poll_answered(io, &req, bytes),
            longpoll::Route::Wait => self.poll_wait(io, &req),
            longpoll::Route::Handshake => self.poll_handshake(io, req),
        }
    }

    /// Waits for the session's answer: no handshake deadline meanwhile, the poll's own.
    pub(super) fn poll_wait(&mut self, io: &mut Io<'_>, req: &Request) {
        let requests = match &self.phase {
            Phase::Http { requests, .. } => *requests,
            _ => 0,
        };
        let cfg = longpoll::config(&self.conn);
        let wait = cfg
            .poll_interval
            .saturating_add(self.cfg().ws.handshake_timeout);
        self.phase = Phase::Poll(Box::new(PollWait {
            deadline: deadline(io.now, wait).map(Stamp::of),
            requests,
            close: wants_close(req),
        }));
        io.rearm();
    }

    /// Writes an answer to a polling request at once.
    pub(super) fn poll_answered(&mut self, io: &mut Io<'_>, req: &Request, bytes: Vec<u8>) {
        self.poll_wait(io, req);
        self.poll_reply(io, PollReply { bytes });
    }

    /// Checks the origin, then has the authenticator and middleware (on the pool) or
    /// nobody decide; [`open_session`](Self::open_session) goes on.
    pub(super) fn poll_handshake(&mut self, io: &mut Io<'_>, req: Request) {
        let Some(cfg) = self.conn.server().ws.clone() else {
            return;
        };
        if !cfg.origins.allows(req.header("origin")) {
            let bytes = longpoll::error(403, "origin not allowed");
            return self.poll_answered(io, &req, bytes);
        }
        if cfg.auth.is_none() && cfg.middleware.is_empty() {
            return self.open_session(io, req, Ok(None));
        }
        let deadline = match &self.phase {
            Phase::Http { deadline, .. } => *deadline,
            _ => None,
        };
        self.phase = Phase::Auth(Box::new(PendingUpgrade {
            answer: Vec::new(),
            deflate: None,
            deadline,
            polling: true,
        }));
        io.pause();
        let job = crate::server::dispatch::Job::Authenticate {
            conn: self.conn.clone(),
            cfg,
            req: Box::new(req),
        };
        self.conn.server().pool.dispatch(self.conn.id().0, job);
    }

    /// Opens a session for an accepted handshake (the session answers it), or answers
    /// the refusal.
    pub(super) fn open_session(
        &mut self,
        io: &mut Io<'_>,
        req: Request,
        verdict: Result<
            Option<crate::server::websocket::Identity>,
            crate::server::websocket::Rejection,
        >,
    ) {
        let refused = match verdict {
            Err(rej) => Some(longpoll::error(rej.status, &rej.reason)),
            Ok(identity) => {
                self.phase = Phase::Http {
                    deadline: None,
                    requests: 0,
                };
                self.poll_wait(io, &req);
                longpoll::open(&self.conn, req.clone(), identity).err()
            }
        };
        if let Some(bytes) = refused {
            self.poll_answered(io, &req, bytes);
        }
    }

    /// The session answered: write it; the next kept request is read once it is out.
    pub(super) fn poll_reply(&mut self, io: &mut Io<'_>, reply: PollReply) {
        let Phase::Poll(wait) = &self.phase else {
            return; // closed or timed out meanwhile
        };
        let requests = wait.requests + 1;
        let close = wait.close || requests >= MAX_REQUESTS_PER_CONN;
        io.append(false, |out| out.extend_from_slice(&reply.bytes));
        // A polling connection lives as long as it polls: each answer renews the deadline.
        self.phase = Phase::Http {
            deadline: deadline(io.now, self.cfg().ws.handshake_timeout).map(Stamp::of),
            requests,
        };
        io.rearm();
        if close {
            return io.close(CloseReason::Local);
        }
        io.hold();
    }

    /// Input while a polling request waits: kept for later, up to one request's size.
    pub(super) fn poll_kept(&mut self, io: &mut Io<'_>, kept: usize) -> usize {
        let cfg = self.cfg();
        let limit = cfg.ws.max_request_size + longpoll::config(&self.conn).max_body;
        if kept > limit {
            self.reject(io, 400, "requests sent ahead of a pending poll");
            return kept;
        }
        0
    }
}
