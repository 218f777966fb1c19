//! A script that drives a WebSocket service with the blocking client: it posts an
//! announcement to a room of the chat example (`examples/chat.rs`) and checks that it was
//! delivered — the kind of thing a deploy pipeline or a cron job does.
//!
//! ```text
//! cargo run --release --example chat &                               # the service
//! cargo run --example ws_script -- --url ws://127.0.0.1:8080/ws --nick deploy \
//!     --room ops "release 1.4 is live"
//! ```
//!
//! Steps, each with a deadline (`--timeout SECS`, default 5): connect as `--nick` (the
//! server may give a suffixed nickname: `chat:welcome` says which), join `--room` (acked
//! with the room's users), say the text, wait until the server fans the message back
//! (proof it reached the room), then close with 1000. It prints one line,
//! `delivered to #ops as deploy (3 users: …)`, and exits 0; any failure prints what went
//! wrong and where, and exits 1.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::ws::CloseCode;

/// What the script was asked to do.
#[derive(Debug, Clone)]
pub struct Task {
    /// The chat's WebSocket URL, without the query (`ws://127.0.0.1:8080/ws`).
    pub url: String,
    /// The nickname to ask for.
    pub nick: String,
    /// The room to post to.
    pub room: String,
    /// The announcement.
    pub text: String,
    /// Deadline of each step.
    pub timeout: Duration,
}

/// What the script saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The nickname the server gave.
    pub nick: String,
    /// The room's users when the script joined.
    pub users: Vec<String>,
}

/// Runs `task`.
///
/// # Errors
///
/// What failed, as text: the connect error (it names the address), a refusal, an `error`
/// event from the server, or the step that timed out.
pub fn run(task: &Task) -> Result<Report, String> {
    let url = format!("{}?nick={}", task.url, task.nick);
    let opts = WsClientOptions::default().connect_timeout(task.timeout);
    let mut c = WsClient::connect(&url, opts).map_err(|e| e.to_string())?;
    let welcome = wait_event(&mut c, task.timeout, |v| v["event"] == "chat:welcome")?;
    let nick = welcome["data"]["nick"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    send(
        &mut c,
        &json!({"event": "room:join", "data": {"room": task.room}, "id": 1}),
    )?;
    let joined = wait_event(&mut c, task.timeout, |v| {
        v["event"] == "ack" && v["ref"] == 1
    })?;
    let users = joined["data"]["users"]
        .as_array()
        .map(|u| {
            u.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let say = json!({"event": "chat:say", "data": {"room": task.room, "text": task.text}});
    send(&mut c, &say)?;
    wait_event(&mut c, task.timeout, |v| {
        let d = &v["data"];
        v["event"] == "chat:message"
            && d["room"] == task.room.as_str()
            && d["from"] == nick.as_str()
            && d["text"] == task.text.as_str()
    })?;
    c.close(CloseCode::NORMAL, "done")
        .map_err(|e| e.to_string())?;
    Ok(Report { nick, users })
}

fn send(c: &mut WsClient, v: &Value) -> Result<(), String> {
    c.send_text(&v.to_string()).map_err(|e| e.to_string())
}

/// The first envelope `want` accepts within `timeout`; an `error` event or a close fails.
fn wait_event(
    c: &mut WsClient,
    timeout: Duration,
    want: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let msg = c.recv_timeout(left).map_err(|e| e.to_string())?;
        let text = match msg {
            Some(Message::Text(t)) => t,
            Some(Message::Close(code, reason)) => {
                return Err(format!("the server closed: {} {reason}", u16::from(code)))
            }
            Some(_) => continue,
            None => return Err(format!("nothing expected arrived within {timeout:?}")),
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("bad envelope: {e}"))?;
        if v["event"] == "error" {
            return Err(format!("the server refused: {}", v["data"]));
        }
        if want(&v) {
            return Ok(v);
        }
    }
}

fn parse_args() -> Result<Task, String> {
    let mut t = Task {
        url: "ws://127.0.0.1:8080/ws".into(),
        nick: "script".into(),
        room: "lobby".into(),
        text: String::new(),
        timeout: Duration::from_secs(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => t.url = val()?,
            "--nick" => t.nick = val()?,
            "--room" => t.room = val()?,
            "--timeout" => {
                let secs: u64 = val()?.parse().map_err(|_| "--timeout takes seconds")?;
                t.timeout = Duration::from_secs(secs);
            }
            text if !text.starts_with('-') && t.text.is_empty() => t.text = text.to_owned(),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    if t.text.is_empty() {
        return Err("the announcement text is required".into());
    }
    Ok(t)
}

#[allow(dead_code)]
fn main() {
    let task = parse_args().unwrap_or_else(|e| {
        eprintln!("ws_script: {e}");
        eprintln!(
            "usage: ws_script [--url WS_URL] [--nick NICK] [--room ROOM] [--timeout SECS] TEXT"
        );
        std::process::exit(2)
    });
    match run(&task) {
        Ok(r) => println!(
            "delivered to #{} as {} ({} users: {})",
            task.room,
            r.nick,
            r.users.len(),
            r.users.join(", ")
        ),
        Err(e) => {
            eprintln!("ws_script: {e}");
            std::process::exit(1)
        }
    }
}
