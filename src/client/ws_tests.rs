//! Client tests against an in-test server on a real socket (port 0) driven by the crate's
//! own server-side engine.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use super::*;
use crate::proto::http::{parse_request, ParseOutcome};
use crate::proto::ws::handshake::{accept, write_rejection};
use crate::proto::ws::{DeflateConfig, DeflateMode};

/// What the test server saw.
#[derive(Debug, Default)]
struct Seen {
    deflate: Option<DeflateParams>,
    close: Option<u16>,
    error: Option<WsError>,
    messages: usize,
}

/// Reads and answers the upgrade; returns leftover bytes, or `None` if rejected.
fn server_handshake<S: Read + Write>(
    s: &mut S,
    cfg: &WsConfig,
    seen: &mut Seen,
) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (req, used) = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_request(&buf, &cfg.http_limits()) {
            ParseOutcome::Complete { request, consumed } => break (request, consumed),
            ParseOutcome::Partial => continue,
            ParseOutcome::Error { .. } => return None,
        }
    };
    let mut out = Vec::new();
    match accept(&req, cfg, &[], &mut out) {
        Ok(a) => seen.deflate = a.deflate,
        Err(e) => {
            if let WsError::Handshake { status, reason } = e {
                write_rejection(status, reason, &mut out);
            }
            s.write_all(&out).ok()?;
            return None;
        }
    }
    s.write_all(&out).ok()?;
    Some(buf.split_off(used))
}

/// Echoes data messages, answers pings and closes: the reactor's job, in miniature.
fn echo<S: Read + Write>(mut s: S, cfg: WsConfig) -> Seen {
    let mut seen = Seen::default();
    let Some(mut buf) = server_handshake(&mut s, &cfg, &mut seen) else {
        return seen;
    };
    let mut session = WsSession::new(Role::Server, seen.deflate);
    let mut scratch = Scratch::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let decoded = session.decode_next(&mut buf[pos..], &cfg, &mut scratch.rx);
            let (msg, consumed) = match decoded {
                Ok(Decoded::NeedMore(_)) => break,
                Ok(Decoded::Frame { msg, consumed }) => (msg, consumed),
                Err(e) => {
                    session.encode_close(&mut out, e.close_code(), e.reason(), &mut scratch.tx);
                    seen.error = Some(e);
                    let _ = s.write_all(&out);
                    return seen;
                }
            };
            pos += consumed;
            let tx = &mut scratch.tx;
            match msg {
                Some(Incoming::Text(t)) => {
                    seen.messages += 1;
                    session.encode(&mut out, OpCode::Text, t.as_bytes(), &cfg, tx);
                }
                Some(Incoming::Binary(b)) => {
                    seen.messages += 1;
                    session.encode(&mut out, OpCode::Binary, b, &cfg, tx);
                }
                Some(Incoming::Ping(p)) => session.encode(&mut out, OpCode::Pong, p, &cfg, tx),
                Some(Incoming::Close(code, _)) => {
                    seen.close = Some(code.as_u16());
                    session.encode_close(&mut out, close_reply(code), "", tx);
                }
                Some(Incoming::Pong(_)) | None => {}
            }
        }
        buf.drain(..pos);
        if !out.is_empty() && s.write_all(&out).is_err() {
            return seen;
        }
        if session.is_closed() {
            return seen;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return seen,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn spawn(cfg: WsConfig) -> (String, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/echo?x=1", listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        echo(tcp, cfg)
    });
    (url, handle)
}

fn big_text() -> String {
    "All work and no play makes Jack a dull boy. ".repeat(2000)
}

fn round_trips(ws: &mut WsClient) {
    ws.send_text("hello").unwrap();
    assert_eq!(ws.recv().unwrap(), Message::Text("hello".into()));
    ws.send_binary(&[0, 1, 2, 255]).unwrap();
    assert_eq!(ws.recv().unwrap(), Message::Binary(vec![0, 1, 2, 255]));
    let big = big_text();
    ws.send_text(&big).unwrap();
    assert_eq!(ws.recv().unwrap(), Message::Text(big));
    let noise: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    ws.send_binary(&noise).unwrap();
    assert_eq!(ws.recv().unwrap(), Message::Binary(noise));
}

