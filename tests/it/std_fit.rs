//! The API meets std where a Rust user expects it: `send("text")`, `Listen` from any
//! `ToSocketAddrs`, `SocketAddr`s without unwrapping, cloneable factories, `try_clone` on the
//! stream clients, `TimedOut` for read timeouts, the TLS parameters on a connection, and
//! errors that name the operation and its address or path.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use sockloop::client::{ClientOptions, TcpClient, TlsClient, UnixClient};
use sockloop::handler::{on_data, StreamHandler};
use sockloop::tls::{ClientCertMode, TlsClientConfig, TlsServerConfig};
use sockloop::{CloseReason, Conn, ConnState, Listen, Runtime, ServerConfig};

use crate::util::{recorder, tempdir, WAIT};

fn rt() -> Runtime {
    Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .build()
        .unwrap()
}

fn opts() -> ClientOptions {
    ClientOptions::default()
        .connect_timeout(WAIT)
        .read_timeout(Some(WAIT))
}

/// Answers every chunk with the same reply sent as each kind of bytes.
struct Kinds;

impl StreamHandler for Kinds {
    fn on_data(&mut self, conn: &Conn, _: &[u8]) {
        let _ = conn.send("str,");
        let _ = conn.send(String::from("string,"));
        let _ = conn.send(b"array,");
        let _ = conn.send(vec![b'v', b'e', b'c', b',']);
        let _ = conn.send(&b"slice\n"[..]);
    }
}

#[test]
fn send_takes_anything_that_is_bytes() {
    let rt = rt();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .stream(|_: &Conn| Kinds)
        .unwrap();
    let mut c = TcpClient::connect(s.local_addr(), opts()).unwrap();
    let reply = c.once_until(b"x", b"\n", WAIT).unwrap();
    assert_eq!(reply, b"str,string,array,vec,slice\n");
    rt.shutdown(WAIT);
}

#[test]
fn listen_takes_socket_addrs_and_the_server_gives_one_back() {
    let rt = rt();
    let echo = on_data(|c: &Conn, d: &[u8]| {
        let _ = c.send(d);
    });
    let by_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let a = rt.serve(Listen::tcp(by_addr)).stream(echo.clone()).unwrap();
    let b = rt
        .serve(Listen::tcp((Ipv4Addr::LOCALHOST, 0)))
        .stream(echo)
        .unwrap();
    for s in [&a, &b] {
        let addr: SocketAddr = s.inet_addr().expect("an inet server");
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
        let mut c = TcpClient::connect(addr, opts()).unwrap();
        assert_eq!(
            c.once(b"ping", WAIT).unwrap(),
            b"ping",
            "one factory, two servers"
        );
    }
    assert_ne!(a.inet_addr(), b.inet_addr());
    let dir = tempdir();
    let path = dir.path().join("u.sock");
    let u = rt
        .serve(Listen::unix(&path))
        .stream(|_: &Conn| Kinds)
        .unwrap();
    assert_eq!(u.inet_addr(), None, "a Unix server has no IP address");
    rt.shutdown(WAIT);
}

#[test]
fn a_cloned_tcp_client_reads_on_one_thread_while_another_writes() {
    let rt = rt();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .stream(on_data(|c: &Conn, d: &[u8]| {
            let _ = c.send(d);
        }))
        .unwrap();
    let mut writer = TcpClient::connect(s.local_addr(), opts()).unwrap();
    let reader = writer.try_clone().unwrap();
    let lines = std::thread::spawn(move || {
        let mut got = Vec::new();
        for line in BufReader::new(reader).lines().take(100) {
            got.push(line.unwrap());
        }
        got // the reader handle drops here: the writer's connection stays open
    });
    for i in 0..100 {
        writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
    }
    let got = lines.join().unwrap();
    assert_eq!(got.len(), 100);
    assert_eq!(got[99], "line 99");
    assert_eq!(writer.once(b"still open", WAIT).unwrap(), b"still open");
    rt.shutdown(WAIT);
}

#[test]
fn a_cloned_unix_client_shares_the_connection() {
    let rt = rt();
    let dir = tempdir();
    let path = dir.path().join("echo.sock");
    let _s = rt
        .serve(Listen::unix(&path))
        .stream(on_data(|c: &Conn, d: &[u8]| {
            let _ = c.send(d);
        }))
        .unwrap();
    let mut a = UnixClient::connect(&path, opts()).unwrap();
    let mut b = a.try_clone().unwrap();
    a.write_all(b"abc").unwrap();
    let mut buf = [0u8; 3];
    b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"abc");
    rt.shutdown(WAIT);
}

#[test]
fn a_read_timeout_is_timed_out_and_names_the_peer() {
    let rt = rt();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .stream(on_data(|_: &Conn, _: &[u8]| {}))
        .unwrap();
    let quick = opts().read_timeout(Some(Duration::from_millis(50)));
    let mut c = TcpClient::connect(s.local_addr(), quick).unwrap();
    let err = c.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    let addr = s.inet_addr().unwrap();
    assert!(
        err.to_string().starts_with(&format!("read {addr}: ")),
        "{err}"
    );
    assert!(!err.to_string().contains("os error 11"), "{err}");
    rt.shutdown(WAIT);
}

#[test]
fn client_errors_name_the_address_or_path() {
    // A port nobody listens on: bind one, note it, free it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = TcpClient::connect(("127.0.0.1", port), opts()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("connect 127.0.0.1:{port}: ")),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    let url = format!("ws://127.0.0.1:{port}/");
    let ws_opts = sockloop::client::ws::WsClientOptions::default();
    let err = sockloop::client::ws::WsClient::connect(&url, ws_opts)
        .err()
        .expect("nobody listens");
    assert!(
        err.to_string()
            .contains(&format!("connect 127.0.0.1:{port}: ")),
        "{err}"
    );
    let dir = tempdir();
    let missing = dir.path().join("nobody.sock");
    let err = UnixClient::connect(&missing, opts())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("connect {}: ", missing.display())),
        "{err}"
    );
}

