//! A supervisor's child table: start, stop (with timeout and detach), inspect.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::current;
use super::runner::panic_message;
use super::{
    ChildKind, ChildSpec, ExitReason, Node, Pid, Restart, SpawnError, SpawnOptions,
    SupervisorError, SystemEvent,
};

/// A child as reported by [`SupervisorRef::which_children`](super::SupervisorRef::which_children).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// The spec id.
    pub id: String,
    /// The running instance, `None` if it is not running.
    pub pid: Option<Pid>,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Its restart type.
    pub restart: Restart,
}

/// Child counts as reported by
/// [`SupervisorRef::count_children`](super::SupervisorRef::count_children).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChildCount {
    /// Child specs, running or not.
    pub specs: usize,
    /// Children running now.
    pub active: usize,
    /// Specs of nested supervisors.
    pub supervisors: usize,
    /// Specs of workers.
    pub workers: usize,
}

pub(crate) struct Child {
    pub(crate) spec: ChildSpec,
    pub(crate) pid: Option<Pid>,
    /// When the running instance started (for the restart backoff).
    since: Option<Instant>,
    /// Restarts in a row that came quickly: the backoff's exponent.
    level: u32,
}

/// Children in start order.
pub(crate) struct Children {
    pub(crate) list: Vec<Child>,
    sup: Pid,
    node: Node,
}

impl Children {
    /// An empty table; the supervisor's pid is set in its `init`.
    pub(crate) fn new(node: Node) -> Self {
        Children {
            list: Vec::new(),
            sup: Pid::new(0),
            node,
        }
    }

    pub(crate) fn set_supervisor(&mut self, sup: Pid) {
        self.sup = sup;
    }

    pub(crate) fn position(&self, id: &str) -> Option<usize> {
        self.list.iter().position(|c| c.spec.id == id)
    }

    pub(crate) fn position_pid(&self, pid: Pid) -> Option<usize> {
        self.list.iter().position(|c| c.pid == Some(pid))
    }

    pub(crate) fn push(&mut self, spec: ChildSpec) {
        self.list.push(Child {
            spec,
            pid: None,
            since: None,
            level: 0,
        });
    }

    /// Starts child `i`, linked to the supervisor; waits for its `init`.
    pub(crate) fn start(&mut self, i: usize) -> Result<Pid, SpawnError> {
        let spec = &self.list[i].spec;
        let opts = SpawnOptions::default()
            .link(self.sup)
            .name_opt(spec.name.clone());
        // The factory is user code running on the supervisor's thread: contain its panics.
        let start = AssertUnwindSafe(|| (spec.start)(&self.node, opts));
        let pid = catch_unwind(start).unwrap_or_else(|p| {
            let reason = ExitReason::Panic(panic_message(p.as_ref()));
            Err(SpawnError::Init(reason))
        })?;
        self.list[i].pid = Some(pid);
        if self.list[i].spec.backoff.is_some() {
            self.list[i].since = Some(Instant::now());
        }
        Ok(pid)
    }

    /// The delay before restarting child `i` (zero without a backoff): the first delay,
    /// doubled for each restart in a row, up to the maximum. A child that ran for at
    /// least the maximum delay starts over from the first.
    pub(crate) fn next_delay(&mut self, i: usize, now: Instant) -> Duration {
        let c = &mut self.list[i];
        let Some((first, max)) = c.spec.backoff else {
            return Duration::ZERO;
        };
        let ran = c
            .since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        if ran >= max {
            c.level = 0;
        }
        let factor = 1u32.checked_shl(c.level).unwrap_or(u32::MAX);
        c.level = c.level.saturating_add(1).min(31);
        first.saturating_mul(factor).min(max)
    }

    /// Stops child `i` if it runs: shutdown signal, wait up to its timeout, else detach.
    /// Returns the pid it had.
    pub(crate) fn stop(&mut self, i: usize) -> Option<Pid> {
        let pid = self.list[i].pid.take()?;
        self.node.unlink(self.sup, pid);
        let down = self.node.monitor(pid);
        let shared = self.node.shared_of(pid);
        let timeout = self.list[i].spec.shutdown;
        // The child is waited for (marked before it is told): a call from it to this
        // supervisor fails at once.
        let node = &self.node;
        let wait = || {
            node.stop(pid);
            down.recv_timeout(timeout)
        };
        let res = match &shared {
            Some(s) => current::blocked_on(s, wait),
            None => wait(),
        };
        if let Err(RecvTimeoutError::Timeout) = res {
            self.detach(i, pid);
        }
        Some(pid)
    }

    fn detach(&self, i: usize, pid: Pid) {
        if self.node.detach(pid) {
            self.node.emit(&SystemEvent::ChildDetached {
                supervisor: self.sup,
                child: self.list[i].spec.id.clone(),
                pid,
            });
        }
    }

    /// Stops the children in `group` in reverse start order; returns their former pids
    /// (indexed like the table).
    pub(crate) fn stop_group(&mut self, group: Range<usize>) -> Vec<Option<Pid>> {
        let mut old = vec![None; self.list.len()];
        for i in group.rev() {
            old[i] = self.stop(i);
        }
        old
    }

    /// Removes temporary children that are not running (they are never restarted).
    pub(crate) fn drop_stopped_temporaries(&mut self) {
        self.list
            .retain(|c| c.pid.is_some() || c.spec.restart != Restart::Temporary);
    }

    pub(crate) fn count(&self) -> ChildCount {
        let sups = self
            .list
            .iter()
            .filter(|c| c.spec.kind == ChildKind::Supervisor);
        let supervisors = sups.count();
        ChildCount {
            specs: self.list.len(),
            active: self.list.iter().filter(|c| c.pid.is_some()).count(),
            supervisors,
            workers: self.list.len() - supervisors,
        }
    }

    pub(crate) fn spec(&self, id: &str) -> Result<ChildSpec, SupervisorError> {
        let i = self
            .position(id)
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))?;
        Ok(self.list[i].spec.clone())
    }

    pub(crate) fn info(&self) -> Vec<ChildInfo> {
        let info = |c: &Child| ChildInfo {
            id: c.spec.id.clone(),
            pid: c.pid,
            kind: c.spec.kind,
            restart: c.spec.restart,
        };
        self.list.iter().map(info).collect()
    }
}
