//! Spans through the `tracing` facade (feature `tracing`), beside the `log` records: one
//! span per connection (`sockloop.conn`, fields `conn` and `peer`) and one per handler call
//! (`sockloop.handler`, field `event`: `open`, `data`, `text`, `binary`, `drained`, `error`,
//! `close`), a child of its connection's span; the close is an event (`closed`, field
//! `reason`) in the connection's span. All under the target `sockloop`.
//!
//! A connection's span lasts as long as its [`ConnInfo`](super::handle::ConnInfo): until
//! the last handle to the connection is dropped, which is at its close unless user code
//! keeps a [`Conn`](crate::Conn). Without the feature every item here is empty: the span
//! field is `()`, the guard is a unit struct, and nothing is evaluated.

use crate::base::{Addr, ConnId};
use crate::server::dispatch::Event;
use crate::server::handle::Conn;

/// A connection's span (`()` without the feature).
#[cfg(feature = "tracing")]
pub(crate) type ConnSpan = tracing::Span;
/// A connection's span (`()` without the feature).
#[cfg(not(feature = "tracing"))]
pub(crate) type ConnSpan = ();

/// The span of a new connection.
#[cfg(feature = "tracing")]
pub(crate) fn conn_span(id: ConnId, peer: &Addr) -> ConnSpan {
    tracing::info_span!(target: "sockloop", "sockloop.conn", conn = id.0, peer = %peer)
}

/// The span of a new connection.
#[cfg(not(feature = "tracing"))]
#[inline(always)]
pub(crate) fn conn_span(_: ConnId, _: &Addr) -> ConnSpan {}

/// No span (for connections made outside an accept, in tests).
#[cfg(feature = "tracing")]
#[allow(dead_code)]
pub(crate) fn no_span() -> ConnSpan {
    tracing::Span::none()
}

/// No span (for connections made outside an accept, in tests).
#[cfg(not(feature = "tracing"))]
#[allow(dead_code)]
#[inline(always)]
pub(crate) fn no_span() -> ConnSpan {}

/// Held while a handler runs: the handler call's span is entered until it drops.
#[must_use]
pub(crate) struct HandlerCall {
    #[cfg(feature = "tracing")]
    _entered: tracing::span::EnteredSpan,
}

/// Enters the span of one handler call for `conn` (and records a close in the
/// connection's span).
#[cfg(feature = "tracing")]
pub(crate) fn handler_call(conn: &Conn, ev: &Event<'_>) -> HandlerCall {
    let parent = &conn.inner.ext.span;
    let name = match ev {
        Event::Open(..) => "open",
        Event::Data(_) => "data",
        Event::Text(_) => "text",
        Event::Binary(_) => "binary",
        Event::Drained => "drained",
        Event::Error(_) => "error",
        Event::Close(_) | Event::WsClose(..) => "close",
    };
    match ev {
        Event::Close(r) => {
            tracing::info!(target: "sockloop", parent: parent, reason = %r, "closed")
        }
        Event::WsClose(code, reason) => {
            let code = u16::from(*code);
            tracing::info!(target: "sockloop", parent: parent, code, reason, "closed");
        }
        _ => {}
    }
    let span =
        tracing::debug_span!(target: "sockloop", parent: parent, "sockloop.handler", event = name);
    HandlerCall {
        _entered: span.entered(),
    }
}

/// Enters the span of one handler call for `conn` (nothing without the feature).
#[cfg(not(feature = "tracing"))]
#[inline(always)]
pub(crate) fn handler_call(_: &Conn, _: &Event<'_>) -> HandlerCall {
    HandlerCall {}
}
