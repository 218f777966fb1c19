//! Datagram sockets (UDP, Unix datagram) on a poller: bounded reads per turn, oversize
//! detection, and a bounded reply queue.

use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mio::{Interest, Registry};

use super::poller::{Entry, Poller};
use super::stream::describe_panic;
use super::{Command, PollerShared};
use crate::base::{Addr, SendStatus};
use crate::server::config::Dispatch;
use crate::server::dispatch::Job;
use crate::server::handler::{DatagramHandler, DatagramSender};
use crate::server::ServerShared;
use crate::Error;

/// Datagrams read per readiness event, at most, before the poller moves on.
const MAX_DATAGRAMS_PER_TURN: usize = 256;

/// A datagram socket.
pub(crate) enum DgramSock {
    Udp(mio::net::UdpSocket),
    Unix(mio::net::UnixDatagram),
}

impl DgramSock {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            DgramSock::Udp(s) => s,
            DgramSock::Unix(s) => s,
        }
    }

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Addr)> {
        match self {
            DgramSock::Udp(s) => s.recv_from(buf).map(|(n, a)| (n, Addr::Inet(a))),
            DgramSock::Unix(s) => s
                .recv_from(buf)
                .map(|(n, a)| (n, Addr::Unix(a.as_pathname().map(|p| p.to_path_buf())))),
        }
    }

    fn send_to(&self, data: &[u8], to: &Addr) -> io::Result<usize> {
        match (self, to) {
            (DgramSock::Udp(s), Addr::Inet(a)) => s.send_to(data, *a),
            (DgramSock::Unix(s), Addr::Unix(Some(p))) => s.send_to(data, p),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot send a datagram to {to}"),
            )),
        }
    }
}

/// What handles of a datagram socket share.
pub(crate) struct DatagramShared {
    pub(crate) poller: Arc<PollerShared>,
    pub(crate) slot: u32,
    pub(crate) gen: u32,
    pub(crate) server: Arc<ServerShared>,
    pub(crate) local: Addr,
    pub(crate) key: u64,
    queued: AtomicUsize,
}

