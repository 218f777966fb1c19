//! The chat on several nodes joined by Redis: any node serves any client, and a node's
//! death loses nothing for a client that resumes on another.
//!
//! ```text
//! redis-server --port 6379 --save '' &
//! cargo run --release --features redis --example distributed_chat -- --addr 127.0.0.1:8080 --node a
//! cargo run --release --features redis --example distributed_chat -- --addr 127.0.0.1:8081 --node b
//! ```
//!
//! Open <http://127.0.0.1:8080/> and <http://127.0.0.1:8081/> and chat: a user on node a
//! and a user on node b are in one lobby, see each other in the user list and get each
//! other's lines. `kill -9` node a: its page reconnects (to the address it knows; behind a
//! load balancer, to b), resumes its session from Redis and gets every line said meanwhile,
//! none twice; b shows a's users offline within 10 s if they do not come back.
//!
//! The page and its events are the `chat` example's (`examples/assets/chat.html`, served at
//! `/`; WebSocket or long-polling on `/ws?nick=NAME`; `/health`). Inside, after the classic
//! OTP design, each node runs a **room-manager** and a **chat-processor** process under a
//! `OneForOne` supervisor, fed by socket events: the hub's handlers only check the envelope
//! and forward it by registered name, waiting for the process's answer (3 s at most; a
//! crashed process is restarted and the next line goes through).
//!
//! - The room-manager joins and leaves rooms for connections and answers with the room's
//!   users across the cluster; it also greets each new connection (`chat:welcome`, the
//!   lobby). Rooms are the hub's, so they span the nodes.
//! - The chat-processor posts lines (`chat:message` to the room, published once to the
//!   other nodes through Redis), runs the slash commands (`/join ROOM`, `/leave [ROOM]`,
//!   `/me ACTION`, `/who [ROOM]`, `/msg NICK TEXT` — to the user on whichever node —,
//!   `/shrug`, `/help`).
//!
//! Flags: `--addr HOST:PORT` (default 127.0.0.1:8080), `--redis URL` (repeatable: channels
//! spread over the instances by consistent hashing; default `redis://127.0.0.1:6379`),
//! `--node NAME` (unique in the cluster; default `HOSTNAME-PID`). Nicknames are users: the
//! same nickname on two tabs is one user with two connections.

#[allow(dead_code)]
#[path = "chat.rs"]
mod chat;

use std::time::Duration;

use serde_json::json;
use sockloop::hub::cluster::{ClusterConfig, RedisBus, RedisBusConfig};
use sockloop::hub::{mw, Cleanup, Ctx, Hub, HubConfig, HubError, RoomOptions, SessionConfig};
use sockloop::supervise::{
    from_fn, ChildSpec, Control, Node, ReplyTo, Strategy, SupervisorRef, SupervisorSpec,
};
use sockloop::{ConnId, Listen, PollingConfig, Runtime, Server, WsServerConfig};

/// Registered names of the two processes.
pub const ROOM_MANAGER: &str = "room-manager";
/// See [`ROOM_MANAGER`].
pub const CHAT_PROCESSOR: &str = "chat-processor";
/// How long a socket handler waits for a process.
const FORWARD_WAIT: Duration = Duration::from_secs(3);

type Reply<T> = ReplyTo<Result<T, HubError>>;

/// What the room-manager is asked.
pub enum RoomMsg {
    /// A new connection: greet it and put it in the lobby.
    Connected(ConnId),
    /// Join a room; answers with the room's users across the cluster.
    Join(ConnId, String, Reply<(String, Vec<String>)>),
    /// Leave a room.
    Leave(ConnId, String, Reply<String>),
}

/// What the chat-processor is asked: one line (`room` may be empty where the page shows
/// none).
pub struct Line {
    conn: ConnId,
    room: String,
    text: String,
    reply: Reply<()>,
}

