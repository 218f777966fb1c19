//! Blocking clients for scripts: TCP, TLS, UDP, Unix, Unix datagram and WebSocket.
