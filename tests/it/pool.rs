//! The handler pool (`Dispatch::Threads`): no head-of-line blocking between connections,
//! per-connection order, growth under blocking load and shrinking when idle, budgets that
//! time handlers and not idle waits, contained panics. Real WebSocket connections on port 0.

use std::collections::HashSet;
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::http::Request;
use sockloop::supervise::{ExitReason, Node, SupervisorRef, SystemEvent};
use sockloop::{Listen, Runtime, RuntimeBuilder, Server, WsConn, WsHandler, WsServerConfig};

use crate::util::WAIT;

/// Marker in the panic messages of these tests; the hook below keeps them off stderr.
const PANIC_MARK: &str = "sockloop-pool-test-panic";

fn quiet_test_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.contains(PANIC_MARK) {
                default(info);
            }
        }));
    });
}

/// What the test's handler does besides echoing: "sleep" sleeps 1 s, "block" waits for a
/// release token, "boom" panics, "slow" takes 60 ms; every handled message is reported as
/// started before that. The echo carries the handling thread's id.
#[derive(Clone)]
struct Script {
    started: Sender<String>,
    release: Receiver<()>,
}

struct Scripted(Script);

impl WsHandler for Scripted {
    fn on_text(&mut self, ws: &WsConn, text: &str) {
        let _ = self.0.started.send(text.to_owned());
        match text {
            "sleep" => thread::sleep(Duration::from_secs(1)),
            "block" => drop(self.0.release.recv_timeout(WAIT)),
            "boom" => panic!("{PANIC_MARK}: handler asked to fail"),
            "slow" => thread::sleep(Duration::from_millis(60)),
            _ => {}
        }
        let _ = ws.send_text(format!("{text} {:?}", thread::current().id()));
    }
}

struct Fixture {
    rt: Runtime,
    server: Server,
    started: Receiver<String>,
    release: Sender<()>,
}

impl Fixture {
    fn new(builder: RuntimeBuilder) -> Fixture {
        let rt = builder.build().unwrap();
        let (started_tx, started) = unbounded();
        let (release, release_rx) = unbounded();
        let script = Script {
            started: started_tx,
            release: release_rx,
        };
        let server = rt
            .serve(Listen::tcp("127.0.0.1:0"))
            .websocket(WsServerConfig::new(), move |_: &WsConn, _: &Request| {
                Scripted(script.clone())
            })
            .unwrap();
        Fixture {
            rt,
            server,
            started,
            release,
        }
    }

    fn client(&self) -> WsClient {
        let url = format!("ws://{}/", self.server.local_addr());
        WsClient::connect(&url, WsClientOptions::default()).unwrap()
    }

    /// Waits until the handler started on `text`.
    fn wait_started(&self, text: &str) {
        loop {
            let t = self.started.recv_timeout(WAIT).expect("a handler started");
            if t == text {
                return;
            }
        }
    }

    fn stop(self) {
        drop(self.release);
        self.server.shutdown(Duration::from_secs(5));
        self.rt.shutdown(Duration::from_secs(5));
    }
}

/// The echo of `text` (without the thread id).
fn echo(c: &mut WsClient, text: &str) -> String {
    match c.recv_timeout(WAIT).unwrap() {
        Some(Message::Text(t)) => {
            let (got, thread) = t.split_once(' ').expect("text and thread");
            assert_eq!(got, text);
            thread.to_owned()
        }
        other => panic!("expected the echo of {text:?}, got {other:?}"),
    }
}

fn events(node: &Node) -> Receiver<SystemEvent> {
    let (tx, rx) = unbounded();
    node.set_hook(move |e| drop(tx.send(e.clone())));
    rx
}

/// The pool's supervisor, registered as `<runtime name>-handlers`.
fn handler_supervisor(rt: &Runtime) -> SupervisorRef {
    let pid = rt.node().whereis("sockloop-handlers").expect("registered");
    SupervisorRef::from_pid(rt.node(), pid).expect("a supervisor")
}

/// How many handler threads run now.
fn running_threads(rt: &Runtime) -> usize {
    let children = handler_supervisor(rt).which_children().unwrap();
    children.iter().filter(|c| c.pid.is_some()).count()
}

