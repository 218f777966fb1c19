//! What one idle WebSocket connection holds in user space, allocation by allocation: the
//! table the idle-memory bench prints beside the RSS it measures (issue 16).

use crate::reactor::stream::{Stream, StreamConn};
use crate::server::handle::ConnShared;
use crate::server::ws_driver::WsDriver;

/// The size glibc's malloc gives a request of `n` bytes on a 64-bit system: `n` plus its
/// 8-byte header, rounded up to 16, at least 32.
pub fn malloc_chunk(n: usize) -> usize {
    ((n + 8 + 15) & !15).max(32)
}

/// One row of [`idle_ws_sizes`].
#[derive(Debug, Clone)]
pub struct SizeRow {
    /// What it is.
    pub what: &'static str,
    /// Its bytes (`size_of`).
    pub bytes: usize,
    /// What it takes of the process's memory: its malloc chunk when it is an allocation of
    /// its own, else its bytes (a slot in an array).
    pub takes: usize,
}

/// The slab's slot for a connection: a free-list index or the connection's box (the
/// `slab` crate's own entry type is private; this is its shape).
#[allow(dead_code)]
enum SlabSlot {
    Vacant(usize),
    Occupied(Box<Stream>),
}

/// What an idle WebSocket connection of an inline server holds, allocation by allocation
/// (64-bit, release build sizes). Growth slack of the slab's and the timer heap's arrays is
/// not counted (amortized: up to twice the slots).
pub fn idle_ws_sizes() -> Vec<SizeRow> {
    let conn = std::mem::size_of::<StreamConn<WsDriver>>();
    // An `Arc` allocation: its two counts, then the value.
    let shared = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<ConnShared>();
    let slot = std::mem::size_of::<SlabSlot>();
    let timer = std::mem::size_of::<std::cmp::Reverse<crate::reactor::timer::Timer>>();
    vec![
        SizeRow {
            what: "the connection (reactor state, WebSocket driver, handler slot), boxed",
            bytes: conn,
            takes: malloc_chunk(conn),
        },
        SizeRow {
            what: "the shared handle (Arc: link, counters, id, server, peer address)",
            bytes: shared,
            takes: malloc_chunk(shared),
        },
        SizeRow {
            what: "the poller's slab slot",
            bytes: slot,
            takes: slot,
        },
        SizeRow {
            what: "the slot's generation",
            bytes: 4,
            takes: 4,
        },
        SizeRow {
            what: "the connection's timer entry (heartbeat and idle deadline)",
            bytes: timer,
            takes: timer,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_like_glibc() {
        assert_eq!(
            [1, 24, 25, 40, 88, 96, 120, 136].map(malloc_chunk),
            [32, 32, 48, 48, 96, 112, 128, 144]
        );
        let rows = idle_ws_sizes();
        assert_eq!(rows.len(), 5);
        assert!(rows.iter().all(|r| r.takes >= r.bytes && r.bytes > 0));
    }
}
