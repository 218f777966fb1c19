//! WebSocket server: handshakes, close codes, limits, heartbeats, deflate, wss, scale,
//! slow readers, groups.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::http::{Request, Response};
use sockloop::ws::{CloseCode, WsConfig};
use sockloop::{
    on_message, Dispatch, DropPolicy, GroupId, Identity, Listen, Origins, Rejection, Runtime,
    SendStatus, Server, ServerConfig, WsConn, WsHandler, WsMessage, WsServerConfig,
};

use crate::util::WAIT;

fn rt() -> Runtime {
    Runtime::builder()
        .pollers(2)
        .handler_threads(2)
        .build()
        .unwrap()
}

fn echo_factory() -> impl sockloop::WsFactory {
    on_message(|ws: &WsConn, m: WsMessage<'_>| {
        let _ = match m {
            WsMessage::Text(t) => ws.send_text(t),
            WsMessage::Binary(b) => ws.send_binary(b),
        };
    })
}

fn echo_server(rt: &Runtime, dispatch: Dispatch, cfg: WsServerConfig) -> Server {
    rt.serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().dispatch(dispatch))
        .websocket(cfg, echo_factory())
        .unwrap()
}

fn url(s: &Server) -> String {
    format!("ws://{}/", s.local_addr())
}

fn client(s: &Server) -> WsClient {
    WsClient::connect(&url(s), WsClientOptions::default()).unwrap()
}

fn recv(c: &mut WsClient) -> Message {
    c.recv_timeout(WAIT)
        .unwrap()
        .expect("a message before the timeout")
}

