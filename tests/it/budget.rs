//! The runtime's memory budget (issue 10): one count of every byte all connections hold;
//! at three quarters upgrades are refused, at the limit reading stops and connections are
//! refused — and byte streams still lose nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::http::Request;
use sockloop::ws::WsError;
use sockloop::{
    handler, Conn, Dispatch, Error, Listen, Runtime, SendStatus, ServerConfig, WsConn, WsHandler,
    WsServerConfig,
};

use crate::util::WAIT;

fn rt(budget: usize) -> Runtime {
    Runtime::builder()
        .pollers(1)
        .handler_threads(2)
        .memory_budget(budget)
        .build()
        .unwrap()
}

/// Polls `f` until it holds or `WAIT` passes.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A TCP echo with a per-connection bound far above the runtime's budget: the budget is
/// what stops reading, and the client still gets every byte back, in order.
#[test]
fn a_spent_budget_stops_reading_and_the_stream_loses_nothing() {
    const BUDGET: usize = 2 << 20;
    let rt = rt(BUDGET);
    let cfg = ServerConfig::new()
        .dispatch(Dispatch::Inline)
        .max_queued_bytes(256 << 20);
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .stream(handler::on_data(|c: &Conn, d: &[u8]| {
            assert_eq!(c.send(d), SendStatus::Queued);
        }))
        .unwrap();
    let mut c = TcpStream::connect(s.local_addr().to_string()).unwrap();
    let mut r = c.try_clone().unwrap();
    let total: usize = 48 << 20;
    let writer = std::thread::spawn(move || {
        let mut x = 1u32;
        let mut chunk = vec![0u8; 64 << 10];
        let mut sent = 0;
        while sent < total {
            for b in chunk.iter_mut() {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                *b = (x >> 16) as u8;
            }
            c.write_all(&chunk).unwrap();
            sent += chunk.len();
        }
        c.shutdown(std::net::Shutdown::Write).unwrap();
    });
    // Nobody reads yet: the server's queue grows until the budget is spent, then the
    // poller stops reading and TCP pushes back on the writer.
    wait_until("reading to pause", || rt.budget().paused_reads > 0);
    std::thread::sleep(Duration::from_millis(200));
    let b = rt.budget();
    assert!(
        b.used <= BUDGET + (512 << 10),
        "held {} with a {BUDGET} budget",
        b.used
    );
    assert!(!writer.is_finished(), "the writer must be pushed back");
    // Now read it all: reading resumes and every byte comes back intact.
    let mut x = 1u32;
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 << 10];
    r.set_read_timeout(Some(WAIT)).unwrap();
    while got < total {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "eof after {got} of {total} bytes");
        for &byte in &buf[..n] {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            assert_eq!(byte, (x >> 16) as u8, "byte {got} differs");
            got += 1;
        }
    }
    writer.join().unwrap();
    assert_eq!(s.stats().dropped, 0);
    wait_until("the budget to empty", || rt.budget().used == 0);
}

/// Sends 64 KiB messages of noise (the client negotiates deflate) until one is refused;
/// again every few milliseconds, so the queue stays at its bound while the kernel's
/// buffers fill.
struct Filler;

