//! Datagram sockets (UDP, Unix datagram) on a poller: bounded reads per turn, oversize
//! detection, and a reply queue. What a datagram means is the socket's
//! [`DatagramDriver`](super::DatagramDriver).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mio::{Interest, Registry};

use super::driver::{DatagramDriver, Policy};
use super::poller::{Entry, Poller};
use super::Place;
use crate::base::Addr;
use crate::Error;

/// Datagrams read per readiness event, at most, before the poller moves on.
const MAX_DATAGRAMS_PER_TURN: usize = 256;

/// A datagram socket.
pub(crate) enum DgramSock {
    Udp(mio::net::UdpSocket),
    Unix(mio::net::UnixDatagram),
}

impl DgramSock {
    /// From a bound, non-blocking std UDP socket.
    pub(crate) fn udp(s: std::net::UdpSocket) -> Self {
        DgramSock::Udp(mio::net::UdpSocket::from_std(s))
    }

    /// From a bound, non-blocking std Unix datagram socket.
    pub(crate) fn unix(s: std::os::unix::net::UnixDatagram) -> Self {
        DgramSock::Unix(mio::net::UnixDatagram::from_std(s))
    }

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

/// A datagram socket to adopt: the socket, its owner's policy, and how to build its
/// driver once its place is known.
pub(crate) struct NewDatagram {
    pub(crate) sock: DgramSock,
    pub(crate) policy: Arc<Policy>,
    #[allow(clippy::type_complexity)]
    pub(crate) make: Box<dyn FnOnce(Place) -> io::Result<Box<dyn DatagramDriver>> + Send>,
}

/// A datagram socket owned by one poller.
pub(crate) struct DatagramSock {
    sock: DgramSock,
    policy: Arc<Policy>,
    driver: Box<dyn DatagramDriver>,
    outq: VecDeque<(Vec<u8>, Addr)>,
    writable_interest: bool,
}

impl DatagramSock {
    pub(crate) fn deregister(&mut self, reg: &Registry) -> io::Result<()> {
        reg.deregister(self.sock.source())
    }

    pub(crate) fn is_of(&self, owner: &Arc<Policy>) -> bool {
        Arc::ptr_eq(&self.policy, owner)
    }
}

impl Poller {
    /// Registers a datagram socket on this poller.
    pub(crate) fn adopt_datagram(&mut self, d: NewDatagram) -> io::Result<()> {
        let place = self.new_other_place();
        let (slot, gen) = (place.slot, place.gen);
        let driver = (d.make)(place)?;
        let mut sock = Box::new(DatagramSock {
            sock: d.sock,
            policy: d.policy,
            driver,
            outq: VecDeque::new(),
            writable_interest: false,
        });
        self.registry().register(
            sock.sock.source(),
            super::poller::token(slot as usize, gen),
            Interest::READABLE,
        )?;
        self.insert_entry(Entry::Datagram(sock));
        self.datagram_ready(slot, gen, false);
        Ok(())
    }

    fn datagram_mut(&mut self, slot: u32, gen: u32) -> Option<&mut DatagramSock> {
        if !self.is_live(slot, gen) {
            return None;
        }
        match self.entry_mut(slot as usize) {
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
            let mut buf = self.take_read_buf();
            let more = self.read_datagram(slot, gen, &mut buf);
            self.put_read_buf(buf);
            if !more {
                return;
            }
        }
        self.push_again(slot, gen);
    }

    /// Reads and handles one datagram. Returns false when there is nothing more to read.
    fn read_datagram(&mut self, slot: u32, gen: u32, buf: &mut Vec<u8>) -> bool {
        let Some(d) = self.datagram_mut(slot, gen) else {
            return false;
        };
        let limit = d.policy.limits.max_datagram_size;
        if buf.len() < limit + 1 {
            buf.resize(limit + 1, 0);
        }
        let (n, peer) = match d.sock.recv_from(&mut buf[..limit + 1]) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(e) => {
                d.driver.on_error(e.into());
                return true;
            }
        };
        let c = &d.policy.counters;
        c.datagrams_in.fetch_add(1, Ordering::Relaxed);
        c.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        c.plain_in.fetch_add(n as u64, Ordering::Relaxed);
        if n > limit {
            let err = Error::DatagramTooLarge { received: n, limit };
            log::debug!("datagram from {peer} dropped: {err}");
            d.driver.on_error(err);
            return true;
        }
        d.driver.on_datagram(&peer, &buf[..n]);
        true
    }

    pub(crate) fn cmd_send_to(&mut self, slot: u32, gen: u32, data: Vec<u8>, to: Addr) {
        let Some(d) = self.datagram_mut(slot, gen) else {
            return;
        };
        d.outq.push_back((data, to));
        self.flush_datagrams(slot, gen);
    }

    pub(crate) fn flush_datagrams(&mut self, slot: u32, gen: u32) {
        self.with_datagram(slot, gen, |d, registry| d.flush(registry, slot, gen));
    }
}

impl DatagramSock {
    fn flush(&mut self, registry: &Registry, slot: u32, gen: u32) {
        let d = self;
        while let Some((data, to)) = d.outq.front() {
            match d.sock.send_to(data, to) {
                Ok(_) => {
                    let c = &d.policy.counters;
                    c.datagrams_out.fetch_add(1, Ordering::Relaxed);
                    c.bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed);
                    c.plain_out.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::debug!("datagram to {to} failed: {e}");
                    d.driver.on_error(e.into());
                }
            }
            let (data, _) = d.outq.pop_front().expect("front exists");
            d.driver.sent(data.len());
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
}
