//! The WebSocket server API: configuration of the upgrade (origins, authenticator, HTTP
//! hook, per-IP cap), the handler model and the [`WsConn`] handle.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::base::SendStatus;
use crate::proto::http::{Request, Response};
use crate::proto::ws::{CloseCode, OpCode, WsConfig};
use crate::reactor::ConnCmd;
use crate::server::handle::Conn;
use crate::Error;

/// Who a connection belongs to, as decided by the authenticator at upgrade time.
///
/// # Examples
/// ```
/// use serde_json::json;
/// let id = sockloop::Identity::user("ann").tag("admin").meta("plan", "pro").meta("seats", 3);
/// assert_eq!(id.meta["seats"], json!(3));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The user id (several connections may share one: devices).
    pub user: String,
    /// Tags for grouping connections (roles, plans, regions…).
    pub tags: Vec<String>,
    /// Free-form attributes from the authenticator: any JSON values.
    pub meta: BTreeMap<String, serde_json::Value>,
}

impl Identity {
    /// An identity for `user` with no tags or attributes.
    pub fn user(user: impl Into<String>) -> Self {
        Identity {
            user: user.into(),
            ..Default::default()
        }
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets an attribute (a later value for the same key replaces the earlier).
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }
}

/// An authenticator's refusal: the HTTP status (and a short reason) sent instead of 101.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status, e.g. 401 or 403.
    pub status: u16,
    /// Short text for the response body.
    pub reason: String,
}

impl Rejection {
    /// A rejection with this status and reason.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Rejection {
            status,
            reason: reason.into(),
        }
    }
}

/// A predicate over the `Origin` header (`None` when the request has none).
pub type OriginPredicate = Arc<dyn Fn(Option<&str>) -> bool + Send + Sync>;

/// Which `Origin` headers may open a WebSocket.
#[derive(Clone, Default)]
pub enum Origins {
    /// Any origin, and requests without one (the default: non-browser clients send none;
    /// set a list for browser-facing servers to stop cross-site WebSocket hijacking).
    #[default]
    Any,
    /// Only these exact origins (e.g. `https://example.com`); a request without `Origin`
    /// (not from a browser) is allowed.
    List(Vec<String>),
    /// A predicate over the header (`None` when absent).
    Predicate(OriginPredicate),
}

impl Origins {
    pub(crate) fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (Origins::Any, _) => true,
            (Origins::List(_), None) => true,
            (Origins::List(l), Some(o)) => l.iter().any(|x| x.eq_ignore_ascii_case(o)),
            (Origins::Predicate(f), o) => f(o),
        }
    }
}

impl fmt::Debug for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origins::Any => f.write_str("Any"),
            Origins::List(l) => write!(f, "List({l:?})"),
            Origins::Predicate(_) => f.write_str("Predicate(..)"),
        }
    }
}

/// Decides at upgrade time whether a request may open a WebSocket, and who it is.
/// Runs on the handler pool: it may block (the upgrade waits, within the handshake timeout).
pub type Authenticator = Arc<dyn Fn(&Request) -> Result<Option<Identity>, Rejection> + Send + Sync>;

/// A connection-level middleware: the upgrade request and the authenticator's identity in,
/// `Ok(())` or a rejection out (see [`WsServerConfig::use_connection`]).
pub type ConnMiddleware =
    Arc<dyn Fn(&Request, Option<&Identity>) -> Result<(), Rejection> + Send + Sync>;

/// Answers plain HTTP requests on the WebSocket port (404 when none is set). Runs on the
/// poller: it must be quick and must not block.
pub type HttpHook = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Configuration of a WebSocket server: the protocol limits ([`WsConfig`]) and the upgrade.
#[derive(Clone, Default)]
pub struct WsServerConfig {
    pub(crate) ws: WsConfig,
    pub(crate) origins: Origins,
    pub(crate) auth: Option<Authenticator>,
    pub(crate) middleware: Vec<ConnMiddleware>,
    pub(crate) http: Option<HttpHook>,
    pub(crate) max_per_ip: Option<usize>,
    pub(crate) path: Option<String>,
    pub(crate) polling: Option<crate::server::config::PollingConfig>,
}

impl fmt::Debug for WsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsServerConfig")
            .field("origins", &self.origins)
            .field("max_per_ip", &self.max_per_ip)
            .field("path", &self.path)
            .field("polling", &self.polling)
            .finish()
    }
}

impl WsServerConfig {
    /// Every default: see [`WsConfig`] for the protocol's; any origin; no authenticator;
    /// 404 for plain HTTP; no per-IP cap; upgrades on every path.
    pub fn new() -> Self {
        Self::default()
    }

