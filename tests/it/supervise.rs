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

/// Crashes child `b` and returns the start/stop log of the restart, checking nothing more
/// follows once the supervisor has answered a call.
fn crash_b(strategy: Strategy, expected: &[&str]) -> (Vec<Option<Pid>>, Vec<Option<Pid>>) {
    quiet_test_panics();
    let node = Node::new();
    let (log, rx) = unbounded();
    let sup = abc(strategy, &log).start(&node).unwrap();
    assert_eq!(take(&rx, 3), ["start a", "start b", "start c"]);
    let before = pids(&sup);
    node.send("b", Cmd::Crash).unwrap();
    assert_eq!(take(&rx, expected.len()), expected);
    let after = pids(&sup);
    assert!(rx.try_recv().is_err(), "unexpected extra start/stop");
    (before, after)
}

#[test]
fn one_for_one_restarts_only_the_failed_child() {
    let (before, after) = crash_b(Strategy::OneForOne, &["stop b", "start b"]);
    assert_eq!(before[0], after[0]);
    assert_ne!(before[1], after[1]);
    assert_eq!(before[2], after[2]);
}

#[test]
fn one_for_all_restarts_everyone_in_order() {
    let expected = [
        "stop b", "stop c", "stop a", "start a", "start b", "start c",
    ];
    let (before, after) = crash_b(Strategy::OneForAll, &expected);
    for i in 0..3 {
        assert_ne!(before[i], after[i]);
    }
}

#[test]
fn rest_for_one_restarts_the_failed_child_and_later_ones() {
    let expected = ["stop b", "stop c", "start b", "start c"];
    let (before, after) = crash_b(Strategy::RestForOne, &expected);
    assert_eq!(before[0], after[0]);
    assert_ne!(before[1], after[1]);
    assert_ne!(before[2], after[2]);
}

#[test]
fn supervisor_stops_children_in_reverse_order() {
    let node = Node::new();
    let (log, rx) = unbounded();
    let sup = abc(Strategy::OneForOne, &log).start(&node).unwrap();
    assert_eq!(take(&rx, 3), ["start a", "start b", "start c"]);
    let down = node.monitor(sup.pid());
    assert!(node.stop(sup.pid()));
    assert_eq!(recv(&down).reason, ExitReason::Shutdown);
    assert_eq!(take(&rx, 3), ["stop c", "stop b", "stop a"]);
    assert_eq!(node.process_count(), 0);
}

#[test]
fn failed_child_init_fails_the_supervisor_and_stops_started_children() {
    let node = Node::new();
    let (log, rx) = unbounded();
    let bad = ChildSpec::worker("bad", || from_fn(|_ctx, ()| Ok(Control::Continue)));
    let failing = ChildSpec::worker("failing", || FailInit);
    let spec = abc(Strategy::OneForOne, &log).child(bad).child(failing);
    let err = spec.start(&node).unwrap_err();
    assert!(
        matches!(err, SpawnError::Init(ExitReason::Error(_))),
        "{err:?}"
    );
    assert_eq!(
        take(&rx, 6),
        ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    );
    assert_eq!(node.whereis("a"), None);
}

struct FailInit;

impl Process for FailInit {
    type Msg = ();
    fn init(&mut self, _ctx: &mut Context<()>) -> Result<(), sockloop::supervise::BoxError> {
        Err("no".into())
    }
    fn handle(&mut self, _ctx: &mut Context<()>, _msg: ()) -> Handled {
        Ok(Control::Continue)
    }
}

