//! Servers: what to listen on ([`Listen`]), the builder that starts one on a runtime, and the
//! [`Server`] handle (addresses, stats, graceful shutdown).

pub(crate) mod broadcast;
pub(crate) mod config;
pub(crate) mod datagram;
pub(crate) mod dispatch;
pub(crate) mod handle;
pub mod handler;
pub(crate) mod longpoll;
pub(crate) mod observe;
pub(crate) mod pool;
pub(crate) mod runtime;
#[doc(hidden)]
pub mod sizes;
pub(crate) mod stream;
pub(crate) mod trace;
pub(crate) mod websocket;
pub(crate) mod ws_driver;

use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::base::{Addr, CloseReason, ConnId};
use crate::reactor::datagram::{DgramSock, NewDatagram};
use crate::reactor::listener::Listener;
use crate::reactor::stream::{new_stream, Accepted, Stream};
use crate::reactor::{Accept, Command, Counters, Limits, Link, Policy};
use crate::server::config::ServerConfig;
use crate::server::dispatch::{next_conn_id, Factory};
use crate::server::handle::{Conn, ConnInfo, ConnShared};
use crate::server::handler::{DatagramFactory, StreamFactory, StreamHandler};
use crate::server::observe::{ConnState, Lifecycle, LogObserver, Observer, ServerStats};
use crate::server::pool::HandlerPool;
use crate::server::runtime::RuntimeInner;
use crate::server::websocket::{WsFactory, WsServerConfig};
use crate::{Error, Result};
use std::collections::HashMap;
use std::net::IpAddr;

/// The transports sockloop serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// TCP.
    Tcp,
    /// TCP with TLS (rustls).
    Tls,
    /// UDP.
    Udp,
    /// Unix stream socket.
    Unix,
    /// Unix datagram socket.
    Unixgram,
}

impl Transport {
    /// Whether this transport carries datagrams (UDP, Unix datagram).
    pub fn is_datagram(self) -> bool {
        matches!(self, Transport::Udp | Transport::Unixgram)
    }
}

/// Ownership and lifetime of a Unix socket file.
#[derive(Debug, Clone)]
pub struct UnixOptions {
    /// File mode set after binding (default: none, the umask applies).
    pub mode: Option<u32>,
    /// Group (name or numeric id) given to the file (default: none).
    pub group: Option<String>,
    /// Remove the socket file on shutdown, and when the [`Runtime`](crate::Runtime) is
    /// dropped without one (default true). Only the file the server bound is removed: not
    /// one another process put at the path since (told apart by device and inode). On a
    /// failed start the file is always removed.
    pub remove_on_shutdown: bool,
}

impl Default for UnixOptions {
    fn default() -> Self {
        UnixOptions {
            mode: None,
            group: None,
            remove_on_shutdown: true,
        }
    }
}

/// Where a server listens, and with which transport.
///
/// A stale Unix socket file (a socket nobody listens on) is replaced; a live one is an
/// `AddrInUse` error; any other file at the path is left alone and is an error.
#[derive(Clone)]
pub struct Listen {
    pub(crate) transport: Transport,
    pub(crate) addr: String,
    pub(crate) tls: Option<crate::tls::TlsServerConfig>,
    pub(crate) unix: UnixOptions,
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}({})", self.transport, self.addr)
    }
}

impl Listen {
    fn new(transport: Transport, addr: String) -> Self {
        Listen {
            transport,
            addr,
            tls: None,
            unix: UnixOptions::default(),
        }
    }

    /// TCP on `addr`: anything [`ToSocketAddrs`] takes (`"127.0.0.1:0"` picks a free port,
    /// a [`SocketAddr`](std::net::SocketAddr), `(IpAddr, u16)`, `"localhost:7000"`). A name is
    /// resolved here and the first address is used; one that does not resolve fails when
    /// the server starts, with an error naming it.
    ///
    /// # Examples
    /// ```
    /// use std::net::{Ipv4Addr, SocketAddr};
    /// use sockloop::Listen;
    /// let a = Listen::tcp("127.0.0.1:0");
    /// let b = Listen::tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    /// let c = Listen::tcp((Ipv4Addr::LOCALHOST, 0));
    /// # let _ = (a, b, c);
    /// ```
    pub fn tcp(addr: impl ToSocketAddrs + std::fmt::Debug) -> Self {
        Self::new(Transport::Tcp, inet(addr))
    }

