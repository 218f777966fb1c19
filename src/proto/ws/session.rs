//! Per-connection WebSocket state: decodes frames into messages and encodes messages into
//! frames. Sans-IO: bytes in, messages and bytes out.

use std::sync::Arc;

use flate2::{Compress, Decompress};

use super::deflate::{
    deflate_message, inflate_message, new_compressor, new_decompressor, DeflateParams, Role,
};
use super::frame::{
    apply_mask, parse_header, write_frame_header, FrameHeader, Header, OpCode, Rules,
    MAX_CONTROL_PAYLOAD,
};
use super::utf8::Utf8Validator;
use super::{CloseCode, WsConfig, WsError};

/// A scratch buffer bigger than this is shrunk back after use.
const SHRINK_ABOVE: usize = 1 << 20;
/// What a shrunk scratch buffer keeps.
const KEEP: usize = 64 << 10;

/// A complete message or control frame from the peer, borrowed from the read buffer (or
/// from the scratch when it was fragmented or compressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    /// A whole text message, validated UTF-8.
    Text(&'a str),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A ping: answer with a pong carrying the same bytes.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// The peer sent close (1005 when its close frame had no body). Answer with
    /// [`WsSession::encode_close`] unless already sent; later frames are ignored.
    Close(CloseCode, &'a str),
}

/// What [`WsSession::decode_next`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// The frame is incomplete: keep the bytes; at least this many (from this position)
    /// are needed before anything can be decoded.
    NeedMore(usize),
    /// One frame was consumed; it completed `msg` when that is `Some` (a non-final fragment,
    /// or anything after the peer's close, yields `None`).
    Frame {
        /// The completed message, if any.
        msg: Option<Incoming<'a>>,
        /// Bytes used from the buffer.
        consumed: usize,
    },
}

/// Receive-side scratch shared by all sessions of one poller thread.
#[derive(Default)]
pub(crate) struct RxScratch {
    /// Inflater for peers without context takeover, reset per message (window 15 decodes
    /// every smaller window).
    inflater: Option<Decompress>,
    /// Inflated or reassembled message bytes handed out as `Incoming`.
    buf: Vec<u8>,
}

/// Send-side scratch shared by all sessions of one poller thread.
pub(crate) struct TxScratch {
    /// No-context-takeover compressors, by window bits 9..=15, created on first use.
    deflaters: [Option<Compress>; 7],
    /// Compressed message bytes before framing.
    buf: Vec<u8>,
    /// xorshift64* state for client masks.
    rng: u64,
}

/// Per-poller scratch: the shared no-context-takeover compressor and inflater and reusable
/// buffers. Create one per poller thread; `rx` and `tx` are separate so a message borrowed
/// from `rx` can be answered through `tx`.
pub(crate) struct Scratch {
    /// For decoding.
    pub(crate) rx: RxScratch,
    /// For encoding.
    pub(crate) tx: TxScratch,
}

impl Scratch {
    /// Empty scratch; compressors and buffers are allocated on first use.
    pub(crate) fn new() -> Self {
        Scratch {
            rx: RxScratch::default(),
            tx: TxScratch::new(),
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl TxScratch {
    fn new() -> Self {
        TxScratch {
            deflaters: Default::default(),
            buf: Vec::new(),
            rng: seed(),
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((r >> 32) as u32).to_ne_bytes()
    }

    fn shared_deflater(&mut self, bits: u8, level: u32) -> &mut Compress {
        let slot = usize::from(bits.clamp(9, 15) - 9);
        let c = self.deflaters[slot].get_or_insert_with(|| new_compressor(bits, level));
        c.reset();
        c
    }

    fn take_buf(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf
    }

    fn put_buf(&mut self, buf: Vec<u8>) {
        self.buf = shrunk(buf);
    }
}

/// A non-zero seed for client masks from the system RNG (or the clock if that fails).
fn seed() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        bytes = nanos.to_ne_bytes();
    }
    u64::from_ne_bytes(bytes) | 1
}

fn shrunk(mut buf: Vec<u8>) -> Vec<u8> {
    if buf.capacity() > SHRINK_ABOVE {
        buf.clear();
        buf.shrink_to(KEEP);
    }
    buf
}

/// Largest arrived part of an incomplete text frame checked for invalid UTF-8 early.
const EARLY_UTF8_CHECK: usize = 4 << 10;

/// A message being reassembled from fragments.
struct Fragment {
    opcode: OpCode,
    compressed: bool,
    data: Vec<u8>,
    utf8: Utf8Validator,
}

/// Context-takeover (de)compressors of one connection (created on first use).
#[derive(Default)]
struct DeflateState {
    compress: Option<Compress>,
    decompress: Option<Decompress>,
}

/// What few sessions hold: a message being reassembled, context-takeover (de)compressors.
/// One box, made when the first is needed and freed when neither is left.
#[derive(Default)]
struct Rare {
    frag: Option<Fragment>,
    ctx: DeflateState,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.frag.is_none() && self.ctx.compress.is_none() && self.ctx.decompress.is_none()
    }
}

const CLOSE_SENT: u8 = 1;
const CLOSE_RECEIVED: u8 = 2;

/// How a session should send a frame made by [`encode_shared`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SharedChoice {
    /// Send `plain`.
    Plain,
    /// Send `deflated` when present, else `plain`.
    Deflated,
    /// Context takeover (or client role): `plain` is valid, but [`WsSession::encode`] gives
    /// a better ratio (client sessions must use `encode`, since they mask).
    EncodeYourself,
}

