//! [`ReplyEnd`]: where a stream client's reply ends (sans-IO: works on a byte buffer).

use crate::error::{Error, Result};

/// Where the reply to a request ends, for [`TcpClient::exchange`](super::TcpClient::exchange)
/// and its siblings. Bytes past the end stay buffered and come first in the next read.
///
/// # Examples
///
/// ```
/// use sockloop::client::ReplyEnd;
///
/// let line = ReplyEnd::Delimiter(b"\r\n");
/// let header = ReplyEnd::Length(4);
/// # let _ = (line, header);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyEnd<'a> {
    /// The bytes of the first read that returns any: whatever the peer's first burst was.
    FirstRead,
    /// Everything up to and including the first occurrence of the (non-empty) delimiter.
    Delimiter(&'a [u8]),
    /// Exactly this many bytes.
    Length(usize),
    /// Everything until the peer closes its side.
    Eof,
}

impl ReplyEnd<'_> {
    /// Rejects an empty delimiter, which no reply could meet meaningfully.
    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            ReplyEnd::Delimiter([]) => Err(Error::Config("an empty reply delimiter".into())),
            _ => Ok(()),
        }
    }

    /// Takes the reply out of `buf` when it is complete; leaves `buf` alone otherwise.
    pub(crate) fn take(&self, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        let end = match *self {
            ReplyEnd::FirstRead => (!buf.is_empty()).then_some(buf.len())?,
            ReplyEnd::Delimiter(d) => find(buf, d)? + d.len(),
            ReplyEnd::Length(n) => (buf.len() >= n).then_some(n)?,
            ReplyEnd::Eof => return None,
        };
        let rest = buf.split_off(end);
        Some(std::mem::replace(buf, rest))
    }

    /// The peer closed: the reply is everything buffered for [`ReplyEnd::Eof`]; otherwise
    /// the reply is incomplete ([`Error::Closed`]) and `buf` keeps the partial bytes.
    pub(crate) fn at_eof(&self, buf: &mut Vec<u8>) -> Result<Vec<u8>> {
        match self {
            ReplyEnd::Eof => Ok(std::mem::take(buf)),
            _ => Err(Error::Closed),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_read_takes_everything_buffered() {
        let mut buf = Vec::new();
        assert_eq!(ReplyEnd::FirstRead.take(&mut buf), None);
        buf.extend_from_slice(b"abc");
        assert_eq!(ReplyEnd::FirstRead.take(&mut buf).unwrap(), b"abc");
        assert!(buf.is_empty());
    }

    #[test]
    fn delimiter_splits_and_keeps_the_rest() {
        let mut buf = b"one\r".to_vec();
        let end = ReplyEnd::Delimiter(b"\r\n");
        assert_eq!(end.take(&mut buf), None);
        buf.extend_from_slice(b"\ntwo\r\n");
        assert_eq!(end.take(&mut buf).unwrap(), b"one\r\n");
        assert_eq!(end.take(&mut buf).unwrap(), b"two\r\n");
        assert_eq!(end.take(&mut buf), None);
    }

    #[test]
    fn length_waits_for_enough_bytes() {
        let mut buf = b"abc".to_vec();
        assert_eq!(ReplyEnd::Length(4).take(&mut buf), None);
        buf.push(b'd');
        buf.push(b'e');
        assert_eq!(ReplyEnd::Length(4).take(&mut buf).unwrap(), b"abcd");
        assert_eq!(buf, b"e");
    }

    #[test]
    fn eof_completes_only_the_eof_end() {
        let mut buf = b"partial".to_vec();
        assert_eq!(ReplyEnd::Eof.take(&mut buf), None);
        assert!(matches!(
            ReplyEnd::Length(99).at_eof(&mut buf),
            Err(Error::Closed)
        ));
        assert_eq!(buf, b"partial", "partial bytes stay buffered");
        assert_eq!(ReplyEnd::Eof.at_eof(&mut buf).unwrap(), b"partial");
    }

    #[test]
    fn empty_delimiter_is_a_config_error() {
        assert!(ReplyEnd::Delimiter(b"").validate().is_err());
        assert!(ReplyEnd::Delimiter(b"\n").validate().is_ok());
    }
}
