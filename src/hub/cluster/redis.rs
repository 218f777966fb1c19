//! The cluster bus on Redis (feature `redis`): feeds are streams, fan-out is `PUBLISH`,
//! each atomic step is one Lua script. Synchronous: the `redis` crate's blocking API, a
//! small pool of connections per instance, and one supervised reader process per instance
//! for the subscriptions.
//!
//! Keys are spread over the configured instances by a [`Ring`] on their hash tag; every
//! command goes to the instance of its (first) key, so the keys of one atomic step, which
//! share a tag, are on one instance. A node subscribes on every instance, so a message
//! published on any of them reaches it.
//!
//! On the wire a channel message is `<position> <payload>`: the decimal position of the
//! message in its feed (0 for [`Bus::send`]), one space, then the payload's bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{Connection, RedisError, RedisResult, Script, Value};

use super::bus::{Bus, BusError, BusResult, Fanout, Inbox, LogRead};
use super::ring::Ring;
use crate::supervise::{
    BoxError, ChildSpec, Context, Control, Handled, Node, NodeConfig, Process, Strategy,
    SupervisorSpec,
};

/// Idle connections kept per instance (more are opened under load, and closed after use).
const POOL_MAX: usize = 8;

/// The longest a reader blocks on its connection before it looks at its stop flag and its
/// ping schedule again.
const SLICE: Duration = Duration::from_millis(200);

/// The payload field of every stream entry.
const FIELD: &str = "d";

/// KEYS: feed, its counter, [the nodes hash]. ARGV: feed length, payload, `c` (channel) or
/// `n` (nodes), the channel or the channel prefix, the deadline (Unix ms). A script that
/// runs after its deadline does nothing and returns -1: the caller gave up on it (its
/// command timed out, e.g. while Redis was stopped), so a publish reported as failed is
/// never made late.
const PUBLISH_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[5]) then return -1 end
local n = redis.call('INCR', KEYS[2])
local id = string.format('0-%d', n)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id, 'd', ARGV[2])
local msg = string.format('%d ', n) .. ARGV[2]
if ARGV[3] == 'c' then
  redis.call('PUBLISH', ARGV[4], msg)
else
  local nodes = redis.call('HKEYS', KEYS[3])
  for i = 1, #nodes do
    redis.call('PUBLISH', ARGV[4] .. nodes[i], msg)
  end
end
return n
";

/// KEYS: log, its counter. ARGV: the exclusive start (`-` or `(0-<after>`), how many.
/// Returns {entries, counter or nil, last entry, first entry}.
const READ_LUA: &str = r"
local entries = {}
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
end
local head = redis.call('GET', KEYS[2])
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
return {entries, head, last, first}
";

/// KEYS: log, hash. ARGV: max length, ttl in ms, entry count, the fence's field (`''`:
/// none) and the value it must hold, then position and payload of each entry, then field
/// and value pairs. An entry at or below the log's last position is skipped (XADD would
/// refuse it and fail the whole step). Returns 0, writing nothing, when the hash exists and
/// its fence field holds another value (a missing field holds `''`).
const APPEND_LUA: &str = r"
if ARGV[4] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
  local v = redis.call('HGET', KEYS[2], ARGV[4])
  if (v or '') ~= ARGV[5] then
    return 0
  end
end
local last = 0
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then
  last = tonumber(string.match(top[1][1], '%-(%d+)$')) or 0
end
local i = 6
for k = 1, tonumber(ARGV[3]) do
  local pos = tonumber(ARGV[i])
  if pos and pos > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '0-' .. ARGV[i], 'd', ARGV[i + 1])
    last = pos
  end
  i = i + 2
end
while i < #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
";

/// KEYS: hash. ARGV: field, delta.
const HINCR_LUA: &str = r"
local v = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if v <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return v
";

/// `hset_if`: `KEYS[1]` the hash, `ARGV[1]` the field compared, `ARGV[2]` what it must hold
/// (`""`: missing), then field/value pairs to set.
const HSET_IF_LUA: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if (v or '') ~= ARGV[2] then
  return 0
end
if #ARGV > 2 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
end
return 1
";

