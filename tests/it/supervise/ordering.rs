//! OTP's stop and ordering guarantees: a stop or a deadly exit signal is taken after the
//! current message, never after a backlog; a message sent before an exit is handled before
//! that exit's EXIT or DOWN.

use super::*;

/// A process that reports each message it starts, then waits for one gate token.
fn gated(node: &Node) -> (ProcessRef<u32>, Receiver<u32>, Sender<()>, Receiver<()>) {
    let (started_tx, started) = unbounded();
    let (gate_tx, gate) = unbounded::<()>();
    let (term_tx, term) = unbounded();
    let guard = OnDrop(term_tx);
    let p = node
        .spawn(from_fn(move |_ctx, n: u32| {
            let _ = &guard;
            started_tx.send(n)?;
            gate.recv()?;
            Ok(Control::Continue)
        }))
        .unwrap();
    (p, started, gate_tx, term)
}

/// Queues 100 messages behind a busy one; returns the process and its channels.
fn busy_with_backlog(node: &Node) -> (ProcessRef<u32>, Receiver<u32>, Sender<()>, Receiver<()>) {
    let (p, started, gate, term) = gated(node);
    for n in 0..101 {
        p.send(n).unwrap();
    }
    assert_eq!(recv(&started), 0);
    assert_eq!(p.mailbox_len(), 100);
    (p, started, gate, term)
}

/// Releases the gate for every message, and returns the messages started after the first.
fn drain_after_exit(started: &Receiver<u32>, gate: &Sender<()>, term: &Receiver<()>) -> Vec<u32> {
    for _ in 0..101 {
        // Fails once the process is gone (its gate with it).
        let _ = gate.send(());
    }
    recv(term); // the process state is dropped: nothing more can start
    started.try_iter().collect()
}

#[test]
fn stop_is_taken_after_the_current_message_not_after_the_backlog() {
    let node = Node::new();
    let (p, started, gate, term) = busy_with_backlog(&node);
    let down = node.monitor(p.pid());
    assert!(node.stop(p.pid()));
    assert!(matches!(p.send(7), Err(SendError::NoProcess(7))));
    let late = drain_after_exit(&started, &gate, &term);
    assert_eq!(recv(&down).reason, ExitReason::Shutdown);
    assert_eq!(late, Vec::<u32>::new(), "messages handled after stop()");
}

#[test]
fn exit_signal_of_a_link_is_taken_after_the_current_message() {
    quiet_test_panics();
    let node = Node::new();
    let (p, started, gate, term) = busy_with_backlog(&node);
    let down = node.monitor(p.pid());
    // A normal exit signal is ignored by a process that does not trap exits.
    assert!(node.exit(p.pid(), ExitReason::Normal), "alive");
    // Linked while it is busy: the link is made by the new process's spawn.
    let link = SpawnOptions::default().link(p.pid());
    let linked = node
        .spawn_with(from_fn(|_ctx, ()| Err("linked peer fails".into())), link)
        .unwrap();
    let linked_down = node.monitor(linked.pid());
    linked.send(()).unwrap();
    recv(&linked_down); // its exit signal is on its way: queued before DOWN was sent
    let late = drain_after_exit(&started, &gate, &term);
    assert_eq!(
        recv(&down).reason,
        ExitReason::Error("linked peer fails".into())
    );
    assert_eq!(late, Vec::<u32>::new(), "messages handled after the exit");
}

#[test]
fn node_exit_kills_a_busy_process_after_its_message_and_is_trapped_in_order() {
    let node = Node::new();
    let (p, started, gate, term) = busy_with_backlog(&node);
    let down = node.monitor(p.pid());
    assert!(node.exit(p.pid(), ExitReason::Error("killed".into())));
    let late = drain_after_exit(&started, &gate, &term);
    assert_eq!(recv(&down).reason, ExitReason::Error("killed".into()));
    assert!(late.is_empty(), "{late:?}");
    // A trapping process gets it as a message, with `<0>` as sender from outside.
    let (w, (exits, _)) = watcher(&node, true);
    assert!(node.exit(w.pid(), ExitReason::Shutdown));
    let (from, reason) = recv(&exits);
    assert_eq!((from.as_u64(), reason), (0, ExitReason::Shutdown));
    assert!(!node.exit(p.pid(), ExitReason::Shutdown), "dead");
}

