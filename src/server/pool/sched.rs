//! The pool's scheduling state: a mailbox per key with work, the ready queue of keys, the
//! idle threads. Who runs which key is decided here, under two kinds of short locks.
//!
//! A key (connection or datagram socket) is *scheduled* from the moment a job is queued for
//! it until a thread that ran its jobs finds its mailbox empty. A scheduled key is either in
//! the ready queue or held by exactly one thread, so its jobs run in order and one at a
//! time. Locks: a key's shard (its mailbox and handlers), then — never while holding a
//! shard — the ready queue with the idle threads. Each critical section is a few pointer
//! moves; no lock is held while user code runs or while a thread is woken.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::manager::Bell;
use crate::server::dispatch::{Handlers, Job};
use crate::supervise::{Pid, ProcessRef};

/// One entry of a key's mailbox.
pub(super) enum Work {
    /// A job of the key.
    Job(Job),
    /// A barrier mark: answered once every earlier job of the key has run.
    Mark(Sender<()>),
}

/// The message that makes a handler thread take its next job (see [`super::lane`]).
pub(crate) struct Pump;

/// Jobs a thread runs for one key before it lets a waiting key go first.
pub(super) const BATCH: usize = 32;

/// Number of key shards (a power of two).
const SHARDS: usize = 64;

/// Empty mailbox buffers kept per shard for reuse, so that a key whose mailbox drains
/// holds no allocation and the next job allocates none either.
const SPARES: usize = 16;

/// Buffers larger than this are freed rather than kept as spares.
const SPARE_CAPACITY: usize = 64;

/// A key's state while it has a mailbox or handlers.
#[derive(Default)]
struct Key {
    jobs: VecDeque<Work>,
    /// In the ready queue or held by a thread; the handlers are then the thread's.
    scheduled: bool,
    handlers: Handlers,
}

#[derive(Default)]
struct Shard {
    keys: HashMap<u64, Key, BuildHasherDefault<IdHasher>>,
    spares: Vec<VecDeque<Work>>,
}

impl Shard {
    /// Gives the key's empty mailbox buffer back to the spares (or frees it).
    fn recycle(&mut self, buf: VecDeque<Work>) {
        let keep = buf.capacity() > 0 && buf.capacity() <= SPARE_CAPACITY;
        if keep && self.spares.len() < SPARES {
            self.spares.push(buf);
        }
    }
}

/// A key taken by a thread: its handlers travel with it.
pub(super) struct Held {
    pub(super) key: u64,
    pub(super) handlers: Handlers,
}

/// An idle thread, parked in its process mailbox until it gets a [`Pump`].
pub(super) struct Sleeper {
    pub(super) lane: ProcessRef<Pump>,
    /// Its child id under the pool's supervisor.
    pub(super) id: Arc<str>,
    pub(super) since: Instant,
}

#[derive(Default)]
struct Ready {
    keys: VecDeque<u64>,
    /// Last in, first out: the most recently idle thread is woken first (warm caches), and
    /// the ones idle longest are at the bottom, to be retired.
    sleepers: Vec<Sleeper>,
}

/// A running handler thread as the pool's manager sees it.
#[derive(Default)]
pub(super) struct LaneStat {
    /// Jobs started so far: a thread whose count stands still while it is not idle is
    /// blocked in one job.
    pub(super) started: AtomicU64,
}

/// What the manager found after watching for a while.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pressure {
    /// No key waits.
    None,
    /// Keys wait and a thread is idle (a lost wake-up is repaired).
    Idle,
    /// Keys wait, and threads make progress.
    Busy,
    /// Keys wait and every thread was in the same job for the whole period: this many
    /// more threads would take waiting keys.
    Blocked(usize),
}

/// The shared scheduling state of one pool.
pub(super) struct Scheduler {
    shards: Box<[Padded<Mutex<Shard>>]>,
    ready: Mutex<Ready>,
    /// Keys in the ready queue (read without its lock to decide whether to yield a key).
    waiting: AtomicUsize,
    lanes: Mutex<Vec<Arc<LaneStat>>>,
    /// The manager is watching (so a saturated pool notifies it once).
    watching: AtomicBool,
    manager: Arc<Bell>,
}

#[repr(align(128))]
struct Padded<T>(T);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scheduler {
    pub(super) fn new(manager: Arc<Bell>) -> Scheduler {
        Scheduler {
            shards: (0..SHARDS).map(|_| Padded(Mutex::default())).collect(),
            ready: Mutex::default(),
            waiting: AtomicUsize::new(0),
            lanes: Mutex::default(),
            watching: AtomicBool::new(false),
            manager,
        }
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        let i = (mix(key) >> (64 - SHARDS.trailing_zeros())) as usize;
        lock(&self.shards[i].0)
    }

