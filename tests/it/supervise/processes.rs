//! Processes: ordering, sends and their errors, mailbox overflow, names, exit reasons, the hook.

use super::*;

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
