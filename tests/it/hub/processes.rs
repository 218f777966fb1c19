//! Processes in rooms: a supervised process subscribed to a room receives its events
//! (member joined, member left, messages emitted to the room) as messages.

use std::time::Duration;

use serde_json::json;
use sockloop::hub::RoomEvent;
use sockloop::supervise::{
    ChildSpec, Context, Control, Handled, Node, Process, Strategy, SupervisorSpec,
};

use super::*;

/// The room watcher's messages: room events, and a request to crash.
enum Watch {
    Room(RoomEvent),
    Crash,
}

impl From<RoomEvent> for Watch {
    fn from(e: RoomEvent) -> Self {
        Watch::Room(e)
    }
}

/// Subscribes to "den" in `init` (so each restarted instance subscribes again) and
/// forwards what it hears.
struct Watcher {
    hub: Hub,
    out: crossbeam_channel::Sender<RoomEvent>,
    /// Told once each instance has subscribed (a restarted one is registered before its
    /// `init` runs).
    ready: crossbeam_channel::Sender<()>,
}

impl Process for Watcher {
    type Msg = Watch;
    fn init(&mut self, ctx: &mut Context<Watch>) -> Result<(), sockloop::supervise::BoxError> {
        self.hub.subscribe_process("den", ctx.me().clone());
        let _ = self.ready.send(());
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<Watch>, msg: Watch) -> Handled {
        match msg {
            Watch::Room(e) => {
                let _ = self.out.send(e);
                Ok(Control::Continue)
            }
            Watch::Crash => Err("asked to crash".into()),
        }
    }
}

fn next_room_event(rx: &crossbeam_channel::Receiver<RoomEvent>) -> RoomEvent {
    rx.recv_timeout(WAIT).expect("a room event")
}

#[test]
fn a_process_in_a_room_hears_joins_messages_and_leaves_across_a_restart() {
    let rt = rt();
    let hub = base()
        .on("say", |ctx: &mut Ctx| {
            let text: String = ctx.data()?;
            ctx.hub().to_room("den").emit("said", &text);
            ctx.ack(&true)
        })
        .build();
    let s = serve(&rt, &hub);
    let node = Node::new();
    let (tx, rx) = crossbeam_channel::unbounded();
    let (ready_tx, ready) = crossbeam_channel::unbounded();
    let h = hub.clone();
    let sup = SupervisorSpec::new(Strategy::OneForOne)
        .child(
            ChildSpec::worker("watcher", move || Watcher {
                hub: h.clone(),
                out: tx.clone(),
                ready: ready_tx.clone(),
            })
            .register_as("watcher"),
        )
        .start(&node)
        .unwrap();

    ready.recv_timeout(WAIT).expect("the watcher subscribed");
    let (mut ann, ann_id) = connect(&s, "user=ann");
    request(&mut ann, &json!({"event": "join", "data": "den", "id": 1}));
    assert_eq!(
        next_room_event(&rx),
        RoomEvent::Joined {
            room: "den".into(),
            conn: ann_id,
            user: Some("ann".into())
        }
    );
    request(&mut ann, &json!({"event": "say", "data": "hi", "id": 2}));
    // Everything emitted to the room arrives, the hub's own notices first.
    let mut events = Vec::new();
    loop {
        match next_room_event(&rx) {
            RoomEvent::Message { room, text } => {
                assert_eq!(room, "den");
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                events.push(v["event"].as_str().unwrap().to_owned());
                if v["event"] == "said" {
                    assert_eq!(v["data"], "hi");
                    break;
                }
            }
            other => panic!("expected messages, got {other:?}"),
        }
    }
    // `presence`: ann's coming online, announced to the first room she enters.
    assert_eq!(events, ["room:joined", "room:users", "presence", "said"]);

    // The watcher crashes; its supervisor restarts it and the new instance subscribes again.
    let old = node.whereis("watcher").unwrap();
    node.send("watcher", Watch::Crash).ok().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while node.whereis("watcher").is_none_or(|p| p == old) {
        assert!(std::time::Instant::now() < deadline, "watcher restarted");
        std::thread::sleep(Duration::from_millis(5));
    }
    ready
        .recv_timeout(WAIT)
        .expect("the restarted watcher subscribed");
    request(&mut ann, &json!({"event": "leave", "data": "den", "id": 3}));
    assert_eq!(
        next_room_event(&rx),
        RoomEvent::Left {
            room: "den".into(),
            conn: ann_id,
            user: Some("ann".into())
        }
    );
    drop(sup);
    node.shutdown(Duration::from_secs(2));
}

#[test]
fn a_dead_subscriber_is_dropped_and_a_closure_can_unsubscribe() {
    let rt = rt();
    let hub = base().build();
    let s = serve(&rt, &hub);
    let (tx, rx) = crossbeam_channel::unbounded();
    let id = hub.subscribe("den", move |e| tx.send(e.clone()).is_ok());
    // A process that is gone by the time the room has news loses its subscription.
    let node = Node::new();
    let gone = node
        .spawn(sockloop::supervise::from_fn(|_, _: Watch| {
            Ok(Control::Continue)
        }))
        .unwrap();
    let gone_id = hub.subscribe_process("den", gone.clone());
    let down = node.monitor(gone.pid());
    assert!(node.stop(gone.pid()));
    down.recv_timeout(WAIT).expect("the process is down");
    let (mut c, cid) = connect(&s, "user=bo");
    request(&mut c, &json!({"event": "join", "data": "den", "id": 1}));
    assert!(
        matches!(rx.recv_timeout(WAIT).unwrap(), RoomEvent::Joined { conn, .. } if conn == cid)
    );
    // Events are published before the handler acks, so the join's are all in by now.
    let notices: Vec<RoomEvent> = rx.try_iter().collect();
    assert!(notices
        .iter()
        .all(|e| matches!(e, RoomEvent::Message { .. })));
    assert!(!hub.unsubscribe(gone_id), "the dead process was dropped");
    assert!(hub.unsubscribe(id));
    assert!(!hub.unsubscribe(id));
    request(&mut c, &json!({"event": "leave", "data": "den", "id": 2}));
    // The leave was fully handled (acked) after the unsubscribe: nothing more arrives.
    assert!(rx.try_recv().is_err());
}

#[test]
fn messages_emitted_without_waiting_reach_subscribers_too() {
    let rt = rt();
    let hub = base()
        .on("shout", |ctx: &mut Ctx| {
            let text: String = ctx.data()?;
            ctx.hub().to_room("den").emit_nowait("shouted", &text)?;
            ctx.ack(&true)
        })
        .build();
    let s = serve(&rt, &hub);
    let (tx, rx) = crossbeam_channel::unbounded();
    hub.subscribe("den", move |e| tx.send(e.clone()).is_ok());
    let (mut c, _) = connect(&s, "user=cy");
    request(&mut c, &json!({"event": "join", "data": "den", "id": 1}));
    request(&mut c, &json!({"event": "shout", "data": "hey", "id": 2}));
    let shouted = rx.try_iter().find_map(|e| match e {
        RoomEvent::Message { text, .. } if text.contains("shouted") => Some(text),
        _ => None,
    });
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&shouted.expect("the shout")).unwrap(),
        json!({"event": "shouted", "data": "hey"})
    );
}
