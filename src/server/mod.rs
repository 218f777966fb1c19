//! Servers: what to listen on ([`Listen`]), the builder that starts one on a runtime, and the
//! [`Server`] handle (addresses, stats, graceful shutdown).

pub(crate) mod broadcast;
pub(crate) mod config;
pub(crate) mod dispatch;
pub(crate) mod handle;
pub mod handler;
pub(crate) mod observe;
pub(crate) mod pool;
pub(crate) mod runtime;
pub(crate) mod websocket;

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::base::Addr;
use crate::reactor::datagram::DgramSock;
use crate::reactor::listener::{ListenSock, Listener};
use crate::reactor::poller::Entry;
use crate::server::config::ServerConfig;
use crate::server::handler::{DatagramFactory, StreamFactory, StreamHandler};
use crate::server::observe::{Lifecycle, LogObserver, Observer, ServerStats, Stats};
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
    /// Remove the socket file on shutdown (default true).
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

    /// TCP on `addr` (`"127.0.0.1:0"` picks a free port).
    pub fn tcp(addr: impl Into<String>) -> Self {
        Self::new(Transport::Tcp, addr.into())
    }

    /// TLS over TCP on `addr`.
    pub fn tls(addr: impl Into<String>, tls: crate::tls::TlsServerConfig) -> Self {
        let mut l = Self::new(Transport::Tls, addr.into());
        l.tls = Some(tls);
        l
    }

    /// UDP on `addr`.
    pub fn udp(addr: impl Into<String>) -> Self {
        Self::new(Transport::Udp, addr.into())
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

struct NoStream;
impl StreamHandler for NoStream {}

/// Shared state of one server, seen by its connections and handles.
pub(crate) struct ServerShared {
    pub(crate) config: ServerConfig,
    pub(crate) stats: Stats,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) factory: Arc<dyn StreamFactory>,
    dfactory: Option<Arc<dyn DatagramFactory>>,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) draining: AtomicBool,
    stopped: AtomicBool,
    pub(crate) local: Addr,
    unix_path: Option<PathBuf>,
    done: (Mutex<()>, Condvar),
    /// WebSocket servers: the upgrade configuration and the handler factory.
    pub(crate) ws: Option<Arc<WsServerConfig>>,
    pub(crate) ws_factory: Option<Arc<dyn WsFactory>>,
    /// Open WebSockets per client IP, when a per-IP cap is set.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ServerShared {
    /// One connection fewer; wakes a waiting shutdown when the last one goes.
    pub(crate) fn conn_gone(&self) {
        let before = self.stats.open.fetch_sub(1, Ordering::AcqRel);
        if before == 1 && self.draining.load(Ordering::Acquire) {
            let _g = self.done.0.lock();
            self.done.1.notify_all();
        }
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

    pub(crate) fn datagram_factory(&self) -> std::io::Result<Arc<dyn DatagramFactory>> {
        self.dfactory
            .clone()
            .ok_or_else(|| std::io::Error::other("not a datagram server"))
    }

    /// Waits until no connection is open or `until` passes. True when none is open.
    fn wait_closed(&self, until: Instant) -> bool {
        let mut g = self.done.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stats.open.load(Ordering::Acquire) == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            g = match self.done.1.wait_timeout(g, until - now) {
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
    ws: Option<(Arc<WsServerConfig>, Arc<dyn WsFactory>)>,
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
        self.start(Arc::new(factory), None)
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
        self.ws = Some((Arc::new(config), Arc::new(factory)));
        self.start(Arc::new(|_: &crate::Conn| NoStream), None)
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
        self.start(
            Arc::new(|_: &crate::Conn| NoStream),
            Some(Arc::new(factory)),
        )
    }

    fn start(
        self,
        factory: Arc<dyn StreamFactory>,
        dfactory: Option<Arc<dyn DatagramFactory>>,
    ) -> Result<Server> {
        let (tls, handshake_timeout) = match &self.listen.tls {
            Some(t) => (Some(t.server_config()), t.handshake_timeout()),
            None => (None, Duration::from_secs(10)),
        };
        let sockets = bind(&self.listen, &self.config, self.rt.pollers.len())?;
        let unix_path = match self.listen.transport {
            Transport::Unix | Transport::Unixgram if self.listen.unix.remove_on_shutdown => {
                Some(PathBuf::from(&self.listen.addr))
            }
            _ => None,
        };
        let shared = Arc::new(ServerShared {
            config: self.config,
            stats: Stats::default(),
            observer: self.observer,
            factory,
            dfactory,
            tls,
            handshake_timeout,
            draining: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            local: sockets.local.clone(),
            unix_path,
            done: (Mutex::new(()), Condvar::new()),
            ws: self.ws.as_ref().map(|w| w.0.clone()),
            ws_factory: self.ws.map(|w| w.1),
            per_ip: Mutex::new(HashMap::new()),
        });
        install(self.rt, &shared, sockets)?;
        shared
            .observer
            .on_lifecycle(&Lifecycle::Listening(shared.local.clone()));
        self.rt.add_server(shared.clone());
        Ok(Server {
            shared,
            rt: self.rt.clone(),
        })
    }
}

/// Bound sockets, one per poller or a single one.
struct Bound {
    local: Addr,
    listeners: Vec<ListenSock>,
    datagrams: Vec<DgramSock>,
}

fn resolve(addr: &str) -> Result<std::net::SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| Error::Config(format!("{addr} resolves to no address")))
}