fn room_manager(hub: Hub) -> impl sockloop::supervise::Process<Msg = RoomMsg> {
    from_fn(move |_ctx, msg: RoomMsg| {
        match msg {
            RoomMsg::Connected(conn) => {
                let nick = hub.conn_info(conn).and_then(|i| i.user).unwrap_or_default();
                hub.to_conn(conn)
                    .emit("chat:welcome", &json!({"nick": nick, "conn": conn.0}));
                if hub.join(conn, chat::LOBBY).is_ok() {
                    let users = hub.room_users(chat::LOBBY);
                    let data = json!({"room": chat::LOBBY, "users": users});
                    hub.to_conn(conn).emit("chat:joined", &data);
                }
            }
            RoomMsg::Join(conn, raw, reply) => {
                let r = chat::room_name(&raw).and_then(|room| {
                    hub.join(conn, &room)?;
                    let users = hub.room_users(&room);
                    let data = json!({"room": room, "users": users});
                    hub.to_conn(conn).emit("chat:joined", &data);
                    Ok((room, users))
                });
                let _ = reply.reply(r);
            }
            RoomMsg::Leave(conn, raw, reply) => {
                let r = chat::room_name(&raw).and_then(|room| {
                    hub.leave(conn, &room)
                        .map_err(|_| HubError::not_found(format!("you are not in #{room}")))?;
                    hub.to_conn(conn)
                        .emit("chat:left", &json!({ "room": room }));
                    Ok(room)
                });
                let _ = reply.reply(r);
            }
        }
        Ok(Control::Continue)
    })
}

const HELP: &str = "commands: /join ROOM, /leave [ROOM], /me ACTION, /who [ROOM], \
                    /shrug [TEXT], /msg NICK TEXT, /help; //text sends /text";