    /// Protocol limits, deflate, heartbeats and timeouts.
    pub fn ws(mut self, ws: WsConfig) -> Self {
        self.ws = ws;
        self
    }

    /// Allowed origins (default [`Origins::Any`]); others get 403.
    pub fn origins(mut self, origins: Origins) -> Self {
        self.origins = origins;
        self
    }

    /// Adds a connection-level middleware (like Socket.IO's `io.use`): after the
    /// authenticator, on the handler pool (so it may block too), each middleware sees the
    /// upgrade request and the identity the authenticator gave, in the order they were
    /// added; the first to return a [`Rejection`] answers the upgrade with its status and
    /// reason (which the blocking client reports as
    /// [`WsError::Refused`](crate::ws::WsError::Refused)).
    ///
    /// # Examples
    /// ```
    /// use sockloop::{Rejection, WsServerConfig};
    /// let cfg = WsServerConfig::new().use_connection(|req, identity| {
    ///     match (identity, req.header("x-tenant")) {
    ///         (Some(_), Some(_)) => Ok(()),
    ///         _ => Err(Rejection::new(403, "tenant required")),
    ///     }
    /// });
    /// # let _ = cfg;
    /// ```
    pub fn use_connection(
        mut self,
        f: impl Fn(&Request, Option<&Identity>) -> Result<(), Rejection> + Send + Sync + 'static,
    ) -> Self {
        self.middleware.push(Arc::new(f));
        self
    }

    /// The authenticator: sees method, path, query, headers, cookies and peer address;
    /// returns the identity kept on the connection, or a rejection status and reason.
    ///
    /// It runs on the runtime's handler pool, not on a poller, so it may block (ask a
    /// database or an HTTP service): the connection waits, reading paused, and the upgrade
    /// completes when it returns — within the handshake timeout, or the connection is
    /// closed. Other connections' I/O goes on meanwhile. A panic in it answers 500.
    pub fn authenticator(
        mut self,
        f: impl Fn(&Request) -> Result<Option<Identity>, Rejection> + Send + Sync + 'static,
    ) -> Self {
        self.auth = Some(Arc::new(f));
        self
    }

    /// The plain HTTP hook for non-upgrade requests on the same port.
    pub fn http(mut self, f: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        self.http = Some(Arc::new(f));
        self
    }

    /// At most `n` open WebSockets per client IP address (default: no cap); more get 429.
    pub fn max_per_ip(mut self, n: Option<usize>) -> Self {
        self.max_per_ip = n;
        self
    }

    /// Upgrade only on this path (default: any); upgrade requests elsewhere go to the HTTP
    /// hook.
    pub fn path(mut self, path: Option<String>) -> Self {
        self.path = path;
        self
    }

    /// Serves HTTP long-polling on the WebSocket path too (default `None`: off): requests
    /// with `transport=polling` in the query open and drive sessions that handlers see as
    /// WebSocket connections (docs/PROTOCOL.md, "Long-polling transport"). The origin
    /// check, authenticator and connection middleware run at the handshake.
    pub fn polling(mut self, polling: Option<crate::server::config::PollingConfig>) -> Self {
        self.polling = polling;
        self
    }

    /// The protocol configuration.
    pub fn ws_config(&self) -> &WsConfig {
        &self.ws
    }
}

/// A data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsMessage<'a> {
    /// A text message (valid UTF-8).
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// Handles one WebSocket connection's events; every method has a default.
///
/// Runs inline on the poller or on a handler thread, per the server's
/// [`Dispatch`](crate::Dispatch). A panic closes only this connection, with 1011.
pub trait WsHandler: Send + 'static {
    /// The upgrade succeeded; `req` is the upgrade request.
    fn on_open(&mut self, ws: &WsConn, req: &Request) {
        let _ = (ws, req);
    }
    /// A text message arrived.
    fn on_text(&mut self, ws: &WsConn, text: &str) {
        let _ = (ws, text);
    }
    /// A binary message arrived.
    fn on_binary(&mut self, ws: &WsConn, data: &[u8]) {
        let _ = (ws, data);
    }
    /// The outbound queue emptied after the socket had pushed back.
    fn on_drained(&mut self, ws: &WsConn) {
        let _ = ws;
    }
    /// The connection closed, with the close code exchanged (1006 when the connection
    /// ended without a close frame). No more events follow.
    fn on_close(&mut self, ws: &WsConn, code: CloseCode, reason: &str) {
        let _ = (ws, code, reason);
    }
    /// A protocol error or I/O error; the connection closes after it.
    fn on_error(&mut self, ws: &WsConn, error: &Error) {
        let _ = (ws, error);
    }
}

/// Creates a [`WsHandler`] per connection. Any `Fn(&WsConn, &Request) -> H` is one.
pub trait WsFactory: Send + Sync + 'static {
    /// A handler for this connection.
    fn create(&self, ws: &WsConn, req: &Request) -> Box<dyn WsHandler>;
}

