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
use crate::server::dispatch::next_conn_id;
use crate::server::handle::{Conn, ConnInfo, ConnShared};
use crate::server::websocket::Identity;
use crate::server::ServerShared;

/// A request for a session, from the carrier connection it arrived on.
pub(crate) enum PollRequest {
    /// A GET: hold it until there is something to send (or the poll interval passes);
    /// `ack` is the client's cumulative acknowledgement (the last sequence number it has);
    /// `max` caps the batch's payload bytes below the server's own cap.
    Get {
        carrier: Carrier,
        ack: u64,
        max: Option<u64>,
    },
    /// A POST of records; `seq` numbers the client's batches (a repeat is answered, not
    /// delivered again).
    Post {
        carrier: Carrier,
        seq: Option<u64>,
        body: Vec<u8>,
    },
}

/// The session's answer to a carrier: a whole HTTP response.
pub(crate) struct PollReply {
    pub(crate) bytes: Vec<u8>,
}

/// Where the answer to a polling request goes: the connection it came on, or — for a
/// request another node forwarded (a cluster, where polling needs no sticky balancer) — a
/// responder that carries the answer back there.
#[derive(Clone)]
pub(crate) enum Carrier {
    /// A connection of this server.
    Conn(Conn),
    /// A request forwarded from elsewhere: answered once.
    Remote(Arc<Responder>),
}

/// Carries one answer back to where a forwarded request came from.
pub(crate) struct Responder(Mutex<Option<Answer>>);

/// What carries one answer back.
type Answer = Box<dyn FnOnce(Vec<u8>) + Send>;

impl Responder {
    pub(crate) fn new(f: impl FnOnce(Vec<u8>) + Send + 'static) -> Arc<Self> {
        Arc::new(Responder(Mutex::new(Some(Box::new(f)))))
    }

    fn take(&self) -> Option<Answer> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Carrier {
    pub(crate) fn is_open(&self) -> bool {
        match self {
            Carrier::Conn(c) => c.is_open(),
            Carrier::Remote(r) => r.0.lock().unwrap_or_else(|e| e.into_inner()).is_some(),
        }
    }
}

/// What can take an answer: a carrier connection, or a [`Carrier`].
pub(crate) trait Replier {
    /// Sends the answer (dropped quietly if the carrier is gone: nothing is lost, the
    /// records stay unacknowledged in the session).
    fn send_reply(&self, bytes: Vec<u8>);
}

impl Replier for Conn {
    fn send_reply(&self, bytes: Vec<u8>) {
        let reply = Box::new(PollReply { bytes });
        self.inner.command(ConnCmd::Driver(reply));
    }
}

impl Replier for Carrier {
    fn send_reply(&self, bytes: Vec<u8>) {
        match self {
            Carrier::Conn(c) => c.send_reply(bytes),
            Carrier::Remote(r) => {
                if let Some(f) = r.take() {
                    f(bytes);
                }
            }
        }
    }
}

/// Sends `bytes` to a carrier.
pub(crate) fn reply(carrier: &impl Replier, bytes: Vec<u8>) {
    carrier.send_reply(bytes);
}

/// A polling request as it crosses nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Forwarded {
    /// A GET: acknowledge up to `ack`, batch at most `max` payload bytes.
    Get { ack: u64, max: Option<u64> },
    /// A POST of records.
    Post { seq: Option<u64>, body: Vec<u8> },
}

/// Hands a request for session `sid` on another node to that node: true when it took it
/// (its answer comes to the carrier later), false when `sid` is nobody's.
pub(crate) type Forwarder = Arc<dyn Fn(&str, Forwarded, Carrier) -> bool + Send + Sync>;

/// Hands a forwarded request to session `sid` of this server; false when it has none (then
/// nothing was answered).
pub(crate) fn inject(server: &ServerShared, sid: &str, req: Forwarded, carrier: Carrier) -> bool {
    let Some(session) = server.polls.get(sid) else {
        return false;
    };
    let request = match req {
        Forwarded::Get { ack, max } => PollRequest::Get { carrier, ack, max },
        Forwarded::Post { seq, body } => PollRequest::Post { carrier, seq, body },
    };
    session.inner.command(ConnCmd::Driver(Box::new(request)));
    true
}

