//! One poller thread: its `mio::Poll`, slab of sockets, command queue and timers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::datagram::DatagramSock;
use super::listener::Listener;
use super::local::LocalOp;
use super::stream::{Accepted, Ctx, Step, Stream};
use super::timer::{TimerKind, Timers};
use super::{Command, ConnCmd, Link, Place, Policy, PollerShared, MAX_COMMANDS_PER_TURN};
use crate::base::{CloseReason, GroupId};

const WAKER: Token = Token(usize::MAX);
/// Size of the per-poller read buffer shared by all its connections.
pub(crate) const READ_BUF: usize = 256 << 10;

/// A listener or datagram socket, in the poller's second slab (connections have their own,
/// whose slots are 16 bytes: a fat box and nothing else). Their slots carry [`OTHER`].
pub(crate) enum Entry {
    Listener(Box<Listener>),
    Datagram(Box<DatagramSock>),
}

/// The bit that marks a slot of the listener and datagram slab (connection slots stay
/// below it).
pub(crate) const OTHER: usize = 1 << 31;

fn is_other(slot: usize) -> bool {
    slot & OTHER != 0
}

pub(crate) fn token(slot: usize, gen: u32) -> Token {
    Token(((gen as usize) << 32) | slot)
}

fn untoken(t: Token) -> (usize, u32) {
    (t.0 & 0xffff_ffff, (t.0 >> 32) as u32)
}

/// A poller thread's state. Only that thread touches it.
pub(crate) struct Poller {
    shared: Arc<PollerShared>,
    poll: Poll,
    rx: Receiver<Command>,
    /// Stream connections (real and virtual).
    streams: Slab<Box<Stream>>,
    gens: Vec<u32>,
    /// Listeners and datagram sockets (slot `k | OTHER`).
    others: Slab<Entry>,
    other_gens: Vec<u32>,
    timers: Timers,
    read_buf: Vec<u8>,
    /// Connections with new output to flush at the end of this turn.
    dirty: Vec<(u32, u32)>,
    /// The list being flushed, kept between turns so flushing allocates nothing.
    dirty_spare: Vec<(u32, u32)>,
    /// Connections to read again next turn (read budget exhausted).
    again: Vec<(u32, u32)>,
    /// Connections not read while the memory budget is spent (looked at every turn, at
    /// most [`STARVED_RECHECK`] apart).
    starved: Vec<(u32, u32)>,
    siblings: Vec<Arc<PollerShared>>,
    /// Inline handlers' sends for connections other than the one being driven.
    deferred: Vec<LocalOp>,
    deferred_bytes: Vec<u8>,
    /// Fan-out group → members on this poller.
    groups: std::collections::HashMap<GroupId, Vec<(u32, u32)>>,
    /// The time of this turn (read once after each wait).
    now: Instant,
    running: bool,
}

/// Creates a poller and the handle other threads use to reach it.
/// How often connections starved by a spent memory budget are looked at, at most.
const STARVED_RECHECK: Duration = Duration::from_millis(10);

pub(crate) fn new_poller(index: usize) -> std::io::Result<(Poller, Arc<PollerShared>)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(PollerShared {
        id: super::NEXT_POLLER_ID.fetch_add(1, Ordering::Relaxed),
        index,
        tx,
        waker,
        wake_pending: Default::default(),
    });
    let poller = Poller {
        shared: shared.clone(),
        poll,
        rx,
        streams: Slab::with_capacity(1024),
        gens: Vec::new(),
        others: Slab::new(),
        other_gens: Vec::new(),
        timers: Timers::default(),
        read_buf: vec![0; READ_BUF],
        dirty: Vec::new(),
        dirty_spare: Vec::new(),
        again: Vec::new(),
        starved: Vec::new(),
        siblings: Vec::new(),
        deferred: Vec::new(),
        deferred_bytes: Vec::new(),
        groups: Default::default(),
        now: Instant::now(),
        running: true,
    };
    Ok((poller, shared))
}