#[test]
fn echo_with_deflate() {
    let (url, server) = spawn(WsConfig::default());
    let mut ws = WsClient::connect(&url, WsClientOptions::default()).unwrap();
    assert!(ws.deflate().is_some());
    round_trips(&mut ws);
    ws.close(CloseCode::NORMAL, "bye").unwrap();
    let seen = server.join().unwrap();
    assert!(seen.deflate.is_some());
    assert_eq!(seen.close, Some(1000));
    assert_eq!(seen.messages, 4);
    assert!(matches!(ws.send_text("late"), Err(Error::Closed)));
}

#[test]
fn echo_with_context_takeover() {
    let ctx =
        WsConfig::default().deflate(DeflateConfig::default().mode(DeflateMode::ContextTakeover));
    let (url, server) = spawn(ctx.clone());
    let mut ws = WsClient::connect(&url, WsClientOptions::default().config(ctx)).unwrap();
    let p = ws.deflate().unwrap();
    assert!(!p.server_no_context_takeover && !p.client_no_context_takeover);
    round_trips(&mut ws);
    ws.close(CloseCode::NORMAL, "").unwrap();
    assert_eq!(server.join().unwrap().close, Some(1000));
}

#[test]
fn echo_without_deflate_either_side() {
    let (url, server) = spawn(WsConfig::default());
    let mut ws = WsClient::connect(&url, WsClientOptions::default().deflate(false)).unwrap();
    assert_eq!(ws.deflate(), None);
    round_trips(&mut ws);
    ws.close(CloseCode::AWAY, "").unwrap();
    assert_eq!(server.join().unwrap().close, Some(1001));

    let off = WsConfig::default().deflate(DeflateConfig::default().mode(DeflateMode::Off));
    let (url, server) = spawn(off);
    let mut ws = WsClient::connect(&url, WsClientOptions::default()).unwrap();
    assert_eq!(ws.deflate(), None, "the server declined");
    round_trips(&mut ws);
    ws.close(CloseCode::NORMAL, "").unwrap();
    server.join().unwrap();
}

#[test]
fn ping_pong_and_recv_timeout() {
    let (url, server) = spawn(WsConfig::default());
    let mut ws = WsClient::connect(&url, WsClientOptions::default()).unwrap();
    assert_eq!(ws.recv_timeout(Duration::from_millis(50)).unwrap(), None);
    ws.ping(b"are you there").unwrap();
    assert_eq!(ws.recv().unwrap(), Message::Pong(b"are you there".to_vec()));
    ws.close(CloseCode::NORMAL, "").unwrap();
    server.join().unwrap();
}

#[test]
fn protocol_violation_via_send_raw_gets_1002() {
    let (url, server) = spawn(WsConfig::default());
    let mut ws = WsClient::connect(&url, WsClientOptions::default()).unwrap();
    ws.send_raw(&[0x81, 0x01, b'x']).unwrap(); // unmasked client frame
    assert_eq!(
        ws.recv().unwrap(),
        Message::Close(CloseCode::PROTOCOL, "unmasked frame from client".into())
    );
    assert!(matches!(ws.recv(), Err(Error::Closed)));
    let seen = server.join().unwrap();
    assert_eq!(seen.error.unwrap().close_code(), Some(CloseCode::PROTOCOL));
}

