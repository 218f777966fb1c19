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
//! - A **keeper** process owns the tree: it is linked to the root supervisor and traps its
//!   exit. When the tree gives up (its restart intensity is exceeded), the keeper says so in
//!   the log, marks the chat as down — new connections get 503 and every `say` an immediate
//!   error instead of a 3 s wait — and starts a fresh tree after a backoff (0.2 s, doubling
//!   up to 10 s, reset once a tree stayed up for a minute).
//! - `/crash` is rate-limited (one per user every 10 s, five per 10 s for everyone), so no
//!   one can exhaust the restart intensity (20 in 10 s) for everyone. Nicknames are checked
//!   as in the `chat` example (1 to 24 letters, digits, `_`, `-`, `.`) and unique (a taken
//!   one gets the first free `nick2`, `nick3`…); rooms nobody is in are removed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use sockloop::http::Response;
use sockloop::hub::{mw, Ctx, Hub, HubError, RoomEvent, SubscriptionId};
use sockloop::supervise::{
    BoxError, ChildSpec, Context, Control, ExitReason, Handled, Node, Pid, Process, ProcessRef,
    ReplyTo, SendError, SpawnOptions, Strategy, SupervisorRef, SupervisorSpec, SystemEvent,
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
/// Restarts the tree tolerates: more within the period and it gives up (escalates).
const INTENSITY: (u32, Duration) = (20, Duration::from_secs(10));
/// The keeper's backoff before a fresh tree: first, maximum, and the uptime that resets it.
const TREE_BACKOFF: (Duration, Duration, Duration) = (
    Duration::from_millis(200),
    Duration::from_secs(10),
    Duration::from_secs(60),
);
/// `/crash` allowed per user, and for everyone, within `CRASH_WINDOW`.
const CRASH_PER_USER: usize = 1;
/// See [`CRASH_PER_USER`].
const CRASH_GLOBAL: usize = 5;
/// See [`CRASH_PER_USER`].
const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// Longest nickname, in characters.
const MAX_NICK: usize = 24;

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

/// A room the manager knows: its subscription, members and recent history.
#[derive(Default)]
struct Room {
    sub: Option<SubscriptionId>,
    members: HashSet<ConnId>,
    history: VecDeque<serde_json::Value>,
}

/// Owns rooms: membership (through the hub) and each room's recent history. A room other
/// than the lobby is removed when its last member leaves.
struct RoomManager {
    hub: Hub,
    current: HashMap<ConnId, String>,
    rooms: HashMap<String, Room>,
}

impl RoomManager {
    fn watch(&mut self, ctx: &Context<RoomMsg>, room: &str) {
        if !self.rooms.contains_key(room) {
            let sub = self.hub.subscribe_process(room, ctx.me().clone());
            let r = Room {
                sub: Some(sub),
                ..Room::default()
            };
            self.rooms.insert(room.to_owned(), r);
        }
    }

    /// Forgets a room nobody is in (never the lobby).
    fn prune(&mut self, room: &str) {
        let empty = self.rooms.get(room).is_some_and(|r| r.members.is_empty());
        if room != LOBBY && empty {
            if let Some(sub) = self.rooms.remove(room).and_then(|r| r.sub) {
                self.hub.unsubscribe(sub);
            }
        }
    }

    fn join(&mut self, ctx: &Context<RoomMsg>, conn: ConnId, room: String) {
        self.watch(ctx, &room);
        if let Some(old) = self.current.insert(conn, room.clone()) {
            let _ = self.hub.leave(conn, &old);
            if let Some(r) = self.rooms.get_mut(&old) {
                r.members.remove(&conn);
            }
            self.prune(&old);
        }
        if let Err(e) = self.hub.join(conn, &room) {
            let text = format!("cannot join {room}: {}", e.message);
            self.hub
                .to_conn(conn)
                .emit("system", &json!({ "text": text }));
            return;
        }
        let r = self.rooms.entry(room.clone()).or_default();
        r.members.insert(conn);
        let past: Vec<_> = r.history.iter().cloned().collect();
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
                let Some(r) = self.rooms.get_mut(&room) else {
                    return;
                };
                r.history.push_back(v["data"].clone());
                while r.history.len() > HISTORY {
                    r.history.pop_front();
                }
            }
            RoomEvent::Left { conn, room, .. } => {
                if self.current.get(&conn) == Some(&room) {
                    self.current.remove(&conn);
                }
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.members.remove(&conn);
                }
                self.prune(&room);
            }
            RoomEvent::Joined { conn, room, .. } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.members.insert(conn);
                }
            }
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
                let mut rooms: Vec<String> = self
                    .rooms
                    .iter()
                    .map(|(name, r)| format!("{name} ({})", r.members.len()))
                    .collect();
                rooms.sort();
                let text = format!("rooms: {}", rooms.join(", "));
                self.hub
                    .to_conn(conn)
                    .emit("system", &json!({ "text": text }));
            }
            RoomMsg::Room(ev) => self.remember(ev),
        }
        Ok(Control::Continue)
    }
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

