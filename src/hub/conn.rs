//! The per-connection WebSocket handler that feeds the hub.

use super::ack::InHub;
use std::sync::Arc;

use super::session::SessionCell;
use super::Hub;
use crate::proto::http::Request;
use crate::proto::ws::CloseCode;
use crate::{WsConn, WsHandler};

/// Forwards one connection's events to the hub, in order, marking the thread as running
/// hub code (where waiting for acknowledgements is refused). A connection carrying a
/// session goes through the session's paths (numbering, dedup, detach).
pub(crate) struct HubConn {
    pub(crate) hub: Hub,
    pub(crate) session: Option<Arc<SessionCell>>,
}

impl HubConn {
    pub(crate) fn new(hub: Hub) -> Self {
        HubConn { hub, session: None }
    }
}

impl WsHandler for HubConn {
    fn on_open(&mut self, ws: &WsConn, req: &Request) {
        let _hub = InHub::enter();
        self.session = self.hub.open_with_session(ws, req);
    }

    fn on_text(&mut self, ws: &WsConn, text: &str) {
        let _hub = InHub::enter();
        match &self.session {
            Some(cell) => self.hub.session_text(cell, ws, text),
            None => self.hub.on_text(ws, text),
        }
    }

    fn on_binary(&mut self, ws: &WsConn, data: &[u8]) {
        let _hub = InHub::enter();
        self.hub.on_binary(ws, data);
    }

    fn on_close(&mut self, ws: &WsConn, code: CloseCode, reason: &str) {
        let _hub = InHub::enter();
        match &self.session {
            Some(cell) => self.hub.session_closed(cell, ws, code, reason),
            None => self.hub.on_close(ws, code, reason),
        }
    }
}
