//! The node: spawns processes, keeps the process table, names, links, monitors and the hook.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver};

use super::current;
use super::event::{log_event, Hook};
use super::mailbox::{Envelope, ProcShared, Sys};
use super::registry::{Entry, Registry, Removed, Watcher};
use super::runner::{panic_message, run, Boot};
use super::timer::Timers;
use super::{
    Context, Down, ExitReason, MonitorRef, NodeConfig, Pid, Process, ProcessRef, RegisterError,
    SendError, SpawnError, SpawnOptions, SystemEvent,
};

/// Addresses a process by pid or by registered name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// By pid.
    Pid(Pid),
    /// By registered name.
    Name(&'a str),
}

impl From<Pid> for Target<'_> {
    fn from(p: Pid) -> Self {
        Target::Pid(p)
    }
}

impl<'a> From<&'a str> for Target<'a> {
    fn from(n: &'a str) -> Self {
        Target::Name(n)
    }
}

impl<'a> From<&'a String> for Target<'a> {
    fn from(n: &'a String) -> Self {
        Target::Name(n)
    }
}

/// A set of processes sharing one pid space, name registry and monitor hook. Cloning is
/// cheap (an `Arc`); every clone is the same node.
///
/// # Examples
///
/// ```
/// use sockloop::supervise::{from_fn, Control, Node, SpawnOptions};
///
/// let node = Node::new();
/// let (tx, rx) = crossbeam_channel::bounded(1);
/// let opts = SpawnOptions::default().name("echo");
/// node.spawn_with(from_fn(move |_ctx, s: String| { tx.send(s)?; Ok(Control::Stop) }), opts)
///     .unwrap();
/// node.send("echo", "hi".to_owned()).unwrap();
/// assert_eq!(rx.recv().unwrap(), "hi");
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

pub(crate) struct NodeInner {
    next_id: AtomicU64,
    registry: Mutex<Registry>,
    hook: RwLock<Option<Hook>>,
    config: NodeConfig,
    timers: Arc<Timers>,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        self.timers.close();
    }
}

impl NodeInner {
    /// Logs the event and hands it to the hook; a panicking hook is contained and logged.
    pub(crate) fn emit(&self, e: &SystemEvent) {
        log_event(e);
        let hook = self.hook.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(h) = hook {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| h(e))) {
                log::error!("supervise: hook panicked: {}", panic_message(p.as_ref()));
            }
        }
    }

    fn reg(&self) -> MutexGuard<'_, Registry> {
        // No user code runs under this lock, so poisoning cannot leave it inconsistent.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({} processes)", self.process_count())
    }
}

impl Node {
    /// A node with [`NodeConfig::default`].
    pub fn new() -> Self {
        Node::with_config(NodeConfig::default())
    }

