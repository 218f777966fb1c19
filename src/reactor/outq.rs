//! A connection's outbound queue: whole messages in order, bounded in bytes by the caller.
//!
//! An empty queue is one word and holds no heap memory: its state lives in a box taken
//! from a small per-thread pool (each poller is one thread) when the first message is
//! queued and given back when the last is written, as are the buffers it lets go of, so
//! the echo path allocates nothing per message while idle connections keep no buffers.
//! The same box holds the connection's other rarely present state ([`Extra`]: TLS session,
//! kept input, groups), so that costs an idle connection no word of its own either.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

/// Bytes to send: owned, or shared between many recipients (a broadcast frame).
pub(crate) enum Payload {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Payload {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Owned(v) => v,
            Payload::Shared(a) => a,
        }
    }
}

struct Chunk {
    data: Payload,
    off: usize,
    /// Whether this chunk is one accounted message (false for appended protocol bytes).
    counted: bool,
}

/// Pending output of one connection, and what else it keeps only while it has it
/// ([`Extra`]): one word, and no heap memory while it has neither.
#[derive(Default)]
pub(crate) struct OutQueue(Option<Box<Heap>>);

/// What a connection has on the heap beside its output: the TLS session, input kept
/// between reads (a partial frame or request), fan-out groups. It shares the output
/// queue's box, so an idle plain connection keeps none of it and pays no word for it.
#[derive(Default)]
pub(crate) struct Extra {
    pub(crate) tls: Option<Box<rustls::ServerConnection>>,
    pub(crate) kept: Vec<u8>,
    pub(crate) groups: super::group::Groups,
}

impl Extra {
    fn is_empty(&self) -> bool {
        self.tls.is_none() && self.kept.is_empty() && self.groups.is_empty()
    }
}

/// The box: the queue and the extra (pooled per thread once both are empty).
#[derive(Default)]
struct Heap {
    out: Queue,
    extra: Extra,
}

/// Queued output.
#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    bytes: usize,
}

/// Most iovecs handed to one `writev`.
const MAX_IOV: usize = 64;

/// Spare buffers kept per thread, and the largest kept (bigger ones are freed).
const SPARE_BUFS: usize = 256;
const SPARE_BUF_MAX: usize = 16 << 10;
/// Spare queues kept per thread, and the largest chunk capacity a kept one may have.
const SPARE_QUEUES: usize = 256;
const SPARE_DEQUE_MAX: usize = 16;
/// Capacity of a fresh coalescing buffer.
const TAIL_CAPACITY: usize = 2048;

/// Buffers and queues released by emptied queues on this thread.
#[derive(Default)]
struct Spares {
    bufs: Vec<Vec<u8>>,
    #[allow(clippy::vec_box)] // handed out boxed: reusing a queue allocates nothing
    queues: Vec<Box<Heap>>,
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
}

/// A cleared buffer of at least `min` capacity, recycled when one is spare.
fn take_buf(min: usize) -> Vec<u8> {
    let spare = SPARES
        .try_with(|s| s.borrow_mut().bufs.pop())
        .ok()
        .flatten();
    match spare {
        Some(mut v) => {
            v.reserve(min);
            v
        }
        None => Vec::with_capacity(min.max(TAIL_CAPACITY)),
    }
}

/// Keeps a payload's buffer for reuse when it is owned and small.
fn recycle(p: Payload) {
    if let Payload::Owned(mut v) = p {
        if v.capacity() <= SPARE_BUF_MAX {
            v.clear();
            let _ = SPARES.try_with(|s| {
                let mut s = s.borrow_mut();
                if s.bufs.len() < SPARE_BUFS {
                    s.bufs.push(v);
                }
            });
        }
    }
}

