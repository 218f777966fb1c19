//! Mailboxes: the typed, cloneable sender of a process and its two queues.
//!
//! A process reads two unbounded crossbeam channels:
//!
//! - its **mailbox**, in arrival order: user messages `M`, DOWN notifications, and exit
//!   signals for a process that traps exits. One FIFO queue is what gives OTP's per-pair
//!   ordering: a message a process sends before it exits is queued before its EXIT or DOWN.
//!   User messages are counted against the mailbox capacity (a counter, not a preallocated
//!   array: the queue grows in blocks of 31 slots as it fills and shrinks as it drains);
//!   system messages are not counted and are never refused.
//! - an **urgent** queue of the signals that end a process: a shutdown request and the exit
//!   signals of links for a process that does not trap exits. It is looked at before every
//!   message, so they are taken after the current message, never after a backlog.
//!
//! The node delivers system messages through [`Sys`], without knowing `M`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::node::NodeInner;
use super::{Down, ExitReason, Pid, SendError, SystemEvent};

/// An entry of a process's mailbox.
pub(crate) enum Envelope<M> {
    /// A user message (counted against the capacity).
    Msg(M),
    /// A monitored process exited.
    Down(Down),
    /// A linked process exited, delivered in order to a process that traps exits.
    Exit { from: Pid, reason: ExitReason },
}

/// A signal that ends a process, taken before the next message.
#[derive(Debug)]
pub(crate) enum Signal {
    /// A linked process exited (or `Node::exit`), for a process not trapping exits.
    Exit { from: Pid, reason: ExitReason },
    /// Stop now (supervisor shutdown or `Node::stop`).
    Shutdown,
}

/// Delivers ordered system messages into a mailbox of any message type.
pub(crate) trait SysSink: Send + Sync {
    fn down(&self, d: Down);
    fn exit(&self, from: Pid, reason: ExitReason);
}

impl<M: Send> SysSink for Sender<Envelope<M>> {
    fn down(&self, d: Down) {
        // A mailbox whose process is gone has nobody to tell: dropping is right.
        drop(self.send(Envelope::Down(d)));
    }

    fn exit(&self, from: Pid, reason: ExitReason) {
        drop(self.send(Envelope::Exit { from, reason }));
    }
}

/// The system endpoints of one process: how the node signals it.
#[derive(Clone)]
pub(crate) struct Sys {
    pub(crate) shared: Arc<ProcShared>,
    pub(crate) urgent: Sender<Signal>,
    pub(crate) ordered: Arc<dyn SysSink>,
}

impl Sys {
    /// An exit signal: in order for a trapping process, urgent otherwise.
    pub(crate) fn exit(&self, from: Pid, reason: ExitReason) {
        if self.shared.trap.load(Ordering::Acquire) {
            self.ordered.exit(from, reason);
        } else if !reason.is_normal() {
            self.send_urgent(Signal::Exit { from, reason });
        }
    }

    fn send_urgent(&self, s: Signal) {
        if self.urgent.send(s).is_ok() {
            self.shared.urgent.store(true, Ordering::Release);
        }
    }

    pub(crate) fn down(&self, d: Down) {
        self.ordered.down(d);
    }

    /// Closes the mailbox and asks the process to stop after its current message.
    pub(crate) fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.closed.store(true, Ordering::Release);
        self.send_urgent(Signal::Shutdown);
    }
}

/// A value on its own cache line (128 bytes: two lines, for adjacent-line prefetching).
#[repr(align(128))]
struct Padded<T>(T);

/// The capacity count of a mailbox, without a cache line that both sides write per message.
///
/// Senders count `sent` and keep `seen`, a lower bound of `taken`; the receiver alone writes
/// `taken`. A sender reads `taken` only when `sent - seen` reaches the capacity, so while
/// the receiver keeps up, each side writes only its own line.
struct Count {
    /// User messages ever reserved, and the last `taken` a sender looked at.
    send_side: Padded<(AtomicUsize, AtomicUsize)>,
    /// User messages ever taken (written by the receiver).
    taken: Padded<AtomicUsize>,
    cap: usize,
}

impl Count {
    fn new(cap: usize) -> Self {
        Count {
            send_side: Padded((AtomicUsize::new(0), AtomicUsize::new(0))),
            taken: Padded(AtomicUsize::new(0)),
            cap: cap.max(1),
        }
    }

