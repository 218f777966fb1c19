//! Sessions in the hub: a hub connection whose transport connection may change. The session
//! keeps the first connection's id as its hub id (rooms, identity, acks and presence stay
//! keyed by it), numbers what it sends under one lock per session (the number a message
//! gets is its place on the wire), keeps it in a bounded replay buffer until the client
//! acknowledges it, and outlives its connection for a window. The engine (numbering,
//! replay, resume decision, window) is `proto::session`; this file does the hub's side.
//! Transport-neutral: it sees only the [`WsConn`] the server hands the hub.

mod cluster;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::envelope::{encode, parse_envelope};
use super::state::State;
use super::Hub;
use crate::proto::http::Request;
use crate::proto::session::{self as wire, Link, NotRecoverable, ServerSession};
use crate::proto::ws::CloseCode;
use crate::{ConnId, DropPolicy, Frames, SendStatus, WsConn};

/// Room left in a session connection's queue before a group send: the poller would drop
/// a message that does not fit, unseen, so a member short of it is sent to alone (where a
/// refusal is seen). The margin covers control frames (pongs, closes) queued meanwhile.
/// `in_flight` (messages sent to the connection, not yet acknowledged) bounds what may
/// still be queued, group sends the poller has not yet admitted included.
fn room_for(ws: &WsConn, in_flight: usize, len: usize) -> bool {
    let bound = ws.conn().inner.policy().limits.max_queued_bytes;
    let margin = (64 << 10).min(bound / 8);
    let queued = ws.conn().queued_bytes();
    queued + in_flight + len + margin <= bound
}

/// WebSocket framing added to a message, at most (header and length).
const FRAMING: usize = 14;
/// Unacknowledged messages evicted while one connection carries the session before it is
/// closed (a client that reads but never acknowledges; each is remembered in 16 bytes).
const MAX_IN_FLIGHT: usize = 1 << 16;

/// What a session's user looks like to presence while no connection carries the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DetachedPresence {
    /// Reconnecting, not offline (the default): no `presence` event is sent when the
    /// connection ends, [`Hub::presence`] answers
    /// [`Presence::Reconnecting`](super::Presence::Reconnecting) while every connection of
    /// the user is such a session, and `online: false` is announced only when the window
    /// ends.
    #[default]
    Reconnecting,
    /// Offline as soon as the connection ends (`presence` `online: false`), online again
    /// (`online: true`) when the session resumes.
    Offline,
}

/// Sessions that survive reconnects (see `docs/PROTOCOL.md`, "Sessions"); every default
/// is listed on its field. Enabled with [`HubBuilder::sessions`](super::HubBuilder::sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long a session outlives its connection (default 2 min). A resume within it
    /// replays everything the client missed; after it the session is gone (its rooms are
    /// left, its pending acks end `Closed`, `on_disconnect` runs).
    pub window: Duration,
    /// Bytes of unacknowledged messages one session keeps (default 1 MiB). Past it the
    /// oldest are evicted, and a resume from before them is not recoverable (never a
    /// partial replay).
    pub max_replay_bytes: usize,
    /// Bytes all the hub's sessions keep together (default 256 MiB); past it the session
    /// being sent to evicts its oldest messages. Counted in
    /// [`HubStats::replay_bytes`](super::HubStats::replay_bytes).
    pub max_total_bytes: usize,
    /// Presence while the session has no connection (default
    /// [`DetachedPresence::Reconnecting`]).
    pub presence: DetachedPresence,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            window: Duration::from_secs(120),
            max_replay_bytes: 1 << 20,
            max_total_bytes: 256 << 20,
            presence: DetachedPresence::default(),
        }
    }
}

impl SessionConfig {
    /// Every default (see the fields).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`window`](Self::window).
    pub fn window(mut self, d: Duration) -> Self {
        self.window = d;
        self
    }

    /// Sets [`max_replay_bytes`](Self::max_replay_bytes).
    pub fn max_replay_bytes(mut self, n: usize) -> Self {
        self.max_replay_bytes = n;
        self
    }

    /// Sets [`max_total_bytes`](Self::max_total_bytes).
    pub fn max_total_bytes(mut self, n: usize) -> Self {
        self.max_total_bytes = n;
        self
    }

    /// Sets [`presence`](Self::presence).
    pub fn presence(mut self, p: DetachedPresence) -> Self {
        self.presence = p;
        self
    }
}

