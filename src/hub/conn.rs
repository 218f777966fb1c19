//! The per-connection WebSocket handler that feeds the hub.

use super::ack::InHub;
use super::Hub;
use crate::proto::http::Request;
use crate::proto::ws::CloseCode;
use crate::{WsConn, WsHandler};

/// Forwards one connection's events to the hub, in order, marking the thread as running
/// hub code (where waiting for acknowledgements is refused).
pub(crate) struct HubConn(pub(crate) Hub);

impl WsHandler for HubConn {
    fn on_open(&mut self, ws: &WsConn, _req: &Request) {
        let _hub = InHub::enter();
        self.0.on_open(ws);
    }

    fn on_text(&mut self, ws: &WsConn, text: &str) {
        let _hub = InHub::enter();
        self.0.on_text(ws, text);
    }

    fn on_binary(&mut self, ws: &WsConn, data: &[u8]) {
        let _hub = InHub::enter();
        self.0.on_binary(ws, data);
    }

    fn on_close(&mut self, ws: &WsConn, code: CloseCode, reason: &str) {
        let _hub = InHub::enter();
        self.0.on_close(ws, code, reason);
    }
}
