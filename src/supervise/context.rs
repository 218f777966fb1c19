//! The context a handler sees: its own pid and sender, the node, links, monitors, trapping.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::mailbox::Sys;
use super::registry::Watcher;
use super::{
    Down, ExitReason, MonitorRef, Node, Pid, Process, ProcessRef, SpawnError, SpawnOptions, Target,
    TimerRef,
};

/// What a handler can do besides handling: see itself, reach the node, link, monitor.
/// Lives on the process's thread; not shared.
pub struct Context<M> {
    me: ProcessRef<M>,
    node: Node,
    sys: Sys,
    trap: bool,
    monitors: HashMap<MonitorRef, Pid>,
    receive_timeout: Option<Duration>,
}

impl<M: Send + 'static> Context<M> {
    pub(crate) fn new(me: ProcessRef<M>, node: Node, sys: Sys) -> Self {
        Context {
            me,
            node,
            sys,
            trap: false,
            monitors: HashMap::new(),
            receive_timeout: None,
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
        self.me.shared().trap.store(on, Ordering::Release);
    }

    /// Whether exits are trapped.
    pub fn traps_exit(&self) -> bool {
        self.trap
    }

    /// Links this process with `pid` (both ways). If `pid` is already dead, an exit signal
    /// with [`ExitReason::NoProc`] arrives at once (ending this process unless trapping).
    pub fn link(&mut self, pid: Pid) {
        if !self.node.link(self.pid(), pid) {
            self.sys.exit(pid, ExitReason::NoProc);
        }
    }

    /// Removes a link (no effect if there is none).
    pub fn unlink(&mut self, pid: Pid) {
        self.node.unlink(self.pid(), pid);
    }

    /// Monitors a process by pid or registered name (a name is resolved now, as in OTP
    /// the monitor follows that process, not later holders of the name): exactly one
    /// [`Down`] arrives in [`Process::handle_down`] when it exits, after every message it
    /// sent to this process before. It arrives at once with [`ExitReason::NoProc`] if the
    /// process is already dead (for an unknown name, with pid `<0>`).
    pub fn monitor<'a>(&mut self, target: impl Into<Target<'a>>) -> MonitorRef {
        let pid = self.node.resolve(target.into());
        let mref = self.node.next_monitor_ref();
        self.monitors.insert(mref, pid);
        let watcher = Watcher::Process(self.sys.clone());
        self.node.add_monitor(pid, mref, watcher);
        mref
    }

    /// Sends an exit signal to `pid` from this process, as if a linked process had exited
    /// with `reason` (`erlang:exit/2`); see [`Node::exit`].
    pub fn exit(&self, pid: Pid, reason: ExitReason) -> bool {
        self.node.exit_from(self.pid(), pid, reason)
    }

    /// Sends `msg` to this process after `after`, from the node's timer thread; see
    /// [`Node::send_after`].
    pub fn send_after(&self, after: Duration, msg: M) -> TimerRef {
        self.node.send_after(&self.me, after, msg)
    }

    /// Sends a clone of `msg` to this process every `every`; see [`Node::send_interval`].
    pub fn send_interval(&self, every: Duration, msg: M) -> TimerRef
    where
        M: Clone,
    {
        self.node.send_interval(&self.me, every, msg)
    }

    /// Sets (or with `None` clears) the receive timeout: after `timeout` without any
    /// message, [`Process::handle_timeout`] runs, and again after each further quiet
    /// `timeout`. Measured by the process's own wait: no timer, no thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sockloop::supervise::{Context, Control, Handled, Node, Process};
    ///
    /// struct Idle(crossbeam_channel::Sender<()>);
    /// impl Process for Idle {
    ///     type Msg = ();
    ///     fn init(&mut self, ctx: &mut Context<()>) -> Result<(), sockloop::supervise::BoxError> {
    ///         ctx.set_receive_timeout(Some(Duration::from_millis(10)));
    ///         Ok(())
    ///     }
    ///     fn handle(&mut self, _ctx: &mut Context<()>, _: ()) -> Handled {
    ///         Ok(Control::Continue)
    ///     }
    ///     fn handle_timeout(&mut self, _ctx: &mut Context<()>) -> Handled {
    ///         self.0.send(())?;
    ///         Ok(Control::Stop)
    ///     }
    /// }
    ///
    /// let node = Node::new();
    /// let (tx, rx) = crossbeam_channel::bounded(1);
    /// node.spawn(Idle(tx)).unwrap();
    /// rx.recv_timeout(Duration::from_secs(5)).unwrap();
    /// ```
    pub fn set_receive_timeout(&mut self, timeout: Option<Duration>) {
        self.receive_timeout = timeout;
    }

    /// The receive timeout, if set.
    pub fn receive_timeout(&self) -> Option<Duration> {
        self.receive_timeout
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
