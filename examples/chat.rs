//! A chat server for browsers, on the hub: nicknames, rooms, messages, live user lists,
//! typing indicators, private messages and slash commands parsed on the server.
//!
//! ```text
//! cargo run --release --example chat                          # http://127.0.0.1:8080
//! cargo run --release --example chat -- --addr 0.0.0.0:9000
//! ```
//!
//! The page (`examples/assets/chat.html`, served at `/`) connects with the hub's browser
//! client (`/sockloop.js`) to `/ws?nick=NAME`, over WebSocket or, where WebSocket is
//! blocked, HTTP long-polling on the same path, with a session that survives cuts; `/health`
//! answers 200 "ok"; `/metrics` serves the Prometheus text exposition (`docs/METRICS.md`).
//! SIGINT / SIGTERM drain gracefully (clients get 1001, 5 s deadline).
//!
//! The page: the rooms one is in (with unread counts) and, under "More rooms", the others
//! the server lists (`room:list`, refreshed on joins and leaves, every 20 s and with ↻) with
//! their head counts, a click joining; the current room's users; lines keep the author's
//! nickname of the moment they were said. In no room, plain text is kept back with a hint
//! and commands still go to the server (`/join ROOM` joins and says so); what was said there
//! (the suffix notice of the welcome among it) comes along into the next room shown. A run
//! of sends refused by the rate limit is one line ("3 messages not sent: slow down"),
//! counted in place until a send gets through. At 640 px wide or less the side bars are
//! drawers behind the header's Rooms and Users toggles.
//!
//! Nicknames: 1 to 24 letters, digits, `_`, `-` or `.`; anything else is refused at the
//! upgrade with HTTP 400. A nickname that looks like one online (any case, fullwidth forms,
//! Cyrillic or Greek look-alikes: see [`skeleton`]) is taken: a newcomer gets the first free
//! numeric suffix (`ann` → `ann2`; the `chat:welcome` event tells the page which one it got),
//! `/nick` is refused. Everyone joins `lobby` (which always exists) at connect.
//!
//! Put online: only the page's own origin (or none: non-browser clients) may open the
//! WebSocket, others get 403; `--allow-origin ORIGIN` (repeatable, `*` for any) widens it.
//! The page is served with a Content-Security-Policy (its inline script and style by hash),
//! `X-Frame-Options: DENY` and `X-Content-Type-Options: nosniff`; `HEAD` has no body.
//!
//! Client events: `chat:say {room, text}` (a message, or a slash command when `text`
//! starts with `/`; `//x` sends `/x` literally; `room` is empty or absent where the page
//! shows no room: commands naming no room still work, the rest get "you are in no room"), `room:join {room}`, `room:leave {room}`,
//! `room:typing {room, typing}` (the built-in events' shapes, see `docs/PROTOCOL.md`),
//! `room:list` (acked with `{rooms: [{room, users}]}`, the listed rooms).
//! Server events: `chat:welcome {nick, conn}`, `chat:joined {room, users}` and
//! `chat:left {room}` (to the connection that joined or left), `chat:message {room, from,
//! kind: "text"|"me", text}`, `chat:private {from, to, text}`, `chat:system {room?, text}`,
//! `chat:nick {nick}`, and the hub's `room:joined`, `room:left`, `room:users`, `typing`,
//! `error`. Commands: `/nick NEW`, `/join ROOM`, `/leave [ROOM]`, `/me ACTION`, `/who [ROOM]`
//! (rooms one is in),
//! `/shrug [TEXT]`, `/msg NICK TEXT`, `/help`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sockloop::http::Response;
use sockloop::hub::{
    mw, Cleanup, Ctx, Hub, HubConfig, HubError, RateLimit, RoomEvents, RoomOptions, SessionConfig,
};
use sockloop::{
    ConnId, Identity, Listen, PollingConfig, Rejection, Runtime, Server, WsConn, WsServerConfig,
};

/// The page, served at `/`.
pub const PAGE: &str = include_str!("assets/chat.html");
/// The room everyone joins at connect; it always exists.
pub const LOBBY: &str = "lobby";
/// Longest nickname, in characters.
pub const MAX_NICK: usize = 24;
/// Longest room name, in characters.
pub const MAX_ROOM: usize = 32;
/// Longest message, in characters.
pub const MAX_TEXT: usize = 2000;
/// What `/shrug` appends.
pub const SHRUG: &str = r"¯\_(ツ)_/¯";