#[test]
fn oversized_message_gets_1009() {
    let (url, server) = spawn(WsConfig::default().max_message_size(1000));
    let mut ws = WsClient::connect(&url, WsClientOptions::default().deflate(false)).unwrap();
    ws.send_binary(&[0; 1001]).unwrap();
    match ws.recv().unwrap() {
        Message::Close(code, _) => assert_eq!(code, CloseCode::SIZE),
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn rejected_handshake_reports_the_status() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = tcp.read(&mut buf).unwrap();
        let mut out = Vec::new();
        write_rejection(426, "unsupported version", &mut out);
        tcp.write_all(&out).unwrap();
    });
    let err = WsClient::connect(&format!("ws://{addr}/"), WsClientOptions::default())
        .err()
        .unwrap();
    match err {
        Error::WebSocket(WsError::Refused { status, reason }) => {
            assert_eq!(status, 426);
            assert!(reason.contains("unsupported version"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn handshake_timeout_on_a_silent_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = WsClientOptions::default().handshake_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let err = WsClient::connect(&format!("ws://{addr}"), opts)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

#[test]
fn server_close_is_reported_and_answered() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut seen = Seen::default();
        server_handshake(&mut tcp, &WsConfig::default(), &mut seen).unwrap();
        tcp.write_all(b"\x89\x02hi\x88\x05\x03\xe9bye").unwrap();
        let mut buf = vec![0u8; 256];
        let mut got = Vec::new();
        while got.len() < 2 * 8 {
            match tcp.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    });
    let mut ws = WsClient::connect(&format!("ws://{addr}"), WsClientOptions::default()).unwrap();
    assert_eq!(ws.recv().unwrap(), Message::Ping(b"hi".to_vec()));
    assert_eq!(
        ws.recv().unwrap(),
        Message::Close(CloseCode::AWAY, "bye".into())
    );
    assert!(matches!(ws.recv(), Err(Error::Closed)));
    let got = server.join().unwrap();
    let mut session = WsSession::new(Role::Server, None);
    let mut scratch = Scratch::new();
    let mut buf = got;
    let mut msgs = Vec::new();
    session
        .decode(&mut buf, &WsConfig::default(), &mut scratch, |m| {
            msgs.push(owned(m))
        })
        .unwrap();
    assert_eq!(
        msgs,
        [
            Message::Pong(b"hi".to_vec()),
            Message::Close(CloseCode::AWAY, String::new())
        ]
    );
}

#[test]
fn wss_with_a_test_certificate() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())
        .unwrap();
    let server_cfg = Arc::new(server_cfg);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(server_cfg).unwrap();
        echo(rustls::StreamOwned::new(conn, tcp), WsConfig::default())
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let opts = WsClientOptions::default().tls(Arc::new(client_cfg));
    let mut ws = WsClient::connect(&format!("wss://localhost:{port}/secure"), opts).unwrap();
    round_trips(&mut ws);
    ws.close(CloseCode::NORMAL, "").unwrap();
    assert_eq!(server.join().unwrap().close, Some(1000));
}

#[test]
fn wss_without_roots_fails_verification() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let server_cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key.into())
    .unwrap();
    let server = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(server_cfg)).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 100];
        let _ = s.read(&mut buf);
    });
    let err = WsClient::connect(
        &format!("wss://localhost:{port}/"),
        WsClientOptions::default(),
    )
    .err();
    assert!(matches!(err, Some(Error::Io(_))), "{err:?}");
    server.join().unwrap();
}

#[test]
fn urls() {
    let u = parse_url("wss://user@Example.com/a/b?c=d#frag").unwrap();
    assert_eq!(
        u,
        Url {
            tls: true,
            host: "Example.com".into(),
            port: 443,
            authority: "Example.com".into(),
            target: "/a/b?c=d".into()
        }
    );
    let u = parse_url("ws://[::1]:9001?x").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.target.as_str()),
        ("::1", 9001, "/?x")
    );
    assert_eq!(parse_url("WS://h").unwrap().port, 80);
    for bad in [
        "http://h/",
        "ws://",
        "ws://h:notaport/",
        "ws://[::1/",
        "h:80",
    ] {
        assert!(parse_url(bad).is_err(), "{bad}");
    }
}
