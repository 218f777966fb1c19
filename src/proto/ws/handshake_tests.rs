//! Unit tests for the opening handshake.

use super::*;
use crate::proto::ws::{DeflateConfig, DeflateMode};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade(extra: &[(&str, &str)]) -> Request {
    let mut headers = vec![
        ("Host", "example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "keep-alive, Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
    ];
    for (k, v) in extra {
        headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
        headers.push((k, v));
    }
    headers.retain(|(_, v)| !v.is_empty());
    Request::from_parts("GET", "/chat", &headers)
}

fn accepted(req: &Request, cfg: &WsConfig) -> (Accepted, String) {
    let mut out = Vec::new();
    let a = accept(req, cfg, &[], &mut out).unwrap();
    (a, String::from_utf8(out).unwrap())
}

fn status(req: &Request) -> u16 {
    let mut out = Vec::new();
    match accept(req, &WsConfig::default(), &[], &mut out) {
        Err(WsError::Handshake { status, .. }) => {
            assert!(out.is_empty());
            status
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn rfc_6455_accept_key() {
    assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn accepts_a_valid_upgrade() {
    let cfg = WsConfig::default().deflate(DeflateConfig::default().mode(DeflateMode::Off));
    let (a, resp) = accepted(&upgrade(&[]), &cfg);
    assert_eq!(
        resp,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
    assert_eq!(a.deflate, None);
    assert_eq!(a.protocol, None);
    assert!(is_upgrade(&upgrade(&[("Upgrade", "WebSocket")])));
}

#[test]
fn negotiates_deflate_and_subprotocol_and_extra_headers() {
    let req = upgrade(&[
        (
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        ),
        ("Sec-WebSocket-Protocol", "v2.chat, v1.chat"),
    ]);
    let cfg = WsConfig::default().subprotocols(["v1.chat", "v2.chat"]);
    let mut out = Vec::new();
    let a = accept(&req, &cfg, &[("Set-Cookie", "sid=1")], &mut out).unwrap();
    let resp = String::from_utf8(out).unwrap();
    assert!(resp.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"));
    assert!(resp.contains("Sec-WebSocket-Protocol: v1.chat\r\n"));
    assert!(resp.ends_with("Set-Cookie: sid=1\r\n\r\n"));
    assert_eq!(a.protocol.as_deref(), Some("v1.chat"));
    assert!(a.deflate.unwrap().server_no_context_takeover);
}

#[test]
fn rejections() {
    assert_eq!(status(&upgrade(&[("Sec-WebSocket-Key", "")])), 400);
    assert_eq!(status(&upgrade(&[("Sec-WebSocket-Key", "short")])), 400);
    assert_eq!(
        status(&upgrade(&[(
            "Sec-WebSocket-Key",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        )])),
        400
    );
    assert_eq!(status(&upgrade(&[("Upgrade", "")])), 400);
    assert_eq!(status(&upgrade(&[("Connection", "keep-alive")])), 400);
    assert_eq!(status(&upgrade(&[("Sec-WebSocket-Version", "8")])), 426);
    assert_eq!(status(&upgrade(&[("Sec-WebSocket-Version", "")])), 426);
    let mut post = upgrade(&[]);
    post = Request::from_parts("POST", "/", &post.headers().collect::<Vec<_>>());
    assert_eq!(status(&post), 400);
}

#[test]
fn rejection_responses() {
    let mut out = Vec::new();
    write_rejection(426, "unsupported version", &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"));
    assert!(text.ends_with("\r\n\r\n426 Upgrade Required: unsupported version\n"));
    let mut out = Vec::new();
    write_rejection(403, "origin not allowed", &mut out);
    assert!(String::from_utf8(out)
        .unwrap()
        .starts_with("HTTP/1.1 403 Forbidden\r\n"));
}

fn client_round_trip(server_cfg: &WsConfig, client_cfg: &WsConfig) -> (Accepted, ClientAccepted) {
    let mut req_bytes = Vec::new();
    let hs = ClientHandshake::request(
        "h:81",
        "/p?q=1",
        &[("X-A".into(), "b".into())],
        client_cfg,
        [7; 16],
        &mut req_bytes,
    );
    let req = match crate::proto::http::parse_request(&req_bytes, &Default::default()) {
        crate::proto::http::ParseOutcome::Complete { request, .. } => request,
        other => panic!("{other:?}"),
    };
    assert_eq!(req.header("host"), Some("h:81"));
    assert_eq!(req.query_param("q"), Some("1"));
    assert_eq!(req.header("x-a"), Some("b"));
    let (server, resp) = accepted(&req, server_cfg);
    let mut bytes = resp.into_bytes();
    let head_len = bytes.len();
    bytes.extend_from_slice(b"\x81\x00");
    for n in 0..head_len {
        assert_eq!(hs.response(&bytes[..n], client_cfg), Ok(None));
    }
    let client = hs.response(&bytes, client_cfg).unwrap().unwrap();
    assert_eq!(client.consumed, head_len);
    (server, client)
}

#[test]
fn client_and_server_agree() {
    let on = WsConfig::default();
    let (s, c) = client_round_trip(&on, &on);
    assert_eq!(s.deflate, c.deflate);
    assert!(c.deflate.is_some());
    let ctx = WsConfig::default().deflate(
        DeflateConfig::default()
            .mode(DeflateMode::ContextTakeover)
            .client_max_window_bits(10),
    );
    let (s, c) = client_round_trip(&ctx, &ctx);
    assert_eq!(s.deflate, c.deflate);
    assert_eq!(c.deflate.unwrap().client_max_window_bits, 10);
    let off = WsConfig::default().deflate(DeflateConfig::default().mode(DeflateMode::Off));
    let (_, c) = client_round_trip(&on, &off);
    assert_eq!(c.deflate, None);
    let proto = WsConfig::default().subprotocols(["a", "b"]);
    let (_, c) = client_round_trip(&WsConfig::default().subprotocols(["b"]), &proto);
    assert_eq!(c.protocol.as_deref(), Some("b"));
}

#[test]
fn client_rejects_bad_responses() {
    let cfg = WsConfig::default().deflate(DeflateConfig::default().mode(DeflateMode::Off));
    let mut sink = Vec::new();
    let hs = ClientHandshake::request("h", "/", &[], &cfg, [1; 16], &mut sink);
    let good = accept_key(&base64::encode(&[1; 16]));
    let check = |resp: String| match hs.response(resp.as_bytes(), &cfg) {
        Err(WsError::Handshake { status, .. }) => status,
        other => panic!("{other:?}"),
    };
    match hs.response(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope",
        &cfg,
    ) {
        Err(WsError::Refused { status, reason }) => assert_eq!((status, &*reason), (403, "nope")),
        other => panic!("{other:?}"),
    }
    // The reason's body still arriving: wait for it.
    let partial = hs.response(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nno",
        &cfg,
    );
    assert!(matches!(partial, Ok(None)), "{partial:?}");
    let base = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    assert_eq!(
        check(format!("{base}Sec-WebSocket-Accept: wrong\r\n\r\n")),
        101
    );
    assert_eq!(check(format!("{base}Sec-WebSocket-Accept: {good}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n")), 101);
    assert_eq!(
        check(format!(
            "{base}Sec-WebSocket-Accept: {good}\r\nSec-WebSocket-Protocol: x\r\n\r\n"
        )),
        101
    );
    assert_eq!(
        check(format!(
            "HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: {good}\r\n\r\n"
        )),
        101
    );
    assert_eq!(check("garbage\r\n\r\n".into()), 0);
    assert_eq!(
        check("HTTP/1.1 101 OK\r\n".to_string() + &"X: y\r\n".repeat(3000)),
        0
    );
    assert!(hs
        .response(
            format!("{base}Sec-WebSocket-Accept: {good}\r\n\r\n").as_bytes(),
            &cfg
        )
        .is_ok());
}
