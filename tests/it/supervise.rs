//! Supervision: processes, supervisors, links, monitors and the hook, on real threads.

use std::sync::Once;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use sockloop::supervise::{
    from_fn, ChildSpec, Context, Control, Down, ExitReason, Handled, Node, NodeConfig, Pid,
    Process, ProcessRef, RegisterError, Restart, SendError, SpawnError, SpawnOptions, Strategy,
    SupervisorError, SupervisorRef, SupervisorSpec, SystemEvent,
};

use crate::util::WAIT;

mod calls;
mod chat_example;
mod links;
mod ordering;
mod otp;
mod pool;
mod processes;
mod quiet;
mod stress;
mod supervisors;
mod timers;

/// Marker in the panic messages of these tests; the hook below keeps them off stderr.
const PANIC_MARK: &str = "sockloop-test-panic";

fn quiet_test_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.contains(PANIC_MARK) {
                default(info);
            }
        }));
    });
}

fn recv<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(WAIT).expect("timed out waiting")
}

fn events(node: &Node) -> Receiver<SystemEvent> {
    let (tx, rx) = unbounded();
    node.set_hook(move |e| drop(tx.send(e.clone())));
    rx
}

/// Waits for the first event matching `f`.
fn wait_event<T>(rx: &Receiver<SystemEvent>, f: impl Fn(&SystemEvent) -> Option<T>) -> T {
    loop {
        if let Some(t) = f(&recv(rx)) {
            return t;
        }
    }
}

#[derive(Debug)]
enum Cmd {
    Crash,
    Fail,
    Stop,
}

/// A worker that logs "start id" / "stop id" and obeys commands.
struct Worker {
    id: &'static str,
    log: Sender<String>,
}

impl Process for Worker {
    type Msg = Cmd;

    fn init(&mut self, _ctx: &mut Context<Cmd>) -> Result<(), sockloop::supervise::BoxError> {
        drop(self.log.send(format!("start {}", self.id)));
        Ok(())
    }

    fn handle(&mut self, _ctx: &mut Context<Cmd>, msg: Cmd) -> Handled {
        match msg {
            Cmd::Crash => panic!("{PANIC_MARK} {}", self.id),
            Cmd::Fail => Err("failed on purpose".into()),
            Cmd::Stop => Ok(Control::Stop),
        }
    }

    fn terminate(&mut self, _ctx: &mut Context<Cmd>, _reason: &ExitReason) {
        drop(self.log.send(format!("stop {}", self.id)));
    }
}

fn worker(id: &'static str, log: &Sender<String>) -> ChildSpec {
    let log = log.clone();
    ChildSpec::worker(id, move || Worker {
        id,
        log: log.clone(),
    })
    .register_as(id)
}

fn abc(strategy: Strategy, log: &Sender<String>) -> SupervisorSpec {
    SupervisorSpec::new(strategy)
        .intensity(10, Duration::from_secs(60))
        .child(worker("a", log))
        .child(worker("b", log))
        .child(worker("c", log))
}

fn take(rx: &Receiver<String>, n: usize) -> Vec<String> {
    (0..n).map(|_| recv(rx)).collect()
}

fn pids(sup: &SupervisorRef) -> Vec<Option<Pid>> {
    sup.which_children()
        .unwrap()
        .iter()
        .map(|c| c.pid)
        .collect()
}

/// Polls a condition that a supervisor call makes observable, for at most `WAIT`.
fn wait_until(f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached"
        );
        thread::yield_now();
    }
}

/// Forwards exit signals and DOWNs to channels; links or monitors on command.
struct Watcher {
    exits: Sender<(Pid, ExitReason)>,
    downs: Sender<Down>,
    trap: bool,
}

enum WCmd {
    Link(Pid),
    Monitor(Pid, Sender<sockloop::supervise::MonitorRef>),
    Demonitor(sockloop::supervise::MonitorRef),
    Flush(Sender<()>),
}

impl Process for Watcher {
    type Msg = WCmd;
    fn init(&mut self, ctx: &mut Context<WCmd>) -> Result<(), sockloop::supervise::BoxError> {
        ctx.trap_exit(self.trap);
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Context<WCmd>, msg: WCmd) -> Handled {
        match msg {
            WCmd::Link(p) => ctx.link(p),
            WCmd::Monitor(p, tx) => tx.send(ctx.monitor(p))?,
            WCmd::Demonitor(m) => assert!(ctx.demonitor(m)),
            WCmd::Flush(tx) => tx.send(())?,
        }
        Ok(Control::Continue)
    }
    fn handle_exit(&mut self, _ctx: &mut Context<WCmd>, from: Pid, reason: ExitReason) -> Handled {
        self.exits.send((from, reason))?;
        Ok(Control::Continue)
    }
    fn handle_down(&mut self, _ctx: &mut Context<WCmd>, down: Down) -> Handled {
        self.downs.send(down)?;
        Ok(Control::Continue)
    }
}

type WatcherRx = (Receiver<(Pid, ExitReason)>, Receiver<Down>);

fn watcher(node: &Node, trap: bool) -> (ProcessRef<WCmd>, WatcherRx) {
    let (exits, erx) = unbounded();
    let (downs, drx) = unbounded();
    let w = node.spawn(Watcher { exits, downs, trap }).unwrap();
    (w, (erx, drx))
}

fn flush(w: &ProcessRef<WCmd>) {
    let (tx, rx) = bounded(1);
    w.send(WCmd::Flush(tx)).unwrap();
    recv(&rx);
}

fn victim(node: &Node) -> ProcessRef<Cmd> {
    let (log, _) = unbounded();
    node.spawn(Worker { id: "v", log }).unwrap()
}

/// Sends on drop: tells when a process's state was dropped (after its exit was processed).
struct OnDrop(Sender<()>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}
