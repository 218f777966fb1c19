//! Sessions: resume across cuts, takeover, the window, exactly-once requests — through the
//! `HubClient` and raw WebSocket clients speaking the wire protocol.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sockloop::client::hub::{Backoff, ConnectionEvent, HubClient, HubClientOptions, HubEvent};
use sockloop::hub::{Ctx, Hub, HubBuilder, SessionConfig};
use sockloop::Server;

use super::{base, rt, serve};
use crate::util::WAIT;

fn hub_with_sessions(window: Duration) -> HubBuilder {
    base().sessions(SessionConfig::new().window(window))
}

fn opts() -> HubClientOptions {
    HubClientOptions::default().backoff(Backoff::new(
        Duration::from_millis(5),
        Duration::from_millis(50),
    ))
}

fn url(s: &Server, q: &str) -> String {
    format!("ws://{}/?{q}", s.local_addr())
}

#[test]
fn a_session_client_emits_and_gets_acks() {
    let rt = rt();
    let hub = hub_with_sessions(Duration::from_secs(5)).build();
    let s = serve(&rt, &hub);
    let c = HubClient::connect(&url(&s, "user=ann"), opts()).unwrap();
    assert!(c.session_id().is_some());
    let id = c.emit_with_ack("whoami", &json!(null), WAIT).unwrap();
    assert!(id.as_u64().is_some());
    let r = c.emit_with_ack("echo", &json!({"x": 1}), WAIT);
    assert!(r.is_err() || r.is_ok());
    assert_eq!(hub.stats().sessions, 1);
}
