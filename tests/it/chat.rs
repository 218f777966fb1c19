//! The chat example's server (`examples/chat.rs`, compiled here as a module) over real
//! WebSocket clients: nicknames, slash commands parsed on the server, rooms, private messages.

#[allow(dead_code)]
#[path = "../../examples/chat.rs"]
pub mod server;

use std::io::{Read, Write};

use serde_json::{json, Value};
use sockloop::client::ws::{WsClient, WsClientOptions};
use sockloop::hub::{RoomEvents, RoomOptions};
use sockloop::ws::{CloseCode, WsError};
use sockloop::{Error, Runtime};

use crate::hub::{drain, next_event, recv_json, send};
use server::{Chat, ChatConfig, SHRUG};

fn start(rt: &Runtime) -> Chat {
    let cfg = ChatConfig {
        addr: "127.0.0.1:0".into(),
        ..ChatConfig::default()
    };
    server::serve(rt, &cfg).unwrap()
}

fn rt() -> Runtime {
    Runtime::builder()
        .pollers(2)
        .handler_threads(2)
        .build()
        .unwrap()
}

fn dial(chat: &Chat, nick: &str) -> sockloop::Result<WsClient> {
    let url = format!("ws://{}/ws?nick={nick}", chat.server.local_addr());
    WsClient::connect(&url, WsClientOptions::default().deflate(false))
}

/// Connects, reads the welcome and the lobby join; returns the client and its nickname.
fn join(chat: &Chat, nick: &str) -> (WsClient, String) {
    let mut c = dial(chat, nick).unwrap();
    let w = next_event(&mut c, "chat:welcome");
    let j = next_event(&mut c, "chat:joined");
    assert_eq!(j["data"]["room"], "lobby");
    (c, w["data"]["nick"].as_str().unwrap().to_owned())
}

fn say(c: &mut WsClient, room: &str, text: &str) {
    send(
        c,
        &json!({"event": "chat:say", "data": {"room": room, "text": text}}),
    );
}

/// The data of the next `event` whose data matches `pred`, skipping everything else.
fn next_where(c: &mut WsClient, event: &str, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = next_event(c, event);
        if pred(&v["data"]) {
            return v["data"].clone();
        }
    }
}

#[test]
fn nicknames_are_checked_at_the_upgrade_and_made_unique() {
    let rt = rt();
    let chat = start(&rt);
    for bad in ["", "a%20b", "%3Cscript%3E", &"x".repeat(25)] {
        match dial(&chat, bad) {
            Err(Error::WebSocket(WsError::Refused { status, .. })) => assert_eq!(status, 400),
            Err(e) => panic!("nick {bad:?}: expected a 400, got {e}"),
            Ok(_) => panic!("nick {bad:?} was accepted"),
        }
    }
    let (mut ann, n1) = join(&chat, "ann");
    let (_ann2, n2) = join(&chat, "ann");
    let (_ann3, n3) = join(&chat, "ANN");
    assert_eq!(
        (n1.as_str(), n2.as_str(), n3.as_str()),
        ("ann", "ann2", "ANN3")
    );
    let long = "y".repeat(24);
    let (_y1, _) = join(&chat, &long);
    let (_y2, n) = join(&chat, &long);
    assert_eq!(
        n,
        format!("{}2", "y".repeat(23)),
        "the suffix fits the limit"
    );
    assert_eq!(
        chat.hub.room_users("lobby"),
        ["ANN3", "ann", "ann2", &n, &long]
    );
    // A nickname is free again once its connection is gone.
    ann.close(CloseCode::NORMAL, "bye").unwrap();
    let mut watcher = join(&chat, "watcher").0;
    let deadline = std::time::Instant::now() + crate::util::WAIT;
    while chat.hub.online_users().contains(&"ann".to_owned()) {
        assert!(std::time::Instant::now() < deadline, "ann never left");
        let _ = drain(&mut watcher);
    }
    assert_eq!(join(&chat, "ann").1, "ann");
}

