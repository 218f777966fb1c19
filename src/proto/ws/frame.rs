//! The RFC 6455 frame codec: header parsing and writing, masking, control-frame rules.

use super::WsError;

/// A frame opcode (RFC 6455 5.2). Reserved opcodes are rejected with 1002 when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation = 0,
    /// 0x1: a UTF-8 text message (or its first fragment).
    Text = 1,
    /// 0x2: a binary message (or its first fragment).
    Binary = 2,
    /// 0x8: close.
    Close = 8,
    /// 0x9: ping.
    Ping = 9,
    /// 0xA: pong.
    Pong = 10,
}

impl OpCode {
    /// The opcode for this 4-bit value; `None` for the reserved ones (3–7, 11–15).
    pub const fn from_u8(bits: u8) -> Option<OpCode> {
        match bits {
            0 => Some(OpCode::Continuation),
            1 => Some(OpCode::Text),
            2 => Some(OpCode::Binary),
            8 => Some(OpCode::Close),
            9 => Some(OpCode::Ping),
            10 => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Close, ping and pong are control frames.
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Largest payload of a control frame.
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// Largest frame header: 2 + 8 (64-bit length) + 4 (mask).
#[allow(dead_code)] // the reactor sizes read buffers with it
pub(crate) const MAX_HEADER_LEN: usize = 14;

/// What the receiving side expects of incoming frames.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// A server requires masked frames; a client requires unmasked ones.
    pub expect_masked: bool,
    /// RSV1 is legal only when permessage-deflate was negotiated.
    pub allow_rsv1: bool,
}

/// A parsed, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    /// Bytes taken by the header itself (2 to 14).
    pub header_len: usize,
    /// Payload length as announced (at most 2^63 - 1).
    pub payload_len: u64,
}

/// The result of looking at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// A whole header is present.
    Complete(FrameHeader),
    /// The header is incomplete: at least this many bytes (from the frame start) are needed.
    Partial(usize),
}

/// Parses and validates the frame header at the start of `buf`.
///
/// # Errors
///
/// 1002 for RSV2/RSV3 (or RSV1 without deflate), reserved opcodes, wrong masking, a 64-bit
/// length with its top bit set, and control frames that are fragmented, longer than 125
/// bytes or carry RSV1.
#[inline]
pub(crate) fn parse_header(buf: &[u8], rules: Rules) -> Result<Header, WsError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(Header::Partial(2)),
    };
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + ext + if masked { 4 } else { 0 };
    if buf.len() < header_len {
        return Ok(Header::Partial(header_len));
    }
    let head = FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode: check_bits(b0, masked, rules)?,
        mask: masked.then(|| read_mask(&buf[2 + ext..header_len])),
        header_len,
        payload_len: read_len(len7, &buf[2..2 + ext])?,
    };
    check_control(&head)?;
    Ok(Header::Complete(head))
}

/// Validates reserved bits, the opcode and masking from the first byte.
#[inline]
fn check_bits(b0: u8, masked: bool, rules: Rules) -> Result<OpCode, WsError> {
    if b0 & 0x30 != 0 || (b0 & 0x40 != 0 && !rules.allow_rsv1) {
        return Err(WsError::protocol("reserved bits set"));
    }
    let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(WsError::protocol("reserved opcode"))?;
    if masked != rules.expect_masked {
        return Err(WsError::protocol(if masked {
            "masked frame from server"
        } else {
            "unmasked frame from client"
        }));
    }
    Ok(opcode)
}

#[inline]
fn read_len(len7: u8, ext: &[u8]) -> Result<u64, WsError> {
    match *ext {
        [a, b] => Ok(u64::from(u16::from_be_bytes([a, b]))),
        [a, b, c, d, e, f, g, h] => {
            let n = u64::from_be_bytes([a, b, c, d, e, f, g, h]);
            if n >> 63 != 0 {
                return Err(WsError::protocol("frame length has its top bit set"));
            }
            Ok(n)
        }
        _ => Ok(u64::from(len7)),
    }
}

#[inline]
fn read_mask(bytes: &[u8]) -> [u8; 4] {
    let mut mask = [0; 4];
    mask.copy_from_slice(bytes);
    mask
}

#[inline]
fn check_control(head: &FrameHeader) -> Result<(), WsError> {
    if !head.opcode.is_control() {
        return Ok(());
    }
    if !head.fin {
        return Err(WsError::protocol("fragmented control frame"));
    }
    if head.payload_len > MAX_CONTROL_PAYLOAD as u64 {
        return Err(WsError::protocol("control frame longer than 125 bytes"));
    }
    if head.rsv1 {
        return Err(WsError::protocol("compressed control frame"));
    }
    Ok(())
}

