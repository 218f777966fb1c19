//! Raw transports: round trips, limits, drop policies, bad peers, shutdown.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sockloop::handler::{on_data, on_datagram};
use sockloop::{
    Addr, CloseReason, Conn, DatagramSender, Dispatch, DropPolicy, Listen, Runtime, SendStatus,
    ServerConfig, StreamHandler,
};

use crate::util::{recorder, tempdir, WAIT};

fn rt() -> Runtime {
    Runtime::builder()
        .pollers(2)
        .handler_threads(2)
        .build()
        .unwrap()
}

fn echo() -> impl sockloop::handler::StreamFactory {
    on_data(|c: &Conn, d: &[u8]| {
        let _ = c.send(d);
    })
}

fn inet(s: &sockloop::Server) -> std::net::SocketAddr {
    s.local_addr().as_inet().unwrap()
}

fn connect(s: &sockloop::Server) -> TcpStream {
    let c = TcpStream::connect(inet(s)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c
}

fn roundtrip<S: Read + Write>(s: &mut S, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

#[test]
fn tcp_round_trip_inline_and_threads() {
    let rt = rt();
    for dispatch in [Dispatch::Inline, Dispatch::Threads] {
        let cfg = ServerConfig::new().dispatch(dispatch);
        let s = rt
            .serve(Listen::tcp("127.0.0.1:0"))
            .config(cfg)
            .stream(echo())
            .unwrap();
        let mut c = connect(&s);
        roundtrip(&mut c, b"hello");
        let big: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let mut c2 = c.try_clone().unwrap();
        let writer = std::thread::spawn(move || c2.write_all(&big).map(|_| big));
        let mut got = vec![0; 1_000_000];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, writer.join().unwrap().unwrap());
        assert!(s.stats().bytes_in >= 1_000_005);
    }
    rt.shutdown(WAIT);
}

#[test]
fn thousand_concurrent_tcp_connections_echo() {
    let rt = rt();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().dispatch(Dispatch::Inline))
        .stream(echo())
        .unwrap();
    let mut conns: Vec<TcpStream> = (0..1000).map(|_| connect(&s)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("msg-{i:04}").as_bytes()).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut got = [0u8; 8];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, format!("msg-{i:04}").as_bytes());
    }
    assert_eq!(s.open_connections(), 1000);
    drop(conns);
    assert!(s.shutdown(WAIT));
    assert_eq!(s.open_connections(), 0);
    assert_eq!(s.stats().closed, 1000);
}

#[test]
fn unix_round_trip_credentials_mode_and_file_lifecycle() {
    let dir = tempdir();
    let path = dir.path().join("s.sock");
    // A stale socket file (nobody listening) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let rt = rt();
    let (cred_tx, cred_rx) = crossbeam_channel::unbounded();
    struct Cred(crossbeam_channel::Sender<Option<sockloop::PeerCred>>);
    impl StreamHandler for Cred {
        fn on_open(&mut self, c: &Conn) {
            let _ = self.0.send(c.peer_cred());
        }
        fn on_data(&mut self, c: &Conn, d: &[u8]) {
            let _ = c.send(d);
        }
    }
    let opts = sockloop::UnixOptions {
        mode: Some(0o660),
        ..Default::default()
    };
    let s = rt
        .serve(Listen::unix(&path).unix_options(opts))
        .stream(move |_: &Conn| Cred(cred_tx.clone()))
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o660
    );
    // A live socket is not replaced.
    let again = rt.serve(Listen::unix(&path)).stream(echo());
    assert!(
        again.is_err(),
        "a second server must not steal a live socket"
    );
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    roundtrip(&mut c, b"over unix");
    let cred = cred_rx
        .recv_timeout(WAIT)
        .unwrap()
        .expect("peer credentials");
    assert_eq!(cred.pid as u32, std::process::id());
    assert_eq!(cred.uid, unsafe { libc_getuid() });
    drop(c);
    assert!(s.shutdown(WAIT));
    assert!(!path.exists(), "socket file removed on shutdown");
}

extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
}

#[test]
fn non_socket_file_is_left_alone() {
    let dir = tempdir();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, b"data").unwrap();
    let rt = rt();
    assert!(rt.serve(Listen::unix(&path)).stream(echo()).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
}

fn dgram_echo() -> impl sockloop::handler::DatagramFactory {
    on_datagram(|tx: &DatagramSender, peer: &Addr, d: &[u8]| {
        let _ = tx.send_to(d, peer);
    })
}

#[test]
fn udp_round_trip_and_oversized_datagram() {
    let rt = rt();
    for dispatch in [Dispatch::Inline, Dispatch::Threads] {
        let (obs, rec) = recorder();
        let cfg = ServerConfig::new()
            .dispatch(dispatch)
            .max_datagram_size(1024);
        let s = rt
            .serve(Listen::udp("127.0.0.1:0"))
            .config(cfg)
            .observer(obs)
            .datagram(dgram_echo())
            .unwrap();
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.connect(inet(&s)).unwrap();
        c.send(&[7u8; 2000]).unwrap();
        let err = rec.errors.recv_timeout(WAIT).unwrap();
        assert!(err.contains("exceeds"), "{err}");
        c.send(b"ping").unwrap();
        let mut buf = [0u8; 64];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert!(s.shutdown(WAIT));
    }
}

/// Datagrams waiting for a busy handler thread are bounded in bytes: past
/// `max_inbound_pending` the newest are dropped, and every one is either handled or counted.
#[test]
fn datagrams_for_a_stuck_handler_are_bounded_and_counted() {
    let rt = rt();
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = handled.clone();
    let cfg = ServerConfig::new()
        .dispatch(Dispatch::Threads)
        .max_inbound_pending(16 << 10);
    let s = rt
        .serve(Listen::udp("127.0.0.1:0"))
        .config(cfg)
        .datagram(on_datagram(
            move |_: &DatagramSender, _: &Addr, _: &[u8]| {
                if h.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    let _ = release_rx.recv_timeout(WAIT); // stuck on the first datagram
                }
            },
        ))
        .unwrap();
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.connect(inet(&s)).unwrap();
    const SENT: u64 = 1000;
    for _ in 0..SENT {
        c.send(&[1u8; 100]).unwrap();
    }
    let deadline = std::time::Instant::now() + WAIT;
    while s.stats().datagrams_in < SENT && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(s.stats().datagrams_in, SENT, "loopback delivered them all");
    let dropped = s.stats().dropped;
    // 16 KiB of 100-byte datagrams plus each job's overhead: far fewer than 1,000 wait.
    assert!(dropped > SENT / 2, "dropped {dropped}");
    release_tx.send(()).unwrap();
    while (handled.load(std::sync::atomic::Ordering::SeqCst) as u64) + dropped < SENT
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        handled.load(std::sync::atomic::Ordering::SeqCst) as u64 + dropped,
        SENT,
        "every datagram handled or counted"
    );
    assert_eq!(rt.budget().used, 0, "nothing left counted");
}

#[test]
fn unixgram_round_trip_and_oversized_datagram() {
    let dir = tempdir();
    let path = dir.path().join("d.sock");
    let rt = rt();
    let (obs, rec) = recorder();
    let s = rt
        .serve(Listen::unix_datagram(&path))
        .config(ServerConfig::new().max_datagram_size(512))
        .observer(obs)
        .datagram(dgram_echo())
        .unwrap();
    let c = UnixDatagram::bind(dir.path().join("client.sock")).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.connect(&path).unwrap();
    c.send(&[1u8; 4096]).unwrap();
    assert!(rec.errors.recv_timeout(WAIT).unwrap().contains("exceeds"));
    c.send(b"hello unixgram").unwrap();
    let mut buf = [0u8; 64];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello unixgram");
    assert!(s.shutdown(WAIT));
    assert!(!path.exists());
}

