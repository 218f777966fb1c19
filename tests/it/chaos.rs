//! Chaos: a fault-injecting TCP proxy (real sockets, loopback, threads) between a
//! `HubClient` and a hub server. It cuts connections at random byte offsets (seeded, the
//! seed printed) while numbered messages flow both ways, some with acks (server messages go
//! to the connection and through its room's fan-out group, interleaved); every message must
//! arrive exactly once and in order.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sockloop::client::hub::{
    Backoff, ConnectionEvent, HubClient, HubClientOptions, HubEvent, HubTransport, OfflinePolicy,
};
use sockloop::client::polling::PollingOptions;
use sockloop::client::ws::WsClientOptions;
use sockloop::hub::{AckOptions, AckStatus, Ctx, Hub, SessionConfig};
use sockloop::ConnId;

/// One proxied connection: both sockets, cut once.
struct Pair {
    client: TcpStream,
    server: TcpStream,
    cut: AtomicBool,
}

impl Pair {
    /// Shuts both sockets down; true for the caller that did it.
    fn cut(&self) -> bool {
        if self.cut.swap(true, Ordering::AcqRel) {
            return false;
        }
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
        true
    }
}

struct Inner {
    upstream: SocketAddr,
    /// Cut each connection after a random number of bytes in this range (both directions
    /// together); `None`: never.
    budget: Mutex<Option<(usize, usize)>>,
    rng: Mutex<u64>,
    cuts: AtomicU64,
    /// Accepted connections are closed at once (the server looks unreachable).
    refuse: AtomicBool,
    /// Bytes from the client are swallowed instead of forwarded.
    blackhole: AtomicBool,
    swallowed: AtomicUsize,
    pairs: Mutex<Vec<Arc<Pair>>>,
    stop: AtomicBool,
}

