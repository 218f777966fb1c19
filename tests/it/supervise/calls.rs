//! Calls (`gen_server:call`) and supervisor calls: replies, timeouts, exits mid-call, and
//! the calls that would deadlock failing at once.

use std::time::Instant;

use sockloop::supervise::{CallError, ReplyTo};

use super::*;

enum Req {
    Echo(u32, ReplyTo<u32>),
    Hang(Sender<()>, Receiver<()>, ReplyTo<u32>),
    Panic(ReplyTo<u32>),
    Drop(ReplyTo<u32>),
    SelfCall(Sender<Result<u32, CallError>>),
}

fn server(node: &Node) -> ProcessRef<Req> {
    node.spawn_with(
        from_fn(|ctx: &mut Context<Req>, r: Req| {
            match r {
                Req::Echo(n, reply) => drop(reply.reply(n)),
                Req::Hang(busy, gate, reply) => {
                    busy.send(())?;
                    let _ = gate.recv();
                    reply.reply(0);
                }
                Req::Panic(_reply) => panic!("{PANIC_MARK} mid-call"),
                Req::Drop(reply) => drop(reply),
                Req::SelfCall(out) => {
                    let me = ctx.me().clone();
                    out.send(me.call(|r| Req::Echo(1, r), WAIT))?;
                }
            }
            Ok(Control::Continue)
        }),
        SpawnOptions::default().name("server"),
    )
    .unwrap()
}

#[test]
fn call_returns_the_reply_by_ref_and_by_name() {
    let node = Node::new();
    let s = server(&node);
    assert_eq!(s.call(|r| Req::Echo(7, r), WAIT), Ok(7));
    assert_eq!(node.call("server", |r| Req::Echo(8, r), WAIT), Ok(8));
    assert_eq!(
        node.call("server", |r: ReplyTo<u8>| r, WAIT),
        Err(CallError::WrongType)
    );
    assert_eq!(
        node.call("nobody", |r| Req::Echo(9, r), WAIT),
        Err(CallError::NoProcess)
    );
}

#[test]
fn call_times_out_and_the_late_reply_is_dropped() {
    let node = Node::new();
    let s = server(&node);
    let (busy_tx, busy) = bounded(1);
    let (gate_tx, gate) = bounded(1);
    let caller = {
        let s = s.clone();
        thread::spawn(move || s.call(|r| Req::Hang(busy_tx, gate, r), Duration::from_millis(50)))
    };
    recv(&busy);
    assert_eq!(caller.join().unwrap(), Err(CallError::Timeout));
    gate_tx.send(()).unwrap();
    // The server answered into the void and goes on.
    assert_eq!(s.call(|r| Req::Echo(3, r), WAIT), Ok(3));
}

#[test]
fn callee_dying_mid_call_ends_the_call_at_once_with_its_reason() {
    quiet_test_panics();
    let node = Node::new();
    let s = server(&node);
    let t = Instant::now();
    let err = s.call(Req::Panic, WAIT).unwrap_err();
    assert_eq!(
        err,
        CallError::Exit(ExitReason::Panic(format!("{PANIC_MARK} mid-call")))
    );
    assert!(t.elapsed() < WAIT / 2, "waited for the timeout");
    assert_eq!(s.call(|r| Req::Echo(1, r), WAIT), Err(CallError::NoProcess));
}

#[test]
fn queued_call_of_a_process_that_stops_gets_its_exit_reason() {
    let node = Node::new();
    let s = server(&node);
    let (busy_tx, busy) = bounded(1);
    let (gate_tx, gate) = bounded(1);
    let hang = {
        let s = s.clone();
        thread::spawn(move || s.call(|r| Req::Hang(busy_tx, gate, r), WAIT))
    };
    recv(&busy);
    let queued = {
        let s = s.clone();
        thread::spawn(move || s.call(|r| Req::Echo(5, r), WAIT))
    };
    wait_until(|| s.mailbox_len() == 1);
    node.stop(s.pid());
    gate_tx.send(()).unwrap();
    // The one being handled is answered; the queued one is dropped with the mailbox.
    assert_eq!(hang.join().unwrap(), Ok(0));
    assert_eq!(
        queued.join().unwrap(),
        Err(CallError::Exit(ExitReason::Shutdown))
    );
}

#[test]
fn dropped_reply_and_self_call_fail_without_waiting() {
    let node = Node::new();
    let s = server(&node);
    let t = Instant::now();
    assert_eq!(s.call(Req::Drop, WAIT), Err(CallError::NoReply));
    let (tx, rx) = bounded(1);
    s.send(Req::SelfCall(tx)).unwrap();
    assert_eq!(recv(&rx), Err(CallError::Deadlock));
    assert!(t.elapsed() < WAIT / 2);
    assert_eq!(s.call(|r| Req::Echo(2, r), WAIT), Ok(2));
}