    /// TLS over TCP on `addr` (any [`ToSocketAddrs`] value, as [`tcp`](Self::tcp)).
    pub fn tls(
        addr: impl ToSocketAddrs + std::fmt::Debug,
        tls: crate::tls::TlsServerConfig,
    ) -> Self {
        let mut l = Self::new(Transport::Tls, inet(addr));
        l.tls = Some(tls);
        l
    }

    /// UDP on `addr` (any [`ToSocketAddrs`] value, as [`tcp`](Self::tcp)).
    pub fn udp(addr: impl ToSocketAddrs + std::fmt::Debug) -> Self {
        Self::new(Transport::Udp, inet(addr))
    }

    /// A Unix stream socket at `path`.
    pub fn unix(path: impl AsRef<Path>) -> Self {
        Self::new(
            Transport::Unix,
            path.as_ref().to_string_lossy().into_owned(),
        )
    }

    /// A Unix datagram socket at `path`.
    pub fn unix_datagram(path: impl AsRef<Path>) -> Self {
        Self::new(
            Transport::Unixgram,
            path.as_ref().to_string_lossy().into_owned(),
        )
    }

    /// Socket file mode, group and removal for Unix transports.
    pub fn unix_options(mut self, opts: UnixOptions) -> Self {
        self.unix = opts;
        self
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }
}

/// An inet listen address as text: the first resolved address, or, when `addr` does not
/// resolve, `addr` as written, so that binding fails naming it.
fn inet(addr: impl ToSocketAddrs + std::fmt::Debug) -> String {
    match addr.to_socket_addrs().ok().and_then(|mut all| all.next()) {
        Some(a) => a.to_string(),
        None => format!("{addr:?}").trim_matches('"').to_owned(),
    }
}

struct NoStream;
impl StreamHandler for NoStream {}

fn no_stream() -> Factory {
    Factory::Stream(Arc::new(|_: &crate::Conn| NoStream))
}

/// Shared state of one server, seen by its connections and handles.
pub(crate) struct ServerShared {
    pub(crate) config: ServerConfig,
    /// Limits and counters, shared with the reactor (also the server's identity there).
    pub(crate) policy: Arc<Policy>,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) factory: Factory,
    dfactory: Option<Arc<dyn DatagramFactory>>,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) draining: AtomicBool,
    stopped: AtomicBool,
    pub(crate) local: Addr,
    /// The Unix socket file this server created and removes when it stops (none when it
    /// has none, or was asked to keep it).
    unix_file: Mutex<Option<crate::sys::SocketFile>>,
    done: (Mutex<()>, Condvar),
    /// WebSocket servers: the upgrade configuration.
    pub(crate) ws: Option<Arc<WsServerConfig>>,
    /// Open WebSockets per client IP, when a per-IP cap is set.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    pub(crate) pool: Arc<HandlerPool>,
    /// Open long-polling sessions by id (WebSocket servers with polling on).
    pub(crate) polls: longpoll::Sessions,
}

/// Runs an observer callback; a panic in it is logged and contained (a poller never dies
/// of an observer).
fn guarded(what: &str, f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let msg = crate::reactor::stream::describe_panic(&*p);
        log::error!("observer {what} panicked: {msg}");
    }
}

impl ServerShared {
    /// One connection fewer; wakes a waiting shutdown when the last one goes.
    pub(crate) fn conn_gone(&self) {
        let before = self.policy.counters.open.fetch_sub(1, Ordering::AcqRel);
        if before == 1 && self.draining.load(Ordering::Acquire) {
            let _g = self.done.0.lock();
            self.done.1.notify_all();
        }
    }