/// Hands a line to the chat-processor and waits until an instance has taken it (no rate
/// limit here: that is the socket route's job). A line
/// that was still in the mailbox of an instance that crashed (on an earlier line) is sent
/// again to the next instance: nothing is lost. A line the processor took is never resent,
/// so a line that crashes it (`/crash`) is not replayed into a crash loop.
pub fn deliver_line(node: &Node, conn: ConnId, nick: &str, text: &str) -> Result<(), HubError> {
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

/// Recent `/crash` times: everyone's, and per user.
type Crashes = (VecDeque<Instant>, HashMap<String, VecDeque<Instant>>);

/// State kept outside the processes, so that it survives their restarts.
#[derive(Default)]
struct Shared {
    /// Whether a supervision tree is running (the keeper sets it).
    up: AtomicBool,
    /// Lower-cased nickname → connection; connection → nickname.
    nicks: Mutex<(HashMap<String, ConnId>, HashMap<ConnId, String>)>,
    /// Recent `/crash` times: everyone's, and per user.
    crashes: Mutex<Crashes>,
}

impl Shared {
    fn nicks(&self) -> MutexGuard<'_, (HashMap<String, ConnId>, HashMap<ConnId, String>)> {
        self.nicks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives `id` the nickname `wanted`, or the first free `wanted2`, `wanted3`…
    fn claim(&self, wanted: &str, id: ConnId) -> String {
        let mut st = self.nicks();
        let mut nick = wanted.to_owned();
        let mut n = 2u64;
        while st.0.contains_key(&nick.to_lowercase()) {
            let suffix = n.to_string();
            let base: String = wanted.chars().take(MAX_NICK - suffix.len()).collect();
            nick = format!("{base}{suffix}");
            n += 1;
        }
        st.0.insert(nick.to_lowercase(), id);
        st.1.insert(id, nick.clone());
        nick
    }

    fn release(&self, id: ConnId) {
        let mut st = self.nicks();
        if let Some(nick) = st.1.remove(&id) {
            st.0.remove(&nick.to_lowercase());
        }
    }

    /// Whether `user` may `/crash` now (and counts it if so).
    fn may_crash(&self, user: &str, now: Instant) -> bool {
        let mut st = self.crashes.lock().unwrap_or_else(|e| e.into_inner());
        let (all, per_user) = &mut *st;
        let fresh = |q: &mut VecDeque<Instant>| {
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= CRASH_WINDOW)
            {
                q.pop_front();
            }
        };
        fresh(all);
        let mine = per_user.entry(user.to_owned()).or_default();
        fresh(mine);
        if all.len() >= CRASH_GLOBAL || mine.len() >= CRASH_PER_USER {
            return false;
        }
        all.push_back(now);
        mine.push_back(now);
        per_user.retain(|_, q| !q.is_empty());
        true
    }
}

