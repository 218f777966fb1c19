//! The poller thread's local outbox: sends made by inline handlers on the poller that owns
//! the connection skip the command queue and its allocation; the poller applies them right
//! after the handler returns.

use std::cell::RefCell;

use crate::handle::ConnShared;

pub(crate) struct LocalOp {
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
pub(crate) fn try_send_local(conn: &ConnShared, data: &[u8]) -> bool {
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
            slot: conn.slot,
            gen: conn.gen,
            start,
            end,
        });
        true
    })
}

/// Hands the outbox to `f` if it holds anything, then empties it (keeping its capacity).
pub(crate) fn drain(mut f: impl FnMut(&Outbox)) {
    OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        if o.ops.is_empty() {
            return;
        }
        f(&o);
        o.ops.clear();
        o.bytes.clear();
    })
}
