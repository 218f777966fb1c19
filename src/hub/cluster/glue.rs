//! The hub's cluster operations: what it does with what it hears from other nodes, the
//! cluster-wide queries, and its registry as the store should hold it.

use std::sync::Arc;

use super::node::{ClusterNode, ClusterStats, Op, Registry, Wire};
use crate::hub::builder::PresenceScope;
use crate::hub::Hub;
use crate::proto::ws::CloseCode;
use crate::ConnId;

/// Polling requests forwarded at once, at most (past it a request is answered as for an
/// unknown session, and the client opens a new polling connection).
const MAX_FORWARDED_POLLS: usize = 65_536;

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for v in b {
        s.push(char::from(b"0123456789abcdef"[usize::from(v >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(v & 15)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(d(p[0])? << 4 | d(p[1])?))
        .collect()
}

impl Hub {
    pub(crate) fn cluster_node(&self) -> Option<&Arc<ClusterNode>> {
        self.inner.cluster.as_ref()
    }

    /// The cluster-wide id of a local connection (a session's is the one it started with).
    pub(crate) fn cluster_gid(&self, id: ConnId) -> String {
        let Some(c) = self.cluster_node() else {
            return id.0.to_string();
        };
        let cell = self.state().conns.get(&id).and_then(|e| e.session.clone());
        cell.and_then(|cell| cell.cluster_gid())
            .unwrap_or_else(|| c.gid(id))
    }

    /// The counters of this hub's cluster link; `None` for a hub that is not clustered.
    ///
    /// # Examples
    /// ```
    /// use sockloop::hub::cluster::{ClusterConfig, LocalBus};
    /// use sockloop::hub::Hub;
    /// let bus = LocalBus::new();
    /// let hub = Hub::builder().cluster(bus.handle(), ClusterConfig::new("a")).build();
    /// assert_eq!(hub.cluster_stats().unwrap().node, "a");
    /// assert!(Hub::builder().build().cluster_stats().is_none());
    /// ```
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        self.cluster_node().map(|c| c.stats())
    }

    /// The nodes alive in this hub's cluster (this one included), sorted; empty for a hub
    /// that is not clustered.
    pub fn cluster_nodes(&self) -> Vec<String> {
        self.cluster_node()
            .map(|c| c.live_nodes())
            .unwrap_or_default()
    }

    /// Leaves the cluster: this node's rooms, users and heartbeat are removed from the
    /// store (other nodes see its users go at once, without waiting for the heartbeat to
    /// lapse) and it stops hearing the others. Call it at a graceful shutdown, after the
    /// server stopped. Nothing for a hub that is not clustered.
    pub fn leave_cluster(&self) {
        if let Some(c) = self.cluster_node() {
            c.leave();
        }
    }

    /// A message heard from the bus (on a reader thread of the bus).
    pub(crate) fn cluster_heard(&self, pos: u64, payload: &[u8]) {
        let Some(c) = self.cluster_node() else {
            return;
        };
        let w: Wire = match serde_json::from_slice(payload) {
            Ok(w) => w,
            Err(e) => {
                log::warn!("cluster {}: unreadable bus message: {e}", c.node());
                return;
            }
        };
        let feed = match &w.op {
            Op::Room { r, .. } => Some(c.room_key(r, "f")),
            Op::User { u, .. } => Some(c.user_key(u, "f")),
            Op::All { .. } => Some(c.all_feed()),
            _ => None,
        };
        let _turn = feed
            .as_ref()
            .map(|_| c.delivering.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(feed) = &feed {
            if pos > 0 && !self.cluster_in_order(feed, pos) {
                return; // brought by a gap fill already
            }
        }
        if w.o == c.node() {
            self.cluster_own(pos, w.op);
            return;
        }
        c.heard();
        self.cluster_deliver(&w.o, pos, w.op);
    }

    /// Whether a message at `pos` of `feed` is new to this node; one past a gap first
    /// brings the ones in between from the feed (published while this node's readers were
    /// reconnecting), delivered to the members here.
    fn cluster_in_order(&self, feed: &str, pos: u64) -> bool {
        let Some(c) = self.cluster_node() else {
            return true;
        };
        let cur = {
            let mut m = c.heard_at.lock().unwrap_or_else(|e| e.into_inner());
            let cur = m.get(feed).copied();
            match cur {
                Some(cur) if pos <= cur => {
                    drop(m);
                    if !c.feed_restarted(feed, cur) {
                        return false;
                    }
                    // The store lost its data and the feed started over: from here on.
                    let mut m = c.heard_at.lock().unwrap_or_else(|e| e.into_inner());
                    m.insert(feed.to_owned(), pos);
                    return true;
                }
                _ => {
                    m.insert(feed.to_owned(), pos);
                }
            }
            cur
        };
        if let Some(cur) = cur.filter(|cur| pos > cur + 1) {
            self.cluster_fill_node(feed, cur, pos);
        }
        true
    }

    /// The readers reconnected: what was published meanwhile, and nothing after it, is
    /// brought from the feeds this node hears, for its members.
    pub(crate) fn cluster_catch_up_node(&self) {
        let Some(c) = self.cluster_node() else { return };
        let _turn = c.delivering.lock().unwrap_or_else(|e| e.into_inner());
        let feeds: Vec<(String, u64)> = {
            let m = c.heard_at.lock().unwrap_or_else(|e| e.into_inner());
            m.iter().map(|(f, p)| (f.clone(), *p)).collect()
        };
        for (feed, cur) in feeds {
            let Ok(r) = c.bus.read(&feed, cur, 10_000) else {
                continue;
            };
            if r.head < cur {
                // The feed started over (the store lost its data).
                c.heard_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(feed, r.head);
                continue;
            }
            if let Some((last, _)) = r.entries.last() {
                let upto = *last + 1;
                c.heard_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(feed.clone(), *last);
                self.cluster_fill_node(&feed, cur, upto);
            }
        }
    }

    /// Delivers what `feed` holds between `cur` and `upto` (exclusive) to this node's
    /// members, but what this node published itself (its members had it then).
    fn cluster_fill_node(&self, feed: &str, cur: u64, upto: u64) {
        let Some(c) = self.cluster_node() else { return };
        let want = upto - cur - 1;
        let read = match c.bus.read(feed, cur, want as usize) {
            Ok(r) => r,
            Err(e) => {
                log::warn!(
                    "cluster {}: {want} messages of {feed} missed: {e}",
                    c.node()
                );
                c.missed
                    .fetch_add(want, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        };
        let got = read
            .entries
            .iter()
            .filter(|(p, _)| *p > cur && *p < upto)
            .count() as u64;
        if got < want {
            log::warn!(
                "cluster {}: {} messages of {feed} trimmed before heard",
                c.node(),
                want - got
            );
            c.missed
                .fetch_add(want - got, std::sync::atomic::Ordering::Relaxed);
        }
        for (p, payload) in read.entries {
            if p <= cur || p >= upto {
                continue;
            }
            let Ok(w) = serde_json::from_slice::<Wire>(&payload) else {
                continue;
            };
            if w.o != c.node() {
                c.filled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.cluster_deliver(&w.o, p, w.op);
            }
        }
    }

    /// Delivers an operation heard from another node to the members here.
    fn cluster_deliver(&self, origin: &str, pos: u64, op: Op) {
        let Some(c) = self.cluster_node() else { return };
        match op {
            Op::Room { r, m, .. } => {
                let feed = c.room_key(&r, "f");
                self.to_room(&r).heard(feed, pos).send_text_nowait(&m);
            }
            Op::User { u, m, .. } => {
                let feed = c.user_key(&u, "f");
                self.to_user(&u).heard(feed, pos).send_text(&m);
            }
            Op::All { m, .. } => {
                self.to_all().heard(c.all_feed(), pos).send_text_nowait(&m);
            }
            Op::Kick { u, c: code, why } => {
                self.disconnect_user_here(&u, CloseCode::from(code), &why);
            }
            Op::Release { sid, to } => self.cluster_release(&sid, &to),
            Op::PollReq {
                id,
                sid,
                post,
                ack,
                max,
                seq,
                b,
            } => self.cluster_poll_request(origin, id, &sid, post, ack, max, seq, &b),
            Op::PollResp { id, b } => {
                let waiting = c
                    .polls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let (Some((carrier, _)), Some(bytes)) = (waiting, unhex(&b)) {
                    crate::server::longpoll::reply(&carrier, bytes);
                }
            }
            Op::Released { sid } => {
                let tx = c
                    .released
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&sid);
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Long-polling without sticky sessions: this node's polling session ids carry its
    /// name, and a request for another node's session is forwarded to it over the bus and
    /// answered from there. Called by `attach`.
    pub(crate) fn cluster_attach(&self, server: &crate::server::ServerShared) {
        let Some(c) = self.cluster_node() else { return };
        let _ = server
            .polls
            .prefix
            .set(format!("{}.", hex(c.node().as_bytes())));
        let weak = std::sync::Arc::downgrade(&self.inner);
        let fwd: crate::server::longpoll::Forwarder = Arc::new(move |sid, req, carrier| {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            Hub { inner }.cluster_forward_poll(sid, req, carrier)
        });
        let _ = server.polls.forward.set(fwd);
    }

    fn cluster_forward_poll(
        &self,
        sid: &str,
        req: crate::server::longpoll::Forwarded,
        carrier: crate::server::longpoll::Carrier,
    ) -> bool {
        use crate::server::longpoll::Forwarded;
        let Some(c) = self.cluster_node() else {
            return false;
        };
        let node = sid
            .split_once('.')
            .and_then(|(h, _)| unhex(h))
            .and_then(|n| String::from_utf8(n).ok());
        let Some(node) = node.filter(|n| n != c.node() && c.alive(&format!("{n}/0"))) else {
            return false;
        };
        let id = c
            .next_poll
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut m = c.polls.lock().unwrap_or_else(|e| e.into_inner());
            if m.len() >= MAX_FORWARDED_POLLS {
                return false;
            }
            m.insert(id, (carrier, std::time::Instant::now()));
        }
        let (post, ack, max, seq, b) = match req {
            Forwarded::Get { ack, max } => (false, ack, max, None, String::new()),
            Forwarded::Post { seq, body } => (true, 0, None, seq, hex(&body)),
        };
        let op = Op::PollReq {
            id,
            sid: sid.to_owned(),
            post,
            ack,
            max,
            seq,
            b,
        };
        if c.send_to(&node, op).is_err() {
            c.polls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return false;
        }
        c.polls_forwarded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// A polling request another node forwarded: handed to the session here, its answer
    /// sent back.
    #[allow(clippy::too_many_arguments)]
    fn cluster_poll_request(
        &self,
        from: &str,
        id: u64,
        sid: &str,
        post: bool,
        ack: u64,
        max: Option<u64>,
        seq: Option<u64>,
        body: &str,
    ) {
        use crate::server::longpoll::{self, Carrier, Forwarded, Responder};
        let Some(c) = self.cluster_node().cloned() else {
            return;
        };
        let from = from.to_owned();
        let answer = move |bytes: Vec<u8>| {
            let op = Op::PollResp { id, b: hex(&bytes) };
            if let Err(e) = c.send_to(&from, op) {
                log::warn!("cluster {}: polling answer to {from} lost: {e}", c.node());
            }
        };
        let req = match post {
            false => Forwarded::Get { ack, max },
            true => Forwarded::Post {
                seq,
                body: unhex(body).unwrap_or_default(),
            },
        };
        let Some(f) = self.inner.bcast.get() else {
            return answer(longpoll::unknown_session(sid));
        };
        let carrier = Carrier::Remote(Responder::new(answer));
        if !longpoll::inject(&f.b.server, sid, req, carrier.clone()) {
            longpoll::reply(&carrier, longpoll::unknown_session(sid));
        }
    }

    /// A message this node published, heard back: its members had it when it was
    /// published.
    fn cluster_own(&self, _pos: u64, _op: Op) {}

    /// A member left `room`: when it was this node's last, the node stops following the
    /// room's feed (its place there is forgotten, so what it keeps stays bounded by the
    /// rooms and users it has).
    pub(crate) fn cluster_room_left(&self, room: &str) {
        let Some(c) = self.cluster_node() else { return };
        let empty = self
            .state()
            .rooms
            .get(room)
            .is_none_or(|r| r.members.is_empty());
        if empty {
            c.forget_heard(&c.room_key(room, "f"));
        }
    }

    /// This node's registry as the store should hold it.
    pub(crate) fn cluster_registry(&self) -> Registry {
        let mut reg = Registry::default();
        let Some(c) = self.cluster_node() else {
            return reg;
        };
        let st = self.state();
        for (name, room) in &st.rooms {
            if room.members.is_empty() {
                continue;
            }
            let m = room
                .members
                .iter()
                .map(|(id, u)| (c.gid(*id), u.clone().unwrap_or_default()));
            reg.rooms.insert(name.clone(), m.collect());
        }
        for (user, ids) in &st.users {
            let m = ids.iter().map(|id| {
                let detached = st.conns.get(id).is_some_and(|e| e.detached);
                (c.gid(*id), if detached { "d" } else { "1" }.to_owned())
            });
            reg.users.insert(user.clone(), m.collect());
        }
        reg
    }

    /// A dead node was reaped by this one: its users that are now offline everywhere are
    /// announced, and the rooms it had members in get their new user lists.
    pub(crate) fn cluster_node_died(&self, users: &[String], rooms: &[String]) {
        let Some(c) = self.cluster_node() else {
            return;
        };
        for room in rooms {
            if let Ok(users) = self.try_room_users(room) {
                let data = serde_json::json!({"room": room, "users": users});
                self.to_room(room).emit("room:users", &data);
            }
        }
        for user in users {
            if !matches!(
                self.presence(user),
                crate::hub::Presence::Offline { .. } | crate::hub::Presence::Unknown
            ) {
                continue;
            }
            c.saw(user);
            match self.inner.cfg.presence {
                PresenceScope::Off => {}
                // The rooms the user was in are not known here: everyone hears it.
                PresenceScope::Everyone | PresenceScope::Rooms => {
                    let since = std::time::SystemTime::now()
                        .duration_since(std::time::SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let data =
                        serde_json::json!({"user": user, "online": false, "last_seen": since});
                    if self.inner.cfg.presence == PresenceScope::Everyone {
                        self.to_all().emit("presence", &data);
                    } else {
                        for room in rooms {
                            self.to_room(room).emit("presence", &data);
                        }
                    }
                }
            }
        }
    }

    /// The distinct users of a room across the cluster, sorted: this node's members and
    /// the other live nodes' as the store lists them.
    pub(crate) fn try_room_users(&self, room: &str) -> Result<Vec<String>, super::BusError> {
        let mut set: std::collections::BTreeSet<String> =
            self.local_room_users(room).into_iter().collect();
        if let Some(c) = self.cluster_node() {
            for (_, u) in c.remote_members(room)? {
                if !u.is_empty() {
                    set.insert(u);
                }
            }
        }
        Ok(set.into_iter().collect())
    }

    /// Closes every connection of `user` on this node; returns how many.
    pub(crate) fn disconnect_user_here(&self, user: &str, code: CloseCode, reason: &str) -> usize {
        let conns = self.state().user_peers(user);
        for p in &conns {
            p.ws.close(code, reason);
            self.depart(p.id);
        }
        conns.len()
    }

    /// Asks the other nodes holding connections of `user` to close them.
    pub(crate) fn cluster_kick(&self, user: &str, code: CloseCode, reason: &str) {
        let Some(c) = self.cluster_node() else {
            return;
        };
        let nodes = match c.bus.hgetall(&c.user_key(user, "nodes")) {
            Ok(n) => n,
            Err(e) => {
                log::warn!(
                    "cluster {}: disconnect of {user:?} on other nodes: {e}",
                    c.node()
                );
                return;
            }
        };
        for (node, _) in nodes {
            if node == c.node() || !c.alive(&format!("{node}/0")) {
                continue;
            }
            let op = Op::Kick {
                u: user.to_owned(),
                c: code.as_u16(),
                why: reason.to_owned(),
            };
            if let Err(e) = c.send_to(&node, op) {
                log::warn!(
                    "cluster {}: disconnect of {user:?} on {node}: {e}",
                    c.node()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips() {
        let b = b"\x00\xffnode-a.\x10";
        assert_eq!(super::unhex(&super::hex(b)).unwrap(), b.to_vec());
        assert!(super::unhex("abc").is_none() && super::unhex("zz").is_none());
    }
}