fn noise(seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..64 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

impl WsHandler for Filler {
    fn on_text(&mut self, ws: &WsConn, _: &str) {
        let msg = noise(7);
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until && ws.is_open() {
            while ws.send_binary(&msg) == SendStatus::Queued {}
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn upgrades_are_refused_at_three_quarters_and_connections_at_the_limit() {
    const BUDGET: usize = 4 << 20;
    let rt = rt(BUDGET);
    // One connection may hold 80% of the budget: past three quarters, not at the limit.
    let cfg = ServerConfig::new().max_queued_bytes(BUDGET / 10 * 8);
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .websocket(WsServerConfig::new(), |_: &WsConn, _: &Request| Filler)
        .unwrap();
    let url = format!("ws://{}/", s.local_addr());
    let plain = || WsClientOptions::default().deflate(false);
    let mut a = WsClient::connect(&url, plain()).unwrap();
    a.send_text("fill").unwrap();
    // Until the kernel's socket buffers are full too, so the queue stays at its bound.
    let (mut steady, mut out) = (0, 0);
    wait_until("three quarters, steadily", || {
        let written = s.stats().bytes_out;
        steady = match rt.budget().used >= BUDGET / 4 * 3 && written == out {
            true => steady + 1,
            false => 0,
        };
        out = written;
        steady >= 40
    });
    // A new upgrade is refused with 503; the open connection is untouched.
    match WsClient::connect(&url, WsClientOptions::default()) {
        Err(Error::WebSocket(WsError::Refused { status, reason })) => {
            assert_eq!(status, 503, "{reason}");
            assert!(reason.contains("memory budget"), "{reason}");
        }
        Err(e) => panic!("expected 503, got {e}"),
        Ok(_) => panic!("expected 503, accepted with {:?}", rt.budget()),
    }
    assert_eq!(rt.budget().refused_upgrades, 1);
    assert!(rt.budget().used < BUDGET, "{:?}", rt.budget());
    // A raw stream server that drops (instead of pushing back) fills the rest: at the
    // limit its sends are refused and new connections are refused at accept.
    let cfg = ServerConfig::new()
        .max_queued_bytes(BUDGET)
        .drop_policy(sockloop::DropPolicy::DropNewest);
    let s2 = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .stream(handler::on_data(|c: &Conn, _: &[u8]| {
            let msg = noise(9);
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until && c.is_open() {
                while c.send(&msg) == SendStatus::Queued {}
                std::thread::sleep(Duration::from_millis(5));
            }
        }))
        .unwrap();
    let mut b = TcpStream::connect(s2.local_addr().to_string()).unwrap();
    b.write_all(b"fill").unwrap();
    wait_until("the limit", || rt.budget().refused_sends > 0);
    wait_until("a refused connection", || {
        let _ = TcpStream::connect(s2.local_addr().to_string()).and_then(|mut t| {
            t.set_read_timeout(Some(Duration::from_millis(200)))?;
            t.read(&mut [0u8; 1])
        });
        rt.budget().refused_connections > 0
    });
    assert!(s2.stats().rejected > 0);
    // The first connection still works: it reads what was queued for it.
    let mut got = 0;
    while got < 8 {
        match a.recv_timeout(WAIT).unwrap() {
            Some(Message::Binary(m)) => {
                assert_eq!(m.len(), 64 << 10);
                got += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    drop((a, b));
    wait_until("the budget to empty", || rt.budget().used == 0);
    // Relieved: upgrades are accepted again.
    WsClient::connect(&url, WsClientOptions::default()).unwrap();
}

/// A masked client frame (mask key 0, so the payload goes as it is).
fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | op, 0x80 | 127];
    f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

struct Echo;

impl WsHandler for Echo {
    fn on_binary(&mut self, ws: &WsConn, data: &[u8]) {
        let _ = ws.send_binary(data);
    }
}

/// A message reassembled from fragments is counted while it is held, and uncounted once
/// it is handled and its echo written.
#[test]
fn a_fragmented_message_is_counted_while_it_is_held() {
    let rt = rt(64 << 20);
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(WsServerConfig::new(), |_: &WsConn, _: &Request| Echo)
        .unwrap();
    let mut t = crate::attacks::ws_upgrade(&s);
    let part = vec![b'f'; 256 << 10];
    t.write_all(&frame(false, 2, &part)).unwrap();
    for _ in 0..3 {
        t.write_all(&frame(false, 0, &part)).unwrap();
    }
    wait_until("the held fragments to be counted", || {
        rt.budget().used >= 1 << 20
    });
    t.write_all(&frame(true, 0, b"end")).unwrap();
    // The echo: a 10-byte header and the whole message.
    let mut echo = vec![0u8; 10 + (1 << 20) + 3];
    t.set_read_timeout(Some(WAIT)).unwrap();
    t.read_exact(&mut echo).unwrap();
    assert_eq!(&echo[echo.len() - 3..], b"end");
    wait_until("the budget to empty", || rt.budget().used == 0);
}

/// Sends noise until a send is refused, once.
struct Flood;

impl WsHandler for Flood {
    fn on_text(&mut self, ws: &WsConn, _: &str) {
        let msg = noise(3);
        while ws.send_binary(&msg) == SendStatus::Queued {}
    }
}

/// Under the disconnect policy, a WebSocket peer learns why it was cut: 1008 when its own
/// queue overflowed, 1013 ("try again later") when the runtime's budget was spent.
#[test]
fn disconnects_tell_the_peer_why_1008_for_its_queue_1013_for_the_budget() {
    for (budget, bound, code, reason) in [
        (1 << 30, 256 << 10, 1008, "outbound queue overflow"),
        (1 << 20, 64 << 20, 1013, "server over budget"),
    ] {
        let rt = rt(budget);
        let cfg = ServerConfig::new()
            .max_queued_bytes(bound)
            .drop_policy(sockloop::DropPolicy::Disconnect);
        let s = rt
            .serve(Listen::tcp("127.0.0.1:0"))
            .config(cfg)
            .websocket(WsServerConfig::new(), |_: &WsConn, _: &Request| Flood)
            .unwrap();
        let url = format!("ws://{}/", s.local_addr());
        let opts = WsClientOptions::default().deflate(false);
        let mut c = WsClient::connect(&url, opts).unwrap();
        c.send_text("go").unwrap();
        let (got_code, got_reason) = loop {
            match c.recv_timeout(WAIT).unwrap().expect("a message in time") {
                Message::Binary(_) => continue,
                Message::Close(code, reason) => break (code.as_u16(), reason),
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!((got_code, got_reason.as_str()), (code, reason));
    }
}

/// A peer that resets the connection while the server writes: what the last flush wrote
/// before the reset is uncounted like the rest (the queue and the budget go back to zero).
#[test]
fn a_reset_during_a_flush_leaves_nothing_counted() {
    let rt = rt(1 << 30);
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().dispatch(Dispatch::Inline))
        .stream(handler::on_data(|c: &Conn, _: &[u8]| {
            for _ in 0..64 {
                let _ = c.send(noise(5));
            }
        }))
        .unwrap();
    for _ in 0..20 {
        let t = TcpStream::connect(s.local_addr().to_string()).unwrap();
        let sock = socket2::SockRef::from(&t);
        sock.set_recv_buffer_size(4096).unwrap();
        (&t).write_all(b"go").unwrap();
        let mut buf = [0u8; 1024];
        (&t).read_exact(&mut buf).unwrap();
        // An RST instead of a FIN: the server's next writes fail mid-flush.
        sock.set_linger(Some(Duration::ZERO)).unwrap();
        drop(t);
    }
    wait_until("every connection closed", || s.open_connections() == 0);
    wait_until("nothing counted", || {
        rt.budget().used == 0 && s.stats().queued_bytes == 0
    });
}
