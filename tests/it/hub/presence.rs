//! Presence, room notifications and typing indicators.

use std::time::Duration;

use serde_json::json;
use sockloop::hub::{HubConfig, Presence, PresenceScope};

use super::*;

#[test]
fn room_members_see_joins_leaves_users_and_offline() {
    let rt = rt();
    let hub = base().build();
    let s = serve(&rt, &hub);
    let (mut bob, _) = connect(&s, "user=bob");
    send(&mut bob, &json!({"event": "join", "data": "r", "id": 1}));
    // The joiner hears its own join, then the user list, then the ack.
    assert_eq!(next_event(&mut bob, "room:joined")["data"]["user"], "bob");
    assert_eq!(
        next_event(&mut bob, "room:users")["data"]["users"],
        json!(["bob"])
    );
    assert_eq!(next_event(&mut bob, "ack")["ref"], 1);
    assert!(matches!(hub.presence("ann"), Presence::Unknown));

    let (mut ann, ia) = connect(&s, "user=ann");
    let (mut ann2, _) = connect(&s, "user=ann");
    assert_eq!(hub.presence("ann"), Presence::Online { connections: 2 });
    request(&mut ann, &json!({"event": "join", "data": "r", "id": 2}));
    let j = next_event(&mut bob, "room:joined")["data"].clone();
    assert_eq!(
        (j["user"].as_str(), j["conn"].as_u64()),
        (Some("ann"), Some(ia.0))
    );
    let users = next_event(&mut bob, "room:users")["data"]["users"].clone();
    assert_eq!(users, json!(["ann", "bob"]));
    // A second device of a user already there: joined, but the user list did not change.
    request(&mut ann2, &json!({"event": "join", "data": "r", "id": 3}));
    next_event(&mut bob, "room:joined");
    let seen: Vec<String> = drain(&mut bob)
        .iter()
        .map(|v| v["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(!seen.contains(&"room:users".to_owned()), "{seen:?}");

    ann.close(CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(next_event(&mut bob, "room:left")["data"]["user"], "ann");
    ann2.close(CloseCode::NORMAL, "bye").unwrap();
    next_event(&mut bob, "room:left");
    assert_eq!(
        next_event(&mut bob, "room:users")["data"]["users"],
        json!(["bob"])
    );
    let p = next_event(&mut bob, "presence")["data"].clone();
    assert_eq!((&p["user"], &p["online"]), (&json!("ann"), &json!(false)));
    assert!(p["last_seen"].as_u64().unwrap() > 1_700_000_000);
    assert!(matches!(hub.presence("ann"), Presence::Offline { .. }));
    assert_eq!(hub.online_users(), ["bob"]);
}

#[test]
fn presence_to_everyone() {
    let rt = rt();
    let cfg = HubConfig::new().presence(PresenceScope::Everyone);
    let hub = base().config(cfg).build();
    let s = serve(&rt, &hub);
    let (mut bob, _) = connect(&s, "user=bob");
    let (mut ann, _) = connect(&s, "user=ann");
    let p = next_event(&mut bob, "presence")["data"].clone();
    assert_eq!(p, json!({"user": "ann", "online": true}));
    ann.close(CloseCode::NORMAL, "bye").unwrap();
    let p = next_event(&mut bob, "presence")["data"].clone();
    assert_eq!((&p["user"], &p["online"]), (&json!("ann"), &json!(false)));
}

#[test]
fn typing_indicators_expire_on_their_own() {
    let rt = rt();
    let cfg = HubConfig::new().typing_ttl(Duration::from_millis(100));
    let hub = base()
        .config(cfg)
        .on("typing", |ctx: &mut Ctx| {
            let room: String = ctx.data()?;
            ctx.hub().typing(ctx.conn_id(), &room)
        })
        .build();
    let s = serve(&rt, &hub);
    let (mut ann, _) = connect(&s, "user=ann");
    let (mut bob, _) = connect(&s, "user=bob");
    for (c, id) in [(&mut ann, 1), (&mut bob, 2)] {
        request(c, &json!({"event": "join", "data": "r", "id": id}));
    }
    send(&mut ann, &json!({"event": "typing", "data": "r"}));
    let t = next_event(&mut bob, "typing")["data"].clone();
    assert_eq!(t, json!({"room": "r", "user": "ann", "typing": true}));
    let t = next_event(&mut bob, "typing")["data"].clone();
    assert_eq!(t, json!({"room": "r", "user": "ann", "typing": false}));
    // Not a member: refused.
    let v = request(
        &mut ann,
        &json!({"event": "typing", "data": "elsewhere", "id": 3}),
    );
    assert_eq!(v["data"]["code"], "forbidden");
    let typers: Vec<_> = drain(&mut ann)
        .into_iter()
        .filter(|v| v["event"] == "typing")
        .collect();
    assert!(typers.is_empty(), "the typer is not told about herself");
}
