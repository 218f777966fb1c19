//! Standard base64 (RFC 4648, with padding), just what the handshake needs.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data` with `=` padding.
pub(crate) fn encode(data: &[u8]) -> String {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    encode_to(data, &mut out);
    // Only alphabet bytes and `=`: always ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends the padded encoding of `data` to `out` (the handshake writes its accept key
/// straight into the response).
pub(crate) fn encode_to(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(match i <= chunk.len() {
                true => ALPHABET[(n >> (18 - 6 * i) & 63) as usize],
                false => b'=',
            });
        }
    }
}

/// The value of one alphabet byte (a match, not a search of the alphabet: the handshake
/// decodes every key).
fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes padded base64; `None` for any malformed input (including non-zero pad bits).
#[cfg(test)]
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    decode_with(text, |b| out.extend_from_slice(b))?;
    Some(out)
}

/// The length `text` decodes to, checked as [`decode`] checks it, without keeping the
/// bytes (the handshake only needs a key's length).
pub(crate) fn decoded_len(text: &str) -> Option<usize> {
    let mut n = 0;
    decode_with(text, |b| n += b.len())?;
    Some(n)
}

/// Decodes `text`, handing each group's bytes to `put`.
fn decode_with(text: &str, mut put: impl FnMut(&[u8])) -> Option<()> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let quads = bytes.len() / 4;
    for (q, chunk) in bytes.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && q + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        if decoded[3 - pad..].iter().any(|&b| b != 0) {
            return None;
        }
        put(&decoded[..3 - pad]);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_decodes_to_its_alphabet_position() {
        for c in 0..=255u8 {
            let pos = ALPHABET.iter().position(|&a| a == c).map(|p| p as u32);
            assert_eq!(value(c), pos, "byte {c}");
        }
    }

    #[test]
    fn rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in cases {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).unwrap(), plain.as_bytes());
            assert_eq!(decoded_len(coded), Some(plain.len()));
            let mut to = b"x".to_vec();
            encode_to(plain.as_bytes(), &mut to);
            assert_eq!(&to[1..], coded.as_bytes());
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["Zg=", "Z===", "Zh==", "Zg==Zg==", "Z!==", "Zm9v\n", "=Zm9"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }
}
