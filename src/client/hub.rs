//! A blocking client for sockloop hubs: emit, emit with ack, receive events, and a session
//! that survives reconnects (exponential backoff with full jitter, resume with replay both
//! ways, a bounded offline buffer, connection-state events).
//!
//! One background thread owns the connection: it writes what [`HubClient::emit`] queued,
//! reads and numbers what arrives, acknowledges it, and reconnects when the connection
//! breaks. With sessions on (the default) nothing is lost, duplicated or reordered across a
//! reconnect inside the server's window; past it the client says so
//! ([`ConnectionEvent::NotRecovered`]) and starts a new session. The wire protocol is in
//! `docs/PROTOCOL.md`, "Sessions".
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use sockloop::client::hub::{HubClient, HubClientOptions, HubEvent};
//!
//! let client = HubClient::connect("ws://127.0.0.1:9000/", HubClientOptions::default())?;
//! client.emit("chat:send", &serde_json::json!({"room": "lobby", "text": "hi"}))?;
//! let answer = client.emit_with_ack("room:join", &"lobby", Duration::from_secs(5))?;
//! println!("joined: {answer}");
//! while let Some(ev) = client.recv(Duration::from_secs(1)) {
//!     if let HubEvent::Message(m) = ev {
//!         println!("{} {}", m.event, m.data);
//!     }
//! }
//! # Ok::<(), sockloop::client::hub::HubClientError>(())
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

mod io;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::polling::{PollingClient, PollingOptions};
use super::ws::{Message, WsClient, WsClientOptions};
use crate::proto::session::ClientSession;
use crate::proto::ws::CloseCode;
use io::{seed, Io};

/// How the client reaches the hub, tried in order at every (re)connect.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HubTransport {
    /// WebSocket (`ws://` or `wss://`), with these options.
    WebSocket(WsClientOptions),
    /// HTTP long-polling on the same URL (`ws://`/`http://`, `wss://`/`https://`; the
    /// server needs [`WsServerConfig::polling`](crate::WsServerConfig::polling)), with
    /// these options. Put it after `WebSocket` as the fallback: while the client is on it,
    /// it tries the first transport again every
    /// [`upgrade_after`](HubClientOptions::upgrade_after) and moves the session over
    /// (a resume: nothing lost, nothing twice, the order kept).
    Polling(PollingOptions),
}

/// What [`HubClient::emit`] does when the offline buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OfflinePolicy {
    /// The oldest message not yet written is dropped (the default); an
    /// [`emit_with_ack`](HubClient::emit_with_ack) waiting for it fails with
    /// [`HubClientError::Dropped`].
    #[default]
    DropOldest,
    /// The new message is dropped (`emit` still returns `Ok`).
    DropNewest,
    /// `emit` returns [`HubClientError::Full`].
    Error,
}

/// Reconnection delays: exponential backoff with full jitter, floored at the minimum.
///
/// The delay before attempt `n` (0-based) is uniform in `[min, cap(n)]`, where
/// `cap(n) = min(max, min × factorⁿ)` (a zero `min` grows from 1 ms): clients that lost the same server spread out, even
/// once every one of them is at the cap, and no delay is ever below `min`. Computed without
/// overflow for any `n`.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use sockloop::client::hub::Backoff;
/// let b = Backoff::default();
/// assert_eq!(b.cap(0), Duration::from_millis(100));
/// assert_eq!(b.cap(u32::MAX), Duration::from_secs(10));
/// let d = b.delay(3, 12345);
/// assert!(d >= b.min && d <= b.cap(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The shortest delay (default 100 ms).
    pub min: Duration,
    /// The longest delay (default 10 s).
    pub max: Duration,
    /// Growth per attempt (default 2; 0 and 1 keep the delay at `min`).
    pub factor: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
            factor: 2,
        }
    }
}

