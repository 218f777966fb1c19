//! Long-polling throughput: echo messages per second over `transport=polling` for 1 and
//! 1,000 blocking clients (`PollingClient`), with the server's CPU time (its poller and
//! handler threads, read from `/proc/self/task/*/stat`) per message.
//!
//! ```text
//! cargo bench --bench longpoll                      # 1 client (batches of 1 and 100), 1,000 clients
//! BENCH_ONLY=one cargo bench --bench longpoll       # or `thousand`, `memory`
//! ```
//!
//! `memory` opens 10,000 sessions by raw handshakes whose connections then close (a
//! session between polls holds no socket) and prints the resident memory per session.
//!
//! The server is one poller with inline handlers (an echo), as in the WebSocket figures.
//! Each client POSTs a batch and reads the echoes through its held GET; clients run on
//! `LP_THREADS` (default 8) driving threads, so 1,000 clients use 1,000 GET threads, 8
//! sending threads and about 4,000 sockets. `LP_SECS` (default 3) sets each figure's length.

mod common;

use common::*;

use std::time::{Duration, Instant};

use sockloop::client::polling::{PollingClient, PollingOptions};
use sockloop::client::ws::Message;
use sockloop::{
    Dispatch, Listen, PollingConfig, Runtime, Server, ServerConfig, WsConn, WsMessage,
    WsServerConfig,
};

/// CPU seconds (user + system) of this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        total += n(11) + n(12); // utime, stime (fields 14 and 15)
    }
    total as f64 / tick
}

fn server(rt: &Runtime) -> Server {
    let echo = sockloop::on_message(|ws: &WsConn, m: WsMessage<'_>| {
        let _ = match m {
            WsMessage::Text(t) => ws.send_text(t),
            WsMessage::Binary(b) => ws.send_binary(b),
        };
    });
    let cfg = ServerConfig::new().dispatch(Dispatch::Inline);
    let ws = WsServerConfig::new().polling(Some(PollingConfig::new()));
    rt.serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .websocket(ws, echo)
        .expect("server")
}

/// Sends `batch` messages on every client and reads every echo, until `secs` pass.
/// Returns the messages echoed.
fn drive(clients: &mut [PollingClient], batch: usize, until: Instant) -> u64 {
    let msgs: Vec<Message> = (0..batch)
        .map(|i| Message::Text(format!("{i:032}")))
        .collect();
    let mut n = 0u64;
    while Instant::now() < until {
        for c in clients.iter_mut() {
            c.send_batch(&msgs).expect("send");
        }
        for c in clients.iter_mut() {
            for _ in 0..batch {
                match c.recv_timeout(Duration::from_secs(30)).expect("recv") {
                    Some(Message::Text(_)) => n += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    n
}

/// One figure: `clients` clients on `threads` threads, batches of `batch`.
fn figure(clients: usize, threads: usize, batch: usize, secs: f64) {
    let rt = Runtime::builder()
        .name("lpsrv")
        .pollers(1)
        .handler_threads(1)
        .build()
        .expect("runtime");
    let s = server(&rt);
    let url = format!("http://{}/", s.local_addr());
    let per = clients.div_ceil(threads);
    let connected = Instant::now();
    let groups: Vec<Vec<PollingClient>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let url = &url;
                let n = per.min(clients.saturating_sub(t * per));
                sc.spawn(move || {
                    (0..n)
                        .map(|_| {
                            PollingClient::connect(url, PollingOptions::default()).expect("connect")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("connect thread"))
            .collect()
    });
    let setup = connected.elapsed();
    let cpu0 = thread_cpu("lpsrv");
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(secs);
    let total: u64 = std::thread::scope(|sc| {
        let hs: Vec<_> = groups
            .into_iter()
            .map(|mut g| sc.spawn(move || (drive(&mut g, batch, until), g)))
            .collect();
        let mut total = 0;
        let mut all = Vec::new();
        for h in hs {
            let (n, g) = h.join().expect("drive thread");
            total += n;
            all.push(g);
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = thread_cpu("lpsrv") - cpu0;
        println!(
            "longpoll clients={clients} batch={batch}: {:.0} messages/s echoed, server CPU {:.0}% \
             of one core ({:.2} us/message), setup {:.2}s",
            total as f64 / elapsed,
            100.0 * cpu / elapsed,
            1e6 * cpu / total.max(1) as f64,
            setup.as_secs_f64()
        );
        for g in all.iter_mut().flatten() {
            let _ = g.close();
        }
        total
    });
    assert!(total > 0);
    rt.shutdown(Duration::from_secs(5));
}

/// Opens one session by a raw handshake on a connection that closes after it.
fn raw_handshake(addr: &str) {
    use std::io::{Read, Write};
    let mut t = std::net::TcpStream::connect(addr).expect("connect");
    t.write_all(b"GET /?transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    t.read_to_end(&mut answer).expect("read");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "handshake refused");
}

/// Resident memory per idle session (no socket: between polls a session is only state).
fn memory(n: usize) {
    let rt = Runtime::builder()
        .name("lpsrv")
        .pollers(1)
        .handler_threads(1)
        .build()
        .expect("runtime");
    let s = server(&rt);
    let addr = s.local_addr().to_string();
    for _ in 0..100 {
        raw_handshake(&addr); // warm-up: pools, slab and maps grown once
    }
    let before = rss_bytes();
    for _ in 0..n {
        raw_handshake(&addr);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.open_connections() != n + 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = rss_bytes();
    println!(
        "longpoll memory: {} sessions open, {:.2} KiB resident per idle session",
        s.open_connections(),
        (after.saturating_sub(before)) as f64 / n as f64 / 1024.0
    );
    rt.shutdown(Duration::from_secs(5));
}

fn main() {
    let secs: f64 = env_or("LP_SECS", 3.0);
    let threads: usize = env_or("LP_THREADS", 8);
    if wanted("one", true) {
        figure(1, 1, 1, secs);
        figure(1, 1, 100, secs);
    }
    if wanted("thousand", true) {
        figure(1000, threads, 1, secs);
        figure(1000, threads, 10, secs);
    }
    if wanted("memory", true) {
        memory(10_000);
    }
}
