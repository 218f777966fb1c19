//! The layered core: faults in user callbacks never kill a poller, `Duration::MAX` means
//! "never", a broadcast from a poller thread never waits on itself, and a handler panic
//! closes its connection the same way inline and on handler threads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::http::Request;
use sockloop::ws::{CloseCode, WsConfig};
use sockloop::{
    handler, Addr, Broadcaster, CloseReason, ConnId, ConnState, Dispatch, Error, GroupId,
    Lifecycle, Listen, Observer, Runtime, Server, ServerConfig, WsConn, WsHandler, WsServerConfig,
};

use crate::util::{recorder, WAIT};

fn rt(pollers: usize) -> Runtime {
    Runtime::builder()
        .pollers(pollers)
        .handler_threads(2)
        .build()
        .unwrap()
}

fn tcp_echo(rt: &Runtime, cfg: ServerConfig, obs: impl Observer) -> Server {
    rt.serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .observer(obs)
        .stream(handler::on_data(|c: &sockloop::Conn, d: &[u8]| {
            let _ = c.send(d);
        }))
        .unwrap()
}

fn round_trip(s: &Server, msg: &[u8]) {
    let mut t = TcpStream::connect(s.local_addr().as_inet().unwrap()).unwrap();
    t.set_read_timeout(Some(WAIT)).unwrap();
    t.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    t.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

/// Panics in every callback.
struct Panicky;

impl Observer for Panicky {
    fn on_error(&self, _: Option<ConnId>, _: &Error) {
        panic!("observer on_error");
    }
    fn on_conn_state(&self, _: ConnId, _: &Addr, _: &ConnState) {
        panic!("observer on_conn_state");
    }
    fn on_lifecycle(&self, _: &Lifecycle) {
        panic!("observer on_lifecycle");
    }
}

#[test]
fn a_panicking_observer_leaves_the_poller_serving() {
    let rt = rt(1);
    for dispatch in [Dispatch::Inline, Dispatch::Threads] {
        let s = tcp_echo(&rt, ServerConfig::new().dispatch(dispatch), Panicky);
        // Each connection runs on_conn_state (accepted, closing, closed) on the one poller.
        for i in 0..5 {
            round_trip(&s, format!("hello {i}").as_bytes());
        }
        let until = Instant::now() + WAIT;
        while s.stats().closed < 5 && Instant::now() < until {
            std::thread::yield_now();
        }
        assert_eq!(s.stats().closed, 5, "every connection went through close");
        assert!(s.shutdown(WAIT), "shutdown is clean despite the observer");
    }
}

#[test]
fn duration_max_settings_mean_never_and_leave_the_poller_serving() {
    let rt = rt(1);
    let cfg = ServerConfig::new()
        .close_timeout(Duration::MAX)
        .idle_timeout(Some(Duration::MAX));
    let tcp = tcp_echo(&rt, cfg.clone(), sockloop::LogObserver);
    let ws_cfg = WsConfig::default()
        .handshake_timeout(Duration::MAX)
        .close_timeout(Duration::MAX)
        .ping_interval(Some(Duration::MAX))
        .pong_timeout(Duration::MAX)
        .idle_timeout(Some(Duration::MAX));
    let ws = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .websocket(
            WsServerConfig::new().ws(ws_cfg),
            sockloop::on_message(|ws: &WsConn, m: sockloop::WsMessage<'_>| {
                if let sockloop::WsMessage::Text(t) = m {
                    let _ = ws.send_text(t);
                }
            }),
        )
        .unwrap();
    for round in 0..3 {
        round_trip(&tcp, b"still here");
        let url = format!("ws://{}/", ws.local_addr());
        let mut c = WsClient::connect(&url, WsClientOptions::default()).unwrap();
        c.send_text(&format!("round {round}")).unwrap();
        match c.recv_timeout(WAIT).unwrap() {
            Some(Message::Text(t)) => assert_eq!(t, format!("round {round}")),
            other => panic!("expected the echo, got {other:?}"),
        }
        c.close(CloseCode::NORMAL, "bye").unwrap();
    }
    // A graceful close with a close timeout of "never" still completes once flushed.
    assert!(tcp.shutdown(WAIT));
    assert!(ws.shutdown(WAIT));
}

