//! Every cross-node hub operation, written once over two nodes; run here over the
//! in-process bus and in `redis.rs` over real Redis.

use std::time::Duration;

use serde_json::json;
use sockloop::hub::cluster::{ClusterConfig, LocalBus};
use sockloop::hub::Presence;
use sockloop::ws::CloseCode;

use super::{ask, cfg, eventually, member, next, node, wait_members, Node};
use crate::hub::{drain, recv_close};

/// Room emits cross nodes (the sender excepted), and so do user, users and everyone emits;
/// room counts and user lists are the cluster's, and `room:users` lists remote users.
pub fn emits_and_queries(a: &Node, b: &Node) {
    let mut ann = member(a, "ann", "lobby");
    let mut bob = member(b, "bob", "lobby");
    wait_members(a, "lobby", 2);
    wait_members(b, "lobby", 2);
    assert_eq!(a.hub.room_users("lobby"), vec!["ann", "bob"]);
    assert_eq!(b.hub.room_users("lobby"), vec!["ann", "bob"]);

    let r = ask(
        &mut ann,
        2,
        "say",
        json!({"room": "lobby", "text": "hi bob"}),
    );
    assert_eq!(r["data"]["unpublished"], 0, "{r}");
    let m = next(&mut bob, "said");
    assert_eq!(m["data"]["text"], "hi bob");
    // The sender was excepted on its own node: nothing came back to it.
    assert!(drain(&mut ann).iter().all(|v| v["event"] != "said"));

    ask(&mut bob, 3, "tell", json!({"user": "ann", "text": "psst"}));
    assert_eq!(next(&mut ann, "told")["data"]["text"], "psst");

    b.hub.to_users(&["ann", "bob"]).emit("both", &1);
    assert_eq!(next(&mut ann, "both")["data"], 1);
    assert_eq!(next(&mut bob, "both")["data"], 1);

    ask(&mut ann, 4, "shout", json!("all"));
    assert_eq!(next(&mut bob, "shouted")["data"], "all");

    // A third member on b: a's view follows, and a's member hears room:users with it.
    let _cy = member(b, "cy", "lobby");
    wait_members(a, "lobby", 3);
    let users = loop {
        let v = next(&mut ann, "room:users");
        if v["data"]["users"].as_array().is_some_and(|u| u.len() == 3) {
            break v;
        }
    };
    assert_eq!(users["data"]["users"], json!(["ann", "bob", "cy"]));

    // Leaving shows on the other node.
    ask(&mut bob, 5, "leave", json!("lobby"));
    wait_members(a, "lobby", 2);
    assert_eq!(a.hub.room_users("lobby"), vec!["ann", "cy"]);
}

/// Presence is the cluster's: a user on b is online for a, offline after leaving, and a
/// user disconnected from a is closed on b too.
pub fn presence_and_disconnect(a: &Node, b: &Node) {
    let mut dan = member(b, "dan", "");
    eventually("dan online on a", || {
        matches!(a.hub.presence("dan"), Presence::Online { connections: 1 })
    });
    let mut eve = member(a, "eve", "");
    // eve is on a, dan comes online a second time on a: still one user, two connections.
    let dan2 = member(a, "dan", "");
    eventually("dan twice", || {
        matches!(b.hub.presence("dan"), Presence::Online { connections: 2 })
    });
    drop(dan2);
    eventually("dan once", || {
        matches!(b.hub.presence("dan"), Presence::Online { connections: 1 })
    });
    // dan's second connection closing did not make him offline for anyone.
    assert!(drain(&mut eve)
        .iter()
        .all(|v| !(v["event"] == "presence" && v["data"]["user"] == "dan")));

    // Disconnecting dan from a closes his connection on b.
    a.hub.disconnect_user("dan", CloseCode::POLICY, "banned");
    let (code, reason) = recv_close(&mut dan);
    assert_eq!((code, reason.as_str()), (CloseCode::POLICY, "banned"));
    let off = next(&mut eve, "presence");
    assert_eq!(
        off["data"],
        json!({"user": "dan", "online": false, "last_seen": off["data"]["last_seen"]})
    );
    eventually("dan offline on a", || {
        matches!(a.hub.presence("dan"), Presence::Offline { .. })
    });
}

fn pair(ns: &str) -> (LocalBus, LocalBus, Node, Node) {
    let bus = LocalBus::new();
    let (ha, hb) = (bus.handle(), bus.handle());
    let a = node(ha.clone(), cfg("a", ns));
    let b = node(hb.clone(), cfg("b", ns));
    (ha, hb, a, b)
}

#[test]
fn local_emits_and_queries() {
    let (_, _, a, b) = pair("t1");
    emits_and_queries(&a, &b);
}

#[test]
fn local_presence_and_disconnect() {
    let (_, _, a, b) = pair("t2");
    presence_and_disconnect(&a, &b);
}