    /// A node with the given configuration.
    pub fn with_config(config: NodeConfig) -> Self {
        let timers = Timers::new(format!("{}-timer", config.thread_name));
        let inner = NodeInner {
            next_id: AtomicU64::new(1),
            registry: Mutex::new(Registry::default()),
            hook: RwLock::new(None),
            config,
            timers,
        };
        Node {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn timers(&self) -> &Arc<Timers> {
        &self.inner.timers
    }

    pub(crate) fn from_inner(inner: Arc<NodeInner>) -> Self {
        Node { inner }
    }

    /// Whether the target names a live process.
    pub(crate) fn is_target_alive(&self, to: Target<'_>) -> bool {
        self.is_alive(self.resolve(to))
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Spawns `p` on a new thread with default options and waits until its `init` returned.
    ///
    /// # Errors
    ///
    /// [`SpawnError::Init`] if `init` failed or panicked, [`SpawnError::Thread`] if the
    /// thread could not be created.
    pub fn spawn<P: Process>(&self, p: P) -> Result<ProcessRef<P::Msg>, SpawnError> {
        self.spawn_with(p, SpawnOptions::default())
    }

    /// Spawns `p` with options (name, link, mailbox capacity); waits for `init`.
    ///
    /// # Errors
    ///
    /// As for [`spawn`](Self::spawn), plus [`SpawnError::NameTaken`].
    pub fn spawn_with<P: Process>(
        &self,
        p: P,
        opts: SpawnOptions,
    ) -> Result<ProcessRef<P::Msg>, SpawnError> {
        let pid = Pid::new(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let cap = opts
            .mailbox_capacity
            .unwrap_or(self.inner.config.mailbox_capacity);
        let (tx, rx) = unbounded::<Envelope<P::Msg>>();
        let (urgent_tx, urgent) = unbounded();
        let shared = Arc::new(ProcShared::new(pid, cap, Arc::downgrade(&self.inner)));
        let me = ProcessRef::new(tx, Arc::clone(&shared));
        let sys = Sys {
            shared: Arc::clone(&shared),
            urgent: urgent_tx,
            ordered: Arc::new(me.sender().clone()),
        };
        self.enter(pid, &me, &sys, &opts)?;
        let (ack, ack_rx) = bounded(1);
        let ctx = Context::new(me.clone(), self.clone(), sys);
        let budget = self.inner.config.message_budget.filter(|_| !opts.no_budget);
        let boot = Boot {
            proc: p,
            ctx,
            rx,
            urgent,
            ack,
            budget,
            quiet: self.inner.config.quiet_panics,
        };
        // The spawner waits for `init` (marked before the thread starts): a call from
        // `init` back to it fails at once.
        let started: std::io::Result<_> = current::blocked_on(&shared, || {
            self.thread(pid).spawn(move || run(boot))?;
            Ok(ack_rx.recv())
        });
        match started {
            Err(e) => {
                self.inner.reg().remove(pid);
                Err(SpawnError::Thread(e.to_string()))
            }
            Ok(Ok(Ok(()))) => Ok(me),
            Ok(Ok(Err(reason))) => Err(SpawnError::Init(reason)),
            Ok(Err(_)) => Err(SpawnError::Init(ExitReason::Panic(
                "init did not report".into(),
            ))),
        }
    }

    /// Adds the table entry (and the link) before the thread starts.
    fn enter<M: Send + 'static>(
        &self,
        pid: Pid,
        me: &ProcessRef<M>,
        sys: &Sys,
        opts: &SpawnOptions,
    ) -> Result<(), SpawnError> {
        let entry = Entry {
            name: opts.name.clone(),
            sys: sys.clone(),
            user: Box::new(me.clone()),
            links: Vec::new(),
            monitors: Vec::new(),
        };
        let mut reg = self.inner.reg();
        reg.insert(pid, entry)?;
        if let Some(peer) = opts.link {
            if !reg.link(pid, peer) {
                drop(reg);
                sys.exit(peer, ExitReason::NoProc);
            }
        }
        Ok(())
    }

    fn thread(&self, pid: Pid) -> thread::Builder {
        let name = format!("{}-{}", self.inner.config.thread_name, pid.as_u64());
        let b = thread::Builder::new().name(name);
        match self.inner.config.stack_size {
            Some(s) => b.stack_size(s),
            None => b,
        }
    }

    /// Sends `msg` to a process by pid or name without blocking.
    ///
    /// This looks the process up in the node's table (a mutex); to send many messages, keep
    /// the [`ProcessRef`] from [`lookup`](Self::lookup) or `spawn`.
    ///
    /// # Errors
    ///
    /// [`SendError::NoProcess`] for a dead pid or unknown name, [`SendError::WrongType`] if
    /// the mailbox takes another type, and the errors of [`ProcessRef::send`].
    pub fn send<'a, M: Send + 'static>(
        &self,
        to: impl Into<Target<'a>>,
        msg: M,
    ) -> Result<(), SendError<M>> {
        match self.find::<M>(to.into()) {
            Ok(r) => r.send(msg),
            Err(Lookup::NoProcess) => Err(SendError::NoProcess(msg)),
            Err(Lookup::WrongType) => Err(SendError::WrongType(msg)),
        }
    }

    /// The typed sender of a live process, by pid or name; `None` if it is dead, unknown, or
    /// takes another message type.
    pub fn lookup<'a, M: Send + 'static>(
        &self,
        to: impl Into<Target<'a>>,
    ) -> Option<ProcessRef<M>> {
        self.find(to.into()).ok()
    }

    fn find<M: Send + 'static>(&self, to: Target<'_>) -> Result<ProcessRef<M>, Lookup> {
        let reg = self.inner.reg();
        let pid = match to {
            Target::Pid(p) => p,
            Target::Name(n) => reg.whereis(n).ok_or(Lookup::NoProcess)?,
        };
        let entry = reg.get(pid).ok_or(Lookup::NoProcess)?;
        let r = entry.user.downcast_ref::<ProcessRef<M>>();
        r.cloned().ok_or(Lookup::WrongType)
    }

    /// Registers `name` for `pid` (one name per process; freed when it exits).
    ///
    /// # Errors
    ///
    /// [`RegisterError::NameTaken`], [`RegisterError::AlreadyNamed`] or
    /// [`RegisterError::NoProcess`].
    pub fn register(&self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        self.inner.reg().register(name, pid)
    }

    /// Frees a name; returns the pid it named.
    pub fn unregister(&self, name: &str) -> Option<Pid> {
        self.inner.reg().unregister(name)
    }

    /// The pid registered under `name`.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.inner.reg().whereis(name)
    }

    /// Every registered name, sorted (`erlang:registered/0`).
    pub fn registered(&self) -> Vec<String> {
        self.inner.reg().names()
    }

    /// The pid a target names now; `<0>` (never a live process) for an unknown name.
    pub(crate) fn resolve(&self, to: Target<'_>) -> Pid {
        match to {
            Target::Pid(p) => p,
            Target::Name(n) => self.whereis(n).unwrap_or(Pid::new(0)),
        }
    }

    /// `true` while `pid` is in the process table (not yet exited or detached).
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.inner.reg().get(pid).is_some()
    }

