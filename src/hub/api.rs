//! The hub's connection lifecycle, envelope dispatch, connection queries and operations.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::{Duration, SystemTime};

use super::builder::{HubBuilder, PresenceScope};
use super::ctx::Ctx;
use super::delivery::Peer;
use super::envelope::{encode_error, parse_envelope, Envelope, Refused};
use super::error::{ErrorCode, HubError};
use super::mw::Next;
use super::state::{ConnEntry, ConnInfo, Presence, State};
use super::{Fanout, Hub, HubStats};
use crate::proto::ws::CloseCode;
use crate::{ConnId, Dispatch, SendStatus, Server, WsConn, WsFactory};

impl Hub {
    /// A builder with the default configuration and no routes.
    ///
    /// # Examples
    /// ```
    /// use sockloop::hub::{Ctx, Hub};
    /// let hub = Hub::builder().on("ping", |ctx: &mut Ctx| ctx.reply("pong")).build();
    /// assert_eq!(hub.stats().connections, 0);
    /// ```
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// The WebSocket handler factory to give to
    /// [`ServerBuilder::websocket`](crate::ServerBuilder::websocket).
    pub fn factory(&self) -> impl WsFactory {
        let hub = self.clone();
        move |_: &WsConn, _: &crate::proto::http::Request| super::conn::HubConn::new(hub.clone())
    }

    /// The WebSocket settings a hub server needs, from `ws`: the hub's connection
    /// middleware ([`HubBuilder::use_connection`](super::HubBuilder::use_connection)), and
    /// its message and frame limits capped at the hub's envelope limit ([`EnvelopeLimits::max_size`](super::EnvelopeLimits),
    /// 64 KiB by default), so a frame larger than the hub will take is refused with 1009 as
    /// soon as its header arrives, and a compressed message is cut while it inflates — a
    /// client cannot make the server hold megabytes the hub would reject anyway. It also
    /// serves the browser client at `/sockloop.js` and `/sockloop.mjs`
    /// ([`browser`](super::browser)) in front of `ws`'s HTTP hook, which answers every other
    /// request: set that hook before calling this (a hook set afterwards replaces both; it
    /// can call [`browser::respond`](super::browser::respond) itself).
    ///
    /// # Examples
    /// ```
    /// let hub = sockloop::hub::Hub::builder().build();
    /// let ws = hub.server_config(sockloop::WsServerConfig::new());
    /// assert_eq!(ws.ws_config().max_message_size, 64 << 10);
    /// ```
    pub fn server_config(&self, ws: crate::WsServerConfig) -> crate::WsServerConfig {
        let limit = self.inner.cfg.limits.max_size;
        let mut cfg = ws.ws_config().clone();
        cfg.max_message_size = cfg.max_message_size.min(limit);
        cfg.max_frame_size = cfg.max_frame_size.min(limit);
        let mut ws = ws.ws(cfg);
        for mw in &self.inner.conn_mw {
            let mw = mw.clone();
            ws = ws.use_connection(move |req, id| mw(req, id));
        }
        let user = ws.http.take();
        ws.http(move |req| match super::browser::respond(req) {
            Some(r) => r,
            None => user
                .as_ref()
                .map_or_else(crate::http::Response::not_found, |f| f(req)),
        })
    }

