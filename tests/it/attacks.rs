//! Attacks and abuse on loopback, bounded in count and time: what one client can make a
//! server hold, and that byte streams lose nothing while pushed back.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sockloop::http::Request;
use sockloop::{handler, Listen, Runtime, Server, ServerConfig, WsConn, WsHandler, WsServerConfig};

use crate::util::WAIT;

fn rt() -> Runtime {
    Runtime::builder()
        .pollers(1)
        .handler_threads(2)
        .build()
        .unwrap()
}

fn connect(s: &Server) -> TcpStream {
    let t = TcpStream::connect(s.local_addr().as_inet().unwrap()).unwrap();
    t.set_read_timeout(Some(WAIT)).unwrap();
    t
}

/// Writes `chunk` repeatedly until `limit` bytes went out or a write blocks for `stall`
/// (the server stopped reading). Returns the bytes written.
fn write_until_pushed_back(
    t: &mut TcpStream,
    chunk: &[u8],
    limit: usize,
    stall: Duration,
) -> usize {
    t.set_write_timeout(Some(stall)).unwrap();
    let mut sent = 0;
    while sent < limit {
        match t.write(chunk) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            // The server closed the connection (a limit): that ends the attack too.
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                break
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    sent
}

/// A ws upgrade on a raw socket; returns the socket after the 101.
pub(crate) fn ws_upgrade(s: &Server) -> TcpStream {
    let mut t = connect(s);
    t.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        t.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    t
}

/// A masked client frame.
fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | op, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

#[test]
fn a_slow_reader_of_a_32_mib_tcp_echo_gets_every_byte_in_order() {
    let rt = rt();
    // The README's echo: handler threads, default configuration (backpressure for streams).
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .stream(handler::on_data(|c: &sockloop::Conn, d: &[u8]| {
            let _ = c.send(d);
        }))
        .unwrap();
    const TOTAL: usize = 32 << 20;
    let mut t = connect(&s);
    let mut w = t.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut block = vec![0u8; 64 << 10];
        let mut off = 0usize;
        while off < TOTAL {
            for (i, b) in block.iter_mut().enumerate() {
                *b = ((off + i) % 251) as u8;
            }
            w.write_all(&block).unwrap();
            off += block.len();
        }
    });
    let mut got = 0usize;
    let mut buf = vec![0u8; 16 << 10];
    let mut peak = 0u64;
    while got < TOTAL {
        let n = t.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {got} bytes");
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, ((got + i) % 251) as u8, "byte {} differs", got + i);
        }
        got += n;
        peak = peak.max(s.stats().queued_bytes);
        if got % (1 << 20) < n {
            std::thread::sleep(Duration::from_millis(2)); // a slow reader
        }
    }
    writer.join().unwrap();
    assert_eq!(s.stats().dropped, 0, "nothing dropped");
    assert!(
        peak <= 8 << 20,
        "queue peaked at {peak} bytes (bound 4 MiB, hard 8 MiB)"
    );
}

#[test]
fn a_ping_flood_from_a_client_that_never_reads_is_pushed_back() {
    let rt = rt();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(
            WsServerConfig::new(),
            sockloop::on_message(|_: &WsConn, _| {}),
        )
        .unwrap();
    let mut t = ws_upgrade(&s);
    let ping = frame(0x9, &[7u8; 125]);
    let flood: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 512)
        .collect();
    // The server answers at most a few pongs per read (only the latest past that, as RFC
    // 6455 §5.5.3 allows), so it may read on; what it holds stays small either way.
    let mut peak = 0;
    let mut sent = 0;
    while sent < 16 << 20 {
        let n = write_until_pushed_back(&mut t, &flood, flood.len(), Duration::from_secs(1));
        peak = peak.max(s.stats().queued_bytes);
        if n == 0 {
            break;
        }
        sent += n;
    }
    assert!(
        peak <= 1 << 20,
        "pongs held: {peak} bytes after {sent} bytes of pings"
    );
}

