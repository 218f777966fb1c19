//! Supervised chat, after the classic OTP design: a **room-manager** process and a
//! **chat-processor** process under a `OneForOne` supervisor, fed by socket events.
//!
//! ```text
//! cargo run --release --example supervised_chat            # http://127.0.0.1:8081
//! ```
//!
//! Open the page in two tabs and chat. Typing `/crash` makes the chat-processor panic: the
//! supervisor restarts it (the terminal and every user see a system message), every user
//! stays connected, and the next messages flow — messages sent during the restart wait
//! for the new instance instead of being lost. `/join ROOM` moves you to another room (the
//! room-manager sends you its recent history); `/rooms` lists the rooms it knows.
//!
//! - The WebSocket handlers (hub routes, on the runtime's supervised handler threads) only
//!   parse envelopes and forward them to the processes by registered name.
//! - The room-manager owns room membership and history: it joins connections to rooms
//!   through the hub and is itself subscribed to every room it manages (a process in a
//!   room), so it keeps the last messages of each for late joiners.
//! - The chat-processor turns messages into room broadcasts and runs the slash commands.
//!   A socket handler waits until the processor has *taken* its line; a line caught in the
//!   mailbox of a crashed instance is handed again to the new one (see `deliver_line`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use sockloop::http::Response;
use sockloop::hub::{mw, Ctx, Hub, HubError, RoomEvent};
use sockloop::supervise::{
    BoxError, ChildSpec, Context, Control, Handled, Node, Pid, Process, SendError, Strategy,
    SupervisorRef, SupervisorSpec, SystemEvent,
};
use sockloop::{ConnId, Identity, Listen, Rejection, Runtime, Server, WsServerConfig};

/// The room every connection starts in.
pub const LOBBY: &str = "lobby";
/// Registered names of the two processes.
pub const ROOM_MANAGER: &str = "room-manager";
/// See [`ROOM_MANAGER`].
pub const CHAT_PROCESSOR: &str = "chat-processor";
/// Messages of history kept per room.
const HISTORY: usize = 20;
/// How long a socket handler waits for a restarting process before giving up.
const FORWARD_WAIT: Duration = Duration::from_secs(3);

/// What the chat-processor handles.
pub enum ChatMsg {
    /// A line typed by a user.
    Say {
        /// The sender's connection.
        conn: ConnId,
        /// The sender's nickname.
        nick: String,
        /// The line.
        text: String,
        /// Told when the processor takes the line (before it handles it).
        taken: crossbeam_channel::Sender<()>,
    },
}

/// What the room-manager handles.
pub enum RoomMsg {
    /// Put a connection in a room (leaving its current one).
    Join {
        /// The connection.
        conn: ConnId,
        /// The room.
        room: String,
    },
    /// Tell a connection which rooms exist.
    List {
        /// The connection.
        conn: ConnId,
    },
    /// Something happened in a room the manager is subscribed to.
    Room(RoomEvent),
}

impl From<RoomEvent> for RoomMsg {
    fn from(e: RoomEvent) -> Self {
        RoomMsg::Room(e)
    }
}

/// Owns rooms: membership (through the hub) and each room's recent history.
struct RoomManager {
    hub: Hub,
    current: HashMap<ConnId, String>,
    history: HashMap<String, VecDeque<serde_json::Value>>,
}

impl RoomManager {
    fn watch(&mut self, ctx: &Context<RoomMsg>, room: &str) {
        if !self.history.contains_key(room) {
            self.history.insert(room.to_owned(), VecDeque::new());
            self.hub.subscribe_process(room, ctx.me().clone());
        }
    }