    /// Connects the hub to its server, so rooms and broadcasts are framed once and fanned
    /// out by the pollers. Call once, right after starting the server; later calls are
    /// ignored. Until then, room messages are sent connection by connection.
    pub fn attach(&self, server: &Server) {
        let b = server.broadcaster();
        let inline = b.server.config.dispatch == Dispatch::Inline;
        let budget = b.server.policy.counters.budget.clone();
        self.inner.sessions.set_budget(budget);
        self.cluster_attach(&b.server);
        let _ = self.inner.bcast.set(Fanout { b, inline });
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one encoded envelope to one recipient (numbered when it is a session),
    /// counting it.
    pub(crate) fn send_one(&self, to: &Peer, text: &str) -> SendStatus {
        let st = match &to.session {
            None => to.ws.send_text(text),
            Some(cell) => self.session_send(cell, &std::sync::Arc::from(text), None, None),
        };
        self.count(st);
        st
    }

    pub(crate) fn count(&self, st: SendStatus) {
        let s = &self.inner.stats;
        match st {
            SendStatus::Queued => s.messages_out.fetch_add(1, Ordering::Relaxed),
            SendStatus::Dropped | SendStatus::TooLarge => s.dropped.fetch_add(1, Ordering::Relaxed),
            SendStatus::Closed => 0,
        };
    }

    fn send_error(&self, to: &Peer, e: &HubError, reference: Option<u64>) {
        self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
        let _ = self.send_one(to, &encode_error(e, reference));
    }

    /// Enters a connection into the hub (a new session is one too: its connection's id is
    /// its hub id), then runs `on_connect`.
    pub(crate) fn register(
        &self,
        ws: &WsConn,
        session: Option<std::sync::Arc<super::session::SessionCell>>,
    ) {
        self.register_as(ws, session, false, false);
    }

    /// [`register`](Self::register); a `detached` session (continued from another node,
    /// until its connection takes it over) joins no delivery group yet.
    /// `moved`: a session another node released to this one (its user never went offline,
    /// so no `presence` is sent).
    pub(crate) fn register_as(
        &self,
        ws: &WsConn,
        session: Option<std::sync::Arc<super::session::SessionCell>>,
        detached: bool,
        moved: bool,
    ) {
        let id = ws.identity().cloned().unwrap_or_default();
        let user = (!id.user.is_empty()).then(|| id.user.clone());
        let info = ConnInfo {
            id: ws.id(),
            user: user.clone(),
            tags: id.tags,
            meta: id.meta,
            rooms: Default::default(),
            connected_at: SystemTime::now(),
        };
        if !detached {
            ws.join_group(self.inner.all);
        }
        let mut first = {
            let mut st = self.state();
            if let Some(cell) = &session {
                st.sessions.insert(ws.id(), cell.clone());
            }
            let entry = ConnEntry {
                ws: ws.clone(),
                info,
                created: 0,
                session,
                detached,
            };
            st.conns.insert(ws.id(), entry);
            user.as_ref().is_some_and(|u| {
                let set = st.users.entry(u.clone()).or_default();
                set.insert(ws.id());
                if set.len() == 1 {
                    if let Some(c) = self.cluster_node() {
                        c.forget_heard(&c.user_key(u, "f"));
                    }
                }
                set.len() == 1
            })
        };
        if let (Some(c), Some(u)) = (self.cluster_node(), &user) {
            c.online(u, ws.id(), false);
            if first {
                // Online for the cluster only when no other node has the user.
                first = c.remote_conns(u).map_or(true, |(a, b)| a + b == 0);
            }
        }
        if let (true, Some(u), false) = (first, &user, moved) {
            if self.inner.cfg.presence == PresenceScope::Everyone {
                let data = serde_json::json!({"user": u, "online": true});
                self.to_all().except(ws.id()).emit("presence", &data);
            }
        }
        if let Some(f) = &self.inner.on_connect {
            f(self, ws);
        }
    }

    pub(crate) fn on_close(&self, ws: &WsConn, code: CloseCode, reason: &str) {
        self.depart(ws.id());
        if let Some(f) = &self.inner.on_disconnect {
            f(self, ws, code, reason);
        }
    }

    /// Takes a connection out of the hub — pending acks, rooms, its user, presence — once:
    /// when its close begins (seen by the timer's close check) or at the latest when it
    /// closed.
    pub(crate) fn depart(&self, id: ConnId) {
        self.depart_as(id, false);
    }

    /// [`depart`](Self::depart) of a session member whose session goes on on another node:
    /// out of the registry, its rooms and its user here, but nobody is told (no `room:left`,
    /// no `presence` offline): for the rooms and the user it is the same member, moved.
    pub(crate) fn depart_moved(&self, id: ConnId) {
        self.depart_as(id, true);
    }

    fn depart_as(&self, id: ConnId, moved: bool) {
        let (lefts, gone) = {
            let mut st = self.state();
            let Some(mut entry) = st.conns.remove(&id) else {
                return;
            };
            st.sessions.remove(&id);
            if let Some(cell) = entry.session.take() {
                self.end_session(&cell);
            }
            // Out of the registry first: whoever hears `room:left` finds it gone.
            let lefts: Vec<_> = entry
                .info
                .rooms
                .iter()
                .filter_map(|room| super::rooms::remove_member(&mut st, id, room))
                .collect();
            if let (Some(c), Some(u)) = (self.cluster_node(), &entry.info.user) {
                c.offline(u, id);
            }
            let gone = entry.info.user.filter(|u| {
                let last = st.users.get_mut(u).is_some_and(|s| {
                    s.remove(&id);
                    s.is_empty()
                });
                if last {
                    st.users.remove(u);
                    st.announced.remove(u);
                    st.saw(u, SystemTime::now(), self.inner.cfg.max_last_seen);
                }
                last
            });
            (lefts, gone)
        };
        self.ack_conn_closed(id);
        if let (Some(c), Some(u)) = (self.cluster_node(), &gone) {
            // Its last connection here: the node stops following the user's feed.
            c.forget_heard(&c.user_key(u, "f"));
        }
        // Offline for the cluster only when no other node has the user.
        let gone = gone.filter(|u| {
            self.cluster_node()
                .is_none_or(|c| c.remote_conns(u).map_or(true, |(a, b)| a + b == 0))
        });
        let rooms: Vec<String> = lefts.iter().map(|l| l.room.clone()).collect();
        for mut left in lefts {
            left.notify &= !moved;
            self.announce_left(&left, id);
        }
        if let (Some(u), false) = (gone, moved) {
            self.announce_offline(&u, &rooms);
        }
    }

    /// Connections whose close began: they leave the hub now, though their sockets may
    /// linger until the close handshake ends (timer thread, every `close_check`).
    pub(crate) fn depart_closing(&self) {
        let closing: Vec<ConnId> = {
            let st = self.state();
            // A session's connection closing is a detach (seen by its `on_close`).
            let closing = st.conns.values();
            let closing = closing.filter(|e| e.session.is_none() && !e.ws.is_open());
            closing.map(|e| e.info.id).collect()
        };
        for id in closing {
            self.depart(id);
        }
    }

    pub(super) fn announce_offline(&self, user: &str, rooms: &[String]) {
        let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
        let secs = since.map_or(0, |d| d.as_secs());
        let data = serde_json::json!({"user": user, "online": false, "last_seen": secs});
        match self.inner.cfg.presence {
            PresenceScope::Everyone => {
                self.to_all().emit("presence", &data);
            }
            PresenceScope::Rooms => {
                for r in rooms {
                    if self.room_notifies(r) {
                        self.to_room(r).emit("presence", &data);
                    }
                }
            }
            PresenceScope::Off => {}
        }
    }

    pub(crate) fn on_binary(&self, ws: &WsConn, data: &[u8]) {
        self.inner.stats.messages_in.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = &self.inner.on_binary {
            f(self, ws, data);
        }
    }

    pub(crate) fn on_text(&self, ws: &WsConn, text: &str) {
        let parsed = parse_envelope(text, &self.inner.cfg.limits);
        self.handle_parsed(&Peer::plain(ws), parsed);
    }

    /// Handles one inbound envelope from `from`: an ack, an event, or an error back.
    pub(crate) fn handle_parsed(&self, from: &Peer, parsed: Result<Envelope, Refused>) {
        self.inner.stats.messages_in.fetch_add(1, Ordering::Relaxed);
        match parsed {
            Ok(env) if env.event == "ack" => self.ack_arrived(from.id, env.reference, env.data),
            Ok(env) => self.dispatch(from, env),
            Err(r) => self.refused(from, r),
        }
    }

    /// An envelope that could not be read still passes the global middleware as
    /// [`INVALID_EVENT`](super::INVALID_EVENT), so rate limits count it (a flood of garbage
    /// is limited like a flood of events); its error is sent unless a middleware refused it
    /// first (then that error is sent instead, e.g. `rate_limited`).
    fn refused(&self, from: &Peer, r: Refused) {
        let env = Envelope {
            event: super::INVALID_EVENT.to_owned(),
            id: r.reference,
            ..Default::default()
        };
        let mut ctx = Ctx::new(self.clone(), from.clone(), env);
        let error = r.error;
        let end = |_: &mut Ctx| Err(error.clone());
        let e = match Next::new(&self.inner.global, &end).run(&mut ctx) {
            Err(e) => e,
            Ok(()) => error.clone(),
        };
        self.send_error(from, &e, r.reference);
    }

    /// Announces that `user` is back (a session resumed, presence `Offline` mode).
    pub(super) fn announce_back<'a>(
        &self,
        id: ConnId,
        user: &str,
        rooms: impl Iterator<Item = &'a String>,
    ) {
        match self.inner.cfg.presence {
            PresenceScope::Everyone => {
                let data = serde_json::json!({"user": user, "online": true});
                self.to_all().except(id).emit("presence", &data);
            }
            PresenceScope::Rooms => {
                for r in rooms {
                    if self.room_notifies(r) {
                        self.announce_online(id, user, r);
                    }
                }
            }
            PresenceScope::Off => {}
        }
    }

