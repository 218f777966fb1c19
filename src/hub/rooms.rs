//! Rooms on the hub: create, join, leave, invite, kick and ban, roles, members and counts.

use serde_json::json;

use super::builder::PresenceScope;
use super::error::{ErrorCode, HubError};
use super::state::{Cleanup, Role, Room, RoomInfo, RoomOptions, RoomPolicy, State};
use super::Hub;
use crate::ConnId;

use std::time::{Duration, Instant};

/// What removing one member changed.
pub(super) struct Left {
    pub(super) room: String,
    user: Option<String>,
    /// The member list when the user's last connection left the room.
    users: Option<Vec<String>>,
    pub(super) notify: bool,
}

fn banned(until: Instant) -> HubError {
    let secs = until
        .saturating_duration_since(Instant::now())
        .as_secs()
        .max(1);
    HubError::forbidden(format!("banned from this room for {secs} s more"))
}

fn not_found(what: &str) -> HubError {
    HubError::not_found(format!("no such {what}"))
}

/// Removes `id` from `room` (delivery group included); removes an emptied room per its
/// cleanup.
pub(super) fn remove_member(st: &mut State, id: ConnId, room: &str) -> Option<Left> {
    let State {
        conns,
        rooms,
        routes,
        ..
    } = st;
    let r = rooms.get_mut(room)?;
    let user = r.members.remove(&id)?;
    {
        // Out of the route and the group together (see `routes.rs`).
        let mut shard = routes.shard(room);
        if let Some(route) = shard.get_mut(room) {
            route.members.remove(&id);
            route.remove_session(id);
        }
        if let Some(e) = conns.get_mut(&id) {
            e.ws.leave_group(r.gid);
        }
    }
    if let Some(e) = conns.get_mut(&id) {
        e.info.rooms.remove(room);
    }
    let user_left = user.as_deref().is_some_and(|u| !r.has_user(u));
    let left = Left {
        room: room.to_owned(),
        users: user_left.then(|| r.users()),
        user,
        notify: r.notifies(),
    };
    if r.members.is_empty() && r.opts.cleanup == Cleanup::WhenEmpty {
        st.remove_room(room);
    }
    Some(left)
}

impl Hub {
    /// Creates a room with `options`.
    ///
    /// # Errors
    /// `forbidden` when a room of that name exists.
    ///
    /// # Examples
    /// ```
    /// use sockloop::hub::{Hub, RoomOptions, RoomPolicy};
    /// let hub = Hub::builder().build();
    /// hub.create_room("staff", RoomOptions::new().policy(RoomPolicy::InviteOnly).capacity(10))
    ///     .unwrap();
    /// hub.invite("staff", "ann").unwrap();
    /// assert_eq!(hub.room_count("staff"), 0);
    /// ```
    pub fn create_room(&self, name: &str, options: RoomOptions) -> Result<(), HubError> {
        let mut st = self.state();
        if st.rooms.contains_key(name) {
            return Err(HubError::forbidden("the room exists"));
        }
        st.add_room(name, Room::new(options));
        Ok(())
    }

    /// Deletes a room: its members leave it (they get `room:closed`). True when the room
    /// existed, false when unknown.
    pub fn delete_room(&self, name: &str) -> bool {
        if !self.state().rooms.contains_key(name) {
            return false;
        }
        self.to_room(name)
            .emit("room:closed", &json!({"room": name}));
        let mut st = self.state();
        let members = st
            .rooms
            .get(name)
            .map(|r| r.members.keys().copied().collect());
        let members: Vec<ConnId> = members.unwrap_or_default();
        let left: Vec<(ConnId, Left)> = members
            .into_iter()
            .filter_map(|id| remove_member(&mut st, id, name).map(|l| (id, l)))
            .collect();
        // Removing the last member may have removed the room already (its cleanup).
        st.remove_room(name);
        drop(st);
        for (id, l) in &left {
            self.publish_member(name, *id, &l.user, false);
        }
        true
    }

    /// Adds a connection to a room, creating the room per
    /// [`HubConfig::auto_create`](super::HubConfig::auto_create). Joining twice is
    /// harmless. Members get `room:joined`, and `room:users` when the user is new to it.
    ///
    /// # Errors
    /// `not_found` for an unknown connection, or an unknown room without auto-creation;
    /// `forbidden` for a private or invite-only room without an invitation or role;
    /// `room_full` at capacity.
    pub fn join(&self, id: ConnId, room: &str) -> Result<(), HubError> {
        self.join_as(id, room, false)
    }