#[test]
fn max_connections_rejects_excess_and_counts_it() {
    let rt = rt();
    let (obs, rec) = recorder();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(
            ServerConfig::new()
                .max_connections(2)
                .dispatch(Dispatch::Inline),
        )
        .observer(obs)
        .stream(echo())
        .unwrap();
    let mut a = connect(&s);
    let mut b = connect(&s);
    roundtrip(&mut a, b"a");
    roundtrip(&mut b, b"b");
    let mut c = connect(&s);
    let mut buf = [0u8; 1];
    // The third is accepted and closed at once: EOF (or reset), never an echo.
    let _ = c.write_all(b"c");
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
    assert_eq!(rec.next_closed(), CloseReason::ServerFull);
    assert_eq!(s.stats().rejected, 1);
    assert_eq!(s.open_connections(), 2);
}

#[test]
fn idle_timeout_closes_a_silent_connection() {
    let rt = rt();
    let (obs, rec) = recorder();
    let cfg = ServerConfig::new().idle_timeout(Some(Duration::from_millis(200)));
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .observer(obs)
        .stream(echo())
        .unwrap();
    let mut c = connect(&s);
    assert_eq!(rec.next_closed(), CloseReason::IdleTimeout);
    let mut buf = [0u8; 1];
    assert_eq!(
        c.read(&mut buf).unwrap(),
        0,
        "server closed the idle connection"
    );
}

#[test]
fn half_close_still_gets_the_reply() {
    let rt = rt();
    for dispatch in [Dispatch::Inline, Dispatch::Threads] {
        let s = rt
            .serve(Listen::tcp("127.0.0.1:0"))
            .config(ServerConfig::new().dispatch(dispatch))
            .stream(echo())
            .unwrap();
        let mut c = connect(&s);
        c.write_all(b"last words").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last words");
    }
}

/// Sends `total` bytes in `chunk`-sized messages on open and records each status.
struct Pusher {
    chunk: usize,
    count: usize,
    statuses: crossbeam_channel::Sender<Vec<SendStatus>>,
}

impl StreamHandler for Pusher {
    fn on_open(&mut self, c: &Conn) {
        let msg = vec![b'x'; self.chunk];
        let st = (0..self.count).map(|_| c.send(&msg)).collect();
        let _ = self.statuses.send(st);
    }
}

fn pusher_server(
    rt: &Runtime,
    policy: DropPolicy,
    obs: crate::util::Recorder,
) -> (
    sockloop::Server,
    crossbeam_channel::Receiver<Vec<SendStatus>>,
) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let cfg = ServerConfig::new()
        .max_queued_bytes(256 << 10)
        .drop_policy(policy);
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .observer(obs)
        .stream(move |_: &Conn| Pusher {
            chunk: 64 << 10,
            count: 200,
            statuses: tx.clone(),
        })
        .unwrap();
    (s, rx)
}

#[test]
fn drop_newest_refuses_past_the_bound() {
    let rt = rt();
    let (obs, _rec) = recorder();
    let (s, rx) = pusher_server(&rt, DropPolicy::DropNewest, obs);
    let c = connect(&s); // never reads
    let st = rx.recv_timeout(WAIT).unwrap();
    let dropped = st.iter().filter(|s| **s == SendStatus::Dropped).count();
    // 12.5 MiB against a 256 KiB bound: what is not dropped fits in the bound plus the
    // socket buffers of a peer that never reads (tcp_wmem's 4 MiB at most, here).
    assert!(
        dropped >= 100,
        "most of 12.5 MiB exceeds a 256 KiB bound: {dropped}"
    );
    assert!(st[0] == SendStatus::Queued);
    assert_eq!(s.stats().dropped, dropped as u64);
    assert!(s.stats().queued_bytes <= 256 << 10);
    drop(c);
}

