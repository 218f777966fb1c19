//! The loop of a process thread: init, then one message at a time, then exit.
//!
//! Before each message the loop looks at the urgent queue (shutdown, exit signals of links
//! for a process that does not trap them), so a stop is taken after the current message;
//! the mailbox itself is one FIFO queue of user messages, DOWNs and trapped exits.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use super::current::Running;
use super::mailbox::{Envelope, ProcShared, Signal};
use super::{Context, Control, ExitReason, Handled, Pid, Process, SystemEvent};

/// Everything a new process thread needs.
pub(crate) struct Boot<P: Process> {
    pub(crate) proc: P,
    pub(crate) ctx: Context<P::Msg>,
    pub(crate) rx: Receiver<Envelope<P::Msg>>,
    pub(crate) urgent: Receiver<Signal>,
    pub(crate) ack: Sender<Result<(), ExitReason>>,
    pub(crate) budget: Option<Duration>,
    pub(crate) quiet: bool,
}

/// The body of a process thread. Never panics: user panics are caught.
pub(crate) fn run<P: Process>(boot: Boot<P>) {
    let Boot {
        mut proc,
        mut ctx,
        rx,
        urgent,
        ack,
        budget,
        quiet,
    } = boot;
    let shared = Arc::clone(ctx.me().shared());
    let running = Running::enter(&shared, quiet);
    let reason = match catch(|| proc.init(&mut ctx).map(|()| Control::Continue)) {
        None => {
            let name = ctx.node().name_of(ctx.pid());
            ctx.node().emit(&SystemEvent::Started {
                pid: ctx.pid(),
                name,
            });
            drop(ack.send(Ok(())));
            let mut mb = Mailbox {
                rx,
                urgent,
                budget,
                mark: None,
                shared: Arc::clone(&shared),
            };
            let reason = catch(|| mb.run(&mut proc, &mut ctx)).unwrap_or(ExitReason::Normal);
            // Closed before the queued messages are dropped: a caller whose request is
            // dropped with them sees a closed process and waits for its DOWN.
            shared.closed.store(true, Ordering::Release);
            drop(catch(|| {
                proc.terminate(&mut ctx, &reason);
                Ok(Control::Continue)
            }));
            drop(mb);
            reason
        }
        Some(reason) => {
            shared.closed.store(true, Ordering::Release);
            drop(ack.send(Err(reason.clone())));
            reason
        }
    };
    shared.closed.store(true, Ordering::Release);
    let node = ctx.node().clone();
    let pid = ctx.pid();
    drop(ctx);
    drop(proc);
    drop(running);
    node.exited(pid, reason);
}

/// Runs `f`, turning a panic or a stop into the exit reason (`None`: keep going).
fn catch(f: impl FnOnce() -> Handled) -> Option<ExitReason> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(h) => exit_of(h),
        Err(payload) => Some(ExitReason::Panic(panic_message(payload.as_ref()))),
    }
}

fn exit_of(h: Handled) -> Option<ExitReason> {
    match h {
        Ok(Control::Continue) => None,
        Ok(Control::Stop) => Some(ExitReason::Normal),
        Ok(Control::Exit(r)) => Some(r),
        Err(e) => Some(ExitReason::Error(e.to_string())),
    }
}

/// The text of a panic payload (`&str` or `String`; anything else gets a placeholder).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

struct Mailbox<M> {
    rx: Receiver<Envelope<M>>,
    urgent: Receiver<Signal>,
    budget: Option<Duration>,
    /// With a budget: when the current run of back-to-back user messages last read the
    /// clock (each message ends where the next starts: one clock read per message).
    mark: Option<Instant>,
    shared: Arc<ProcShared>,
}

/// Rounds of spinning, then yielding, on an empty mailbox before the thread parks.
const SPINS: u32 = 10;

