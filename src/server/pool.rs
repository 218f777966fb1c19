//! Handler threads: where user code runs by default. Each connection (or datagram socket)
//! is bound to one thread, so its events are handled in order; a panic closes only that
//! connection.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::base::{Addr, CloseReason, ConnId};
use crate::proto::http::Request;
use crate::proto::ws::CloseCode;
use crate::reactor::stream::{describe_panic, UserHandler};
use crate::reactor::Command;
use crate::server::handle::Conn;
use crate::server::handler::{
    DatagramFactory, DatagramHandler, DatagramSender, StreamFactory, StreamHandler,
};
use crate::server::websocket::{WsConn, WsFactory, WsHandler};
use crate::supervise::{
    BoxError, ChildSpec, Context, Control, Handled, Node, Process, Restart, Strategy,
    SupervisorRef, SupervisorSpec,
};
use crate::Error;

/// Work for a handler thread.
pub(crate) enum Job {
    Open {
        conn: Conn,
        factory: Arc<dyn StreamFactory>,
    },
    Data {
        conn: Conn,
        data: Vec<u8>,
    },
    Drained {
        conn: Conn,
    },
    Error {
        conn: Conn,
        error: Error,
    },
    Close {
        conn: Conn,
        reason: CloseReason,
    },
    WsOpen {
        conn: Conn,
        factory: Arc<dyn WsFactory>,
        req: Request,
    },
    Text {
        conn: Conn,
        text: String,
    },
    Binary {
        conn: Conn,
        data: Vec<u8>,
    },
    WsClose {
        conn: Conn,
        code: CloseCode,
        reason: String,
    },
    /// Reply `HandlerCaughtUp` to the poller once every earlier event was handled.
    CatchUp {
        conn: Conn,
    },
    Datagram {
        sender: DatagramSender,
        factory: Arc<dyn DatagramFactory>,
        peer: Addr,
        data: Vec<u8>,
    },
    DatagramError {
        sender: DatagramSender,
        factory: Arc<dyn DatagramFactory>,
        error: Error,
    },
    /// Run a closure on the handler thread (used by higher layers and tests).
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
    workers: Vec<Sender<Job>>,
    node: Node,
    supervisor: Mutex<Option<SupervisorRef>>,
}

/// One handler thread's queue and handlers, kept across restarts of the thread.
struct Lane {
    rx: Receiver<Job>,
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
            Ok(Job::Stop) | Err(_) => return Ok(Control::Stop),
            Ok(job) => job,
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
        let _ = self.workers[i].send(job);
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
            let _ = w.send(Job::Stop);
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
            let _ = w.send(Job::Run(Box::new(move || {
                let _ = tx.send(());
            })));
        }
        drop(tx);
        while rx.recv().is_ok() {}
    }
}

#[derive(Default)]
struct Worker {
    streams: HashMap<ConnId, UserHandler>,
    datagrams: HashMap<u64, Box<dyn DatagramHandler>>,
    /// A handler panicked during the last job: the thread is to be restarted.
    failed: Option<String>,
}

