//! The supervisor process and its handle.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::children::{ChildCount, ChildInfo, Children};
use super::intensity::RestartWindow;
use super::{
    BoxError, CallError, ChildSpec, Context, Control, ExitReason, Handled, Intensity, Node, Pid,
    Process, ProcessRef, ReplyTo, Restart, SpawnError, SpawnOptions, Strategy, SupervisorError,
    SupervisorSpec, SystemEvent,
};

/// The default timeout of supervisor calls ([`SupervisorRef::with_timeout`]).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A request to a supervisor (opaque; use [`SupervisorRef`]).
pub struct SupervisorMsg(Request);

type Reply<T> = ReplyTo<Result<T, SupervisorError>>;

enum Request {
    Start(ChildSpec, Reply<Pid>),
    Terminate(String, Reply<()>),
    Restart(String, Reply<Pid>),
    Delete(String, Reply<()>),
    Which(ReplyTo<Vec<ChildInfo>>),
    Count(ReplyTo<ChildCount>),
    Spec(String, Reply<ChildSpec>),
    /// A delayed restart is due: these children (id, the instance that ran before).
    Resume(Vec<(String, Option<Pid>)>),
}

/// A supervisor as a process: traps exits, restarts children by strategy and intensity.
pub(crate) struct Supervisor {
    spec: SupervisorSpec,
    parent: Option<Pid>,
    window: RestartWindow,
    children: Children,
}

impl Supervisor {
    pub(crate) fn new(spec: SupervisorSpec, parent: Option<Pid>, node: &Node) -> Self {
        let window = RestartWindow::new(spec.intensity);
        Supervisor {
            spec,
            parent,
            window,
            children: Children::new(node.clone()),
        }
    }

    fn kids(&mut self) -> &mut Children {
        &mut self.children
    }
}

impl Process for Supervisor {
    type Msg = SupervisorMsg;

    fn init(&mut self, ctx: &mut Context<SupervisorMsg>) -> Result<(), BoxError> {
        ctx.trap_exit(true);
        let kids = &mut self.children;
        kids.set_supervisor(ctx.pid());
        for spec in std::mem::take(&mut self.spec.children) {
            if kids.position(&spec.id).is_some() {
                kids.stop_group(0..kids.list.len());
                return Err(format!("duplicate child id {:?}", spec.id).into());
            }
            let id = spec.id.clone();
            kids.push(spec);
            if let Err(e) = kids.start(kids.list.len() - 1) {
                kids.stop_group(0..kids.list.len());
                return Err(format!("child {id:?} failed to start: {e}").into());
            }
        }
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<SupervisorMsg>, msg: SupervisorMsg) -> Handled {
        // A caller that gave up waiting is not an error: replies are best effort.
        match msg.0 {
            Request::Resume(pending) => return self.resume(ctx, pending),
            Request::Start(spec, reply) => drop(reply.reply(self.start_child(spec))),
            Request::Terminate(id, reply) => drop(reply.reply(self.terminate_child(&id))),
            Request::Restart(id, reply) => drop(reply.reply(self.restart_child(&id))),
            Request::Delete(id, reply) => drop(reply.reply(self.delete_child(&id))),
            Request::Which(reply) => drop(reply.reply(self.kids().info())),
            Request::Count(reply) => drop(reply.reply(self.kids().count())),
            Request::Spec(id, reply) => drop(reply.reply(self.kids().spec(&id))),
        }
        Ok(Control::Continue)
    }

    fn handle_exit(
        &mut self,
        ctx: &mut Context<SupervisorMsg>,
        from: Pid,
        reason: ExitReason,
    ) -> Handled {
        match self.kids().position_pid(from) {
            Some(i) => self.on_child_exit(ctx, i, reason),
            // The parent's exit, whatever its reason, ends the supervisor and its tree.
            None if self.parent == Some(from) => Ok(Control::Exit(reason)),
            None => {
                log::debug!("supervise: {} ignores exit of {from} ({reason})", ctx.pid());
                Ok(Control::Continue)
            }
        }
    }