/// Blocks in its first message until the test releases it.
struct Stuck(Option<std::sync::Arc<std::sync::Barrier>>);

impl WsHandler for Stuck {
    fn on_open(&mut self, _: &WsConn, _: &Request) {}
    fn on_text(&mut self, _: &WsConn, _: &str) {
        if let Some(gate) = self.0.take() {
            gate.wait();
        }
    }
}

#[test]
fn tiny_messages_for_a_stuck_handler_are_bounded_in_count_not_only_bytes() {
    let rt = rt();
    let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
    let g = gate.clone();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(WsServerConfig::new(), move |_: &WsConn, _: &Request| {
            Stuck(Some(g.clone()))
        })
        .unwrap();
    let mut t = ws_upgrade(&s);
    let one = frame(0x1, b"x");
    let flood: Vec<u8> = one.iter().copied().cycle().take(one.len() * 4096).collect();
    // 40 MiB of 1-byte messages would be ~6 M handler jobs if nothing bounded them.
    let sent = write_until_pushed_back(&mut t, &flood, 40 << 20, Duration::from_secs(1));
    assert!(sent < 40 << 20, "the server queued every tiny message");
    gate.wait();
    drop(t);
}

#[test]
fn pipelined_requests_from_a_client_that_never_reads_are_pushed_back() {
    let rt = rt();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new())
        .websocket(
            WsServerConfig::new().http(|_: &Request| sockloop::http::Response::text(200, "hello")),
            sockloop::on_message(|_: &WsConn, _| {}),
        )
        .unwrap();
    let mut t = connect(&s);
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let flood: Vec<u8> = get.iter().copied().cycle().take(get.len() * 2048).collect();
    let started = Instant::now();
    // One request at a time is answered, at most 100 per connection, then it closes (and
    // discards what else arrives): responses never pile up, whatever the client sends.
    let mut peak = 0;
    let mut sent = 0;
    while sent < 16 << 20 {
        let n = write_until_pushed_back(&mut t, &flood, flood.len(), Duration::from_secs(1));
        peak = peak.max(s.stats().queued_bytes);
        if n < flood.len() {
            break;
        }
        sent += n;
    }
    assert!(peak <= 64 << 10, "responses held: {peak} bytes");
    let mut answers = Vec::new();
    let _ = t.read_to_end(&mut answers);
    let n = answers
        .windows(15)
        .filter(|w| w == b"HTTP/1.1 200 OK")
        .count();
    assert_eq!(n, 100, "one connection gets 100 answers, then it closes");
    assert!(started.elapsed() < WAIT * 3);
}

/// Sends `total` bytes of a pattern to each connection as soon as it opens.
struct Pusher(usize);

impl sockloop::StreamHandler for Pusher {
    fn on_open(&mut self, conn: &sockloop::Conn) {
        let block: Vec<u8> = (0..64 << 10).map(|i| (i % 251) as u8).collect();
        for _ in 0..self.0 / block.len() {
            assert_eq!(conn.send(&block), sockloop::SendStatus::Queued);
        }
    }
}

fn pusher(rt: &Runtime, total: usize, close_timeout: Duration) -> Server {
    rt.serve(Listen::tcp("127.0.0.1:0"))
        .config(
            ServerConfig::new()
                .max_queued_bytes(16 << 20)
                .close_timeout(close_timeout),
        )
        .stream(move |_: &sockloop::Conn| Pusher(total))
        .unwrap()
}

/// Reads everything at about `rate` bytes per second until end of stream.
fn slow_read_all(mut t: TcpStream, rate: usize) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0;
        loop {
            match t.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n,
            }
            std::thread::sleep(Duration::from_secs_f64(buf.len() as f64 / rate as f64));
        }
    })
}