/// Waits for the server's close frame, skipping data.
fn recv_close(c: &mut WsClient) -> (CloseCode, String) {
    loop {
        match c.recv_timeout(WAIT) {
            Ok(Some(Message::Close(code, reason))) => return (code, reason),
            Ok(Some(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Sends a raw HTTP request and returns the response head.
fn raw_request(s: &Server, req: &str) -> String {
    let mut t = TcpStream::connect(s.local_addr().as_inet().unwrap()).unwrap();
    t.set_read_timeout(Some(WAIT)).unwrap();
    t.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the server closes, or the head of a 101 (the socket then stays open).
    while let Ok(n) = t.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.starts_with(b"HTTP/1.1 101") && out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
    )
}

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[test]
fn echo_text_and_binary_inline_and_threads() {
    let rt = rt();
    for dispatch in [Dispatch::Inline, Dispatch::Threads] {
        let s = echo_server(&rt, dispatch, WsServerConfig::new());
        let mut c = client(&s);
        c.send_text("héllo").unwrap();
        assert_eq!(recv(&mut c), Message::Text("héllo".into()));
        c.send_binary(&[0, 1, 2, 255]).unwrap();
        assert_eq!(recv(&mut c), Message::Binary(vec![0, 1, 2, 255]));
        c.close(CloseCode::NORMAL, "bye").unwrap();
    }
}

#[test]
fn handshake_accepted_and_rejected() {
    let rt = rt();
    let cfg = WsServerConfig::new()
        .origins(Origins::List(vec!["https://good.example".into()]))
        .authenticator(|req: &Request| match req.query_param("token") {
            Some("secret") | None => Ok(None),
            Some(_) => Err(Rejection::new(401, "bad token")),
        });
    let s = echo_server(&rt, Dispatch::Inline, cfg);
    let ok = raw_request(
        &s,
        &upgrade_request(&format!(
            "{KEY}Sec-WebSocket-Version: 13\r\nOrigin: https://good.example\r\n"
        )),
    );
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    assert!(ok.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{ok}");
    let bad_key = raw_request(
        &s,
        &upgrade_request("Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n"),
    );
    assert!(bad_key.starts_with("HTTP/1.1 400"), "{bad_key}");
    let version = raw_request(
        &s,
        &upgrade_request(&format!("{KEY}Sec-WebSocket-Version: 8\r\n")),
    );
    assert!(version.starts_with("HTTP/1.1 426"), "{version}");
    assert!(version.contains("Sec-WebSocket-Version: 13"), "{version}");
    let origin = raw_request(
        &s,
        &upgrade_request(&format!(
            "{KEY}Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n"
        )),
    );
    assert!(origin.starts_with("HTTP/1.1 403"), "{origin}");
    let auth = raw_request(
        &s,
        &upgrade_request(&format!("{KEY}Sec-WebSocket-Version: 13\r\n"))
            .replace("/chat", "/chat?token=nope"),
    );
    assert!(auth.starts_with("HTTP/1.1 401"), "{auth}");
    // The blocking client sees the rejection as an error carrying the status.
    let err = WsClient::connect(
        &format!("{}?token=nope", url(&s)),
        WsClientOptions::default(),
    )
    .err()
    .expect("rejected");
    assert!(err.to_string().contains("401"), "{err}");
}

#[test]
fn authenticator_identity_reaches_the_handler() {
    let rt = rt();
    let (tx, rx) = crossbeam_channel::unbounded();
    struct Who(crossbeam_channel::Sender<(Option<Identity>, String)>);
    impl WsHandler for Who {
        fn on_open(&mut self, ws: &WsConn, req: &Request) {
            let cookie = req.cookie("sid").unwrap_or("").to_string();
            let _ = self.0.send((ws.identity().cloned(), cookie));
        }
    }
    let cfg = WsServerConfig::new().authenticator(|req: &Request| {
        let user = req.header("x-user").unwrap_or("anon");
        Ok(Some(Identity::user(user).tag("beta")))
    });
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(cfg, move |_: &WsConn, _: &Request| Who(tx.clone()))
        .unwrap();
    let _c = WsClient::connect(
        &url(&s),
        WsClientOptions::default()
            .header("X-User", "alice")
            .header("Cookie", "a=1; sid=xyz"),
    )
    .unwrap();
    let (id, cookie) = rx.recv_timeout(WAIT).unwrap();
    let id = id.unwrap();
    assert_eq!(id.user, "alice");
    assert_eq!(id.tags, vec!["beta".to_string()]);
    assert_eq!(cookie, "xyz");
}

#[test]
fn http_hook_serves_plain_requests_and_404_by_default() {
    let rt = rt();
    let cfg = WsServerConfig::new().http(|req: &Request| {
        if req.path() == "/health" {
            Response::text(200, "ok")
        } else {
            Response::not_found()
        }
    });
    let s = echo_server(&rt, Dispatch::Inline, cfg);
    let r = raw_request(
        &s,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    let plain = echo_server(&rt, Dispatch::Inline, WsServerConfig::new());
    let r = raw_request(
        &plain,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    // Keep-alive: two requests on one connection.
    let mut t = TcpStream::connect(s.local_addr().as_inet().unwrap()).unwrap();
    t.set_read_timeout(Some(WAIT)).unwrap();
    t.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    t.read_to_string(&mut out).unwrap();
    assert!(
        out.contains("200 OK") && out.contains("404 Not Found"),
        "{out}"
    );
}

#[test]
fn fragmented_message_is_reassembled() {
    let rt = rt();
    let s = echo_server(&rt, Dispatch::Inline, WsServerConfig::new());
    let mut c = WsClient::connect(&url(&s), WsClientOptions::default().deflate(false)).unwrap();
    // Text "Hello" in two masked fragments with a ping between them.
    let frame = |fin: bool, op: u8, payload: &[u8]| {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![(fin as u8) << 7 | op, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    };
    c.send_raw(&frame(false, 1, b"Hel")).unwrap();
    c.send_raw(&frame(true, 9, b"p")).unwrap();
    c.send_raw(&frame(true, 0, b"lo")).unwrap();
    assert_eq!(recv(&mut c), Message::Pong(b"p".to_vec()));
    assert_eq!(recv(&mut c), Message::Text("Hello".into()));
}

fn violation(s: &Server, bytes: &[u8]) -> CloseCode {
    let mut c = WsClient::connect(&url(s), WsClientOptions::default().deflate(false)).unwrap();
    c.send_raw(bytes).unwrap();
    recv_close(&mut c).0
}

/// A client-initiated close handshake on plain TCP: once its close reply is flushed the
/// server closes the socket at once (RFC 6455 7.1.1: the server closes TCP first), without
/// a half-close and a wait of up to `LINGER` (1 s) for a FIN the client has not sent.
#[test]
fn after_the_peers_close_frame_the_server_closes_without_waiting_for_its_fin() {
    let rt = rt();
    let s = echo_server(&rt, Dispatch::Inline, WsServerConfig::new());
    let mut t = TcpStream::connect(s.local_addr().as_inet().unwrap()).unwrap();
    t.write_all(upgrade_request(&format!("{KEY}Sec-WebSocket-Version: 13\r\n")).as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(t.read(&mut b).unwrap(), 1, "the 101 head");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // A masked close frame, 1000 (mask 0: the payload goes as is).
    t.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]).unwrap();
    // The reply, then the end of stream.
    t.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match t.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no end of stream before the linger ran out ({e}); got {got:?}"),
        }
    }
    assert_eq!(got, [0x88, 0x02, 0x03, 0xe8], "the close reply, then EOF");
    // Gone from the server while our side is still open: not half-closed and lingering
    // (which a FIN alone, the EOF above, would also look like).
    let until = std::time::Instant::now() + Duration::from_millis(700);
    while s.open_connections() > 0 {
        assert!(
            std::time::Instant::now() < until,
            "the server lingers for a FIN after a complete close handshake"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(t);
}

#[test]
fn close_codes() {
    let rt = rt();
    let ws = WsConfig::default().max_message_size(1024);
    let s = echo_server(&rt, Dispatch::Inline, WsServerConfig::new().ws(ws));
    // 1000: a normal closing handshake initiated by the client.
    let mut c = client(&s);
    c.close(CloseCode::NORMAL, "done").unwrap();
    // 1002: reserved opcode 3.
    assert_eq!(
        violation(&s, &[0x83, 0x80, 0, 0, 0, 0]),
        CloseCode::PROTOCOL
    );
    // 1002: an unmasked client frame.
    assert_eq!(violation(&s, &[0x81, 0x01, b'a']), CloseCode::PROTOCOL);
    // 1007: invalid UTF-8 in a text frame.
    assert_eq!(
        violation(&s, &[0x81, 0x82, 0, 0, 0, 0, 0xc3, 0x28]),
        CloseCode::INVALID
    );
    // 1009: a message over max_message_size.
    let mut c = client(&s);
    c.send_text(&"x".repeat(2048)).unwrap();
    assert_eq!(recv_close(&mut c).0, CloseCode::SIZE);

    // 1003 and 1008: chosen by the handler; 1011: the handler panics.
    let s2 = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(
            WsServerConfig::new(),
            on_message(|ws: &WsConn, m: WsMessage<'_>| match m {
                WsMessage::Binary(_) => ws.close(CloseCode::UNSUPPORTED, "text only"),
                WsMessage::Text("policy") => ws.close(CloseCode::POLICY, "not allowed"),
                WsMessage::Text("panic") => panic!("boom"),
                WsMessage::Text(t) => {
                    let _ = ws.send_text(t);
                }
            }),
        )
        .unwrap();
    let mut c = client(&s2);
    c.send_binary(b"x").unwrap();
    assert_eq!(
        recv_close(&mut c),
        (CloseCode::UNSUPPORTED, "text only".into())
    );
    let mut c = client(&s2);
    c.send_text("policy").unwrap();
    assert_eq!(recv_close(&mut c).0, CloseCode::POLICY);
    let mut c = client(&s2);
    let mut other = client(&s2);
    c.send_text("panic").unwrap();
    assert_eq!(recv_close(&mut c).0, CloseCode::ERROR);
    other.send_text("still fine").unwrap();
    assert_eq!(recv(&mut other), Message::Text("still fine".into()));

    // 1001: the server shuts down.
    let mut c = client(&s);
    c.send_text("x").unwrap();
    assert_eq!(recv(&mut c), Message::Text("x".into()));
    let closer = std::thread::spawn(move || s.shutdown(WAIT));
    assert_eq!(recv_close(&mut c).0, CloseCode::AWAY);
    assert!(closer.join().unwrap());
}

#[test]
fn pong_timeout_closes_a_silent_peer() {
    let rt = rt();
    let ws = WsConfig::default()
        .ping_interval(Some(Duration::from_millis(100)))
        .pong_timeout(Duration::from_millis(200));
    let s = echo_server(&rt, Dispatch::Inline, WsServerConfig::new().ws(ws));
    // A raw peer that completes the handshake and then never reads or answers pings.
    let mut t = TcpStream::connect(s.local_addr().as_inet().unwrap()).unwrap();
    t.set_read_timeout(Some(WAIT)).unwrap();
    t.write_all(upgrade_request(&format!("{KEY}Sec-WebSocket-Version: 13\r\n")).as_bytes())
        .unwrap();
    let mut all = Vec::new();
    t.read_to_end(&mut all).unwrap(); // ends when the server gives up on us
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 101"));
    // After the 101: at least one ping (0x89) and a close frame (0x88) with 1001.
    assert!(all.windows(2).any(|w| w == [0x89, 0x00]), "a ping was sent");
    let close_at = all
        .windows(2)
        .position(|w| w[0] == 0x88)
        .expect("a close frame");
    assert_eq!(&all[close_at + 2..close_at + 4], &1001u16.to_be_bytes());
}

#[test]
fn a_client_that_answers_pings_stays() {
    let rt = rt();
    let ws = WsConfig::default()
        .ping_interval(Some(Duration::from_millis(50)))
        .pong_timeout(Duration::from_millis(100));
    let s = echo_server(&rt, Dispatch::Inline, WsServerConfig::new().ws(ws));
    let mut c = client(&s);
    let mut pings = 0;
    while pings < 4 {
        if let Message::Ping(_) = recv(&mut c) {
            pings += 1;
        }
    }
    c.send_text("alive").unwrap();
    loop {
        match recv(&mut c) {
            Message::Text(t) => break assert_eq!(t, "alive"),
            Message::Ping(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn deflate_round_trips_and_plain_clients() {
    let rt = rt();
    let s = echo_server(&rt, Dispatch::Inline, WsServerConfig::new());
    let mut c = client(&s);
    assert!(c.deflate().is_some(), "deflate negotiated by default");
    let big = "compressible ".repeat(5000);
    c.send_text(&big).unwrap();
    assert_eq!(recv(&mut c), Message::Text(big.clone()));
    let stats = s.stats();
    assert!(
        stats.bytes_out < big.len() as u64,
        "the echo went out compressed"
    );
    let mut plain = WsClient::connect(&url(&s), WsClientOptions::default().deflate(false)).unwrap();
    assert!(plain.deflate().is_none());
    plain.send_text(&big).unwrap();
    assert_eq!(recv(&mut plain), Message::Text(big));
}

#[test]
fn wss_with_test_certificates() {
    let rt = rt();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = sockloop::tls::TlsServerConfig::from_pem(
        ck.cert.pem().as_bytes(),
        ck.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let s = rt
        .serve(Listen::tls("127.0.0.1:0", tls))
        .websocket(WsServerConfig::new(), echo_factory())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let port = s.local_addr().as_inet().unwrap().port();
    let mut c = WsClient::connect(
        &format!("wss://localhost:{port}/"),
        WsClientOptions::default().tls(Arc::new(cfg)),
    )
    .unwrap();
    c.send_text("secure").unwrap();
    assert_eq!(recv(&mut c), Message::Text("secure".into()));
    // Without the CA the handshake fails cleanly.
    let err = WsClient::connect(
        &format!("wss://localhost:{port}/"),
        WsClientOptions::default(),
    );
    assert!(err.is_err());
}

#[test]
fn five_thousand_connections_held_and_echoed() {
    let rt = rt();
    let s = echo_server(&rt, Dispatch::Inline, WsServerConfig::new());
    let opts = WsClientOptions::default().deflate(false);
    let mut clients: Vec<WsClient> = (0..5000)
        .map(|_| WsClient::connect(&url(&s), opts.clone()).unwrap())
        .collect();
    assert_eq!(s.open_connections(), 5000);
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&format!("n{i}")).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(recv(c), Message::Text(format!("n{i}")));
    }
}

#[test]
fn slow_reader_hits_the_queue_policy_and_memory_stays_bounded() {
    let rt = rt();
    let (tx, rx) = crossbeam_channel::unbounded();
    struct Flood(crossbeam_channel::Sender<Vec<SendStatus>>);
    impl WsHandler for Flood {
        fn on_text(&mut self, ws: &WsConn, _t: &str) {
            let chunk = "y".repeat(64 << 10);
            let st = (0..400).map(|_| ws.send_text(&chunk)).collect();
            let _ = self.0.send(st);
        }
    }
    let cfg = ServerConfig::new()
        .max_queued_bytes(1 << 20)
        .drop_policy(DropPolicy::DropNewest);
    let no_deflate = WsConfig::default()
        .deflate(sockloop::ws::DeflateConfig::default().mode(sockloop::ws::DeflateMode::Off));
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .websocket(
            WsServerConfig::new().ws(no_deflate),
            move |_: &WsConn, _: &Request| Flood(tx.clone()),
        )
        .unwrap();
    let mut c = client(&s);
    c.send_text("go").unwrap();
    let st = rx.recv_timeout(WAIT).unwrap();
    let dropped = st.iter().filter(|s| **s == SendStatus::Dropped).count();
    assert!(
        dropped > 300,
        "25 MiB against a 1 MiB bound: dropped {dropped}"
    );
    assert!(
        s.stats().queued_bytes <= (1 << 20) + (65 << 10),
        "{:?}",
        s.stats()
    );
    // Whatever was queued arrives intact.
    match recv(&mut c) {
        Message::Text(t) => assert_eq!(t.len(), 64 << 10),
        other => panic!("{other:?}"),
    }
}

#[test]
fn per_ip_cap_refuses_with_429() {
    let rt = rt();
    let s = echo_server(
        &rt,
        Dispatch::Inline,
        WsServerConfig::new().max_per_ip(Some(2)),
    );
    let _a = client(&s);
    let _b = client(&s);
    let err = WsClient::connect(&url(&s), WsClientOptions::default())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("429"), "{err}");
    drop(_a);
    // The slot frees once the first connection is gone.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match WsClient::connect(&url(&s), WsClientOptions::default()) {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("429"));
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn group_broadcast_reaches_members_once_and_not_leavers() {
    let rt = rt();
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, WsConn)>();
    struct Joiner(crossbeam_channel::Sender<(usize, WsConn)>);
    impl WsHandler for Joiner {
        fn on_open(&mut self, ws: &WsConn, _req: &Request) {
            ws.join_group(GroupId(1));
        }
        fn on_text(&mut self, ws: &WsConn, text: &str) {
            let _ = self.0.send((text.parse().unwrap(), ws.clone()));
        }
    }
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(WsServerConfig::new(), move |_: &WsConn, _: &Request| {
            Joiner(tx.clone())
        })
        .unwrap();
    let mut clients: Vec<WsClient> = (0..20).map(|_| client(&s)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&i.to_string()).unwrap();
    }
    let mut conns: Vec<Option<WsConn>> = vec![None; 20];
    for _ in 0..20 {
        let (i, ws) = rx.recv_timeout(WAIT).unwrap();
        conns[i] = Some(ws);
    }
    let conns: Vec<WsConn> = conns.into_iter().map(Option::unwrap).collect();
    let b = s.broadcaster();
    let report = b.send(GroupId(1), &b.frames_text("one"), &[conns[0].id()]);
    assert_eq!(report.queued, 19);
    conns[1].leave_group(GroupId(1));
    let report = b.send(GroupId(1), &b.frames_text("two"), &[]);
    assert_eq!(report.queued, 19);
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        c.ping(b"sync").unwrap(); // the pong comes after everything queued before it
        loop {
            match recv(c) {
                Message::Text(t) => got.push(t),
                Message::Pong(_) => break,
                _ => {}
            }
        }
        let want: Vec<String> = match i {
            0 => vec!["two".into()],
            1 => vec!["one".into()],
            _ => vec!["one".into(), "two".into()],
        };
        assert_eq!(got, want, "client {i}");
    }
}
