//! Sessions across nodes: a client resumes on another node — its node alive (the session
//! is released there) or dead — and gets every message after its count, once, in order.

use std::time::Duration;

use serde_json::{json, Value};
use sockloop::client::ws::{Message, WsClient};
use sockloop::hub::cluster::{Bus, LocalBus};
use sockloop::hub::SessionConfig;
use sockloop::ws::CloseCode;

use super::{ask, cfg, eventually, member, node_with, wait_members, Node};
use crate::hub::{dial, recv_json, send};
use crate::util::WAIT;

/// A raw session client: counts the data messages it reads (control ones are not).
pub struct SessionClient {
    pub c: WsClient,
    pub sid: String,
    pub token: String,
    pub seq: u64,
}

impl SessionClient {
    pub fn open(n: &Node, user: &str) -> SessionClient {
        Self::from_welcome(dial(&n.server, &format!("user={user}&sl_session=1")))
    }

    /// A client that asked for a session: reads its welcome.
    pub fn from_welcome(mut c: WsClient) -> SessionClient {
        let w = recv_json(&mut c);
        assert_eq!(w["event"], "session:welcome", "{w}");
        let d = &w["data"];
        SessionClient {
            c,
            sid: d["sid"].as_str().unwrap().to_owned(),
            token: d["token"].as_str().unwrap().to_owned(),
            seq: d["seq"].as_u64().unwrap(),
        }
    }

    /// Resumes on `n` from the count read so far; returns the `session:resumed` data.
    pub fn resume(&mut self, n: &Node, user: &str) -> Value {
        let q = format!(
            "user={user}&sl_sid={}&sl_token={}&sl_seq={}",
            self.sid, self.token, self.seq
        );
        self.c = dial(&n.server, &q);
        let r = recv_json(&mut self.c);
        assert_eq!(r["event"], "session:resumed", "{r}");
        r["data"].clone()
    }

