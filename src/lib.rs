//! sockloop: a synchronous event loop for TCP, TLS, UDP, Unix and WebSocket servers.
//!
//! A fixed pool of poller threads, each with its own `mio::Poll`, owns every socket; user
//! code runs in handlers, on separate handler threads by default or inline on the poller.
//! See the README for the architecture and the defaults.
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
#![deny(missing_docs)]

pub mod base;
pub mod client;
pub mod error;
pub mod hub;
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
pub use server::websocket::{
    on_message, Authenticator, ConnMiddleware, HttpHook, Identity, Origins, Rejection, WsConn,
    WsFactory, WsHandler, WsMessage, WsServerConfig,
};
pub use server::{Listen, Server, ServerBuilder, Transport, UnixOptions};
pub use sys::signal;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
