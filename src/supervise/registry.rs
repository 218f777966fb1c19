//! The node's process table: entries, registered names, links and monitors.
//!
//! Pure bookkeeping under one mutex; no user code ever runs while it is held, and signals
//! are sent by the caller after the lock is released.

use std::any::Any;
use std::collections::HashMap;

use crossbeam_channel::Sender;

use super::mailbox::Sys;
use super::{Down, MonitorRef, Pid, RegisterError, SpawnError};

/// Who receives a DOWN notification.
pub(crate) enum Watcher {
    /// A process, in its mailbox (in order with the messages of the monitored process).
    Process(Sys),
    /// A plain channel (monitors taken from outside any process).
    Channel(Sender<Down>),
}

impl Watcher {
    pub(crate) fn deliver(&self, down: Down) {
        // A watcher that is gone has nobody to tell: dropping is right.
        match self {
            Watcher::Process(sys) => sys.down(down),
            Watcher::Channel(tx) => drop(tx.try_send(down)),
        }
    }
}

/// One live process.
pub(crate) struct Entry {
    pub(crate) name: Option<String>,
    pub(crate) sys: Sys,
    /// The typed `ProcessRef<M>`, for lookups by pid or name.
    pub(crate) user: Box<dyn Any + Send + Sync>,
    pub(crate) links: Vec<Pid>,
    pub(crate) monitors: Vec<(MonitorRef, Watcher)>,
}

/// What a removed process leaves to notify.
pub(crate) struct Removed {
    pub(crate) entry: Entry,
    /// The processes it was linked to.
    pub(crate) linked: Vec<Sys>,
}

/// Processes by pid and pids by name.
#[derive(Default)]
pub(crate) struct Registry {
    procs: HashMap<Pid, Entry>,
    names: HashMap<String, Pid>,
}

impl Registry {
    pub(crate) fn insert(&mut self, pid: Pid, entry: Entry) -> Result<(), SpawnError> {
        if let Some(name) = &entry.name {
            if self.names.contains_key(name) {
                return Err(SpawnError::NameTaken(name.clone()));
            }
            self.names.insert(name.clone(), pid);
        }
        self.procs.insert(pid, entry);
        Ok(())
    }

    pub(crate) fn get(&self, pid: Pid) -> Option<&Entry> {
        self.procs.get(&pid)
    }

