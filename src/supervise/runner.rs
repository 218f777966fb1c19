//! The loop of a process thread: init, then signals and messages one at a time, then exit.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use super::mailbox::Signal;
use super::{Context, Control, ExitReason, Handled, Process, SystemEvent};

/// Everything a new process thread needs.
pub(crate) struct Boot<P: Process> {
    pub(crate) proc: P,
    pub(crate) ctx: Context<P::Msg>,
    pub(crate) user: Receiver<P::Msg>,
    pub(crate) sig: Receiver<Signal>,
    pub(crate) ack: Sender<Result<(), ExitReason>>,
    pub(crate) budget: Option<Duration>,
}

/// The body of a process thread. Never panics: user panics are caught.
pub(crate) fn run<P: Process>(boot: Boot<P>) {
    let Boot {
        mut proc,
        mut ctx,
        user,
        sig,
        ack,
        budget,
    } = boot;
    let reason = match catch(|| proc.init(&mut ctx).map(|()| Control::Continue)) {
        None => {
            let name = ctx.node().name_of(ctx.pid());
            ctx.node().emit(&SystemEvent::Started {
                pid: ctx.pid(),
                name,
            });
            drop(ack.send(Ok(())));
            let mut mb = Mailbox { user, sig, budget };
            let reason = catch(|| mb.run(&mut proc, &mut ctx)).unwrap_or(ExitReason::Normal);
            drop(catch(|| {
                proc.terminate(&mut ctx, &reason);
                Ok(Control::Continue)
            }));
            reason
        }
        Some(reason) => {
            drop(ack.send(Err(reason.clone())));
            reason
        }
    };
    ctx.me().shared().closed.store(true, Ordering::Relaxed);
    let node = ctx.node().clone();
    let pid = ctx.pid();
    drop(ctx);
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
    user: Receiver<M>,
    sig: Receiver<Signal>,
    budget: Option<Duration>,
}

/// User messages handled between two looks at the signal channel.
const BATCH: usize = 64;
/// Rounds of spinning, then yielding, on an empty mailbox before the thread parks.
const SPINS: u32 = 10;

impl<M: Send + 'static> Mailbox<M> {
    /// Signals first, then up to `BATCH` user messages; spins briefly, then blocks on both
    /// channels when both are empty.
    fn run<P: Process<Msg = M>>(&mut self, p: &mut P, ctx: &mut Context<M>) -> Handled {
        loop {
            let step = match self.sig.try_recv() {
                Ok(s) => signal(p, ctx, s),
                Err(_) => match self.batch(p, ctx) {
                    Ok(0) => self.idle(p, ctx),
                    Ok(_) => None,
                    Err(reason) => Some(reason),
                },
            };
            if let Some(reason) = step {
                return Ok(Control::Exit(reason));
            }
        }
    }

    /// Handles up to `BATCH` queued user messages; returns how many, or the exit reason.
    fn batch<P: Process<Msg = M>>(
        &mut self,
        p: &mut P,
        ctx: &mut Context<M>,
    ) -> Result<usize, ExitReason> {
        // With a budget, one clock read per message: each message ends where the next starts.
        let mut mark = self.budget.map(|_| Instant::now());
        for n in 0..BATCH {
            let Ok(m) = self.user.try_recv() else {
                return Ok(n);
            };
            let h = p.handle(ctx, m);
            if let Some(mark) = &mut mark {
                self.check_budget(ctx, mark);
            }
            if let Some(reason) = exit_of(h) {
                return Err(reason);
            }
        }
        Ok(BATCH)
    }

    fn check_budget(&self, ctx: &Context<M>, mark: &mut Instant) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(*mark);
        *mark = now;
        match self.budget {
            Some(budget) if elapsed > budget => {
                let pid = ctx.pid();
                let e = SystemEvent::OverBudget {
                    pid,
                    elapsed,
                    budget,
                };
                ctx.node().emit(&e);
            }
            _ => {}
        }
    }

    /// Both channels are empty: spin, then yield, then park. Parking and the sender's
    /// wake-up are two system calls; a busy stream usually refills within the spin.
    fn idle<P: Process<Msg = M>>(&mut self, p: &mut P, ctx: &mut Context<M>) -> Option<ExitReason> {
        for i in 0..SPINS {
            if !self.sig.is_empty() || !self.user.is_empty() {
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

    fn wait<P: Process<Msg = M>>(&mut self, p: &mut P, ctx: &mut Context<M>) -> Option<ExitReason> {
        // Both senders are held by this process (its context and the registry), so neither
        // channel disconnects while it runs; a disconnect is treated as a shutdown anyway.
        select! {
            recv(self.sig) -> s => match s {
                Ok(s) => signal(p, ctx, s),
                Err(_) => Some(ExitReason::Shutdown),
            },
            recv(self.user) -> m => match m {
                Ok(m) => {
                    let mut mark = self.budget.map(|_| Instant::now());
                    let h = p.handle(ctx, m);
                    if let Some(mark) = &mut mark {
                        self.check_budget(ctx, mark);
                    }
                    exit_of(h)
                }
                Err(_) => Some(ExitReason::Shutdown),
            },
        }
    }
}

fn signal<P: Process>(p: &mut P, ctx: &mut Context<P::Msg>, s: Signal) -> Option<ExitReason> {
    match s {
        Signal::Shutdown => Some(ExitReason::Shutdown),
        Signal::Exit { from, reason } if ctx.traps_exit() => {
            exit_of(p.handle_exit(ctx, from, reason))
        }
        Signal::Exit { reason, .. } if reason.is_normal() => None,
        Signal::Exit { reason, .. } => Some(reason),
        Signal::Down(d) if ctx.take_down(&d) => exit_of(p.handle_down(ctx, d)),
        Signal::Down(_) => None,
    }
}
