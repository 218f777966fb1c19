//! What happened to a send: one message's status, a fan-out's counts, the drop policy.

/// What happened to a message handed to `send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum SendStatus {
    /// Queued for the connection; it leaves in order.
    Queued,
    /// Refused by the drop policy (the queue was full); counted in the server's stats.
    Dropped,
    /// The connection is closing or closed; nothing was queued.
    Closed,
    /// The message alone is larger than the connection's whole queue bound
    /// ([`ServerConfig::max_queued_bytes`](crate::ServerConfig::max_queued_bytes)): refused at
    /// once, whatever the drop policy, and counted as dropped. Raise the bound or send it in
    /// parts.
    TooLarge,
}

/// What happened to a message sent to many connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Queued for this many connections.
    pub queued: usize,
    /// Refused by this many connections' drop policies (their queues were full).
    pub dropped: usize,
    /// This many members were closing or closed.
    pub closed: usize,
    /// Older messages thrown out of members' queues to make room for this one (the
    /// drop-oldest policy); each is also counted in the server's `dropped`.
    pub evicted: usize,
    /// Pollers whose members are not counted above: the call could not wait for them
    /// (see [`Broadcaster::send`](crate::Broadcaster::send)). Zero for a complete report.
    pub pending: usize,
    /// Cross-node publishes of this emit that failed (a [clustered](crate::hub::cluster) hub
    /// whose bus was away): the members on other nodes did not get the message. Zero
    /// otherwise.
    pub unpublished: usize,
}

impl Delivery {
    pub(crate) fn add(&mut self, o: Delivery) {
        self.queued += o.queued;
        self.dropped += o.dropped;
        self.closed += o.closed;
        self.evicted += o.evicted;
        self.pending += o.pending;
        self.unpublished += o.unpublished;
    }
}

/// What happens when a connection's outbound queue would exceed its byte bound.
///
/// Whatever the policy, reading from a connection pauses while its queue is above half the
/// bound and resumes below a quarter, so a peer that sends without reading is pushed back
/// by TCP instead of filling memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DropPolicy {
    /// The new message is refused: `send` returns [`SendStatus::Dropped`](crate::SendStatus::Dropped)
    /// and the queue keeps what it had. The default for message transports (WebSocket): a
    /// slow reader loses the newest messages, never a partial one, and nobody else is
    /// affected.
    #[default]
    DropNewest,
    /// The new message is queued and the oldest whole messages not yet started on the wire are
    /// dropped until the queue fits again (each counted as dropped).
    DropOldest,
    /// The connection is closed with [`CloseReason::QueueOverflow`](crate::CloseReason::QueueOverflow);
    /// `send` returns `Dropped`.
    Disconnect,
    /// For byte streams, where dropping would cut bytes out of the middle: nothing is ever
    /// dropped. Reading from the peer pauses while the queue is above its high-water mark
    /// (half the bound), so a peer that does not read stops being read; a handler that
    /// keeps sending regardless may queue up to twice the bound, past which the connection
    /// is closed with [`CloseReason::QueueOverflow`](crate::CloseReason::QueueOverflow)
    /// (counted) rather than lose bytes. The default for TCP, TLS and Unix stream servers.
    Backpressure,
}
