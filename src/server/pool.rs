//! Handler threads: where user code runs by default. Each connection (or datagram socket)
//! is bound to one thread, so its events are handled in order; a panic closes only that
//! connection.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::dispatch::{Handlers, Job};
use crate::reactor::stream::describe_panic;
use crate::supervise::{
    BoxError, ChildSpec, Context, Control, Handled, Node, Process, Restart, Strategy,
    SupervisorRef, SupervisorSpec,
};

/// What a handler thread's queue carries.
enum Work {
    /// A job of one key (a connection or datagram socket).
    Key(u64, Job),
    /// A closure (barriers).
    Run(Box<dyn FnOnce() + Send>),
    Stop,
}

/// The fixed pool of handler threads, each a supervised process.
///
/// Every handler thread is a child of one `OneForOne` supervisor on the runtime's
/// [`Node`]. The thread's job queue and its handlers (one per connection) belong to the
/// pool, not to the thread: when a handler panics, its connection is closed (1011 for a
/// WebSocket), the thread exits with the panic as its reason, and the supervisor starts a
/// fresh thread on the same queue and handlers. Other connections lose no queued event,
/// and the node's hook sees `Exited` and `Restarted`. With a per-message budget set on the
/// node, every job is timed and an overrun is reported as `OverBudget`.
pub(crate) struct HandlerPool {
    workers: Vec<Sender<Work>>,
    node: Node,
    supervisor: Mutex<Option<SupervisorRef>>,
}

/// One handler thread's queue and handlers, kept across restarts of the thread.
struct Lane {
    rx: Receiver<Work>,
    state: Mutex<Worker>,
}

/// The pump message: each one makes a handler process run one queued job.
pub(crate) struct Pump;

/// A handler thread as a process: one job per pump, then it pumps itself again.
struct LaneProcess {
    lane: Arc<Lane>,
}

impl Process for LaneProcess {
    type Msg = Pump;

    fn init(&mut self, ctx: &mut Context<Pump>) -> Result<(), BoxError> {
        ctx.me().send(Pump).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<Pump>, _: Pump) -> Handled {
        let job = match self.lane.rx.recv() {
            Ok(Work::Stop) | Err(_) => return Ok(Control::Stop),
            Ok(work) => work,
        };
        let mut worker = self.lane.state.lock().unwrap_or_else(|e| e.into_inner());
        worker.handle(job);
        if let Some(msg) = worker.failed.take() {
            return Err(format!("handler panicked: {msg}").into());
        }
        drop(worker);
        ctx.me().send(Pump).map_err(|e| e.to_string())?;
        Ok(Control::Continue)
    }
}

/// How long `stop` waits for each handler thread to finish its queue.
const STOP_WAIT: Duration = Duration::from_secs(30);

impl HandlerPool {
    pub(crate) fn new(
        threads: usize,
        name: &str,
        node: &Node,
    ) -> std::io::Result<Arc<HandlerPool>> {
        let mut workers = Vec::new();
        // Handler panics are per-connection faults: the pool restarts its threads without
        // limit rather than giving up on every connection.
        let mut spec =
            SupervisorSpec::new(Strategy::OneForOne).intensity(u32::MAX, Duration::from_secs(1));
        for i in 0..threads.max(1) {
            let (tx, rx) = crossbeam_channel::unbounded();
            workers.push(tx);
            let lane = Arc::new(Lane {
                rx,
                state: Mutex::new(Worker::default()),
            });
            let child = ChildSpec::worker(format!("{name}-handler-{i}"), move || LaneProcess {
                lane: lane.clone(),
            })
            .restart(Restart::Transient);
            spec = spec.child(child);
        }
        let supervisor = spec
            .start(node)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Arc::new(HandlerPool {
            workers,
            node: node.clone(),
            supervisor: Mutex::new(Some(supervisor)),
        }))
    }

    /// Sends a job to the thread that owns `key` (a connection or socket id).
    pub(crate) fn dispatch(&self, key: u64, job: Job) {
        let i = (key % self.workers.len() as u64) as usize;
        let _ = self.workers[i].send(Work::Key(key, job));
    }

    /// Stops every thread after the jobs already queued, waits for them (threads that
    /// panic meanwhile are restarted and finish the queue), then stops the supervisor.
    pub(crate) fn stop(&self) {
        let Some(sup) = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        for w in &self.workers {
            let _ = w.send(Work::Stop);
        }
        let deadline = std::time::Instant::now() + STOP_WAIT;
        while let Ok(children) = sup.which_children() {
            let Some(pid) = children.iter().find_map(|c| c.pid) else {
                break;
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || self.node.monitor(pid).recv_timeout(left).is_err() {
                log::warn!("handler threads did not finish their queues in {STOP_WAIT:?}");
                break;
            }
        }
        self.node.stop(sup.pid());
    }

    /// Waits until every job queued so far on every thread has run.
    pub(crate) fn barrier(&self) {
        let (tx, rx) = crossbeam_channel::bounded(self.workers.len());
        for w in &self.workers {
            let tx = tx.clone();
            let _ = w.send(Work::Run(Box::new(move || {
                let _ = tx.send(());
            })));
        }
        drop(tx);
        while rx.recv().is_ok() {}
    }
}

#[derive(Default)]
struct Worker {
    keys: HashMap<u64, Handlers>,
    /// A handler panicked during the last job: the thread is to be restarted.
    failed: Option<String>,
}

impl Worker {
    fn handle(&mut self, work: Work) {
        match work {
            Work::Key(key, job) => {
                let ran = self.keys.entry(key).or_default().run(job);
                if ran.finished {
                    self.keys.remove(&key);
                }
                self.failed = ran.panicked;
            }
            Work::Run(f) => {
                if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
                    let msg = describe_panic(&*p);
                    log::error!("handler-thread job panicked: {msg}");
                    self.failed = Some(msg);
                }
            }
            Work::Stop => {}
        }
    }
}