    /// [`join`](Self::join); `moved`: a session member another node released to this one
    /// rejoins its rooms, and nobody is told (it never left them).
    pub(crate) fn join_as(&self, id: ConnId, room: &str, moved: bool) -> Result<(), HubError> {
        let (user, users, notify) = {
            let mut st = self.state();
            let user = st.conns.get(&id).ok_or_else(|| not_found("connection"))?;
            let user = user.info.user.clone();
            if let Some(u) = &user {
                if let Some(until) = st.banned_until(room, u, Instant::now()) {
                    return Err(banned(until));
                }
            }
            if !st.rooms.contains_key(room) {
                self.create_by_join(&mut st, id, room, user.as_deref())?;
            }
            let State {
                conns,
                rooms,
                routes,
                ..
            } = &mut *st;
            let entry = conns.get_mut(&id).ok_or_else(|| not_found("connection"))?;
            let r = rooms.get_mut(room).ok_or_else(|| not_found("room"))?;
            if r.members.contains_key(&id) {
                return Ok(());
            }
            if let Err(e) = r.admit(user.as_deref()) {
                if r.members.is_empty() && r.creator == Some(id) {
                    st.remove_room(room);
                }
                return Err(e);
            }
            let new_user = user.as_deref().is_some_and(|u| !r.has_user(u));
            if r.members.is_empty() {
                // The node hears the room's feed afresh from now.
                if let Some(c) = self.cluster_node() {
                    c.forget_heard(&c.room_key(room, "f"));
                }
            }
            r.members.insert(id, user.clone());
            {
                // Into the route and the group together (see `routes.rs`).
                let mut shard = routes.shard(room);
                if let Some(route) = shard.get_mut(room) {
                    route.members.insert(id);
                    if let Some(cell) = &entry.session {
                        // Numbered under its lock by every group send to the room.
                        route.add_session(cell.clone());
                    }
                }
                if !entry.detached {
                    // A detached session joins its groups when a connection takes it over.
                    entry.ws.join_group(r.gid);
                }
            }
            entry.info.rooms.insert(room.to_owned());
            (user, new_user.then(|| r.users()), r.notifies())
        };
        self.publish_member(room, id, &user, true);
        self.cluster_session_joined(id, room);
        if moved {
            if let Some(u) = &user {
                // Announced online there already, by the node it came from.
                self.mark_announced(id, u, room);
            }
            return Ok(());
        }
        if notify {
            let data = json!({"room": room, "user": user, "conn": id.0});
            self.to_room(room).emit("room:joined", &data);
            if let Some(users) = users {
                self.push_users(room, &users);
            }
            if let Some(u) = &user {
                self.announce_online(id, u, room);
            }
        }
        Ok(())
    }

    /// Creates `room` for a first join by `id` (per `auto_create`, within the connection's
    /// cap); the joiner's user owns it.
    fn create_by_join(
        &self,
        st: &mut State,
        id: ConnId,
        room: &str,
        user: Option<&str>,
    ) -> Result<(), HubError> {
        let cfg = &self.inner.cfg;
        let mut opts = cfg.auto_create.clone().ok_or_else(|| not_found("room"))?;
        let entry = st
            .conns
            .get_mut(&id)
            .ok_or_else(|| not_found("connection"))?;
        if cfg.max_rooms_per_conn.is_some_and(|n| entry.created >= n) {
            let n = cfg.max_rooms_per_conn.unwrap_or(0);
            let msg = format!("a connection may create at most {n} rooms");
            return Err(HubError::forbidden(msg));
        }
        entry.created += 1;
        if opts.owner.is_none() {
            opts.owner = user.map(str::to_owned);
        }
        let mut r = Room::new(opts);
        r.creator = Some(id);
        st.add_room(room, r);
        Ok(())
    }

    /// `presence` `online: true` to `room`, the first time `user` enters it after coming
    /// online (presence in the rooms scope).
    pub(super) fn announce_online(&self, id: ConnId, user: &str, room: &str) {
        if self.inner.cfg.presence != PresenceScope::Rooms {
            return;
        }
        if self.mark_announced_in(id, user, room) {
            let data = json!({"user": user, "online": true});
            self.to_room(room).except(id).emit("presence", &data);
        }
    }