#[test]
fn shutdown_honours_its_deadline_over_close_timeout_and_delivers_everything() {
    let rt = rt();
    const TOTAL: usize = 4 << 20;
    let s = pusher(&rt, TOTAL, Duration::from_millis(50));
    let t = connect(&s);
    let reader = slow_read_all(t, 8 << 20);
    let until = Instant::now() + WAIT;
    while s.stats().queued_bytes == 0 && Instant::now() < until {
        std::thread::yield_now();
    }
    // A 50 ms close timeout would cut a 4 MiB transfer to an 8 MiB/s reader; the
    // shutdown's own deadline (10 s) is what holds.
    assert!(s.shutdown(WAIT), "clean: every byte was delivered");
    assert_eq!(reader.join().unwrap(), TOTAL);
    assert_eq!(s.stats().discarded_bytes, 0);
}

#[test]
fn a_shutdown_that_must_discard_says_so() {
    let rt = rt();
    const TOTAL: usize = 8 << 20;
    let s = pusher(&rt, TOTAL, Duration::from_secs(5));
    let t = connect(&s);
    let reader = slow_read_all(t, 1 << 20);
    let until = Instant::now() + WAIT;
    while s.stats().queued_bytes == 0 && Instant::now() < until {
        std::thread::yield_now();
    }
    assert!(
        !s.shutdown(Duration::from_millis(200)),
        "not clean: bytes were thrown away"
    );
    let got = reader.join().unwrap();
    let discarded = s.stats().discarded_bytes as usize;
    assert!(
        got < TOTAL && discarded > 0,
        "got {got}, discarded {discarded}"
    );
}

#[test]
fn binding_a_port_in_use_fails_and_names_the_address() {
    let rt = rt();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .stream(handler::on_data(|_: &sockloop::Conn, _: &[u8]| {}))
        .unwrap();
    let addr = s.local_addr().to_string();
    let err = rt
        .serve(Listen::tcp(addr.clone()))
        .stream(handler::on_data(|_: &sockloop::Conn, _: &[u8]| {}))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("bind {addr}")), "{msg}");
    // Sharing a port is an explicit choice of both servers.
    let shared = ServerConfig::new().reuse_port(true);
    let a = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(shared.clone())
        .stream(handler::on_data(|_: &sockloop::Conn, _: &[u8]| {}))
        .unwrap();
    rt.serve(Listen::tcp(a.local_addr().to_string()))
        .config(shared)
        .stream(handler::on_data(|_: &sockloop::Conn, _: &[u8]| {}))
        .expect("both asked for SO_REUSEPORT");
}

#[test]
fn serve_on_a_shut_down_runtime_is_an_error_not_a_hang() {
    let rt = rt();
    rt.shutdown(Duration::from_secs(1));
    let r = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .stream(handler::on_data(|_: &sockloop::Conn, _: &[u8]| {}));
    assert!(matches!(r, Err(sockloop::Error::Closed)), "{r:?}");
}

#[test]
fn a_deflate_bomb_to_a_hub_server_is_cut_at_the_hub_limit_while_inflating() {
    use sockloop::client::ws::{Message, WsClient, WsClientOptions};
    let rt = rt();
    let hub = sockloop::hub::Hub::builder().build();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(hub.server_config(WsServerConfig::new()), hub.factory())
        .unwrap();
    hub.attach(&s);
    let url = format!("ws://{}/", s.local_addr());
    let mut c = WsClient::connect(&url, WsClientOptions::default()).unwrap();
    // 15 MiB of one letter deflates to a few KiB on the wire.
    let bomb = "a".repeat(15 << 20);
    c.send_text(&bomb).unwrap();
    loop {
        match c.recv_timeout(WAIT).unwrap() {
            Some(Message::Close(code, _)) => {
                assert_eq!(code, sockloop::ws::CloseCode::SIZE);
                break;
            }
            Some(_) => continue,
            None => panic!("no close before the timeout"),
        }
    }
}

