//! `Transfer-Encoding: chunked` bodies (RFC 9112 7.1), bounded by the body and head limits.

use super::HttpLimits;

/// What [`decode_chunked`] found.
pub(super) enum Chunked {
    /// More bytes are needed.
    Partial,
    /// The whole body, and how many bytes (chunks, last chunk, trailers) it used.
    Complete { body: Vec<u8>, consumed: usize },
}

/// Decodes a chunked body from `buf` (the bytes after the head). Errors are HTTP statuses:
/// 400 malformed, 413 body over `max_body`, 431 trailers over `max_head`.
pub(super) fn decode_chunked(buf: &[u8], limits: &HttpLimits) -> Result<Chunked, u16> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let (start, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete((n, size))) => (pos + n, size),
            Ok(httparse::Status::Partial) => return Ok(Chunked::Partial),
            Err(_) => return Err(400),
        };
        if size == 0 {
            return trailers(buf, start, limits, body);
        }
        let size = usize::try_from(size).map_err(|_| 413u16)?;
        if size > limits.max_body.saturating_sub(body.len()) {
            return Err(413);
        }
        let end = start + size;
        match buf.get(end..end + 2) {
            None => return Ok(Chunked::Partial),
            Some(b"\r\n") => {}
            Some(_) => return Err(400),
        }
        body.extend_from_slice(&buf[start..end]);
        pos = end + 2;
    }
}

/// Skips the trailer section (header lines up to an empty line) after the last chunk.
fn trailers(
    buf: &[u8],
    mut pos: usize,
    limits: &HttpLimits,
    body: Vec<u8>,
) -> Result<Chunked, u16> {
    let start = pos;
    loop {
        let Some(eol) = find_crlf(&buf[pos..]) else {
            if buf.len() - start > limits.max_head {
                return Err(431);
            }
            return Ok(Chunked::Partial);
        };
        let line_end = pos + eol;
        pos = line_end + 2;
        if line_end - start > limits.max_head {
            return Err(431);
        }
        if eol == 0 {
            return Ok(Chunked::Complete {
                body,
                consumed: pos,
            });
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(buf: &[u8]) -> Result<Chunked, u16> {
        decode_chunked(buf, &HttpLimits::default())
    }

    #[test]
    fn empty_body() {
        match run(b"0\r\n\r\n") {
            Ok(Chunked::Complete { body, consumed }) => {
                assert!(body.is_empty());
                assert_eq!(consumed, 5);
            }
            _ => panic!("expected complete"),
        }
    }

    #[test]
    fn bad_chunks() {
        assert_eq!(run(b"zz\r\n").err(), Some(400));
        assert_eq!(run(b"2\r\nabXY0\r\n\r\n").err(), Some(400));
        let huge = b"ffffffffffffffff\r\n";
        assert_eq!(run(huge).err(), Some(413));
        let limits = HttpLimits::default().max_body(3);
        let over = b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n";
        assert_eq!(decode_chunked(over, &limits).err(), Some(413));
    }

    #[test]
    fn trailer_limit() {
        let limits = HttpLimits::default().max_head(8);
        let long = b"0\r\nX-Long-Trailer: value\r\n\r\n";
        assert_eq!(decode_chunked(long, &limits).err(), Some(431));
        let unterminated = b"0\r\nX-Long-Trailer-Without-End";
        assert_eq!(decode_chunked(unterminated, &limits).err(), Some(431));
    }
}
