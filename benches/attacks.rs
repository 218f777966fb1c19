//! The attack suite of issue 10: each attack of the issue's table, run against the real
//! examples' configurations on loopback, with the server in this process and the attacker
//! as threads of it. VmHWM (the peak resident memory) is process-wide, so each attack runs
//! alone in a child process (this program re-executed with `--attack NAME`); the parent
//! prints one row per attack: the peak RSS growth over the child's resident memory just
//! before the attack, the issue's bound, and PASS or FAIL. It exits non-zero on a FAIL.
//!
//! ```text
//! cargo bench --bench attacks
//! BENCH_ONLY=ping,envelopes cargo bench --bench attacks
//! ```
//!
//! | name | attack | server | bound |
//! |---|---|---|---|
//! | `pipelined` | 4 MiB of pipelined `GET /` on one connection that never reads | chat example | ≤ +32 MiB |
//! | `deflate` | 40 connections × 2 permessage-deflate messages of ~15 KB inflating to 15 MiB each | chat example | ≤ +64 MiB |
//! | `ping` | a 64 MiB ping flood from a client that never reads | chat example | ≤ +16 MiB |
//! | `envelopes` | 33 MiB of 1-byte invalid envelopes from a client that never reads | chat example | ≤ +16 MiB |
//! | `partial` | 30 connections holding 1 MiB of a 15 MiB frame, then one byte every 250 ms | WebSocket echo example, message deadline shortened to 2 s | every one closed with 1008 at the deadline |
//! | `slow-reader` | 32 MiB through the README's TCP echo, read at ~8 MiB/s | README's TCP echo | every byte back, in order |
//!
//! An attack ends when the attacker has sent everything or the server pushed it back (a
//! write blocked for 2 s) or closed it; the row says how much the server took.
//! `BENCH_ONLY` selects attacks by name (comma-separated).

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use sockloop::{handler, on_message, Listen, Runtime, Server, WsConn, WsMessage, WsServerConfig};

const MIB: u64 = 1 << 20;
/// How long a write may block before the attacker counts itself pushed back.
const STALL: Duration = Duration::from_secs(2);
/// The shortened message deadline of the `partial` attack.
const MESSAGE_DEADLINE: Duration = Duration::from_secs(2);

/// What one attack found (besides memory).
struct Outcome {
    ok: bool,
    detail: String,
}

/// An attack: its name, what it does, its memory bound (if the issue gives one) and its run.
struct Attack {
    name: &'static str,
    what: &'static str,
    bound: Option<u64>,
    check: &'static str,
    run: fn() -> Outcome,
}

const ATTACKS: &[Attack] = &[
    Attack {
        name: "pipelined",
        what: "4 MiB pipelined GET / (chat, never reads)",
        bound: Some(32 * MIB),
        check: "",
        run: pipelined,
    },
    Attack {
        name: "deflate",
        what: "80 deflate bombs, 15 MiB each (chat)",
        bound: Some(64 * MIB),
        check: "",
        run: deflate,
    },
    Attack {
        name: "ping",
        what: "64 MiB ping flood (chat, never reads)",
        bound: Some(16 * MIB),
        check: "",
        run: ping,
    },
    Attack {
        name: "envelopes",
        what: "33 MiB of 1-byte envelopes (chat)",
        bound: Some(16 * MIB),
        check: "",
        run: envelopes,
    },
    Attack {
        name: "partial",
        what: "30 held partial frames (ws echo)",
        bound: None,
        check: "1008 at the deadline",
        run: partial,
    },
    Attack {
        name: "slow-reader",
        what: "32 MiB echo to a slow reader (TCP echo)",
        bound: None,
        check: "every byte intact",
        run: slow_reader,
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--attack") {
        return child(args.get(i + 1).map_or("", |s| s.as_str()));
    }
    parent()
}

