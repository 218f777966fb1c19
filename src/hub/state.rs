//! The hub's registry: connections (identity, tags, metadata, rooms), the user → connections
//! index, presence, and rooms with their options, roles and invitations (no I/O).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use super::error::{ErrorCode, HubError};
use super::routes::{Route, Routes};
use crate::{ConnId, GroupId, WsConn};

/// What the hub knows about one connection; filters see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnInfo {
    /// The connection's id.
    pub id: ConnId,
    /// The user, when the authenticator gave an identity.
    pub user: Option<String>,
    /// Tags from the identity.
    pub tags: Vec<String>,
    /// Metadata: the identity's attributes, then whatever was set with
    /// [`Hub::set_meta`](super::Hub::set_meta).
    pub meta: BTreeMap<String, serde_json::Value>,
    /// The rooms the connection is in.
    pub rooms: BTreeSet<String>,
    /// When the connection opened.
    pub connected_at: SystemTime,
}

pub(crate) struct ConnEntry {
    pub(crate) ws: WsConn,
    pub(crate) info: ConnInfo,
    /// Rooms this connection created by joining them, still existing.
    pub(crate) created: usize,
    /// The session this hub connection is, when it is one.
    pub(crate) session: Option<std::sync::Arc<super::session::SessionCell>>,
    /// A session without a connection right now (inside its window).
    pub(crate) detached: bool,
}

/// Who may join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoomPolicy {
    /// Anyone may join (the default).
    #[default]
    Public,
    /// Not listed by [`Hub::rooms`](super::Hub::rooms); only invited users or users with a
    /// role may join.
    Private,
    /// Listed, but only invited users or users with a role may join.
    InviteOnly,
}

/// A user's role in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// An ordinary member.
    Member,
    /// May invite and kick.
    Moderator,
    /// Created the room; may do everything.
    Owner,
}

/// What happens to a room when its last member leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cleanup {
    /// The room (options, roles, invitations) is removed (the default).
    #[default]
    WhenEmpty,
    /// The room stays until [`Hub::delete_room`](super::Hub::delete_room).
    Keep,
}

/// Which system events a room's members receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoomEvents {
    /// `room:joined`, `room:left`, `room:users`, `presence` and `typing` (the default).
    #[default]
    Notify,
    /// None: for very large rooms, where pushing the member list on every join costs
    /// O(members²).
    Silent,
}

/// A room's options; every default is listed on its field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomOptions {
    /// Who may join (default [`RoomPolicy::Public`]).
    pub policy: RoomPolicy,
    /// Most connections in the room at once (default: no limit).
    pub capacity: Option<usize>,
    /// What happens when it empties (default [`Cleanup::WhenEmpty`]).
    pub cleanup: Cleanup,
    /// System events pushed to members (default [`RoomEvents::Notify`]).
    pub events: RoomEvents,
    /// The owner's user id (default: none; a room created by a first join is owned by the
    /// joiner's user).
    pub owner: Option<String>,
}

impl RoomOptions {
    /// Every default: public, no capacity, removed when empty, notifications on, no owner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`policy`](Self::policy).
    pub fn policy(mut self, p: RoomPolicy) -> Self {
        self.policy = p;
        self
    }

    /// Sets [`capacity`](Self::capacity).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = Some(n);
        self
    }

    /// Sets [`cleanup`](Self::cleanup).
    pub fn cleanup(mut self, c: Cleanup) -> Self {
        self.cleanup = c;
        self
    }

    /// Sets [`events`](Self::events).
    pub fn events(mut self, e: RoomEvents) -> Self {
        self.events = e;
        self
    }

    /// Sets [`owner`](Self::owner).
    pub fn owner(mut self, user: impl Into<String>) -> Self {
        self.owner = Some(user.into());
        self
    }
}

/// A snapshot of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room's name.
    pub name: String,
    /// Its options.
    pub options: RoomOptions,
    /// Connections in it.
    pub connections: usize,
    /// Distinct users in it, sorted.
    pub users: Vec<String>,
}

/// Whether a user is online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Connected, with this many connections (devices).
    Online {
        /// Open connections of the user.
        connections: usize,
    },
    /// Not connected; last seen at this time.
    Offline {
        /// When the user's last connection closed.
        last_seen: SystemTime,
    },
    /// Every connection of the user is a session waiting for its client to reconnect
    /// (inside its window; see [`SessionConfig`](super::SessionConfig)).
    Reconnecting {
        /// Sessions of the user waiting for a resume.
        connections: usize,
    },
    /// Never seen by this hub.
    Unknown,
}