#[test]
fn a_datagram_to_an_unnamed_unix_peer_is_refused_at_once() {
    use std::os::unix::net::UnixDatagram;
    let dir = crate::util::tempdir();
    let path = dir.path().join("d.sock");
    let rt = rt();
    let (tx, rx) = crossbeam_channel::unbounded();
    let s = rt
        .serve(Listen::unix_datagram(&path))
        .config(ServerConfig::new().dispatch(sockloop::Dispatch::Inline))
        .datagram(sockloop::handler::on_datagram(
            move |d: &sockloop::DatagramSender, peer: &sockloop::Addr, data: &[u8]| {
                let _ = tx.send((peer.clone(), d.send_to(data, peer)));
            },
        ))
        .unwrap();
    // A client socket bound to no path: the server sees an unnamed peer.
    let c = UnixDatagram::unbound().unwrap();
    c.send_to(b"ping", &path).unwrap();
    let (peer, status) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(peer, sockloop::Addr::Unix(None));
    assert_eq!(
        status,
        sockloop::SendStatus::Dropped,
        "it cannot be sent: said at once"
    );
    assert_eq!(s.stats().dropped, 1);
}

/// Set in a child process of this binary that runs one test alone.
const CHILD: &str = "SOCKLOOP_ATTACK_CHILD";

/// Whether this process is such a child (a parent-side test then does nothing).
fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs one test of this binary alone in a child process, with `RLIMIT_NOFILE` lowered to
/// `nofile` (by the shell's `ulimit`) when given, so that no other test sees the limit and
/// process-wide figures (memory, descriptors) are its own; returns its stdout.
fn in_child(test: &str, nofile: Option<u32>) -> String {
    let exe = std::env::current_exe().unwrap();
    let limit = nofile.map_or(String::new(), |n| format!("ulimit -n {n} && "));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{limit}exec \"$0\" \"$@\""))
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    stdout
}

#[test]
fn out_of_descriptors_child() {
    if !is_child() {
        return; // run by the test below, in its own process
    }
    let rt = rt();
    let (rec, records) = crate::util::recorder();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().dispatch(sockloop::Dispatch::Inline))
        .observer(rec)
        .stream(handler::on_data(|c: &sockloop::Conn, d: &[u8]| {
            let _ = c.send(d);
        }))
        .unwrap();
    // The clients' sockets first (unconnected), then every descriptor left.
    const CLIENTS: usize = 4;
    let socks: Vec<socket2::Socket> = (0..CLIENTS)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
        .collect();
    let mut hold = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => hold.push(f),
            Err(e) if e.raw_os_error() == Some(24) => break, // EMFILE
            Err(e) => panic!("open: {e}"),
        }
    }
    let to = socket2::SockAddr::from(s.local_addr().as_inet().unwrap());
    let mut clients: Vec<TcpStream> = socks
        .into_iter()
        .map(|c| {
            c.connect(&to).unwrap();
            c.set_read_timeout(Some(WAIT)).unwrap();
            c.into()
        })
        .collect();
    for c in &mut clients {
        c.write_all(b"hello").unwrap();
    }
    let first = records
        .errors
        .recv_timeout(WAIT)
        .expect("accept failure reported");
    assert!(
        first.contains("accept on") && first.contains("os error 24"),
        "{first}"
    );
    // Several retries fail while descriptors stay short (at 50 ms and 150 ms): the owner
    // hears of the episode once.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        records.errors.try_recv().is_err(),
        "reported once per episode"
    );
    assert_eq!(s.open_connections(), 0);
    drop(hold);
    // No new connection arrives: the listener's timer accepts the waiting ones.
    for c in &mut clients {
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
    }
    assert_eq!(s.open_connections(), CLIENTS);
    assert!(
        records.errors.try_recv().is_err(),
        "no error once accepting"
    );
    println!("EMFILE-CHILD-OK accepted={}", s.stats().accepted);
}