/// How a [`RedisBus`] reaches its instances, bounds its feeds and recovers.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use sockloop::hub::cluster::RedisBusConfig;
/// let cfg = RedisBusConfig::new(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])
///     .feed_len(1_000)
///     .timeout(Duration::from_millis(500))
///     .ping_every(Duration::from_millis(250))
///     .backoff(Duration::from_millis(50), Duration::from_secs(2));
/// assert_eq!(cfg.urls.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisBusConfig {
    /// The instances (`redis://host:port/`, `rediss://…` is not built in, `redis+unix:///path`
    /// or `unix:///path`); keys are spread over them by a [`Ring`] on these strings, so
    /// every node of a cluster must list the same ones (in any order).
    pub urls: Vec<String>,
    /// Entries a feed keeps, about (`XADD MAXLEN ~`; default 10 000).
    pub feed_len: usize,
    /// The connect, read and write timeout of every command, and how long a reader waits
    /// for the answer to its ping (default 2 s).
    pub timeout: Duration,
    /// How often a reader pings its connection (default 1 s): a reader that hears no pong
    /// within [`timeout`](Self::timeout) reconnects.
    pub ping_every: Duration,
    /// The first delay before a reader reconnects (default 100 ms; at least 1 ms), doubled
    /// for each failure in a row up to [`backoff_max`](Self::backoff_max).
    pub backoff_first: Duration,
    /// The longest delay before a reader reconnects (default 5 s).
    pub backoff_max: Duration,
}

impl Default for RedisBusConfig {
    /// No instance, and the defaults of every other field.
    fn default() -> Self {
        RedisBusConfig {
            urls: Vec::new(),
            feed_len: 10_000,
            timeout: Duration::from_secs(2),
            ping_every: Duration::from_secs(1),
            backoff_first: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl RedisBusConfig {
    /// The defaults with these instances.
    pub fn new<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisBusConfig {
            urls: urls.into_iter().map(Into::into).collect(),
            ..RedisBusConfig::default()
        }
    }

    /// Adds an instance.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Sets the entries a feed keeps, about (at least 1).
    pub fn feed_len(mut self, n: usize) -> Self {
        self.feed_len = n.max(1);
        self
    }

    /// Sets the timeout of commands, connections and pings.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Sets how often readers ping.
    pub fn ping_every(mut self, t: Duration) -> Self {
        self.ping_every = t;
        self
    }

    /// Sets the reconnection backoff of readers: `first`, doubled up to `max`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff_first = first;
        self.backoff_max = max;
        self
    }

    /// The configuration with every duration brought into the range that works.
    fn sane(mut self) -> Self {
        let ms = Duration::from_millis(1);
        self.feed_len = self.feed_len.max(1);
        self.timeout = self.timeout.max(ms);
        self.ping_every = self.ping_every.max(ms);
        self.backoff_first = self.backoff_first.max(ms);
        self.backoff_max = self.backoff_max.max(self.backoff_first);
        self
    }
}

/// One Redis instance: its URL, its client and its idle connections.
struct Instance {
    url: String,
    client: redis::Client,
    pool: Mutex<Vec<Connection>>,
}

impl Instance {
    fn pool(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection that still looks open.
    fn take(&self) -> Option<Connection> {
        let mut pool = self.pool();
        while let Some(c) = pool.pop() {
            if redis::ConnectionLike::is_open(&c) {
                return Some(c);
            }
        }
        None
    }

    fn put(&self, c: Connection) {
        let mut pool = self.pool();
        if pool.len() < POOL_MAX {
            pool.push(c);
        }
    }

    fn connect(&self, what: &str, timeout: Duration) -> BusResult<Connection> {
        let fail = |e: RedisError| BusError(format!("{}: {what}: connect: {e}", self.url));
        let c = self
            .client
            .get_connection_with_timeout(timeout)
            .map_err(fail)?;
        c.set_read_timeout(Some(timeout)).map_err(fail)?;
        c.set_write_timeout(Some(timeout)).map_err(fail)?;
        Ok(c)
    }
}

/// The readers started by one [`Bus::subscribe`]: their node (whose supervisor restarts
/// them) and their stop flag.
struct Readers {
    node: Node,
    stop: Arc<AtomicBool>,
}

impl Readers {
    fn stop(self, timeout: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let left = self.node.shutdown(timeout);
        if left > 0 {
            log::warn!("redis bus: {left} reader processes did not stop in {timeout:?}");
        }
    }
}

struct Inner {
    cfg: RedisBusConfig,
    instances: Vec<Instance>,
    ring: Ring,
    commands: AtomicU64,
    epoch: Arc<AtomicU64>,
    readers: Mutex<Vec<Readers>>,
    publish: Script,
    read: Script,
    append: Script,
    hincr: Script,
    hset_if: Script,
}

impl Inner {
    /// How long stopping a reader may take: its current slice or ping, or a connection
    /// attempt, and the unsubscribe on the way out.
    fn stop_timeout(&self) -> Duration {
        self.cfg.timeout.saturating_mul(2) + Duration::from_secs(1)
    }