    /// Records that `user` was announced online in `room` (presence in the rooms scope).
    fn mark_announced(&self, id: ConnId, user: &str, room: &str) {
        if self.inner.cfg.presence == PresenceScope::Rooms {
            let _ = self.mark_announced_in(id, user, room);
        }
    }

    /// Records it; true the first time since the user came online here.
    fn mark_announced_in(&self, id: ConnId, user: &str, room: &str) -> bool {
        {
            let mut st = self.state();
            let State {
                announced, conns, ..
            } = &mut *st;
            let set = announced.entry(user.to_owned()).or_default();
            if set.len() > 256 {
                // Keep it bounded: forget rooms the connection is no longer in.
                let now_in = conns.get(&id).map(|e| e.info.rooms.clone());
                set.retain(|r| now_in.as_ref().is_some_and(|n| n.contains(r)));
            }
            set.insert(room.to_owned())
        }
    }

    /// Renames the user of a connection (a chat's `/nick`): the hub's user index, the
    /// connection's [`ConnInfo::user`](super::ConnInfo::user) and its room memberships
    /// follow, and every room whose user list changes gets `room:users`. Returns the
    /// previous user. No `presence` event is sent (the application announces renames as it
    /// likes); the old name's last-seen time is recorded when it has no connection left.
    /// The identity the authenticator gave ([`WsConn::identity`](crate::WsConn::identity),
    /// [`Ctx::user`](super::Ctx::user)) is immutable and keeps the old name: read the
    /// current one with [`Hub::conn_info`].
    ///
    /// # Errors
    /// `not_found` for an unknown connection; `bad_data` for an empty name.
    pub fn set_user(&self, id: ConnId, user: &str) -> Result<Option<String>, HubError> {
        if user.is_empty() {
            return Err(HubError::bad_data("a user id cannot be empty"));
        }
        let (old, changed) = {
            let mut st = self.state();
            let State {
                conns,
                users,
                rooms,
                ..
            } = &mut *st;
            let e = conns.get_mut(&id).ok_or_else(|| not_found("connection"))?;
            if e.info.user.as_deref() == Some(user) {
                return Ok(e.info.user.clone());
            }
            let old = e.info.user.replace(user.to_owned());
            let mut old_gone = false;
            if let Some(o) = &old {
                if let Some(set) = users.get_mut(o) {
                    set.remove(&id);
                    if set.is_empty() {
                        users.remove(o);
                        old_gone = true;
                    }
                }
            }
            users.entry(user.to_owned()).or_default().insert(id);
            if let Some(c) = self.cluster_node() {
                if let Some(o) = &old {
                    c.offline(o, id);
                }
                c.online(user, id, false);
                for name in &e.info.rooms {
                    c.renamed(name, id, user);
                }
            }
            let mut changed = Vec::new();
            for name in &e.info.rooms {
                let Some(r) = rooms.get_mut(name) else {
                    continue;
                };
                let before = r.users();
                r.members.insert(id, Some(user.to_owned()));
                let after = r.users();
                if r.notifies() && after != before {
                    changed.push((name.clone(), after));
                }
            }
            if let (true, Some(o)) = (old_gone, &old) {
                st.saw(
                    o,
                    std::time::SystemTime::now(),
                    self.inner.cfg.max_last_seen,
                );
            }
            (old, changed)
        };
        for (room, users) in &changed {
            self.push_users(room, users);
        }
        Ok(old)
    }

    fn push_users(&self, room: &str, users: &[String]) {
        let all;
        let users = match self.cluster_node() {
            Some(_) => {
                all = self.room_users(room);
                &all[..]
            }
            None => users,
        };
        let data = json!({"room": room, "users": users});
        self.to_room(room).emit("room:users", &data);
    }

    pub(super) fn announce_left(&self, left: &Left, id: ConnId) {
        self.publish_member(&left.room, id, &left.user, false);
        self.cluster_session_left(id, &left.room);
        self.cluster_room_left(&left.room);
        if !left.notify {
            return;
        }
        let data = json!({"room": left.room, "user": left.user, "conn": id.0});
        self.to_room(&left.room).emit("room:left", &data);
        if let Some(users) = &left.users {
            self.push_users(&left.room, users);
        }
    }