impl Poller {
    /// The loop: wait for readiness (or the nearest timer, or a command), handle it, flush.
    pub(crate) fn run(mut self, siblings: Vec<Arc<PollerShared>>) {
        self.siblings = siblings;
        super::local::enter(self.shared.id);
        let mut events = Events::with_capacity(1024);
        while self.running {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("poller {}: poll failed: {e}", self.shared.index);
                break;
            }
            self.now = Instant::now();
            // Commands first: whatever other threads queued before this wait returned
            // (a broadcast, a send) goes out before replies to bytes read in this turn, so
            // a client's ping after a server-side send gets its pong after that send.
            self.run_commands();
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.on_event(ev);
                }
            }
            self.revisit();
            self.fire_timers();
            self.flush_dirty();
        }
        self.close_everything();
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty() || !self.rx.is_empty() {
            return Some(Duration::ZERO);
        }
        let timeout = self.timers.timeout(Instant::now());
        match self.starved.is_empty() {
            true => timeout,
            false => Some(timeout.map_or(STARVED_RECHECK, |t| t.min(STARVED_RECHECK))),
        }
    }

    /// Reserves a slot (of a connection, or with `other` of a listener or datagram socket)
    /// and its next generation.
    fn reserve(&mut self, other: bool) -> (usize, u32) {
        let (key, gens) = match other {
            false => (self.streams.vacant_key(), &mut self.gens),
            true => (self.others.vacant_key(), &mut self.other_gens),
        };
        if gens.len() <= key {
            gens.resize(key + 1, 0);
        }
        gens[key] = gens[key].wrapping_add(1);
        let slot = if other { key | OTHER } else { key };
        (slot, gens[key])
    }

    /// A place for a new connection, as other layers see it.
    fn place(&mut self) -> Place {
        let (slot, gen) = self.reserve(false);
        Place {
            poller: self.shared.clone(),
            slot: slot as u32,
            gen,
        }
    }

    /// The live generation of a slot (`None` when free).
    fn gen_of(&self, slot: usize) -> Option<u32> {
        let (live, gens, key) = match is_other(slot) {
            false => (self.streams.contains(slot), &self.gens, slot),
            true => (
                self.others.contains(slot & !OTHER),
                &self.other_gens,
                slot & !OTHER,
            ),
        };
        live.then(|| gens.get(key).copied()).flatten()
    }

    fn register<S: mio::event::Source + ?Sized>(
        &self,
        src: &mut S,
        slot: usize,
        gen: u32,
        interest: Interest,
    ) -> std::io::Result<()> {
        self.poll
            .registry()
            .register(src, token(slot, gen), interest)
    }

    /// Runs `f` on a live stream connection with its context (one lookup), then removes the
    /// connection if `f` says it is gone and applies inline handlers' sends to others.
    pub(crate) fn on_stream(
        &mut self,
        slot: u32,
        gen: u32,
        f: impl FnOnce(&mut Stream, &mut Ctx<'_>) -> Step,
    ) -> bool {
        let Poller {
            streams,
            gens,
            poll,
            timers,
            read_buf,
            dirty,
            again,
            starved,
            now,
            ..
        } = self;
        if gens.get(slot as usize) != Some(&gen) {
            return false;
        }
        let Some(c) = streams.get_mut(slot as usize) else {
            return false;
        };
        let mut ctx = Ctx {
            registry: poll.registry(),
            read_buf,
            timers,
            dirty,
            again,
            starved,
            now: *now,
        };
        let mut step = f(c, &mut ctx);
        if let (Step::Live, true) = (&step, super::local::pending()) {
            step = c.apply_local(&mut ctx);
        }
        if let Step::Gone(reason) = step {
            self.finalize(slot, gen, reason);
        }
        if super::local::pending() {
            self.apply_deferred();
        }
        true
    }

    /// Inline handlers' sends for other connections of this poller (and any left in the
    /// outbox by a callback outside a connection).
    fn apply_deferred(&mut self) {
        while super::local::pending() {
            let base = self.deferred_bytes.len();
            super::local::take(&mut self.deferred_bytes, &mut self.deferred, base);
            if self.deferred.is_empty() {
                self.deferred_bytes.clear();
                return;
            }
            let mut ops = std::mem::take(&mut self.deferred);
            let mut bytes = std::mem::take(&mut self.deferred_bytes);
            // Each op's link while its connection is here: one closed by an earlier op of
            // this batch still has its admitted bytes uncounted.
            let links: Vec<Option<Arc<super::Link>>> = ops
                .iter()
                .map(|op| match self.streams.get(op.slot as usize) {
                    Some(c) if self.gen_of(op.slot as usize) == Some(op.gen) => {
                        Some(c.link().clone())
                    }
                    _ => None,
                })
                .collect();
            for (op, link) in ops.iter().zip(&links) {
                let data = &bytes[op.start..op.end];
                let kind = op.kind;
                let found = self.on_stream(op.slot, op.gen, |c, ctx| {
                    let ((), step) = c.drive(ctx, |d, io| d.on_local(io, kind, data));
                    step
                });
                if let (false, Some(link)) = (found, link) {
                    link.account(-(data.len() as isize));
                }
            }
            ops.clear();
            bytes.clear();
            self.deferred = ops;
            self.deferred_bytes = bytes;
        }
    }

    fn on_event(&mut self, ev: &mio::event::Event) {
        let (slot, gen) = untoken(ev.token());
        if self.gen_of(slot) != Some(gen) {
            return;
        }
        if is_other(slot) {
            return self.other_ready(slot, gen, ev.is_writable());
        }
        let hangup = ev.is_read_closed() || ev.is_error();
        let readable = ev.is_readable() || hangup;
        let writable = ev.is_writable() || ev.is_write_closed();
        self.on_stream(slot as u32, gen, |c, ctx| {
            c.ready(ctx, readable, writable, !hangup)
        });
    }

    /// Readiness (or a revisit) of a listener or datagram socket.
    fn other_ready(&mut self, slot: usize, gen: u32, writable: bool) {
        match self.others.get(slot & !OTHER) {
            Some(Entry::Listener(_)) => self.listener_ready(slot),
            Some(Entry::Datagram(_)) => self.datagram_ready(slot as u32, gen, writable),
            None => {}
        }
    }

    fn run_commands(&mut self) {
        self.shared.wake_pending.store(false, Ordering::Release);
        for _ in 0..MAX_COMMANDS_PER_TURN {
            match self.rx.try_recv() {
                Ok(cmd) => self.command(cmd),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.running = false;
                    return;
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Conn { link, cmd } => self.conn_command(link, cmd),
            Command::SendTo {
                slot,
                gen,
                data,
                to,
            } => self.cmd_send_to(slot, gen, data, to),
            Command::GroupSend {
                group,
                frames,
                except,
                reply,
            } => self.cmd_group_send(group, frames, except, reply),
            Command::AddListener(l, reply) => {
                let _ = reply.send(self.add_listener(l));
            }
            Command::AddDatagram(d, reply) => {
                let _ = reply.send(self.adopt_datagram(*d));
            }
            Command::Adopt(acc) => self.adopt(*acc),
            Command::AddVirtual(make) => self.add_virtual(make),
            Command::Drain(owner, done) => {
                self.drain(&owner);
                let _ = done.send(());
            }
            Command::ForceClose(owner, done) => {
                self.force_close(&owner);
                let _ = done.send(());
            }
            Command::Stop => self.running = false,
        }
    }

    fn conn_command(&mut self, link: Arc<Link>, cmd: ConnCmd) {
        let (slot, gen) = (link.slot, link.gen);
        match cmd {
            ConnCmd::JoinGroup(g) => self.group_join(slot, gen, g),
            ConnCmd::LeaveGroup(g) => self.group_leave(slot, gen, g),
            cmd => {
                let mut cmd = Some(cmd);
                let found = self.on_stream(slot, gen, |c, ctx| {
                    let cmd = cmd.take().expect("taken once");
                    c.command(ctx, cmd)
                });
                if let (false, Some(cmd)) = (found, cmd) {
                    super::stream::unadmit_stale(&link, &cmd);
                }
            }
        }
    }

    /// Connections whose read budget ran out last turn are read again.
    fn revisit(&mut self) {
        if !self.starved.is_empty() {
            for (slot, gen) in std::mem::take(&mut self.starved) {
                self.on_stream(slot, gen, |c, ctx| c.revive(ctx));
            }
        }
        if self.again.is_empty() {
            return;
        }
        let again = std::mem::take(&mut self.again);
        for (slot, gen) in again {
            if self.gen_of(slot as usize) != Some(gen) {
                continue;
            }
            match is_other(slot as usize) {
                true => self.other_ready(slot as usize, gen, false),
                false => {
                    self.on_stream(slot, gen, |c, ctx| c.read(ctx, false));
                }
            }
        }
    }

    fn fire_timers(&mut self) {
        self.now = Instant::now();
        while let Some((kind, t)) = self.timers.pop_due(self.now) {
            match kind {
                TimerKind::Conn => {
                    self.on_stream(t.slot, t.gen, |c, ctx| c.timer(ctx));
                }
                TimerKind::Listener => self.listener_timer(t.slot, t.gen),
            }
        }
    }

    fn flush_dirty(&mut self) {
        // Flushing may close connections and mark others dirty: loop until quiet.
        let mut work = std::mem::take(&mut self.dirty_spare);
        while !self.dirty.is_empty() {
            std::mem::swap(&mut work, &mut self.dirty);
            for (slot, gen) in work.drain(..) {
                self.on_stream(slot, gen, |c, ctx| c.flush(ctx));
            }
        }
        self.dirty_spare = work;
    }

    /// Takes ownership of an accepted connection (already admitted by its owner).
    pub(crate) fn adopt(&mut self, mut acc: Accepted) {
        let place = self.place();
        let (slot, gen) = (place.slot, place.gen);
        acc.place = Some(place);
        let owner = acc.owner.clone();
        let Some(mut c) = owner.open(acc) else {
            return;
        };
        let registered = match c.source() {
            Some(src) => self.register(src, slot as usize, gen, Interest::READABLE),
            None => Ok(()),
        };
        if let Err(e) = registered {
            c.finish(&CloseReason::Reset(e.to_string()));
            return;
        }
        let key = self.streams.insert(c);
        debug_assert_eq!(key, slot as usize);
        self.on_stream(slot, gen, |c, ctx| c.start(ctx));
    }

    /// Places a virtual connection (nothing to register) and starts it.
    fn add_virtual(&mut self, make: super::MakeVirtual) {
        let place = self.place();
        let (slot, gen) = (place.slot, place.gen);
        let Some(c) = make(place) else {
            return;
        };
        let key = self.streams.insert(c);
        debug_assert_eq!(key, slot as usize);
        self.on_stream(slot, gen, |c, ctx| c.start(ctx));
    }

    fn add_listener(&mut self, mut l: Box<Listener>) -> std::io::Result<()> {
        let (slot, gen) = self.reserve(true);
        self.poll
            .registry()
            .register(l.source(), token(slot, gen), Interest::READABLE)?;
        self.others.insert(Entry::Listener(l));
        Ok(())
    }

    /// Removes the listener or datagram socket at `slot` and deregisters its source.
    fn remove_other(&mut self, slot: usize) -> Option<Entry> {
        let mut e = self.others.try_remove(slot & !OTHER)?;
        let reg = self.poll.registry();
        let _ = match &mut e {
            Entry::Listener(l) => l.deregister(reg),
            Entry::Datagram(d) => d.deregister(reg),
        };
        Some(e)
    }

    /// Removes a stream connection, releases everything, tells its driver.
    fn finalize(&mut self, slot: u32, gen: u32, reason: CloseReason) {
        if self.gen_of(slot as usize) != Some(gen) {
            return;
        }
        // A connection's socket is closed right after (its only descriptor), which takes
        // it out of the epoll set: no `epoll_ctl(DEL)` per closed connection.
        let Some(mut c) = self.streams.try_remove(slot as usize) else {
            return;
        };
        let groups = c.with_groups(|g| g.take());
        for g in groups {
            self.remove_member(g, slot, gen);
        }
        // Inline sends still in the outbox for it were admitted: uncount them (queue, budget).
        let link = c.link().clone();
        super::local::take_for(slot, gen, |_, data| link.account(-(data.len() as isize)));
        c.finish(&reason);
        drop(c);
        self.apply_deferred();
    }

    /// Entries of `owner`: (slot, gen) of its streams.
    fn streams_of(&self, owner: &Arc<Policy>) -> Vec<(u32, u32)> {
        self.streams
            .iter()
            .filter(|(_, c)| c.is_of(owner))
            .map(|(k, _)| (k as u32, self.gens[k]))
            .collect()
    }

    /// Stops accepting for `owner` and starts draining its connections.
    fn drain(&mut self, owner: &Arc<Policy>) {
        let others: Vec<usize> = self
            .others
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Listener(l) if l.is_of(owner) => Some(k),
                Entry::Datagram(d) if d.is_of(owner) => Some(k),
                _ => None,
            })
            .collect();
        for k in others {
            if let Some(Entry::Datagram(_)) = self.others.get(k) {
                self.flush_datagrams((k | OTHER) as u32, self.other_gens[k]);
            }
            self.remove_other(k | OTHER);
        }
        for (slot, gen) in self.streams_of(owner) {
            self.on_stream(slot, gen, |c, ctx| c.shutdown(ctx));
        }
    }

    /// Drops every remaining connection of `owner` at once.
    fn force_close(&mut self, owner: &Arc<Policy>) {
        for (slot, gen) in self.streams_of(owner) {
            self.finalize(slot, gen, CloseReason::Shutdown);
        }
    }

    fn close_everything(&mut self) {
        let slots: Vec<usize> = self.streams.iter().map(|(k, _)| k).collect();
        for slot in slots {
            let gen = self.gens[slot];
            self.finalize(slot as u32, gen, CloseReason::Shutdown);
        }
        let others: Vec<usize> = self.others.iter().map(|(k, _)| k).collect();
        for k in others {
            self.remove_other(k | OTHER);
        }
    }

    /// Hands an accepted connection to a sibling poller, or adopts it here.
    pub(crate) fn place_accepted(&mut self, target: Option<Arc<PollerShared>>, acc: Accepted) {
        match target {
            Some(p) if p.id != self.shared.id => p.command(Command::Adopt(Box::new(acc))),
            _ => self.adopt(acc),
        }
    }
}