/// Appends a frame header announcing `len` payload bytes, in the shortest length form.
#[inline]
pub(crate) fn write_frame_header(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    len: usize,
    mask: Option<[u8; 4]>,
) {
    let b0 = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.extend_from_slice(&[b0, mask_bit | len as u8]);
    } else if len <= usize::from(u16::MAX) {
        let l = (len as u16).to_be_bytes();
        out.extend_from_slice(&[b0, mask_bit | 126, l[0], l[1]]);
    } else {
        out.extend_from_slice(&[b0, mask_bit | 127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

/// XORs `buf` with `mask`, where `buf` starts `offset` bytes into the masked payload.
/// Works 16 bytes at a time; masking twice restores the input.
#[inline]
pub(crate) fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = mask;
    m.rotate_left(offset & 3);
    let mut wide = [0u8; 16];
    for (i, b) in wide.iter_mut().enumerate() {
        *b = m[i & 3];
    }
    let wide = u128::from_ne_bytes(wide);
    let mut chunks = buf.chunks_exact_mut(16);
    for chunk in &mut chunks {
        let mut word = [0u8; 16];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u128::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Rules = Rules {
        expect_masked: true,
        allow_rsv1: false,
    };
    const CLIENT: Rules = Rules {
        expect_masked: false,
        allow_rsv1: true,
    };

    fn header(buf: &[u8], rules: Rules) -> FrameHeader {
        match parse_header(buf, rules) {
            Ok(Header::Complete(h)) => h,
            other => panic!("expected a header, got {other:?}"),
        }
    }

    fn encoded(len: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame_header(&mut out, true, false, OpCode::Binary, len, mask);
        out
    }

    #[test]
    fn every_length_form_round_trips() {
        let mask = Some([1, 2, 3, 4]);
        for (len, hlen) in [
            (0, 6),
            (125, 6),
            (126, 8),
            (65535, 8),
            (65536, 14),
            (1 << 40, 14),
        ] {
            let buf = encoded(len, mask);
            assert_eq!(buf.len(), hlen, "len {len}");
            let h = header(&buf, SERVER);
            assert_eq!(h.payload_len, len as u64);
            assert_eq!(h.header_len, hlen);
            assert_eq!(h.mask, mask);
            assert!(h.fin && !h.rsv1);
            assert_eq!(h.opcode, OpCode::Binary);
            for n in 0..hlen {
                assert!(matches!(
                    parse_header(&buf[..n], SERVER),
                    Ok(Header::Partial(_))
                ));
            }
        }
        assert_eq!(encoded(300, None).len(), 4);
        assert_eq!(header(&encoded(70000, None), CLIENT).header_len, 10);
    }

    #[test]
    fn partial_reports_needed_bytes() {
        assert_eq!(parse_header(&[], SERVER), Ok(Header::Partial(2)));
        assert_eq!(parse_header(&[0x82, 0xfe], SERVER), Ok(Header::Partial(8)));
        assert_eq!(parse_header(&[0x82, 0x7f], CLIENT), Ok(Header::Partial(10)));
    }

    #[test]
    fn top_bit_of_64_bit_length_is_rejected() {
        let mut buf = vec![0x82, 0x7f];
        buf.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert!(parse_header(&buf, CLIENT).is_err());
    }

    #[test]
    fn masking_rules() {
        let err = |b: &[u8], r| {
            parse_header(b, r)
                .unwrap_err()
                .close_code()
                .unwrap()
                .as_u16()
        };
        assert_eq!(err(&[0x81, 0x00], SERVER), 1002);
        assert_eq!(err(&[0x81, 0x80, 0, 0, 0, 0], CLIENT), 1002);
    }

    #[test]
    fn reserved_bits_and_opcodes() {
        let err = |b: &[u8], r: Rules| parse_header(b, r).is_err();
        for b0 in [0xa1u8, 0x91] {
            assert!(err(&[b0, 0x00], CLIENT), "{b0:x}");
        }
        assert!(err(&[0xc1, 0x80, 0, 0, 0, 0], SERVER));
        assert!(!err(&[0xc1, 0x00], CLIENT));
        for op in [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
            assert!(err(&[0x80 | op, 0x00], CLIENT), "opcode {op}");
            assert_eq!(OpCode::from_u8(op), None);
        }
    }

    #[test]
    fn control_frame_rules() {
        let err = |b: &[u8]| parse_header(b, CLIENT).is_err();
        assert!(err(&[0x09, 0x00]), "fragmented ping");
        assert!(err(&[0x89, 126, 0, 126]), "ping of 126 bytes");
        assert!(!err(&[0x89, 125]));
        assert!(err(&[0xc9, 0x00]), "ping with rsv1");
        assert!(err(&[0x88, 127, 0, 0, 0, 0, 0, 0, 1, 0]));
        assert!(
            !err(&[0x88, 127, 0, 0, 0, 0, 0, 0, 0, 2]),
            "non-minimal length form is tolerated"
        );
        assert!(OpCode::Close.is_control() && !OpCode::Text.is_control());
    }

    #[test]
    fn header_flags_are_written() {
        let mut out = Vec::new();
        write_frame_header(&mut out, false, true, OpCode::Text, 5, None);
        assert_eq!(out, [0x41, 5]);
        let h = header(&out, CLIENT);
        assert!(!h.fin && h.rsv1);
    }

    #[test]
    fn mask_matches_bytewise_reference_at_every_offset() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..100u8).collect();
        for offset in 0..8 {
            for len in [0, 1, 3, 15, 16, 17, 33, 100] {
                let mut fast = data[..len].to_vec();
                apply_mask(&mut fast, mask, offset);
                let slow: Vec<u8> = data[..len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(i + offset) & 3])
                    .collect();
                assert_eq!(fast, slow, "offset {offset} len {len}");
            }
        }
    }

    #[test]
    fn rfc_6455_masked_hello() {
        let mut frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let h = header(&frame, SERVER);
        let mask = h.mask.unwrap();
        apply_mask(&mut frame[6..], mask, 0);
        assert_eq!(&frame[6..], b"Hello");
        let mut split = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (a, b) = split.split_at_mut(2);
        apply_mask(a, mask, 0);
        apply_mask(b, mask, 2);
        assert_eq!(&split, b"Hello");
    }
}
