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
    // Ann's coming online is announced in the default (rooms) scope, as her going offline is.
    let p = next_event(&mut bob, "presence")["data"].clone();
    assert_eq!(p, json!({"user": "ann", "online": true}));
    // A second device of a user already there: joined, but the user list did not change,
    // and she is not announced again.
    request(&mut ann2, &json!({"event": "join", "data": "r", "id": 3}));
    next_event(&mut bob, "room:joined");
    let seen: Vec<String> = drain(&mut bob)
        .iter()
        .map(|v| v["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(!seen.contains(&"room:users".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"presence".to_owned()), "{seen:?}");

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

#[test]
fn no_typing_false_for_a_user_who_was_not_typing() {
    let rt = rt();
    let hub = base().room_events().build();
    let s = serve(&rt, &hub);
    let (mut ann, _) = connect(&s, "user=ann");
    let (mut bob, _) = connect(&s, "user=bob");
    for (c, id) in [(&mut ann, 1), (&mut bob, 2)] {
        request(c, &json!({"event": "join", "data": "r", "id": id}));
    }
    let typing = |c: &mut sockloop::client::ws::WsClient, on: bool, id: u64| {
        let data = json!({"room": "r", "typing": on});
        let v = request(c, &json!({"event": "room:typing", "data": data, "id": id}));
        assert_eq!(v["event"], "ack", "{v}");
    };
    typing(&mut ann, false, 10);
    typing(&mut ann, true, 11);
    typing(&mut ann, false, 12);
    typing(&mut ann, false, 13);
    // The stop of a live indicator is announced; the stops around it are not.
    let t = next_event(&mut bob, "typing")["data"]["typing"].clone();
    assert_eq!(t, true);
    let t = next_event(&mut bob, "typing")["data"]["typing"].clone();
    assert_eq!(t, false);
    // The hub's timer thread handles the stops in order: one more round trip through it
    // (a live indicator and its stop) shows nothing else was queued for bob.
    typing(&mut ann, true, 14);
    typing(&mut ann, false, 15);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let v = next_event(&mut bob, "typing");
        seen.push(v["data"]["typing"].clone());
    }
    assert_eq!(seen, [json!(true), json!(false)]);
}

#[test]
fn a_closing_connection_leaves_the_hub_while_its_socket_lingers() {
    let rt = rt();
    let (gone_tx, gone) = crossbeam_channel::unbounded();
    let hub = base()
        .on_disconnect(move |_, ws, _, _| {
            let _ = gone_tx.send(ws.id());
        })
        .build();
    // The server waits up to a minute for the client to end the TCP connection.
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(sockloop::ServerConfig::new().close_timeout(Duration::from_secs(60)))
        .websocket(auth_config(), hub.factory())
        .unwrap();
    hub.attach(&s);
    let (mut ann, ia) = connect(&s, "user=ann");
    let (mut bob, _) = connect(&s, "user=bob");
    for (c, id) in [(&mut ann, 1), (&mut bob, 2)] {
        request(c, &json!({"event": "join", "data": "r", "id": id}));
    }
    // The server closes Ann; her client does not read, so no close reply comes and her TCP
    // connection stays open: the socket lingers in its closing handshake. (After a complete
    // handshake, her own close frame answered, a plain socket closes at once: nothing
    // would linger.)
    let ws = hub.conn(ia).expect("ann's connection");
    ws.close(CloseCode::NORMAL, "bye");
    let left = next_event(&mut bob, "room:left")["data"].clone();
    assert_eq!(
        (&left["user"], left["conn"].as_u64()),
        (&json!("ann"), Some(ia.0))
    );
    let p = next_event(&mut bob, "presence")["data"].clone();
    assert_eq!((&p["user"], &p["online"]), (&json!("ann"), &json!(false)));
    assert_eq!(hub.online_users(), ["bob"]);
    assert_eq!(hub.room_users("r"), ["bob"]);
    assert!(hub.conn(ia).is_none());
    assert!(
        gone.try_recv().is_err(),
        "the socket is still open: on_disconnect comes when it closes"
    );
    drop(ann);
    assert_eq!(gone.recv_timeout(WAIT).unwrap(), ia);
}
