//! HTTP long-polling as a transport (docs/PROTOCOL.md, "Long-polling transport").
//!
//! A long-polling session is a *virtual connection*: a socket-less slot on one poller
//! ([`crate::reactor::stream::new_virtual`]) whose driver is a [`session::Session`]. Its
//! `Conn` handle is an ordinary [`Conn`], so handlers, rooms, broadcast groups, stats and
//! observers cannot tell it from a WebSocket. The HTTP requests that carry it arrive on
//! ordinary connections of the WebSocket port (their driver is the WebSocket driver, the
//! *carrier*), on any poller: the carrier parses a request, finds the session by its id
//! ([`Sessions`]) and hands the request to the session's slot by a command
//! ([`PollRequest`]); the session answers by sending the response bytes to the carrier's
//! handle ([`PollReply`]). Commands both ways: no lock on the data path, no socket moves.
//!
//! Outbound messages stay in the session, counted against its queue bound like a
//! connection's queue, until the client acknowledges them on its next GET; a response
//! lost on the way is sent again.

pub(crate) mod session;
pub(crate) mod wire;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::proto::http::{Request, Response};
use crate::reactor::{ConnCmd, Link};
use crate::server::config::PollingConfig;
use crate::server::dispatch::{next_conn_id, HandlerSlot};
use crate::server::handle::{Conn, ConnInfo, ConnShared};
use crate::server::websocket::Identity;

/// A request for a session, from the carrier connection it arrived on.
pub(crate) enum PollRequest {
    /// A GET: hold it until there is something to send (or the poll interval passes);
    /// `ack` is the client's cumulative acknowledgement (the last sequence number it has);
    /// `max` caps the batch's payload bytes below the server's own cap.
    Get {
        carrier: Conn,
        ack: u64,
        max: Option<u64>,
    },
    /// A POST of records; `seq` numbers the client's batches (a repeat is answered, not
    /// delivered again).
    Post {
        carrier: Conn,
        seq: Option<u64>,
        body: Vec<u8>,
    },
}

/// The session's answer to a carrier: a whole HTTP response.
pub(crate) struct PollReply {
    pub(crate) bytes: Vec<u8>,
}

/// Sends `bytes` to a carrier (dropped quietly if it is gone: nothing is lost, the
/// records stay unacknowledged in the session).
pub(crate) fn reply(carrier: &Conn, bytes: Vec<u8>) {
    let reply = Box::new(PollReply { bytes });
    carrier.inner.command(ConnCmd::Driver(reply));
}

/// A response with this status, content type and body (never cached).
pub(crate) fn response(status: u16, ctype: &str, body: impl Into<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    Response::new(status)
        .header("Content-Type", ctype)
        .header("Cache-Control", "no-store")
        .body(body)
        .write_to(&mut out);
    out
}

/// A plain-text error response.
pub(crate) fn error(status: u16, text: &str) -> Vec<u8> {
    response(status, "text/plain; charset=utf-8", format!("{text}\n"))
}

/// The open sessions of one server, by id.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<Box<str>, Conn>>,
}

impl Sessions {
    fn get(&self, sid: &str) -> Option<Conn> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(sid).cloned()
    }

    fn insert(&self, sid: &str, conn: Conn) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(sid.into(), conn);
    }

    pub(crate) fn remove(&self, sid: &str) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(sid);
    }
}

/// What the carrier does with a polling request.
pub(crate) enum Route {
    /// Answer with these bytes now (an error); the connection stays open.
    Answer(Vec<u8>),
    /// A handshake: check the origin and run the authenticator, as for an upgrade, then
    /// [`open`].
    Handshake,
    /// Handed to its session: wait for the [`PollReply`].
    Wait,
}

/// Whether a request on the WebSocket path is a long-polling one.
pub(crate) fn is_polling(req: &Request) -> bool {
    req.query_param("transport") == Some("polling")
}