#[test]
fn connections_waiting_while_descriptors_ran_out_are_accepted_when_they_free_up() {
    if is_child() {
        return;
    }
    let out = in_child("attacks::out_of_descriptors_child", Some(128));
    assert!(out.contains("EMFILE-CHILD-OK accepted=4"), "{out}");
}

fn unix_echo(rt: &Runtime, listen: Listen) -> sockloop::Result<Server> {
    rt.serve(listen)
        .stream(handler::on_data(|c: &sockloop::Conn, d: &[u8]| {
            let _ = c.send(d);
        }))
}

fn unixgram_sink(rt: &Runtime, listen: Listen) -> sockloop::Result<Server> {
    rt.serve(listen).datagram(sockloop::handler::on_datagram(
        |_: &sockloop::DatagramSender, _: &sockloop::Addr, _: &[u8]| {},
    ))
}

#[test]
fn a_unix_socket_file_is_removed_when_a_step_after_binding_fails() {
    let dir = crate::util::tempdir();
    let rt = rt();
    let bad = sockloop::UnixOptions {
        group: Some("no-such-group-sockloop".into()),
        ..Default::default()
    };
    let stream = dir.path().join("s.sock");
    let err = unix_echo(&rt, Listen::unix(&stream).unix_options(bad.clone())).unwrap_err();
    assert!(err.to_string().contains("no such group"), "{err}");
    assert!(!stream.exists(), "the stream socket file was removed");
    let dgram = dir.path().join("d.sock");
    assert!(unixgram_sink(&rt, Listen::unix_datagram(&dgram).unix_options(bad)).is_err());
    assert!(!dgram.exists(), "the datagram socket file was removed");
    // The paths are free for servers that start.
    unix_echo(&rt, Listen::unix(&stream)).unwrap();
    unixgram_sink(&rt, Listen::unix_datagram(&dgram)).unwrap();
}

#[test]
fn binding_a_unix_path_that_cannot_exist_names_it() {
    let dir = crate::util::tempdir();
    let rt = rt();
    let path = dir.path().join("no-dir").join("s.sock");
    let err = unix_echo(&rt, Listen::unix(&path)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("bind {}", path.display())), "{msg}");
}

#[test]
fn dropping_a_runtime_removes_the_socket_files_of_its_servers() {
    let dir = crate::util::tempdir();
    let stream = dir.path().join("s.sock");
    let dgram = dir.path().join("d.sock");
    let kept = dir.path().join("kept.sock");
    let rt = rt();
    // A server handle that outlives the runtime does not keep its file.
    let held = unix_echo(&rt, Listen::unix(&stream)).unwrap();
    drop(unixgram_sink(&rt, Listen::unix_datagram(&dgram)).unwrap());
    let keep = sockloop::UnixOptions {
        remove_on_shutdown: false,
        ..Default::default()
    };
    unix_echo(&rt, Listen::unix(&kept).unix_options(keep)).unwrap();
    // Dropping a server's handle leaves it serving (and its file in place).
    let mut c = std::os::unix::net::UnixStream::connect(&stream).unwrap();
    c.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).unwrap();
    assert!(stream.exists() && dgram.exists() && kept.exists());
    drop(rt);
    assert!(!stream.exists(), "stream socket file removed");
    assert!(!dgram.exists(), "datagram socket file removed");
    assert!(kept.exists(), "remove_on_shutdown(false) keeps it");
    drop(held);
}

#[test]
fn a_socket_file_another_owner_put_at_the_path_is_left_alone() {
    use std::os::unix::net::UnixListener;
    let dir = crate::util::tempdir();
    let a = dir.path().join("a.sock");
    let b = dir.path().join("b.sock");
    let rt = rt();
    let sa = unix_echo(&rt, Listen::unix(&a)).unwrap();
    unix_echo(&rt, Listen::unix(&b)).unwrap();
    // Someone else removes each file and binds their own socket at the path.
    std::fs::remove_file(&a).unwrap();
    let other_a = UnixListener::bind(&a).unwrap();
    std::fs::remove_file(&b).unwrap();
    let other_b = UnixListener::bind(&b).unwrap();
    assert!(sa.shutdown(WAIT));
    drop(rt);
    for (path, other) in [(&a, &other_a), (&b, &other_b)] {
        assert!(path.exists(), "{} was removed", path.display());
        let _c = std::os::unix::net::UnixStream::connect(path).unwrap();
        other
            .accept()
            .expect("the other owner's socket still answers");
    }
}

