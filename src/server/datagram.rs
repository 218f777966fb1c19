//! Datagram servers: the [`DatagramSender`] handle and the driver that hands each datagram
//! to a [`DatagramHandler`] (inline or on the handler pool).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::dispatch::{datagram_key, Handlers, Job, JOB_COST};
use super::handler::{DatagramFactory, DatagramSender};
use super::ServerShared;
use crate::base::{Addr, SendStatus};
use crate::reactor::{Command, DatagramDriver, Place, PollerShared};
use crate::Error;

/// What handles of a datagram socket share.
pub(crate) struct DatagramShared {
    pub(crate) poller: Arc<PollerShared>,
    pub(crate) slot: u32,
    pub(crate) gen: u32,
    pub(crate) server: Arc<ServerShared>,
    pub(crate) local: Addr,
    pub(crate) key: u64,
    queued: AtomicUsize,
    /// Bytes of datagrams handed to the handler pool and not yet handled (each counting
    /// its job's overhead), bounded by the server's `max_inbound_pending`.
    inbound: AtomicUsize,
}

impl DatagramShared {
    /// A datagram job of this socket was handled: uncount it.
    pub(crate) fn handled(&self, len: usize) {
        let cost = len + JOB_COST;
        self.inbound.fetch_sub(cost, Ordering::AcqRel);
        self.server.policy.counters.budget.sub(cost);
    }
}

impl DatagramSender {
    /// Sends one datagram to `to` (queued when the socket pushes back, within the server's
    /// `max_queued_bytes`; past it the datagram is dropped).
    ///
    /// A datagram that cannot be sent at all — to an unnamed Unix peer (a client socket
    /// bound to no path), or to an address of the other family — is refused at once:
    /// [`SendStatus::Dropped`], counted in the server's `dropped`.
    pub fn send_to(&self, data: &[u8], to: &Addr) -> SendStatus {
        let sh = &self.inner;
        if sh.server.draining.load(Ordering::Acquire) && sh.server.stopped() {
            return SendStatus::Closed;
        }
        let reachable = matches!(
            (&sh.local, to),
            (Addr::Inet(_), Addr::Inet(_)) | (Addr::Unix(_), Addr::Unix(Some(_)))
        );
        if !reachable {
            log::debug!("datagram to {to} refused: no address to send it to");
            sh.server.policy.counters.dropped(1);
            return SendStatus::Dropped;
        }
        let limit = sh.server.config.max_queued_bytes;
        let before = sh.queued.fetch_add(data.len(), Ordering::AcqRel);
        if before > 0 && before + data.len() > limit {
            sh.queued.fetch_sub(data.len(), Ordering::AcqRel);
            sh.server.policy.counters.dropped(1);
            return SendStatus::Dropped;
        }
        sh.poller.command(Command::SendTo {
            slot: sh.slot,
            gen: sh.gen,
            data: data.to_vec(),
            to: to.clone(),
        });
        SendStatus::Queued
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> &Addr {
        &self.inner.local
    }
}

static NEXT_SOCK_KEY: AtomicUsize = AtomicUsize::new(1);

/// Builds the driver of a datagram socket of `server` once the poller gave it a place.
#[allow(clippy::type_complexity)]
pub(crate) fn maker(
    server: Arc<ServerShared>,
) -> Box<dyn FnOnce(Place) -> std::io::Result<Box<dyn DatagramDriver>> + Send> {
    Box::new(move |place: Place| {
        let factory = server.datagram_factory()?;
        let sender = DatagramSender {
            inner: Arc::new(DatagramShared {
                poller: place.poller,
                slot: place.slot,
                gen: place.gen,
                local: server.local.clone(),
                key: datagram_key(NEXT_SOCK_KEY.fetch_add(1, Ordering::Relaxed) as u64),
                queued: AtomicUsize::new(0),
                inbound: AtomicUsize::new(0),
                server: server.clone(),
            }),
        };
        let inline = server.inline().then(Handlers::default);
        Ok(Box::new(DgramDriver {
            sender,
            factory,
            inline,
        }) as Box<dyn DatagramDriver>)
    })
}

/// A datagram socket's protocol: each datagram to the handler, inline or on the pool.
struct DgramDriver {
    sender: DatagramSender,
    factory: Arc<dyn DatagramFactory>,
    /// The handler's state when it runs inline.
    inline: Option<Handlers>,
}

impl DgramDriver {
    fn run(&mut self, job: Job) {
        match &mut self.inline {
            Some(h) => {
                let _ = h.run(job);
            }
            None => self
                .sender
                .inner
                .server
                .pool
                .dispatch(self.sender.inner.key, job),
        }
    }
}

impl DatagramDriver for DgramDriver {
    fn on_datagram(&mut self, peer: &Addr, data: &[u8]) {
        // Bounded hand-off: past `max_inbound_pending` bytes waiting for the handler threads
        // (or with the runtime's budget spent) the newest datagram is dropped and counted.
        // That is the policy for datagrams: pausing the socket would only move the drop
        // into the kernel, where nobody counts it. Inline, the handler runs at once and
        // nothing waits.
        let sh = &self.sender.inner;
        let counters = &sh.server.policy.counters;
        let cost = data.len() + JOB_COST;
        let max = sh.server.policy.limits.max_inbound_pending;
        let before = sh.inbound.fetch_add(cost, Ordering::AcqRel);
        if (before > 0 && before + cost > max) || counters.budget.full() {
            sh.inbound.fetch_sub(cost, Ordering::AcqRel);
            counters.dropped(1);
            return;
        }
        counters.budget.add(cost);
        self.run(Job::Datagram {
            sender: self.sender.clone(),
            factory: self.factory.clone(),
            peer: peer.clone(),
            data: data.to_vec(),
        });
    }

    fn on_error(&mut self, error: Error) {
        self.sender.inner.server.report_error(None, &error);
        if let Error::DatagramTooLarge { .. } = error {
            self.run(Job::DatagramError {
                sender: self.sender.clone(),
                factory: self.factory.clone(),
                error,
            });
        }
    }

    fn sent(&mut self, n: usize) {
        self.sender.inner.queued.fetch_sub(n, Ordering::AcqRel);
    }
}
