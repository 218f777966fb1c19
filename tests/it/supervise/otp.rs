//! OTP's everyday tools: group restarts of every spec, restart backoff, child counts and
//! specs, registered names, monitors by name, the rejected zero period, and budgets that
//! never blame a supervisor or a detached process.

use std::time::Instant;

use super::*;

#[test]
fn one_for_all_restarts_every_spec_including_stopped_and_normally_ended_ones() {
    quiet_test_panics();
    let node = Node::new();
    let (log, rx) = unbounded();
    let sup = SupervisorSpec::new(Strategy::OneForAll)
        .intensity(10, Duration::from_secs(60))
        .child(worker("a", &log))
        .child(worker("b", &log).restart(Restart::Transient))
        .child(worker("c", &log))
        .child(worker("t", &log).restart(Restart::Temporary))
        .start(&node)
        .unwrap();
    assert_eq!(take(&rx, 4), ["start a", "start b", "start c", "start t"]);
    sup.terminate_child("c").unwrap();
    assert_eq!(recv(&rx), "stop c");
    node.send("b", Cmd::Stop).unwrap();
    assert_eq!(recv(&rx), "stop b");
    wait_until(|| pids(&sup)[1].is_none());
    node.send("a", Cmd::Crash).unwrap();
    // The temporary child is stopped and gone; a, b and c all start again.
    assert_eq!(
        take(&rx, 5),
        ["stop a", "stop t", "start a", "start b", "start c"]
    );
    let after = pids(&sup);
    assert_eq!(after.len(), 3);
    assert!(after.iter().all(Option::is_some), "{after:?}");
}

#[test]
fn rest_for_one_restarts_later_specs_even_if_stopped() {
    quiet_test_panics();
    let node = Node::new();
    let (log, rx) = unbounded();
    let sup = abc(Strategy::RestForOne, &log).start(&node).unwrap();
    assert_eq!(take(&rx, 3), ["start a", "start b", "start c"]);
    sup.terminate_child("c").unwrap();
    assert_eq!(recv(&rx), "stop c");
    node.send("b", Cmd::Crash).unwrap();
    assert_eq!(take(&rx, 3), ["stop b", "start b", "start c"]);
    assert!(pids(&sup).iter().all(Option::is_some));
}

#[test]
fn restart_delay_backs_off_and_the_supervisor_answers_meanwhile() {
    quiet_test_panics();
    let node = Node::new();
    let (log, rx) = unbounded();
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(60))
        // A first delay long enough that a loaded machine still asks during it.
        .child(worker("d", &log).restart_delay(Duration::from_millis(800), Duration::from_secs(5)))
        .start(&node)
        .unwrap();
    assert_eq!(recv(&rx), "start d");
    let mut delays = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        node.send("d", Cmd::Crash).unwrap();
        assert_eq!(recv(&rx), "stop d");
        // The child logs its stop before the supervisor has its exit signal, so poll: the
        // supervisor must answer "stopped" during the delay. A supervisor that slept through
        // the delay would only ever answer with the restarted pid, and this would time out.
        let deadline = Instant::now() + WAIT;
        while pids(&sup) != [None] {
            assert!(
                rx.is_empty(),
                "restarted before the supervisor answered stopped"
            );
            assert!(
                Instant::now() < deadline,
                "the supervisor never saw the exit"
            );
            thread::yield_now();
        }
        assert_eq!(recv(&rx), "start d");
        delays.push(t.elapsed());
    }
    for (got, min) in delays.iter().zip([800, 1600]) {
        assert!(*got >= Duration::from_millis(min), "{delays:?}");
    }
    assert!(pids(&sup)[0].is_some());
}

#[test]
fn zero_intensity_period_is_rejected() {
    let node = Node::new();
    let (log, rx) = unbounded();
    let err = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(3, Duration::ZERO)
        .child(worker("a", &log))
        .start(&node)
        .unwrap_err();
    assert!(matches!(err, SpawnError::InvalidSpec(_)), "{err:?}");
    assert!(rx.try_recv().is_err(), "a child started");
    assert_eq!(node.process_count(), 0);
}

#[test]
fn counts_specs_names_and_monitors_by_name() {
    let node = Node::new();
    let (log, _rx) = unbounded();
    let inner = SupervisorSpec::new(Strategy::OneForOne).child(worker("x", &log));
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("a", &log))
        .child(ChildSpec::supervisor("inner", inner))
        .child(worker("b", &log))
        .start(&node)
        .unwrap();
    sup.terminate_child("b").unwrap();
    let c = sup.count_children().unwrap();
    assert_eq!((c.specs, c.active, c.supervisors, c.workers), (3, 2, 1, 2));
    let spec = sup.get_childspec("inner").unwrap();
    assert_eq!(spec.id(), "inner");
    assert_eq!(
        sup.get_childspec("nope").unwrap_err(),
        SupervisorError::NotFound("nope".into())
    );
    assert_eq!(node.registered(), ["a", "x"]);
    let a = node.whereis("a").unwrap();
    let down = node.monitor("a");
    node.send("a", Cmd::Stop).unwrap();
    let d = recv(&down);
    assert_eq!((d.pid, d.reason), (a, ExitReason::Normal));
    assert_eq!(recv(&node.monitor("nobody")).reason, ExitReason::NoProc);
    let p = node.lookup::<Cmd>("x").unwrap();
    assert_eq!(p.mailbox_len(), 0);
}

#[test]
fn over_budget_is_never_reported_for_a_supervisor_or_a_detached_process() {
    let node =
        Node::with_config(NodeConfig::default().message_budget(Some(Duration::from_millis(5))));
    let ev = events(&node);
    let (gate_tx, gate) = bounded::<()>(0);
    let (busy_tx, busy) = bounded(1);
    let (ended_tx, ended) = unbounded();
    let slow_stop = ChildSpec::worker("slow-stop", || SlowStop);
    let stuck = ChildSpec::worker("stuck", move || {
        let (gate, busy_tx) = (gate.clone(), busy_tx.clone());
        let guard = OnDrop(ended_tx.clone());
        from_fn(move |_ctx: &mut Context<()>, ()| {
            let _ = &guard;
            busy_tx.send(())?;
            gate.recv()?;
            Ok(Control::Continue)
        })
    })
    .shutdown(Duration::from_millis(20))
    .register_as("stuck");
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .child(slow_stop)
        .child(stuck)
        .start(&node)
        .unwrap();
    // The supervisor waits 30 ms for this child to stop: no overrun of its own.
    sup.terminate_child("slow-stop").unwrap();
    node.send("stuck", ()).unwrap();
    recv(&busy);
    let stuck_pid = node.whereis("stuck").unwrap();
    sup.terminate_child("stuck").unwrap();
    // Detached; its message now ends after 20+ ms, well over the budget.
    gate_tx.send(()).unwrap();
    recv(&ended);
    let blamed: Vec<Pid> = ev
        .try_iter()
        .filter_map(|e| match e {
            SystemEvent::OverBudget { pid, .. } => Some(pid),
            _ => None,
        })
        .collect();
    assert!(!blamed.contains(&sup.pid()), "the supervisor was blamed");
    assert!(!blamed.contains(&stuck_pid), "a detached process reported");
}

/// Takes 30 ms to terminate.
struct SlowStop;

impl Process for SlowStop {
    type Msg = ();
    fn handle(&mut self, _ctx: &mut Context<()>, _: ()) -> Handled {
        Ok(Control::Continue)
    }
    fn terminate(&mut self, _ctx: &mut Context<()>, _reason: &ExitReason) {
        // Simulated cleanup work.
        thread::sleep(Duration::from_millis(30));
    }
}
