//! End-to-end tests in headless Chromium (skipped with a message when it is not installed,
//! required under CI=true).

use sockloop::http::Response;
use sockloop::{on_message, Listen, Runtime, WsConn, WsMessage, WsServerConfig};

use crate::cdp::{Chromium, Tab};
use crate::chat::server::{self as chat_server, ChatConfig};

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

/// A JavaScript string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// Every message line of the room shown in the tab.
const SHOWN: &str = "[...document.querySelectorAll('#messages .log.active .msg')]";
/// Every message line of every room the tab knows.
const ALL_LINES: &str = "[...document.querySelectorAll('#messages .msg')]";
/// The user list shown in the tab, comma-separated.
const USERS: &str =
    "[...document.querySelectorAll('#users li span')].map(s => s.textContent).join(',')";

/// A line of the shown room matching the CSS `class` whose text contains `text`.
fn shown(class: &str, text: &str) -> String {
    format!(
        "{SHOWN}.some(m => m.matches({}) && m.textContent.includes({}))",
        js(class),
        js(text)
    )
}

/// Loads the page, picks `nick` in the dialog and waits until the lobby is shown.
fn enter(b: &mut Chromium, tab: &Tab, nick: &str) {
    b.wait_for(tab, "document.getElementById('nickform') !== null");
    b.eval(
        tab,
        &format!(
            "document.getElementById('nick').value = {}; \
             document.getElementById('nickform').requestSubmit(); true",
            js(nick)
        ),
    );
    let me = format!("document.getElementById('me').textContent === {}", js(nick));
    b.wait_for(tab, &me);
    b.wait_for(
        tab,
        "document.getElementById('current').textContent === '#lobby'",
    );
}

/// Types `text` in the message box and submits it, as a person would.
fn say(b: &mut Chromium, tab: &Tab, text: &str) {
    b.eval(
        tab,
        &format!(
            "document.getElementById('text').value = {}; \
             document.getElementById('sendform').requestSubmit(); true",
            js(text)
        ),
    );
}

