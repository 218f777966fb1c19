//! Typing indicators with a time to live, expired by the hub's timer thread.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::json;

use super::error::HubError;
use super::timer::TimerCmd;
use super::Hub;
use crate::ConnId;

/// A typing indicator to expire at `until` unless refreshed, or to end now (`stop`).
pub(crate) struct TypingCmd {
    room: String,
    user: String,
    conn: ConnId,
    until: Instant,
    stop: bool,
}

type Key = (String, String);

/// Deadlines of live indicators (sans-IO: the caller passes the time).
#[derive(Default)]
pub(crate) struct Typing {
    latest: HashMap<Key, (Instant, ConnId)>,
    queue: BTreeMap<(Instant, u64), Key>,
    seq: u64,
}

impl Typing {
    /// Applies a command; returns an indicator that ended now (a stop of a live one).
    pub(crate) fn apply(&mut self, c: TypingCmd) -> Option<(Key, ConnId)> {
        let key = (c.room, c.user);
        if c.stop {
            // A stale queue entry stays; `expire` skips entries that are not the latest.
            return self.latest.remove(&key).map(|(_, conn)| (key, conn));
        }
        self.seq += 1;
        self.queue.insert((c.until, self.seq), key.clone());
        self.latest.insert(key, (c.until, c.conn));
        None
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.keys().next().map(|k| k.0)
    }

    /// Indicators whose latest deadline passed at `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(Key, ConnId)> {
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

/// Tells the other members of `room` that `user` stopped typing (timer thread).
pub(crate) fn ended(hub: &Hub, ((room, user), conn): (Key, ConnId)) {
    announce(hub, &room, &user, conn, false);
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
        self.schedule(conn, room, user, self.inner.cfg.typing_ttl, false);
        Ok(())
    }

    /// Ends the user's typing indicator in `room` now: members get `"typing":false` when
    /// one was on, nothing otherwise.
    ///
    /// # Errors
    /// As [`typing`](Self::typing).
    pub fn stop_typing(&self, conn: ConnId, room: &str) -> Result<(), HubError> {
        let user = self.member_user(conn, room)?;
        self.schedule(conn, room, user, Duration::ZERO, true);
        Ok(())
    }

    fn schedule(&self, conn: ConnId, room: &str, user: String, ttl: Duration, stop: bool) {
        let cmd = TypingCmd {
            room: room.to_owned(),
            user,
            conn,
            until: super::timer::later(ttl),
            stop,
        };
        self.timer(TimerCmd::Typing(cmd));
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

    fn cmd(user: &str, until: Instant) -> TypingCmd {
        TypingCmd {
            room: "r".into(),
            user: user.into(),
            conn: ConnId(1),
            until,
            stop: false,
        }
    }

    #[test]
    fn stopping_ends_only_a_live_indicator() {
        let t0 = Instant::now();
        let mut t = Typing::default();
        let stop = |u: &str| TypingCmd {
            stop: true,
            ..cmd(u, t0)
        };
        assert!(t.apply(stop("a")).is_none(), "a was not typing");
        assert!(t.apply(cmd("a", t0 + Duration::from_secs(1))).is_none());
        assert!(t.apply(stop("a")).is_some());
        assert!(t.apply(stop("a")).is_none(), "already ended");
        assert!(t.expire(t0 + Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn refreshed_indicator_expires_once_at_its_latest_deadline() {
        let t0 = Instant::now();
        let mut t = Typing::default();
        t.apply(cmd("a", t0 + Duration::from_secs(1)));
        t.apply(cmd("a", t0 + Duration::from_secs(3)));
        t.apply(cmd("b", t0 + Duration::from_secs(2)));
        assert!(t.expire(t0 + Duration::from_millis(1500)).is_empty());
        let b = t.expire(t0 + Duration::from_secs(2));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0 .1, "b");
        assert_eq!(t.expire(t0 + Duration::from_secs(5)).len(), 1);
        assert!(t.next_deadline().is_none());
    }
}