    /// Live pids, oldest first.
    pub(crate) fn pids(&self) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self.procs.keys().copied().collect();
        pids.sort_unstable();
        pids
    }

    pub(crate) fn len(&self) -> usize {
        self.procs.len()
    }

    /// Removes a process and unlinks it from every peer.
    pub(crate) fn remove(&mut self, pid: Pid) -> Option<Removed> {
        let entry = self.procs.remove(&pid)?;
        if let Some(name) = &entry.name {
            self.names.remove(name);
        }
        let mut linked = Vec::with_capacity(entry.links.len());
        for peer in &entry.links {
            if let Some(p) = self.procs.get_mut(peer) {
                p.links.retain(|l| *l != pid);
                linked.push(p.sys.clone());
            }
        }
        Some(Removed { entry, linked })
    }

    /// Links `a` and `b`; `false` if either is gone.
    pub(crate) fn link(&mut self, a: Pid, b: Pid) -> bool {
        if a == b {
            return self.procs.contains_key(&a);
        }
        if !self.procs.contains_key(&a) || !self.procs.contains_key(&b) {
            return false;
        }
        for (x, y) in [(a, b), (b, a)] {
            if let Some(e) = self.procs.get_mut(&x) {
                if !e.links.contains(&y) {
                    e.links.push(y);
                }
            }
        }
        true
    }

    pub(crate) fn unlink(&mut self, a: Pid, b: Pid) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(e) = self.procs.get_mut(&x) {
                e.links.retain(|l| *l != y);
            }
        }
    }

    /// Adds a monitor; hands the watcher back if the target is gone.
    pub(crate) fn monitor(
        &mut self,
        target: Pid,
        mref: MonitorRef,
        watcher: Watcher,
    ) -> Result<(), Watcher> {
        match self.procs.get_mut(&target) {
            Some(e) => {
                e.monitors.push((mref, watcher));
                Ok(())
            }
            None => Err(watcher),
        }
    }

    pub(crate) fn demonitor(&mut self, target: Pid, mref: MonitorRef) {
        if let Some(e) = self.procs.get_mut(&target) {
            e.monitors.retain(|(m, _)| *m != mref);
        }
    }

    pub(crate) fn register(&mut self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        if self.names.contains_key(name) {
            return Err(RegisterError::NameTaken(name.to_owned()));
        }
        let e = self.procs.get_mut(&pid).ok_or(RegisterError::NoProcess)?;
        if let Some(old) = &e.name {
            return Err(RegisterError::AlreadyNamed(old.clone()));
        }
        e.name = Some(name.to_owned());
        self.names.insert(name.to_owned(), pid);
        Ok(())
    }

    pub(crate) fn unregister(&mut self, name: &str) -> Option<Pid> {
        let pid = self.names.remove(name)?;
        if let Some(e) = self.procs.get_mut(&pid) {
            e.name = None;
        }
        Some(pid)
    }

    pub(crate) fn whereis(&self, name: &str) -> Option<Pid> {
        self.names.get(name).copied()
    }

    /// Registered names, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.names.keys().cloned().collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Weak};

    use crossbeam_channel::{unbounded, Receiver};

    use super::*;
    use crate::supervise::mailbox::{Envelope, ProcShared, Signal};
    use crate::supervise::ExitReason;

    fn sys(pid: Pid) -> (Sys, Receiver<Signal>) {
        let (urgent, rx) = unbounded();
        let (ordered, _) = unbounded::<Envelope<()>>();
        let shared = Arc::new(ProcShared::new(pid, 8, Weak::new()));
        let ordered = Arc::new(ordered);
        (
            Sys {
                shared,
                urgent,
                ordered,
            },
            rx,
        )
    }

    fn entry(reg: &mut Registry, n: u64, name: Option<&str>) -> (Pid, Receiver<Signal>) {
        let pid = Pid::new(n);
        let (sys, rx) = sys(pid);
        let e = Entry {
            name: name.map(str::to_owned),
            sys,
            user: Box::new(()),
            links: Vec::new(),
            monitors: Vec::new(),
        };
        reg.insert(pid, e).unwrap();
        (pid, rx)
    }

    #[test]
    fn removal_unlinks_and_returns_peers_to_notify() {
        let mut reg = Registry::default();
        let (a, _) = entry(&mut reg, 1, Some("a"));
        let (b, brx) = entry(&mut reg, 2, None);
        let (c, _) = entry(&mut reg, 3, None);
        assert!(reg.link(a, b));
        assert!(reg.link(a, c));
        reg.unlink(a, c);
        let removed = reg.remove(a).unwrap();
        assert_eq!(removed.linked.len(), 1);
        removed.linked[0].exit(a, ExitReason::Shutdown);
        assert!(matches!(brx.try_recv(), Ok(Signal::Exit { from, .. }) if from == a));
        assert!(reg.get(b).unwrap().links.is_empty());
        assert_eq!(reg.whereis("a"), None);
        assert!(reg.remove(a).is_none());
    }

    #[test]
    fn links_to_missing_processes_fail() {
        let mut reg = Registry::default();
        let (a, _) = entry(&mut reg, 1, None);
        assert!(!reg.link(a, Pid::new(9)));
        assert!(reg.get(a).unwrap().links.is_empty());
    }

    #[test]
    fn monitors_on_missing_targets_hand_the_watcher_back() {
        let mut reg = Registry::default();
        let (a, _) = entry(&mut reg, 1, None);
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let m = MonitorRef::new(7);
        assert!(reg
            .monitor(Pid::new(9), m, Watcher::Channel(tx.clone()))
            .is_err());
        assert!(reg.monitor(a, m, Watcher::Channel(tx)).is_ok());
        reg.demonitor(a, m);
        assert!(reg.remove(a).unwrap().entry.monitors.is_empty());
    }

    #[test]
    fn names_are_unique_and_one_per_process() {
        let mut reg = Registry::default();
        let (a, _) = entry(&mut reg, 1, Some("x"));
        let (b, _) = entry(&mut reg, 2, None);
        let pid = Pid::new(3);
        let dup = Entry {
            name: Some("x".into()),
            sys: sys(pid).0,
            user: Box::new(()),
            links: Vec::new(),
            monitors: Vec::new(),
        };
        assert_eq!(
            reg.insert(pid, dup).unwrap_err(),
            SpawnError::NameTaken("x".into())
        );
        assert_eq!(
            reg.register("x", b),
            Err(RegisterError::NameTaken("x".into()))
        );
        assert_eq!(
            reg.register("y", a),
            Err(RegisterError::AlreadyNamed("x".into()))
        );
        assert_eq!(
            reg.register("y", Pid::new(9)),
            Err(RegisterError::NoProcess)
        );
        assert_eq!(reg.unregister("x"), Some(a));
        reg.register("x", b).unwrap();
        assert_eq!(reg.whereis("x"), Some(b));
        reg.register("w", a).unwrap();
        assert_eq!(reg.names(), ["w", "x"]);
    }
}
