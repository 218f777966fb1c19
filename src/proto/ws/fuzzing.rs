//! Thin wrappers over crate-private parsers for the fuzz targets in `fuzz/`. Not an API.

use super::deflate::{inflate_message, new_decompressor, DeflateParams, Role};
use super::session::{Decoded, Scratch, WsSession};
use super::WsConfig;
use crate::proto::http::{parse_request, HttpLimits, ParseOutcome};

/// Decodes `data` as frames from a client (and, again, from a server), with deflate
/// negotiated when `deflate` is set: once as one buffer, and once arriving in pieces of
/// `chunk` bytes re-presented like the reactor does. Both must agree.
/// Returns the number of messages decoded.
pub fn decode_frames(data: &[u8], deflate: bool, chunk: usize) -> usize {
    let mut count = 0;
    for role in [Role::Server, Role::Client] {
        let whole = run(data, role, deflate, data.len().max(1));
        let pieces = run(data, role, deflate, chunk.max(1));
        assert_eq!(whole, pieces, "chunked decoding disagrees");
        count += whole.0;
    }
    count
}

/// (messages, failed) for `data` delivered `chunk` bytes at a time.
fn run(data: &[u8], role: Role, deflate: bool, chunk: usize) -> (usize, bool) {
    let cfg = WsConfig::default()
        .max_message_size(1 << 20)
        .max_frame_size(1 << 20);
    let mut scratch = Scratch::new();
    let mut session = WsSession::new(role, deflate.then(DeflateParams::default));
    let mut buf = Vec::new();
    let mut count = 0;
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        let mut pos = 0;
        while pos < buf.len() {
            let left = buf.len() - pos;
            match session.decode_next(&mut buf[pos..], &cfg, &mut scratch.rx) {
                Ok(Decoded::Frame { msg, consumed }) => {
                    assert!(consumed > 0 && consumed <= left);
                    count += usize::from(msg.is_some());
                    pos += consumed;
                }
                Ok(Decoded::NeedMore(n)) => {
                    assert!(n > left);
                    break;
                }
                Err(e) => {
                    assert!(e.close_code().is_some());
                    return (count, true);
                }
            }
        }
        buf.drain(..pos);
    }
    (count, false)
}

/// Inflates `data` as one permessage-deflate message bounded to `limit` bytes; returns the
/// inflated length, or `None` on error.
pub fn inflate(data: &[u8], limit: usize) -> Option<usize> {
    let mut d = new_decompressor(15);
    let mut out = Vec::new();
    inflate_message(&mut d, data, &mut out, limit).ok()?;
    assert!(out.len() <= limit);
    Some(out.len())
}

/// Parses `data` as an HTTP request with small limits; returns the bytes consumed when a
/// request was complete.
pub fn parse_http(data: &[u8]) -> Option<usize> {
    let limits = HttpLimits::default().max_head(4 << 10).max_body(16 << 10);
    match parse_request(data, &limits) {
        ParseOutcome::Complete { request, consumed } => {
            assert!(consumed <= data.len());
            let _ = (
                request.path(),
                request.query_param("a"),
                request.cookie("b"),
            );
            let _ = super::handshake::is_upgrade(&request);
            let mut out = Vec::new();
            let _ = super::handshake::accept(&request, &WsConfig::default(), &[], &mut out);
            Some(consumed)
        }
        ParseOutcome::Partial | ParseOutcome::Error { .. } => None,
    }
}