/// The answer to a line that needs a room, typed where the page shows none.
const NO_ROOM: &str = "you are in no room: /join ROOM first";

const HELP: &str = "commands: /nick NEW, /join ROOM, /leave [ROOM], /me ACTION, /who [ROOM], \
                    /shrug [TEXT], /msg NICK TEXT, /help; //text sends /text";

/// How the chat server is set up; every default is listed on its field.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Where to listen (default `127.0.0.1:8080`).
    pub addr: String,
    /// System events of rooms (default [`RoomEvents::Notify`]: joins, leaves, user lists,
    /// typing). [`RoomEvents::Silent`] is for very large rooms (the fanout benchmark).
    pub room_events: RoomEvents,
    /// Per-connection event budget (default 30 at once, refilled 10 per second); `None`
    /// lifts it (the fanout benchmark's publisher).
    pub rate_limit: Option<RateLimit>,
    /// How long a typing indicator lasts without a refresh (default 4 s).
    pub typing_ttl: Duration,
    /// Origins allowed to open the WebSocket besides the page's own (default: none, so
    /// only same-origin pages and clients sending no `Origin`; `*` allows any). Others get
    /// 403.
    pub allowed_origins: Vec<String>,
    /// Sessions (default on, [`SessionConfig::default`]: a 2 min window): the page
    /// (`sockloop.js`) resumes after a cut with nothing lost, duplicated or reordered; a
    /// closed tab keeps its nickname and rooms for the window. `None`: every reconnect is
    /// a new connection.
    pub sessions: Option<SessionConfig>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            addr: "127.0.0.1:8080".into(),
            room_events: RoomEvents::Notify,
            rate_limit: Some(RateLimit::per_conn(30, Duration::from_secs(3))),
            typing_ttl: Duration::from_secs(4),
            allowed_origins: Vec::new(),
            sessions: Some(SessionConfig::default()),
        }
    }
}

/// A running chat server.
pub struct Chat {
    /// The hub: rooms, users, delivery.
    pub hub: Hub,
    /// The WebSocket (and HTTP) server.
    pub server: Server,
}

impl Chat {
    /// Graceful shutdown: clients get 1001, queued output drains, stragglers are closed at
    /// `deadline`. True when everything closed in time.
    pub fn shutdown(&self, deadline: Duration) -> bool {
        self.hub.shutdown(&self.server, deadline)
    }
}

/// The chat's own state: who holds which nickname, who is typing where.
#[derive(Default)]
struct State {
    /// Lower-cased nickname → (connection, nickname as chosen).
    by_nick: HashMap<String, (ConnId, String)>,
    /// Connection → its nickname.
    by_conn: HashMap<ConnId, String>,
    /// Rooms where a connection's typing indicator is on.
    typing: HashMap<ConnId, HashSet<String>>,
}

impl State {
    /// Whether `nick` (or a look-alike) is held by a connection still in the hub.
    fn taken(&self, hub: &Hub, nick: &str) -> bool {
        let held = self.by_nick.get(&skeleton(nick));
        held.is_some_and(|(id, _)| hub.conn(*id).is_some())
    }
}

/// What a nickname looks like, for uniqueness: lower case, fullwidth forms as ASCII, and
/// the Cyrillic and Greek letters that look like Latin ones as those (`аlice` with a
/// Cyrillic `а`, `ａｌｉｃｅ` and `Alice` are all `alice`).
pub fn skeleton(nick: &str) -> String {
    nick.chars()
        .flat_map(char::to_lowercase)
        .map(unconfuse)
        .collect()
}