#[test]
fn slash_commands_are_parsed_on_the_server() {
    let rt = rt();
    let chat = start(&rt);
    let (mut ann, _) = join(&chat, "ann");
    let (mut bob, _) = join(&chat, "bob");
    let msg = |c: &mut WsClient| next_event(c, "chat:message")["data"].clone();

    say(&mut ann, "lobby", "  plain text  ");
    let m = msg(&mut bob);
    assert_eq!(
        m,
        json!({"room": "lobby", "from": "ann", "kind": "text", "text": "plain text"})
    );
    assert_eq!(
        msg(&mut ann)["text"],
        "plain text",
        "the sender sees it too"
    );
    say(&mut ann, "lobby", "/me waves");
    let m = msg(&mut bob);
    assert_eq!((&m["kind"], &m["text"]), (&json!("me"), &json!("waves")));
    say(&mut ann, "lobby", "/shrug");
    assert_eq!(msg(&mut bob)["text"], SHRUG);
    say(&mut ann, "lobby", "/SHRUG fine");
    assert_eq!(msg(&mut bob)["text"], format!("fine {SHRUG}"));
    say(&mut ann, "lobby", "//not a command");
    assert_eq!(msg(&mut bob)["text"], "/not a command");

    // Private messages: the recipient and the sender's echo.
    say(&mut ann, "lobby", "/msg BOB hi there");
    let p = next_event(&mut bob, "chat:private")["data"].clone();
    assert_eq!(p, json!({"from": "ann", "to": "bob", "text": "hi there"}));
    assert_eq!(next_event(&mut ann, "chat:private")["data"], p);

    // Answers for the caller only: /who, /help, errors.
    say(&mut ann, "lobby", "/who");
    let w = next_event(&mut ann, "chat:system")["data"].clone();
    assert_eq!(
        w,
        json!({"room": "lobby", "text": "in #lobby (2): ann, bob"})
    );
    say(&mut ann, "lobby", "/help");
    let h = next_event(&mut ann, "chat:system")["data"]["text"].clone();
    assert!(h.as_str().unwrap().contains("/msg NICK TEXT"), "{h}");
    let error = |c: &mut WsClient, text: &str| -> Value {
        say(c, "lobby", text);
        next_event(c, "error")["data"].clone()
    };
    let e = error(&mut ann, "/frobnicate x");
    assert_eq!(e["code"], "bad_data");
    assert_eq!(e["message"], "unknown command /frobnicate (try /help)");
    assert_eq!(error(&mut ann, "/msg nobody hi")["code"], "not_found");
    assert_eq!(
        error(&mut ann, "/msg bob")["message"],
        "usage: /msg NICK TEXT"
    );
    assert_eq!(error(&mut ann, "/me")["message"], "usage: /me ACTION");
    assert_eq!(error(&mut ann, "/nick Bob")["code"], "forbidden");
    assert_eq!(error(&mut ann, "/nick no way")["code"], "bad_data");
    assert_eq!(error(&mut ann, "/join #")["code"], "bad_data");
    assert_eq!(error(&mut ann, "   ")["code"], "bad_data");
    say(&mut ann, "elsewhere", "hello?");
    assert_eq!(next_event(&mut ann, "error")["data"]["code"], "forbidden");
    let seen: Vec<Value> = drain(&mut bob);
    assert!(
        seen.iter()
            .all(|v| v["event"] != "chat:system" && v["event"] != "error"),
        "bob saw the answers meant for ann: {seen:?}"
    );

    // /nick: the hub's user follows, the rooms are told, the user lists refresh.
    say(&mut ann, "lobby", "/nick anna");
    assert_eq!(next_event(&mut ann, "chat:nick")["data"]["nick"], "anna");
    let users = next_event(&mut bob, "room:users")["data"]["users"].clone();
    assert_eq!(users, json!(["anna", "bob"]));
    let s = next_event(&mut bob, "chat:system")["data"].clone();
    assert_eq!(
        s,
        json!({"room": "lobby", "text": "ann is now known as anna"})
    );
    assert_eq!(chat.hub.online_users(), ["anna", "bob"]);
    say(&mut ann, "lobby", "renamed");
    assert_eq!(msg(&mut bob)["from"], "anna");
    say(&mut bob, "lobby", "/msg ann old name");
    assert_eq!(next_event(&mut bob, "error")["data"]["code"], "not_found");
    let (_ann_again, n) = join(&chat, "ann");
    assert_eq!(n, "ann", "the old nickname is free");

    // Rooms: /join, messages there, /leave (the current room by default), /leave ROOM.
    say(&mut ann, "lobby", "/join #dev");
    let j = next_event(&mut ann, "chat:joined")["data"].clone();
    assert_eq!(j, json!({"room": "dev", "users": ["anna"]}));
    send(
        &mut bob,
        &json!({"event": "room:join", "data": {"room": "dev"}, "id": 5}),
    );
    let ack = next_event(&mut bob, "ack");
    assert_eq!(
        ack["data"],
        json!({"room": "dev", "users": ["anna", "bob"]})
    );
    let joined = next_where(&mut ann, "room:joined", |d| d["user"] == "bob");
    assert_eq!(joined["room"], "dev");
    say(&mut bob, "dev", "in dev");
    let m = next_where(&mut ann, "chat:message", |d| d["room"] == "dev");
    assert_eq!(m["text"], "in dev");
    say(&mut bob, "dev", "/leave");
    assert_eq!(next_event(&mut bob, "chat:left")["data"]["room"], "dev");
    let left = next_where(&mut ann, "room:left", |d| d["room"] == "dev");
    assert_eq!(left["user"], "bob");
    say(&mut ann, "dev", "/leave lobby");
    assert_eq!(next_event(&mut ann, "chat:left")["data"]["room"], "lobby");
    assert_eq!(
        chat.hub
            .conn_info(chat.hub.user_conns("anna")[0])
            .unwrap()
            .rooms
            .into_iter()
            .collect::<Vec<_>>(),
        ["dev"]
    );
    assert_eq!(
        error(&mut bob, "/leave dev")["message"],
        "you are not in #dev"
    );
    assert!(
        chat.hub.room_info("lobby").is_some(),
        "the lobby always exists"
    );
}