/// One session: its hub id, the lock that keeps its envelopes handled one at a time across
/// a takeover, and its state.
pub(crate) struct SessionCell {
    /// The hub id: the id of the connection that started the session.
    pub(crate) id: ConnId,
    /// The identity's user at the start; a resume must carry the same.
    user: Option<String>,
    /// Held while one of the session's envelopes is handled.
    turn: Mutex<()>,
    slot: Mutex<Slot>,
}

struct Slot {
    engine: ServerSession,
    /// The connection carrying the session, if any.
    conn: Option<WsConn>,
    /// The last connection that carried it, and how it closed.
    last: WsConn,
    closed: Option<(CloseCode, String)>,
    /// `on_disconnect` ran.
    reported: bool,
    /// In a cluster: the session's record in the store.
    cl: Option<Box<cluster::ClSlot>>,
}

impl Slot {
    fn is_current(&self, ws: &WsConn) -> bool {
        self.conn.as_ref().is_some_and(|c| c.id() == ws.id())
    }
}

impl SessionCell {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the session is over (sends to it are `Closed`).
    pub(crate) fn ended(&self) -> bool {
        self.lock().engine.link() == Link::Ended
    }
}

/// The hub's sessions: by session id, with the shared byte bound and counters.
#[derive(Default)]
pub(crate) struct Sessions {
    pub(crate) cfg: Option<SessionConfig>,
    by_sid: Mutex<HashMap<String, Arc<SessionCell>>>,
    /// Ids of sessions whose window ended, the latest few thousand: a late resume is told
    /// `expired` rather than `unknown`.
    expired: Mutex<Tombstones>,
    pub(crate) bytes: AtomicUsize,
    pub(crate) evicted: AtomicU64,
    pub(crate) resumed: AtomicU64,
    pub(crate) not_recovered: AtomicU64,
    /// The runtime's memory budget of the server the hub is attached to: replay buffers
    /// count there too, so a full budget refuses upgrades and sends as it does for queues.
    budget: std::sync::OnceLock<Arc<crate::base::Budget>>,
    /// What of `bytes` was added to `budget` (never more is taken back from it).
    charged: AtomicUsize,
}

impl Sessions {
    pub(crate) fn new(cfg: Option<SessionConfig>) -> Self {
        Sessions {
            cfg,
            ..Default::default()
        }
    }

    fn by_sid(&self) -> MutexGuard<'_, HashMap<String, Arc<SessionCell>>> {
        self.by_sid.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn count(&self) -> usize {
        self.by_sid().len()
    }

    fn add_bytes(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = self.budget.get() {
            self.charged.fetch_add(n, Ordering::Relaxed);
            b.add(n);
        }
    }

    fn sub_bytes(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
        if let Some(b) = self.budget.get() {
            // Bytes added before the hub was attached were never charged: give back at
            // most what was.
            let taken = self
                .charged
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    Some(c.saturating_sub(n))
                })
                .map_or(0, |before| before.min(n));
            b.sub(taken);
        }
    }

    /// Counts replay buffers in `budget` from now on (the hub's server's runtime budget).
    pub(crate) fn set_budget(&self, budget: Arc<crate::base::Budget>) {
        let _ = self.budget.set(budget);
    }
}

/// Session ids remembered after their window ended (bounded, oldest forgotten first).
#[derive(Default)]
struct Tombstones {
    order: std::collections::VecDeque<String>,
    set: std::collections::HashSet<String>,
}

/// Expired session ids remembered.
const TOMBSTONES: usize = 4096;

impl Tombstones {
    fn add(&mut self, sid: String) {
        if self.order.len() >= TOMBSTONES {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(sid.clone());
        self.order.push_back(sid);
    }
}

/// What the upgrade request asked for.
enum Ask<'r> {
    Nothing,
    New,
    Resume {
        sid: &'r str,
        token: &'r str,
        seq: u64,
    },
}

fn ask(req: &Request) -> Ask<'_> {
    if let (Some(sid), Some(token)) = (req.query_param(wire::Q_SID), req.query_param(wire::Q_TOKEN))
    {
        let seq = req.query_param(wire::Q_SEQ).and_then(|s| s.parse().ok());
        return Ask::Resume {
            sid,
            token,
            seq: seq.unwrap_or(0),
        };
    }
    match req.query_param(wire::Q_NEW) {
        Some(_) => Ask::New,
        None => Ask::Nothing,
    }
}

