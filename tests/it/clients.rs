//! Blocking clients against real sockloop servers: every transport, `once`, timeouts, TLS
//! verification, mutual TLS, ALPN and clean close.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use sockloop::client::{
    ClientOptions, ReplyEnd, TcpClient, TlsClient, UdpClient, UnixClient, UnixDatagramClient,
};
use sockloop::handler::{on_data, on_datagram};
use sockloop::tls::{ClientCertMode, TlsClientConfig, TlsError, TlsServerConfig};
use sockloop::{
    Addr, CloseReason, Conn, DatagramSender, Error, Listen, Runtime, Server, ServerConfig,
};

use crate::util::{recorder, tempdir, Recorder, Records, WAIT};

/// Short enough to keep timeout tests quick; only ever an upper bound on waiting.
const SHORT: Duration = Duration::from_millis(300);

fn rt() -> Runtime {
    Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .build()
        .unwrap()
}

fn echo() -> impl sockloop::handler::StreamFactory {
    on_data(|c: &Conn, d: &[u8]| {
        let _ = c.send(d);
    })
}

fn silent() -> impl sockloop::handler::StreamFactory {
    on_data(|_: &Conn, _: &[u8]| {})
}

fn dgram_echo() -> impl sockloop::handler::DatagramFactory {
    on_datagram(|tx: &DatagramSender, peer: &Addr, d: &[u8]| {
        let _ = tx.send_to(d, peer);
    })
}

fn inet(s: &Server) -> SocketAddr {
    s.local_addr().as_inet().unwrap()
}

fn opts() -> ClientOptions {
    ClientOptions::default()
        .connect_timeout(WAIT)
        .read_timeout(Some(WAIT))
}

fn observed(listen: Listen, rt: &Runtime) -> (Server, Records) {
    let (obs, rec): (Recorder, Records) = recorder();
    let s = rt.serve(listen).observer(obs).stream(echo()).unwrap();
    (s, rec)
}

/// A test certificate authority, generated per test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A PEM certificate and its PEM key.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> Vec<u8> {
        self.cert.pem().into_bytes()
    }

    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server_cert(&self) -> Issued {
        self.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client_cert(&self) -> Issued {
        self.issue("client", ExtendedKeyUsagePurpose::ClientAuth)
    }
}

fn tls_server(rt: &Runtime, tls: TlsServerConfig) -> (Server, Records) {
    observed(Listen::tls("127.0.0.1:0", tls), rt)
}

fn tls_connect(s: &Server, config: Arc<rustls::ClientConfig>) -> sockloop::Result<TlsClient> {
    TlsClient::connect(inet(s), "localhost", config, opts())
}

#[test]
fn tcp_client_round_trips_and_closes_cleanly() {
    let rt = rt();
    let (s, rec) = observed(Listen::tcp("127.0.0.1:0"), &rt);
    let mut c = TcpClient::connect(inet(&s), opts()).unwrap();
    assert_eq!(c.peer_addr().unwrap(), inet(&s));
    assert!(c.local_addr().unwrap().ip().is_loopback());
    c.write_all(b"hello").unwrap();
    let mut got = [0u8; 5];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    assert_eq!(c.once(b"again", WAIT).unwrap(), b"again");
    c.close().unwrap();
    assert!(c.is_closed());
    let st = s.stats();
    assert_eq!(
        (st.bytes_in, st.bytes_out),
        (st.plain_bytes_in, st.plain_bytes_out),
        "without TLS the socket bytes are the application bytes"
    );
    assert_eq!(rec.next_closed(), CloseReason::PeerClosed);
    assert!(matches!(c.once(b"late", WAIT), Err(Error::Closed)));
    c.close().unwrap();
}

