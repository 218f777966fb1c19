//! Raw-transport benchmarks (`cargo bench --bench transport`), each beside a plain std
//! baseline measured in the same run, alternating, medians of several runs:
//!
//! - one-way stream throughput over one connection, 64 KiB writes: TCP, TLS, Unix (TCP
//!   also against a bare mio receive loop, `tcp-epoll`);
//! - one-way datagram throughput, 1472-byte datagrams: UDP, Unix datagram;
//! - echo round trips/s, 100 connections × 8 messages of 32 bytes in flight, against a
//!   thread-per-connection std echo server.
//!
//! Servers run on core 1 and the load on core 0, for sockloop and the baselines alike.
//!
//! `BENCH_RUNS` (default 5) sets the number of alternating runs; `BENCH_ONLY` a filter
//! (`tcp`, `tls`, `unix`, `udp`, `unixgram`, `echo`).

mod common;

use common::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockloop::handler::{on_data, on_datagram};
use sockloop::{Addr, Conn, DatagramSender, Dispatch, Listen, Runtime, ServerConfig};

const STREAM_BYTES: u64 = 2 << 30;
const CHUNK: usize = 64 << 10;
const DGRAM: usize = 1472;
const DGRAM_SECS: f64 = 2.0;

fn report(name: &str, unit: &str, ours: Vec<f64>, base: Vec<f64>) {
    let (o, b) = (median(ours), median(base));
    let base = if name == "tcp-epoll" { "mio" } else { "std" };
    println!(
        "{name:<10} sockloop={o:>10.3} {unit}  {base}={b:>10.3} {unit}  ratio={:.3}",
        o / b
    );
}

/// Sends STREAM_BYTES in 64 KiB writes and returns when everything was written.
fn blast<W: Write>(mut w: W) {
    let buf = vec![0x5au8; CHUNK];
    let mut left = STREAM_BYTES;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        w.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    w.flush().unwrap();
}

/// A sockloop server that counts bytes and reports when STREAM_BYTES arrived.
fn counting_stream_server(
    rt: &Runtime,
    listen: Listen,
) -> (sockloop::Server, crossbeam_channel::Receiver<Instant>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let count = Arc::new(AtomicU64::new(0));
    let s = rt
        .serve(listen)
        .config(ServerConfig::new().dispatch(Dispatch::Inline))
        .stream(move |_: &Conn| {
            let (count, tx) = (count.clone(), tx.clone());
            count.store(0, Ordering::Relaxed);
            on_data_counter(count, tx)
        })
        .unwrap();
    (s, rx)
}

struct Counter {
    n: u64,
    tx: crossbeam_channel::Sender<Instant>,
}

impl sockloop::StreamHandler for Counter {
    fn on_data(&mut self, _c: &Conn, d: &[u8]) {
        self.n += d.len() as u64;
        if self.n == STREAM_BYTES {
            let _ = self.tx.send(Instant::now());
        }
    }
}

fn on_data_counter(_c: Arc<AtomicU64>, tx: crossbeam_channel::Sender<Instant>) -> Counter {
    Counter { n: 0, tx }
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn std_receiver<R: Read>(mut r: R) -> Instant {
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    while n < STREAM_BYTES {
        let k = r.read(&mut buf).unwrap();
        assert!(k > 0);
        n += k as u64;
    }
    Instant::now()
}

fn tcp_ours(rt: &Runtime) -> f64 {
    let (s, rx) = counting_stream_server(rt, Listen::tcp("127.0.0.1:0"));
    let c = TcpStream::connect(s.local_addr().as_inet().unwrap()).unwrap();
    let t0 = Instant::now();
    blast(&c);
    let t1 = rx.recv().unwrap();
    s.shutdown(Duration::from_secs(1));
    gbps(STREAM_BYTES, t1 - t0)
}

fn tcp_std() -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = server_thread(move || std_receiver(l.accept().unwrap().0));
    let c = TcpStream::connect(addr).unwrap();
    let t0 = Instant::now();
    blast(&c);
    gbps(STREAM_BYTES, h.join().unwrap() - t0)
}

