//! Blocking clients for scripts: TCP, TLS, UDP, Unix, Unix datagram and WebSocket.
pub mod ws;
