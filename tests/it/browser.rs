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
    enter_as(b, tab, nick, nick);
}

/// Loads the page, asks for `wanted` in the dialog and waits until it is `got` in the lobby.
fn enter_as(b: &mut Chromium, tab: &Tab, wanted: &str, got: &str) {
    // The page's script is in (the form submits through it).
    b.wait_for(
        tab,
        "document.getElementById('nickform')?.onsubmit != null && typeof sockloop === 'object'",
    );
    b.eval(
        tab,
        &format!(
            "document.getElementById('nick').value = {}; \
             document.getElementById('nickform').requestSubmit(); true",
            js(wanted)
        ),
    );
    let me = format!("document.getElementById('me').textContent === {}", js(got));
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

/// A chat server on port 0 with `cfg`'s settings, and the page's address.
fn chat_with(cfg: ChatConfig) -> (Runtime, chat_server::Chat, String) {
    let rt = Runtime::builder()
        .pollers(2)
        .handler_threads(2)
        .build()
        .unwrap();
    let cfg = ChatConfig {
        addr: "127.0.0.1:0".into(),
        ..cfg
    };
    let chat = chat_server::serve(&rt, &cfg).unwrap();
    let url = format!("http://{}/", chat.server.local_addr());
    (rt, chat, url)
}

/// Whether the tab shows `room` as its current room (`–`: none).
fn current(room: &str) -> String {
    format!(
        "document.getElementById('current').textContent === {}",
        js(room)
    )
}

/// Clicks the element `selector` selects, as a person would.
fn click(b: &mut Chromium, tab: &Tab, selector: &str) {
    let found = b.eval(
        tab,
        &format!(
            "(() => {{ const e = document.querySelector({}); if (e) e.click(); return !!e; }})()",
            js(selector)
        ),
    );
    assert_eq!(found, serde_json::json!(true), "nothing matches {selector}");
}

/// Clicks the first element matching `selector` whose text contains `text`.
fn click_text(b: &mut Chromium, tab: &Tab, selector: &str, text: &str) {
    let found = b.eval(
        tab,
        &format!(
            "(() => {{ const e = [...document.querySelectorAll({})]\
             .find(e => e.textContent.includes({})); if (e) e.click(); return !!e; }})()",
            js(selector),
            js(text)
        ),
    );
    assert_eq!(found, serde_json::json!(true), "no {selector} with {text}");
}

/// The "More rooms" list, `#room:users` entries, comma-separated.
const MORE_ROOMS: &str = "[...document.querySelectorAll('#allrooms li.room')]\
    .map(li => li.children[0].textContent + ':' + li.children[1].textContent).join(',')";
/// The shown room's messages as `author: text`, the author as the line renders it.
const AUTHORED: &str =
    "JSON.stringify([...document.querySelectorAll('#messages .log.active .msg.text')]\
    .map(m => m.querySelector('.from').textContent + ': ' + m.lastChild.textContent))";

/// Submits `n` messages (`flood 0`, `flood 1`…) at once, as fast as a script can.
fn flood(b: &mut Chromium, tab: &Tab, n: usize) {
    b.eval(
        tab,
        &format!(
            "{{ const t = document.getElementById('text'), f = document.getElementById('sendform'); \
             for (let i = 0; i < {n}; i++) {{ t.value = `flood ${{i}}`; f.requestSubmit(); }} }} true"
        ),
    );
}

/// Once the `sent` lines (`flood …` and `through`) are all either shown or counted as not
/// sent: the counts of the shown room's "not sent" lines, in order (false until then).
fn settled(sent: usize) -> String {
    format!(
        "(() => {{ const lines = [...document.querySelectorAll('#messages .log.active .msg')]; \
         const got = lines.filter(m => m.matches('.text') && /^(flood \\d+|through)$/.test(m.lastChild.textContent)).length; \
         const runs = lines.filter(m => m.matches('.error.limited')).map(m => parseInt(m.lastChild.textContent, 10)); \
         return got + runs.reduce((a, b) => a + b, 0) === {sent} ? runs : false; }})()"
    )
}

#[test]
fn browser_chat_suffix_notice_no_room_room_list_authors_and_rate_limited_runs() {
    let Some(mut b) = Chromium::launch() else {
        return;
    };
    // 50 events per connection, refilled over 10 hours: nothing refills during the test, so
    // the flood below is refused from a known point on, in one run.
    let limit = sockloop::hub::RateLimit::per_conn(50, std::time::Duration::from_secs(36_000));
    let (_rt, chat, url) = chat_with(ChatConfig {
        rate_limit: Some(limit),
        ..ChatConfig::default()
    });
    let ann = b.open(&url);
    enter(&mut b, &ann, "ann");

    // The suffix notice: a second "ann" becomes ann2 and is told so, in the lobby.
    let zed = b.open(&url);
    enter_as(&mut b, &zed, "ann", "ann2");
    b.wait_for(&zed, &shown(".system", "ann is taken: you are ann2"));
    b.wait_for(&zed, &shown(".system", "you joined #lobby"));

    // The room list: ann opens #dev; the other tab finds it under More rooms with its head
    // count, and joins it with a click.
    say(&mut b, &ann, "/join dev");
    b.wait_for(&ann, &current("#dev"));
    click(&mut b, &zed, "#refreshrooms");
    b.wait_for(&zed, &format!("{MORE_ROOMS} === '#dev:1'"));
    click_text(&mut b, &zed, "#allrooms li.room", "#dev");
    b.wait_for(&zed, &current("#dev"));
    b.wait_for(&zed, &format!("{USERS} === 'ann,ann2'"));
    b.wait_for(&zed, &format!("{MORE_ROOMS} === ''"));
    b.wait_for(&ann, &shown(".system", "ann2 joined #dev"));

    // Past lines keep their author after /nick, on both tabs.
    say(&mut b, &zed, "said as ann2");
    b.wait_for(&ann, &shown(".text", "said as ann2"));
    say(&mut b, &zed, "/nick zed");
    b.wait_for(&ann, &shown(".system", "ann2 is now known as zed"));
    say(&mut b, &zed, "said as zed");
    b.wait_for(&ann, &shown(".text", "said as zed"));
    b.wait_for(&zed, &shown(".text", "said as zed"));
    let authored = serde_json::json!(r#"["ann2: said as ann2","zed: said as zed"]"#);
    assert_eq!(b.eval(&ann, AUTHORED), authored);
    assert_eq!(b.eval(&zed, AUTHORED), authored);

    // In no room: the page says so, keeps plain text back, runs commands, and /join works
    // and says so; the room list offers the rooms to go back to.
    say(&mut b, &zed, "/leave");
    b.wait_for(&zed, &current("#lobby"));
    b.wait_for(&zed, &shown(".system", "you left #dev"));
    say(&mut b, &zed, "/leave");
    b.wait_for(&zed, &current("–"));
    b.wait_for(
        &zed,
        &shown(".system", "you left #lobby; you are in no room"),
    );
    b.wait_for(&zed, &format!("{MORE_ROOMS} === '#dev:1,#lobby:1'"));
    say(&mut b, &zed, "anyone here?");
    b.wait_for(&zed, &shown(".error", "you are in no room"));
    say(&mut b, &zed, "/who");
    b.wait_for(
        &zed,
        &shown(".error", "you are in no room: /join ROOM first"),
    );
    say(&mut b, &zed, "/help");
    b.wait_for(&zed, &shown(".system", "commands: /nick NEW"));
    say(&mut b, &zed, "/join dev");
    b.wait_for(&zed, &current("#dev"));
    let joined_twice = format!(
        "{SHOWN}.filter(m => m.matches('.system') && m.textContent.includes('you joined #dev')).length === 2"
    );
    b.wait_for(&zed, &joined_twice);
    b.wait_for(&zed, &shown(".system", "commands: /nick NEW"));
    b.wait_for(&ann, &shown(".system", "zed joined #dev"));
    let sent = format!("{ALL_LINES}.some(m => m.textContent.includes('anyone here?'))");
    assert_eq!(b.eval(&ann, &sent), serde_json::json!(false));

    // A flood: 60 sends at once past the budget; one line counts the refused ones.
    flood(&mut b, &zed, 60);
    let runs = b.wait_for(&zed, &settled(60));
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "one run: {runs}");
    let refused = runs[0].as_u64().unwrap();
    assert!(refused >= 10, "only {refused} of 60 refused");
    let run = shown(
        ".error.limited",
        &format!("{refused} messages not sent: slow down"),
    );
    assert_eq!(b.eval(&zed, &run), serde_json::json!(true));
    let errors = format!("{ALL_LINES}.filter(m => m.matches('.error')).length");
    assert_eq!(
        b.eval(&zed, &errors),
        serde_json::json!(3),
        "no line per refusal"
    );
    // What got through is what the other tab saw.
    let flood = format!(
        "{ALL_LINES}.filter(m => m.matches('.text') && m.lastChild.textContent.startsWith('flood ')).length"
    );
    let through = 60 - refused;
    b.wait_for(&ann, &format!("{flood} === {through}"));
    assert_eq!(b.eval(&ann, &errors), serde_json::json!(0));

    assert!(chat.shutdown(std::time::Duration::from_secs(5)));
}

/// Whether the element `selector` selects is displayed within the viewport (computed style
/// and bounding box, as laid out).
fn on_screen(selector: &str) -> String {
    format!(
        "(() => {{ const e = document.querySelector({}); const r = e.getBoundingClientRect(); \
         const s = getComputedStyle(e); return s.display !== 'none' && s.visibility !== 'hidden' \
         && r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0 \
         && r.right <= innerWidth + 0.5 && r.bottom <= innerHeight + 0.5; }})()",
        js(selector)
    )
}

/// Whether the element `selector` selects is not displayed.
fn hidden(selector: &str) -> String {
    format!(
        "getComputedStyle(document.querySelector({})).display === 'none'",
        js(selector)
    )
}

#[test]
fn browser_chat_narrow_screen_puts_the_side_bars_behind_toggles() {
    let Some(mut b) = Chromium::launch() else {
        return;
    };
    let (_rt, chat, url) = chat_with(ChatConfig::default());
    let ann = b.open(&url);
    b.viewport(&ann, 390, 760, true);
    enter(&mut b, &ann, "ann");
    assert_eq!(b.eval(&ann, "innerWidth"), serde_json::json!(390));

    // One column: the messages and the message box fill the width; the side bars are hidden
    // and their toggles shown.
    for sel in [
        "#messages",
        "#text",
        "#sendform button",
        "#togglerooms",
        "#toggleusers",
    ] {
        assert_eq!(
            b.eval(&ann, &on_screen(sel)),
            serde_json::json!(true),
            "{sel}"
        );
    }
    let wide = "document.getElementById('messages').getBoundingClientRect().width >= 380 \
         && document.documentElement.scrollWidth <= innerWidth";
    assert_eq!(b.eval(&ann, wide), serde_json::json!(true));
    let one_row =
        "(() => { const t = (id) => document.getElementById(id).getBoundingClientRect().top; \
         return Math.abs(t('togglerooms') - t('toggleusers')) < 1; })()";
    assert_eq!(
        b.eval(&ann, one_row),
        serde_json::json!(true),
        "the header wraps"
    );
    for sel in ["#roomsbar", "#usersbar"] {
        assert_eq!(b.eval(&ann, &hidden(sel)), serde_json::json!(true), "{sel}");
    }

    // The rooms toggle opens the rooms bar (the users bar stays closed), and the room list
    // is in it; picking a room closes it.
    click(&mut b, &ann, "#togglerooms");
    b.wait_for(&ann, &on_screen("#roomsbar"));
    assert_eq!(b.eval(&ann, &hidden("#usersbar")), serde_json::json!(true));
    b.wait_for(&ann, &on_screen("#rooms li.room.active"));
    b.wait_for(&ann, &on_screen("#allrooms li"));
    click_text(&mut b, &ann, "#rooms li.room", "#lobby");
    b.wait_for(&ann, &hidden("#roomsbar"));

    // The users toggle: the users bar with the room's users; a second click closes it.
    click(&mut b, &ann, "#toggleusers");
    b.wait_for(&ann, &on_screen("#usersbar"));
    b.wait_for(&ann, &on_screen("#users li.user.self"));
    assert_eq!(b.eval(&ann, &hidden("#roomsbar")), serde_json::json!(true));
    click(&mut b, &ann, "#toggleusers");
    b.wait_for(&ann, &hidden("#usersbar"));

    // Joining from the drawer closes it; an unread line elsewhere shows on the rooms toggle.
    click(&mut b, &ann, "#togglerooms");
    b.wait_for(&ann, &on_screen("#roomform input"));
    b.eval(
        &ann,
        "document.getElementById('roomname').value = 'dev'; \
         document.getElementById('roomform').requestSubmit(); true",
    );
    b.wait_for(&ann, &current("#dev"));
    b.wait_for(&ann, &hidden("#roomsbar"));
    let bob = b.open(&url);
    enter(&mut b, &bob, "bob");
    say(&mut b, &bob, "hello lobby");
    b.wait_for(&ann, &on_screen("#togglerooms .badge"));
    assert_eq!(
        b.eval(
            &ann,
            "document.querySelector('#togglerooms .badge').textContent"
        ),
        serde_json::json!("1")
    );

    // A wide screen: the side bars beside the messages, no toggles.
    b.viewport(&ann, 1200, 800, false);
    b.wait_for(&ann, &hidden("#togglerooms"));
    assert_eq!(
        b.eval(&ann, &hidden("#toggleusers")),
        serde_json::json!(true)
    );
    for sel in ["#roomsbar", "#usersbar", "#messages"] {
        assert_eq!(
            b.eval(&ann, &on_screen(sel)),
            serde_json::json!(true),
            "{sel}"
        );
    }
    let beside = "(() => { const r = (id) => document.getElementById(id).getBoundingClientRect(); \
         return r('roomsbar').right <= r('messages').left + 0.5 \
         && r('messages').right <= r('usersbar').left + 0.5; })()";
    assert_eq!(b.eval(&ann, beside), serde_json::json!(true));

    assert!(chat.shutdown(std::time::Duration::from_secs(5)));
}

#[test]
fn browser_chat_a_send_that_gets_through_ends_the_run_of_refused_ones() {
    let Some(mut b) = Chromium::launch() else {
        return;
    };
    // 10 at once, then 5 a second.
    let limit = sockloop::hub::RateLimit::per_conn(10, std::time::Duration::from_secs(2));
    let (_rt, chat, url) = chat_with(ChatConfig {
        rate_limit: Some(limit),
        ..ChatConfig::default()
    });
    let ann = b.open(&url);
    enter(&mut b, &ann, "ann");
    flood(&mut b, &ann, 30);
    let mut sent = 30;
    b.wait_for(&ann, &settled(sent));
    // One line at a time, each settled before the next, until one gets through (the
    // bucket refills on its own); the refused ones join the run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let through = shown(".text", "through");
    loop {
        say(&mut b, &ann, "through");
        sent += 1;
        b.wait_for(&ann, &settled(sent));
        if b.eval(&ann, &through) == serde_json::json!(true) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nothing got through");
    }
    let before = b.wait_for(&ann, &settled(sent));
    // The next refusals start a line of their own, below the line that got through; the
    // earlier lines keep their counts.
    flood(&mut b, &ann, 30);
    sent += 30;
    let after = b.wait_for(&ann, &settled(sent));
    let (before, after) = (before.as_array().unwrap(), after.as_array().unwrap());
    assert!(after.len() > before.len(), "{before:?} then {after:?}");
    assert_eq!(&after[..before.len()], &before[..]);
    let order = "(() => { const lines = [...document.querySelectorAll('#messages .log.active .msg')]; \
         const at = lines.findIndex(m => m.matches('.text') && m.lastChild.textContent === 'through'); \
         const runs = lines.map((m, i) => m.matches('.error.limited') ? i : -1).filter(i => i >= 0); \
         return runs.at(-1) > at && runs[0] < at; })()";
    assert_eq!(b.eval(&ann, order), serde_json::json!(true));

    assert!(chat.shutdown(std::time::Duration::from_secs(5)));
}

/// A proxy that forwards HTTP but answers every WebSocket upgrade with 403, as a corporate
/// proxy that blocks WebSocket would: real sockets, loopback, a thread per direction.
struct UpgradeBlocker {
    addr: std::net::SocketAddr,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    block: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl UpgradeBlocker {
    fn start(upstream: std::net::SocketAddr) -> UpgradeBlocker {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let refused = std::sync::Arc::new(AtomicUsize::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let block = std::sync::Arc::new(AtomicBool::new(true));
        let (r, s, bl) = (refused.clone(), stop.clone(), block.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let (r, bl) = (r.clone(), bl.clone());
                std::thread::spawn(move || blocker_conn(client, upstream, &r, &bl));
            }
        });
        UpgradeBlocker {
            addr,
            refused,
            block,
            stop,
            accept: Some(accept),
        }
    }

    fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Blocks upgrades (the default) or lets them through.
    fn block(&self, on: bool) {
        self.block.store(on, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for UpgradeBlocker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head from `client`; a WebSocket upgrade gets 403 and the connection
/// closes; anything else is forwarded with the rest of the connection both ways. (Browsers
/// open every WebSocket on a new connection, so looking at first heads is enough.)
fn blocker_conn(
    mut client: std::net::TcpStream,
    upstream: std::net::SocketAddr,
    refused: &std::sync::atomic::AtomicUsize,
    block: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if lower.contains("\r\nupgrade: websocket") && block.load(std::sync::atomic::Ordering::Acquire)
    {
        refused.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _ = client.write_all(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 19\r\nConnection: close\r\n\r\nwebsocket forbidden",
        );
        return;
    }
    let Ok(mut server) = std::net::TcpStream::connect(upstream) else {
        return;
    };
    if server.write_all(&head).is_err() {
        return;
    }
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client, &mut server);
        let _ = server.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut s2, &mut c2);
    let _ = c2.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}

/// The IP address of a TCP listener.
fn inet(a: &sockloop::Addr) -> std::net::SocketAddr {
    match a {
        sockloop::Addr::Inet(a) => *a,
        other => panic!("not an IP address: {other}"),
    }
}

/// The transport the tab's sockloop.js client is on.
const TRANSPORT: &str = "hub.connected && hub.transport";

#[test]
fn browser_chat_works_over_long_polling_when_websocket_upgrades_are_blocked() {
    let Some(mut b) = Chromium::launch() else {
        return;
    };
    let (_rt, chat, _) = chat_with(ChatConfig::default());
    let proxy = UpgradeBlocker::start(inet(chat.server.local_addr()));
    let url = format!("http://{}/", proxy.addr);
    let ann = b.open(&url);
    let bob = b.open(&url);
    enter(&mut b, &ann, "ann");
    enter(&mut b, &bob, "bob");
    // Each tab tried WebSocket first, was refused, and fell back to long-polling.
    assert_eq!(b.wait_for(&ann, TRANSPORT), "polling");
    assert_eq!(b.wait_for(&bob, TRANSPORT), "polling");
    assert!(proxy.refused() >= 2, "refused {}", proxy.refused());
    b.wait_for(
        &ann,
        "document.getElementById('status').textContent === 'online (polling)'",
    );

    // Users, messages both ways, a command and its answer (an ack) over HTTP.
    b.wait_for(&ann, &format!("{USERS} === 'ann,bob'"));
    say(&mut b, &ann, "hello over polling");
    b.wait_for(&bob, &shown(".text", "hello over polling"));
    say(&mut b, &bob, "héllo back, ünïcode ✓");
    b.wait_for(&ann, &shown(".text", "héllo back, ünïcode ✓"));
    say(&mut b, &bob, "/join dev");
    b.wait_for(&bob, &current("#dev"));
    say(&mut b, &ann, "/join dev");
    b.wait_for(&ann, &current("#dev"));
    b.wait_for(&bob, &shown(".system", "ann joined #dev"));
    say(&mut b, &ann, "in dev");
    b.wait_for(&bob, &shown(".text", "in dev"));
    // Still on long-polling: nothing was WebSocket.
    assert_eq!(b.eval(&ann, "hub.transport"), "polling");
    assert_eq!(b.eval(&bob, "hub.transport"), "polling");
    assert_eq!(chat.hub.stats().sessions, 2);
}

/// The numbered test lines (`L007-ann`) of the tab's room, in the order shown.
const NUMBERED: &str = "[...document.querySelectorAll('#messages .log.active .msg.text')]\
     .map(m => (m.textContent.match(/L\\d{3}-(ann|bob)/) || [])[0]).filter(Boolean)";

#[test]
fn browser_chat_two_tabs_keep_chatting_while_a_proxy_cuts_their_connections() {
    chat_through_cuts(false);
}

#[test]
fn browser_chat_two_tabs_keep_chatting_over_long_polling_while_a_proxy_cuts_requests() {
    chat_through_cuts(true);
}

/// Two tabs chat through the fault-injecting proxy (every connection cut after a random
/// number of bytes, and all of them every 4 lines); with `polling`, WebSocket upgrades are
/// refused behind it, so the cuts fall on long-polling requests and responses.
fn chat_through_cuts(polling: bool) {
    let Some(mut b) = Chromium::launch() else {
        return;
    };
    let (_rt, _chat, _) = chat_with(ChatConfig {
        rate_limit: None,
        ..ChatConfig::default()
    });
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let transport = if polling { "polling" } else { "websocket" };
    println!("browser chaos ({transport}): seed {seed} (CHAOS_SEED reruns it)");
    let upstream = inet(_chat.server.local_addr());
    let blocker = polling.then(|| UpgradeBlocker::start(upstream));
    let to = blocker.as_ref().map_or(upstream, |bl| bl.addr);
    let proxy = crate::chaos::Proxy::start(to, seed, None);
    let addr = proxy.url().trim_start_matches("ws://").to_owned();
    let url = format!("http://{addr}");
    let ann = b.open(&url);
    let bob = b.open(&url);
    enter(&mut b, &ann, "ann");
    enter(&mut b, &bob, "bob");
    b.wait_for(&ann, &format!("{USERS} === 'ann,bob'"));
    assert_eq!(b.wait_for(&ann, TRANSPORT), transport);
    assert_eq!(b.wait_for(&bob, TRANSPORT), transport);
    for tab in [&ann, &bob] {
        b.eval(
            tab,
            "window.st = {resumed: 0, lost: 0, why: []}; \
             hub.on('disconnect', (s) => st.why.push(s.reason)); \
             hub.on('resumed', () => st.resumed++); \
             hub.on('not_recovered', () => st.lost++); true",
        );
    }
    // From now on every connection is also cut after a random number of bytes.
    proxy.set_budget(Some((1_500, 8_000)));
    let n = 60;
    let mut sent = Vec::new();
    for i in 0..n {
        let (tab, who) = if i % 2 == 0 {
            (&ann, "ann")
        } else {
            (&bob, "bob")
        };
        let text = format!("L{i:03}-{who}");
        say(&mut b, tab, &text);
        sent.push(text);
        if i % 4 == 3 {
            // Both tabs back on their feet (or still on their link), then cut everything:
            // the next lines go into the offline buffers.
            b.wait_for(&ann, TRANSPORT);
            b.wait_for(&bob, TRANSPORT);
            proxy.cut_all();
        }
    }
    let cuts = proxy.cuts();
    proxy.set_budget(None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut shown = Vec::new();
    for tab in [&ann, &bob] {
        loop {
            let lines = b.eval(tab, NUMBERED);
            let lines: Vec<String> = serde_json::from_value(lines).unwrap();
            if lines.len() >= n || std::time::Instant::now() > deadline {
                shown.push(lines);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    for lines in &shown {
        // Every line once.
        let mut sorted = lines.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), lines.len(), "duplicated lines: {lines:?}");
        let mut want = sent.clone();
        want.sort();
        assert_eq!(sorted, want, "lost lines");
        // Each author's lines in the order said.
        for who in ["ann", "bob"] {
            let mine: Vec<&String> = lines.iter().filter(|l| l.ends_with(who)).collect();
            let mut ordered = mine.clone();
            ordered.sort();
            assert_eq!(mine, ordered, "{who}'s lines reordered");
        }
    }
    // Both tabs saw the server's one order.
    assert_eq!(shown[0], shown[1]);
    let summary = "({resumed: st.resumed, lost: st.lost, disconnects: st.why.length})";
    let (sum_ann, sum_bob) = (b.eval(&ann, summary), b.eval(&bob, summary));
    let st_ann = b.eval(&ann, "st");
    let st_bob = b.eval(&bob, "st");
    println!(
        "browser chaos: transport={transport} cuts={cuts} lines={n} ann={sum_ann} bob={sum_bob} \
         lost=0 duplicated=0 reordered=0"
    );
    // Each cut_all found both tabs' connections (two at least).
    assert!(cuts >= 2 * (n / 4) as u64, "cuts {cuts}");
    if polling {
        // Over long-polling a cut request is made again on the same link (same ack, same
        // seq): the link never broke, nothing needed a resume.
        assert_eq!(st_ann["why"], serde_json::json!([]), "{st_ann}");
        assert_eq!(st_bob["why"], serde_json::json!([]), "{st_bob}");
    } else {
        let resumed = st_ann["resumed"].as_u64().unwrap() + st_bob["resumed"].as_u64().unwrap();
        assert!(resumed >= 2, "resumes: {st_ann} {st_bob}");
    }
    assert_eq!(st_ann["lost"], 0, "{st_ann}");
    assert_eq!(st_bob["lost"], 0, "{st_bob}");
}

#[test]
fn browser_backoff_delays_stay_within_the_minimum_and_the_cap_and_the_module_exports() {
    let Some(mut b) = Chromium::launch() else {
        return;
    };
    let (_rt, _chat, url) = chat_with(ChatConfig::default());
    let tab = b.open(&url);
    b.wait_for(&tab, "typeof sockloop === 'object'");
    let r = b.eval(
        &tab,
        r#"(() => {
          const bad = [];
          const check = (b, min, cap) => {
            const seen = new Set();
            for (let a = 0; a < 1000; a++) {
              const c = sockloop.backoffCap(b, a), d = sockloop.backoffDelay(b, a);
              if (!Number.isFinite(c) || !Number.isFinite(d) || d < min || d > c || c > cap || c < min)
                bad.push({b, a, c, d});
              if (a >= 900) seen.add(d);
            }
            return seen.size;
          };
          const spread = check({min: 100, max: 10000, factor: 2}, 100, 10000);
          check({min: 0, max: 0, factor: 2}, 0, 0);
          check({min: 50, max: 10, factor: 1e9}, 50, 50);
          check({min: 1, max: 2 ** 40, factor: 10}, 1, 2 ** 31 - 1);
          check({min: NaN, max: Infinity, factor: Infinity}, 100, 2 ** 31 - 1);
          check({min: 200, max: 5000, factor: 1}, 200, 200);
          const b = sockloop.DEFAULTS.backoff;
          return {
            bad, spread,
            caps: [0, 1, 6, 7, 1000, 1e9].map((a) => sockloop.backoffCap(b, a)),
            extremes: [sockloop.backoffDelay(b, 3, 0), sockloop.backoffDelay(b, 3, 0.999999999)],
            huge: sockloop.backoffDelay(b, Number.MAX_SAFE_INTEGER),
          };
        })()"#,
    );
    assert_eq!(r["bad"], serde_json::json!([]), "{r}");
    // Full jitter spreads clients even at the cap: 100 draws, many distinct delays.
    assert!(r["spread"].as_u64().unwrap() > 50, "{r}");
    assert_eq!(
        r["caps"],
        serde_json::json!([100, 200, 6400, 10000, 10000, 10000])
    );
    assert_eq!(r["extremes"], serde_json::json!([100, 800]));
    let huge = r["huge"].as_f64().unwrap();
    assert!((100.0..=10_000.0).contains(&huge), "{r}");

    // The ES module variant: the same functions, exported, no global needed.
    let m = b.eval(
        &tab,
        "import('/sockloop.mjs').then((m) => ({connect: typeof m.connect, \
         cap: m.backoffCap({min: 100, max: 10000}, 3), same: m.default.DEFAULTS.offlineLimit}))",
    );
    assert_eq!(
        m,
        serde_json::json!({"connect": "function", "cap": 800, "same": 1024})
    );
}

/// Sets the tab's network offline or back (CDP network emulation: `navigator.onLine` and
/// the window's `online`/`offline` events follow).
fn network(b: &mut Chromium, tab: &Tab, online: bool) {
    b.call(Some(tab), "Network.enable", serde_json::json!({}));
    b.call(
        Some(tab),
        "Network.emulateNetworkConditions",
        serde_json::json!({"offline": !online, "latency": 0,
            "downloadThroughput": -1, "uploadThroughput": -1}),
    );
}

#[test]
fn browser_client_waits_while_offline_and_reconnects_at_once_when_back_online() {
    let Some(mut b) = Chromium::launch() else {
        return;
    };
    let (_rt, chat, _) = chat_with(ChatConfig::default());
    let proxy = crate::chaos::Proxy::start(inet(chat.server.local_addr()), 1, None);
    let addr = proxy.url().trim_start_matches("ws://").to_owned();
    let tab = b.open(&format!("http://{addr}"));
    b.wait_for(&tab, "typeof sockloop === 'object'");
    // A client of its own whose backoff is a minute: only the online event can bring it
    // back within the test's deadlines.
    b.eval(
        &tab,
        "window.t = {reconnecting: 0, resumed: 0, disconnect: 0, offline: 0}; \
         addEventListener('offline', () => t.offline++); \
         window.c = sockloop.connect('/ws?nick=zed', {backoff: {min: 60000, max: 60000}}); \
         for (const k of ['reconnecting', 'resumed', 'disconnect']) c.on(k, () => t[k]++); true",
    );
    b.wait_for(&tab, "c.connected");
    network(&mut b, &tab, false);
    b.wait_for(&tab, "navigator.onLine === false && t.offline === 1");
    proxy.cut_all();
    b.wait_for(&tab, "!c.connected && t.disconnect === 1");
    // Offline: no attempt is scheduled (none would succeed), the emit waits in the buffer.
    let r = b.eval(
        &tab,
        "c.emit('chat:say', {room: 'lobby', text: 'said offline'}); \
         ({reconnecting: t.reconnecting, timer: c.timer, buffered: c.buffered})",
    );
    assert_eq!(
        r,
        serde_json::json!({"reconnecting": 0, "timer": null, "buffered": 1})
    );
    network(&mut b, &tab, true);
    b.wait_for(&tab, "c.connected && t.resumed === 1");
    let r = b.eval(
        &tab,
        "c.emitWithAck('room:list', {}, 5000).then((d) => \
         ({rooms: d.rooms.map((r) => r.room), reconnecting: t.reconnecting, buffered: c.buffered}))",
    );
    assert_eq!(
        r,
        serde_json::json!({"rooms": ["lobby"], "reconnecting": 0, "buffered": 0})
    );
    assert_eq!(chat.hub.stats().sessions, 1);
}

#[test]
fn browser_client_offline_buffer_policies_ack_timeouts_and_close() {
    let Some(mut b) = Chromium::launch() else {
        return;
    };
    let (_rt, _chat, url) = chat_with(ChatConfig::default());
    let tab = b.open(&url);
    b.wait_for(&tab, "typeof sockloop === 'object'");
    // Clients of a path that is no hub (both transports get 404) and a minute's backoff:
    // they stay offline, so everything they are given waits in their buffers.
    let r = b.eval(
        &tab,
        r#"(async () => {
          const mk = (policy) => sockloop.connect("/nope", {
            offlineLimit: 2, offlinePolicy: policy, backoff: {min: 60000, max: 60000}});
          const out = {};
          const e = mk("error");
          e.emit("a", 1); e.emit("b", 2);
          try { e.emit("c", 3); out.error = "no throw"; } catch (x) { out.error = x.code; }
          out.errorBuffered = e.buffered;
          out.errorAck = await e.emitWithAck("d", 4, 60000).catch((x) => x.code);
          const o = mk("drop-oldest");
          const first = o.emitWithAck("a", 1, 60000).catch((x) => x.code);
          o.emit("b", 2); o.emit("c", 3);
          out.dropOldest = await first; out.oldBuffered = o.buffered;
          const n = mk("drop-newest");
          n.emit("a", 1); n.emit("b", 2);
          out.dropNewest = await n.emitWithAck("c", 3, 60000).catch((x) => x.code);
          out.newBuffered = n.buffered;
          const t = mk("error");
          out.timeout = await t.emitWithAck("x", 1, 50).catch((x) => x.code);
          const waiting = t.emitWithAck("y", 2, 60000).catch((x) => x.code);
          t.close();
          out.closedWaiter = await waiting;
          try { t.emit("z", 3); out.afterClose = "no throw"; } catch (x) { out.afterClose = x.code; }
          out.connected = [e, o, n, t].some((c) => c.connected);
          for (const c of [e, o, n]) c.close();
          return out;
        })()"#,
    );
    assert_eq!(
        r,
        serde_json::json!({
            "error": "full", "errorBuffered": 2, "errorAck": "full",
            "dropOldest": "dropped", "oldBuffered": 2,
            "dropNewest": "dropped", "newBuffered": 2,
            "timeout": "timeout", "closedWaiter": "closed", "afterClose": "closed",
            "connected": false,
        })
    );
}

