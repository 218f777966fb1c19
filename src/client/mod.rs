//! Blocking clients for scripts and programs: TCP, TLS, UDP, Unix, Unix datagram and
//! WebSocket ([`ws`]), HTTP long-polling ([`polling`]), and a hub client with sessions that
//! survive reconnects ([`hub`]).
//!
//! Every client connects within [`ClientOptions::connect_timeout`], has read and write
//! timeouts, and offers `once`: send a request and take one reply before a deadline, failing
//! with [`Error::Timeout`](crate::Error::Timeout) when none came. Stream clients
//! ([`TcpClient`], [`TlsClient`], [`UnixClient`]) implement `std::io::Read` + `Write`;
//! where a stream reply ends is a [`ReplyEnd`]. Datagram clients ([`UdpClient`],
//! [`UnixDatagramClient`]) exchange whole datagrams. Stream clients close cleanly on
//! [`close`](TcpClient::close) or drop: TLS sends close_notify, the write side is shut
//! down, and what the server still sends is drained for a bounded time.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use sockloop::client::{ClientOptions, TcpClient};
//!
//! let opts = ClientOptions::default().connect_timeout(Duration::from_secs(2));
//! let mut c = TcpClient::connect("127.0.0.1:7000", opts)?;
//! let echo = c.once(b"hello", Duration::from_secs(1))?;
//! assert_eq!(echo, b"hello");
//! # Ok::<(), sockloop::Error>(())
//! ```

mod connect;
mod datagram;
pub mod hub;
mod options;
pub mod polling;
mod reply;
mod stream;
mod tcp;
mod unix;
pub mod ws;

pub use datagram::{UdpClient, UnixDatagramClient};
pub use options::ClientOptions;
pub use reply::ReplyEnd;
pub use tcp::{TcpClient, TlsClient};
pub use unix::UnixClient;