    /// Removes a connection from a room; the rest get `room:left` (and `room:users`).
    ///
    /// # Errors
    /// `not_found` when the connection is not in the room.
    pub fn leave(&self, id: ConnId, room: &str) -> Result<(), HubError> {
        let left = remove_member(&mut self.state(), id, room);
        let left = left.ok_or_else(|| not_found("membership"))?;
        self.announce_left(&left, id);
        Ok(())
    }

    /// Removes a connection from every room it is in (done automatically on disconnect);
    /// returns the rooms it left.
    pub fn leave_all(&self, id: ConnId) -> Vec<String> {
        let rooms: Vec<String> = {
            let st = self.state();
            let e = st.conns.get(&id);
            e.map(|e| e.info.rooms.iter().cloned().collect())
                .unwrap_or_default()
        };
        for room in &rooms {
            let left = remove_member(&mut self.state(), id, room);
            if let Some(left) = left {
                self.announce_left(&left, id);
            }
        }
        rooms
    }

    /// Invites `user` to a room (needed for private and invite-only rooms).
    ///
    /// # Errors
    /// `not_found` for an unknown room.
    pub fn invite(&self, room: &str, user: &str) -> Result<(), HubError> {
        let mut st = self.state();
        let r = st.rooms.get_mut(room).ok_or_else(|| not_found("room"))?;
        r.invites.insert(user.to_owned());
        Ok(())
    }

    /// Removes every connection of `user` from a room and withdraws their invitation and
    /// role; they get `room:kicked`, the rest `room:left`. Returns how many connections
    /// were removed. They may join again (see [`ban`](Self::ban)).
    ///
    /// # Errors
    /// `not_found` for an unknown room.
    pub fn kick(&self, room: &str, user: &str) -> Result<usize, HubError> {
        self.remove_user(room, user, None)
    }

    /// Kicks `user` from a room (as [`kick`](Self::kick)) and refuses their joins for
    /// `duration` (`forbidden`, even when the room empties and is created again); they get
    /// `room:kicked` with `"ban_secs"`. A later ban replaces an earlier one.
    ///
    /// # Errors
    /// `not_found` for an unknown room.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use sockloop::hub::{Hub, RoomOptions};
    /// let hub = Hub::builder().build();
    /// hub.create_room("dev", RoomOptions::new()).unwrap();
    /// assert_eq!(hub.ban("dev", "troll", Duration::from_secs(600)).unwrap(), 0);
    /// assert!(hub.banned("dev", "troll").is_some());
    /// assert!(hub.unban("dev", "troll"));
    /// ```
    pub fn ban(&self, room: &str, user: &str, duration: Duration) -> Result<usize, HubError> {
        self.remove_user(room, user, Some(duration))
    }

    /// Lifts a ban; false when there was none in force.
    pub fn unban(&self, room: &str, user: &str) -> bool {
        let key = (room.to_owned(), user.to_owned());
        let until = self.state().bans.remove(&key);
        until.is_some_and(|t| t > Instant::now())
    }

    /// How long `user`'s ban from a room still lasts, if one is in force.
    pub fn banned(&self, room: &str, user: &str) -> Option<Duration> {
        let now = Instant::now();
        let until = self.state().banned_until(room, user, now)?;
        Some(until.saturating_duration_since(now))
    }

    fn remove_user(
        &self,
        room: &str,
        user: &str,
        ban: Option<Duration>,
    ) -> Result<usize, HubError> {
        let (kicked, lefts) = {
            let mut st = self.state();
            let r = st.rooms.get_mut(room).ok_or_else(|| not_found("room"))?;
            r.invites.remove(user);
            r.roles.remove(user);
            let ids: Vec<ConnId> = r
                .members
                .iter()
                .filter(|(_, u)| u.as_deref() == Some(user))
                .map(|(id, _)| *id)
                .collect();
            if let Some(d) = ban {
                st.ban(room, user, super::timer::later(d), Instant::now());
            }
            let lefts: Vec<(ConnId, Left)> = ids
                .iter()
                .filter_map(|id| remove_member(&mut st, *id, room).map(|l| (*id, l)))
                .collect();
            (ids, lefts)
        };
        let data = match ban {
            Some(d) => json!({"room": room, "ban_secs": d.as_secs()}),
            None => json!({"room": room}),
        };
        for id in &kicked {
            self.to_conn(*id).emit("room:kicked", &data);
        }
        for (id, left) in &lefts {
            self.announce_left(left, *id);
        }
        Ok(kicked.len())
    }