#[test]
fn once_until_splits_replies_and_keeps_the_rest() {
    let rt = rt();
    let s = rt.serve(Listen::tcp("127.0.0.1:0")).stream(echo()).unwrap();
    let mut c = TcpClient::connect(inet(&s), opts()).unwrap();
    assert_eq!(c.once_until(b"one\ntwo\n", b"\n", WAIT).unwrap(), b"one\n");
    // The second line is already buffered (or arrives): no request needed.
    let two = c.exchange(b"", ReplyEnd::Delimiter(b"\n"), WAIT).unwrap();
    assert_eq!(two, b"two\n");
    assert_eq!(
        c.exchange(b"abcdef", ReplyEnd::Length(4), WAIT).unwrap(),
        b"abcd"
    );
    let mut rest = [0u8; 2];
    c.read_exact(&mut rest).unwrap();
    assert_eq!(&rest, b"ef");
    assert!(matches!(
        c.once_until(b"x", b"", WAIT),
        Err(Error::Config(_))
    ));
}

#[test]
fn reply_until_eof_from_a_server_that_closes() {
    let rt = rt();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .stream(on_data(|c: &Conn, d: &[u8]| {
            let _ = c.send(d);
            c.close();
        }))
        .unwrap();
    let mut c = TcpClient::connect(inet(&s), opts()).unwrap();
    assert_eq!(c.exchange(b"bye", ReplyEnd::Eof, WAIT).unwrap(), b"bye");
    // The peer is gone: a reply that needs more bytes cannot complete.
    assert!(matches!(c.once(b"", WAIT), Err(Error::Closed)));
}

#[test]
fn once_times_out_on_a_silent_server() {
    let rt = rt();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .stream(silent())
        .unwrap();
    let mut c = TcpClient::connect(inet(&s), opts()).unwrap();
    assert!(matches!(c.once(b"anyone?", SHORT), Err(Error::Timeout)));
    assert!(matches!(
        c.once_until(b"", b"\n", SHORT),
        Err(Error::Timeout)
    ));
    assert_eq!(c.read_timeout(), Some(WAIT), "timeouts restored after once");
    c.set_read_timeout(Some(SHORT)).unwrap();
    let mut buf = [0u8; 4];
    let err = c.read(&mut buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
}

/// `once` is one deadline for the whole call: a peer that keeps reading, slowly, cannot
/// stretch the send (a single write timeout would restart with every partial write).
#[test]
fn once_is_one_deadline_against_a_slow_reader() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let mut buf = [0u8; 8 << 10];
            let mut got = 0usize;
            // 8 KiB every 20 ms: about 400 KiB/s, until the client gives up.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(_) => {}
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            got
        })
    };
    let mut c = TcpClient::connect(addr, opts()).unwrap();
    let request = vec![b'x'; 32 << 20];
    let started = std::time::Instant::now();
    let result = c.once(&request, SHORT);
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(c);
    let got = reader.join().unwrap();
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    // 32 MiB at ~400 KiB/s would take over a minute; the deadline is 300 ms.
    assert!(
        took < SHORT * 10,
        "once took {took:?} with a {SHORT:?} deadline"
    );
    assert!(
        got < request.len(),
        "the reader cannot have taken it all ({got} bytes)"
    );
}

#[test]
fn tcp_connect_times_out_on_a_full_backlog() {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let quick = ClientOptions::default().connect_timeout(SHORT);
    // Nobody accepts: the backlog fills after a connection or two, then SYNs go unanswered.
    let mut held = Vec::new();
    let timed_out = (0..16).any(|_| match TcpClient::connect(addr, quick.clone()) {
        Ok(c) => {
            held.push(c);
            false
        }
        Err(Error::Timeout) => true,
        Err(e) => panic!("unexpected error {e}"),
    });
    assert!(timed_out, "a connect timed out after {} held", held.len());
}