/// Runs every selected attack in its own child process and prints the table.
fn parent() -> ExitCode {
    let exe = std::env::current_exe().expect("own path");
    println!(
        "{:<44} {:>12} {:>22}  result",
        "attack", "peak growth", "bound"
    );
    let mut failed = false;
    for a in ATTACKS.iter().filter(|a| common::wanted(a.name, true)) {
        let out = Command::new(&exe)
            .args(["--attack", a.name])
            .output()
            .expect("run an attack");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "));
        let row = match (out.status.success(), line) {
            (true, Some(line)) => row(a, line),
            _ => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                format!("FAIL  (the child failed: {})", stderr.trim())
            }
        };
        failed |= row.starts_with("FAIL");
        let bound = match a.bound {
            Some(b) => format!("<= +{} MiB", b / MIB),
            None => a.check.to_string(),
        };
        let growth = line
            .and_then(|l| l.split_whitespace().next())
            .and_then(|g| g.parse::<u64>().ok())
            .map_or("-".into(), |g| format!("+{:.1} MiB", g as f64 / MIB as f64));
        println!("{:<44} {:>12} {:>22}  {row}", a.what, growth, bound);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// PASS or FAIL and the detail, from a child's `RESULT growth ok detail…` line.
fn row(a: &Attack, line: &str) -> String {
    let mut it = line.splitn(3, ' ');
    let growth: u64 = it.next().and_then(|g| g.parse().ok()).unwrap_or(u64::MAX);
    let ok = it.next() == Some("true");
    let detail = it.next().unwrap_or("");
    let within = a.bound.is_none_or(|b| growth <= b);
    let verdict = if ok && within { "PASS" } else { "FAIL" };
    format!("{verdict}  ({detail})")
}

/// Runs one attack in this (child) process and prints `RESULT growth ok detail`.
fn child(name: &str) -> ExitCode {
    let Some(a) = ATTACKS.iter().find(|a| a.name == name) else {
        eprintln!("no attack named {name:?}");
        return ExitCode::FAILURE;
    };
    let out = (a.run)();
    let growth = peak_growth();
    println!("RESULT {growth} {} {}", out.ok, out.detail);
    ExitCode::SUCCESS
}

/// Resident memory just before the attack (set by [`baseline`]).
static BASELINE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Notes the resident memory once the server is up, right before the attack.
fn baseline() {
    BASELINE.store(common::rss_bytes(), std::sync::atomic::Ordering::Relaxed);
}

/// This process's peak resident memory (`VmHWM`) above the baseline.
fn peak_growth() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    hwm.saturating_sub(BASELINE.load(std::sync::atomic::Ordering::Relaxed))
}

// ---- servers: the examples' configurations ----

/// The chat example (`examples/chat.rs`, compiled in) with its defaults, on port 0.
fn chat_server(rt: &Runtime) -> chat::Chat {
    let cfg = chat::ChatConfig {
        addr: "127.0.0.1:0".into(),
        ..Default::default()
    };
    chat::serve(rt, &cfg).expect("chat server")
}

/// The echo example's WebSocket server (`echo ws`): inline handlers, `ws` for the engine.
fn ws_echo_server(rt: &Runtime, ws: sockloop::ws::WsConfig) -> Server {
    rt.serve(Listen::tcp("127.0.0.1:0"))
        .config(sockloop::ServerConfig::new().dispatch(sockloop::Dispatch::Inline))
        .websocket(
            WsServerConfig::new().ws(ws),
            on_message(|c: &WsConn, m: WsMessage<'_>| {
                let _ = match m {
                    WsMessage::Text(t) => c.send_text(t),
                    WsMessage::Binary(b) => c.send_binary(b),
                };
            }),
        )
        .expect("ws echo server")
}

/// The README's TCP echo: handler threads and the default configuration.
fn tcp_echo_server(rt: &Runtime) -> Server {
    rt.serve(Listen::tcp("127.0.0.1:0"))
        .stream(handler::on_data(|c: &sockloop::Conn, d: &[u8]| {
            let _ = c.send(d);
        }))
        .expect("tcp echo server")
}

fn inet(s: &Server) -> SocketAddr {
    s.local_addr().as_inet().expect("a TCP server")
}

// ---- the attacker's tools ----

/// A masked client frame (`first`: FIN, RSV and opcode bits) around `payload`.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = frame_head(first, payload.len() as u64);
    let key = [0x37, 0xfa, 0x21, 0x3d];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// A client frame header (mask bit set) for a payload of `len` bytes, without the key.
fn frame_head(first: u8, len: u64) -> Vec<u8> {
    let mut f = vec![first];
    match len {
        0..=125 => f.push(0x80 | len as u8),
        126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            f.push(0x80 | 127);
            f.extend_from_slice(&len.to_be_bytes());
        }
    }
    f
}

/// `unit` repeated to about `bytes` (one write's worth of a flood).
fn repeated(unit: &[u8], bytes: usize) -> Vec<u8> {
    let n = (bytes / unit.len()).max(1);
    unit.iter().copied().cycle().take(unit.len() * n).collect()
}

/// Writes `chunk` repeatedly until `limit` bytes went out, a write blocks for [`STALL`]
/// (pushed back) or the server closes. Returns the bytes written and how it ended.
fn flood(t: &mut TcpStream, chunk: &[u8], limit: u64) -> (u64, &'static str) {
    t.set_write_timeout(Some(STALL)).expect("write timeout");
    let mut sent = 0u64;
    while sent < limit {
        match t.write(chunk) {
            Ok(n) => sent += n as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (sent, "pushed back");
            }
            Err(_) => return (sent, "closed by the server"),
        }
    }
    (sent, "all sent")
}