impl DatagramSender {
    /// Sends one datagram to `to` (queued when the socket pushes back, within the server's
    /// `max_queued_bytes`; past it the datagram is dropped).
    pub fn send_to(&self, data: &[u8], to: &Addr) -> SendStatus {
        let sh = &self.inner;
        if sh.server.draining.load(Ordering::Acquire) && sh.server.stopped() {
            return SendStatus::Closed;
        }
        let limit = sh.server.config.max_queued_bytes;
        let before = sh.queued.fetch_add(data.len(), Ordering::AcqRel);
        if before > 0 && before + data.len() > limit {
            sh.queued.fetch_sub(data.len(), Ordering::AcqRel);
            sh.server.stats.dropped(1);
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

/// A datagram socket owned by one poller.
pub(crate) struct DatagramSock {
    sock: DgramSock,
    sender: DatagramSender,
    handler: Option<Box<dyn DatagramHandler>>,
    outq: VecDeque<(Vec<u8>, Addr)>,
    writable_interest: bool,
}

impl DatagramSock {
    pub(crate) fn deregister(&mut self, reg: &Registry) -> io::Result<()> {
        reg.deregister(self.sock.source())
    }

    fn shared(&self) -> &DatagramShared {
        &self.sender.inner
    }
}

static NEXT_SOCK_KEY: AtomicUsize = AtomicUsize::new(1);

impl Poller {
    /// Registers a datagram socket of `server` on this poller.
    pub(crate) fn adopt_datagram(
        &mut self,
        sock: DgramSock,
        server: Arc<ServerShared>,
        local: Addr,
    ) -> io::Result<()> {
        let (slot, gen) = self.reserve();
        let shared = Arc::new(DatagramShared {
            poller: self.shared.clone(),
            slot: slot as u32,
            gen,
            server: server.clone(),
            local,
            key: crate::server::dispatch::datagram_key(
                NEXT_SOCK_KEY.fetch_add(1, Ordering::Relaxed) as u64,
            ),
            queued: AtomicUsize::new(0),
        });
        let handler = match server.config.dispatch {
            Dispatch::Inline => Some(server.datagram_factory()?.create()),
            Dispatch::Threads => None,
        };
        let mut d = DatagramSock {
            sock,
            sender: DatagramSender { inner: shared },
            handler,
            outq: VecDeque::new(),
            writable_interest: false,
        };
        self.register(d.sock.source(), slot, gen, Interest::READABLE)?;
        self.entries.insert(Entry::Datagram(Box::new(d)));
        self.datagram_ready(slot as u32, gen, false);
        Ok(())
    }

    fn datagram_mut(&mut self, slot: u32, gen: u32) -> Option<&mut DatagramSock> {
        if self.gen_of(slot as usize)? != gen {
            return None;
        }
        match self.entries.get_mut(slot as usize) {
            Some(Entry::Datagram(d)) => Some(d),
            _ => None,
        }
    }

    /// Readiness on a datagram socket: flush pending replies, read a bounded batch.
    pub(crate) fn datagram_ready(&mut self, slot: u32, gen: u32, writable: bool) {
        if writable {
            self.flush_datagrams(slot, gen);
        }
        for _ in 0..MAX_DATAGRAMS_PER_TURN {
            let mut buf = std::mem::take(&mut self.read_buf);
            let more = self.read_datagram(slot, gen, &mut buf);
            self.read_buf = buf;
            if !more {
                return;
            }
        }
        self.again.push((slot, gen));
    }

    /// Reads and handles one datagram. Returns false when there is nothing more to read.
    fn read_datagram(&mut self, slot: u32, gen: u32, buf: &mut Vec<u8>) -> bool {
        let pool = self.pool.clone();
        let Some(d) = self.datagram_mut(slot, gen) else {
            return false;
        };
        let server = d.shared().server.clone();
        let limit = server.config.max_datagram_size;
        if buf.len() < limit + 1 {
            buf.resize(limit + 1, 0);
        }
        let (n, peer) = match d.sock.recv_from(&mut buf[..limit + 1]) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(e) => {
                server.observer.on_error(None, &e.into());
                return true;
            }
        };
        server.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        server.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        if n > limit {
            let err = Error::DatagramTooLarge { received: n, limit };
            log::debug!("datagram from {peer} dropped: {err}");
            server.observer.on_error(None, &err);
            match &mut d.handler {
                Some(h) => {
                    let _ = catch_unwind(AssertUnwindSafe(|| h.on_error(&err)));
                }
                None if server.config.dispatch == Dispatch::Threads => {
                    if let Ok(factory) = server.datagram_factory() {
                        let job = Job::DatagramError {
                            sender: d.sender.clone(),
                            factory,
                            error: err,
                        };
                        pool.dispatch(d.shared().key, job);
                    }
                }
                None => {}
            }
            return true;
        }
        let data = &buf[..n];
        match &mut d.handler {
            Some(h) => {
                let sender = &d.sender;
                if let Err(p) =
                    catch_unwind(AssertUnwindSafe(|| h.on_datagram(sender, &peer, data)))
                {
                    let msg = describe_panic(&*p);
                    log::error!("datagram handler panicked: {msg}");
                    server.observer.on_error(None, &Error::HandlerPanic(msg));
                }
            }
            None => {
                if let Ok(factory) = server.datagram_factory() {
                    let job = Job::Datagram {
                        sender: d.sender.clone(),
                        factory,
                        peer,
                        data: data.to_vec(),
                    };
                    pool.dispatch(d.shared().key, job);
                }
            }
        }
        true
    }

    pub(crate) fn cmd_send_to(&mut self, slot: u32, gen: u32, data: Vec<u8>, to: Addr) {
        let Some(d) = self.datagram_mut(slot, gen) else {
            return;
        };
        d.outq.push_back((data, to));
        self.flush_datagrams(slot, gen);
    }

    fn flush_datagrams(&mut self, slot: u32, gen: u32) {
        let registry = self.poll.registry();
        let Some(Entry::Datagram(d)) = self.entries.get_mut(slot as usize) else {
            return;
        };
        let server = d.shared().server.clone();
        while let Some((data, to)) = d.outq.front() {
            match d.sock.send_to(data, to) {
                Ok(_) => {
                    server.stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
                    server
                        .stats
                        .bytes_out
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::debug!("datagram to {to} failed: {e}");
                    server.observer.on_error(None, &e.into());
                }
            }
            let (data, _) = d.outq.pop_front().expect("front exists");
            d.shared().queued.fetch_sub(data.len(), Ordering::AcqRel);
        }
        let want = !d.outq.is_empty();
        if want != d.writable_interest {
            d.writable_interest = want;
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let tok = super::poller::token(slot as usize, gen);
            let _ = registry.reregister(d.sock.source(), tok, interest);
        }
    }

    /// Flushes and removes every datagram socket of `server`.
    pub(crate) fn close_datagrams(&mut self, server: &Arc<ServerShared>) {
        let socks: Vec<(u32, u32)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Datagram(d) if Arc::ptr_eq(&d.shared().server, server) => {
                    Some((k as u32, d.shared().gen))
                }
                _ => None,
            })
            .collect();
        for (slot, gen) in socks {
            self.flush_datagrams(slot, gen);
            self.remove_entry(slot as usize);
        }
    }
}
