//! Building a hub: configuration, routes, middleware and lifecycle callbacks.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::envelope::EnvelopeLimits;
use super::mw::{Handler, Middleware};
use super::router::Router;
use super::state::{next_group, RoomOptions, State};
use super::{Hub, HubInner};
use crate::proto::ws::CloseCode;
use crate::WsConn;

/// How long emits with acknowledgement wait, and how often they resend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckOptions {
    /// How long to wait for the acks of one attempt (default 5 s).
    pub timeout: Duration,
    /// Resends to the recipients that did not acknowledge (default 2; 3 attempts in all).
    pub retries: u32,
}

impl Default for AckOptions {
    fn default() -> Self {
        AckOptions {
            timeout: Duration::from_secs(5),
            retries: 2,
        }
    }
}

impl AckOptions {
    /// `timeout` per attempt and `retries` resends.
    pub fn new(timeout: Duration, retries: u32) -> Self {
        AckOptions { timeout, retries }
    }
}

/// Who hears that a user came online or went offline (the `presence` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PresenceScope {
    /// Members of the rooms the user is in (the default): a user who comes online is
    /// announced (`"online": true`) to each room they enter, the first time after coming
    /// online, and a user who goes offline to the rooms their last connection was in.
    #[default]
    Rooms,
    /// Every connection of the hub.
    Everyone,
    /// Nobody; [`Hub::presence`] still answers.
    Off,
}

/// The hub's configuration; every default is listed on its field.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Inbound envelope limits (default [`EnvelopeLimits::default`]: 64 KiB, depth 32).
    pub limits: EnvelopeLimits,
    /// Default acknowledgement waiting (default [`AckOptions::default`]).
    pub ack: AckOptions,
    /// How long a typing indicator lasts without being refreshed (default 5 s).
    pub typing_ttl: Duration,
    /// Who hears presence changes (default [`PresenceScope::Rooms`]).
    pub presence: PresenceScope,
    /// Options of rooms created by a first join; `None` makes joining an unknown room
    /// `not_found` (default: `Some(RoomOptions::default())`, public, removed when empty).
    pub auto_create: Option<RoomOptions>,
    /// Offline users whose last-seen time is kept (default 100,000); past it the oldest
    /// tenth is forgotten (their presence becomes [`Presence::Unknown`](super::Presence)).
    pub max_last_seen: usize,
    /// Rooms one connection may have created by joining them, among the rooms that still
    /// exist (default `Some(64)`; `None`: no cap). Past it such a join is `forbidden`;
    /// [`Hub::create_room`] is not counted.
    pub max_rooms_per_conn: Option<usize>,
    /// How often the timer thread looks for connections whose close began (a close frame
    /// came, a close was asked) while their socket lingers, and makes them leave the hub:
    /// rooms, users, presence and pending acks (default 100 ms). Each look reads one
    /// atomic per open connection under the hub's lock (about 1 ms per 100,000).
    /// `on_disconnect` still runs when the socket is closed.
    pub close_check: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            limits: EnvelopeLimits::default(),
            ack: AckOptions::default(),
            typing_ttl: Duration::from_secs(5),
            presence: PresenceScope::default(),
            auto_create: Some(RoomOptions::default()),
            max_last_seen: 100_000,
            max_rooms_per_conn: Some(64),
            close_check: Duration::from_millis(100),
        }
    }
}

impl HubConfig {
    /// Every default (see the fields).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`limits`](Self::limits).
    pub fn limits(mut self, l: EnvelopeLimits) -> Self {
        self.limits = l;
        self
    }

    /// Sets [`ack`](Self::ack).
    pub fn ack(mut self, a: AckOptions) -> Self {
        self.ack = a;
        self
    }

    /// Sets [`typing_ttl`](Self::typing_ttl).
    pub fn typing_ttl(mut self, d: Duration) -> Self {
        self.typing_ttl = d;
        self
    }

    /// Sets [`presence`](Self::presence).
    pub fn presence(mut self, p: PresenceScope) -> Self {
        self.presence = p;
        self
    }

    /// Sets [`auto_create`](Self::auto_create).
    pub fn auto_create(mut self, o: Option<RoomOptions>) -> Self {
        self.auto_create = o;
        self
    }