#[test]
fn drop_oldest_keeps_the_queue_bounded() {
    let rt = rt();
    let (obs, _rec) = recorder();
    let (s, rx) = pusher_server(&rt, DropPolicy::DropOldest, obs);
    let mut c = connect(&s);
    let st = rx.recv_timeout(WAIT).unwrap();
    assert!(st.iter().all(|s| *s == SendStatus::Queued));
    // Let the poller apply every send, then the queue is within bound + one message.
    let deadline = std::time::Instant::now() + WAIT;
    while s.stats().dropped <= 100 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(s.stats().dropped > 100, "dropped {}", s.stats().dropped);
    assert_eq!(
        s.stats().evicted,
        s.stats().dropped,
        "every drop was an eviction"
    );
    // What arrives is whole 64 KiB messages of 'x'.
    let mut buf = vec![0u8; 64 << 10];
    c.read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == b'x'));
}

/// One message larger than the whole queue bound is refused at once, whatever the policy
/// (queueing it would hold more than the bound), and counted; smaller ones still go.
#[test]
fn a_message_larger_than_the_queue_bound_is_refused_not_queued() {
    let rt = rt();
    for policy in [
        DropPolicy::Backpressure,
        DropPolicy::DropNewest,
        DropPolicy::DropOldest,
        DropPolicy::Disconnect,
    ] {
        let (tx, rx) = crossbeam_channel::unbounded();
        let cfg = ServerConfig::new()
            .max_queued_bytes(64 << 10)
            .drop_policy(policy);
        let s = rt
            .serve(Listen::tcp("127.0.0.1:0"))
            .config(cfg)
            .stream(sockloop::handler::on_data(move |c: &Conn, _: &[u8]| {
                let big = c.send(vec![b'b'; (64 << 10) + 1]);
                let small = c.send(b"small");
                let _ = tx.send((big, small));
            }))
            .unwrap();
        let mut c = connect(&s);
        c.write_all(b"go").unwrap();
        let (big, small) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(big, SendStatus::TooLarge, "{policy:?}");
        assert_eq!(small, SendStatus::Queued, "{policy:?}");
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"small", "{policy:?}: the connection lives on");
        assert_eq!(s.stats().dropped, 1, "{policy:?}");
    }
}

#[test]
fn disconnect_policy_closes_the_slow_reader() {
    let rt = rt();
    let (obs, rec) = recorder();
    let (_s, rx) = pusher_server(&rt, DropPolicy::Disconnect, obs);
    let _c = connect(&_s);
    let st = rx.recv_timeout(WAIT).unwrap();
    assert!(st.contains(&SendStatus::Dropped));
    assert!(st.last() == Some(&SendStatus::Closed));
    assert_eq!(rec.next_closed(), CloseReason::QueueOverflow);
}

#[test]
fn flood_past_the_queue_bound_keeps_memory_bounded() {
    let rt = rt();
    let cfg = ServerConfig::new()
        .dispatch(Dispatch::Inline)
        .max_queued_bytes(1 << 20);
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .stream(echo())
        .unwrap();
    let mut c = connect(&s);
    c.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Write 64 MiB without reading: the kernel buffers fill, the echo queue hits its bound.
    let chunk = vec![b'f'; 64 << 10];
    let mut sent = 0usize;
    while sent < 64 << 20 {
        match c.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break, // our own send buffer is full: the server stopped reading us
        }
    }
    let st = s.stats();
    assert!(
        st.queued_bytes <= (1 << 20) + (64 << 10),
        "queued {}",
        st.queued_bytes
    );
    assert!(st.dropped > 0 || sent < 64 << 20);
    // The server still serves others.
    let mut d = connect(&s);
    roundtrip(&mut d, b"still here");
}

