//! The poller thread's local outbox: sends made by inline handlers on the poller that owns
//! the connection skip the command queue and its allocation; the poller applies them right
//! after the handler returns.

use std::cell::RefCell;

use crate::server::handle::ConnShared;

/// What a local send carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Raw stream bytes.
    Raw,
    /// A WebSocket message of this opcode, framed by the poller.
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
pub(crate) struct Outbox {
    poller: usize,
    pub(crate) bytes: Vec<u8>,
    pub(crate) ops: Vec<LocalOp>,
}

thread_local! {
    static OUTBOX: RefCell<Outbox> = RefCell::new(Outbox::default());
}

/// Marks this thread as the poller with this id.
pub(crate) fn enter(poller: usize) {
    OUTBOX.with(|o| o.borrow_mut().poller = poller);
}

/// Appends the send to the outbox if this thread is the connection's poller.
pub(crate) fn try_send_local(conn: &ConnShared, kind: Kind, data: &[u8]) -> bool {
    OUTBOX.with(|o| {
        let Ok(mut o) = o.try_borrow_mut() else {
            return false;
        };
        if o.poller != conn.poller.id {
            return false;
        }
        let start = o.bytes.len();
        o.bytes.extend_from_slice(data);
        let end = o.bytes.len();
        o.ops.push(LocalOp {
            kind,
            slot: conn.slot,
            gen: conn.gen,
            start,
            end,
        });
        true
    })
}

/// Swaps the outbox's contents with the caller's (empty) buffers. False when it was empty.
pub(crate) fn swap(bytes: &mut Vec<u8>, ops: &mut Vec<LocalOp>) -> bool {
    OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        if o.ops.is_empty() {
            return false;
        }
        let o = &mut *o;
        std::mem::swap(&mut o.bytes, bytes);
        std::mem::swap(&mut o.ops, ops);
        true
    })
}