fn unconfuse(c: char) -> char {
    let fullwidth = ('\u{FF01}'..='\u{FF5E}').contains(&c);
    if fullwidth {
        let ascii = char::from_u32(c as u32 - 0xFEE0).unwrap_or(c);
        return ascii.to_ascii_lowercase();
    }
    match c {
        'а' | 'α' => 'a',
        'в' | 'β' => 'b',
        'с' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'ε' => 'e',
        'һ' => 'h',
        'і' | 'ι' | 'ı' => 'i',
        'ј' => 'j',
        'к' | 'κ' => 'k',
        'м' => 'm',
        'п' | 'η' => 'n',
        'о' | 'ο' | 'σ' => 'o',
        'р' | 'ρ' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'т' | 'τ' => 't',
        'υ' => 'u',
        'ν' => 'v',
        'ԝ' | 'ω' => 'w',
        'х' | 'χ' => 'x',
        'у' | 'γ' => 'y',
        _ => c,
    }
}

#[derive(Default)]
struct Shared(Mutex<State>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives `id` the nickname `wanted`, or the first free `wanted2`, `wanted3`… A
    /// nickname is taken when one that looks the same (see [`skeleton`]) is held by a
    /// connection still in the hub.
    fn claim(&self, hub: &Hub, wanted: &str, id: ConnId) -> String {
        let mut st = self.lock();
        let mut nick = wanted.to_owned();
        let mut n = 2u64;
        while st.taken(hub, &nick) {
            let suffix = n.to_string();
            let base: String = wanted.chars().take(MAX_NICK - suffix.len()).collect();
            nick = format!("{base}{suffix}");
            n += 1;
        }
        st.by_nick.insert(skeleton(&nick), (id, nick.clone()));
        st.by_conn.insert(id, nick.clone());
        nick
    }

    fn nick(&self, id: ConnId) -> Option<String> {
        self.lock().by_conn.get(&id).cloned()
    }

    /// The connection holding `nick` (or a look-alike) and still in the hub, and the
    /// nickname's own spelling. A connection that left the hub (its close began) holds
    /// nothing: what is sent to its nickname is not kept for whoever takes it next.
    fn find(&self, hub: &Hub, nick: &str) -> Option<(ConnId, String)> {
        let st = self.lock();
        let held = st.by_nick.get(&skeleton(nick)).cloned();
        held.filter(|(id, _)| hub.conn(*id).is_some())
    }

    fn release(&self, id: ConnId) {
        let mut st = self.lock();
        if let Some(nick) = st.by_conn.remove(&id) {
            let key = skeleton(&nick);
            if st
                .by_nick
                .get(&key)
                .is_some_and(|(holder, _)| *holder == id)
            {
                st.by_nick.remove(&key);
            }
        }
        st.typing.remove(&id);
    }

    /// Renames `id` to `new` in this registry (which decides uniqueness), then in the hub.
    /// Returns the old nickname.
    fn rename(&self, hub: &Hub, id: ConnId, new: &str) -> Result<String, HubError> {
        let old = {
            let mut st = self.lock();
            let old = st
                .by_conn
                .get(&id)
                .cloned()
                .ok_or_else(|| HubError::not_found("no such connection"))?;
            let holder = st.by_nick.get(&skeleton(new)).map(|h| h.0);
            if holder.is_some_and(|h| h != id) && st.taken(hub, new) {
                return Err(HubError::forbidden(format!("the nickname {new} is taken")));
            }
            st.by_nick.remove(&skeleton(&old));
            st.by_nick.insert(skeleton(new), (id, new.to_owned()));
            st.by_conn.insert(id, new.to_owned());
            old
        };
        // Outside the lock: this pushes the rooms' new user lists. A connection's events
        // are handled one at a time, so nothing renames `id` meanwhile.
        hub.set_user(id, new)?;
        Ok(old)
    }

    fn set_typing(&self, id: ConnId, room: &str, on: bool) -> bool {
        let mut st = self.lock();
        let rooms = st.typing.entry(id).or_default();
        if on {
            rooms.insert(room.to_owned())
        } else {
            rooms.remove(room)
        }
    }
}

/// Checks a nickname: 1 to 24 letters, digits, `_`, `-` or `.`.
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

/// Checks a room name (a leading `#` is dropped): 1 to 32 letters, digits, `_` or `-`.
pub fn room_name(raw: &str) -> Result<String, HubError> {
    let name = raw.trim().trim_start_matches('#');
    let n = name.chars().count();
    let ok = n > 0
        && n <= MAX_ROOM
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-'));
    if !ok {
        return Err(HubError::bad_data(format!(
            "a room name has 1 to {MAX_ROOM} letters, digits, '_' or '-'"
        )));
    }
    Ok(name.to_owned())
}