/// A field of /proc/self/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Open descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// One WebSocket echo round trip on a fresh client; how long it took.
fn ws_round_trip(url: &str) -> Duration {
    use sockloop::client::ws::{Message, WsClient, WsClientOptions};
    let started = Instant::now();
    let mut c = WsClient::connect(url, WsClientOptions::default()).unwrap();
    c.send_text("still here?").unwrap();
    match c.recv_timeout(WAIT).unwrap() {
        Some(Message::Text(t)) => assert_eq!(t, "still here?"),
        other => panic!("expected the echo, got {other:?}"),
    }
    started.elapsed()
}

fn ws_echo(rt: &Runtime, ws: sockloop::ws::WsConfig) -> Server {
    rt.serve(Listen::tcp("127.0.0.1:0"))
        .websocket(
            WsServerConfig::new().ws(ws),
            sockloop::on_message(|c: &WsConn, m: sockloop::WsMessage<'_>| {
                if let sockloop::WsMessage::Text(t) = m {
                    let _ = c.send_text(t);
                }
            }),
        )
        .unwrap()
}

/// A slow client: its socket, when it connected, how much of the request it sent, and
/// when the server cut it.
struct Slow {
    t: TcpStream,
    opened: Instant,
    sent: usize,
    cut: Option<Instant>,
}

impl Slow {
    /// Sends the next byte of `req` unless cut; notes the cut when the server closed.
    fn step(&mut self, req: &[u8], now: Instant) {
        if self.cut.is_some() {
            return;
        }
        let mut b = [0u8; 256];
        match self.t.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            // End of stream, a reset, or an error response: the server gave up on it.
            _ => {
                self.cut = Some(now);
                return;
            }
        }
        if self.sent < req.len() && self.t.write(&req[self.sent..self.sent + 1]).is_ok() {
            self.sent += 1;
        }
    }
}

