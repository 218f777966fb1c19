//! The poller thread's local outbox: sends made by inline handlers on the poller that owns
//! the connection skip the command queue and its allocation; the poller applies them right
//! after the handler returns.

use std::cell::{Cell, RefCell};

/// What a local send carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Raw stream bytes.
    Raw,
    /// A message of this opcode, framed by the connection's driver.
    Ws(crate::proto::ws::OpCode),
}

pub(crate) struct LocalOp {
    pub(crate) kind: Kind,
    pub(crate) slot: u32,
    pub(crate) gen: u32,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    ops: Vec<LocalOp>,
}

thread_local! {
    static POLLER: Cell<usize> = const { Cell::new(0) };
    static OUTBOX: RefCell<Outbox> = const {
        RefCell::new(Outbox {
            bytes: Vec::new(),
            ops: Vec::new(),
        })
    };
    /// Whether the outbox holds any op (a plain flag: the poller checks it after every
    /// callback, and most find nothing).
    static PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as the poller with this id.
pub(crate) fn enter(poller: usize) {
    POLLER.with(|p| p.set(poller));
}

/// The id of the poller running on this thread (0: not a poller thread).
pub(crate) fn current() -> usize {
    POLLER.try_with(|p| p.get()).unwrap_or(0)
}

/// Appends the send to the outbox if this thread is the connection's poller.
pub(crate) fn try_send_local(poller: usize, slot: u32, gen: u32, kind: Kind, data: &[u8]) -> bool {
    if current() != poller {
        return false;
    }
    OUTBOX.with(|o| {
        let Ok(mut o) = o.try_borrow_mut() else {
            return false;
        };
        let start = o.bytes.len();
        o.bytes.extend_from_slice(data);
        let end = o.bytes.len();
        o.ops.push(LocalOp {
            kind,
            slot,
            gen,
            start,
            end,
        });
        PENDING.with(|p| p.set(true));
        true
    })
}

/// Moves the outbox's sends to the caller: bytes appended to `bytes`, ops (with offsets
/// into `bytes`) to `ops`. False when the outbox was empty.
pub(crate) fn take(bytes: &mut Vec<u8>, ops: &mut Vec<LocalOp>, base: usize) -> bool {
    OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        if o.ops.is_empty() {
            return false;
        }
        let o = &mut *o;
        if bytes.is_empty() && base == 0 {
            std::mem::swap(&mut o.bytes, bytes);
        } else {
            bytes.extend_from_slice(&o.bytes);
            o.bytes.clear();
        }
        ops.extend(o.ops.drain(..).map(|mut op| {
            op.start += base;
            op.end += base;
            op
        }));
        PENDING.with(|p| p.set(false));
        true
    })
}

/// Whether the outbox holds any send.
#[inline]
pub(crate) fn pending() -> bool {
    PENDING.with(|p| p.get())
}

/// Takes the sends for one connection, in order, leaving the others in the outbox.
pub(crate) fn take_for(slot: u32, gen: u32, mut f: impl FnMut(Kind, &[u8])) {
    if !pending() {
        return;
    }
    OUTBOX.with(|o| {
        let Ok(mut o) = o.try_borrow_mut() else {
            return;
        };
        let o = &mut *o;
        let (mut kept, mut kept_bytes) = (0, 0);
        for i in 0..o.ops.len() {
            let (kind, start, end) = (o.ops[i].kind, o.ops[i].start, o.ops[i].end);
            if o.ops[i].slot == slot && o.ops[i].gen == gen {
                f(kind, &o.bytes[start..end]);
                continue;
            }
            o.bytes.copy_within(start..end, kept_bytes);
            let op = &mut o.ops[i];
            (op.start, op.end) = (kept_bytes, kept_bytes + end - start);
            kept_bytes += end - start;
            o.ops.swap(kept, i);
            kept += 1;
        }
        o.ops.truncate(kept);
        o.bytes.truncate(kept_bytes);
        PENDING.with(|p| p.set(kept > 0));
    })
}
