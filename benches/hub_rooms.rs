//! Many rooms, many publishers (issue 16 item 5): 1,000 WebSocket connections, each a member
//! of 100 rooms, make 10,000 rooms of 10 members; every connection publishes to its rooms in
//! turn, so 1,000 publishers share the hub. Each publish runs the hub's whole path on a
//! handler thread: the envelope is parsed, a `pub` route checks that the sender is a member
//! of the room and emits `msg` to the room (framed once, fanned out by the pollers' group,
//! sender included: 10 deliveries per publish).
//!
//! The server runs in this process with two pollers and two handler threads, not pinned; the
//! client is a child process of this program (a mio loop, pinned to core 0) that opens the
//! connections, joins the rooms with the hub's built-in `room:join` (acknowledged), then
//! publishes at a fixed total rate for the window and reads every delivery. Each message
//! carries its send time: the client reports deliveries/s, the share delivered and the
//! latency percentiles of the deliveries.
//!
//! Layout: connection c = 100q + r (q < 10, r < 100) joins room 100k + (7r + kq) mod 100 for
//! every k < 100: for each k and q, r ↦ (7r + kq) mod 100 is a bijection, so every room gets
//! exactly one connection of each q, ten members in all.
//!
//! ```text
//! cargo bench --bench hub_rooms
//! BENCH_RUNS=5 BENCH_RATES=5000,20000 cargo bench --bench hub_rooms
//! ```
//!
//! `BENCH_RUNS` (default 3) sets the runs per rate (medians are printed), `BENCH_RATES` the
//! comma-separated total publish rates per second (default `5000,20000`), `BENCH_SECS` the
//! measured window (default 5). The server's PID is printed, for
//! `perf record -e cpu-clock -g -p PID` during a run (the lock's share of the profile).

mod common;

use common::*;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sockloop::hub::{Ctx, Hub, HubConfig, HubError, RoomEvents, RoomOptions};
use sockloop::{Listen, Runtime, WsServerConfig};

const CONNS: usize = 1000;
const ROOMS_PER_CONN: usize = 100;

#[derive(Deserialize, Serialize)]
struct Pub {
    room: String,
    t: u64,
}

/// The bench's hub: silent auto-created rooms (no member lists pushed on the 100,000 joins),
/// no cap on rooms created per connection, built-in room events, and the `pub` route.
fn hub() -> Hub {
    let cfg = HubConfig::new()
        .auto_create(Some(RoomOptions::new().events(RoomEvents::Silent)))
        .max_rooms_per_conn(None);
    Hub::builder()
        .config(cfg)
        .room_events()
        .on("pub", |ctx: &mut Ctx| {
            let p: Pub = ctx.data()?;
            if !ctx.hub().is_member(ctx.conn_id(), &p.room) {
                return Err(HubError::forbidden("not a member"));
            }
            ctx.hub().to_room(&p.room).emit_nowait("msg", &p.t)?;
            Ok(())
        })
        .build()
}

/// The rooms of connection `c`.
fn rooms_of(c: usize) -> Vec<usize> {
    let (q, r) = (c / 100, c % 100);
    (0..ROOMS_PER_CONN)
        .map(|k| k * 100 + (7 * r + k * q) % 100)
        .collect()
}

