//! Timers (`send_after`, `send_interval`, cancel) from one timer thread per node, and the
//! receive timeout of a process.

use std::time::Instant;

use super::stress::threads_named;
use super::*;

fn sink(node: &Node) -> (ProcessRef<u32>, Receiver<(u32, Instant)>) {
    let (tx, rx) = unbounded();
    let p = node
        .spawn(from_fn(move |_ctx, n: u32| {
            tx.send((n, Instant::now()))?;
            Ok(Control::Continue)
        }))
        .unwrap();
    (p, rx)
}

#[test]
fn send_after_fires_once_after_its_delay_and_cancel_prevents_it() {
    let node = Node::new();
    let (p, rx) = sink(&node);
    let t0 = Instant::now();
    let cancelled = node.send_after(&p, Duration::from_millis(20), 1);
    let fired = node.send_after(&p, Duration::from_millis(40), 2);
    assert!(cancelled.cancel());
    assert!(!cancelled.cancel(), "cancelled twice");
    let (n, at) = recv(&rx);
    assert_eq!(n, 2, "the cancelled timer fired");
    assert!(at - t0 >= Duration::from_millis(40));
    assert!(
        !fired.cancel(),
        "a fired one-shot timer cannot be cancelled"
    );
    assert!(!fired.is_active());
    p.send(3).unwrap();
    assert_eq!(recv(&rx).0, 3, "nothing else was sent");
}

#[test]
fn send_interval_ticks_until_cancelled() {
    let node = Node::new();
    let (p, rx) = sink(&node);
    let t = node.send_interval(&p, Duration::from_millis(2), 7);
    let ticks: Vec<u32> = (0..5).map(|_| recv(&rx).0).collect();
    assert_eq!(ticks, [7; 5]);
    assert!(t.cancel());
    // At most the tick being sent while it was cancelled arrives after that.
    node.send_after(&p, Duration::from_millis(30), 99);
    let after: Vec<u32> = std::iter::from_fn(|| Some(recv(&rx).0))
        .take_while(|n| *n != 99)
        .collect();
    assert!(after.len() <= 1, "{} ticks after cancel", after.len());
}

#[test]
fn interval_to_a_dead_process_stops_itself() {
    let node = Node::new();
    let (p, rx) = sink(&node);
    let t = node.send_interval(&p, Duration::from_millis(1), 1);
    recv(&rx);
    let down = node.monitor(p.pid());
    node.stop(p.pid());
    recv(&down);
    wait_until(|| !t.is_active());
    assert!(!t.cancel());
}

#[test]
fn a_thousand_timers_use_one_timer_thread() {
    let node = Node::with_config(NodeConfig::default().thread_name("tmr1k"));
    let (p, rx) = sink(&node);
    let timers: Vec<_> = (0..1000)
        .map(|i| node.send_after(&p, Duration::from_millis(1 + i % 50), i as u32))
        .collect();
    let mut got: Vec<u32> = (0..1000).map(|_| recv(&rx).0).collect();
    got.sort_unstable();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert_eq!(threads_named("tmr1k-timer"), 1);
    assert_eq!(
        threads_named("tmr1k-"),
        2,
        "the timer thread and the process"
    );
    assert!(timers.iter().all(|t| !t.is_active()));
}

/// Reports how long it had been quiet each time its receive timeout fires; clears the
/// timeout after three.
struct Quiet {
    last: Instant,
    fired: u32,
    out: Sender<Result<Duration, u32>>,
}

impl Process for Quiet {
    type Msg = u32;
    fn init(&mut self, ctx: &mut Context<u32>) -> Result<(), sockloop::supervise::BoxError> {
        ctx.set_receive_timeout(Some(Duration::from_millis(30)));
        self.last = Instant::now();
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Context<u32>, n: u32) -> Handled {
        self.last = Instant::now();
        if n == 1 {
            // From a timer: sent to itself.
            ctx.send_after(Duration::from_millis(1), 2);
        }
        self.out.send(Err(n))?;
        Ok(Control::Continue)
    }
    fn handle_timeout(&mut self, ctx: &mut Context<u32>) -> Handled {
        self.fired += 1;
        self.out.send(Ok(self.last.elapsed()))?;
        self.last = Instant::now();
        if self.fired == 3 {
            ctx.set_receive_timeout(None);
        }
        Ok(Control::Continue)
    }
}

#[test]
fn receive_timeout_fires_only_after_a_quiet_period_and_can_be_cleared() {
    let node = Node::new();
    let (out, rx) = unbounded();
    let q = node
        .spawn(Quiet {
            last: Instant::now(),
            fired: 0,
            out,
        })
        .unwrap();
    for n in [1, 3, 4] {
        q.send(n).unwrap();
    }
    let mut quiet = Vec::new();
    let mut msgs = Vec::new();
    while quiet.len() < 3 {
        match recv(&rx) {
            Ok(d) => quiet.push(d),
            Err(n) => msgs.push(n),
        }
    }
    assert!(
        quiet.iter().all(|d| *d >= Duration::from_millis(30)),
        "fired before 30 ms of quiet: {quiet:?}"
    );
    msgs.extend(rx.try_iter().filter_map(Result::err));
    msgs.sort_unstable();
    assert_eq!(msgs, [1, 2, 3, 4]);
    // Cleared: a message still gets through, and no timeout follows it (checked against
    // a marker sent by a timer well after the timeout would have fired).
    q.send(5).unwrap();
    assert_eq!(recv(&rx), Err(5));
    node.send_after(&q, Duration::from_millis(100), 6);
    assert_eq!(recv(&rx), Err(6), "a cleared receive timeout fired");
}