#[test]
fn browser_chat_moves_from_long_polling_to_websocket_once_upgrades_get_through() {
    let Some(mut b) = Chromium::launch() else {
        return;
    };
    let (_rt, chat, _) = chat_with(ChatConfig {
        rate_limit: None,
        ..ChatConfig::default()
    });
    let proxy = UpgradeBlocker::start(inet(chat.server.local_addr()));
    let url = format!("http://{}/", proxy.addr);
    let ann = b.open(&url);
    let bob = b.open(&url);
    enter(&mut b, &ann, "ann");
    enter(&mut b, &bob, "bob");
    assert_eq!(b.wait_for(&ann, TRANSPORT), "polling");
    assert_eq!(b.wait_for(&bob, TRANSPORT), "polling");
    for tab in [&ann, &bob] {
        b.eval(
            tab,
            "window.st = {resumed: [], lost: 0}; \
             hub.on('resumed', (s) => st.resumed.push(s.transport)); \
             hub.on('not_recovered', () => st.lost++); true",
        );
    }
    // Lines over long-polling while the tabs keep trying WebSocket (refused: 403) …
    let mut sent = Vec::new();
    let mut line = |b: &mut Chromium, i: usize| {
        let (tab, who) = if i % 2 == 0 {
            (&ann, "ann")
        } else {
            (&bob, "bob")
        };
        let text = format!("L{i:03}-{who}");
        say(b, tab, &text);
        sent.push(text);
    };
    for i in 0..10 {
        line(&mut b, i);
    }
    let refused = proxy.refused();
    b.wait_for(&ann, &format!("{NUMBERED}.length === 10"));
    // … then upgrades get through: both tabs move to WebSocket with their sessions while
    // lines keep coming.
    proxy.block(false);
    for i in 10..40 {
        line(&mut b, i);
        if i % 10 == 9 {
            // Pacing, not a wait: spreads the lines over the tabs' upgrades.
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
    b.wait_for(&ann, "hub.transport === 'websocket' && hub.connected");
    b.wait_for(&bob, "hub.transport === 'websocket' && hub.connected");
    for i in 40..50 {
        line(&mut b, i);
    }
    let n = sent.len();
    for tab in [&ann, &bob] {
        b.wait_for(tab, &format!("{NUMBERED}.length >= {n}"));
        let lines: Vec<String> = serde_json::from_value(b.eval(tab, NUMBERED)).unwrap();
        assert_eq!(lines.len(), n, "{lines:?}");
        let mut sorted = lines.clone();
        sorted.sort();
        let mut want = sent.clone();
        want.sort();
        assert_eq!(sorted, want, "lost or duplicated");
        for who in ["ann", "bob"] {
            let mine: Vec<&String> = lines.iter().filter(|l| l.ends_with(who)).collect();
            let mut ordered = mine.clone();
            ordered.sort();
            assert_eq!(mine, ordered, "{who}'s lines reordered");
        }
        let st = b.eval(tab, "st");
        assert_eq!(st["lost"], 0, "{st}");
        assert_eq!(st["resumed"], serde_json::json!(["websocket"]), "{st}");
    }
    assert!(refused >= 2, "refused {refused}");
    // One session per tab throughout.
    assert_eq!(chat.hub.stats().sessions, 2);
}

/// One request on a new connection (`Connection: close`), the whole answer.
fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn hub_servers_serve_the_client_in_front_of_the_user_hook() {
    // No browser needed: the paths over a real socket, chained with the chat's own hook.
    let (_rt, chat, _) = chat_with(ChatConfig::default());
    let addr = inet(chat.server.local_addr());
    for (path, text) in [
        ("/sockloop.js", sockloop::hub::browser::script()),
        ("/sockloop.mjs", sockloop::hub::browser::module()),
    ] {
        let r = raw_http(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r:.200}");
        assert_eq!(
            header(&r, "content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(header(&r, "cache-control"), Some("public, max-age=300"));
        assert!(r.ends_with(text), "{path}: the body is the asset");
        let tag = header(&r, "etag").expect("an etag").to_owned();
        let again = raw_http(
            addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {tag}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(again.starts_with("HTTP/1.1 304"), "{again:.200}");
        assert!(again.ends_with("\r\n\r\n"), "no body: {again:.300}");
    }
    // The chat's own hook still answers the rest.
    let health = raw_http(
        addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
        "{health}"
    );
    let page = raw_http(
        addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(page.contains("<script src=\"/sockloop.js\"></script>"));
    let none = raw_http(
        addr,
        "GET /nope.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(none.starts_with("HTTP/1.1 404"), "{none:.200}");

    // A hub server without a hook of its own: the client, and 404 for the rest.
    let rt = Runtime::builder().pollers(1).build().unwrap();
    let hub = sockloop::hub::Hub::builder().build();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .websocket(hub.server_config(WsServerConfig::new()), hub.factory())
        .unwrap();
    let a = inet(s.local_addr());
    let r = raw_http(
        a,
        "HEAD /sockloop.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r:.200}");
    let r = raw_http(
        a,
        "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 404"), "{r:.200}");
}