    fn close(&self) {
        let all = std::mem::take(&mut *self.readers.lock().unwrap_or_else(|e| e.into_inner()));
        for r in all {
            r.stop(self.stop_timeout());
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// The cluster bus on one or several Redis instances (feature `redis`). Clones share the
/// connections and the subscriptions: one bus per node. Dropping the last clone closes it
/// (an inbox that holds a clone keeps it open: call [`Bus::close`]).
///
/// Layout: a feed is a stream (entry id `0-<position>`, field `d`) with a counter key
/// `<feed>:n`; a session log is a stream without a counter. Keys are spread over the
/// instances by a [`Ring`] on their hash tag, and each command goes to the instance of its
/// first key. Every [`subscribe`](Bus::subscribe) runs one reader per instance, a process
/// of the crate's supervision tree restarted with the configured backoff; it pings its
/// connection every [`ping_every`](RedisBusConfig::ping_every). On channels a message is
/// `<position> <payload>` (position 0 for [`send`](Bus::send)).
///
/// Per publish: one `EVALSHA` (`INCR`, `XADD`, then `PUBLISH` to the channel, or `HKEYS`
/// and one `PUBLISH` per node). A connection that fails is dropped, and the next command
/// opens a new one; a command on an idle connection that the server closed meanwhile (a
/// restart) is sent again once on a new connection.
///
/// # Examples
/// ```no_run
/// use sockloop::hub::cluster::{Bus, Fanout, RedisBus};
/// let bus = RedisBus::open("redis://127.0.0.1:6379/").unwrap();
/// bus.subscribe(&["all".into()], std::sync::Arc::new(|pos, m: &[u8]| {
///     println!("{pos}: {}", String::from_utf8_lossy(m));
/// })).unwrap();
/// let pos = bus.publish("{f}:feed", Fanout::Channel("all"), b"hi").unwrap();
/// assert!(pos >= 1);
/// bus.close();
/// ```
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.inner.instances.iter().map(|i| &*i.url).collect();
        f.debug_struct("RedisBus")
            .field("urls", &urls)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// A bus on the instances of `cfg`. Connects lazily: Redis need not be up yet.
    ///
    /// # Errors
    /// When there is no URL, or one does not parse as a Redis URL.
    pub fn new(cfg: RedisBusConfig) -> BusResult<RedisBus> {
        let cfg = cfg.sane();
        if cfg.urls.is_empty() {
            return Err(BusError("no Redis URL configured".into()));
        }
        let mut instances = Vec::with_capacity(cfg.urls.len());
        for url in &cfg.urls {
            let client = redis::Client::open(url.as_str())
                .map_err(|e| BusError(format!("{url}: not a usable Redis URL: {e}")))?;
            instances.push(Instance {
                url: url.clone(),
                client,
                pool: Mutex::new(Vec::new()),
            });
        }
        Ok(RedisBus {
            inner: Arc::new(Inner {
                ring: Ring::new(&cfg.urls),
                cfg,
                instances,
                commands: AtomicU64::new(0),
                epoch: Arc::new(AtomicU64::new(0)),
                readers: Mutex::new(Vec::new()),
                publish: Script::new(PUBLISH_LUA),
                read: Script::new(READ_LUA),
                append: Script::new(APPEND_LUA),
                hincr: Script::new(HINCR_LUA),
                hset_if: Script::new(HSET_IF_LUA),
            }),
        })
    }

    /// A bus on one instance with the default configuration.
    ///
    /// # Errors
    /// When `url` does not parse as a Redis URL.
    pub fn open(url: &str) -> BusResult<RedisBus> {
        RedisBus::new(RedisBusConfig::new([url]))
    }

    /// The configuration in force (durations brought into range).
    pub fn config(&self) -> &RedisBusConfig {
        &self.inner.cfg
    }

    /// The URL of the instance that holds `key` (by its hash tag).
    pub fn instance_of(&self, key: &str) -> &str {
        &self.inner.instances[self.inner.ring.pick(key)].url
    }

    fn instance(&self, key: &str) -> &Instance {
        &self.inner.instances[self.inner.ring.pick(key)]
    }

    /// Runs `f` on a connection to `inst`: an idle one, or a new one. A failure drops the
    /// connection; a failure of an idle connection that the server closed (not a timeout)
    /// empties the pool (they are all likely stale) and runs `f` once more on a new one.
    fn on<T>(
        &self,
        inst: &Instance,
        what: &str,
        f: impl Fn(&mut Connection) -> RedisResult<T>,
    ) -> BusResult<T> {
        self.inner.commands.fetch_add(1, Ordering::Relaxed);
        let fail = |e: &RedisError| BusError(format!("{}: {what}: {e}", inst.url));
        if let Some(mut c) = inst.take() {
            match f(&mut c) {
                Ok(v) => {
                    inst.put(c);
                    return Ok(v);
                }
                Err(e) if e.is_io_error() && !e.is_timeout() => {
                    log::debug!(
                        "redis bus: {}: stale connection ({e}), reconnecting",
                        inst.url
                    );
                    inst.pool().clear();
                    self.inner.commands.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Err(fail(&e)),
            }
        }
        let mut c = inst.connect(what, self.inner.cfg.timeout)?;
        match f(&mut c) {
            Ok(v) => {
                inst.put(c);
                Ok(v)
            }
            Err(e) => Err(fail(&e)),
        }
    }
}

/// The position of a stream entry id `0-<pos>`.
fn id_pos(v: &Value) -> Option<u64> {
    let Value::BulkString(b) = v else {
        return None;
    };
    let s = std::str::from_utf8(b).ok()?;
    s.rsplit_once('-')?.1.parse().ok()
}

/// The id's position of the first entry of an `XRANGE` reply.
fn first_pos(v: &Value) -> Option<u64> {
    let Value::Array(list) = v else {
        return None;
    };
    let Value::Array(entry) = list.first()? else {
        return None;
    };
    id_pos(entry.first()?)
}

/// (position, payload) of one `XRANGE` entry `[id, [field, value, …]]`.
fn entry(v: Value) -> Option<(u64, Vec<u8>)> {
    let Value::Array(mut e) = v else {
        return None;
    };
    if e.len() != 2 {
        return None;
    }
    let Value::Array(fields) = e.pop()? else {
        return None;
    };
    let pos = id_pos(&e[0])?;
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if let (Value::BulkString(k), Value::BulkString(v)) = (k, v) {
            if k == FIELD.as_bytes() {
                return Some((pos, v));
            }
        }
    }
    None
}

fn parse_read(v: Value) -> Result<LogRead, String> {
    let Value::Array(parts) = v else {
        return Err(format!("unexpected reply {v:?}"));
    };
    let mut parts = parts.into_iter();
    let (Some(Value::Array(list)), Some(head), Some(last), Some(first)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("unexpected reply shape".into());
    };
    let mut entries = Vec::with_capacity(list.len());
    for e in list {
        match entry(e) {
            Some(e) => entries.push(e),
            None => log::warn!("redis bus: skipping a malformed log entry"),
        }
    }
    let counter = match head {
        Value::BulkString(b) => std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()),
        Value::Int(i) => u64::try_from(i).ok(),
        _ => None,
    };
    let last = first_pos(&last).unwrap_or(0);
    Ok(LogRead {
        entries,
        head: counter.unwrap_or(0).max(last),
        first: first_pos(&first).unwrap_or(0),
    })
}

/// A script's reply of an unexpected form, as a `RedisError` (so it takes the error path).
fn bad_reply(what: &str, v: &Value) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Client,
        "unexpected reply",
        format!("{what}: {v:?}"),
    ))
}

