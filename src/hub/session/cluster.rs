//! Sessions across the nodes of a cluster: every numbered message is written to the
//! session's log in the store before it goes on the wire (so the log always holds what
//! the client can have seen), together with the session's count and its place in each feed
//! it follows (its rooms, its user, everyone). A client resuming on another node — its
//! node alive (the session is released to the new one) or dead (`kill -9`) — gets the log's
//! messages after its count, then what the feeds hold after the session's places: all or
//! nothing, as on one node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{SessionCell, Slot};
use crate::hub::cluster::node::{ClusterNode, Op, Wire};
use crate::hub::Hub;
use crate::proto::session::{Link, NotRecoverable, ServerSession};
use crate::proto::ws::CloseCode;
use crate::{ConnId, WsConn};

/// How long a resume waits for the node that has the session to release it.
const RELEASE_WAIT: Duration = Duration::from_secs(3);

/// Feed entries read at once when filling a gap or catching up.
const FILL_MAX: usize = 10_000;

/// A session's side of the cluster.
pub(crate) struct ClSlot {
    /// The session's id in the cluster: the `node/conn` it started as (except lists of
    /// the messages it sent carry it).
    gid: String,
    /// Feed key → the last position handled.
    cursors: HashMap<String, u64>,
    /// A write to the store failed: the log may lack messages the client got, so a resume
    /// on another node is not recoverable (this node still serves it).
    broken: bool,
    /// Released to another node: its record stays in the store.
    moved: bool,
    /// The record's generation this node writes under (`""` until a node continues the
    /// session from the store): a write under an older one is refused.
    gen: String,
    /// Its member's id in the hub.
    id: ConnId,
}

impl SessionCell {
    /// Whether the session was released to another node (it goes on there).
    pub(crate) fn moved(&self) -> bool {
        self.lock().cl.as_ref().is_some_and(|cl| cl.moved)
    }

    /// The session's id in the cluster, when it is clustered.
    pub(crate) fn cluster_gid(&self) -> Option<String> {
        self.lock().cl.as_ref().map(|cl| cl.gid.clone())
    }
}

impl Hub {
    fn session_ttl(&self) -> Duration {
        let window = self.inner.sessions.cfg.unwrap_or_default().window;
        let dead = self
            .cluster_node()
            .map_or(Duration::ZERO, |c| c.cfg.dead_after);
        window + dead * 2 + Duration::from_secs(5)
    }

    /// A feed's last position (0 when empty or the store is away).
    fn feed_head(&self, feed: &str) -> u64 {
        let Some(c) = self.cluster_node() else {
            return 0;
        };
        c.bus.read(feed, u64::MAX - 1, 1).map_or(0, |r| r.head)
    }

    /// A new session: its record in the store, and its places in its user's and
    /// everyone's feeds.
    pub(crate) fn cluster_session_started(&self, cell: &SessionCell) {
        let Some(c) = self.cluster_node() else { return };
        let mut cursors = HashMap::new();
        let all = c.all_feed();
        cursors.insert(all.clone(), self.feed_head(&all));
        if let Some(u) = &cell.user {
            let f = c.user_key(u, "f");
            cursors.insert(f.clone(), self.feed_head(&f));
        }
        let mut slot = cell.lock();
        let gid = c.gid(cell.id);
        let sid = slot.engine.sid().to_owned();
        let token = slot.engine.token().to_owned();
        let user = cell.user.clone().unwrap_or_default();
        let fields = [
            ("tok", token.as_str()),
            ("user", user.as_str()),
            ("gid", gid.as_str()),
            ("node", c.node()),
            ("seq", "0"),
            ("cseq", "0"),
            ("rooms", "[]"),
        ];
        let (h, q) = (c.session_key(&sid, "h"), c.session_key(&sid, "q"));
        let ttl = self.session_ttl();
        let broken = match c
            .bus
            .append(&q, &[], 1, &h, &fields, ttl, Some(("gen", "")))
        {
            Ok(wrote) => !wrote,
            Err(e) => {
                log::warn!("cluster {}: session {sid} not stored: {e}", c.node());
                true
            }
        };
        slot.cl = Some(Box::new(ClSlot {
            gid,
            cursors,
            broken,
            moved: false,
            gen: String::new(),
            id: cell.id,
        }));
    }

