//! The pool's manager thread: grows the pool when every handler thread is blocked while
//! keys wait, and retires threads idle for longer than the idle timeout.
//!
//! It sleeps on its channel until a dispatcher finds no idle thread for a ready key; then
//! it samples each thread's job count every `grow_after` for as long as keys wait. When
//! every thread is still in the job it was in one period earlier, it starts up to as many
//! new threads as keys wait (at most doubling, never past the maximum). While the pool is
//! above its minimum it also wakes every half idle timeout (at most 1 s) to retire threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::sched::{Note, Pressure, Scheduler};
use super::PoolConfig;
use crate::supervise::SupervisorRef;

pub(super) struct Manager {
    pub(super) sched: Arc<Scheduler>,
    pub(super) sup: SupervisorRef,
    pub(super) cfg: PoolConfig,
    pub(super) rx: Receiver<Note>,
    /// Starts one more thread: its child spec under `sup`.
    pub(super) spawn: Box<dyn FnMut(&SupervisorRef) + Send>,
}

/// Why a wait ended.
enum Woke {
    Note,
    Timeout,
    Stop,
}

impl Manager {
    pub(super) fn run(mut self) {
        loop {
            let woke = if self.sched.lane_count() > self.cfg.min {
                let tick = self.cfg.idle_timeout / 2;
                let tick = tick.clamp(Duration::from_millis(1), Duration::from_secs(1));
                self.wait(Some(Instant::now() + tick))
            } else {
                self.wait(None)
            };
            match woke {
                Woke::Note => {
                    if !self.watch() {
                        return;
                    }
                }
                Woke::Timeout => self.shrink(),
                Woke::Stop => return,
            }
        }
    }

    fn wait(&self, until: Option<Instant>) -> Woke {
        let r = match until {
            Some(t) => self
                .rx
                .recv_timeout(t.saturating_duration_since(Instant::now())),
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match r {
            Ok(Note::Saturated) => Woke::Note,
            Err(RecvTimeoutError::Timeout) => Woke::Timeout,
            Ok(Note::Stop) | Err(RecvTimeoutError::Disconnected) => Woke::Stop,
        }
    }

    /// Watches while keys wait; `false` when asked to stop.
    fn watch(&mut self) -> bool {
        loop {
            let before = self.sched.sample();
            let until = Instant::now() + self.cfg.grow_after;
            loop {
                match self.wait(Some(until)) {
                    Woke::Stop => return false,
                    Woke::Note => continue,
                    Woke::Timeout => break,
                }
            }
            match self.sched.pressure(&before) {
                Pressure::None if !self.sched.keep_watching() => return true,
                Pressure::None | Pressure::Busy => {}
                Pressure::Idle => self.sched.wake_one(),
                Pressure::Blocked(n) => self.grow(n),
            }
        }
    }

    fn grow(&mut self, n: usize) {
        let room = self.cfg.max.saturating_sub(self.sched.lane_count());
        for _ in 0..n.min(room) {
            (self.spawn)(&self.sup);
        }
    }

    fn shrink(&mut self) {
        let idle = self.cfg.idle_timeout;
        let surplus = self.sched.lane_count().saturating_sub(self.cfg.min);
        for s in self.sched.retire(Instant::now(), idle, surplus) {
            let id: &str = &s.id;
            if let Err(e) = self.sup.terminate_child(id) {
                log::warn!("handler pool: cannot retire {id}: {e}");
                continue;
            }
            let _ = self.sup.delete_child(id);
            log::debug!("handler pool: retired {id} after {idle:?} idle");
        }
    }
}