/// A count as Redis takes it (a signed 64-bit integer).
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX).min(i64::MAX as u64)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Bus for RedisBus {
    fn subscribe(&self, channels: &[String], inbox: Inbox) -> BusResult<()> {
        let cfg = &self.inner.cfg;
        let stop = Arc::new(AtomicBool::new(false));
        let node = Node::with_config(NodeConfig::default().thread_name("sl-redisbus"));
        // Restarts are paced by the backoff (at least 1 ms): never give up on a store.
        let mut spec =
            SupervisorSpec::new(Strategy::OneForOne).intensity(1_000_000, Duration::from_secs(1));
        for (i, inst) in self.inner.instances.iter().enumerate() {
            let setup = Arc::new(ReaderSetup {
                url: inst.url.clone(),
                client: inst.client.clone(),
                channels: channels.to_vec(),
                inbox: inbox.clone(),
                epoch: self.inner.epoch.clone(),
                stop: stop.clone(),
                timeout: cfg.timeout,
                ping_every: cfg.ping_every,
            });
            let first = AtomicBool::new(true);
            let child = ChildSpec::worker(format!("reader-{i}"), move || Reader {
                setup: setup.clone(),
                first: first.swap(false, Ordering::SeqCst),
                conn: None,
            })
            .restart_delay(cfg.backoff_first, cfg.backoff_max)
            .shutdown(self.inner.stop_timeout());
            spec = spec.child(child);
        }
        match spec.start(&node) {
            Ok(_) => {
                let mut readers = self.inner.readers.lock().unwrap_or_else(|e| e.into_inner());
                readers.push(Readers { node, stop });
                Ok(())
            }
            Err(e) => {
                Readers { node, stop }.stop(self.inner.stop_timeout());
                Err(BusError(format!("subscribe: {e}")))
            }
        }
    }

    fn close(&self) {
        self.inner.close();
    }

    fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::SeqCst)
    }

    fn publish(&self, feed: &str, to: Fanout<'_>, payload: &[u8]) -> BusResult<u64> {
        let counter = format!("{feed}:n");
        let mut inv = self.inner.publish.prepare_invoke();
        inv.key(feed).key(&counter);
        let (mode, target) = match to {
            Fanout::Channel(c) => ("c", c),
            Fanout::Nodes { hash, prefix } => {
                inv.key(hash);
                ("n", prefix)
            }
        };
        // Three quarters of the command timeout: a script Redis runs later than that is
        // refused, and its refusal still arrives before the caller gives up. (The nodes' and
        // Redis's clocks must agree within that.)
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let deadline = now + (self.inner.cfg.timeout.as_millis() as u64) * 3 / 4;
        inv.arg(count(self.inner.cfg.feed_len))
            .arg(payload)
            .arg(mode)
            .arg(target)
            .arg(deadline);
        let n = self.on(self.instance(feed), "publish (EVALSHA)", |c| {
            inv.invoke::<i64>(c)
        })?;
        u64::try_from(n).map_err(|_| {
            BusError(format!(
                "{}: publish to {feed} ran after its deadline (Redis was stalled, or its clock \
                 is ahead of this node's): not made",
                self.instance_of(feed)
            ))
        })
    }

    fn send(&self, channel: &str, payload: &[u8]) -> BusResult<()> {
        let mut msg = Vec::with_capacity(payload.len() + 2);
        msg.extend_from_slice(b"0 ");
        msg.extend_from_slice(payload);
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(msg);
        self.on(self.instance(channel), "send (PUBLISH)", |c| {
            cmd.query::<i64>(c).map(drop)
        })
    }

    fn read(&self, key: &str, after: u64, max: usize) -> BusResult<LogRead> {
        let start = if after == 0 {
            "-".to_owned()
        } else {
            format!("(0-{after}")
        };
        let counter = format!("{key}:n");
        let mut inv = self.inner.read.prepare_invoke();
        inv.key(key).key(&counter).arg(start).arg(count(max));
        let inst = self.instance(key);
        let v = self.on(inst, "read (EVALSHA)", |c| inv.invoke::<Value>(c))?;
        parse_read(v).map_err(|e| BusError(format!("{}: read (EVALSHA): {e}", inst.url)))
    }

    fn append(
        &self,
        log: &str,
        entries: &[(u64, &[u8])],
        max_len: usize,
        hash: &str,
        fields: &[(&str, &str)],
        ttl: Duration,
        only_if: Option<(&str, &str)>,
    ) -> BusResult<bool> {
        let mut inv = self.inner.append.prepare_invoke();
        let (fence, want) = only_if.unwrap_or_default();
        inv.key(log)
            .key(hash)
            .arg(count(max_len.max(1)))
            .arg(millis(ttl))
            .arg(entries.len())
            .arg(fence)
            .arg(want);
        for (pos, payload) in entries {
            inv.arg(*pos).arg(*payload);
        }
        for (k, v) in fields {
            inv.arg(*k).arg(*v);
        }
        self.on(self.instance(log), "append (EVALSHA)", |c| {
            inv.invoke::<i64>(c).map(|n| n == 1)
        })
    }

    fn hset(&self, key: &str, fields: &[(&str, &str)]) -> BusResult<()> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(key);
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        self.on(self.instance(key), "HSET", |c| {
            cmd.query::<Value>(c).map(drop)
        })
    }

    fn hset_if(
        &self,
        key: &str,
        field: &str,
        expect: &str,
        fields: &[(&str, &str)],
    ) -> BusResult<bool> {
        let mut inv = self.inner.hset_if.prepare_invoke();
        inv.key(key).arg(field).arg(expect);
        for (k, v) in fields {
            inv.arg(*k).arg(*v);
        }
        self.on(self.instance(key), "hset_if (EVALSHA)", |c| {
            inv.invoke::<i64>(c).map(|n| n == 1)
        })
    }

    fn hdel(&self, key: &str, fields: &[&str]) -> BusResult<()> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(key).arg(fields);
        self.on(self.instance(key), "HDEL", |c| {
            cmd.query::<Value>(c).map(drop)
        })
    }

    fn hgetall(&self, key: &str) -> BusResult<Vec<(String, String)>> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(key);
        let map = self.on(self.instance(key), "HGETALL", |c| {
            cmd.query::<HashMap<String, String>>(c)
        })?;
        Ok(map.into_iter().collect())
    }

    fn hincr(&self, key: &str, field: &str, delta: i64) -> BusResult<i64> {
        let mut inv = self.inner.hincr.prepare_invoke();
        inv.key(key).arg(field).arg(delta);
        self.on(self.instance(key), "hincr (EVALSHA)", |c| {
            inv.invoke::<i64>(c)
        })
    }

    fn del(&self, keys: &[&str]) -> BusResult<()> {
        // A feed's counter goes with it: a feed made again starts at 1, as in LocalBus.
        let mut by_instance: HashMap<usize, Vec<String>> = HashMap::new();
        for k in keys {
            let list = by_instance.entry(self.inner.ring.pick(k)).or_default();
            list.push((*k).to_owned());
            list.push(format!("{k}:n"));
        }
        for (i, list) in by_instance {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(&list);
            let inst = &self.inner.instances[i];
            self.on(inst, "DEL", |c| cmd.query::<i64>(c).map(drop))?;
        }
        Ok(())
    }

    fn claim(&self, key: &str, value: &str, ttl: Duration) -> BusResult<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX").arg("PX").arg(millis(ttl));
        self.on(self.instance(key), "claim (SET NX PX)", |c| {
            match cmd.query::<Value>(c)? {
                Value::Nil => Ok(false),
                Value::Okay => Ok(true),
                Value::SimpleString(s) if s == "OK" => Ok(true),
                v => Err(bad_reply("SET NX", &v)),
            }
        })
    }

    fn commands(&self) -> u64 {
        self.inner.commands.load(Ordering::Relaxed)
    }
}