impl Worker {
    fn handle(&mut self, job: Job) {
        match job {
            Job::Open { conn, factory } => self.open(conn, factory),
            Job::Data { conn, data } => {
                self.call(&conn, |h, c| h.on_data(c, &data), |_, _| {});
                consumed(&conn, data.len());
            }
            Job::Drained { conn } => {
                self.call(&conn, |h, c| h.on_drained(c), |h, w| h.on_drained(w))
            }
            Job::Error { conn, error } => self.call(
                &conn,
                |h, c| h.on_error(c, &error),
                |h, w| h.on_error(w, &error),
            ),
            Job::Close { conn, reason } => {
                self.call(&conn, |h, c| h.on_close(c, &reason), |_, _| {});
                self.streams.remove(&conn.id());
            }
            Job::WsOpen { conn, factory, req } => self.open_ws(conn, factory, req),
            Job::Text { conn, text } => {
                self.call(&conn, |_, _| {}, |h, w| h.on_text(w, &text));
                consumed(&conn, text.len());
            }
            Job::Binary { conn, data } => {
                self.call(&conn, |_, _| {}, |h, w| h.on_binary(w, &data));
                consumed(&conn, data.len());
            }
            Job::WsClose { conn, code, reason } => {
                self.call(&conn, |_, _| {}, |h, w| h.on_close(w, code, &reason));
                self.streams.remove(&conn.id());
            }
            Job::CatchUp { conn } => {
                let (slot, gen) = (conn.inner.slot, conn.inner.gen);
                conn.inner
                    .poller
                    .command(Command::HandlerCaughtUp { slot, gen });
            }
            Job::Datagram {
                sender,
                factory,
                peer,
                data,
            } => self.datagram(&sender, factory, |h, s| h.on_datagram(s, &peer, &data)),
            Job::DatagramError {
                sender,
                factory,
                error,
            } => self.datagram(&sender, factory, |h, _| h.on_error(&error)),
            Job::Run(f) => {
                if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
                    let msg = describe_panic(&*p);
                    log::error!("handler-thread job panicked: {msg}");
                    self.failed = Some(msg);
                }
            }
            Job::Stop => {}
        }
    }

    fn open(&mut self, conn: Conn, factory: Arc<dyn StreamFactory>) {
        match catch_unwind(AssertUnwindSafe(|| factory.create(&conn))) {
            Ok(h) => {
                self.streams.insert(conn.id(), UserHandler::Stream(h));
                self.call(&conn, |h, c| h.on_open(c), |_, _| {});
            }
            Err(p) => self.panicked(&conn, describe_panic(&*p)),
        }
    }

    fn open_ws(&mut self, conn: Conn, factory: Arc<dyn WsFactory>, req: Request) {
        let ws = WsConn::from_conn(&conn);
        match catch_unwind(AssertUnwindSafe(|| factory.create(ws, &req))) {
            Ok(h) => {
                self.streams.insert(conn.id(), UserHandler::Ws(h));
                self.call(&conn, |_, _| {}, |h, w| h.on_open(w, &req));
            }
            Err(p) => self.panicked(&conn, describe_panic(&*p)),
        }
    }

    /// Runs a handler method (`s` for stream handlers, `w` for WebSocket handlers); a panic
    /// drops the handler and closes the connection.
    fn call(
        &mut self,
        conn: &Conn,
        s: impl FnOnce(&mut dyn StreamHandler, &Conn),
        w: impl FnOnce(&mut dyn WsHandler, &WsConn),
    ) {
        let Some(h) = self.streams.get_mut(&conn.id()) else {
            return;
        };
        let r = catch_unwind(AssertUnwindSafe(|| match h {
            UserHandler::Stream(h) => s(h.as_mut(), conn),
            UserHandler::Ws(h) => w(h.as_mut(), WsConn::from_conn(conn)),
        }));
        if let Err(p) = r {
            self.streams.remove(&conn.id());
            self.panicked(conn, describe_panic(&*p));
        }
    }

    fn datagram(
        &mut self,
        sender: &DatagramSender,
        factory: Arc<dyn DatagramFactory>,
        f: impl FnOnce(&mut dyn DatagramHandler, &DatagramSender),
    ) {
        let key = sender.inner.key;
        let h = self
            .datagrams
            .entry(key)
            .or_insert_with(|| factory.create());
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(h.as_mut(), sender))) {
            let msg = describe_panic(&*p);
            log::error!("datagram handler panicked: {msg}");
            let server = &sender.inner.server;
            server
                .observer
                .on_error(None, &Error::HandlerPanic(msg.clone()));
            self.failed = Some(msg);
        }
    }

    /// A handler panicked: its connection closes, and this thread is to be restarted.
    fn panicked(&mut self, conn: &Conn, msg: String) {
        panicked(conn, msg.clone());
        self.failed = Some(msg);
    }
}

fn panicked(conn: &Conn, msg: String) {
    log::error!("conn={} handler panicked: {msg}", conn.id());
    let server = &conn.inner.server;
    server
        .observer
        .on_error(Some(conn.id()), &Error::HandlerPanic(msg.clone()));
    if server.ws.is_some() {
        WsConn::from_conn(conn).close(CloseCode::ERROR, "handler failed");
    } else {
        conn.close_with(CloseReason::HandlerPanic(msg));
    }
}

/// The handler consumed `n` inbound bytes: resume a paused reader once it caught up.
fn consumed(conn: &Conn, n: usize) {
    let sh = &conn.inner;
    let left = sh.inbound.fetch_sub(n, Ordering::SeqCst) - n;
    let max = sh.server.config.max_inbound_pending;
    if left <= max / 2
        && sh.paused.load(Ordering::SeqCst)
        && sh.paused.swap(false, Ordering::SeqCst)
    {
        sh.poller.command(Command::Resume {
            slot: sh.slot,
            gen: sh.gen,
        });
    }
}
