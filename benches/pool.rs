//! The handler pool's fast path: the WebSocket echo of `benches/websocket.rs`, but with the
//! handler on the runtime's handler threads (`Dispatch::Threads`, the default) instead of
//! inline on the poller. This process (one poller, one initial handler thread) is pinned to
//! core 1, wsbench (one thread) to core 0, on loopback.
//!
//! ```text
//! cargo build --release --manifest-path ../shared/tools/wsbench/Cargo.toml
//! cargo bench --bench pool                       # threads echo d8, threads echo d1
//! BENCH_ONLY=echo1 BENCH_RUNS=5 cargo bench --bench pool
//! ```
//!
//! Besides wsbench's rate and latency, each row prints the server's CPU time per round
//! trip (user + system, all its threads) and voluntary context switches per round trip,
//! which a loaded machine disturbs less.
//!
//! `BENCH_RUNS` (default 3) sets the runs per figure (the median is printed), `BENCH_ONLY`
//! a comma-separated filter (`echo8`, `echo1`), `WSBENCH` the path of the wsbench binary.

mod common;

use common::*;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sockloop::supervise::SystemEvent;
use sockloop::{Dispatch, Runtime, Server};

/// CPU time this process used so far (user + system), and its voluntary context switches.
fn usage() -> (Duration, u64) {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_nvcsw as u64)
}

/// Processes started on the runtime's node (handler threads the pool added, after the
/// initial one), counted by the node's hook.
static STARTED: AtomicUsize = AtomicUsize::new(0);

fn echo(bin: &Path, server: &Server, depth: usize) {
    let addr = server.local_addr().to_string();
    let (mut rates, mut p99) = (Vec::new(), Vec::new());
    let (mut cpu, mut switches) = (Vec::new(), Vec::new());
    for _ in 0..runs(3) {
        let args = echo_args(&addr, depth);
        let started = STARTED.load(Ordering::Relaxed);
        let before = usage();
        let kv = run_wsbench(bin, &args).0;
        let after = usage();
        let msgs = field(&kv, "msgs").max(1.0);
        cpu.push(after.0.saturating_sub(before.0).as_nanos() as f64 / msgs);
        switches.push((after.1 - before.1) as f64 / msgs);
        rates.push(field(&kv, "rate"));
        p99.push(field(&kv, "p99_us"));
        let (c, w) = (cpu[cpu.len() - 1], switches[switches.len() - 1]);
        println!(
            "  run: {} server_cpu_ns_per_rt={c:.0} server_switches_per_rt={w:.3} threads_started={}",
            fmt(&kv),
            STARTED.load(Ordering::Relaxed) - started
        );
    }
    println!(
        "threads echo depth={depth} conns=100 size=32: median {:.0} round trips/s, p99 {:.0} us, \
         server CPU {:.0} ns and {:.3} voluntary context switches per round trip",
        median(rates),
        median(p99),
        median(cpu),
        median(switches)
    );
}

/// Handler threads running now (the pool's supervisor is `sockloop-handlers`; absent
/// before the elastic pool).
fn handler_threads(rt: &Runtime) -> String {
    let node = rt.node();
    let Some(sup) = node
        .whereis("sockloop-handlers")
        .and_then(|pid| sockloop::supervise::SupervisorRef::from_pid(node, pid))
    else {
        return "?".into();
    };
    let children = sup.which_children().unwrap_or_default();
    children
        .iter()
        .filter(|c| c.pid.is_some())
        .count()
        .to_string()
}

fn main() {
    let Some(bin) = wsbench() else {
        println!("wsbench not built: cargo build --release --manifest-path ../shared/tools/wsbench/Cargo.toml");
        return;
    };
    let rt = server_runtime();
    rt.node().set_hook(|e: &SystemEvent| {
        if let SystemEvent::Started { .. } = e {
            STARTED.fetch_add(1, Ordering::Relaxed);
        }
    });
    let server = ws_echo_server(&rt, Dispatch::Threads);
    if wanted("echo8", true) {
        echo(&bin, &server, 8);
        println!("  handler threads: {}", handler_threads(&rt));
    }
    if wanted("echo1", true) {
        echo(&bin, &server, 1);
        println!("  handler threads: {}", handler_threads(&rt));
    }
    server.shutdown(Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}
