//! The bus between the nodes of a cluster: what a node needs from a shared store and a
//! message channel (Redis, or the in-process [`LocalBus`](super::LocalBus)).
//!
//! Every name a hub passes is a full key or channel name. Keys carry a hash tag — the part
//! between the first `{` and the next `}` — and every key of one atomic step shares it:
//! an implementation spread over several stores places each key by its tag (see
//! [`tag_of`]), as Redis Cluster does with slots.

use std::sync::Arc;
use std::time::Duration;

/// What a bus call failed with: the store is away, timed out, or refused the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusError(pub String);

impl std::fmt::Display for BusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cluster bus: {}", self.0)
    }
}

impl std::error::Error for BusError {}

/// The result of a bus call.
pub type BusResult<T> = Result<T, BusError>;

/// Where a node's bus messages go: called with the message's position in its feed (0 for a
/// message sent to one node, logged nowhere) and its payload, on a reader thread of the bus,
/// in the order the store published them.
pub type Inbox = Arc<dyn Fn(u64, &[u8]) + Send + Sync>;

/// Who a [`Bus::publish`] reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout<'a> {
    /// The nodes that are fields of this hash (same hash tag as the feed); each gets the
    /// message on channel `prefix` + node name.
    Nodes {
        /// The hash whose fields are node names.
        hash: &'a str,
        /// The channel prefix.
        prefix: &'a str,
    },
    /// Everyone subscribed to this channel (every node subscribes to the cluster's
    /// broadcast channel).
    Channel(&'a str),
}

/// What [`Bus::read`] found in a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRead {
    /// The entries after the position asked for, in order: (position, payload).
    pub entries: Vec<(u64, Vec<u8>)>,
    /// The last position ever written to the log (0: none, or the log is gone).
    pub head: u64,
    /// The first position kept (0 when the log holds nothing). When it is greater than the
    /// position asked for plus one, entries in between were trimmed or lost.
    pub first: u64,
}

impl LogRead {
    /// Whether every entry after `after` up to [`head`](Self::head) is here: none was
    /// trimmed by the log's length bound, and the log did not start over below `after`
    /// (a store that lost its data).
    pub fn complete_after(&self, after: u64) -> bool {
        if self.head < after {
            return false;
        }
        if self.head == after {
            return true;
        }
        self.first != 0 && self.first <= after + 1
    }
}