    /// Tells the observer of an error (contained).
    pub(crate) fn report_error(&self, conn: Option<ConnId>, err: &Error) {
        guarded("on_error", || self.observer.on_error(conn, err));
    }

    /// Tells the observer of a connection's state (contained).
    pub(crate) fn report_state(&self, conn: ConnId, peer: &Addr, state: &ConnState) {
        guarded("on_conn_state", || {
            self.observer.on_conn_state(conn, peer, state)
        });
    }

    /// Tells the observer of a lifecycle step (contained).
    pub(crate) fn report_lifecycle(&self, step: &Lifecycle) {
        guarded("on_lifecycle", || self.observer.on_lifecycle(step));
    }

    pub(crate) fn inline(&self) -> bool {
        self.config.dispatch == crate::Dispatch::Inline
    }

    /// Counts a new WebSocket from `peer` against the per-IP cap; false when over it.
    pub(crate) fn ws_admit(&self, peer: &Addr, cap: Option<usize>) -> bool {
        let (Some(cap), Some(ip)) = (cap, peer.as_inet().map(|a| a.ip())) else {
            return true;
        };
        let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return false;
        }
        *n += 1;
        true
    }

    /// A WebSocket from `peer` closed.
    pub(crate) fn ws_conn_gone(&self, peer: &Addr) {
        let Some(ws) = &self.ws else { return };
        let (Some(_), Some(ip)) = (ws.max_per_ip, peer.as_inet().map(|a| a.ip())) else {
            return;
        };
        let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Removes the Unix socket file this server created, if the path still names it.
    pub(crate) fn remove_socket_file(&self) {
        let file = self
            .unix_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(file);
    }

    pub(crate) fn datagram_factory(&self) -> std::io::Result<Arc<dyn DatagramFactory>> {
        self.dfactory
            .clone()
            .ok_or_else(|| std::io::Error::other("not a datagram server"))
    }

    /// Waits until no connection is open or `until` passes (`None`: no limit). True when
    /// none is open.
    fn wait_closed(&self, until: Option<Instant>) -> bool {
        let mut g = self.done.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.policy.counters.open.load(Ordering::Acquire) == 0 {
                return true;
            }
            let now = Instant::now();
            let left = match until {
                Some(t) if now >= t => return false,
                Some(t) => t - now,
                None => Duration::from_secs(3600),
            };
            g = match self.done.1.wait_timeout(g, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// Starts a server on a runtime: choose the configuration and observer, then the handler.
///
/// Made by [`Runtime::serve`](crate::Runtime::serve).
#[must_use = "a server starts only with .stream(…) or .datagram(…)"]
pub struct ServerBuilder<'a> {
    rt: &'a Arc<RuntimeInner>,
    listen: Listen,
    config: ServerConfig,
    observer: Arc<dyn Observer>,
    ws: Option<Arc<WsServerConfig>>,
}

impl<'a> ServerBuilder<'a> {
    pub(crate) fn new(rt: &'a Arc<RuntimeInner>, listen: Listen) -> Self {
        ServerBuilder {
            rt,
            listen,
            config: ServerConfig::default(),
            observer: Arc::new(LogObserver),
            ws: None,
        }
    }

    /// Limits and policies (default [`ServerConfig::default`]).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Receives errors, connection states and lifecycle steps (default: logs them).
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observer = Arc::new(observer);
        self
    }

    /// Starts a stream server (TCP, TLS or Unix) whose connections get handlers from
    /// `factory`.
    ///
    /// # Errors
    /// `Error::Config` for a datagram transport; `Error::Io` when binding fails.
    pub fn stream(self, factory: impl StreamFactory) -> Result<Server> {
        if self.listen.transport.is_datagram() {
            return Err(Error::Config(format!(
                "{:?} is a datagram transport: use .datagram(…)",
                self.listen.transport
            )));
        }
        self.start(Factory::Stream(Arc::new(factory)), None)
    }

    /// Starts a WebSocket server (ws:// over TCP or Unix, wss:// over TLS): the HTTP
    /// upgrade per `config`, then handlers from `factory` on every connection.
    ///
    /// # Errors
    /// `Error::Config` for a datagram transport; `Error::Io` when binding fails.
    pub fn websocket(mut self, config: WsServerConfig, factory: impl WsFactory) -> Result<Server> {
        if self.listen.transport.is_datagram() {
            return Err(Error::Config("WebSocket needs a stream transport".into()));
        }
        self.ws = Some(Arc::new(config));
        self.start(Factory::Ws(Arc::new(factory)), None)
    }

    /// Starts a datagram server (UDP or Unix datagram).
    ///
    /// # Errors
    /// `Error::Config` for a stream transport; `Error::Io` when binding fails.
    pub fn datagram(self, factory: impl DatagramFactory) -> Result<Server> {
        if !self.listen.transport.is_datagram() {
            return Err(Error::Config(format!(
                "{:?} is a stream transport: use .stream(…)",
                self.listen.transport
            )));
        }
        self.start(no_stream(), Some(Arc::new(factory)))
    }

    fn start(self, factory: Factory, dfactory: Option<Arc<dyn DatagramFactory>>) -> Result<Server> {
        let (tls, handshake_timeout) = match &self.listen.tls {
            Some(t) => (Some(t.server_config()), t.handshake_timeout()),
            None => (None, Duration::from_secs(10)),
        };
        if self.rt.is_stopped() {
            return Err(Error::Closed);
        }
        let mut sockets = bind(&self.listen, &self.config, self.rt.pollers.len())?;
        // From here on, any failure removes the socket file (dropped with `unix_file`).
        let unix_file = sockets.file.take();
        let c = &self.config;
        let limits = Limits {
            max_read_per_turn: c.max_read_per_turn,
            max_queued_bytes: c.max_queued_bytes,
            drop_policy: c.policy_for(
                self.ws.is_none() && dfactory.is_none() && !self.listen.transport.is_datagram(),
            ),
            max_inbound_pending: c.max_inbound_pending,
            close_timeout: c.close_timeout,
            max_datagram_size: c.max_datagram_size,
        };
        let shared = Arc::new(ServerShared {
            config: self.config,
            policy: Arc::new(Policy {
                limits,
                counters: Counters {
                    budget: self.rt.budget.clone(),
                    ..Default::default()
                },
                drain_until: Default::default(),
            }),
            observer: self.observer,
            factory,
            dfactory,
            tls,
            handshake_timeout,
            draining: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            local: sockets.local.clone(),
            unix_file: Mutex::new(unix_file),
            done: (Mutex::new(()), Condvar::new()),
            ws: self.ws,
            per_ip: Mutex::new(HashMap::new()),
            pool: self.rt.pool.clone(),
            polls: Default::default(),
        });
        if let Err(e) = install(self.rt, &shared, sockets) {
            // Whatever was installed stops listening; the socket file goes.
            self.rt
                .on_pollers(|done| Command::Drain(shared.policy.clone(), done));
            shared.remove_socket_file();
            return Err(e);
        }
        if !self.listen.unix.remove_on_shutdown {
            if let Some(f) = shared
                .unix_file
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                f.keep();
            }
        }
        shared.report_lifecycle(&Lifecycle::Listening(shared.local.clone()));
        self.rt.add_server(shared.clone());
        Ok(Server {
            shared,
            rt: self.rt.clone(),
        })
    }
}