    /// Queues a job of `key`, scheduling the key if it was not.
    pub(super) fn push(&self, key: u64, work: Work) {
        let newly = {
            let mut guard = self.shard(key);
            let shard = &mut *guard;
            let k = shard.keys.entry(key).or_default();
            if k.jobs.capacity() == 0 {
                if let Some(buf) = shard.spares.pop() {
                    k.jobs = buf;
                }
            }
            k.jobs.push_back(work);
            !std::mem::replace(&mut k.scheduled, true)
        };
        if newly {
            self.make_ready(key);
        }
    }

    /// Puts a scheduled key in the ready queue and wakes an idle thread, or tells the
    /// manager that keys wait.
    fn make_ready(&self, key: u64) {
        let sleeper = {
            let mut r = lock(&self.ready);
            r.keys.push_back(key);
            self.waiting.store(r.keys.len(), Ordering::Relaxed);
            r.sleepers.pop()
        };
        match sleeper {
            Some(s) => self.wake(s),
            None => self.saturated(),
        }
    }

    fn wake(&self, s: Sleeper) {
        if s.lane.send(Pump).is_err() {
            // That thread is gone (stopped meanwhile): another one, or the manager.
            self.wake_one();
        }
    }

    /// Wakes an idle thread if a key waits.
    pub(super) fn wake_one(&self) {
        let sleeper = {
            let mut r = lock(&self.ready);
            if r.keys.is_empty() {
                return;
            }
            r.sleepers.pop()
        };
        match sleeper {
            Some(s) => self.wake(s),
            None => self.saturated(),
        }
    }

    fn saturated(&self) {
        if !self.watching.load(Ordering::Relaxed) && !self.watching.swap(true, Ordering::AcqRel) {
            self.manager.saturated();
        }
    }

    /// The next ready key for the thread `lane`, or `None` after registering it as idle
    /// (it is then woken by a [`Pump`] when a key is ready).
    pub(super) fn next_key(&self, lane: &ProcessRef<Pump>, id: &Arc<str>) -> Option<u64> {
        let mut r = lock(&self.ready);
        if let Some(key) = r.keys.pop_front() {
            self.waiting.store(r.keys.len(), Ordering::Relaxed);
            return Some(key);
        }
        r.sleepers.push(Sleeper {
            lane: lane.clone(),
            id: id.clone(),
            since: Instant::now(),
        });
        None
    }

    /// Takes the ready key `key`: its handlers, and up to [`BATCH`] jobs into `batch`.
    pub(super) fn take(&self, key: u64, batch: &mut VecDeque<Work>) -> Held {
        let mut shard = self.shard(key);
        let handlers = match shard.keys.get_mut(&key) {
            Some(k) => {
                let n = k.jobs.len().min(BATCH);
                batch.extend(k.jobs.drain(..n));
                std::mem::take(&mut k.handlers)
            }
            None => Handlers::default(),
        };
        Held { key, handlers }
    }

    /// After a batch of `held`: refills `batch` and keeps the key when it has more jobs and
    /// no other key waits (`Some`); otherwise gives the key back — to the ready queue if it
    /// has jobs left, else unscheduled, its state dropped if it has none (`None`). Jobs
    /// left in `batch` (a thread that exits mid-batch) go back to the front of the mailbox.
    pub(super) fn end_batch(
        &self,
        mut held: Held,
        batch: &mut VecDeque<Work>,
        refill: bool,
    ) -> Option<Held> {
        let requeue = {
            let mut guard = self.shard(held.key);
            let shard = &mut *guard;
            let Some(k) = shard.keys.get_mut(&held.key) else {
                // Not reachable: a scheduled key keeps its entry. Keep nothing.
                batch.clear();
                return None;
            };
            while let Some(w) = batch.pop_back() {
                k.jobs.push_front(w);
            }
            if k.jobs.is_empty() {
                k.scheduled = false;
                if held.handlers.is_idle() {
                    let k = shard.keys.remove(&held.key).unwrap_or_default();
                    shard.recycle(k.jobs);
                } else {
                    k.handlers = std::mem::take(&mut held.handlers);
                    let buf = std::mem::take(&mut k.jobs);
                    shard.recycle(buf);
                }
                false
            } else if refill && self.waiting.load(Ordering::Relaxed) == 0 {
                let n = k.jobs.len().min(BATCH);
                batch.extend(k.jobs.drain(..n));
                return Some(held);
            } else {
                k.handlers = std::mem::take(&mut held.handlers);
                true
            }
        };
        if requeue {
            self.make_ready(held.key);
        }
        None
    }

