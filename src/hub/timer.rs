//! The hub's one timer thread: typing indicators that expire, the deadlines of
//! acknowledged deliveries (resends, timeouts), and the close check (connections whose close
//! began leave the hub). No thread per timer; the thread ends when the hub is dropped.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::ack::InHub;
use super::presence::{self, Typing, TypingCmd};
use super::{Hub, HubInner};
use crate::ConnId;

/// `now + d`, saturating far in the future ("never" in practice).
pub(crate) fn later(d: Duration) -> Instant {
    crate::base::saturating(Instant::now(), d)
}

/// What the timer thread is told.
pub(crate) enum TimerCmd {
    /// Start, refresh or stop a typing indicator.
    Typing(TypingCmd),
    /// Attempt `attempt` of acknowledged delivery `id` ends at `at`.
    Ack { id: u64, attempt: u32, at: Instant },
    /// Session `id` ends at `at` unless it was resumed (its epoch changed) by then.
    Session { id: ConnId, epoch: u64, at: Instant },
    /// Session member `id` leaves the hub now, quietly (its session went on on another
    /// node; it ended under a lock the departure cannot take).
    Depart(ConnId),
}

/// The deadlines the thread keeps (sans-IO: the caller passes the time).
struct Timers {
    typing: Typing,
    acks: BTreeMap<(Instant, u64), (u64, u32)>,
    sessions: BTreeMap<(Instant, u64), (ConnId, u64)>,
    seq: u64,
    close_check: Duration,
    next_check: Instant,
}

/// What came due.
enum Due {
    TypingEnded(Vec<((String, String), crate::ConnId)>),
    Ack(u64, u32),
    /// A session's window may have ended.
    Session(ConnId, u64),
    /// Look for connections whose close began.
    CloseCheck,
    /// A session member leaves the hub.
    Depart(ConnId),
}

impl Timers {
    fn new(close_check: Duration) -> Self {
        Timers {
            typing: Typing::default(),
            acks: BTreeMap::new(),
            sessions: BTreeMap::new(),
            seq: 0,
            close_check: close_check.max(Duration::from_millis(1)),
            next_check: later(close_check),
        }
    }

    fn apply(&mut self, cmd: TimerCmd) -> Option<Due> {
        match cmd {
            TimerCmd::Typing(c) => self.typing.apply(c).map(|e| Due::TypingEnded(vec![e])),
            TimerCmd::Ack { id, attempt, at } => {
                self.seq += 1;
                self.acks.insert((at, self.seq), (id, attempt));
                None
            }
            TimerCmd::Session { id, epoch, at } => {
                self.seq += 1;
                self.sessions.insert((at, self.seq), (id, epoch));
                None
            }
            TimerCmd::Depart(id) => Some(Due::Depart(id)),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let ack = self.acks.keys().next().map(|k| k.0);
        let next = crate::base::earliest(self.typing.next_deadline(), ack);
        let next = crate::base::earliest(next, self.sessions.keys().next().map(|k| k.0));
        crate::base::earliest(next, Some(self.next_check))
    }

    fn due(&mut self, now: Instant) -> Vec<Due> {
        let mut out = Vec::new();
        while let Some(e) = self.acks.first_entry() {
            if e.key().0 > now {
                break;
            }
            let (id, attempt) = e.remove();
            out.push(Due::Ack(id, attempt));
        }
        while let Some(e) = self.sessions.first_entry() {
            if e.key().0 > now {
                break;
            }
            let (id, epoch) = e.remove();
            out.push(Due::Session(id, epoch));
        }
        let ended = self.typing.expire(now);
        if !ended.is_empty() {
            out.push(Due::TypingEnded(ended));
        }
        if now >= self.next_check {
            self.next_check = crate::base::deadline(now, self.close_check).unwrap_or(now);
            out.push(Due::CloseCheck);
        }
        out
    }
}

/// Starts the hub's timer thread.
pub(crate) fn spawn(hub: Weak<HubInner>, close_check: Duration) -> Sender<TimerCmd> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let spawned = std::thread::Builder::new()
        .name("sockloop-hub-timer".into())
        .spawn(move || run(&hub, &rx, close_check));
    if let Err(e) = spawned {
        log::error!("hub: no timer thread, typing indicators and ack timeouts will not fire: {e}");
    }
    tx
}

fn run(hub: &Weak<HubInner>, rx: &Receiver<TimerCmd>, close_check: Duration) {
    // Waiting for acks here would stop the clock that ends them.
    let _hub_code = InHub::enter();
    let mut timers = Timers::new(close_check);
    loop {
        let wait = timers
            .next_deadline()
            .map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
        let mut due = match rx.recv_timeout(wait) {
            Ok(cmd) => timers.apply(cmd).into_iter().collect(),
            Err(RecvTimeoutError::Timeout) => Vec::new(),
            Err(RecvTimeoutError::Disconnected) => return,
        };
        due.extend(timers.due(Instant::now()));
        if due.is_empty() {
            continue;
        }
        let Some(inner) = hub.upgrade() else { return };
        let hub = Hub { inner };
        for d in due {
            fire(&hub, d);
        }
    }
}

fn fire(hub: &Hub, due: Due) {
    match due {
        Due::TypingEnded(ended) => ended.into_iter().for_each(|e| presence::ended(hub, e)),
        Due::Ack(id, attempt) => hub.ack_deadline(id, attempt),
        Due::Session(id, epoch) => hub.session_expired(id, epoch),
        Due::CloseCheck => hub.depart_closing(),
        Due::Depart(id) => hub.depart_moved(id),
    }
}

impl Hub {
    pub(crate) fn timer(&self, cmd: TimerCmd) {
        let _ = self.inner.timer.send(cmd);
    }

    pub(crate) fn schedule_ack(&self, id: u64, attempt: u32, at: Instant) {
        self.timer(TimerCmd::Ack { id, attempt, at });
    }
}
