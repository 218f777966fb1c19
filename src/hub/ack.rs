//! Acknowledged delivery that never blocks a handler: a round per message (recipients, the
//! attempt, the report), completed by whichever thread settles its last recipient — the
//! handler thread that reads the last ack, the one that sees a recipient close, or the hub's
//! timer thread when an attempt's deadline passes (resends are made there too, so no thread
//! waits per ack).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::builder::AckOptions;
use super::delivery::{Peer, Target};
use super::envelope::encode;
use super::error::{ErrorCode, HubError};
use super::timer::later;
use super::Hub;
use crate::{ConnId, Frames, SendStatus};

/// The outcome of an acknowledged delivery for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// The recipient acknowledged.
    Acked,
    /// No acknowledgement after every attempt.
    TimedOut,
    /// The last attempt was refused by the recipient's drop policy.
    Dropped,
    /// The connection closed before acknowledging.
    Closed,
}

/// Per-recipient outcomes of an acknowledged delivery
/// ([`Target::emit_with_ack`] and its non-blocking forms).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryReport {
    /// Each recipient and what happened, in id order.
    pub results: Vec<(ConnId, AckStatus)>,
    /// The `data` of each acknowledgement (`null` when the ack had none), in id order;
    /// only recipients that acknowledged are listed.
    pub replies: Vec<(ConnId, Value)>,
    /// Sends made, retries included.
    pub attempts: usize,
}

impl DeliveryReport {
    /// How many recipients ended with `status`.
    pub fn count(&self, status: AckStatus) -> usize {
        self.results.iter().filter(|(_, s)| *s == status).count()
    }

    /// What happened for one recipient.
    pub fn status(&self, id: ConnId) -> Option<AckStatus> {
        self.results.iter().find(|(c, _)| *c == id).map(|(_, s)| *s)
    }

    /// The data one recipient acknowledged with (`None` when it did not acknowledge).
    pub fn data(&self, id: ConnId) -> Option<&Value> {
        self.replies.iter().find(|(c, _)| *c == id).map(|(_, v)| v)
    }

    /// Whether every recipient acknowledged.
    pub fn all_acked(&self) -> bool {
        self.results.iter().all(|(_, s)| *s == AckStatus::Acked)
    }
}

thread_local! {
    /// Depth of hub code on this thread: handlers, lifecycle callbacks, ack callbacks, the
    /// timer thread. Waiting for acks there could wait on itself.
    static IN_HUB: Cell<u32> = const { Cell::new(0) };
}

/// Marks the current thread as running hub code until dropped.
pub(crate) struct InHub(());

impl InHub {
    pub(crate) fn enter() -> Self {
        IN_HUB.with(|d| d.set(d.get() + 1));
        InHub(())
    }
}

