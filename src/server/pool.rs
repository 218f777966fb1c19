//! Handler threads: where user code runs by default. Each connection (or datagram socket)
//! has its jobs handled in order, by one thread at a time; any idle thread takes the next
//! key with work; the pool grows while every thread is blocked and shrinks when idle.
//!
//! Parts: [`sched`] (the per-key mailboxes, the ready queue, the idle threads), [`lane`]
//! (one handler thread as a supervised process), [`manager`] (the thread that grows and
//! shrinks the pool).

mod lane;
mod manager;
mod sched;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::lane::Lane;
use self::manager::{Bell, Manager};
use self::sched::{Scheduler, Work};
use super::dispatch::Job;
use crate::supervise::{
    ChildSpec, Node, Restart, SpawnOptions, Strategy, SupervisorRef, SupervisorSpec,
};

/// How the pool sizes itself (set through [`RuntimeBuilder`](crate::RuntimeBuilder)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolConfig {
    /// Threads started with the pool and kept when idle (at least 1).
    pub(crate) min: usize,
    /// Threads the pool may grow to (at least `min`).
    pub(crate) max: usize,
    /// How long every thread must be in one job while keys wait before the pool grows.
    pub(crate) grow_after: Duration,
    /// How long a thread above the minimum may stay idle before it is stopped.
    pub(crate) idle_timeout: Duration,
}

/// The elastic pool of handler threads, each a supervised process.
///
/// Every handler thread is a child of one `OneForOne` supervisor on the runtime's
/// [`Node`], registered as `<name>-handlers`; its children are `<name>-handler-<n>`. Jobs
/// wait in their key's mailbox; a key with jobs is in a ready queue or held by one thread,
/// which runs up to [`sched::BATCH`] of its jobs before another waiting key goes first.
/// When a handler panics, its connection is closed (1011 for a WebSocket), the key goes
/// back to the ready queue with its remaining jobs, the thread exits with the panic as its
/// reason and the supervisor starts a fresh one: other keys lose nothing, and the node's
/// hook sees `Exited` and `Restarted`. With a per-message budget on the node, each job is
/// timed on its own (an idle thread is parked outside any job) and an overrun is reported
/// as `OverBudget`.
pub(crate) struct HandlerPool {
    sched: Arc<Scheduler>,
    node: Node,
    supervisor: Mutex<Option<SupervisorRef>>,
    manager: Mutex<Option<JoinHandle<()>>>,
    bell: Arc<Bell>,
}

/// How long `stop` waits for the queued jobs to run.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The child spec of handler thread `i`.
fn lane_spec(sched: &Arc<Scheduler>, name: &str, i: usize) -> ChildSpec {
    let id: Arc<str> = format!("{name}-handler-{i}").into();
    let sched = sched.clone();
    let lane_id = id.clone();
    ChildSpec::worker(&*id, move || Lane::new(sched.clone(), lane_id.clone()))
        .restart(Restart::Transient)
}

/// Starts the supervisor, registered under `<name>-handlers` when that name is free.
fn start_supervisor(
    spec: SupervisorSpec,
    name: &str,
    node: &Node,
) -> std::io::Result<SupervisorRef> {
    let opts = SpawnOptions::default().name(format!("{name}-handlers"));
    let sup = match spec.clone().start_with(node, opts) {
        Err(crate::supervise::SpawnError::NameTaken(_)) => spec.start(node),
        other => other,
    };
    sup.map_err(|e| std::io::Error::other(e.to_string()))
}

impl HandlerPool {
    pub(crate) fn new(
        cfg: PoolConfig,
        name: &str,
        node: &Node,
    ) -> std::io::Result<Arc<HandlerPool>> {
        let bell = Arc::new(Bell::default());
        let sched = Arc::new(Scheduler::new(bell.clone()));
        // Handler panics are per-connection faults: the pool restarts its threads without
        // limit rather than giving up on every connection.
        let mut spec =
            SupervisorSpec::new(Strategy::OneForOne).intensity(u32::MAX, Duration::from_secs(1));
        for i in 0..cfg.min {
            spec = spec.child(lane_spec(&sched, name, i));
        }
        let sup = start_supervisor(spec, name, node)?;
        let (s, prefix, mut next) = (sched.clone(), name.to_owned(), cfg.min);
        let spawn = Box::new(move |sup: &SupervisorRef| {
            let spec = lane_spec(&s, &prefix, next);
            next += 1;
            if let Err(e) = sup.start_child(spec) {
                log::warn!("handler pool: cannot start a thread: {e}");
            }
        });
        let manager = Manager {
            sched: sched.clone(),
            sup: sup.clone(),
            cfg,
            bell: bell.clone(),
            spawn,
        };
        let thread = std::thread::Builder::new()
            .name(format!("{name}-pool"))
            .spawn(move || manager.run())?;
        Ok(Arc::new(HandlerPool {
            sched,
            node: node.clone(),
            supervisor: Mutex::new(Some(sup)),
            manager: Mutex::new(Some(thread)),
            bell,
        }))
    }

    /// Queues a job of `key` (a connection or socket id).
    pub(crate) fn dispatch(&self, key: u64, job: Job) {
        self.sched.push(key, Work::Job(job));
    }

    /// Runs the jobs already queued (threads that panic meanwhile are restarted and go
    /// on), for at most `STOP_WAIT`; then stops the pool's manager, threads and supervisor.
    pub(crate) fn stop(&self) {
        let Some(sup) = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        if !self.drain(Some(Instant::now() + STOP_WAIT)) {
            log::warn!("handler threads did not finish their queues in {STOP_WAIT:?}");
        }
        self.bell.stop();
        let manager = self
            .manager
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(m) = manager {
            let _ = m.join();
        }
        self.node.stop(sup.pid());
    }

    /// Waits until every job queued so far has run.
    pub(crate) fn barrier(&self) {
        self.drain(None);
    }

    /// Waits until every job queued so far has run, or `until`; `false` on timeout.
    fn drain(&self, until: Option<Instant>) -> bool {
        let (tx, rx) = crossbeam_channel::unbounded();
        let marks = self.sched.mark_all(&tx);
        drop(tx);
        for _ in 0..marks {
            let got = match until {
                Some(t) => rx.recv_deadline(t).map_err(|e| e.is_timeout()),
                None => rx.recv().map_err(|_| false),
            };
            match got {
                Ok(()) => {}
                Err(timeout) => return !timeout,
            }
        }
        true
    }
}
