//! Supervisors: strategies, order, intensity and escalation, restart types, run-time children, detach.

use super::*;

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

#[test]
fn node_shutdown_stops_trees_in_reverse_order_without_restarts() {
    let node = Node::new();
    let ev = events(&node);
    let (log, rx) = unbounded();
    let inner = SupervisorSpec::new(Strategy::OneForOne).child(worker("c", &log));
    let _sup = SupervisorSpec::new(Strategy::OneForAll)
        .child(worker("a", &log))
        .child(ChildSpec::supervisor("inner", inner))
        .child(worker("b", &log))
        .start(&node)
        .unwrap();
    let (loose_log, loose_rx) = unbounded();
    node.spawn(Worker {
        id: "loose",
        log: loose_log,
    })
    .unwrap();
    assert_eq!(take(&rx, 3), ["start a", "start c", "start b"]);
    assert_eq!(recv(&loose_rx), "start loose");
    assert_eq!(node.shutdown(WAIT), 0);
    assert_eq!(take(&rx, 3), ["stop b", "stop c", "stop a"]);
    assert_eq!(recv(&loose_rx), "stop loose");
    assert_eq!(node.process_count(), 0);
    assert!(rx.try_recv().is_err());
    let restarted = ev
        .try_iter()
        .any(|e| matches!(e, SystemEvent::Restarted { .. }));
    assert!(!restarted, "a child was restarted during shutdown");
}