/// What every instance of one reader needs (shared by its restarts).
struct ReaderSetup {
    url: String,
    client: redis::Client,
    channels: Vec<String>,
    inbox: Inbox,
    epoch: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    timeout: Duration,
    ping_every: Duration,
}

impl ReaderSetup {
    fn stopping(&self, ctx: &Context<()>) -> bool {
        self.stop.load(Ordering::SeqCst) || ctx.shutting_down()
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> BoxError {
        format!("redis bus reader: {}: {what}: {e}", self.url).into()
    }

    /// Connects and subscribes to every channel; counts an epoch.
    fn connect(&self) -> Result<Connection, BoxError> {
        let mut c = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| self.fail("connect", e))?;
        c.set_read_timeout(Some(self.timeout))
            .and_then(|()| c.set_write_timeout(Some(self.timeout)))
            .map_err(|e| self.fail("connect", e))?;
        // SUBSCRIBE by hand, one channel at a time, each up to its confirmation: a PubSub
        // would unsubscribe when dropped, and the loop makes its own.
        for ch in &self.channels {
            let packed = redis::cmd("SUBSCRIBE").arg(ch).get_packed_command();
            c.send_packed_command(&packed)
                .map_err(|e| self.fail("SUBSCRIBE", e))?;
            loop {
                let v = c.recv_response().map_err(|e| self.fail("SUBSCRIBE", e))?;
                if let Some(m) = redis::Msg::from_owned_value(v.clone()) {
                    self.deliver(m.get_payload_bytes());
                } else if is_confirmation(&v, ch) {
                    break;
                } else if let Value::ServerError(e) = v {
                    return Err(self.fail("SUBSCRIBE", format!("{e:?}")));
                }
            }
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        log::debug!("redis bus: {}: subscribed to {:?}", self.url, self.channels);
        Ok(c)
    }

    /// Reads messages until asked to stop (`Ok`) or until the connection fails or misses a
    /// pong (`Err`).
    fn pump(&self, ctx: &Context<()>, c: &mut Connection) -> Result<(), BoxError> {
        let slice = SLICE.min(self.timeout).min(self.ping_every);
        c.set_read_timeout(Some(slice))
            .map_err(|e| self.fail("set timeout", e))?;
        let mut ps = c.as_pubsub();
        let mut next_ping = Instant::now() + self.ping_every;
        loop {
            if self.stopping(ctx) {
                return Ok(());
            }
            if Instant::now() >= next_ping {
                ps.set_read_timeout(Some(self.timeout))
                    .map_err(|e| self.fail("set timeout", e))?;
                let pong: Value = ps
                    .ping_message("sockloop")
                    .map_err(|e| self.fail("PING", e))?;
                if !is_pong(&pong) {
                    return Err(self.fail("PING", format!("unexpected reply {pong:?}")));
                }
                ps.set_read_timeout(Some(slice))
                    .map_err(|e| self.fail("set timeout", e))?;
                next_ping = Instant::now() + self.ping_every;
            }
            match ps.get_message() {
                Ok(m) => self.deliver(m.get_payload_bytes()),
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(self.fail("reading messages", e)),
            }
        }
    }

    /// Hands `<pos> <payload>` to the inbox (no lock is held); skips a malformed one.
    fn deliver(&self, raw: &[u8]) {
        let split = raw.iter().position(|b| *b == b' ');
        let parsed = split.and_then(|at| {
            let pos = std::str::from_utf8(&raw[..at]).ok()?.parse::<u64>().ok()?;
            Some((pos, &raw[at + 1..]))
        });
        match parsed {
            Some((pos, payload)) => (self.inbox)(pos, payload),
            None => log::warn!(
                "redis bus: {}: skipping a malformed message ({} bytes)",
                self.url,
                raw.len()
            ),
        }
    }
}

/// Whether `v` is the confirmation `["subscribe", channel, count]`.
fn is_confirmation(v: &Value, channel: &str) -> bool {
    let (Value::Array(a) | Value::Push { data: a, .. }) = v else {
        return false;
    };
    matches!(
        (a.first(), a.get(1)),
        (Some(Value::BulkString(k)), Some(Value::BulkString(c)))
            if k.eq_ignore_ascii_case(b"subscribe") && c == channel.as_bytes()
    )
}

/// Whether `v` answers a PING on a subscribed connection (`["pong", msg]`, or `PONG`).
fn is_pong(v: &Value) -> bool {
    match v {
        Value::Array(a) => {
            matches!(a.first(), Some(Value::BulkString(k)) if k.eq_ignore_ascii_case(b"pong"))
        }
        Value::SimpleString(s) => s.eq_ignore_ascii_case("pong"),
        Value::BulkString(b) => b == b"sockloop",
        _ => false,
    }
}

/// The reader of one instance: a supervised process that connects, subscribes and reads
/// until it fails (then its supervisor starts a new one after the backoff) or stops.
struct Reader {
    setup: Arc<ReaderSetup>,
    /// The first instance subscribes in `init`, so that `subscribe` reports a failure; the
    /// restarts connect in the loop, where a failure waits for the backoff.
    first: bool,
    conn: Option<Connection>,
}

impl Process for Reader {
    type Msg = ();

