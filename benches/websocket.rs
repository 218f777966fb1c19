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
//! the wsbench binary. The idle figure comes with the table of what an idle connection holds
//! (`sockloop::__sizes::idle_ws_sizes`) and what of the measured growth it accounts for.

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
    let (slab_before, tcp_before) = kernel_memory();
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
    let (slab_during, tcp_during) = kernel_memory();
    let kv = child.join().expect("wsbench thread");
    let per = (during.saturating_sub(before)) as f64 / CONNS as f64;
    // Both ends are sockets of this machine's kernel: per connection = two sockets (the
    // server's and wsbench's), each with its file, epoll entry and buffers.
    let slab = slab_during.saturating_sub(slab_before) as f64 / CONNS as f64;
    let tcp = tcp_during.saturating_sub(tcp_before) as f64 / CONNS as f64;
    println!("kernel_slab_per_conn={slab:.0}");
    println!("kernel_tcp_buffers_per_conn={tcp:.0}");
    println!(
        "  run: held={held} rss_before={before} rss_with_9000={during} ({})",
        fmt(&kv)
    );
    println!("per_conn={per:.0}");
    server.shutdown(Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}

/// The kernel's slab memory (bytes, `/proc/meminfo` `Slab:`) and TCP buffer memory (bytes,
/// `/proc/net/sockstat` `TCP: … mem N`, in pages) right now, machine-wide.
fn kernel_memory() -> (u64, u64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let slab = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    (slab, pages * 4096)
}

fn idle() {
    let mut per_conn = Vec::new();
    let (mut slab, mut tcp) = (Vec::new(), Vec::new());
    for _ in 0..runs(3) {
        let out = Command::new(std::env::current_exe().expect("own path"))
            .env("BENCH_IDLE_CHILD", "1")
            .output()
            .expect("run the idle measurement");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines().filter(|l| l.starts_with("  run:")) {
            println!("{line}");
        }
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.parse::<f64>().ok())
        };
        if let (Some(s), Some(t)) = (
            field("kernel_slab_per_conn="),
            field("kernel_tcp_buffers_per_conn="),
        ) {
            println!("  kernel per connection (two sockets): slab {s:.0} B, TCP buffers {t:.0} B");
            slab.push(s);
            tcp.push(t);
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
        let measured = median(per_conn);
        println!(
            "idle 9000 connections: median RSS growth {measured:.0} bytes per connection (each run a fresh process)"
        );
        // Where they go: each allocation and slot of an idle connection, as malloc takes it.
        let rows = sockloop::__sizes::idle_ws_sizes();
        for r in &rows {
            println!("  {:>4} B ({:>3} B struct)  {}", r.takes, r.bytes, r.what);
        }
        let accounted: usize = rows.iter().map(|r| r.takes).sum();
        println!(
            "  {accounted:>4} B accounted for; {:.0} B left (arrays' growth slack, allocator metadata)",
            measured - accounted as f64
        );
    }
    if !slab.is_empty() {
        println!(
            "idle 9000 connections, kernel (machine-wide, both ends): median slab {:.0} B and TCP buffers {:.0} B per connection",
            median(slab),
            median(tcp)
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
        println!("  budget after echo8: {:?}", rt.budget());
    }
    if wanted("echo1", true) {
        echo(&bin, &server, 1);
        println!("  budget after echo1: {:?}", rt.budget());
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