    fn terminate(&mut self, _ctx: &mut Context<SupervisorMsg>, _reason: &ExitReason) {
        let kids = &mut self.children;
        kids.stop_group(0..kids.list.len());
    }
}

impl Supervisor {
    fn on_child_exit(
        &mut self,
        ctx: &Context<SupervisorMsg>,
        i: usize,
        reason: ExitReason,
    ) -> Handled {
        let kids = self.kids();
        let old = kids.list[i].pid.take();
        let restart = match kids.list[i].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => reason.is_abnormal(),
            Restart::Temporary => false,
        };
        if !restart {
            kids.drop_stopped_temporaries();
            return Ok(Control::Continue);
        }
        if !self.window.record(Instant::now()) {
            return Ok(self.escalate(ctx));
        }
        let delay = self.kids().next_delay(i, Instant::now());
        let group = self.group(i);
        let mut olds = self.kids().stop_group(group.clone());
        olds[i] = old;
        if delay.is_zero() {
            return self.restart_group(ctx, group, &olds);
        }
        // Restart later (the child's backoff); meanwhile the group is stopped.
        let kids = self.kids();
        let pending = group
            .filter(|&j| kids.list[j].spec.restart != Restart::Temporary)
            .map(|j| (kids.list[j].spec.id.clone(), olds[j]))
            .collect();
        kids.drop_stopped_temporaries();
        ctx.send_after(delay, SupervisorMsg(Request::Resume(pending)));
        Ok(Control::Continue)
    }

    /// A delayed restart: starts the children still in the table and not running.
    fn resume(
        &mut self,
        ctx: &Context<SupervisorMsg>,
        pending: Vec<(String, Option<Pid>)>,
    ) -> Handled {
        for (id, old) in pending {
            let Some(j) = self.kids().position(&id) else {
                continue; // deleted meanwhile
            };
            if self.kids().list[j].pid.is_some() {
                continue; // restarted by hand meanwhile
            }
            if let Some(c) = self.restart_one(ctx, j, old) {
                return Ok(c);
            }
        }
        Ok(Control::Continue)
    }

    fn group(&mut self, i: usize) -> Range<usize> {
        let len = self.kids().list.len();
        match self.spec.strategy {
            Strategy::OneForOne => i..i + 1,
            Strategy::OneForAll => 0..len,
            Strategy::RestForOne => i..len,
        }
    }

    /// Starts again, in start order, every non-temporary child of `group`: as in OTP, also
    /// children that were not running (stopped with `terminate_child`, or transient
    /// children that had ended normally).
    fn restart_group(
        &mut self,
        ctx: &Context<SupervisorMsg>,
        group: Range<usize>,
        olds: &[Option<Pid>],
    ) -> Handled {
        for j in group {
            if self.kids().list[j].spec.restart == Restart::Temporary {
                continue;
            }
            if let Some(c) = self.restart_one(ctx, j, olds[j]) {
                return Ok(c);
            }
        }
        self.kids().drop_stopped_temporaries();
        Ok(Control::Continue)
    }

    /// Restarts child `j`, retrying failed starts while the intensity allows. A restart
    /// of a child that was running is reported as `Restarted`.
    fn restart_one(
        &mut self,
        ctx: &Context<SupervisorMsg>,
        j: usize,
        old: Option<Pid>,
    ) -> Option<Control> {
        loop {
            match self.kids().start(j) {
                Ok(new) => {
                    let old = old?; // not running before: a start, not a restart
                    let child = self.kids().list[j].spec.id.clone();
                    let supervisor = ctx.pid();
                    ctx.node().emit(&SystemEvent::Restarted {
                        supervisor,
                        child,
                        old,
                        new,
                    });
                    return None;
                }
                Err(e) => {
                    log::warn!("supervise: {} failed to restart a child: {e}", ctx.pid());
                    if !self.window.record(Instant::now()) {
                        return Some(self.escalate(ctx));
                    }
                }
            }
        }
    }

    fn escalate(&self, ctx: &Context<SupervisorMsg>) -> Control {
        let Intensity {
            max_restarts,
            period,
        } = self.spec.intensity;
        let supervisor = ctx.pid();
        ctx.node().emit(&SystemEvent::SupervisorEscalated {
            supervisor,
            max_restarts,
            period,
        });
        Control::Exit(ExitReason::IntensityExceeded)
    }

    fn start_child(&mut self, spec: ChildSpec) -> Result<Pid, SupervisorError> {
        let kids = self.kids();
        if kids.position(&spec.id).is_some() {
            return Err(SupervisorError::AlreadyExists(spec.id));
        }
        kids.push(spec);
        let i = kids.list.len() - 1;
        kids.start(i).map_err(|e| {
            kids.list.pop();
            SupervisorError::Start(e)
        })
    }

    fn terminate_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let kids = self.kids();
        let i = kids
            .position(id)
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))?;
        kids.stop_group(i..i + 1);
        kids.drop_stopped_temporaries();
        Ok(())
    }

    /// The index of child `id`, which must exist and not be running.
    fn stopped_child(&mut self, id: &str) -> Result<usize, SupervisorError> {
        let kids = self.kids();
        let i = kids
            .position(id)
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))?;
        if kids.list[i].pid.is_some() {
            return Err(SupervisorError::Running(id.to_owned()));
        }
        Ok(i)
    }

    fn restart_child(&mut self, id: &str) -> Result<Pid, SupervisorError> {
        let i = self.stopped_child(id)?;
        self.kids().start(i).map_err(SupervisorError::Start)
    }

    fn delete_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let i = self.stopped_child(id)?;
        self.kids().list.remove(i);
        Ok(())
    }
}