#[test]
fn exceeding_intensity_escalates_to_the_parent_which_restarts_the_subtree() {
    quiet_test_panics();
    let node = Node::new();
    let ev = events(&node);
    let (log, rx) = unbounded();
    let inner = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(2, Duration::from_secs(60))
        .child(worker("w", &log));
    let top = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(60))
        .child(ChildSpec::supervisor("inner", inner))
        .start(&node)
        .unwrap();
    assert_eq!(recv(&rx), "start w");
    let inner_pid = pids(&top)[0].unwrap();
    for _ in 0..2 {
        node.send("w", Cmd::Crash).unwrap();
        assert_eq!(take(&rx, 2), ["stop w", "start w"]);
    }
    // The third crash within the period is one too many for `inner`.
    node.send("w", Cmd::Crash).unwrap();
    assert_eq!(take(&rx, 2), ["stop w", "start w"]);
    let escalated = wait_event(&ev, |e| match e {
        SystemEvent::SupervisorEscalated { supervisor, .. } => Some(*supervisor),
        _ => None,
    });
    assert_eq!(escalated, inner_pid);
    let (old, new) = wait_event(&ev, |e| match e {
        SystemEvent::Restarted {
            child, old, new, ..
        } if child == "inner" => Some((*old, *new)),
        _ => None,
    });
    assert_eq!(old, inner_pid);
    assert_eq!(pids(&top)[0], Some(new));
    let inner_ref = SupervisorRef::from_pid(&node, new).unwrap();
    assert_eq!(pids(&inner_ref)[0], node.whereis("w"));
}

#[test]
fn top_level_supervisor_exits_when_intensity_is_exceeded() {
    quiet_test_panics();
    let node = Node::new();
    let (log, rx) = unbounded();
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(0, Duration::from_secs(60))
        .child(worker("a", &log))
        .child(worker("b", &log))
        .start(&node)
        .unwrap();
    let down = node.monitor(sup.pid());
    assert_eq!(take(&rx, 2), ["start a", "start b"]);
    node.send("b", Cmd::Crash).unwrap();
    assert_eq!(recv(&down).reason, ExitReason::IntensityExceeded);
    assert_eq!(take(&rx, 2), ["stop b", "stop a"]);
    assert_eq!(sup.which_children(), Err(SupervisorError::NoProcess));
}

#[test]
fn transient_child_restarts_only_after_abnormal_exit() {
    let node = Node::new();
    let (log, rx) = unbounded();
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("t", &log).restart(Restart::Transient))
        .start(&node)
        .unwrap();
    assert_eq!(recv(&rx), "start t");
    node.send("t", Cmd::Fail).unwrap();
    assert_eq!(take(&rx, 2), ["stop t", "start t"]);
    node.send("t", Cmd::Stop).unwrap();
    assert_eq!(recv(&rx), "stop t");
    // Answered after the exit was handled: the spec is kept, not running.
    wait_until(|| pids(&sup) == [None]);
    assert!(rx.try_recv().is_err());
}

#[test]
fn temporary_child_is_never_restarted_and_its_spec_goes() {
    quiet_test_panics();
    let node = Node::new();
    let (log, rx) = unbounded();
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("p", &log))
        .child(worker("t", &log).restart(Restart::Temporary))
        .start(&node)
        .unwrap();
    assert_eq!(take(&rx, 2), ["start p", "start t"]);
    node.send("t", Cmd::Crash).unwrap();
    assert_eq!(recv(&rx), "stop t");
    wait_until(|| sup.which_children().unwrap().len() == 1);
    assert_eq!(sup.which_children().unwrap()[0].id, "p");
    assert!(rx.try_recv().is_err());
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

#[test]
fn children_are_added_terminated_restarted_and_deleted_at_run_time() {
    let node = Node::new();
    let (log, rx) = unbounded();
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .start(&node)
        .unwrap();
    let pa = sup.start_child(worker("a", &log)).unwrap();
    let pb = sup.start_child(worker("b", &log)).unwrap();
    assert_eq!(take(&rx, 2), ["start a", "start b"]);
    let dup = sup.start_child(worker("a", &log)).unwrap_err();
    assert_eq!(dup, SupervisorError::AlreadyExists("a".into()));
    assert_eq!(pids(&sup), [Some(pa), Some(pb)]);
    assert_eq!(
        sup.delete_child("a"),
        Err(SupervisorError::Running("a".into()))
    );
    sup.terminate_child("a").unwrap();
    assert_eq!(recv(&rx), "stop a");
    assert!(!node.is_alive(pa));
    assert_eq!(pids(&sup), [None, Some(pb)]);
    let pa2 = sup.restart_child("a").unwrap();
    assert_eq!(recv(&rx), "start a");
    assert_ne!(pa, pa2);
    sup.terminate_child("a").unwrap();
    sup.delete_child("a").unwrap();
    assert_eq!(
        sup.delete_child("a"),
        Err(SupervisorError::NotFound("a".into()))
    );
    let ids: Vec<_> = sup
        .which_children()
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["b"]);
}

