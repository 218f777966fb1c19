//! The hub: envelopes, routing, middleware, rooms, delivery and acks, presence, operations —
//! over real WebSocket clients on port 0.

mod delivery;
mod envelope;
mod ops;
mod presence;
mod processes;
mod rooms;
mod sessions;

use serde_json::{json, Value};
use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::hub::{Ctx, Hub, HubBuilder};
use sockloop::ws::CloseCode;
use sockloop::{ConnId, Identity, Listen, Runtime, Server, WsServerConfig};

use crate::util::WAIT;

pub fn rt() -> Runtime {
    Runtime::builder()
        .pollers(2)
        .handler_threads(2)
        .build()
        .unwrap()
}

/// Routes every test hub has: `whoami` (acks the connection id), `join`/`leave` (data: room),
/// `echo` (replies the data).
pub fn base() -> HubBuilder {
    Hub::builder()
        .on("whoami", |ctx: &mut Ctx| ctx.ack(&ctx.conn_id().0))
        .on("join", |ctx: &mut Ctx| {
            let room: String = ctx.data()?;
            ctx.join(&room)?;
            ctx.ack(&json!({"ok": true}))
        })
        .on("leave", |ctx: &mut Ctx| {
            let room: String = ctx.data()?;
            ctx.leave(&room)?;
            ctx.ack(&json!({"ok": true}))
        })
        .on("echo", |ctx: &mut Ctx| ctx.reply(&ctx.envelope().data))
}

/// The authenticator used by the tests: `?user=ann&tags=a,b`; no user, no identity.
pub fn auth_config() -> WsServerConfig {
    WsServerConfig::new().authenticator(|req| {
        let Some(user) = req.query_param("user") else {
            return Ok(None);
        };
        let mut id = Identity::user(user);
        for t in req.query_param("tags").unwrap_or("").split(',') {
            if !t.is_empty() {
                id = id.tag(t);
            }
        }
        if let Some(seats) = req.query_param("seats").and_then(|s| s.parse::<u64>().ok()) {
            id = id.meta("plan", json!({"tier": "pro", "seats": seats}));
        }
        Ok(Some(id))
    })
}

pub fn serve(rt: &Runtime, hub: &Hub) -> Server {
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(auth_config(), hub.factory())
        .unwrap();
    hub.attach(&s);
    s
}

/// A client that has not yet proven it is registered.
pub fn dial(s: &Server, query: &str) -> WsClient {
    let url = format!("ws://{}/?{query}", s.local_addr());
    WsClient::connect(&url, WsClientOptions::default().deflate(false)).unwrap()
}

/// Reads the `whoami` ack: after it the hub knows the connection.
pub fn finish_whoami(c: &mut WsClient) -> ConnId {
    let v = recv_json(c);
    assert_eq!(v["event"], "ack", "{v}");
    ConnId(v["data"].as_u64().unwrap())
}

/// A client registered with the hub (`user` may be empty), and its connection id.
pub fn connect(s: &Server, query: &str) -> (WsClient, ConnId) {
    let mut c = dial(s, query);
    send(&mut c, &json!({"event": "whoami", "id": 0}));
    let id = finish_whoami(&mut c);
    (c, id)
}

pub fn send(c: &mut WsClient, v: &Value) {
    c.send_text(&v.to_string()).unwrap();
}

/// The next text message as JSON (pings skipped).
pub fn recv_json(c: &mut WsClient) -> Value {
    loop {
        match c.recv_timeout(WAIT).unwrap().expect("a message in time") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The next message with this event name, skipping others.
pub fn next_event(c: &mut WsClient, event: &str) -> Value {
    loop {
        let v = recv_json(c);
        if v["event"] == event {
            return v;
        }
    }
}

/// Sends `v` (which must carry an id) and returns the answer with that ref.
pub fn request(c: &mut WsClient, v: &Value) -> Value {
    send(c, v);
    loop {
        let r = recv_json(c);
        if r["ref"] == v["id"] {
            return r;
        }
    }
}

/// Every text message queued before now: a ping's pong comes after them all.
pub fn drain(c: &mut WsClient) -> Vec<Value> {
    c.ping(b"sync").unwrap();
    let mut out = Vec::new();
    loop {
        match c.recv_timeout(WAIT).unwrap().expect("the pong in time") {
            Message::Text(t) => out.push(serde_json::from_str(&t).unwrap()),
            Message::Pong(_) => return out,
            _ => {}
        }
    }
}

/// Waits for the server's close frame, skipping data.
pub fn recv_close(c: &mut WsClient) -> (CloseCode, String) {
    loop {
        match c.recv_timeout(WAIT) {
            Ok(Some(Message::Close(code, reason))) => return (code, reason),
            Ok(Some(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}