/// The user a session belongs to: its connection's identity's (none without one).
fn session_user(ws: &WsConn) -> Option<String> {
    ws.identity()
        .map(|i| i.user.clone())
        .filter(|u| !u.is_empty())
}

/// `n` random bytes as lowercase hex.
fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // Never seen in practice; still unique per process, if guessable.
        static FALLBACK: AtomicU64 = AtomicU64::new(1);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let x = t ^ FALLBACK.fetch_add(1, Ordering::Relaxed).rotate_left(32);
        for (i, v) in b.iter_mut().enumerate() {
            *v = (x >> ((i % 8) * 8)) as u8;
        }
    }
    b.iter().map(|v| format!("{v:02x}")).collect()
}

fn bytes_delta(before: usize, after: usize, s: &Sessions) {
    if after >= before {
        s.add_bytes(after - before);
    } else {
        s.sub_bytes(before - after);
    }
}

impl Hub {
    fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// Frames `text` for a command-path send when attached (the wire order of a session's
    /// messages is the order of its commands, so no local shortcut is taken).
    fn frames_for(&self, text: &str) -> Option<Frames> {
        self.inner.bcast.get().map(|f| f.b.frames_text(text))
    }

    /// Sends a control envelope (never counted).
    fn control(&self, ws: &WsConn, event: &str, data: &impl serde::Serialize) {
        let Ok(text) = encode(event, data, None, None) else {
            return;
        };
        let _ = super::delivery::send_to(ws, self.frames_for(&text).as_ref(), &text);
    }

    /// A new connection: a session starts or resumes when its upgrade asked for one.
    /// Returns the session the connection carries; `None` when it carries none (then
    /// `register` was done as for any connection). A resumed session is not registered
    /// again: it keeps its hub id, rooms and identity.
    pub(crate) fn open_with_session(&self, ws: &WsConn, req: &Request) -> Option<Arc<SessionCell>> {
        let reason = match ask(req) {
            Ask::Nothing => {
                self.register(ws, None);
                return None;
            }
            _ if !self.sessions_possible(ws) => {
                self.register(ws, None);
                return None;
            }
            Ask::New => None,
            Ask::Resume { sid, token, seq } => match self.resume(ws, sid, token, seq) {
                Ok(cell) => return Some(cell),
                Err(NotRecoverable::Busy) => {
                    // Neither continued nor replaced: the client resumes again later.
                    ws.close(
                        CloseCode::from(4013),
                        "session busy on another node; resume",
                    );
                    return None;
                }
                Err(r) => {
                    self.sessions()
                        .not_recovered
                        .fetch_add(1, Ordering::Relaxed);
                    Some(r)
                }
            },
        };
        let cell = self.new_session(ws, reason);
        self.register(ws, Some(cell.clone()));
        Some(cell)
    }

    /// Sessions need the hub's consent and a queue policy that reports every drop at send
    /// time (DropOldest drops queued messages later, unseen); otherwise the client is told.
    fn sessions_possible(&self, ws: &WsConn) -> bool {
        let why = match (
            self.sessions().cfg.is_some(),
            ws.conn().inner.policy().limits.drop_policy,
        ) {
            (false, _) => "disabled",
            (true, DropPolicy::DropOldest) => "drop_oldest",
            _ => return true,
        };
        self.control(ws, wire::EV_REFUSED, &serde_json::json!({ "reason": why }));
        false
    }

    fn new_session(&self, ws: &WsConn, reason: Option<NotRecoverable>) -> Arc<SessionCell> {
        let cfg = self.sessions().cfg.unwrap_or_default();
        let (sid, token) = (random_hex(16), random_hex(24));
        let engine = ServerSession::new(sid.clone(), token, cfg.max_replay_bytes, cfg.window);
        // First on the wire: nothing counted can be sent before the cell is registered.
        self.control(ws, wire::EV_WELCOME, &engine.welcome(false, reason));
        let user = session_user(ws);
        let cell = Arc::new(SessionCell {
            id: ws.id(),
            user,
            turn: Mutex::new(()),
            slot: Mutex::new(Slot {
                engine,
                conn: Some(ws.clone()),
                last: ws.clone(),
                closed: None,
                reported: false,
                cl: None,
            }),
        });
        self.cluster_session_started(&cell);
        self.sessions().by_sid().insert(sid, cell.clone());
        cell
    }