    /// Whether a message at `pos` of `feed` is new to the session: one heard already (a
    /// gap filled from the feed brought it) is not; one past a gap first brings the
    /// messages in between from the feed.
    pub(super) fn cluster_step(&self, slot: &mut Slot, feed: &str, pos: u64) -> bool {
        let Some(cl) = slot.cl.as_mut() else {
            return true;
        };
        match cl.cursors.get(feed).copied() {
            Some(cur) if pos <= cur => {
                let restarted = self
                    .cluster_node()
                    .is_some_and(|c| c.feed_restarted(feed, cur));
                if restarted {
                    // The store lost the feed's history: what was in it may be lost for
                    // this session, so a resume elsewhere is not recoverable.
                    cl.broken = true;
                    cl.cursors.insert(feed.to_owned(), pos);
                }
                restarted
            }
            Some(cur) if pos > cur + 1 => {
                self.cluster_fill(slot, feed, cur, Some(pos));
                if let Some(cl) = slot.cl.as_mut() {
                    cl.cursors.insert(feed.to_owned(), pos);
                }
                true
            }
            _ => {
                cl.cursors.insert(feed.to_owned(), pos);
                true
            }
        }
    }

    /// Delivers to the session what `feed` holds after `cur` (up to `upto`, exclusive),
    /// minus what it sent itself.
    fn cluster_fill(&self, slot: &mut Slot, feed: &str, cur: u64, upto: Option<u64>) {
        let Some(c) = self.cluster_node() else { return };
        if slot.engine.link() == Link::Ended {
            return;
        }
        let want = upto.map_or(FILL_MAX, |u| (u - cur - 1) as usize);
        if want == 0 {
            return;
        }
        let read = c.bus.read(feed, cur, want.min(FILL_MAX));
        let Some(cl) = slot.cl.as_mut() else { return };
        let read = match read {
            Ok(r) => r,
            Err(e) => {
                log::warn!("cluster {}: {feed} not read: {e}", c.node());
                cl.broken = true;
                return;
            }
        };
        if read.head < cur {
            // The feed started over (the store lost its data): what came between is lost.
            cl.broken = true;
            cl.cursors.insert(feed.to_owned(), read.head);
            return;
        }
        let complete = read.complete_after(cur)
            && read
                .entries
                .iter()
                .enumerate()
                .all(|(i, (p, _))| *p == cur + 1 + i as u64);
        if !complete || upto.is_some_and(|u| read.entries.len() as u64 != u - cur - 1) {
            log::warn!("cluster {}: {feed} lacks entries after {cur}", c.node());
            cl.broken = true;
        }
        let gid = cl.gid.clone();
        for (p, payload) in read.entries {
            let Ok(w) = serde_json::from_slice::<Wire>(&payload) else {
                continue;
            };
            let (x, m) = match w.op {
                Op::Room { x, m, .. } | Op::User { x, m, .. } | Op::All { x, m } => (x, m),
                _ => continue,
            };
            if let Some(cl) = slot.cl.as_mut() {
                cl.cursors.insert(feed.to_owned(), p);
            }
            if x.contains(&gid) {
                continue;
            }
            let text: Arc<str> = Arc::from(m);
            let frames = self.frames_for(&text);
            self.deliver_locked(slot, &text, frames.as_ref(), Some((feed, p)));
            if slot.engine.link() == Link::Ended {
                return; // fenced: another node continues it
            }
        }
    }