/// A server as the reactor's listeners see it: admits and builds its connections.
struct Acceptor(Arc<ServerShared>);

impl Accept for Acceptor {
    fn policy(&self) -> &Arc<Policy> {
        &self.0.policy
    }

    /// Counts the connection and applies the connection limit and draining state.
    fn admit(&self, peer: &Addr) -> bool {
        let server = &self.0;
        let stats = &server.policy.counters;
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        if server.draining.load(Ordering::Acquire) {
            return false;
        }
        if stats.budget.full() {
            // The runtime's memory budget is spent: a new connection would take from the
            // open ones. Refused like a full server, and counted.
            stats.budget.refused_connection();
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            stats.closed.fetch_add(1, Ordering::Relaxed);
            server.report_state(ConnId(0), peer, &ConnState::Closed(CloseReason::ServerFull));
            return false;
        }
        let open = stats.open.fetch_add(1, Ordering::AcqRel);
        if open < server.config.max_connections {
            return true;
        }
        stats.open.fetch_sub(1, Ordering::AcqRel);
        stats.rejected.fetch_add(1, Ordering::Relaxed);
        stats.closed.fetch_add(1, Ordering::Relaxed);
        let id = next_conn_id();
        server.report_state(id, peer, &ConnState::Closed(CloseReason::ServerFull));
        false
    }