/// Opens a WebSocket on a raw socket (`extensions`: an extra request header line or "");
/// returns the socket and the response head.
fn upgrade(addr: SocketAddr, path: &str, extensions: &str) -> (TcpStream, String) {
    let mut t = TcpStream::connect(addr).expect("connect");
    t.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {extensions}\r\n"
    );
    t.write_all(req.as_bytes()).expect("send the upgrade");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        t.read_exact(&mut b).expect("the upgrade's answer");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "refused: {head}");
    (t, head)
}

/// Reads until the server closes (or 10 s pass); the close code of its close frame, if
/// the stream held one (scanned from the end: the last frame before the end of stream).
fn close_code(t: &mut TcpStream) -> Option<u16> {
    let mut all = Vec::new();
    let _ = t.read_to_end(&mut all);
    all.windows(4)
        .rev()
        .find(|w| w[0] == 0x88 && (2..126).contains(&w[1]))
        .map(|w| u16::from_be_bytes([w[2], w[3]]))
}

/// Runs `attack` while sampling the runtime's budget every millisecond; its result and the
/// most bytes the budget counted at once (what the server accounts for, beside the RSS).
fn sampled<T>(rt: &Runtime, attack: impl FnOnce() -> T) -> (T, u64) {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                peak = peak.max(rt.budget().used as u64);
                std::thread::sleep(Duration::from_millis(1));
            }
            peak
        });
        let out = attack();
        done.store(true, std::sync::atomic::Ordering::Release);
        (out, sampler.join().expect("sampler"))
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

// ---- the attacks ----

fn pipelined() -> Outcome {
    let rt = Runtime::new().expect("runtime");
    let chat = chat_server(&rt);
    let addr = inet(&chat.server);
    baseline();
    let mut t = TcpStream::connect(addr).expect("connect");
    let get = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let chunk = repeated(get.as_bytes(), 64 << 10);
    let ((sent, end), counted) = sampled(&rt, || flood(&mut t, &chunk, 4 * MIB));
    drop(t);
    common::wait_closed(&chat.server);
    Outcome {
        ok: true,
        detail: format!(
            "sent {} of 4 MiB, {end}; budget peak {}",
            mib(sent),
            mib(counted)
        ),
    }
}

/// The raw DEFLATE stream (RFC 7692: without the final `00 00 ff ff`) of `len` bytes of
/// one letter, compressed in pieces so the attacker never holds the inflated message.
fn bomb(len: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::best(), false);
    let piece = vec![b'a'; 64 << 10];
    let mut out = Vec::with_capacity(32 << 10);
    let mut fed = 0;
    while fed < len {
        let take = piece.len().min(len - fed);
        out.reserve(16 << 10);
        let before = c.total_in();
        c.compress_vec(&piece[..take], &mut out, FlushCompress::None)
            .expect("deflate");
        fed += (c.total_in() - before) as usize;
    }
    loop {
        out.reserve(16 << 10);
        c.compress_vec(&[], &mut out, FlushCompress::Sync)
            .expect("deflate");
        if out.ends_with(&[0, 0, 0xff, 0xff]) && out.capacity() > out.len() {
            break;
        }
    }
    out.truncate(out.len() - 4);
    out
}

