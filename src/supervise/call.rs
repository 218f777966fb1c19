//! Synchronous calls (`gen_server:call`): a request carrying a [`ReplyTo`], answered or not
//! within a timeout, with the callee's exit reason if it dies first.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender};

use super::current;
use super::{Down, ExitReason, Node, ProcessRef, SendError, Target};

/// The reply half of a call: put it in the request, and the callee answers with
/// [`reply`](Self::reply). Dropping it unanswered ends the call with
/// [`CallError::NoReply`] (or, if the callee is exiting, with its exit reason).
pub struct ReplyTo<R> {
    tx: Sender<Answer<R>>,
    answered: bool,
}

/// What the caller receives: the reply, or word that the callee is dying (the handle was
/// dropped while its thread unwound from a panic), so the call waits for the exit reason
/// instead of racing the callee's clean-up.
enum Answer<R> {
    Reply(R),
    Dying,
}

impl<R> Drop for ReplyTo<R> {
    fn drop(&mut self) {
        if !self.answered && std::thread::panicking() {
            let _ = self.tx.try_send(Answer::Dying);
        }
    }
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo")
    }
}

impl<R> ReplyTo<R> {
    /// Answers the call; `false` if the caller is no longer waiting (it timed out).
    pub fn reply(mut self, value: R) -> bool {
        self.answered = true;
        self.tx.send(Answer::Reply(value)).is_ok()
    }
}

/// Why a call returned no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// No reply within the timeout. The request may still be handled later; its reply is
    /// then dropped.
    Timeout,
    /// The process was not alive (or the name not registered) when called; nothing was
    /// sent.
    NoProcess,
    /// The process exited (with this reason) before it replied.
    Exit(ExitReason),
    /// The process dropped the [`ReplyTo`] without answering and is still running.
    NoReply,
    /// The mailbox of the process takes another message type (calls by name).
    WrongType,
    /// Waiting would never end: the callee is the calling process itself, or it is blocked
    /// waiting for the calling process (a supervisor starting or stopping the child that
    /// calls it, a process calling back its caller). Nothing was sent.
    Deadlock,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => f.write_str("call timed out"),
            CallError::NoProcess => f.write_str("no such process"),
            CallError::Exit(r) => write!(f, "the process exited during the call: {r}"),
            CallError::NoReply => f.write_str("the process dropped the request unanswered"),
            CallError::WrongType => f.write_str("mailbox takes another message type"),
            CallError::Deadlock => f.write_str("the call would deadlock"),
        }
    }
}

impl std::error::Error for CallError {}

/// `now + d`, or `None` (never) if it does not fit in an `Instant`.
pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

fn left(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| {
        d.saturating_duration_since(Instant::now())
    })
}

impl<M: Send + 'static> ProcessRef<M> {
    /// Sends the request made by `make` (which receives the [`ReplyTo`]) and waits up to
    /// `timeout` for the reply. The caller monitors the callee for the length of the call,
    /// so a callee that dies first ends the call at once with its exit reason. A full
    /// mailbox is waited on within the same timeout.
    ///
    /// # Errors
    ///
    /// [`CallError::Timeout`], [`CallError::NoProcess`], [`CallError::Exit`],
    /// [`CallError::NoReply`], [`CallError::Deadlock`]. The request is not handed back.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sockloop::supervise::{from_fn, Control, Node, ReplyTo};
    ///
    /// enum Msg {
    ///     Add(u64),
    ///     Get(ReplyTo<u64>),
    /// }
    ///
    /// let node = Node::new();
    /// let mut total = 0;
    /// let counter = node
    ///     .spawn(from_fn(move |_ctx, m: Msg| {
    ///         match m {
    ///             Msg::Add(n) => total += n,
    ///             Msg::Get(reply) => drop(reply.reply(total)),
    ///         }
    ///         Ok(Control::Continue)
    ///     }))
    ///     .unwrap();
    /// counter.send(Msg::Add(40)).unwrap();
    /// counter.send(Msg::Add(2)).unwrap();
    /// let got = counter.call(Msg::Get, Duration::from_secs(5)).unwrap();
    /// assert_eq!(got, 42);
    /// ```
    pub fn call<R: Send + 'static>(
        &self,
        make: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        if current::would_deadlock(self.shared()) {
            return Err(CallError::Deadlock);
        }
        let node = self
            .shared()
            .node
            .upgrade()
            .map(Node::from_inner)
            .ok_or(CallError::NoProcess)?;
        let deadline = deadline_after(timeout);
        let (mref, down) = node.monitor_ref(self.pid());
        let out = current::blocked_on(self.shared(), || self.call_in(make, deadline, &down));
        node.demonitor(self.pid(), mref);
        out
    }

    fn call_in<R: Send + 'static>(
        &self,
        make: impl FnOnce(ReplyTo<R>) -> M,
        deadline: Option<Instant>,
        down: &Receiver<Down>,
    ) -> Result<R, CallError> {
        let (tx, rx) = bounded(1);
        let reply = ReplyTo {
            tx,
            answered: false,
        };
        match self.send_deadline(make(reply), deadline) {
            Ok(()) => {}
            Err(SendError::Timeout(_)) => return Err(CallError::Timeout),
            Err(_) => return Err(CallError::NoProcess),
        }
        select! {
            recv(rx) -> r => match r {
                Ok(Answer::Reply(r)) => Ok(r),
                Ok(Answer::Dying) => Err(self.exit_reason(deadline, down)),
                Err(_) => Err(self.unanswered(deadline, down)),
            },
            recv(down) -> d => match rx.try_recv() {
                Ok(Answer::Reply(r)) => Ok(r),
                _ => Err(d.map_or(CallError::NoProcess, |d| CallError::Exit(d.reason))),
            },
            default(left(deadline)) => Err(CallError::Timeout),
        }
    }

    /// The reply handle was dropped: the callee is exiting (wait for its reason) or it
    /// dropped the request.
    fn unanswered(&self, deadline: Option<Instant>, down: &Receiver<Down>) -> CallError {
        if !self.shared().closed.load(Ordering::Acquire) {
            return CallError::NoReply;
        }
        self.exit_reason(deadline, down)
    }

    /// The callee is exiting: its reason, once the monitor reports it.
    fn exit_reason(&self, deadline: Option<Instant>, down: &Receiver<Down>) -> CallError {
        match down.recv_timeout(left(deadline)) {
            Ok(d) => CallError::Exit(d.reason),
            Err(RecvTimeoutError::Timeout) => CallError::Timeout,
            Err(RecvTimeoutError::Disconnected) => CallError::NoProcess,
        }
    }
}

impl Node {
    /// [`ProcessRef::call`] to a process by pid or registered name.
    ///
    /// # Errors
    ///
    /// As for [`ProcessRef::call`], plus [`CallError::WrongType`].
    pub fn call<'a, M: Send + 'static, R: Send + 'static>(
        &self,
        to: impl Into<Target<'a>>,
        make: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let to = to.into();
        match self.lookup::<M>(to) {
            Some(r) => r.call(make, timeout),
            None if self.is_target_alive(to) => Err(CallError::WrongType),
            None => Err(CallError::NoProcess),
        }
    }
}
