//! Close codes (RFC 6455 section 7.4).

use std::fmt;

/// A WebSocket close status code.
///
/// # Examples
///
/// ```
/// use sockloop::ws::CloseCode;
///
/// assert_eq!(CloseCode::NORMAL.as_u16(), 1000);
/// assert!(CloseCode::from(4000).is_valid_received());
/// assert!(!CloseCode::from(1005).is_valid_received());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page left).
    pub const AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer violated the protocol.
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    /// 1003: the peer sent a kind of data this endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: no code was present in the close frame. Reported, never sent.
    pub const STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection dropped without a close frame. Reported, never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: message data was inconsistent with its type (invalid UTF-8 in text).
    pub const INVALID: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a message was too big to process.
    pub const SIZE: CloseCode = CloseCode(1009);
    /// 1010: (client) the server did not negotiate a required extension.
    pub const EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server met an unexpected condition (e.g. a handler panicked).
    pub const ERROR: CloseCode = CloseCode(1011);
    /// 1013: try again later — the server is overloaded (here: over its memory budget).
    /// Registered with IANA after RFC 6455, like 1012 (service restart) and 1014 (bad
    /// gateway).
    pub const TRY_AGAIN: CloseCode = CloseCode(1013);

    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether a peer may send this code in a close frame (RFC 6455 7.4 and the IANA
    /// registry): 1000–1003, 1007–1014 and 3000–4999. Anything else received is a protocol
    /// error (1002).
    pub const fn is_valid_received(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// Whether this code may be put in a close frame we send (1005 and 1006 never are).
    pub const fn is_sendable(self) -> bool {
        self.is_valid_received()
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_matches_rfc_6455_7_4() {
        let valid = |c: u16| CloseCode::from(c).is_valid_received();
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
        ] {
            assert!(valid(c), "{c}");
        }
        for c in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert!(!valid(c), "{c}");
        }
        assert!(!CloseCode::STATUS.is_sendable());
        assert_eq!(u16::from(CloseCode::SIZE), 1009);
        assert_eq!(CloseCode::ERROR.to_string(), "1011");
    }
}