impl<M: Send + 'static> Mailbox<M> {
    fn run<P: Process<Msg = M>>(&mut self, p: &mut P, ctx: &mut Context<M>) -> Handled {
        loop {
            if let Some(reason) = self.step(p, ctx) {
                return Ok(Control::Exit(reason));
            }
        }
    }

    /// An urgent signal if there is one, else the next envelope, else an idle wait.
    fn step<P: Process<Msg = M>>(&mut self, p: &mut P, ctx: &mut Context<M>) -> Option<ExitReason> {
        if let Some(s) = self.take_urgent() {
            self.mark = None;
            return urgent(p, ctx, s);
        }
        match self.rx.try_recv() {
            Ok(env) => self.envelope(p, ctx, env),
            Err(_) => {
                self.mark = None;
                self.idle(p, ctx)
            }
        }
    }

    /// The next urgent signal, if the flag says there may be one. The flag is cleared
    /// before the queue is read and set again while signals remain, so a signal queued
    /// concurrently is never left behind a cleared flag.
    fn take_urgent(&self) -> Option<Signal> {
        if !self.shared.urgent.load(Ordering::Acquire) {
            return None;
        }
        self.shared.urgent.store(false, Ordering::SeqCst);
        let s = self.urgent.try_recv().ok()?;
        self.shared.urgent.store(true, Ordering::Relaxed);
        Some(s)
    }

    fn envelope<P: Process<Msg = M>>(
        &mut self,
        p: &mut P,
        ctx: &mut Context<M>,
        env: Envelope<M>,
    ) -> Option<ExitReason> {
        match env {
            Envelope::Msg(m) => {
                self.shared.took_one();
                self.user(p, ctx, m)
            }
            Envelope::Down(d) => {
                self.mark = None;
                if ctx.take_down(&d) {
                    exit_of(p.handle_down(ctx, d))
                } else {
                    None
                }
            }
            Envelope::Exit { from, reason } => {
                self.mark = None;
                exit_signal(p, ctx, from, reason)
            }
        }
    }

    fn user<P: Process<Msg = M>>(
        &mut self,
        p: &mut P,
        ctx: &mut Context<M>,
        m: M,
    ) -> Option<ExitReason> {
        let Some(budget) = self.budget else {
            return exit_of(p.handle(ctx, m));
        };
        let start = self.mark.unwrap_or_else(Instant::now);
        let h = p.handle(ctx, m);
        let now = Instant::now();
        self.mark = Some(now);
        let elapsed = now.saturating_duration_since(start);
        // A detached process already reported its exit: it reports nothing more.
        if elapsed > budget && !self.shared.detached.load(Ordering::Relaxed) {
            let pid = ctx.pid();
            let e = SystemEvent::OverBudget {
                pid,
                elapsed,
                budget,
            };
            ctx.node().emit(&e);
        }
        exit_of(h)
    }

    /// Both queues are empty: spin, then yield, then park. Parking and the sender's
    /// wake-up are two system calls; a busy stream usually refills within the spin.
    fn idle<P: Process<Msg = M>>(&mut self, p: &mut P, ctx: &mut Context<M>) -> Option<ExitReason> {
        for i in 0..SPINS {
            if self.shared.urgent.load(Ordering::Relaxed) || !self.rx.is_empty() {
                return None;
            }
            if i < 6 {
                for _ in 0..(1u32 << i) {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
        }
        self.wait(p, ctx)
    }

    /// Parks until a signal or an envelope arrives, or until the receive timeout.
    fn wait<P: Process<Msg = M>>(&mut self, p: &mut P, ctx: &mut Context<M>) -> Option<ExitReason> {
        self.shared.going_idle();
        let deadline = ctx.receive_timeout().map(|t| Instant::now().checked_add(t));
        // Both senders are held by this process (its context and the registry), so neither
        // channel disconnects while it runs; a disconnect is treated as a shutdown anyway.
        match deadline {
            Some(Some(deadline)) => select! {
                recv(self.urgent) -> s => self.woken_urgent(p, ctx, s.ok()),
                recv(self.rx) -> e => self.woken(p, ctx, e.ok()),
                default(deadline.saturating_duration_since(Instant::now())) => {
                    exit_of(p.handle_timeout(ctx))
                }
            },
            _ => select! {
                recv(self.urgent) -> s => self.woken_urgent(p, ctx, s.ok()),
                recv(self.rx) -> e => self.woken(p, ctx, e.ok()),
            },
        }
    }

    fn woken_urgent<P: Process<Msg = M>>(
        &mut self,
        p: &mut P,
        ctx: &mut Context<M>,
        s: Option<Signal>,
    ) -> Option<ExitReason> {
        match s {
            Some(s) => urgent(p, ctx, s),
            None => Some(ExitReason::Shutdown),
        }
    }

    fn woken<P: Process<Msg = M>>(
        &mut self,
        p: &mut P,
        ctx: &mut Context<M>,
        e: Option<Envelope<M>>,
    ) -> Option<ExitReason> {
        match e {
            Some(e) => self.envelope(p, ctx, e),
            None => Some(ExitReason::Shutdown),
        }
    }
}

fn urgent<P: Process>(p: &mut P, ctx: &mut Context<P::Msg>, s: Signal) -> Option<ExitReason> {
    match s {
        Signal::Shutdown => Some(ExitReason::Shutdown),
        Signal::Exit { from, reason } => exit_signal(p, ctx, from, reason),
    }
}

/// An exit signal: a message for a process that traps exits, else the end of it (unless
/// the reason is `Normal`).
fn exit_signal<P: Process>(
    p: &mut P,
    ctx: &mut Context<P::Msg>,
    from: Pid,
    reason: ExitReason,
) -> Option<ExitReason> {
    if ctx.traps_exit() {
        exit_of(p.handle_exit(ctx, from, reason))
    } else if reason.is_normal() {
        None
    } else {
        Some(reason)
    }
}
