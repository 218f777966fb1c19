//! The hub's error codes (a closed, documented set) and the error handlers return.

use std::fmt;

/// Why an envelope was refused or a handler failed; sent to the peer as the `code` of an
/// `error` event. The set is closed: clients can match on every value (see
/// `docs/PROTOCOL.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The text frame is not an envelope: not JSON, too deep, or a field has the wrong type.
    BadEnvelope,
    /// The envelope is larger than the hub's limit.
    TooLarge,
    /// No route matches the event name.
    UnknownEvent,
    /// The envelope's `data` does not have the shape the handler expects.
    BadData,
    /// The event needs an identity and the connection has none.
    Unauthorized,
    /// The connection or user sent more than its rate limit allows.
    RateLimited,
    /// The room is at its capacity.
    RoomFull,
    /// Not allowed: a private or invite-only room without an invitation, a missing role.
    Forbidden,
    /// The room, user or connection does not exist.
    NotFound,
    /// A delivery waited for an acknowledgement that did not come.
    Timeout,
    /// The server failed (a handler panicked or an encoding failed); details are logged.
    Internal,
}

impl ErrorCode {
    /// The code as written on the wire (`bad_envelope`, `unknown_event`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadEnvelope => "bad_envelope",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::BadData => "bad_data",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure with a code and a human-readable message. Returned by handlers and
/// middleware; the hub turns it into an `error` event carrying the envelope's id as `ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubError {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A short explanation for people.
    pub message: String,
}

impl HubError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HubError {
            code,
            message: message.into(),
        }
    }

    /// [`ErrorCode::BadData`] with this message.
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadData, message)
    }

    /// [`ErrorCode::Forbidden`] with this message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// [`ErrorCode::NotFound`] with this message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// [`ErrorCode::Internal`] with this message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for HubError {}

impl From<serde_json::Error> for HubError {
    fn from(e: serde_json::Error) -> Self {
        HubError::bad_data(e.to_string())
    }
}
