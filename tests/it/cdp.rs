//! A small Chrome DevTools Protocol driver for end-to-end browser tests: headless Chromium
//! started with `--remote-debugging-port=0`, driven over sockloop's own blocking WebSocket
//! client. Tabs are CDP sessions (`Target.attachToTarget` with `flatten`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sockloop::client::ws::{Message, WsClient, WsClientOptions};

/// Where Debian's package puts the browser.
const CANDIDATES: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];

/// Whether a missing browser fails the test (CI, or `SOCKLOOP_REQUIRE_BROWSER=1`) rather
/// than skipping it with a message.
fn browser_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("SOCKLOOP_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

/// A running headless Chromium and the CDP connection to it.
pub struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WsClient,
    next_id: u64,
}

/// One tab: a flattened CDP session.
#[derive(Clone)]
pub struct Tab {
    session: String,
}

impl Chromium {
    /// Starts the browser, or returns `None` (after saying why) when it is not installed
    /// and not required.
    pub fn launch() -> Option<Chromium> {
        let Some(bin) = CANDIDATES.iter().find(|p| std::path::Path::new(p).exists()) else {
            assert!(
                !browser_required(),
                "chromium is required (CI=true) but not installed; .ci/run installs it"
            );
            eprintln!("browser test skipped: chromium is not installed (apt-get install chromium)");
            return None;
        };
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-quic",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let url = devtools_url(&mut child);
        let opts = WsClientOptions::default().deflate(false);
        let ws = WsClient::connect(&url, opts).expect("connect to the DevTools socket");
        Some(Chromium {
            child,
            _profile: profile,
            ws,
            next_id: 0,
        })
    }

    /// Sends one CDP command and waits for its result (events in between are skipped).
    pub fn call(&mut self, tab: Option<&Tab>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(t) = tab {
            msg["sessionId"] = json!(t.session);
        }
        self.ws
            .send_text(&msg.to_string())
            .expect("send to chromium");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "chromium did not answer {method}");
            let Some(Message::Text(t)) = self.ws.recv_timeout(left).expect("recv from chromium")
            else {
                continue;
            };
            let v: Value = serde_json::from_str(&t).expect("CDP sends JSON");
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method} failed: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab.
    pub fn open(&mut self, url: &str) -> Tab {
        let target = self.call(None, "Target.createTarget", json!({ "url": url }));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        Tab {
            session: attached["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_owned(),
        }
    }

    /// Makes the tab's viewport `width` × `height` CSS pixels (a phone's when `mobile`):
    /// CDP's `Emulation.setDeviceMetricsOverride`; media queries follow it.
    pub fn viewport(&mut self, tab: &Tab, width: u32, height: u32, mobile: bool) {
        let metrics = json!({
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile
        });
        self.call(Some(tab), "Emulation.setDeviceMetricsOverride", metrics);
    }

    /// Evaluates `expr` in the tab (promises awaited) and returns its JSON value.
    pub fn eval(&mut self, tab: &Tab, expr: &str) -> Value {
        let r = self.call(
            Some(tab),
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "page threw evaluating {expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` until it is truthy (a bounded wait that fails, never a hopeful sleep).
    pub fn wait_for(&mut self, tab: &Tab, expr: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.eval(tab, expr);
            let truthy =
                !matches!(v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let page = self.eval(
                    tab,
                    "document.body ? document.body.innerText.slice(0, 3000) : ''",
                );
                panic!(
                    "timed out waiting for `{expr}`; the page shows:\n{}",
                    page.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads Chromium's stderr until it prints its DevTools address, then keeps draining it on
/// a thread so the browser never blocks on a full pipe.
fn devtools_url(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("ws://") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line[i..].trim().to_owned());
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("chromium printed its DevTools address")
}