#[test]
fn tls_handshake_timeout_of_duration_max_is_never() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = sockloop::tls::TlsServerConfig::builder(
        cert.cert.pem().as_bytes(),
        cert.key_pair.serialize_pem().as_bytes(),
    )
    .handshake_timeout(Duration::MAX)
    .build()
    .unwrap();
    let rt = rt(1);
    let s = rt
        .serve(Listen::tls("127.0.0.1:0", tls))
        .stream(handler::on_data(|c: &sockloop::Conn, d: &[u8]| {
            let _ = c.send(d);
        }))
        .unwrap();
    // A silent client: the poller arms no handshake deadline and keeps serving others.
    let silent = TcpStream::connect(s.local_addr().as_inet().unwrap()).unwrap();
    let plain = tcp_echo(&rt, ServerConfig::new(), sockloop::LogObserver);
    round_trip(&plain, b"the poller is alive");
    drop(silent);
}

/// Joins group 1 on open; on any text, broadcasts to group 1 from the handler and replies
/// with how long `send` took and how many pollers it could not wait for.
struct Caster(Arc<OnceLock<Broadcaster>>);

impl WsHandler for Caster {
    fn on_open(&mut self, ws: &WsConn, _: &Request) {
        ws.join_group(GroupId(1));
    }
    fn on_text(&mut self, ws: &WsConn, _: &str) {
        let b = self.0.get().expect("broadcaster set");
        let t = Instant::now();
        let d = b.send(GroupId(1), &b.frames_text("fan-out"), &[]);
        let _ = ws.send_text(format!("{} {}", t.elapsed().as_millis(), d.pending));
    }
}

#[test]
fn broadcaster_send_from_an_inline_handler_never_waits_on_its_poller() {
    let rt = rt(2);
    let cell = Arc::new(OnceLock::new());
    let c2 = cell.clone();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().dispatch(Dispatch::Inline))
        .websocket(WsServerConfig::new(), move |_: &WsConn, _: &Request| {
            Caster(c2.clone())
        })
        .unwrap();
    let _ = cell.set(s.broadcaster());
    let url = format!("ws://{}/", s.local_addr());
    let mut c = WsClient::connect(&url, WsClientOptions::default()).unwrap();
    c.send_text("go").unwrap();
    let mut reply = None;
    let mut fanned = false;
    while reply.is_none() || !fanned {
        match c.recv_timeout(WAIT).unwrap() {
            Some(Message::Text(t)) if t == "fan-out" => fanned = true,
            Some(Message::Text(t)) => reply = Some(t),
            other => panic!("unexpected {other:?}"),
        }
    }
    let reply = reply.unwrap();
    let (ms, pending) = reply.split_once(' ').unwrap();
    assert!(
        ms.parse::<u64>().unwrap() < 1000,
        "send waited {ms} ms on a poller"
    );
    assert_eq!(pending, "2", "both pollers reported as pending");
    // From a plain thread, the report is complete.
    let b = s.broadcaster();
    let d = b.send(GroupId(1), &b.frames_text("fan-out"), &[]);
    assert_eq!((d.queued, d.pending), (1, 0));
}

struct Boom;

impl WsHandler for Boom {
    fn on_text(&mut self, _: &WsConn, _: &str) {
        panic!("sockloop-test-panic: boom");
    }
}

