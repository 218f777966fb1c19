//! WebSocket errors: what went wrong and which close code the engine wants sent.

use std::fmt;

use super::CloseCode;

/// A WebSocket failure.
///
/// Errors raised while decoding peer input carry the close code to send
/// ([`close_code`](WsError::close_code)); the reactor sends it and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsError {
    /// The peer violated RFC 6455 (bad opcode, unmasked client frame, oversized or fragmented
    /// control frame, reserved bits, bad close frame, continuation without a start...).
    /// Send a close frame with `code` (almost always 1002) and close.
    Protocol {
        /// The close code to send.
        code: CloseCode,
        /// What was wrong, short enough for a close frame's reason.
        reason: &'static str,
    },
    /// A frame or a message (after decompression) exceeded the configured limit.
    /// Send a 1009 close frame and close.
    TooBig {
        /// The size seen so far (or announced in a frame header).
        size: u64,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A text message or a close reason was not valid UTF-8. Send a 1007 close frame and close.
    InvalidUtf8,
    /// A compressed (permessage-deflate) message could not be inflated.
    /// Send a 1007 close frame and close.
    Inflate,
    /// The opening handshake was refused. On a server, answer with this HTTP status (the
    /// handshake module writes the response); on a client, the server answered this way or
    /// with an invalid 101 (`status` is then the status it sent).
    Handshake {
        /// The HTTP status (400, 403, 426, ... ; or the server's status for a client).
        status: u16,
        /// What was wrong.
        reason: &'static str,
    },
    /// A client's upgrade was refused: the server answered with this HTTP status (not 101)
    /// and gave this reason (its response body, trimmed and cut to 512 bytes; empty when
    /// it sent none).
    Refused {
        /// The server's HTTP status.
        status: u16,
        /// The server's reason text.
        reason: String,
    },
}

impl WsError {
    /// The close code to send the peer for this error, `None` for handshake errors (no
    /// WebSocket connection exists yet).
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            WsError::Protocol { code, .. } => Some(*code),
            WsError::TooBig { .. } => Some(CloseCode::SIZE),
            WsError::InvalidUtf8 | WsError::Inflate => Some(CloseCode::INVALID),
            WsError::Handshake { .. } | WsError::Refused { .. } => None,
        }
    }

    /// A short reason suitable for the close frame.
    pub fn reason(&self) -> &'static str {
        match self {
            WsError::Protocol { reason, .. } | WsError::Handshake { reason, .. } => reason,
            WsError::TooBig { .. } => "message too big",
            WsError::InvalidUtf8 => "invalid utf-8",
            WsError::Inflate => "invalid compressed data",
            WsError::Refused { .. } => "the server refused the upgrade",
        }
    }

    pub(crate) const fn protocol(reason: &'static str) -> WsError {
        WsError::Protocol {
            code: CloseCode::PROTOCOL,
            reason,
        }
    }

    pub(crate) const fn handshake(status: u16, reason: &'static str) -> WsError {
        WsError::Handshake { status, reason }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Protocol { code, reason } => {
                write!(f, "protocol violation: {reason} (close code {code})")
            }
            WsError::TooBig { size, limit } => {
                write!(
                    f,
                    "message of {size} bytes exceeds the limit of {limit} (close code 1009)"
                )
            }
            WsError::InvalidUtf8 => {
                f.write_str("invalid UTF-8 in a text message (close code 1007)")
            }
            WsError::Inflate => f.write_str("invalid permessage-deflate data (close code 1007)"),
            WsError::Handshake { status, reason } => {
                write!(f, "handshake rejected: {reason} (HTTP {status})")
            }
            WsError::Refused { status, reason } if reason.is_empty() => {
                write!(f, "the server refused the upgrade (HTTP {status})")
            }
            WsError::Refused { status, reason } => {
                write!(
                    f,
                    "the server refused the upgrade (HTTP {status}): {reason}"
                )
            }
        }
    }
}

impl std::error::Error for WsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_and_text() {
        let too_big = WsError::TooBig { size: 10, limit: 5 };
        assert_eq!(too_big.close_code(), Some(CloseCode::SIZE));
        assert_eq!(WsError::InvalidUtf8.close_code(), Some(CloseCode::INVALID));
        assert_eq!(WsError::Inflate.close_code(), Some(CloseCode::INVALID));
        assert_eq!(
            WsError::protocol("x").close_code(),
            Some(CloseCode::PROTOCOL)
        );
        assert_eq!(WsError::handshake(426, "v").close_code(), None);
        assert!(too_big.to_string().contains("1009"));
        assert_eq!(WsError::handshake(400, "bad key").reason(), "bad key");
        assert!(WsError::Inflate.to_string().contains("1007"));
    }
}