#[test]
fn peer_reset_mid_write_closes_only_that_connection() {
    let rt = rt();
    let (obs, rec) = recorder();
    let (tx, _rx) = crossbeam_channel::unbounded();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().max_queued_bytes(64 << 20))
        .observer(obs)
        .stream(move |_: &Conn| Pusher {
            chunk: 1 << 20,
            count: 32,
            statuses: tx.clone(),
        })
        .unwrap();
    let c = connect(&s);
    let mut first = [0u8; 1024];
    (&c).read_exact(&mut first).unwrap();
    // SO_LINGER 0 makes close send a reset while the server is still writing.
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    let reason = rec.next_closed();
    assert!(
        matches!(reason, CloseReason::Reset(_) | CloseReason::PeerClosed),
        "unexpected close reason {reason:?}"
    );
    assert!(rec.errors.try_recv().is_ok() || s.stats().closed == 1);
    let s2 = rt.serve(Listen::tcp("127.0.0.1:0")).stream(echo()).unwrap();
    let mut d = connect(&s2);
    roundtrip(&mut d, b"unaffected");
}

#[test]
fn panicking_handler_closes_only_its_connection() {
    let rt = rt();
    for dispatch in [Dispatch::Inline, Dispatch::Threads] {
        let (obs, rec) = recorder();
        let s = rt
            .serve(Listen::tcp("127.0.0.1:0"))
            .config(ServerConfig::new().dispatch(dispatch))
            .observer(obs)
            .stream(on_data(|c: &Conn, d: &[u8]| {
                if d.starts_with(b"boom") {
                    panic!("handler blew up");
                }
                let _ = c.send(d);
            }))
            .unwrap();
        let mut good = connect(&s);
        let mut bad = connect(&s);
        roundtrip(&mut good, b"ok");
        bad.write_all(b"boom").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(bad.read(&mut buf).unwrap_or(0), 0);
        let closed = rec.next_closed();
        assert!(matches!(closed, CloseReason::HandlerPanic(ref m) if m.contains("blew up")));
        assert!(rec.errors.recv_timeout(WAIT).unwrap().contains("blew up"));
        roundtrip(&mut good, b"still ok");
    }
}

#[test]
fn shutdown_drains_queued_bytes() {
    let rt = rt();
    let sent = Arc::new(AtomicUsize::new(0));
    let sent2 = sent.clone();
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().max_queued_bytes(64 << 20))
        .stream(move |c: &Conn| {
            // 8 MiB queued at open: far more than the socket buffers hold.
            for i in 0..128u8 {
                assert_eq!(c.send(vec![i; 64 << 10]), SendStatus::Queued);
                sent2.fetch_add(64 << 10, Ordering::Relaxed);
            }
            let _ = ready_tx.send(());
            sockloop::handler::OnDataNoop
        })
        .unwrap();
    let mut c = connect(&s);
    ready_rx.recv_timeout(WAIT).unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        c.read_to_end(&mut all).map(|_| all)
    });
    assert!(s.shutdown(WAIT), "drained in time");
    let all = reader.join().unwrap().unwrap();
    assert_eq!(all.len(), sent.load(Ordering::Relaxed));
    for (i, chunk) in all.chunks(64 << 10).enumerate() {
        assert!(
            chunk.iter().all(|&b| b == i as u8),
            "chunk {i} intact and in order"
        );
    }
}

#[test]
fn lifecycle_and_states_are_observed() {
    let rt = rt();
    let (obs, rec) = recorder();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .observer(obs)
        .stream(echo())
        .unwrap();
    assert!(rec
        .lifecycle
        .recv_timeout(WAIT)
        .unwrap()
        .starts_with("Listening"));
    let mut c = connect(&s);
    roundtrip(&mut c, b"x");
    assert!(matches!(
        rec.states.recv_timeout(WAIT).unwrap().1,
        sockloop::ConnState::Accepted
    ));
    s.shutdown(WAIT);
    assert_eq!(rec.lifecycle.recv_timeout(WAIT).unwrap(), "Draining");
    assert!(matches!(rec.next_closed(), CloseReason::Shutdown));
    assert_eq!(rec.lifecycle.recv_timeout(WAIT).unwrap(), "Stopped");
    let mut buf = [0u8; 1];
    assert_eq!(c.read(&mut buf).unwrap(), 0);
}