    /// Number of live processes.
    pub fn process_count(&self) -> usize {
        self.inner.reg().len()
    }

    /// Asks a process to stop: its mailbox closes, [`Context::shutting_down`] turns true and
    /// a shutdown signal ends it after its current message with [`ExitReason::Shutdown`].
    /// Returns `false` if it was not alive. Does not wait; see [`monitor`](Self::monitor).
    pub fn stop(&self, pid: Pid) -> bool {
        let reg = self.inner.reg();
        let Some(e) = reg.get(pid) else {
            return false;
        };
        e.sys.shutdown();
        true
    }

    /// Sends an exit signal to `pid` as if a linked process had exited with `reason`
    /// (`erlang:exit/2`). A process that traps exits receives it in
    /// [`Process::handle_exit`](super::Process::handle_exit), in order with the messages
    /// from the same sender; any other process ends with `reason` after its current
    /// message, except that [`ExitReason::Normal`] is ignored. The sender is the calling
    /// process, or `<0>` when called from outside any process of this node. Returns
    /// `false` if `pid` was not alive.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sockloop::supervise::{from_fn, Control, ExitReason, Node};
    ///
    /// let node = Node::new();
    /// let p = node.spawn(from_fn(|_ctx, ()| Ok(Control::Continue))).unwrap();
    /// let down = node.monitor(p.pid());
    /// assert!(node.exit(p.pid(), ExitReason::Error("enough".into())));
    /// let d = down.recv_timeout(Duration::from_secs(5)).unwrap();
    /// assert_eq!(d.reason, ExitReason::Error("enough".into()));
    /// ```
    pub fn exit(&self, pid: Pid, reason: ExitReason) -> bool {
        let from = self.caller_pid().unwrap_or(Pid::new(0));
        self.exit_from(from, pid, reason)
    }

    pub(crate) fn exit_from(&self, from: Pid, pid: Pid, reason: ExitReason) -> bool {
        let sys = self.inner.reg().get(pid).map(|e| e.sys.clone());
        match sys {
            Some(sys) => {
                sys.exit(from, reason);
                true
            }
            None => false,
        }
    }

    /// The pid of the process of this node running on the calling thread.
    fn caller_pid(&self) -> Option<Pid> {
        current::pid_on(Arc::as_ptr(&self.inner))
    }

    /// The shared state of a live process.
    pub(crate) fn shared_of(&self, pid: Pid) -> Option<Arc<ProcShared>> {
        self.inner.reg().get(pid).map(|e| Arc::clone(&e.sys.shared))
    }

    /// Stops every process, one at a time, oldest first, and waits up to `timeout` in all;
    /// returns how many are still alive then (0 on a clean shutdown).
    ///
    /// A supervisor is older than its children, so it is stopped first and stops its tree
    /// in reverse start order itself; its children are gone by the time their turn comes.
    /// Processes that do not stop in time are left running (see
    /// [`ChildSpec`](super::ChildSpec) for the shutdown contract).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sockloop::supervise::{from_fn, Control, Node};
    ///
    /// let node = Node::new();
    /// node.spawn(from_fn(|_ctx, ()| Ok(Control::Continue))).unwrap();
    /// assert_eq!(node.shutdown(Duration::from_secs(5)), 0);
    /// ```
    pub fn shutdown(&self, timeout: Duration) -> usize {
        let deadline = Instant::now().checked_add(timeout);
        // A separate statement: the registry lock must be released before the loop.
        let pids = self.inner.reg().pids();
        for pid in pids {
            let down = self.monitor(pid);
            if !self.stop(pid) {
                continue;
            }
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if down.recv_timeout(left).is_err() {
                break;
            }
        }
        self.process_count()
    }