impl Drop for InHub {
    fn drop(&mut self) {
        IN_HUB.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

fn in_hub() -> bool {
    IN_HUB.with(|d| d.get() > 0)
}

fn would_block(what: &str) -> HubError {
    let msg = format!(
        "{what} would wait on a hub handler thread, which may be the one that must read \
         the acknowledgements; use emit_with_ack_then or emit_with_ack_nowait"
    );
    log::error!("hub: {msg}");
    HubError::internal(msg)
}

type Callback = Box<dyn FnOnce(DeliveryReport) + Send>;

struct Recipient {
    peer: Peer,
    fin: Option<AckStatus>,
    /// The last send's status.
    last: SendStatus,
    data: Value,
}

struct RoundState {
    recipients: Vec<Recipient>,
    /// The attempt under way (0 for the first send).
    attempt: u32,
    attempts: usize,
    report: Option<DeliveryReport>,
    then: Option<Callback>,
}

/// One acknowledged message: shared by the registry, the timer and the handles.
pub(crate) struct Round {
    id: u64,
    text: String,
    frames: Option<Frames>,
    opts: AckOptions,
    st: Mutex<RoundState>,
    done: Condvar,
}

/// What settling a round left to do outside its lock.
enum After {
    Nothing,
    /// Wait for this attempt's deadline.
    Schedule(u32, Instant),
    /// The round is complete.
    Finished(DeliveryReport, Option<Callback>),
}

impl Round {
    fn lock(&self) -> MutexGuard<'_, RoundState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends to every recipient still pending; those found closed are settled.
    /// A session recipient is sent the message once: its session delivers it (the replay
    /// after a reconnect), so a resend would only be a duplicate.
    fn send_pending(&self, hub: &Hub, st: &mut RoundState) {
        let frames = self.frames.as_ref();
        let resend = st.attempt > 0;
        let mut shared = None;
        for r in st.recipients.iter_mut().filter(|r| r.fin.is_none()) {
            if resend && r.peer.session.as_ref().is_some_and(|c| !c.ended()) {
                continue;
            }
            r.last = hub.send_peer(&r.peer, frames, &self.text, &mut shared, None);
            hub.count(r.last);
            st.attempts += 1;
            if r.last == SendStatus::Closed {
                settle(hub, r, AckStatus::Closed, Value::Null);
            }
        }
    }

    /// Completes the round when nothing is pending (or `force`), else returns `otherwise`.
    fn conclude(&self, hub: &Hub, st: &mut RoundState, force: bool, otherwise: After) -> After {
        let pending = st.recipients.iter().any(|r| r.fin.is_none());
        if st.report.is_some() || (pending && !force) {
            return otherwise;
        }
        for r in st.recipients.iter_mut().filter(|r| r.fin.is_none()) {
            let status = unacked(&r.peer, r.last);
            settle(hub, r, status, Value::Null);
        }
        let report = DeliveryReport {
            results: st.recipients.iter().map(|r| (r.peer.id, fin(r))).collect(),
            replies: st
                .recipients
                .iter()
                .filter(|r| r.fin == Some(AckStatus::Acked))
                .map(|r| (r.peer.id, r.data.clone()))
                .collect(),
            attempts: st.attempts,
        };
        st.report = Some(report.clone());
        self.done.notify_all();
        After::Finished(report, st.then.take())
    }
}

fn fin(r: &Recipient) -> AckStatus {
    r.fin.unwrap_or(AckStatus::TimedOut)
}

/// Gives a pending recipient its final status.
fn settle(hub: &Hub, r: &mut Recipient, status: AckStatus, data: Value) {
    if r.fin.is_none() {
        r.fin = Some(status);
        r.data = data;
        hub.inner.stats.acks_pending.fetch_sub(1, Ordering::Relaxed);
    }
}

fn unacked(p: &Peer, last: SendStatus) -> AckStatus {
    if let Some(cell) = &p.session {
        // Inside its window a session may still resume: it timed out, it did not close.
        return match cell.ended() {
            true => AckStatus::Closed,
            false => AckStatus::TimedOut,
        };
    }
    match (p.ws.is_open(), last) {
        (false, _) => AckStatus::Closed,
        (true, SendStatus::Dropped) => AckStatus::Dropped,
        (true, _) => AckStatus::TimedOut,
    }
}

/// A delivery waiting for acknowledgements, from [`Target::emit_with_ack_nowait`] or
/// [`Target::emit_with_ack_then`]. Cloneable; dropping it changes nothing (the delivery
/// goes on and its callback, if any, still runs).
#[derive(Clone)]
pub struct AckHandle {
    round: Arc<Round>,
}

impl std::fmt::Debug for AckHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckHandle")
            .field("id", &self.round.id)
            .field("done", &self.is_done())
            .finish()
    }
}

impl AckHandle {
    /// The message's `id` on the wire (the `ref` its acknowledgements carry).
    pub fn id(&self) -> u64 {
        self.round.id
    }

    /// Whether every recipient is settled (acked, timed out, dropped or closed).
    pub fn is_done(&self) -> bool {
        self.round.lock().report.is_some()
    }

    /// The report, if the delivery is complete; never waits.
    pub fn report(&self) -> Option<DeliveryReport> {
        self.round.lock().report.clone()
    }

    /// Waits up to `timeout` for the report. For code outside the hub's handlers (a
    /// thread of your own, a process, `main`).
    ///
    /// # Errors
    /// `timeout` when the delivery is still waiting at `timeout`; `internal`, at once and
    /// logged, when called from a hub handler, lifecycle callback or ack callback while
    /// the delivery is not complete — that thread may be the one that must read the
    /// acknowledgements (use [`Target::emit_with_ack_then`] there).
    pub fn wait(&self, timeout: Duration) -> Result<DeliveryReport, HubError> {
        let mut st = self.round.lock();
        if st.report.is_none() && in_hub() {
            return Err(would_block("AckHandle::wait"));
        }
        let deadline = Instant::now().checked_add(timeout);
        while st.report.is_none() {
            let left = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                let msg = "the delivery is still waiting for acknowledgements";
                return Err(HubError::new(ErrorCode::Timeout, msg));
            }
            st = match self.round.done.wait_timeout(st, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        Ok(st.report.clone().unwrap_or_default())
    }
}

impl Hub {
    fn lock_acks(&self) -> MutexGuard<'_, HashMap<u64, Arc<Round>>> {
        self.inner.acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn round(&self, id: u64) -> Option<Arc<Round>> {
        self.lock_acks().get(&id).cloned()
    }

    /// Carries out what settling a round left to do (outside its lock).
    fn after(&self, round: &Round, after: After) {
        match after {
            After::Nothing => {}
            After::Schedule(attempt, at) => self.schedule_ack(round.id, attempt, at),
            After::Finished(report, then) => {
                self.lock_acks().remove(&round.id);
                if let Some(f) = then {
                    run_callback(f, report);
                }
            }
        }
    }