impl Backoff {
    /// `min`, `max` and the default factor 2.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            factor: 2,
        }
    }

    /// The upper bound of the delay before attempt `attempt` (0-based).
    pub fn cap(&self, attempt: u32) -> Duration {
        let max = self.max.max(self.min);
        if self.factor <= 1 {
            return self.min;
        }
        // A zero minimum grows from 1 ms.
        let base = self.min.max(Duration::from_millis(1));
        let grown = self
            .factor
            .checked_pow(attempt)
            .and_then(|p| base.checked_mul(p));
        grown.map_or(max, |d| d.min(max))
    }

    /// The delay before attempt `attempt`, from a uniformly random `random`.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let (lo, hi) = (self.min, self.cap(attempt));
        if hi <= lo {
            return lo;
        }
        let span = u64::try_from((hi - lo).as_nanos()).unwrap_or(u64::MAX);
        let pick = match span.checked_add(1) {
            Some(n) => random % n,
            None => random,
        };
        lo.saturating_add(Duration::from_nanos(pick))
    }
}

/// Options of [`HubClient::connect`]; every default is listed on its field.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use sockloop::client::hub::{Backoff, HubClientOptions, OfflinePolicy};
/// let opts = HubClientOptions::default()
///     .backoff(Backoff::new(Duration::from_millis(50), Duration::from_secs(5)))
///     .offline_buffer(10_000, OfflinePolicy::Error);
/// assert_eq!(opts.offline_limit, 10_000);
/// ```
#[derive(Debug, Clone)]
pub struct HubClientOptions {
    /// Transports tried in order (default: WebSocket with [`WsClientOptions::default`]).
    pub transports: Vec<HubTransport>,
    /// Reconnection delays (default [`Backoff::default`]: 100 ms to 10 s, factor 2).
    pub backoff: Backoff,
    /// Reconnection attempts after a connection is lost before giving up (default `None`:
    /// never give up).
    pub max_attempts: Option<u32>,
    /// Messages [`emit`](HubClient::emit) may queue that are not yet written (default
    /// 1,024): the offline buffer.
    pub offline_limit: usize,
    /// What happens past [`offline_limit`](Self::offline_limit) (default
    /// [`OfflinePolicy::DropOldest`]).
    pub offline_policy: OfflinePolicy,
    /// Ask the hub for a session (default `true`). Without one, a reconnect starts afresh
    /// and what was in flight may be lost.
    pub sessions: bool,
    /// How long the server has to welcome a new connection (default 10 s).
    pub welcome_timeout: Duration,
    /// Events kept for [`recv`](HubClient::recv) before the client stops reading from the
    /// server (default 16,384).
    pub event_capacity: usize,
    /// On a fallback transport (not the first of [`transports`](Self::transports)), try the
    /// first one again after this long, doubling after each failure up to 60 s, and move
    /// the session over by a resume when it works (default 1 s; `None`: stay). Needs
    /// [`sessions`](Self::sessions).
    pub upgrade_after: Option<Duration>,
}

impl Default for HubClientOptions {
    fn default() -> Self {
        HubClientOptions {
            transports: vec![HubTransport::WebSocket(WsClientOptions::default())],
            backoff: Backoff::default(),
            max_attempts: None,
            offline_limit: 1024,
            offline_policy: OfflinePolicy::default(),
            sessions: true,
            welcome_timeout: Duration::from_secs(10),
            event_capacity: 16 << 10,
            upgrade_after: Some(Duration::from_secs(1)),
        }
    }
}

impl HubClientOptions {
    /// Sets [`transports`](Self::transports).
    pub fn transports(mut self, t: Vec<HubTransport>) -> Self {
        self.transports = t;
        self
    }

    /// Sets [`backoff`](Self::backoff).
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, n: Option<u32>) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets [`offline_limit`](Self::offline_limit) and
    /// [`offline_policy`](Self::offline_policy).
    pub fn offline_buffer(mut self, limit: usize, policy: OfflinePolicy) -> Self {
        self.offline_limit = limit;
        self.offline_policy = policy;
        self
    }

    /// Sets [`sessions`](Self::sessions).
    pub fn sessions(mut self, on: bool) -> Self {
        self.sessions = on;
        self
    }

    /// Sets [`upgrade_after`](Self::upgrade_after).
    pub fn upgrade_after(mut self, d: Option<Duration>) -> Self {
        self.upgrade_after = d;
        self
    }

    /// Sets [`welcome_timeout`](Self::welcome_timeout).
    pub fn welcome_timeout(mut self, d: Duration) -> Self {
        self.welcome_timeout = d;
        self
    }
}