/// The answer to a request for a session nobody has.
pub(crate) fn unknown_session(sid: &str) -> Vec<u8> {
    let body = serde_json::json!({"error": "unknown session", "sid": sid});
    response(400, "application/json", body.to_string())
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
    /// Put before every new session id (a cluster node's name, so other nodes can forward
    /// its requests).
    pub(crate) prefix: std::sync::OnceLock<String>,
    /// Where requests for sessions this server does not have go (a cluster's other nodes).
    pub(crate) forward: std::sync::OnceLock<Forwarder>,
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
    let num = |name: &str| req.query_param(name).map(|v| v.parse::<u64>().ok());
    let Some(session) = session else {
        return forward(carrier, sid, req, num);
    };
    let request = match req.method() {
        "GET" => match (num("ack"), num("max")) {
            (Some(None), _) => return Route::Answer(error(400, "ack must be a decimal number")),
            (_, Some(None)) => return Route::Answer(error(400, "max must be a decimal number")),
            (ack, max) => PollRequest::Get {
                carrier: Carrier::Conn(carrier.clone()),
                ack: ack.flatten().unwrap_or(0),
                max: max.flatten(),
            },
        },
        "POST" => match num("seq") {
            Some(None) => return Route::Answer(error(400, "seq must be a decimal number")),
            seq => PollRequest::Post {
                carrier: Carrier::Conn(carrier.clone()),
                seq: seq.flatten(),
                body: req.body().to_vec(),
            },
        },
        _ => return Route::Answer(error(405, "long-polling takes GET and POST")),
    };
    session.inner.command(ConnCmd::Driver(Box::new(request)));
    Route::Wait
}

/// A request for a session this server does not have: to its node (a cluster), or 400.
fn forward(
    carrier: &Conn,
    sid: &str,
    req: &Request,
    num: impl Fn(&str) -> Option<Option<u64>>,
) -> Route {
    let server = carrier.server();
    let Some(f) = server.polls.forward.get() else {
        return Route::Answer(unknown_session(sid));
    };
    let fwd = match req.method() {
        "GET" => match (num("ack"), num("max")) {
            (Some(None), _) | (_, Some(None)) => {
                return Route::Answer(error(400, "ack and max must be decimal numbers"))
            }
            (ack, max) => Forwarded::Get {
                ack: ack.flatten().unwrap_or(0),
                max: max.flatten(),
            },
        },
        "POST" => match num("seq") {
            Some(None) => return Route::Answer(error(400, "seq must be a decimal number")),
            seq => Forwarded::Post {
                seq: seq.flatten(),
                body: req.body().to_vec(),
            },
        },
        _ => return Route::Answer(error(405, "long-polling takes GET and POST")),
    };
    match f(sid, fwd, Carrier::Conn(carrier.clone())) {
        true => Route::Wait,
        false => Route::Answer(unknown_session(sid)),
    }
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
    if !server.ws_admit(&carrier.peer_addr(), cap) {
        counters.closed.fetch_add(1, Ordering::Relaxed);
        server.conn_gone();
        return Err(error(429, "too many connections from this address"));
    }
    let carrier = carrier.clone();
    let poller = carrier.inner.poller.clone();
    let make = move |place| {
        let id = next_conn_id();
        let peer = carrier.peer_addr();
        let span = crate::server::trace::conn_span(id, &peer);
        let info = ConnInfo::new(id, span, server.clone(), peer, None, None);
        if let Some(id) = identity {
            let _ = info.cold_mut().identity.set(id);
        }
        let link: Arc<ConnShared> = Arc::new(Link::new(place, info));
        let conn = Conn { inner: link };
        let prefix = server.polls.prefix.get().map_or("", String::as_str);
        let sid = format!("{prefix}{}", new_sid());
        server.polls.insert(&sid, conn.clone());
        let inner: Arc<Link> = conn.inner.clone();
        let driver = session::Session::new(conn, sid, carrier, req);
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