/// The fault-injecting proxy.
pub struct Proxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Proxy {
    /// A proxy on 127.0.0.1:0 forwarding to `upstream`.
    pub fn start(upstream: SocketAddr, seed: u64, budget: Option<(usize, usize)>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            upstream,
            budget: Mutex::new(budget),
            rng: Mutex::new(seed),
            cuts: AtomicU64::new(0),
            refuse: AtomicBool::new(false),
            blackhole: AtomicBool::new(false),
            swallowed: AtomicUsize::new(0),
            pairs: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let i = inner.clone();
        let accept = std::thread::spawn(move || accept_loop(&listener, &i));
        Proxy {
            addr,
            inner,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub fn cuts(&self) -> u64 {
        self.inner.cuts.load(Ordering::Acquire)
    }

    /// Cuts every live connection now.
    pub fn cut_all(&self) {
        let pairs: Vec<Arc<Pair>> = self.inner.pairs.lock().unwrap().drain(..).collect();
        for p in pairs {
            if p.cut() {
                self.inner.cuts.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    pub fn set_budget(&self, b: Option<(usize, usize)>) {
        *self.inner.budget.lock().unwrap() = b;
    }

    pub fn refuse(&self, on: bool) {
        self.inner.refuse.store(on, Ordering::Release);
    }

    pub fn blackhole(&self, on: bool) {
        self.inner.blackhole.store(on, Ordering::Release);
    }

    /// Client bytes swallowed by the black hole.
    pub fn swallowed(&self) -> usize {
        self.inner.swallowed.load(Ordering::Acquire)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.cut_all();
    }
}

fn accept_loop(listener: &TcpListener, inner: &Arc<Inner>) {
    for conn in listener.incoming() {
        if inner.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(client) = conn else { continue };
        if inner.refuse.load(Ordering::Acquire) {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(inner.upstream) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let budget = *inner.budget.lock().unwrap();
        let left = budget.map(|(lo, hi)| {
            let r = splitmix(&mut inner.rng.lock().unwrap()) as usize;
            lo + r % (hi - lo + 1)
        });
        let pair = Arc::new(Pair {
            client: client.try_clone().unwrap(),
            server: server.try_clone().unwrap(),
            cut: AtomicBool::new(false),
        });
        {
            let mut pairs = inner.pairs.lock().unwrap();
            pairs.retain(|p| !p.cut.load(Ordering::Acquire));
            pairs.push(pair.clone());
        }
        let left = Arc::new(AtomicUsize::new(left.unwrap_or(usize::MAX)));
        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        for (from, to, up) in [(client, server, true), (s2, c2, false)] {
            let (pair, left, inner) = (pair.clone(), left.clone(), inner.clone());
            std::thread::spawn(move || pump(from, to, up, &pair, &left, &inner));
        }
    }
}

/// Copies `from` to `to` until either side ends or the shared byte budget runs out: then
/// the bytes up to the budget are forwarded and both connections are cut.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    up: bool,
    pair: &Pair,
    left: &AtomicUsize,
    inner: &Inner,
) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if up && inner.blackhole.load(Ordering::Acquire) {
            inner.swallowed.fetch_add(n, Ordering::AcqRel);
            continue;
        }
        let before = left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                Some(l.saturating_sub(n))
            })
            .unwrap_or(0);
        let send = n.min(before);
        if send > 0 && to.write_all(&buf[..send]).is_err() {
            break;
        }
        if send < n || before == n {
            if pair.cut() {
                inner.cuts.fetch_add(1, Ordering::AcqRel);
            }
            return;
        }
    }
    // One side ended: end the other (half-close), as TCP would.
    let _ = to.shutdown(Shutdown::Write);
}

/// Lost, duplicated and reordered numbers in `got`, against `0..expected`.
fn tally(got: &[u64], expected: u64) -> (u64, u64, u64) {
    let mut seen = vec![0u32; expected as usize];
    let mut reordered = 0;
    for (i, &n) in got.iter().enumerate() {
        if let Some(s) = seen.get_mut(n as usize) {
            *s += 1;
        }
        if i > 0 && n < got[i - 1] {
            reordered += 1;
        }
    }
    let lost = seen.iter().filter(|&&c| c == 0).count() as u64;
    let dup = seen.iter().map(|&c| u64::from(c.saturating_sub(1))).sum();
    (lost, dup, reordered)
}

/// A seed from the clock unless `CHAOS_SEED` is set (to rerun a failure).
fn seed() -> u64 {
    if let Some(s) = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return s;
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    t.unwrap().as_nanos() as u64
}

const CUTS: u64 = 1000;
const ACK_EVERY: u64 = 10;

struct Server {
    hub: Hub,
    got: Arc<Mutex<Vec<u64>>>,
    session: Arc<Mutex<Option<ConnId>>>,
    /// While set, WebSocket upgrades are refused (403): long-polling still works.
    block_ws: Arc<AtomicBool>,
    _server: sockloop::Server,
    _rt: sockloop::Runtime,
}

fn server(dispatch: sockloop::Dispatch) -> Server {
    let got = Arc::new(Mutex::new(Vec::new()));
    let session = Arc::new(Mutex::new(None));
    let (g, s) = (got.clone(), session.clone());
    let hub = Hub::builder()
        .sessions(SessionConfig::new().window(Duration::from_secs(30)))
        .on("c", move |ctx: &mut Ctx| {
            let n: u64 = ctx.data()?;
            g.lock().unwrap().push(n);
            ctx.ack(&n)
        })
        .on("join", |ctx: &mut Ctx| {
            ctx.join("room")?;
            ctx.ack(&true)
        })
        .on_connect(move |_, ws| *s.lock().unwrap() = Some(ws.id()))
        .build();
    let rt = crate::hub::rt();
    let block_ws = Arc::new(AtomicBool::new(false));
    let block = block_ws.clone();
    let ws = sockloop::WsServerConfig::new()
        .polling(Some(sockloop::PollingConfig::new()))
        .use_connection(move |req, _| {
            let polling = req.query_param("transport") == Some("polling");
            match block.load(Ordering::Acquire) && !polling {
                true => Err(sockloop::Rejection::new(403, "websocket blocked")),
                false => Ok(()),
            }
        });
    let server = rt
        .serve(sockloop::Listen::tcp("127.0.0.1:0"))
        .config(sockloop::ServerConfig::new().dispatch(dispatch))
        .websocket(hub.server_config(ws), hub.factory())
        .unwrap();
    hub.attach(&server);
    Server {
        hub,
        got,
        session,
        block_ws,
        _server: server,
        _rt: rt,
    }
}

fn chaos_client(url: &str, transports: Vec<HubTransport>) -> HubClient {
    let opts = HubClientOptions::default()
        .transports(transports)
        .backoff(Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(20),
        ))
        .upgrade_after(Some(Duration::from_millis(50)))
        .offline_buffer(1 << 20, OfflinePolicy::Error);
    // A connect cut mid-handshake is retried like any reconnect.
    let deadline = Instant::now() + crate::util::WAIT;
    loop {
        match HubClient::connect(url, opts.clone()) {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => eprintln!("chaos: first connect: {e}"),
            Err(e) => panic!("no first connection: {e}"),
        }
    }
}

