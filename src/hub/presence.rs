//! Typing indicators with a time to live, expired by the hub's single timer thread.

use std::collections::{BTreeMap, HashMap};
use std::sync::Weak;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde_json::json;

use super::error::HubError;
use super::{Hub, HubInner};
use crate::ConnId;

/// A typing indicator to expire at `until` unless refreshed.
pub(crate) struct TimerCmd {
    room: String,
    user: String,
    conn: ConnId,
    until: Instant,
}

type Key = (String, String);

/// Deadlines of live indicators (sans-IO: the caller passes the time).
#[derive(Default)]
struct Typing {
    latest: HashMap<Key, (Instant, ConnId)>,
    queue: BTreeMap<(Instant, u64), Key>,
    seq: u64,
}

impl Typing {
    fn set(&mut self, c: TimerCmd) {
        self.seq += 1;
        let key = (c.room, c.user);
        self.queue.insert((c.until, self.seq), key.clone());
        self.latest.insert(key, (c.until, c.conn));
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.queue.keys().next().map(|k| k.0)
    }

    /// Indicators whose latest deadline passed at `now`.
    fn expire(&mut self, now: Instant) -> Vec<(Key, ConnId)> {
        let mut out = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (at, key) = (entry.key().0, entry.remove());
            if self.latest.get(&key).is_some_and(|l| l.0 == at) {
                let (_, conn) = self.latest.remove(&key).unwrap_or((at, ConnId(0)));
                out.push((key, conn));
            }
        }
        out
    }
}

/// Starts the hub's timer thread; it ends when the hub is dropped.
pub(crate) fn spawn_timer(hub: Weak<HubInner>) -> Sender<TimerCmd> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let spawned = std::thread::Builder::new()
        .name("sockloop-hub-timer".into())
        .spawn(move || timer_loop(&hub, &rx));
    if let Err(e) = spawned {
        log::error!("hub: no timer thread, typing indicators will not expire: {e}");
    }
    tx
}

fn timer_loop(hub: &Weak<HubInner>, rx: &Receiver<TimerCmd>) {
    let mut typing = Typing::default();
    loop {
        let wait = typing
            .next_deadline()
            .map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
        match rx.recv_timeout(wait) {
            Ok(cmd) => typing.set(cmd),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let expired = typing.expire(Instant::now());
        if expired.is_empty() {
            continue;
        }
        let Some(inner) = hub.upgrade() else { return };
        let hub = Hub { inner };
        for ((room, user), conn) in expired {
            announce(&hub, &room, &user, conn, false);
        }
    }
}

fn announce(hub: &Hub, room: &str, user: &str, conn: ConnId, typing: bool) {
    if hub.room_notifies(room) {
        let data = json!({"room": room, "user": user, "typing": typing});
        hub.to_room(room).except(conn).emit("typing", &data);
    }
}

impl Hub {
    /// Announces that the user of `conn` is typing in `room`: the other members get
    /// `{"event":"typing","data":{"room","user","typing":true}}`, and
    /// `"typing":false` once [`HubConfig::typing_ttl`](super::HubConfig::typing_ttl)
    /// passes without another call.
    ///
    /// # Errors
    /// `forbidden` when the connection has no identity or is not in the room.
    pub fn typing(&self, conn: ConnId, room: &str) -> Result<(), HubError> {
        let user = self.member_user(conn, room)?;
        announce(self, room, &user, conn, true);
        self.schedule(conn, room, user, self.inner.cfg.typing_ttl);
        Ok(())
    }

    /// Ends the user's typing indicator in `room` now (members get `"typing":false`).
    ///
    /// # Errors
    /// As [`typing`](Self::typing).
    pub fn stop_typing(&self, conn: ConnId, room: &str) -> Result<(), HubError> {
        let user = self.member_user(conn, room)?;
        self.schedule(conn, room, user, Duration::ZERO);
        Ok(())
    }

    fn schedule(&self, conn: ConnId, room: &str, user: String, ttl: Duration) {
        let cmd = TimerCmd {
            room: room.to_owned(),
            user,
            conn,
            until: Instant::now() + ttl,
        };
        let _ = self.inner.typing.send(cmd);
    }

    fn member_user(&self, conn: ConnId, room: &str) -> Result<String, HubError> {
        let st = self.state();
        let e = st.conns.get(&conn);
        let user = e.and_then(|e| e.info.user.clone());
        let member = e.is_some_and(|e| e.info.rooms.contains(room));
        match (user, member) {
            (Some(u), true) => Ok(u),
            _ => Err(HubError::forbidden(
                "typing needs an identity and membership",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(user: &str, until: Instant) -> TimerCmd {
        TimerCmd {
            room: "r".into(),
            user: user.into(),
            conn: ConnId(1),
            until,
        }
    }

    #[test]
    fn refreshed_indicator_expires_once_at_its_latest_deadline() {
        let t0 = Instant::now();
        let mut t = Typing::default();
        t.set(cmd("a", t0 + Duration::from_secs(1)));
        t.set(cmd("a", t0 + Duration::from_secs(3)));
        t.set(cmd("b", t0 + Duration::from_secs(2)));
        assert!(t.expire(t0 + Duration::from_millis(1500)).is_empty());
        let b = t.expire(t0 + Duration::from_secs(2));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0 .1, "b");
        assert_eq!(t.expire(t0 + Duration::from_secs(5)).len(), 1);
        assert!(t.next_deadline().is_none());
    }
}