fn deflate() -> Outcome {
    const CONNS: usize = 40;
    let rt = Runtime::new().expect("runtime");
    let chat = chat_server(&rt);
    let addr = inet(&chat.server);
    // RSV1 set: a compressed text message.
    let bomb = frame(0xc1, &bomb(15 << 20));
    let wire = bomb.len();
    baseline();
    let conns: Vec<TcpStream> = (0..CONNS)
        .map(|i| {
            let ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
            let (t, head) = upgrade(addr, &format!("/ws?nick=bomb{i}"), ext);
            assert!(head.contains("permessage-deflate"), "no deflate: {head}");
            t
        })
        .collect();
    let bomb = std::sync::Arc::new(bomb);
    let codes: Vec<Option<u16>> = conns
        .into_iter()
        .map(|mut t| {
            let bomb = bomb.clone();
            std::thread::spawn(move || {
                for _ in 0..2 {
                    if t.write_all(&bomb).is_err() {
                        break;
                    }
                }
                close_code(&mut t)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("attacker thread"))
        .collect();
    let cut = codes.iter().filter(|c| **c == Some(1009)).count();
    Outcome {
        ok: cut == CONNS,
        detail: format!("{wire} B on the wire each; {cut}/{CONNS} closed with 1009"),
    }
}

fn ping() -> Outcome {
    chat_flood("pinger", &frame(0x89, &[7u8; 125]), 64 * MIB)
}

fn envelopes() -> Outcome {
    chat_flood("flooder", &frame(0x81, b"x"), 33 * MIB)
}

/// One chat WebSocket that sends `unit` (a frame) over and over, up to `limit` bytes, and
/// never reads.
fn chat_flood(nick: &str, unit: &[u8], limit: u64) -> Outcome {
    let rt = Runtime::new().expect("runtime");
    let chat = chat_server(&rt);
    let addr = inet(&chat.server);
    baseline();
    let (mut t, _) = upgrade(addr, &format!("/ws?nick={nick}"), "");
    let chunk = repeated(unit, 64 << 10);
    let ((sent, end), counted) = sampled(&rt, || flood(&mut t, &chunk, limit));
    let queued = chat.server.stats().queued_bytes;
    Outcome {
        ok: true,
        detail: format!(
            "sent {} of {}, {end}; budget peak {}, {} queued at the end",
            mib(sent),
            mib(limit),
            mib(counted),
            mib(queued)
        ),
    }
}

fn partial() -> Outcome {
    const CONNS: usize = 30;
    const DECLARED: u64 = 15 << 20;
    let rt = Runtime::new().expect("runtime");
    let ws = sockloop::ws::WsConfig::default().message_timeout(MESSAGE_DEADLINE);
    let s = ws_echo_server(&rt, ws);
    let addr = inet(&s);
    baseline();
    // The first MiB of each frame's payload (mask key zero), shared by the attackers.
    let held = std::sync::Arc::new(vec![0u8; 1 << 20]);
    let results: Vec<(Option<u16>, Duration)> = (0..CONNS)
        .map(|_| {
            let (mut t, _) = upgrade(addr, "/", "");
            let held = held.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut head = frame_head(0x82, DECLARED);
                head.extend_from_slice(&[0, 0, 0, 0]); // the mask key
                t.write_all(&head).expect("the frame's header");
                t.write_all(&held).expect("the frame's first MiB");
                // One byte every 250 ms until the server gives up.
                let mut r = t.try_clone().expect("clone");
                let dripper = std::thread::spawn(move || {
                    while t.write_all(&[0]).is_ok() {
                        std::thread::sleep(Duration::from_millis(250));
                    }
                });
                let code = close_code(&mut r);
                let lived = started.elapsed();
                let _ = r.shutdown(std::net::Shutdown::Both);
                let _ = dripper.join();
                (code, lived)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("attacker thread"))
        .collect();
    let on_time = |d: &Duration| {
        *d >= MESSAGE_DEADLINE - Duration::from_millis(100)
            && *d <= MESSAGE_DEADLINE + Duration::from_millis(1500)
    };
    let cut = results
        .iter()
        .filter(|(c, d)| *c == Some(1008) && on_time(d))
        .count();
    let longest = results.iter().map(|(_, d)| *d).max().unwrap_or_default();
    common::wait_closed(&s);
    Outcome {
        ok: cut == CONNS && s.open_connections() == 0,
        detail: format!(
            "{cut}/{CONNS} closed with 1008 within the deadline ({MESSAGE_DEADLINE:?}; \
             longest {longest:.2?})"
        ),
    }
}

fn slow_reader() -> Outcome {
    const TOTAL: usize = 32 << 20;
    let rt = Runtime::new().expect("runtime");
    let s = tcp_echo_server(&rt);
    baseline();
    let mut t = TcpStream::connect(inet(&s)).expect("connect");
    t.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut w = t.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let mut block = vec![0u8; 64 << 10];
        let mut off = 0;
        while off < TOTAL {
            for (i, b) in block.iter_mut().enumerate() {
                *b = ((off + i) % 251) as u8;
            }
            if w.write_all(&block).is_err() {
                return;
            }
            off += block.len();
        }
    });
    let started = Instant::now();
    let (mut got, mut bad) = (0usize, None);
    let mut buf = vec![0u8; 64 << 10];
    while got < TOTAL {
        let n = match t.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if bad.is_none() {
            bad = (0..n)
                .find(|i| buf[*i] != ((got + i) % 251) as u8)
                .map(|i| got + i);
        }
        got += n;
        // About 8 MiB/s: 8 ms per 64 KiB read.
        std::thread::sleep(Duration::from_millis(8) * n as u32 / (64 << 10) as u32);
    }
    let took = started.elapsed();
    if got < TOTAL {
        let _ = t.shutdown(std::net::Shutdown::Both); // unblocks the writer
    }
    let _ = writer.join();
    let dropped = s.stats().dropped;
    Outcome {
        ok: got == TOTAL && bad.is_none() && dropped == 0,
        detail: format!(
            "{} of 32 MiB back in {took:.1?}, first wrong byte {bad:?}, {dropped} dropped",
            mib(got as u64)
        ),
    }
}
