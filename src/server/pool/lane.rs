//! One handler thread as a supervised process: takes a ready key, runs its jobs one per
//! message, gives the key back, parks when no key is ready.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::sched::{Held, LaneStat, Pump, Scheduler, Work};
use crate::reactor::stream::describe_panic;
use crate::server::dispatch::{Handlers, Ran};
use crate::supervise::{BoxError, Context, Control, ExitReason, Handled, Process};

/// A handler thread.
///
/// Each [`Pump`] in its mailbox runs exactly one job, then the thread pumps itself again,
/// so the node's per-message budget times one handler call. With no key ready the thread
/// sends itself nothing and parks in its mailbox (not timed) until the scheduler wakes it.
/// A handler panic makes the thread exit with the panic as its reason; the key it held
/// goes back to the ready queue with its remaining jobs, in order.
pub(super) struct Lane {
    sched: Arc<Scheduler>,
    id: Arc<str>,
    stat: Arc<LaneStat>,
    held: Option<Held>,
    batch: VecDeque<Work>,
}

impl Lane {
    pub(super) fn new(sched: Arc<Scheduler>, id: Arc<str>) -> Lane {
        Lane {
            sched,
            id,
            stat: Arc::new(LaneStat::default()),
            held: None,
            batch: VecDeque::with_capacity(super::sched::BATCH),
        }
    }

    /// Runs one entry of the held key's mailbox.
    fn run(&mut self, work: Work) -> Option<String> {
        let job = match work {
            Work::Job(job) => job,
            Work::Mark(tx) => {
                let _ = tx.send(());
                return None;
            }
        };
        self.stat.started.fetch_add(1, Ordering::Relaxed);
        let held = self.held.as_mut()?;
        let handlers = &mut held.handlers;
        // `Handlers::run` contains handler panics; this guards the pool's own bookkeeping.
        let ran = catch_unwind(AssertUnwindSafe(|| handlers.run(job))).unwrap_or_else(|p| Ran {
            finished: false,
            panicked: Some(describe_panic(&*p)),
        });
        if ran.finished {
            *handlers = Handlers::default();
        }
        ran.panicked
    }

    /// The next entry to run, taking and giving back keys as needed; `None`: no key is
    /// ready and this thread is registered as idle.
    fn next(&mut self, ctx: &Context<Pump>) -> Option<Work> {
        loop {
            if let Some(w) = self.batch.pop_front() {
                return Some(w);
            }
            self.held = match self.held.take() {
                Some(held) => self.sched.end_batch(held, &mut self.batch, true),
                None => {
                    let key = self.sched.next_key(ctx.me(), &self.id)?;
                    Some(self.sched.take(key, &mut self.batch))
                }
            };
        }
    }
}

impl Process for Lane {
    type Msg = Pump;

    fn init(&mut self, ctx: &mut Context<Pump>) -> Result<(), BoxError> {
        self.sched.add_lane(self.stat.clone());
        ctx.me().send(Pump).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<Pump>, _: Pump) -> Handled {
        let Some(work) = self.next(ctx) else {
            return Ok(Control::Continue);
        };
        if let Some(msg) = self.run(work) {
            return Err(format!("handler panicked: {msg}").into());
        }
        match ctx.me().send(Pump) {
            Ok(()) => Ok(Control::Continue),
            // The mailbox closed: this thread is being stopped.
            Err(_) => Ok(Control::Stop),
        }
    }

    fn terminate(&mut self, ctx: &mut Context<Pump>, _: &ExitReason) {
        self.sched.remove_lane(&self.stat, ctx.pid());
        if let Some(held) = self.held.take() {
            self.sched.end_batch(held, &mut self.batch, false);
        }
    }
}