/// An empty box, recycled when one is spare.
fn take_heap() -> Box<Heap> {
    SPARES
        .try_with(|s| s.borrow_mut().queues.pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Gives an emptied box back to the pool (with its chunk storage, if small).
fn release_heap(mut h: Box<Heap>) {
    debug_assert!(h.out.chunks.is_empty() && h.out.bytes == 0 && h.extra.is_empty());
    if h.out.chunks.capacity() > SPARE_DEQUE_MAX {
        h.out.chunks = VecDeque::new();
    }
    let _ = SPARES.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.queues.len() < SPARE_QUEUES {
            s.queues.push(h);
        }
    });
}

impl OutQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |h| h.out.bytes)
    }

    /// The queue, its box made (from the pool) if there is none.
    fn open(&mut self) -> &mut Queue {
        &mut self.0.get_or_insert_with(take_heap).out
    }

    /// Gives the box back to the pool once nothing is queued and no extra is left. Call it
    /// after changing the [`extra`](Self::extra_mut).
    pub(crate) fn settle(&mut self) {
        let empty = |h: &Heap| h.out.chunks.is_empty() && h.extra.is_empty();
        if self.0.as_deref().is_some_and(empty) {
            if let Some(h) = self.0.take() {
                release_heap(h);
            }
        }
    }

    /// The extra, if the box is there.
    pub(crate) fn extra(&self) -> Option<&Extra> {
        self.0.as_deref().map(|h| &h.extra)
    }

    /// The extra, if the box is there (nothing is made).
    pub(crate) fn extra_if(&mut self) -> Option<&mut Extra> {
        self.0.as_deref_mut().map(|h| &mut h.extra)
    }

    /// The extra, its box made if there is none; [`settle`](Self::settle) afterwards.
    pub(crate) fn extra_mut(&mut self) -> &mut Extra {
        &mut self.0.get_or_insert_with(take_heap).extra
    }

    /// Appends bytes. With `keep_boundary` false they are coalesced into an owned tail
    /// chunk (fewer allocations and iovecs); with true they form their own droppable message.
    pub(crate) fn push_bytes(&mut self, data: &[u8], keep_boundary: bool) {
        if !data.is_empty() {
            self.open().push_bytes(data, keep_boundary);
        }
    }

    /// Appends bytes written by `f` into an owned tail chunk (a new one with
    /// `keep_boundary`). Returns how many bytes `f` appended.
    pub(crate) fn append_with(
        &mut self,
        keep_boundary: bool,
        f: impl FnOnce(&mut Vec<u8>),
    ) -> usize {
        let n = self.open().append_with(keep_boundary, f);
        self.settle();
        n
    }

    /// Appends a whole payload without copying.
    pub(crate) fn push(&mut self, data: Payload, counted: bool) {
        if !data.as_slice().is_empty() {
            self.open().push(data, counted);
        }
    }

    /// Drops the oldest whole counted messages not yet started on the wire until the queue
    /// holds at most `limit` bytes. Returns (messages dropped, bytes dropped).
    pub(crate) fn drop_oldest(&mut self, limit: usize) -> (u64, usize) {
        match &mut self.0 {
            Some(h) => h.out.drop_oldest(limit),
            None => (0, 0),
        }
    }

    /// Writes as much as the writer takes, with vectored writes. Returns bytes written;
    /// stops at `WouldBlock` (returned as Ok with what was written before it).
    #[allow(dead_code)] // tests; the reactor uses `flush_some`
    pub(crate) fn flush_to<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        match self.flush_some(w) {
            (_, Some(e)) => Err(e),
            (n, None) => Ok(n),
        }
    }

    /// As [`flush_to`](Self::flush_to), but what was written before an error is returned
    /// with it: those bytes left the queue and must be uncounted all the same.
    pub(crate) fn flush_some<W: Write>(&mut self, w: &mut W) -> (usize, Option<io::Error>) {
        let Some(h) = &mut self.0 else {
            return (0, None);
        };
        let r = h.out.flush_some(w);
        self.settle();
        r
    }

    /// Encrypts queued output with the TLS session in the extra and writes the records;
    /// `done` counts (plaintext taken from the queue, socket bytes written), also when an
    /// error ends it.
    pub(crate) fn flush_tls<W: Write>(
        &mut self,
        sock: &mut W,
        done: &mut (usize, usize),
    ) -> io::Result<()> {
        let Some(h) = self.0.as_deref_mut() else {
            return Ok(());
        };
        let Heap { out, extra } = h;
        let Some(tls) = extra.tls.as_deref_mut() else {
            return Ok(());
        };
        let r = tls_write(tls, out, sock, done);
        self.settle();
        r
    }

    /// Removes `n` written bytes from the front.
    #[cfg(test)]
    pub(crate) fn consume(&mut self, n: usize) {
        if let Some(h) = &mut self.0 {
            h.out.consume(n);
            self.settle();
        }
    }

    /// Drops everything queued (the extra stays); returns the bytes dropped.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.0.as_mut().map_or(0, |h| h.out.clear());
        self.settle();
        n
    }
}