fn main() {
    if let Ok(spec) = std::env::var("HUB_ROOMS_CHILD") {
        client::run(&spec);
        return;
    }
    let runs = runs(3);
    let secs: u64 = env_or("BENCH_SECS", 5);
    let rates: Vec<u64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "5000,20000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let rt = Runtime::builder()
        .pollers(2)
        .handler_threads(2)
        .build()
        .expect("runtime");
    let hub = hub();
    let ws = hub.server_config(WsServerConfig::new());
    let server = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(ws, hub.factory())
        .expect("server");
    hub.attach(&server);
    let addr = server.local_addr().to_string();
    println!(
        "# hub_rooms: {CONNS} connections x {ROOMS_PER_CONN} rooms = 10,000 rooms x 10 members; \
         server pid {} (2 pollers, 2 handler threads), client pinned to core 0; {runs} runs, {secs} s",
        std::process::id()
    );
    for rate in rates {
        let mut v: HashMap<&str, Vec<f64>> = HashMap::new();
        for _ in 0..runs {
            wait_closed(&server);
            let cpu0 = cpu_time();
            let out = std::process::Command::new(std::env::current_exe().expect("exe"))
                .env("HUB_ROOMS_CHILD", format!("{addr},{rate},{secs}"))
                .output()
                .expect("run the client");
            let cpu = cpu_time() - cpu0;
            let text = String::from_utf8_lossy(&out.stdout);
            let kv = parse_figures(&text);
            if kv.is_empty() || !out.status.success() {
                println!(
                    "  run failed: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
            println!("  run: {}", fmt(&kv));
            let deliveries = field(&kv, "deliveries").max(1.0);
            for k in ["rate", "delivered_pct", "p50_us", "p99_us"] {
                v.entry(k).or_default().push(field(&kv, k));
            }
            // The whole run's server CPU (connects and joins included) per measured delivery.
            v.entry("cpu")
                .or_default()
                .push(cpu.as_secs_f64() * 1e6 / deliveries);
        }
        let mut m = |k: &str| median(v.remove(k).unwrap_or_default());
        println!(
            "hub_rooms rate={rate}/s: median {:.0} deliveries/s, delivered {:.2}%, p50 {:.0} us, \
             p99 {:.0} us, server CPU {:.2} us per delivery (whole run)",
            m("rate"),
            m("delivered_pct"),
            m("p50_us"),
            m("p99_us"),
            m("cpu"),
        );
    }
    server.shutdown(Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}

/// The load: one mio loop over every connection.
mod client {
    use super::*;
    use mio::net::TcpStream;
    use mio::{Events, Interest, Poll, Token};

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    struct C {
        s: TcpStream,
        inbuf: Vec<u8>,
        out: Vec<u8>,
        upgraded: bool,
        rooms: Vec<usize>,
        next: usize,
    }

    /// A masked client text frame.
    fn frame(out: &mut Vec<u8>, text: &[u8]) {
        out.push(0x81);
        match text.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out.extend(text.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    }

    fn flush(c: &mut C) {
        while !c.out.is_empty() {
            match c.s.write(&c.out) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("write: {e}"),
            }
        }
    }

    /// What one read brought: acks and `msg` payloads (their send times).
    #[derive(Default)]
    struct Seen {
        acks: usize,
        times: Vec<u64>,
    }

    /// Takes the whole frames out of `c.inbuf`.
    fn frames(c: &mut C, seen: &mut Seen) {
        if !c.upgraded {
            let Some(end) = c.inbuf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            assert!(c.inbuf.starts_with(b"HTTP/1.1 101"), "upgrade refused");
            c.inbuf.drain(..end + 4);
            c.upgraded = true;
        }
        let mut at = 0;
        loop {
            let b = &c.inbuf[at..];
            if b.len() < 2 {
                break;
            }
            let (len, head) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => {
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(l) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if b.len() < head + len {
                break;
            }
            let body = &b[head..head + len];
            if b[0] & 0x0f == 1 {
                if body.starts_with(br#"{"event":"msg","data":"#) {
                    let num = &body[22..body.len() - 1];
                    let t = std::str::from_utf8(num).ok().and_then(|s| s.parse().ok());
                    seen.times.push(t.expect("a send time"));
                } else if body.starts_with(br#"{"event":"ack""#) {
                    seen.acks += 1;
                } else {
                    panic!("unexpected: {}", String::from_utf8_lossy(body));
                }
            }
            at += head + len;
        }
        c.inbuf.drain(..at);
    }

    fn read(c: &mut C, seen: &mut Seen) -> bool {
        let mut buf = [0u8; 64 << 10];
        loop {
            match c.s.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        frames(c, seen);
        true
    }

    /// `spec` is `ADDR,RATE,SECS`: runs the load and prints its figures as `key=value`.
    pub fn run(spec: &str) {
        pin_to(0);
        let mut it = spec.split(',');
        let addr = it.next().expect("addr").parse().expect("addr");
        let rate: u64 = it.next().and_then(|s| s.parse().ok()).expect("rate");
        let secs: u64 = it.next().and_then(|s| s.parse().ok()).expect("secs");
        let mut poll = Poll::new().expect("poll");
        let mut conns: Vec<C> = Vec::with_capacity(CONNS);
        for i in 0..CONNS {
            let mut s = TcpStream::connect(addr).expect("connect");
            let both = Interest::READABLE | Interest::WRITABLE;
            poll.registry()
                .register(&mut s, Token(i), both)
                .expect("register");
            let mut out = Vec::new();
            out.extend_from_slice(
                b"GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            );
            let rooms = rooms_of(i);
            for (k, r) in rooms.iter().enumerate() {
                let join = format!(r#"{{"event":"room:join","data":{{"room":"r{r}"}},"id":{k}}}"#);
                frame(&mut out, join.as_bytes());
            }
            conns.push(C {
                s,
                inbuf: Vec::new(),
                out,
                upgraded: false,
                rooms,
                next: i % ROOMS_PER_CONN,
            });
        }
        let mut events = Events::with_capacity(1024);
        let mut seen = Seen::default();
        let start = Instant::now();
        let joins = CONNS * ROOMS_PER_CONN;
        // Joins: every one acknowledged before publishing starts.
        while seen.acks < joins {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "joins timed out"
            );
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .expect("poll");
            for ev in events.iter() {
                let c = &mut conns[ev.token().0];
                flush(c);
                assert!(read(c, &mut seen), "closed while joining");
            }
        }
        let join_secs = start.elapsed().as_secs_f64();
        // Publishing: a warm-up second, the window, then a second to drain.
        let t0 = Instant::now();
        let us = |t: Instant| t.duration_since(t0).as_micros() as u64;
        let (warm, window) = (1_000_000u64, secs * 1_000_000);
        let (mut sent, mut sent_in_window, mut cursor) = (0u64, 0u64, 0usize);
        let mut lat: Vec<u32> = Vec::with_capacity((rate * secs * 10) as usize);
        loop {
            let now = us(Instant::now());
            if now >= warm + window + 1_000_000 {
                break;
            }
            if now < warm + window {
                let due = now * rate / 1_000_000;
                while sent < due {
                    let c = &mut conns[cursor];
                    cursor = (cursor + 1) % CONNS;
                    let room = c.rooms[c.next];
                    c.next = (c.next + 1) % ROOMS_PER_CONN;
                    let t = us(Instant::now());
                    let p = format!(r#"{{"event":"pub","data":{{"room":"r{room}","t":{t}}}}}"#);
                    frame(&mut c.out, p.as_bytes());
                    flush(c);
                    sent += 1;
                    if (warm..warm + window).contains(&t) {
                        sent_in_window += 1;
                    }
                }
            }
            poll.poll(&mut events, Some(Duration::from_millis(1)))
                .expect("poll");
            let got = us(Instant::now());
            for ev in events.iter() {
                let c = &mut conns[ev.token().0];
                flush(c);
                assert!(read(c, &mut seen), "closed while publishing");
                for t in seen.times.drain(..) {
                    if (warm..warm + window).contains(&t) {
                        lat.push(got.saturating_sub(t).min(u32::MAX as u64) as u32);
                    }
                }
            }
        }
        lat.sort_unstable();
        let pct = |p: f64| {
            let i = ((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1));
            lat.get(i).copied().unwrap_or(0)
        };
        let expected = (sent_in_window * 10).max(1);
        // One line: the parent reads the last line's `key=value` pairs.
        println!(
            "join_s={join_secs:.2} sent={sent_in_window} deliveries={} rate={:.0}/s \
             delivered_pct={:.2} p50_us={} p99_us={}",
            lat.len(),
            lat.len() as f64 / secs as f64,
            lat.len() as f64 * 100.0 / expected as f64,
            pct(0.50),
            pct(0.99)
        );
    }
}
