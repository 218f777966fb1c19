//! Delivery: emit to a connection, a user's devices, users, a room (minus some), a filter or
//! everyone — framed once. Acknowledged delivery is in `ack.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use super::envelope::encode;
use super::error::HubError;
use super::session::SessionCell;
use super::state::{ConnEntry, ConnInfo, State};
use super::Hub;
use crate::{ConnId, Delivery, Frames, SendStatus, WsConn};

/// A recipient: its hub id, its connection, and its session when it is one.
#[derive(Clone)]
pub(crate) struct Peer {
    /// The hub id (a session's stays the same across reconnects).
    pub(crate) id: ConnId,
    /// The connection (for a session: the one carrying it when the peer was taken).
    pub(crate) ws: WsConn,
    pub(crate) session: Option<Arc<SessionCell>>,
}

impl Peer {
    pub(crate) fn plain(ws: &WsConn) -> Self {
        Peer {
            id: ws.id(),
            ws: ws.clone(),
            session: None,
        }
    }

    pub(crate) fn of(e: &ConnEntry) -> Self {
        Peer {
            id: e.info.id,
            ws: e.ws.clone(),
            session: e.session.clone(),
        }
    }
}

impl Hub {
    /// Sends an encoded envelope to one peer: numbered through its session when it has
    /// one. `shared` carries the text once for all the sessions of one emit.
    pub(crate) fn send_peer(
        &self,
        p: &Peer,
        frames: Option<&Frames>,
        text: &str,
        shared: &mut Option<Arc<str>>,
        feed: Option<(&str, u64)>,
    ) -> SendStatus {
        match &p.session {
            None => send_to(&p.ws, frames, text),
            Some(cell) => {
                let t = shared.get_or_insert_with(|| Arc::from(text)).clone();
                self.session_send(cell, &t, frames, feed)
            }
        }
    }
}

enum To<'h> {
    Conn(ConnId),
    User(String),
    Users(Vec<String>),
    Room(String),
    All,
    Filter(Box<dyn Fn(&ConnInfo) -> bool + 'h>),
}

/// Who an emit goes to; made by [`Hub::to_room`] and its siblings.
pub struct Target<'h> {
    pub(super) hub: &'h Hub,
    to: To<'h>,
    except: Vec<ConnId>,
    /// This node's recipients only (a message heard from another node).
    local: bool,
    /// The message's place in its cluster feed (key, position), once published or heard.
    feed: Option<(String, u64)>,
}

impl std::fmt::Debug for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("except", &self.except)
            .finish()
    }
}

impl Hub {
    fn target<'h>(&'h self, to: To<'h>) -> Target<'h> {
        Target {
            hub: self,
            to,
            except: Vec::new(),
            local: false,
            feed: None,
        }
    }

    /// One connection.
    pub fn to_conn(&self, id: ConnId) -> Target<'_> {
        self.target(To::Conn(id))
    }

    /// Every connection (device) of a user.
    pub fn to_user(&self, user: &str) -> Target<'_> {
        self.target(To::User(user.to_owned()))
    }

    /// Every connection of these users.
    pub fn to_users<S: AsRef<str>>(&self, users: &[S]) -> Target<'_> {
        let users = users.iter().map(|u| u.as_ref().to_owned()).collect();
        self.target(To::Users(users))
    }

    /// The members of a room.
    ///
    /// # Examples
    /// ```no_run
    /// # fn f(hub: &sockloop::hub::Hub, me: sockloop::ConnId) {
    /// let d = hub.to_room("lobby").except(me).emit("chat:message", &"hi");
    /// println!("queued {}, dropped {}, closed {}", d.queued, d.dropped, d.closed);
    /// # }
    /// ```
    pub fn to_room(&self, room: &str) -> Target<'_> {
        self.target(To::Room(room.to_owned()))
    }

    /// Every connection of the hub.
    pub fn to_all(&self) -> Target<'_> {
        self.target(To::All)
    }

    /// The connections for which `f` is true (evaluated under the hub's lock: keep it
    /// quick, and do not call the hub from it).
    pub fn to_filter<'h>(&'h self, f: impl Fn(&ConnInfo) -> bool + 'h) -> Target<'h> {
        self.target(To::Filter(Box::new(f)))
    }
}

impl<'h> Target<'h> {
    /// This node's recipients only, the message being at `pos` of cluster feed `feed`.
    pub(crate) fn heard(mut self, feed: String, pos: u64) -> Self {
        self.local = true;
        self.feed = Some((feed, pos));
        self
    }

    fn feed(&self) -> Option<(&str, u64)> {
        self.feed.as_ref().map(|(f, p)| (f.as_str(), *p))
    }

