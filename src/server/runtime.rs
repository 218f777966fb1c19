//! The runtime: a fixed pool of poller threads and an elastic, supervised pool of handler
//! threads, on which servers run.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::reactor::poller::{new_poller, Poller};
use crate::reactor::{Command, PollerShared};
use crate::server::pool::{HandlerPool, PoolConfig};
use crate::server::{shutdown_server, Listen, ServerBuilder, ServerShared};
use crate::supervise::{Node, NodeConfig};
use crate::Result;

/// Configures and starts a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    pollers: usize,
    handler_threads: usize,
    max_handler_threads: Option<usize>,
    handler_grow_after: Duration,
    handler_idle_timeout: Duration,
    name: String,
    node: Option<NodeConfig>,
    handler_budget: Option<Duration>,
    memory_budget: usize,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            pollers: cores(),
            handler_threads: cores(),
            max_handler_threads: None,
            handler_grow_after: Duration::from_millis(5),
            handler_idle_timeout: Duration::from_secs(10),
            name: "sockloop".into(),
            node: None,
            handler_budget: None,
            memory_budget: crate::base::DEFAULT_MEMORY_BUDGET,
        }
    }
}

impl RuntimeBuilder {
    /// Number of poller threads (default: available cores).
    pub fn pollers(mut self, n: usize) -> Self {
        self.pollers = n.max(1);
        self
    }

    /// Number of handler threads for [`Dispatch::Threads`](crate::Dispatch::Threads) that
    /// start with the runtime and stay when idle: the pool's minimum (default: available
    /// cores; at least 1).
    ///
    /// Any idle handler thread takes the next connection with work; each connection's
    /// events run in order, on one thread at a time. When every thread has been in the
    /// same handler call for [`handler_grow_after`](Self::handler_grow_after) while other
    /// connections wait, the pool grows, up to
    /// [`max_handler_threads`](Self::max_handler_threads); threads above this minimum stop
    /// after [`handler_idle_timeout`](Self::handler_idle_timeout) without work. The threads
    /// are children of the supervisor registered as `<name>-handlers` on
    /// [`Runtime::node`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let rt = sockloop::Runtime::builder()
    ///     .handler_threads(2)
    ///     .max_handler_threads(64)
    ///     .handler_grow_after(Duration::from_millis(10))
    ///     .handler_idle_timeout(Duration::from_secs(30))
    ///     .build()?;
    /// # Ok::<(), sockloop::Error>(())
    /// ```
    pub fn handler_threads(mut self, n: usize) -> Self {
        self.handler_threads = n.max(1);
        self
    }

    /// Most handler threads the pool grows to while handlers block (default: the larger
    /// of 16 and 4 × available cores; raised to [`handler_threads`](Self::handler_threads)
    /// if lower). Set it equal to `handler_threads` for a fixed pool.
    pub fn max_handler_threads(mut self, n: usize) -> Self {
        self.max_handler_threads = Some(n.max(1));
        self
    }

    /// How long every handler thread must be blocked in one call, while other connections
    /// have events waiting, before the pool starts more threads (default 5 ms). The pool
    /// starts up to one thread per waiting connection, at most doubling per period.
    pub fn handler_grow_after(mut self, d: Duration) -> Self {
        self.handler_grow_after = d.max(Duration::from_millis(1));
        self
    }

    /// How long a handler thread above [`handler_threads`](Self::handler_threads) may stay
    /// idle before it is stopped (default 10 s; `Duration::MAX`: never).
    pub fn handler_idle_timeout(mut self, d: Duration) -> Self {
        self.handler_idle_timeout = d;
        self
    }

    fn pool_config(&self) -> PoolConfig {
        let min = self.handler_threads;
        let max = self
            .max_handler_threads
            .unwrap_or_else(|| (4 * cores()).max(16));
        PoolConfig {
            min,
            max: max.max(min),
            grow_after: self.handler_grow_after,
            idle_timeout: self.handler_idle_timeout,
        }
    }