impl SupervisorSpec {
    /// Starts a top-level supervisor: its children start in order before this returns.
    ///
    /// # Errors
    ///
    /// [`SpawnError::Init`] if a child failed to start (the ones already started were
    /// stopped in reverse order) or two children share an id.
    pub fn start(self, node: &Node) -> Result<SupervisorRef, SpawnError> {
        self.start_with(node, SpawnOptions::default())
    }

    /// As [`start`](Self::start), with spawn options (a name, or a link to a parent
    /// process whose abnormal exit then stops this supervisor).
    ///
    /// # Errors
    ///
    /// As for [`start`](Self::start), plus [`SpawnError::NameTaken`].
    pub fn start_with(self, node: &Node, opts: SpawnOptions) -> Result<SupervisorRef, SpawnError> {
        self.validate()?;
        let mut opts = opts;
        opts.no_budget = true;
        let sup = Supervisor::new(self, opts.link, node);
        node.spawn_with(sup, opts).map(|inner| SupervisorRef {
            inner,
            timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    /// Rejects what cannot work: a zero intensity period (no restart would ever be
    /// counted, so the limit would never apply) and duplicate child ids.
    pub(crate) fn validate(&self) -> Result<(), SpawnError> {
        if self.intensity.period.is_zero() {
            return Err(SpawnError::InvalidSpec(
                "the intensity period must be longer than zero".into(),
            ));
        }
        for (i, c) in self.children.iter().enumerate() {
            if self.children[..i].iter().any(|d| d.id == c.id) {
                return Err(SpawnError::InvalidSpec(format!(
                    "duplicate child id {:?}",
                    c.id
                )));
            }
        }
        Ok(())
    }
}

/// A cloneable handle to a running supervisor.
///
/// Calls block until the supervisor answered or the handle's timeout passed (default
/// [`DEFAULT_CALL_TIMEOUT`], set with [`with_timeout`](Self::with_timeout)); the
/// supervisor answers between restarts and may be busy waiting for children to stop (up
/// to their shutdown timeouts). A call that could never be answered fails at once with
/// [`SupervisorError::Deadlock`]: from the supervisor's own thread (a node hook it
/// triggers, a factory it runs), from a child's `init` (the supervisor waits for it), or
/// from a child it is stopping.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sockloop::supervise::{from_fn, ChildSpec, Control, Node, Strategy, SupervisorSpec};
///
/// let node = Node::new();
/// let sup = SupervisorSpec::new(Strategy::OneForOne)
///     .child(ChildSpec::worker("w", || from_fn(|_ctx, ()| Ok(Control::Continue))))
///     .start(&node)
///     .unwrap()
///     .with_timeout(Duration::from_secs(1));
/// let count = sup.count_children().unwrap();
/// assert_eq!((count.specs, count.active, count.workers), (1, 1, 1));
/// assert_eq!(sup.get_childspec("w").unwrap().id(), "w");
/// ```
#[derive(Clone, Debug)]
pub struct SupervisorRef {
    inner: ProcessRef<SupervisorMsg>,
    timeout: Duration,
}

impl SupervisorRef {
    /// The handle of the supervisor `pid` (e.g. a nested one from `which_children`);
    /// `None` if it is not a live supervisor.
    pub fn from_pid(node: &Node, pid: Pid) -> Option<SupervisorRef> {
        node.lookup(pid).map(|inner| SupervisorRef {
            inner,
            timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    /// This handle with another call timeout (`Duration::MAX`: wait as long as it takes).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> Pid {
        self.inner.pid()
    }

    /// Adds a child at the end of the start order and starts it.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::AlreadyExists`], [`SupervisorError::Start`] (the spec is not
    /// kept), and the errors of every call: [`SupervisorError::NoProcess`],
    /// [`SupervisorError::Timeout`], [`SupervisorError::Deadlock`].
    pub fn start_child(&self, spec: ChildSpec) -> Result<Pid, SupervisorError> {
        self.call(|tx| Request::Start(spec, tx))?
    }

    /// Stops a child (shutdown, timeout, detach) and keeps its spec, except for temporary
    /// children whose spec is removed. Stopping a stopped child succeeds.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::NotFound`], and the errors of every call.
    pub fn terminate_child(&self, id: &str) -> Result<(), SupervisorError> {
        self.call(|tx| Request::Terminate(id.to_owned(), tx))?
    }

    /// Starts a stopped child again from its spec.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::NotFound`], [`SupervisorError::Running`],
    /// [`SupervisorError::Start`], and the errors of every call.
    pub fn restart_child(&self, id: &str) -> Result<Pid, SupervisorError> {
        self.call(|tx| Request::Restart(id.to_owned(), tx))?
    }

    /// Removes a stopped child's spec.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::NotFound`], [`SupervisorError::Running`], and the errors of
    /// every call.
    pub fn delete_child(&self, id: &str) -> Result<(), SupervisorError> {
        self.call(|tx| Request::Delete(id.to_owned(), tx))?
    }

    /// The children in start order.
    ///
    /// # Errors
    ///
    /// The errors of every call ([`start_child`](Self::start_child)).
    pub fn which_children(&self) -> Result<Vec<ChildInfo>, SupervisorError> {
        self.call(Request::Which)
    }

    /// How many children there are, running and by kind (`supervisor:count_children/1`).
    ///
    /// # Errors
    ///
    /// The errors of every call ([`start_child`](Self::start_child)).
    pub fn count_children(&self) -> Result<ChildCount, SupervisorError> {
        self.call(Request::Count)
    }

    /// A copy of a child's spec (`supervisor:get_childspec/2`).
    ///
    /// # Errors
    ///
    /// [`SupervisorError::NotFound`], and the errors of every call.
    pub fn get_childspec(&self, id: &str) -> Result<ChildSpec, SupervisorError> {
        self.call(|tx| Request::Spec(id.to_owned(), tx))?
    }

    fn call<T: Send + 'static>(
        &self,
        req: impl FnOnce(ReplyTo<T>) -> Request,
    ) -> Result<T, SupervisorError> {
        let make = |tx| SupervisorMsg(req(tx));
        self.inner.call(make, self.timeout).map_err(|e| match e {
            CallError::Timeout => SupervisorError::Timeout,
            CallError::Deadlock => SupervisorError::Deadlock,
            _ => SupervisorError::NoProcess,
        })
    }
}