/// The least an epoll-driven receiver can do: one `mio::Poll`, one socket, read until a
/// short read, back to `poll`.
fn tcp_bare_mio() -> f64 {
    use mio::{Events, Interest, Poll, Token};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = server_thread(move || {
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let mut s = mio::net::TcpStream::from_std(s);
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(64);
        poll.registry()
            .register(&mut s, Token(0), Interest::READABLE)
            .unwrap();
        let mut buf = vec![0u8; 256 << 10];
        let mut n = 0u64;
        loop {
            poll.poll(&mut events, None).unwrap();
            loop {
                match s.read(&mut buf) {
                    Ok(k) => {
                        n += k as u64;
                        if n >= STREAM_BYTES {
                            return Instant::now();
                        }
                        if k < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    });
    let c = TcpStream::connect(addr).unwrap();
    let t0 = Instant::now();
    blast(&c);
    gbps(STREAM_BYTES, h.join().unwrap() - t0)
}

fn unix_ours(rt: &Runtime, dir: &std::path::Path) -> f64 {
    let path = dir.join("bench.sock");
    let (s, rx) = counting_stream_server(rt, Listen::unix(&path));
    let c = UnixStream::connect(&path).unwrap();
    let t0 = Instant::now();
    blast(&c);
    let t1 = rx.recv().unwrap();
    s.shutdown(Duration::from_secs(1));
    gbps(STREAM_BYTES, t1 - t0)
}

fn unix_std(dir: &std::path::Path) -> f64 {
    let path = dir.join("std.sock");
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    let h = server_thread(move || std_receiver(l.accept().unwrap().0));
    let c = UnixStream::connect(&path).unwrap();
    let t0 = Instant::now();
    blast(&c);
    gbps(STREAM_BYTES, h.join().unwrap() - t0)
}

mod tlsutil {
    use std::sync::Arc;

    pub struct Pki {
        pub server: Arc<rustls::ServerConfig>,
        pub client: Arc<rustls::ClientConfig>,
        pub cert_pem: String,
        pub key_pem: String,
    }

    pub fn pki() -> Pki {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = ck.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Pki {
            server: Arc::new(server),
            client: Arc::new(client),
            cert_pem: ck.cert.pem(),
            key_pem: ck.key_pair.serialize_pem(),
        }
    }

    pub fn client(
        cfg: &Arc<rustls::ClientConfig>,
        addr: std::net::SocketAddr,
    ) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
        let sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_nodelay(true).unwrap();
        rustls::StreamOwned::new(conn, sock)
    }
}

fn tls_ours(rt: &Runtime, pki: &tlsutil::Pki) -> f64 {
    let tls =
        sockloop::tls::TlsServerConfig::from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes())
            .unwrap();
    let (s, rx) = counting_stream_server(rt, Listen::tls("127.0.0.1:0", tls));
    let mut c = tlsutil::client(&pki.client, s.local_addr().as_inet().unwrap());
    c.write_all(b"").unwrap();
    let t0 = Instant::now();
    blast(&mut c);
    let t1 = rx.recv().unwrap();
    s.shutdown(Duration::from_secs(1));
    gbps(STREAM_BYTES, t1 - t0)
}

fn tls_std(pki: &tlsutil::Pki) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let scfg = pki.server.clone();
    let h = server_thread(move || {
        let sock = l.accept().unwrap().0;
        let conn = rustls::ServerConnection::new(scfg).unwrap();
        std_receiver(rustls::StreamOwned::new(conn, sock))
    });
    let mut c = tlsutil::client(&pki.client, addr);
    let t0 = Instant::now();
    blast(&mut c);
    gbps(STREAM_BYTES, h.join().unwrap() - t0)
}

/// Sends 1472-byte datagrams for DGRAM_SECS; returns datagrams received per second as
/// counted by `received`.
fn dgram_blast(send: impl Fn(&[u8]) -> bool, received: &AtomicU64) -> f64 {
    let buf = [0x33u8; DGRAM];
    let start = received.load(Ordering::Relaxed);
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < DGRAM_SECS {
        for _ in 0..64 {
            if !send(&buf) {
                std::thread::yield_now();
            }
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    let got = received.load(Ordering::Relaxed) - start;
    got as f64 / t0.elapsed().as_secs_f64()
}

fn dgram_counter(rt: &Runtime, listen: Listen, count: Arc<AtomicU64>) -> sockloop::Server {
    rt.serve(listen)
        .config(ServerConfig::new().dispatch(Dispatch::Inline))
        .datagram(on_datagram(
            move |_: &DatagramSender, _: &Addr, _: &[u8]| {
                count.fetch_add(1, Ordering::Relaxed);
            },
        ))
        .unwrap()
}

fn udp_ours(rt: &Runtime) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let s = dgram_counter(rt, Listen::udp("127.0.0.1:0"), count.clone());
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.connect(s.local_addr().as_inet().unwrap()).unwrap();
    let r = dgram_blast(|b| c.send(b).is_ok(), &count);
    s.shutdown(Duration::from_secs(1));
    r
}

fn udp_std() -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let srv = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&srv)
        .set_recv_buffer_size(4 << 20)
        .unwrap();
    srv.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let addr = srv.local_addr().unwrap();
    let c2 = count.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let h = server_thread(move || {
        let mut buf = [0u8; 65536];
        while !stop2.load(Ordering::Relaxed) {
            if srv.recv(&mut buf).is_ok() {
                c2.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.connect(addr).unwrap();
    let r = dgram_blast(|b| c.send(b).is_ok(), &count);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    r
}

fn unixgram_ours(rt: &Runtime, dir: &std::path::Path) -> f64 {
    let path = dir.join("dg.sock");
    let count = Arc::new(AtomicU64::new(0));
    let s = dgram_counter(rt, Listen::unix_datagram(&path), count.clone());
    let c = UnixDatagram::unbound().unwrap();
    c.connect(&path).unwrap();
    let r = dgram_blast(|b| c.send(b).is_ok(), &count);
    s.shutdown(Duration::from_secs(1));
    r
}

fn unixgram_std(dir: &std::path::Path) -> f64 {
    let path = dir.join("dgstd.sock");
    let _ = std::fs::remove_file(&path);
    let srv = UnixDatagram::bind(&path).unwrap();
    srv.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c2 = count.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let h = server_thread(move || {
        let mut buf = [0u8; 65536];
        while !stop2.load(Ordering::Relaxed) {
            if srv.recv(&mut buf).is_ok() {
                c2.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let c = UnixDatagram::unbound().unwrap();
    c.connect(&path).unwrap();
    let r = dgram_blast(|b| c.send(b).is_ok(), &count);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    r
}

mod echo_load {
    //! A single-threaded mio client: 100 connections, 8 × 32-byte messages in flight each.
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use mio::net::TcpStream;
    use mio::{Events, Interest, Poll, Token};

    pub const CONNS: usize = 100;
    pub const DEPTH: usize = 8;
    pub const SIZE: usize = 32;

    /// Round trips per second over `secs`.
    pub fn run(addr: SocketAddr, secs: f64) -> f64 {
        let mut poll = Poll::new().unwrap();
        let mut conns: Vec<(TcpStream, usize)> = Vec::new();
        for i in 0..CONNS {
            let s = std::net::TcpStream::connect(addr).unwrap();
            s.set_nodelay(true).unwrap();
            s.set_nonblocking(true).unwrap();
            let mut s = TcpStream::from_std(s);
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE)
                .unwrap();
            conns.push((s, 0));
        }
        let msg = [b'e'; SIZE];
        let burst = msg.repeat(DEPTH);
        for (s, _) in conns.iter_mut() {
            s.write_all(&burst).unwrap();
        }
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 64 << 10];
        let mut done = 0u64;
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            for ev in events.iter() {
                let (s, partial) = &mut conns[ev.token().0];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => panic!("server closed"),
                        Ok(n) => {
                            let total = *partial + n;
                            let msgs = total / SIZE;
                            *partial = total % SIZE;
                            done += msgs as u64;
                            if msgs > 0 {
                                s.write_all(&burst[..msgs * SIZE]).unwrap();
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
        done as f64 / t0.elapsed().as_secs_f64()
    }
}

fn echo_ours(rt: &Runtime) -> f64 {
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().dispatch(Dispatch::Inline))
        .stream(on_data(|c: &Conn, d: &[u8]| {
            let _ = c.send(d);
        }))
        .unwrap();
    let r = echo_load::run(s.local_addr().as_inet().unwrap(), 3.0);
    s.shutdown(Duration::from_secs(1));
    r
}

fn echo_std() -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    server_thread(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            s.set_nodelay(true).unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 << 10];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    echo_load::run(addr, 3.0)
}

/// A thread of a std baseline server, on the servers' core (like the runtime's threads).
fn server_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        pin_to(1);
        f()
    })
}

fn main() {
    // Servers (the runtime's threads, created now, and the std baselines' threads) run on
    // core 1; the load (this thread and the clients it starts) on core 0: the same
    // placement for both sides of every comparison, as in the WebSocket benches.
    pin_to(1);
    let rt = Runtime::builder().build().unwrap();
    pin_to(0);
    let dir = tempfile::tempdir().unwrap();
    println!(
        "# sockloop transport bench: {} pollers, {} runs, medians",
        rt.pollers(),
        runs(5)
    );
    let pairs: Vec<(&str, &str)> = vec![
        ("tcp", "GB/s"),
        ("tcp-epoll", "GB/s"),
        ("tls", "GB/s"),
        ("unix", "GB/s"),
        ("udp", "dgram/s"),
        ("unixgram", "dgram/s"),
        ("echo", "rt/s"),
    ];
    let pki = tlsutil::pki();
    for (name, unit) in pairs {
        if !wanted(name, true) {
            continue;
        }
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for _ in 0..runs(5) {
            let (o, b) = match name {
                "tcp" => (tcp_ours(&rt), tcp_std()),
                // The same reactor against a bare mio loop instead of a blocking reader:
                // what any epoll-driven receiver gets here.
                "tcp-epoll" => (tcp_ours(&rt), tcp_bare_mio()),
                "tls" => (tls_ours(&rt, &pki), tls_std(&pki)),
                "unix" => (unix_ours(&rt, dir.path()), unix_std(dir.path())),
                "udp" => (udp_ours(&rt), udp_std()),
                "unixgram" => (unixgram_ours(&rt, dir.path()), unixgram_std(dir.path())),
                _ => (echo_ours(&rt), echo_std()),
            };
            ours.push(o);
            base.push(b);
        }
        report(name, unit, ours, base);
    }
    rt.shutdown(Duration::from_secs(1));
}