/// A message framed once for many server-side recipients.
#[derive(Debug, Clone)]
#[allow(dead_code)] // read by the reactor's broadcast path
pub(crate) struct SharedFrames {
    /// Uncompressed frame(s), valid for every server session.
    pub plain: Arc<[u8]>,
    /// Compressed with no context takeover and a 15-bit window, for sessions whose
    /// [`WsSession::shared_choice`] is `Deflated`; `None` when not requested or too short.
    pub deflated: Option<Arc<[u8]>>,
}

/// Per-connection receive and send state. 16 bytes; an idle session owns no heap memory.
pub(crate) struct WsSession {
    rare: Option<Box<Rare>>,
    deflate: Option<DeflateParams>,
    role: Role,
    flags: u8,
}

impl WsSession {
    /// A session for an open connection, with the deflate parameters from the handshake.
    pub(crate) fn new(role: Role, deflate: Option<DeflateParams>) -> Self {
        WsSession {
            rare: None,
            deflate,
            role,
            flags: 0,
        }
    }

    /// The negotiated permessage-deflate parameters.
    #[allow(dead_code)]
    pub(crate) fn deflate(&self) -> Option<DeflateParams> {
        self.deflate
    }

    /// Whether we sent a close frame.
    pub(crate) fn close_sent(&self) -> bool {
        self.flags & CLOSE_SENT != 0
    }

    /// Whether the peer's close frame was received.
    pub(crate) fn close_received(&self) -> bool {
        self.flags & CLOSE_RECEIVED != 0
    }

    /// Both closes were exchanged: the TCP connection can be closed.
    #[allow(dead_code)]
    pub(crate) fn is_closed(&self) -> bool {
        self.flags == CLOSE_SENT | CLOSE_RECEIVED
    }

    /// Whether a fragmented message is being reassembled (the session holds heap memory).
    #[allow(dead_code)]
    pub(crate) fn in_message(&self) -> bool {
        self.frag().is_some()
    }

    /// Heap bytes held for a message being reassembled (counted in the runtime's budget).
    pub(crate) fn held_bytes(&self) -> usize {
        self.frag().map_or(0, |f| f.data.capacity())
    }

    fn frag(&self) -> Option<&Fragment> {
        self.rare.as_ref().and_then(|r| r.frag.as_ref())
    }

    fn frag_mut(&mut self) -> Option<&mut Fragment> {
        self.rare.as_mut().and_then(|r| r.frag.as_mut())
    }

    /// The message being reassembled, leaving none (the box goes once nothing is left).
    fn take_frag(&mut self) -> Option<Fragment> {
        let frag = self.rare.as_mut().and_then(|r| r.frag.take());
        if self.rare.as_ref().is_some_and(|r| r.is_empty()) {
            self.rare = None;
        }
        frag
    }

    fn ctx(&mut self) -> &mut DeflateState {
        &mut self.rare.get_or_insert_with(Box::default).ctx
    }

    fn rules(&self) -> Rules {
        Rules {
            expect_masked: self.role == Role::Server,
            allow_rsv1: self.deflate.is_some(),
        }
    }

