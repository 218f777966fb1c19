//! Supervisor and child specifications: strategies, restart types, shutdown timeouts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::supervisor::Supervisor;
use super::{Intensity, Node, Pid, Process, SpawnError, SpawnOptions};

/// Which children a supervisor restarts when one exits and must be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the child that exited (default).
    #[default]
    OneForOne,
    /// All children: the others are stopped in reverse start order, then all start again
    /// in start order.
    OneForAll,
    /// The child that exited and every child started after it (stopped in reverse order,
    /// restarted in start order).
    RestForOne,
}

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always (default).
    #[default]
    Permanent,
    /// Only after an abnormal exit ([`ExitReason::is_abnormal`](super::ExitReason::is_abnormal)).
    Transient,
    /// Never; the child's spec is removed when it exits.
    Temporary,
}

/// Whether a child is a worker or a supervisor (changes the default shutdown timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// A worker process.
    Worker,
    /// A nested supervisor.
    Supervisor,
}

/// Starts one instance of a child linked to its supervisor; called again on every restart.
pub(crate) type StartFn = Arc<dyn Fn(&Node, SpawnOptions) -> Result<Pid, SpawnError> + Send + Sync>;

/// How to start, restart and stop one child.
///
/// Shutdown: threads cannot be killed. To stop a child its supervisor closes its mailbox,
/// sets [`Context::shutting_down`](super::Context::shutting_down) and sends a shutdown signal
/// (taken after the current message), then waits up to the shutdown timeout. A child still
/// running then is **detached**: removed from the node (its mailbox stays closed; its
/// links and monitors fire with [`ExitReason::Detached`](super::ExitReason::Detached); its
/// own later exit signals are dropped), reported as
/// [`SystemEvent::ChildDetached`](super::SystemEvent::ChildDetached), and replaced by a
/// fresh instance if it is restarted. Its thread runs on until its handler returns.
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) id: String,
    pub(crate) start: StartFn,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Duration,
    pub(crate) kind: ChildKind,
    pub(crate) name: Option<String>,
    /// Restart delay: the first one and the maximum (`None`: restart at once).
    pub(crate) backoff: Option<(Duration, Duration)>,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl ChildSpec {
    /// A permanent worker made by `factory` (called once per start), with a 5 s shutdown
    /// timeout.
    pub fn worker<P, F>(id: impl Into<String>, factory: F) -> Self
    where
        P: Process,
        F: Fn() -> P + Send + Sync + 'static,
    {
        let start: StartFn =
            Arc::new(move |node, opts| node.spawn_with(factory(), opts).map(|r| r.pid()));
        ChildSpec {
            id: id.into(),
            start,
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            kind: ChildKind::Worker,
            name: None,
            backoff: None,
        }
    }

    /// A permanent nested supervisor built from `spec`, with an unbounded shutdown timeout
    /// (its own children's timeouts bound it).
    pub fn supervisor(id: impl Into<String>, spec: SupervisorSpec) -> Self {
        let start: StartFn = Arc::new(move |node, mut opts| {
            spec.validate()?;
            opts.no_budget = true;
            let sup = Supervisor::new(spec.clone(), opts.link, node);
            node.spawn_with(sup, opts).map(|r| r.pid())
        });
        ChildSpec {
            id: id.into(),
            start,
            restart: Restart::Permanent,
            shutdown: Duration::MAX,
            kind: ChildKind::Supervisor,
            name: None,
            backoff: None,
        }
    }

    /// Sets the restart type (default [`Restart::Permanent`]).
    pub fn restart(mut self, r: Restart) -> Self {
        self.restart = r;
        self
    }

    /// Sets the shutdown timeout (default 5 s for workers, `Duration::MAX` for supervisors).
    pub fn shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = timeout;
        self
    }

    /// Delays each restart of this child (default: none, restart at once): `first`, then
    /// twice as long for each further restart in a row, up to `max`; a child that ran for
    /// at least `max` starts over from `first`. The restart's group (by the supervisor's
    /// strategy) is stopped at once and started again after the delay, from the node's
    /// timer thread; the supervisor answers calls meanwhile, and the restart still counts
    /// toward its intensity when it is decided. A zero `first` means no delay.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sockloop::supervise::{from_fn, ChildSpec, Control};
    ///
    /// let spec = ChildSpec::worker("flaky", || from_fn(|_ctx, ()| Ok(Control::Continue)))
    ///     .restart_delay(Duration::from_millis(100), Duration::from_secs(10));
    /// # drop(spec);
    /// ```
    pub fn restart_delay(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (!first.is_zero()).then_some((first, max.max(first)));
        self
    }

    /// Registers every instance under `name`, so others reach the current one by name.
    pub fn register_as(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The child's id, unique within its supervisor.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A supervisor: strategy, restart intensity and children in start order.
///
/// # Examples
///
/// ```
/// use sockloop::supervise::{from_fn, ChildSpec, Control, Node, Strategy, SupervisorSpec};
///
/// let node = Node::new();
/// let sup = SupervisorSpec::new(Strategy::OneForOne)
///     .child(ChildSpec::worker("echo", || from_fn(|_ctx, _m: u8| Ok(Control::Continue)))
///         .register_as("echo"))
///     .start(&node)
///     .unwrap();
/// assert_eq!(sup.which_children().unwrap().len(), 1);
/// node.send("echo", 7u8).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct SupervisorSpec {
    pub(crate) strategy: Strategy,
    pub(crate) intensity: Intensity,
    pub(crate) children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// An empty spec with `strategy` and the default [`Intensity`] (3 restarts in 5 s).
    pub fn new(strategy: Strategy) -> Self {
        SupervisorSpec {
            strategy,
            ..SupervisorSpec::default()
        }
    }

    /// Sets the restart intensity: at most `max_restarts` within `period`. A zero
    /// `period` is rejected when the supervisor starts ([`SpawnError::InvalidSpec`]).
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Intensity {
            max_restarts,
            period,
        };
        self
    }

    /// Appends a child (children start in the order added, stop in reverse).
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }
}