/// A cluster's shared store and message channel. Implementations: [`LocalBus`](super::LocalBus)
/// (in one process: tests, and several hubs in one program) and, with the `redis` feature,
/// `RedisBus` (feature `redis`). Every call may block on the network; none is made while
/// the hub's registry lock is held.
pub trait Bus: Send + Sync + 'static {
    /// Starts delivering what is published on `channels` to `inbox` (one subscription per
    /// node; the hub passes its node channel and the broadcast channel). Readers that lose
    /// the store reconnect on their own, with backoff, and count an
    /// [`epoch`](Self::epoch) each time they are back.
    ///
    /// # Errors
    /// When the first subscription cannot be made.
    fn subscribe(&self, channels: &[String], inbox: Inbox) -> BusResult<()>;

    /// Stops the readers of this bus (the node leaves). Idempotent.
    fn close(&self);

    /// How many times the readers (re)subscribed: a change means messages published while
    /// they were away were not heard (the feeds still hold them).
    fn epoch(&self) -> u64;

    /// Appends `payload` to the log `feed` (bounded by the bus's length limit) and
    /// publishes it with its position to `to`, in one atomic step. Returns the position.
    ///
    /// # Errors
    /// When the store is away: nothing was logged or published.
    fn publish(&self, feed: &str, to: Fanout<'_>, payload: &[u8]) -> BusResult<u64>;

    /// Publishes `payload` on `channel` (position 0), logged nowhere.
    ///
    /// # Errors
    /// When the store is away.
    fn send(&self, channel: &str, payload: &[u8]) -> BusResult<()>;

    /// The entries of log `key` after position `after`, at most `max` of them.
    ///
    /// # Errors
    /// When the store is away.
    fn read(&self, key: &str, after: u64, max: usize) -> BusResult<LogRead>;

    /// Writes `entries` at their positions to the log `log` (bounded by `max_len` entries)
    /// and `fields` to the hash `hash`, and sets both to expire after `ttl`, in one atomic
    /// step (both keys share a hash tag). Returns true when it wrote.
    ///
    /// With `only_if` = `(field, value)`, nothing is written (and false returned) when the
    /// hash exists and its `field` does not hold `value` (a missing field holds `""`): the
    /// fence of a session's log, whose record names the generation allowed to write it (a
    /// node that lost the session to another one can no longer add to its log).
    ///
    /// # Errors
    /// When the store is away: nothing was written.
    // The log, its bound, the record, its fields, their expiry and the fence are one atomic
    // step of the store: a struct for them would only rename the arguments.
    #[allow(clippy::too_many_arguments)]
    fn append(
        &self,
        log: &str,
        entries: &[(u64, &[u8])],
        max_len: usize,
        hash: &str,
        fields: &[(&str, &str)],
        ttl: Duration,
        only_if: Option<(&str, &str)>,
    ) -> BusResult<bool>;

    /// Sets fields of a hash.
    ///
    /// # Errors
    /// When the store is away.
    fn hset(&self, key: &str, fields: &[(&str, &str)]) -> BusResult<()>;

    /// Sets `fields` of hash `key` if its field `field` holds `expect` now (a missing field
    /// holds `""`), in one atomic step: true when it did. Two nodes racing to take one
    /// record over both read the same `expect`; only the first of them wins.
    ///
    /// # Errors
    /// When the store is away: nothing was written.
    fn hset_if(
        &self,
        key: &str,
        field: &str,
        expect: &str,
        fields: &[(&str, &str)],
    ) -> BusResult<bool>;
    /// Removes fields of a hash (a hash left empty is gone).
    ///
    /// # Errors
    /// When the store is away.
    fn hdel(&self, key: &str, fields: &[&str]) -> BusResult<()>;

    /// Every field of a hash, in no particular order (none for a missing key).
    ///
    /// # Errors
    /// When the store is away.
    fn hgetall(&self, key: &str) -> BusResult<Vec<(String, String)>>;

    /// Adds `delta` to an integer field of a hash and returns the new value; a field that
    /// reaches zero or less is removed.
    ///
    /// # Errors
    /// When the store is away.
    fn hincr(&self, key: &str, field: &str, delta: i64) -> BusResult<i64>;

    /// Removes keys.
    ///
    /// # Errors
    /// When the store is away.
    fn del(&self, keys: &[&str]) -> BusResult<()>;

    /// Sets `key` to `value` for `ttl` if it does not exist: true when this call set it
    /// (one node wins a claim).
    ///
    /// # Errors
    /// When the store is away.
    fn claim(&self, key: &str, value: &str, ttl: Duration) -> BusResult<bool>;

    /// Store commands sent so far (for benchmarks: commands per message).
    fn commands(&self) -> u64 {
        0
    }
}

/// The hash tag of a key: the part between its first `{` and the next `}`, or the whole key
/// when it has none (as Redis Cluster defines it).
///
/// # Examples
/// ```
/// use sockloop::hub::cluster::tag_of;
/// assert_eq!(tag_of("sl:{r:lobby}:feed"), "r:lobby");
/// assert_eq!(tag_of("plain"), "plain");
/// ```
pub fn tag_of(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_completeness() {
        assert_eq!(tag_of("a{b}c{d}"), "b");
        assert_eq!(tag_of("a{}c"), "a{}c");
        let r = |head, first| LogRead {
            entries: Vec::new(),
            head,
            first,
        };
        assert!(r(5, 3).complete_after(2));
        assert!(!r(5, 4).complete_after(2));
        assert!(r(5, 0).complete_after(5));
        assert!(!r(3, 1).complete_after(5), "the log started over");
        assert!(!r(0, 0).complete_after(1));
        assert!(r(0, 0).complete_after(0));
    }
}
