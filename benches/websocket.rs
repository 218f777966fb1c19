//! WebSocket benchmarks driven by `wsbench` (../shared/tools/wsbench), the way the reference
//! figures in BENCHMARKS.md were taken: this process (the server, one poller, handlers
//! inline) pinned to core 1, wsbench pinned to core 0 with one thread, on loopback.
//!
//! ```text
//! cargo build --release --manifest-path ../shared/tools/wsbench/Cargo.toml
//! cargo bench --bench websocket                      # echo d8, echo d1, idle memory
//! BENCH_ONLY=capacity cargo bench --bench websocket  # 19,000 connections, two client processes
//! ```
//!
//! `BENCH_RUNS` (default 3) sets the runs per figure (the median is printed), `BENCH_ONLY`
//! a comma-separated filter (`echo8`, `echo1`, `idle`, `capacity`), `WSBENCH` the path of
//! the wsbench binary.

mod common;

use common::*;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sockloop::{Dispatch, Runtime, Server};

/// One poller and one handler thread: the server side of every figure.
fn one_core_runtime() -> Runtime {
    Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .build()
        .expect("runtime")
}

fn run_wsbench_figures(bin: &Path, args: &[String]) -> Vec<(String, String)> {
    run_wsbench(bin, args).0
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn echo(bin: &Path, server: &Server, depth: usize) {
    let addr = server.local_addr().to_string();
    let (mut rates, mut p99) = (Vec::new(), Vec::new());
    for _ in 0..runs(3) {
        let kv = run_wsbench_figures(bin, &echo_args(&addr, depth));
        rates.push(field(&kv, "rate"));
        p99.push(field(&kv, "p99_us"));
        println!("  run: {}", fmt(&kv));
    }
    println!(
        "echo depth={depth} conns=100 size=32: median {:.0} round trips/s, p99 {:.0} us",
        median(rates),
        median(p99)
    );
}

/// Waits (bounded) until the server holds `n` connections.
fn wait_open(server: &Server, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while server.open_connections() < n {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// One idle-memory measurement, in a fresh process (`BENCH_IDLE_CHILD` set): memory a
/// previous run freed would otherwise be reused and hide the growth. Prints `per_conn=N`.
fn idle_child(bin: &Path) {
    const CONNS: usize = 9000;
    let rt = one_core_runtime();
    let server = ws_echo_server(&rt, Dispatch::Inline);
    let addr = server.local_addr().to_string();
    let before = rss_bytes();
    let b = bin.to_path_buf();
    let child = std::thread::spawn(move || {
        run_wsbench_figures(
            &b,
            &args(&["idle", "--addr", &addr, "--conns", "9000", "--secs", "8"]),
        )
    });
    let held = wait_open(&server, CONNS, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1)); // let the handshakes' buffers settle
    let during = rss_bytes();
    let kv = child.join().expect("wsbench thread");
    let per = (during.saturating_sub(before)) as f64 / CONNS as f64;
    println!(
        "  run: held={held} rss_before={before} rss_with_9000={during} ({})",
        fmt(&kv)
    );
    println!("per_conn={per:.0}");
    server.shutdown(Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}

fn idle() {
    let mut per_conn = Vec::new();
    for _ in 0..runs(3) {
        let out = Command::new(std::env::current_exe().expect("own path"))
            .env("BENCH_IDLE_CHILD", "1")
            .output()
            .expect("run the idle measurement");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines().filter(|l| l.starts_with("  run:")) {
            println!("{line}");
        }
        let per = text
            .lines()
            .find_map(|l| l.strip_prefix("per_conn="))
            .and_then(|v| v.parse::<f64>().ok());
        match per {
            Some(p) => {
                println!("  per_conn={p:.0} B");
                per_conn.push(p);
            }
            None => println!("  idle run failed: {text}"),
        }
    }
    if !per_conn.is_empty() {
        println!(
            "idle 9000 connections: median RSS growth {:.0} bytes per connection (each run a fresh process)",
            median(per_conn)
        );
    }
}

fn capacity(bin: &Path, server: &Server) {
    let addr = server.local_addr().to_string();
    let spawn = |n: &str, src: &str| {
        Command::new("taskset")
            .args(["-c", "0"])
            .arg(bin)
            .args(args(&[
                "echo",
                "--addr",
                &addr,
                "--conns",
                n,
                "--depth",
                "1",
                "--size",
                "16",
                "--secs",
                "30",
                "--threads",
                "1",
                "--sources",
                src,
            ]))
            .output()
    };
    let started = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (a, b, peak) = std::thread::scope(|s| {
        let peak = s.spawn(|| {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(server.open_connections());
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        let a = s.spawn(|| spawn("9500", "2"));
        let b = s.spawn(|| spawn("9500", "2"));
        let r = (a.join().unwrap(), b.join().unwrap());
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (r.0, r.1, peak.join().unwrap())
    });
    for out in [a, b] {
        let out = out.expect("wsbench");
        let text = String::from_utf8_lossy(&out.stdout);
        println!("  client process: {}", text.lines().last().unwrap_or(""));
    }
    println!(
        "capacity: peak open connections held by one server process = {peak} (in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let Some(bin) = wsbench() else {
        println!("wsbench not built: cargo build --release --manifest-path ../shared/tools/wsbench/Cargo.toml");
        return;
    };
    pin_to(1);
    if std::env::var_os("BENCH_IDLE_CHILD").is_some() {
        idle_child(&bin);
        return;
    }
    let rt = one_core_runtime();
    let server = ws_echo_server(&rt, Dispatch::Inline);
    if wanted("echo8", true) {
        echo(&bin, &server, 8);
    }
    if wanted("echo1", true) {
        echo(&bin, &server, 1);
    }
    if wanted("idle", true) {
        idle();
    }
    if wanted("capacity", false) {
        capacity(&bin, &server);
    }
    server.shutdown(Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}
