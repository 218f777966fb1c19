//! permessage-deflate (RFC 7692): offer parsing, negotiation, and bounded (de)compression.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{DeflateConfig, DeflateMode, WsError};

/// The four bytes a sync flush ends with; stripped on send, put back before inflating.
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The extension's name.
const NAME: &str = "permessage-deflate";

/// Which side of the connection this endpoint is (decides masking and deflate roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Accepted the connection: expects masked frames, sends unmasked ones.
    Server,
    /// Opened the connection: expects unmasked frames, masks what it sends.
    Client,
}

/// permessage-deflate parameters agreed in the opening handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window, as a power of two (8..=15; 8 is compressed with 9 and stays
    /// within 256-byte distances).
    pub server_max_window_bits: u8,
    /// The client's LZ77 window, as a power of two (8..=15).
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    fn default() -> Self {
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

impl DeflateParams {
    /// (no context takeover, window bits) for what `role` sends.
    pub(crate) fn local(&self, role: Role) -> (bool, u8) {
        match role {
            Role::Server => (self.server_no_context_takeover, self.server_max_window_bits),
            Role::Client => (self.client_no_context_takeover, self.client_max_window_bits),
        }
    }

    /// (no context takeover, window bits) for what `role` receives.
    pub(crate) fn remote(&self, role: Role) -> (bool, u8) {
        match role {
            Role::Server => self.local(Role::Client),
            Role::Client => self.local(Role::Server),
        }
    }

    /// The `Sec-WebSocket-Extensions` value announcing these parameters.
    pub(crate) fn header_value(
        &self,
        announce_server_bits: bool,
        announce_client_bits: bool,
    ) -> String {
        let mut v = String::from(NAME);
        if self.server_no_context_takeover {
            v.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            v.push_str("; client_no_context_takeover");
        }
        if announce_server_bits {
            v.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        if announce_client_bits {
            v.push_str(&format!(
                "; client_max_window_bits={}",
                self.client_max_window_bits
            ));
        }
        v
    }
}

/// One permessage-deflate offer (or response), validated.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: the parameter without a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// An extension parameter: name and optional (unquoted) value.
type Param<'a> = (&'a str, Option<&'a str>);

/// Every extension in the header values: (name, params).
fn extensions<'a>(values: impl Iterator<Item = &'a str>) -> Vec<(&'a str, Vec<Param<'a>>)> {
    let mut out = Vec::new();
    for value in values {
        for ext in split_unquoted(value, ',') {
            let mut items = split_unquoted(ext, ';').into_iter().map(str::trim);
            let name = items.next().unwrap_or("");
            if name.is_empty() {
                continue;
            }
            let params = items
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                    None => (p, None),
                })
                .collect();
            out.push((name, params));
        }
    }
    out
}

/// Window bits 8..=15 written as plain digits.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|b| (8..=15).contains(b))
}

/// Validates an offer's parameters: no unknown or repeated ones, values where required.
fn parse_offer(params: &[Param<'_>]) -> Option<Offer> {
    let mut o = Offer::default();
    let mut seen = [false; 4];
    for (name, value) in params {
        let slot = match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) => {
                o.server_no_context_takeover = true;
                0
            }
            ("client_no_context_takeover", None) => {
                o.client_no_context_takeover = true;
                1
            }
            ("server_max_window_bits", Some(v)) => {
                o.server_max_window_bits = Some(window_bits(v)?);
                2
            }
            ("client_max_window_bits", v) => {
                o.client_max_window_bits = Some(match v {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                });
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
    }
    Some(o)
}

/// Server side: picks the first acceptable permessage-deflate offer among the
/// `Sec-WebSocket-Extensions` header values, returning the agreed parameters and the
/// response header value. `None` declines compression.
pub(crate) fn negotiate<'a>(
    values: impl Iterator<Item = &'a str>,
    cfg: &DeflateConfig,
) -> Option<(DeflateParams, String)> {
    if !cfg.enabled() {
        return None;
    }
    extensions(values)
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(NAME))
        .find_map(|(_, params)| parse_offer(params))
        .map(|offer| accept_offer(offer, cfg))
}

fn accept_offer(offer: Offer, cfg: &DeflateConfig) -> (DeflateParams, String) {
    let shared = cfg.mode == DeflateMode::NoContextTakeover;
    let server_bits = offer
        .server_max_window_bits
        .map_or(cfg.server_max_window_bits, |b| {
            b.min(cfg.server_max_window_bits)
        });
    let client_bits = match offer.client_max_window_bits {
        Some(v) => v.unwrap_or(15).min(cfg.client_max_window_bits),
        None => 15,
    };
    let params = DeflateParams {
        server_no_context_takeover: offer.server_no_context_takeover || shared,
        client_no_context_takeover: offer.client_no_context_takeover || shared,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
    };
    let announce_client = offer.client_max_window_bits.is_some() && client_bits < 15;
    let value = params.header_value(offer.server_max_window_bits.is_some(), announce_client);
    (params, value)
}

