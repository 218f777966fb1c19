//! The delivery view of the rooms: what an emit to a room needs (its fan-out group, its
//! members' ids, its session members), in 64 shards by room name, apart from the hub's
//! registry. An emit to a room takes one shard's lock and never the registry's, so
//! publishers to different rooms do not queue behind one another, nor behind joins,
//! presence or lookups elsewhere in the hub.
//!
//! The registry (`State`) stays the owner of every room: a route is created, changed and
//! removed only while the registry's lock is held, in the same critical section as the
//! registry's change. Lock order everywhere: the registry, then one shard, then session
//! cells (in id order). An emit takes a shard, then cells; nothing holding a shard or a
//! cell takes the registry.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use super::session::SessionCell;
use crate::{ConnId, GroupId};

/// Shards of the room map: enough that publishers on a few cores rarely meet, few enough
/// that an empty hub stays small (64 empty maps).
const SHARDS: usize = 64;

/// One room, as an emit sees it.
pub(crate) struct Route {
    /// The room's fan-out group.
    pub(crate) gid: GroupId,
    /// The members (hub ids), the same set as the registry's room.
    pub(crate) members: HashSet<ConnId>,
    /// The members that are sessions, in id order: numbered under their locks by every
    /// group send to the room. Group joins and leaves of session members happen under the
    /// shard's lock, so a group send never reaches a session it did not number.
    pub(crate) sessions: Vec<Arc<SessionCell>>,
}

impl Route {
    pub(crate) fn new(gid: GroupId) -> Self {
        Route {
            gid,
            members: HashSet::new(),
            sessions: Vec::new(),
        }
    }

    /// Adds a session member, keeping id order.
    pub(crate) fn add_session(&mut self, cell: Arc<SessionCell>) {
        if let Err(at) = self.sessions.binary_search_by_key(&cell.id, |c| c.id) {
            self.sessions.insert(at, cell);
        }
    }

    /// Removes a session member.
    pub(crate) fn remove_session(&mut self, id: ConnId) {
        if let Ok(at) = self.sessions.binary_search_by_key(&id, |c| c.id) {
            self.sessions.remove(at);
        }
    }
}

type Shard = HashMap<String, Route>;

/// The rooms' routes, sharded by name.
pub(crate) struct Routes {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Routes {
    /// The shard that holds `room` (locked).
    pub(crate) fn shard(&self, room: &str) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(room) as usize % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `id` is a member of `room`.
    pub(crate) fn is_member(&self, id: ConnId, room: &str) -> bool {
        self.shard(room)
            .get(room)
            .is_some_and(|r| r.members.contains(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_find_their_room_and_members() {
        let routes = Routes::default();
        for i in 0..200u64 {
            let mut r = Route::new(GroupId(i));
            r.members.insert(ConnId(i));
            routes
                .shard(&format!("room{i}"))
                .insert(format!("room{i}"), r);
        }
        for i in 0..200u64 {
            assert!(routes.is_member(ConnId(i), &format!("room{i}")));
            assert!(!routes.is_member(ConnId(i + 1), &format!("room{i}")));
            let s = routes.shard(&format!("room{i}"));
            assert_eq!(s.get(&format!("room{i}")).map(|r| r.gid), Some(GroupId(i)));
        }
        assert!(!routes.is_member(ConnId(1), "nowhere"));
        // The rooms are spread: no shard holds more than a quarter of them.
        let most = routes.shards.iter().map(|s| s.lock().unwrap().len()).max();
        assert!(most.unwrap_or(0) < 50, "{most:?}");
    }
}
