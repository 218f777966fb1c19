//! The context a handler sees: its own pid and sender, the node, links, monitors, trapping.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crossbeam_channel::Sender;

use super::mailbox::Signal;
use super::registry::Watcher;
use super::{
    Down, ExitReason, MonitorRef, Node, Pid, Process, ProcessRef, SpawnError, SpawnOptions,
};

/// What a handler can do besides handling: see itself, reach the node, link, monitor.
/// Lives on the process's thread; not shared.
pub struct Context<M> {
    me: ProcessRef<M>,
    node: Node,
    sig: Sender<Signal>,
    trap: bool,
    monitors: HashMap<MonitorRef, Pid>,
}

impl<M: Send + 'static> Context<M> {
    pub(crate) fn new(me: ProcessRef<M>, node: Node, sig: Sender<Signal>) -> Self {
        Context {
            me,
            node,
            sig,
            trap: false,
            monitors: HashMap::new(),
        }
    }

    /// This process's pid.
    pub fn pid(&self) -> Pid {
        self.me.pid()
    }

    /// A sender to this process's own mailbox (clone it to hand it out).
    pub fn me(&self) -> &ProcessRef<M> {
        &self.me
    }

    /// The node this process runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// `true` once the process was asked to stop (shutdown by its supervisor,
    /// [`Node::stop`], or detached). A long handler should check it and return.
    pub fn shutting_down(&self) -> bool {
        self.me.shared().stopping.load(Ordering::Relaxed)
    }

    /// Trap exits: exit signals from linked processes arrive in
    /// [`Process::handle_exit`] instead of ending this process. Off by default.
    pub fn trap_exit(&mut self, on: bool) {
        self.trap = on;
    }

    /// Whether exits are trapped.
    pub fn traps_exit(&self) -> bool {
        self.trap
    }

    /// Links this process with `pid` (both ways). If `pid` is already dead, an exit signal
    /// with [`ExitReason::NoProc`] arrives at once (ending this process unless trapping).
    pub fn link(&mut self, pid: Pid) {
        if !self.node.link(self.pid(), pid) {
            let reason = ExitReason::NoProc;
            drop(self.sig.send(Signal::Exit { from: pid, reason }));
        }
    }

    /// Removes a link (no effect if there is none).
    pub fn unlink(&mut self, pid: Pid) {
        self.node.unlink(self.pid(), pid);
    }

    /// Monitors `pid`: exactly one [`Down`] arrives in [`Process::handle_down`] when it
    /// exits, at once with [`ExitReason::NoProc`] if it is already dead.
    pub fn monitor(&mut self, pid: Pid) -> MonitorRef {
        let mref = self.node.next_monitor_ref();
        self.monitors.insert(mref, pid);
        let watcher = Watcher::Process(self.sig.clone());
        self.node.add_monitor(pid, mref, watcher);
        mref
    }

    /// Removes a monitor; its DOWN will not be delivered, even if already queued.
    /// Returns `false` if the monitor had already fired or was unknown.
    pub fn demonitor(&mut self, mref: MonitorRef) -> bool {
        match self.monitors.remove(&mref) {
            Some(target) => {
                self.node.demonitor(target, mref);
                true
            }
            None => false,
        }
    }

    /// Spawns a process linked to this one (atomically, before its `init` runs).
    ///
    /// # Errors
    ///
    /// As for [`Node::spawn`].
    pub fn spawn_link<P: Process>(&self, p: P) -> Result<ProcessRef<P::Msg>, SpawnError> {
        let opts = SpawnOptions::default().link(self.pid());
        self.node.spawn_with(p, opts)
    }

    /// Accepts a DOWN only for a live monitor (then forgets it: exactly once).
    pub(crate) fn take_down(&mut self, down: &Down) -> bool {
        self.monitors.remove(&down.mref).is_some()
    }
}
