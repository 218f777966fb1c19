//! Delivery: emit to a connection, a user's devices, users, a room (minus some), a filter or
//! everyone — framed once. Acknowledged delivery is in `ack.rs`.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::envelope::encode;
use super::error::HubError;
use super::state::{ConnInfo, State};
use super::Hub;
use crate::{ConnId, Delivery, Frames, GroupId, SendStatus, WsConn};

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
    /// says what happened. An encoding failure is logged and delivers nothing.
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
    pub fn send_text(self, text: &str) -> Delivery {
        let d = match &self.to {
            To::Room(r) => {
                let gid = self.hub.state().rooms.get(r).map(|r| r.gid);
                self.hub.publish_message(r, text);
                gid.map_or_else(Delivery::default, |g| self.to_group(g, text))
            }
            To::All => self.to_group(self.hub.inner.all, text),
            _ => {
                let list = self.recipients();
                send_each(self.hub, &list, text)
            }
        };
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
    pub fn send_text_nowait(self, text: &str) -> usize {
        let Some(f) = self.hub.inner.bcast.get() else {
            return self.send_text(text).queued;
        };
        let group = match &self.to {
            To::Room(r) => {
                self.hub.publish_message(r, text);
                let st = self.hub.state();
                let Some(room) = st.rooms.get(r) else {
                    return 0;
                };
                let skipped = self.except.iter();
                let skipped = skipped.filter(|id| room.members.contains_key(id)).count();
                Some((room.gid, room.members.len().saturating_sub(skipped)))
            }
            To::All => {
                let n = self.hub.state().conns.len();
                Some((self.hub.inner.all, n.saturating_sub(self.except.len())))
            }
            _ => None,
        };
        let Some((gid, n)) = group else {
            return self.send_text(text).queued;
        };
        f.b.send_nowait(gid, &f.b.frames_text(text), &self.except);
        let s = &self.hub.inner.stats;
        s.messages_out.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    fn to_group(&self, gid: GroupId, text: &str) -> Delivery {
        let Some(f) = self.hub.inner.bcast.get() else {
            return send_each(self.hub, &self.recipients(), text);
        };
        let frames = f.b.frames_text(text);
        if f.inline {
            // Inline handlers run on a poller: waiting for the pollers' counts would stall
            // it, so the report counts the recipients the registry knows.
            f.b.send_nowait(gid, &frames, &self.except);
            let queued = self.recipients().len();
            return Delivery {
                queued,
                ..Delivery::default()
            };
        }
        f.b.send(gid, &frames, &self.except)
    }

    /// The recipients' handles, minus the exceptions, in id order.
    pub(super) fn recipients(&self) -> Vec<WsConn> {
        let st = self.hub.state();
        let mut v = self.collect(&st);
        v.retain(|w| !self.except.contains(&w.id()));
        v.sort_by_key(|w| w.id());
        v.dedup_by_key(|w| w.id());
        v
    }

    fn collect(&self, st: &State) -> Vec<WsConn> {
        let conn = |id: &ConnId| st.conns.get(id).map(|e| e.ws.clone());
        match &self.to {
            To::Conn(id) => conn(id).into_iter().collect(),
            To::User(u) => st.user_conns(u),
            To::Users(us) => us.iter().flat_map(|u| st.user_conns(u)).collect(),
            To::Room(r) => {
                let members = st.rooms.get(r).map(|r| r.members.keys());
                members.into_iter().flatten().filter_map(conn).collect()
            }
            To::All => st.conns.values().map(|e| e.ws.clone()).collect(),
            To::Filter(f) => st
                .conns
                .values()
                .filter(|e| f(&e.info))
                .map(|e| e.ws.clone())
                .collect(),
        }
    }
}

/// Frames `text` once (when attached) and sends it to each connection.
fn send_each(hub: &Hub, list: &[WsConn], text: &str) -> Delivery {
    let frames = hub.inner.bcast.get().map(|f| f.b.frames_text(text));
    let mut d = Delivery::default();
    for ws in list {
        tally(&mut d, send_to(ws, frames.as_ref(), text));
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
