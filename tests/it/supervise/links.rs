//! Links, trapped exits and monitors.

use super::*;

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