#[derive(Serialize)]
struct Message<'a> {
    room: &'a str,
    from: &'a str,
    kind: &'a str,
    text: &'a str,
}

/// `chat:say`'s data.
#[derive(Deserialize)]
pub struct Say {
    /// The room the line was typed in: empty (or absent) when the page shows no room, where
    /// commands that name no room (`/join ROOM`, `/msg`, `/nick`, `/help`…) still work.
    #[serde(default)]
    pub room: String,
    /// The line.
    pub text: String,
}

/// The room a command acts on by default: `room`, unless the page showed none.
fn here(room: &str) -> Result<&str, HubError> {
    if room.is_empty() {
        return Err(HubError::bad_data(NO_ROOM));
    }
    Ok(room)
}

/// The data of `room:join`, `room:leave` and `room:typing`.
#[derive(Deserialize)]
pub struct RoomArg {
    /// The room.
    pub room: String,
    /// `room:typing` only: started (default) or stopped.
    #[serde(default = "yes")]
    pub typing: bool,
}

fn yes() -> bool {
    true
}

/// The handlers, sharing the chat's state.
#[derive(Clone)]
struct Handlers(Arc<Shared>);

impl Handlers {
    fn me(&self, ctx: &Ctx) -> Result<String, HubError> {
        self.0
            .nick(ctx.conn_id())
            .ok_or_else(|| HubError::not_found("no nickname for this connection"))
    }

    /// A line only the caller sees.
    fn tell(ctx: &Ctx, room: Option<&str>, text: &str) -> Result<(), HubError> {
        ctx.emit("chat:system", &json!({"room": room, "text": text}))
            .map(drop)
    }

    fn join(&self, ctx: &Ctx, raw: &str) -> Result<String, HubError> {
        let room = room_name(raw)?;
        ctx.join(&room)?;
        let users = ctx.hub().room_users(&room);
        let _ = ctx.emit("chat:joined", &json!({"room": room, "users": users}))?;
        Ok(room)
    }

    fn leave(&self, ctx: &Ctx, raw: &str) -> Result<String, HubError> {
        let room = room_name(raw)?;
        ctx.leave(&room)
            .map_err(|_| HubError::not_found(format!("you are not in #{room}")))?;
        self.0.set_typing(ctx.conn_id(), &room, false);
        let _ = ctx.emit("chat:left", &json!({ "room": room }))?;
        Ok(room)
    }

    /// Sends a line to a room the caller is in; ends the caller's typing indicator there.
    fn post(&self, ctx: &Ctx, room: &str, kind: &str, text: &str) -> Result<(), HubError> {
        let room = here(room)?;
        let hub = ctx.hub();
        if !hub.is_member(ctx.conn_id(), room) {
            return Err(HubError::forbidden(format!("you are not in #{room}")));
        }
        let from = self.me(ctx)?;
        if self.0.set_typing(ctx.conn_id(), room, false) {
            let _ = hub.stop_typing(ctx.conn_id(), room);
        }
        let msg = Message {
            room,
            from: &from,
            kind,
            text,
        };
        // Fire and forget: the handler goes on to the next message while the poller
        // writes, so messages queued meanwhile leave together (one write per member).
        hub.to_room(room).emit_nowait("chat:message", &msg)?;
        Ok(())
    }

    fn say(&self, ctx: &mut Ctx) -> Result<(), HubError> {
        let s: Say = ctx.data()?;
        let text = s.text.trim();
        if text.is_empty() {
            return Err(HubError::bad_data("an empty message"));
        }
        if text.chars().count() > MAX_TEXT {
            return Err(HubError::bad_data(format!(
                "a message has at most {MAX_TEXT} characters"
            )));
        }
        match text.strip_prefix('/') {
            Some(literal) if literal.starts_with('/') => self.post(ctx, &s.room, "text", literal),
            Some(cmd) => self.command(ctx, &s.room, cmd),
            None => self.post(ctx, &s.room, "text", text),
        }?;
        ctx.ack(&json!({"ok": true}))
    }

