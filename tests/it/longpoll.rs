//! HTTP long-polling: the session transport behind `transport=polling`, over real sockets
//! on port 0 — the blocking client, hub handlers over both transports, and raw HTTP for
//! lost responses, limits, heartbeats and expiry.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sockloop::client::polling::{PollingClient, PollingOptions};
use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::hub::{Ctx, Hub};
use sockloop::ws::CloseCode;
use sockloop::{
    Listen, PollingConfig, Rejection, Runtime, Server, WsConn, WsHandler, WsMessage, WsServerConfig,
};

use crate::util::WAIT;

fn rt() -> Runtime {
    Runtime::builder()
        .pollers(2)
        .handler_threads(2)
        .build()
        .unwrap()
}

fn ws(polling: PollingConfig) -> WsServerConfig {
    WsServerConfig::new().polling(Some(polling))
}

/// An echo server with long-polling on.
fn echo(rt: &Runtime, polling: PollingConfig) -> Server {
    let f = sockloop::on_message(|ws: &WsConn, m: WsMessage<'_>| {
        let _ = match m {
            WsMessage::Text(t) => ws.send_text(t),
            WsMessage::Binary(b) => ws.send_binary(b),
        };
    });
    rt.serve(Listen::tcp("127.0.0.1:0"))
        .websocket(ws(polling), f)
        .unwrap()
}

fn url(s: &Server, query: &str) -> String {
    format!("http://{}/?{query}", s.local_addr())
}

fn next(c: &mut PollingClient) -> Message {
    c.recv_timeout(WAIT).unwrap().expect("a message in time")
}

/// Waits (with a deadline) until `f` holds.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A raw HTTP connection to the server.
fn dial(s: &Server) -> TcpStream {
    let t = TcpStream::connect(s.local_addr().to_string()).unwrap();
    t.set_read_timeout(Some(WAIT)).unwrap();
    t
}

/// Writes `req` and reads one response: status, head and body.
fn exchange(t: &mut TcpStream, req: &[u8]) -> (u16, String, Vec<u8>) {
    t.write_all(req).unwrap();
    read_response(t)
}

fn read_response(t: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(t.read(&mut byte).unwrap(), 1, "the connection ended early");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0; len];
    t.read_exact(&mut body).unwrap();
    (status, head, body)
}