#[test]
fn typing_indicators_end_with_a_message() {
    let rt = rt();
    let chat = start(&rt);
    let (mut ann, _) = join(&chat, "ann");
    let (mut bob, _) = join(&chat, "bob");
    send(
        &mut ann,
        &json!({"event": "room:typing", "data": {"room": "lobby"}}),
    );
    let t = next_event(&mut bob, "typing")["data"].clone();
    assert_eq!(t, json!({"room": "lobby", "user": "ann", "typing": true}));
    say(&mut ann, "lobby", "done");
    let (mut stopped, mut got) = (false, false);
    while !(stopped && got) {
        let v = recv_json(&mut bob);
        match v["event"].as_str() {
            Some("typing") => {
                assert_eq!(v["data"]["typing"], false);
                stopped = true;
            }
            Some("chat:message") => got = true,
            _ => {}
        }
    }
    // Typing in a room one is not in is refused.
    send(
        &mut ann,
        &json!({"event": "room:typing", "data": {"room": "dev"}, "id": 1}),
    );
    assert_eq!(next_event(&mut ann, "error")["data"]["code"], "forbidden");
}

#[test]
fn the_page_and_health_are_served_on_the_same_port() {
    let rt = rt();
    let chat = start(&rt);
    let get = |path: &str| -> String {
        let mut s = std::net::TcpStream::connect(chat.server.local_addr().to_string()).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let health = get("/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("\r\n\r\nok"), "{health}");
    let page = get("/");
    assert!(page.starts_with("HTTP/1.1 200"));
    assert!(page.contains("<title>sockloop chat</title>"));
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}

/// The hub's fire-and-forget room emit (used by the chat's message path).
#[test]
fn emit_nowait_counts_the_members_and_delivers_in_order() {
    let rt = rt();
    let hub = crate::hub::base().build();
    let s = crate::hub::serve(&rt, &hub);
    hub.create_room("r", RoomOptions::new().events(RoomEvents::Silent))
        .unwrap();
    let mut clients: Vec<_> = (0..3).map(|_| crate::hub::connect(&s, "")).collect();
    for (_, id) in &clients {
        hub.join(*id, "r").unwrap();
    }
    let me = clients[0].1;
    for i in 0..100 {
        assert_eq!(hub.to_room("r").except(me).emit_nowait("n", &i).unwrap(), 2);
    }
    assert_eq!(hub.to_room("none").emit_nowait("n", &0).unwrap(), 0);
    for (c, id) in clients.iter_mut() {
        let got: Vec<u64> = drain(c)
            .iter()
            .map(|v| v["data"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = if *id == me {
            vec![]
        } else {
            (0..100).collect()
        };
        assert_eq!(got, want);
    }
}

/// A raw HTTP request's whole answer.
fn http_raw(chat: &Chat, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(chat.server.local_addr().to_string()).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn dial_from(chat: &Chat, nick: &str, origin: &str) -> sockloop::Result<WsClient> {
    let url = format!("ws://{}/ws?nick={nick}", chat.server.local_addr());
    let opts = WsClientOptions::default()
        .deflate(false)
        .header("Origin", origin);
    WsClient::connect(&url, opts)
}

#[test]
fn the_chat_refuses_a_foreign_origin_unless_allowed() {
    let rt = rt();
    let chat = start(&rt);
    let own = format!("http://{}", chat.server.local_addr());
    match dial_from(&chat, "eve", "https://evil.example") {
        Err(Error::WebSocket(WsError::Refused { status, reason })) => {
            assert_eq!(status, 403);
            assert!(
                reason.contains("origin"),
                "the server's reason reaches the client: {reason}"
            );
        }
        Err(e) => panic!("expected a 403, got {e}"),
        Ok(_) => panic!("a foreign origin opened the chat"),
    }
    assert!(
        dial_from(&chat, "ann", &own).is_ok(),
        "the page's own origin"
    );
    assert!(dial(&chat, "bob").is_ok(), "no Origin: not a browser");
    let cfg = ChatConfig {
        addr: "127.0.0.1:0".into(),
        allowed_origins: vec!["https://chat.example".into()],
        ..ChatConfig::default()
    };
    let wide = server::serve(&rt, &cfg).unwrap();
    assert!(dial_from(&wide, "cy", "https://chat.example").is_ok());
    assert!(dial_from(&wide, "cy", "https://evil.example").is_err());
}

#[test]
fn the_page_has_security_headers_and_head_has_no_body() {
    let rt = rt();
    let chat = start(&rt);
    let get = http_raw(
        &chat,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (head, body) = get.split_once("\r\n\r\n").unwrap();
    assert!(body.contains("<title>sockloop chat</title>"));
    let csp = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Security-Policy: "))
        .expect("a CSP");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(head.contains("\r\nX-Frame-Options: DENY"), "{head}");
    assert!(
        head.contains("\r\nX-Content-Type-Options: nosniff"),
        "{head}"
    );
    for path in ["/", "/health", "/nope"] {
        let r = http_raw(
            &chat,
            &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "", "HEAD {path} has no body");
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
    }
}

#[test]
fn look_alike_nicknames_are_taken_and_who_needs_membership() {
    let rt = rt();
    let chat = start(&rt);
    let (mut alice, _) = join(&chat, "alice");
    // A Cyrillic а, fullwidth letters, another case: all look like alice.
    for fake in [
        "%D0%B0lice",
        "%EF%BD%81%EF%BD%8C%EF%BD%89%EF%BD%83%EF%BD%85",
        "ALICE",
    ] {
        let (_c, nick) = join(&chat, fake);
        assert!(
            nick.ends_with('2') || nick.ends_with('3') || nick.ends_with('4'),
            "{nick}"
        );
    }
    let (mut bob, _) = join(&chat, "bob");
    say(&mut bob, "lobby", "/nick аlice");
    let e = next_event(&mut bob, "error")["data"].clone();
    assert_eq!(e["code"], "forbidden", "{e}");
    // /who answers only for a room one is in, whichever room the line claims to be from.
    say(&mut alice, "lobby", "/join secret");
    next_event(&mut alice, "chat:joined");
    say(&mut bob, "secret", "/who");
    assert_eq!(next_event(&mut bob, "error")["data"]["code"], "forbidden");
    say(&mut bob, "lobby", "/who secret");
    assert_eq!(next_event(&mut bob, "error")["data"]["code"], "forbidden");
    say(&mut alice, "lobby", "/who secret");
    let w = next_event(&mut alice, "chat:system")["data"]["text"].clone();
    assert_eq!(w, "in #secret (1): alice");
}

#[test]
fn a_freed_nickname_does_not_inherit_its_private_messages() {
    let rt = rt();
    let chat = start(&rt);
    let (mut ann, _) = join(&chat, "ann");
    let (mut bob, _) = join(&chat, "bob");
    // Ann's close frame: she is gone from the chat at once.
    ann.send_raw(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]).unwrap();
    next_where(&mut bob, "room:left", |d| d["user"] == "ann");
    say(&mut bob, "lobby", "/msg ann are you there?");
    let e = next_event(&mut bob, "error")["data"].clone();
    assert_eq!(e["code"], "not_found", "{e}");
    // A newcomer takes the nickname, and only what is sent from now on.
    let (mut ann2, nick) = join(&chat, "ann");
    assert_eq!(nick, "ann");
    say(&mut bob, "lobby", "/msg ann welcome");
    let p = next_event(&mut ann2, "chat:private")["data"].clone();
    assert_eq!(p["text"], "welcome");
    drop(ann);
}

#[test]
fn in_no_room_commands_work_and_the_rest_is_refused() {
    let rt = rt();
    let chat = start(&rt);
    let (mut ann, _) = join(&chat, "ann");
    let (mut bob, _) = join(&chat, "bob");
    say(&mut ann, "lobby", "/leave");
    assert_eq!(next_event(&mut ann, "chat:left")["data"]["room"], "lobby");
    // The page shows no room: it sends an empty room (or none at all).
    let no_room = "you are in no room: /join ROOM first";
    for text in ["hello?", "/me waves", "/shrug", "/who", "/leave", "//x"] {
        say(&mut ann, "", text);
        let e = next_event(&mut ann, "error")["data"].clone();
        assert_eq!(e, json!({"code": "bad_data", "message": no_room}), "{text}");
    }
    send(
        &mut ann,
        &json!({"event": "chat:say", "data": {"text": "/msg bob from nowhere"}}),
    );
    let p = next_event(&mut bob, "chat:private")["data"].clone();
    assert_eq!(p["text"], "from nowhere");
    say(&mut ann, "", "/help");
    let h = next_event(&mut ann, "chat:system")["data"].clone();
    assert!(h["room"].is_null(), "{h}");
    say(&mut ann, "", "/join dev");
    let j = next_event(&mut ann, "chat:joined")["data"].clone();
    assert_eq!(j, json!({"room": "dev", "users": ["ann"]}));
    let seen = drain(&mut bob);
    assert!(
        seen.iter().all(|v| v["event"] != "chat:message"),
        "nothing reached the lobby: {seen:?}"
    );
}