    /// Sets [`max_rooms_per_conn`](Self::max_rooms_per_conn).
    pub fn max_rooms_per_conn(mut self, n: Option<usize>) -> Self {
        self.max_rooms_per_conn = n;
        self
    }

    /// Sets [`close_check`](Self::close_check) (at least 1 ms).
    pub fn close_check(mut self, d: Duration) -> Self {
        self.close_check = d.max(Duration::from_millis(1));
        self
    }

    /// Sets [`max_last_seen`](Self::max_last_seen).
    pub fn max_last_seen(mut self, n: usize) -> Self {
        self.max_last_seen = n.max(1);
        self
    }
}

/// A handler with its own middleware and, optionally, the version it serves.
#[derive(Clone)]
pub struct Route {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) middleware: Vec<Arc<dyn Middleware>>,
    pub(crate) version: Option<String>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("middleware", &self.middleware.len())
            .field("version", &self.version)
            .finish()
    }
}

impl Route {
    /// A route running `handler`, for every version, with no middleware of its own.
    pub fn new(handler: impl Handler) -> Self {
        Route {
            handler: Arc::new(handler),
            middleware: Vec::new(),
            version: None,
        }
    }

    /// Adds middleware run (after the global middleware) for this route only.
    pub fn middleware(mut self, m: impl Middleware) -> Self {
        self.middleware.push(Arc::new(m));
        self
    }

    /// Serves only envelopes whose `version` is `v` (exact event names only).
    pub fn version(mut self, v: impl Into<String>) -> Self {
        self.version = Some(v.into());
        self
    }
}

pub(crate) type ConnectFn = Arc<dyn Fn(&Hub, &WsConn) + Send + Sync>;
pub(crate) type DisconnectFn = Arc<dyn Fn(&Hub, &WsConn, CloseCode, &str) + Send + Sync>;
pub(crate) type BinaryFn = Arc<dyn Fn(&Hub, &WsConn, &[u8]) + Send + Sync>;

/// Builds a [`Hub`]: see [`Hub::builder`].
#[derive(Default)]
pub struct HubBuilder {
    cfg: HubConfig,
    router: Router<Route>,
    global: Vec<Arc<dyn Middleware>>,
    on_connect: Option<ConnectFn>,
    on_disconnect: Option<DisconnectFn>,
    on_binary: Option<BinaryFn>,
    conn_mw: Vec<crate::server::websocket::ConnMiddleware>,
    sessions: Option<super::SessionConfig>,
    cluster: Option<(Arc<dyn super::cluster::Bus>, super::cluster::ClusterConfig)>,
}

impl std::fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubBuilder")
            .field("config", &self.cfg)
            .finish()
    }
}

impl HubBuilder {
    /// The configuration (default [`HubConfig::default`]).
    pub fn config(mut self, cfg: HubConfig) -> Self {
        self.cfg = cfg;
        self
    }

    /// Adds global middleware, run in registration order around every event (including
    /// unknown ones).
    pub fn middleware(mut self, m: impl Middleware) -> Self {
        self.global.push(Arc::new(m));
        self
    }

    /// Routes `pattern` (`chat:send`, `chat:*` or `*`) to `handler`.
    pub fn on(self, pattern: &str, handler: impl Handler) -> Self {
        self.route(pattern, Route::new(handler))
    }

    /// Routes `pattern` to a [`Route`] (own middleware, version).
    pub fn route(mut self, pattern: &str, route: Route) -> Self {
        let version = route.version.clone();
        self.router.insert(pattern, version.as_deref(), route);
        self
    }

    /// Called when a connection opens (on its handler thread, before its first event).
    pub fn on_connect(mut self, f: impl Fn(&Hub, &WsConn) + Send + Sync + 'static) -> Self {
        self.on_connect = Some(Arc::new(f));
        self
    }

    /// Called when a connection closed, after it left its rooms.
    pub fn on_disconnect(
        mut self,
        f: impl Fn(&Hub, &WsConn, CloseCode, &str) + Send + Sync + 'static,
    ) -> Self {
        self.on_disconnect = Some(Arc::new(f));
        self
    }