#[test]
fn a_handler_panic_closes_the_same_way_inline_and_on_threads() {
    let rt = rt(1);
    for dispatch in [Dispatch::Inline, Dispatch::Threads] {
        // WebSocket: 1011, and the connection's close reason is HandlerPanic.
        let (obs, rec) = recorder();
        let s = rt
            .serve(Listen::tcp("127.0.0.1:0"))
            .config(ServerConfig::new().dispatch(dispatch))
            .observer(obs)
            .websocket(WsServerConfig::new(), |_: &WsConn, _: &Request| Boom)
            .unwrap();
        let url = format!("ws://{}/", s.local_addr());
        let mut c = WsClient::connect(&url, WsClientOptions::default()).unwrap();
        c.send_text("x").unwrap();
        match c.recv_timeout(WAIT).unwrap() {
            Some(Message::Close(code, _)) => assert_eq!(code, CloseCode::ERROR, "{dispatch:?}"),
            other => panic!("{dispatch:?}: expected a 1011 close, got {other:?}"),
        }
        drop(c);
        let reason = rec.next_closed();
        assert!(
            matches!(reason, CloseReason::HandlerPanic(_)),
            "{dispatch:?}: {reason:?}"
        );
        // Raw stream: the same reason.
        let (obs, rec) = recorder();
        let raw = rt
            .serve(Listen::tcp("127.0.0.1:0"))
            .config(ServerConfig::new().dispatch(dispatch))
            .observer(obs)
            .stream(handler::on_data(|_: &sockloop::Conn, _: &[u8]| {
                panic!("sockloop-test-panic: boom")
            }))
            .unwrap();
        let mut t = TcpStream::connect(raw.local_addr().as_inet().unwrap()).unwrap();
        t.set_read_timeout(Some(WAIT)).unwrap();
        t.write_all(b"x").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(t.read(&mut buf).unwrap(), 0, "{dispatch:?}: closed");
        let reason = rec.next_closed();
        assert!(
            matches!(reason, CloseReason::HandlerPanic(_)),
            "{dispatch:?}: {reason:?}"
        );
    }
}

