//! Operations: disconnects with close codes, lifecycle callbacks, stats, graceful shutdown.

use std::time::Duration;

use serde_json::json;

use super::*;

#[test]
fn disconnect_user_closes_every_device_with_the_code() {
    let rt = rt();
    let (tx, rx) = crossbeam_channel::unbounded();
    let (otx, orx) = crossbeam_channel::unbounded();
    let hub = base()
        .on_connect(move |_, ws| {
            let _ = otx.send(ws.id());
        })
        .on_disconnect(move |_, ws, code, reason| {
            let _ = tx.send((ws.id(), code.as_u16(), reason.to_owned()));
        })
        .build();
    let s = serve(&rt, &hub);
    let (mut a1, i1) = connect(&s, "user=ann");
    let (mut a2, i2) = connect(&s, "user=ann");
    let (mut b, ib) = connect(&s, "user=bob");
    let opened: Vec<ConnId> = orx.try_iter().collect();
    assert_eq!(opened, [i1, i2, ib]);
    assert_eq!(
        hub.disconnect_user("ann", CloseCode::from(4001), "banned"),
        2
    );
    for c in [&mut a1, &mut a2] {
        assert_eq!(recv_close(c), (CloseCode::from(4001), "banned".to_owned()));
    }
    let mut closed = vec![
        rx.recv_timeout(WAIT).unwrap(),
        rx.recv_timeout(WAIT).unwrap(),
    ];
    closed.sort();
    assert_eq!(
        closed,
        [(i1, 4001, "banned".into()), (i2, 4001, "banned".into())]
    );
    assert!(hub.disconnect(ib, CloseCode::POLICY, "one"));
    assert_eq!(recv_close(&mut b), (CloseCode::POLICY, "one".to_owned()));
    rx.recv_timeout(WAIT).unwrap();
    assert!(!hub.disconnect(ib, CloseCode::POLICY, "again"));
    let st = hub.stats();
    assert_eq!((st.connections, st.users), (0, 0));
}

#[test]
fn stats_count_traffic() {
    let rt = rt();
    let hub = base().build();
    let s = serve(&rt, &hub);
    let (mut a, _) = connect(&s, "user=ann");
    request(&mut a, &json!({"event": "join", "data": "r", "id": 1}));
    send(&mut a, &json!({"event": "nope"}));
    next_event(&mut a, "error");
    // Counters move right after each send: one more round trip settles them.
    request(&mut a, &json!({"event": "echo", "id": 2}));
    let st = hub.stats();
    assert_eq!((st.connections, st.users, st.rooms), (1, 1, 1));
    assert_eq!(st.messages_in, 4);
    assert_eq!(st.errors, 1);
    // whoami ack, room:joined, room:users, join ack, the error (and maybe the echo).
    assert!((5..=6).contains(&st.messages_out), "{st:?}");
    assert_eq!(st.acks_pending, 0);
}

#[test]
fn graceful_shutdown_says_going_away_after_queued_output() {
    let rt = rt();
    let hub = base().build();
    let s = serve(&rt, &hub);
    let (mut a, _) = connect(&s, "user=ann");
    hub.to_all().emit("last", "words");
    assert!(hub.shutdown(&s, Duration::from_secs(5)));
    assert_eq!(next_event(&mut a, "last")["data"], "words");
    assert_eq!(recv_close(&mut a).0, CloseCode::AWAY);
}

#[test]
fn inline_dispatch_serves_rooms_in_order() {
    use sockloop::{Dispatch, Listen, ServerConfig};
    let rt = rt();
    let hub = base()
        .on("say", |ctx: &mut Ctx| {
            let text: String = ctx.data()?;
            ctx.hub()
                .to_room("r")
                .except(ctx.conn_id())
                .emit("said", &text);
            ctx.ack(&true)
        })
        .build();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().dispatch(Dispatch::Inline))
        .websocket(WsServerConfig::new(), hub.factory())
        .unwrap();
    hub.attach(&s);
    let (mut a, _) = connect(&s, "");
    let (mut b, _) = connect(&s, "");
    for (c, id) in [(&mut a, 1), (&mut b, 2)] {
        request(c, &json!({"event": "join", "data": "r", "id": id}));
    }
    for i in 0..20 {
        let v = request(
            &mut a,
            &json!({"event": "say", "data": i.to_string(), "id": 10 + i}),
        );
        assert_eq!(v["event"], "ack");
    }
    let said: Vec<String> = (0..20)
        .map(|_| {
            next_event(&mut b, "said")["data"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(said, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
}

/// Namespaces (docs/PROTOCOL.md): one hub per namespace on one port, chosen by the path.
#[test]
fn namespaces_are_hubs_chosen_by_path() {
    use sockloop::http::Request;
    use sockloop::{WsConn, WsFactory};
    let rt = rt();
    let admin = base()
        .on("admin:stats", |ctx: &mut Ctx| {
            ctx.ack(&ctx.hub().stats().connections)
        })
        .build();
    let chat = base().build();
    let (a, c) = (admin.factory(), chat.factory());
    let factory = move |ws: &WsConn, req: &Request| -> Box<dyn sockloop::WsHandler> {
        match req.path() {
            "/admin" => a.create(ws, req),
            _ => c.create(ws, req),
        }
    };
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(auth_config(), BoxFactory(factory))
        .unwrap();
    admin.attach(&s);
    chat.attach(&s);
    let open = |path: &str| {
        let url = format!("ws://{}{path}?user=ann", s.local_addr());
        let mut c = WsClient::connect(&url, WsClientOptions::default().deflate(false)).unwrap();
        send(&mut c, &json!({"event": "whoami", "id": 0}));
        let id = finish_whoami(&mut c);
        (c, id)
    };
    let (mut ad, _) = open("/admin");
    let (mut ch, ich) = open("/chat");
    // Each namespace has its own routes, connections and rooms.
    let v = request(&mut ad, &json!({"event": "admin:stats", "id": 1}));
    assert_eq!(v["data"], 1, "the admin hub counts only its own connection");
    let v = request(&mut ch, &json!({"event": "admin:stats", "id": 2}));
    assert_eq!(v["data"]["code"], "unknown_event");
    request(&mut ch, &json!({"event": "join", "data": "lobby", "id": 3}));
    assert_eq!(chat.members("lobby"), [ich]);
    assert!(admin.members("lobby").is_empty());
    assert_eq!(admin.to_room("lobby").emit("x", &1).queued, 0);
    assert_eq!(chat.to_all().emit("hello", &"chat").queued, 1);
    assert!(
        drain(&mut ad).is_empty(),
        "the admin namespace heard the chat's broadcast"
    );
}

/// A factory from a closure returning boxed handlers.
struct BoxFactory<F>(F);

impl<F> sockloop::WsFactory for BoxFactory<F>
where
    F: Fn(&sockloop::WsConn, &sockloop::http::Request) -> Box<dyn sockloop::WsHandler>
        + Send
        + Sync
        + 'static,
{
    fn create(
        &self,
        ws: &sockloop::WsConn,
        req: &sockloop::http::Request,
    ) -> Box<dyn sockloop::WsHandler> {
        (self.0)(ws, req)
    }
}