#[test]
fn browser_chat_two_tabs_messages_users_typing_commands_and_private_messages() {
    let Some(mut b) = Chromium::launch() else {
        return;
    };
    let rt = Runtime::builder()
        .pollers(2)
        .handler_threads(2)
        .build()
        .unwrap();
    let cfg = ChatConfig {
        addr: "127.0.0.1:0".into(),
        ..ChatConfig::default()
    };
    let chat = chat_server::serve(&rt, &cfg).unwrap();
    let url = format!("http://{}/", chat.server.local_addr());
    let ann = b.open(&url);
    let bob = b.open(&url);
    enter(&mut b, &ann, "ann");
    enter(&mut b, &bob, "bob");

    // Live user lists (the hub's room:users) and a system line for the join.
    b.wait_for(&ann, &format!("{USERS} === 'ann,bob'"));
    b.wait_for(&bob, &format!("{USERS} === 'ann,bob'"));
    b.wait_for(&ann, &shown(".system", "bob joined #lobby"));

    // Messages both ways; user text is rendered as text, never as HTML.
    say(&mut b, &ann, "hello bob");
    b.wait_for(
        &bob,
        &format!(
            "{SHOWN}.some(m => m.matches('.text') && m.querySelector('.from').textContent === 'ann' \
             && m.textContent.includes('hello bob'))"
        ),
    );
    say(
        &mut b,
        &bob,
        "hi ann <b>bold</b><img src=x onerror=alert(1)>",
    );
    b.wait_for(&ann, &shown(".text", "hi ann <b>bold</b><img"));
    assert_eq!(
        b.eval(
            &ann,
            "document.querySelector('#messages b, #messages img') === null"
        ),
        serde_json::json!(true),
        "user text must not become markup"
    );

    // Typing: ann types, bob sees the indicator; it ends when ann sends.
    b.eval(
        &ann,
        "const t = document.getElementById('text'); t.value = 'typ'; \
         t.dispatchEvent(new Event('input')); true",
    );
    b.wait_for(
        &bob,
        "document.getElementById('typing').textContent === 'ann is typing…'",
    );
    // Slash commands, parsed on the server: /me and /shrug.
    say(&mut b, &ann, "/me waves");
    b.wait_for(&bob, &shown(".me", "* ann waves"));
    b.wait_for(&bob, "document.getElementById('typing').textContent === ''");
    say(&mut b, &bob, "/shrug oh well");
    b.wait_for(&ann, &shown(".text", "oh well ¯\\_(ツ)_/¯"));

    // A private message reaches the recipient only (cy is the witness).
    let cy = b.open(&url);
    enter(&mut b, &cy, "cy");
    b.wait_for(&ann, &format!("{USERS} === 'ann,bob,cy'"));
    say(&mut b, &ann, "/msg bob psst, a secret");
    b.wait_for(&bob, &shown(".pm.in", "psst, a secret"));
    b.wait_for(&ann, &shown(".pm.out", "psst, a secret"));
    // Anything sent to cy by mistake would arrive before this later public message.
    say(&mut b, &ann, "after the secret");
    b.wait_for(&cy, &shown(".text", "after the secret"));
    b.wait_for(&bob, &shown(".text", "after the secret"));
    let leaked = format!("{ALL_LINES}.some(m => m.textContent.includes('psst'))");
    assert_eq!(b.eval(&cy, &leaked), serde_json::json!(false), "cy saw it");
    let ann_in = format!("{ALL_LINES}.some(m => m.matches('.pm.in'))");
    assert_eq!(b.eval(&ann, &ann_in), serde_json::json!(false));

    // /who and unknown commands answer the caller only.
    say(&mut b, &bob, "/who");
    b.wait_for(&bob, &shown(".system", "in #lobby (3): ann, bob, cy"));
    say(&mut b, &bob, "/frobnicate now");
    b.wait_for(&bob, &shown(".error", "unknown command /frobnicate"));
    say(&mut b, &bob, "after the commands");
    b.wait_for(&ann, &shown(".text", "after the commands"));
    let echoed = format!(
        "{ALL_LINES}.some(m => m.textContent.includes('in #lobby (3)') \
         || m.textContent.includes('frobnicate'))"
    );
    assert_eq!(b.eval(&ann, &echoed), serde_json::json!(false));

    // /nick renames everywhere: the user lists follow and the rooms are told.
    say(&mut b, &bob, "/nick bobby");
    b.wait_for(
        &bob,
        "document.getElementById('me').textContent === 'bobby'",
    );
    b.wait_for(&ann, &format!("{USERS} === 'ann,bobby,cy'"));
    b.wait_for(&ann, &shown(".system", "bob is now known as bobby"));

    // Rooms: /join from the message box, the join form, /leave.
    say(&mut b, &ann, "/join dev");
    b.wait_for(
        &ann,
        "document.getElementById('current').textContent === '#dev'",
    );
    b.wait_for(&ann, &format!("{USERS} === 'ann'"));
    b.eval(
        &bob,
        "document.getElementById('roomname').value = 'dev'; \
         document.getElementById('roomform').requestSubmit(); true",
    );
    b.wait_for(
        &bob,
        "document.getElementById('current').textContent === '#dev'",
    );
    b.wait_for(&ann, &format!("{USERS} === 'ann,bobby'"));
    b.wait_for(&ann, &shown(".system", "bobby joined #dev"));
    say(&mut b, &bob, "/leave");
    b.wait_for(
        &bob,
        "document.getElementById('current').textContent === '#lobby'",
    );
    b.wait_for(&ann, &shown(".system", "bobby left #dev"));
    b.wait_for(&ann, &format!("{USERS} === 'ann'"));

    assert!(chat.shutdown(std::time::Duration::from_secs(5)));
}
