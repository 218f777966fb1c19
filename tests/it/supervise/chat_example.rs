//! `examples/supervised_chat.rs`: `/crash` panics the chat-processor; its supervisor
//! restarts it while every user stays connected, and later messages flow.

use serde_json::{json, Value};
use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::Runtime;

use super::*;

#[allow(dead_code)]
#[path = "../../../examples/supervised_chat.rs"]
mod example;

fn dial(addr: &sockloop::Addr, nick: &str) -> WsClient {
    let url = format!("ws://{addr}/ws?nick={nick}");
    WsClient::connect(&url, WsClientOptions::default()).unwrap()
}

/// The next envelope with this event name (others are skipped).
fn next(c: &mut WsClient, event: &str) -> Value {
    loop {
        match c.recv_timeout(WAIT).unwrap() {
            Some(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["event"] == event {
                    return v;
                }
            }
            Some(Message::Close(code, reason)) => panic!("closed: {code:?} {reason}"),
            Some(_) => {}
            None => panic!("no {event} event"),
        }
    }
}

fn say(c: &mut WsClient, text: &str) {
    let env = json!({"event": "say", "data": {"text": text}});
    c.send_text(&env.to_string()).unwrap();
}

#[test]
fn crash_restarts_the_processor_while_users_stay_connected() {
    quiet_test_panics();
    let rt = Runtime::builder()
        .pollers(1)
        .handler_threads(2)
        .build()
        .unwrap();
    let app = example::start(&rt, "127.0.0.1:0").unwrap();
    let addr = app.server.local_addr().clone();
    let mut ann = dial(&addr, "ann");
    let mut bob = dial(&addr, "bob");
    assert_eq!(next(&mut ann, "joined")["data"]["room"], "lobby");
    assert_eq!(next(&mut bob, "joined")["data"]["room"], "lobby");

    say(&mut ann, "hello");
    assert_eq!(next(&mut bob, "message")["data"]["text"], "hello");
    assert_eq!(next(&mut ann, "message")["data"]["text"], "hello");
    let before = rt.node().whereis(example::CHAT_PROCESSOR).unwrap();

    // A crash, and a message right behind it: it waits for the new instance.
    say(&mut bob, &format!("/crash {PANIC_MARK}"));
    say(&mut bob, "still here");
    // The restart notice (from the hook) and the line (from the new instance) race.
    let (mut notice, mut line) = (None, None);
    while notice.is_none() || line.is_none() {
        let Some(Message::Text(t)) = ann.recv_timeout(WAIT).unwrap() else {
            panic!("ann is still connected and hears both");
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["event"].as_str() {
            Some("system") => notice = Some(v["data"]["text"].to_string()),
            Some("message") => line = Some(v),
            _ => {}
        }
    }
    let notice = notice.unwrap();
    assert!(notice.contains("chat-processor restarted"), "{notice}");
    let m = line.unwrap();
    assert_eq!(m["data"]["from"], "bob");
    assert_eq!(m["data"]["text"], "still here");
    let after = rt.node().whereis(example::CHAT_PROCESSOR).unwrap();
    assert_ne!(before, after, "a new instance");

    // Both still connected; the room-manager (not restarted) kept the history.
    let mut cat = dial(&addr, "cat");
    let joined = next(&mut cat, "joined");
    let history: Vec<&str> = joined["data"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["text"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["hello", "still here"]);
    say(&mut ann, "welcome cat");
    assert_eq!(next(&mut cat, "message")["data"]["text"], "welcome cat");
    // bob sees his own line, then the welcome: in order, nothing lost.
    assert_eq!(next(&mut bob, "message")["data"]["text"], "still here");
    assert_eq!(next(&mut bob, "message")["data"]["text"], "welcome cat");
    app.hub.shutdown(&app.server, Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}

fn runtime() -> Runtime {
    Runtime::builder()
        .pollers(1)
        .handler_threads(2)
        .build()
        .unwrap()
}

#[test]
fn a_hundred_crashes_in_a_row_leave_no_zombie() {
    quiet_test_panics();
    let rt = runtime();
    let app = example::start(&rt, "127.0.0.1:0").unwrap();
    let addr = app.server.local_addr().clone();
    let sup = app.supervisor().unwrap().pid();
    let mut ann = dial(&addr, "ann");
    let mut bob = dial(&addr, "bob");
    assert_eq!(next(&mut ann, "joined")["data"]["room"], "lobby");
    for _ in 0..100 {
        say(&mut bob, &format!("/crash {PANIC_MARK}"));
    }
    say(&mut bob, "still alive");
    // Handled in order: by now every /crash was either run or refused.
    assert_eq!(next(&mut ann, "message")["data"]["text"], "still alive");
    let now = app.supervisor().expect("a running tree").pid();
    assert_eq!(now, sup, "the rate limit kept the tree from escalating");
    app.hub.shutdown(&app.server, Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}

#[test]
fn nicknames_are_validated_and_unique() {
    let rt = runtime();
    let app = example::start(&rt, "127.0.0.1:0").unwrap();
    let addr = app.server.local_addr().clone();
    let bad = WsClient::connect(
        &format!("ws://{addr}/ws?nick=no%20spaces"),
        WsClientOptions::default(),
    );
    assert!(bad.is_err(), "an invalid nickname was accepted");
    let mut a = dial(&addr, "Zed");
    assert_eq!(next(&mut a, "welcome")["data"]["nick"], "Zed");
    let mut b = dial(&addr, "zed");
    assert_eq!(next(&mut b, "welcome")["data"]["nick"], "zed2");
    app.hub.shutdown(&app.server, Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}

#[test]
fn an_escalated_tree_is_restarted_after_a_backoff() {
    quiet_test_panics();
    let rt = runtime();
    let app = example::start(&rt, "127.0.0.1:0").unwrap();
    let addr = app.server.local_addr().clone();
    let first = app.supervisor().unwrap().pid();
    let mut ann = dial(&addr, "ann");
    assert_eq!(next(&mut ann, "joined")["data"]["room"], "lobby");
    let node = rt.node().clone();
    let down = node.monitor(first);
    // Past the rate limit, straight to the processor: more crashes than the intensity.
    let mut crashes = 0;
    while down.try_recv().is_err() && crashes < 100 {
        let line = format!("/crash {PANIC_MARK}");
        let _ = example::deliver_line(&node, sockloop::ConnId(0), "test", &line);
        crashes += 1;
    }
    assert!(crashes < 100, "the tree never escalated");
    // The keeper announces the restart, then a fresh tree serves again.
    loop {
        let v = next(&mut ann, "system");
        if v["data"]["text"] == "the chat is back" {
            break;
        }
    }
    let second = app.supervisor().expect("a fresh tree").pid();
    assert_ne!(first, second);
    let mut cat = dial(&addr, "cat");
    assert_eq!(next(&mut cat, "joined")["data"]["room"], "lobby");
    say(&mut ann, "back again");
    assert_eq!(next(&mut cat, "message")["data"]["text"], "back again");
    app.hub.shutdown(&app.server, Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}
