//! A daemon with a Unix control socket: the socket file is created with mode 0600 (only
//! its owner may connect), each client's peer credentials are checked against the allowed
//! user ids, and a small line protocol controls the daemon.
//!
//! ```text
//! cargo run --example control_daemon -- --socket /tmp/ctl.sock
//! printf 'status\n' | cargo run --example wsc -- unix:///tmp/ctl.sock
//! printf 'stop\n'   | cargo run --example wsc -- unix:///tmp/ctl.sock
//! ```
//!
//! Commands, one per line; every answer is one line, `ok …` or `error …`:
//!
//! | command | answer |
//! |---|---|
//! | `status` | `ok uptime_s=12 clients=1 commands=7 pid=4242` |
//! | `ping` | `ok pong` |
//! | `set KEY VALUE` / `get KEY` | `ok` / `ok VALUE` (`error no KEY`) |
//! | `stop` | `ok stopping`, then the daemon drains its connections and exits |
//!
//! A client whose uid is not allowed (by default only the daemon's own) gets
//! `error denied: uid N` and is disconnected before any command runs. Lines longer than
//! 1 KiB close the connection. The socket file is removed on exit; a stale one left by a
//! crash is replaced at start, a live one (another daemon) is an error naming the path.
//! SIGINT / SIGTERM stop the daemon as `stop` does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use sockloop::{Conn, Listen, Runtime, Server, StreamHandler, UnixOptions};

/// Longest command line, in bytes.
pub const MAX_LINE: usize = 1 << 10;

/// Why the daemon stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A client sent `stop` (its uid).
    Command(u32),
    /// A termination signal.
    Signal(i32),
}

/// What every connection's handler shares.
struct State {
    started: Instant,
    allowed: Vec<u32>,
    clients: AtomicU64,
    commands: AtomicU64,
    values: Mutex<HashMap<String, String>>,
    stop: Sender<Stop>,
}

/// One control connection: buffers bytes into lines, answers each.
struct Control {
    state: Arc<State>,
    line: Vec<u8>,
    uid: u32,
}

impl Control {
    fn answer(&self, line: &str) -> String {
        self.state.commands.fetch_add(1, Ordering::Relaxed);
        let mut words = line.split_whitespace();
        let st = &self.state;
        match (words.next(), words.next(), words.next()) {
            (Some("ping"), None, _) => "ok pong".into(),
            (Some("status"), None, _) => format!(
                "ok uptime_s={} clients={} commands={} pid={}",
                st.started.elapsed().as_secs(),
                st.clients.load(Ordering::Relaxed),
                st.commands.load(Ordering::Relaxed),
                std::process::id()
            ),
            (Some("set"), Some(k), Some(_)) => {
                let v = line.splitn(3, char::is_whitespace).nth(2).unwrap_or("");
                let mut values = st.values.lock().unwrap_or_else(|e| e.into_inner());
                values.insert(k.to_owned(), v.trim().to_owned());
                "ok".into()
            }
            (Some("get"), Some(k), None) => {
                let values = st.values.lock().unwrap_or_else(|e| e.into_inner());
                match values.get(k) {
                    Some(v) => format!("ok {v}"),
                    None => format!("error no {k}"),
                }
            }
            (Some("stop"), None, _) => {
                let _ = st.stop.try_send(Stop::Command(self.uid));
                "ok stopping".into()
            }
            (None, ..) => "error empty command".into(),
            (Some(other), ..) => format!("error unknown command {other:?} (try status)"),
        }
    }
}

impl StreamHandler for Control {
    fn on_open(&mut self, conn: &Conn) {
        self.state.clients.fetch_add(1, Ordering::Relaxed);
        let uid = conn.peer_cred().map(|c| c.uid);
        match uid {
            Some(uid) if self.state.allowed.contains(&uid) => self.uid = uid,
            Some(uid) => deny(conn, &format!("uid {uid}")),
            None => deny(conn, "no peer credentials"),
        }
    }

    fn on_data(&mut self, conn: &Conn, data: &[u8]) {
        for &b in data {
            if b != b'\n' {
                self.line.push(b);
                if self.line.len() > MAX_LINE {
                    let _ = conn.send("error line too long\n");
                    conn.close();
                    return;
                }
                continue;
            }
            let line = String::from_utf8_lossy(&self.line).trim().to_owned();
            self.line.clear();
            let reply = self.answer(&line);
            let _ = conn.send(format!("{reply}\n"));
        }
    }

    fn on_close(&mut self, _: &Conn, _: &sockloop::CloseReason) {
        self.state.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

fn deny(conn: &Conn, why: &str) {
    log::warn!("control: refused {}: {why}", conn.id());
    let _ = conn.send(format!("error denied: {why}\n"));
    conn.close(); // flushes the answer first
}

/// A running daemon.
pub struct Daemon {
    /// The control server.
    pub server: Server,
    /// Receives why the daemon should stop (a `stop` command; `main` adds signals).
    pub stopped: Receiver<Stop>,
    /// Where `main` sends the signal it got.
    pub stop: Sender<Stop>,
}

/// The effective user id of this process (Linux: the owner of `/proc/self`).
pub fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// Starts the control socket at `path` (mode 0600), accepting clients whose uid is in
/// `allowed`.
///
/// # Errors
///
/// When the socket cannot be bound (the error names the path).
pub fn start(rt: &Runtime, path: &Path, allowed: Vec<u32>) -> sockloop::Result<Daemon> {
    let (stop, stopped) = crossbeam_channel::bounded(4);
    let state = Arc::new(State {
        started: Instant::now(),
        allowed,
        clients: AtomicU64::new(0),
        commands: AtomicU64::new(0),
        values: Mutex::new(HashMap::new()),
        stop: stop.clone(),
    });
    let opts = UnixOptions {
        mode: Some(0o600),
        ..UnixOptions::default()
    };
    let server = rt
        .serve(Listen::unix(path).unix_options(opts))
        .stream(move |_: &Conn| Control {
            state: state.clone(),
            line: Vec::new(),
            uid: u32::MAX,
        })?;
    Ok(Daemon {
        server,
        stopped,
        stop,
    })
}

#[allow(dead_code)]
fn main() {
    sockloop::signal::block_termination();
    let mut path = std::env::temp_dir().join("control-daemon.sock");
    let mut allowed = vec![my_uid()];
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--socket", Some(p)) => path = p.into(),
            ("--allow-uid", Some(u)) => match u.parse() {
                Ok(uid) => allowed.push(uid),
                Err(_) => usage("--allow-uid takes a numeric uid"),
            },
            _ => usage(&format!("unexpected {flag}")),
        }
    }
    let rt = Runtime::new().unwrap_or_else(|e| usage(&e.to_string()));
    let d = start(&rt, &path, allowed.clone()).unwrap_or_else(|e| usage(&e.to_string()));
    println!(
        "control_daemon: listening on {} (mode 0600, uids {allowed:?})",
        path.display()
    );
    let signals = d.stop.clone();
    std::thread::spawn(move || {
        let _ = signals.send(Stop::Signal(sockloop::signal::wait_termination()));
    });
    let why = d.stopped.recv().unwrap_or(Stop::Signal(0));
    println!("control_daemon: stopping ({why:?})");
    let clean = d.server.shutdown(Duration::from_secs(5));
    rt.shutdown(Duration::from_secs(1));
    println!("control_daemon: stopped (clean: {clean})");
}

fn usage(msg: &str) -> ! {
    eprintln!("control_daemon: {msg}");
    eprintln!("usage: control_daemon [--socket PATH] [--allow-uid UID]...");
    std::process::exit(2)
}
