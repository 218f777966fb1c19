//! The long-polling wire format, sans-IO: records, batches and the query of a polling
//! request (docs/PROTOCOL.md, "Long-polling transport").
//!
//! A record is `TYPE LENGTH ':' PAYLOAD`: one type byte (`t` text, `b` binary, `c` close),
//! the payload's length in bytes as ASCII decimal, a colon, then the payload as it is
//! (binary and text survive unescaped). A close payload is the WebSocket close payload: a
//! 2-byte big-endian code, then the UTF-8 reason. A batch (the body of a GET response) is
//! the sequence number of its first record in ASCII decimal and `\n`, then records; a POST
//! body is records alone.

use std::fmt;

/// Most digits a record length may have (lengths past 10^12 bytes are refused).
const MAX_LEN_DIGITS: usize = 12;

/// What a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Binary,
    Close,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Text => b't',
            Kind::Binary => b'b',
            Kind::Close => b'c',
        }
    }

    fn of(b: u8) -> Option<Self> {
        match b {
            b't' => Some(Kind::Text),
            b'b' => Some(Kind::Binary),
            b'c' => Some(Kind::Close),
            _ => None,
        }
    }
}

/// One decoded record, borrowing its payload. A text payload is valid UTF-8 and a close
/// payload is empty or has a code (checked by [`parse_records`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) kind: Kind,
    pub(crate) payload: &'a [u8],
}

impl<'a> Record<'a> {
    /// The text of a text record (checked valid when parsed).
    pub(crate) fn text(&self) -> &'a str {
        std::str::from_utf8(self.payload).unwrap_or("")
    }

    /// The code and reason of a close record (1005 when it has no code).
    pub(crate) fn close(&self) -> (u16, &'a str) {
        match self.payload {
            [a, b, rest @ ..] => (
                u16::from_be_bytes([*a, *b]),
                std::str::from_utf8(rest).unwrap_or(""),
            ),
            _ => (1005, ""),
        }
    }
}

/// Why bytes are not a valid body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    /// A byte where a record type was expected.
    BadType(u8),
    /// A length that is not decimal digits ended by `:`, or too long.
    BadLength,
    /// The body ends inside a record.
    Truncated,
    /// A text record (or a close reason) that is not UTF-8.
    NotUtf8,
    /// A close payload of one byte.
    BadClose,
    /// A batch without its sequence-number line.
    BadSeq,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadType(b) => write!(f, "unknown record type {:?}", *b as char),
            WireError::BadLength => f.write_str("malformed record length"),
            WireError::Truncated => f.write_str("the body ends inside a record"),
            WireError::NotUtf8 => f.write_str("a text record is not valid UTF-8"),
            WireError::BadClose => f.write_str("a close record of one byte"),
            WireError::BadSeq => f.write_str("a batch must start with its sequence number"),
        }
    }
}

/// Appends one record.
pub(crate) fn write_record(out: &mut Vec<u8>, kind: Kind, payload: &[u8]) {
    out.push(kind.byte());
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(payload);
}

/// Appends a close record with `code` and `reason`.
pub(crate) fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(reason.as_bytes());
    write_record(out, Kind::Close, &p);
}

/// The bytes a record of `len` payload bytes takes on the wire.
pub(crate) fn record_len(len: usize) -> usize {
    2 + decimal_digits(len) + len
}

fn decimal_digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Starts a batch whose first record has sequence number `seq`.
pub(crate) fn write_batch_head(out: &mut Vec<u8>, seq: u64) {
    out.extend_from_slice(seq.to_string().as_bytes());
    out.push(b'\n');
}

/// Decodes a body of records (a POST body, or a batch after its head).
///
/// # Errors
/// The first [`WireError`] found; nothing is delivered from a body that has one.
pub(crate) fn parse_records(mut body: &[u8]) -> Result<Vec<Record<'_>>, WireError> {
    let mut out = Vec::new();
    while let Some((&t, rest)) = body.split_first() {
        let kind = Kind::of(t).ok_or(WireError::BadType(t))?;
        let colon = rest
            .iter()
            .take(MAX_LEN_DIGITS + 1)
            .position(|&b| b == b':')
            .ok_or(match rest.len() <= MAX_LEN_DIGITS {
                true => WireError::Truncated,
                false => WireError::BadLength,
            })?;
        let digits = &rest[..colon];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(WireError::BadLength);
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(WireError::BadLength)?;
        let rest = &rest[colon + 1..];
        if rest.len() < len {
            return Err(WireError::Truncated);
        }
        let (payload, next) = rest.split_at(len);
        check(kind, payload)?;
        out.push(Record { kind, payload });
        body = next;
    }
    Ok(out)
}

fn check(kind: Kind, payload: &[u8]) -> Result<(), WireError> {
    match kind {
        Kind::Text => std::str::from_utf8(payload)
            .map(|_| ())
            .map_err(|_| WireError::NotUtf8),
        Kind::Binary => Ok(()),
        Kind::Close if payload.len() == 1 => Err(WireError::BadClose),
        Kind::Close => std::str::from_utf8(payload.get(2..).unwrap_or(&[]))
            .map(|_| ())
            .map_err(|_| WireError::NotUtf8),
    }
}