    fn init(&mut self, ctx: &mut Context<()>) -> Result<(), BoxError> {
        ctx.set_receive_timeout(Some(Duration::ZERO));
        if self.first {
            self.conn = Some(self.setup.connect()?);
        }
        Ok(())
    }

    fn handle(&mut self, _ctx: &mut Context<()>, _msg: ()) -> Handled {
        Ok(Control::Continue)
    }

    fn handle_timeout(&mut self, ctx: &mut Context<()>) -> Handled {
        if self.setup.stopping(ctx) {
            // Wait for the shutdown signal without spinning.
            ctx.set_receive_timeout(None);
            return Ok(Control::Continue);
        }
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.setup.connect()?,
        };
        self.setup.pump(ctx, &mut conn)?;
        Ok(Control::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_and_bad_ones_do_not_panic() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let e = |id: &str, p: &str| Value::Array(vec![b(id), Value::Array(vec![b("d"), b(p)])]);
        let reply = Value::Array(vec![
            Value::Array(vec![e("0-3", "c"), Value::Nil, e("0-4", "d")]),
            b("7"),
            Value::Array(vec![e("0-4", "d")]),
            Value::Array(vec![e("0-2", "b")]),
        ]);
        let r = parse_read(reply).unwrap();
        assert_eq!(r.entries, vec![(3, b"c".to_vec()), (4, b"d".to_vec())]);
        assert_eq!((r.head, r.first), (7, 2));
        let empty = Value::Array(vec![
            Value::Array(vec![]),
            Value::Nil,
            Value::Array(vec![]),
            Value::Array(vec![]),
        ]);
        assert_eq!(parse_read(empty).unwrap(), LogRead::default());
        assert!(parse_read(Value::Nil).is_err());
        assert!(parse_read(Value::Array(vec![b("x")])).is_err());
        assert!(is_confirmation(
            &Value::Array(vec![b("subscribe"), b("ch"), Value::Int(1)]),
            "ch"
        ));
        assert!(is_pong(&Value::Array(vec![b("pong"), b("sockloop")])));
        assert!(!is_pong(&Value::Nil));
    }

    #[test]
    fn config_and_urls_are_checked_without_a_server() {
        assert!(RedisBus::new(RedisBusConfig::default()).is_err());
        let err = RedisBus::open("http://example.invalid/").unwrap_err();
        assert!(err.0.contains("http://example.invalid/"), "{err}");
        let bus = RedisBus::new(
            RedisBusConfig::new(["redis://127.0.0.1:1/", "redis+unix:///nowhere/r.sock"])
                .backoff(Duration::ZERO, Duration::ZERO)
                .timeout(Duration::from_millis(200)),
        )
        .unwrap();
        assert_eq!(bus.config().backoff_first, Duration::from_millis(1));
        let feed = "{t}:feed";
        let err = bus.publish(feed, Fanout::Channel("c"), b"x").unwrap_err();
        assert!(err.0.contains(bus.instance_of(feed)), "{err}");
        assert!(bus.subscribe(&["c".into()], Arc::new(|_, _| {})).is_err());
        bus.close();
    }
}