/// Checks a nickname as the `chat` example does: 1 to 24 letters, digits, `_`, `-`, `.`.
pub fn check_nick(nick: &str) -> Result<(), String> {
    let n = nick.chars().count();
    if n == 0 || n > MAX_NICK {
        return Err(format!("a nickname has 1 to {MAX_NICK} characters"));
    }
    if !nick
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("a nickname has only letters, digits, '_', '-' and '.'".into());
    }
    Ok(())
}

/// The `say` route: fails at once while the tree is down, rate-limits `/crash`.
fn say(node: &Node, shared: &Shared, ctx: &mut Ctx) -> Result<(), HubError> {
    let Say { text } = ctx.data()?;
    if !shared.up.load(Ordering::Acquire) {
        return Err(HubError::internal(
            "the chat is restarting; try again in a moment",
        ));
    }
    let nick = ctx.user().unwrap_or("?").to_owned();
    let crash = text.split(' ').next() == Some("/crash");
    if crash && !shared.may_crash(&nick, Instant::now()) {
        return Err(HubError::forbidden(format!(
            "slow down: /crash is limited to {CRASH_PER_USER} per user and \
             {CRASH_GLOBAL} for everyone every {CRASH_WINDOW:?}"
        )));
    }
    deliver_line(node, ctx.conn_id(), &nick, &text)?;
    ctx.ack(&true)
}

/// The hub: socket events in, forwarded to the processes.
fn hub(node: &Node, shared: &Arc<Shared>) -> Hub {
    let (n1, n2) = (node.clone(), node.clone());
    let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
    Hub::builder()
        .middleware(mw::recover())
        .middleware(mw::auth_required())
        .on("say", move |ctx: &mut Ctx| say(&n1, &s1, ctx))
        .on_connect(move |hub, ws| {
            let wanted = ws.identity().map(|i| i.user.clone()).unwrap_or_default();
            let nick = s2.claim(&wanted, ws.id());
            if nick != wanted {
                if let Err(e) = hub.set_user(ws.id(), &nick) {
                    log::warn!("cannot rename {wanted} to {nick}: {e}");
                }
            }
            hub.to_conn(ws.id())
                .emit("welcome", &json!({ "nick": nick }));
            let join = RoomMsg::Join {
                conn: ws.id(),
                room: LOBBY.to_owned(),
            };
            if forward(&n2, ROOM_MANAGER, join).is_err() {
                log::warn!("room-manager unavailable");
            }
        })
        .on_disconnect(move |_, ws, _, _| s3.release(ws.id()))
        .build()
}

