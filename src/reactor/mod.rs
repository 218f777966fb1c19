//! The reactor: poller threads, each with its own `mio::Poll`, connection slab, command queue
//! (woken by a `mio::Waker`) and timers. The only code that touches mio.
//!
//! # Work per loop turn (fairness)
//! Each turn a poller handles at most one batch of readiness events (up to 1024), and for
//! each connection reads at most the server's `max_read_per_turn` bytes (default 256 KiB);
//! a connection with more to read is revisited on the next turn without blocking. At most
//! [`MAX_COMMANDS_PER_TURN`] queued commands are run per turn, and at most
//! [`MAX_ACCEPTS_PER_TURN`] connections are accepted per listener event.

pub(crate) mod datagram;
pub(crate) mod group;
pub(crate) mod listener;
pub(crate) mod local;
pub(crate) mod outq;
pub(crate) mod poller;
pub(crate) mod stream;
pub(crate) mod timer;
pub(crate) mod wsconn;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::base::{Addr, CloseReason};
use crate::server::handle::ConnShared;
pub(crate) use outq::Payload;

/// Commands run per loop turn, at most.
pub const MAX_COMMANDS_PER_TURN: usize = 4096;
/// Accepts per listener readiness event, at most.
pub const MAX_ACCEPTS_PER_TURN: usize = 256;

/// A job run on a poller thread with access to its state.
pub(crate) type PollerJob = Box<dyn FnOnce(&mut poller::Poller) + Send>;

/// A request to a poller from another thread (or from its own handlers).
pub(crate) enum Command {
    Send {
        conn: Arc<ConnShared>,
        data: Payload,
    },
    Close {
        conn: Arc<ConnShared>,
        reason: CloseReason,
    },
    /// A WebSocket message to frame on the poller.
    WsSend {
        conn: Arc<ConnShared>,
        op: crate::proto::ws::OpCode,
        data: Vec<u8>,
    },
    /// A message framed once for many recipients.
    SendFrames {
        conn: Arc<ConnShared>,
        frames: crate::proto::ws::SharedFrames,
    },
    /// Start the WebSocket closing handshake.
    WsClose {
        conn: Arc<ConnShared>,
        code: crate::proto::ws::CloseCode,
        reason: String,
    },
    /// Deliver a shared frame to this poller's members of a group.
    GroupSend {
        group: crate::base::GroupId,
        frames: crate::proto::ws::SharedFrames,
        except: Arc<[crate::base::ConnId]>,
        reply: Option<crossbeam_channel::Sender<crate::base::Delivery>>,
    },
    GroupJoin {
        slot: u32,
        gen: u32,
        group: crate::base::GroupId,
    },
    GroupLeave {
        slot: u32,
        gen: u32,
        group: crate::base::GroupId,
    },
    SendTo {
        slot: u32,
        gen: u32,
        data: Vec<u8>,
        to: Addr,
    },
    /// A handler thread caught up with inbound bytes; reading may resume.
    Resume {
        slot: u32,
        gen: u32,
    },
    /// The handler thread has handled every event sent so far (close after peer EOF).
    HandlerCaughtUp {
        slot: u32,
        gen: u32,
    },
    Run(PollerJob),
    Stop,
}

static NEXT_POLLER_ID: AtomicUsize = AtomicUsize::new(1);

/// The part of a poller other threads see: its command queue and waker.
pub(crate) struct PollerShared {
    pub(crate) id: usize,
    pub(crate) index: usize,
    tx: Sender<Command>,
    waker: mio::Waker,
    wake_pending: AtomicBool,
}

impl PollerShared {
    /// Queues a command and wakes the poller (one wake per batch of commands).
    pub(crate) fn command(&self, cmd: Command) {
        if self.tx.send(cmd).is_err() {
            return;
        }
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!("poller {} wake failed: {e}", self.index);
            }
        }
    }

    /// Runs `f` on the poller thread.
    pub(crate) fn run(&self, f: impl FnOnce(&mut poller::Poller) + Send + 'static) {
        self.command(Command::Run(Box::new(f)));
    }
}