/// What went wrong in a [`HubClient`] call.
#[derive(Debug)]
#[non_exhaustive]
pub enum HubClientError {
    /// Connecting failed (every transport was tried; the last error).
    Connect(crate::Error),
    /// The server refused a session (`disabled`, `drop_oldest`).
    SessionRefused(String),
    /// No answer in time.
    Timeout,
    /// The client is closed (or gave up reconnecting).
    Closed,
    /// The offline buffer is full ([`OfflinePolicy::Error`]); the message was not queued.
    Full,
    /// The message was dropped from the offline buffer ([`OfflinePolicy::DropOldest`]).
    Dropped,
    /// The session was lost before the message was confirmed: it may or may not have
    /// been handled.
    NotRecovered,
    /// The server answered with an `error` event.
    Server {
        /// The error code (`bad_data`, `forbidden`…).
        code: String,
        /// The server's message.
        message: String,
    },
    /// The data could not be serialized.
    Encode(String),
}

impl fmt::Display for HubClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubClientError::Connect(e) => write!(f, "connect failed: {e}"),
            HubClientError::SessionRefused(r) => write!(f, "session refused: {r}"),
            HubClientError::Timeout => f.write_str("timed out"),
            HubClientError::Closed => f.write_str("client closed"),
            HubClientError::Full => f.write_str("offline buffer full"),
            HubClientError::Dropped => f.write_str("dropped from the offline buffer"),
            HubClientError::NotRecovered => f.write_str("session lost before confirmation"),
            HubClientError::Server { code, message } => write!(f, "{code}: {message}"),
            HubClientError::Encode(e) => write!(f, "encoding failed: {e}"),
        }
    }
}

impl std::error::Error for HubClientError {}

/// An event the server sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientEvent {
    /// The event name.
    pub event: String,
    /// The payload (`null` when absent).
    pub data: Value,
    /// Present when the server asks for an acknowledgement: answer with
    /// [`HubClient::ack`].
    pub id: Option<u64>,
}

/// A change of the connection's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// Connected with a new session (or none when sessions are off).
    Connected {
        /// The session id.
        session: Option<String>,
    },
    /// The connection broke.
    Disconnected {
        /// What happened.
        reason: String,
    },
    /// Waiting `delay` before attempt `attempt` (1-based).
    Reconnecting {
        /// The attempt about to be made.
        attempt: u32,
        /// The delay before it.
        delay: Duration,
    },
    /// The session continued: the server replayed `replayed` messages and the client
    /// resent `resent` the server had not received.
    Resumed {
        /// Server messages replayed.
        replayed: u64,
        /// Client messages sent again.
        resent: usize,
    },
    /// The session could not continue (all or nothing); a new one started. `unconfirmed`
    /// messages were sent and never confirmed: they may or may not have been handled.
    NotRecovered {
        /// The server's reason (`expired`, `unknown`, `gap`…).
        reason: String,
        /// Messages whose fate is unknown.
        unconfirmed: usize,
    },
    /// [`max_attempts`](HubClientOptions::max_attempts) reconnects failed; the client is
    /// closed.
    GaveUp,
}

/// What [`HubClient::recv`] returns.
#[derive(Debug, Clone, PartialEq)]
pub enum HubEvent {
    /// An event from the server.
    Message(ClientEvent),
    /// A connection-state change, in order with the messages.
    State(ConnectionEvent),
}

/// One connection of a transport: the three operations the client needs (a long-polling
/// client plugs in with them).
pub(super) trait Link: Send {
    fn send_text(&mut self, text: &str) -> crate::Result<()>;
    /// `Ok(None)`: nothing within `timeout`; an error: the connection is gone.
    fn recv_timeout(&mut self, timeout: Duration) -> crate::Result<Option<String>>;
    fn close(&mut self);
}