    fn on_error(&self, error: Error) {
        self.0.report_error(None, &error);
    }

    fn open(&self, acc: Accepted) -> Option<Box<Stream>> {
        let server = &self.0;
        let place = acc.place?;
        let tls = match &server.tls {
            None => None,
            Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                Ok(t) => Some((t, server.handshake_timeout)),
                Err(e) => {
                    let err = Error::Tls(crate::tls::TlsError::from_rustls(e));
                    server.report_error(None, &err);
                    server.conn_gone();
                    return None;
                }
            },
        };
        let id = next_conn_id();
        let span = trace::conn_span(id, &acc.peer);
        let local = (acc.local != server.local).then_some(acc.local);
        let info = ConnInfo::new(id, span, server.clone(), acc.peer, local, acc.cred);
        let link: Arc<ConnShared> = Arc::new(Link::new(place, info));
        let conn = Conn {
            inner: link.clone(),
        };
        server.report_state(conn.id(), &conn.peer_addr(), &ConnState::Accepted);
        let link: Arc<Link> = link;
        Some(match &server.ws {
            Some(_) => {
                let driver = ws_driver::WsDriver::new(conn);
                new_stream(acc.sock, link, tls, driver)
            }
            None => new_stream(acc.sock, link, tls, stream::RawDriver::new(conn)),
        })
    }
}

/// Bound sockets, one per poller or a single one.
struct Bound {
    local: Addr,
    tcp: Vec<std::net::TcpListener>,
    unix: Option<std::os::unix::net::UnixListener>,
    datagrams: Vec<DgramSock>,
    /// The Unix socket file the bind created (removed when dropped).
    file: Option<crate::sys::SocketFile>,
}

fn resolve(addr: &str) -> Result<std::net::SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| crate::sys::named(e, "resolve", addr))?
        .next()
        .ok_or_else(|| Error::Config(format!("{addr} resolves to no address")))
}

fn bind(listen: &Listen, cfg: &ServerConfig, pollers: usize) -> Result<Bound> {
    let mut b = Bound {
        local: Addr::Unix(None),
        tcp: Vec::new(),
        unix: None,
        datagrams: Vec::new(),
        file: None,
    };
    match listen.transport {
        Transport::Tcp | Transport::Tls => {
            let reuse = cfg.reuse_port;
            let first = crate::sys::tcp_listener(resolve(&listen.addr)?, cfg.backlog, reuse)?;
            let actual = first.local_addr()?;
            b.local = Addr::Inet(actual);
            b.tcp.push(first);
            for _ in 1..if reuse { pollers } else { 1 } {
                b.tcp
                    .push(crate::sys::tcp_listener(actual, cfg.backlog, reuse)?);
            }
        }
        Transport::Udp => {
            let reuse = cfg.reuse_port;
            let first = crate::sys::udp_socket(resolve(&listen.addr)?, reuse)?;
            let actual = first.local_addr()?;
            b.local = Addr::Inet(actual);
            b.datagrams.push(DgramSock::udp(first));
            for _ in 1..if reuse { pollers } else { 1 } {
                b.datagrams
                    .push(DgramSock::udp(crate::sys::udp_socket(actual, reuse)?));
            }
        }
        Transport::Unix => {
            let path = Path::new(&listen.addr);
            crate::sys::clear_stale_socket(path, false)?;
            let (l, file) = crate::sys::unix_listener(path, cfg.backlog)?;
            // On an error `file` drops and removes the socket file it created.
            crate::sys::set_socket_owner(path, listen.unix.mode, listen.unix.group.as_deref())?;
            b.local = Addr::Unix(Some(path.to_path_buf()));
            b.unix = Some(l);
            b.file = Some(file);
        }
        Transport::Unixgram => {
            let path = Path::new(&listen.addr);
            crate::sys::clear_stale_socket(path, true)?;
            let (s, file) = crate::sys::unix_datagram(path)?;
            crate::sys::set_socket_owner(path, listen.unix.mode, listen.unix.group.as_deref())?;
            b.local = Addr::Unix(Some(path.to_path_buf()));
            b.datagrams.push(DgramSock::unix(s));
            b.file = Some(file);
        }
    }
    Ok(b)
}