/// Routes a polling request: a handshake, or a GET or POST for a known session.
pub(crate) fn route(carrier: &Conn, req: &Request) -> Route {
    let Some(sid) = req.query_param("sid") else {
        return match req.method() {
            "GET" => Route::Handshake,
            _ => Route::Answer(error(405, "a handshake is a GET without sid")),
        };
    };
    let server = carrier.server();
    let session = server
        .polls
        .get(sid)
        .filter(|s| s.inner.state.load(Ordering::Acquire) != crate::reactor::STATE_CLOSED);
    let Some(session) = session else {
        let body = serde_json::json!({"error": "unknown session", "sid": sid});
        return Route::Answer(response(400, "application/json", body.to_string()));
    };
    let num = |name: &str| req.query_param(name).map(|v| v.parse::<u64>().ok());
    let request = match req.method() {
        "GET" => match (num("ack"), num("max")) {
            (Some(None), _) => return Route::Answer(error(400, "ack must be a decimal number")),
            (_, Some(None)) => return Route::Answer(error(400, "max must be a decimal number")),
            (ack, max) => PollRequest::Get {
                carrier: carrier.clone(),
                ack: ack.flatten().unwrap_or(0),
                max: max.flatten(),
            },
        },
        "POST" => match num("seq") {
            Some(None) => return Route::Answer(error(400, "seq must be a decimal number")),
            seq => PollRequest::Post {
                carrier: carrier.clone(),
                seq: seq.flatten(),
                body: req.body().to_vec(),
            },
        },
        _ => return Route::Answer(error(405, "long-polling takes GET and POST")),
    };
    session.inner.command(ConnCmd::Driver(Box::new(request)));
    Route::Wait
}

/// A new session id: 128 bits from SipHash keyed with the process's random keys (std's
/// `RandomState`) over a counter and the clock; unguessable to a peer.
fn new_sid() -> String {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut sid = String::with_capacity(32);
    for half in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u8(half);
        h.write_u128(t);
        sid.push_str(&format!("{:016x}", h.finish()));
    }
    sid
}

/// Opens a session for an accepted handshake `req` (the authenticator gave `identity`):
/// counts it as a connection and places its virtual slot on the carrier's poller, which
/// answers the handshake. `Err` holds the refusal to send instead (503, 429).
pub(crate) fn open(
    carrier: &Conn,
    req: Request,
    identity: Option<Identity>,
) -> Result<(), Vec<u8>> {
    let server = carrier.server().clone();
    let counters = &server.policy.counters;
    if server.draining.load(Ordering::Acquire) {
        return Err(error(503, "the server is shutting down"));
    }
    let cap = server.ws.as_ref().and_then(|w| w.max_per_ip);
    // Counted like an accepted socket: accepted, and rejected and closed at the limit.
    counters.accepted.fetch_add(1, Ordering::Relaxed);
    if counters.open.fetch_add(1, Ordering::AcqRel) >= server.config.max_connections {
        counters.open.fetch_sub(1, Ordering::AcqRel);
        counters.rejected.fetch_add(1, Ordering::Relaxed);
        counters.closed.fetch_add(1, Ordering::Relaxed);
        return Err(error(503, "the server is at its connection limit"));
    }
    if !server.ws_admit(carrier.peer_addr(), cap) {
        counters.closed.fetch_add(1, Ordering::Relaxed);
        server.conn_gone();
        return Err(error(429, "too many connections from this address"));
    }
    let carrier = carrier.clone();
    let poller = carrier.inner.poller.clone();
    let make = move |place| {
        let id = next_conn_id();
        let peer = carrier.peer_addr().clone();
        let span = crate::server::trace::conn_span(id, &peer);
        let info = ConnInfo::new(id, span, server.clone(), peer, None, None);
        if let Some(id) = identity {
            let _ = info.cold_mut().identity.set(id);
        }
        let link: Arc<ConnShared> = Arc::new(Link::new(place, server.policy.clone(), info));
        let conn = Conn { inner: link };
        let sid = new_sid();
        server.polls.insert(&sid, conn.clone());
        let handler = HandlerSlot::new(server.inline(), &server.pool);
        let inner: Arc<Link> = conn.inner.clone();
        let driver = session::Session::new(conn, handler, sid, carrier, req);
        Some(crate::reactor::stream::new_virtual(inner, driver))
    };
    poller.command(crate::reactor::Command::AddVirtual(Box::new(make)));
    Ok(())
}

/// The server's long-polling configuration (sessions exist only where it is set).
pub(crate) fn config(conn: &Conn) -> &PollingConfig {
    static DEFAULT: std::sync::OnceLock<PollingConfig> = std::sync::OnceLock::new();
    match conn.server().ws.as_ref().and_then(|w| w.polling.as_ref()) {
        Some(c) => c,
        None => DEFAULT.get_or_init(PollingConfig::default),
    }
}