    /// A slash command (without its `/`), typed in `room`.
    fn command(&self, ctx: &Ctx, room: &str, cmd: &str) -> Result<(), HubError> {
        let (name, rest) = cmd
            .split_once(char::is_whitespace)
            .map_or((cmd, ""), |(n, r)| (n, r.trim()));
        let usage = |u: &str| HubError::bad_data(format!("usage: {u}"));
        match name.to_lowercase().as_str() {
            "nick" if rest.is_empty() => Err(usage("/nick NEW")),
            "nick" => self.nick(ctx, rest),
            "join" if rest.is_empty() => Err(usage("/join ROOM")),
            "join" => self.join(ctx, rest).map(drop),
            "leave" | "part" => self
                .leave(ctx, if rest.is_empty() { here(room)? } else { rest })
                .map(drop),
            "me" if rest.is_empty() => Err(usage("/me ACTION")),
            "me" => self.post(ctx, room, "me", rest),
            "shrug" if rest.is_empty() => self.post(ctx, room, "text", SHRUG),
            "shrug" => self.post(ctx, room, "text", &format!("{rest} {SHRUG}")),
            "who" => {
                let room = room_name(if rest.is_empty() { here(room)? } else { rest })?;
                if !ctx.hub().is_member(ctx.conn_id(), &room) {
                    return Err(HubError::forbidden(format!("you are not in #{room}")));
                }
                let users = ctx.hub().room_users(&room);
                let text = format!("in #{room} ({}): {}", users.len(), users.join(", "));
                Self::tell(ctx, Some(&room), &text)
            }
            "msg" | "w" => {
                let (to, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                if to.is_empty() || text.trim().is_empty() {
                    return Err(usage("/msg NICK TEXT"));
                }
                self.private(ctx, to, text.trim())
            }
            "help" => Self::tell(ctx, None, HELP),
            _ => Err(HubError::bad_data(format!(
                "unknown command /{name} (try /help)"
            ))),
        }
    }

    fn nick(&self, ctx: &Ctx, new: &str) -> Result<(), HubError> {
        check_nick(new).map_err(HubError::bad_data)?;
        let old = self.0.rename(ctx.hub(), ctx.conn_id(), new)?;
        let _ = ctx.emit("chat:nick", &json!({ "nick": new }))?;
        if old == new {
            return Ok(());
        }
        let rooms = ctx
            .hub()
            .conn_info(ctx.conn_id())
            .map(|i| i.rooms)
            .unwrap_or_default();
        let text = format!("{old} is now known as {new}");
        for room in rooms {
            let data = json!({"room": room, "text": text});
            ctx.hub().to_room(&room).emit("chat:system", &data);
        }
        Ok(())
    }

    fn private(&self, ctx: &Ctx, to: &str, text: &str) -> Result<(), HubError> {
        let (conn, to) = self
            .0
            .find(ctx.hub(), to)
            .ok_or_else(|| HubError::not_found(format!("nobody called {to} is online")))?;
        let from = self.me(ctx)?;
        let data = json!({"from": from, "to": to, "text": text});
        ctx.hub().to_conn(conn).try_emit("chat:private", &data)?;
        if conn != ctx.conn_id() {
            let _ = ctx.emit("chat:private", &data)?;
        }
        Ok(())
    }

    fn typing(&self, ctx: &mut Ctx) -> Result<(), HubError> {
        let a: RoomArg = ctx.data()?;
        let (hub, id) = (ctx.hub(), ctx.conn_id());
        if a.typing {
            hub.typing(id, &a.room)?;
            self.0.set_typing(id, &a.room, true);
        } else {
            hub.stop_typing(id, &a.room)?;
            self.0.set_typing(id, &a.room, false);
        }
        ctx.ack(&json!({ "room": a.room }))
    }

    /// A new connection: its unique nickname, the welcome, the lobby.
    fn connected(&self, hub: &Hub, ws: &WsConn) {
        let wanted = ws.identity().map(|i| i.user.clone()).unwrap_or_default();
        let nick = self.0.claim(hub, &wanted, ws.id());
        if nick != wanted {
            if let Err(e) = hub.set_user(ws.id(), &nick) {
                log::warn!("chat: cannot rename {wanted} to {nick}: {e}");
            }
        }
        let to = hub.to_conn(ws.id());
        to.emit("chat:welcome", &json!({"nick": nick, "conn": ws.id().0}));
        match hub.join(ws.id(), LOBBY) {
            Ok(()) => {
                let users = hub.room_users(LOBBY);
                let data = json!({"room": LOBBY, "users": users});
                hub.to_conn(ws.id()).emit("chat:joined", &data);
            }
            Err(e) => log::warn!("chat: {nick} cannot join the lobby: {e}"),
        }
    }
}

/// Whether the request's `Origin` (when it has one) is the page's own (`http(s)://` + its
/// `Host`) or one of `allowed` (`*`: any).
fn origin_allowed(req: &sockloop::http::Request, allowed: &[String]) -> bool {
    let Some(origin) = req.header("origin") else {
        return true; // not a browser: nothing to hijack
    };
    let host = req.header("host").unwrap_or("");
    let own = ["http://", "https://"]
        .iter()
        .any(|scheme| origin.strip_prefix(scheme) == Some(host));
    own || allowed.iter().any(|a| a == "*" || a == origin)
}

/// The upgrade's authenticator: a same-origin page (or an allowed origin; 403 otherwise),
/// and `?nick=` a valid nickname (400 otherwise).
pub fn authenticate(
    req: &sockloop::http::Request,
    allowed: &[String],
) -> Result<Option<Identity>, Rejection> {
    if !origin_allowed(req, allowed) {
        return Err(Rejection::new(403, "this origin may not open the chat"));
    }
    let nick = req.query_param("nick").unwrap_or("").trim();
    check_nick(nick).map_err(|m| Rejection::new(400, m))?;
    Ok(Some(Identity::user(nick)))
}

/// The page's security headers: its inline script and style are allowed by hash, scripts
/// of its own origin (`/sockloop.js`) by `'self'`, nothing else loads, it may not be framed.
fn page_headers(r: Response) -> Response {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let csp = CSP.get_or_init(|| {
        let hash = |tag: &str| {
            let body = between(PAGE, &format!("<{tag}>"), &format!("</{tag}>"));
            let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
            format!("'sha256-{}'", base64(digest.as_ref()))
        };
        format!(
            "default-src 'none'; script-src {} 'self'; style-src {}; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash("script"),
            hash("style")
        )
    });
    r.header("Content-Security-Policy", csp.as_str())
        .header("X-Frame-Options", "DENY")
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "no-referrer")
        .header("Cache-Control", "no-store")
}

