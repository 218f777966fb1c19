//! Poller-local fan-out group membership and delivery.

use std::sync::Arc;

use super::driver::Offer;
use super::poller::Poller;
use crate::base::{ConnId, Delivery, GroupId};
use crate::proto::ws::SharedFrames;

/// The groups a connection is in (kept in the connection's rarely present part: no memory
/// at all while it is in none).
#[derive(Default)]
pub(crate) struct Groups(Vec<GroupId>);

impl Groups {
    /// Adds `g`; false when already a member.
    fn insert(&mut self, g: GroupId) -> bool {
        if self.0.contains(&g) {
            return false;
        }
        self.0.push(g);
        true
    }

    /// Removes `g`; false when not a member.
    fn remove(&mut self, g: GroupId) -> bool {
        let Some(i) = self.0.iter().position(|x| *x == g) else {
            return false;
        };
        self.0.swap_remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        true
    }

    /// Every group, leaving none.
    pub(crate) fn take(&mut self) -> Vec<GroupId> {
        std::mem::take(&mut self.0)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Poller {
    pub(crate) fn group_join(&mut self, slot: u32, gen: u32, group: GroupId) {
        let mut joined = false;
        self.on_stream(slot, gen, |c, _| {
            joined = c.with_groups(|g| g.insert(group));
            super::stream::Step::Live
        });
        if joined {
            self.groups_mut()
                .entry(group)
                .or_default()
                .push((slot, gen));
        }
    }

    pub(crate) fn group_leave(&mut self, slot: u32, gen: u32, group: GroupId) {
        let mut left = false;
        self.on_stream(slot, gen, |c, _| {
            left = c.with_groups(|g| g.remove(group));
            super::stream::Step::Live
        });
        if left {
            self.remove_member(group, slot, gen);
        }
    }

    pub(crate) fn remove_member(&mut self, group: GroupId, slot: u32, gen: u32) {
        let groups = self.groups_mut();
        if let Some(m) = groups.get_mut(&group) {
            if let Some(i) = m.iter().position(|x| *x == (slot, gen)) {
                m.swap_remove(i);
            }
            if m.is_empty() {
                groups.remove(&group);
            }
        }
    }

    /// Offers the shared frame to every local member of `group`, reporting the counts.
    pub(crate) fn cmd_group_send(
        &mut self,
        group: GroupId,
        frames: SharedFrames,
        except: Arc<[ConnId]>,
        reply: Option<crossbeam_channel::Sender<Delivery>>,
    ) {
        let mut report = Delivery::default();
        if let Some(members) = self.groups_mut().remove(&group) {
            for &(slot, gen) in &members {
                self.on_stream(slot, gen, |c, ctx| {
                    if except.contains(&ConnId(c.id())) {
                        return super::stream::Step::Live;
                    }
                    match c.offer(ctx, &frames) {
                        Offer::Queued { evicted } => {
                            report.queued += 1;
                            report.evicted += evicted as usize;
                        }
                        Offer::Dropped { .. } => report.dropped += 1,
                        Offer::Closed => report.closed += 1,
                    }
                    super::stream::Step::Live
                });
            }
            let mut members = members;
            members.retain(|&(s, g)| self.is_live(s, g));
            if !members.is_empty() {
                self.groups_mut().insert(group, members);
            }
        }
        if let Some(r) = reply {
            let _ = r.send(report);
        }
    }
}
