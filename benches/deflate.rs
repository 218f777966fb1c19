//! permessage-deflate on vs off (issue 16 item 4): the same echo workload with the client
//! offering permessage-deflate (the server's default no-context-takeover answer) or not.
//!
//! wsbench cannot negotiate deflate, so the clients are sockloop's own blocking
//! [`WsClient`]s, `DEFLATE_CLIENTS` threads (default 4) pinned to core 0, each with one
//! connection and `DEFLATE_DEPTH` messages (default 4) sent before it reads their echoes.
//! The server (one poller, handlers inline, the default `WsServerConfig`) runs in this
//! process on core 1. Payloads are JSON-like text (an array of chat-like records, each with
//! a different id), so they compress as real traffic does.
//!
//! ```text
//! cargo bench --bench deflate
//! BENCH_RUNS=5 DEFLATE_SECS=3 cargo bench --bench deflate
//! ```
//!
//! Figures, per payload size and mode (medians of `BENCH_RUNS`, default 3, runs that
//! alternate off / on): `rate` (round trips per second), `server_us_per_msg` (server CPU,
//! this process's utime+stime less the client threads' own, per echoed message: it
//! includes inflating the client's message and deflating the echo), `wire_bytes` (the
//! payload as raw DEFLATE at level 1, as each message is sent with no context takeover).
//! `BENCH_ONLY` filters by size (`256`, `4096`).

mod common;

use common::*;

use std::io::Write;
use std::time::{Duration, Instant};

use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::Dispatch;

/// CPU time of the calling thread (`RUSAGE_THREAD`) or of the process (`RUSAGE_SELF`), in µs.
fn cpu_us(who: libc::c_int) -> f64 {
    // SAFETY: a zeroed rusage is valid and getrusage only writes into it.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// JSON-like text of about `size` bytes: records with varying ids and a counter, so two
/// messages differ but every one compresses like chat traffic.
fn payload(size: usize, seq: u64) -> String {
    let mut s = String::with_capacity(size + 128);
    s.push('[');
    let mut i = 0u64;
    while s.len() < size {
        if i > 0 {
            s.push(',');
        }
        let id = seq.wrapping_mul(31).wrapping_add(i);
        s.push_str(&format!(
            "{{\"id\":{id},\"room\":\"lobby-{}\",\"user\":\"user-{}\",\"type\":\"message\",\
             \"text\":\"hello everyone, the build is green again\",\"ts\":{}}}",
            id % 7,
            id % 113,
            1_764_633_600_000u64 + id
        ));
        i += 1;
    }
    s.truncate(size.saturating_sub(1));
    s.push(']');
    s
}

/// Raw DEFLATE size of `text` at level 1 (the server's default level).
fn deflated_len(text: &str) -> usize {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(1));
    e.write_all(text.as_bytes()).expect("deflate");
    e.finish().expect("deflate").len()
}

struct Run {
    rate: f64,
    server_us_per_msg: f64,
}

fn one_run(url: &str, deflate: bool, size: usize, clients: usize, depth: usize) -> Run {
    let secs = env_or("DEFLATE_SECS", 3.0f64);
    let cpu0 = cpu_us(libc::RUSAGE_SELF);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let url = url.to_string();
            std::thread::spawn(move || {
                pin_to(0);
                let t0 = cpu_us(libc::RUSAGE_THREAD);
                let opts = WsClientOptions::default().deflate(deflate);
                let mut ws = WsClient::connect(&url, opts).expect("connect");
                assert_eq!(ws.deflate().is_some(), deflate, "deflate negotiation");
                let msgs: Vec<String> = (0..64).map(|i| payload(size, c as u64 * 64 + i)).collect();
                let mut n = 0u64;
                let mut k = 0usize;
                while Instant::now() < end {
                    for _ in 0..depth {
                        ws.send_text(&msgs[k % msgs.len()]).expect("send");
                        k += 1;
                    }
                    for _ in 0..depth {
                        match ws.recv().expect("recv") {
                            Message::Text(t) => assert_eq!(t.len(), size),
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    n += depth as u64;
                }
                let _ = ws.close(sockloop::ws::CloseCode::NORMAL, "");
                (n, cpu_us(libc::RUSAGE_THREAD) - t0)
            })
        })
        .collect();
    let (mut msgs, mut client_cpu) = (0u64, 0.0);
    for w in workers {
        let (n, cpu) = w.join().expect("client thread");
        msgs += n;
        client_cpu += cpu;
    }
    let wall = start.elapsed().as_secs_f64();
    // Let the server finish the closes before its CPU is read.
    std::thread::sleep(Duration::from_millis(100));
    let server_cpu = cpu_us(libc::RUSAGE_SELF) - cpu0 - client_cpu;
    Run {
        rate: msgs as f64 / wall,
        server_us_per_msg: server_cpu / msgs.max(1) as f64,
    }
}

fn main() {
    // The server's threads inherit core 1; each client thread moves itself to core 0.
    let rt = server_runtime();
    let server = ws_echo_server(&rt, Dispatch::Inline);
    let url = format!("ws://{}/", server.local_addr());
    let clients = env_or("DEFLATE_CLIENTS", 4usize);
    let depth = env_or("DEFLATE_DEPTH", 4usize);
    let runs = runs(3);
    for size in [256usize, 4096] {
        if !wanted(&size.to_string(), true) {
            continue;
        }
        let sample = payload(size, 1);
        let wire = deflated_len(&sample);
        let (mut off_rate, mut off_cpu, mut on_rate, mut on_cpu) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in 0..runs {
            // Alternate which mode goes first so neither always runs on a warmer machine.
            let order = if r % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for deflate in order {
                let run = one_run(&url, deflate, size, clients, depth);
                println!(
                    "  run size={size} deflate={} rate={:.0}/s server_us_per_msg={:.2}",
                    if deflate { "on" } else { "off" },
                    run.rate,
                    run.server_us_per_msg
                );
                if deflate {
                    on_rate.push(run.rate);
                    on_cpu.push(run.server_us_per_msg);
                } else {
                    off_rate.push(run.rate);
                    off_cpu.push(run.server_us_per_msg);
                }
            }
        }
        let (off_rate, off_cpu) = (median(off_rate), median(off_cpu));
        let (on_rate, on_cpu) = (median(on_rate), median(on_cpu));
        println!(
            "deflate size={size} clients={clients} depth={depth} deflate=off rate={off_rate:.0}/s \
             server_us_per_msg={off_cpu:.2} wire_bytes={size}"
        );
        println!(
            "deflate size={size} clients={clients} depth={depth} deflate=on rate={on_rate:.0}/s \
             server_us_per_msg={on_cpu:.2} wire_bytes={wire}"
        );
        println!(
            "deflate size={size} on_vs_off rate_ratio={:.2} cpu_ratio={:.2} wire_ratio={:.2}",
            on_rate / off_rate,
            on_cpu / off_cpu,
            wire as f64 / size as f64
        );
    }
    server.shutdown(Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(1));
}
