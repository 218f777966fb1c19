//! Clusters: two hubs, each with its own server and runtime, joined by a bus — the
//! in-process `LocalBus` here, real `redis-server` processes in `redis.rs` — behave as one
//! server for every hub operation, over real WebSocket clients.

mod ops;
mod sessions;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sockloop::client::ws::WsClient;
use sockloop::hub::cluster::{Bus, ClusterConfig};
use sockloop::hub::{Ctx, Hub, PresenceScope, SessionConfig};
use sockloop::{Runtime, Server};

use crate::hub::{base, connect, recv_json, rt, serve};

/// One node: its runtime, hub and server.
pub struct Node {
    #[allow(dead_code)]
    pub rt: Runtime,
    pub hub: Hub,
    pub server: Server,
}

/// The routes of every cluster test hub: the base ones, plus `say` (data `{room, text}`:
/// emits `said` to the room except the sender), `tell` (data `{user, text}`: emits `told`
/// to the user), `shout` (emits `shouted` to everyone).
pub fn node(bus: impl Bus, cfg: ClusterConfig) -> Node {
    node_with(bus, cfg, None)
}

/// [`node`], with sessions when `sessions` is given.
pub fn node_with(bus: impl Bus, cfg: ClusterConfig, sessions: Option<SessionConfig>) -> Node {
    let mut b = base();
    if let Some(s) = sessions {
        b = b.sessions(s);
    }
    let hub = b
        .config(sockloop::hub::HubConfig::new().presence(PresenceScope::Everyone))
        .on("say", |ctx: &mut Ctx| {
            let v: Value = ctx.data()?;
            let room = v["room"].as_str().unwrap_or_default().to_owned();
            let d = ctx
                .hub()
                .to_room(&room)
                .except(ctx.conn_id())
                .emit("said", &v);
            ctx.ack(&json!({"queued": d.queued, "unpublished": d.unpublished}))
        })
        .on("tell", |ctx: &mut Ctx| {
            let v: Value = ctx.data()?;
            let user = v["user"].as_str().unwrap_or_default().to_owned();
            let d = ctx.hub().to_user(&user).emit("told", &v);
            ctx.ack(&json!({"queued": d.queued, "unpublished": d.unpublished}))
        })
        .on("shout", |ctx: &mut Ctx| {
            let v: Value = ctx.data()?;
            ctx.hub().to_all().except(ctx.conn_id()).emit("shouted", &v);
            ctx.ack(&json!({"ok": true}))
        })
        .cluster(bus, cfg)
        .build();
    let rt = rt();
    let server = serve(&rt, &hub);
    Node { rt, hub, server }
}

pub fn cfg(name: &str, ns: &str) -> ClusterConfig {
    ClusterConfig::new(name)
        .namespace(ns)
        .dead_after(Duration::from_millis(1200))
}

/// Polls `f` until it is true (10 s at most).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not in 10 s: {what}");
}

/// Sends a request and waits for its answer.
pub fn ask(c: &mut WsClient, id: u64, event: &str, data: Value) -> Value {
    crate::hub::request(c, &json!({"event": event, "id": id, "data": data}))
}

/// The next message with this event (others skipped).
pub fn next(c: &mut WsClient, event: &str) -> Value {
    loop {
        let v = recv_json(c);
        if v["event"] == event {
            return v;
        }
    }
}

/// A registered client of user `user` on `n`, joined to `room` (when not empty).
pub fn member(n: &Node, user: &str, room: &str) -> WsClient {
    let (mut c, _) = connect(&n.server, &format!("user={user}"));
    if !room.is_empty() {
        let r = ask(&mut c, 1, "join", json!(room));
        assert_eq!(r["data"]["ok"], true, "{r}");
    }
    c
}

/// Waits until node `n` sees `count` members of `room` across the cluster.
pub fn wait_members(n: &Node, room: &str, count: usize) {
    eventually(&format!("{count} members in {room}"), || {
        n.hub.room_count(room) == count
    });
}