    /// Writes one numbered message to the session's log, with its count, the client's
    /// count and its place in `feed`, before it goes on the wire. False when it must not go
    /// on the wire: another node continues the session (this node then ends it).
    pub(super) fn cluster_persist(
        &self,
        slot: &mut Slot,
        seq: u64,
        text: &str,
        feed: Option<(&str, u64)>,
    ) -> bool {
        let Some(c) = self.cluster_node() else {
            return true;
        };
        let ttl = self.session_ttl();
        let sid = slot.engine.sid().to_owned();
        let cseq = slot.engine.inbound.received().to_string();
        let Some(cl) = slot.cl.as_mut() else {
            return true;
        };
        if cl.moved {
            // Another node numbers the session now: its log is that node's.
            return false;
        }
        let seq_s = seq.to_string();
        let mut owned: Vec<(String, String)> = vec![("seq".into(), seq_s), ("cseq".into(), cseq)];
        if let Some((f, p)) = feed {
            let e = cl.cursors.entry(f.to_owned()).or_insert(0);
            *e = (*e).max(p);
            owned.push((format!("c:{f}"), p.to_string()));
        }
        if cl.broken {
            owned.push(("broken".into(), "1".into()));
        }
        let fields: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (h, q) = (c.session_key(&sid, "h"), c.session_key(&sid, "q"));
        let entry = [(seq, text.as_bytes())];
        if c.in_outage() {
            cl.broken = true;
            return true;
        }
        let fence = Some(("gen", cl.gen.as_str()));
        let max = c.cfg.session_log_len;
        match c.bus.append(&q, &entry, max, &h, &fields, ttl, fence) {
            Ok(true) => true,
            Ok(false) => {
                self.cluster_fenced(slot);
                false
            }
            Err(e) => {
                if !cl.broken {
                    log::warn!("cluster {}: session {sid} not stored: {e}", c.node());
                }
                c.call_failed();
                cl.broken = true;
                true
            }
        }
    }

    /// The session's record names a newer generation than this node's: another node
    /// continues the session (this one lost a race for it, or was taken for dead). It ends
    /// here at once, without `on_disconnect`; its connection is told to resume (at the node
    /// that has it now), and it leaves the hub off this lock (the registry's comes first).
    fn cluster_fenced(&self, slot: &mut Slot) {
        let Some(cl) = slot.cl.as_mut() else { return };
        if cl.moved {
            return;
        }
        cl.moved = true;
        let id = cl.id;
        if let Some(c) = self.cluster_node() {
            let sid = slot.engine.sid();
            log::warn!("cluster {}: {sid} went on on another node", c.node());
        }
        slot.engine.end();
        slot.reported = true;
        if let Some(ws) = slot.conn.take() {
            ws.close(
                CloseCode::from(4013),
                "session went on on another node; resume",
            );
        }
        self.timer(crate::hub::timer::TimerCmd::Depart(id));
    }

    /// The session's id and the generation this node writes it under, while it holds it
    /// (clustered, not given up).
    fn cluster_held(cell: &SessionCell) -> Option<(String, String)> {
        let slot = cell.lock();
        let cl = slot.cl.as_ref().filter(|cl| !cl.moved)?;
        Some((slot.engine.sid().to_owned(), cl.gen.clone()))
    }

    /// A write under generation `gen` was refused: the session is fenced here, unless this
    /// node moved to another generation meanwhile.
    fn cluster_refused(&self, cell: &SessionCell, gen: &str) {
        let mut slot = cell.lock();
        if slot.cl.as_ref().is_some_and(|cl| cl.gen == gen) {
            self.cluster_fenced(&mut slot);
        }
    }

    /// A session ended here (its window, or the server): its record goes, unless it was
    /// released to another node.
    pub(super) fn cluster_session_ended(&self, slot: &mut Slot) {
        let (Some(c), Some(cl)) = (self.cluster_node(), slot.cl.as_ref()) else {
            return;
        };
        if cl.moved {
            return;
        }
        let sid = slot.engine.sid();
        c.forget(vec![c.session_key(sid, "h"), c.session_key(sid, "q")]);
    }

