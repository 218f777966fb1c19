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
//! `BENCH_RUNS` (default 3) sets the runs per figure (the median is printed), `BENCH_ONLY`
//! a comma-separated filter (`echo8`, `echo1`), `WSBENCH` the path of the wsbench binary.

mod common;

use common::*;

use std::path::Path;
use std::time::Duration;

use sockloop::{on_message, Dispatch, Listen, Runtime, ServerConfig, WsConn, WsMessage};
use sockloop::{Server, WsServerConfig};

fn echo_server(rt: &Runtime) -> Server {
    rt.serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().dispatch(Dispatch::Threads))
        .websocket(
            WsServerConfig::new(),
            on_message(|ws: &WsConn, m: WsMessage<'_>| {
                let _ = match m {
                    WsMessage::Text(t) => ws.send_text(t),
                    WsMessage::Binary(b) => ws.send_binary(b),
                };
            }),
        )
        .expect("echo server")
}

fn echo(bin: &Path, server: &Server, depth: usize) {
    let addr = server.local_addr().to_string();
    let (mut rates, mut p99) = (Vec::new(), Vec::new());
    for _ in 0..runs(3) {
        let d = depth.to_string();
        let list = [
            "echo",
            "--addr",
            &addr,
            "--conns",
            "100",
            "--depth",
            &d,
            "--size",
            "32",
            "--secs",
            "5",
            "--threads",
            "1",
        ];
        let args: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        let kv = run_wsbench(bin, &args).0;
        rates.push(field(&kv, "rate"));
        p99.push(field(&kv, "p99_us"));
        println!("  run: {}", fmt(&kv));
    }
    println!(
        "threads echo depth={depth} conns=100 size=32: median {:.0} round trips/s, p99 {:.0} us",
        median(rates),
        median(p99)
    );
}

fn main() {
    let Some(bin) = wsbench() else {
        println!("wsbench not built: cargo build --release --manifest-path ../shared/tools/wsbench/Cargo.toml");
        return;
    };
    pin_to(1);
    let rt = Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .build()
        .expect("runtime");
    let server = echo_server(&rt);
    if wanted("echo8", true) {
        echo(&bin, &server, 8);
    }
    if wanted("echo1", true) {
        echo(&bin, &server, 1);
    }
    server.shutdown(Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}
