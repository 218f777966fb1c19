//! Sessions: resume across cuts, takeover, the window, exactly-once requests — through the
//! `HubClient` (behind the chaos proxy, to cut and block connections on cue) and raw
//! WebSocket clients speaking the wire protocol.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sockloop::client::hub::{
    Backoff, ConnectionEvent, HubClient, HubClientError, HubClientOptions, HubEvent, OfflinePolicy,
};
use sockloop::client::ws::Message;
use sockloop::hub::{
    AckOptions, AckStatus, Ctx, DetachedPresence, Hub, HubBuilder, Presence, SessionConfig,
};
use sockloop::ws::CloseCode;
use sockloop::{ConnId, Server};

use super::{base, dial, next_event, recv_json, rt, send, serve};
use crate::chaos::{wait_for, Proxy};
use crate::util::WAIT;

fn sessions(window: Duration) -> HubBuilder {
    base().sessions(SessionConfig::new().window(window))
}

fn opts() -> HubClientOptions {
    let b = Backoff::new(Duration::from_millis(5), Duration::from_millis(50));
    HubClientOptions::default().backoff(b)
}

fn addr(s: &Server) -> std::net::SocketAddr {
    match s.local_addr() {
        sockloop::Addr::Inet(a) => *a,
        other => panic!("{other}"),
    }
}

/// A client through a fresh proxy, as `user`.
fn client_via(s: &Server, user: &str) -> (Arc<Proxy>, HubClient) {
    let proxy = Arc::new(Proxy::start(addr(s), 7, None));
    let url = format!("{}?user={user}", proxy.url());
    let c = HubClient::connect(&url, opts()).unwrap();
    (proxy, c)
}

fn whoami(c: &HubClient) -> ConnId {
    ConnId(
        c.emit_with_ack("whoami", &Value::Null, WAIT)
            .unwrap()
            .as_u64()
            .unwrap(),
    )
}

/// Events until `f` says stop (returns them all); fails after `WAIT`.
fn events_until(c: &HubClient, mut f: impl FnMut(&HubEvent) -> bool) -> Vec<HubEvent> {
    let deadline = std::time::Instant::now() + WAIT;
    let mut out = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Some(ev) = c.recv(Duration::from_millis(20)) {
            let stop = f(&ev);
            out.push(ev);
            if stop {
                return out;
            }
        }
    }
    panic!("events so far: {out:?}");
}

