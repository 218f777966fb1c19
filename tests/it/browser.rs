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