    /// The next data message (counted).
    pub fn next(&mut self) -> Value {
        loop {
            let v = recv_json(&mut self.c);
            if v["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("session:"))
            {
                continue;
            }
            self.seq += 1;
            return v;
        }
    }

    /// The next data message within `t`, if any (counted).
    pub fn try_next(&mut self, t: Duration) -> Option<Value> {
        let until = std::time::Instant::now() + t;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.c.recv_timeout(left).unwrap() {
                Some(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["event"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("session:"))
                    {
                        continue;
                    }
                    self.seq += 1;
                    return Some(v);
                }
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// The next data message with this event (every one counted).
    pub fn next_event(&mut self, event: &str) -> Value {
        loop {
            let v = self.next();
            if v["event"] == event {
                return v;
            }
        }
    }

    pub fn request(&mut self, id: u64, event: &str, data: Value) -> Value {
        send(
            &mut self.c,
            &json!({"event": event, "id": id, "data": data}),
        );
        loop {
            let v = self.next();
            if v["ref"] == id {
                return v;
            }
        }
    }
}

fn said(v: &Value) -> u64 {
    v["data"]["text"].as_u64().unwrap()
}

/// ann (a session on a) reads some of bob's lines, a goes away (`kill_a`: released or
/// dead), bob goes on; ann resumes on b and reads every line after her count, once, in
/// order.
pub fn resume_on_the_other_node(a: &Node, b: &Node, kill_a: impl FnOnce()) {
    let mut bob = member(b, "bob", "r");
    let mut ann = SessionClient::open(a, "ann");
    assert_eq!(ann.request(1, "join", json!("r"))["data"]["ok"], true);
    wait_members(b, "r", 2);
    for i in 1..=5u64 {
        ask(&mut bob, 10 + i, "say", json!({"room": "r", "text": i}));
    }
    for i in 1..=3u64 {
        assert_eq!(said(&ann.next_event("said")), i);
    }
    kill_a();
    for i in 6..=10u64 {
        ask(&mut bob, 10 + i, "say", json!({"room": "r", "text": i}));
    }
    let r = ann.resume(b, "ann");
    assert_eq!(r["recovered"], true, "{r}");
    let mut got = Vec::new();
    while got.len() < 7 {
        let v = ann.next();
        if v["event"] == "said" {
            got.push(said(&v));
        }
    }
    assert_eq!(
        got,
        (4..=10).collect::<Vec<u64>>(),
        "every line after the count, once"
    );
    ask(&mut bob, 30, "say", json!({"room": "r", "text": 11}));
    assert_eq!(said(&ann.next_event("said")), 11);
    // ann's lines reach bob from b now, and she is a member once.
    assert_eq!(
        ann.request(31, "say", json!({"room": "r", "text": 12}))["data"]["unpublished"],
        0
    );
    eventually("two members", || b.hub.room_count("r") == 2);
}

fn sessions() -> Option<SessionConfig> {
    Some(SessionConfig::new().window(Duration::from_secs(30)))
}

#[test]
fn local_resume_on_a_live_node_releases_the_session() {
    let bus = LocalBus::new();
    let a = node_with(bus.handle(), cfg("a", "s1"), sessions());
    let b = node_with(bus.handle(), cfg("b", "s1"), sessions());
    resume_on_the_other_node(&a, &b, || {});
    assert_eq!(a.hub.stats().sessions, 0, "a released it");
    assert_eq!(b.hub.stats().sessions, 1);
    assert!(b.hub.stats().resumed >= 1);
}

/// A session moving between two live nodes is the same member of its rooms: its room's
/// other members hear nothing of the move (no `room:left`, `room:joined`, `room:users` or
/// `presence`), as for a resume on one node.
#[test]
fn local_a_move_between_live_nodes_is_invisible_to_the_room() {
    let bus = LocalBus::new();
    let a = node_with(bus.handle(), cfg("a", "s11"), sessions());
    let b = node_with(bus.handle(), cfg("b", "s11"), sessions());
    let mut bob = member(&b, "bob", "r");
    // Who listens: one member on the node ann leaves, one on the node she moves to.
    let mut carol = member(&a, "carol", "r");
    let mut dave = member(&b, "dave", "r");
    let mut ann = SessionClient::open(&a, "ann");
    assert_eq!(ann.request(1, "join", json!("r"))["data"]["ok"], true);
    wait_members(&b, "r", 4);
    wait_members(&a, "r", 4);
    // What a listener heard up to bob's `text`.
    fn until_said(c: &mut WsClient, text: &str) -> Vec<Value> {
        let mut heard = Vec::new();
        loop {
            let v = recv_json(c);
            if v["event"] == "said" && v["data"]["text"] == text {
                return heard;
            }
            heard.push(v);
        }
    }
    ask(&mut bob, 2, "say", json!({"room": "r", "text": "before"}));
    until_said(&mut carol, "before");
    until_said(&mut dave, "before");
    let r = ann.resume(&b, "ann");
    assert_eq!(r["recovered"], true, "{r}");
    eventually("a released it", || a.hub.stats().sessions == 0);
    ask(&mut bob, 3, "say", json!({"room": "r", "text": "after"}));
    for (who, c) in [("carol", &mut carol), ("dave", &mut dave)] {
        let heard = until_said(c, "after");
        assert!(heard.is_empty(), "{who} heard of the move: {heard:?}");
    }
    assert_eq!(b.hub.room_count("r"), 4, "still four members");
    assert_eq!(ann.next_event("said")["data"]["text"], "before");
    assert_eq!(ann.next_event("said")["data"]["text"], "after");
}

#[test]
fn local_resume_after_the_node_died() {
    let bus = LocalBus::new();
    let ha = bus.handle();
    let a = node_with(ha.clone(), cfg("a", "s2"), sessions());
    let b = node_with(bus.handle(), cfg("b", "s2"), sessions());
    resume_on_the_other_node(&a, &b, || {
        // a is cut off the store at once (as by kill -9) and its sockets close.
        ha.set_cut(true);
        a.server.shutdown(Duration::from_millis(200));
    });
    assert_eq!(b.hub.stats().sessions, 1);
}

/// A node cut off the store (a partition) is taken for dead; its session's client resumes
/// on the other node. When the cut heals, the first node still holds the session (its window
/// is open), hears the room again and numbers for it: the record's generation refuses its
/// writes, and it ends the session there, while the client on the other node keeps getting
/// every message once.
#[test]
fn local_a_node_taken_for_dead_is_fenced_off_the_session() {
    let bus = LocalBus::new();
    let ha = bus.handle();
    let a = node_with(ha.clone(), cfg("a", "s8"), sessions());
    let b = node_with(bus.handle(), cfg("b", "s8"), sessions());
    let mut bob = member(&b, "bob", "r");
    let mut ann = SessionClient::open(&a, "ann");
    assert_eq!(ann.request(1, "join", json!("r"))["data"]["ok"], true);
    wait_members(&b, "r", 2);
    ask(&mut bob, 11, "say", json!({"room": "r", "text": 1}));
    assert_eq!(said(&ann.next_event("said")), 1);
    ha.set_cut(true);
    eventually("b takes a for dead", || {
        !b.hub.cluster_nodes().iter().any(|n| n == "a")
    });
    let r = ann.resume(&b, "ann");
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(a.hub.stats().sessions, 1, "a still holds its copy");
    ha.set_cut(false);
    for i in 2..=6u64 {
        ask(&mut bob, 10 + i, "say", json!({"room": "r", "text": i}));
    }
    let got: Vec<u64> = (2..=6).map(|_| said(&ann.next_event("said"))).collect();
    assert_eq!(got, vec![2, 3, 4, 5, 6]);
    eventually("a ended its copy", || a.hub.stats().sessions == 0);
    // What b numbered is what the log holds: a resume on b again replays nothing twice.
    let r = ann.resume(&b, "ann");
    assert_eq!(r["recovered"], true, "{r}");
    ask(&mut bob, 17, "say", json!({"room": "r", "text": 7}));
    assert_eq!(said(&ann.next_event("said")), 7);
}

/// A node cut off the store is taken for dead and its session's client resumes on the other
/// node, which numbers on. Healed, the first node still has its copy (a count behind) until
/// the first write under the old generation is refused (its catch-up on the feeds, or the
/// client's resume there, which checks the record first); the client's next connection
/// reaches it: the session is continued from the store at the client's count, never from
/// that copy (which would be `Ahead`: not recoverable).
#[test]
fn local_a_stale_copy_is_not_resumed_from() {
    let bus = LocalBus::new();
    let ha = bus.handle();
    let a = node_with(ha.clone(), cfg("a", "s10"), sessions());
    let b = node_with(bus.handle(), cfg("b", "s10"), sessions());
    let mut ann = SessionClient::open(&a, "ann");
    let acked = ann.request(1, "say", json!({"room": "nobody", "text": 1}));
    assert_eq!(acked["data"]["queued"], 0, "{acked}");
    ha.set_cut(true);
    eventually("b takes a for dead", || {
        !b.hub.cluster_nodes().iter().any(|n| n == "a")
    });
    let r = ann.resume(&b, "ann");
    assert_eq!(r["recovered"], true, "{r}");
    // b numbers on: ann's count is past a's copy now.
    let acked = ann.request(2, "say", json!({"room": "nobody", "text": 2}));
    assert_eq!(acked["data"]["queued"], 0, "{acked}");
    ha.set_cut(false);
    eventually("a is back", || {
        b.hub.cluster_nodes().iter().any(|n| n == "a")
    });
    let r = ann.resume(&a, "ann");
    assert_eq!(r["recovered"], true, "{r}");
    // Continued from the store at the client's count (the replay: what the move itself
    // sent the session's rooms, numbered after it), not from a's copy, a count behind
    // (that would be `Ahead`: not recoverable).
    assert_eq!(r["seq"], ann.seq, "{r}");
    let acked = ann.request(3, "say", json!({"room": "nobody", "text": 3}));
    assert_eq!(acked["data"]["queued"], 0, "{acked}");
    one_session(&a, &b);
}

/// A session attached but quiet for longer than its record's expiry (the window plus twice
/// `dead_after` plus 5 s: 7.9 s here) still resumes on another node when its node dies:
/// the node moves its records' expiry on while it holds them.
#[test]
fn local_a_quiet_session_resumes_after_its_node_died() {
    let bus = LocalBus::new();
    let ha = bus.handle();
    let quick = Some(SessionConfig::new().window(Duration::from_millis(500)));
    let a = node_with(ha.clone(), cfg("a", "s9"), quick);
    let b = node_with(bus.handle(), cfg("b", "s9"), quick);
    let mut bob = member(&b, "bob", "r");
    let mut ann = SessionClient::open(&a, "ann");
    assert_eq!(ann.request(1, "join", json!("r"))["data"]["ok"], true);
    wait_members(&b, "r", 2);
    ask(&mut bob, 11, "say", json!({"room": "r", "text": 1}));
    assert_eq!(said(&ann.next_event("said")), 1);
    // Quiet, and attached, past the record's expiry.
    std::thread::sleep(Duration::from_secs(9));
    ha.set_cut(true);
    a.server.shutdown(Duration::from_millis(200));
    ask(&mut bob, 12, "say", json!({"room": "r", "text": 2}));
    let r = ann.resume(&b, "ann");
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(said(&ann.next_event("said")), 2);
}

/// The connection on the node that gives the session up is closed as by a takeover.
#[test]
fn local_the_released_connection_is_closed() {
    let bus = LocalBus::new();
    let a = node_with(bus.handle(), cfg("a", "s3"), sessions());
    let b = node_with(bus.handle(), cfg("b", "s3"), sessions());
    let mut ann = SessionClient::open(&a, "ann");
    ann.request(1, "join", json!("r"));
    let mut moved = SessionClient {
        c: dial(&b.server, ""),
        sid: ann.sid.clone(),
        token: ann.token.clone(),
        seq: ann.seq,
    };
    assert_eq!(moved.resume(&b, "ann")["recovered"], true);
    let mut first = ann.c;
    loop {
        match first.recv_timeout(WAIT) {
            Ok(Some(Message::Close(code, reason))) => {
                assert_eq!(code, CloseCode::NORMAL);
                assert!(reason.contains("another node"), "{reason}");
                break;
            }
            Ok(Some(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
    eventually("a has no session", || a.hub.stats().sessions == 0);
}

/// What a resuming connection hears first: `session:resumed`, or the close that tells it to
/// resume again (4013: busy elsewhere) or that the session went on elsewhere.
/// A resuming connection's first word: a message, or the close that came instead.
type Word = Result<Value, (CloseCode, String)>;

fn first_word(c: &mut WsClient) -> Word {
    loop {
        match c.recv_timeout(WAIT) {
            Ok(Some(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Ok(Some(Message::Close(code, reason))) => return Err((code, reason)),
            Ok(Some(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
}

/// Nodes a and b (b's store handle `slow`, to make it far away) in namespace `ns`, and ann
/// on a with a session, in room `r`.
fn slow_b_and_ann_on_a(ns: &str) -> (LocalBus, LocalBus, Node, Node, SessionClient) {
    let bus = LocalBus::new();
    let slow = bus.handle();
    let a = node_with(bus.handle(), cfg("a", ns), sessions());
    let b = node_with(slow.clone(), cfg("b", ns), sessions());
    let mut ann = SessionClient::open(&a, "ann");
    assert_eq!(ann.request(1, "join", json!("r"))["data"]["ok"], true);
    (bus, slow, a, b, ann)
}

/// The query of a resume of `c`'s session (user `user`) at its count.
fn resume_query(c: &SessionClient, user: &str) -> String {
    format!(
        "user={user}&sl_sid={}&sl_token={}&sl_seq={}",
        c.sid, c.token, c.seq
    )
}

/// Dials `n` with query `q` on a thread of its own: the connection and its first word.
fn first_word_on(n: &Node, q: &str) -> std::thread::JoinHandle<(WsClient, Word)> {
    let url = format!("ws://{}/?{q}", n.server.local_addr());
    std::thread::spawn(move || {
        let o = sockloop::client::ws::WsClientOptions::default().deflate(false);
        let mut c = WsClient::connect(&url, o).unwrap();
        let w = first_word(&mut c);
        (c, w)
    })
}

fn resumed(w: &Word) -> bool {
    w.as_ref().is_ok_and(|v| v["event"] == "session:resumed")
}

/// Waits until exactly one of the two nodes has the session, checks it stays so, and
/// returns the two counts.
fn one_session(a: &Node, b: &Node) -> (usize, usize) {
    eventually("one node has the session", || {
        a.hub.stats().sessions + b.hub.stats().sessions == 1
    });
    std::thread::sleep(Duration::from_millis(200));
    let (na, nb) = (a.hub.stats().sessions, b.hub.stats().sessions);
    assert_eq!(na + nb, 1, "still one: a {na}, b {nb}");
    (na, nb)
}

/// The close that comes within half a second, if any (messages before it are skipped).
fn until_closed(c: &mut WsClient) -> Option<(CloseCode, String)> {
    let until = std::time::Instant::now() + Duration::from_millis(500);
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match c.recv_timeout(left) {
            Ok(Some(Message::Close(code, reason))) => return Some((code, reason)),
            Ok(Some(_)) => continue,
            Ok(None) => return None,
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// A client gives up on a slow resume on b (its store far away) and resumes again on a,
/// after a released the session to b but before b took it over: exactly one node goes on
/// with the session (two would number it apart, and the client would count one node's
/// numbers against the other's replay).
#[test]
fn local_two_resumes_racing_leave_one_session() {
    let (_bus, slow, a, b, ann) = slow_b_and_ann_on_a("s6");
    let q = resume_query(&ann, "ann");
    drop(ann);
    slow.set_latency(Duration::from_millis(30));
    let first = first_word_on(&b, &q);
    eventually("a released the session to b", || {
        a.hub.stats().sessions == 0
    });
    let mut second = dial(&a.server, &q);
    let w2 = first_word(&mut second);
    let (mut first, w1) = first.join().unwrap();
    slow.set_latency(Duration::ZERO);
    assert!(
        resumed(&w1) || resumed(&w2),
        "one resume went on: {w1:?} {w2:?}"
    );
    // The other was told to resume again (4013), or went on and was then released to
    // the winner (its connection closed as by a takeover).
    for w in [&w1, &w2] {
        if let Err((code, reason)) = w {
            assert_eq!(*code, CloseCode::from(4013), "{reason}");
        }
    }
    if resumed(&w1) && resumed(&w2) {
        let (c1, c2) = (until_closed(&mut first), until_closed(&mut second));
        assert!(
            c1.is_some() != c2.is_some(),
            "one of the two is closed: {c1:?} {c2:?}"
        );
    }
    one_session(&a, &b);
}

/// A client resumes on b, whose store is slow; once b has claimed the session's record
/// (and before it has the session registered), the client gives up and resumes on a. a asks
/// b to release it, b has nothing to release yet and says so, and a takes the record over:
/// b's resume, still under way, must give up or be fenced off the log, never go on beside
/// a's.
#[test]
fn local_a_release_during_a_resume_leaves_one_session() {
    let (bus, slow, a, b, ann) = slow_b_and_ann_on_a("s7");
    let mut bob = member(&a, "bob", "r");
    let q = resume_query(&ann, "ann");
    let record = format!("s7:{{s:{}}}:h", ann.sid);
    drop(ann);
    slow.set_latency(Duration::from_millis(60));
    let first = first_word_on(&b, &q);
    let watch = bus.handle();
    eventually("b claimed the record", || {
        watch
            .hgetall(&record)
            .unwrap()
            .iter()
            .any(|(k, v)| k == "node" && v == "b")
    });
    let mut second = dial(&a.server, &q);
    let w2 = first_word(&mut second);
    let (mut first, w1) = first.join().unwrap();
    slow.set_latency(Duration::ZERO);
    assert!(resumed(&w2), "the resume on a went on: {w2:?}");
    // b's: told to resume again, or went on and was then fenced (closed with 4013).
    match &w1 {
        Err((code, reason)) => assert_eq!(*code, CloseCode::from(4013), "{reason}"),
        Ok(_) => {
            // Released by a (1000), or fenced: whatever b numbers now is refused by the
            // record, and b ends the session (4013).
            ask(&mut bob, 2, "say", json!({"room": "r", "text": "after"}));
            let c1 = until_closed(&mut first).map(|c| c.0);
            assert!(
                c1 == Some(CloseCode::NORMAL) || c1 == Some(CloseCode::from(4013)),
                "b's was closed: {c1:?}"
            );
        }
    }
    assert_eq!(one_session(&a, &b), (1, 0), "a has it, b does not");
    eventually("b's member of r left", || b.hub.room_count("r") == 2);
}

#[test]
fn local_behind_an_alternating_proxy_over_websocket() {
    let bus = LocalBus::new();
    let a = node_with(bus.handle(), cfg("a", "s4"), sessions());
    let b = node_with(bus.handle(), cfg("b", "s4"), sessions());
    super::behind_an_alternating_proxy(&a, &b, false);
}

#[test]
fn local_long_polling_needs_no_sticky_balancer() {
    let bus = LocalBus::new();
    let a = node_with(bus.handle(), cfg("a", "s5"), sessions());
    let b = node_with(bus.handle(), cfg("b", "s5"), sessions());
    super::behind_an_alternating_proxy(&a, &b, true);
    let fwd = a.hub.cluster_stats().unwrap().polls_forwarded
        + b.hub.cluster_stats().unwrap().polls_forwarded;
    assert!(fwd > 0, "polling requests were forwarded");
}
