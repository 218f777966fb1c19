//! The examples for the people who use sockloop, each compiled here as a module and run
//! against real sockets: `wsc` (a line client), `ws_script`, `sensors` and `control_daemon`.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sockloop::handler::{on_data, on_datagram};
use sockloop::{
    on_message, Addr, Conn, DatagramSender, Identity, Listen, Rejection, Runtime, Server, WsConn,
    WsMessage, WsServerConfig,
};

use crate::util::{tempdir, WAIT};

#[allow(dead_code)]
#[path = "../../examples/wsc.rs"]
mod wsc;

fn rt() -> Runtime {
    Runtime::builder()
        .pollers(1)
        .handler_threads(2)
        .build()
        .unwrap()
}

/// Output shared between the client's thread and the test.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `want`.
    fn wait_for(&self, want: &str) -> String {
        let until = Instant::now() + WAIT;
        loop {
            let text = self.text();
            if text.contains(want) {
                return text;
            }
            assert!(Instant::now() < until, "no {want:?} in {text:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `wsc` running on a thread: its stdin is `feed`, its stdout `out`.
struct Wsc {
    feed: Option<UnixStream>,
    out: Shared,
    done: std::thread::JoinHandle<Result<(), String>>,
}

fn wsc(args: &[&str]) -> Wsc {
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.splice(0..0, ["--wait".to_owned(), "100".to_owned()]);
    let a = wsc::parse_args(args).unwrap();
    let (feed, input) = UnixStream::pair().unwrap();
    let out = Shared::default();
    let mut o = out.clone();
    let done = std::thread::spawn(move || wsc::run(&a, BufReader::new(input), &mut o));
    Wsc {
        feed: Some(feed),
        out,
        done,
    }
}

impl Wsc {
    fn line(&mut self, l: &str) {
        let feed = self.feed.as_mut().unwrap();
        feed.write_all(format!("{l}\n").as_bytes()).unwrap();
    }

    /// Ends stdin and returns the exit result and everything printed.
    fn finish(mut self) -> (Result<(), String>, String) {
        drop(self.feed.take());
        let r = self.done.join().unwrap();
        (r, self.out.text())
    }
}

/// A WebSocket echo that requires the `x-token: secret` header.
fn ws_echo(rt: &Runtime, listen: Listen) -> Server {
    let cfg = WsServerConfig::new().authenticator(|req| match req.header("x-token") {
        Some("secret") => Ok(Some(Identity::user("t"))),
        _ => Err(Rejection::new(401, "token required")),
    });
    rt.serve(listen)
        .websocket(
            cfg,
            on_message(|ws: &WsConn, m: WsMessage<'_>| {
                if let WsMessage::Text(t) = m {
                    let _ = ws.send_text(format!("echo {t}"));
                }
            }),
        )
        .unwrap()
}

#[test]
fn wsc_sends_stdin_lines_with_headers_and_prints_messages() {
    let rt = rt();
    let s = ws_echo(&rt, Listen::tcp("127.0.0.1:0"));
    let url = format!("ws://{}/", s.local_addr());
    let mut c = wsc(&["--header", "X-Token: secret", &url]);
    c.line("hello");
    c.out.wait_for("< echo hello\n");
    c.line("again");
    c.out.wait_for("< echo again\n");
    let (r, out) = c.finish();
    assert_eq!(r, Ok(()));
    assert_eq!(out, "< echo hello\n< echo again\n");

    let refused = wsc(&[&url]).finish().0.unwrap_err();
    assert!(refused.contains("401"), "{refused}");
    rt.shutdown(WAIT);
}

#[test]
fn wsc_speaks_wss_with_a_ca_file_or_insecure() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = ck.cert.pem();
    let tls = sockloop::tls::TlsServerConfig::from_pem(
        cert.as_bytes(),
        ck.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let rt = rt();
    let s = ws_echo(&rt, Listen::tls("127.0.0.1:0", tls));
    let port = s.inet_addr().unwrap().port();
    let dir = tempdir();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    let url = format!("wss://localhost:{port}/");
    let ca = ca.to_str().unwrap();
    for flags in [&["--ca", ca][..], &["--insecure"][..]] {
        let mut args = flags.to_vec();
        args.extend(["-H", "x-token: secret", &url]);
        let mut c = wsc(&args);
        c.line("over tls");
        c.out.wait_for("< echo over tls\n");
        assert_eq!(c.finish().0, Ok(()), "{flags:?}");
    }
    let untrusted = wsc(&["-H", "x-token: secret", &url]).finish().0;
    assert!(
        untrusted.unwrap_err().contains("--ca"),
        "no trust, no connection"
    );
    rt.shutdown(WAIT);
}

#[test]
fn wsc_drives_tcp_unix_and_udp_servers() {
    let rt = rt();
    let echo = on_data(|c: &Conn, d: &[u8]| {
        let _ = c.send(d);
    });
    let tcp = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .stream(echo.clone())
        .unwrap();
    let dir = tempdir();
    let path = dir.path().join("echo.sock");
    let _unix = rt.serve(Listen::unix(&path)).stream(echo).unwrap();
    let udp = rt
        .serve(Listen::udp("127.0.0.1:0"))
        .datagram(on_datagram(|tx: &DatagramSender, peer: &Addr, d: &[u8]| {
            let _ = tx.send_to(d, peer);
        }))
        .unwrap();
    let urls = [
        format!("tcp://{}", tcp.local_addr()),
        format!("unix://{}", path.display()),
        format!("udp://{}", udp.local_addr()),
    ];
    for url in &urls {
        let mut c = wsc(&[url]);
        c.line("one");
        c.out.wait_for("one\n");
        c.line("two");
        c.out.wait_for("one\ntwo\n");
        let (r, out) = c.finish();
        assert_eq!(r, Ok(()), "{url}");
        assert_eq!(out, "one\ntwo\n", "{url}");
    }
    rt.shutdown(WAIT);
}

#[test]
fn wsc_reports_where_it_could_not_connect() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = wsc(&[&format!("tcp://127.0.0.1:{port}")])
        .finish()
        .0
        .unwrap_err();
    assert!(
        err.contains(&format!("connect 127.0.0.1:{port}: ")),
        "{err}"
    );
    let err = wsc(&["ftp://x"]).finish().0.unwrap_err();
    assert!(err.contains("unknown scheme"), "{err}");
}

#[allow(dead_code)]
#[path = "../../examples/ws_script.rs"]
mod ws_script;

fn chat(rt: &Runtime) -> crate::chat::server::Chat {
    let cfg = crate::chat::server::ChatConfig {
        addr: "127.0.0.1:0".into(),
        ..Default::default()
    };
    crate::chat::server::serve(rt, &cfg).unwrap()
}

fn task(chat: &crate::chat::server::Chat, room: &str, text: &str) -> ws_script::Task {
    ws_script::Task {
        url: format!("ws://{}/ws", chat.server.local_addr()),
        nick: "deploy".into(),
        room: room.into(),
        text: text.into(),
        timeout: WAIT,
    }
}

#[test]
fn ws_script_posts_to_a_room_and_confirms_delivery() {
    use sockloop::client::ws::{WsClient, WsClientOptions};
    let rt = rt();
    let chat = chat(&rt);
    let url = format!("ws://{}/ws?nick=ann", chat.server.local_addr());
    let mut ann = WsClient::connect(&url, WsClientOptions::default()).unwrap();
    crate::hub::next_event(&mut ann, "chat:joined");
    crate::hub::send(
        &mut ann,
        &serde_json::json!({"event": "room:join", "data": {"room": "ops"}, "id": 1}),
    );
    crate::hub::next_event(&mut ann, "ack");

    let report = ws_script::run(&task(&chat, "ops", "release 1.4 is live")).unwrap();
    assert_eq!(report.nick, "deploy");
    let mut users = report.users.clone();
    users.sort();
    assert_eq!(users, ["ann", "deploy"]);
    let msg = crate::hub::next_event(&mut ann, "chat:message");
    assert_eq!(msg["data"]["from"], "deploy");
    assert_eq!(msg["data"]["text"], "release 1.4 is live");
    chat.server.shutdown(WAIT);
    rt.shutdown(WAIT);
}

#[test]
fn ws_script_reports_a_refusal() {
    let rt = rt();
    let chat = chat(&rt);
    let err = ws_script::run(&task(&chat, "not a room name!", "x")).unwrap_err();
    assert!(err.contains("the server refused"), "{err}");
    rt.shutdown(WAIT);
}

#[allow(dead_code)]
#[path = "../../examples/sensors.rs"]
mod sensors;

/// Polls `f` until it is true, failing after [`WAIT`].
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < until, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn accepted(c: &sensors::Collector) -> u64 {
    c.counters
        .accepted
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn sensors_aggregate_many_devices() {
    use sockloop::client::{ClientOptions, UdpClient};
    let rt = rt();
    let c = sensors::start(&rt, "127.0.0.1:0", Duration::from_secs(3600)).unwrap();
    let devices: Vec<_> = (0..20)
        .map(|_| UdpClient::connect(c.server.local_addr(), ClientOptions::default()).unwrap())
        .collect();
    for i in 0..25 {
        for (d, dev) in devices.iter().enumerate() {
            // Two lines in one datagram: a temperature and a humidity.
            let line = format!("dev{d}.temp {i}\ndev{d}.hum {}\n", 100 - i);
            dev.send(line.as_bytes()).unwrap();
        }
    }
    eventually("1000 readings accepted", || accepted(&c) == 1000);
    let s = c.peek(WAIT).unwrap();
    assert_eq!(s.readings(), 1000);
    assert_eq!(s.sensors.len(), 40);
    let t = &s.sensors["dev7.temp"];
    assert_eq!((t.count, t.min, t.max, t.last), (25, 0.0, 24.0, 24.0));
    assert_eq!(t.mean(), 12.0);
    assert_eq!(s.sensors["dev3.hum"].min, 76.0);
    rt.shutdown(WAIT);
}

#[test]
fn sensors_publish_a_summary_every_period_and_count_bad_lines() {
    use sockloop::client::{ClientOptions, UdpClient};
    let rt = rt();
    let c = sensors::start(&rt, "127.0.0.1:0", Duration::from_millis(100)).unwrap();
    let dev = UdpClient::connect(c.server.local_addr(), ClientOptions::default()).unwrap();
    let long = "n".repeat(sensors::MAX_NAME + 1);
    let bad = format!("no-value\nx NaN\ny 1 2\n{long} 1\n\u{fffd}\u{0} 3\n");
    dev.send(bad.as_bytes()).unwrap();
    dev.send(b"door.open 1").unwrap();
    let found = loop {
        let s = c.summaries.recv_timeout(WAIT).expect("a periodic summary");
        if let Some(st) = s.sensors.get("door.open") {
            break (s.clone(), st.clone());
        }
    };
    assert_eq!(found.1.count, 1);
    assert_eq!((found.1.min, found.1.last), (1.0, 1.0));
    let malformed = c
        .counters
        .malformed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        malformed, 4,
        "the fifth bad-looking line is a valid name and value"
    );
    let text = sensors::render(&found.0, &c.counters);
    assert!(text.contains("door.open"), "{text}");
    // Windows keep closing while nothing arrives.
    let empty = c.summaries.recv_timeout(WAIT).expect("another window");
    assert!(empty.window > found.0.window);
    rt.shutdown(WAIT);
}

#[test]
fn sensors_survive_the_aggregator_dying() {
    use sockloop::client::{ClientOptions, UdpClient};
    use sockloop::supervise::ExitReason;
    let rt = rt();
    let c = sensors::start(&rt, "127.0.0.1:0", Duration::from_secs(3600)).unwrap();
    let dev = UdpClient::connect(c.server.local_addr(), ClientOptions::default()).unwrap();
    dev.send(b"a 1").unwrap();
    eventually("the first reading", || accepted(&c) == 1);
    let node = rt.node();
    let first = node.whereis(sensors::AGGREGATOR).unwrap();
    assert!(node.exit(first, ExitReason::Error("killed by the test".into())));
    eventually("a fresh aggregator", || {
        node.whereis(sensors::AGGREGATOR)
            .is_some_and(|p| p != first)
    });
    dev.send(b"b 2").unwrap();
    eventually("the reading after the restart", || accepted(&c) == 2);
    let s = c.peek(WAIT).unwrap();
    assert_eq!(
        s.sensors.keys().collect::<Vec<_>>(),
        ["b"],
        "a fresh window"
    );
    rt.shutdown(WAIT);
}

#[allow(dead_code)]
#[path = "../../examples/control_daemon.rs"]
mod control_daemon;

#[test]
fn control_daemon_answers_its_owner_on_a_0600_socket_and_stops() {
    use sockloop::client::{ClientOptions, UnixClient};
    use std::os::unix::fs::PermissionsExt;
    let rt = rt();
    let dir = tempdir();
    let path = dir.path().join("ctl.sock");
    let me = control_daemon::my_uid();
    let d = control_daemon::start(&rt, &path, vec![me]).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let opts = ClientOptions::default().read_timeout(Some(WAIT));
    let mut c = UnixClient::connect(&path, opts).unwrap();
    let mut ask = |cmd: &str| {
        let r = c
            .once_until(format!("{cmd}\n").as_bytes(), b"\n", WAIT)
            .unwrap();
        String::from_utf8(r).unwrap()
    };
    assert_eq!(ask("ping"), "ok pong\n");
    let status = ask("status");
    assert!(status.starts_with("ok uptime_s="), "{status}");
    assert!(status.contains(" clients=1 "), "{status}");
    assert!(
        status.contains(&format!(" pid={}\n", std::process::id())),
        "{status}"
    );
    assert_eq!(ask("set mode  fast lane"), "ok\n");
    assert_eq!(ask("get mode"), "ok fast lane\n");
    assert_eq!(ask("get other"), "error no other\n");
    assert!(ask("reboot").starts_with("error unknown command \"reboot\""));
    assert_eq!(ask("stop"), "ok stopping\n");
    assert_eq!(
        d.stopped.recv_timeout(WAIT).unwrap(),
        control_daemon::Stop::Command(me)
    );
    assert!(d.server.shutdown(WAIT));
    assert!(!path.exists(), "the socket file is removed");
    rt.shutdown(WAIT);
}

#[test]
fn control_daemon_refuses_other_users_and_long_lines() {
    use sockloop::client::{ClientOptions, UnixClient};
    let rt = rt();
    let dir = tempdir();
    let path = dir.path().join("ctl.sock");
    let me = control_daemon::my_uid();
    // Allow some other uid only: this process is then a stranger.
    let _d = control_daemon::start(&rt, &path, vec![me.wrapping_add(1)]).unwrap();
    let opts = ClientOptions::default().read_timeout(Some(WAIT));
    let mut c = UnixClient::connect(&path, opts.clone()).unwrap();
    let mut all = String::new();
    std::io::Read::read_to_string(&mut c, &mut all).unwrap();
    assert_eq!(
        all,
        format!("error denied: uid {me}\n"),
        "denied, then closed"
    );
    let err = control_daemon::start(&rt, &path, vec![me])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");

    let other = dir.path().join("ctl2.sock");
    let _d2 = control_daemon::start(&rt, &other, vec![me]).unwrap();
    let mut c = UnixClient::connect(&other, opts).unwrap();
    let long = vec![b'x'; control_daemon::MAX_LINE + 10];
    c.write_all(&long).unwrap();
    let mut all = String::new();
    std::io::Read::read_to_string(&mut c, &mut all).unwrap();
    assert_eq!(all, "error line too long\n");
    rt.shutdown(WAIT);
}

/// `GET path` over a fresh connection; the response's body.
fn http_get(addr: &sockloop::Addr, path: &str) -> (String, String) {
    use std::io::Read;
    let mut t = std::net::TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(WAIT)).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    t.write_all(req.as_bytes()).unwrap();
    let mut all = String::new();
    t.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").expect("a response");
    (head.to_owned(), body.to_owned())
}