#[test]
fn well_behaved_child_with_a_backlog_stops_in_time_and_is_not_detached() {
    let node = Node::new();
    let ev = events(&node);
    let (handled_tx, handled) = unbounded();
    let (busy_tx, busy) = unbounded();
    let spec = ChildSpec::worker("slow", move || {
        let (handled_tx, busy_tx) = (handled_tx.clone(), busy_tx.clone());
        from_fn(move |_ctx, n: u32| {
            busy_tx.send(())?;
            // Simulated work: 20 ms per message, 100 messages queued.
            thread::sleep(Duration::from_millis(20));
            handled_tx.send(n)?;
            Ok(Control::Continue)
        })
    })
    .shutdown(Duration::from_millis(500))
    .register_as("slow");
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .child(spec)
        .start(&node)
        .unwrap();
    let slow = node.lookup::<u32>("slow").unwrap();
    for n in 0..100 {
        slow.send(n).unwrap();
    }
    recv(&busy);
    sup.terminate_child("slow").unwrap();
    assert!(!node.is_alive(slow.pid()));
    let detached = ev
        .try_iter()
        .any(|e| matches!(e, SystemEvent::ChildDetached { .. }));
    assert!(!detached, "a well-behaved child was detached");
    let done: Vec<u32> = handled.try_iter().collect();
    assert!(
        done.len() <= 2,
        "handled {} messages after stop",
        done.len()
    );
}

/// Records, in order, what a busy watcher saw: user messages and DOWN/EXIT notifications.
struct Recorder {
    log: Sender<String>,
    gate: Receiver<()>,
    busy: Sender<()>,
}

enum RMsg {
    Monitor(Pid, Sender<()>),
    Link(Pid, Sender<()>),
    Block,
    Text(&'static str),
}

impl Process for Recorder {
    type Msg = RMsg;
    fn init(&mut self, ctx: &mut Context<RMsg>) -> Result<(), sockloop::supervise::BoxError> {
        ctx.trap_exit(true);
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Context<RMsg>, msg: RMsg) -> Handled {
        match msg {
            RMsg::Monitor(p, done) => drop((ctx.monitor(p), done.send(()))),
            RMsg::Link(p, done) => drop((ctx.link(p), done.send(()))),
            RMsg::Block => {
                self.busy.send(())?;
                self.gate.recv()?;
            }
            RMsg::Text(t) => self.log.send(t.to_owned())?,
        }
        Ok(Control::Continue)
    }
    fn handle_down(&mut self, _ctx: &mut Context<RMsg>, _down: Down) -> Handled {
        self.log.send("DOWN".into())?;
        Ok(Control::Continue)
    }
    fn handle_exit(&mut self, _ctx: &mut Context<RMsg>, _from: Pid, _r: ExitReason) -> Handled {
        self.log.send("EXIT".into())?;
        Ok(Control::Continue)
    }
}

/// One run: the sender sends "last" to a busy recorder and exits; the recorder must see
/// "last" before the notification.
fn last_message_then(node: &Node, link: bool) -> Vec<String> {
    let (log, seen) = unbounded();
    let (gate_tx, gate) = unbounded();
    let (busy, is_busy) = unbounded();
    let rec = node.spawn(Recorder { log, gate, busy }).unwrap();
    let to = rec.clone();
    let sender = node
        .spawn(from_fn(move |_ctx, ()| {
            to.send(RMsg::Text("last"))?;
            Ok(Control::Exit(ExitReason::Error("bye".into())))
        }))
        .unwrap();
    let (done, watching) = bounded(1);
    let cmd = if link { RMsg::Link } else { RMsg::Monitor };
    rec.send(cmd(sender.pid(), done)).unwrap();
    recv(&watching);
    rec.send(RMsg::Block).unwrap();
    recv(&is_busy);
    let gone = node.monitor(sender.pid());
    sender.send(()).unwrap();
    recv(&gone); // the sender is dead: its notification is queued at the recorder
    gate_tx.send(()).unwrap();
    let out = vec![recv(&seen), recv(&seen)];
    node.stop(rec.pid());
    out
}

#[test]
fn last_message_precedes_down_at_a_busy_watcher_20_of_20() {
    let node = Node::new();
    for run in 0..20 {
        assert_eq!(
            last_message_then(&node, false),
            ["last", "DOWN"],
            "run {run}"
        );
    }
}

#[test]
fn last_message_precedes_a_trapped_exit_at_a_busy_linked_process_20_of_20() {
    let node = Node::new();
    for run in 0..20 {
        assert_eq!(
            last_message_then(&node, true),
            ["last", "EXIT"],
            "run {run}"
        );
    }
}

#[test]
fn mailboxes_grow_on_demand_and_count_only_user_messages() {
    let node = Node::with_config(NodeConfig::default().mailbox_capacity(3));
    let (p, started, gate, _term) = gated(&node);
    p.send(0).unwrap();
    assert_eq!(recv(&started), 0);
    let down_watch = node.monitor(p.pid());
    for n in 1..4 {
        p.send(n).unwrap();
    }
    assert!(matches!(p.send(9), Err(SendError::MailboxFull(9))));
    assert_eq!(p.mailbox_len(), 3);
    gate.send(()).unwrap();
    assert_eq!(recv(&started), 1);
    assert_eq!(p.mailbox_len(), 2);
    p.send(4).unwrap();
    for _ in 0..4 {
        gate.send(()).unwrap();
    }
    let rest: Vec<u32> = (0..3).map(|_| recv(&started)).collect();
    assert_eq!(rest, [2, 3, 4]);
    node.stop(p.pid());
    recv(&down_watch);
}