    /// A session member joined a room: its record lists its rooms, and it follows the
    /// room's feed from now.
    pub(crate) fn cluster_session_joined(&self, id: ConnId, room: &str) {
        let Some(c) = self.cluster_node() else { return };
        let cell = self.state().conns.get(&id).and_then(|e| e.session.clone());
        let Some(cell) = cell else { return };
        let feed = c.room_key(room, "f");
        // Once the join is in the store, every later message to the room is heard here:
        // the session's place is the feed's head after it.
        c.flush(RELEASE_WAIT);
        let head = self.feed_head(&feed);
        {
            let mut slot = cell.lock();
            if let Some(cl) = slot.cl.as_mut() {
                // A session continued from another node keeps its place.
                cl.cursors.entry(feed).or_insert(head);
            }
        }
        self.cluster_session_rooms(id);
    }

    /// A session member left a room: its record's rooms follow, and it no longer follows
    /// the room's feed.
    pub(crate) fn cluster_session_left(&self, id: ConnId, room: &str) {
        let Some(c) = self.cluster_node() else { return };
        let cell = self.state().conns.get(&id).and_then(|e| e.session.clone());
        if let Some(cell) = cell {
            if let Some(cl) = cell.lock().cl.as_mut() {
                cl.cursors.remove(&c.room_key(room, "f"));
            }
        }
        self.cluster_session_rooms(id);
    }

    fn cluster_session_rooms(&self, id: ConnId) {
        let Some(c) = self.cluster_node() else { return };
        let (cell, rooms) = {
            let st = self.state();
            let Some(e) = st.conns.get(&id) else { return };
            let Some(cell) = e.session.clone() else {
                return;
            };
            (cell, e.info.rooms.iter().cloned().collect::<Vec<String>>())
        };
        let Some((sid, gen)) = Self::cluster_held(&cell) else {
            return;
        };
        let rooms = serde_json::to_string(&rooms).unwrap_or_else(|_| "[]".into());
        let (h, q) = (c.session_key(&sid, "h"), c.session_key(&sid, "q"));
        let fields = [("rooms", rooms.as_str())];
        let fence = Some(("gen", gen.as_str()));
        match c
            .bus
            .append(&q, &[], 1, &h, &fields, self.session_ttl(), fence)
        {
            Ok(true) => {}
            Ok(false) => self.cluster_refused(&cell, &gen),
            Err(e) => {
                log::warn!(
                    "cluster {}: session {sid}'s rooms not stored: {e}",
                    c.node()
                );
                if let Some(cl) = cell.lock().cl.as_mut() {
                    cl.broken = true;
                }
            }
        }
    }

    /// The readers were away (or the store restarted): every session catches up on its
    /// feeds.
    pub(crate) fn cluster_catch_up(&self) {
        let cells: Vec<Arc<SessionCell>> = self.state().sessions.values().cloned().collect();
        for cell in cells {
            let mut slot = cell.lock();
            if slot.engine.link() == Link::Ended {
                continue;
            }
            let cursors: Vec<(String, u64)> = match &slot.cl {
                Some(cl) => cl.cursors.iter().map(|(f, p)| (f.clone(), *p)).collect(),
                None => continue,
            };
            for (feed, cur) in cursors {
                self.cluster_fill(&mut slot, &feed, cur, None);
            }
        }
    }

    /// Whether this node still holds session `cell` in the store (a resume here is about to
    /// continue it from memory): its record's generation is the one it wrote under. When
    /// another node claimed it meanwhile (this node was taken for dead), the copy here ends
    /// (fenced) and false is returned: the resume continues the session from the store, as
    /// if it were unknown here. True when not clustered, or when the store is away (the
    /// copy here is all there is).
    pub(super) fn cluster_holds(&self, cell: &SessionCell) -> bool {
        let Some(c) = self.cluster_node() else {
            return true;
        };
        let Some((sid, gen)) = Self::cluster_held(cell) else {
            return true;
        };
        let h = c.session_key(&sid, "h");
        // A compare that writes the value it compares: true when it still holds.
        match c.bus.hset_if(&h, "gen", &gen, &[("gen", gen.as_str())]) {
            Ok(true) | Err(_) => true,
            Ok(false) => {
                self.cluster_refused(cell, &gen);
                false
            }
        }
    }