    fn dispatch(&self, from: &Peer, env: Envelope) {
        let reference = env.id;
        let mut ctx = Ctx::new(self.clone(), from.clone(), env);
        let end = |ctx: &mut Ctx| self.route(ctx);
        if let Err(e) = Next::new(&self.inner.global, &end).run(&mut ctx) {
            self.send_error(from, &e, reference);
        }
    }

    /// The end of the global chain: the route's own middleware, then its handler.
    fn route(&self, ctx: &mut Ctx) -> Result<(), HubError> {
        let env = ctx.envelope();
        let Some(route) = self
            .inner
            .router
            .resolve(&env.event, env.version.as_deref())
        else {
            let msg = format!("no handler for {:?}", env.event);
            return Err(HubError::new(ErrorCode::UnknownEvent, msg));
        };
        let handler = |ctx: &mut Ctx| route.handler.call(ctx);
        Next::new(&route.middleware, &handler).run(ctx)
    }

    /// The handle of an open connection of this hub.
    pub fn conn(&self, id: ConnId) -> Option<WsConn> {
        self.state().conns.get(&id).map(|e| e.ws.clone())
    }

    /// What the hub knows about a connection.
    pub fn conn_info(&self, id: ConnId) -> Option<ConnInfo> {
        self.state().conns.get(&id).map(|e| e.info.clone())
    }

