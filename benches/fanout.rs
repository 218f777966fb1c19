//! Fan-out benchmark of the chat example, driven by `wsbench fanout`
//! (../shared/tools/wsbench): 1,000 subscribers in one room, one publisher sending 64-byte
//! chat messages at a fixed rate; every message goes through the chat's real path (the
//! envelope is parsed on a handler thread, `chat:say` checks membership, the `chat:message`
//! event is serialized and framed once and fanned out by the poller).
//!
//! The server is `examples/chat.rs` compiled in, with the configuration a big room needs:
//! silent rooms (no member list pushed on each of the 1,000 joins) and no rate limit (the
//! publisher sends 2,000 events/s). It runs in this process pinned to core 1 with one poller
//! and one handler thread; wsbench runs pinned to core 0 with one thread. All connections
//! share wsbench's one path, `/ws?nick=b`: the chat gives them `b`, `b2`, … `b1001`.
//!
//! ```text
//! cargo build --release --manifest-path ../shared/tools/wsbench/Cargo.toml
//! cargo bench --bench fanout
//! BENCH_RUNS=5 BENCH_RATES=2000 cargo bench --bench fanout
//! ```
//!
//! Figures on the reference VM (2026-11-24, quiet machine, medians of 5 runs):
//! 200/s: 200,000 deliveries/s, 100.00 % delivered, p50 2.4 ms, p99 11.8 ms;
//! 2,000/s: 1,995,424 deliveries/s, 99.77 % delivered (the rest was in flight when the 5 s
//! window closed), p50 12.0 ms, p99 21.9 ms. About 85 % of the server's time is in the
//! kernel's TCP send path (one `write` per subscriber per poller turn); at 2,000/s the
//! messages queued during one turn leave in the same write.
//!
//! `BENCH_RUNS` (default 3) sets the runs per rate (medians are printed), `BENCH_RATES` the
//! comma-separated publish rates (default `200,2000`), `BENCH_SUBS` the subscribers
//! (default 1000), `WSBENCH` the wsbench binary.

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

mod common;

use common::*;

use std::time::{Duration, Instant};

use sockloop::hub::RoomEvents;
use sockloop::Runtime;

/// CPU time (user + system) used by this process (the server) so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Waits (bounded) until the previous run's connections are gone.
fn wait_closed(server: &sockloop::Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.open_connections() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The wsbench arguments of one run. The publisher's messages are `chat:say` envelopes
/// (the prefix may hold no comma: wsbench splits `--wrap` at the first one).
fn fanout_args(addr: &str, subs: usize, rate: u32) -> Vec<String> {
    let join = r#"{"event":"room:join","data":{"room":"bench"}}"#;
    let wrap = r#"{"data":{"text":",","room":"bench"},"event":"chat:say"}"#;
    [
        "fanout",
        "--addr",
        addr,
        "--path",
        "/ws?nick=b",
        "--subs",
        &subs.to_string(),
        "--pubs",
        "1",
        "--rate",
        &rate.to_string(),
        "--size",
        "64",
        "--secs",
        "5",
        "--threads",
        "1",
        "--init",
        join,
        "--pub-init",
        join,
        "--wrap",
        wrap,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn main() {
    let Some(bin) = wsbench() else {
        println!("wsbench not built: cargo build --release --manifest-path ../shared/tools/wsbench/Cargo.toml");
        return;
    };
    let runs: usize = env_or("BENCH_RUNS", 3);
    let subs: usize = env_or("BENCH_SUBS", 1000);
    let rates: Vec<u32> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "200,2000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    pin_to(1);
    let rt = Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .build()
        .expect("runtime");
    let cfg = chat::ChatConfig {
        addr: "127.0.0.1:0".into(),
        room_events: RoomEvents::Silent,
        rate_limit: None,
        ..chat::ChatConfig::default()
    };
    let chat = chat::serve(&rt, &cfg).expect("chat server");
    let addr = chat.server.local_addr().to_string();
    for rate in rates {
        let args = fanout_args(&addr, subs, rate);
        println!(
            "wsbench {}",
            args.iter()
                .map(|a| if a.contains(['{', '?']) {
                    format!("'{a}'")
                } else {
                    a.clone()
                })
                .collect::<Vec<_>>()
                .join(" ")
        );
        let (mut rate_v, mut pct, mut p50, mut p99) = (vec![], vec![], vec![], vec![]);
        for _ in 0..runs {
            wait_closed(&chat.server);
            let (cpu0, t0) = (cpu_time(), Instant::now());
            let (kv, err) = run_wsbench(&bin, &args);
            let busy = (cpu_time() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
            println!("  run: {}", fmt(&kv));
            println!(
                "       server CPU {:.0}% of its core over the run (connects and 1 s settle included)",
                busy * 100.0
            );
            if !err.trim().is_empty() {
                println!("  wsbench stderr: {}", err.trim());
            }
            rate_v.push(field(&kv, "rate"));
            pct.push(field(&kv, "delivered_pct"));
            p50.push(field(&kv, "p50_us"));
            p99.push(field(&kv, "p99_us"));
        }
        println!(
            "fanout subs={subs} pubs=1 rate={rate}/s size=64: median {:.0} deliveries/s, \
             delivered {:.2}%, p50 {:.0} us, p99 {:.0} us",
            median(rate_v),
            median(pct),
            median(p50),
            median(p99)
        );
    }
    chat.shutdown(Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}