    /// Adds a connection-level middleware (Socket.IO's `io.use`): it runs on the handler
    /// pool at the WebSocket upgrade, after the authenticator, sees the request and the
    /// identity, and may refuse the connection with a status and reason. It takes effect
    /// on servers configured through [`Hub::server_config`](super::Hub::server_config).
    pub fn use_connection(
        mut self,
        f: impl Fn(
                &crate::proto::http::Request,
                Option<&crate::Identity>,
            ) -> Result<(), crate::Rejection>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.conn_mw.push(Arc::new(f));
        self
    }

    /// Enables sessions that survive reconnects (default: off). A client asks for one in
    /// its upgrade request (`?sl_session=1`, or `sl_sid`/`sl_token`/`sl_seq` to resume;
    /// see `docs/PROTOCOL.md`, "Sessions"); clients that do not ask are served as before.
    /// On a session connection every data message the hub sends is numbered and kept until
    /// the client acknowledges it; the session keeps its connection id, rooms and identity
    /// across reconnects within [`window`](super::SessionConfig::window), and its pending
    /// acks wait for it. Send to session connections through the hub
    /// ([`Ctx::emit`](super::Ctx::emit), [`Hub::to_conn`](super::Hub::to_conn)…), not
    /// through [`WsConn::send_text`]: a message sent around the hub is not numbered and
    /// breaks the client's count.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use sockloop::hub::{Hub, SessionConfig};
    /// let hub = Hub::builder()
    ///     .sessions(SessionConfig::new().window(Duration::from_secs(60)))
    ///     .build();
    /// assert_eq!(hub.stats().sessions, 0);
    /// ```
    pub fn sessions(mut self, cfg: super::SessionConfig) -> Self {
        self.sessions = Some(cfg);
        self
    }

    /// Joins a cluster through `bus` (default: none, a single node). Every emit to a room,
    /// a user, users or everyone then also reaches the other nodes' members (published once,
    /// framed once on each node); rooms, presence and user lists are the cluster's; a user
    /// is disconnected everywhere; sessions resume on any node (see
    /// [`cluster`](super::cluster)).
    ///
    /// # Examples
    /// ```
    /// use sockloop::hub::cluster::{ClusterConfig, LocalBus};
    /// use sockloop::hub::Hub;
    /// let bus = LocalBus::new();
    /// let a = Hub::builder().cluster(bus.handle(), ClusterConfig::new("a")).build();
    /// let b = Hub::builder().cluster(bus.handle(), ClusterConfig::new("b")).build();
    /// # let _ = (a, b);
    /// ```
    pub fn cluster(
        mut self,
        bus: impl super::cluster::Bus,
        cfg: super::cluster::ClusterConfig,
    ) -> Self {
        self.cluster = Some((Arc::new(bus), cfg));
        self
    }

    /// Receives binary frames untouched (default: ignored).
    pub fn on_binary(mut self, f: impl Fn(&Hub, &WsConn, &[u8]) + Send + Sync + 'static) -> Self {
        self.on_binary = Some(Arc::new(f));
        self
    }

    /// The hub. Starts its one timer thread (typing indicators, ack resends and timeouts,
    /// the close check).
    pub fn build(self) -> Hub {
        let check = self.cfg.close_check;
        let state = State::default();
        let routes = state.routes.clone();
        let inner = Arc::new_cyclic(|weak| HubInner {
            timer: super::timer::spawn(weak.clone(), check),
            cfg: self.cfg,
            router: self.router,
            global: self.global,
            on_connect: self.on_connect,
            on_disconnect: self.on_disconnect,
            on_binary: self.on_binary,
            conn_mw: self.conn_mw,
            state: Mutex::new(state),
            routes,
            bcast: OnceLock::new(),
            all: next_group(),
            acks: Mutex::default(),
            next_ack: AtomicU64::new(1),
            stats: Default::default(),
            subs: Default::default(),
            sessions: super::session::Sessions::new(self.sessions),
            cluster: self
                .cluster
                .map(|(bus, cfg)| Arc::new(super::cluster::node::ClusterNode::new(bus, cfg))),
        });
        if let Some(c) = &inner.cluster {
            super::cluster::node::start(Arc::downgrade(&inner), c);
        }
        Hub { inner }
    }
}
