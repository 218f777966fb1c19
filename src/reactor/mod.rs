//! Layer 2, the reactor: poller threads, each with its own `mio::Poll`, connection slab,
//! typed command queue (woken by a `mio::Waker`) and timers. The only code that touches mio.
//!
//! A connection's protocol is a [`Driver`]: the reactor reads bytes and hands them to the
//! driver with the time; the driver answers with output (appended to the connection's
//! queue through [`Io`]), requests (close, pause) and its next deadline. The reactor knows
//! no protocol and no handler: raw streams, WebSocket and HTTP are drivers of `server/`.
//!
//! # Work per loop turn (fairness)
//! Each turn a poller handles at most one batch of readiness events (up to 1024), and for
//! each connection reads at most the server's `max_read_per_turn` bytes (default 256 KiB);
//! a connection with more to read is revisited on the next turn without blocking. At most
//! [`MAX_COMMANDS_PER_TURN`] queued commands are run per turn, and at most
//! [`MAX_ACCEPTS_PER_TURN`] connections are accepted per listener event.

pub(crate) mod datagram;
pub(crate) mod driver;
pub(crate) mod group;
pub(crate) mod listener;
pub(crate) mod local;
pub(crate) mod outq;
pub(crate) mod poller;
pub(crate) mod stream;
pub(crate) mod timer;
#[cfg(test)]
mod virtual_tests;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::base::{Addr, CloseReason, ConnId, Delivery, GroupId};
use crate::proto::ws::{CloseCode, OpCode, SharedFrames};
pub(crate) use driver::{
    admit, Accept, Admit, Counters, DatagramDriver, Driver, Io, Limits, Offer, Policy,
};
pub(crate) use outq::Payload;

/// Commands run per loop turn, at most.
pub const MAX_COMMANDS_PER_TURN: usize = 4096;
/// Accepts per listener readiness event, at most.
pub const MAX_ACCEPTS_PER_TURN: usize = 256;

/// Connection states other threads see ([`Link::state`]).
pub(crate) const STATE_OPEN: u8 = 0;
pub(crate) const STATE_CLOSING: u8 = 1;
pub(crate) const STATE_CLOSED: u8 = 2;

/// What every thread may know of one connection: where it lives (poller, slot,
/// generation) and the counters its handles update. `X` is the owner's extra data (the
/// server's connection info), which also provides the owner's [`Policy`] ([`LinkExt`]);
/// the reactor sees `Link<dyn LinkExt>`.
pub(crate) struct Link<X: ?Sized + Send + Sync = dyn LinkExt> {
    pub(crate) poller: Arc<PollerShared>,
    pub(crate) slot: u32,
    pub(crate) gen: u32,
    /// Output bytes admitted and not yet written.
    pub(crate) queued: AtomicUsize,
    pub(crate) state: AtomicU8,
    /// Inbound bytes handed to a handler thread and not yet handled (each message's cost
    /// capped at 1 GiB, so the count fits 32 bits: see [`inbound_cost`]).
    pub(crate) inbound: AtomicU32,
    /// The poller stopped reading until the handler thread catches up.
    pub(crate) paused: AtomicBool,
    pub(crate) ext: X,
}

/// What a [`Link`]'s owner keeps beside it, as the reactor needs it: the owner's limits
/// and counters (one [`Policy`] shared by all of the owner's connections, so its counters
/// add up; the link keeps no copy of the pointer).
pub(crate) trait LinkExt: Send + Sync {
    /// The owner's limits and counters.
    fn policy(&self) -> &Arc<Policy>;
}

/// What `len` inbound bytes count in [`Link::inbound`]: their length, capped at 1 GiB.
/// The count stays in 32 bits while at most a few such messages are pending (reading
/// pauses past `max_inbound_pending`), and it is computed the same way when counted in and out.
pub(crate) fn inbound_cost(len: usize) -> u32 {
    len.min(1 << 30) as u32
}