    /// How often this node's session records have their expiry moved on: three times per
    /// expiry, so a record outlives two missed refreshes.
    pub(crate) fn cluster_refresh_every(&self) -> Duration {
        self.session_ttl() / 3
    }

    /// Moves the expiry of every session record this node holds on (their log and record
    /// otherwise expire one `session_ttl` after the last write: a session attached but quiet
    /// for longer could not resume on another node). Under the record's fence, like any
    /// write: a session another node continues meanwhile ends here.
    pub(crate) fn cluster_refresh_sessions(&self) {
        let Some(c) = self.cluster_node() else { return };
        let cells: Vec<Arc<SessionCell>> = self.state().sessions.values().cloned().collect();
        let ttl = self.session_ttl();
        for cell in cells {
            if cell.lock().engine.link() == Link::Ended {
                continue;
            }
            let Some((sid, gen)) = Self::cluster_held(&cell) else {
                continue;
            };
            let (h, q) = (c.session_key(&sid, "h"), c.session_key(&sid, "q"));
            match c
                .bus
                .append(&q, &[], 1, &h, &[], ttl, Some(("gen", gen.as_str())))
            {
                Ok(true) => {}
                Ok(false) => self.cluster_refused(&cell, &gen),
                Err(e) => {
                    log::warn!("cluster {}: session records not refreshed: {e}", c.node());
                    return;
                }
            }
        }
    }

    /// Another node's client resumed session `sid`: it ends here without `on_disconnect`
    /// (its record stays for the other node), and the other node is told.
    pub(crate) fn cluster_release(&self, sid: &str, to: &str) {
        let Some(c) = self.cluster_node() else { return };
        // A resume of it under way here gives up (if it claimed the record already, the
        // other node's claim fences whatever it would still write).
        if let Some(r) = c.lock_resuming().get_mut(sid) {
            *r = true;
        }
        let cell = self.sessions().by_sid().get(sid).cloned();
        if let Some(cell) = cell {
            let conn = {
                let mut slot = cell.lock();
                if let Some(cl) = slot.cl.as_mut() {
                    cl.moved = true;
                }
                // Ended at once, under the lock: a resume of it still under way here
                // (registered or not yet) can no longer take it over or number for it.
                slot.engine.end();
                slot.reported = true;
                slot.conn.take()
            };
            self.depart_moved(cell.id);
            if let Some(ws) = conn {
                ws.close(CloseCode::NORMAL, "session resumed on another node");
            }
        }
        let op = Op::Released {
            sid: sid.to_owned(),
        };
        if let Err(e) = c.send_to(to, op) {
            log::warn!(
                "cluster {}: release of {sid} not told to {to}: {e}",
                c.node()
            );
        }
    }

