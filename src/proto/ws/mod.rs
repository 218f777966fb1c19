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
//! An idle session is 16 bytes and owns no heap memory: reassembly buffers exist only while
//! a fragmented message is arriving, and with the default no-context-takeover compression
//! the compressor and inflater are shared by every connection of a poller thread.
//!
//! # How the reactor drives the engine
//!
//! 1. Feed the bytes read so far to `http::parse_request` until it is `Complete`; answer
//!    `Error { status }` with `handshake::write_rejection`. Requests that are not
//!    `handshake::is_upgrade` go to the HTTP hook.
//! 2. `handshake::accept(&request, &cfg, &extra_headers, &mut out)` writes the 101 and
//!    returns the negotiated `DeflateParams`; create `WsSession::new(Role::Server, deflate)`.
//!    Bytes after `consumed` are already frames.
//! 3. On readable: call `session.decode_next(&mut buf[pos..], &cfg, &mut scratch.rx)` until
//!    `NeedMore`, advancing `pos` by `consumed`. A returned message borrows `buf` (or
//!    `scratch.rx`), so the handler can answer at once through
//!    `session.encode(&mut out, op, payload, &cfg, &mut scratch.tx)`. Answer `Ping` with a
//!    `Pong` of the same payload, and `Close(code, _)` with
//!    `session.encode_close(&mut out, close_reply(code), "", &mut scratch.tx)`.
//!    Keep `buf[pos..]` (a partial frame) for the next read; `NeedMore(n)` says how many
//!    bytes the frame needs, so the buffer can be grown once.
//! 4. On `Err(e)`: `session.encode_close(&mut out, e.close_code(), e.reason(), tx)`,
//!    flush, close.
//! 5. Broadcast: `encode_shared(op, payload, compress, &cfg, tx)` once; each recipient's
//!    `shared_choice()` says whether to send `plain`, `deflated`, or encode for itself.
//!
//! # Conformance notes
//!
//! - UTF-8 is validated per frame and fails fast across fragments; a single frame is
//!   validated once it is complete (Autobahn 6.4.3/6.4.4 report NON-STRICT for that).
//! - A peer asking for `server_max_window_bits=8` gets 8 in the answer and a 9-bit
//!   compressor, whose distances stay below 256 (zlib refuses 8 for raw deflate).
//! - Frame and message limits are checked from the header, before the payload is
//!   buffered; compressed messages are bounded after inflation, while inflating.

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