#[test]
fn supervisor_calls_from_a_hook_init_or_a_stopping_child_are_deadlock_errors() {
    quiet_test_panics();
    let node = Node::new();
    let (out_tx, out) = unbounded();
    let slot: std::sync::Arc<std::sync::Mutex<Option<SupervisorRef>>> = Default::default();
    // The hook runs on the supervisor's thread when it reports a restart.
    let (hook_slot, hook_out) = (slot.clone(), out_tx.clone());
    node.set_hook(move |e| {
        if let SystemEvent::Restarted { .. } = e {
            let sup = hook_slot.lock().unwrap().clone().unwrap();
            drop(hook_out.send(("hook", sup.which_children().map(|_| ()))));
        }
    });
    let (init_slot, init_out) = (slot.clone(), out_tx.clone());
    let calls_in_init = ChildSpec::worker("caller", move || CallsSupervisor {
        slot: init_slot.clone(),
        out: init_out.clone(),
    })
    .register_as("caller");
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .start(&node)
        .unwrap()
        .with_timeout(WAIT);
    *slot.lock().unwrap() = Some(sup.clone());
    let t = Instant::now();
    sup.start_child(calls_in_init).unwrap();
    assert_eq!(recv(&out), ("init", Err(SupervisorError::Deadlock)));
    // A crash: the new instance's init runs, then the hook reports the restart.
    node.send(node.whereis("caller").unwrap(), ()).unwrap();
    assert_eq!(recv(&out), ("init", Err(SupervisorError::Deadlock)));
    assert_eq!(recv(&out), ("hook", Err(SupervisorError::Deadlock)));
    sup.terminate_child("caller").unwrap();
    assert_eq!(recv(&out), ("terminate", Err(SupervisorError::Deadlock)));
    assert!(t.elapsed() < WAIT / 2, "a call waited for its timeout");
    // From anywhere else the supervisor answers.
    assert_eq!(sup.count_children().unwrap().specs, 1);
}

/// Calls its supervisor from `init` and `terminate`; crashes on any message.
struct CallsSupervisor {
    slot: std::sync::Arc<std::sync::Mutex<Option<SupervisorRef>>>,
    out: Sender<(&'static str, Result<(), SupervisorError>)>,
}

impl CallsSupervisor {
    fn ask(&self, when: &'static str) {
        let sup = self.slot.lock().unwrap().clone().unwrap();
        drop(self.out.send((when, sup.which_children().map(|_| ()))));
    }
}

impl Process for CallsSupervisor {
    type Msg = ();
    fn init(&mut self, _ctx: &mut Context<()>) -> Result<(), sockloop::supervise::BoxError> {
        self.ask("init");
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<()>, _: ()) -> Handled {
        Err("crash on purpose".into())
    }
    fn terminate(&mut self, _ctx: &mut Context<()>, reason: &ExitReason) {
        if *reason == ExitReason::Shutdown {
            self.ask("terminate");
        }
    }
}

#[test]
fn supervisor_call_times_out_while_it_waits_for_a_stuck_child() {
    let node = Node::new();
    let (busy_tx, busy) = bounded(1);
    let (gate_tx, gate) = bounded::<()>(1);
    let stuck = ChildSpec::worker("stuck", move || {
        let (busy_tx, gate) = (busy_tx.clone(), gate.clone());
        from_fn(move |_ctx, ()| {
            busy_tx.send(())?;
            let _ = gate.recv();
            Ok(Control::Continue)
        })
    })
    .shutdown(WAIT)
    .register_as("stuck");
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .child(stuck)
        .start(&node)
        .unwrap();
    node.send("stuck", ()).unwrap();
    recv(&busy);
    let stopper = {
        let sup = sup.clone();
        thread::spawn(move || sup.terminate_child("stuck"))
    };
    let quick = sup.clone().with_timeout(Duration::from_millis(50));
    // The supervisor is inside terminate_child, waiting for the stuck child.
    wait_until(|| node.lookup::<()>("stuck").is_none_or(|r| !r.is_alive()));
    assert_eq!(quick.which_children(), Err(SupervisorError::Timeout));
    gate_tx.send(()).unwrap();
    assert_eq!(stopper.join().unwrap(), Ok(()));
    assert_eq!(quick.which_children().unwrap()[0].pid, None);
}