/// Client side: the offer to send.
pub(crate) fn client_offer(cfg: &DeflateConfig) -> String {
    let mut v = String::from(NAME);
    if cfg.mode == DeflateMode::NoContextTakeover {
        v.push_str("; client_no_context_takeover");
    }
    v.push_str("; client_max_window_bits");
    v
}

/// Client side: checks the server's answer to [`client_offer`].
pub(crate) fn client_accept(value: &str, cfg: &DeflateConfig) -> Result<DeflateParams, WsError> {
    let bad = WsError::handshake(101, "invalid permessage-deflate response");
    let exts = extensions(std::iter::once(value));
    let [(name, params)] = exts.as_slice() else {
        return Err(WsError::handshake(
            101,
            "unexpected extensions in the response",
        ));
    };
    if !name.eq_ignore_ascii_case(NAME) {
        return Err(WsError::handshake(
            101,
            "unexpected extension in the response",
        ));
    }
    let o = parse_offer(params).ok_or(bad.clone())?;
    let client_bits = match o.client_max_window_bits {
        Some(None) => return Err(bad),
        Some(Some(b)) => b,
        None => 15,
    };
    Ok(DeflateParams {
        server_no_context_takeover: o.server_no_context_takeover,
        client_no_context_takeover: o.client_no_context_takeover
            || cfg.mode == DeflateMode::NoContextTakeover,
        server_max_window_bits: o.server_max_window_bits.unwrap_or(15),
        client_max_window_bits: client_bits,
    })
}

/// A raw-deflate compressor for `bits` (8 is served with 9: zlib refuses 8 for raw deflate,
/// and its largest distance with a 512-byte window is 250, which a 256-byte window holds).
pub(crate) fn new_compressor(bits: u8, level: u32) -> Compress {
    Compress::new_with_window_bits(Compression::new(level.min(9)), false, bits.clamp(9, 15))
}

/// A raw-inflate decompressor for a peer window of `bits`.
pub(crate) fn new_decompressor(bits: u8) -> Decompress {
    Decompress::new_with_window_bits(false, bits.clamp(9, 15))
}