#[test]
fn process_handles_messages_in_order_keeping_state() {
    let node = Node::new();
    let (tx, rx) = bounded(1);
    let mut expected = 0u64;
    let p = node
        .spawn(from_fn(move |_ctx, n: u64| {
            if n == u64::MAX {
                tx.send(expected)?;
                return Ok(Control::Stop);
            }
            if n != expected {
                return Err(format!("got {n}, expected {expected}").into());
            }
            expected += 1;
            Ok(Control::Continue)
        }))
        .unwrap();
    for i in 0..10_000 {
        p.send_timeout(i, WAIT).unwrap();
    }
    p.send_timeout(u64::MAX, WAIT).unwrap();
    assert_eq!(recv(&rx), 10_000);
}

#[test]
fn sends_to_dead_unknown_or_mistyped_processes_hand_the_message_back() {
    let node = Node::new();
    let opts = SpawnOptions::default().name("n");
    let p = node
        .spawn_with(from_fn(|_ctx, _m: u8| Ok(Control::Stop)), opts)
        .unwrap();
    assert!(matches!(
        node.send("n", "text"),
        Err(SendError::WrongType("text"))
    ));
    let down = node.monitor(p.pid());
    p.send(1).unwrap();
    assert_eq!(recv(&down).reason, ExitReason::Normal);
    assert!(matches!(p.send(2), Err(SendError::NoProcess(2))));
    assert!(matches!(
        node.send(p.pid(), 3u8),
        Err(SendError::NoProcess(3))
    ));
    assert!(matches!(node.send("n", 4u8), Err(SendError::NoProcess(4))));
    assert_eq!(node.whereis("n"), None);
}

#[test]
fn full_mailbox_hands_the_message_back_and_is_reported() {
    let node = Node::with_config(NodeConfig::default().mailbox_capacity(2));
    let ev = events(&node);
    let (gate_tx, gate) = bounded::<()>(0);
    let (busy_tx, busy) = unbounded();
    let p = node
        .spawn(from_fn(move |_ctx, _m: u32| {
            busy_tx.send(())?;
            gate.recv()?;
            Ok(Control::Continue)
        }))
        .unwrap();
    // The first message is taken and blocks on the gate; two more fill the mailbox.
    p.send(0).unwrap();
    recv(&busy);
    p.send(1).unwrap();
    p.send(2).unwrap();
    assert!(matches!(p.send(3), Err(SendError::MailboxFull(3))));
    let pid = p.pid();
    wait_event(&ev, |e| {
        (*e == SystemEvent::MailboxFull { pid }).then_some(())
    });
    let t = p.send_timeout(99, Duration::from_millis(20)).unwrap_err();
    assert!(matches!(t, SendError::Timeout(99)));
    for _ in 0..3 {
        gate_tx.send(()).unwrap();
    }
    p.send_timeout(100, WAIT).unwrap();
}

#[test]
fn names_register_resolve_and_free_on_exit() {
    let node = Node::new();
    let a = node
        .spawn(from_fn(|_ctx, _m: ()| Ok(Control::Stop)))
        .unwrap();
    let b = node
        .spawn(from_fn(|_ctx, _m: ()| Ok(Control::Continue)))
        .unwrap();
    node.register("x", a.pid()).unwrap();
    assert_eq!(node.whereis("x"), Some(a.pid()));
    assert_eq!(
        node.register("x", b.pid()),
        Err(RegisterError::NameTaken("x".into()))
    );
    assert_eq!(
        node.register("y", a.pid()),
        Err(RegisterError::AlreadyNamed("x".into()))
    );
    let taken = node.spawn_with(
        from_fn(|_ctx, _m: ()| Ok(Control::Stop)),
        SpawnOptions::default().name("x"),
    );
    assert_eq!(taken.unwrap_err(), SpawnError::NameTaken("x".into()));
    let down = node.monitor(a.pid());
    node.send("x", ()).unwrap();
    recv(&down);
    assert_eq!(node.whereis("x"), None);
    node.register("x", b.pid()).unwrap();
    assert_eq!(node.unregister("x"), Some(b.pid()));
    assert!(
        a.pid() < b.pid(),
        "pids are allocated increasingly, never reused"
    );
}

