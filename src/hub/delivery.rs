//! Delivery: emit to a connection, a user's devices, users, a room (minus some), a filter or
//! everyone — framed once — optionally waiting for acknowledgements with retries.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use super::builder::AckOptions;
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
    hub: &'h Hub,
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

/// The outcome of an acknowledged delivery for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// The recipient acknowledged.
    Acked,
    /// No acknowledgement after every attempt.
    TimedOut,
    /// The last attempt was refused by the recipient's drop policy.
    Dropped,
    /// The connection closed before acknowledging.
    Closed,
}

/// Per-recipient outcomes of [`Target::emit_with_ack`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Each recipient and what happened, in id order.
    pub results: Vec<(ConnId, AckStatus)>,
    /// Sends made, retries included.
    pub attempts: usize,
}

impl DeliveryReport {
    /// How many recipients ended with `status`.
    pub fn count(&self, status: AckStatus) -> usize {
        self.results.iter().filter(|(_, s)| *s == status).count()
    }

    /// What happened for one recipient.
    pub fn status(&self, id: ConnId) -> Option<AckStatus> {
        self.results.iter().find(|(c, _)| *c == id).map(|(_, s)| *s)
    }

    /// Whether every recipient acknowledged.
    pub fn all_acked(&self) -> bool {
        self.results.iter().all(|(_, s)| *s == AckStatus::Acked)
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

    pub(crate) fn ack_arrived(&self, from: ConnId, reference: Option<u64>) {
        let Some(r) = reference else { return };
        let tx = lock_acks(self).get(&r).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(AckMsg::Acked(from));
        }
    }

    /// Tells every delivery waiting for acknowledgements that `id` closed.
    pub(crate) fn ack_conn_closed(&self, id: ConnId) {
        let waiting: Vec<_> = lock_acks(self).values().cloned().collect();
        for tx in waiting {
            let _ = tx.send(AckMsg::Closed(id));
        }
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
    fn recipients(&self) -> Vec<WsConn> {
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

    /// Sends `{"event", "data", "id"}` to every recipient and waits for each one's
    /// `{"event":"ack","ref":id}`: up to `opts.timeout` per attempt, resending to the
    /// silent ones `opts.retries` times. Blocks the calling thread until every recipient
    /// acked or the last attempt timed out. The message is serialized and framed once.
    ///
    /// Call it from a handler thread ([`Dispatch::Threads`](crate::Dispatch), the default)
    /// or your own thread, never from an inline handler: the poller it would block is the
    /// one that reads the acknowledgements.
    ///
    /// # Errors
    /// `internal` when `data` cannot be serialized.
    ///
    /// # Examples
    /// ```no_run
    /// # fn f(hub: &sockloop::hub::Hub) -> Result<(), sockloop::hub::HubError> {
    /// use std::time::Duration;
    /// use sockloop::hub::{AckOptions, AckStatus};
    /// let report = hub.to_user("ann").emit_with_ack("order:filled", &42,
    ///     AckOptions::new(Duration::from_secs(2), 1))?;
    /// println!("{} devices acked", report.count(AckStatus::Acked));
    /// # Ok(()) }
    /// ```
    pub fn emit_with_ack<T: Serialize + ?Sized>(
        self,
        event: &str,
        data: &T,
        opts: AckOptions,
    ) -> Result<DeliveryReport, HubError> {
        let id = self.hub.inner.next_ack.fetch_add(1, Ordering::Relaxed);
        let text = encode(event, data, Some(id), None)?;
        let list = self.recipients();
        let (tx, rx) = crossbeam_channel::unbounded();
        lock_acks(self.hub).insert(id, tx);
        let pending = &self.hub.inner.stats.acks_pending;
        pending.fetch_add(list.len(), Ordering::Relaxed);
        let report = AckRound::new(self.hub, &list, &text).run(&rx, opts);
        pending.fetch_sub(list.len(), Ordering::Relaxed);
        lock_acks(self.hub).remove(&id);
        Ok(report)
    }
}

/// What a delivery waiting for acknowledgements hears.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AckMsg {
    /// This connection acknowledged.
    Acked(ConnId),
    /// This connection closed.
    Closed(ConnId),
}

fn lock_acks(
    hub: &Hub,
) -> std::sync::MutexGuard<'_, HashMap<u64, crossbeam_channel::Sender<AckMsg>>> {
    hub.inner.acks.lock().unwrap_or_else(|e| e.into_inner())
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

fn send_to(ws: &WsConn, frames: Option<&Frames>, text: &str) -> SendStatus {
    match frames {
        Some(f) => ws.send_frames(f),
        None => ws.send_text(text),
    }
}

fn tally(d: &mut Delivery, st: SendStatus) {
    match st {
        SendStatus::Queued => d.queued += 1,
        SendStatus::Dropped => d.dropped += 1,
        SendStatus::Closed => d.closed += 1,
    }
}

/// The state of one acknowledged delivery.
struct AckRound<'a> {
    hub: &'a Hub,
    frames: Option<Frames>,
    text: &'a str,
    /// Recipient → final status, or the last send's status while pending.
    state: Vec<(WsConn, Option<AckStatus>, SendStatus)>,
    attempts: usize,
}

impl<'a> AckRound<'a> {
    fn new(hub: &'a Hub, list: &[WsConn], text: &'a str) -> Self {
        let frames = hub.inner.bcast.get().map(|f| f.b.frames_text(text));
        let state = list
            .iter()
            .map(|w| (w.clone(), None, SendStatus::Queued))
            .collect();
        AckRound {
            hub,
            frames,
            text,
            state,
            attempts: 0,
        }
    }

    fn pending(&self) -> usize {
        self.state.iter().filter(|s| s.1.is_none()).count()
    }

    fn send_pending(&mut self) {
        for (ws, fin, last) in self.state.iter_mut().filter(|s| s.1.is_none()) {
            *last = send_to(ws, self.frames.as_ref(), self.text);
            self.hub.count(*last);
            self.attempts += 1;
            if *last == SendStatus::Closed {
                *fin = Some(AckStatus::Closed);
            }
        }
    }

    fn collect_acks(&mut self, rx: &crossbeam_channel::Receiver<AckMsg>, until: Instant) {
        while self.pending() > 0 {
            let left = until.saturating_duration_since(Instant::now());
            let (from, status) = match rx.recv_timeout(left) {
                Ok(AckMsg::Acked(c)) => (c, AckStatus::Acked),
                Ok(AckMsg::Closed(c)) => (c, AckStatus::Closed),
                Err(_) => return,
            };
            if let Some(s) = self.state.iter_mut().find(|s| s.0.id() == from) {
                s.1.get_or_insert(status);
            }
        }
    }

    fn run(mut self, rx: &crossbeam_channel::Receiver<AckMsg>, opts: AckOptions) -> DeliveryReport {
        for _ in 0..=opts.retries {
            self.send_pending();
            self.collect_acks(rx, Instant::now() + opts.timeout);
            if self.pending() == 0 {
                break;
            }
        }
        let results = self
            .state
            .iter()
            .map(|(ws, fin, last)| (ws.id(), fin.unwrap_or_else(|| unacked(ws, *last))))
            .collect();
        DeliveryReport {
            results,
            attempts: self.attempts,
        }
    }
}

fn unacked(ws: &WsConn, last: SendStatus) -> AckStatus {
    match (ws.is_open(), last) {
        (false, _) => AckStatus::Closed,
        (true, SendStatus::Dropped) => AckStatus::Dropped,
        (true, _) => AckStatus::TimedOut,
    }
}