impl Poller {
    pub(crate) fn siblings(&self) -> &[Arc<PollerShared>] {
        &self.siblings
    }

    /// The listener or datagram socket at `slot` (one with [`OTHER`]).
    pub(crate) fn entry_mut(&mut self, slot: usize) -> Option<&mut Entry> {
        match is_other(slot) {
            true => self.others.get_mut(slot & !OTHER),
            false => None,
        }
    }

    pub(crate) fn groups_mut(
        &mut self,
    ) -> &mut std::collections::HashMap<GroupId, Vec<(u32, u32)>> {
        &mut self.groups
    }

    pub(crate) fn is_live(&self, slot: u32, gen: u32) -> bool {
        self.gen_of(slot as usize) == Some(gen)
    }

    /// A place for a new datagram socket.
    pub(crate) fn new_other_place(&mut self) -> Place {
        let (slot, gen) = self.reserve(true);
        Place {
            poller: self.shared.clone(),
            slot: slot as u32,
            gen,
        }
    }

    pub(crate) fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }

    /// Runs `f` on a live datagram socket with the registry.
    pub(crate) fn with_datagram(
        &mut self,
        slot: u32,
        gen: u32,
        f: impl FnOnce(&mut DatagramSock, &mio::Registry),
    ) {
        if !self.is_live(slot, gen) {
            return;
        }
        if let Some(Entry::Datagram(d)) = self.others.get_mut(slot as usize & !OTHER) {
            f(d, self.poll.registry());
        }
    }

    /// Inserts a listener or datagram socket at the slot last reserved for one.
    pub(crate) fn insert_entry(&mut self, e: Entry) {
        self.others.insert(e);
    }

    pub(crate) fn take_read_buf(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.read_buf)
    }

    pub(crate) fn put_read_buf(&mut self, b: Vec<u8>) {
        self.read_buf = b;
    }

    pub(crate) fn push_again(&mut self, slot: u32, gen: u32) {
        self.again.push((slot, gen));
    }

    /// Arms a timer of `kind` for the live entry at `slot`, `after` from this turn's time.
    pub(crate) fn arm_timer(&mut self, slot: usize, after: std::time::Duration, kind: TimerKind) {
        let Some(gen) = self.gen_of(slot) else {
            return;
        };
        let at = crate::base::saturating(self.now, after);
        self.timers.add(at, slot as u32, gen, kind);
    }

    pub(crate) fn again_listener(&mut self, slot: usize) {
        if let Some(gen) = self.gen_of(slot) {
            self.again.push((slot as u32, gen));
        }
    }
}
