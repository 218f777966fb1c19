//! Delivery to connections, users (every device), users, filters and everyone; acks with
//! timeouts and retries.

use std::thread;
use std::time::Duration;

use serde_json::json;
use sockloop::hub::{AckOptions, AckStatus};

use super::*;

fn names(c: &mut sockloop::client::ws::WsClient) -> Vec<String> {
    drain(c)
        .iter()
        .map(|v| v["data"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn emits_reach_exactly_their_targets() {
    let rt = rt();
    let hub = base().build();
    let s = serve(&rt, &hub);
    let (mut a1, ia1) = connect(&s, "user=ann&tags=admin");
    let (mut a2, ia2) = connect(&s, "user=ann");
    let (mut b, ib) = connect(&s, "user=bob&tags=admin,eu");
    let (mut anon, _) = connect(&s, "");
    assert_eq!(hub.user_conns("ann"), [ia1, ia2]);
    assert_eq!(hub.conns_tagged("admin"), [ia1, ib]);
    assert_eq!(hub.online_users(), ["ann", "bob"]);

    assert_eq!(hub.to_user("ann").emit("m", "user").queued, 2);
    assert_eq!(hub.to_conn(ib).emit("m", "conn").queued, 1);
    assert_eq!(
        hub.to_users(&["ann", "bob"])
            .except(ia2)
            .emit("m", "users")
            .queued,
        2
    );
    let eu = hub
        .to_filter(|c| c.tags.iter().any(|t| t == "eu"))
        .emit("m", "filter");
    assert_eq!(eu.queued, 1);
    assert_eq!(hub.to_all().except(ia1).emit("m", "all").queued, 3);
    assert_eq!(hub.to_user("nobody").emit("m", "x").queued, 0);

    assert_eq!(names(&mut a1), ["user", "users"]);
    assert_eq!(names(&mut a2), ["user", "all"]);
    assert_eq!(names(&mut b), ["conn", "users", "filter", "all"]);
    assert_eq!(names(&mut anon), ["all"]);
}

#[test]
fn metadata_and_identity_are_kept_per_connection() {
    let rt = rt();
    let hub = base()
        .on("set", |ctx: &mut Ctx| {
            let v: serde_json::Value = ctx.data()?;
            ctx.set_meta("status", v);
            ctx.ack(&ctx.meta("status"))
        })
        .build();
    let s = serve(&rt, &hub);
    let (mut a, ia) = connect(&s, "user=ann&tags=x,y&seats=3");
    let v = request(&mut a, &json!({"event": "set", "data": "away", "id": 1}));
    assert_eq!(v["data"], "away");
    // Metadata values are JSON values, from the identity and from handlers alike.
    let status = json!({"away": true, "since": 1700000000});
    let v = request(&mut a, &json!({"event": "set", "data": status, "id": 2}));
    assert_eq!(v["data"], status);
    let info = hub.conn_info(ia).unwrap();
    assert_eq!(info.user.as_deref(), Some("ann"));
    assert_eq!(info.tags, ["x", "y"]);
    assert_eq!(info.meta["plan"], json!({"tier": "pro", "seats": 3}));
    assert_eq!(hub.meta(ia, "status"), Some(status));
    hub.set_meta(ia, "score", 7);
    assert_eq!(hub.meta(ia, "score"), Some(json!(7)));
}

#[test]
fn acked_delivery_and_timeouts_with_retries() {
    let rt = rt();
    let hub = base().build();
    let s = serve(&rt, &hub);
    let (mut ann, ia) = connect(&s, "user=ann");
    let (mut bob, ib) = connect(&s, "user=bob");
    // Ann acknowledges what she gets.
    let acker = thread::spawn(move || {
        let v = next_event(&mut ann, "order");
        let id = v["id"].as_u64().expect("an id asking for an ack");
        send(&mut ann, &json!({"event": "ack", "ref": id}));
        ann
    });
    let opts = AckOptions::new(WAIT, 0);
    let r = hub.to_user("ann").emit_with_ack("order", &1, opts).unwrap();
    assert_eq!(r.results, [(ia, AckStatus::Acked)]);
    assert!(r.all_acked());
    let _ann = acker.join().unwrap();

    // Bob never acknowledges: three attempts, the same id, then timed out.
    let opts = AckOptions::new(Duration::from_millis(50), 2);
    let r = hub.to_conn(ib).emit_with_ack("order", &2, opts).unwrap();
    assert_eq!(r.results, [(ib, AckStatus::TimedOut)]);
    assert_eq!(r.attempts, 3);
    let got = drain(&mut bob);
    assert_eq!(got.len(), 3);
    assert!(got
        .iter()
        .all(|v| v["id"] == got[0]["id"] && v["data"] == 2));
    assert_eq!(hub.stats().acks_pending, 0);
}

#[test]
fn acks_report_closed_recipients_and_late_acks_are_harmless() {
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
    let ws_b = hub.conn(ib).unwrap();
    b.close(CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(gone.recv_timeout(WAIT).unwrap(), ib);
    assert!(!ws_b.is_open());
    // An ack for an unknown id is ignored; the connection keeps serving.
    send(&mut a, &json!({"event": "ack", "ref": 999_999}));
    let v = request(&mut a, &json!({"event": "echo", "data": "still", "id": 1}));
    assert_eq!(v["data"], "still");
    let r = hub
        .to_users(&["ann", "bob"])
        .emit_with_ack("x", &0, AckOptions::new(Duration::from_millis(20), 0))
        .unwrap();
    assert_eq!(
        r.results,
        [(ia, AckStatus::TimedOut)],
        "bob is gone from the hub"
    );
}

#[test]
fn a_recipient_closing_while_awaited_is_reported_closed() {
    let rt = rt();
    let hub = base().build();
    let s = serve(&rt, &hub);
    let (mut bob, ib) = connect(&s, "user=bob");
    let closer = thread::spawn(move || {
        next_event(&mut bob, "order");
        bob.close(CloseCode::NORMAL, "not now").unwrap();
    });
    let r = hub
        .to_conn(ib)
        .emit_with_ack("order", &3, AckOptions::new(WAIT, 0))
        .unwrap();
    assert_eq!(r.results, [(ib, AckStatus::Closed)]);
    closer.join().unwrap();
}