    /// Continues session `sid` on `ws`: the replay of everything after the client's `seq`,
    /// or why not. The old connection, if still open, is closed (a takeover).
    fn resume(
        &self,
        ws: &WsConn,
        sid: &str,
        token: &str,
        seq: u64,
    ) -> Result<Arc<SessionCell>, NotRecoverable> {
        let cell = self.sessions().by_sid().get(sid).cloned();
        let cell = match cell {
            // Taken over by another node while this one was cut off the store: the copy
            // here ended, and the session goes on from the store.
            Some(c) if c.lock().engine.token_matches(token) && !self.cluster_holds(&c) => {
                return self.cluster_resume(ws, sid, token, seq);
            }
            Some(c) => c,
            None if self.cluster_node().is_some() => {
                return self.cluster_resume(ws, sid, token, seq);
            }
            None => return Err(self.forgotten(sid)),
        };
        let user = session_user(ws);
        if user != cell.user {
            return Err(NotRecoverable::Identity);
        }
        // Lock order everywhere: the registry, then sessions (one, or many in id order).
        let old = {
            let mut st = self.state();
            self.take_over(&cell, ws, token, seq, &mut st)
        };
        // Released meanwhile to another node, where the client is to resume.
        let old = old.map_err(|e| {
            if cell.moved() {
                NotRecoverable::Busy
            } else {
                e
            }
        })?;
        if let Some(o) = old.filter(|o| o.id() != ws.id()) {
            o.close(CloseCode::NORMAL, "session resumed on another connection");
        }
        let found = self.set_presence(&cell);
        if !found {
            // Ended meanwhile (a server disconnect): nothing to continue.
            ws.close(CloseCode::NORMAL, "session ended");
        }
        Ok(cell)
    }

    /// Under the session's lock: the decision, the takeover, `session:resumed` and the
    /// replay, so nothing sent meanwhile can come between them.
    fn take_over(
        &self,
        cell: &SessionCell,
        ws: &WsConn,
        token: &str,
        seq: u64,
        st: &mut State,
    ) -> Result<Option<WsConn>, NotRecoverable> {
        let mut slot = cell.lock();
        if !slot.engine.token_matches(token) {
            return Err(NotRecoverable::Unknown);
        }
        let before = slot.engine.replay.bytes();
        let replay = slot.engine.resume(seq, Instant::now());
        bytes_delta(before, slot.engine.replay.bytes(), self.sessions());
        let replay = replay?;
        let old = slot.conn.replace(ws.clone());
        slot.last = ws.clone();
        // Counted before the replay goes out: whoever reads the replay sees the count.
        self.sessions().resumed.fetch_add(1, Ordering::Relaxed);
        let mut w = slot.engine.welcome(true, None);
        // The base: the replay continues the client's count.
        w.seq = seq;
        w.replayed = replay.len() as u64;
        self.control(ws, wire::EV_RESUMED, &w);
        for m in &replay {
            let st = super::delivery::send_to(ws, self.frames_for(m).as_ref(), m);
            self.count(st);
            if st != SendStatus::Queued {
                self.overflowed(ws, st);
                break;
            }
        }
        self.join_groups(cell.id, ws, st);
        Ok(old)
    }

    /// The new connection enters the session's fan-out groups (everyone, its rooms) before
    /// anything newer can be numbered for it: a group send numbered later is queued on the
    /// same poller after these joins. The registry entry points at it from now on.
    fn join_groups(&self, id: ConnId, ws: &WsConn, st: &mut State) {
        let State { conns, rooms, .. } = st;
        let Some(e) = conns.get_mut(&id) else { return };
        e.ws = ws.clone();
        ws.join_group(self.inner.all);
        for r in e.info.rooms.iter().filter_map(|r| rooms.get(r)) {
            ws.join_group(r.gid);
        }
    }