/// Group ids handed to rooms: far above what applications pick by hand.
static NEXT_GROUP: AtomicU64 = AtomicU64::new(1 << 62);

pub(crate) fn next_group() -> GroupId {
    GroupId(NEXT_GROUP.fetch_add(1, Ordering::Relaxed))
}

pub(crate) struct Room {
    pub(crate) gid: GroupId,
    /// The connection that created the room by joining it (counted against its cap).
    pub(crate) creator: Option<ConnId>,
    pub(crate) opts: RoomOptions,
    pub(crate) members: BTreeMap<ConnId, Option<String>>,
    pub(crate) roles: HashMap<String, Role>,
    pub(crate) invites: HashSet<String>,
}

impl Room {
    pub(crate) fn new(opts: RoomOptions) -> Self {
        let mut roles = HashMap::new();
        if let Some(o) = &opts.owner {
            roles.insert(o.clone(), Role::Owner);
        }
        Room {
            gid: next_group(),
            creator: None,
            opts,
            members: BTreeMap::new(),
            roles,
            invites: HashSet::new(),
        }
    }

    /// Whether `user` may join, and whether there is room.
    pub(crate) fn admit(&self, user: Option<&str>) -> Result<(), HubError> {
        let vouched = user.is_some_and(|u| self.invites.contains(u) || self.roles.contains_key(u));
        if self.opts.policy != RoomPolicy::Public && !vouched {
            return Err(HubError::forbidden("this room needs an invitation"));
        }
        if self.opts.capacity.is_some_and(|c| self.members.len() >= c) {
            return Err(HubError::new(ErrorCode::RoomFull, "the room is full"));
        }
        Ok(())
    }

    /// Distinct users among the members, sorted.
    pub(crate) fn users(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.members.values().flatten().collect();
        set.into_iter().cloned().collect()
    }

    pub(crate) fn has_user(&self, user: &str) -> bool {
        self.members.values().any(|u| u.as_deref() == Some(user))
    }

    pub(crate) fn info(&self, name: &str) -> RoomInfo {
        RoomInfo {
            name: name.to_owned(),
            options: self.opts.clone(),
            connections: self.members.len(),
            users: self.users(),
        }
    }

    pub(crate) fn notifies(&self) -> bool {
        self.opts.events == RoomEvents::Notify
    }
}

/// Bans kept before expired ones are pruned (then whenever their number doubles).
const PRUNE_BANS_AT: usize = 1024;

#[derive(Default)]
pub(crate) struct State {
    pub(crate) conns: HashMap<ConnId, ConnEntry>,
    pub(crate) users: HashMap<String, BTreeSet<ConnId>>,
    pub(crate) last_seen: HashMap<String, SystemTime>,
    pub(crate) rooms: HashMap<String, Room>,
    /// (room, user) → end of the ban. Kept apart from the rooms, so a ban outlives the
    /// room emptying (a banned user cannot re-create it by joining).
    pub(crate) bans: HashMap<(String, String), Instant>,
    prune_bans_at: usize,
    /// Online users → the rooms their coming online was announced to (presence in the
    /// rooms scope); forgotten when they go offline.
    pub(crate) announced: HashMap<String, HashSet<String>>,
    /// Hub connections that are sessions.
    pub(crate) sessions: BTreeMap<ConnId, std::sync::Arc<super::session::SessionCell>>,
    /// The rooms' delivery view, changed only under this registry's lock (see `routes.rs`).
    pub(crate) routes: std::sync::Arc<Routes>,
}

impl State {
    /// Adds a room and its route.
    pub(crate) fn add_room(&mut self, name: &str, room: Room) {
        let route = Route::new(room.gid);
        self.routes.shard(name).insert(name.to_owned(), route);
        self.rooms.insert(name.to_owned(), room);
    }

    /// Removes a room and its route, releasing its creator's count.
    pub(crate) fn remove_room(&mut self, name: &str) -> Option<Room> {
        let room = self.rooms.remove(name)?;
        self.routes.shard(name).remove(name);
        let creator = room.creator.and_then(|c| self.conns.get_mut(&c));
        if let Some(e) = creator {
            e.created = e.created.saturating_sub(1);
        }
        Some(room)
    }

    /// Bans `user` from `room` until `until`.
    pub(crate) fn ban(&mut self, room: &str, user: &str, until: Instant, now: Instant) {
        self.bans.insert((room.to_owned(), user.to_owned()), until);
        if self.bans.len() > self.prune_bans_at.max(PRUNE_BANS_AT) {
            self.bans.retain(|_, t| *t > now);
            self.prune_bans_at = self.bans.len() * 2;
        }
    }

