//! The echo hot path allocates nothing per message: a counting global allocator tracks
//! allocations per thread, and the inline echo handler (which runs on the poller) reads its
//! own thread's count while it echoes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::{Dispatch, Listen, Runtime, ServerConfig, WsConn, WsMessage, WsServerConfig};

use crate::util::WAIT;

/// Counts allocations made by the current thread.
pub struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        let _ = BYTES.try_with(|c| c.set(c.get() + layout.size() as u64));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        let _ = BYTES.try_with(|c| c.set(c.get() + new as u64));
        System.realloc(ptr, layout, new)
    }
}

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

/// Bytes the current thread has allocated so far (never decreases).
pub fn allocated_bytes() -> u64 {
    BYTES.with(|c| c.get())
}

#[test]
fn inline_websocket_echo_allocates_nothing_per_message() {
    const WARMUP: usize = 200;
    const MEASURED: usize = 2000;
    let rt = Runtime::builder().pollers(1).build().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded::<u64>();
    let mut seen = 0usize;
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .config(ServerConfig::new().dispatch(Dispatch::Inline))
        .websocket(
            WsServerConfig::new(),
            sockloop::on_message(move |ws: &WsConn, m: WsMessage<'_>| {
                seen += 1;
                if seen == WARMUP || seen == WARMUP + MEASURED {
                    let _ = tx.send(allocs());
                }
                if let WsMessage::Text(t) = m {
                    let _ = ws.send_text(t);
                }
            }),
        )
        .unwrap();
    let url = format!("ws://{}/", s.local_addr());
    let mut c = WsClient::connect(&url, WsClientOptions::default().deflate(false)).unwrap();
    for i in 0..WARMUP + MEASURED {
        // Mixed sizes, one at a time (each read event carries one message).
        let msg = "m".repeat(16 + (i % 7) * 100);
        c.send_text(&msg).unwrap();
        match c.recv_timeout(WAIT).unwrap() {
            Some(Message::Text(t)) => assert_eq!(t, msg),
            other => panic!("expected the echo, got {other:?}"),
        }
    }
    let before = rx.recv_timeout(WAIT).unwrap();
    let after = rx.recv_timeout(WAIT).unwrap();
    // Amortized growth of a long-lived buffer may show once or twice; one allocation per
    // message (what this guards against) would be thousands.
    assert!(
        after - before <= 5,
        "the poller allocated {} times over {MEASURED} echoed messages",
        after - before
    );
}