    /// Decodes every whole frame in `buf`, calling `on_msg` for each message or control
    /// frame, in order. Returns the bytes consumed; a trailing partial frame is left for the
    /// caller to keep and present again with more bytes appended.
    ///
    /// # Errors
    ///
    /// A protocol violation: send [`WsError::close_code`] and close. Messages before the bad
    /// frame were delivered.
    #[allow(dead_code)] // for callers that need not answer between messages
    pub(crate) fn decode(
        &mut self,
        buf: &mut [u8],
        cfg: &WsConfig,
        scratch: &mut Scratch,
        mut on_msg: impl FnMut(Incoming<'_>),
    ) -> Result<usize, WsError> {
        self.decode_while(buf, cfg, scratch, |m| {
            on_msg(m);
            true
        })
    }

    /// As [`decode`](Self::decode), but stops after a message for which `on_msg` returns
    /// false (the rest of `buf` is not consumed: keep it for later).
    pub(crate) fn decode_while(
        &mut self,
        buf: &mut [u8],
        cfg: &WsConfig,
        scratch: &mut Scratch,
        mut on_msg: impl FnMut(Incoming<'_>) -> bool,
    ) -> Result<usize, WsError> {
        let mut pos = 0;
        while pos < buf.len() {
            match self.decode_next(&mut buf[pos..], cfg, &mut scratch.rx)? {
                Decoded::NeedMore(_) => break,
                Decoded::Frame { msg, consumed } => {
                    pos += consumed;
                    if let Some(m) = msg {
                        if !on_msg(m) {
                            break;
                        }
                    }
                }
            }
        }
        Ok(pos)
    }

    /// Decodes the frame at the start of `buf` (unmasking it in place). An unfragmented,
    /// uncompressed message is returned borrowed from `buf`, with no copy.
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode).
    pub(crate) fn decode_next<'b>(
        &mut self,
        buf: &'b mut [u8],
        cfg: &WsConfig,
        rx: &'b mut RxScratch,
    ) -> Result<Decoded<'b>, WsError> {
        if rx.buf.capacity() > SHRINK_ABOVE {
            // A big reassembled message was handed out by the previous call: release it.
            rx.buf = Vec::new();
        }
        if self.close_received() {
            return Ok(match buf.len() {
                0 => Decoded::NeedMore(2),
                n => Decoded::Frame {
                    msg: None,
                    consumed: n,
                },
            });
        }
        let head = match parse_header(buf, self.rules())? {
            Header::Partial(n) => return Ok(Decoded::NeedMore(n)),
            Header::Complete(h) => h,
        };
        self.check_size(&head, cfg)?;
        let total = head.header_len + head.payload_len as usize;
        if buf.len() < total {
            self.check_partial_text(&head, &buf[head.header_len.min(buf.len())..])?;
            return Ok(Decoded::NeedMore(total));
        }
        let payload = &mut buf[head.header_len..total];
        if let Some(mask) = head.mask {
            apply_mask(payload, mask, 0);
        }
        let msg = self.on_frame(&head, payload, cfg, rx)?;
        Ok(Decoded::Frame {
            msg,
            consumed: total,
        })
    }

    /// Fails fast (RFC 6455 8.1) on invalid UTF-8 in the arrived part of an uncompressed
    /// text frame still incomplete, without consuming it. Each arrival re-checks the
    /// prefix, so only prefixes up to [`EARLY_UTF8_CHECK`] bytes are checked; longer ones
    /// are validated when the frame completes.
    fn check_partial_text(&self, head: &FrameHeader, avail: &[u8]) -> Result<(), WsError> {
        if avail.is_empty() || avail.len() > EARLY_UTF8_CHECK || head.rsv1 {
            return Ok(());
        }
        let mut utf8 = match (head.opcode, self.frag()) {
            (OpCode::Text, None) => Utf8Validator::default(),
            (OpCode::Continuation, Some(f)) if f.opcode == OpCode::Text && !f.compressed => f.utf8,
            _ => return Ok(()),
        };
        let mut copy = [0u8; EARLY_UTF8_CHECK];
        let copy = &mut copy[..avail.len()];
        copy.copy_from_slice(avail);
        if let Some(mask) = head.mask {
            apply_mask(copy, mask, 0);
        }
        utf8.feed(copy).map_err(|_| WsError::InvalidUtf8)
    }

    /// 1009 as soon as a header announces too much: no need to buffer the payload first.
    #[inline]
    fn check_size(&self, head: &FrameHeader, cfg: &WsConfig) -> Result<(), WsError> {
        let len = head.payload_len;
        if len > cfg.max_frame_size as u64 {
            return Err(WsError::TooBig {
                size: len,
                limit: cfg.max_frame_size,
            });
        }
        let so_far = match self.frag() {
            Some(f) if head.opcode == OpCode::Continuation => f.data.len() as u64,
            _ => 0,
        };
        let compressed = head.rsv1 || self.frag().is_some_and(|f| f.compressed);
        let limit = if compressed {
            // Compressed input can exceed its output slightly (stored blocks); the exact
            // bound is applied to the inflated bytes.
            cfg.max_message_size
                .saturating_add(cfg.max_message_size >> 6)
        } else {
            cfg.max_message_size
        };
        if so_far + len > limit as u64 {
            return Err(WsError::TooBig {
                size: so_far + len,
                limit: cfg.max_message_size,
            });
        }
        Ok(())
    }

    fn on_frame<'b>(
        &mut self,
        head: &FrameHeader,
        payload: &'b mut [u8],
        cfg: &WsConfig,
        rx: &'b mut RxScratch,
    ) -> Result<Option<Incoming<'b>>, WsError> {
        match head.opcode {
            OpCode::Text | OpCode::Binary => self.on_data(head, payload, cfg, rx),
            OpCode::Continuation => self.on_continuation(head, payload, cfg, rx),
            OpCode::Ping => Ok(Some(Incoming::Ping(payload))),
            OpCode::Pong => Ok(Some(Incoming::Pong(payload))),
            OpCode::Close => {
                let (code, reason) = parse_close(payload)?;
                self.flags |= CLOSE_RECEIVED;
                drop(self.take_frag());
                Ok(Some(Incoming::Close(code, reason)))
            }
        }
    }

    #[inline]
    fn on_data<'b>(
        &mut self,
        head: &FrameHeader,
        payload: &'b mut [u8],
        cfg: &WsConfig,
        rx: &'b mut RxScratch,
    ) -> Result<Option<Incoming<'b>>, WsError> {
        if self.frag().is_some() {
            return Err(WsError::protocol("new message inside a fragmented one"));
        }
        if !head.fin {
            self.start_fragment(head, payload)?;
            return Ok(None);
        }
        if !head.rsv1 {
            return message(head.opcode, payload).map(Some);
        }
        let out = self.inflate(payload, cfg, rx)?;
        message(head.opcode, out).map(Some)
    }

    fn start_fragment(&mut self, head: &FrameHeader, payload: &[u8]) -> Result<(), WsError> {
        let mut frag = Fragment {
            opcode: head.opcode,
            compressed: head.rsv1,
            data: Vec::new(),
            utf8: Utf8Validator::default(),
        };
        frag.push(payload)?;
        self.rare.get_or_insert_with(Box::default).frag = Some(frag);
        Ok(())
    }

    fn on_continuation<'b>(
        &mut self,
        head: &FrameHeader,
        payload: &[u8],
        cfg: &WsConfig,
        rx: &'b mut RxScratch,
    ) -> Result<Option<Incoming<'b>>, WsError> {
        if head.rsv1 {
            return Err(WsError::protocol("RSV1 set on a continuation frame"));
        }
        let frag = self
            .frag_mut()
            .ok_or(WsError::protocol("continuation frame without a message"))?;
        frag.push(payload)?;
        if !head.fin {
            return Ok(None);
        }
        let Some(mut frag) = self.take_frag() else {
            return Ok(None);
        };
        if frag.compressed {
            let out = self.inflate(&frag.data, cfg, rx)?;
            return message(frag.opcode, out).map(Some);
        }
        frag.utf8.finish().map_err(|_| WsError::InvalidUtf8)?;
        rx.buf = std::mem::take(&mut frag.data);
        message(frag.opcode, &rx.buf).map(Some)
    }

    /// Inflates a whole compressed message into the scratch buffer.
    fn inflate<'b>(
        &mut self,
        data: &[u8],
        cfg: &WsConfig,
        rx: &'b mut RxScratch,
    ) -> Result<&'b [u8], WsError> {
        let (no_ctx, bits) = self.deflate.unwrap_or_default().remote(self.role);
        let mut out = shrunk(std::mem::take(&mut rx.buf));
        out.clear();
        let d = if no_ctx {
            let d = rx.inflater.get_or_insert_with(|| new_decompressor(15));
            d.reset(false);
            d
        } else {
            let st = self.ctx();
            st.decompress.get_or_insert_with(|| new_decompressor(bits))
        };
        let result = inflate_message(d, data, &mut out, cfg.max_message_size);
        rx.buf = out;
        result.map(|()| rx.buf.as_slice())
    }

    /// Appends one complete message (as one frame, or fragments of
    /// [`WsConfig::send_fragment_size`]), compressed when deflate was negotiated and the
    /// payload is at least [`min_compress_size`](super::DeflateConfig::min_compress_size).
    /// Client sessions mask with a fresh random mask. Control payloads longer than 125
    /// bytes are truncated; use [`encode_close`](Self::encode_close) for close.
    pub(crate) fn encode(
        &mut self,
        out: &mut Vec<u8>,
        op: OpCode,
        payload: &[u8],
        cfg: &WsConfig,
        tx: &mut TxScratch,
    ) {
        let compress = self.deflate.is_some()
            && !op.is_control()
            && op != OpCode::Continuation
            && payload.len() >= cfg.deflate.min_compress_size;
        if !compress {
            let payload = if op.is_control() {
                &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)]
            } else {
                payload
            };
            return self.frame(out, op, payload, false, cfg, tx);
        }
        let mut z = tx.take_buf();
        self.compress(payload, cfg, tx, &mut z);
        self.frame(out, op, &z, true, cfg, tx);
        tx.put_buf(z);
    }

    fn compress(&mut self, payload: &[u8], cfg: &WsConfig, tx: &mut TxScratch, z: &mut Vec<u8>) {
        let (no_ctx, bits) = self.deflate.unwrap_or_default().local(self.role);
        let level = cfg.deflate.level;
        let c = if no_ctx {
            tx.shared_deflater(bits, level)
        } else {
            let st = self.ctx();
            st.compress
                .get_or_insert_with(|| new_compressor(bits, level))
        };
        deflate_message(c, payload, z);
    }

    #[inline]
    fn frame(
        &self,
        out: &mut Vec<u8>,
        op: OpCode,
        payload: &[u8],
        rsv1: bool,
        cfg: &WsConfig,
        tx: &mut TxScratch,
    ) {
        let masked = self.role == Role::Client;
        match cfg.send_fragment_size {
            Some(n) if payload.len() > n && !op.is_control() => {
                write_fragments(out, op, payload, rsv1, n, &mut || {
                    masked.then(|| tx.next_mask())
                })
            }
            _ => {
                let mask = masked.then(|| tx.next_mask());
                write_frame(out, true, rsv1, op, payload, mask)
            }
        }
    }

    /// Appends a close frame (once: returns `false` and writes nothing if a close was
    /// already sent). `None`, 1005 and 1006 send an empty body; the reason is cut to fit
    /// 123 bytes at a character boundary.
    pub(crate) fn encode_close(
        &mut self,
        out: &mut Vec<u8>,
        code: Option<CloseCode>,
        reason: &str,
        tx: &mut TxScratch,
    ) -> bool {
        if self.close_sent() {
            return false;
        }
        self.flags |= CLOSE_SENT;
        let mut body = [0u8; MAX_CONTROL_PAYLOAD];
        let len = match code.filter(|c| c.is_sendable()) {
            Some(c) => close_body(&mut body, c, reason),
            None => 0,
        };
        let mask = (self.role == Role::Client).then(|| tx.next_mask());
        write_frame(out, true, false, OpCode::Close, &body[..len], mask);
        true
    }

    /// How this session should send frames made by [`encode_shared`].
    #[allow(dead_code)]
    pub(crate) fn shared_choice(&self) -> SharedChoice {
        if self.role == Role::Client {
            return SharedChoice::EncodeYourself;
        }
        match self.deflate.map(|p| p.local(self.role)) {
            None => SharedChoice::Plain,
            Some((true, 15)) => SharedChoice::Deflated,
            Some((true, _)) => SharedChoice::Plain,
            Some((false, _)) => SharedChoice::EncodeYourself,
        }
    }
}

