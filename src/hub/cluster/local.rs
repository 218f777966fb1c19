//! The in-process bus: several hubs of one program joined without a network (tests, and a
//! program that runs several nodes). The reference semantics of [`Bus`]: every other
//! implementation behaves as this one does.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::bus::{Bus, BusError, BusResult, Fanout, Inbox, LogRead};

/// Entries a feed keeps (the bounded history).
const FEED_LEN: usize = 10_000;

#[derive(Default)]
struct Log {
    entries: BTreeMap<u64, Vec<u8>>,
    head: u64,
}

impl Log {
    fn push(&mut self, pos: u64, payload: Vec<u8>, max: usize) {
        self.entries.insert(pos, payload);
        self.head = self.head.max(pos);
        while self.entries.len() > max {
            self.entries.pop_first();
        }
    }
}

/// A subscriber's queue: its id and where its reader takes messages from.
type SubQueue = (u64, crossbeam_channel::Sender<(u64, Vec<u8>)>);

#[derive(Default)]
struct Store {
    logs: HashMap<String, Log>,
    hashes: HashMap<String, HashMap<String, String>>,
    expiry: HashMap<String, Instant>,
    /// Channel → the inboxes' queues subscribed to it.
    subs: HashMap<String, Vec<SubQueue>>,
}

impl Store {
    fn expire_now(&mut self, key: &str) {
        if self.expiry.get(key).is_some_and(|t| *t <= Instant::now()) {
            self.expiry.remove(key);
            self.logs.remove(key);
            self.hashes.remove(key);
        }
    }

    fn deliver(&mut self, channel: &str, pos: u64, payload: &[u8]) {
        if let Some(list) = self.subs.get_mut(channel) {
            list.retain(|(_, tx)| tx.send((pos, payload.to_vec())).is_ok());
        }
    }
}

struct Shared {
    store: Mutex<Store>,
    /// While true, every call fails as if the store were away (tests of an outage).
    down: AtomicBool,
    next_sub: AtomicU64,
    commands: AtomicU64,
    /// Outages ended: part of every handle's epoch (each one's readers missed what was
    /// published meanwhile).
    outages: AtomicU64,
}

/// The in-process bus. Clones share one store: give a clone to each hub of the cluster.
///
/// # Examples
/// ```
/// use sockloop::hub::cluster::{Bus, Fanout, LocalBus};
/// let bus = LocalBus::new();
/// let (tx, rx) = std::sync::mpsc::channel();
/// let tx = std::sync::Mutex::new(tx);
/// bus.subscribe(&["all".into()], std::sync::Arc::new(move |pos, m: &[u8]| {
///     let _ = tx.lock().unwrap().send((pos, m.to_vec()));
/// })).unwrap();
/// assert_eq!(bus.publish("{f}", Fanout::Channel("all"), b"hi").unwrap(), 1);
/// assert_eq!(rx.recv().unwrap(), (1, b"hi".to_vec()));
/// ```
#[derive(Clone)]
pub struct LocalBus {
    shared: Arc<Shared>,
    /// This handle's subscriptions (closed by `close`).
    mine: Arc<Mutex<Vec<u64>>>,
    epoch: Arc<AtomicU64>,
    /// This handle is cut off: its calls fail and it hears nothing (a node that died, or
    /// lost its network).
    cut: Arc<AtomicBool>,
    /// Microseconds each of this handle's calls waits first (a store far away).
    latency: Arc<AtomicU64>,
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBus").finish_non_exhaustive()
    }
}

impl LocalBus {
    /// A new, empty store.
    pub fn new() -> Self {
        LocalBus {
            shared: Arc::new(Shared {
                store: Mutex::default(),
                down: AtomicBool::new(false),
                next_sub: AtomicU64::new(1),
                commands: AtomicU64::new(0),
                outages: AtomicU64::new(0),
            }),
            mine: Arc::default(),
            epoch: Arc::default(),
            cut: Arc::default(),
            latency: Arc::default(),
        }
    }