    /// Publishes the message to the other nodes of a clustered hub (rooms, users and
    /// everyone; a connection or a filter is this node's only). Returns the publishes that
    /// failed.
    fn publish_cluster(&mut self, text: &str) -> usize {
        let Some(c) = self.hub.cluster_node() else {
            return 0;
        };
        if self.local {
            return 0;
        }
        let feed = match &self.to {
            To::Room(r) => Some(c.room_key(r, "f")),
            To::User(u) => Some(c.user_key(u, "f")),
            To::All => Some(c.all_feed()),
            _ => None,
        };
        use super::cluster::node::Op;
        let x: Vec<String> = self
            .except
            .iter()
            .map(|id| self.hub.cluster_gid(*id))
            .collect();
        let m = text.to_owned();
        let ops = match &self.to {
            To::Room(r) => vec![Op::Room { r: r.clone(), x, m }],
            To::User(u) => vec![Op::User { u: u.clone(), x, m }],
            To::Users(us) => us
                .iter()
                .map(|u| Op::User {
                    u: u.clone(),
                    x: x.clone(),
                    m: m.clone(),
                })
                .collect(),
            To::All => vec![Op::All { x, m }],
            To::Conn(_) | To::Filter(_) => return 0,
        };
        if let (Some(f), [op]) = (feed, &ops[..]) {
            return match c.publish(op.clone()) {
                Some(pos) => {
                    self.feed = Some((f, pos));
                    0
                }
                None => 1,
            };
        }
        ops.into_iter()
            .filter(|op| c.publish(op.clone()).is_none())
            .count()
    }

    /// Leaves out one connection (e.g. the sender).
    pub fn except(mut self, id: ConnId) -> Self {
        self.except.push(id);
        self
    }

    /// Leaves out these connections.
    pub fn except_all(mut self, ids: &[ConnId]) -> Self {
        self.except.extend_from_slice(ids);
        self
    }

    /// Sends `{"event", "data"}`, serialized and framed once for every recipient, and
    /// says what happened. An encoding failure is logged and delivers nothing. For a room
    /// or everyone with [session](super::HubBuilder::sessions) members among the
    /// recipients, the pollers' counts are not awaited (the session members' locks are
    /// held while the message is queued): the report counts the recipients the registry
    /// knows as queued, which a session member is (its message is kept for its resume).
    pub fn emit<T: Serialize + ?Sized>(self, event: &str, data: &T) -> Delivery {
        match self.try_emit(event, data) {
            Ok(d) => d,
            Err(e) => {
                log::error!("hub: emit {event:?} not sent: {e}");
                Delivery::default()
            }
        }
    }

    /// Like [`emit`](Self::emit), reporting an encoding failure.
    ///
    /// # Errors
    /// `internal` when `data` cannot be serialized.
    pub fn try_emit<T: Serialize + ?Sized>(
        self,
        event: &str,
        data: &T,
    ) -> Result<Delivery, HubError> {
        let text = encode(event, data, None, None)?;
        Ok(self.send_text(&text))
    }

    /// Sends an already encoded text message to every recipient.
    pub fn send_text(mut self, text: &str) -> Delivery {
        if let (To::Users(us), Some(_), false) = (&self.to, self.hub.cluster_node(), self.local) {
            // One feed per user: each user's sessions follow their own.
            let mut d = Delivery::default();
            for u in us {
                let t = self.hub.to_user(u).except_all(&self.except);
                d.add(t.send_text(text));
            }
            return d;
        }
        let attached = self.hub.inner.bcast.get().is_some();
        let unpublished = self.publish_cluster(text);
        let mut d = match &self.to {
            To::Room(r) if attached => {
                self.hub.publish_message(r, text);
                self.fan_out(Some(r), text, true)
            }
            To::All if attached => self.fan_out(None, text, true),
            To::Room(r) => {
                self.hub.publish_message(r, text);
                send_each(self.hub, &self.recipients(), text, self.feed())
            }
            _ => send_each(self.hub, &self.recipients(), text, self.feed()),
        };
        d.unpublished = unpublished;
        let s = &self.hub.inner.stats;
        s.messages_out.fetch_add(d.queued as u64, Ordering::Relaxed);
        s.dropped.fetch_add(d.dropped as u64, Ordering::Relaxed);
        d
    }

    /// Like [`emit`](Self::emit), without waiting for the pollers' counts: for a room or
    /// everyone (on an [attached](Hub::attach) hub) the message is framed once and handed
    /// to the pollers, and the call returns at once. A handler that emits many room
    /// messages in a row (a chat's message path) then never waits for a poller's round
    /// trip, and the pollers coalesce the messages queued meanwhile into one write per
    /// member. Returns the number of recipients the hub's registry knows (the pollers may
    /// still drop or find closed some of them; stats count them as queued). Other targets
    /// are sent as by `emit`, whose counts are exact.
    ///
    /// # Errors
    /// `internal` when `data` cannot be serialized.
    pub fn emit_nowait<T: Serialize + ?Sized>(
        self,
        event: &str,
        data: &T,
    ) -> Result<usize, HubError> {
        let text = encode(event, data, None, None)?;
        Ok(self.send_text_nowait(&text))
    }

    /// Like [`send_text`](Self::send_text), without waiting for the pollers' counts; see
    /// [`emit_nowait`](Self::emit_nowait).
    pub fn send_text_nowait(mut self, text: &str) -> usize {
        if self.hub.inner.bcast.get().is_none() {
            return self.send_text(text).queued;
        }
        let d = match &self.to {
            To::Room(_) | To::All => {
                self.publish_cluster(text);
                match &self.to {
                    To::Room(r) => {
                        self.hub.publish_message(r, text);
                        self.fan_out(Some(r), text, false)
                    }
                    _ => self.fan_out(None, text, false),
                }
            }
            _ => return self.send_text(text).queued,
        };
        let s = &self.hub.inner.stats;
        s.messages_out.fetch_add(d.queued as u64, Ordering::Relaxed);
        d.queued
    }