/// Decodes a batch: the sequence number of its first record, and its records.
///
/// # Errors
/// [`WireError::BadSeq`] without a head line, or the records' first error.
pub(crate) fn parse_batch(body: &[u8]) -> Result<(u64, Vec<Record<'_>>), WireError> {
    let nl = body
        .iter()
        .take(21)
        .position(|&b| b == b'\n')
        .ok_or(WireError::BadSeq)?;
    let seq = std::str::from_utf8(&body[..nl])
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or(WireError::BadSeq)?;
    Ok((seq, parse_records(&body[nl + 1..])?))
}

/// The message inside server frame(s) encoded once for many recipients (unmasked, not
/// compressed; fragments joined): its opcode byte and payload. `None` when malformed.
pub(crate) fn unframe(frames: &[u8]) -> Option<(u8, std::borrow::Cow<'_, [u8]>)> {
    let mut rest = frames;
    let mut op = None;
    let mut joined: Option<Vec<u8>> = None;
    let mut single: Option<&[u8]> = None;
    while !rest.is_empty() {
        let (fin, code, payload, next) = one_frame(rest)?;
        op.get_or_insert(code);
        match (&mut joined, single) {
            (None, None) => single = Some(payload),
            (None, Some(first)) => {
                let mut v = first.to_vec();
                v.extend_from_slice(payload);
                joined = Some(v);
            }
            (Some(v), _) => v.extend_from_slice(payload),
        }
        rest = next;
        if fin {
            break;
        }
    }
    let op = op?;
    Some(match joined {
        Some(v) => (op, std::borrow::Cow::Owned(v)),
        None => (op, std::borrow::Cow::Borrowed(single.unwrap_or(&[]))),
    })
}

/// One unmasked frame: (fin, opcode, payload, rest).
fn one_frame(b: &[u8]) -> Option<(bool, u8, &[u8], &[u8])> {
    let (&b0, rest) = b.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    let (len, rest) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize,
            &rest[2..],
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?,
            &rest[8..],
        ),
        n => (n as usize, rest),
    };
    if b1 & 0x80 != 0 || rest.len() < len {
        return None;
    }
    Some((b0 & 0x80 != 0, b0 & 0x0f, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_text_binary_and_close() {
        let mut b = Vec::new();
        write_record(&mut b, Kind::Text, "héllo".as_bytes());
        write_record(&mut b, Kind::Binary, &[0, 255, b':', b'\n']);
        write_record(&mut b, Kind::Text, b"");
        write_close(&mut b, 1000, "bye");
        assert!(b.starts_with(b"t6:h\xc3\xa9llob4:\x00\xff:\nt0:c5:\x03\xe8bye"));
        let r = parse_records(&b).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].text(), "héllo");
        assert_eq!(r[1].payload, &[0, 255, b':', b'\n']);
        assert_eq!(r[2].payload, b"");
        assert_eq!(r[3].close(), (1000, "bye"));
        assert_eq!(record_len(6), b"t6:".len() + 6);
        assert_eq!(record_len(10), b"t10:".len() + 10);
    }

    #[test]
    fn malformed_bodies_are_refused_whole() {
        assert_eq!(parse_records(b"x1:a"), Err(WireError::BadType(b'x')));
        assert_eq!(parse_records(b"t:a"), Err(WireError::BadLength));
        assert_eq!(parse_records(b"t-1:a"), Err(WireError::BadLength));
        assert_eq!(parse_records(b"t5:abc"), Err(WireError::Truncated));
        assert_eq!(parse_records(b"t12"), Err(WireError::Truncated));
        assert_eq!(
            parse_records(b"t99999999999999999:"),
            Err(WireError::BadLength)
        );
        assert_eq!(parse_records(b"t2:\xff\xfe"), Err(WireError::NotUtf8));
        assert_eq!(parse_records(b"c1:x"), Err(WireError::BadClose));
        assert_eq!(parse_records(b"t1:at1:"), Err(WireError::Truncated));
        assert_eq!(parse_records(b""), Ok(vec![]));
        assert_eq!(parse_records(b"c0:").unwrap()[0].close(), (1005, ""));
    }

    #[test]
    fn a_batch_carries_its_first_sequence_number() {
        let mut b = Vec::new();
        write_batch_head(&mut b, 17);
        write_record(&mut b, Kind::Text, b"a");
        let (seq, r) = parse_batch(&b).unwrap();
        assert_eq!((seq, r.len(), r[0].text()), (17, 1, "a"));
        assert_eq!(parse_batch(b"7\n").unwrap(), (7, vec![]));
        assert_eq!(parse_batch(b"t1:a"), Err(WireError::BadSeq));
        assert_eq!(parse_batch(b"\nt1:a"), Err(WireError::BadSeq));
    }

    #[test]
    fn shared_frames_are_unframed_whole_or_joined() {
        assert_eq!(
            unframe(&[0x81, 2, b'h', b'i']).unwrap(),
            (1, std::borrow::Cow::Borrowed(&b"hi"[..]))
        );
        let mut long = vec![0x82, 126, 1, 0];
        long.extend(std::iter::repeat_n(7u8, 256));
        let (op, p) = unframe(&long).unwrap();
        assert_eq!((op, p.len()), (2, 256));
        // Fragments: text "ab" + continuation "cd".
        let frags = [0x01, 2, b'a', b'b', 0x80, 2, b'c', b'd'];
        assert_eq!(unframe(&frags).unwrap().1.as_ref(), b"abcd");
        assert!(unframe(&[0x81, 5, b'x']).is_none());
        assert!(unframe(&[0x81, 0x81, 0, 0, 0, 0, b'x']).is_none(), "masked");
    }
}
