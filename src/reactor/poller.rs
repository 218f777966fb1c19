//! One poller thread: its `mio::Poll`, slab of sockets, command queue and timers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::datagram::DatagramSock;
use super::listener::Listener;
use super::stream::StreamConn;
use super::timer::{TimerKind, Timers};
use super::{local, Command, PollerShared, MAX_COMMANDS_PER_TURN};
use crate::server::pool::HandlerPool;

const WAKER: Token = Token(usize::MAX);
/// Size of the per-poller read buffer shared by all its connections.
pub(crate) const READ_BUF: usize = 256 << 10;

/// Everything a poller owns, one per slab slot.
pub(crate) enum Entry {
    Listener(Box<Listener>),
    Stream(Box<StreamConn>),
    Datagram(Box<DatagramSock>),
}

pub(crate) fn token(slot: usize, gen: u32) -> Token {
    Token(((gen as usize) << 32) | slot)
}

fn untoken(t: Token) -> (usize, u32) {
    (t.0 & 0xffff_ffff, (t.0 >> 32) as u32)
}

/// A poller thread's state. Only that thread touches it.
pub(crate) struct Poller {
    pub(crate) shared: Arc<PollerShared>,
    pub(crate) poll: Poll,
    rx: Receiver<Command>,
    pub(crate) entries: Slab<Entry>,
    pub(crate) gens: Vec<u32>,
    pub(crate) timers: Timers,
    pub(crate) read_buf: Vec<u8>,
    /// Connections with new output to flush at the end of this turn.
    pub(crate) dirty: Vec<(u32, u32)>,
    /// The list being flushed, kept between turns so flushing allocates nothing.
    dirty_spare: Vec<(u32, u32)>,
    /// Connections to read again next turn (read budget exhausted).
    pub(crate) again: Vec<(u32, u32)>,
    pub(crate) pool: Arc<HandlerPool>,
    pub(crate) siblings: Vec<Arc<PollerShared>>,
    /// Shared WebSocket compressor, inflater and buffers of this thread.
    pub(crate) ws_scratch: crate::proto::ws::Scratch,
    local_bytes: Vec<u8>,
    local_ops: Vec<local::LocalOp>,
    /// Fan-out group → members on this poller.
    pub(crate) groups: std::collections::HashMap<crate::base::GroupId, Vec<(u32, u32)>>,
    running: bool,
}

/// Creates a poller and the handle other threads use to reach it.
pub(crate) fn new_poller(
    index: usize,
    pool: Arc<HandlerPool>,
) -> std::io::Result<(Poller, Arc<PollerShared>)> {
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
        entries: Slab::with_capacity(1024),
        gens: Vec::new(),
        timers: Timers::default(),
        read_buf: vec![0; READ_BUF],
        dirty: Vec::new(),
        dirty_spare: Vec::new(),
        again: Vec::new(),
        pool,
        siblings: Vec::new(),
        ws_scratch: crate::proto::ws::Scratch::new(),
        local_bytes: Vec::new(),
        local_ops: Vec::new(),
        groups: Default::default(),
        running: true,
    };
    Ok((poller, shared))
}