#[test]
fn server_errors_name_the_file_or_address() {
    let dir = tempdir();
    let cert = dir.path().join("cert.pem");
    let err = TlsServerConfig::from_pem_files(&cert, dir.path().join("key.pem"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("read {}: ", cert.display())), "{err}");
    let rt = rt();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = rt
        .serve(Listen::tcp(addr))
        .stream(|_: &Conn| Kinds)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("bind {addr}: ")), "{err}");
    let err = rt
        .serve(Listen::tcp("no-such-host.invalid:80"))
        .stream(|_: &Conn| Kinds)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-host.invalid:80"), "{err}");
    rt.shutdown(WAIT);
}

#[test]
fn a_connection_refused_for_capacity_has_its_own_id() {
    let rt = rt();
    let (obs, rec) = recorder();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().max_connections(1))
        .observer(obs)
        .stream(|_: &Conn| Kinds)
        .unwrap();
    let mut first = TcpClient::connect(s.local_addr(), opts()).unwrap();
    assert!(!first.once(b"x", WAIT).unwrap().is_empty());
    let _second = std::net::TcpStream::connect(s.inet_addr().unwrap()).unwrap();
    let mut ids = Vec::new();
    let full = loop {
        let (id, state) = rec.states.recv_timeout(WAIT).expect("a state");
        match state {
            ConnState::Closed(CloseReason::ServerFull) => break id,
            _ => ids.push(id),
        }
    };
    assert_ne!(full.0, 0, "a real id");
    assert!(!ids.contains(&full), "not the first connection's id");
    rt.shutdown(WAIT);
}

/// A CA and a certificate it signed for `name`, as PEM.
fn ca_and_cert(
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (Vec<u8>, String, String, rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let (cert, key) = issue(&ca, &ca_key, name, usage);
    (ca.pem().into_bytes(), cert, key, ca, ca_key)
}

fn issue(
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca, ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Tells the client what the server saw of the TLS handshake.
struct Report;

impl StreamHandler for Report {
    fn on_data(&mut self, conn: &Conn, _: &[u8]) {
        let tls = conn.tls().expect("a TLS connection");
        let alpn = String::from_utf8_lossy(tls.alpn_protocol().unwrap_or(b"-")).into_owned();
        let line = format!(
            "{alpn} {} {}\n",
            tls.server_name().unwrap_or("-"),
            tls.peer_certificates().len()
        );
        let _ = conn.send(line);
    }
}

#[test]
fn a_tls_connection_shows_its_alpn_sni_and_client_certificate() {
    let (ca, cert, key, ca_cert, ca_key) =
        ca_and_cert("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = issue(
        &ca_cert,
        &ca_key,
        "client",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let tls = TlsServerConfig::builder(cert.as_bytes(), key.as_bytes())
        .alpn(["chat/1"])
        .client_auth_roots(&ca, ClientCertMode::Optional)
        .build()
        .unwrap();
    let rt = rt();
    let s = rt
        .serve(Listen::tls("127.0.0.1:0", tls))
        .stream(|_: &Conn| Report)
        .unwrap();
    let with_cert = TlsClientConfig::new(&ca)
        .alpn(["chat/1"])
        .client_cert(client_cert.as_bytes(), client_key.as_bytes())
        .build()
        .unwrap();
    let mut c = TlsClient::connect(s.local_addr(), "localhost", with_cert, opts()).unwrap();
    assert_eq!(
        c.once_until(b"?", b"\n", WAIT).unwrap(),
        b"chat/1 localhost 1\n"
    );
    let plain: Arc<rustls::ClientConfig> = TlsClientConfig::new(&ca).build().unwrap();
    let mut c = TlsClient::connect(s.local_addr(), "localhost", plain, opts()).unwrap();
    assert_eq!(c.once_until(b"?", b"\n", WAIT).unwrap(), b"- localhost 0\n");
    rt.shutdown(WAIT);
}

#[test]
fn server_side_tls_failures_are_classified() {
    let (_, cert, key, _, _) = ca_and_cert("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (other_ca, ..) = ca_and_cert("x", ExtendedKeyUsagePurpose::ServerAuth);
    let tls = TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let rt = rt();
    let (obs, rec) = recorder();
    let s = rt
        .serve(Listen::tls("127.0.0.1:0", tls))
        .observer(obs)
        .stream(|_: &Conn| Report)
        .unwrap();
    let wrong = TlsClientConfig::new(&other_ca).build().unwrap();
    assert!(TlsClient::connect(s.local_addr(), "localhost", wrong, opts()).is_err());
    let err = rec.errors.recv_timeout(WAIT).expect("the server's error");
    assert!(err.contains("peer sent fatal alert"), "{err}");
    rt.shutdown(WAIT);
}

#[test]
fn datagram_client_errors_name_the_server() {
    let dir = tempdir();
    let missing = dir.path().join("nobody.dgram");
    let err = sockloop::client::UnixDatagramClient::connect(&missing, opts())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("connect {}: ", missing.display())),
        "{err}"
    );
    // A UDP port nobody listens on: the kernel's ICMP answer surfaces on recv.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = sockloop::client::UdpClient::connect(("127.0.0.1", port), opts()).unwrap();
    let err = c.once(b"x", WAIT).unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}: ")), "{err}");
}
