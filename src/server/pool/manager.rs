//! The pool's manager thread: grows the pool when every handler thread is blocked while
//! keys wait, and retires threads idle for longer than the idle timeout.
//!
//! It sleeps on its [`Bell`] until a dispatcher finds no idle thread for a ready key; then
//! it samples each thread's job count every `grow_after` for as long as keys wait. When
//! every thread is still in the job it was in one period earlier, it starts up to as many
//! new threads as keys wait (at most doubling, never past the maximum). While the pool is
//! above its minimum it also wakes every half idle timeout (at most 1 s) to retire threads.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::sched::{Pressure, Scheduler};
use super::PoolConfig;
use crate::supervise::SupervisorRef;

pub(super) struct Manager {
    pub(super) sched: Arc<Scheduler>,
    pub(super) sup: SupervisorRef,
    pub(super) cfg: PoolConfig,
    pub(super) bell: Arc<Bell>,
    /// Starts one more thread: its child spec under `sup`.
    pub(super) spawn: Box<dyn FnMut(&SupervisorRef) + Send>,
}

/// The manager's doorbell: a condition variable, so that its waits park at once (a
/// channel's receive spins and yields first, on the cores the handlers need).
#[derive(Default)]
pub(super) struct Bell {
    rung: Mutex<Rung>,
    cv: Condvar,
}

#[derive(Default)]
struct Rung {
    saturated: bool,
    stop: bool,
}

/// Why a wait ended.
enum Woke {
    /// Keys wait and no thread is idle: watch for blocked threads.
    Saturated,
    Timeout,
    Stop,
}

impl Bell {
    /// Keys wait and no thread is idle.
    pub(super) fn saturated(&self) {
        self.ring(|r| r.saturated = true);
    }

    /// The manager is to exit.
    pub(super) fn stop(&self) {
        self.ring(|r| r.stop = true);
    }

    fn ring(&self, f: impl FnOnce(&mut Rung)) {
        f(&mut self.rung.lock().unwrap_or_else(|e| e.into_inner()));
        self.cv.notify_one();
    }

    /// Waits for a ring, or until `until`.
    fn wait(&self, until: Option<Instant>) -> Woke {
        let mut rung = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if rung.stop {
                return Woke::Stop;
            }
            if std::mem::take(&mut rung.saturated) {
                return Woke::Saturated;
            }
            rung = match until {
                None => self.cv.wait(rung).unwrap_or_else(|e| e.into_inner()),
                Some(t) => {
                    let left = t.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Woke::Timeout;
                    }
                    let r = self.cv.wait_timeout(rung, left);
                    r.unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }
}

impl Manager {
    pub(super) fn run(mut self) {
        loop {
            let woke = if self.sched.lane_count() > self.cfg.min {
                let tick = self.cfg.idle_timeout / 2;
                let tick = tick.clamp(Duration::from_millis(1), Duration::from_secs(1));
                self.bell.wait(Some(Instant::now() + tick))
            } else {
                self.bell.wait(None)
            };
            match woke {
                Woke::Saturated => {
                    if !self.watch() {
                        return;
                    }
                }
                Woke::Timeout => self.shrink(),
                Woke::Stop => return,
            }
        }
    }

    /// Watches while keys wait; `false` when asked to stop.
    fn watch(&mut self) -> bool {
        loop {
            let before = self.sched.sample();
            let until = Instant::now() + self.cfg.grow_after;
            loop {
                match self.bell.wait(Some(until)) {
                    Woke::Stop => return false,
                    Woke::Saturated => continue,
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
