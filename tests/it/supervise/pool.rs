//! The runtime's handler threads under a supervisor: a panicking handler's thread is
//! restarted without losing other connections' queued events; overruns are reported.

use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::http::Request;
use sockloop::{Listen, Runtime, WsConn, WsHandler, WsServerConfig};

use super::*;

/// Echoes text with the id of the handler thread that handled it; panics on "boom";
/// sleeps on "slow".
struct Echo;

impl WsHandler for Echo {
    fn on_text(&mut self, ws: &WsConn, text: &str) {
        match text {
            "boom" => panic!("{PANIC_MARK}: handler asked to fail"),
            "slow" => thread::sleep(Duration::from_millis(60)),
            _ => {}
        }
        let _ = ws.send_text(format!("{text} {:?}", thread::current().id()));
    }
}

fn server(rt: &Runtime) -> (sockloop::Server, String) {
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(WsServerConfig::new(), |_: &WsConn, _: &Request| Echo)
        .unwrap();
    let url = format!("ws://{}/", s.local_addr());
    (s, url)
}

fn text(c: &mut WsClient) -> String {
    match c.recv_timeout(WAIT).unwrap() {
        Some(Message::Text(t)) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn a_panicking_handler_restarts_its_thread_and_loses_no_other_event() {
    quiet_test_panics();
    let rt = Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .build()
        .unwrap();
    let ev = events(rt.node());
    let (_server, url) = server(&rt);
    let mut a = WsClient::connect(&url, WsClientOptions::default()).unwrap();
    let mut b = WsClient::connect(&url, WsClientOptions::default()).unwrap();
    a.send_text("hello").unwrap();
    let before = text(&mut a);
    // a's events queue up behind b's panic on the one handler thread.
    b.send_text("boom").unwrap();
    for i in 0..500 {
        a.send_text(&i.to_string()).unwrap();
    }
    match b.recv_timeout(WAIT).unwrap() {
        Some(Message::Close(code, _)) => assert_eq!(code.as_u16(), 1011),
        other => panic!("b should be closed with 1011, got {other:?}"),
    }
    let child = wait_event(&ev, |e| match e {
        SystemEvent::Restarted { child, .. } => Some(child.clone()),
        _ => None,
    });
    assert_eq!(child, "sockloop-handler-0");
    let mut threads = std::collections::HashSet::new();
    for i in 0..500 {
        let t = text(&mut a);
        let (n, thread) = t.split_once(' ').unwrap();
        assert_eq!(n, i.to_string(), "in order, none lost");
        threads.insert(thread.to_owned());
    }
    let (_, old) = before.split_once(' ').unwrap();
    assert!(
        !threads.contains(old),
        "a fresh thread handled the later events"
    );
    rt.shutdown(Duration::from_secs(2));
}

#[test]
fn a_handler_over_its_budget_is_reported_to_the_hook() {
    let rt = Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .handler_budget(Some(Duration::from_millis(20)))
        .build()
        .unwrap();
    let ev = events(rt.node());
    let (_server, url) = server(&rt);
    let mut a = WsClient::connect(&url, WsClientOptions::default()).unwrap();
    a.send_text("slow").unwrap();
    assert!(text(&mut a).starts_with("slow"));
    let (elapsed, budget) = wait_event(&ev, |e| match e {
        SystemEvent::OverBudget {
            elapsed, budget, ..
        } => Some((*elapsed, *budget)),
        _ => None,
    });
    assert_eq!(budget, Duration::from_millis(20));
    assert!(elapsed >= Duration::from_millis(60));
    rt.shutdown(Duration::from_secs(2));
}