/// The server's numbered messages: every tenth with an ack, each waited for (which paces
/// the sender), until the proxy has cut `CUTS` connections.
fn server_sender(
    hub: Hub,
    to: ConnId,
    cuts: u64,
    proxy_cuts: Arc<dyn Fn() -> u64 + Send + Sync>,
) -> u64 {
    let opts = AckOptions::new(Duration::from_secs(30), 0);
    let mut n = 0u64;
    while proxy_cuts() < cuts {
        if n % ACK_EVERY == ACK_EVERY - 1 {
            let h = hub.to_conn(to).emit_with_ack_nowait("s", &n, opts).unwrap();
            let report = h.wait(Duration::from_secs(40)).unwrap();
            assert_eq!(
                report.status(to),
                Some(AckStatus::Acked),
                "server message {n}"
            );
        } else if n % 3 == 0 {
            let d = hub.to_conn(to).emit("s", &n);
            assert_eq!(d.queued, 1, "server message {n}: {d:?}");
        } else {
            // The room's fan-out group, interleaved with the sends to the connection.
            let d = hub.to_room("room").emit("s", &n);
            assert_eq!(d.queued, 1, "server message {n}: {d:?}");
        }
        n += 1;
    }
    n
}

/// The client's numbered messages: every tenth with an ack (blocking, which paces it).
fn client_sender(c: &HubClient, cuts: u64, proxy_cuts: &dyn Fn() -> u64) -> u64 {
    let mut n = 0u64;
    while proxy_cuts() < cuts {
        if n % ACK_EVERY == ACK_EVERY - 1 {
            let v = c.emit_with_ack("c", &n, Duration::from_secs(40));
            assert_eq!(v.unwrap(), json!(n), "client message {n}");
        } else {
            c.emit("c", &n).unwrap();
        }
        n += 1;
    }
    n
}

fn inet(a: &sockloop::Addr) -> SocketAddr {
    match a {
        sockloop::Addr::Inet(a) => *a,
        other => panic!("not an IP address: {other}"),
    }
}

/// Joins a sender once it finished (its panic, an assertion, fails the test here).
fn finished(t: &mut Option<JoinHandle<u64>>, n: &mut Option<u64>) {
    if n.is_none() && t.as_ref().is_some_and(|t| t.is_finished()) {
        *n = t.take().map(|t| t.join().unwrap());
    }
}

fn websocket() -> HubTransport {
    HubTransport::WebSocket(WsClientOptions::default())
}

fn polling() -> HubTransport {
    let o = PollingOptions::default()
        .request_timeout(Duration::from_secs(2))
        .retry_for(Duration::from_secs(30));
    HubTransport::Polling(o)
}

/// How a run is set up: the client's transports, and whether WebSocket starts blocked
/// (then it is unblocked halfway, and the client must upgrade during the traffic).
struct Setup {
    transports: Vec<HubTransport>,
    upgrade: bool,
}

#[test]
fn websocket_sessions_survive_a_thousand_cuts() {
    let setup = Setup {
        transports: vec![websocket()],
        upgrade: false,
    };
    let line = run(sockloop::Dispatch::Threads, CUTS, setup);
    println!("chaos: transport=websocket {line}");
}

/// Handlers on the pollers: sends from a poller thread must not take the poller-local
/// shortcut past the session's order.
#[test]
fn websocket_sessions_survive_cuts_with_inline_handlers() {
    let setup = Setup {
        transports: vec![websocket()],
        upgrade: false,
    };
    let line = run(sockloop::Dispatch::Inline, CUTS / 4, setup);
    println!("chaos (inline handlers): {line}");
}

#[test]
fn long_polling_sessions_survive_a_thousand_cuts() {
    let setup = Setup {
        transports: vec![polling()],
        upgrade: false,
    };
    let line = run(sockloop::Dispatch::Threads, CUTS, setup);
    println!("chaos: transport=long-polling {line}");
}

/// WebSocket blocked at first: the client chats over long-polling, then moves its session
/// to WebSocket halfway through the traffic (and the cuts go on over both).
#[test]
fn an_upgrade_from_long_polling_to_websocket_during_traffic_loses_nothing() {
    let setup = Setup {
        transports: vec![websocket(), polling()],
        upgrade: true,
    };
    let line = run(sockloop::Dispatch::Threads, CUTS, setup);
    println!("chaos: transport=upgrade {line}");
}