/// Polls `running_threads` (bounded by `WAIT`) until it equals `n`.
fn wait_threads(rt: &Runtime, n: usize) {
    let deadline = Instant::now() + WAIT;
    while running_threads(rt) != n {
        assert!(Instant::now() < deadline, "{n} handler threads expected");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A handler that blocks holds up no other connection: 45 round trips on 15 others complete
/// while it is still blocked (it waits for a token sent only after them, so the check is
/// the order of events, not a time).
#[test]
fn a_blocked_handler_delays_no_other_connection() {
    let f = Fixture::new(Runtime::builder().pollers(1).handler_threads(2));
    let mut clients: Vec<WsClient> = (0..16).map(|_| f.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&format!("hello{i}")).unwrap();
        echo(c, &format!("hello{i}"));
    }
    clients[0].send_text("block").unwrap();
    f.wait_started("block");
    for round in 0..3 {
        for (i, c) in clients.iter_mut().enumerate().skip(1) {
            let text = format!("{round}-{i}");
            c.send_text(&text).unwrap();
            echo(c, &text);
        }
    }
    // Still blocked: its echo has not come.
    assert!(
        matches!(clients[0].recv_timeout(Duration::from_millis(50)), Ok(None)),
        "the blocked handler answered before its release"
    );
    f.release.send(()).unwrap();
    echo(&mut clients[0], "block");
    f.stop();
}

#[test]
fn each_connection_keeps_its_order_under_concurrency() {
    let f = Fixture::new(Runtime::builder().pollers(2).handler_threads(4));
    let mut clients: Vec<WsClient> = (0..12).map(|_| f.client()).collect();
    const N: usize = 300;
    for i in 0..N {
        for c in &mut clients {
            c.send_text(&i.to_string()).unwrap();
        }
    }
    let mut threads = HashSet::new();
    for c in &mut clients {
        for i in 0..N {
            threads.insert(echo(c, &i.to_string()));
        }
    }
    assert!(threads.len() > 1, "more than one thread handled the load");
    f.stop();
}

#[test]
fn the_pool_grows_under_blocking_load_up_to_its_maximum_and_shrinks_when_idle() {
    let f = Fixture::new(
        Runtime::builder()
            .pollers(1)
            .handler_threads(1)
            .max_handler_threads(4)
            .handler_grow_after(Duration::from_millis(5))
            .handler_idle_timeout(Duration::from_millis(200)),
    );
    assert_eq!(running_threads(&f.rt), 1);
    let mut clients: Vec<WsClient> = (0..5).map(|_| f.client()).collect();
    for c in &mut clients[..4] {
        c.send_text("block").unwrap();
    }
    // Four handlers blocked at once: only possible on four threads.
    for _ in 0..4 {
        f.wait_started("block");
    }
    assert_eq!(running_threads(&f.rt), 4);
    // At the maximum: a fifth blocked connection waits for a thread.
    clients[4].send_text("block").unwrap();
    assert!(
        f.started.recv_timeout(Duration::from_millis(200)).is_err(),
        "no fifth thread beyond the maximum"
    );
    assert_eq!(running_threads(&f.rt), 4);
    for _ in 0..5 {
        f.release.send(()).unwrap();
    }
    for c in &mut clients {
        echo(c, "block");
    }
    // Idle for 200 ms: back to the minimum, and still serving.
    wait_threads(&f.rt, 1);
    clients[0].send_text("after").unwrap();
    echo(&mut clients[0], "after");
    f.stop();
}

/// The first `OverBudget` event within `wait`, if any.
fn over_budget(ev: &Receiver<SystemEvent>, wait: Duration) -> Option<Duration> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ev.recv_timeout(left) {
            Ok(SystemEvent::OverBudget { elapsed, .. }) => return Some(elapsed),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

#[test]
fn the_budget_times_handlers_not_the_idle_wait_for_the_next_job() {
    let f = Fixture::new(
        Runtime::builder()
            .pollers(1)
            .handler_threads(1)
            .handler_budget(Some(Duration::from_millis(40))),
    );
    let ev = events(f.rt.node());
    let mut c = f.client();
    for text in ["a", "b", "c"] {
        c.send_text(text).unwrap();
        echo(&mut c, text);
        // Idle well past the budget between two jobs.
        assert_eq!(over_budget(&ev, Duration::from_millis(150)), None, "idle");
    }
    c.send_text("slow").unwrap();
    echo(&mut c, "slow");
    let elapsed = over_budget(&ev, WAIT).expect("the slow handler is reported");
    assert!(elapsed >= Duration::from_millis(60));
    f.stop();
}

#[test]
fn a_panic_closes_only_its_connection_and_is_reported() {
    quiet_test_panics();
    let f = Fixture::new(Runtime::builder().pollers(1).handler_threads(2));
    let ev = events(f.rt.node());
    let mut a = f.client();
    let mut b = f.client();
    let mut c = f.client();
    b.send_text("boom").unwrap();
    for i in 0..100 {
        a.send_text(&i.to_string()).unwrap();
        c.send_text(&i.to_string()).unwrap();
    }
    match b.recv_timeout(WAIT).unwrap() {
        Some(Message::Close(code, _)) => assert_eq!(code.as_u16(), 1011),
        other => panic!("b should be closed with 1011, got {other:?}"),
    }
    for i in 0..100 {
        echo(&mut a, &i.to_string());
        echo(&mut c, &i.to_string());
    }
    let mut exited = None;
    let mut restarted = None;
    while exited.is_none() || restarted.is_none() {
        match ev.recv_timeout(WAIT).expect("exit and restart reported") {
            SystemEvent::Exited { reason, .. } if reason.is_abnormal() => exited = Some(reason),
            SystemEvent::Restarted { child, .. } => restarted = Some(child),
            _ => {}
        }
    }
    match exited.unwrap() {
        ExitReason::Error(msg) | ExitReason::Panic(msg) => assert!(msg.contains(PANIC_MARK)),
        other => panic!("unexpected exit reason {other:?}"),
    }
    assert!(restarted.unwrap().starts_with("sockloop-handler-"));
    let mut d = f.client();
    d.send_text("new").unwrap();
    echo(&mut d, "new");
    f.stop();
}