#[test]
fn unix_connect_times_out_on_a_full_backlog() {
    let dir = tempdir();
    let path = dir.path().join("full.sock");
    let listener =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&socket2::SockAddr::unix(&path).unwrap())
        .unwrap();
    listener.listen(0).unwrap();
    let quick = ClientOptions::default().connect_timeout(SHORT);
    let mut held = Vec::new();
    let timed_out = (0..16).any(|_| match UnixClient::connect(&path, quick.clone()) {
        Ok(c) => {
            held.push(c);
            false
        }
        Err(Error::Timeout) => true,
        Err(e) => panic!("unexpected error {e}"),
    });
    assert!(timed_out, "a connect timed out after {} held", held.len());
}

#[test]
fn unix_client_round_trips_and_closes_cleanly() {
    let dir = tempdir();
    let path = dir.path().join("s.sock");
    let rt = rt();
    let (_s, rec) = observed(Listen::unix(&path), &rt);
    let mut c = UnixClient::connect(&path, opts()).unwrap();
    assert_eq!(c.peer_addr().unwrap().as_pathname(), Some(path.as_path()));
    assert_eq!(c.once(b"over unix", WAIT).unwrap(), b"over unix");
    c.write_all(b"raw").unwrap();
    let mut got = [0u8; 3];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"raw");
    drop(c); // drop closes like close()
    assert_eq!(rec.next_closed(), CloseReason::PeerClosed);
}

#[test]
fn udp_client_round_trips_and_times_out() {
    let rt = rt();
    let s = rt
        .serve(Listen::udp("127.0.0.1:0"))
        .datagram(dgram_echo())
        .unwrap();
    let c = UdpClient::connect(inet(&s), opts()).unwrap();
    assert_eq!(c.peer_addr(), inet(&s));
    c.send(b"ping").unwrap();
    let mut buf = [0u8; 16];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(c.once(b"once", WAIT).unwrap(), b"once");

    let quiet = rt
        .serve(Listen::udp("127.0.0.1:0"))
        .datagram(on_datagram(|_: &DatagramSender, _: &Addr, _: &[u8]| {}))
        .unwrap();
    let c = UdpClient::connect(inet(&quiet), opts()).unwrap();
    assert!(matches!(c.once(b"hello?", SHORT), Err(Error::Timeout)));
}

#[test]
fn unix_datagram_client_round_trips_and_removes_its_path() {
    let dir = tempdir();
    let path = dir.path().join("d.sock");
    let rt = rt();
    let _s = rt
        .serve(Listen::unix_datagram(&path))
        .config(ServerConfig::new())
        .datagram(dgram_echo())
        .unwrap();
    let c = UnixDatagramClient::connect(&path, opts()).unwrap();
    let local = c.local_path().to_path_buf();
    assert!(local.exists());
    assert_eq!(c.peer_path(), path.as_path());
    assert_eq!(c.once(b"hello unixgram", WAIT).unwrap(), b"hello unixgram");
    c.send(b"again").unwrap();
    let mut buf = [0u8; 16];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"again");
    drop(c);
    assert!(!local.exists(), "the client's own path is removed on drop");

    let chosen = dir.path().join("client.sock");
    let c = UnixDatagramClient::connect_from(&path, &chosen, opts()).unwrap();
    assert_eq!(
        c.once(b"from a chosen path", WAIT).unwrap(),
        b"from a chosen path"
    );
    drop(c);
    assert!(!chosen.exists());
}

#[test]
fn tls_client_round_trips_negotiates_alpn_and_closes_cleanly() {
    let ca = Ca::new("test ca");
    let leaf = ca.server_cert();
    let tls = TlsServerConfig::builder(leaf.cert.as_bytes(), leaf.key.as_bytes())
        .alpn(["echo/1", "other"])
        .build()
        .unwrap();
    let rt = rt();
    let (s, rec) = tls_server(&rt, tls);
    let config = TlsClientConfig::new(&ca.pem())
        .alpn(["echo/1"])
        .build()
        .unwrap();
    let mut c = tls_connect(&s, config).unwrap();
    assert_eq!(c.alpn_protocol(), Some(&b"echo/1"[..]));
    assert!(c.protocol_version().is_some());
    assert_eq!(c.peer_addr().unwrap(), inet(&s));
    assert_eq!(c.once(b"secret", WAIT).unwrap(), b"secret");
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    c.write_all(&big).unwrap();
    let mut got = vec![0u8; big.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, big);
    c.close().unwrap();
    assert_eq!(rec.next_closed(), CloseReason::PeerClosed);
    // The stats tell application bytes from the TLS records on the wire.
    let st = s.stats();
    let app = (b"secret".len() + big.len()) as u64;
    assert_eq!((st.plain_bytes_in, st.plain_bytes_out), (app, app));
    assert!(
        st.bytes_in > app && st.bytes_out > app,
        "records and handshake: {st:?}"
    );
}

