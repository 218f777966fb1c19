//! End-to-end tests in headless Chromium (skipped with a message when it is not installed,
//! required under CI=true).

use sockloop::http::Response;
use sockloop::{on_message, Listen, Runtime, WsConn, WsMessage, WsServerConfig};

use crate::cdp::Chromium;

const ECHO_PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>echo</title>
<ul id="log"></ul>
<script>
const ws = new WebSocket(`ws://${location.host}/ws`);
ws.onopen = () => { ws.send("héllo from the browser"); ws.send("x".repeat(100000)); };
ws.onmessage = (e) => {
  const li = document.createElement("li");
  li.textContent = e.data.length > 1000 ? `long:${e.data.length}` : e.data;
  document.getElementById("log").appendChild(li);
};
</script>"#;

#[test]
fn browser_websocket_echo_through_the_http_hook_page() {
    let Some(mut browser) = Chromium::launch() else {
        return;
    };
    let rt = Runtime::builder().pollers(2).build().unwrap();
    let cfg = WsServerConfig::new()
        .path(Some("/ws".into()))
        .http(|req| match req.path() {
            "/" => Response::html(ECHO_PAGE),
            _ => Response::not_found(),
        });
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(
            cfg,
            on_message(|ws: &WsConn, m: WsMessage<'_>| {
                if let WsMessage::Text(t) = m {
                    let _ = ws.send_text(t);
                }
            }),
        )
        .unwrap();
    let tab = browser.open(&format!("http://{}/", s.local_addr()));
    browser.wait_for(&tab, "document.querySelectorAll('#log li').length === 2");
    let items = browser.eval(
        &tab,
        "[...document.querySelectorAll('#log li')].map(li => li.textContent)",
    );
    assert_eq!(
        items,
        serde_json::json!(["héllo from the browser", "long:100000"])
    );
}
