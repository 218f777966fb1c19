//! WebSocket configuration: limits, permessage-deflate, timeouts and heartbeats.

use std::time::Duration;

/// How permessage-deflate (RFC 7692) is offered and accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeflateMode {
    /// Never negotiate compression.
    Off,
    /// Negotiate with `server_no_context_takeover` and `client_no_context_takeover`: every
    /// message is compressed on its own, so one compressor and one decompressor per poller
    /// thread serve every connection and an idle connection holds no compression state.
    /// The default: low memory, slightly lower ratio.
    NoContextTakeover,
    /// Keep the LZ77 window between messages (better ratio on similar messages) at the cost
    /// of a compressor and a decompressor per connection (hundreds of KiB each, allocated on
    /// first use). Peers that ask for no context takeover still get it.
    ContextTakeover,
}

/// permessage-deflate settings.
///
/// # Examples
///
/// ```
/// use sockloop::ws::{DeflateConfig, DeflateMode};
///
/// let d = DeflateConfig::default().mode(DeflateMode::ContextTakeover).min_compress_size(256);
/// assert_eq!(d.level, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Whether and how compression is negotiated. Default: [`DeflateMode::NoContextTakeover`].
    pub mode: DeflateMode,
    /// Messages shorter than this are sent uncompressed (compressing them costs more than it
    /// saves). Default: 64 bytes.
    pub min_compress_size: usize,
    /// zlib compression level, 0 (store) to 9 (best). Default: 1 (fastest), since this runs
    /// on the poller thread.
    pub level: u32,
    /// The largest LZ77 window (as a power of two, 9..=15) this side compresses with; a peer
    /// may ask for less with `server_max_window_bits` (8 is served with 9, which zlib and
    /// RFC 7692 decoders accept since distances stay under 256). Default: 15.
    pub server_max_window_bits: u8,
    /// The window (9..=15) a server asks the client to compress with when the client offers
    /// `client_max_window_bits`; smaller saves per-connection memory in context-takeover
    /// mode. Default: 15 (no request).
    pub client_max_window_bits: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            mode: DeflateMode::NoContextTakeover,
            min_compress_size: 64,
            level: 1,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

impl DeflateConfig {
    /// Sets [`mode`](Self::mode).
    pub fn mode(mut self, mode: DeflateMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`min_compress_size`](Self::min_compress_size).
    pub fn min_compress_size(mut self, bytes: usize) -> Self {
        self.min_compress_size = bytes;
        self
    }

    /// Sets [`level`](Self::level) (clamped to 0..=9).
    pub fn level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Sets [`server_max_window_bits`](Self::server_max_window_bits) (clamped to 9..=15).
    pub fn server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = bits.clamp(9, 15);
        self
    }

    /// Sets [`client_max_window_bits`](Self::client_max_window_bits) (clamped to 9..=15).
    pub fn client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits.clamp(9, 15);
        self
    }

    /// Whether compression is negotiated at all.
    pub fn enabled(&self) -> bool {
        self.mode != DeflateMode::Off
    }
}