/// While the bus is away local delivery goes on and what could not be published is
/// reported; when it is back, each node rewrites its registry and emits cross again.
#[test]
fn local_outage_reports_unpublished_and_recovers() {
    let bus = LocalBus::new();
    let a = node(bus.handle(), cfg("a", "t3"));
    let b = node(bus.handle(), cfg("b", "t3"));
    let mut ann = member(&a, "ann", "lobby");
    let mut al = member(&a, "al", "lobby");
    let mut bob = member(&b, "bob", "lobby");
    wait_members(&a, "lobby", 3);
    bus.set_down(true);
    let r = ask(
        &mut ann,
        2,
        "say",
        json!({"room": "lobby", "text": "local"}),
    );
    assert_eq!(r["data"], json!({"queued": 1, "unpublished": 1}));
    assert_eq!(next(&mut al, "said")["data"]["text"], "local");
    // bob joins a room while the bus is away: his node rewrites it once the bus is back.
    ask(&mut bob, 3, "join", json!("later"));
    assert!(a.hub.cluster_stats().unwrap().unpublished >= 1);
    bus.set_down(false);
    eventually("b resynced", || b.hub.cluster_stats().unwrap().resyncs >= 1);
    wait_members(&a, "later", 1);
    // a skips publishing for a moment after a failure, until its heartbeat gets through.
    let mut n = 3;
    eventually("a publishes again", || {
        n += 1;
        let r = ask(&mut ann, n, "say", json!({"room": "lobby", "text": "back"}));
        r["data"]["unpublished"] == 0
    });
    assert_eq!(next(&mut bob, "said")["data"]["text"], "back");
}

/// A node that dies (cut off without leaving) is skipped, then reaped: its users are
/// offline everywhere within its `dead_after` plus a heartbeat.
#[test]
fn local_dead_node_is_reaped() {
    let bus = LocalBus::new();
    let hb = bus.handle();
    let a = node(bus.handle(), cfg("a", "t4"));
    let b = node(hb.clone(), cfg("b", "t4"));
    let mut ann = member(&a, "ann", "lobby");
    let _bob = member(&b, "bob", "lobby");
    wait_members(&a, "lobby", 2);
    eventually("b alive for a", || a.hub.cluster_nodes() == vec!["a", "b"]);
    hb.set_cut(true);
    let t0 = std::time::Instant::now();
    let off = loop {
        let v = next(&mut ann, "presence");
        if v["data"]["user"] == "bob" && v["data"]["online"] == false {
            break v;
        }
    };
    assert!(off["data"]["last_seen"].as_u64().is_some(), "{off}");
    // dead_after 1.2 s: offline well within 1.2 s + a quarter, plus scheduling slack.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(a.hub.cluster_nodes(), vec!["a"]);
    assert_eq!(a.hub.room_users("lobby"), vec!["ann"]);
    assert!(matches!(a.hub.presence("bob"), Presence::Offline { .. }));
    assert_eq!(a.hub.cluster_stats().unwrap().reaped, 1);
    drop(b);
}

/// A node leaving gracefully takes its users with it at once.
#[test]
fn local_leave_cluster() {
    let bus = LocalBus::new();
    let a = node(bus.handle(), cfg("a", "t5"));
    let b = node(bus.handle(), ClusterConfig::new("b").namespace("t5"));
    let _bob = member(&b, "bob", "lobby");
    wait_members(&a, "lobby", 1);
    b.server.shutdown(Duration::from_secs(2));
    b.hub.leave_cluster();
    wait_members(&a, "lobby", 0);
    eventually("bob offline", || {
        !matches!(a.hub.presence("bob"), Presence::Online { .. })
    });
}

/// A node taken for dead (cut off for longer than `dead_after`) and reaped registers again
/// when it is back: its members count again everywhere.
#[test]
fn local_a_node_reaped_while_alive_registers_again() {
    let bus = LocalBus::new();
    let hb = bus.handle();
    let a = node(bus.handle(), cfg("a", "t6"));
    let b = node(hb.clone(), cfg("b", "t6"));
    let _ann = member(&a, "ann", "lobby");
    let mut bob = member(&b, "bob", "lobby");
    wait_members(&a, "lobby", 2);
    hb.set_cut(true);
    eventually("b reaped", || a.hub.cluster_stats().unwrap().reaped == 1);
    assert_eq!(a.hub.room_count("lobby"), 1);
    hb.set_cut(false);
    wait_members(&a, "lobby", 2);
    eventually("b alive again", || a.hub.cluster_nodes() == vec!["a", "b"]);
    let mut n = 10;
    let mut ann = member(&a, "al", "lobby");
    eventually("lines reach b again", || {
        n += 1;
        ask(&mut ann, n, "say", json!({"room": "lobby", "text": n}));
        drain(&mut bob).iter().any(|v| v["event"] == "said")
    });
}