/// The supervision tree: room-manager, then chat-processor, one for one, linked to the
/// keeper that started it.
fn tree(node: &Node, hub: &Hub, keeper: Pid) -> Result<SupervisorRef, BoxError> {
    let (h1, h2, n2) = (hub.clone(), hub.clone(), node.clone());
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(INTENSITY.0, INTENSITY.1)
        .child(
            ChildSpec::worker(ROOM_MANAGER, move || RoomManager {
                hub: h1.clone(),
                current: HashMap::new(),
                rooms: HashMap::new(),
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
    Ok(spec.start_with(node, SpawnOptions::default().link(keeper))?)
}

/// What the keeper handles.
pub enum KeeperMsg {
    /// Start a fresh tree (after the backoff).
    Restart,
    /// The running tree's supervisor, if any.
    Tree(ReplyTo<Option<SupervisorRef>>),
}

/// Owns the supervision tree: starts it, and starts a fresh one after a backoff when it
/// gives up, instead of leaving a server that accepts users it cannot serve.
struct Keeper {
    hub: Hub,
    shared: Arc<Shared>,
    tree: Option<SupervisorRef>,
    since: Instant,
    backoff: Duration,
}

impl Keeper {
    fn start_tree(&mut self, ctx: &mut Context<KeeperMsg>) -> Result<(), BoxError> {
        let sup = tree(ctx.node(), &self.hub, ctx.pid())?;
        self.tree = Some(sup);
        self.since = Instant::now();
        self.shared.up.store(true, Ordering::Release);
        Ok(())
    }

    fn retry_later(&mut self, ctx: &mut Context<KeeperMsg>, why: &str) {
        self.shared.up.store(false, Ordering::Release);
        if self.since.elapsed() >= TREE_BACKOFF.2 {
            self.backoff = TREE_BACKOFF.0;
        }
        log::error!(
            "supervised_chat: {why}; a fresh tree starts in {:?}",
            self.backoff
        );
        println!("{why}; a fresh tree starts in {:?}", self.backoff);
        let text = format!("the chat is restarting ({why})");
        self.hub.to_all().emit("system", &json!({ "text": text }));
        ctx.send_after(self.backoff, KeeperMsg::Restart);
        self.backoff = (self.backoff * 2).min(TREE_BACKOFF.1);
    }
}

impl Process for Keeper {
    type Msg = KeeperMsg;

    fn init(&mut self, ctx: &mut Context<KeeperMsg>) -> Result<(), BoxError> {
        ctx.trap_exit(true);
        self.start_tree(ctx)
    }

    fn handle(&mut self, ctx: &mut Context<KeeperMsg>, msg: KeeperMsg) -> Handled {
        match msg {
            KeeperMsg::Restart => match self.start_tree(ctx) {
                Ok(()) => {
                    println!("a fresh supervision tree is running");
                    let text = "the chat is back";
                    self.hub.to_all().emit("system", &json!({ "text": text }));
                }
                Err(e) => self.retry_later(ctx, &format!("the tree failed to start: {e}")),
            },
            KeeperMsg::Tree(reply) => drop(reply.reply(self.tree.clone())),
        }
        Ok(Control::Continue)
    }

    fn handle_exit(&mut self, ctx: &mut Context<KeeperMsg>, from: Pid, r: ExitReason) -> Handled {
        if self.tree.as_ref().map(SupervisorRef::pid) != Some(from) {
            return Ok(Control::Continue);
        }
        self.tree = None;
        match r {
            // Stopped on purpose (the node shuts down): nothing to restart.
            ExitReason::Shutdown | ExitReason::Normal => {
                self.shared.up.store(false, Ordering::Release);
                Ok(Control::Stop)
            }
            r => {
                self.retry_later(ctx, &format!("the supervision tree gave up ({r})"));
                Ok(Control::Continue)
            }
        }
    }
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
        SystemEvent::SupervisorEscalated { supervisor, .. } => {
            log::error!("supervised_chat: supervisor {supervisor} exceeded its intensity");
        }
        _ => {}
    });
}

/// The running example: the server, the hub and the keeper of the supervision tree.
pub struct App {
    /// The WebSocket + HTTP server.
    pub server: Server,
    /// The hub.
    pub hub: Hub,
    /// The keeper process, which owns the supervision tree.
    pub keeper: ProcessRef<KeeperMsg>,
}

impl App {
    /// The supervisor of the two processes now (`None` while the keeper waits to start a
    /// fresh tree).
    pub fn supervisor(&self) -> Option<SupervisorRef> {
        self.keeper
            .call(KeeperMsg::Tree, FORWARD_WAIT)
            .ok()
            .flatten()
    }
}

/// Starts everything on `rt`, listening on `addr`.
///
/// # Errors
/// When the listener or the processes cannot start.
pub fn start(rt: &Runtime, addr: &str) -> Result<App, BoxError> {
    let node = rt.node();
    let shared = Arc::new(Shared::default());
    let hub = hub(node, &shared);
    announce_restarts(node, &hub);
    let keeper = node.spawn(Keeper {
        hub: hub.clone(),
        shared: shared.clone(),
        tree: None,
        since: Instant::now(),
        backoff: TREE_BACKOFF.0,
    })?;
    let cfg = WsServerConfig::new()
        .path(Some("/ws".into()))
        .authenticator(move |req| {
            if !shared.up.load(Ordering::Acquire) {
                return Err(Rejection::new(503, "the chat is restarting"));
            }
            let nick = req.query_param("nick").unwrap_or("").trim();
            check_nick(nick).map_err(|m| Rejection::new(400, m))?;
            Ok(Some(Identity::user(nick)))
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
        keeper,
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