/// WebSocket settings for a server or a client.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sockloop::ws::WsConfig;
///
/// let cfg = WsConfig::default()
///     .max_message_size(1 << 20)
///     .ping_interval(Some(Duration::from_secs(15)))
///     .idle_timeout(None);
/// assert_eq!(cfg.max_frame_size, 16 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// Largest frame payload accepted; a bigger frame is answered with 1009 as soon as its
    /// header arrives. Default: 16 MiB (`16 << 20`).
    pub max_frame_size: usize,
    /// Largest message accepted, summed over fragments and measured after decompression
    /// (which bounds decompression bombs); more is answered with 1009.
    /// Default: 16 MiB (`16 << 20`).
    pub max_message_size: usize,
    /// Outgoing messages longer than this are split into fragments of this size; `None`
    /// sends every message as one frame. Default: `None`.
    pub send_fragment_size: Option<usize>,
    /// permessage-deflate settings. Default: [`DeflateConfig::default`] (on, no context
    /// takeover, shared per-poller compressor).
    pub deflate: DeflateConfig,
    /// Subprotocols a server accepts, in order of preference (the first one the client also
    /// offers is chosen). Default: none (no `Sec-WebSocket-Protocol` in the answer).
    pub subprotocols: Vec<String>,
    /// Time allowed from accept (or connect) to a completed opening handshake; a slow or
    /// silent peer is cut then (slowloris defence). Default: 10 s.
    pub handshake_timeout: Duration,
    /// Time allowed for the peer's close frame after ours before the socket is closed
    /// anyway. Default: 5 s.
    pub close_timeout: Duration,
    /// Interval between pings sent on a quiet connection; `None` sends none.
    /// Default: `Some(30 s)`.
    pub ping_interval: Option<Duration>,
    /// Time allowed for a pong (or any frame) after a ping; then the connection is closed
    /// (1001 is sent when possible). Default: 10 s.
    pub pong_timeout: Duration,
    /// A connection that receives nothing for this long is closed with 1001; `None` never
    /// times out for silence (heartbeats still detect dead peers). Default: `None`.
    pub idle_timeout: Option<Duration>,
    /// Largest HTTP request head (request line plus headers) for the upgrade; more is
    /// answered with 431. Default: 8 KiB (`8 << 10`).
    pub max_request_size: usize,
    /// Time allowed for a message to complete once its first byte arrived (a frame, or a
    /// fragmented message); then the connection is closed with 1008, so a peer cannot hold
    /// a partial message (and its buffer) forever. Default: 30 s.
    pub message_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            send_fragment_size: None,
            deflate: DeflateConfig::default(),
            subprotocols: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
            idle_timeout: None,
            max_request_size: 8 << 10,
            message_timeout: Duration::from_secs(30),
        }
    }
}

impl WsConfig {
    /// Sets [`max_frame_size`](Self::max_frame_size).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`max_message_size`](Self::max_message_size).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`send_fragment_size`](Self::send_fragment_size) (`Some(0)` means `None`).
    pub fn send_fragment_size(mut self, bytes: Option<usize>) -> Self {
        self.send_fragment_size = bytes.filter(|n| *n > 0);
        self
    }

    /// Sets [`deflate`](Self::deflate).
    pub fn deflate(mut self, deflate: DeflateConfig) -> Self {
        self.deflate = deflate;
        self
    }

    /// Sets [`subprotocols`](Self::subprotocols).
    pub fn subprotocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`close_timeout`](Self::close_timeout).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`ping_interval`](Self::ping_interval).
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets [`pong_timeout`](Self::pong_timeout).
    pub fn pong_timeout(mut self, timeout: Duration) -> Self {
        self.pong_timeout = timeout;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`message_timeout`](Self::message_timeout).
    pub fn message_timeout(mut self, timeout: Duration) -> Self {
        self.message_timeout = timeout;
        self
    }

    /// Sets [`max_request_size`](Self::max_request_size).
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = bytes;
        self
    }

    /// The HTTP limits for the upgrade request (no body is expected).
    pub fn http_limits(&self) -> crate::proto::http::HttpLimits {
        crate::proto::http::HttpLimits::default()
            .max_head(self.max_request_size)
            .max_body(self.max_request_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let c = WsConfig::default();
        assert_eq!(c.max_frame_size, 16 << 20);
        assert_eq!(c.max_message_size, 16 << 20);
        assert_eq!(c.deflate.mode, DeflateMode::NoContextTakeover);
        assert_eq!(c.deflate.min_compress_size, 64);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.close_timeout, Duration::from_secs(5));
        assert_eq!(c.ping_interval, Some(Duration::from_secs(30)));
        assert_eq!(c.pong_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.max_request_size, 8 << 10);
        assert_eq!(c.http_limits().max_head, 8 << 10);
    }

    #[test]
    fn setters_clamp_and_chain() {
        let d = DeflateConfig::default()
            .level(42)
            .server_max_window_bits(3)
            .client_max_window_bits(99)
            .mode(DeflateMode::Off);
        assert_eq!(
            (d.level, d.server_max_window_bits, d.client_max_window_bits),
            (9, 9, 15)
        );
        assert!(!d.enabled());
        let c = WsConfig::default()
            .send_fragment_size(Some(0))
            .subprotocols(["chat"])
            .close_timeout(Duration::from_secs(1))
            .pong_timeout(Duration::from_secs(2))
            .handshake_timeout(Duration::from_secs(3))
            .max_request_size(1)
            .max_frame_size(2)
            .deflate(d);
        assert_eq!(c.send_fragment_size, None);
        assert_eq!(c.subprotocols, ["chat"]);
        assert_eq!(c.max_frame_size, 2);
    }
}