/// Registers the bound sockets on the pollers and waits until each is in place.
fn install(rt: &Arc<RuntimeInner>, server: &Arc<ServerShared>, b: Bound) -> Result<()> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let n = rt.pollers.len();
    let start = rt.next_poller();
    let owner: Arc<dyn Accept> = Arc::new(Acceptor(server.clone()));
    let nodelay = server.config.nodelay;
    let mut listeners = Vec::new();
    let single = b.tcp.len() == 1 && n > 1;
    for l in b.tcp {
        let local = server.local.clone();
        listeners.push(Listener::tcp(l, owner.clone(), single, nodelay, local));
    }
    if let Some(l) = b.unix {
        listeners.push(Listener::unix(
            l,
            owner.clone(),
            n > 1,
            server.local.clone(),
        ));
    }
    let mut count = 0;
    for (i, l) in listeners.into_iter().enumerate() {
        count += 1;
        rt.pollers[(start + i) % n].command(Command::AddListener(l, tx.clone()));
    }
    for (i, sock) in b.datagrams.into_iter().enumerate() {
        count += 1;
        let d = NewDatagram {
            sock,
            policy: server.policy.clone(),
            make: datagram::maker(server.clone()),
        };
        rt.pollers[(start + i) % n].command(Command::AddDatagram(Box::new(d), tx.clone()));
    }
    drop(tx);
    for _ in 0..count {
        rx.recv().map_err(|_| Error::Closed)??;
    }
    #[cfg(test)]
    if tests::FAIL_INSTALL.with(|f| f.get()) {
        return Err(Error::Config("install failed (injected by a test)".into()));
    }
    Ok(())
}

/// A running server. Dropping the handle leaves the server running; stop it with
/// [`shutdown`](Self::shutdown) or [`Runtime::shutdown`](crate::Runtime::shutdown). Clones
/// are handles to the same server.
#[derive(Clone)]
pub struct Server {
    pub(crate) shared: Arc<ServerShared>,
    rt: Arc<RuntimeInner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local", &self.shared.local)
            .finish()
    }
}

impl Server {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> &Addr {
        &self.shared.local
    }

    /// The IP address and port the server listens on, for TCP, TLS and UDP servers (`None`
    /// for Unix sockets): what [`TcpStream::connect`](std::net::TcpStream::connect) and the
    /// clients take, with no enum to unwrap.
    ///
    /// # Examples
    /// ```no_run
    /// use sockloop::{handler::OnDataNoop, Listen, Runtime};
    /// let rt = Runtime::new()?;
    /// let server = rt.serve(Listen::tcp("127.0.0.1:0")).stream(|_: &sockloop::Conn| OnDataNoop)?;
    /// let addr: std::net::SocketAddr = server.inet_addr().expect("a TCP server");
    /// let _client = std::net::TcpStream::connect(addr)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn inet_addr(&self) -> Option<std::net::SocketAddr> {
        self.shared.local.as_inet()
    }

    /// Open connections right now.
    pub fn open_connections(&self) -> usize {
        self.shared.policy.counters.open.load(Ordering::Acquire)
    }

    /// A handle for sending framed-once messages to fan-out groups.
    pub fn broadcaster(&self) -> crate::Broadcaster {
        crate::Broadcaster {
            pollers: self.rt.pollers.clone().into(),
            server: self.shared.clone(),
        }
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> ServerStats {
        ServerStats::of(&self.shared.policy.counters)
    }

    /// Graceful shutdown: stop accepting, let handlers finish what they have, flush queued
    /// output and close every connection; connections still open at `deadline` are closed
    /// at once. Returns true when every connection closed gracefully in time. With enough
    /// time, nothing already queued is lost.
    pub fn shutdown(&self, deadline: Duration) -> bool {
        shutdown_server(&self.rt, &self.shared, deadline)
    }
}

