//! sockloop: a synchronous event loop for TCP, TLS, UDP, Unix and WebSocket servers.
//!
//! A fixed pool of poller threads, each with its own `mio::Poll`, owns every socket; user
//! code runs in handlers, on separate handler threads by default or inline on the poller.
//! See the README for the architecture and the defaults.
#![deny(missing_docs)]

mod broadcast;
pub mod client;
mod config;
pub mod error;
mod handle;
pub mod handler;
pub mod http;
pub mod hub;
mod observe;
mod reactor;
mod runtime;
mod server;
pub mod signal;
pub mod supervise;
mod sys;
pub mod tls;
mod websocket;
pub mod ws;

pub use broadcast::{Broadcaster, Delivery, Frames, GroupId};
pub use config::{Dispatch, DropPolicy, ServerConfig};
pub use error::{Error, Result};
pub use handle::{Addr, CloseReason, Conn, ConnId, PeerCred, SendStatus};
pub use handler::{DatagramHandler, DatagramSender, StreamHandler};
pub use observe::{ConnState, Lifecycle, LogObserver, Observer, ServerStats};
pub use reactor::{MAX_ACCEPTS_PER_TURN, MAX_COMMANDS_PER_TURN};
pub use runtime::{Runtime, RuntimeBuilder};
pub use server::{Listen, Server, ServerBuilder, Transport, UnixOptions};
pub use websocket::{
    on_message, Authenticator, HttpHook, Identity, Origins, Rejection, WsConn, WsFactory,
    WsHandler, WsMessage, WsServerConfig,
};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