    /// Numbers one group message for the session members `cells` (under all their locks,
    /// taken in id order) and calls `send` with the connections the group must skip, still
    /// under those locks: the group send is queued before any later message to them.
    /// Members in `except` (hub ids) are skipped; a member whose queue might refuse the
    /// message is skipped by the group and sent it alone (a refusal then closes it for a
    /// resume, never a silent gap); a member without a connection only keeps it.
    pub(crate) fn number_for_group(
        &self,
        cells: &[Arc<SessionCell>],
        except: &[ConnId],
        text: &str,
        frames: &Frames,
        feed: Option<(&str, u64)>,
        send: impl FnOnce(&[ConnId]),
    ) {
        let shared: Arc<str> = Arc::from(text);
        let mut slots: Vec<MutexGuard<'_, Slot>> = cells.iter().map(|c| c.lock()).collect();
        let mut skip: Vec<ConnId> = except.to_vec();
        let (mut added, mut freed, mut evicted) = (0usize, 0usize, 0u64);
        for (cell, slot) in cells.iter().zip(slots.iter_mut()) {
            let current = slot.conn.as_ref().map(|w| w.id());
            if except.contains(&cell.id) || slot.engine.link() == Link::Ended {
                if let Some((f, p)) = feed {
                    self.cluster_step(slot, f, p);
                }
                skip.extend(current);
                continue;
            }
            if let Some((f, p)) = feed {
                if !self.cluster_step(slot, f, p) {
                    // Heard already (a gap filled from the feed brought it).
                    skip.extend(current);
                    continue;
                }
            }
            let before = slot.engine.replay.evicted();
            let (seq, f) = slot.engine.replay.push(shared.clone());
            let stored = self.cluster_persist(slot, seq, text, feed);
            freed += f;
            evicted += slot.engine.replay.evicted() - before;
            added += shared.len();
            if !stored {
                // Another node continues the session: not on this node's wire.
                skip.extend(current);
                continue;
            }
            let Some(ws) = slot.conn.as_ref() else {
                continue;
            };
            // In flight: everything kept, this message included, and what was evicted.
            if !room_for(ws, slot.engine.replay.in_flight(FRAMING), 0) {
                skip.push(ws.id());
                let st = super::delivery::send_to(ws, Some(frames), text);
                self.overflowed(ws, st);
            }
            self.check_in_flight(slot);
        }
        let s = self.sessions();
        s.add_bytes(added);
        s.sub_bytes(freed);
        if evicted > 0 {
            s.evicted.fetch_add(evicted, Ordering::Relaxed);
        }
        for slot in slots.iter_mut() {
            self.enforce_total(slot);
        }
        send(&skip);
        drop(slots);
    }

    /// Numbers and keeps `text` in a session's replay buffer, within the bounds.
    fn keep(&self, slot: &mut Slot, text: &Arc<str>) -> u64 {
        let evicted = slot.engine.replay.evicted();
        let (seq, freed) = slot.engine.replay.push(text.clone());
        self.sessions().add_bytes(text.len());
        self.sessions().sub_bytes(freed);
        let n = slot.engine.replay.evicted() - evicted;
        self.sessions().evicted.fetch_add(n, Ordering::Relaxed);
        self.enforce_total(slot);
        seq
    }

    /// A connection that reads but never acknowledges is closed, so the session's
    /// bookkeeping stays bounded (the client resumes, acknowledging by its count).
    fn check_in_flight(&self, slot: &mut Slot) {
        if slot.engine.replay.gone_count() > MAX_IN_FLIGHT {
            if let Some(ws) = &slot.conn {
                ws.close(CloseCode::POLICY, "session messages not acknowledged");
            }
        }
    }

    /// A send to a session connection was refused: the message stays in the replay buffer
    /// and the connection is closed so the client resumes (never a silent gap).
    fn overflowed(&self, ws: &WsConn, st: SendStatus) {
        if st == SendStatus::Dropped {
            // 4013: an application code (1013 is not one a WebSocket endpoint may send).
            ws.close(CloseCode::from(4013), "session queue full; resume");
        }
    }