pub(crate) fn shutdown_server(
    rt: &Arc<RuntimeInner>,
    server: &Arc<ServerShared>,
    deadline: Duration,
) -> bool {
    let until = crate::base::deadline(Instant::now(), deadline);
    if server.draining.swap(true, Ordering::AcqRel) {
        return server.wait_closed(until);
    }
    server.report_lifecycle(&Lifecycle::Draining);
    let counters = &server.policy.counters;
    let discarded = counters.discarded.load(Ordering::Acquire);
    // From now on every close is flushed by the shutdown's deadline, not `close_timeout`.
    let _ = server.policy.drain_until.set(until);
    rt.on_pollers(|done| Command::Drain(server.policy.clone(), done));
    let closed = server.wait_closed(until);
    if !closed {
        rt.on_pollers(|done| Command::ForceClose(server.policy.clone(), done));
        server.wait_closed(crate::base::deadline(
            Instant::now(),
            Duration::from_secs(1),
        ));
    }
    rt.pool.barrier();
    server.remove_socket_file();
    server.stopped.store(true, Ordering::Release);
    server.report_lifecycle(&Lifecycle::Stopped);
    // Clean only if every connection closed in time and nothing queued was thrown away.
    closed && counters.discarded.load(Ordering::Acquire) == discarded
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Makes `install` fail after every socket was installed (on this thread only): a
        /// registration failing on a poller cannot be provoked from outside.
        pub(super) static FAIL_INSTALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn failing_install(rt: &crate::Runtime, listen: Listen) -> Result<Server> {
        FAIL_INSTALL.with(|f| f.set(true));
        let r = ServerBuilder::new(rt.inner_for_tests(), listen)
            .stream(crate::handler::on_data(|_: &crate::Conn, _: &[u8]| {}));
        FAIL_INSTALL.with(|f| f.set(false));
        r
    }

    #[test]
    fn a_failed_install_removes_the_socket_file_and_the_installed_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let rt = crate::Runtime::builder().pollers(2).build().unwrap();
        assert!(failing_install(&rt, Listen::unix(&path)).is_err());
        assert!(!path.exists(), "the socket file was removed");
        // The path is free again for a server that starts.
        let s = rt
            .serve(Listen::unix(&path))
            .stream(crate::handler::on_data(|_: &crate::Conn, _: &[u8]| {}))
            .unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        assert!(s.shutdown(Duration::from_secs(5)));
        assert!(!path.exists());
    }

    #[test]
    fn a_failed_install_stops_the_listeners_already_in_place() {
        let rt = crate::Runtime::builder().pollers(2).build().unwrap();
        // Find a free port, then make a two-listener (SO_REUSEPORT) install of it fail.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let listen = Listen::tcp(addr.to_string());
        FAIL_INSTALL.with(|f| f.set(true));
        let r = ServerBuilder::new(rt.inner_for_tests(), listen)
            .config(ServerConfig::new().reuse_port(true))
            .stream(crate::handler::on_data(|_: &crate::Conn, _: &[u8]| {}));
        FAIL_INSTALL.with(|f| f.set(false));
        assert!(r.is_err());
        // Nothing listens on the port any more: the drain closed both listeners.
        let err = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