    /// An `ack` envelope from `from` answering `reference`, with its data.
    pub(crate) fn ack_arrived(&self, from: ConnId, reference: Option<u64>, data: Value) {
        let Some(round) = reference.and_then(|r| self.round(r)) else {
            return;
        };
        let after = {
            let mut st = round.lock();
            let r = st.recipients.iter_mut().find(|r| r.peer.id == from);
            if let Some(r) = r {
                settle(self, r, AckStatus::Acked, data);
            }
            round.conclude(self, &mut st, false, After::Nothing)
        };
        self.after(&round, after);
    }

    /// Settles `id` as closed in every round waiting for it.
    pub(crate) fn ack_conn_closed(&self, id: ConnId) {
        let rounds: Vec<Arc<Round>> = self.lock_acks().values().cloned().collect();
        for round in rounds {
            let after = {
                let mut st = round.lock();
                let r = st.recipients.iter_mut().find(|r| r.peer.id == id);
                let Some(r) = r else { continue };
                settle(self, r, AckStatus::Closed, Value::Null);
                round.conclude(self, &mut st, false, After::Nothing)
            };
            self.after(&round, after);
        }
    }

    /// The deadline of `attempt` of round `id` passed (on the timer thread): resend to
    /// the silent recipients, or complete the round after the last attempt.
    pub(crate) fn ack_deadline(&self, id: u64, attempt: u32) {
        let Some(round) = self.round(id) else { return };
        let after = {
            let mut st = round.lock();
            if st.report.is_some() || st.attempt != attempt {
                return;
            }
            if attempt >= round.opts.retries {
                round.conclude(self, &mut st, true, After::Nothing)
            } else {
                st.attempt += 1;
                round.send_pending(self, &mut st);
                let next = After::Schedule(st.attempt, later(round.opts.timeout));
                round.conclude(self, &mut st, false, next)
            }
        };
        self.after(&round, after);
    }

    /// Completes a round now, whatever is pending (a blocking wait that outlived it).
    fn ack_force(&self, round: &Round) {
        let after = {
            let mut st = round.lock();
            round.conclude(self, &mut st, true, After::Nothing)
        };
        self.after(round, after);
    }

    fn start_round(
        &self,
        text: String,
        list: Vec<Peer>,
        opts: AckOptions,
        id: u64,
        then: Option<Callback>,
    ) -> AckHandle {
        let frames = self.inner.bcast.get().map(|f| f.b.frames_text(&text));
        let n = list.len();
        let recipients = list
            .into_iter()
            .map(|peer| Recipient {
                peer,
                fin: None,
                last: SendStatus::Queued,
                data: Value::Null,
            })
            .collect();
        let round = Arc::new(Round {
            id,
            text,
            frames,
            opts,
            st: Mutex::new(RoundState {
                recipients,
                attempt: 0,
                attempts: 0,
                report: None,
                then,
            }),
            done: Condvar::new(),
        });
        self.inner
            .stats
            .acks_pending
            .fetch_add(n, Ordering::Relaxed);
        // Registered before the first send, so an ack that comes back at once finds it.
        self.lock_acks().insert(id, Arc::clone(&round));
        let after = {
            let mut st = round.lock();
            round.send_pending(self, &mut st);
            let first = After::Schedule(0, later(opts.timeout));
            round.conclude(self, &mut st, false, first)
        };
        self.after(&round, after);
        AckHandle { round }
    }
}

/// Runs an ack callback as hub code, containing a panic.
fn run_callback(f: Callback, report: DeliveryReport) {
    let _hub = InHub::enter();
    let run = std::panic::AssertUnwindSafe(move || f(report));
    if std::panic::catch_unwind(run).is_err() {
        log::error!("hub: an acknowledgement callback panicked");
    }
}

impl Target<'_> {
    /// Sends `{"event", "data", "id"}` to every recipient and returns at once; the hub
    /// collects each one's `{"event":"ack","ref":id,"data":…}`, resending the same message
    /// to the silent ones every `opts.timeout`, `opts.retries` times (from its timer
    /// thread: no thread waits per message). The message is serialized and framed once.
    /// Wait for the report with [`AckHandle::wait`] outside handlers, or pass a callback
    /// with [`emit_with_ack_then`](Self::emit_with_ack_then).
    ///
    /// # Errors
    /// `internal` when `data` cannot be serialized.
    ///
    /// # Examples
    /// ```no_run
    /// # fn f(hub: &sockloop::hub::Hub) -> Result<(), sockloop::hub::HubError> {
    /// use std::time::Duration;
    /// use sockloop::hub::AckOptions;
    /// let pending = hub.to_room("desk").emit_with_ack_nowait("order:filled", &42,
    ///     AckOptions::new(Duration::from_secs(2), 1))?;
    /// // … other work on this (non-handler) thread …
    /// let report = pending.wait(Duration::from_secs(10))?;
    /// println!("{} of {} acked", report.count(sockloop::hub::AckStatus::Acked),
    ///          report.results.len());
    /// # Ok(()) }
    /// ```
    pub fn emit_with_ack_nowait<T: Serialize + ?Sized>(
        self,
        event: &str,
        data: &T,
        opts: AckOptions,
    ) -> Result<AckHandle, HubError> {
        self.start(event, data, opts, None)
    }