/// The text between the first `open` and the next `close` (empty when absent).
fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let Some(start) = text.find(open).map(|i| i + open.len()) else {
        return "";
    };
    let end = text[start..].find(close).map_or(text.len(), |i| start + i);
    &text[start..end]
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            let pad = i > chunk.len();
            out.push(if pad {
                '='
            } else {
                ABC[(n >> (18 - 6 * i)) as usize & 63] as char
            });
        }
    }
    out
}

/// The page, `/health`, 404 for the rest; `HEAD` gets the headers without a body.
pub fn http(req: &sockloop::http::Request) -> Response {
    let r = match req.path() {
        "/" | "/index.html" => page_headers(Response::html(PAGE)),
        "/health" => Response::text(200, "ok"),
        _ => Response::not_found(),
    };
    if req.method() == "HEAD" {
        return r.body(Vec::new());
    }
    r
}

/// The rooms one can see (not private), with their user counts, for the page's list.
fn room_list(ctx: &mut Ctx) -> Result<(), HubError> {
    let rooms: Vec<_> = ctx
        .hub()
        .rooms()
        .into_iter()
        .map(|r| json!({"room": r.name, "users": r.users.len()}))
        .collect();
    ctx.ack(&json!({ "rooms": rooms }))
}

/// The chat's hub: routes, middleware, the lobby.
pub fn hub(cfg: &ChatConfig) -> Hub {
    let h = Handlers(Arc::default());
    let rooms = RoomOptions::new().events(cfg.room_events);
    let hub_cfg = HubConfig::new()
        .typing_ttl(cfg.typing_ttl)
        .auto_create(Some(rooms.clone()));
    let (say, join, leave, typing) = (h.clone(), h.clone(), h.clone(), h.clone());
    let (conn, gone) = (h.clone(), h);
    let mut b = Hub::builder().config(hub_cfg).middleware(mw::recover());
    if let Some(sessions) = cfg.sessions {
        b = b.sessions(sessions);
    }
    if let Some(limit) = cfg.rate_limit {
        b = b.middleware(mw::rate_limit(limit));
    }
    let hub = b
        .on("chat:say", move |ctx: &mut Ctx| say.say(ctx))
        .on("room:join", move |ctx: &mut Ctx| {
            let a: RoomArg = ctx.data()?;
            let room = join.join(ctx, &a.room)?;
            let users = ctx.hub().room_users(&room);
            ctx.ack(&json!({"room": room, "users": users}))
        })
        .on("room:leave", move |ctx: &mut Ctx| {
            let a: RoomArg = ctx.data()?;
            let room = leave.leave(ctx, &a.room)?;
            ctx.ack(&json!({ "room": room }))
        })
        .on("room:typing", move |ctx: &mut Ctx| typing.typing(ctx))
        .on("room:list", room_list)
        .on_connect(move |hub, ws| conn.connected(hub, ws))
        .on_disconnect(move |_, ws, _, _| gone.0.release(ws.id()))
        .build();
    let lobby = rooms.cleanup(Cleanup::Keep);
    hub.create_room(LOBBY, lobby)
        .expect("a new hub has no rooms");
    hub
}

