//! Sessions: resume time (cut to replay done, p50/p99) and hub fan-out with sessions on and
//! off, side by side.
//!
//! ```text
//! cargo bench --bench sessions
//! BENCH_RUNS=7 BENCH_SUBS=100 BENCH_MSGS=5000 cargo bench --bench sessions
//! BENCH_ONLY=fanout cargo bench --bench sessions      # or resume, memory
//! ```
//!
//! - **Fan-out**: `BENCH_SUBS` (default 100) WebSocket subscribers in one room, each on its
//!   own thread; a publisher thread emits `BENCH_MSGS` (default 5,000) 64-byte messages to
//!   the room (`to_room(..).emit_nowait`, serialized and framed once). Session subscribers
//!   ask for a session (`?sl_session=1`) and acknowledge every 64 messages (`BENCH_ACK`),
//!   as `HubClient` does. Figures: deliveries/s until every subscriber has every message,
//!   and the publisher's time (the hub's side of the fan-out). Off and on alternate, `BENCH_RUNS`
//!   (default 5) runs each; medians, the ratio of the medians and the median of the
//!   pairwise ratios (each on run against the off run just before it) are printed.
//! - **Resume**: 200 cycles of: the server sends 10 messages, the client reads 5, its TCP
//!   connection is dropped, it reconnects with its session and reads the 5 replayed (raw
//!   protocol client); and 200 cycles of a `HubClient` (backoff 1 ms) whose connection the
//!   server closes, followed by 5 messages sent meanwhile, timed until the client has them.
//!
//! - **Memory** (a child process each, so RSS is its own): 2,000 raw WebSocket connections
//!   to a hub, plain and then asking for sessions (RSS growth per connection, the
//!   difference is a session's own cost); then 100 session connections in a room that never
//!   acknowledge while 1,000 room messages of 64 bytes are sent (RSS growth per message held
//!   in a replay buffer; the bytes are shared, each buffer holds a reference).
//!
//! Server: one poller, one handler thread, in this process.

mod common;

use common::*;

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sockloop::client::hub::{Backoff, HubClient, HubClientOptions, HubEvent};
use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::hub::{Ctx, Hub, SessionConfig};
use sockloop::ws::CloseCode;
use sockloop::{ConnId, Listen, Runtime, Server, WsServerConfig};

fn hub(sessions: bool) -> (Hub, Arc<Mutex<Option<ConnId>>>) {
    let last = Arc::new(Mutex::new(None));
    let l = last.clone();
    let mut b = Hub::builder()
        .on("join", |ctx: &mut Ctx| {
            let room: String = ctx.data()?;
            ctx.join(&room)?;
            ctx.ack(&true)
        })
        .on_connect(move |_, ws| *l.lock().unwrap() = Some(ws.id()));
    if sessions {
        b = b.sessions(SessionConfig::new());
    }
    (b.build(), last)
}

fn serve(rt: &Runtime, hub: &Hub) -> Server {
    let cfg = hub.server_config(WsServerConfig::new());
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(cfg, hub.factory())
        .unwrap();
    hub.attach(&s);
    s
}

fn text(m: Message) -> Option<String> {
    match m {
        Message::Text(t) => Some(t),
        _ => None,
    }
}