    /// Thread name prefix (default "sockloop").
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Configuration of the runtime's supervision [`Node`] (default
    /// [`NodeConfig::default`] with process threads named `<name>-proc-<pid>`), on which
    /// the handler threads run as supervised processes and user processes may be spawned
    /// ([`Runtime::node`]).
    pub fn node_config(mut self, config: NodeConfig) -> Self {
        self.node = Some(config);
        self
    }

    /// Time budget of one handler call on the handler threads (default: none). Each event
    /// handled longer than this is reported once to the node's hook as
    /// [`SystemEvent::OverBudget`](crate::supervise::SystemEvent::OverBudget) (and logged).
    /// It sets the node's per-message budget, so it applies to user processes on
    /// [`Runtime::node`] as well.
    pub fn handler_budget(mut self, budget: Option<Duration>) -> Self {
        self.handler_budget = budget;
        self
    }

    /// Bytes all connections of the runtime may hold together (default 1 GiB,
    /// [`DEFAULT_MEMORY_BUDGET`](crate::base::DEFAULT_MEMORY_BUDGET); `usize::MAX`: no
    /// limit): output queues of every kind (application messages, HTTP responses, control
    /// frames, TLS records), handler jobs waiting and kept input (partial frames). At three
    /// quarters, new WebSocket upgrades get HTTP 503; at the limit, new connections are
    /// refused at accept, pollers stop reading (TCP pushes back on the peers) until it
    /// falls to seven eighths, and message sends are refused (`Dropped`, counted; byte
    /// streams keep their own backpressure bound). See [`Runtime::budget`].
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes.max(1);
        self
    }

    fn make_node(&self) -> Node {
        let cfg = self
            .node
            .clone()
            .unwrap_or_else(|| NodeConfig::default().thread_name(format!("{}-proc", self.name)));
        let cfg = match self.handler_budget {
            Some(b) => cfg.message_budget(Some(b)),
            None => cfg,
        };
        Node::with_config(cfg)
    }

    /// Starts the threads.
    ///
    /// # Errors
    /// `Error::Io` when a poll instance or a thread cannot be created.
    pub fn build(self) -> Result<Runtime> {
        let node = self.make_node();
        let pool = HandlerPool::new(self.pool_config(), &self.name, &node)?;
        let mut pollers = Vec::new();
        let mut shareds = Vec::new();
        for i in 0..self.pollers {
            let (p, s) = new_poller(i)?;
            pollers.push(p);
            shareds.push(s);
        }
        let mut threads = Vec::new();
        for (i, p) in pollers.into_iter().enumerate() {
            let siblings = shareds.clone();
            let t = std::thread::Builder::new()
                .name(format!("{}-poller-{i}", self.name))
                .spawn(move || Poller::run(p, siblings))?;
            threads.push(t);
        }
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                pollers: shareds,
                threads: Mutex::new(threads),
                pool,
                node,
                servers: Mutex::new(Vec::new()),
                stopped: AtomicBool::new(false),
                rr: AtomicUsize::new(0),
                budget: Arc::new(crate::base::Budget::new(self.memory_budget)),
            }),
        })
    }
}

/// How long stopping the runtime waits for the processes left on its node.
const NODE_SHUTDOWN: Duration = Duration::from_secs(5);

pub(crate) struct RuntimeInner {
    pub(crate) pollers: Vec<Arc<PollerShared>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) pool: Arc<HandlerPool>,
    node: Node,
    servers: Mutex<Vec<Arc<ServerShared>>>,
    stopped: AtomicBool,
    rr: AtomicUsize,
    /// Every byte the runtime's connections hold, against its limit.
    pub(crate) budget: Arc<crate::base::Budget>,
}

