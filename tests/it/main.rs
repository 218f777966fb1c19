//! The integration tests: one binary, a module per area, real sockets on port 0.

mod alloc;
mod attacks;
mod browser;
mod cdp;
mod chat;
mod clients;
mod core;
mod hub;
mod longpoll;
mod pool;
mod supervise;
mod transports;
mod util;
mod websocket;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;
