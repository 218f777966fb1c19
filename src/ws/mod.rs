//! WebSocket engine (RFC 6455 + RFC 7692), sans-IO.
//!
//! The pieces, none of which touch a socket:
//!
//! - `frame`: the frame codec (headers, masking, control-frame rules);
//! - `session`: per-connection state turning frames into messages and messages into frames,
//!   with fragmentation, incremental UTF-8 validation, size limits and close handling;
//! - `deflate`: permessage-deflate negotiation and bounded (de)compression;
//! - `handshake`: the HTTP/1.1 upgrade, server and client side.
//!
//! The public surface is the configuration ([`WsConfig`], [`DeflateConfig`]), close codes
//! ([`CloseCode`]), opcodes ([`OpCode`]), negotiated parameters ([`DeflateParams`]) and
//! [`WsError`]; the reactor and the blocking client drive the crate-private engine.
//!
//! # Memory
//!
//! An idle session is 24 bytes and owns no heap memory: reassembly buffers exist only while
//! a fragmented message is arriving, and with the default no-context-takeover compression
//! the compressor and inflater are shared by every connection of a poller thread.

mod base64;
mod close;
mod config;
mod deflate;
mod error;
mod frame;
pub(crate) mod handshake;
pub(crate) mod session;
mod utf8;

#[doc(hidden)]
pub mod fuzzing;

pub use close::CloseCode;
pub use config::{DeflateConfig, DeflateMode, WsConfig};
pub use deflate::DeflateParams;
pub use error::WsError;
pub use frame::OpCode;

#[allow(unused_imports)] // used by the reactor
pub(crate) use deflate::Role;
#[allow(unused_imports)] // used by the reactor
pub(crate) use frame::{apply_mask, write_frame_header, MAX_HEADER_LEN};
#[allow(unused_imports)] // used by the reactor
pub(crate) use session::{
    close_reply, encode_shared, Decoded, Incoming, Scratch, SharedChoice, SharedFrames, WsSession,
};