#[test]
fn a_blocking_authenticator_delays_no_other_connection() {
    let rt = Runtime::builder()
        .pollers(1)
        .handler_threads(2)
        .build()
        .unwrap();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().dispatch(Dispatch::Inline))
        .websocket(
            WsServerConfig::new().authenticator(|req: &Request| {
                if req.path() == "/slow" {
                    std::thread::sleep(Duration::from_millis(1000));
                }
                Ok(Some(sockloop::Identity::user(req.path())))
            }),
            sockloop::on_message(|ws: &WsConn, m: sockloop::WsMessage<'_>| {
                if let sockloop::WsMessage::Text(t) = m {
                    let who = ws.identity().map(|i| i.user.clone()).unwrap_or_default();
                    let _ = ws.send_text(format!("{who} {t}"));
                }
            }),
        )
        .unwrap();
    let base = format!("ws://{}", s.local_addr());
    let slow_url = format!("{base}/slow");
    let started = Instant::now();
    let slow = std::thread::spawn(move || {
        let mut c = WsClient::connect(&slow_url, WsClientOptions::default()).unwrap();
        let upgraded = started.elapsed();
        c.send_text("hi").unwrap();
        (upgraded, c.recv_timeout(WAIT).unwrap())
    });
    std::thread::sleep(Duration::from_millis(100)); // the slow upgrade is with its authenticator
    let t = Instant::now();
    let mut fast = WsClient::connect(&format!("{base}/fast"), WsClientOptions::default()).unwrap();
    fast.send_text("hello").unwrap();
    match fast.recv_timeout(WAIT).unwrap() {
        Some(Message::Text(t)) => assert_eq!(t, "/fast hello"),
        other => panic!("{other:?}"),
    }
    let fast_took = t.elapsed();
    assert!(
        fast_took < Duration::from_millis(600),
        "an unrelated upgrade and echo took {fast_took:?} behind a 1 s authenticator"
    );
    let (upgraded, reply) = slow.join().unwrap();
    assert!(upgraded >= Duration::from_millis(1000), "{upgraded:?}");
    match reply {
        Some(Message::Text(t)) => assert_eq!(t, "/slow hi"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_authenticator_slower_than_the_handshake_timeout_is_cut() {
    let rt = rt(1);
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(
            WsServerConfig::new()
                .ws(WsConfig::default().handshake_timeout(Duration::from_millis(200)))
                .authenticator(|_: &Request| {
                    std::thread::sleep(Duration::from_millis(600));
                    Ok(None)
                }),
            sockloop::on_message(|_: &WsConn, _| {}),
        )
        .unwrap();
    let url = format!("ws://{}/", s.local_addr());
    let r = WsClient::connect(&url, WsClientOptions::default());
    assert!(
        r.is_err(),
        "the upgrade must not complete after its deadline"
    );
}

#[test]
fn connection_middleware_runs_after_the_authenticator_and_its_reason_reaches_the_client() {
    let rt = rt(1);
    let hub = sockloop::hub::Hub::builder()
        .use_connection(|req: &Request, id: Option<&sockloop::Identity>| {
            match (id, req.header("x-tenant")) {
                (Some(who), Some(_)) if who.user == "ann" => Ok(()),
                (Some(_), None) => Err(sockloop::Rejection::new(403, "tenant required")),
                _ => Err(sockloop::Rejection::new(401, "who are you")),
            }
        })
        .build();
    let ws =
        hub.server_config(WsServerConfig::new().authenticator(|req: &Request| {
            Ok(req.query_param("user").map(sockloop::Identity::user))
        }));
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(ws, hub.factory())
        .unwrap();
    hub.attach(&s);
    let url = |q: &str| format!("ws://{}/?{q}", s.local_addr());
    let refused = |r: sockloop::Result<WsClient>| match r {
        Err(sockloop::Error::WebSocket(sockloop::ws::WsError::Refused { status, reason })) => {
            (status, reason)
        }
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got a connection"),
    };
    let no_tenant = WsClient::connect(&url("user=ann"), WsClientOptions::default());
    assert_eq!(
        refused(no_tenant),
        (403, "403 Forbidden: tenant required".into())
    );
    let nobody = WsClient::connect(&url("x=1"), WsClientOptions::default());
    assert_eq!(refused(nobody).0, 401);
    let ok = WsClient::connect(
        &url("user=ann"),
        WsClientOptions::default().header("X-Tenant", "t1"),
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
}

struct Joiner;

impl WsHandler for Joiner {
    fn on_open(&mut self, ws: &WsConn, _: &Request) {
        ws.join_group(GroupId(7));
    }
    fn on_text(&mut self, ws: &WsConn, _: &str) {
        let _ = ws.send_text("joined");
    }
}

/// Under drop-oldest, a broadcast that pushes older messages out of a slow member's queue
/// says so in its `Delivery`, and the server counts the same evictions.
#[test]
fn drop_oldest_evictions_are_reported_in_delivery_and_stats() {
    let rt = rt(1);
    let cfg = ServerConfig::new()
        .dispatch(Dispatch::Inline)
        .max_queued_bytes(256 << 10)
        .drop_policy(sockloop::DropPolicy::DropOldest);
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(cfg)
        .websocket(WsServerConfig::new(), |_: &WsConn, _: &Request| Joiner)
        .unwrap();
    let url = format!("ws://{}/", s.local_addr());
    let mut c = WsClient::connect(&url, WsClientOptions::default()).unwrap();
    c.send_text("join").unwrap();
    assert!(matches!(c.recv_timeout(WAIT).unwrap(), Some(Message::Text(t)) if t == "joined"));
    // The client reads no more: 16 MiB of broadcasts against a 256 KiB bound (the kernel's
    // socket buffers take a few MiB; the rest must evict).
    let b = s.broadcaster();
    // Bytes that do not compress (the client negotiates permessage-deflate).
    let mut x = 0x9e37_79b9_u32;
    let noise: Vec<u8> = (0..64 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let frames = b.frames_binary(&noise);
    let mut total = sockloop::Delivery::default();
    for _ in 0..256 {
        let d = b.send(GroupId(7), &frames, &[]);
        assert_eq!((d.queued, d.dropped, d.pending), (1, 0, 0));
        total.evicted += d.evicted;
    }
    assert!(
        total.evicted > 100,
        "evicted {} {:?}",
        total.evicted,
        s.stats()
    );
    let st = s.stats();
    assert_eq!(st.evicted, total.evicted as u64);
    assert_eq!(st.dropped, st.evicted);
    assert!(
        st.queued_bytes <= (256 << 10) + (64 << 10) + 16,
        "{}",
        st.queued_bytes
    );
    drop(c);
}