#[test]
fn panics_and_errors_become_exit_reasons() {
    quiet_test_panics();
    let node = Node::new();
    let (log, _rx) = unbounded();
    let p = node
        .spawn(Worker {
            id: "p",
            log: log.clone(),
        })
        .unwrap();
    let down = node.monitor(p.pid());
    p.send(Cmd::Crash).unwrap();
    assert_eq!(
        recv(&down).reason,
        ExitReason::Panic(format!("{PANIC_MARK} p"))
    );
    let e = node.spawn(Worker { id: "e", log }).unwrap();
    let down = node.monitor(e.pid());
    e.send(Cmd::Fail).unwrap();
    assert_eq!(
        recv(&down).reason,
        ExitReason::Error("failed on purpose".into())
    );
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

#[test]
fn abnormal_exit_kills_linked_processes_but_normal_exit_does_not() {
    quiet_test_panics();
    let node = Node::new();
    let (w, _) = watcher(&node, false);
    let v = victim(&node);
    w.send(WCmd::Link(v.pid())).unwrap();
    flush(&w);
    let gone = node.monitor(v.pid());
    v.send(Cmd::Stop).unwrap();
    // Links fire before monitors: the exit signal is queued before this DOWN.
    recv(&gone);
    let v2 = victim(&node);
    w.send(WCmd::Link(v2.pid())).unwrap();
    flush(&w);
    assert!(w.is_alive(), "a normal exit must not travel along a link");
    let down = node.monitor(w.pid());
    v2.send(Cmd::Crash).unwrap();
    assert_eq!(
        recv(&down).reason,
        ExitReason::Panic(format!("{PANIC_MARK} v"))
    );
}

#[test]
fn trapping_process_receives_exits_as_messages() {
    quiet_test_panics();
    let node = Node::new();
    let (w, (exits, _)) = watcher(&node, true);
    let v = victim(&node);
    w.send(WCmd::Link(v.pid())).unwrap();
    flush(&w);
    v.send(Cmd::Crash).unwrap();
    let (from, reason) = recv(&exits);
    assert_eq!(from, v.pid());
    assert_eq!(reason, ExitReason::Panic(format!("{PANIC_MARK} v")));
    w.send(WCmd::Link(v.pid())).unwrap();
    assert_eq!(recv(&exits), (v.pid(), ExitReason::NoProc));
    flush(&w);
    assert!(w.is_alive());
}

#[test]
fn monitor_fires_exactly_once_and_demonitor_silences_it() {
    let node = Node::new();
    let (w, (_, downs)) = watcher(&node, false);
    let v = victim(&node);
    let (mtx, mrx) = bounded(1);
    w.send(WCmd::Monitor(v.pid(), mtx.clone())).unwrap();
    w.send(WCmd::Monitor(v.pid(), mtx.clone())).unwrap();
    let (m1, m2) = (recv(&mrx), recv(&mrx));
    v.send(Cmd::Stop).unwrap();
    let mut got = [recv(&downs), recv(&downs)];
    got.sort_by_key(|d| d.mref);
    assert_eq!(got.iter().map(|d| d.mref).collect::<Vec<_>>(), [m1, m2]);
    assert!(got
        .iter()
        .all(|d| d.pid == v.pid() && d.reason == ExitReason::Normal));
    flush(&w);
    assert!(downs.try_recv().is_err(), "a monitor fired twice");
    // Already dead: an immediate DOWN with NoProc.
    w.send(WCmd::Monitor(v.pid(), mtx.clone())).unwrap();
    let m3 = recv(&mrx);
    assert_eq!(
        recv(&downs),
        Down {
            mref: m3,
            pid: v.pid(),
            reason: ExitReason::NoProc
        }
    );
    // Demonitored before the exit: nothing arrives.
    let v2 = victim(&node);
    w.send(WCmd::Monitor(v2.pid(), mtx)).unwrap();
    let m4 = recv(&mrx);
    w.send(WCmd::Demonitor(m4)).unwrap();
    flush(&w);
    let gone = node.monitor(v2.pid());
    v2.send(Cmd::Stop).unwrap();
    recv(&gone);
    flush(&w);
    assert!(downs.try_recv().is_err(), "a removed monitor fired");
}

fn threads_and_rss_kib() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> usize {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("Threads:"), field("VmRSS:"))
}

