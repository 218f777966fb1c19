//! The hub: JSON envelopes, a router with middleware, rooms, identity and presence, and
//! delivery with acknowledgements, on top of the WebSocket server.
//!
//! The wire protocol is described in `docs/PROTOCOL.md`. A [`Hub`] is built once
//! ([`Hub::builder`]), serves one WebSocket server through [`Hub::factory`], and is
//! [attached](Hub::attach) to it so room and broadcast messages are framed once and fanned
//! out by the pollers.
//!
//! # Examples
//! ```no_run
//! use std::time::Duration;
//! use serde::Deserialize;
//! use serde_json::json;
//! use sockloop::hub::{mw, Ctx, Hub, RateLimit};
//! use sockloop::{Listen, Runtime, WsServerConfig};
//!
//! #[derive(Deserialize, serde::Serialize)]
//! struct Msg { room: String, text: String }
//!
//! let hub = Hub::builder()
//!     .middleware(mw::recover())
//!     .middleware(mw::rate_limit(RateLimit::per_conn(20, Duration::from_secs(1))))
//!     .on("room:join", |ctx: &mut Ctx| {
//!         let room: String = ctx.data()?;
//!         ctx.join(&room)?;
//!         ctx.ack(&json!({"ok": true}))
//!     })
//!     .on("chat:send", |ctx: &mut Ctx| {
//!         let m: Msg = ctx.data()?;
//!         ctx.hub().to_room(&m.room).except(ctx.conn_id()).emit("chat:message", &m);
//!         ctx.ack(&json!({"ok": true}))
//!     })
//!     .build();
//! let rt = Runtime::new()?;
//! let server = rt
//!     .serve(Listen::tcp("127.0.0.1:9000"))
//!     .websocket(WsServerConfig::new(), hub.factory())?;
//! hub.attach(&server);
//! # Ok::<(), sockloop::Error>(())
//! ```

mod ack;
mod api;
pub mod browser;
mod builder;
pub mod cluster;
mod conn;
mod ctx;
mod delivery;
mod envelope;
mod error;
pub mod mw;
mod presence;
mod rooms;
mod router;
mod routes;
mod session;
mod state;
mod subscribe;
mod system;
mod timer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};

pub use ack::{AckHandle, AckStatus, DeliveryReport};

/// The event name global middleware sees for an envelope that could not be read (not JSON,
/// too large, too deep, no event): it runs through the global chain so that
/// [`mw::rate_limit`] counts it; [`mw::auth_required`] and [`mw::validate`] let it pass, and
/// the sender gets its `bad_envelope` / `too_large` error (or the error of a middleware that
/// refused it first). No route ever sees it.
pub const INVALID_EVENT: &str = "$invalid";
pub use builder::{AckOptions, HubBuilder, HubConfig, PresenceScope, Route};
pub use ctx::Ctx;
pub use delivery::Target;
pub use envelope::{encode, encode_error, parse_envelope, Envelope, EnvelopeLimits, Refused};
pub use error::{ErrorCode, HubError};
pub use mw::{Handler, Middleware, Next, RateLimit, Scope};
pub use session::{DetachedPresence, SessionConfig};
pub use state::{Cleanup, ConnInfo, Presence, Role, RoomEvents, RoomInfo, RoomOptions, RoomPolicy};
pub use subscribe::{RoomEvent, SubscriptionId};

use crate::{Broadcaster, GroupId};

/// Counters of a hub; see [`Hub::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Open connections (sessions waiting for a resume included).
    pub connections: usize,
    /// Distinct users online.
    pub users: usize,
    /// Rooms.
    pub rooms: usize,
    /// Text and binary messages received.
    pub messages_in: u64,
    /// Messages queued for connections (a broadcast counts once per recipient).
    pub messages_out: u64,
    /// Messages refused by drop policies (or larger than a connection's whole queue bound).
    pub dropped: u64,
    /// Older messages thrown out of connections' queues to make room (the drop-oldest
    /// policy), as the hub's server counts them
    /// ([`ServerStats::evicted`](crate::ServerStats::evicted)).
    pub evicted: u64,
    /// `error` events sent.
    pub errors: u64,
    /// Recipients whose acknowledgement is awaited right now.
    pub acks_pending: usize,
    /// Sessions alive (with or without a connection).
    pub sessions: usize,
    /// Bytes the sessions' replay buffers hold.
    pub replay_bytes: usize,
    /// Unacknowledged messages evicted from replay buffers by their bounds (per session or
    /// hub-wide): a resume from before them is not recoverable.
    pub replay_evicted: u64,
    /// Resumes that continued a session.
    pub resumed: u64,
    /// Resumes answered "not recoverable" (a new session was started).
    pub not_recovered: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) acks_pending: AtomicUsize,
}

pub(crate) struct Fanout {
    pub(crate) b: Broadcaster,
    /// The server runs handlers inline: never wait for the pollers' counts.
    pub(crate) inline: bool,
}

pub(crate) struct HubInner {
    pub(crate) cfg: HubConfig,
    pub(crate) router: router::Router<Route>,
    pub(crate) global: Vec<Arc<dyn Middleware>>,
    pub(crate) on_connect: Option<builder::ConnectFn>,
    pub(crate) on_disconnect: Option<builder::DisconnectFn>,
    pub(crate) on_binary: Option<builder::BinaryFn>,
    /// Connection-level middleware, added to the server by `Hub::server_config`.
    pub(crate) conn_mw: Vec<crate::server::websocket::ConnMiddleware>,
    pub(crate) state: Mutex<state::State>,
    /// The rooms' delivery view (the registry holds the same `Arc`): an emit to a room
    /// takes one of its shards, not `state`.
    pub(crate) routes: Arc<routes::Routes>,
    pub(crate) bcast: OnceLock<Fanout>,
    /// Every connection of the hub is in this group.
    pub(crate) all: GroupId,
    /// Acknowledged deliveries under way, by message id.
    pub(crate) acks: Mutex<HashMap<u64, Arc<ack::Round>>>,
    pub(crate) next_ack: AtomicU64,
    pub(crate) stats: Counters,
    /// The timer thread: typing expiry, ack resends and timeouts.
    pub(crate) timer: crossbeam_channel::Sender<timer::TimerCmd>,
    /// Room subscribers outside the connections (processes, bridges).
    pub(crate) subs: subscribe::Subscriptions,
    /// Sessions that survive reconnects (when configured).
    pub(crate) sessions: session::Sessions,
    /// The cluster this hub is a node of, if any.
    pub(crate) cluster: Option<Arc<cluster::node::ClusterNode>>,
}

/// The hub: routes envelopes to handlers and owns rooms, identities, presence and
/// delivery. Cloneable, `Send + Sync`; clones share everything.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("stats", &self.stats()).finish()
    }
}