impl Fragment {
    fn push(&mut self, payload: &[u8]) -> Result<(), WsError> {
        if self.opcode == OpCode::Text && !self.compressed {
            self.utf8.feed(payload).map_err(|_| WsError::InvalidUtf8)?;
        }
        self.data.extend_from_slice(payload);
        Ok(())
    }
}

/// The reply code for a peer's close: echo it, or an empty body for 1005.
#[allow(dead_code)]
pub(crate) fn close_reply(received: CloseCode) -> Option<CloseCode> {
    received.is_sendable().then_some(received)
}

#[inline]
fn message(opcode: OpCode, payload: &[u8]) -> Result<Incoming<'_>, WsError> {
    if opcode == OpCode::Text {
        std::str::from_utf8(payload)
            .map(Incoming::Text)
            .map_err(|_| WsError::InvalidUtf8)
    } else {
        Ok(Incoming::Binary(payload))
    }
}

/// Parses a close frame body (RFC 6455 5.5.1, 7.4).
fn parse_close(payload: &[u8]) -> Result<(CloseCode, &str), WsError> {
    match payload {
        [] => Ok((CloseCode::STATUS, "")),
        [_] => Err(WsError::protocol("close frame with a 1-byte body")),
        [a, b, reason @ ..] => {
            let code = CloseCode::from(u16::from_be_bytes([*a, *b]));
            if !code.is_valid_received() {
                return Err(WsError::protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok((code, reason))
        }
    }
}

/// Writes code + reason (cut at a char boundary to fit 125 bytes) into `body`.
fn close_body(body: &mut [u8; MAX_CONTROL_PAYLOAD], code: CloseCode, reason: &str) -> usize {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    body[..2].copy_from_slice(&code.as_u16().to_be_bytes());
    body[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    2 + end
}

/// Appends one frame, masking the payload copy when `mask` is given.
#[inline]
fn write_frame(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    op: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    out.reserve(payload.len() + 14);
    write_frame_header(out, fin, rsv1, op, payload.len(), mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m, 0);
    }
}

/// Appends a message as fragments of `size` bytes (RSV1 on the first only); `mask`
/// supplies each frame's mask.
fn write_fragments(
    out: &mut Vec<u8>,
    op: OpCode,
    payload: &[u8],
    rsv1: bool,
    size: usize,
    mask: &mut dyn FnMut() -> Option<[u8; 4]>,
) {
    let mut chunks = payload.chunks(size.max(1)).peekable();
    let mut first = true;
    while let Some(chunk) = chunks.next() {
        let fin = chunks.peek().is_none();
        let (opcode, rsv) = if first {
            (op, rsv1)
        } else {
            (OpCode::Continuation, false)
        };
        write_frame(out, fin, rsv, opcode, chunk, mask());
        first = false;
    }
}

/// Appends an unmasked message as one frame, or fragments when configured.
fn write_unmasked(out: &mut Vec<u8>, op: OpCode, payload: &[u8], rsv1: bool, cfg: &WsConfig) {
    match cfg.send_fragment_size {
        Some(n) if payload.len() > n && !op.is_control() => {
            write_fragments(out, op, payload, rsv1, n, &mut || None)
        }
        _ => write_frame(out, true, rsv1, op, payload, None),
    }
}

/// Frames a server message once for many recipients: `plain` always, `deflated` too when
/// `compress` is set and the payload reaches the minimum compression size.
#[allow(dead_code)]
pub(crate) fn encode_shared(
    op: OpCode,
    payload: &[u8],
    compress: bool,
    cfg: &WsConfig,
    tx: &mut TxScratch,
) -> SharedFrames {
    let mut plain = Vec::with_capacity(payload.len() + 10);
    write_unmasked(&mut plain, op, payload, false, cfg);
    let deflated = (compress
        && cfg.deflate.enabled()
        && !op.is_control()
        && payload.len() >= cfg.deflate.min_compress_size)
        .then(|| {
            let mut z = tx.take_buf();
            deflate_message(tx.shared_deflater(15, cfg.deflate.level), payload, &mut z);
            let mut framed = Vec::with_capacity(z.len() + 10);
            write_unmasked(&mut framed, op, &z, true, cfg);
            tx.put_buf(z);
            Arc::from(framed)
        });
    SharedFrames {
        plain: Arc::from(plain),
        deflated,
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