fn bind(listen: &Listen, cfg: &ServerConfig, pollers: usize) -> Result<Bound> {
    let mut b = Bound {
        local: Addr::Unix(None),
        listeners: Vec::new(),
        datagrams: Vec::new(),
    };
    match listen.transport {
        Transport::Tcp | Transport::Tls => {
            let first = crate::sys::tcp_listener(resolve(&listen.addr)?, cfg.backlog)?;
            let actual = first.local_addr()?;
            b.local = Addr::Inet(actual);
            b.listeners
                .push(ListenSock::Tcp(mio::net::TcpListener::from_std(first)));
            for _ in 1..pollers {
                let l = crate::sys::tcp_listener(actual, cfg.backlog)?;
                b.listeners
                    .push(ListenSock::Tcp(mio::net::TcpListener::from_std(l)));
            }
        }
        Transport::Udp => {
            let first = crate::sys::udp_socket(resolve(&listen.addr)?)?;
            let actual = first.local_addr()?;
            b.local = Addr::Inet(actual);
            b.datagrams
                .push(DgramSock::Udp(mio::net::UdpSocket::from_std(first)));
            for _ in 1..pollers {
                let s = crate::sys::udp_socket(actual)?;
                b.datagrams
                    .push(DgramSock::Udp(mio::net::UdpSocket::from_std(s)));
            }
        }
        Transport::Unix => {
            let path = Path::new(&listen.addr);
            crate::sys::clear_stale_socket(path, false)?;
            let l = crate::sys::unix_listener(path, cfg.backlog)?;
            crate::sys::set_socket_owner(path, listen.unix.mode, listen.unix.group.as_deref())?;
            b.local = Addr::Unix(Some(path.to_path_buf()));
            b.listeners
                .push(ListenSock::Unix(mio::net::UnixListener::from_std(l)));
        }
        Transport::Unixgram => {
            let path = Path::new(&listen.addr);
            crate::sys::clear_stale_socket(path, true)?;
            let s = crate::sys::unix_datagram(path)?;
            crate::sys::set_socket_owner(path, listen.unix.mode, listen.unix.group.as_deref())?;
            b.local = Addr::Unix(Some(path.to_path_buf()));
            b.datagrams
                .push(DgramSock::Unix(mio::net::UnixDatagram::from_std(s)));
        }
    }
    Ok(b)
}

/// Registers the bound sockets on the pollers and waits until each is in place.
fn install(rt: &Arc<RuntimeInner>, server: &Arc<ServerShared>, b: Bound) -> Result<()> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let n = rt.pollers.len();
    let start = rt.next_poller();
    let single = b.listeners.len() == 1 && n > 1;
    let mut count = 0;
    for (i, l) in b.listeners.into_iter().enumerate() {
        let (server, tx) = (server.clone(), tx.clone());
        count += 1;
        rt.pollers[(start + i) % n].run(move |p| {
            let (slot, gen) = p.reserve();
            let mut listener = Listener::new(l, server, single);
            let r = match &mut listener.sock {
                ListenSock::Tcp(s) => p.register(s, slot, gen, mio::Interest::READABLE),
                ListenSock::Unix(s) => p.register(s, slot, gen, mio::Interest::READABLE),
            };
            if r.is_ok() {
                p.entries.insert(Entry::Listener(Box::new(listener)));
            }
            let _ = tx.send(r);
        });
    }
    for (i, d) in b.datagrams.into_iter().enumerate() {
        let (server, tx, local) = (server.clone(), tx.clone(), server.local.clone());
        count += 1;
        rt.pollers[(start + i) % n].run(move |p| {
            let _ = tx.send(p.adopt_datagram(d, server, local));
        });
    }
    for _ in 0..count {
        rx.recv().map_err(|_| Error::Closed)??;
    }
    Ok(())
}

/// A running server. Dropping the handle leaves the server running; stop it with
/// [`shutdown`](Self::shutdown) or [`Runtime::shutdown`](crate::Runtime::shutdown).
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

    /// Open connections right now.
    pub fn open_connections(&self) -> usize {
        self.shared.stats.open.load(Ordering::Acquire)
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
        self.shared.stats.snapshot()
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
    if server.draining.swap(true, Ordering::AcqRel) {
        return server.wait_closed(Instant::now() + deadline);
    }
    let until = Instant::now() + deadline;
    server.observer.on_lifecycle(&Lifecycle::Draining);
    rt.on_pollers(server, |p, s| {
        p.remove_listeners(s);
        p.close_datagrams(s);
        p.drain_server(s);
    });
    let clean = server.wait_closed(until);
    if !clean {
        rt.on_pollers(server, |p, s| p.force_close_server(s));
        server.wait_closed(Instant::now() + Duration::from_secs(1));
    }
    rt.pool.barrier();
    if let Some(path) = &server.unix_path {
        let _ = std::fs::remove_file(path);
    }
    server.stopped.store(true, Ordering::Release);
    server.observer.on_lifecycle(&Lifecycle::Stopped);
    clean
}

impl crate::reactor::poller::Poller {
    /// Removes (and closes) every listener of `server` on this poller.
    pub(crate) fn remove_listeners(&mut self, server: &Arc<ServerShared>) {
        let slots: Vec<usize> = self
            .entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Listener(l) if Arc::ptr_eq(&l.server, server) => Some(k),
                _ => None,
            })
            .collect();
        for k in slots {
            self.remove_entry(k);
        }
    }
}