/// `name{labels} value` lines of an exposition, as (name with labels, value).
fn scraped(body: &str) -> Vec<(String, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

/// The metric names of the table in docs/METRICS.md.
fn documented() -> Vec<String> {
    let doc = include_str!("../../docs/METRICS.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `sockloop_"))
        .map(|rest| format!("sockloop_{}", rest.split('`').next().unwrap()))
        .collect()
}

#[test]
fn the_chat_serves_the_documented_metrics() {
    use sockloop::client::ws::{WsClient, WsClientOptions};
    let rt = rt();
    let chat = chat(&rt);
    let addr = chat.server.local_addr().clone();
    let mut ann = WsClient::connect(
        &format!("ws://{addr}/ws?nick=ann"),
        WsClientOptions::default(),
    )
    .unwrap();
    let _bob = WsClient::connect(
        &format!("ws://{addr}/ws?nick=bob"),
        WsClientOptions::default(),
    )
    .unwrap();
    crate::hub::next_event(&mut ann, "chat:joined");
    crate::hub::send(
        &mut ann,
        &serde_json::json!({"event": "chat:say", "data": {"room": "lobby", "text": "hi"}}),
    );
    crate::hub::next_event(&mut ann, "chat:message");
    let (head, body) = http_get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let values = scraped(&body);
    let get = |k: &str| {
        values
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("no {k} in\n{body}"))
            .1
    };
    assert_eq!(get("sockloop_hub_connections{hub=\"chat\"}"), 2.0);
    assert_eq!(get("sockloop_hub_users{hub=\"chat\"}"), 2.0);
    assert!(get("sockloop_hub_messages_received_total{hub=\"chat\"}") >= 1.0);
    assert!(get("sockloop_hub_messages_sent_total{hub=\"chat\"}") >= 2.0);
    // The two WebSockets and the scrape itself.
    assert_eq!(
        get("sockloop_server_connections_open{server=\"chat\"}"),
        3.0
    );
    assert!(get("sockloop_server_socket_received_bytes_total{server=\"chat\"}") > 0.0);
    assert!(get("sockloop_processes{node=\"chat\"}") >= 1.0);
    // Every metric scraped is documented; every documented one is scraped, except the
    // supervisor's (the chat adds none: tested below).
    let docs = documented();
    assert_eq!(docs.len(), 28, "{docs:?}");
    for (k, _) in &values {
        let name = k.split('{').next().unwrap();
        assert!(
            docs.iter().any(|d| d == name),
            "{name} is not in docs/METRICS.md"
        );
    }
    for d in docs
        .iter()
        .filter(|d| !d.starts_with("sockloop_supervisor_children"))
    {
        let found = values
            .iter()
            .any(|(k, _)| k.split('{').next() == Some(d.as_str()));
        assert!(found, "{d} is documented but not scraped");
    }
    rt.shutdown(WAIT);
}

#[test]
fn metrics_count_supervision() {
    use sockloop::metrics::Metrics;
    use sockloop::supervise::ExitReason;
    let rt = rt();
    let c = sensors::start(&rt, "127.0.0.1:0", Duration::from_secs(3600)).unwrap();
    let metrics = Metrics::new();
    let m = metrics.clone();
    rt.node().set_hook(move |e| m.record(e));
    metrics.add_supervisor("sensors", &c.supervisor);
    let first = rt.node().whereis(sensors::AGGREGATOR).unwrap();
    rt.node().exit(first, ExitReason::Error("test".into()));
    eventually("the restart counted", || {
        metrics
            .prometheus()
            .contains("sockloop_process_restarts_total 1\n")
    });
    let text = metrics.prometheus();
    assert!(
        text.contains("sockloop_supervisor_children{supervisor=\"sensors\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("sockloop_supervisor_children_active{supervisor=\"sensors\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("sockloop_process_exits_total{reason=\"abnormal\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE sockloop_process_restarts_total counter\n"),
        "{text}"
    );
    rt.node().clear_hook();
    rt.shutdown(WAIT);
}