    /// Appends a barrier mark to every scheduled key (keys not scheduled have no job
    /// queued or running); returns how many marks were queued.
    pub(super) fn mark_all(&self, tx: &Sender<()>) -> usize {
        let mut n = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(&shard.0);
            for k in shard.keys.values_mut().filter(|k| k.scheduled) {
                k.jobs.push_back(Work::Mark(tx.clone()));
                n += 1;
            }
        }
        n
    }

    pub(super) fn add_lane(&self, stat: Arc<LaneStat>) {
        lock(&self.lanes).push(stat);
    }

    /// Forgets an exiting thread (as running, and as idle).
    pub(super) fn remove_lane(&self, stat: &Arc<LaneStat>, pid: Pid) {
        lock(&self.lanes).retain(|l| !Arc::ptr_eq(l, stat));
        lock(&self.ready).sleepers.retain(|s| s.lane.pid() != pid);
    }

    /// Running handler threads.
    pub(super) fn lane_count(&self) -> usize {
        lock(&self.lanes).len()
    }

    /// Each running thread's job count now, to compare with [`pressure`](Self::pressure).
    pub(super) fn sample(&self) -> Vec<(Arc<LaneStat>, u64)> {
        let lanes = lock(&self.lanes);
        let count = |l: &Arc<LaneStat>| (l.clone(), l.started.load(Ordering::Relaxed));
        lanes.iter().map(count).collect()
    }

    /// Whether keys wait, and whether every thread has been in one job since `before`.
    pub(super) fn pressure(&self, before: &[(Arc<LaneStat>, u64)]) -> Pressure {
        let waiting = {
            let r = lock(&self.ready);
            if !r.keys.is_empty() && !r.sleepers.is_empty() {
                return Pressure::Idle;
            }
            r.keys.len()
        };
        if waiting == 0 {
            return Pressure::None;
        }
        let lanes = lock(&self.lanes);
        let blocked = |l: &Arc<LaneStat>| {
            let now = l.started.load(Ordering::Relaxed);
            before.iter().any(|(b, n)| Arc::ptr_eq(b, l) && *n == now)
        };
        if !lanes.is_empty() && lanes.iter().all(blocked) {
            Pressure::Blocked(waiting.min(lanes.len()))
        } else {
            Pressure::Busy
        }
    }

    /// The manager stops watching; `true` if it must go on (keys wait, and no dispatcher
    /// has taken over the notification meanwhile).
    pub(super) fn keep_watching(&self) -> bool {
        self.watching.store(false, Ordering::SeqCst);
        let waiting = !lock(&self.ready).keys.is_empty();
        waiting && !self.watching.swap(true, Ordering::AcqRel)
    }

    /// Takes up to `max` threads idle since before `now - idle`, longest idle first (they
    /// are no longer woken; the caller stops them).
    pub(super) fn retire(&self, now: Instant, idle: Duration, max: usize) -> Vec<Sleeper> {
        let mut r = lock(&self.ready);
        let old = r
            .sleepers
            .iter()
            .take(max)
            .take_while(|s| now.saturating_duration_since(s.since) >= idle)
            .count();
        r.sleepers.drain(..old).collect()
    }
}