    /// The registry's view of whether the session has a connection, and presence with it
    /// (`DetachedPresence::Offline`). False when the entry is gone.
    fn set_presence(&self, cell: &SessionCell) -> bool {
        let id = cell.id;
        let offline = self.sessions().cfg.unwrap_or_default().presence == DetachedPresence::Offline;
        let mut st = self.state();
        let Some(e) = st.conns.get_mut(&id) else {
            return false;
        };
        // Read under the registry's lock (registry, then session): a close and a resume
        // racing each other leave the flag as the session is, whichever comes last.
        let detached = cell.lock().engine.link() != Link::Attached;
        let was = std::mem::replace(&mut e.detached, detached);
        let (user, rooms) = (e.info.user.clone(), e.info.rooms.clone());
        if let (Some(c), Some(u), true) = (self.cluster_node(), &user, was != detached) {
            c.online(u, id, detached);
        }
        if !offline || was == detached {
            return true;
        }
        let Some(user) = user else { return true };
        if detached {
            let last = st.users.get_mut(&user).is_some_and(|s| {
                s.remove(&id);
                s.is_empty()
            });
            if last {
                st.users.remove(&user);
                st.announced.remove(&user);
                st.saw(
                    &user,
                    std::time::SystemTime::now(),
                    self.inner.cfg.max_last_seen,
                );
                drop(st);
                let rooms: Vec<String> = rooms.into_iter().collect();
                self.announce_offline(&user, &rooms);
            }
        } else {
            let set = st.users.entry(user.clone()).or_default();
            set.insert(id);
            let first = set.len() == 1;
            drop(st);
            if first {
                self.announce_back(id, &user, rooms.iter());
            }
        }
        true
    }

    /// Sends a data message on a session: numbered and kept under its lock, then queued
    /// to its connection if it has one. `Queued` whenever the message can still be
    /// delivered (on the wire, or by the resume); `Closed` once the session is over.
    pub(crate) fn session_send(
        &self,
        cell: &SessionCell,
        text: &Arc<str>,
        frames: Option<&Frames>,
        feed: Option<(&str, u64)>,
    ) -> SendStatus {
        let own;
        let frames = match frames {
            Some(f) => Some(f),
            None => {
                own = self.frames_for(text);
                own.as_ref()
            }
        };
        let mut slot = cell.lock();
        if slot.engine.link() == Link::Ended {
            return SendStatus::Closed;
        }
        if let Some((f, p)) = feed {
            if !self.cluster_step(&mut slot, f, p) {
                return SendStatus::Queued;
            }
        }
        self.deliver_locked(&mut slot, text, frames, feed);
        SendStatus::Queued
    }

    /// Numbers, keeps (and in a cluster stores) one message under the session's lock, then
    /// queues it to the connection carrying the session, if any.
    fn deliver_locked(
        &self,
        slot: &mut Slot,
        text: &Arc<str>,
        frames: Option<&Frames>,
        feed: Option<(&str, u64)>,
    ) {
        let seq = self.keep(slot, text);
        if !self.cluster_persist(slot, seq, text, feed) {
            return;
        }
        let Some(ws) = slot.conn.clone() else {
            return;
        };
        let st = super::delivery::send_to(&ws, frames, text);
        self.overflowed(&ws, st);
        self.check_in_flight(slot);
    }