impl<F, H> WsFactory for F
where
    F: Fn(&WsConn, &Request) -> H + Send + Sync + 'static,
    H: WsHandler,
{
    fn create(&self, ws: &WsConn, req: &Request) -> Box<dyn WsHandler> {
        Box::new(self(ws, req))
    }
}

/// A WebSocket handler made of one closure for data messages.
#[derive(Clone)]
pub struct OnMessage<F>(F);

impl<F> WsHandler for OnMessage<F>
where
    F: FnMut(&WsConn, WsMessage<'_>) + Send + 'static,
{
    fn on_text(&mut self, ws: &WsConn, text: &str) {
        (self.0)(ws, WsMessage::Text(text))
    }
    fn on_binary(&mut self, ws: &WsConn, data: &[u8]) {
        (self.0)(ws, WsMessage::Binary(data))
    }
}

/// A factory whose handlers call `f` for every data message. The factory is `Clone`, so one
/// closure can serve several listeners.
///
/// # Examples
/// ```
/// use sockloop::{WsConn, WsMessage};
/// let echo = sockloop::on_message(|ws: &WsConn, m: WsMessage<'_>| {
///     let _ = match m {
///         WsMessage::Text(t) => ws.send_text(t),
///         WsMessage::Binary(b) => ws.send_binary(b),
///     };
/// });
/// # let _ = echo;
/// ```
pub fn on_message<F>(f: F) -> impl WsFactory + Clone
where
    F: FnMut(&WsConn, WsMessage<'_>) + Clone + Send + Sync + 'static,
{
    move |_: &WsConn, _: &Request| OnMessage(f.clone())
}

/// A cloneable `Send + Sync` handle to one WebSocket connection. Harmless after close:
/// sends return [`SendStatus::Closed`].
#[derive(Clone)]
#[repr(transparent)]
pub struct WsConn {
    pub(crate) conn: Conn,
}

impl fmt::Debug for WsConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WsConn({})", self.conn.id())
    }
}

impl WsConn {
    /// The underlying connection handle (id, addresses, queue figures).
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// The connection's id.
    pub fn id(&self) -> crate::ConnId {
        self.conn.id()
    }

    /// The peer's address (returned by value: see [`Conn::peer_addr`]).
    pub fn peer_addr(&self) -> crate::Addr {
        self.conn.peer_addr()
    }

    /// The identity the authenticator gave this connection.
    pub fn identity(&self) -> Option<&Identity> {
        self.conn.inner.ext.cold().and_then(|c| c.identity.get())
    }

    /// Whether the connection is open.
    pub fn is_open(&self) -> bool {
        self.conn.is_open()
    }

    /// Sends a text message (framed, and compressed when negotiated, on the poller).
    pub fn send_text(&self, text: impl AsRef<str>) -> SendStatus {
        self.send(OpCode::Text, text.as_ref().as_bytes())
    }

    /// Sends a binary message (anything that is bytes: `&[u8]`, `Vec<u8>`, `[u8; N]`…).
    pub fn send_binary(&self, data: impl AsRef<[u8]>) -> SendStatus {
        self.send(OpCode::Binary, data.as_ref())
    }

    /// Sends a ping (payload cut to 125 bytes).
    pub fn ping(&self, payload: &[u8]) -> SendStatus {
        self.send(OpCode::Ping, &payload[..payload.len().min(125)])
    }

    fn send(&self, op: OpCode, data: &[u8]) -> SendStatus {
        self.conn.send_op(crate::reactor::local::Kind::Ws(op), data)
    }

    /// Sends a message framed once for many recipients (see
    /// [`Broadcaster::frames_text`](crate::Broadcaster::frames_text)).
    pub fn send_frames(&self, frames: &crate::Frames) -> SendStatus {
        self.conn.send_frames(&frames.inner)
    }

    /// Adds this connection to a fan-out group (applied on its poller; left automatically
    /// on close).
    pub fn join_group(&self, group: crate::GroupId) {
        self.conn.inner.command(ConnCmd::JoinGroup(group));
    }

    /// Removes this connection from a fan-out group.
    pub fn leave_group(&self, group: crate::GroupId) {
        self.conn.inner.command(ConnCmd::LeaveGroup(group));
    }

    /// Starts the closing handshake with `code` and `reason`; the connection closes when
    /// the peer answers or after the close timeout. Harmless on a closed connection.
    pub fn close(&self, code: CloseCode, reason: &str) {
        if self.conn.begin_closing() {
            let reason = reason.to_owned();
            self.conn.inner.command(ConnCmd::CloseWith(code, reason));
        }
    }
}
