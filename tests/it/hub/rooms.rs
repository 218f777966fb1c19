//! Rooms: a large room's broadcasts, leaving and kicking, policies, capacity, roles, cleanup.

use std::thread;

use serde_json::json;
use sockloop::client::ws::WsClient;
use sockloop::hub::{Cleanup, ErrorCode, Role, RoomEvents, RoomOptions, RoomPolicy};
use sockloop::ConnId;

use super::*;

/// Connects `n` clients (whoami sent to all first, then read).
fn crowd(s: &Server, n: usize) -> Vec<(WsClient, ConnId)> {
    let mut cs: Vec<WsClient> = (0..n).map(|_| dial(s, "")).collect();
    for c in cs.iter_mut() {
        send(c, &json!({"event": "whoami", "id": 0}));
    }
    cs.into_iter()
        .map(|mut c| {
            let id = finish_whoami(&mut c);
            (c, id)
        })
        .collect()
}

#[test]
fn a_room_of_1000_gets_every_broadcast_once_and_in_order() {
    let rt = rt();
    let hub = base().build();
    let s = serve(&rt, &hub);
    let opts = RoomOptions::new().events(RoomEvents::Silent);
    hub.create_room("big", opts).unwrap();
    let clients = crowd(&s, 1000);
    for (_, id) in &clients {
        hub.join(*id, "big").unwrap();
    }
    assert_eq!(hub.room_count("big"), 1000);
    for i in 0..50 {
        let d = hub.to_room("big").emit("n", &i);
        assert_eq!((d.queued, d.dropped, d.closed), (1000, 0, 0));
    }
    let chunks: Vec<Vec<(WsClient, ConnId)>> = {
        let mut it = clients.into_iter();
        (0..4).map(|_| it.by_ref().take(250).collect()).collect()
    };
    let readers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            thread::spawn(move || {
                for (mut c, _) in chunk {
                    let got: Vec<u64> = drain(&mut c)
                        .iter()
                        .map(|v| v["data"].as_u64().unwrap())
                        .collect();
                    assert_eq!(got, (0..50).collect::<Vec<u64>>());
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(hub.stats().messages_out, 50 * 1000 + 1000);
}

#[test]
fn left_and_kicked_members_receive_nothing_more() {
    let rt = rt();
    let hub = base().build();
    let s = serve(&rt, &hub);
    let opts = RoomOptions::new().events(RoomEvents::Silent);
    hub.create_room("r", opts).unwrap();
    let (mut a, ia) = connect(&s, "user=ann");
    let (mut b, ib) = connect(&s, "user=bob");
    let (mut c, ic) = connect(&s, "user=cid");
    for id in [ia, ib, ic] {
        hub.join(id, "r").unwrap();
    }
    assert_eq!(hub.to_room("r").emit("m", "one").queued, 3);
    hub.leave(ia, "r").unwrap();
    assert_eq!(hub.kick("r", "bob").unwrap(), 1);
    assert_eq!(hub.to_room("r").emit("m", "two").queued, 1);
    let events = |c: &mut WsClient| -> Vec<String> {
        drain(c)
            .iter()
            .map(|v| format!("{}:{}", v["event"].as_str().unwrap(), v["data"]))
            .collect()
    };
    assert_eq!(events(&mut a), ["m:\"one\""]);
    assert_eq!(
        events(&mut b),
        ["m:\"one\"", "room:kicked:{\"room\":\"r\"}"]
    );
    assert_eq!(events(&mut c), ["m:\"one\"", "m:\"two\""]);
    // A kicked user's invitation is gone; leaving twice is not_found.
    assert_eq!(hub.leave(ia, "r").unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(hub.members("r"), [ic]);
}

#[test]
fn policies_capacity_roles_and_cleanup() {
    let rt = rt();
    let (gone_tx, gone) = crossbeam_channel::unbounded();
    let hub = base()
        .on_disconnect(move |_, ws, _, _| {
            let _ = gone_tx.send(ws.id());
        })
        .build();
    let s = serve(&rt, &hub);
    let (mut a, ia) = connect(&s, "user=ann");
    let (mut b, ib) = connect(&s, "user=bob");
    let silent = RoomOptions::new().events(RoomEvents::Silent);
    let invite = silent.clone().policy(RoomPolicy::InviteOnly).owner("ann");
    hub.create_room("vip", invite).unwrap();
    assert_eq!(
        hub.create_room("vip", RoomOptions::new()).unwrap_err().code,
        ErrorCode::Forbidden
    );
    let join = |c: &mut WsClient, room: &str, id: u64| {
        request(c, &json!({"event": "join", "data": room, "id": id}))
    };
    assert_eq!(join(&mut a, "vip", 1)["event"], "ack", "the owner may join");
    let v = join(&mut b, "vip", 2);
    assert_eq!(
        (v["event"].as_str(), v["data"]["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    hub.invite("vip", "bob").unwrap();
    assert_eq!(join(&mut b, "vip", 3)["event"], "ack");
    assert_eq!(hub.role("vip", "ann"), Some(Role::Owner));
    assert_eq!(hub.role("vip", "bob"), Some(Role::Member));
    assert!(hub.require_role("vip", "bob", Role::Moderator).is_err());
    hub.set_role("vip", "bob", Role::Moderator).unwrap();
    assert!(hub.require_role("vip", "bob", Role::Moderator).is_ok());

    hub.create_room("one", silent.clone().capacity(1)).unwrap();
    hub.join(ia, "one").unwrap();
    let v = join(&mut b, "one", 4);
    assert_eq!(v["data"]["code"], "room_full");
    assert_eq!(hub.join(ib, "one").unwrap_err().code, ErrorCode::RoomFull);

    hub.create_room("hidden", silent.clone().policy(RoomPolicy::Private))
        .unwrap();
    hub.create_room("kept", silent.clone().cleanup(Cleanup::Keep))
        .unwrap();
    let listed: Vec<String> = hub.rooms().into_iter().map(|r| r.name).collect();
    assert_eq!(listed, ["kept", "one", "vip"]);
    assert!(hub.room_info("hidden").is_some());

    // Auto-created rooms go when empty; kept ones stay.
    assert_eq!(join(&mut a, "lobby", 5)["event"], "ack");
    assert_eq!(join(&mut a, "kept", 6)["event"], "ack");
    assert_eq!(hub.room_users("lobby"), ["ann"]);
    assert_eq!(
        request(&mut a, &json!({"event": "leave", "data": "lobby", "id": 7}))["event"],
        "ack"
    );
    assert_eq!(
        request(&mut a, &json!({"event": "leave", "data": "kept", "id": 8}))["event"],
        "ack"
    );
    assert!(hub.room_info("lobby").is_none());
    assert_eq!(hub.room_info("kept").unwrap().connections, 0);
    assert!(hub.delete_room("kept"));
    assert_eq!(
        hub.conn_info(ia)
            .unwrap()
            .rooms
            .into_iter()
            .collect::<Vec<_>>(),
        ["one", "vip"]
    );
    // Disconnecting leaves every room: "one" empties and goes.
    a.close(CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(gone.recv_timeout(WAIT).unwrap(), ia);
    assert!(hub.room_info("one").is_none());
    assert_eq!(hub.members("vip"), [ib]);
}

#[test]
fn built_in_room_events_check_roles() {
    let rt = rt();
    let hub = base().room_events().build();
    let s = serve(&rt, &hub);
    let quiet = RoomOptions::new().events(RoomEvents::Silent).owner("ann");
    hub.create_room("club", quiet.policy(RoomPolicy::InviteOnly))
        .unwrap();
    let (mut ann, _) = connect(&s, "user=ann");
    let (mut bob, ib) = connect(&s, "user=bob");
    let call = |c: &mut WsClient, ev: &str, data: serde_json::Value, id: u64| {
        request(c, &json!({"event": ev, "data": data, "id": id}))
    };
    let v = call(&mut ann, "room:join", json!({"room": "club"}), 1);
    assert_eq!(v["data"]["users"], json!(["ann"]));
    let v = call(&mut bob, "room:join", json!({"room": "club"}), 2);
    assert_eq!(v["data"]["code"], "forbidden");
    let v = call(
        &mut bob,
        "room:invite",
        json!({"room": "club", "user": "bob"}),
        3,
    );
    assert_eq!(v["data"]["code"], "forbidden", "members cannot invite");
    let v = call(
        &mut ann,
        "room:invite",
        json!({"room": "club", "user": "bob"}),
        4,
    );
    assert_eq!(v["event"], "ack");
    let v = call(&mut bob, "room:join", json!({"room": "club"}), 5);
    assert_eq!(v["data"]["users"], json!(["ann", "bob"]));
    let v = call(
        &mut bob,
        "room:kick",
        json!({"room": "club", "user": "ann"}),
        6,
    );
    assert_eq!(v["data"]["code"], "forbidden");
    let v = call(
        &mut ann,
        "room:kick",
        json!({"room": "club", "user": "bob"}),
        7,
    );
    assert_eq!(v["data"]["connections"], 1);
    assert_eq!(next_event(&mut bob, "room:kicked")["data"]["room"], "club");
    let v = call(&mut bob, "room:join", json!({"room": "club"}), 8);
    assert_eq!(
        v["data"]["code"], "forbidden",
        "the invitation went with the kick"
    );
    assert!(!hub.members("club").contains(&ib));
    let v = call(&mut ann, "room:join", json!({"nope": 1}), 9);
    assert_eq!(v["data"]["code"], "bad_data");
}

#[test]
fn creators_own_rooms_bans_outlive_them_and_creation_is_capped() {
    let rt = rt();
    let cfg = sockloop::hub::HubConfig::new().max_rooms_per_conn(Some(2));
    let hub = base().config(cfg).room_events().build();
    let s = serve(&rt, &hub);
    let (mut ann, _) = connect(&s, "user=ann");
    let (mut bob, _) = connect(&s, "user=bob");
    let call = |c: &mut WsClient, event: &str, data: serde_json::Value, id: u64| {
        request(c, &json!({"event": event, "data": data, "id": id}))
    };
    let join = |c: &mut WsClient, room: &str, id: u64| call(c, "join", json!(room), id);
    // Whoever creates a room by joining it owns it.
    assert_eq!(join(&mut ann, "a", 1)["event"], "ack");
    assert_eq!(hub.role("a", "ann"), Some(Role::Owner));
    assert_eq!(
        hub.room_info("a").unwrap().options.owner.as_deref(),
        Some("ann")
    );
    assert_eq!(join(&mut bob, "a", 2)["event"], "ack");
    assert_eq!(hub.role("a", "bob"), Some(Role::Member));

    // A ban: a kick whose target may not come back until it ends.
    let kick = json!({"room": "a", "user": "bob", "ban_secs": 3600});
    let v = call(&mut ann, "room:kick", kick, 3);
    assert_eq!(v["data"]["connections"], 1, "{v}");
    let k = next_event(&mut bob, "room:kicked")["data"].clone();
    assert_eq!(k, json!({"room": "a", "ban_secs": 3600}));
    let v = join(&mut bob, "a", 4);
    assert_eq!(v["data"]["code"], "forbidden", "{v}");
    assert!(hub.banned("a", "bob").is_some_and(|d| d.as_secs() > 3500));
    // The room empties and goes; the ban stays, so bob cannot create it again.
    assert_eq!(call(&mut ann, "leave", json!("a"), 5)["event"], "ack");
    assert!(hub.room_info("a").is_none());
    assert_eq!(join(&mut bob, "a", 6)["data"]["code"], "forbidden");
    assert!(hub.unban("a", "bob"));
    assert!(!hub.unban("a", "bob"));
    assert_eq!(join(&mut bob, "a", 7)["event"], "ack");
    assert_eq!(hub.role("a", "bob"), Some(Role::Owner));

    // Ann created "a", which is gone: two more rooms, then the cap; joining is not creating.
    assert_eq!(join(&mut ann, "b", 8)["event"], "ack");
    assert_eq!(join(&mut ann, "c", 9)["event"], "ack");
    let v = join(&mut ann, "d", 10);
    assert_eq!(v["data"]["code"], "forbidden");
    assert!(v["data"]["message"].as_str().unwrap().contains("at most 2"));
    assert!(hub.room_info("d").is_none());
    assert_eq!(join(&mut ann, "a", 11)["event"], "ack");
    // Deleting an existing room says so, with the default cleanup too, and frees the count.
    assert!(hub.delete_room("b"));
    assert!(!hub.delete_room("b"));
    assert_eq!(next_event(&mut ann, "room:closed")["data"]["room"], "b");
    assert_eq!(join(&mut ann, "d", 12)["event"], "ack");
    assert!(!hub.delete_room("nope"));
}