    /// A room (`Some`) or everyone (`None`) on an attached hub: framed once, fanned out by
    /// the pollers' group. Session members are numbered under their locks, and the group
    /// send is queued while the hub's registry and those locks are held, so the number each
    /// gets is its place on its wire (see `session.rs`). With `wait` and no sessions among
    /// the members, the pollers' exact counts are awaited; otherwise the report counts the
    /// recipients the registry knows.
    fn fan_out(&self, room: Option<&str>, text: &str, wait: bool) -> Delivery {
        let Some(f) = self.hub.inner.bcast.get() else {
            return Delivery::default();
        };
        let frames = f.b.frames_text(text);
        match room {
            Some(r) => {
                // The room's shard only: never the registry (see `routes.rs`).
                let shard = self.hub.inner.routes.shard(r);
                let Some(route) = shard.get(r) else {
                    return Delivery::default();
                };
                let excepted = self.except.iter();
                let excepted = excepted.filter(|id| route.members.contains(id)).count();
                let (gid, members) = (route.gid, route.members.len() - excepted);
                let cells = route.sessions.clone();
                self.group_send(f, gid, members, &cells, &frames, text, wait, shard)
            }
            None => {
                let st = self.hub.state();
                let excepted = self.except.iter();
                let excepted = excepted.filter(|id| st.conns.contains_key(id)).count();
                let members = st.conns.len() - excepted;
                let cells: Vec<Arc<SessionCell>> = st.sessions.values().cloned().collect();
                let all = self.hub.inner.all;
                self.group_send(f, all, members, &cells, &frames, text, wait, st)
            }
        }
    }

    /// The group send of [`fan_out`](Self::fan_out), `guard` (what made `cells` the
    /// group's session members) held until the sessions are numbered and the send queued.
    #[allow(clippy::too_many_arguments)]
    fn group_send<G>(
        &self,
        f: &super::Fanout,
        gid: crate::GroupId,
        members: usize,
        cells: &[Arc<SessionCell>],
        frames: &Frames,
        text: &str,
        wait: bool,
        guard: G,
    ) -> Delivery {
        let counted = Delivery {
            queued: members,
            ..Delivery::default()
        };
        if cells.is_empty() {
            drop(guard);
            if !wait || f.inline {
                // Inline handlers run on a poller: waiting would stall it.
                f.b.send_nowait(gid, frames, &self.except);
                return counted;
            }
            return f.b.send(gid, frames, &self.except);
        }
        self.hub
            .number_for_group(cells, &self.except, text, frames, self.feed(), |skip| {
                f.b.send_nowait(gid, frames, skip)
            });
        drop(guard);
        counted
    }

    /// The recipients' handles, minus the exceptions, in id order.
    pub(super) fn recipients(&self) -> Vec<Peer> {
        let st = self.hub.state();
        let mut v = self.collect(&st);
        v.retain(|p| !self.except.contains(&p.id));
        v.sort_by_key(|p| p.id);
        v.dedup_by_key(|p| p.id);
        v
    }

    fn collect(&self, st: &State) -> Vec<Peer> {
        let conn = |id: &ConnId| st.conns.get(id).map(Peer::of);
        match &self.to {
            To::Conn(id) => conn(id).into_iter().collect(),
            To::User(u) => st.user_peers(u),
            To::Users(us) => us.iter().flat_map(|u| st.user_peers(u)).collect(),
            To::Room(r) => {
                let members = st.rooms.get(r).map(|r| r.members.keys());
                members.into_iter().flatten().filter_map(conn).collect()
            }
            To::All => st.conns.values().map(Peer::of).collect(),
            To::Filter(f) => st
                .conns
                .values()
                .filter(|e| f(&e.info))
                .map(Peer::of)
                .collect(),
        }
    }
}

/// Frames `text` once (when attached) and sends it to each recipient.
fn send_each(hub: &Hub, list: &[Peer], text: &str, feed: Option<(&str, u64)>) -> Delivery {
    let frames = hub.inner.bcast.get().map(|f| f.b.frames_text(text));
    let mut d = Delivery::default();
    let mut shared = None;
    for p in list {
        tally(
            &mut d,
            hub.send_peer(p, frames.as_ref(), text, &mut shared, feed),
        );
    }
    d
}

pub(super) fn send_to(ws: &WsConn, frames: Option<&Frames>, text: &str) -> SendStatus {
    match frames {
        Some(f) => ws.send_frames(f),
        None => ws.send_text(text),
    }
}

fn tally(d: &mut Delivery, st: SendStatus) {
    match st {
        SendStatus::Queued => d.queued += 1,
        SendStatus::Dropped | SendStatus::TooLarge => d.dropped += 1,
        SendStatus::Closed => d.closed += 1,
    }
}