/// The chat-processor's work on one line.
fn process(hub: &Hub, node: &Node, l: &Line) -> Result<(), HubError> {
    let text = l.text.trim();
    if text.is_empty() {
        return Err(HubError::bad_data("an empty message"));
    }
    if text.chars().count() > chat::MAX_TEXT {
        let max = chat::MAX_TEXT;
        return Err(HubError::bad_data(format!(
            "a message has at most {max} characters"
        )));
    }
    let info = hub
        .conn_info(l.conn)
        .ok_or_else(|| HubError::not_found("no such connection"))?;
    let me = info.user.clone().unwrap_or_default();
    let here = || -> Result<&str, HubError> {
        match l.room.as_str() {
            "" => Err(HubError::bad_data("you are in no room: /join ROOM first")),
            r if info.rooms.contains(r) => Ok(r),
            r => Err(HubError::forbidden(format!("you are not in #{r}"))),
        }
    };
    let post = |room: &str, kind: &str, text: &str| -> Result<(), HubError> {
        let msg = json!({"room": room, "from": me, "kind": kind, "text": text});
        hub.to_room(room)
            .emit_nowait("chat:message", &msg)
            .map(drop)
    };
    let tell = |text: &str| {
        hub.to_conn(l.conn)
            .emit("chat:system", &json!({"room": l.room, "text": text}));
    };
    let Some(cmd) = text.strip_prefix('/') else {
        return post(here()?, "text", text);
    };
    if let Some(literal) = cmd.strip_prefix('/') {
        return post(here()?, "text", &format!("/{literal}"));
    }
    let (name, rest) = cmd
        .split_once(char::is_whitespace)
        .map_or((cmd, ""), |(n, r)| (n, r.trim()));
    let to_manager = |make: &dyn Fn(Reply<String>) -> RoomMsg| -> Result<String, HubError> {
        node.call(ROOM_MANAGER, make, FORWARD_WAIT)
            .map_err(|e| HubError::internal(format!("room-manager: {e}")))?
    };
    match name.to_lowercase().as_str() {
        "join" if !rest.is_empty() => {
            let rest = rest.to_owned();
            node.call(
                ROOM_MANAGER,
                |r| RoomMsg::Join(l.conn, rest, r),
                FORWARD_WAIT,
            )
            .map_err(|e| HubError::internal(format!("room-manager: {e}")))?
            .map(drop)
        }
        "leave" | "part" => {
            let room = if rest.is_empty() {
                here()?.to_owned()
            } else {
                rest.to_owned()
            };
            to_manager(&|r| RoomMsg::Leave(l.conn, room.clone(), r)).map(drop)
        }
        "me" if !rest.is_empty() => post(here()?, "me", rest),
        "shrug" => post(here()?, "text", format!("{rest} {}", chat::SHRUG).trim()),
        "who" => {
            let room = chat::room_name(if rest.is_empty() { here()? } else { rest })?;
            let users = hub.room_users(&room);
            tell(&format!(
                "in #{room} ({}): {}",
                users.len(),
                users.join(", ")
            ));
            Ok(())
        }
        "msg" | "w" => {
            let (to, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if to.is_empty() || text.trim().is_empty() {
                return Err(HubError::bad_data("usage: /msg NICK TEXT"));
            }
            let data = json!({"from": me, "to": to, "text": text.trim()});
            // To the user on whichever node (the hub publishes it to theirs).
            if !matches!(hub.presence(to), sockloop::hub::Presence::Online { .. }) {
                return Err(HubError::not_found(format!("nobody called {to} is online")));
            }
            hub.to_user(to).emit("chat:private", &data);
            if to != me {
                hub.to_conn(l.conn).emit("chat:private", &data);
            }
            Ok(())
        }
        "help" => {
            tell(HELP);
            Ok(())
        }
        _ => Err(HubError::bad_data(format!(
            "unknown command /{name} (try /help)"
        ))),
    }
}

fn chat_processor(hub: Hub, node: Node) -> impl sockloop::supervise::Process<Msg = Line> {
    from_fn(move |_ctx, l: Line| {
        let r = process(&hub, &node, &l);
        let _ = l.reply.reply(r);
        Ok(Control::Continue)
    })
}

/// The two processes under a `OneForOne` supervisor, registered by name.
fn tree(node: &Node, hub: &Hub) -> Result<SupervisorRef, sockloop::supervise::SpawnError> {
    let (h1, h2, n2) = (hub.clone(), hub.clone(), node.clone());
    SupervisorSpec::new(Strategy::OneForOne)
        .intensity(20, Duration::from_secs(10))
        .child(
            ChildSpec::worker(ROOM_MANAGER, move || room_manager(h1.clone()))
                .register_as(ROOM_MANAGER),
        )
        .child(
            ChildSpec::worker(CHAT_PROCESSOR, move || {
                chat_processor(h2.clone(), n2.clone())
            })
            .register_as(CHAT_PROCESSOR),
        )
        .start(node)
}

fn forward_err(who: &str, e: impl std::fmt::Display) -> HubError {
    HubError::internal(format!("{who} unavailable: {e}"))
}

/// The node's hub: the socket handlers forward to the processes.
pub fn hub(node: &Node, bus: RedisBus, name: &str) -> Hub {
    let rooms = RoomOptions::new();
    let cfg = HubConfig::new().auto_create(Some(rooms.clone()));
    let (n1, n2, n3, n4) = (node.clone(), node.clone(), node.clone(), node.clone());
    let hub = Hub::builder()
        .config(cfg)
        .middleware(mw::recover())
        .middleware(mw::rate_limit(sockloop::hub::RateLimit::per_conn(
            30,
            Duration::from_secs(3),
        )))
        .sessions(SessionConfig::default())
        .cluster(bus, ClusterConfig::new(name))
        .on("chat:say", move |ctx: &mut Ctx| {
            let s: chat::Say = ctx.data()?;
            let conn = ctx.conn_id();
            let make = |reply| Line {
                conn,
                room: s.room,
                text: s.text,
                reply,
            };
            n1.call(CHAT_PROCESSOR, make, FORWARD_WAIT)
                .map_err(|e| forward_err(CHAT_PROCESSOR, e))??;
            ctx.ack(&json!({"ok": true}))
        })
        .on("room:join", move |ctx: &mut Ctx| {
            let a: chat::RoomArg = ctx.data()?;
            let conn = ctx.conn_id();
            let (room, users) = n2
                .call(
                    ROOM_MANAGER,
                    |r| RoomMsg::Join(conn, a.room, r),
                    FORWARD_WAIT,
                )
                .map_err(|e| forward_err(ROOM_MANAGER, e))??;
            ctx.ack(&json!({"room": room, "users": users}))
        })
        .on("room:leave", move |ctx: &mut Ctx| {
            let a: chat::RoomArg = ctx.data()?;
            let conn = ctx.conn_id();
            let room = n3
                .call(
                    ROOM_MANAGER,
                    |r| RoomMsg::Leave(conn, a.room, r),
                    FORWARD_WAIT,
                )
                .map_err(|e| forward_err(ROOM_MANAGER, e))??;
            ctx.ack(&json!({ "room": room }))
        })
        .on("room:typing", |ctx: &mut Ctx| {
            let a: chat::RoomArg = ctx.data()?;
            let (hub, id) = (ctx.hub(), ctx.conn_id());
            match a.typing {
                true => hub.typing(id, &a.room)?,
                false => hub.stop_typing(id, &a.room)?,
            }
            ctx.ack(&json!({ "room": a.room }))
        })
        .on("room:list", |ctx: &mut Ctx| {
            let rooms: Vec<_> = ctx
                .hub()
                .rooms()
                .into_iter()
                .map(|r| json!({"room": r.name, "users": ctx.hub().room_users(&r.name).len()}))
                .collect();
            ctx.ack(&json!({ "rooms": rooms }))
        })
        .on_connect(move |_hub, ws| {
            let _ = n4.send(ROOM_MANAGER, RoomMsg::Connected(ws.id()));
        })
        .build();
    hub.create_room(chat::LOBBY, rooms.cleanup(Cleanup::Keep))
        .expect("a new hub has no rooms");
    hub
}

/// A running node.
pub struct App {
    /// The hub (a node of the cluster).
    pub hub: Hub,
    /// Its server.
    pub server: Server,
    /// The processes' supervisor.
    pub supervisor: SupervisorRef,
}

/// Starts a node on `rt`: the chat page at `/`, the WebSocket (and long-polling) at `/ws`.
///
/// # Errors
/// When the address cannot be bound or the processes cannot start.
pub fn start(
    rt: &Runtime,
    addr: &str,
    redis: &[String],
    name: &str,
) -> Result<App, Box<dyn std::error::Error>> {
    let bus = RedisBus::new(RedisBusConfig::new(redis.iter().cloned()))?;
    let node = rt.node().clone();
    let hub = hub(&node, bus, name);
    let supervisor = tree(&node, &hub)?;
    let ws = WsServerConfig::new()
        .path(Some("/ws".into()))
        .polling(Some(PollingConfig::new()))
        .authenticator(|req| chat::authenticate(req, &[]))
        .http(chat::http);
    let ws = hub.server_config(ws);
    let server = rt.serve(Listen::tcp(addr)).websocket(ws, hub.factory())?;
    hub.attach(&server);
    Ok(App {
        hub,
        server,
        supervisor,
    })
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("distributed_chat: {msg}");
    }
    eprintln!(
        "usage: distributed_chat [--addr HOST:PORT] [--redis URL]... [--node NAME]\n  \
         --addr   where to listen (default 127.0.0.1:8080)\n  \
         --redis  a Redis instance (repeatable; default redis://127.0.0.1:6379)\n  \
         --node   this node's name, unique in the cluster (default HOSTNAME-PID)"
    );
    std::process::exit(2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    sockloop::signal::block_termination();
    let (mut addr, mut redis, mut name) = ("127.0.0.1:8080".to_owned(), Vec::new(), None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--addr" => addr = value(),
            "--redis" => redis.push(value()),
            "--node" => name = Some(value()),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if redis.is_empty() {
        redis.push("redis://127.0.0.1:6379".into());
    }
    let name = name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let rt = Runtime::new()?;
    let app = start(&rt, &addr, &redis, &name)?;
    let at = app.server.local_addr();
    println!("node {name}: open http://{at}/ (WebSocket ws://{at}/ws?nick=NAME)");
    let sig = sockloop::signal::wait_termination();
    println!("signal {sig}: draining");
    let clean = app.server.shutdown(Duration::from_secs(5));
    app.hub.leave_cluster();
    rt.shutdown(Duration::from_secs(1));
    println!("stopped (clean: {clean})");
    Ok(())
}