impl Link for WsClient {
    fn send_text(&mut self, text: &str) -> crate::Result<()> {
        WsClient::send_text(self, text)
    }

    fn recv_timeout(&mut self, timeout: Duration) -> crate::Result<Option<String>> {
        let deadline = crate::base::saturating(Instant::now(), timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match WsClient::recv_timeout(self, left)? {
                Some(Message::Text(t)) => return Ok(Some(t)),
                Some(Message::Close(..)) => return Err(crate::Error::Closed),
                Some(_) if !left.is_zero() => continue,
                Some(_) | None => return Ok(None),
            }
        }
    }

    fn close(&mut self) {
        let _ = WsClient::close(self, CloseCode::NORMAL, "bye");
    }
}

impl Link for PollingClient {
    fn send_text(&mut self, text: &str) -> crate::Result<()> {
        PollingClient::send_text(self, text)
    }

    fn recv_timeout(&mut self, timeout: Duration) -> crate::Result<Option<String>> {
        let deadline = crate::base::saturating(Instant::now(), timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match PollingClient::recv_timeout(self, left)? {
                Some(Message::Text(t)) => return Ok(Some(t)),
                Some(Message::Close(..)) => return Err(crate::Error::Closed),
                Some(_) if !left.is_zero() => continue,
                Some(_) | None => return Ok(None),
            }
        }
    }

    fn close(&mut self) {
        let _ = PollingClient::close(self);
    }
}

impl HubTransport {
    fn open(&self, url: &str) -> crate::Result<Box<dyn Link>> {
        match self {
            HubTransport::WebSocket(o) => Ok(Box::new(WsClient::connect(url, o.clone())?)),
            HubTransport::Polling(o) => Ok(Box::new(PollingClient::connect(url, o.clone())?)),
        }
    }
}

/// A message on its way out.
#[derive(Debug, Clone)]
pub(super) struct Out {
    text: String,
    /// The id an `emit_with_ack` waits on.
    ack: Option<u64>,
}

pub(super) type Waiter = Sender<Result<Value, HubClientError>>;

pub(super) struct Shared {
    pending: Mutex<VecDeque<Out>>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    closed: AtomicBool,
    connected: AtomicBool,
    /// The index in `transports` of the connection up now (`usize::MAX`: none yet).
    transport: std::sync::atomic::AtomicUsize,
    sid: Mutex<Option<String>>,
    limit: usize,
    policy: OfflinePolicy,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn answer(&self, id: u64, r: Result<Value, HubClientError>) {
        if let Some(w) = lock(&self.waiters).remove(&id) {
            let _ = w.send(r);
        }
    }

    fn fail(&self, out: &Out, e: fn() -> HubClientError) {
        if let Some(id) = out.ack {
            self.answer(id, Err(e()));
        }
    }
}

/// A blocking hub client. Cloneable handles are not offered: share it behind an `Arc`
/// (every method takes `&self`). Closing (or dropping) stops its thread.
pub struct HubClient {
    shared: Arc<Shared>,
    events: Receiver<HubEvent>,
    next_id: AtomicU64,
    wake: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for HubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubClient")
            .field("session", &self.session_id())
            .field("connected", &self.is_connected())
            .finish()
    }
}

#[derive(Serialize)]
struct OutEnv<'a, T: Serialize + ?Sized> {
    event: &'a str,
    data: &'a T,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<u64>,
}

#[derive(Deserialize)]
pub(super) struct InEnv {
    event: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, rename = "ref")]
    reference: Option<u64>,
}

pub(super) fn encode<T: Serialize + ?Sized>(
    event: &str,
    data: &T,
    id: Option<u64>,
    reference: Option<u64>,
) -> Result<String, HubClientError> {
    let env = OutEnv {
        event,
        data,
        id,
        reference,
    };
    serde_json::to_string(&env).map_err(|e| HubClientError::Encode(e.to_string()))
}