/// Where a new connection will live, for its owner to build its [`Link`].
pub(crate) struct Place {
    pub(crate) poller: Arc<PollerShared>,
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

impl<X: Send + Sync> Link<X> {
    /// A link for a connection at `place`, open, with nothing queued.
    pub(crate) fn new(place: Place, ext: X) -> Self {
        Link {
            poller: place.poller,
            slot: place.slot,
            gen: place.gen,
            queued: AtomicUsize::new(0),
            state: AtomicU8::new(STATE_OPEN),
            inbound: AtomicU32::new(0),
            paused: AtomicBool::new(false),
            ext,
        }
    }
}

impl<X: LinkExt + 'static> Link<X> {
    /// Sends a command about this connection to its poller.
    pub(crate) fn command(self: &Arc<Self>, cmd: ConnCmd) {
        let link: Arc<Link> = self.clone();
        self.poller.command(Command::Conn { link, cmd });
    }
}

impl<X: ?Sized + LinkExt> Link<X> {
    /// The owner's limits and counters (the very `Arc` its owner holds).
    #[inline]
    pub(crate) fn policy(&self) -> &Arc<Policy> {
        self.ext.policy()
    }

    /// Adjusts this connection's queued-byte count (and its owner's) by `delta`.
    pub(crate) fn account(&self, delta: isize) {
        if delta >= 0 {
            self.queued.fetch_add(delta as usize, Ordering::AcqRel);
            self.policy().counters.add_queued(delta as usize);
        } else {
            self.queued
                .fetch_sub(delta.unsigned_abs(), Ordering::AcqRel);
            self.policy().counters.sub_queued(delta.unsigned_abs());
        }
    }

    /// Moves the connection from open to closing; true for the caller that did it.
    pub(crate) fn begin_closing(&self) -> bool {
        self.state
            .compare_exchange(
                STATE_OPEN,
                STATE_CLOSING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

/// A request about one connection, from a handle on any thread.
pub(crate) enum ConnCmd {
    /// Bytes to queue as they are (already admitted).
    Send(Payload),
    /// A message for the driver to frame (already admitted).
    Message(OpCode, Vec<u8>),
    /// A message framed once for many recipients (already admitted at its plain length).
    Frames(SharedFrames),
    /// Close gracefully (flush, then shut down).
    Close(CloseReason),
    /// Close with a protocol-level code (a WebSocket close frame).
    CloseWith(CloseCode, String),
    JoinGroup(GroupId),
    LeaveGroup(GroupId),
    /// A handler thread caught up with inbound bytes; reading may resume.
    Resume,
    /// The handler thread handled every event sent so far.
    CaughtUp,
    /// The handler panicked (with this message): close with `HandlerPanic`.
    Failed(String),
    /// A message for the connection's driver from its own layer (e.g. an authenticator's
    /// verdict from the handler pool); the reactor passes it on unopened.
    Driver(Box<dyn std::any::Any + Send>),
}

/// A request to a poller from another thread (or from its own handlers).
pub(crate) enum Command {
    /// About one connection (stale ones are dropped, their admitted bytes uncounted).
    Conn {
        link: Arc<Link>,
        cmd: ConnCmd,
    },
    /// A datagram to send from a datagram socket.
    SendTo {
        slot: u32,
        gen: u32,
        data: Vec<u8>,
        to: Addr,
    },
    /// Deliver a shared frame to this poller's members of a group.
    GroupSend {
        group: GroupId,
        frames: SharedFrames,
        except: Arc<[ConnId]>,
        reply: Option<Sender<Delivery>>,
    },
    /// Take ownership of a listener (the reply says whether it was registered).
    AddListener(Box<listener::Listener>, Sender<std::io::Result<()>>),
    /// Take ownership of a datagram socket.
    AddDatagram(Box<datagram::NewDatagram>, Sender<std::io::Result<()>>),
    /// Adopt a connection accepted by a sibling poller.
    Adopt(Box<stream::Accepted>),
    /// Place a virtual connection (no socket, see [`stream::new_virtual`]) here: the
    /// closure builds it for the reserved place, or refuses with `None`.
    AddVirtual(MakeVirtual),
    /// Stop accepting for an owner: remove its listeners and datagram sockets, and start
    /// draining its connections (their drivers decide how).
    Drain(Arc<Policy>, Sender<()>),
    /// Drop every remaining connection of an owner at once.
    ForceClose(Arc<Policy>, Sender<()>),
    Stop,
}

/// Builds a virtual connection at a reserved place (on the poller's thread).
pub(crate) type MakeVirtual = Box<dyn FnOnce(Place) -> Option<Box<stream::Stream>> + Send>;

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

    /// Whether the calling thread is this poller's thread.
    pub(crate) fn is_current(&self) -> bool {
        local::current() == self.id
    }
}