fn is_control(t: &str) -> bool {
    t.starts_with(r#"{"event":"session:"#)
}

/// A subscriber: joins `r`, then counts data messages until `msgs`, acknowledging every
/// 64 when it has a session (as `HubClient` does).
fn subscriber(url: String, session: bool, msgs: usize, ready: Arc<Barrier>) {
    let opts = WsClientOptions::default().deflate(false);
    let q = if session { "?sl_session=1" } else { "" };
    let mut c = WsClient::connect(&format!("{url}{q}"), opts).unwrap();
    c.send_text(r#"{"event":"join","data":"r","id":1}"#)
        .unwrap();
    let ack_every: u64 = env_or("BENCH_ACK", 64);
    let mut count = 0u64;
    loop {
        let t = text(c.recv().unwrap());
        if let Some(t) = t.filter(|t| !is_control(t)) {
            count += 1;
            if t.contains(r#""ref":1"#) {
                break;
            }
        }
    }
    ready.wait();
    let mut got = 0;
    while got < msgs {
        let Some(t) = text(c.recv().unwrap()) else {
            continue;
        };
        if is_control(&t) {
            continue;
        }
        got += 1;
        count += 1;
        if session && count % ack_every == 0 {
            c.send_text(&format!(r#"{{"event":"session:ack","data":{count}}}"#))
                .unwrap();
        }
    }
    let _ = c.close(CloseCode::NORMAL, "");
}

/// One fan-out run: (deliveries/s, publisher seconds).
fn fanout(session: bool, subs: usize, msgs: usize) -> (f64, f64) {
    let rt = Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .build()
        .unwrap();
    let (hub, _) = hub(session);
    let server = serve(&rt, &hub);
    let url = format!("ws://{}/", server.local_addr());
    let ready = Arc::new(Barrier::new(subs + 1));
    let threads: Vec<_> = (0..subs)
        .map(|_| {
            let (url, ready) = (url.clone(), ready.clone());
            std::thread::spawn(move || subscriber(url, session, msgs, ready))
        })
        .collect();
    ready.wait();
    assert_eq!(hub.room_count("r"), subs);
    let payload = "x".repeat(64);
    let t0 = Instant::now();
    for i in 0..msgs {
        hub.to_room("r")
            .emit_nowait("m", &json!({"n": i, "t": payload}))
            .unwrap();
    }
    let publish = t0.elapsed().as_secs_f64();
    for t in threads {
        t.join().unwrap();
    }
    let all = t0.elapsed().as_secs_f64();
    let stats = hub.stats();
    assert_eq!(stats.dropped, 0, "{stats:?}");
    ((subs * msgs) as f64 / all, publish)
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn print_latency(what: &str, v: Vec<Duration>) {
    let (p50, p99) = (percentile(v.clone(), 0.5), percentile(v, 0.99));
    println!(
        "resume ({what}): p50 {:.3} ms, p99 {:.3} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

fn welcome(c: &mut WsClient) -> Value {
    loop {
        if let Some(t) = text(c.recv().unwrap()) {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("session:"))
            {
                return v;
            }
        }
    }
}

/// Reads data messages until `count` reaches `until`.
fn read_to(c: &mut WsClient, count: &mut u64, until: u64) {
    while *count < until {
        if let Some(t) = text(c.recv().unwrap()) {
            if !is_control(&t) {
                *count += 1;
            }
        }
    }
}

/// The raw protocol: drop the TCP connection, reconnect with the session, read the replay.
fn resume_raw(cycles: usize) -> Vec<Duration> {
    let rt = Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .build()
        .unwrap();
    let (hub, last) = hub(true);
    let server = serve(&rt, &hub);
    let base = format!("ws://{}/", server.local_addr());
    let opts = WsClientOptions::default().deflate(false);
    let mut c = WsClient::connect(&format!("{base}?sl_session=1"), opts.clone()).unwrap();
    let w = welcome(&mut c)["data"].clone();
    let (sid, token) = (
        w["sid"].as_str().unwrap().to_owned(),
        w["token"].as_str().unwrap().to_owned(),
    );
    let id = loop {
        if let Some(id) = *last.lock().unwrap() {
            break id;
        }
        std::thread::yield_now();
    };
    let (mut count, mut sent) = (0u64, 0u64);
    let mut out = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        for _ in 0..10 {
            hub.to_conn(id).emit("m", &sent);
            sent += 1;
        }
        read_to(&mut c, &mut count, sent - 5);
        let t0 = Instant::now();
        drop(c);
        let q = format!("{base}?sl_sid={sid}&sl_token={token}&sl_seq={count}");
        c = WsClient::connect(&q, opts.clone()).unwrap();
        let r = welcome(&mut c);
        assert_eq!(r["event"], "session:resumed", "{r}");
        read_to(&mut c, &mut count, sent);
        out.push(t0.elapsed());
    }
    out
}

/// `HubClient`: the server closes the connection, sends 5 messages meanwhile; timed until
/// the client has them.
fn resume_client(cycles: usize) -> Vec<Duration> {
    let rt = Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .build()
        .unwrap();
    let (hub, last) = hub(true);
    let server = serve(&rt, &hub);
    let url = format!("ws://{}/", server.local_addr());
    let b = Backoff::new(Duration::from_millis(1), Duration::from_millis(10));
    let c = HubClient::connect(&url, HubClientOptions::default().backoff(b)).unwrap();
    let id = loop {
        if let Some(id) = *last.lock().unwrap() {
            break id;
        }
        std::thread::yield_now();
    };
    let mut out = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        let t0 = Instant::now();
        hub.conn(id).unwrap().close(CloseCode::AWAY, "bench");
        for i in 0..5 {
            hub.to_conn(id).emit("m", &i);
        }
        let mut got = 0;
        while got < 5 {
            match c.recv(Duration::from_secs(10)) {
                Some(HubEvent::Message(m)) if m.event == "m" => got += 1,
                Some(_) => {}
                None => panic!("no replay within 10 s"),
            }
        }
        out.push(t0.elapsed());
        // Let the session's connection settle before the next cut.
        while !c.is_connected() || hub.conn(id).is_none_or(|w| !w.is_open()) {
            std::thread::yield_now();
        }
    }
    out
}

/// A masked client text frame (mask key 0).
fn text_frame(payload: &str) -> Vec<u8> {
    let p = payload.as_bytes();
    assert!(p.len() < 126);
    let mut f = vec![0x81, 0x80 | p.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(p);
    f
}

/// `n` raw upgrades (never read: the kernel keeps what the server sends) with `query`.
fn raw_clients(s: &Server, n: usize, query: &str) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    (0..n)
        .map(|_| {
            let mut t = std::net::TcpStream::connect(s.local_addr().to_string()).unwrap();
            let req = format!(
                "GET /{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            );
            t.write_all(req.as_bytes()).unwrap();
            t
        })
        .collect()
}

fn wait_conns(hub: &Hub, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while hub.stats().connections < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} connections",
            hub.stats().connections
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300)); // the welcomes written, buffers settled
}

/// One memory figure in this (child) process: `what` is `conn`, `session` or `buffered`.
fn memory_child(what: &str) {
    let rt = Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .build()
        .unwrap();
    let (hub, _) = hub(what != "conn");
    let s = serve(&rt, &hub);
    let before = rss_bytes();
    match what {
        "conn" | "session" => {
            const N: usize = 2000;
            let q = if what == "session" {
                "?sl_session=1"
            } else {
                ""
            };
            let _c = raw_clients(&s, N, q);
            wait_conns(&hub, N);
            let per = rss_bytes().saturating_sub(before) as f64 / N as f64;
            println!("memory={per:.0}");
        }
        _ => {
            use std::io::Write;
            const N: usize = 100;
            const M: usize = 1000;
            let mut c = raw_clients(&s, N, "?sl_session=1");
            for t in &mut c {
                t.write_all(&text_frame(r#"{"event":"join","data":"r","id":1}"#))
                    .unwrap();
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while hub.members("r").len() < N {
                assert!(Instant::now() < deadline, "joins");
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(300));
            let joined = rss_bytes();
            let msg = "m".repeat(64);
            for _ in 0..M {
                hub.to_room("r").emit_nowait("x", &msg).unwrap();
            }
            std::thread::sleep(Duration::from_millis(500));
            let per = rss_bytes().saturating_sub(joined) as f64 / (N * M) as f64;
            println!("memory={per:.1} replay_bytes={}", hub.stats().replay_bytes);
        }
    }
    drop(s);
    rt.shutdown(Duration::from_secs(1));
}

fn memory() {
    let mut out = Vec::new();
    for what in ["conn", "session", "buffered"] {
        let mut v = Vec::new();
        for _ in 0..3 {
            let o = std::process::Command::new(std::env::current_exe().unwrap())
                .env("BENCH_MEMORY_CHILD", what)
                .output()
                .expect("memory child");
            let text = String::from_utf8_lossy(&o.stdout);
            if let Some(x) = text
                .lines()
                .find_map(|l| l.strip_prefix("memory="))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|x| x.parse::<f64>().ok())
            {
                v.push(x);
            } else {
                println!("  memory child {what} failed: {text}");
            }
        }
        println!("  memory {what}: {v:?} B");
        out.push(median(v));
    }
    println!(
        "memory: hub connection {:.0} B, with a session {:.0} B (the session {:.0} B more), \
         {:.1} B per message held in a session's replay buffer (100 sessions x 1,000 \
         messages of 64 B, shared)",
        out[0],
        out[1],
        out[1] - out[0],
        out[2]
    );
}

fn main() {
    if let Ok(what) = std::env::var("BENCH_MEMORY_CHILD") {
        memory_child(&what);
        return;
    }
    if wanted("memory", true) {
        memory();
    }
    let runs = runs(5);
    let subs: usize = env_or("BENCH_SUBS", 100);
    let msgs: usize = env_or("BENCH_MSGS", 5000);
    if wanted("resume", true) {
        print_latency("raw protocol client, 200 cycles", resume_raw(200));
        print_latency("HubClient, server-side cut, 200 cycles", resume_client(200));
    }
    if wanted("fanout", true) {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        let (mut off_p, mut on_p) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (d, p) = fanout(false, subs, msgs);
            off.push(d);
            off_p.push(p);
            let (d, p) = fanout(true, subs, msgs);
            on.push(d);
            on_p.push(p);
        }
        let pairs: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
        let pairwise = median(pairs);
        let (off, on) = (median(off), median(on));
        let (off_p, on_p) = (median(off_p), median(on_p));
        println!(
            "fan-out {subs} subs x {msgs} msgs: sessions off {off:.0} deliveries/s, on {on:.0} \
             deliveries/s, ratio {:.2} (pairwise median {pairwise:.2})",
            on / off
        );
        println!(
            "fan-out publisher time: off {:.1} ms, on {:.1} ms (ratio off/on {:.2})",
            off_p * 1e3,
            on_p * 1e3,
            off_p / on_p
        );
    }
}