/// Starts the chat server on `rt`: the page at `/`, the WebSocket at `/ws`, `/health`.
///
/// # Errors
/// When the address cannot be bound.
pub fn serve(rt: &Runtime, cfg: &ChatConfig) -> sockloop::Result<Chat> {
    let hub = hub(cfg);
    let allowed = cfg.allowed_origins.clone();
    // `/metrics`: the Prometheus exposition of the server, the hub and the node.
    let metrics = sockloop::metrics::Metrics::new();
    let m = metrics.clone();
    // The HTTP hook goes in first: `server_config` serves `/sockloop.js` in front of it.
    // Long-polling on the same path: where WebSocket is blocked, the page chats over HTTP.
    let ws = WsServerConfig::new()
        .path(Some("/ws".into()))
        .polling(Some(PollingConfig::new()))
        .authenticator(move |req| authenticate(req, &allowed))
        .http(move |req| match req.path() {
            "/metrics" => m.response(),
            _ => http(req),
        });
    let ws = hub.server_config(ws);
    let server = rt
        .serve(Listen::tcp(cfg.addr.clone()))
        .websocket(ws, hub.factory())?;
    hub.attach(&server);
    metrics
        .add_server("chat", &server)
        .add_hub("chat", &hub)
        .add_node("chat", rt.node());
    Ok(Chat { hub, server })
}

fn parse_args() -> ChatConfig {
    let mut cfg = ChatConfig::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--addr" => cfg.addr = it.next().unwrap_or_else(|| usage("--addr needs a value")),
            "--allow-origin" => cfg.allowed_origins.push(
                it.next()
                    .unwrap_or_else(|| usage("--allow-origin needs a value")),
            ),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    cfg
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("chat: {msg}");
    }
    eprintln!(
        "usage: chat [--addr HOST:PORT] [--allow-origin ORIGIN]...\n  \
         --addr          where to listen (default 127.0.0.1:8080)\n  \
         --allow-origin  an origin allowed besides the page's own (`*`: any); repeatable"
    );
    std::process::exit(2)
}

fn main() -> sockloop::Result<()> {
    sockloop::signal::block_termination();
    let cfg = parse_args();
    let rt = Runtime::new()?;
    let chat = serve(&rt, &cfg)?;
    let addr = chat.server.local_addr();
    println!("chat: open http://{addr}/ (WebSocket ws://{addr}/ws?nick=NAME)");
    let sig = sockloop::signal::wait_termination();
    println!("signal {sig}: draining");
    let clean = chat.shutdown(Duration::from_secs(5));
    rt.shutdown(Duration::from_secs(1));
    println!("stopped (clean: {clean})");
    Ok(())
}