    /// Like [`emit_with_ack_nowait`](Self::emit_with_ack_nowait), and calls `then` with
    /// the report once every recipient is settled: the form for handlers. `then` runs on
    /// the thread that settles the last recipient — a hub handler thread reading the last
    /// ack or seeing a recipient close, the hub's timer thread when the last attempt times
    /// out, or the calling thread when there is nobody to wait for. Keep it short (it may
    /// emit, join, and start other acknowledged deliveries; it must not wait for one); a
    /// panic in it is logged and contained.
    ///
    /// # Errors
    /// `internal` when `data` cannot be serialized (`then` is not called).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use serde_json::json;
    /// use sockloop::hub::{AckOptions, AckStatus, Ctx, Hub};
    ///
    /// let hub = Hub::builder()
    ///     .on("order:send", |ctx: &mut Ctx| {
    ///         let to: String = ctx.data()?;
    ///         let me = ctx.conn_id();
    ///         let hub = ctx.hub().clone();
    ///         let opts = AckOptions::new(Duration::from_secs(2), 1);
    ///         ctx.hub().to_user(&to).emit_with_ack_then("order", &json!({"n": 1}), opts,
    ///             move |report| {
    ///                 let n = report.count(AckStatus::Acked);
    ///                 hub.to_conn(me).emit("order:delivered", &json!({"devices": n}));
    ///             })?;
    ///         ctx.ack(&json!({"queued": true}))
    ///     })
    ///     .build();
    /// # let _ = hub;
    /// ```
    pub fn emit_with_ack_then<T: Serialize + ?Sized>(
        self,
        event: &str,
        data: &T,
        opts: AckOptions,
        then: impl FnOnce(DeliveryReport) + Send + 'static,
    ) -> Result<AckHandle, HubError> {
        self.start(event, data, opts, Some(Box::new(then)))
    }

    /// Sends like [`emit_with_ack_nowait`](Self::emit_with_ack_nowait) and blocks the
    /// calling thread until every recipient acked or the last attempt timed out. For code
    /// outside the hub's handlers; in a handler use
    /// [`emit_with_ack_then`](Self::emit_with_ack_then).
    ///
    /// # Errors
    /// `internal` when `data` cannot be serialized; `internal` (logged, nothing sent)
    /// when called from a hub handler, lifecycle callback or ack callback, where waiting
    /// could wait on the very thread that must read the acknowledgements.
    ///
    /// # Examples
    /// ```no_run
    /// # fn f(hub: &sockloop::hub::Hub) -> Result<(), sockloop::hub::HubError> {
    /// use std::time::Duration;
    /// use sockloop::hub::{AckOptions, AckStatus};
    /// let report = hub.to_user("ann").emit_with_ack("order:filled", &42,
    ///     AckOptions::new(Duration::from_secs(2), 1))?;
    /// println!("{} devices acked", report.count(AckStatus::Acked));
    /// # Ok(()) }
    /// ```
    pub fn emit_with_ack<T: Serialize + ?Sized>(
        self,
        event: &str,
        data: &T,
        opts: AckOptions,
    ) -> Result<DeliveryReport, HubError> {
        if in_hub() {
            return Err(would_block("emit_with_ack"));
        }
        let hub = self.hub.clone();
        let pending = self.start(event, data, opts, None)?;
        let attempts = opts.retries.saturating_add(1);
        let whole = opts.timeout.saturating_mul(attempts);
        // The timer completes the round after the last attempt; the margin covers a busy
        // timer thread, and past it the round is completed here.
        let margin = Duration::from_secs(1).max(whole / 10);
        match pending.wait(whole.saturating_add(margin)) {
            Ok(r) => Ok(r),
            Err(_) => {
                hub.ack_force(&pending.round);
                Ok(pending.report().unwrap_or_default())
            }
        }
    }

    fn start<T: Serialize + ?Sized>(
        self,
        event: &str,
        data: &T,
        opts: AckOptions,
        then: Option<Callback>,
    ) -> Result<AckHandle, HubError> {
        let id = self.hub.inner.next_ack.fetch_add(1, Ordering::Relaxed);
        let text = encode(event, data, Some(id), None)?;
        let list = self.recipients();
        Ok(self.hub.start_round(text, list, opts, id, then))
    }
}
