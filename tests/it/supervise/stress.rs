//! Panic loops and message loss under restarts.

use super::*;

/// Live threads whose name starts with `prefix`.
pub(super) fn threads_named(prefix: &str) -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    let comm = |e: std::fs::DirEntry| std::fs::read_to_string(e.path().join("comm")).ok();
    tasks
        .filter_map(|e| comm(e.ok()?))
        .filter(|c| c.starts_with(prefix))
        .count()
}

fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
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
    // Named threads: other tests in this binary run alongside and leave their own.
    let node = Node::with_config(NodeConfig::default().thread_name("bomb"));
    let (started, instances) = unbounded();
    let spec = ChildSpec::worker("p", move || Bomb(started.clone()));
    let _sup = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(u32::MAX, Duration::from_millis(1))
        .child(spec)
        .start(&node)
        .unwrap();
    let mut current = recv(&instances);
    assert_eq!(threads_named("bomb-"), 2, "a supervisor and its child");
    let rss0 = rss_kib();
    for _ in 0..10_000 {
        current.send(()).unwrap();
        current = recv(&instances);
    }
    // Exited threads leave /proc/self/task as they finish: back to the two live ones.
    wait_until(|| threads_named("bomb-") == 2);
    // Process-wide: a failing test elsewhere in the binary that symbolizes a backtrace
    // also grows it. Alone, 80,000 panics stay within 0.2 MiB.
    let rss1 = rss_kib();
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