    /// Monitors a process by pid or registered name from outside any process: the channel
    /// receives exactly one [`Down`] (at once with [`ExitReason::NoProc`] if it is not
    /// alive; for an unknown name, with pid `<0>`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sockloop::supervise::{from_fn, Control, ExitReason, Node};
    ///
    /// let node = Node::new();
    /// let p = node.spawn(from_fn(|_ctx, (): ()| Ok(Control::Stop))).unwrap();
    /// let down = node.monitor(p.pid());
    /// p.send(()).unwrap();
    /// let d = down.recv_timeout(Duration::from_secs(5)).unwrap();
    /// assert_eq!(d.reason, ExitReason::Normal);
    /// ```
    pub fn monitor<'a>(&self, target: impl Into<Target<'a>>) -> Receiver<Down> {
        self.monitor_ref(self.resolve(target.into())).1
    }

    /// A monitor from outside any process, with its reference (for `demonitor`).
    pub(crate) fn monitor_ref(&self, pid: Pid) -> (MonitorRef, Receiver<Down>) {
        let (tx, rx) = bounded(1);
        let mref = self.next_monitor_ref();
        self.add_monitor(pid, mref, Watcher::Channel(tx));
        (mref, rx)
    }

    /// Sets the node-wide hook that receives every [`SystemEvent`] (replacing any previous
    /// one). It runs on the thread that caused the event: keep it short and non-blocking.
    /// Events are also logged through the `log` crate, hook or not.
    pub fn set_hook(&self, hook: impl Fn(&SystemEvent) + Send + Sync + 'static) {
        *self.inner.hook.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(hook));
    }

    /// Removes the hook.
    pub fn clear_hook(&self) {
        *self.inner.hook.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn emit(&self, e: &SystemEvent) {
        self.inner.emit(e);
    }

    pub(crate) fn name_of(&self, pid: Pid) -> Option<String> {
        self.inner.reg().get(pid).and_then(|e| e.name.clone())
    }

    pub(crate) fn next_monitor_ref(&self) -> MonitorRef {
        MonitorRef::new(self.inner.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn add_monitor(&self, target: Pid, mref: MonitorRef, w: Watcher) {
        let res = self.inner.reg().monitor(target, mref, w);
        if let Err(w) = res {
            w.deliver(Down {
                mref,
                pid: target,
                reason: ExitReason::NoProc,
            });
        }
    }

    pub(crate) fn demonitor(&self, target: Pid, mref: MonitorRef) {
        self.inner.reg().demonitor(target, mref);
    }

    pub(crate) fn link(&self, a: Pid, b: Pid) -> bool {
        self.inner.reg().link(a, b)
    }

    pub(crate) fn unlink(&self, a: Pid, b: Pid) {
        self.inner.reg().unlink(a, b);
    }

    /// Called by a process thread as it ends: removes it, reports, fires links and monitors.
    /// Nothing happens for a process that was detached before.
    pub(crate) fn exited(&self, pid: Pid, reason: ExitReason) {
        let removed = self.inner.reg().remove(pid);
        if let Some(removed) = removed {
            self.notify(pid, reason, removed);
        }
    }

    /// Disconnects a process that would not stop: it leaves the table (its later exit
    /// signals go nowhere), its mailbox closes, links and monitors fire with
    /// [`ExitReason::Detached`]. Its thread keeps running until it returns on its own.
    pub(crate) fn detach(&self, pid: Pid) -> bool {
        let removed = self.inner.reg().remove(pid);
        match removed {
            Some(removed) => {
                let shared = &removed.entry.sys.shared;
                shared.stopping.store(true, Ordering::Relaxed);
                shared.detached.store(true, Ordering::Relaxed);
                self.notify(pid, ExitReason::Detached, removed);
                true
            }
            None => false,
        }
    }

    fn notify(&self, pid: Pid, reason: ExitReason, removed: Removed) {
        let Removed { entry, linked } = removed;
        entry.sys.shared.closed.store(true, Ordering::Release);
        self.emit(&SystemEvent::Exited {
            pid,
            reason: reason.clone(),
        });
        for sys in linked {
            sys.exit(pid, reason.clone());
        }
        for (mref, w) in entry.monitors {
            w.deliver(Down {
                mref,
                pid,
                reason: reason.clone(),
            });
        }
    }
}

enum Lookup {
    NoProcess,
    WrongType,
}
