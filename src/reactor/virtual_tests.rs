//! Virtual connections (no socket) on a real poller thread: commands, the end-of-turn
//! flush, timers, resume and the close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::driver::{Driver, Io, Limits, Offer, Policy};
use super::poller::new_poller;
use super::stream::new_virtual;
use super::{Command, ConnCmd, Link, LinkExt, PollerShared};
use crate::base::{CloseReason, DropPolicy};
use crate::proto::ws::SharedFrames;

#[derive(Debug, PartialEq)]
enum Seen {
    Open,
    Command(&'static str),
    Flush,
    Timer,
    Resume,
    Closed(CloseReason),
}

struct Probe {
    tx: Sender<Seen>,
    deadline: Option<Instant>,
}

impl Driver for Probe {
    fn on_open(&mut self, _: &mut Io<'_>) {
        let _ = self.tx.send(Seen::Open);
    }
    fn on_input(&mut self, _: &mut Io<'_>, data: &mut [u8]) -> usize {
        data.len()
    }
    fn on_drained(&mut self, _: &mut Io<'_>) {}
    fn on_timer(&mut self, io: &mut Io<'_>) {
        if self.deadline.is_some_and(|d| io.now >= d) {
            self.deadline = None;
            let _ = self.tx.send(Seen::Timer);
        }
    }
    fn on_command(&mut self, io: &mut Io<'_>, cmd: ConnCmd) {
        match cmd {
            ConnCmd::Driver(m) => match m.downcast::<&'static str>() {
                Ok(s) if *s == "ready" => {
                    io.output_ready();
                    let _ = self.tx.send(Seen::Command("ready"));
                }
                Ok(s) if *s == "arm" => {
                    self.deadline = Some(io.now + Duration::from_millis(30));
                    io.rearm();
                    let _ = self.tx.send(Seen::Command("arm"));
                }
                _ => {}
            },
            ConnCmd::Close(r) => io.close(r),
            _ => {}
        }
    }
    fn on_local(&mut self, _: &mut Io<'_>, _: super::local::Kind, _: &[u8]) {}
    fn offer(&mut self, _: &mut Io<'_>, _: &SharedFrames) -> Offer {
        Offer::Closed
    }
    fn on_resume(&mut self, _: &mut Io<'_>) {
        let _ = self.tx.send(Seen::Resume);
    }
    fn on_flush(&mut self, _: &mut Io<'_>) {
        let _ = self.tx.send(Seen::Flush);
    }
    fn on_error(&mut self, _: &mut Io<'_>, _: crate::Error) {}
    fn on_closed(&mut self, reason: &CloseReason) {
        let _ = self.tx.send(Seen::Closed(reason.clone()));
    }
    fn next_deadline(&self, _: Instant) -> Option<Instant> {
        self.deadline
    }
    fn id(&self) -> u64 {
        1
    }
}

fn policy() -> Arc<Policy> {
    Arc::new(Policy {
        limits: Limits {
            max_read_per_turn: 1 << 16,
            max_queued_bytes: 1 << 16,
            drop_policy: DropPolicy::DropNewest,
            max_inbound_pending: 1 << 16,
            close_timeout: Duration::from_secs(5),
            max_datagram_size: 1 << 16,
        },
        counters: Default::default(),
        drain_until: Default::default(),
    })
}

/// A test link's owner: no server, only its own policy.
struct Owner(Arc<Policy>);

impl LinkExt for Owner {
    fn policy(&self) -> &Arc<Policy> {
        &self.0
    }
}

/// A poller thread with one virtual connection; its link and what its driver sees.
fn start() -> (Arc<PollerShared>, Arc<Link<Owner>>, Receiver<Seen>) {
    let (poller, shared) = new_poller(0).unwrap();
    std::thread::spawn(move || poller.run(Vec::new()));
    let (tx, rx) = unbounded();
    let (ltx, lrx) = unbounded();
    let policy = policy();
    shared.command(Command::AddVirtual(Box::new(move |place| {
        let link: Arc<Link<Owner>> = Arc::new(Link::new(place, Owner(policy)));
        let _ = ltx.send(link.clone());
        let probe = Probe { tx, deadline: None };
        Some(new_virtual(link, probe))
    })));
    let link = lrx.recv_timeout(Duration::from_secs(5)).unwrap();
    (shared, link, rx)
}

fn next(rx: &Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(5)).expect("an event")
}

fn cmd(link: &Arc<Link<Owner>>, what: &'static str) {
    link.command(ConnCmd::Driver(Box::new(what)));
}

#[test]
fn a_virtual_connection_opens_and_flushes_at_the_end_of_the_turn() {
    let (poller, link, rx) = start();
    assert_eq!(next(&rx), Seen::Open);
    cmd(&link, "ready");
    assert_eq!(next(&rx), Seen::Command("ready"));
    assert_eq!(next(&rx), Seen::Flush, "output_ready asks for on_flush");
    poller.command(Command::Stop);
}

#[test]
fn its_timers_fire_and_resume_reaches_the_driver() {
    let (poller, link, rx) = start();
    assert_eq!(next(&rx), Seen::Open);
    let t0 = Instant::now();
    cmd(&link, "arm");
    assert_eq!(next(&rx), Seen::Command("arm"));
    assert_eq!(next(&rx), Seen::Timer);
    assert!(t0.elapsed() >= Duration::from_millis(30));
    link.command(ConnCmd::Resume);
    assert_eq!(next(&rx), Seen::Resume);
    poller.command(Command::Stop);
}

#[test]
fn a_close_removes_it_at_once_without_lingering() {
    let (poller, link, rx) = start();
    assert_eq!(next(&rx), Seen::Open);
    let t0 = Instant::now();
    link.command(ConnCmd::Close(CloseReason::Local));
    assert_eq!(next(&rx), Seen::Closed(CloseReason::Local));
    assert!(
        t0.elapsed() < crate::proto::conn::LINGER,
        "no linger for a virtual slot"
    );
    assert_eq!(
        link.state.load(std::sync::atomic::Ordering::Acquire),
        super::STATE_CLOSED
    );
    assert_eq!(
        link.policy()
            .counters
            .closed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // A command for the gone connection is dropped quietly.
    cmd(&link, "ready");
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    poller.command(Command::Stop);
}

#[test]
fn re_arming_a_later_deadline_keeps_one_timer_entry() {
    let (_poller, shared) = new_poller(0).unwrap();
    let place = super::Place {
        poller: shared,
        slot: 0,
        gen: 1,
    };
    let link: Arc<Link<Owner>> = Arc::new(Link::new(place, Owner(policy())));
    let (tx, _rx) = unbounded();
    let mut c = new_virtual(link, Probe { tx, deadline: None });
    let poll = mio::Poll::new().unwrap();
    let (mut buf, mut timers) = (Vec::new(), super::timer::Timers::default());
    let (mut dirty, mut again, mut starved) = (Vec::new(), Vec::new(), Vec::new());
    let t0 = Instant::now();
    let mut turn =
        |c: &mut super::stream::Stream,
         now: Instant,
         f: &dyn Fn(&mut super::stream::Stream, &mut super::stream::Ctx<'_>)| {
            let mut ctx = super::stream::Ctx {
                registry: poll.registry(),
                read_buf: &mut buf,
                timers: &mut timers,
                dirty: &mut dirty,
                again: &mut again,
                starved: &mut starved,
                now,
            };
            f(c, &mut ctx);
            ctx.timers.len()
        };
    let arm = |c: &mut super::stream::Stream, ctx: &mut super::stream::Ctx<'_>| {
        let _ = c.command(ctx, ConnCmd::Driver(Box::new("arm")));
    };
    // Each re-arm moves the deadline later: the first entry stands for them all.
    for ms in 0..5 {
        assert_eq!(turn(&mut c, t0 + Duration::from_millis(ms), &arm), 1);
    }
    // It fires (popped by the poller), the driver's deadline is checked and re-armed.
    let fired = |c: &mut super::stream::Stream, ctx: &mut super::stream::Ctx<'_>| {
        let _ = ctx.timers.pop_due(ctx.now);
        let _ = c.timer(ctx);
    };
    assert_eq!(turn(&mut c, t0 + Duration::from_millis(30), &fired), 1);
    assert_eq!(turn(&mut c, t0 + Duration::from_millis(34), &fired), 0);
    // Nothing pending: the next deadline gets an entry again.
    assert_eq!(turn(&mut c, t0 + Duration::from_millis(40), &arm), 1);
}