    /// Gives `user` a role in a room (owners and moderators may join private rooms).
    ///
    /// # Errors
    /// `not_found` for an unknown room.
    pub fn set_role(&self, room: &str, user: &str, role: Role) -> Result<(), HubError> {
        let mut st = self.state();
        let r = st.rooms.get_mut(room).ok_or_else(|| not_found("room"))?;
        r.roles.insert(user.to_owned(), role);
        Ok(())
    }

    /// The role of `user` in a room: [`Role::Member`] for members without another role,
    /// `None` for outsiders.
    pub fn role(&self, room: &str, user: &str) -> Option<Role> {
        let st = self.state();
        let r = st.rooms.get(room)?;
        let role = r.roles.get(user).copied();
        role.or_else(|| r.has_user(user).then_some(Role::Member))
    }

    /// Checks that `user` has at least `role` in a room.
    ///
    /// # Errors
    /// `forbidden` otherwise.
    pub fn require_role(&self, room: &str, user: &str, role: Role) -> Result<(), HubError> {
        match self.role(room, user) {
            Some(r) if r >= role => Ok(()),
            _ => Err(HubError::new(
                ErrorCode::Forbidden,
                "not allowed in this room",
            )),
        }
    }

    /// Whether connection `id` is a member of `room` (a session waiting for its client
    /// included). Cheaper than reading [`Hub::conn_info`]`(id).rooms`: it takes one shard of
    /// the rooms' delivery view, not the hub's registry, and copies nothing, so a message
    /// handler can check membership on every message.
    ///
    /// # Examples
    /// ```
    /// use sockloop::hub::Hub;
    /// use sockloop::ConnId;
    /// let hub = Hub::builder().build();
    /// assert!(!hub.is_member(ConnId(1), "lobby"));
    /// ```
    pub fn is_member(&self, id: ConnId, room: &str) -> bool {
        self.inner.routes.is_member(id, room)
    }

    /// The connections in a room, in id order.
    pub fn members(&self, room: &str) -> Vec<ConnId> {
        let st = self.state();
        let r = st.rooms.get(room);
        r.map(|r| r.members.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The distinct users in a room, sorted. On a [clustered](super::HubBuilder::cluster)
    /// hub: in the whole cluster (this node's alone when the bus is away).
    pub fn room_users(&self, room: &str) -> Vec<String> {
        match self.try_room_users(room) {
            Ok(u) => u,
            Err(_) => self.local_room_users(room),
        }
    }

    /// The distinct users in a room on this node, sorted.
    pub(crate) fn local_room_users(&self, room: &str) -> Vec<String> {
        self.state()
            .rooms
            .get(room)
            .map(Room::users)
            .unwrap_or_default()
    }

    /// How many connections are in a room (0 for unknown rooms). On a
    /// [clustered](super::HubBuilder::cluster) hub: in the whole cluster (this node's alone
    /// when the bus is away).
    pub fn room_count(&self, room: &str) -> usize {
        let here = self.state().rooms.get(room).map_or(0, |r| r.members.len());
        let remote = self.cluster_node().map(|c| c.remote_members(room));
        here + remote.and_then(Result::ok).map_or(0, |m| m.len())
    }

    /// A snapshot of one room (private ones included).
    pub fn room_info(&self, room: &str) -> Option<RoomInfo> {
        self.state().rooms.get(room).map(|r| r.info(room))
    }

    /// Snapshots of the listed (not private) rooms, sorted by name.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        let st = self.state();
        let mut v: Vec<RoomInfo> = st
            .rooms
            .iter()
            .filter(|(_, r)| r.opts.policy != RoomPolicy::Private)
            .map(|(n, r)| r.info(n))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub(crate) fn room_notifies(&self, room: &str) -> bool {
        self.state().rooms.get(room).is_some_and(Room::notifies)
    }
}
