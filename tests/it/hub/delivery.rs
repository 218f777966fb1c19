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

/// Acknowledges the next `event` with `data` and returns the id it carried.
fn ack_next(c: &mut sockloop::client::ws::WsClient, event: &str, data: &serde_json::Value) -> u64 {
    let v = next_event(c, event);
    let id = v["id"].as_u64().expect("an id asking for an ack");
    send(c, &json!({"event": "ack", "ref": id, "data": data}));
    id
}

#[test]
fn a_hub_handler_with_one_handler_thread_gets_its_recipients_acks() {
    let rt = sockloop::Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .build()
        .unwrap();
    let (reports, got) = crossbeam_channel::unbounded();
    let hub = base()
        .on("notify", move |ctx: &mut Ctx| {
            let to: String = ctx.data()?;
            let (me, hub, reports) = (ctx.conn_id(), ctx.hub().clone(), reports.clone());
            let opts = AckOptions::new(WAIT, 0);
            ctx.hub().to_user(&to).emit_with_ack_then(
                "order",
                &json!({"n": 1}),
                opts,
                move |r| {
                    let seen = r.data(r.results[0].0).cloned();
                    hub.to_conn(me).emit("notify:done", &json!({"seen": seen}));
                    let _ = reports.send(r);
                },
            )?;
            ctx.ack(&"sent")
        })
        .on("block", |ctx: &mut Ctx| {
            let to: String = ctx.data()?;
            let opts = AckOptions::new(Duration::from_secs(3600), 0);
            let r = ctx.hub().to_user(&to).emit_with_ack("order", &2, opts)?;
            ctx.ack(&r.attempts)
        })
        .on("wait", |ctx: &mut Ctx| {
            let to: String = ctx.data()?;
            let opts = AckOptions::new(Duration::from_secs(3600), 0);
            let pending = ctx
                .hub()
                .to_user(&to)
                .emit_with_ack_nowait("order", &3, opts)?;
            pending.wait(Duration::from_secs(3600))?;
            ctx.ack(&"never")
        })
        .build();
    let s = serve(&rt, &hub);
    let (mut ann, _) = connect(&s, "user=ann");
    let (mut bob, ib) = connect(&s, "user=bob");
    let v = request(
        &mut ann,
        &json!({"event": "notify", "data": "bob", "id": 1}),
    );
    assert_eq!(v["data"], "sent", "the handler returned at once");
    // Bob's ack is read by the one handler thread, free again: the report has its data.
    ack_next(&mut bob, "order", &json!({"seen": true}));
    let r = got.recv_timeout(WAIT).expect("the report in time");
    assert_eq!(r.results, [(ib, AckStatus::Acked)]);
    assert_eq!(r.data(ib), Some(&json!({"seen": true})));
    assert_eq!(r.attempts, 1);
    let done = next_event(&mut ann, "notify:done");
    assert_eq!(done["data"]["seen"], json!({"seen": true}));
    assert_eq!(hub.stats().acks_pending, 0);

    // Waiting in a handler is refused at once (an hour-long wait would fail this test).
    let v = request(&mut ann, &json!({"event": "block", "data": "bob", "id": 2}));
    assert_eq!(v["event"], "error");
    assert_eq!(v["data"]["code"], "internal");
    assert!(
        drain(&mut bob).is_empty(),
        "a refused blocking emit sends nothing"
    );
    let v = request(&mut ann, &json!({"event": "wait", "data": "bob", "id": 3}));
    assert_eq!(v["data"]["code"], "internal");
    // That delivery goes on without the handler: bob's ack settles it.
    ack_next(&mut bob, "order", &json!("ok"));
    let v = request(
        &mut ann,
        &json!({"event": "echo", "data": "alive", "id": 4}),
    );
    assert_eq!(v["data"], "alive");
}

#[test]
fn ack_handles_wait_outside_handlers_and_retries_come_from_the_timer() {
    let rt = rt();
    let hub = base().build();
    let s = serve(&rt, &hub);
    let (mut ann, ia) = connect(&s, "user=ann");
    let (mut bob, ib) = connect(&s, "user=bob");
    // Bob stays silent: three attempts, resent by the hub's timer, the same id each time.
    let quick = AckOptions::new(Duration::from_millis(50), 2);
    let silent = hub
        .to_conn(ib)
        .emit_with_ack_nowait("ping", &0, quick)
        .unwrap();
    let acked = hub
        .to_conn(ia)
        .emit_with_ack_nowait("ping", &1, AckOptions::new(WAIT, 0))
        .unwrap();
    assert_ne!(silent.id(), acked.id());
    let id = ack_next(&mut ann, "ping", &json!([1, 2]));
    assert_eq!(id, acked.id());
    let r = acked.wait(WAIT).unwrap();
    assert_eq!(r.results, [(ia, AckStatus::Acked)]);
    assert_eq!(r.replies, [(ia, json!([1, 2]))]);
    let r = silent.wait(WAIT).unwrap();
    assert_eq!(r.results, [(ib, AckStatus::TimedOut)]);
    assert_eq!((r.attempts, r.replies.len()), (3, 0));
    assert!(silent.is_done());
    let got = drain(&mut bob);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|v| v["id"] == silent.id()));
    // A late or foreign ack changes nothing; a second ack of the same message neither.
    send(&mut bob, &json!({"event": "ack", "ref": silent.id()}));
    send(&mut bob, &json!({"event": "ack", "ref": acked.id()}));
    let v = request(&mut bob, &json!({"event": "echo", "data": 1, "id": 9}));
    assert_eq!(v["data"], 1);
    assert_eq!(
        silent.report().unwrap().results,
        [(ib, AckStatus::TimedOut)]
    );
    assert_eq!(acked.report().unwrap().results, [(ia, AckStatus::Acked)]);
    // Nobody to wait for: the report is ready at once.
    let none = hub
        .to_user("nobody")
        .emit_with_ack_nowait("x", &0, quick)
        .unwrap();
    assert_eq!(none.report(), Some(Default::default()));
    assert_eq!(hub.stats().acks_pending, 0);
}
