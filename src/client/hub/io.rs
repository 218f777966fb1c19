//! The client's thread: the connection, the session's counts both ways, acknowledgements,
//! and reconnection with backoff.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{
    encode, lock, ClientEvent, ConnectionEvent, HubClientError, HubClientOptions, HubEvent, InEnv,
    Link, Out, Shared, Waiter,
};
use crate::proto::session::{self as wire, ClientSession, Welcome, Welcomed};

/// How often the client's thread looks at the offline buffer while the connection is quiet.
const POLL: Duration = Duration::from_millis(5);
/// How often the client asks the server to confirm what it sent, while some is unconfirmed.
const ASK_EVERY: Duration = Duration::from_millis(50);

pub(super) fn seed() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    t.map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
}

/// splitmix64: enough to spread reconnects.
pub(super) fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(super) fn with_query(url: &str, query: &str) -> String {
    if query.is_empty() {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// The client's thread: the connection, the session, reconnection.
pub(super) struct Io {
    pub(super) url: String,
    pub(super) opts: HubClientOptions,
    pub(super) shared: Arc<Shared>,
    pub(super) events: Sender<HubEvent>,
    pub(super) wake: Receiver<()>,
    pub(super) link: Option<Box<dyn Link>>,
    pub(super) session: ClientSession<Out>,
    pub(super) rng: u64,
    pub(super) last_ask: Instant,
    /// On a fallback transport: when to try the first one again.
    pub(super) upgrade_at: Option<Instant>,
    /// The wait before the next upgrade attempt (doubles after each failure).
    pub(super) upgrade_wait: Duration,
}

/// The longest wait between two upgrade attempts.
const MAX_UPGRADE_WAIT: Duration = Duration::from_secs(60);

impl Io {
    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    pub(super) fn run(mut self) {
        loop {
            if self.closed() {
                self.shutdown();
                return;
            }
            if self.link.is_none() && !self.reconnect() {
                let by_user = self.closed();
                self.give_up(by_user);
                return;
            }
            if let Err(e) = self.turn() {
                self.lost(&e.to_string());
            }
        }
    }

    fn shutdown(&mut self) {
        let _ = self.flush();
        if let Some(mut l) = self.link.take() {
            l.close();
        }
        self.shared.connected.store(false, Ordering::Release);
    }

    fn give_up(&mut self, by_user: bool) {
        self.shared.closed.store(true, Ordering::Release);
        if !by_user {
            self.event(HubEvent::State(ConnectionEvent::GaveUp));
        }
        let waiters: Vec<Waiter> = lock(&self.shared.waiters).drain().map(|(_, w)| w).collect();
        for w in waiters {
            let _ = w.send(Err(HubClientError::Closed));
        }
    }

    /// Delivers an event, waiting (while not closed) when the user is behind.
    fn event(&self, mut ev: HubEvent) {
        loop {
            match self.events.send_timeout(ev, Duration::from_millis(50)) {
                Ok(()) => return,
                Err(crossbeam_channel::SendTimeoutError::Timeout(e)) if !self.closed() => ev = e,
                Err(_) => return,
            }
        }
    }

    fn lost(&mut self, reason: &str) {
        if let Some(mut l) = self.link.take() {
            l.close();
        }
        self.shared.connected.store(false, Ordering::Release);
        let reason = reason.to_owned();
        self.event(HubEvent::State(ConnectionEvent::Disconnected { reason }));
    }

    /// Attempts with backoff until connected (true), closed or out of attempts (false).
    fn reconnect(&mut self) -> bool {
        let mut attempt = 0u32;
        loop {
            if self.closed() || self.opts.max_attempts.is_some_and(|m| attempt >= m) {
                return false;
            }
            let delay = self.opts.backoff.delay(attempt, next_random(&mut self.rng));
            attempt = attempt.saturating_add(1);
            let ev = ConnectionEvent::Reconnecting { attempt, delay };
            self.event(HubEvent::State(ev));
            if self.wake.recv_timeout(delay).is_ok() {
                return false;
            }
            if self.open().is_ok() {
                return true;
            }
        }
    }

    /// Opens a connection over the first transport that works and completes the welcome.
    pub(super) fn open(&mut self) -> Result<(), HubClientError> {
        let query = match self.opts.sessions {
            true => self.session.query(),
            false => String::new(),
        };
        let url = with_query(&self.url, &query);
        let mut last = crate::Error::Config("no transport configured".into());
        for (i, t) in self.opts.transports.clone().iter().enumerate() {
            match t.open(&url) {
                Ok(link) => {
                    self.welcome(link)?;
                    self.on_transport(i, self.opts.upgrade_after);
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(HubClientError::Connect(last))
    }

    /// Connected over transport `i`: on a fallback, schedule a try of the first one.
    fn on_transport(&mut self, i: usize, wait: Option<Duration>) {
        self.shared.transport.store(i, Ordering::Release);
        self.upgrade_at = match (i, wait, self.opts.sessions) {
            (1.., Some(w), true) => {
                self.upgrade_wait = w;
                Some(crate::base::saturating(Instant::now(), w))
            }
            _ => None,
        };
    }

    /// Tries the first transport while connected over a fallback: the new connection
    /// resumes the session (the server moves it over and closes the old one); nothing
    /// more is read from the old connection, so what it still carried comes again, in
    /// order, as the resume's replay. On failure the old connection stays in use.
    fn try_upgrade(&mut self) {
        let Some(first) = self.opts.transports.first().cloned() else {
            return;
        };
        let url = with_query(&self.url, &self.session.query());
        let old = self.link.take();
        let ok = match first.open(&url) {
            Ok(link) => self.welcome(link).is_ok(),
            Err(_) => false,
        };
        if ok {
            if let Some(mut o) = old {
                o.close();
            }
            self.on_transport(0, None);
            return;
        }
        if self.link.is_none() {
            self.link = old;
        }
        let wait = (self.upgrade_wait * 2).min(MAX_UPGRADE_WAIT);
        let i = self.shared.transport.load(Ordering::Acquire);
        self.on_transport(i, Some(wait));
    }

    fn welcome(&mut self, mut link: Box<dyn Link>) -> Result<(), HubClientError> {
        if !self.opts.sessions {
            self.link = Some(link);
            self.connected(ConnectionEvent::Connected { session: None });
            return Ok(());
        }
        let deadline = crate::base::saturating(Instant::now(), self.opts.welcome_timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HubClientError::Timeout);
            }
            let text = link.recv_timeout(left).map_err(HubClientError::Connect)?;
            let Some(env) = text.and_then(|t| serde_json::from_str::<InEnv>(&t).ok()) else {
                continue;
            };
            match env.event.as_str() {
                wire::EV_WELCOME | wire::EV_RESUMED => {
                    let w: Welcome = serde_json::from_value(env.data)
                        .map_err(|e| HubClientError::Encode(e.to_string()))?;
                    return self.welcomed(link, &w);
                }
                wire::EV_REFUSED => {
                    let why = env.data["reason"].as_str().unwrap_or("refused").to_owned();
                    link.close();
                    return Err(HubClientError::SessionRefused(why));
                }
                _ => {}
            }
        }
    }

    fn welcomed(&mut self, mut link: Box<dyn Link>, w: &Welcome) -> Result<(), HubClientError> {
        let had = self.session.sid().is_some();
        let ev = match self.session.welcome(w) {
            Welcomed::Resumed { resend } => {
                for o in &resend {
                    link.send_text(&o.text).map_err(HubClientError::Connect)?;
                }
                ConnectionEvent::Resumed {
                    replayed: w.replayed,
                    resent: resend.len(),
                }
            }
            Welcomed::Fresh { unconfirmed } if had => {
                self.not_recovered(&unconfirmed);
                let reason = w.reason.clone().unwrap_or_else(|| "unknown".into());
                ConnectionEvent::NotRecovered {
                    reason,
                    unconfirmed: unconfirmed.len(),
                }
            }
            Welcomed::Fresh { .. } => ConnectionEvent::Connected {
                session: Some(w.sid.clone()),
            },
            Welcomed::Mismatch => ConnectionEvent::NotRecovered {
                reason: "mismatch".into(),
                unconfirmed: 0,
            },
        };
        *lock(&self.shared.sid) = Some(w.sid.clone());
        self.link = Some(link);
        self.connected(ev);
        Ok(())
    }

    fn not_recovered(&self, unconfirmed: &[Out]) {
        for o in unconfirmed {
            self.shared.fail(o, || HubClientError::NotRecovered);
        }
    }

    fn connected(&mut self, ev: ConnectionEvent) {
        self.shared.connected.store(true, Ordering::Release);
        self.event(HubEvent::State(ev));
    }

    /// One turn: write what is queued, then read (or notice quiet).
    fn turn(&mut self) -> crate::Result<()> {
        if self.upgrade_at.is_some_and(|at| Instant::now() >= at) {
            self.try_upgrade();
        }
        self.flush()?;
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        match link.recv_timeout(POLL)? {
            Some(text) => self.incoming(&text),
            None => self.quiet(),
        }
    }

    /// Writes the offline buffer, oldest first; with a session each is kept until the
    /// server confirms it.
    fn flush(&mut self) -> crate::Result<()> {
        loop {
            let Some(link) = self.link.as_mut() else {
                return Ok(());
            };
            let Some(out) = lock(&self.shared.pending).pop_front() else {
                return Ok(());
            };
            let r = link.send_text(&out.text);
            if self.opts.sessions {
                // Sent or not, it is numbered now: the resume decides whether it went.
                self.session.sent(out);
            } else if r.is_err() {
                lock(&self.shared.pending).push_front(out);
            }
            r?;
        }
    }

    fn send_control(&mut self, n: u64) -> crate::Result<()> {
        let text = encode(wire::EV_ACK, &n, None, None).unwrap_or_default();
        match self.link.as_mut() {
            Some(l) => l.send_text(&text),
            None => Ok(()),
        }
    }

    fn incoming(&mut self, text: &str) -> crate::Result<()> {
        let Ok(env) = serde_json::from_str::<InEnv>(text) else {
            return Ok(());
        };
        if env.event.starts_with(wire::PREFIX) {
            if env.event == wire::EV_ACK {
                let n = env.data.as_u64().unwrap_or(0);
                self.session.confirm(n);
            }
            return Ok(());
        }
        if !self.opts.sessions {
            self.deliver(env);
            return Ok(());
        }
        // Counted and delivered together: a failing write below cannot separate them.
        self.session.received();
        self.deliver(env);
        match self.session.ack_due(false) {
            Some(n) => self.send_control(n),
            None => Ok(()),
        }
    }

    /// An answer (`ack`, `error`, or a reply on the request's event, each with its `ref`)
    /// goes to the `emit_with_ack` waiting for it; anything else to `recv`.
    fn deliver(&mut self, env: InEnv) {
        let waiting = env.reference;
        if let Some(r) = waiting.filter(|r| lock(&self.shared.waiters).contains_key(r)) {
            let answer = match env.event.as_str() {
                "error" => Err(HubClientError::Server {
                    code: env.data["code"].as_str().unwrap_or("").to_owned(),
                    message: env.data["message"].as_str().unwrap_or("").to_owned(),
                }),
                _ => Ok(env.data),
            };
            self.shared.answer(r, answer);
            return;
        }
        if env.event == "ack" {
            return;
        }
        let ev = ClientEvent {
            event: env.event,
            data: env.data,
            id: env.id,
        };
        self.event(HubEvent::Message(ev));
    }

    /// The connection is quiet: acknowledge what came, ask for confirmation of what went.
    fn quiet(&mut self) -> crate::Result<()> {
        if !self.opts.sessions {
            return Ok(());
        }
        if let Some(n) = self.session.ack_due(true) {
            self.last_ask = Instant::now();
            return self.send_control(n);
        }
        if self.session.unacked() > 0 && self.last_ask.elapsed() >= ASK_EVERY {
            self.last_ask = Instant::now();
            let n = self.session.received_count();
            return self.send_control(n);
        }
        Ok(())
    }
}