impl HubClient {
    /// Connects to the hub at `url` (`ws://host:port/path`), trying each transport in
    /// order, and waits for the server's welcome. Reconnects later happen on the client's
    /// thread.
    ///
    /// # Errors
    /// [`HubClientError::Connect`] when every transport failed;
    /// [`HubClientError::SessionRefused`] when a session was asked for and refused;
    /// [`HubClientError::Timeout`] without a welcome in time.
    pub fn connect(url: &str, opts: HubClientOptions) -> Result<HubClient, HubClientError> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(VecDeque::new()),
            waiters: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            transport: std::sync::atomic::AtomicUsize::new(usize::MAX),
            sid: Mutex::new(None),
            limit: opts.offline_limit.max(1),
            policy: opts.offline_policy,
        });
        let (etx, erx) = crossbeam_channel::bounded(opts.event_capacity.max(16));
        let (wtx, wrx) = crossbeam_channel::bounded(1);
        let mut io = Io {
            url: url.to_owned(),
            opts,
            shared: shared.clone(),
            events: etx,
            wake: wrx,
            link: None,
            session: ClientSession::default(),
            rng: seed(),
            last_ask: Instant::now(),
            upgrade_at: None,
            upgrade_wait: Duration::ZERO,
        };
        io.open()?;
        let thread = std::thread::Builder::new()
            .name("sockloop-hub-client".into())
            .spawn(move || io.run())
            .map_err(|e| HubClientError::Connect(e.into()))?;
        Ok(HubClient {
            shared,
            events: erx,
            next_id: AtomicU64::new(1),
            wake: wtx,
            thread: Some(thread),
        })
    }

    /// The session id, while the client has a session.
    pub fn session_id(&self) -> Option<String> {
        lock(&self.shared.sid).clone()
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// The index in [`HubClientOptions::transports`] of the transport the last connection
    /// used (`None` before the first): 0 after an upgrade from a fallback.
    pub fn transport(&self) -> Option<usize> {
        match self.shared.transport.load(Ordering::Acquire) {
            usize::MAX => None,
            i => Some(i),
        }
    }

    /// Queues `{"event", "data"}` for the server (written at once when connected, else
    /// kept in the offline buffer).
    ///
    /// # Errors
    /// [`HubClientError::Full`] past the offline limit with [`OfflinePolicy::Error`];
    /// [`HubClientError::Closed`]; [`HubClientError::Encode`].
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), HubClientError> {
        let text = encode(event, data, None, None)?;
        self.queue(Out { text, ack: None })
    }

    /// Acknowledges a server event that carried an `id` ([`ClientEvent::id`]).
    ///
    /// # Errors
    /// As [`emit`](Self::emit).
    pub fn ack<T: Serialize + ?Sized>(&self, id: u64, data: &T) -> Result<(), HubClientError> {
        let text = encode("ack", data, None, Some(id))?;
        self.queue(Out { text, ack: None })
    }

    /// Sends `{"event", "data", "id"}` and waits up to `timeout` for the server's answer:
    /// the data of its `ack` (or of a reply on the same event), or its `error`. The wait survives reconnects: with a session, the request is
    /// handled once and its answer replayed if a cut lost it.
    ///
    /// # Errors
    /// [`HubClientError::Timeout`]; [`HubClientError::Server`] for an `error` answer;
    /// [`HubClientError::NotRecovered`] when the session was lost with the request
    /// unconfirmed; as [`emit`](Self::emit).
    pub fn emit_with_ack<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        timeout: Duration,
    ) -> Result<Value, HubClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let text = encode(event, data, Some(id), None)?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        lock(&self.shared.waiters).insert(id, tx);
        if let Err(e) = self.queue(Out {
            text,
            ack: Some(id),
        }) {
            lock(&self.shared.waiters).remove(&id);
            return Err(e);
        }
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => {
                lock(&self.shared.waiters).remove(&id);
                Err(HubClientError::Timeout)
            }
        }
    }

    fn queue(&self, out: Out) -> Result<(), HubClientError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(HubClientError::Closed);
        }
        let mut q = lock(&self.shared.pending);
        if q.len() >= self.shared.limit {
            match self.shared.policy {
                OfflinePolicy::Error => return Err(HubClientError::Full),
                OfflinePolicy::DropNewest => {
                    self.shared.fail(&out, || HubClientError::Dropped);
                    return Ok(());
                }
                OfflinePolicy::DropOldest => {
                    if let Some(old) = q.pop_front() {
                        self.shared.fail(&old, || HubClientError::Dropped);
                    }
                }
            }
        }
        q.push_back(out);
        Ok(())
    }

    /// The next server event or connection-state change, waiting up to `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<HubEvent> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Messages queued and not yet written (the offline buffer).
    pub fn pending(&self) -> usize {
        lock(&self.shared.pending).len()
    }

    /// Writes what is queued (best effort), closes the connection and stops the thread.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        let _ = self.wake.try_send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HubClient {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::io::{next_random, with_query};
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_stay_between_the_minimum_and_the_cap() {
        let b = Backoff::new(100 * MS, 10_000 * MS);
        let mut rng = 7u64;
        for attempt in [
            0,
            1,
            2,
            5,
            6,
            7,
            30,
            31,
            32,
            63,
            64,
            1000,
            u32::MAX - 1,
            u32::MAX,
        ] {
            for _ in 0..200 {
                let d = b.delay(attempt, next_random(&mut rng));
                assert!(d >= b.min, "attempt {attempt}: {d:?} below the minimum");
                assert!(
                    d <= b.cap(attempt),
                    "attempt {attempt}: {d:?} above the cap"
                );
            }
        }
        assert_eq!(b.cap(0), 100 * MS);
        assert_eq!(b.cap(1), 200 * MS);
        assert_eq!(b.cap(6), 6_400 * MS);
        assert_eq!(b.cap(7), 10_000 * MS);
        assert_eq!(b.delay(0, u64::MAX), b.min.max(b.delay(0, u64::MAX)));
    }

    #[test]
    fn jitter_spreads_clients_at_the_cap() {
        let b = Backoff::default();
        let mut rng = 42u64;
        let delays: Vec<Duration> = (0..1000)
            .map(|_| b.delay(50, next_random(&mut rng)))
            .collect();
        let (lo, hi) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        // Uniform over [0.1 s, 10 s]: a thousand draws cover most of it.
        assert!(*lo < Duration::from_secs(1), "{lo:?}");
        assert!(*hi > Duration::from_secs(9), "{hi:?}");
        let mut distinct = delays.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 990, "{} distinct", distinct.len());
    }

    #[test]
    fn no_overflow_with_extreme_settings() {
        let huge = Backoff {
            min: Duration::from_secs(1),
            max: Duration::MAX,
            factor: u32::MAX,
        };
        assert_eq!(huge.cap(0), Duration::from_secs(1));
        assert_eq!(huge.cap(3), Duration::MAX);
        let d = huge.delay(u32::MAX, u64::MAX);
        assert!(d >= huge.min);
        let flat = Backoff {
            min: 5 * MS,
            max: MS,
            factor: 1,
        };
        assert_eq!(flat.delay(u32::MAX, 99), 5 * MS, "max below min: min wins");
        let zero = Backoff {
            min: Duration::ZERO,
            max: 10 * MS,
            factor: 2,
        };
        assert_eq!(zero.cap(0), MS);
        assert_eq!(zero.cap(2), 4 * MS);
        assert_eq!(zero.cap(100), 10 * MS);
        assert_eq!(zero.delay(100, 3), Duration::from_nanos(3));
    }

    #[test]
    fn queries_are_appended() {
        assert_eq!(with_query("ws://h/p", "a=1"), "ws://h/p?a=1");
        assert_eq!(with_query("ws://h/p?u=x", "a=1"), "ws://h/p?u=x&a=1");
        assert_eq!(with_query("ws://h/p", ""), "ws://h/p");
    }
}