impl Poller {
    /// The loop: wait for readiness (or the nearest timer, or a command), handle it, flush.
    pub(crate) fn run(mut self, siblings: Vec<Arc<PollerShared>>) {
        self.siblings = siblings;
        local::enter(self.shared.id);
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
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.on_event(ev);
                }
            }
            self.run_commands();
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
        self.timers.timeout(Instant::now())
    }

    /// Reserves a slot and its next generation.
    pub(crate) fn reserve(&mut self) -> (usize, u32) {
        let slot = self.entries.vacant_key();
        if self.gens.len() <= slot {
            self.gens.resize(slot + 1, 0);
        }
        self.gens[slot] = self.gens[slot].wrapping_add(1);
        (slot, self.gens[slot])
    }

    /// The live generation of a slot (0 when free).
    pub(crate) fn gen_of(&self, slot: usize) -> Option<u32> {
        self.entries
            .contains(slot)
            .then(|| self.gens.get(slot).copied())
            .flatten()
    }

    pub(crate) fn stream_mut(&mut self, slot: u32, gen: u32) -> Option<&mut StreamConn> {
        if self.gen_of(slot as usize)? != gen {
            return None;
        }
        match self.entries.get_mut(slot as usize) {
            Some(Entry::Stream(c)) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn register<S: mio::event::Source + ?Sized>(
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

    fn on_event(&mut self, ev: &mio::event::Event) {
        let (slot, gen) = untoken(ev.token());
        if self.gen_of(slot) != Some(gen) {
            return;
        }
        match self.entries.get(slot) {
            Some(Entry::Listener(_)) => self.listener_ready(slot),
            Some(Entry::Stream(_)) => {
                let hangup = ev.is_read_closed() || ev.is_error();
                let readable = ev.is_readable() || hangup;
                let writable = ev.is_writable() || ev.is_write_closed();
                self.stream_ready(slot as u32, gen, readable, writable, !hangup)
            }
            Some(Entry::Datagram(_)) => self.datagram_ready(slot as u32, gen, ev.is_writable()),
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
            Command::Send { conn, data } => self.cmd_send(&conn, data),
            Command::Close { conn, reason } => self.cmd_close(conn.slot, conn.gen, reason),
            Command::SendTo {
                slot,
                gen,
                data,
                to,
            } => self.cmd_send_to(slot, gen, data, to),
            Command::WsSend { conn, op, data } => self.cmd_ws_send(&conn, op, &data),
            Command::SendFrames { conn, frames } => self.cmd_send_frames(&conn, frames),
            Command::WsClose { conn, code, reason } => self.cmd_ws_close(&conn, code, &reason),
            Command::GroupSend {
                group,
                frames,
                except,
                reply,
            } => self.cmd_group_send(group, frames, except, reply),
            Command::GroupJoin { slot, gen, group } => self.cmd_group_join(slot, gen, group),
            Command::GroupLeave { slot, gen, group } => self.cmd_group_leave(slot, gen, group),
            Command::Resume { slot, gen } => self.cmd_resume(slot, gen),
            Command::HandlerCaughtUp { slot, gen } => self.cmd_caught_up(slot, gen),
            Command::Run(job) => job(self),
            Command::Stop => self.running = false,
        }
    }

    /// Connections whose read budget ran out last turn are read again.
    fn revisit(&mut self) {
        if self.again.is_empty() {
            return;
        }
        let again = std::mem::take(&mut self.again);
        for (slot, gen) in again {
            if self.gen_of(slot as usize) != Some(gen) {
                continue;
            }
            match self.entries.get(slot as usize) {
                Some(Entry::Listener(_)) => self.listener_ready(slot as usize),
                Some(Entry::Stream(_)) => self.stream_ready(slot, gen, true, false, false),
                Some(Entry::Datagram(_)) => self.datagram_ready(slot, gen, false),
                None => {}
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(t) = self.timers.pop_due(now) {
            if self.gen_of(t.slot as usize) != Some(t.gen) {
                continue;
            }
            match t.kind {
                TimerKind::Conn => self.stream_timer(t.slot, t.gen, now),
                TimerKind::CloseDeadline => self.close_deadline(t.slot, t.gen),
            }
        }
    }

    fn flush_dirty(&mut self) {
        // Flushing may close connections and mark others dirty: loop until quiet.
        let mut work = std::mem::take(&mut self.dirty_spare);
        while !self.dirty.is_empty() {
            std::mem::swap(&mut work, &mut self.dirty);
            for (slot, gen) in work.drain(..) {
                self.flush_stream(slot, gen);
            }
        }
        self.dirty_spare = work;
    }

    /// Applies sends made by inline handlers on this thread.
    pub(crate) fn drain_local(&mut self) {
        let mut bytes = std::mem::take(&mut self.local_bytes);
        let mut ops = std::mem::take(&mut self.local_ops);
        if local::swap(&mut bytes, &mut ops) {
            for op in &ops {
                let data = &bytes[op.start..op.end];
                match op.kind {
                    local::Kind::Raw => self.local_raw_send(op.slot, op.gen, data),
                    local::Kind::Ws(code) => self.local_ws_send(op.slot, op.gen, code, data),
                }
            }
            bytes.clear();
            ops.clear();
        }
        self.local_bytes = bytes;
        self.local_ops = ops;
    }

    fn local_raw_send(&mut self, slot: u32, gen: u32, data: &[u8]) {
        if let Some(c) = self.stream_mut(slot, gen) {
            if c.push_local(data) {
                self.dirty.push((slot, gen));
            }
        }
    }

    fn close_everything(&mut self) {
        let slots: Vec<usize> = self.entries.iter().map(|(k, _)| k).collect();
        for slot in slots {
            let gen = self.gens[slot];
            match self.entries.get(slot) {
                Some(Entry::Stream(_)) => {
                    self.finalize_stream(slot as u32, gen, crate::CloseReason::Shutdown)
                }
                Some(_) => {
                    self.remove_entry(slot);
                }
                None => {}
            }
        }
    }

    /// Removes an entry and deregisters its source.
    pub(crate) fn remove_entry(&mut self, slot: usize) -> Option<Entry> {
        let mut e = self.entries.try_remove(slot)?;
        let reg = self.poll.registry();
        let _ = match &mut e {
            Entry::Listener(l) => l.deregister(reg),
            Entry::Stream(c) => c.deregister(reg),
            Entry::Datagram(d) => d.deregister(reg),
        };
        Some(e)
    }
}