impl RuntimeInner {
    pub(crate) fn add_server(&self, s: Arc<ServerShared>) {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s);
    }

    /// Whether the runtime's threads were stopped (no new server may start).
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// A poller index, round robin (spreads single-socket servers).
    pub(crate) fn next_poller(&self) -> usize {
        self.rr.fetch_add(1, Ordering::Relaxed) % self.pollers.len()
    }

    /// Sends a command made by `f` to every poller and waits until each has run it.
    pub(crate) fn on_pollers(&self, f: impl Fn(crossbeam_channel::Sender<()>) -> Command) {
        let (tx, rx) = crossbeam_channel::unbounded();
        for p in &self.pollers {
            p.command(f(tx.clone()));
        }
        drop(tx);
        while rx.recv_timeout(Duration::from_secs(5)).is_ok() {}
    }

    fn stop_threads(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        for p in &self.pollers {
            p.command(Command::Stop);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        self.pool.stop();
        self.node.shutdown(NODE_SHUTDOWN);
    }
}

/// A fixed pool of poller threads (each with its own `mio::Poll`) and an elastic pool of
/// handler threads (growing while handlers block, shrinking when idle), on which any number
/// of servers run.
///
/// # Examples
/// ```
/// use sockloop::{Dispatch, Listen, Runtime, ServerConfig};
///
/// let rt = Runtime::builder().pollers(2).build()?;
/// let server = rt
///     .serve(Listen::tcp("127.0.0.1:0"))
///     .config(ServerConfig::new().dispatch(Dispatch::Inline))
///     .stream(sockloop::handler::on_data(|conn: &sockloop::Conn, data: &[u8]| {
///         let _ = conn.send(data);
///     }))?;
/// println!("echo on {}", server.local_addr());
/// rt.shutdown(std::time::Duration::from_secs(1));
/// # Ok::<(), sockloop::Error>(())
/// ```
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("pollers", &self.inner.pollers.len())
            .finish()
    }
}

impl Runtime {
    /// A poller's shared half (for unit tests that drive a connection by hand).
    #[cfg(test)]
    pub(crate) fn poller_for_tests(&self) -> Arc<PollerShared> {
        self.inner.pollers[0].clone()
    }

    /// A runtime with the default configuration.
    ///
    /// # Errors
    /// As [`RuntimeBuilder::build`].
    pub fn new() -> Result<Runtime> {
        RuntimeBuilder::default().build()
    }

    /// A builder for a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The memory budget: its limit, what the connections hold now, and what was refused
    /// or paused because of it ([`RuntimeBuilder::memory_budget`]).
    pub fn budget(&self) -> crate::base::BudgetStats {
        self.inner.budget.stats()
    }

    /// Number of poller threads.
    pub fn pollers(&self) -> usize {
        self.inner.pollers.len()
    }

    /// The supervision node the handler threads run on: set its hook to see handler
    /// restarts and overruns, or spawn your own processes and supervisors on it. Processes
    /// left on it are shut down when the runtime stops.
    ///
    /// # Examples
    /// ```
    /// use sockloop::supervise::SystemEvent;
    ///
    /// let rt = sockloop::Runtime::builder().pollers(1).handler_threads(1).build()?;
    /// rt.node().set_hook(|e: &SystemEvent| {
    ///     if let SystemEvent::Restarted { child, .. } = e {
    ///         eprintln!("{child} restarted");
    ///     }
    /// });
    /// # Ok::<(), sockloop::Error>(())
    /// ```
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// Starts building a server listening on `listen`.
    pub fn serve(&self, listen: Listen) -> ServerBuilder<'_> {
        ServerBuilder::new(&self.inner, listen)
    }

    /// Shuts every server down gracefully (each within `deadline`), then stops and joins the
    /// poller and handler threads.
    pub fn shutdown(&self, deadline: Duration) {
        let servers =
            std::mem::take(&mut *self.inner.servers.lock().unwrap_or_else(|e| e.into_inner()));
        for s in &servers {
            shutdown_server(&self.inner, s, deadline);
        }
        self.inner.stop_threads();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.inner.stop_threads();
    }
}
