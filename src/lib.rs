//! sockloop: a synchronous event loop for TCP, TLS, UDP, Unix and WebSocket servers.
//!
//! A fixed pool of poller threads, each with its own `mio::Poll`, owns every socket; user
//! code runs in handlers, on supervised handler threads by default or inline on the poller.
//! There is no async runtime: sockloop is made to be embedded in ordinary threaded programs
//! (a game server, a gateway, an IoT collector, a daemon with a control socket) and driven
//! from scripts through blocking clients.
//!
//! ```no_run
//! use sockloop::{handler::on_data, Conn, Listen, Runtime};
//!
//! let rt = Runtime::new()?; // one poller per core, handler threads as needed
//! let server = rt
//!     .serve(Listen::tcp("127.0.0.1:7000"))
//!     .stream(on_data(|conn: &Conn, data: &[u8]| {
//!         let _ = conn.send(data); // echo
//!     }))?;
//! println!("listening on {}", server.local_addr());
//! # Ok::<(), sockloop::Error>(())
//! ```
//!
//! # Architecture
//!
//! ```text
//!  listeners ──► reactor: poller threads (N, fixed)      server: handler pool (supervised, elastic)
//!                mio::Poll + slab + timers + Drivers ──events──►  user handlers, hub
//!                bytes in/out, budgets, backpressure ◄─commands─  (send, join, emit…)
//!                         │
//!  hub (rooms, presence) ─┴──► fan-out groups: a broadcast is framed once, one command
//!                              per poller that has members
//! ```
//!
//! - A connection lives on one poller for its whole life; everything else talks to it
//!   through a cloneable `Send + Sync` handle ([`Conn`], [`WsConn`]) carrying (poller, slot,
//!   generation), so a handle to a closed connection is harmless: `send` says
//!   [`SendStatus::Closed`].
//! - A transport is a *driver*: the reactor hands it bytes and the time, it answers with
//!   output, requests and its next deadline (raw streams, TLS, WebSocket, the HTTP hook).
//! - Every connection's outbound queue is bounded in bytes, with a [`DropPolicy`]; a slow
//!   consumer never stalls anyone else, and every send says what happened.
//! - Output produced for a connection during one readiness event leaves in one write;
//!   broadcasts are framed once and shared ([`Broadcaster`]).
//!
//! # Capabilities and their guides
//!
//! | capability | start here | guide |
//! |---|---|---|
//! | TCP, TLS, UDP, Unix stream and datagram servers | [`Runtime::serve`], [`Listen`], [`StreamHandler`], [`DatagramHandler`] | [`handler`], [`ServerConfig`] (every default on its setter) |
//! | TLS (rustls, ring): certificates, client certificates, ALPN, SNI | [`tls::TlsServerConfig`], [`Conn::tls`] | [`tls`] |
//! | WebSocket server: upgrade, authenticator, HTTP hook, deflate, heartbeats | [`ServerBuilder::websocket`], [`WsServerConfig`], [`WsHandler`] | [`ws`], [`http`] |
//! | Blocking clients for scripts (`Read` + `Write`, `once`, timeouts) | [`client::TcpClient`], [`client::ws::WsClient`] | [`client`] |
//! | Events, rooms, acks, identity and presence | [`hub::Hub`] | [`hub`], [`guide::protocol`] (the wire protocol) |
//! | Erlang-style supervision: processes, supervisors, links, monitors | [`supervise::Node`], [`supervise::SupervisorSpec`] | [`supervise`] |
//! | Operations: metrics, observers, stats, graceful shutdown, signals | [`metrics::Metrics`], [`Observer`], [`ServerStats`], [`Server::shutdown`], [`signal`] | [`metrics`], [`guide::metrics`] (every metric, its unit and labels) |
//!
//! The repository's `examples/` run each of these as a program: `echo` (every transport),
//! `chat` (the hub behind a browser page), `supervised_chat`, `sensors` (a UDP collector
//! under a supervisor), `control_daemon` (a Unix control socket checking peer
//! credentials), `ws_script` (a script driving a WebSocket service) and `wsc` (a
//! `wscat`-like line client for every transport).
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | — | every transport, TLS, WebSocket, the hub, supervision and [`metrics`] are always built |
//! | `tracing` | off | spans through the `tracing` facade beside the `log` records: `sockloop.conn` per connection (fields `conn`, `peer`), `sockloop.handler` per handler call (field `event`) inside it, and a `closed` event with the reason; target `sockloop`. Off, nothing of it is compiled |
//!
//! TLS uses rustls with the `ring` provider (a C compiler is all it needs);
//! permessage-deflate uses flate2 on the pure-Rust zlib-rs backend. Linux is the supported
//! platform (peer credentials, socket file modes and signals use Linux calls).
//!
//! # Errors
//!
//! One [`Error`] with sub-enums per domain. I/O errors say what was being done and where,
//! as Go's do: `connect 127.0.0.1:7000: Connection refused (os error 111)`,
//! `read cert.pem: No such file or directory (os error 2)`, `bind 127.0.0.1:7000: Address in
//! use`. The kind is the original's and the original error is the `source`.
//!
//! # Layers
//! Each module uses only modules of its own layer or a lower one (`.ci/layers.py` checks it):
//!
//! | layer | modules | holds |
//! |---|---|---|
//! | 0 | [`base`] | ids, addresses, close reasons, send outcomes, saturating deadlines |
//! | 1 | [`error`], `proto` ([`http`], [`ws`]), `sys`, [`tls`], [`supervise`] | sans-IO engines, OS calls, TLS config, processes |
//! | 2 | `reactor` | the only mio user: poll loop, typed commands, timers, the `Driver` contract |
//! | 3 | `server`, [`client`] | binding, runtime, handler pool, drivers, broadcast; blocking clients |
//! | 4 | [`hub`] | envelopes, router, rooms, identity, delivery |
//! | 5 | [`metrics`] | one view over servers, hubs and supervision; the Prometheus exposition |
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod base;
pub mod client;
pub mod error;
pub mod hub;
pub mod metrics;
mod proto;
mod reactor;
mod server;
pub mod supervise;
mod sys;
pub mod tls;

pub use base::{Addr, CloseReason, ConnId, Delivery, DropPolicy, GroupId, PeerCred, SendStatus};
pub use error::{Error, Result};
pub use proto::{http, ws};
pub use reactor::{MAX_ACCEPTS_PER_TURN, MAX_COMMANDS_PER_TURN};
pub use server::broadcast::{Broadcaster, Frames};
pub use server::config::{Dispatch, PollingConfig, ServerConfig};
pub use server::handle::Conn;
pub use server::handler::{self, DatagramHandler, DatagramSender, StreamHandler};
pub use server::observe::{ConnState, Lifecycle, LogObserver, Observer, ServerStats};
pub use server::runtime::{Runtime, RuntimeBuilder};
/// For the idle-memory bench: what an idle connection holds (not a stable API).
#[doc(hidden)]
pub use server::sizes as __sizes;
pub use server::websocket::{
    on_message, Authenticator, ConnMiddleware, HttpHook, Identity, Origins, Rejection, WsConn,
    WsFactory, WsHandler, WsMessage, WsServerConfig,
};
pub use server::{Listen, Server, ServerBuilder, Transport, UnixOptions};
pub use sys::signal;

/// Guides: the long-form documents of the repository's `docs/`, rendered here.
pub mod guide {
    #[doc = include_str!("../docs/PROTOCOL.md")]
    pub mod protocol {}
    #[doc = include_str!("../docs/METRICS.md")]
    pub mod metrics {}
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