    /// Another handle on the same store, with subscriptions of its own (one per node).
    pub fn handle(&self) -> LocalBus {
        LocalBus {
            shared: self.shared.clone(),
            mine: Arc::default(),
            epoch: Arc::default(),
            cut: Arc::default(),
            latency: Arc::default(),
        }
    }

    /// Makes every call fail (`true`) as if the store were away, or work again (`false`);
    /// messages published meanwhile are not delivered. For tests of an outage.
    pub fn set_down(&self, down: bool) {
        let was = self.shared.down.swap(down, Ordering::SeqCst);
        if was && !down {
            // Readers "reconnect": every handle's epoch moves on.
            self.shared.outages.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Cuts this handle off (`true`): its calls fail and its subscriptions hear nothing, as
    /// for a node whose process died or lost its network; `false` joins it again. The
    /// other handles go on. For tests of a node's death.
    pub fn set_cut(&self, cut: bool) {
        let was = self.cut.swap(cut, Ordering::SeqCst);
        if was && !cut {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Makes each of this handle's calls wait `d` before it runs, as for a node whose store
    /// is far away (`Duration::ZERO`: none, the default). For tests of races between
    /// nodes.
    pub fn set_latency(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.latency.store(us, Ordering::SeqCst);
    }

    fn store(&self) -> BusResult<MutexGuard<'_, Store>> {
        let us = self.latency.load(Ordering::SeqCst);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
        self.shared.commands.fetch_add(1, Ordering::Relaxed);
        if self.cut.load(Ordering::SeqCst) {
            return Err(BusError("this node is cut off the local store".into()));
        }
        if self.shared.down.load(Ordering::SeqCst) {
            return Err(BusError("the local store is down".into()));
        }
        Ok(self.shared.store.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Bus for LocalBus {
    fn subscribe(&self, channels: &[String], inbox: Inbox) -> BusResult<()> {
        let (tx, rx) = crossbeam_channel::unbounded::<(u64, Vec<u8>)>();
        let id = self.shared.next_sub.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = self.store()?;
            for c in channels {
                st.subs.entry(c.clone()).or_default().push((id, tx.clone()));
            }
        }
        self.mine.lock().unwrap_or_else(|e| e.into_inner()).push(id);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        drop(tx);
        let cut = self.cut.clone();
        std::thread::Builder::new()
            .name("sockloop-localbus".into())
            .spawn(move || {
                for (pos, m) in rx {
                    if !cut.load(Ordering::SeqCst) {
                        inbox(pos, &m);
                    }
                }
            })
            .map_err(|e| BusError(format!("cannot start a reader: {e}")))?;
        Ok(())
    }

    fn close(&self) {
        let ids: Vec<u64> =
            std::mem::take(&mut *self.mine.lock().unwrap_or_else(|e| e.into_inner()));
        let mut st = self.shared.store.lock().unwrap_or_else(|e| e.into_inner());
        for list in st.subs.values_mut() {
            list.retain(|(id, _)| !ids.contains(id));
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst) + self.shared.outages.load(Ordering::SeqCst)
    }

    fn publish(&self, feed: &str, to: Fanout<'_>, payload: &[u8]) -> BusResult<u64> {
        let mut st = self.store()?;
        st.expire_now(feed);
        let log = st.logs.entry(feed.to_owned()).or_default();
        let pos = log.head + 1;
        log.push(pos, payload.to_vec(), FEED_LEN);
        match to {
            Fanout::Channel(c) => st.deliver(c, pos, payload),
            Fanout::Nodes { hash, prefix } => {
                st.expire_now(hash);
                let nodes: Vec<String> = st
                    .hashes
                    .get(hash)
                    .map(|h| h.keys().cloned().collect())
                    .unwrap_or_default();
                for n in nodes {
                    st.deliver(&format!("{prefix}{n}"), pos, payload);
                }
            }
        }
        Ok(pos)
    }

    fn send(&self, channel: &str, payload: &[u8]) -> BusResult<()> {
        self.store()?.deliver(channel, 0, payload);
        Ok(())
    }

    fn read(&self, key: &str, after: u64, max: usize) -> BusResult<LogRead> {
        let mut st = self.store()?;
        st.expire_now(key);
        let Some(log) = st.logs.get(key) else {
            return Ok(LogRead::default());
        };
        let entries = log.entries.range(after + 1..).take(max);
        Ok(LogRead {
            entries: entries.map(|(p, v)| (*p, v.clone())).collect(),
            head: log.head,
            first: log.entries.keys().next().copied().unwrap_or(0),
        })
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
        let mut st = self.store()?;
        st.expire_now(log);
        st.expire_now(hash);
        if let (Some((f, want)), Some(h)) = (only_if, st.hashes.get(hash)) {
            if h.get(f).map_or("", |v| v.as_str()) != want {
                return Ok(false);
            }
        }
        let l = st.logs.entry(log.to_owned()).or_default();
        for (pos, p) in entries {
            l.push(*pos, p.to_vec(), max_len.max(1));
        }
        let h = st.hashes.entry(hash.to_owned()).or_default();
        for (k, v) in fields {
            h.insert((*k).to_owned(), (*v).to_owned());
        }
        let until = Instant::now() + ttl;
        st.expiry.insert(log.to_owned(), until);
        st.expiry.insert(hash.to_owned(), until);
        Ok(true)
    }

    fn hset(&self, key: &str, fields: &[(&str, &str)]) -> BusResult<()> {
        let mut st = self.store()?;
        st.expire_now(key);
        let h = st.hashes.entry(key.to_owned()).or_default();
        for (k, v) in fields {
            h.insert((*k).to_owned(), (*v).to_owned());
        }
        Ok(())
    }

    fn hset_if(
        &self,
        key: &str,
        field: &str,
        expect: &str,
        fields: &[(&str, &str)],
    ) -> BusResult<bool> {
        let mut st = self.store()?;
        st.expire_now(key);
        let now = st.hashes.get(key).and_then(|h| h.get(field));
        if now.map_or("", |v| v.as_str()) != expect {
            return Ok(false);
        }
        let h = st.hashes.entry(key.to_owned()).or_default();
        for (k, v) in fields {
            h.insert((*k).to_owned(), (*v).to_owned());
        }
        Ok(true)
    }

    fn hdel(&self, key: &str, fields: &[&str]) -> BusResult<()> {
        let mut st = self.store()?;
        st.expire_now(key);
        if let Some(h) = st.hashes.get_mut(key) {
            for f in fields {
                h.remove(*f);
            }
            if h.is_empty() {
                st.hashes.remove(key);
            }
        }
        Ok(())
    }

    fn hgetall(&self, key: &str) -> BusResult<Vec<(String, String)>> {
        let mut st = self.store()?;
        st.expire_now(key);
        let h = st.hashes.get(key);
        Ok(
            h.map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        )
    }

    fn hincr(&self, key: &str, field: &str, delta: i64) -> BusResult<i64> {
        let mut st = self.store()?;
        st.expire_now(key);
        let h = st.hashes.entry(key.to_owned()).or_default();
        let now = h
            .get(field)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
            + delta;
        if now <= 0 {
            h.remove(field);
            if h.is_empty() {
                st.hashes.remove(key);
            }
        } else {
            h.insert(field.to_owned(), now.to_string());
        }
        Ok(now)
    }

    fn del(&self, keys: &[&str]) -> BusResult<()> {
        let mut st = self.store()?;
        for k in keys {
            st.logs.remove(*k);
            st.hashes.remove(*k);
            st.expiry.remove(*k);
        }
        Ok(())
    }

    fn claim(&self, key: &str, value: &str, ttl: Duration) -> BusResult<bool> {
        let mut st = self.store()?;
        st.expire_now(key);
        if st.hashes.contains_key(key) {
            return Ok(false);
        }
        let mut h = HashMap::new();
        h.insert(String::new(), value.to_owned());
        st.hashes.insert(key.to_owned(), h);
        st.expiry.insert(key.to_owned(), Instant::now() + ttl);
        Ok(true)
    }

    fn commands(&self) -> u64 {
        self.shared.commands.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_hashes_claims_and_outage() {
        let bus = LocalBus::new();
        let (tx, rx) = crossbeam_channel::unbounded();
        bus.subscribe(
            &["p:a".into()],
            Arc::new(move |pos, m: &[u8]| {
                let _ = tx.send((pos, m.to_vec()));
            }),
        )
        .unwrap();
        bus.hset("{r}:nodes", &[("a", "1"), ("b", "1")]).unwrap();
        let to = Fanout::Nodes {
            hash: "{r}:nodes",
            prefix: "p:",
        };
        assert_eq!(bus.publish("{r}:f", to, b"one").unwrap(), 1);
        assert_eq!(bus.publish("{r}:f", to, b"two").unwrap(), 2);
        let got: Vec<_> = rx.iter().take(2).collect();
        assert_eq!(got, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
        let r = bus.read("{r}:f", 1, 10).unwrap();
        assert_eq!(r.entries, vec![(2, b"two".to_vec())]);
        assert!(r.complete_after(0) && r.complete_after(1));
        assert_eq!(bus.hincr("{r}:nodes", "a", -1).unwrap(), 0);
        assert_eq!(bus.hgetall("{r}:nodes").unwrap().len(), 1);
        assert!(bus.claim("k", "me", Duration::from_secs(5)).unwrap());
        assert!(!bus.claim("k", "you", Duration::from_secs(5)).unwrap());
        assert!(bus.hset_if("{s}:h", "gen", "", &[("gen", "1")]).unwrap());
        assert!(!bus.hset_if("{s}:h", "gen", "", &[("gen", "1")]).unwrap());
        assert!(bus
            .hset_if("{s}:h", "gen", "1", &[("gen", "2"), ("n", "b")])
            .unwrap());
        let mut h = bus.hgetall("{s}:h").unwrap();
        h.sort();
        assert_eq!(
            h,
            vec![("gen".into(), "2".into()), ("n".into(), "b".into())]
        );
        bus.set_down(true);
        assert!(bus.hset_if("{s}:h", "gen", "2", &[("gen", "3")]).is_err());
        assert!(bus.publish("{r}:f", to, b"x").is_err());
        bus.set_down(false);
        bus.append(
            "{s}:q",
            &[(1, b"m1"), (2, b"m2"), (3, b"m3")],
            2,
            "{s}:h",
            &[("seq", "3")],
            Duration::from_secs(9),
            None,
        )
        .unwrap();
        let q = bus.read("{s}:q", 0, 10).unwrap();
        assert_eq!((q.head, q.first, q.entries.len()), (3, 2, 2));
        assert!(!q.complete_after(0) && q.complete_after(1));
        // The fence: `{s}:h` holds gen 2, so a writer under gen 1 writes nothing.
        let ttl = Duration::from_secs(9);
        let stale = bus.append(
            "{s}:q",
            &[(4, b"m4")],
            2,
            "{s}:h",
            &[],
            ttl,
            Some(("gen", "1")),
        );
        assert!(!stale.unwrap());
        assert_eq!(bus.read("{s}:q", 0, 10).unwrap().head, 3);
        let current = bus.append(
            "{s}:q",
            &[(4, b"m4")],
            2,
            "{s}:h",
            &[],
            ttl,
            Some(("gen", "2")),
        );
        assert!(current.unwrap());
        assert_eq!(bus.read("{s}:q", 0, 10).unwrap().head, 4);
        // A missing record is no fence (a new session's first write).
        let new = bus.append(
            "{t}:q",
            &[],
            1,
            "{t}:h",
            &[("seq", "0")],
            ttl,
            Some(("gen", "")),
        );
        assert!(new.unwrap());
    }
}