#[test]
fn tls_client_config_from_pem_without_alpn() {
    let ca = Ca::new("test ca");
    let leaf = ca.server_cert();
    let tls = TlsServerConfig::from_pem(leaf.cert.as_bytes(), leaf.key.as_bytes()).unwrap();
    let rt = rt();
    let (s, _rec) = tls_server(&rt, tls);
    let config = sockloop::tls::client_config_from_pem(&ca.pem()).unwrap();
    let mut c = tls_connect(&s, config).unwrap();
    assert_eq!(c.alpn_protocol(), None);
    assert_eq!(c.once_until(b"line\n", b"\n", WAIT).unwrap(), b"line\n");
}

#[test]
fn tls_client_trusting_the_wrong_ca_fails_with_a_certificate_error() {
    let (ca, other) = (Ca::new("server ca"), Ca::new("unrelated ca"));
    let leaf = ca.server_cert();
    let tls = TlsServerConfig::from_pem(leaf.cert.as_bytes(), leaf.key.as_bytes()).unwrap();
    let rt = rt();
    let (s, rec) = tls_server(&rt, tls);
    let config = sockloop::tls::client_config_from_pem(&other.pem()).unwrap();
    let err = tls_connect(&s, config).expect_err("the handshake must fail");
    assert!(
        matches!(err, Error::Tls(TlsError::CertificateRejected(_))),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("certificate rejected"), "{text}");
    assert!(
        text.contains("UnknownIssuer"),
        "the rustls reason is kept: {text}"
    );
    assert!(matches!(rec.next_closed(), CloseReason::Protocol(_)));
}

#[test]
fn tls_client_with_the_wrong_server_name_is_rejected() {
    let ca = Ca::new("test ca");
    let leaf = ca.server_cert();
    let tls = TlsServerConfig::from_pem(leaf.cert.as_bytes(), leaf.key.as_bytes()).unwrap();
    let rt = rt();
    let (s, _rec) = tls_server(&rt, tls);
    let config = sockloop::tls::client_config_from_pem(&ca.pem()).unwrap();
    let err = TlsClient::connect(inet(&s), "example.org", config, opts())
        .expect_err("a name mismatch must fail");
    assert!(
        matches!(err, Error::Tls(TlsError::CertificateRejected(_))),
        "{err:?}"
    );
}

#[test]
fn tls_handshake_must_finish_within_the_connect_timeout() {
    // A listener that never accepts: TCP connects (backlog), TLS never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ca = Ca::new("test ca");
    let config = sockloop::tls::client_config_from_pem(&ca.pem()).unwrap();
    let quick = ClientOptions::default().connect_timeout(SHORT);
    let err = TlsClient::connect(listener.local_addr().unwrap(), "localhost", config, quick)
        .expect_err("no handshake");
    assert!(matches!(err, Error::Timeout), "{err:?}");
}

#[test]
fn server_handshake_timeout_setting_is_enforced() {
    let ca = Ca::new("test ca");
    let leaf = ca.server_cert();
    let tls = TlsServerConfig::builder(leaf.cert.as_bytes(), leaf.key.as_bytes())
        .handshake_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(tls.handshake_timeout(), Duration::from_millis(200));
    let rt = rt();
    let (s, rec) = tls_server(&rt, tls);
    let _idle = std::net::TcpStream::connect(inet(&s)).unwrap();
    assert_eq!(rec.next_closed(), CloseReason::HandshakeTimeout);
}