/// Which of two connections has an answer first (0 or 1), within [`WAIT`].
fn first_answered(a: &TcpStream, b: &TcpStream) -> usize {
    let end = Instant::now() + WAIT;
    let short = Some(Duration::from_millis(5));
    a.set_read_timeout(short).unwrap();
    b.set_read_timeout(short).unwrap();
    let which = loop {
        if a.peek(&mut [0u8; 1]).is_ok() {
            break 0;
        }
        if b.peek(&mut [0u8; 1]).is_ok() {
            break 1;
        }
        assert!(Instant::now() < end, "neither was answered");
    };
    a.set_read_timeout(Some(WAIT)).unwrap();
    b.set_read_timeout(Some(WAIT)).unwrap();
    which
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

fn post(target: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Opens a session by hand (the handshake's connection closes after it): its id.
fn handshake(s: &Server) -> String {
    let mut t = dial(s);
    let req = b"GET /?transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, head, body) = exchange(&mut t, req);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("application/json"), "{head}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["sid"].as_str().unwrap().to_owned()
}

#[test]
fn echo_over_long_polling_keeps_text_binary_and_order() {
    let rt = rt();
    let s = echo(&rt, PollingConfig::new());
    let mut c = PollingClient::connect(&url(&s, ""), PollingOptions::default()).unwrap();
    assert_eq!(c.session_id().len(), 32);
    c.send_text("héllo").unwrap();
    assert_eq!(next(&mut c), Message::Text("héllo".into()));
    let odd = vec![0u8, 255, b':', b'\n', b't', b'9'];
    c.send_binary(&odd).unwrap();
    assert_eq!(next(&mut c), Message::Binary(odd));
    let batch: Vec<Message> = (0..100).map(|i| Message::Text(format!("m{i}"))).collect();
    c.send_batch(&batch).unwrap();
    for m in batch {
        assert_eq!(next(&mut c), m);
    }
    c.close().unwrap();
    until("the session to close", || s.open_connections() == 0);
}

/// A hub whose `join` route acks, over a server with long-polling on.
fn hub_server(rt: &Runtime) -> (Hub, Server) {
    let hub = Hub::builder()
        .on("join", |ctx: &mut Ctx| {
            let room: String = ctx.data()?;
            ctx.join(&room)?;
            ctx.ack(&json!({"ok": true, "conn": ctx.conn_id().0}))
        })
        .build();
    let cfg = ws(PollingConfig::new())
        .authenticator(|req| Ok(req.query_param("user").map(sockloop::Identity::user)));
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(cfg, hub.factory())
        .unwrap();
    hub.attach(&s);
    (hub, s)
}

fn text_json(m: Message) -> Value {
    match m {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn a_hub_serves_polling_and_websocket_clients_alike() {
    let rt = rt();
    let (hub, s) = hub_server(&rt);
    let mut p = PollingClient::connect(&url(&s, "user=ann"), PollingOptions::default()).unwrap();
    let ws_url = format!("ws://{}/?user=bob", s.local_addr());
    let mut w = WsClient::connect(&ws_url, WsClientOptions::default()).unwrap();
    let join = json!({"event": "join", "data": "r", "id": 7}).to_string();
    p.send_text(&join).unwrap();
    w.send_text(&join).unwrap();
    let pa = loop {
        let v = text_json(next(&mut p));
        if v["event"] == "ack" {
            break v;
        }
    };
    assert_eq!(
        (pa["event"].clone(), pa["ref"].clone()),
        (json!("ack"), json!(7)),
        "{pa}"
    );
    assert_eq!(pa["data"]["ok"], true);
    let wa = loop {
        match w.recv_timeout(WAIT).unwrap().expect("the ack") {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["event"] == "ack" {
                    break v;
                }
            }
            _ => continue,
        }
    };
    assert_eq!(wa["ref"], 7);
    assert_eq!(hub.room_count("r"), 2);
    let d = hub.to_room("r").emit("news", &"hello both");
    assert_eq!((d.queued, d.dropped, d.closed), (2, 0, 0));
    let pm = loop {
        let v = text_json(next(&mut p));
        if v["event"] == "news" {
            break v;
        }
    };
    assert_eq!(pm["data"], "hello both");
    let wm = loop {
        if let Message::Text(t) = w.recv_timeout(WAIT).unwrap().expect("news") {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["event"] == "news" {
                break v;
            }
        }
    };
    assert_eq!(wm["data"], "hello both");
    // The hub addresses the polling session by its connection id like any other.
    let pid = sockloop::ConnId(pa["data"]["conn"].as_u64().unwrap());
    assert_eq!(hub.to_conn(pid).emit("direct", &1).queued, 1);
    assert_eq!(text_json(next(&mut p))["event"], "direct");
    p.close().unwrap();
    until("the polling member to leave", || hub.room_count("r") == 1);
}

#[test]
fn a_lost_response_is_sent_again_with_the_old_ack() {
    struct Greeter;
    impl WsHandler for Greeter {
        fn on_open(&mut self, ws: &WsConn, _: &sockloop::http::Request) {
            for m in ["one", "two", "three"] {
                let _ = ws.send_text(m);
            }
        }
    }
    let rt = rt();
    let cfg = PollingConfig::new().poll_interval(Duration::from_millis(200));
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(ws(cfg), |_: &WsConn, _: &sockloop::http::Request| Greeter)
        .unwrap();
    let sid = handshake(&s);
    until("the greetings queued", || s.stats().queued_bytes == 11);
    let target = format!("/?transport=polling&sid={sid}&ack=0");
    // The first response is cut after a few bytes.
    let mut cut = dial(&s);
    cut.write_all(&get(&target)).unwrap();
    let mut part = [0u8; 20];
    cut.read_exact(&mut part).unwrap();
    assert!(part.starts_with(b"HTTP/1.1 200"));
    drop(cut);
    // The same ack again: the same batch, from the same first sequence number.
    let mut t = dial(&s);
    let (status, head, body) = exchange(&mut t, &get(&target));
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("application/octet-stream"), "{head}");
    assert_eq!(body, b"1\nt3:onet3:twot5:three");
    // A GET may cap the batch: one record always comes, however small the cap.
    let capped = format!("/?transport=polling&sid={sid}&ack=0&max=4");
    let (_, _, body) = exchange(&mut t, &get(&capped));
    assert_eq!(body, b"1\nt3:one");
    let capped = format!("/?transport=polling&sid={sid}&ack=0&max=6");
    let (_, _, body) = exchange(&mut t, &get(&capped));
    assert_eq!(body, b"1\nt3:onet3:two");
    // Acknowledging two of them: only the third comes again.
    let (_, _, body) = exchange(
        &mut t,
        &get(&format!("/?transport=polling&sid={sid}&ack=2")),
    );
    assert_eq!(body, b"3\nt5:three");
    // All acknowledged: the GET is held, then answered empty (the heartbeat).
    let (_, _, body) = exchange(
        &mut t,
        &get(&format!("/?transport=polling&sid={sid}&ack=3")),
    );
    assert_eq!(body, b"4\n");
}

#[test]
fn a_second_get_is_refused_while_one_is_held() {
    let rt = rt();
    let cfg = PollingConfig::new().poll_interval(Duration::from_millis(500));
    let s = echo(&rt, cfg);
    let sid = handshake(&s);
    let target = format!("/?transport=polling&sid={sid}&ack=0");
    let mut first = dial(&s);
    first.write_all(&get(&target)).unwrap();
    let mut second = dial(&s);
    second.write_all(&get(&target)).unwrap();
    // Whichever reaches the session second is refused at once; the other is held until
    // the heartbeat answers it.
    let answers = [read_response(&mut second), read_response(&mut first)];
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 409).collect();
    let held: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
    assert_eq!((refused.len(), held.len()), (1, 1), "one refused, one held");
    let text = String::from_utf8(refused[0].2.clone()).unwrap();
    assert!(text.contains("a GET is already pending"), "{text}");
    assert_eq!(held[0].2, b"1\n");
    // A POST next to a held GET is fine.
    let mut g = dial(&s);
    g.write_all(&get(&target)).unwrap();
    let mut p = dial(&s);
    let send = post(&format!("/?transport=polling&sid={sid}&seq=1"), b"t2:hi");
    let (status, _, body) = exchange(&mut p, &send);
    assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
    let (_, _, body) = read_response(&mut g);
    assert_eq!(body, b"1\nt2:hi");
}

#[test]
fn a_repeated_post_is_answered_and_delivered_once() {
    let rt = rt();
    let s = echo(&rt, PollingConfig::new());
    let sid = handshake(&s);
    let mut t = dial(&s);
    let target = format!("/?transport=polling&sid={sid}&seq=1");
    for _ in 0..2 {
        let (status, _, body) = exchange(&mut t, &post(&target, b"t1:a"));
        assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
    }
    let skip = format!("/?transport=polling&sid={sid}&seq=3");
    let (status, _, body) = exchange(&mut t, &post(&skip, b"t1:c"));
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let bad = format!("/?transport=polling&sid={sid}&seq=2");
    let (status, _, body) = exchange(&mut t, &post(&bad, b"t9:short"));
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("malformed body"));
    let (status, _, _) = exchange(&mut t, &post(&bad, b"t1:b"));
    assert_eq!(status, 200);
    // The echoes come from the handler thread: take them as they come.
    let mut got = Vec::new();
    while got.len() < 2 {
        let ack = got.len();
        let (_, _, body) = exchange(
            &mut t,
            &get(&format!("/?transport=polling&sid={sid}&ack={ack}")),
        );
        let first: usize =
            String::from_utf8_lossy(&body[..body.iter().position(|&b| b == b'\n').unwrap()])
                .parse()
                .unwrap();
        assert_eq!(first, ack + 1);
        let rest = &body[body.iter().position(|&b| b == b'\n').unwrap() + 1..];
        got.extend(rest.chunks(4).map(|c| c.to_vec()));
    }
    assert_eq!(
        got,
        vec![b"t1:a".to_vec(), b"t1:b".to_vec()],
        "a once, then b"
    );
}

#[test]
fn oversized_bodies_get_413_and_oversized_heads_431() {
    let rt = rt();
    let s = echo(&rt, PollingConfig::new().max_body(1 << 10));
    let sid = handshake(&s);
    let mut t = dial(&s);
    let big = vec![b'x'; 2 << 10];
    let (status, _, body) = exchange(
        &mut t,
        &post(&format!("/?transport=polling&sid={sid}"), &big),
    );
    assert_eq!(status, 413);
    assert!(!body.is_empty(), "a reason in the body");
    let mut t = dial(&s);
    let long = format!(
        "GET /?transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(9 << 10)
    );
    let (status, _, body) = exchange(&mut t, long.as_bytes());
    assert_eq!(status, 431);
    assert!(!body.is_empty());
    // The session is unharmed.
    let mut t = dial(&s);
    let (status, _, _) = exchange(
        &mut t,
        &post(&format!("/?transport=polling&sid={sid}"), b"t1:x"),
    );
    assert_eq!(status, 200);
}

#[test]
fn an_unknown_sid_is_400_with_a_json_error() {
    let rt = rt();
    let s = echo(&rt, PollingConfig::new());
    let mut t = dial(&s);
    let (status, head, body) = exchange(&mut t, &get("/?transport=polling&sid=nope&ack=0"));
    assert_eq!(status, 400);
    assert!(head.contains("application/json"), "{head}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "unknown session");
    assert_eq!(v["sid"], "nope");
    // The connection stays usable.
    let (status, _, _) = exchange(&mut t, &get("/?transport=polling&sid=nope"));
    assert_eq!(status, 400);
    let (status, _, _) = exchange(
        &mut t,
        b"PUT /?transport=polling&sid=nope HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status, 400, "unknown before the method");
}

#[test]
fn a_held_get_is_answered_empty_after_the_poll_interval() {
    let rt = rt();
    let interval = Duration::from_millis(300);
    let s = echo(&rt, PollingConfig::new().poll_interval(interval));
    let sid = handshake(&s);
    let mut t = dial(&s);
    let t0 = Instant::now();
    let (status, _, body) = exchange(
        &mut t,
        &get(&format!("/?transport=polling&sid={sid}&ack=0")),
    );
    assert!(t0.elapsed() >= interval, "{:?}", t0.elapsed());
    assert_eq!((status, body.as_slice()), (200, b"1\n".as_slice()));
    // Polling on keeps the session: a message now comes at once.
    let mut p = dial(&s);
    let (status, _, _) = exchange(
        &mut p,
        &post(&format!("/?transport=polling&sid={sid}"), b"t4:ping"),
    );
    assert_eq!(status, 200);
    let (_, _, body) = exchange(
        &mut t,
        &get(&format!("/?transport=polling&sid={sid}&ack=0")),
    );
    assert_eq!(body, b"1\nt4:ping");
}

/// Counts `on_close` calls and keeps the last code and reason.
#[derive(Clone, Default)]
struct Closes(Arc<Mutex<Vec<(CloseCode, String)>>>);

impl WsHandler for Closes {
    fn on_close(&mut self, _: &WsConn, code: CloseCode, reason: &str) {
        self.0.lock().unwrap().push((code, reason.to_owned()));
    }
}

#[test]
fn a_session_without_gets_expires_after_the_ping_timeout_once() {
    let rt = rt();
    let closes = Closes::default();
    let c2 = closes.clone();
    let cfg = PollingConfig::new().ping_timeout(Duration::from_millis(300));
    let (rec, records) = crate::util::recorder();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .observer(rec)
        .websocket(ws(cfg), move |_: &WsConn, _: &sockloop::http::Request| {
            c2.clone()
        })
        .unwrap();
    let t0 = Instant::now();
    let sid = handshake(&s);
    until("the handshake connection to go", || {
        s.open_connections() == 1
    });
    until("the session to expire", || {
        !closes.0.lock().unwrap().is_empty()
    });
    assert!(t0.elapsed() >= Duration::from_millis(300));
    until("nothing open", || s.open_connections() == 0);
    std::thread::sleep(Duration::from_millis(100)); // a second on_close would be quick
    let seen = closes.0.lock().unwrap().clone();
    assert_eq!(seen, vec![(CloseCode::AWAY, "ping timeout".to_owned())]);
    // The observer saw the session like a connection: accepted, then closed once.
    let states: Vec<_> = records.states.try_iter().collect();
    let expired: Vec<_> = states
        .iter()
        .filter(|(_, st)| {
            matches!(
                st,
                sockloop::ConnState::Closed(sockloop::CloseReason::PongTimeout)
            )
        })
        .collect();
    assert_eq!(expired.len(), 1, "{states:?}");
    let id = expired[0].0;
    let of_it: Vec<_> = states
        .iter()
        .filter(|(c, _)| *c == id)
        .map(|(_, st)| st)
        .collect();
    assert!(
        matches!(of_it.first(), Some(sockloop::ConnState::Accepted)),
        "{of_it:?}"
    );
    let mut t = dial(&s);
    let (status, _, _) = exchange(&mut t, &get(&format!("/?transport=polling&sid={sid}")));
    assert_eq!(status, 400, "the expired session is unknown");
}

#[test]
fn a_session_counts_in_open_connections_and_stats() {
    let rt = rt();
    let s = echo(&rt, PollingConfig::new());
    let before = s.stats();
    let sid = handshake(&s);
    until("only the session open", || s.open_connections() == 1);
    let mut t = dial(&s);
    let close = [b'c', b'2', b':', 0x03, 0xe8];
    let req = post(&format!("/?transport=polling&sid={sid}&seq=1"), &close);
    let (status, _, _) = exchange(&mut t, &req);
    assert_eq!(status, 200);
    drop(t);
    until("the session to close", || s.open_connections() == 0);
    let after = s.stats();
    // Two HTTP connections and the session.
    assert_eq!(after.accepted - before.accepted, 3);
    assert_eq!(after.closed - before.closed, 3);
    assert_eq!(after.queued_bytes, 0);
}

#[test]
fn the_authenticator_and_origin_check_run_at_the_handshake() {
    let rt = rt();
    let cfg = ws(PollingConfig::new())
        .origins(sockloop::Origins::List(vec!["https://ok.example".into()]))
        .authenticator(|req| match req.query_param("user") {
            Some(u) => Ok(Some(sockloop::Identity::user(u))),
            None => Err(Rejection::new(401, "who are you")),
        })
        .use_connection(|req, _| match req.query_param("tenant") {
            Some(_) => Ok(()),
            None => Err(Rejection::new(403, "tenant required")),
        });
    let users = Arc::new(Mutex::new(Vec::new()));
    let u2 = users.clone();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(cfg, move |ws: &WsConn, _: &sockloop::http::Request| {
            u2.lock()
                .unwrap()
                .push(ws.identity().map(|i| i.user.clone()));
            Closes::default()
        })
        .unwrap();
    let refused =
        |query: &str, opts: PollingOptions| match PollingClient::connect(&url(&s, query), opts)
            .unwrap_err()
        {
            sockloop::Error::WebSocket(sockloop::ws::WsError::Refused { status, reason }) => {
                (status, reason)
            }
            other => panic!("{other:?}"),
        };
    assert_eq!(
        refused("", PollingOptions::default()),
        (401, "who are you".into())
    );
    assert_eq!(refused("user=ann", PollingOptions::default()).0, 403);
    let evil = PollingOptions::default().header("Origin", "https://evil.example");
    assert_eq!(refused("user=ann&tenant=t", evil).0, 403);
    let good = PollingOptions::default().header("Origin", "https://ok.example");
    let mut c = PollingClient::connect(&url(&s, "user=ann&tenant=t"), good).unwrap();
    until("on_open", || !users.lock().unwrap().is_empty());
    assert_eq!(*users.lock().unwrap(), vec![Some("ann".to_owned())]);
    c.close().unwrap();
}

#[test]
fn the_server_closing_reaches_the_client_as_a_close_message() {
    struct Kick(Arc<AtomicUsize>);
    impl WsHandler for Kick {
        fn on_text(&mut self, ws: &WsConn, text: &str) {
            let _ = ws.send_text(text);
            ws.close(CloseCode::from(4000), "bye now");
        }
        fn on_close(&mut self, _: &WsConn, _: CloseCode, _: &str) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let rt = rt();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(
            ws(PollingConfig::new()),
            move |_: &WsConn, _: &sockloop::http::Request| Kick(n2.clone()),
        )
        .unwrap();
    let mut c = PollingClient::connect(&url(&s, ""), PollingOptions::default()).unwrap();
    c.send_text("last").unwrap();
    assert_eq!(next(&mut c), Message::Text("last".into()));
    assert_eq!(
        next(&mut c),
        Message::Close(CloseCode::from(4000), "bye now".into())
    );
    until("on_close", || n.load(Ordering::SeqCst) == 1);
    until("nothing open", || s.open_connections() == 0);
    assert!(matches!(c.recv_timeout(WAIT), Err(sockloop::Error::Closed)));
}

#[test]
fn the_session_queue_is_bounded_like_a_connections() {
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let st = statuses.clone();
    struct Flood(Arc<Mutex<Vec<sockloop::SendStatus>>>);
    impl WsHandler for Flood {
        fn on_open(&mut self, ws: &WsConn, _: &sockloop::http::Request) {
            let mut v = self.0.lock().unwrap();
            for _ in 0..50 {
                v.push(ws.send_binary([7u8; 100]));
            }
        }
    }
    let rt = rt();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(sockloop::ServerConfig::new().max_queued_bytes(1000))
        .websocket(
            ws(PollingConfig::new()),
            move |_: &WsConn, _: &sockloop::http::Request| Flood(st.clone()),
        )
        .unwrap();
    let sid = handshake(&s);
    until("on_open", || statuses.lock().unwrap().len() == 50);
    let queued = statuses
        .lock()
        .unwrap()
        .iter()
        .filter(|st| **st == sockloop::SendStatus::Queued)
        .count();
    assert_eq!(queued, 10, "1000 bytes of 100-byte messages");
    assert_eq!(s.stats().dropped, 40);
    until("held until acknowledged", || s.stats().queued_bytes == 1000);
    let mut t = dial(&s);
    let (_, _, body) = exchange(
        &mut t,
        &get(&format!("/?transport=polling&sid={sid}&ack=0")),
    );
    let (_, records) = body.split_at(2);
    assert_eq!(records.len(), 10 * (b"b100:".len() + 100));
    // Sent is not acknowledged: the session keeps its 1000 (the response's own bytes
    // leave with the write).
    until("the response written", || s.stats().queued_bytes == 1000);
    t.write_all(&get(&format!("/?transport=polling&sid={sid}&ack=10")))
        .unwrap();
    until("the ack to release the queue", || {
        s.stats().queued_bytes == 0
    });
}

#[test]
fn shutdown_closes_sessions_cleanly_and_tells_the_held_get() {
    let rt = rt();
    let s = echo(&rt, PollingConfig::new());
    let sid = handshake(&s);
    let target = format!("/?transport=polling&sid={sid}&ack=0");
    let (mut a, mut b) = (dial(&s), dial(&s));
    a.write_all(&get(&target)).unwrap();
    b.write_all(&get(&target)).unwrap();
    // One is refused at once (409): the other is surely held.
    let mut held = match first_answered(&a, &b) {
        0 => {
            assert_eq!(read_response(&mut a).0, 409);
            b
        }
        _ => {
            assert_eq!(read_response(&mut b).0, 409);
            a
        }
    };
    assert!(s.shutdown(WAIT), "clean");
    assert_eq!(s.open_connections(), 0);
    let (status, _, body) = read_response(&mut held);
    assert_eq!(status, 200);
    assert_eq!(body, b"1\nc17:\x03\xe9server shutdown");
}

struct Gated {
    gate: crossbeam_channel::Receiver<()>,
    entered: Arc<AtomicUsize>,
    got: Arc<AtomicUsize>,
}

impl WsHandler for Gated {
    fn on_text(&mut self, _: &WsConn, _: &str) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let _ = self.gate.recv_timeout(WAIT);
        self.got.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_post_waits_for_a_handler_that_is_behind() {
    let (open, gate) = crossbeam_channel::unbounded::<()>();
    let got = Arc::new(AtomicUsize::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let (g2, e2) = (got.clone(), entered.clone());
    let rt = rt();
    let cfg = sockloop::ServerConfig::new().max_inbound_pending(1 << 10);
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .websocket(
            ws(PollingConfig::new()),
            move |_: &WsConn, _: &sockloop::http::Request| Gated {
                gate: gate.clone(),
                entered: e2.clone(),
                got: g2.clone(),
            },
        )
        .unwrap();
    let sid = handshake(&s);
    let mut body = Vec::new();
    for _ in 0..4 {
        body.extend_from_slice(b"t600:");
        body.extend_from_slice(&[b'a'; 600]);
    }
    let mut first = dial(&s);
    first
        .write_all(&post(
            &format!("/?transport=polling&sid={sid}&seq=1"),
            &body,
        ))
        .unwrap();
    // 2,400 bytes wait for a handler that takes 1 KiB: the answer waits; a second POST
    // meanwhile is refused.
    until("the handler to take the first message", || {
        entered.load(Ordering::SeqCst) == 1
    });
    let mut second = dial(&s);
    let next = post(&format!("/?transport=polling&sid={sid}&seq=2"), b"t1:z");
    let (status, _, text) = exchange(&mut second, &next);
    assert_eq!(status, 409);
    assert!(String::from_utf8_lossy(&text).contains("a POST is already pending"));
    first
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        first.read(&mut byte).is_err(),
        "no answer while the handler is behind"
    );
    for _ in 0..4 {
        open.send(()).unwrap();
    }
    first.set_read_timeout(Some(WAIT)).unwrap();
    let (status, _, _) = read_response(&mut first);
    assert_eq!(status, 200);
    until("every message handled", || got.load(Ordering::SeqCst) == 4);
}

#[test]
fn a_retransmitted_post_takes_the_waiting_ones_place() {
    let (open, gate) = crossbeam_channel::unbounded::<()>();
    let got = Arc::new(AtomicUsize::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let (g2, e2) = (got.clone(), entered.clone());
    let rt = rt();
    let cfg = sockloop::ServerConfig::new().max_inbound_pending(1 << 10);
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .websocket(
            ws(PollingConfig::new()),
            move |_: &WsConn, _: &sockloop::http::Request| Gated {
                gate: gate.clone(),
                entered: e2.clone(),
                got: g2.clone(),
            },
        )
        .unwrap();
    let sid = handshake(&s);
    let mut body = Vec::new();
    for _ in 0..4 {
        body.extend_from_slice(b"t600:");
        body.extend_from_slice(&[b'a'; 600]);
    }
    let batch = post(&format!("/?transport=polling&sid={sid}&seq=1"), &body);
    let mut first = dial(&s);
    first.write_all(&batch).unwrap();
    until("the handler to take the first message", || {
        entered.load(Ordering::SeqCst) == 1
    });
    // The same batch again on another connection (as after a cut): it takes over.
    let mut again = dial(&s);
    again.write_all(&batch).unwrap();
    let (status, _, text) = read_response(&mut first);
    assert_eq!(status, 409);
    assert!(String::from_utf8_lossy(&text).contains("replaced"));
    for _ in 0..4 {
        open.send(()).unwrap();
    }
    let (status, _, _) = read_response(&mut again);
    assert_eq!(status, 200);
    until("every message handled", || got.load(Ordering::SeqCst) == 4);
    std::thread::sleep(Duration::from_millis(50)); // a second delivery would be quick
    assert_eq!(got.load(Ordering::SeqCst), 4, "delivered once");
}

#[test]
fn under_drop_oldest_a_session_keeps_the_newest() {
    struct Flood;
    impl WsHandler for Flood {
        fn on_open(&mut self, ws: &WsConn, _: &sockloop::http::Request) {
            for i in 0..50u8 {
                assert_eq!(ws.send_binary([i; 100]), sockloop::SendStatus::Queued);
            }
        }
    }
    let rt = rt();
    let cfg = sockloop::ServerConfig::new()
        .max_queued_bytes(1000)
        .drop_policy(sockloop::DropPolicy::DropOldest);
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .websocket(
            ws(PollingConfig::new()),
            |_: &WsConn, _: &sockloop::http::Request| Flood,
        )
        .unwrap();
    let sid = handshake(&s);
    until("the flood", || s.stats().dropped == 40);
    let mut t = dial(&s);
    let (_, _, body) = exchange(
        &mut t,
        &get(&format!("/?transport=polling&sid={sid}&ack=0")),
    );
    let records: Vec<u8> = body[2..].chunks(5 + 100).map(|r| r[5]).collect();
    assert_eq!(
        records,
        (40..50).collect::<Vec<u8>>(),
        "the newest ten, in order"
    );
}

#[test]
fn a_client_rides_over_keep_alive_connections_the_server_closed() {
    let rt = rt();
    let wscfg = ws(PollingConfig::new())
        .ws(sockloop::ws::WsConfig::default().handshake_timeout(Duration::from_millis(100)));
    let f = sockloop::on_message(|ws: &WsConn, m: WsMessage<'_>| {
        if let WsMessage::Text(t) = m {
            let _ = ws.send_text(t);
        }
    });
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(wscfg, f)
        .unwrap();
    let mut c = PollingClient::connect(&url(&s, ""), PollingOptions::default()).unwrap();
    for i in 0..5 {
        c.send_text(&format!("m{i}")).unwrap();
        assert_eq!(next(&mut c), Message::Text(format!("m{i}")));
        // Long enough for the server to close the idle POST connection: the next send
        // finds it closed and goes again on a new one.
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(
        c.recv_timeout(Duration::from_millis(50)).unwrap(),
        None,
        "no duplicates"
    );
    // The session, the first GET connection, and a new POST connection for every send.
    let accepted = s.stats().accepted;
    assert!(accepted >= 7, "{accepted}");
}

#[test]
fn a_full_server_refuses_the_handshake_with_503() {
    let rt = rt();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(sockloop::ServerConfig::new().max_connections(2))
        .websocket(
            ws(PollingConfig::new()),
            |_: &WsConn, _: &sockloop::http::Request| Closes::default(),
        )
        .unwrap();
    let _one = handshake(&s); // its connection closes: one session open
    until("one open", || s.open_connections() == 1);
    let mut t = dial(&s); // two open: the session and this connection
    let req = b"GET /?transport=polling HTTP/1.1\r\nHost: x\r\n\r\n";
    let (status, _, body) = exchange(&mut t, req);
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("connection limit"));
    assert_eq!(s.open_connections(), 2);
    assert_eq!(s.stats().rejected, 1);
}

#[test]
fn bad_polling_requests_get_clear_errors_and_polling_is_off_by_default() {
    let rt = rt();
    let s = echo(&rt, PollingConfig::new());
    let sid = handshake(&s);
    let mut t = dial(&s);
    let cases: [(Vec<u8>, u16, &str); 4] = [
        (post("/?transport=polling", b""), 405, "handshake is a GET"),
        (
            get(&format!("/?transport=polling&sid={sid}&ack=x")),
            400,
            "ack must be",
        ),
        (
            post(&format!("/?transport=polling&sid={sid}&seq=-1"), b""),
            400,
            "seq must be",
        ),
        (
            format!("PUT /?transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            405,
            "GET and POST",
        ),
    ];
    for (req, status, text) in cases {
        let (got, _, body) = exchange(&mut t, &req);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(got, status, "{body}");
        assert!(body.contains(text), "{body}");
    }
    // Without `polling`, the same request is plain HTTP (the hook's 404).
    let plain = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(
            WsServerConfig::new(),
            sockloop::on_message(|_: &WsConn, _: WsMessage<'_>| {}),
        )
        .unwrap();
    let mut t = dial(&plain);
    let (status, _, _) = exchange(&mut t, &get("/?transport=polling"));
    assert_eq!(status, 404);
}

/// A TCP proxy that cuts every connection (both ways) after a pseudo-random number of
/// bytes, counting the cuts.
struct Cutter {
    addr: String,
    cuts: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Cutter {
    /// Stops the accept loop (woken by one last connection).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn cutter(upstream: String, seed: u64) -> Cutter {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let cuts = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c2, stop2) = (cuts.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut rng = seed;
        for down in l.incoming() {
            let Ok(down) = down else { return };
            if stop2.load(Ordering::SeqCst) {
                return;
            }
            let Ok(up) = TcpStream::connect(&upstream) else {
                return;
            };
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let budget = 100 + (rng >> 33) as usize % 1500;
            let left = Arc::new(Mutex::new(budget));
            let pump = |mut from: TcpStream, mut to: TcpStream| {
                let (left, cuts) = (left.clone(), c2.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        let pass = {
                            let mut left = left.lock().unwrap();
                            let pass = n.min(*left);
                            *left -= pass;
                            pass
                        };
                        let cut = pass < n || *left.lock().unwrap() == 0;
                        if to.write_all(&buf[..pass]).is_err() {
                            break;
                        }
                        if cut {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    }
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            };
            pump(down.try_clone().unwrap(), up.try_clone().unwrap());
            pump(up, down);
        }
    });
    Cutter { addr, cuts, stop }
}

#[test]
fn numbered_messages_cross_cut_connections_exactly_once_and_in_order() {
    for seed in [7, 1234, 99_999] {
        cut_run(seed);
    }
}

/// 300 numbered messages each way through a proxy seeded with `seed`.
fn cut_run(seed: u64) {
    // The server checks the client's numbers; the client checks the echoes.
    let seen = Arc::new(Mutex::new(Vec::<u32>::new()));
    let s2 = seen.clone();
    let rt = rt();
    let f = sockloop::on_message(move |ws: &WsConn, m: WsMessage<'_>| {
        if let WsMessage::Text(t) = m {
            s2.lock().unwrap().push(t.parse().unwrap());
            let _ = ws.send_text(t);
        }
    });
    // Short poll and request timeouts: a request that went nowhere (a connection left in
    // a backlog) is given up and sent again soon.
    let cfg = PollingConfig::new().poll_interval(Duration::from_secs(1));
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(ws(cfg), f)
        .unwrap();
    let proxy = cutter(s.local_addr().to_string(), seed);
    let url = format!("http://{}/", proxy.addr);
    let opts = PollingOptions::default().request_timeout(Duration::from_secs(2));
    // The handshake itself may be cut: try until one gets through.
    let mut c = loop {
        if let Ok(c) = PollingClient::connect(&url, opts.clone()) {
            break c;
        }
    };
    const N: u32 = 300;
    let mut got = Vec::new();
    for i in 0..N {
        c.send_text(&i.to_string()).unwrap();
        while let Some(m) = c.recv_timeout(Duration::ZERO).unwrap() {
            got.push(m);
        }
    }
    while got.len() < N as usize {
        match c.recv_timeout(WAIT).unwrap() {
            Some(m) => got.push(m),
            None => panic!(
                "stalled: seed={seed} echoes={} handled={} cuts={} open={} stats={:?}",
                got.len(),
                seen.lock().unwrap().len(),
                proxy.cuts.load(Ordering::SeqCst),
                s.open_connections(),
                s.stats()
            ),
        }
    }
    let echoed: Vec<u32> = got
        .iter()
        .map(|m| match m {
            Message::Text(t) => t.parse().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    let cuts = proxy.cuts.load(Ordering::SeqCst);
    let want: Vec<u32> = (0..N).collect();
    assert_eq!(
        *seen.lock().unwrap(),
        want,
        "the server got each once, in order"
    );
    assert_eq!(echoed, want, "the client got each echo once, in order");
    assert!(cuts >= 20, "the proxy cut {cuts} connections");
    println!(
        "longpoll over cuts: seed={seed} cuts={cuts} messages={N} lost=0 duplicated=0 reordered=0"
    );
}

#[test]
fn long_polling_over_tls() {
    let rt = rt();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = sockloop::tls::TlsServerConfig::from_pem(
        ck.cert.pem().as_bytes(),
        ck.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let f = sockloop::on_message(|ws: &WsConn, m: WsMessage<'_>| {
        if let WsMessage::Text(t) = m {
            let _ = ws.send_text(t);
        }
    });
    let s = rt
        .serve(Listen::tls("127.0.0.1:0", tls))
        .websocket(ws(PollingConfig::new()), f)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let port = s.local_addr().as_inet().unwrap().port();
    let url = format!("https://localhost:{port}/");
    let opts = PollingOptions::default().tls(Arc::new(cfg));
    let mut c = PollingClient::connect(&url, opts).unwrap();
    c.send_text("secret").unwrap();
    assert_eq!(next(&mut c), Message::Text("secret".into()));
    c.close().unwrap();
    // Without trusted roots: a clear configuration error, no connection.
    let err = PollingClient::connect(&url, PollingOptions::default()).unwrap_err();
    assert!(matches!(err, sockloop::Error::Config(_)), "{err:?}");
}

#[test]
fn input_piled_up_behind_a_held_get_is_bounded() {
    let rt = rt();
    let s = echo(&rt, PollingConfig::new().max_body(1 << 10));
    let sid = handshake(&s);
    let mut t = dial(&s);
    t.write_all(&get(&format!("/?transport=polling&sid={sid}&ack=0")))
        .unwrap();
    // More than one request's worth (8 KiB head + 1 KiB body) sent ahead: refused.
    let pile = vec![b'x'; 12 << 10];
    let _ = t.write_all(&pile);
    let (status, _, body) = read_response(&mut t);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("ahead of a pending poll"));
    let mut rest = Vec::new();
    let _ = t.read_to_end(&mut rest);
    assert!(rest.is_empty(), "the connection closed after the refusal");
    // The session is unharmed: a new GET is held, and replaces the refused one's.
    let mut p = dial(&s);
    let send = post(&format!("/?transport=polling&sid={sid}"), b"t2:ok");
    assert_eq!(exchange(&mut p, &send).0, 200);
    let mut g = dial(&s);
    let (_, _, body) = exchange(
        &mut g,
        &get(&format!("/?transport=polling&sid={sid}&ack=0")),
    );
    assert_eq!(body, b"1\nt2:ok");
}