    /// A resume of a session this node does not have: continued from its record in the
    /// store (after the node that had it released it, or died).
    pub(super) fn cluster_resume(
        &self,
        ws: &WsConn,
        sid: &str,
        token: &str,
        seq: u64,
    ) -> Result<Arc<SessionCell>, NotRecoverable> {
        let Some(c) = self.cluster_node() else {
            return Err(NotRecoverable::Unknown);
        };
        // One resume of a session at a time on a node: a second one (the client gave up on
        // the first) resumes again later, and finds the session continued or not.
        let Some(_resuming) = Resuming::enter(c, sid) else {
            return Err(NotRecoverable::Busy);
        };
        let h = c.session_key(sid, "h");
        let load = || -> Result<HashMap<String, String>, NotRecoverable> {
            let fields = c.bus.hgetall(&h).map_err(|e| {
                log::warn!("cluster {}: session {sid} not loaded: {e}", c.node());
                NotRecoverable::Unknown
            })?;
            Ok(fields.into_iter().collect())
        };
        let rec = load()?;
        let (Some(tok), Some(owner)) = (rec.get("tok"), rec.get("node")) else {
            return Err(NotRecoverable::Unknown);
        };
        if !crate::proto::session::tokens_equal(tok, token) {
            return Err(NotRecoverable::Unknown);
        }
        let user = super::session_user(ws);
        if user.as_deref().unwrap_or_default() != rec.get("user").map_or("", |u| u.as_str()) {
            return Err(NotRecoverable::Identity);
        }
        let owner = owner.clone();
        let gen = rec.get("gen").cloned().unwrap_or_default();
        // Released by a live node: the same member, moved (nobody is told it left or came).
        let mut moved = false;
        if owner != c.node() && c.alive(&format!("{owner}/0")) {
            let beat = c.beat_of(&owner);
            let (tx, rx) = crossbeam_channel::bounded(1);
            c.released
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(sid.to_owned(), tx);
            let op = Op::Release {
                sid: sid.to_owned(),
                to: c.node().to_owned(),
            };
            // A live node answers at once; a dead one (kill -9) stops beating. Wait long
            // enough for two and a half of its heartbeats to tell them apart, asking again
            // every half second (a message to a node whose reader is reconnecting is lost;
            // a repeated release is answered again).
            let wait = RELEASE_WAIT.max(c.heartbeat_every() * 5 / 2);
            let until = Instant::now() + wait;
            let mut released = false;
            while !released && Instant::now() < until {
                let _ = c.send_to(&owner, op.clone());
                let step = until.saturating_duration_since(Instant::now());
                released = rx
                    .recv_timeout(step.min(Duration::from_millis(500)))
                    .is_ok();
            }
            if !released {
                let mut m = c.released.lock().unwrap_or_else(|e| e.into_inner());
                m.remove(sid);
                drop(m);
                // Still beating but silent: two nodes must not number one session.
                let now = c.beat_of(&owner);
                if beat.is_some() && now.is_some() && now != beat {
                    log::warn!("cluster {}: {owner} did not release {sid}", c.node());
                    return Err(NotRecoverable::Busy);
                }
                log::info!("cluster {}: {owner} is gone; continuing {sid}", c.node());
            }
            moved = released;
        }
        // Exactly one node continues the session: the one whose claim moves the record's
        // generation on from what it read. Another resume of the same session racing this
        // one (a client that gave up on a slow resume and tried again elsewhere) read the
        // same generation, and is told to resume again (and then asks this node).
        let next = gen.parse::<u64>().unwrap_or(0) + 1;
        let claim = [("gen", next.to_string()), ("node", c.node().to_owned())];
        let claim: Vec<(&str, &str)> = claim.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match c.bus.hset_if(&h, "gen", &gen, &claim) {
            Ok(true) => {}
            Ok(false) => {
                log::info!("cluster {}: {sid} was taken over meanwhile", c.node());
                return Err(NotRecoverable::Busy);
            }
            Err(e) => {
                log::warn!("cluster {}: session {sid} not claimed: {e}", c.node());
                return Err(NotRecoverable::Busy);
            }
        }
        let rec = load()?;
        if rec.contains_key("broken") {
            return Err(NotRecoverable::Gap);
        }
        let num = |k: &str| rec.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let stored = num("seq");
        if seq > stored {
            return Err(NotRecoverable::Ahead);
        }
        let q = c.session_key(sid, "q");
        let want = (stored - seq) as usize;
        let log = match want {
            0 => Default::default(),
            n => c.bus.read(&q, seq, n).map_err(|_| NotRecoverable::Gap)?,
        };
        let contiguous = log.entries.len() == want
            && log
                .entries
                .iter()
                .enumerate()
                .all(|(i, (p, _))| *p == seq + 1 + i as u64);
        if !contiguous {
            return Err(NotRecoverable::Gap);
        }
        let msgs: Vec<Arc<str>> = log
            .entries
            .into_iter()
            .map(|(_, m)| Arc::from(String::from_utf8_lossy(&m).as_ref()))
            .collect();
        let cfg = self.sessions().cfg.unwrap_or_default();
        let engine = ServerSession::restore(
            sid.to_owned(),
            token.to_owned(),
            cfg.max_replay_bytes,
            cfg.window,
            seq,
            msgs,
            num("cseq"),
            Instant::now(),
        );
        self.sessions().add_bytes(engine.replay.bytes());
        let rooms: Vec<String> = rec
            .get("rooms")
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        // The feeds it follows: its rooms', its user's and everyone's (a room it left is
        // still listed in the record, without a place that counts).
        let mut follows: std::collections::HashSet<String> =
            rooms.iter().map(|r| c.room_key(r, "f")).collect();
        follows.insert(c.all_feed());
        if let Some(u) = &user {
            follows.insert(c.user_key(u, "f"));
        }
        let cursors = rec
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("c:")?.to_owned(), v.parse().ok()?)))
            .filter(|(f, _)| follows.contains(f))
            .collect();
        let gid = rec.get("gid").cloned().unwrap_or_else(|| c.gid(ws.id()));
        let cell = Arc::new(SessionCell {
            id: ws.id(),
            user,
            turn: Mutex::new(()),
            slot: Mutex::new(Slot {
                engine,
                conn: None,
                last: ws.clone(),
                closed: None,
                reported: false,
                cl: Some(Box::new(ClSlot {
                    gid,
                    cursors,
                    broken: false,
                    moved: false,
                    gen: next.to_string(),
                    id: ws.id(),
                })),
            }),
        });
        self.sessions()
            .by_sid()
            .insert(sid.to_owned(), cell.clone());
        // Registered detached: it joins its rooms (and their feeds) before its connection
        // takes it over, so nothing sent meanwhile reaches the connection unnumbered.
        self.register_as(ws, Some(cell.clone()), true, moved);
        for r in &rooms {
            if let Err(e) = self.join_as(ws.id(), r, moved) {
                log::warn!(
                    "cluster {}: session {sid} cannot rejoin {r:?}: {e}",
                    c.node()
                );
            }
        }
        {
            let mut slot = cell.lock();
            let cursors: Vec<(String, u64)> = match &slot.cl {
                Some(cl) => cl.cursors.iter().map(|(f, p)| (f.clone(), *p)).collect(),
                None => Vec::new(),
            };
            for (feed, cur) in cursors {
                self.cluster_fill(&mut slot, &feed, cur, None);
            }
            if slot.cl.as_ref().is_some_and(|cl| cl.broken) {
                drop(slot);
                self.depart(cell.id);
                return Err(NotRecoverable::Gap);
            }
        }
        if c.lock_resuming().get(sid).copied().unwrap_or(false) {
            // Asked for by another node meanwhile (the client resumed there): it goes on
            // there, and this client resumes again.
            self.depart_moved(cell.id);
            return Err(NotRecoverable::Busy);
        }
        // The same takeover as on one node: `session:resumed`, the replay, the groups.
        let old = {
            let mut st = self.state();
            self.take_over(&cell, ws, token, seq, &mut st)
        };
        if let Err(e) = old {
            // Registered above: out again. Released meanwhile to a node where the client
            // resumed again: it goes on there (quietly out), and this client resumes again.
            if cell.moved() {
                self.depart_moved(cell.id);
                return Err(NotRecoverable::Busy);
            }
            self.depart(cell.id);
            return Err(e);
        }
        self.set_presence(&cell);
        Ok(cell)
    }
}

/// A resume of a session under way on this node (see `ClusterNode::resuming`).
struct Resuming<'a> {
    c: &'a ClusterNode,
    sid: &'a str,
}

impl<'a> Resuming<'a> {
    /// None when one is under way already.
    fn enter(c: &'a ClusterNode, sid: &'a str) -> Option<Self> {
        let mut m = c.lock_resuming();
        if m.contains_key(sid) {
            return None;
        }
        m.insert(sid.to_owned(), false);
        Some(Resuming { c, sid })
    }
}

impl Drop for Resuming<'_> {
    fn drop(&mut self) {
        self.c.lock_resuming().remove(self.sid);
    }
}