fn mtls_server(rt: &Runtime, ca: &Ca, mode: ClientCertMode) -> (Server, Records) {
    let leaf = ca.server_cert();
    let tls = TlsServerConfig::builder(leaf.cert.as_bytes(), leaf.key.as_bytes())
        .client_auth_roots(&ca.pem(), mode)
        .build()
        .unwrap();
    tls_server(rt, tls)
}

/// Connects and exchanges one message; a rejection may surface at either step (with TLS
/// 1.3 the server judges our certificate after our side of the handshake is done).
fn connect_and_echo(s: &Server, config: Arc<rustls::ClientConfig>) -> sockloop::Result<Vec<u8>> {
    tls_connect(s, config)?.once(b"mtls", WAIT)
}

#[test]
fn mtls_server_rejects_a_client_without_a_certificate() {
    let ca = Ca::new("test ca");
    let rt = rt();
    let (s, rec) = mtls_server(&rt, &ca, ClientCertMode::Required);
    let config = TlsClientConfig::new(&ca.pem()).build().unwrap();
    let err = connect_and_echo(&s, config).expect_err("no client certificate");
    assert!(
        matches!(
            err,
            Error::Tls(TlsError::AlertReceived(
                rustls::AlertDescription::CertificateRequired
            ))
        ),
        "{err:?}"
    );
    assert!(matches!(rec.next_closed(), CloseReason::Protocol(_)));
}

#[test]
fn mtls_server_rejects_a_certificate_from_another_ca() {
    let (ca, other) = (Ca::new("test ca"), Ca::new("rogue ca"));
    let rt = rt();
    let (s, _rec) = mtls_server(&rt, &ca, ClientCertMode::Required);
    let rogue = other.client_cert();
    let config = TlsClientConfig::new(&ca.pem())
        .client_cert(rogue.cert.as_bytes(), rogue.key.as_bytes())
        .build()
        .unwrap();
    let err = connect_and_echo(&s, config).expect_err("untrusted client certificate");
    assert!(
        matches!(err, Error::Tls(TlsError::AlertReceived(_))),
        "{err:?}"
    );
}

#[test]
fn mtls_server_accepts_a_client_signed_by_its_ca() {
    let ca = Ca::new("test ca");
    let rt = rt();
    let (s, _rec) = mtls_server(&rt, &ca, ClientCertMode::Required);
    let mine = ca.client_cert();
    let config = TlsClientConfig::new(&ca.pem())
        .client_cert(mine.cert.as_bytes(), mine.key.as_bytes())
        .build()
        .unwrap();
    assert_eq!(connect_and_echo(&s, config).unwrap(), b"mtls");
}

#[test]
fn optional_client_auth_admits_a_client_without_a_certificate() {
    let ca = Ca::new("test ca");
    let rt = rt();
    let (s, _rec) = mtls_server(&rt, &ca, ClientCertMode::Optional);
    let config = TlsClientConfig::new(&ca.pem()).build().unwrap();
    assert_eq!(connect_and_echo(&s, config).unwrap(), b"mtls");
}

#[test]
fn bad_pem_is_reported_not_panicked() {
    let err = TlsServerConfig::from_pem(b"", b"").unwrap_err();
    assert!(matches!(err, Error::Tls(TlsError::Pem(_))), "{err:?}");
    let err = TlsClientConfig::new(b"garbage").build().unwrap_err();
    assert!(matches!(err, Error::Tls(TlsError::Pem(_))), "{err:?}");
    let ca = Ca::new("test ca");
    let leaf = ca.server_cert();
    let err = TlsServerConfig::builder(leaf.cert.as_bytes(), leaf.key.as_bytes())
        .alpn([""])
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}
