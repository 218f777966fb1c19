//! Poller-local fan-out group membership and delivery.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::poller::Poller;
use super::stream::{Proto, StreamConn};
use super::Payload;
use crate::base::DropPolicy;
use crate::base::{CloseReason, ConnId};
use crate::base::{Delivery, GroupId};
use crate::proto::ws::{SharedChoice, SharedFrames};
use crate::server::handle::{account, STATE_OPEN};

/// What one member gets.
enum Outcome {
    Queued,
    /// Refused; `close` when the member's policy is to disconnect.
    Dropped {
        close: bool,
    },
    Closed,
}

impl Poller {
    pub(crate) fn cmd_group_join(&mut self, slot: u32, gen: u32, group: GroupId) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        if c.groups.contains(&group) {
            return;
        }
        c.groups.push(group);
        self.groups.entry(group).or_default().push((slot, gen));
    }

    pub(crate) fn cmd_group_leave(&mut self, slot: u32, gen: u32, group: GroupId) {
        let Some(c) = self.stream_mut(slot, gen) else {
            return;
        };
        let Some(i) = c.groups.iter().position(|g| *g == group) else {
            return;
        };
        c.groups.swap_remove(i);
        self.remove_member(group, slot, gen);
    }

    fn remove_member(&mut self, group: GroupId, slot: u32, gen: u32) {
        if let Some(m) = self.groups.get_mut(&group) {
            if let Some(i) = m.iter().position(|x| *x == (slot, gen)) {
                m.swap_remove(i);
            }
            if m.is_empty() {
                self.groups.remove(&group);
            }
        }
    }

    /// Leaves every group (the connection is going away).
    pub(crate) fn leave_all_groups(&mut self, slot: u32, gen: u32, groups: Vec<GroupId>) {
        for g in groups {
            self.remove_member(g, slot, gen);
        }
    }

    /// Appends the shared frame to every local member of `group`, reporting the counts.
    pub(crate) fn cmd_group_send(
        &mut self,
        group: GroupId,
        frames: SharedFrames,
        except: Arc<[ConnId]>,
        reply: Option<crossbeam_channel::Sender<Delivery>>,
    ) {
        let mut report = Delivery::default();
        if let Some(members) = self.groups.remove(&group) {
            for &(slot, gen) in &members {
                let Some(c) = self.stream_mut(slot, gen) else {
                    continue;
                };
                if except.contains(&c.handle.id()) {
                    continue;
                }
                match offer(c, &frames) {
                    (Outcome::Queued, dirty) => {
                        report.queued += 1;
                        if dirty {
                            self.dirty.push((slot, gen));
                        }
                    }
                    (Outcome::Dropped { close }, _) => {
                        report.dropped += 1;
                        if close {
                            self.begin_close(slot, gen, CloseReason::QueueOverflow);
                        }
                    }
                    (Outcome::Closed, _) => report.closed += 1,
                }
            }
            let mut members = members;
            members.retain(|&(s, g)| self.gen_of(s as usize) == Some(g));
            if !members.is_empty() {
                self.groups.insert(group, members);
            }
        }
        if let Some(r) = reply {
            let _ = r.send(report);
        }
    }
}

/// Offers the frame to one member under its queue bound. Returns the outcome and whether
/// the connection must be put on the dirty list.
fn offer(c: &mut StreamConn, frames: &SharedFrames) -> (Outcome, bool) {
    if c.shared().state.load(Ordering::Acquire) != STATE_OPEN {
        return (Outcome::Closed, false);
    }
    let bytes = match &c.proto {
        Proto::Ws(st) if !st.close_sent() => match (st.shared_choice(), &frames.deflated) {
            (SharedChoice::Deflated, Some(d)) => d.clone(),
            _ => frames.plain.clone(),
        },
        Proto::Ws(_) => return (Outcome::Closed, false),
        _ => frames.plain.clone(),
    };
    let cfg = &c.server().config;
    let (limit, policy) = (cfg.max_queued_bytes, cfg.drop_policy);
    let queued = c.shared().queued.load(Ordering::Acquire);
    let len = bytes.len();
    if queued > 0 && queued + len > limit && policy != DropPolicy::DropOldest {
        c.server().stats.dropped(1);
        let close = policy == DropPolicy::Disconnect;
        if close {
            c.shared()
                .state
                .store(crate::server::handle::STATE_CLOSING, Ordering::Release);
        }
        return (Outcome::Dropped { close }, false);
    }
    account(c.shared(), len as isize);
    let keep = policy == DropPolicy::DropOldest;
    c.outq.push(Payload::Shared(bytes), keep);
    if keep && c.outq.len() > limit {
        let (msgs, dropped) = c.outq.drop_oldest(limit);
        account(c.shared(), -(dropped as isize));
        c.server().stats.dropped(msgs);
    }
    (Outcome::Queued, c.mark_dirty())
}
