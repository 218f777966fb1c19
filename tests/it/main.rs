//! The integration tests: one binary, a module per area, real sockets on port 0.

mod clients;
mod transports;
mod util;
mod websocket;