    fn join(&mut self, ctx: &Context<RoomMsg>, conn: ConnId, room: String) {
        self.watch(ctx, &room);
        if let Some(old) = self.current.insert(conn, room.clone()) {
            let _ = self.hub.leave(conn, &old);
        }
        if let Err(e) = self.hub.join(conn, &room) {
            let text = format!("cannot join {room}: {}", e.message);
            self.hub
                .to_conn(conn)
                .emit("system", &json!({ "text": text }));
            return;
        }
        let past: Vec<_> = self.history[&room].iter().cloned().collect();
        self.hub
            .to_conn(conn)
            .emit("joined", &json!({"room": room, "history": past}));
    }

    fn remember(&mut self, ev: RoomEvent) {
        match ev {
            RoomEvent::Message { room, text } => {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                    return;
                };
                if v["event"] != "message" {
                    return; // the hub's own notices are not history
                }
                let h = self.history.entry(room).or_default();
                h.push_back(v["data"].clone());
                while h.len() > HISTORY {
                    h.pop_front();
                }
            }
            RoomEvent::Left { conn, room, .. } => {
                if self.current.get(&conn) == Some(&room) {
                    self.current.remove(&conn);
                }
            }
            RoomEvent::Joined { .. } => {}
        }
    }
}

impl Process for RoomManager {
    type Msg = RoomMsg;

    fn init(&mut self, ctx: &mut Context<RoomMsg>) -> Result<(), BoxError> {
        self.watch(ctx, LOBBY);
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<RoomMsg>, msg: RoomMsg) -> Handled {
        match msg {
            RoomMsg::Join { conn, room } => self.join(ctx, conn, room),
            RoomMsg::List { conn } => {
                let mut rooms: Vec<&String> = self.history.keys().collect();
                rooms.sort();
                let text = format!("rooms: {}", join_names(&rooms));
                self.hub
                    .to_conn(conn)
                    .emit("system", &json!({ "text": text }));
            }
            RoomMsg::Room(ev) => self.remember(ev),
        }
        Ok(Control::Continue)
    }
}

fn join_names(names: &[&String]) -> String {
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Turns lines into room broadcasts and runs the slash commands.
struct ChatProcessor {
    hub: Hub,
    node: Node,
}

impl ChatProcessor {
    fn say(&self, conn: ConnId, nick: &str, text: &str) {
        let room = self.room_of(conn);
        let msg = json!({"room": room, "from": nick, "text": text});
        self.hub.to_room(&room).emit("message", &msg);
    }

    fn room_of(&self, conn: ConnId) -> String {
        let info = self.hub.conn_info(conn);
        let rooms = info.map(|i| i.rooms).unwrap_or_default();
        rooms.into_iter().next().unwrap_or_else(|| LOBBY.to_owned())
    }

    fn to_manager(&self, msg: RoomMsg) {
        if forward(&self.node, ROOM_MANAGER, msg).is_err() {
            log::warn!("room-manager unavailable");
        }
    }
}

impl Process for ChatProcessor {
    type Msg = ChatMsg;

    fn handle(&mut self, _ctx: &mut Context<ChatMsg>, msg: ChatMsg) -> Handled {
        let ChatMsg::Say {
            conn,
            nick,
            text,
            taken,
        } = msg;
        let _ = taken.send(());
        let mut words = text.splitn(2, ' ');
        match (words.next().unwrap_or(""), words.next()) {
            ("/crash", why) => panic!("{nick} crashed the chat-processor: {}", why.unwrap_or("")),
            ("/join", Some(room)) if !room.trim().is_empty() => {
                let room = room.trim().to_owned();
                self.to_manager(RoomMsg::Join { conn, room });
            }
            ("/rooms", _) => self.to_manager(RoomMsg::List { conn }),
            (cmd, _) if cmd.starts_with('/') => {
                let text = format!("unknown command {cmd} (try /join ROOM, /rooms, /crash)");
                self.hub
                    .to_conn(conn)
                    .emit("system", &json!({ "text": text }));
            }
            _ => self.say(conn, &nick, &text),
        }
        Ok(Control::Continue)
    }
}

/// Sends to a registered process, waiting (bounded) while it is being restarted: a
/// message sent during a restart reaches the new instance instead of being lost.
fn forward<M: Send + 'static>(node: &Node, name: &str, mut msg: M) -> Result<(), M> {
    let deadline = Instant::now() + FORWARD_WAIT;
    loop {
        match node.send(name, msg) {
            Ok(()) => return Ok(()),
            Err(SendError::MailboxFull(m) | SendError::NoProcess(m))
                if Instant::now() < deadline =>
            {
                msg = m;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into_inner()),
        }
    }
}