fn tls_write<W: Write>(
    tls: &mut rustls::ServerConnection,
    outq: &mut Queue,
    sock: &mut W,
    done: &mut (usize, usize),
) -> io::Result<()> {
    loop {
        while let Some(front) = outq.front() {
            let n = tls.writer().write(front)?;
            if n == 0 {
                break; // rustls' buffer is full: "would block"
            }
            outq.consume(n);
            done.0 += n;
        }
        if !tls.wants_write() {
            return Ok(());
        }
        while tls.wants_write() {
            match tls.write_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done.1 += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if outq.chunks.is_empty() {
            return Ok(());
        }
    }
}

impl Queue {
    /// Appends bytes. With `keep_boundary` false they are coalesced into an owned tail
    /// chunk (fewer allocations and iovecs); with true they form their own droppable message.
    pub(crate) fn push_bytes(&mut self, data: &[u8], keep_boundary: bool) {
        if data.is_empty() {
            return;
        }
        self.bytes += data.len();
        if !keep_boundary {
            if let Some(Chunk {
                data: Payload::Owned(v),
                counted: false,
                ..
            }) = self.chunks.back_mut()
            {
                v.extend_from_slice(data);
                return;
            }
        }
        let mut v = take_buf(data.len());
        v.extend_from_slice(data);
        self.chunks.push_back(Chunk {
            data: Payload::Owned(v),
            off: 0,
            counted: keep_boundary,
        });
    }

    /// Appends bytes written by `f` into an owned tail chunk (a new one with
    /// `keep_boundary`). Returns how many bytes `f` appended.
    pub(crate) fn append_with(
        &mut self,
        keep_boundary: bool,
        f: impl FnOnce(&mut Vec<u8>),
    ) -> usize {
        let reuse = !keep_boundary
            && matches!(
                self.chunks.back(),
                Some(Chunk {
                    data: Payload::Owned(_),
                    counted: false,
                    ..
                })
            );
        if !reuse {
            let chunk = Chunk {
                data: Payload::Owned(take_buf(0)),
                off: 0,
                counted: keep_boundary,
            };
            self.chunks.push_back(chunk);
        }
        let Some(Chunk {
            data: Payload::Owned(v),
            ..
        }) = self.chunks.back_mut()
        else {
            return 0;
        };
        let before = v.len();
        f(v);
        let n = v.len() - before;
        if v.is_empty() {
            if let Some(c) = self.chunks.pop_back() {
                recycle(c.data);
            }
        }
        self.bytes += n;
        n
    }

    /// Appends a whole payload without copying.
    pub(crate) fn push(&mut self, data: Payload, counted: bool) {
        let n = data.as_slice().len();
        if n == 0 {
            return;
        }
        self.bytes += n;
        self.chunks.push_back(Chunk {
            data,
            off: 0,
            counted,
        });
    }

    /// Drops the oldest whole counted messages not yet started on the wire until the queue
    /// holds at most `limit` bytes. Returns (messages dropped, bytes dropped).
    pub(crate) fn drop_oldest(&mut self, limit: usize) -> (u64, usize) {
        let mut dropped = (0, 0);
        let mut i = 0;
        while self.bytes > limit && i < self.chunks.len() {
            let c = &self.chunks[i];
            if c.off == 0 && c.counted && i + 1 < self.chunks.len() {
                let n = c.data.as_slice().len();
                if let Some(c) = self.chunks.remove(i) {
                    recycle(c.data);
                }
                self.bytes -= n;
                dropped.0 += 1;
                dropped.1 += n;
            } else {
                i += 1;
            }
        }
        dropped
    }

    fn flush_some<W: Write>(&mut self, w: &mut W) -> (usize, Option<io::Error>) {
        let mut total = 0;
        while !self.chunks.is_empty() {
            let n = match self.write_once(w) {
                Ok(0) => return (total, Some(io::ErrorKind::WriteZero.into())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return (total, Some(e)),
            };
            total += n;
            self.consume(n);
        }
        (total, None)
    }

    fn write_once<W: Write>(&self, w: &mut W) -> io::Result<usize> {
        if self.chunks.len() == 1 {
            let c = &self.chunks[0];
            return w.write(&c.data.as_slice()[c.off..]);
        }
        let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        for c in self.chunks.iter().take(MAX_IOV) {
            iov[n] = IoSlice::new(&c.data.as_slice()[c.off..]);
            n += 1;
        }
        w.write_vectored(&iov[..n])
    }

    /// Removes `n` written bytes from the front.
    pub(crate) fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let c = self.chunks.front_mut().expect("consume past queue end");
            let left = c.data.as_slice().len() - c.off;
            if n < left {
                c.off += n;
                return;
            }
            n -= left;
            if let Some(c) = self.chunks.pop_front() {
                recycle(c.data);
            }
        }
    }

    /// The front chunk's unsent bytes (for writers that are not vectored, e.g. TLS).
    pub(crate) fn front(&self) -> Option<&[u8]> {
        self.chunks.front().map(|c| &c.data.as_slice()[c.off..])
    }

    fn clear(&mut self) -> usize {
        let n = self.bytes;
        for c in self.chunks.drain(..) {
            recycle(c.data);
        }
        self.bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Limited {
        out: Vec<u8>,
        cap: usize,
    }
    impl Write for Limited {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.cap == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.cap);
            self.cap -= n;
            self.out.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order() {
        let mut q = OutQueue::default();
        q.push_bytes(b"hello ", true);
        q.push(Payload::Shared(Arc::from(&b"world"[..])), true);
        q.push_bytes(b"!", false);
        let mut w = Limited {
            out: vec![],
            cap: 3,
        };
        assert_eq!(q.flush_to(&mut w).unwrap(), 3);
        assert_eq!(q.len(), 9);
        w.cap = 100;
        q.flush_to(&mut w).unwrap();
        assert_eq!(w.out, b"hello world!");
        assert!(q.is_empty());
    }

    #[test]
    fn drop_oldest_skips_started_and_last() {
        let mut q = OutQueue::default();
        for m in [&b"aaaa"[..], b"bbbb", b"cccc", b"dddd"] {
            q.push_bytes(m, true);
        }
        q.consume(1);
        let (n, bytes) = q.drop_oldest(8);
        assert_eq!((n, bytes), (2, 8));
        let mut w = Limited {
            out: vec![],
            cap: 100,
        };
        q.flush_to(&mut w).unwrap();
        assert_eq!(w.out, b"aaadddd");
    }

    #[test]
    fn an_empty_queue_is_one_word_and_gives_its_state_back() {
        assert_eq!(std::mem::size_of::<OutQueue>(), 8);
        let mut q = OutQueue::default();
        q.push_bytes(b"abc", false);
        assert!(q.0.is_some());
        let mut w = Limited {
            out: vec![],
            cap: 100,
        };
        q.flush_to(&mut w).unwrap();
        assert!(q.0.is_none() && q.is_empty());
        assert_eq!(q.append_with(false, |_| {}), 0);
        assert!(q.0.is_none(), "nothing appended: no state kept");
        q.push_bytes(b"de", true);
        assert_eq!(q.clear(), 2);
        assert!(q.0.is_none());
    }
}