/// Reports each instance from `init`; panics on any message.
struct Bomb(Sender<ProcessRef<()>>);

impl Process for Bomb {
    type Msg = ();
    fn init(&mut self, ctx: &mut Context<()>) -> Result<(), sockloop::supervise::BoxError> {
        self.0.send(ctx.me().clone())?;
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<()>, _msg: ()) -> Handled {
        panic!("{PANIC_MARK} loop")
    }
}

#[test]
fn ten_thousand_panics_leave_threads_and_memory_bounded() {
    quiet_test_panics();
    let node = Node::new();
    let (started, instances) = unbounded();
    let spec = ChildSpec::worker("p", move || Bomb(started.clone()));
    let _sup = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(u32::MAX, Duration::from_millis(1))
        .child(spec)
        .start(&node)
        .unwrap();
    let mut current = recv(&instances);
    let (threads0, rss0) = threads_and_rss_kib();
    for _ in 0..10_000 {
        current.send(()).unwrap();
        current = recv(&instances);
    }
    wait_until(|| threads_and_rss_kib().0 <= threads0 + 16);
    let (_, rss1) = threads_and_rss_kib();
    assert!(
        rss1 < rss0 + (64 << 10),
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );
    assert_eq!(node.process_count(), 2);
}

#[test]
fn messages_to_a_live_sibling_are_never_lost_while_another_restarts() {
    quiet_test_panics();
    const N: u64 = 100_000;
    let node = Node::new();
    let (done, result) = bounded(1);
    let counter = ChildSpec::worker("a", move || {
        let done = done.clone();
        let mut next = 0u64;
        from_fn(move |_ctx, n: u64| {
            if n != next {
                return Err(format!("got {n}, expected {next}").into());
            }
            next += 1;
            if next == N {
                done.send(next)?;
            }
            Ok(Control::Continue)
        })
    })
    .register_as("a");
    let (log, restarts) = unbounded();
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(u32::MAX, Duration::from_secs(1))
        .child(counter)
        .child(worker("b", &log))
        .start(&node)
        .unwrap();
    let a_pid = node.whereis("a").unwrap();
    let a = node.lookup::<u64>("a").unwrap();
    let crasher = {
        let node = node.clone();
        thread::spawn(move || {
            for _ in 0..200 {
                assert_eq!(recv(&restarts), "start b");
                node.send("b", Cmd::Crash).unwrap();
                assert_eq!(recv(&restarts), "stop b");
            }
        })
    };
    for i in 0..N {
        a.send_timeout(i, WAIT).unwrap();
    }
    assert_eq!(recv(&result), N);
    crasher.join().unwrap();
    assert_eq!(pids(&sup)[0], Some(a_pid), "the live sibling was restarted");
}