    /// When `user`'s ban from `room` ends, if it has not yet.
    pub(crate) fn banned_until(&self, room: &str, user: &str, now: Instant) -> Option<Instant> {
        let key = (room.to_owned(), user.to_owned());
        self.bans.get(&key).copied().filter(|t| *t > now)
    }

    /// The hub connections of `user`, as recipients.
    pub(crate) fn user_peers(&self, user: &str) -> Vec<super::delivery::Peer> {
        let Some(ids) = self.users.get(user) else {
            return Vec::new();
        };
        let peer = |id: &ConnId| self.conns.get(id).map(super::delivery::Peer::of);
        ids.iter().filter_map(peer).collect()
    }

    /// Records that `user` went offline at `at`, forgetting the oldest tenth past `cap`.
    pub(crate) fn saw(&mut self, user: &str, at: SystemTime, cap: usize) {
        self.last_seen.insert(user.to_owned(), at);
        if self.last_seen.len() <= cap {
            return;
        }
        let mut times: Vec<SystemTime> = self.last_seen.values().copied().collect();
        times.sort_unstable();
        let cut = times[(times.len() / 10).min(times.len() - 1)];
        self.last_seen.retain(|_, t| *t > cut);
    }

    pub(crate) fn presence(&self, user: &str) -> Presence {
        if let Some(c) = self.users.get(user) {
            let detached = |id: &&ConnId| self.conns.get(id).is_some_and(|e| e.detached);
            let waiting = c.iter().filter(detached).count();
            return match c.len() - waiting {
                0 if waiting > 0 => Presence::Reconnecting {
                    connections: waiting,
                },
                live => Presence::Online { connections: live },
            };
        }
        match self.last_seen.get(user) {
            Some(t) => Presence::Offline { last_seen: *t },
            None => Presence::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_by_policy_and_capacity() {
        let mut r = Room::new(RoomOptions::new().capacity(1));
        assert!(r.admit(None).is_ok());
        r.members.insert(ConnId(1), Some("a".into()));
        assert_eq!(r.admit(Some("b")).unwrap_err().code, ErrorCode::RoomFull);
        let mut p = Room::new(RoomOptions::new().policy(RoomPolicy::InviteOnly).owner("o"));
        assert_eq!(p.admit(Some("b")).unwrap_err().code, ErrorCode::Forbidden);
        assert_eq!(p.admit(None).unwrap_err().code, ErrorCode::Forbidden);
        assert!(p.admit(Some("o")).is_ok());
        p.invites.insert("b".into());
        assert!(p.admit(Some("b")).is_ok());
    }

    #[test]
    fn last_seen_is_bounded() {
        let mut st = State::default();
        let t0 = SystemTime::UNIX_EPOCH;
        for i in 0..25u64 {
            st.saw(&format!("u{i}"), t0 + std::time::Duration::from_secs(i), 20);
        }
        assert!(st.last_seen.len() <= 20);
        assert!(matches!(st.presence("u24"), Presence::Offline { .. }));
        assert_eq!(st.presence("u0"), Presence::Unknown);
    }

    #[test]
    fn bans_end_and_expired_ones_are_pruned() {
        let mut st = State::default();
        let t0 = Instant::now();
        let s = std::time::Duration::from_secs;
        st.ban("r", "u", t0 + s(10), t0);
        assert!(st.banned_until("r", "u", t0 + s(9)).is_some());
        assert!(st.banned_until("r", "u", t0 + s(10)).is_none());
        assert!(st.banned_until("other", "u", t0).is_none());
        for i in 0..2000 {
            st.ban("r", &format!("x{i}"), t0 + s(1), t0 + s(20));
        }
        // Past 1,024 bans the expired ones go: never more than 1,025 kept here.
        assert!(st.bans.len() <= 1025, "{}", st.bans.len());
        st.ban("r", "y", t0 + s(30), t0 + s(20));
        assert!(st.banned_until("r", "y", t0 + s(20)).is_some());
    }

    #[test]
    fn users_are_distinct_and_sorted() {
        let mut r = Room::new(RoomOptions::new());
        r.members.insert(ConnId(3), Some("b".into()));
        r.members.insert(ConnId(1), Some("a".into()));
        r.members.insert(ConnId(2), Some("b".into()));
        r.members.insert(ConnId(4), None);
        assert_eq!(r.users(), vec!["a".to_string(), "b".to_string()]);
        assert!(r.has_user("b") && !r.has_user("c"));
    }
}
