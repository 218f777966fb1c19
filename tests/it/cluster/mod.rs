//! Clusters: two hubs, each with its own server and runtime, joined by a bus — the
//! in-process `LocalBus` here, real `redis-server` processes in `redis.rs` — behave as one
//! server for every hub operation, over real WebSocket clients.

mod ops;
#[cfg(feature = "redis")]
mod redis;
mod sessions;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sockloop::client::ws::WsClient;
use sockloop::hub::cluster::{Bus, ClusterConfig};
use sockloop::hub::{Ctx, Hub, PresenceScope, SessionConfig};
use sockloop::{Listen, PollingConfig, Runtime, Server};

use crate::hub::{auth_config, base, connect, recv_json, rt};

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
    // WebSocket and long-polling on one port.
    let ws = auth_config().polling(Some(PollingConfig::new()));
    let server = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(ws, hub.factory())
        .unwrap();
    hub.attach(&server);
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

/// A TCP proxy that sends each new connection to the next of its upstreams in turn.
pub struct Alternating {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Alternating {
    pub fn start(ups: Vec<SocketAddr>) -> Alternating {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c2, turn) = (conns.clone(), Arc::new(AtomicUsize::new(0)));
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let i = turn.fetch_add(1, Ordering::Relaxed) % ups.len();
                let Ok(up) = TcpStream::connect(ups[i]) else {
                    continue;
                };
                c2.lock()
                    .unwrap()
                    .extend([s.try_clone().unwrap(), up.try_clone().unwrap()]);
                for (mut from, mut to) in
                    [(s.try_clone().unwrap(), up.try_clone().unwrap()), (up, s)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Alternating { addr, conns }
    }

    /// Cuts every connection (the client reconnects, to the other node).
    pub fn cut_all(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The TCP address of a node's server.
pub fn inet(n: &Node) -> SocketAddr {
    match n.server.local_addr() {
        sockloop::Addr::Inet(x) => *x,
        other => panic!("{other}"),
    }
}

/// ann, a `HubClient` with a session over `transport`, reaches two nodes through a proxy
/// that alternates connections (no affinity): she is cut again and again, her requests
/// and reconnects land on either node, and she receives every message bob sends, once,
/// in order.
pub fn behind_an_alternating_proxy(a: &Node, b: &Node, polling: bool) {
    use sockloop::client::hub::{Backoff, HubClient, HubClientOptions, HubEvent, HubTransport};
    let proxy = Alternating::start(vec![inet(a), inet(b)]);
    let mut opts = HubClientOptions::default().backoff(Backoff::new(
        Duration::from_millis(5),
        Duration::from_millis(50),
    ));
    if polling {
        let p = sockloop::client::polling::PollingOptions::default();
        opts = opts.transports(vec![HubTransport::Polling(p)]);
    }
    let url = format!("ws://{}/?user=ann", proxy.addr);
    let ann = HubClient::connect(&url, opts).unwrap();
    ann.emit_with_ack("join", &json!("r"), crate::util::WAIT)
        .unwrap();
    let mut bob = member(b, "bob", "r");
    wait_members(b, "r", 2);
    for i in 1..=30u64 {
        ask(&mut bob, 100 + i, "say", json!({"room": "r", "text": i}));
        if i % 10 == 5 {
            proxy.cut_all();
        }
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 30 && Instant::now() < deadline {
        match ann.recv(Duration::from_millis(50)) {
            Some(HubEvent::Message(m)) if m.event == "said" => {
                got.push(m.data["text"].as_u64().unwrap());
            }
            // Shown when the test fails: where in the stream each cut and resume came.
            Some(HubEvent::State(s)) => eprintln!("ann after {:?}: {s:?}", got.last()),
            _ => {}
        }
    }
    assert_eq!(
        got,
        (1..=30).collect::<Vec<u64>>(),
        "every message once, in order (a: {:?} {:?}; b: {:?} {:?}; client on {:?})",
        a.hub.stats(),
        a.hub.cluster_stats(),
        b.hub.stats(),
        b.hub.cluster_stats(),
        ann.transport()
    );
    let moved = a.hub.stats().resumed + b.hub.stats().resumed;
    let fwd = a.hub.cluster_stats().unwrap().polls_forwarded
        + b.hub.cluster_stats().unwrap().polls_forwarded;
    if polling {
        assert!(fwd > 0 || moved > 0, "requests crossed nodes");
    } else {
        assert!(moved >= 1, "the session moved between the nodes");
    }
}