    /// Takes one slot of the capacity; `false` if the mailbox is full.
    fn reserve(&self) -> bool {
        let (sent, seen) = (&self.send_side.0 .0, &self.send_side.0 .1);
        // `seen` (a past `taken`) is read before `sent`: `taken <= sent` at any instant
        // and `sent` only grows, so the difference never underflows.
        let mut low = seen.load(Ordering::Acquire);
        let mut s = sent.load(Ordering::SeqCst);
        loop {
            if s.wrapping_sub(low) >= self.cap {
                low = self.taken.0.load(Ordering::SeqCst);
                seen.fetch_max(low, Ordering::AcqRel);
                s = sent.load(Ordering::SeqCst);
                if s.wrapping_sub(low) >= self.cap {
                    return false;
                }
            }
            match sent.compare_exchange_weak(s, s + 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// The receiver took one message (or a reserved one was never queued). A plain store:
    /// the line stays with the receiver unless a sender finds the mailbox full.
    fn release(&self) {
        let t = self.taken.0.load(Ordering::Relaxed) + 1;
        self.taken.0.store(t, Ordering::Release);
    }

    fn len(&self) -> usize {
        let taken = self.taken.0.load(Ordering::Acquire);
        let sent = self.send_side.0 .0.load(Ordering::Acquire);
        sent.saturating_sub(taken)
    }
}

/// State shared by every sender of one process and the process itself.
pub(crate) struct ProcShared {
    pub(crate) pid: Pid,
    /// Set when the mailbox no longer accepts messages (stopping, exited, detached).
    pub(crate) closed: AtomicBool,
    /// Set when the process was asked to stop; `Context::shutting_down` reads it.
    pub(crate) stopping: AtomicBool,
    /// Set when the process was detached: it no longer reports anything.
    pub(crate) detached: AtomicBool,
    /// Whether the process traps exits (decides where exit signals are queued).
    pub(crate) trap: AtomicBool,
    /// Set after a signal was put in the urgent queue: the receiver looks at this flag
    /// before each message instead of at the queue.
    pub(crate) urgent: AtomicBool,
    /// The pid this process's thread is blocked on (a call, a spawn, a child's stop); 0
    /// for none. Lets a call that would deadlock fail at once.
    pub(crate) waiting_on: AtomicU64,
    /// Senders waiting for room (`send_timeout`); the receiver wakes them.
    waiters: AtomicUsize,
    room: Mutex<()>,
    room_cv: Condvar,
    pub(crate) node: Weak<NodeInner>,
    count: Count,
}

impl ProcShared {
    pub(crate) fn new(pid: Pid, cap: usize, node: Weak<NodeInner>) -> Self {
        ProcShared {
            pid,
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            trap: AtomicBool::new(false),
            urgent: AtomicBool::new(false),
            waiting_on: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            room: Mutex::new(()),
            room_cv: Condvar::new(),
            node,
            count: Count::new(cap),
        }
    }

    fn report_full(&self) {
        if let Some(node) = self.node.upgrade() {
            node.emit(&SystemEvent::MailboxFull { pid: self.pid });
        }
    }

    fn reserve(&self) -> bool {
        self.count.reserve()
    }

    /// The receiver took a user message: frees its slot, and wakes the senders waiting
    /// for room once the mailbox is half empty (one wake-up per half a mailbox, not one
    /// per message).
    pub(crate) fn took_one(&self) {
        self.count.release();
        if self.waiters.load(Ordering::Relaxed) > 0 && self.count.len() <= self.count.cap / 2 {
            self.wake_senders();
        }
    }

    /// Before the receiver parks: wakes any waiting sender, whatever the fill level. The
    /// fence pairs with the one in `reserve_until`: a sender that registered and saw a
    /// full mailbox is seen here.
    pub(crate) fn going_idle(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.wake_senders();
        }
    }

    fn wake_senders(&self) {
        let _g = self.room.lock().unwrap_or_else(|p| p.into_inner());
        self.room_cv.notify_all();
    }

    /// A reserved slot was not used (the receiver is gone).
    fn unreserve(&self) {
        self.count.release();
    }

    pub(crate) fn len(&self) -> usize {
        self.count.len()
    }

    /// Waits for a slot until `deadline`: spins, then yields (a busy receiver frees a slot
    /// within microseconds), then sleeps on the condition variable the receiver signals
    /// when the mailbox is half empty (or when it runs dry).
    fn reserve_until(&self, deadline: Option<Instant>) -> bool {
        for i in 0..10u32 {
            if i < 6 {
                for _ in 0..(1u32 << i) {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            if self.reserve() {
                return true;
            }
            if self.closed.load(Ordering::Relaxed) {
                return false;
            }
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let ok = self.sleep_for_room(deadline);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        ok
    }

    fn sleep_for_room(&self, deadline: Option<Instant>) -> bool {
        let mut g = self.room.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.reserve() {
                return true;
            }
            if self.closed.load(Ordering::Relaxed) {
                return false;
            }
            // Re-checked at least every 10 ms: the process may close while we sleep, and a
            // wake-up can be missed in the window between a take and its publication.
            let mut nap = Duration::from_millis(10);
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                nap = nap.min(left);
            }
            g = match self.room_cv.wait_timeout(g, nap) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// A cloneable `Send + Sync` sender to one process's mailbox, typed by its message `M`.
///
/// The mailbox holds at most a capacity of user messages ([`NodeConfig::mailbox_capacity`]
/// or [`SpawnOptions::mailbox_capacity`]); it allocates as it fills, not up front. On
/// overflow [`send`](Self::send) does not block: it returns [`SendError::MailboxFull`] with
/// the message and reports [`SystemEvent::MailboxFull`]; [`send_timeout`](Self::send_timeout)
/// waits for room. A `ProcessRef` names one incarnation: after a restart, look the new one
/// up by name.
///
/// # Examples
///
/// ```
/// use sockloop::supervise::{from_fn, Control, Node, SendError, SpawnOptions};
///
/// let node = Node::new();
/// let (gate_tx, gate) = crossbeam_channel::bounded::<()>(0);
/// let (busy_tx, busy) = crossbeam_channel::bounded(1);
/// let slow = node
///     .spawn_with(
///         from_fn(move |_ctx, _n: u32| {
///             busy_tx.send(())?;
///             gate.recv()?;
///             Ok(Control::Continue)
///         }),
///         SpawnOptions::default().mailbox_capacity(1),
///     )
///     .unwrap();
/// slow.send(1).unwrap(); // taken: the handler waits at the gate
/// busy.recv().unwrap();
/// slow.send(2).unwrap(); // queued: the mailbox is now full
/// assert_eq!(slow.mailbox_len(), 1);
/// match slow.send(3) {
///     Err(SendError::MailboxFull(m)) => assert_eq!(m, 3), // handed back
///     other => panic!("{other:?}"),
/// }
/// drop(gate_tx); // the handler's gate closes: it returns `Err` and the process exits
/// ```
///
/// [`NodeConfig::mailbox_capacity`]: super::NodeConfig::mailbox_capacity
/// [`SpawnOptions::mailbox_capacity`]: super::SpawnOptions::mailbox_capacity
pub struct ProcessRef<M> {
    tx: Sender<Envelope<M>>,
    shared: Arc<ProcShared>,
}

impl<M> Clone for ProcessRef<M> {
    fn clone(&self) -> Self {
        ProcessRef {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M> fmt::Debug for ProcessRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessRef({})", self.shared.pid)
    }
}

impl<M: Send> ProcessRef<M> {
    pub(crate) fn new(tx: Sender<Envelope<M>>, shared: Arc<ProcShared>) -> Self {
        ProcessRef { tx, shared }
    }

    pub(crate) fn shared(&self) -> &Arc<ProcShared> {
        &self.shared
    }

    pub(crate) fn sender(&self) -> &Sender<Envelope<M>> {
        &self.tx
    }

    /// The process's identifier.
    pub fn pid(&self) -> Pid {
        self.shared.pid
    }

    /// `true` while the process accepts messages (it may still exit at any moment).
    pub fn is_alive(&self) -> bool {
        !self.shared.closed.load(Ordering::Relaxed)
    }

    /// User messages queued and not yet taken by the process (`erlang:process_info(Pid,
    /// message_queue_len)`); system messages are not counted.
    pub fn mailbox_len(&self) -> usize {
        self.shared.len()
    }

    /// Queues `msg` without blocking.
    ///
    /// # Errors
    ///
    /// [`SendError::MailboxFull`] if the mailbox is full (also reported to the hook),
    /// [`SendError::NoProcess`] if the process exited, is stopping or was detached. Either
    /// way the message is handed back.
    pub fn send(&self, msg: M) -> Result<(), SendError<M>> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(SendError::NoProcess(msg));
        }
        if !self.shared.reserve() {
            self.shared.report_full();
            return Err(SendError::MailboxFull(msg));
        }
        self.push(msg)
    }

    fn push(&self, msg: M) -> Result<(), SendError<M>> {
        match self.tx.send(Envelope::Msg(msg)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.shared.unreserve();
                match e.into_inner() {
                    Envelope::Msg(m) => Err(SendError::NoProcess(m)),
                    _ => unreachable!("a user message was sent"),
                }
            }
        }
    }

    /// Queues `msg`, waiting up to `timeout` for room if the mailbox is full.
    ///
    /// # Errors
    ///
    /// [`SendError::Timeout`] if the mailbox stayed full (reported to the hook as
    /// `MailboxFull`), [`SendError::NoProcess`] if the process is gone.
    pub fn send_timeout(&self, msg: M, timeout: Duration) -> Result<(), SendError<M>> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(SendError::NoProcess(msg));
        }
        // The clock is read only when the mailbox is full.
        if self.shared.reserve() {
            return self.push(msg);
        }
        self.send_deadline(msg, Instant::now().checked_add(timeout))
    }

    /// As [`send_timeout`](Self::send_timeout) with a deadline (`None`: wait as long as
    /// it takes).
    pub(crate) fn send_deadline(
        &self,
        msg: M,
        deadline: Option<Instant>,
    ) -> Result<(), SendError<M>> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(SendError::NoProcess(msg));
        }
        if self.shared.reserve() || self.shared.reserve_until(deadline) {
            return self.push(msg);
        }
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(SendError::NoProcess(msg));
        }
        self.shared.report_full();
        Err(SendError::Timeout(msg))
    }
}
