//! The integration tests: one binary, a module per area, real sockets on port 0.

mod supervise;
mod transports;
mod util;
mod websocket;