#[test]
fn the_client_resumes_across_a_server_side_cut() {
    let rt = rt();
    let (opened, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (o, d) = (opened.clone(), closed.clone());
    let hub = sessions(Duration::from_secs(30))
        .on_connect(move |_, _| {
            o.fetch_add(1, Ordering::SeqCst);
        })
        .on_disconnect(move |_, _, _, _| {
            d.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let s = serve(&rt, &hub);
    let (proxy, c) = client_via(&s, "ann");
    let id = whoami(&c);
    c.emit_with_ack("join", &"r", WAIT).unwrap();
    // The server cuts the connection; the client cannot come back until allowed.
    proxy.refuse(true);
    hub.conn(id).unwrap().close(CloseCode::AWAY, "restart");
    wait_for(
        || (hub.presence("ann") == Presence::Reconnecting { connections: 1 }).then_some(()),
        "the session to wait for its client",
    );
    // Sent while nobody is connected: kept for the resume, and an ack awaited across it.
    for i in 0..5 {
        assert_eq!(hub.to_room("r").emit("news", &i).queued, 1);
    }
    let order = hub
        .to_conn(id)
        .emit_with_ack_nowait("order", &7, AckOptions::new(WAIT, 0))
        .unwrap();
    assert_eq!(hub.stats().connections, 1);
    proxy.refuse(false);
    let mut news = Vec::new();
    let evs = events_until(&c, |ev| match ev {
        HubEvent::Message(m) if m.event == "news" => {
            news.push(m.data.as_u64().unwrap());
            false
        }
        HubEvent::Message(m) if m.event == "order" => {
            c.ack(m.id.unwrap(), &json!({"seen": true})).unwrap();
            true
        }
        _ => false,
    });
    assert_eq!(news, vec![0, 1, 2, 3, 4]);
    let resumed = evs.iter().find_map(|e| match e {
        HubEvent::State(ConnectionEvent::Resumed { replayed, .. }) => Some(*replayed),
        _ => None,
    });
    assert!(resumed.is_some_and(|n| n >= 6), "{evs:?}");
    assert!(evs
        .iter()
        .any(|e| matches!(e, HubEvent::State(ConnectionEvent::Disconnected { .. }))));
    let report = order.wait(WAIT).unwrap();
    assert_eq!(report.status(id), Some(AckStatus::Acked));
    assert_eq!(report.data(id), Some(&json!({"seen": true})));
    // Same hub id, same rooms, same identity; connected once, never disconnected.
    assert_eq!(whoami(&c), id);
    assert_eq!(hub.members("r"), vec![id]);
    assert_eq!(hub.conn_info(id).unwrap().user.as_deref(), Some("ann"));
    assert_eq!(hub.presence("ann"), Presence::Online { connections: 1 });
    assert_eq!(
        (opened.load(Ordering::SeqCst), closed.load(Ordering::SeqCst)),
        (1, 0)
    );
    assert_eq!(hub.stats().resumed, 1);
}

#[test]
fn past_its_window_a_session_is_not_recovered() {
    let rt = rt();
    let closed = Arc::new(AtomicU64::new(0));
    let d = closed.clone();
    let hub = sessions(Duration::from_millis(200))
        .on_disconnect(move |_, _, _, _| {
            d.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let s = serve(&rt, &hub);
    let (proxy, c) = client_via(&s, "bob");
    let id = whoami(&c);
    c.emit_with_ack("join", &"r", WAIT).unwrap();
    proxy.refuse(true);
    proxy.cut_all();
    // The window ends: the session leaves the hub (rooms, presence, on_disconnect once).
    wait_for(
        || (hub.stats().sessions == 0).then_some(()),
        "the session to expire",
    );
    wait_for(
        || (closed.load(Ordering::SeqCst) == 1).then_some(()),
        "on_disconnect",
    );
    assert!(matches!(hub.presence("bob"), Presence::Offline { .. }));
    assert!(hub.members("r").is_empty());
    proxy.refuse(false);
    let evs = events_until(&c, |e| {
        matches!(e, HubEvent::State(ConnectionEvent::NotRecovered { .. }))
    });
    let Some(HubEvent::State(ConnectionEvent::NotRecovered { reason, .. })) = evs.last() else {
        unreachable!()
    };
    assert_eq!(reason, "expired");
    // A new session, a new hub id.
    assert_ne!(whoami(&c), id);
    assert_eq!(hub.stats().not_recovered, 1);
    assert_eq!(closed.load(Ordering::SeqCst), 1);
}

/// A hub whose `charge` runs `cut` after counting and before answering.
fn charging(runs: Arc<AtomicU64>, cut: impl Fn() + Send + Sync + 'static) -> Hub {
    sessions(Duration::from_secs(30))
        .on("charge", move |ctx: &mut Ctx| {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            cut();
            ctx.ack(&n)
        })
        .build()
}

#[test]
fn a_request_whose_reply_is_cut_runs_once_and_the_reply_is_replayed() {
    let rt = rt();
    let runs = Arc::new(AtomicU64::new(0));
    let slot: Arc<std::sync::OnceLock<Arc<Proxy>>> = Arc::default();
    let p = slot.clone();
    let hub = charging(runs.clone(), move || p.get().unwrap().cut_all());
    let s = serve(&rt, &hub);
    let (proxy, c) = client_via(&s, "cy");
    let _ = slot.set(proxy.clone());
    let answer = c.emit_with_ack("charge", &"order-1", WAIT).unwrap();
    assert_eq!(answer, json!(1));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(proxy.cuts() >= 1);
    let evs = events_until(&c, |e| {
        matches!(e, HubEvent::State(ConnectionEvent::Resumed { .. }))
    });
    assert!(!evs
        .iter()
        .any(|e| matches!(e, HubEvent::State(ConnectionEvent::NotRecovered { .. }))));
}

#[test]
fn a_request_lost_on_its_way_is_sent_again_and_runs_once() {
    let rt = rt();
    let runs = Arc::new(AtomicU64::new(0));
    let hub = charging(runs.clone(), || {});
    let s = serve(&rt, &hub);
    let (proxy, c) = client_via(&s, "dee");
    whoami(&c);
    let c = Arc::new(c);
    proxy.blackhole(true);
    let big = "x".repeat(2000);
    let asking = {
        let c = c.clone();
        std::thread::spawn(move || c.emit_with_ack("charge", &big, WAIT))
    };
    // The request is written into the void, then the connection is cut.
    wait_for(
        || (proxy.swallowed() >= 2000).then_some(()),
        "the request to be swallowed",
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    proxy.blackhole(false);
    proxy.cut_all();
    assert_eq!(asking.join().unwrap().unwrap(), json!(1));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let evs = events_until(&c, |e| {
        matches!(e, HubEvent::State(ConnectionEvent::Resumed { .. }))
    });
    let resent = evs.iter().find_map(|e| match e {
        HubEvent::State(ConnectionEvent::Resumed { resent, .. }) => Some(*resent),
        _ => None,
    });
    assert!(resent.is_some_and(|n| n >= 1), "{evs:?}");
}

/// The wire, step by step: welcome, numbered data, a resume while the first connection is
/// still open (it is taken over and closed), the replay, and resumes that cannot continue.
#[test]
fn the_wire_protocol_with_a_takeover() {
    let rt = rt();
    let hub = sessions(Duration::from_secs(30)).build();
    let s = serve(&rt, &hub);
    let mut c1 = dial(&s, "sl_session=1");
    let w = next_event(&mut c1, "session:welcome")["data"].clone();
    assert_eq!((w["seq"].as_u64(), w["cseq"].as_u64()), (Some(0), Some(0)));
    assert_eq!(w["recovered"], false);
    let (sid, token) = (w["sid"].as_str().unwrap(), w["token"].as_str().unwrap());
    send(&mut c1, &json!({"event": "whoami", "id": 1}));
    let ack = recv_json(&mut c1); // data message 1
    let id = ConnId(ack["data"].as_u64().unwrap());
    hub.to_conn(id).emit("x", &1); // 2: received
    assert_eq!(recv_json(&mut c1)["data"], 1);
    hub.to_conn(id).emit("x", &2); // 3: not yet read
                                   // Resume from 2 while c1 is still open.
    let mut c2 = dial(&s, &format!("sl_sid={sid}&sl_token={token}&sl_seq=2"));
    let r = recv_json(&mut c2);
    assert_eq!(r["event"], "session:resumed", "{r}");
    let d = &r["data"];
    assert_eq!(
        (
            d["seq"].as_u64(),
            d["cseq"].as_u64(),
            d["replayed"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(d["recovered"], true);
    assert_eq!(recv_json(&mut c2)["data"], 2);
    // The old connection is closed by the takeover.
    loop {
        match c1.recv_timeout(WAIT) {
            Ok(Some(Message::Close(code, reason))) => {
                assert_eq!(code, CloseCode::NORMAL);
                assert!(reason.contains("resumed"), "{reason}");
                break;
            }
            Ok(Some(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
    send(&mut c2, &json!({"event": "whoami", "id": 2}));
    assert_eq!(recv_json(&mut c2)["data"], id.0, "the same hub id");
    // The cumulative ack and the server's answer with its own count.
    send(&mut c2, &json!({"event": "session:ack", "data": 4}));
    let a = next_event(&mut c2, "session:ack");
    assert_eq!(a["data"], 2, "the server received two data messages");
    wait_for(
        || (hub.stats().replay_bytes == 0).then_some(()),
        "the buffer to be acked",
    );
    // A wrong token, or a count the server never sent: a new session, flagged.
    for (q, why) in [
        (format!("sl_sid={sid}&sl_token=bad&sl_seq=4"), "unknown"),
        (format!("sl_sid={sid}&sl_token={token}&sl_seq=99"), "ahead"),
    ] {
        let mut c = dial(&s, &q);
        let w = next_event(&mut c, "session:welcome")["data"].clone();
        assert_eq!(
            (w["recovered"].as_bool(), w["reason"].as_str()),
            (Some(false), Some(why))
        );
        assert_ne!(w["sid"].as_str(), Some(sid));
    }
    // The session itself is untouched by the refused resumes.
    hub.to_conn(id).emit("x", &3);
    assert_eq!(next_event(&mut c2, "x")["data"], 3);
}

#[test]
fn an_overflowing_replay_buffer_makes_the_resume_not_recoverable() {
    let rt = rt();
    let cfg = SessionConfig::new().max_replay_bytes(1000);
    let hub = base().sessions(cfg).build();
    let s = serve(&rt, &hub);
    let (proxy, c) = client_via(&s, "eve");
    let id = whoami(&c);
    proxy.refuse(true);
    proxy.cut_all();
    wait_for(
        || (hub.presence("eve") == Presence::Reconnecting { connections: 1 }).then_some(()),
        "the detach",
    );
    for i in 0..100 {
        hub.to_conn(id).emit("fill", &format!("{i:040}"));
    }
    assert!(hub.stats().replay_evicted > 0);
    assert!(hub.stats().replay_bytes <= 1000 + 100);
    proxy.refuse(false);
    let evs = events_until(&c, |e| {
        matches!(e, HubEvent::State(ConnectionEvent::NotRecovered { .. }))
    });
    assert!(
        matches!(evs.last(), Some(HubEvent::State(ConnectionEvent::NotRecovered { reason, .. })) if reason == "gap"),
        "{evs:?}"
    );
    assert!(
        !evs.iter().any(|e| matches!(e, HubEvent::Message(_))),
        "never a partial replay"
    );
}

#[test]
fn sessions_are_opt_in_on_both_sides() {
    let rt = rt();
    let hub = base().build();
    let s = serve(&rt, &hub);
    let url = format!("ws://{}/", s.local_addr());
    match HubClient::connect(&url, opts()) {
        Err(HubClientError::SessionRefused(why)) => assert_eq!(why, "disabled"),
        other => panic!("{other:?}"),
    }
    let c = HubClient::connect(&url, opts().sessions(false)).unwrap();
    assert_eq!(c.session_id(), None);
    assert!(c
        .emit_with_ack("whoami", &Value::Null, WAIT)
        .unwrap()
        .is_u64());
    assert_eq!(hub.stats().sessions, 0);
}

/// `bob` (a plain connection) and `ann` (a session) in room `r`; ann's connection is cut and
/// held off. Returns what bob heard by the time ann is back, and ann's presence meanwhile.
fn presence_across_a_cut(mode: DetachedPresence) -> (Vec<Value>, Presence) {
    let rt = rt();
    let cfg = SessionConfig::new().presence(mode);
    let hub = base().sessions(cfg).build();
    let s = serve(&rt, &hub);
    let (mut bob, _) = super::connect(&s, "user=bob");
    super::request(&mut bob, &json!({"event": "join", "data": "r", "id": 1}));
    let (proxy, ann) = client_via(&s, "ann");
    ann.emit_with_ack("join", &"r", WAIT).unwrap();
    super::next_event(&mut bob, "room:joined");
    super::drain(&mut bob); // ann's join announcements
    proxy.refuse(true);
    proxy.cut_all();
    let away = wait_for(
        || match hub.presence("ann") {
            p @ (Presence::Reconnecting { .. } | Presence::Offline { .. }) => Some(p),
            _ => None,
        },
        "ann to be away",
    );
    proxy.refuse(false);
    events_until(&ann, |e| {
        matches!(e, HubEvent::State(ConnectionEvent::Resumed { .. }))
    });
    wait_for(
        || matches!(hub.presence("ann"), Presence::Online { .. }).then_some(()),
        "ann to be back",
    );
    let mut heard: Vec<Value> = super::drain(&mut bob)
        .into_iter()
        .filter(|v| v["event"] == "presence")
        .collect();
    // Offline mode announces the return; on a loaded machine it may still be on its way.
    let back = |h: &[Value]| h.iter().any(|v| v["data"]["online"] == json!(true));
    if matches!(mode, DetachedPresence::Offline) && !back(&heard) {
        heard.push(super::next_event(&mut bob, "presence"));
    }
    (heard, away)
}

#[test]
fn presence_sees_a_reconnecting_session_not_an_offline_user() {
    let (heard, away) = presence_across_a_cut(DetachedPresence::Reconnecting);
    assert_eq!(away, Presence::Reconnecting { connections: 1 });
    assert!(heard.is_empty(), "{heard:?}");
    let (heard, away) = presence_across_a_cut(DetachedPresence::Offline);
    assert!(matches!(away, Presence::Offline { .. }), "{away:?}");
    let online: Vec<&Value> = heard.iter().map(|v| &v["data"]["online"]).collect();
    assert_eq!(online, vec![&json!(false), &json!(true)], "{heard:?}");
}

#[test]
fn the_offline_buffer_is_bounded_by_its_policy() {
    let rt = rt();
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    let hub = sessions(Duration::from_secs(30))
        .on("rec", move |ctx: &mut Ctx| {
            g.lock().unwrap().push(ctx.data::<u64>()?);
            ctx.ack(&true)
        })
        .build();
    let s = serve(&rt, &hub);
    let proxy = Proxy::start(addr(&s), 3, None);
    let offline = |c: &HubClient| {
        proxy.refuse(true);
        proxy.cut_all();
        wait_for(
            || (!c.is_connected()).then_some(()),
            "the client to notice the cut",
        );
    };
    // Error: the emit past the limit is refused, the buffer keeps what it had.
    let strict = opts().offline_buffer(2, OfflinePolicy::Error);
    let c = HubClient::connect(&proxy.url(), strict).unwrap();
    offline(&c);
    c.emit("rec", &1).unwrap();
    c.emit("rec", &2).unwrap();
    assert!(matches!(c.emit("rec", &3), Err(HubClientError::Full)));
    assert_eq!(c.pending(), 2);
    proxy.refuse(false);
    wait_for(
        || (got.lock().unwrap().len() == 2).then_some(()),
        "the buffered emits",
    );
    assert_eq!(*got.lock().unwrap(), vec![1, 2]);
    c.close();
    // DropOldest: the oldest unsent message goes, and its emit_with_ack says so.
    got.lock().unwrap().clear();
    let lenient = opts().offline_buffer(2, OfflinePolicy::DropOldest);
    let c = Arc::new(HubClient::connect(&proxy.url(), lenient).unwrap());
    offline(&c);
    let first = {
        let c = c.clone();
        std::thread::spawn(move || c.emit_with_ack("rec", &10, WAIT))
    };
    wait_for(
        || (c.pending() == 1).then_some(()),
        "the first emit to be queued",
    );
    c.emit("rec", &11).unwrap();
    c.emit("rec", &12).unwrap();
    assert!(matches!(
        first.join().unwrap(),
        Err(HubClientError::Dropped)
    ));
    proxy.refuse(false);
    wait_for(
        || (got.lock().unwrap().len() == 2).then_some(()),
        "the kept emits",
    );
    assert_eq!(*got.lock().unwrap(), vec![11, 12]);
}

/// A flood to a session member that does not read: its queue fills, and the room's fan-out
/// must not drop a numbered message silently (the poller would): the member is sent to alone
/// once its queue is short of room, a refusal closes it (4013), and its resume replays
/// everything it missed — the count never has a hole.
#[test]
fn a_flooded_session_member_loses_nothing() {
    let rt = rt();
    let cfg = SessionConfig::new()
        .max_replay_bytes(64 << 20)
        .max_total_bytes(128 << 20);
    let hub = base().sessions(cfg).build();
    let s = rt
        .serve(sockloop::Listen::tcp("127.0.0.1:0"))
        .config(sockloop::ServerConfig::new().max_queued_bytes(256 << 10))
        .websocket(
            hub.server_config(sockloop::WsServerConfig::new()),
            hub.factory(),
        )
        .unwrap();
    hub.attach(&s);
    let mut c = dial(&s, "sl_session=1");
    let w = next_event(&mut c, "session:welcome")["data"].clone();
    let (sid, token) = (
        w["sid"].as_str().unwrap().to_owned(),
        w["token"].as_str().unwrap().to_owned(),
    );
    send(&mut c, &json!({"event": "join", "data": "r", "id": 1}));
    let mut count = 0u64; // data messages received (room:joined, then the ack)
    loop {
        count += 1;
        if recv_json(&mut c)["ref"] == 1 {
            break;
        }
    }
    let pad = "x".repeat(2000);
    const N: u64 = 8000; // 16 MB: more than the kernel's socket buffers hold
    for i in 0..N {
        hub.to_room("r")
            .emit_nowait("f", &json!({"n": i, "pad": pad}))
            .unwrap();
    }
    let (mut next, mut resumes) = (0u64, 0);
    while next < N {
        match c.recv_timeout(WAIT).unwrap() {
            Some(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["event"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("session:"))
                {
                    continue;
                }
                count += 1;
                assert_eq!(v["data"]["n"], next, "a hole in the numbered stream");
                next += 1;
            }
            Some(Message::Close(code, reason)) => {
                assert_eq!(code.as_u16(), 4013, "{reason}");
                resumes += 1;
                c = dial(&s, &format!("sl_sid={sid}&sl_token={token}&sl_seq={count}"));
                assert_eq!(recv_json(&mut c)["event"], "session:resumed");
            }
            Some(_) => {}
            None => panic!("stalled at {next}"),
        }
    }
    assert!(
        resumes >= 1,
        "the queue never filled: the test did not test"
    );
    assert_eq!(next, N);
}

/// Replay buffers count in the runtime's memory budget while they hold messages, and give
/// it all back when the session ends.
#[test]
fn replay_buffers_count_in_the_runtime_budget() {
    let rt = rt();
    let hub = sessions(Duration::from_millis(200)).build();
    let s = serve(&rt, &hub);
    let (proxy, c) = client_via(&s, "carol");
    let _ = whoami(&c);
    c.emit_with_ack("join", &"r", WAIT).unwrap();
    // Cut and keep the client away: the room's messages wait in the session's buffer.
    proxy.refuse(true);
    proxy.cut_all();
    for i in 0..200 {
        hub.to_room("r").emit_nowait("n", &i).unwrap();
    }
    let held = hub.stats().replay_bytes;
    assert!(held > 200 * 8, "replay holds {held} bytes");
    assert!(
        rt.budget().used >= held,
        "budget {:?}, replay {held}",
        rt.budget()
    );
    // The window ends: the session and its buffer go, and so does their count, to zero.
    // (This found a leak: bytes written by the flush that then hit the cut's reset were
    // never uncounted from the queue and the budget.)
    wait_for(
        || (hub.stats().sessions == 0).then_some(()),
        "the session to expire",
    );
    drop(c);
    let deadline = std::time::Instant::now() + WAIT;
    while rt.budget().used != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "budget {:?}, {:?}, {:?}",
            rt.budget(),
            hub.stats(),
            s.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(hub.stats().replay_bytes, 0);
}