    /// The hub-wide bound: the session being sent to gives up its oldest messages.
    fn enforce_total(&self, slot: &mut Slot) {
        let s = self.sessions();
        let max = s.cfg.map_or(usize::MAX, |c| c.max_total_bytes);
        // One load when under the bound (the common case).
        while s.bytes.load(Ordering::Relaxed) > max {
            let freed = slot.engine.replay.evict_oldest();
            if freed == 0 {
                break;
            }
            s.sub_bytes(freed);
            s.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A text message on a session connection: control envelopes are applied; data ones
    /// are counted and handled, one at a time per session (across a takeover too). A
    /// message from a connection the session left (taken over) is dropped: it was not
    /// counted, so the client sends it again on the new connection.
    pub(crate) fn session_text(&self, cell: &Arc<SessionCell>, ws: &WsConn, text: &str) {
        let _turn = cell.turn.lock().unwrap_or_else(|e| e.into_inner());
        let parsed = parse_envelope(text, &self.inner.cfg.limits);
        let is_control = matches!(&parsed, Ok(e) if e.event.starts_with(wire::PREFIX));
        let ack = {
            let mut slot = cell.lock();
            if !slot.is_current(ws) {
                return;
            }
            if is_control {
                if let Ok(env) = &parsed {
                    self.session_control(&mut slot, ws, &env.event, &env.data);
                }
                return;
            }
            slot.engine.inbound.count();
            slot.engine.inbound.ack_due(false)
        };
        if let Some(n) = ack {
            self.control(ws, wire::EV_ACK, &n);
        }
        let peer = super::delivery::Peer {
            id: cell.id,
            ws: ws.clone(),
            session: Some(cell.clone()),
        };
        self.handle_parsed(&peer, parsed);
    }

    fn session_control(&self, slot: &mut Slot, ws: &WsConn, event: &str, data: &serde_json::Value) {
        if event != wire::EV_ACK {
            return;
        }
        if let Some(n) = data.as_u64() {
            let freed = slot.engine.replay.ack(n);
            self.sessions().sub_bytes(freed);
        }
        if let Some(n) = slot.engine.inbound.ack_due(true) {
            self.control(ws, wire::EV_ACK, &n);
        }
    }

    /// A session connection closed: the session waits for a resume until its window ends
    /// (unless another connection took it over, or it was ended).
    pub(crate) fn session_closed(
        &self,
        cell: &SessionCell,
        ws: &WsConn,
        code: CloseCode,
        reason: &str,
    ) {
        let (detach, report) = {
            let mut slot = cell.lock();
            let current = slot.is_current(ws);
            if current {
                slot.conn = None;
                slot.closed = Some((code, reason.to_owned()));
            }
            match slot.engine.link() {
                Link::Ended if !slot.reported && (current || slot.conn.is_none()) => {
                    slot.reported = true;
                    (None, true)
                }
                Link::Attached if current => (Some(slot.engine.detach(Instant::now())), false),
                _ => (None, false),
            }
        };
        if let Some((until, epoch)) = detach {
            self.set_presence(cell);
            self.timer(super::timer::TimerCmd::Session {
                id: cell.id,
                epoch,
                at: until,
            });
        }
        if report {
            self.report_disconnect(ws, code, reason);
        }
    }

    /// The window of session `id` ended at `epoch` (timer thread): it leaves the hub.
    pub(crate) fn session_expired(&self, id: ConnId, epoch: u64) {
        let cell = self.state().conns.get(&id).and_then(|e| e.session.clone());
        let Some(cell) = cell else { return };
        let last = {
            let mut slot = cell.lock();
            if !slot.engine.expire(epoch, Instant::now()) {
                return;
            }
            slot.reported = true;
            let (code, reason) = slot
                .closed
                .clone()
                .unwrap_or((CloseCode::ABNORMAL, String::new()));
            (slot.last.clone(), code, reason)
        };
        self.depart(id);
        self.report_disconnect(&last.0, last.1, &last.2);
    }

    /// Ends a session leaving the hub: its buffer is freed and it can no longer resume.
    pub(crate) fn end_session(&self, cell: &SessionCell) {
        let (sid, expired) = {
            let mut slot = cell.lock();
            // Ended already: by its window (`session_expired`); otherwise by the server.
            let expired = slot.engine.link() == Link::Ended;
            slot.engine.end();
            let freed = slot.engine.replay.ack(u64::MAX);
            self.sessions().sub_bytes(freed);
            self.cluster_session_ended(&mut slot);
            (slot.engine.sid().to_owned(), expired)
        };
        {
            // Its own entry only (a cell that lost its session to a newer one here leaves
            // the newer one's).
            let mut by_sid = self.sessions().by_sid();
            if by_sid.get(&sid).is_some_and(|c| std::ptr::eq(&**c, cell)) {
                by_sid.remove(&sid);
            }
        }
        if expired {
            let mut t = self
                .sessions()
                .expired
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            t.add(sid);
        }
    }

    /// Why a session id is not known: its window ended (if remembered), or never was.
    fn forgotten(&self, sid: &str) -> NotRecoverable {
        let t = self
            .sessions()
            .expired
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match t.set.contains(sid) {
            true => NotRecoverable::Expired,
            false => NotRecoverable::Unknown,
        }
    }

    fn report_disconnect(&self, ws: &WsConn, code: CloseCode, reason: &str) {
        if let Some(f) = &self.inner.on_disconnect {
            f(self, ws, code, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_are_bounded_and_forget_the_oldest() {
        let mut t = Tombstones::default();
        for i in 0..TOMBSTONES + 10 {
            t.add(format!("s{i}"));
        }
        assert_eq!((t.order.len(), t.set.len()), (TOMBSTONES, TOMBSTONES));
        assert!(!t.set.contains("s0") && !t.set.contains("s9"));
        assert!(t.set.contains("s10") && t.set.contains(&format!("s{}", TOMBSTONES + 9)));
    }

    #[test]
    fn ids_and_tokens_are_random_hex() {
        let (a, b) = (random_hex(24), random_hex(24));
        assert_eq!(a.len(), 48);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
