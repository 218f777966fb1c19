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
//! `BENCH_LAYERS=1` adds, alternating with each chat run, the same load against a raw
//! WebSocket server whose handler broadcasts each marked message to one fan-out group
//! (`Broadcaster::send_nowait`, framed once): no envelope, no membership check, no
//! serialization — the price of the hub's layer is the ratio of the two, printed per rate
//! with the server CPU per delivery.
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
use sockloop::{Broadcaster, GroupId, Runtime, WsConn, WsHandler};

/// The raw layer: every connection is in group 1; a marked text is broadcast to it.
struct RawFan(std::sync::Arc<std::sync::OnceLock<Broadcaster>>);

impl WsHandler for RawFan {
    fn on_open(&mut self, ws: &WsConn, _: &sockloop::http::Request) {
        ws.join_group(GroupId(1));
    }
    fn on_text(&mut self, _: &WsConn, text: &str) {
        if text.contains("@@") {
            if let Some(b) = self.0.get() {
                b.send_nowait(GroupId(1), &b.frames_text(text), &[]);
            }
        }
    }
}

/// One wsbench run against `server`: (deliveries/s, delivered %, server CPU µs per delivery).
fn one_run(bin: &std::path::Path, server: &sockloop::Server, args: &[String]) -> (f64, f64, f64) {
    wait_closed(server);
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let (kv, _) = run_wsbench(bin, args);
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    let _ = t0;
    let rate = field(&kv, "rate");
    let delivered = field(&kv, "msgs").max(1.0);
    (rate, field(&kv, "delivered_pct"), cpu * 1e6 / delivered)
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
    let rt = server_runtime();
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
    if std::env::var_os("BENCH_LAYERS").is_some() {
        layers(&bin, &rt, &chat.server, subs, runs);
    }
    chat.shutdown(Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}

/// The hub's price: the chat path against a raw group broadcast, alternating, at 4,000/s.
fn layers(bin: &std::path::Path, rt: &Runtime, chat: &sockloop::Server, subs: usize, runs: usize) {
    let cell = std::sync::Arc::new(std::sync::OnceLock::new());
    let c2 = cell.clone();
    let raw = rt
        .serve(sockloop::Listen::tcp("127.0.0.1:0"))
        .config(sockloop::ServerConfig::new().dispatch(sockloop::Dispatch::Inline))
        .websocket(
            sockloop::WsServerConfig::new(),
            move |_: &WsConn, _: &sockloop::http::Request| RawFan(c2.clone()),
        )
        .expect("raw server");
    let _ = cell.set(raw.broadcaster());
    let rate = 4000;
    let chat_args = fanout_args(&chat.local_addr().to_string(), subs, rate);
    let raw_args = fanout_args(&raw.local_addr().to_string(), subs, rate);
    let (mut ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (r_rate, r_pct, r_cpu) = one_run(bin, &raw, &raw_args);
        let (c_rate, c_pct, c_cpu) = one_run(bin, chat, &chat_args);
        println!(
            "  layers run: raw {r_rate:.0} deliveries/s ({r_pct:.2}%, {r_cpu:.3} us CPU each), \
             chat {c_rate:.0} ({c_pct:.2}%, {c_cpu:.3} us)"
        );
        ratios.push(c_rate / r_rate);
        cpu_ratios.push(c_cpu / r_cpu);
    }
    println!(
        "layers subs={subs} rate={rate}/s: chat / raw broadcast = {:.3} in deliveries/s (median \
         of pairs), {:.2}x the server CPU per delivery",
        median(ratios),
        median(cpu_ratios)
    );
    raw.shutdown(Duration::from_secs(2));
}
