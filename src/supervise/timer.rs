//! Timers: `send_after` and `send_interval`, all served by one thread per node.
//!
//! The thread is started by the node's first timer and sleeps until the nearest deadline
//! (a binary heap of deadlines; cancelled timers are skipped when they come up, and the
//! heap is rebuilt when they outnumber the live ones). A timer only sends a message: the
//! work happens in the receiving process.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::{Node, ProcessRef, SendError};

/// What a timer does when it fires; `false` when its target is gone (an interval stops).
type Action = Box<dyn FnMut() -> bool + Send>;

/// The shortest interval of [`Node::send_interval`].
const MIN_INTERVAL: Duration = Duration::from_millis(1);

struct Timer {
    at: Instant,
    every: Option<Duration>,
    /// `None` while the action runs on the timer thread.
    action: Option<Action>,
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, Timer>,
    next: u64,
    started: bool,
    closed: bool,
}

/// The timers of one node.
pub(crate) struct Timers {
    state: Mutex<State>,
    cv: Condvar,
    thread_name: String,
}

/// A timer started by [`Node::send_after`] or [`Node::send_interval`]. Dropping it does
/// not cancel the timer (as in OTP); [`cancel`](Self::cancel) does.
#[derive(Clone)]
pub struct TimerRef {
    id: u64,
    timers: Weak<Timers>,
}

impl fmt::Debug for TimerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimerRef({})", self.id)
    }
}

impl TimerRef {
    /// Cancels the timer: a one-shot timer that has not fired yet never fires, an interval
    /// sends no further message. Returns `false` if there was nothing left to cancel (the
    /// one-shot timer already fired, or the timer was cancelled or stopped before).
    pub fn cancel(&self) -> bool {
        let Some(t) = self.timers.upgrade() else {
            return false;
        };
        let removed = t.lock().live.remove(&self.id).is_some();
        removed
    }

    /// `true` while the timer may still send a message.
    pub fn is_active(&self) -> bool {
        self.timers
            .upgrade()
            .is_some_and(|t| t.lock().live.contains_key(&self.id))
    }
}