#[test]
fn child_that_does_not_stop_is_detached_reported_and_replaced() {
    let node = Node::new();
    let ev = events(&node);
    let (gate_tx, gate) = bounded::<()>(0);
    let (saw_tx, saw) = bounded(1);
    let (busy_tx, busy) = bounded(1);
    let (ended_tx, ended) = unbounded();
    let spec = ChildSpec::worker("stuck", move || {
        let (gate, saw_tx, busy_tx) = (gate.clone(), saw_tx.clone(), busy_tx.clone());
        let guard = OnDrop(ended_tx.clone());
        from_fn(move |ctx: &mut Context<()>, ()| {
            let _ = &guard;
            busy_tx.send(())?;
            gate.recv()?;
            saw_tx.send(ctx.shutting_down())?;
            Ok(Control::Continue)
        })
    })
    .shutdown(Duration::from_millis(50))
    .register_as("stuck");
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .child(spec)
        .start(&node)
        .unwrap();
    let stuck = node.lookup::<()>("stuck").unwrap();
    let pid = stuck.pid();
    let (w, (exits, _)) = watcher(&node, true);
    w.send(WCmd::Link(pid)).unwrap();
    flush(&w);
    stuck.send(()).unwrap();
    recv(&busy);
    sup.terminate_child("stuck").unwrap();
    assert_eq!(recv(&exits), (pid, ExitReason::Detached));
    let detached = wait_event(&ev, |e| match e {
        SystemEvent::ChildDetached { pid: p, child, .. } if child == "stuck" => Some(*p),
        _ => None,
    });
    assert_eq!(detached, pid);
    assert!(!node.is_alive(pid));
    assert!(matches!(stuck.send(()), Err(SendError::NoProcess(()))));
    assert_eq!(node.whereis("stuck"), None);
    let fresh = sup.restart_child("stuck").unwrap();
    assert_ne!(fresh, pid);
    assert_eq!(node.whereis("stuck"), Some(fresh));
    gate_tx.send(()).unwrap();
    assert!(
        recv(&saw),
        "the detached handler did not see shutting_down()"
    );
    // The detached thread ends on its own later; its exit reaches nobody.
    recv(&ended);
    flush(&w);
    assert!(
        exits.try_recv().is_err(),
        "a detached process's exit was delivered"
    );
    let late = ev
        .try_iter()
        .any(|e| matches!(e, SystemEvent::Exited { pid: p, .. } if p == pid));
    assert!(!late, "a detached process was reported exited twice");
}

/// Sends on drop: tells when a process's state was dropped (after its exit was processed).
struct OnDrop(Sender<()>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        drop(self.0.send(()));
    }
}

#[test]
fn hook_reports_lifecycle_and_over_budget_messages_once() {
    let node =
        Node::with_config(NodeConfig::default().message_budget(Some(Duration::from_millis(5))));
    let ev = events(&node);
    let p = node
        .spawn(from_fn(|_ctx, slow: Option<bool>| {
            let Some(slow) = slow else {
                return Ok(Control::Stop);
            };
            if slow {
                // Simulated slow work, not a wait for a condition.
                thread::sleep(Duration::from_millis(30));
            }
            Ok(Control::Continue)
        }))
        .unwrap();
    let pid = p.pid();
    assert_eq!(recv(&ev), SystemEvent::Started { pid, name: None });
    for m in [Some(false), Some(true), Some(false), None] {
        p.send(m).unwrap();
    }
    let mut over = 0;
    loop {
        match recv(&ev) {
            SystemEvent::OverBudget {
                pid: p,
                elapsed,
                budget,
            } => {
                assert_eq!(p, pid);
                assert!(elapsed > budget);
                over += 1;
            }
            SystemEvent::Exited { pid: p, reason } => {
                assert_eq!((p, reason), (pid, ExitReason::Normal));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(over, 1);
}

#[test]
fn panicking_factory_is_contained_and_counts_as_a_failed_restart() {
    quiet_test_panics();
    let node = Node::new();
    let (log, rx) = unbounded();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let flaky = ChildSpec::worker("f", move || {
        if calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
            panic!("{PANIC_MARK} factory");
        }
        Worker {
            id: "f",
            log: log.clone(),
        }
    })
    .register_as("f");
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(3, Duration::from_secs(60))
        .child(flaky)
        .start(&node)
        .unwrap();
    assert_eq!(recv(&rx), "start f");
    let down = node.monitor(sup.pid());
    node.send("f", Cmd::Crash).unwrap();
    // One restart plus three failed starts exceed 3 restarts: an escalation, not a panic.
    assert_eq!(recv(&down).reason, ExitReason::IntensityExceeded);
}

#[test]
fn supervisor_linked_to_a_parent_stops_with_it() {
    let node = Node::new();
    let (log, rx) = unbounded();
    let parent = node.spawn(from_fn(|_ctx, ()| Ok(Control::Stop))).unwrap();
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("a", &log))
        .start_with(&node, SpawnOptions::default().link(parent.pid()))
        .unwrap();
    assert_eq!(recv(&rx), "start a");
    let down = node.monitor(sup.pid());
    parent.send(()).unwrap();
    assert_eq!(recv(&down).reason, ExitReason::Normal);
    assert_eq!(recv(&rx), "stop a");
    assert_eq!(node.whereis("a"), None);
}