#[test]
fn slowloris_child() {
    if !is_child() {
        return;
    }
    const SLOW: usize = 400;
    const TIMEOUT: Duration = Duration::from_secs(2);
    let rt = rt();
    let s = ws_echo(
        &rt,
        sockloop::ws::WsConfig::default().handshake_timeout(TIMEOUT),
    );
    let url = format!("ws://{}/", s.local_addr());
    ws_round_trip(&url); // warm up
    let before = status_kib("VmRSS");
    let req = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut slow: Vec<Slow> = (0..SLOW)
        .map(|_| {
            let t = connect(&s);
            t.set_nonblocking(true).unwrap();
            Slow {
                t,
                opened: Instant::now(),
                sent: 0,
                cut: None,
            }
        })
        .collect();
    // One byte per connection every 20 ms: the request would take ~3 s to complete.
    let mut measured = None;
    let mut slowest_normal = Duration::ZERO;
    let give_up = Instant::now() + WAIT;
    while slow.iter().any(|c| c.cut.is_none()) && Instant::now() < give_up {
        let now = Instant::now();
        for c in &mut slow {
            c.step(req, now);
        }
        if measured.is_none() && slow.iter().all(|c| c.sent >= 16) {
            measured = Some(status_kib("VmRSS").saturating_sub(before));
        }
        if slow.iter().any(|c| c.cut.is_none()) {
            slowest_normal = slowest_normal.max(ws_round_trip(&url));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let growth = measured.expect("every slow client sent 16 bytes");
    let per_conn = growth * 1024 / SLOW as u64;
    let lives: Vec<Duration> = slow
        .iter()
        .map(|c| c.cut.expect("every slow client is cut") - c.opened)
        .collect();
    let (shortest, longest) = (lives.iter().min().unwrap(), lives.iter().max().unwrap());
    println!(
        "SLOWLORIS-OK conns={SLOW} rss_growth={growth}KiB per_conn={per_conn}B \
         cut_after={shortest:?}..{longest:?} slowest_normal={slowest_normal:?}"
    );
    assert!(
        slow.iter().all(|c| c.sent < req.len()),
        "no request completed"
    );
    assert!(
        *shortest >= TIMEOUT - Duration::from_millis(100),
        "cut early: {shortest:?}"
    );
    assert!(
        *longest <= TIMEOUT + Duration::from_millis(1500),
        "the deadline is absolute: {longest:?}"
    );
    assert!(per_conn <= 16 << 10, "{per_conn} bytes per slow connection");
    assert!(
        slowest_normal < Duration::from_secs(1),
        "{slowest_normal:?}"
    );
    let until = Instant::now() + WAIT;
    while s.open_connections() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(s.open_connections(), 0);
}

#[test]
fn slowloris_upgrades_are_cut_at_the_absolute_handshake_deadline_while_others_are_served() {
    if is_child() {
        return;
    }
    let out = in_child("attacks::slowloris_child", None);
    assert!(out.contains("SLOWLORIS-OK"), "{out}");
}

#[test]
fn connection_storm_child() {
    if !is_child() {
        return;
    }
    const THREADS: usize = 4;
    const PER_THREAD: usize = 500;
    let rt = Runtime::builder()
        .pollers(2)
        .handler_threads(2)
        .build()
        .unwrap();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .stream(handler::on_data(|c: &sockloop::Conn, d: &[u8]| {
            let _ = c.send(d);
        }))
        .unwrap();
    let addr = s.local_addr().as_inet().unwrap();
    let fds_before = open_fds();
    let started = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm: Vec<_> = (0..THREADS)
        .map(|k| {
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let mut t = TcpStream::connect(addr).unwrap();
                    // Half say something and wait for it back; half hang up at once.
                    if (i + k) % 2 == 0 {
                        t.set_read_timeout(Some(WAIT)).unwrap();
                        t.write_all(b"ping").unwrap();
                        let mut b = [0u8; 4];
                        t.read_exact(&mut b).unwrap();
                        assert_eq!(&b, b"ping");
                    }
                }
            })
        })
        .collect();
    // A steady client is served throughout.
    let probe = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut t = TcpStream::connect(addr).unwrap();
            t.set_read_timeout(Some(WAIT)).unwrap();
            let mut slowest = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let at = Instant::now();
                t.write_all(b"probe").unwrap();
                let mut b = [0u8; 5];
                t.read_exact(&mut b).unwrap();
                slowest = slowest.max(at.elapsed());
                std::thread::sleep(Duration::from_millis(5));
            }
            slowest
        })
    };
    for t in storm {
        t.join().unwrap();
    }
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let slowest = probe.join().unwrap();
    let until = Instant::now() + WAIT;
    while s.open_connections() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = s.stats();
    println!(
        "STORM-OK conns={} took={took:?} slowest_probe={slowest:?} accepted={} closed={} fds={}->{}",
        THREADS * PER_THREAD,
        st.accepted,
        st.closed,
        fds_before,
        open_fds()
    );
    assert_eq!(s.open_connections(), 0);
    assert_eq!(st.accepted, (THREADS * PER_THREAD + 1) as u64);
    assert_eq!(st.accepted, st.closed);
    assert_eq!(open_fds(), fds_before, "no descriptor leaked");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "the probe waited {slowest:?}"
    );
}

#[test]
fn a_connection_storm_leaves_nothing_open_and_the_server_responsive() {
    if is_child() {
        return;
    }
    let out = in_child("attacks::connection_storm_child", None);
    assert!(out.contains("STORM-OK"), "{out}");
}
