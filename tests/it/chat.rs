//! The chat example's server (`examples/chat.rs`, compiled here as a module) over real
//! WebSocket clients: nicknames, slash commands parsed on the server, rooms, private messages.

#[allow(dead_code)]
#[path = "../../examples/chat.rs"]
pub mod server;
