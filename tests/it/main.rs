//! The integration tests: one binary, a module per area, real sockets on port 0.

mod alloc;
mod attacks;
mod browser;
mod budget;
mod cdp;
mod chaos;
mod chat;
mod clients;
mod cluster;
mod core;
mod examples;
mod hub;
mod longpoll;
mod pool;
#[cfg(feature = "redis")]
mod redis_bus;
#[cfg(feature = "redis")]
mod redis_support;
mod std_fit;
mod supervise;
#[cfg(feature = "tracing")]
mod traces;
mod transports;
mod util;
mod websocket;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;