/// Hands a line to the chat-processor and waits until an instance has taken it. A line
/// that was still in the mailbox of an instance that crashed (on an earlier line) is sent
/// again to the next instance: nothing is lost. A line the processor took is never resent,
/// so a line that crashes it (`/crash`) is not replayed into a crash loop.
fn deliver_line(node: &Node, conn: ConnId, nick: &str, text: &str) -> Result<(), HubError> {
    let unavailable = || HubError::internal("the chat-processor is unavailable");
    let deadline = Instant::now() + FORWARD_WAIT;
    let mut dead: Option<Pid> = None;
    while Instant::now() < deadline {
        // While an instance is being replaced, its name still points at it for a moment.
        let Some(pid) = node.whereis(CHAT_PROCESSOR).filter(|p| Some(*p) != dead) else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let (taken, rx) = crossbeam_channel::bounded(1);
        let msg = ChatMsg::Say {
            conn,
            nick: nick.to_owned(),
            text: text.to_owned(),
            taken,
        };
        match node.send(pid, msg) {
            Ok(()) => {}
            Err(SendError::NoProcess(_)) => {
                dead = Some(pid);
                continue;
            }
            Err(SendError::MailboxFull(_)) => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Err(_) => return Err(unavailable()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(()) => return Ok(()),
            // Dropped unread with the mailbox of an instance that died: try the next one.
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => dead = Some(pid),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
        }
    }
    Err(unavailable())
}

#[derive(Deserialize)]
struct Say {
    text: String,
}

/// The hub: socket events in, forwarded to the processes.
fn hub(node: &Node) -> Hub {
    let (n1, n2) = (node.clone(), node.clone());
    Hub::builder()
        .middleware(mw::recover())
        .middleware(mw::auth_required())
        .on("say", move |ctx: &mut Ctx| {
            let Say { text } = ctx.data()?;
            let nick = ctx.user().unwrap_or("?");
            deliver_line(&n1, ctx.conn_id(), nick, &text)?;
            ctx.ack(&true)
        })
        .on_connect(move |_hub, ws| {
            let join = RoomMsg::Join {
                conn: ws.id(),
                room: LOBBY.to_owned(),
            };
            if forward(&n2, ROOM_MANAGER, join).is_err() {
                log::warn!("room-manager unavailable");
            }
        })
        .build()
}

/// The supervision tree: room-manager, then chat-processor, one for one.
fn tree(node: &Node, hub: &Hub) -> Result<SupervisorRef, BoxError> {
    let (h1, h2, n2) = (hub.clone(), hub.clone(), node.clone());
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(20, Duration::from_secs(10))
        .child(
            ChildSpec::worker(ROOM_MANAGER, move || RoomManager {
                hub: h1.clone(),
                current: HashMap::new(),
                history: HashMap::new(),
            })
            .register_as(ROOM_MANAGER),
        )
        .child(
            ChildSpec::worker(CHAT_PROCESSOR, move || ChatProcessor {
                hub: h2.clone(),
                node: n2.clone(),
            })
            .register_as(CHAT_PROCESSOR),
        );
    Ok(spec.start(node)?)
}

/// Shows restarts to everyone (and on the terminal).
fn announce_restarts(node: &Node, hub: &Hub) {
    let hub = hub.clone();
    node.set_hook(move |e: &SystemEvent| match e {
        SystemEvent::Exited { pid, reason } if reason.is_abnormal() => {
            println!("process {pid:?} exited: {reason:?}");
        }
        SystemEvent::Restarted {
            child, old, new, ..
        } => {
            let text = format!("{child} restarted ({old:?} → {new:?}); you are still connected");
            println!("{text}");
            hub.to_all().emit("system", &json!({ "text": text }));
        }
        _ => {}
    });
}

/// The running example: the server, the hub and the supervisor.
pub struct App {
    /// The WebSocket + HTTP server.
    pub server: Server,
    /// The hub.
    pub hub: Hub,
    /// The supervisor of the two processes.
    pub supervisor: SupervisorRef,
}

/// Starts everything on `rt`, listening on `addr`.
///
/// # Errors
/// When the listener or the processes cannot start.
pub fn start(rt: &Runtime, addr: &str) -> Result<App, BoxError> {
    let node = rt.node();
    let hub = hub(node);
    let supervisor = tree(node, &hub)?;
    announce_restarts(node, &hub);
    let cfg = WsServerConfig::new()
        .path(Some("/ws".into()))
        .authenticator(|req| match req.query_param("nick") {
            Some(n) if !n.is_empty() && n.len() <= 32 => Ok(Some(Identity::user(n))),
            _ => Err(Rejection::new(400, "a nick (1 to 32 bytes) is required")),
        })
        .http(|req| match req.path() {
            "/" => Response::html(PAGE),
            _ => Response::not_found(),
        });
    let server = rt.serve(Listen::tcp(addr)).websocket(cfg, hub.factory())?;
    hub.attach(&server);
    Ok(App {
        server,
        hub,
        supervisor,
    })
}

#[allow(dead_code)] // the integration test mounts this file as a module and calls `start`
fn main() -> Result<(), BoxError> {
    sockloop::signal::block_termination();
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    let rt = Runtime::new()?;
    let app = start(&rt, &addr)?;
    println!(
        "supervised chat on http://{}/ — type /crash to crash the chat-processor",
        app.server.local_addr()
    );
    sockloop::signal::wait_termination();
    app.hub.shutdown(&app.server, Duration::from_secs(5));
    rt.shutdown(Duration::from_secs(5));
    Ok(())
}

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>supervised chat</title>
<style>body{font:15px system-ui;margin:2em;max-width:50em}#log{height:60vh;overflow:auto;border:1px solid #ccc;padding:.5em}
.sys{color:#777;font-style:italic}input{width:70%}</style>
<h3>supervised chat <small id="who"></small></h3><div id="log"></div>
<form id="f"><input id="t" autocomplete="off" placeholder="message, /join ROOM, /rooms or /crash"><button>send</button></form>
<script>
const nick = prompt("nickname") || ("guest" + Math.floor(Math.random() * 1000));
document.getElementById("who").textContent = "as " + nick;
const ws = new WebSocket(`ws://${location.host}/ws?nick=${encodeURIComponent(nick)}`);
const log = (cls, text) => { const d = document.createElement("div"); d.className = cls; d.textContent = text;
  const l = document.getElementById("log"); l.appendChild(d); l.scrollTop = l.scrollHeight; };
ws.onmessage = (e) => { const m = JSON.parse(e.data);
  if (m.event === "message") log("msg", `[${m.data.room}] ${m.data.from}: ${m.data.text}`);
  else if (m.event === "system") log("sys", m.data.text);
  else if (m.event === "joined") { log("sys", `you are in ${m.data.room}`); for (const h of m.data.history) log("msg", `[${h.room}] ${h.from}: ${h.text}`); }
  else if (m.event === "error") log("sys", "error: " + m.data.message); };
ws.onclose = (e) => log("sys", `disconnected (${e.code})`);
document.getElementById("f").onsubmit = (e) => { e.preventDefault(); const t = document.getElementById("t");
  if (t.value) ws.send(JSON.stringify({event: "say", data: {text: t.value}})); t.value = ""; };
</script>"#;
