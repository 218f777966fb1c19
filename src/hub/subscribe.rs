//! Room subscriptions: code outside the connections (a supervised process, a logger, a
//! bridge) hears a room's events — members joining and leaving, messages emitted to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::Hub;
use crate::supervise::{ProcessRef, SendError};
use crate::ConnId;

/// Something that happened in a room, as heard by a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A connection joined the room.
    Joined {
        /// The room.
        room: String,
        /// The connection.
        conn: ConnId,
        /// Its user, when it has an identity.
        user: Option<String>,
    },
    /// A connection left the room (left, was kicked, disconnected, or the room closed).
    Left {
        /// The room.
        room: String,
        /// The connection.
        conn: ConnId,
        /// Its user, when it has an identity.
        user: Option<String>,
    },
    /// A message was emitted to the room: the encoded envelope, shared by every
    /// subscriber (serialized once, like the frames the members get).
    Message {
        /// The room.
        room: String,
        /// The envelope text, e.g. `{"event":"chat:message","data":{…}}`.
        text: Arc<str>,
    },
}

impl RoomEvent {
    /// The room the event happened in.
    pub fn room(&self) -> &str {
        match self {
            RoomEvent::Joined { room, .. }
            | RoomEvent::Left { room, .. }
            | RoomEvent::Message { room, .. } => room,
        }
    }
}

/// Identifies one subscription, for [`Hub::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(u64);

/// A subscriber: returns false to be removed (its receiver is gone).
type Sink = Arc<dyn Fn(&RoomEvent) -> bool + Send + Sync>;

/// Room → subscribers. Read on every room event, written on (un)subscribe.
#[derive(Default)]
pub(crate) struct Subscriptions {
    rooms: RwLock<HashMap<String, Vec<(SubscriptionId, Sink)>>>,
    next: AtomicU64,
}

impl Subscriptions {
    fn add(&self, room: &str, sink: Sink) -> SubscriptionId {
        let id = SubscriptionId(self.next.fetch_add(1, Ordering::Relaxed));
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        rooms.entry(room.to_owned()).or_default().push((id, sink));
        id
    }

    fn remove(&self, id: SubscriptionId) -> bool {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        let mut found = false;
        rooms.retain(|_, subs| {
            let before = subs.len();
            subs.retain(|(i, _)| *i != id);
            found |= subs.len() != before;
            !subs.is_empty()
        });
        found
    }

    /// Whether anyone listens to `room` (a cheap check before building an event).
    pub(crate) fn wants(&self, room: &str) -> bool {
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        rooms.get(room).is_some_and(|s| !s.is_empty())
    }

    /// Hands `ev` to the room's subscribers, outside the lock; drops those that refuse.
    pub(crate) fn publish(&self, ev: &RoomEvent) {
        let sinks: Vec<(SubscriptionId, Sink)> = {
            let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
            match rooms.get(ev.room()) {
                Some(s) => s.clone(),
                None => return,
            }
        };
        for (id, sink) in sinks {
            let keep = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink(ev)));
            if !keep.unwrap_or(false) {
                self.remove(id);
            }
        }
    }
}

impl Hub {
    /// Calls `f` with every event of `room` (joins, leaves, messages emitted to it) from
    /// now on, on the thread that caused the event: keep it short and non-blocking (hand
    /// the event to a channel or a process). Returning false, or panicking, ends the
    /// subscription. Subscribing does not make the room exist or count as a member.
    ///
    /// # Examples
    /// ```
    /// let hub = sockloop::hub::Hub::builder().build();
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// let id = hub.subscribe("lobby", move |ev| tx.send(ev.clone()).is_ok());
    /// assert!(hub.unsubscribe(id));
    /// # drop(rx);
    /// ```
    pub fn subscribe(
        &self,
        room: &str,
        f: impl Fn(&RoomEvent) -> bool + Send + Sync + 'static,
    ) -> SubscriptionId {
        self.inner.subs.add(room, Arc::new(f))
    }

    /// Subscribes a process to `room`: each event arrives in its mailbox as `M::from(event)`.
    /// A full mailbox drops that event (the node reports `MailboxFull`); a dead process
    /// ends the subscription. Subscribe from the process's `init` (or by registered name)
    /// so a restarted instance subscribes again.
    pub fn subscribe_process<M>(&self, room: &str, process: ProcessRef<M>) -> SubscriptionId
    where
        M: From<RoomEvent> + Send + 'static,
    {
        self.subscribe(room, move |ev| {
            !matches!(
                process.send(M::from(ev.clone())),
                Err(SendError::NoProcess(_))
            )
        })
    }

    /// Ends a subscription; false when it was already gone.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        self.inner.subs.remove(id)
    }

    /// Tells the room's subscribers about a message emitted to it.
    pub(crate) fn publish_message(&self, room: &str, text: &str) {
        if self.inner.subs.wants(room) {
            self.inner.subs.publish(&RoomEvent::Message {
                room: room.to_owned(),
                text: text.into(),
            });
        }
    }

    pub(crate) fn publish_member(
        &self,
        room: &str,
        conn: ConnId,
        user: &Option<String>,
        joined: bool,
    ) {
        if let Some(c) = self.cluster_node() {
            if joined {
                c.joined(room, conn, user.as_deref());
            } else {
                c.left(room, conn);
            }
        }
        if !self.inner.subs.wants(room) {
            return;
        }
        let (room, user) = (room.to_owned(), user.clone());
        let ev = if joined {
            RoomEvent::Joined { room, conn, user }
        } else {
            RoomEvent::Left { room, conn, user }
        };
        self.inner.subs.publish(&ev);
    }
}