/// Spreads sequential ids over the whole word (Fibonacci hashing).
fn mix(key: u64) -> u64 {
    (key ^ (key >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A hasher for `u64` keys that are already unique ids.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = mix(self.0 ^ u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::{from_fn, Control, Node};

    fn sched() -> Scheduler {
        Scheduler::new(Arc::new(Bell::default()))
    }

    fn mark() -> Work {
        Work::Mark(crossbeam_channel::unbounded().0)
    }

    /// A parked process to stand for a handler thread.
    fn lane(node: &Node) -> ProcessRef<Pump> {
        node.spawn(from_fn(|_, _: Pump| Ok(Control::Continue)))
            .unwrap()
    }

    fn ready(s: &Scheduler) -> Vec<u64> {
        lock(&s.ready).keys.iter().copied().collect()
    }

    #[test]
    fn a_key_is_made_ready_once_however_many_jobs_it_has() {
        let s = sched();
        for _ in 0..3 {
            s.push(7, mark());
        }
        s.push(8, mark());
        assert_eq!(ready(&s), [7, 8]);
        assert_eq!(s.waiting.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_batch_is_bounded_and_a_busy_key_yields_to_a_waiting_one() {
        let (s, node) = (sched(), Node::new());
        let (me, id): (_, Arc<str>) = (lane(&node), "t".into());
        for _ in 0..BATCH + 5 {
            s.push(1, mark());
        }
        s.push(2, mark());
        let mut batch = VecDeque::new();
        let held = s.take(s.next_key(&me, &id).unwrap(), &mut batch);
        assert_eq!((held.key, batch.len()), (1, BATCH));
        batch.clear();
        // Key 2 waits: key 1 goes back behind it with its 5 jobs.
        assert!(s.end_batch(held, &mut batch, true).is_none());
        assert_eq!(ready(&s), [2, 1]);
        let held = s.take(s.next_key(&me, &id).unwrap(), &mut batch);
        assert_eq!((held.key, batch.len()), (2, 1));
        batch.clear();
        assert!(s.end_batch(held, &mut batch, true).is_none());
        let held = s.take(s.next_key(&me, &id).unwrap(), &mut batch);
        assert_eq!((held.key, batch.len()), (1, 5));
        node.shutdown(Duration::from_secs(1));
    }

    #[test]
    fn a_key_with_more_jobs_is_kept_when_no_other_waits() {
        let s = sched();
        s.push(1, mark());
        let mut batch = VecDeque::new();
        let held = s.take(1, &mut batch);
        lock(&s.ready).keys.clear();
        s.waiting.store(0, Ordering::Relaxed);
        batch.clear();
        s.push(1, mark());
        s.push(1, mark());
        let held = s.end_batch(held, &mut batch, true).expect("kept");
        assert_eq!(batch.len(), 2);
        assert!(ready(&s).is_empty(), "a held key is not made ready again");
        batch.clear();
        assert!(s.end_batch(held, &mut batch, true).is_none());
    }

    #[test]
    fn a_drained_key_is_unscheduled_and_keeps_no_state() {
        let s = sched();
        s.push(1, mark());
        let mut batch = VecDeque::new();
        let held = s.take(1, &mut batch);
        batch.clear();
        assert!(s.end_batch(held, &mut batch, true).is_none());
        assert_eq!(s.shard(1).keys.len(), 0, "no handlers: nothing kept");
        assert_eq!(s.shard(1).spares.len(), 1, "its buffer is kept for reuse");
        lock(&s.ready).keys.clear();
        s.push(1, mark());
        assert_eq!(ready(&s), [1], "the next job schedules it again");
        assert_eq!(s.shard(1).spares.len(), 0);
    }

    #[test]
    fn jobs_left_by_an_exiting_thread_go_back_in_order() {
        let s = sched();
        let marks: Vec<Sender<()>> = (0..3).map(|_| crossbeam_channel::unbounded().0).collect();
        for m in &marks {
            s.push(1, Work::Mark(m.clone()));
        }
        let mut batch = VecDeque::new();
        let held = s.take(s.ready_key(), &mut batch);
        assert_eq!(batch.len(), 3);
        batch.pop_front();
        // The thread exits after running the first job: the other two go back, in order.
        assert!(s.end_batch(held, &mut batch, false).is_none());
        assert_eq!(ready(&s), [1], "requeued");
        let _held = s.take(s.ready_key(), &mut batch);
        let order: Vec<usize> = batch
            .iter()
            .map(|w| match w {
                Work::Mark(t) => marks.iter().position(|m| m.same_channel(t)).unwrap(),
                Work::Job(_) => unreachable!(),
            })
            .collect();
        assert_eq!(order, [1, 2]);
    }

    #[test]
    fn barrier_marks_go_to_scheduled_keys_only() {
        let s = sched();
        s.push(1, mark());
        s.push(2, mark());
        let mut batch = VecDeque::new();
        let held = s.take(2, &mut batch);
        batch.clear();
        assert!(s.end_batch(held, &mut batch, true).is_none());
        let (tx, _rx) = crossbeam_channel::unbounded();
        assert_eq!(s.mark_all(&tx), 1);
    }

    #[test]
    fn the_longest_idle_threads_retire_first_and_no_more_than_asked() {
        let (s, node) = (sched(), Node::new());
        for name in ["a", "b", "c"] {
            assert_eq!(s.next_key(&lane(&node), &name.into()), None);
        }
        let later = Instant::now() + Duration::from_secs(60);
        let gone = s.retire(later, Duration::from_secs(1), 2);
        let ids: Vec<&str> = gone.iter().map(|s| &*s.id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(s
            .retire(Instant::now(), Duration::from_secs(60), 3)
            .is_empty());
        node.shutdown(Duration::from_secs(1));
    }

    impl Scheduler {
        fn ready_key(&self) -> u64 {
            let mut r = lock(&self.ready);
            let key = r.keys.pop_front().unwrap();
            self.waiting.store(r.keys.len(), Ordering::Relaxed);
            key
        }
    }
}