/// Compresses one whole message into `out` (appending), sync-flushed and without the
/// trailing `00 00 ff ff`.
pub(crate) fn deflate_message(c: &mut Compress, mut input: &[u8], out: &mut Vec<u8>) {
    out.reserve(input.len() / 2 + 32);
    loop {
        let before = c.total_in();
        if c.compress_vec(input, out, FlushCompress::Sync).is_err() {
            break;
        }
        let used = (c.total_in() - before) as usize;
        input = &input[used.min(input.len())..];
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if out.ends_with(&TRAILER) {
        out.truncate(out.len() - TRAILER.len());
    }
}

/// Inflates one message (`input` plus the implied trailer) into `out` (appending), failing
/// with 1009 once `out` would exceed `limit` bytes: memory stays bounded by `limit`.
pub(crate) fn inflate_message(
    d: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), WsError> {
    for part in [input, &TRAILER[..]] {
        inflate_part(d, part, out, limit)?;
    }
    Ok(())
}

fn inflate_part(
    d: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), WsError> {
    loop {
        if out.len() == out.capacity() {
            let room = limit.saturating_add(1).saturating_sub(out.len()).max(1);
            out.reserve_exact(room.min(input.len().saturating_mul(4).max(4 << 10)));
        }
        let (in0, out0) = (d.total_in(), out.len());
        let status = d
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|_| WsError::Inflate)?;
        if out.len() > limit {
            return Err(WsError::TooBig {
                size: out.len() as u64,
                limit,
            });
        }
        let used = (d.total_in() - in0) as usize;
        input = &input[used.min(input.len())..];
        let room_left = out.len() < out.capacity();
        if status == Status::StreamEnd || (input.is_empty() && room_left) {
            return Ok(());
        }
        if used == 0 && out.len() == out0 && room_left {
            return Err(WsError::Inflate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(offer: &str) -> Option<(DeflateParams, String)> {
        negotiate(std::iter::once(offer), &DeflateConfig::default())
    }

    fn server_ctx(offer: &str) -> Option<(DeflateParams, String)> {
        let cfg = DeflateConfig::default().mode(DeflateMode::ContextTakeover);
        negotiate(std::iter::once(offer), &cfg)
    }

    #[test]
    fn default_offer_gets_no_context_takeover_both_ways() {
        let (p, v) = server("permessage-deflate").unwrap();
        assert_eq!(
            v,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(
            (p.server_max_window_bits, p.client_max_window_bits),
            (15, 15)
        );
    }

    #[test]
    fn context_takeover_mode_keeps_context_unless_asked() {
        let (p, v) = server_ctx("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(v, "permessage-deflate");
        assert!(!p.server_no_context_takeover && !p.client_no_context_takeover);
        let (p, v) = server_ctx("permessage-deflate; server_no_context_takeover").unwrap();
        assert_eq!(v, "permessage-deflate; server_no_context_takeover");
        assert!(p.server_no_context_takeover);
    }

    #[test]
    fn window_bits_are_honoured() {
        let (p, v) = server_ctx("permessage-deflate; server_max_window_bits=10").unwrap();
        assert_eq!(p.server_max_window_bits, 10);
        assert_eq!(v, "permessage-deflate; server_max_window_bits=10");
        let (p, v) = server_ctx("permessage-deflate; server_max_window_bits=\"8\"").unwrap();
        assert_eq!(p.server_max_window_bits, 8);
        assert!(v.ends_with("server_max_window_bits=8"));
        let cfg = DeflateConfig::default().client_max_window_bits(10);
        let (p, v) = negotiate(
            std::iter::once("permessage-deflate; client_max_window_bits"),
            &cfg,
        )
        .unwrap();
        assert_eq!(p.client_max_window_bits, 10);
        assert!(v.ends_with("client_max_window_bits=10"));
        let (p, _) = server("permessage-deflate; client_max_window_bits=9").unwrap();
        assert_eq!(p.client_max_window_bits, 9);
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert!(server(bad).is_none(), "{bad}");
        }
        let two = "permessage-deflate; bogus, permessage-deflate; server_max_window_bits=12";
        let (p, _) = server(two).unwrap();
        assert_eq!(p.server_max_window_bits, 12);
        let values = ["foo", "permessage-deflate"];
        assert!(negotiate(values.into_iter(), &DeflateConfig::default()).is_some());
        let off = DeflateConfig::default().mode(DeflateMode::Off);
        assert!(negotiate(std::iter::once("permessage-deflate"), &off).is_none());
    }

    #[test]
    fn client_offer_and_accept() {
        let cfg = DeflateConfig::default();
        assert_eq!(
            client_offer(&cfg),
            "permessage-deflate; client_no_context_takeover; client_max_window_bits"
        );
        let p = client_accept(
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
            &cfg,
        )
        .unwrap();
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(p.client_max_window_bits, 9);
        assert_eq!(p.local(Role::Client), (true, 9));
        assert_eq!(p.remote(Role::Client), (true, 15));
        assert_eq!(p.remote(Role::Server), (true, 9));
        for bad in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=99",
            "permessage-deflate, permessage-deflate",
            "other",
            "permessage-deflate; x=1",
        ] {
            assert!(client_accept(bad, &cfg).is_err(), "{bad}");
        }
        let ctx = DeflateConfig::default().mode(DeflateMode::ContextTakeover);
        assert_eq!(
            client_offer(&ctx),
            "permessage-deflate; client_max_window_bits"
        );
        assert!(
            !client_accept("permessage-deflate", &ctx)
                .unwrap()
                .client_no_context_takeover
        );
    }

    fn round_trip(bits: u8, data: &[u8]) {
        let mut c = new_compressor(bits, 6);
        let mut d = new_decompressor(bits);
        let mut z = Vec::new();
        deflate_message(&mut c, data, &mut z);
        let mut out = Vec::new();
        inflate_message(&mut d, &z, &mut out, data.len()).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn compresses_and_inflates_at_every_window() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for bits in 8..=15 {
            round_trip(bits, &text);
            round_trip(bits, b"");
            round_trip(bits, b"hello hello hello hello");
        }
    }

    #[test]
    fn rfc_7692_hello_example() {
        let mut d = new_decompressor(15);
        let mut out = Vec::new();
        inflate_message(
            &mut d,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            &mut out,
            100,
        )
        .unwrap();
        assert_eq!(out, b"Hello");
        let mut c = new_compressor(15, 6);
        let mut z = Vec::new();
        deflate_message(&mut c, b"Hello", &mut z);
        assert_eq!(z, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    }

    #[test]
    fn bombs_are_cut_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let mut c = new_compressor(15, 9);
        let mut z = Vec::new();
        deflate_message(&mut c, &zeros, &mut z);
        assert!(z.len() < 20 << 10);
        let mut d = new_decompressor(15);
        let mut out = Vec::new();
        let err = inflate_message(&mut d, &z, &mut out, 1 << 20).unwrap_err();
        assert!(matches!(err, WsError::TooBig { .. }));
        assert!(
            out.capacity() <= (1 << 20) + (64 << 10),
            "{}",
            out.capacity()
        );
    }

    #[test]
    fn garbage_is_an_inflate_error() {
        let mut d = new_decompressor(15);
        let mut out = Vec::new();
        assert_eq!(
            inflate_message(&mut d, &[0xff; 16], &mut out, 1000),
            Err(WsError::Inflate)
        );
    }
}
