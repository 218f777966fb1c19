//! Supervision benchmarks (`cargo bench --bench supervise`), medians of several runs:
//!
//! - one-way streaming of `u64` messages from process A to process B (A sends with
//!   `send_timeout`, B counts), with and without a per-message time budget;
//! - ping-pong round trips between two processes (latency-bound: two thread wake-ups each);
//! - spawn time: `spawn` (waits for `init`) + first message handled and answered;
//! - restart latency: from sending the message that makes a supervised child panic to its
//!   new instance answering its first message.
//!
//! `BENCH_RUNS` (default 5) sets the number of runs; `BENCH_ONLY` a filter
//! (`stream`, `pingpong`, `spawn`, `restart`).

mod common;

use common::*;

use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use sockloop::supervise::{
    from_fn, BoxError, ChildSpec, Context, Control, Handled, Node, NodeConfig, Process, ProcessRef,
    Strategy, SupervisorSpec,
};

const STREAM_MSGS: u64 = 20_000_000;
const PINGS: u64 = 50_000;
const SPAWNS: usize = 2_000;
const RESTARTS: usize = 2_000;
const WAIT: Duration = Duration::from_secs(60);

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p) as usize]
}

/// B: counts messages and reports when `n` arrived.
fn counter(n: u64, done: Sender<Instant>) -> impl Process<Msg = u64> {
    let mut seen = 0u64;
    from_fn(move |_ctx, _m: u64| {
        seen += 1;
        if seen == n {
            done.send(Instant::now())?;
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    })
}

/// A: on `go`, streams `n` messages to `to`, waiting for room when the mailbox is full.
fn streamer(n: u64, to: ProcessRef<u64>) -> impl Process<Msg = ()> {
    from_fn(move |_ctx, ()| {
        for i in 0..n {
            to.send_timeout(i, WAIT)?;
        }
        Ok(Control::Stop)
    })
}

/// Messages per second, A to B, one run.
fn stream_once(node: &Node) -> f64 {
    let (done, finished) = bounded(1);
    let b = node.spawn(counter(STREAM_MSGS, done)).unwrap();
    let a = node.spawn(streamer(STREAM_MSGS, b)).unwrap();
    let start = Instant::now();
    a.send(()).unwrap();
    let end: Instant = finished.recv_timeout(WAIT).unwrap();
    STREAM_MSGS as f64 / (end - start).as_secs_f64()
}

fn bench_stream() {
    let plain = Node::new();
    let budget = Some(Duration::from_millis(10));
    let timed = Node::with_config(NodeConfig::default().message_budget(budget));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs(5) {
        a.push(stream_once(&plain));
        b.push(stream_once(&timed));
    }
    println!("stream_msgs_per_s={:.0}", median(a));
    println!("stream_with_budget_msgs_per_s={:.0}", median(b));
}

/// One side of ping-pong: answers each number with the next, to a fixed peer.
struct Bouncer {
    peer: Receiver<ProcessRef<u64>>,
    to: Option<ProcessRef<u64>>,
    done: Sender<Instant>,
}

impl Process for Bouncer {
    type Msg = u64;
    fn handle(&mut self, _ctx: &mut Context<u64>, n: u64) -> Handled {
        if self.to.is_none() {
            self.to = Some(self.peer.recv()?);
        }
        if n >= PINGS * 2 {
            self.done.send(Instant::now())?;
            return Ok(Control::Stop);
        }
        if let Some(to) = &self.to {
            to.send(n + 1)?;
        }
        Ok(Control::Continue)
    }
}

/// Round trips per second between two processes.
fn pingpong_run(node: &Node) -> f64 {
    let (done, finished) = bounded(2);
    let (a_peer_tx, a_peer) = bounded(1);
    let (b_peer_tx, b_peer) = bounded(1);
    let a = node
        .spawn(Bouncer {
            peer: a_peer,
            to: None,
            done: done.clone(),
        })
        .unwrap();
    let b = node
        .spawn(Bouncer {
            peer: b_peer,
            to: None,
            done,
        })
        .unwrap();
    a_peer_tx.send(b.clone()).unwrap();
    b_peer_tx.send(a.clone()).unwrap();
    let start = Instant::now();
    a.send(0).unwrap();
    let end: Instant = finished.recv_timeout(WAIT).unwrap();
    node.stop(a.pid());
    node.stop(b.pid());
    PINGS as f64 / (end - start).as_secs_f64()
}

fn bench_pingpong() {
    let node = Node::new();
    let v: Vec<f64> = (0..runs(5)).map(|_| pingpong_run(&node)).collect();
    let rt = median(v);
    println!("pingpong_round_trips_per_s={rt:.0}");
    println!("pingpong_round_trip_us={:.2}", 1e6 / rt);
}

/// Microseconds from `spawn` to the first message answered, one sample per spawn.
fn spawn_samples(node: &Node) -> Vec<f64> {
    let (tx, rx) = bounded(1);
    (0..SPAWNS)
        .map(|_| {
            let tx = tx.clone();
            let start = Instant::now();
            let p = node
                .spawn(from_fn(move |_ctx, ()| {
                    tx.send(())?;
                    Ok(Control::Stop)
                }))
                .unwrap();
            p.send(()).unwrap();
            rx.recv_timeout(WAIT).unwrap();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

fn bench_spawn() {
    let node = Node::new();
    let mut med = Vec::new();
    let mut all = Vec::new();
    for _ in 0..runs(5) {
        let s = spawn_samples(&node);
        med.push(median(s.clone()));
        all.extend(s);
    }
    println!("spawn_first_message_us_median={:.1}", median(med));
    println!("spawn_first_message_us_p99={:.1}", percentile(all, 0.99));
}

/// A supervised child: reports each new instance from `init`, panics on `true`, answers
/// `false`.
struct Crashy {
    started: Sender<ProcessRef<(bool, Sender<()>)>>,
}

impl Process for Crashy {
    type Msg = (bool, Sender<()>);
    fn init(&mut self, ctx: &mut Context<Self::Msg>) -> Result<(), BoxError> {
        self.started.send(ctx.me().clone())?;
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<Self::Msg>, (crash, reply): Self::Msg) -> Handled {
        if crash {
            panic!("bench-panic");
        }
        reply.send(())?;
        Ok(Control::Continue)
    }
}

/// Microseconds from the crash message to the new instance's first answer.
fn restart_samples(node: &Node) -> Vec<f64> {
    let (started, instances) = crossbeam_channel::unbounded();
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(u32::MAX, Duration::from_millis(1))
        .child(ChildSpec::worker("c", move || Crashy {
            started: started.clone(),
        }))
        .start(node)
        .unwrap();
    let (reply, answered) = bounded(1);
    let mut current = instances.recv_timeout(WAIT).unwrap();
    let samples = (0..RESTARTS)
        .map(|_| {
            let start = Instant::now();
            current.send((true, reply.clone())).unwrap();
            current = instances.recv_timeout(WAIT).unwrap();
            current.send((false, reply.clone())).unwrap();
            answered.recv_timeout(WAIT).unwrap();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    node.stop(sup.pid());
    samples
}

fn bench_restart() {
    // Keep the benchmark's own panics off stderr.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"bench-panic") {
            default(info);
        }
    }));
    let node = Node::new();
    let mut med = Vec::new();
    let mut all = Vec::new();
    for _ in 0..runs(5) {
        let s = restart_samples(&node);
        med.push(median(s.clone()));
        all.extend(s);
    }
    println!("restart_to_first_message_us_median={:.1}", median(med));
    println!(
        "restart_to_first_message_us_p99={:.1}",
        percentile(all, 0.99)
    );
}

/// How many idle processes one node holds, and what each costs: spawns `n` processes that
/// each answered one message, then reports RSS growth per process and the spawn rate.
fn bench_capacity() {
    for n in [1_000usize, 5_000, 10_000] {
        let node = Node::new();
        let (tx, rx) = crossbeam_channel::unbounded();
        let before = rss_bytes();
        let t = Instant::now();
        let mut procs = Vec::with_capacity(n);
        for _ in 0..n {
            let tx = tx.clone();
            match node.spawn(from_fn(move |_: &mut Context<u64>, m: u64| -> Handled {
                let _ = tx.send(m);
                Ok(Control::Continue)
            })) {
                Ok(p) => procs.push(p),
                Err(e) => {
                    println!("capacity: spawn {} failed: {e}", procs.len());
                    break;
                }
            }
        }
        for p in &procs {
            let _ = p.send(1);
        }
        let answered = (0..procs.len())
            .filter(|_| rx.recv_timeout(Duration::from_secs(30)).is_ok())
            .count();
        let took = t.elapsed();
        let grew = rss_bytes().saturating_sub(before);
        println!(
            "capacity processes={} answered={answered} rss_per_process={} B spawn_rate={:.0}/s",
            procs.len(),
            grew / procs.len().max(1) as u64,
            procs.len() as f64 / took.as_secs_f64()
        );
        drop(procs);
        node.shutdown(Duration::from_secs(30));
    }
}

fn main() {
    println!("runs={}", runs(5));
    if wanted("capacity", false) {
        bench_capacity();
    }
    if wanted("stream", true) {
        bench_stream();
    }
    if wanted("pingpong", true) {
        bench_pingpong();
    }
    if wanted("spawn", true) {
        bench_spawn();
    }
    if wanted("restart", true) {
        bench_restart();
    }
}