    /// Every open connection, in id order.
    pub fn connections(&self) -> Vec<ConnId> {
        let mut v: Vec<ConnId> = self.state().conns.keys().copied().collect();
        v.sort();
        v
    }

    /// The open connections (devices) of `user`, in id order.
    pub fn user_conns(&self, user: &str) -> Vec<ConnId> {
        let st = self.state();
        st.users
            .get(user)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The open connections whose identity carries `tag`, in id order.
    pub fn conns_tagged(&self, tag: &str) -> Vec<ConnId> {
        let st = self.state();
        let mut v: Vec<ConnId> = st
            .conns
            .values()
            .filter(|e| e.info.tags.iter().any(|t| t == tag))
            .map(|e| e.info.id)
            .collect();
        v.sort();
        v
    }

    /// Users with at least one open connection, sorted.
    pub fn online_users(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state().users.keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether `user` is online, and since when they are not. On a
    /// [clustered](super::HubBuilder::cluster) hub: on any live node (this node's view alone
    /// when the bus is away).
    pub fn presence(&self, user: &str) -> Presence {
        let here = self.state().presence(user);
        let Some(c) = self.cluster_node() else {
            return here;
        };
        let Ok((live, waiting)) = c.remote_conns(user) else {
            return here;
        };
        match here {
            Presence::Online { connections } => Presence::Online {
                connections: connections + live,
            },
            Presence::Reconnecting { .. } | Presence::Offline { .. } | Presence::Unknown
                if live > 0 =>
            {
                Presence::Online { connections: live }
            }
            Presence::Reconnecting { connections } => Presence::Reconnecting {
                connections: connections + waiting,
            },
            _ if waiting > 0 => Presence::Reconnecting {
                connections: waiting,
            },
            here => {
                let remote = c.last_seen(user).ok().flatten();
                let remote = remote.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
                match (here, remote) {
                    (Presence::Offline { last_seen }, Some(r)) => Presence::Offline {
                        last_seen: last_seen.max(r),
                    },
                    (_, Some(r)) => Presence::Offline { last_seen: r },
                    (here, None) => here,
                }
            }
        }
    }

    /// A metadata value of a connection (any JSON value).
    pub fn meta(&self, id: ConnId, key: &str) -> Option<serde_json::Value> {
        let st = self.state();
        st.conns
            .get(&id)
            .and_then(|e| e.info.meta.get(key).cloned())
    }

    /// Sets a metadata value of a connection (ignored for unknown connections). Any JSON
    /// value: `"away"`, `3`, `json!({"x": 1})`.
    pub fn set_meta(
        &self,
        id: ConnId,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) {
        if let Some(e) = self.state().conns.get_mut(&id) {
            e.info.meta.insert(key.into(), value.into());
        }
    }

    /// Closes a connection with `code` and `reason`; false when it is not open here.
    pub fn disconnect(&self, id: ConnId, code: CloseCode, reason: &str) -> bool {
        match self.conn(id) {
            Some(ws) => {
                ws.close(code, reason);
                self.depart(id);
                true
            }
            None => false,
        }
    }

    /// Closes every connection of `user`; returns how many were on this node. On a
    /// [clustered](super::HubBuilder::cluster) hub the other nodes close theirs too (not
    /// awaited, not counted).
    pub fn disconnect_user(&self, user: &str, code: CloseCode, reason: &str) -> usize {
        self.cluster_kick(user, code, reason);
        self.disconnect_user_here(user, code, reason)
    }

    /// Graceful shutdown of the hub's server: clients get 1001 "going away", queued output
    /// drains, connections still open at `deadline` are closed. True when all closed in
    /// time (see [`Server::shutdown`]).
    pub fn shutdown(&self, server: &Server, deadline: Duration) -> bool {
        server.shutdown(deadline)
    }

    /// A snapshot of the hub's counters.
    pub fn stats(&self) -> HubStats {
        let (connections, users, rooms) = {
            let st = self.state();
            (st.conns.len(), st.users.len(), st.rooms.len())
        };
        let s = &self.inner.stats;
        HubStats {
            connections,
            users,
            rooms,
            messages_in: s.messages_in.load(Ordering::Relaxed),
            messages_out: s.messages_out.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            evicted: self.inner.bcast.get().map_or(0, |f| {
                f.b.server.policy.counters.evicted.load(Ordering::Relaxed)
            }),
            errors: s.errors.load(Ordering::Relaxed),
            acks_pending: s.acks_pending.load(Ordering::Relaxed),
            sessions: self.inner.sessions.count(),
            replay_bytes: self.inner.sessions.bytes.load(Ordering::Relaxed),
            replay_evicted: self.inner.sessions.evicted.load(Ordering::Relaxed),
            resumed: self.inner.sessions.resumed.load(Ordering::Relaxed),
            not_recovered: self.inner.sessions.not_recovered.load(Ordering::Relaxed),
        }
    }
}