/// Runs the chaos until `cuts` cuts; returns `cuts=N messages=M lost=0 duplicated=0
/// reordered=0` (after asserting the zeros).
fn run(dispatch: sockloop::Dispatch, cuts_wanted: u64, setup: Setup) -> String {
    let seed = seed();
    println!("chaos: seed={seed} (CHAOS_SEED={seed} to rerun)");
    let srv = server(dispatch);
    srv.block_ws.store(setup.upgrade, Ordering::Release);
    let proxy = Arc::new(Proxy::start(inet(srv._server.local_addr()), seed, None));
    let ws_first = matches!(setup.transports[0], HubTransport::WebSocket(_));
    let client = Arc::new(chaos_client(&proxy.url(), setup.transports.clone()));
    if setup.upgrade {
        assert_eq!(
            client.transport(),
            Some(1),
            "WebSocket is blocked: long-polling"
        );
    }
    let to = wait_for(|| *srv.session.lock().unwrap(), "the session's id");
    client
        .emit_with_ack("join", &Value::Null, crate::util::WAIT)
        .unwrap();
    proxy.set_budget(Some((64, 6 << 10)));
    proxy.cut_all();
    let started = Instant::now();
    // With an upgrade to make, the senders go on until it happened (so it happens during
    // their traffic): the count they see stops short of the goal until then.
    let cuts = {
        let (p, c, upgrade) = (proxy.clone(), client.clone(), setup.upgrade);
        Arc::new(move || match upgrade && c.transport() != Some(0) {
            true => p.cuts().min(cuts_wanted - 1),
            false => p.cuts(),
        }) as Arc<dyn Fn() -> u64 + Send + Sync>
    };
    let mut s_thread = Some({
        let (hub, cuts) = (srv.hub.clone(), cuts.clone());
        std::thread::spawn(move || server_sender(hub, to, cuts_wanted, cuts))
    });
    let mut c_thread = Some({
        let (c, cuts) = (client.clone(), cuts.clone());
        std::thread::spawn(move || client_sender(&c, cuts_wanted, &*cuts))
    });
    // The client's receiving side: record, ack what asks for it.
    let (mut got_s, mut resumed) = (Vec::new(), 0u64);
    let (mut sent_s, mut sent_c) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "no convergence: {} cuts, sent s={sent_s:?} c={sent_c:?}, got s={} c={}, \
             connected={}, pending={}, {:?}",
            proxy.cuts(),
            got_s.len(),
            srv.got.lock().unwrap().len(),
            client.is_connected(),
            client.pending(),
            srv.hub.stats()
        );
        finished(&mut s_thread, &mut sent_s);
        finished(&mut c_thread, &mut sent_c);
        if setup.upgrade && proxy.cuts() >= cuts_wanted / 4 {
            srv.block_ws.store(false, Ordering::Release);
        }
        if let (Some(ns), Some(nc)) = (sent_s, sent_c) {
            // Both senders stopped: no more cuts; let everything arrive.
            proxy.set_budget(None);
            let got_c = srv.got.lock().unwrap().len() as u64;
            if got_s.len() as u64 >= ns && got_c >= nc {
                break;
            }
        }
        match client.recv(Duration::from_millis(20)) {
            Some(HubEvent::Message(m)) if m.event == "s" => {
                let n = m.data.as_u64().unwrap();
                got_s.push(n);
                if let Some(id) = m.id {
                    client.ack(id, &n).unwrap();
                }
            }
            Some(HubEvent::State(ConnectionEvent::Resumed { .. })) => resumed += 1,
            Some(HubEvent::State(ConnectionEvent::NotRecovered { reason, .. })) => {
                panic!(
                    "session not recovered ({reason}) after {} cuts",
                    proxy.cuts()
                )
            }
            _ => {}
        }
    }
    let (ns, nc) = (sent_s.unwrap(), sent_c.unwrap());
    let got_c = srv.got.lock().unwrap().clone();
    let (lc, dc, rc) = tally(&got_c, nc);
    let (ls, ds, rs) = tally(&got_s, ns);
    let n = proxy.cuts();
    let (lost, dup, reord) = (lc + ls, dc + ds, rc + rs);
    let line = format!(
        "cuts={n} messages={} lost={lost} duplicated={dup} reordered={reord}",
        ns + nc
    );
    println!(
        "chaos: {nc} client->server, {ns} server->client, {resumed} resumes, {:.1} s, {:?}",
        started.elapsed().as_secs_f64(),
        srv.hub.stats()
    );
    assert!(n >= cuts_wanted, "{n} cuts");
    // Over WebSocket every cut is a new connection and a resume; long-polling rides most
    // cuts out itself (its requests are retried on new connections, POSTs once by seq).
    assert!(resumed > 0 || setup.transports.len() == 1 && !ws_first);
    if setup.upgrade {
        assert_eq!(client.transport(), Some(0), "upgraded to WebSocket");
    }
    assert_eq!((lc, dc, rc), (0, 0, 0), "client -> server: {line}");
    assert_eq!((ls, ds, rs), (0, 0, 0), "server -> client: {line}");
    assert_eq!(srv.hub.stats().not_recovered, 0);
    line
}

/// Polls `f` until it gives a value (10 s).
pub fn wait_for<T>(f: impl Fn() -> Option<T>, what: &str) -> T {
    let deadline = Instant::now() + crate::util::WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