impl Timers {
    pub(crate) fn new(thread_name: String) -> Arc<Timers> {
        Arc::new(Timers {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            thread_name,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the timer thread (the node is gone); pending timers are dropped.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.live.clear();
        st.heap.clear();
        self.cv.notify_all();
    }

    fn add(self: &Arc<Self>, after: Duration, every: Option<Duration>, action: Action) -> TimerRef {
        let mut st = self.lock();
        let id = st.next;
        st.next += 1;
        // A deadline past what an `Instant` holds never comes: the timer only waits.
        let at = Instant::now().checked_add(after);
        let timer = Timer {
            at: at.unwrap_or_else(Instant::now),
            every,
            action: Some(action),
        };
        if let Some(at) = at {
            st.heap.push(Reverse((at, id)));
        }
        st.live.insert(id, timer);
        if !st.started && !st.closed {
            st.started = true;
            self.start_thread();
        }
        self.cv.notify_one();
        TimerRef {
            id,
            timers: Arc::downgrade(self),
        }
    }

    fn start_thread(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name(self.thread_name.clone())
            .spawn(move || me.run());
        if let Err(e) = spawned {
            log::error!("supervise: cannot start the timer thread: {e}");
        }
    }

    /// The timer thread: sleeps until the nearest deadline, fires what is due.
    fn run(&self) {
        let mut st = self.lock();
        loop {
            if st.closed {
                return;
            }
            let Some(&Reverse((at, id))) = st.heap.peek() else {
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let now = Instant::now();
            if at > now {
                let nap = at - now;
                st = match self.cv.wait_timeout(st, nap) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
                continue;
            }
            st.heap.pop();
            st = self.fire(st, id, at);
            compact(&mut st);
        }
    }

    /// Fires timer `id` if it is live and due at `at` (else the heap entry is stale).
    fn fire<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        id: u64,
        at: Instant,
    ) -> MutexGuard<'a, State> {
        let Some(t) = st.live.get_mut(&id) else {
            return st;
        };
        if t.at != at || t.action.is_none() {
            return st;
        }
        let every = t.every;
        let mut action = if every.is_some() {
            t.action.take()
        } else {
            st.live.remove(&id).and_then(|t| t.action)
        };
        drop(st);
        // The send may report a full mailbox to the node's hook: not under the lock.
        let keep = action.as_mut().is_some_and(|a| a());
        let mut st = self.lock();
        if let (Some(every), true) = (every, keep) {
            reschedule(&mut st, id, at, every, action);
        } else if every.is_some() {
            st.live.remove(&id);
        }
        st
    }
}

/// Puts an interval back: next deadline one period later, or one period from now if it
/// fell behind by more than a period (no burst of catch-up messages).
fn reschedule(st: &mut State, id: u64, at: Instant, every: Duration, action: Option<Action>) {
    let Some(t) = st.live.get_mut(&id) else {
        return; // cancelled while it fired
    };
    let now = Instant::now();
    let mut next = at.checked_add(every).unwrap_or(now);
    if next <= now {
        next = now.checked_add(every).unwrap_or(now);
    }
    t.at = next;
    t.action = action;
    st.heap.push(Reverse((next, id)));
}

/// Rebuilds the heap when cancelled entries outnumber live ones (bounded memory).
fn compact(st: &mut State) {
    if st.heap.len() <= 2 * st.live.len() + 64 {
        return;
    }
    let heap = st
        .live
        .iter()
        .filter(|(_, t)| t.action.is_some())
        .map(|(id, t)| Reverse((t.at, *id)))
        .collect();
    st.heap = heap;
}

impl Node {
    /// Sends `msg` to `to` after `after` (`erlang:send_after/3`), from the node's timer
    /// thread (one per node, started by the first timer). The message is dropped if the
    /// process is gone or its mailbox is full then (reported as `MailboxFull`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sockloop::supervise::{from_fn, Control, Node};
    ///
    /// let node = Node::new();
    /// let (tx, rx) = crossbeam_channel::bounded(1);
    /// let p = node.spawn(from_fn(move |_ctx, m: &'static str| {
    ///     tx.send(m)?;
    ///     Ok(Control::Continue)
    /// })).unwrap();
    /// let never = node.send_after(&p, Duration::from_secs(3600), "late");
    /// node.send_after(&p, Duration::from_millis(10), "soon");
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "soon");
    /// assert!(never.cancel());
    /// ```
    pub fn send_after<M: Send + 'static>(
        &self,
        to: &ProcessRef<M>,
        after: Duration,
        msg: M,
    ) -> TimerRef {
        let to = to.clone();
        let mut msg = Some(msg);
        let action: Action = Box::new(move || {
            if let Some(m) = msg.take() {
                drop(to.send(m));
            }
            false
        });
        self.timers().add(after, None, action)
    }

    /// Sends a clone of `msg` to `to` every `every` (at least 1 ms) until cancelled or
    /// until the process is gone (`timer:send_interval/3`). A tick that finds the mailbox
    /// full is skipped; ticks are not bunched up to catch up after a delay.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sockloop::supervise::{from_fn, Control, Node};
    ///
    /// let node = Node::new();
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// let p = node.spawn(from_fn(move |_ctx, tick: u8| {
    ///     tx.send(tick)?;
    ///     Ok(Control::Continue)
    /// })).unwrap();
    /// let t = node.send_interval(&p, Duration::from_millis(5), 1u8);
    /// for _ in 0..3 {
    ///     rx.recv_timeout(Duration::from_secs(5)).unwrap();
    /// }
    /// assert!(t.cancel());
    /// ```
    pub fn send_interval<M: Clone + Send + 'static>(
        &self,
        to: &ProcessRef<M>,
        every: Duration,
        msg: M,
    ) -> TimerRef {
        let every = every.max(MIN_INTERVAL);
        let to = to.clone();
        let action: Action = Box::new(move || match to.send(msg.clone()) {
            Ok(()) | Err(SendError::MailboxFull(_)) => true,
            Err(_) => false,
        });
        self.timers().add(every, Some(every), action)
    }
}
