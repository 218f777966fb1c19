//! A hub's side of the cluster: its node name, what it publishes, what it hears, the
//! registry of its rooms and users in the bus's store, heartbeats, and the reaping of nodes
//! that died.
//!
//! Keys (namespace `ns`, default `sl`; the braces are hash tags, see [`tag_of`](super::tag_of)):
//!
//! | key | kind | what |
//! |---|---|---|
//! | `ns:{r:ROOM}:m` | hash | member `node/conn` → user (`""`: none) |
//! | `ns:{r:ROOM}:nodes` | hash | node → its members in the room |
//! | `ns:{r:ROOM}:f` | log | the room's messages (history for resumes) |
//! | `ns:{u:USER}:c` | hash | connection `node/conn` → `1` (connected) or `d` (a session waiting for its client) |
//! | `ns:{u:USER}:nodes` | hash | node → the user's connections there |
//! | `ns:{u:USER}:f` | log | messages to the user |
//! | `ns:{u:USER}:seen` | hash | `t` → when the user was last seen (Unix seconds) |
//! | `ns:{all}:f` | log | messages to everyone |
//! | `ns:{nodes}` | hash | node → its last heartbeat (Unix ms) |
//! | `ns:{n:NODE}:rooms`, `ns:{n:NODE}:users` | hash | what a node registered (for reaping it) |
//! | `ns:{s:SID}:h`, `ns:{s:SID}:q` | hash, log | a session and its numbered messages |
//!
//! Channels: `ns:node:NODE` (what is published to a node) and `ns:all`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::bus::{Bus, BusError, Fanout};
use crate::hub::{Hub, HubInner};
use crate::ConnId;

/// How a hub joins a cluster; every default is listed on its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (default: `node-<pid>-<random>`). A node
    /// that restarts under the same name takes its place again.
    pub node: String,
    /// Prefix of every key and channel (default `sl`): clusters sharing one store need
    /// different ones.
    pub namespace: String,
    /// A node whose heartbeat is older than this is dead (default 8 s): its users are
    /// offline everywhere and cross-node queries skip it. Heartbeats go every quarter of it,
    /// and the reaping runs as often, so a crashed node's users are offline within
    /// `dead_after` plus a quarter (10 s with the default).
    pub dead_after: Duration,
    /// Entries a session's log keeps in the store (default 4,096): past it the oldest
    /// go, and a resume from before them is not recoverable.
    pub session_log_len: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        let nonce = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        ClusterConfig {
            node: format!("node-{}-{:x}", std::process::id(), nonce),
            namespace: "sl".into(),
            dead_after: Duration::from_secs(8),
            session_log_len: 4096,
        }
    }
}

impl ClusterConfig {
    /// Every default, with this node name.
    pub fn new(node: impl Into<String>) -> Self {
        ClusterConfig {
            node: node.into(),
            ..Self::default()
        }
    }

    /// Sets [`namespace`](Self::namespace).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Sets [`dead_after`](Self::dead_after).
    pub fn dead_after(mut self, d: Duration) -> Self {
        self.dead_after = d;
        self
    }

    /// Sets [`session_log_len`](Self::session_log_len).
    pub fn session_log_len(mut self, n: usize) -> Self {
        self.session_log_len = n;
        self
    }
}

/// Counters of a hub's cluster link; see [`Hub::cluster_stats`](crate::hub::Hub::cluster_stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// This node's name.
    pub node: String,
    /// Nodes alive (this one included), sorted.
    pub nodes: Vec<String>,
    /// Messages published to other nodes.
    pub published: u64,
    /// Publishes that failed (the bus was away): members on other nodes missed them; each
    /// is also in its emit's [`Delivery::unpublished`](crate::Delivery::unpublished).
    pub unpublished: u64,
    /// Messages heard from other nodes.
    pub received: u64,
    /// Registry writes that failed (rewritten once the bus is back).
    pub registry_failed: u64,
    /// Times this node rewrote its registry (after an outage or a store restart).
    pub resyncs: u64,
    /// Dead nodes this node reaped.
    pub reaped: u64,
    /// Long-polling requests for another node's sessions this node forwarded there (a
    /// balancer without affinity sent them here).
    pub polls_forwarded: u64,
    /// Messages filled from the feeds: published while this node's readers were
    /// reconnecting, got from the store's history instead.
    pub filled: u64,
    /// Messages this node knew it missed and could not get from the feeds any more
    /// (trimmed by their bound): its members did not get them.
    pub missed: u64,
    /// Store commands sent (all of the bus's users together, where it counts them).
    pub commands: u64,
}

/// What goes over the bus between nodes.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Wire {
    /// The origin node.
    pub(crate) o: String,
    #[serde(flatten)]
    pub(crate) op: Op,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "k")]
pub(crate) enum Op {
    /// An emit to a room.
    #[serde(rename = "r")]
    Room {
        r: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        x: Vec<String>,
        m: String,
    },
    /// An emit to a user's connections.
    #[serde(rename = "u")]
    User {
        u: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        x: Vec<String>,
        m: String,
    },
    /// An emit to everyone.
    #[serde(rename = "a")]
    All {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        x: Vec<String>,
        m: String,
    },
    /// Close every connection of a user.
    #[serde(rename = "k")]
    Kick { u: String, c: u16, why: String },
    /// Give up session `sid` to node `to` (its client resumed there).
    #[serde(rename = "rel")]
    Release { sid: String, to: String },
    /// Session `sid` was given up.
    #[serde(rename = "reld")]
    Released { sid: String },
    /// A long-polling request for a session of the receiving node (`b`: the body, hex).
    #[serde(rename = "lp")]
    PollReq {
        id: u64,
        sid: String,
        #[serde(default)]
        post: bool,
        #[serde(default)]
        ack: u64,
        #[serde(default)]
        max: Option<u64>,
        #[serde(default)]
        seq: Option<u64>,
        #[serde(default)]
        b: String,
    },
    /// The answer to a forwarded long-polling request: the whole HTTP response, hex.
    #[serde(rename = "lpr")]
    PollResp { id: u64, b: String },
}

/// A registry write, done in order by the registry thread.
enum RegOp {
    Join {
        room: String,
        gid: String,
        user: String,
    },
    Leave {
        room: String,
        gid: String,
    },
    /// A member's user changed (a rename).
    Renamed {
        room: String,
        gid: String,
        user: String,
    },
    Online {
        user: String,
        gid: String,
        state: &'static str,
    },
    Offline {
        user: String,
        gid: String,
    },
    /// Remove keys (a session that ended).
    Forget(Vec<String>),
    /// Answered once every write queued before it was made.
    Barrier(crossbeam_channel::Sender<()>),
    /// Rewrite this node's whole registry from the hub's state.
    Resync,
    /// Remove this node from the registry (it leaves the cluster).
    Leave_,
}

/// Registry writes queued at most; past it a write waits (joins slow down rather than the
/// queue growing without bound).
const REG_QUEUE: usize = 65_536;

pub(crate) struct ClusterNode {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) cfg: ClusterConfig,
    /// `ns:node:` — the prefix of node channels.
    node_prefix: String,
    all_channel: String,
    live: Mutex<HashSet<String>>,
    reg: crossbeam_channel::Sender<RegOp>,
    reg_rx: Mutex<Option<crossbeam_channel::Receiver<RegOp>>>,
    dirty: AtomicBool,
    stop: AtomicBool,
    pub(crate) published: AtomicU64,
    pub(crate) unpublished: AtomicU64,
    received: AtomicU64,
    registry_failed: AtomicU64,
    resyncs: AtomicU64,
    reaped: AtomicU64,
    pub(crate) polls_forwarded: AtomicU64,
    pub(crate) filled: AtomicU64,
    /// Sessions given up to another node, awaited by the node taking them.
    pub(crate) released: Mutex<HashMap<String, crossbeam_channel::Sender<()>>>,
    /// Sessions this node is continuing from the store now (one resume of a session at a
    /// time); true once another node asked for it meanwhile (the resume gives up).
    pub(crate) resuming: Mutex<HashMap<String, bool>>,
    /// A round of session-record refreshes is under way (on a thread of its own, so that a
    /// node with many sessions never delays its heartbeat).
    refreshing: Arc<AtomicBool>,
    /// Long-polling requests forwarded to other nodes, awaiting their answers.
    pub(crate) polls: Mutex<HashMap<u64, (crate::server::longpoll::Carrier, std::time::Instant)>>,
    pub(crate) next_poll: AtomicU64,
    /// Feed key → the last position this node heard (while it has members there): a
    /// message past a gap (its readers reconnected meanwhile) first brings the ones in
    /// between from the feed, for every local member.
    pub(crate) heard_at: Mutex<HashMap<String, u64>>,
    /// Held while a heard message (or a catch-up) is delivered: the readers of several
    /// instances and the catch-up after a reconnect deliver in one order.
    pub(crate) delivering: Mutex<()>,
    /// Messages this node knew it missed and could not get from the feeds (trimmed).
    pub(crate) missed: AtomicU64,
    /// After a failed call, publishes and session writes are skipped (counted as failed at
    /// once) until this time (Unix ms) or the next good heartbeat: a store that hangs costs
    /// one timeout, not one per emit, and local delivery goes on.
    outage_until: AtomicU64,
}

/// How long calls are skipped after one failed.
const OUTAGE_SKIP_MS: u64 = 500;

fn now_ms() -> u64 {
    let d = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
    d.map_or(0, |d| d.as_millis() as u64)
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

impl ClusterNode {
    /// The sessions this node is continuing from the store now.
    pub(crate) fn lock_resuming(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.resuming.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn new(bus: Arc<dyn Bus>, cfg: ClusterConfig) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(REG_QUEUE);
        let ns = cfg.namespace.clone();
        let mut live = HashSet::new();
        live.insert(cfg.node.clone());
        ClusterNode {
            bus,
            node_prefix: format!("{ns}:node:"),
            all_channel: format!("{ns}:all"),
            cfg,
            live: Mutex::new(live),
            reg: tx,
            reg_rx: Mutex::new(Some(rx)),
            dirty: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            published: AtomicU64::new(0),
            unpublished: AtomicU64::new(0),
            received: AtomicU64::new(0),
            registry_failed: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            reaped: AtomicU64::new(0),
            polls_forwarded: AtomicU64::new(0),
            filled: AtomicU64::new(0),
            released: Mutex::default(),
            resuming: Mutex::default(),
            refreshing: Arc::default(),
            polls: Mutex::default(),
            next_poll: AtomicU64::new(1),
            outage_until: AtomicU64::new(0),
            heard_at: Mutex::default(),
            delivering: Mutex::default(),
            missed: AtomicU64::new(0),
        }
    }

    pub(crate) fn node(&self) -> &str {
        &self.cfg.node
    }

    fn ns(&self) -> &str {
        &self.cfg.namespace
    }

    pub(crate) fn room_key(&self, room: &str, part: &str) -> String {
        format!("{}:{{r:{room}}}:{part}", self.ns())
    }

    pub(crate) fn user_key(&self, user: &str, part: &str) -> String {
        format!("{}:{{u:{user}}}:{part}", self.ns())
    }

    pub(crate) fn all_feed(&self) -> String {
        format!("{}:{{all}}:f", self.ns())
    }

    fn nodes_key(&self) -> String {
        format!("{}:{{nodes}}", self.ns())
    }

    /// Nodes reaped, by name → when (a node that finds itself here was alive after all).
    fn reaped_key(&self) -> String {
        format!("{}:{{nodes}}:reaped", self.ns())
    }

    /// Whether another node reaped this one (and forgets it).
    fn was_reaped(&self) -> bool {
        let Ok(all) = self.bus.hgetall(&self.reaped_key()) else {
            return false;
        };
        if !all.iter().any(|(n, _)| n == self.node()) {
            return false;
        }
        let _ = self.bus.hdel(&self.reaped_key(), &[self.node()]);
        true
    }

    fn node_key(&self, node: &str, part: &str) -> String {
        format!("{}:{{n:{node}}}:{part}", self.ns())
    }

    pub(crate) fn session_key(&self, sid: &str, part: &str) -> String {
        format!("{}:{{s:{sid}}}:{part}", self.ns())
    }

    pub(crate) fn node_channel(&self, node: &str) -> String {
        format!("{}{node}", self.node_prefix)
    }

    /// The cluster-wide id of a local connection.
    pub(crate) fn gid(&self, id: ConnId) -> String {
        format!("{}/{}", self.cfg.node, id.0)
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the node of a `node/conn` id is alive.
    pub(crate) fn alive(&self, gid: &str) -> bool {
        let node = gid.rsplit_once('/').map_or(gid, |(n, _)| n);
        self.lock_live().contains(node)
    }

    pub(crate) fn is_local(&self, gid: &str) -> bool {
        gid.rsplit_once('/')
            .is_some_and(|(n, _)| n == self.cfg.node)
    }

    fn encode(&self, op: Op) -> Vec<u8> {
        let w = Wire {
            o: self.cfg.node.clone(),
            op,
        };
        serde_json::to_vec(&w).unwrap_or_default()
    }

    /// Whether the store is taken to be away right now (a call failed moments ago).
    pub(crate) fn in_outage(&self) -> bool {
        now_ms() < self.outage_until.load(Ordering::Relaxed)
    }

    /// A call failed: skip the next ones for a moment.
    pub(crate) fn call_failed(&self) {
        self.outage_until
            .store(now_ms() + OUTAGE_SKIP_MS, Ordering::Relaxed);
    }

    /// Publishes an emit; false when the bus was away.
    pub(crate) fn publish(&self, op: Op) -> Option<u64> {
        if self.in_outage() {
            self.unpublished.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let (feed, fan_hash) = match &op {
            Op::Room { r, .. } => (self.room_key(r, "f"), Some(self.room_key(r, "nodes"))),
            Op::User { u, .. } => (self.user_key(u, "f"), Some(self.user_key(u, "nodes"))),
            Op::All { .. } => (self.all_feed(), None),
            _ => return None,
        };
        let payload = self.encode(op);
        let to = match &fan_hash {
            Some(h) => Fanout::Nodes {
                hash: h,
                prefix: &self.node_prefix,
            },
            None => Fanout::Channel(&self.all_channel),
        };
        match self.bus.publish(&feed, to, &payload) {
            Ok(pos) => {
                self.published.fetch_add(1, Ordering::Relaxed);
                Some(pos)
            }
            Err(e) => {
                self.unpublished.fetch_add(1, Ordering::Relaxed);
                self.call_failed();
                log::warn!("cluster {}: not published: {e}", self.cfg.node);
                None
            }
        }
    }

    /// Sends an operation to one node.
    pub(crate) fn send_to(&self, node: &str, op: Op) -> Result<(), BusError> {
        self.bus.send(&self.node_channel(node), &self.encode(op))
    }

    fn queue(&self, op: RegOp) {
        if self.reg.send(op).is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn joined(&self, room: &str, id: ConnId, user: Option<&str>) {
        self.queue(RegOp::Join {
            room: room.to_owned(),
            gid: self.gid(id),
            user: user.unwrap_or_default().to_owned(),
        });
    }

    pub(crate) fn renamed(&self, room: &str, id: ConnId, user: &str) {
        self.queue(RegOp::Renamed {
            room: room.to_owned(),
            gid: self.gid(id),
            user: user.to_owned(),
        });
    }

    /// Waits (at most `timeout`) until the registry writes queued so far were made: after
    /// it, whatever is published to a room this node just joined reaches this node.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.queue(RegOp::Barrier(tx));
        rx.recv_timeout(timeout).is_ok()
    }

    /// Removes keys from the store, in order with the registry writes.
    pub(crate) fn forget(&self, keys: Vec<String>) {
        self.queue(RegOp::Forget(keys));
    }

    pub(crate) fn left(&self, room: &str, id: ConnId) {
        self.queue(RegOp::Leave {
            room: room.to_owned(),
            gid: self.gid(id),
        });
    }

    pub(crate) fn online(&self, user: &str, id: ConnId, detached: bool) {
        self.queue(RegOp::Online {
            user: user.to_owned(),
            gid: self.gid(id),
            state: if detached { "d" } else { "1" },
        });
    }

    pub(crate) fn offline(&self, user: &str, id: ConnId) {
        self.queue(RegOp::Offline {
            user: user.to_owned(),
            gid: self.gid(id),
        });
    }

    /// The user's connections on other live nodes: (connected, waiting sessions).
    pub(crate) fn remote_conns(&self, user: &str) -> Result<(usize, usize), BusError> {
        let all = self.bus.hgetall(&self.user_key(user, "c"))?;
        let mut n = (0, 0);
        for (gid, state) in all {
            if self.is_local(&gid) || !self.alive(&gid) {
                continue;
            }
            if state == "d" {
                n.1 += 1;
            } else {
                n.0 += 1;
            }
        }
        Ok(n)
    }

    /// The members of a room on other live nodes: (`node/conn`, user).
    pub(crate) fn remote_members(&self, room: &str) -> Result<Vec<(String, String)>, BusError> {
        let all = self.bus.hgetall(&self.room_key(room, "m"))?;
        Ok(all
            .into_iter()
            .filter(|(gid, _)| !self.is_local(gid) && self.alive(gid))
            .collect())
    }

    pub(crate) fn last_seen(&self, user: &str) -> Result<Option<u64>, BusError> {
        let h = self.bus.hgetall(&self.user_key(user, "seen"))?;
        Ok(h.iter()
            .find(|(k, _)| k == "t")
            .and_then(|(_, v)| v.parse().ok()))
    }

    /// A node's last heartbeat as the store has it (`None`: none, or the store is away).
    pub(crate) fn beat_of(&self, node: &str) -> Option<String> {
        let beats = self.bus.hgetall(&self.nodes_key()).ok()?;
        beats.into_iter().find(|(n, _)| n == node).map(|(_, t)| t)
    }

    /// How often this node's heartbeat goes.
    pub(crate) fn heartbeat_every(&self) -> Duration {
        (self.cfg.dead_after / 4).max(Duration::from_millis(20))
    }

    pub(crate) fn live_nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock_live().iter().cloned().collect();
        v.sort();
        v
    }

    pub(crate) fn stats(&self) -> ClusterStats {
        ClusterStats {
            node: self.cfg.node.clone(),
            nodes: self.live_nodes(),
            published: self.published.load(Ordering::Relaxed),
            unpublished: self.unpublished.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            registry_failed: self.registry_failed.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            reaped: self.reaped.load(Ordering::Relaxed),
            polls_forwarded: self.polls_forwarded.load(Ordering::Relaxed),
            filled: self.filled.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
            commands: self.bus.commands(),
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Starts a hub's cluster link: its subscription, the registry thread and the heartbeat
/// thread. Called once, from `HubBuilder::build`.
pub(crate) fn start(weak: Weak<HubInner>, node: &Arc<ClusterNode>) {
    let channels = vec![node.node_channel(node.node()), node.all_channel.clone()];
    let w = weak.clone();
    let inbox: super::Inbox = Arc::new(move |pos, payload: &[u8]| {
        if let Some(inner) = w.upgrade() {
            Hub { inner }.cluster_heard(pos, payload);
        }
    });
    if let Err(e) = node.bus.subscribe(&channels, inbox) {
        log::error!(
            "cluster {}: cannot subscribe: {e} (retrying with the heartbeats)",
            node.node()
        );
        node.dirty.store(true, Ordering::Relaxed);
    }
    let rx = node.reg_rx.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(rx) = rx {
        let (w, n) = (weak.clone(), node.clone());
        let _ = std::thread::Builder::new()
            .name("sockloop-cluster-reg".into())
            .spawn(move || registry_thread(w, n, rx));
    }
    let (w, n) = (weak, node.clone());
    let _ = std::thread::Builder::new()
        .name("sockloop-cluster-beat".into())
        .spawn(move || heartbeat_thread(w, n));
}

fn registry_thread(
    weak: Weak<HubInner>,
    node: Arc<ClusterNode>,
    rx: crossbeam_channel::Receiver<RegOp>,
) {
    loop {
        let op = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(op) => op,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) if weak.strong_count() > 0 => {
                continue
            }
            Err(_) => return,
        };
        let res = match op {
            RegOp::Resync => match weak.upgrade() {
                Some(inner) => resync(&Hub { inner }, &node),
                None => return,
            },
            RegOp::Leave_ => {
                let r = unregister(&node, &Registry::default());
                let _ = node.bus.hdel(&node.nodes_key(), &[node.node()]);
                node.bus.close();
                if let Err(e) = r {
                    log::warn!("cluster {}: leaving: {e}", node.node());
                }
                return;
            }
            op => apply(&node, op),
        };
        if let Err(e) = res {
            node.registry_failed.fetch_add(1, Ordering::Relaxed);
            node.dirty.store(true, Ordering::Relaxed);
            log::warn!("cluster {}: registry write failed: {e}", node.node());
        }
        if weak.strong_count() == 0 {
            return;
        }
    }
}

fn apply(node: &ClusterNode, op: RegOp) -> Result<(), BusError> {
    let me = node.node();
    let bus = &node.bus;
    match op {
        RegOp::Join { room, gid, user } => {
            bus.hset(&node.room_key(&room, "m"), &[(&gid, &user)])?;
            bus.hincr(&node.room_key(&room, "nodes"), me, 1)?;
            bus.hincr(&node.node_key(me, "rooms"), &room, 1)?;
        }
        RegOp::Renamed { room, gid, user } => {
            bus.hset(&node.room_key(&room, "m"), &[(&gid, &user)])?;
        }
        RegOp::Leave { room, gid } => {
            bus.hdel(&node.room_key(&room, "m"), &[&gid])?;
            bus.hincr(&node.room_key(&room, "nodes"), me, -1)?;
            bus.hincr(&node.node_key(me, "rooms"), &room, -1)?;
        }
        RegOp::Online { user, gid, state } => {
            let key = node.user_key(&user, "c");
            let was = bus.hgetall(&key)?.into_iter().any(|(g, _)| g == gid);
            bus.hset(&key, &[(&gid, state)])?;
            if !was {
                bus.hincr(&node.user_key(&user, "nodes"), me, 1)?;
                bus.hincr(&node.node_key(me, "users"), &user, 1)?;
            }
        }
        RegOp::Offline { user, gid } => {
            bus.hdel(&node.user_key(&user, "c"), &[&gid])?;
            bus.hincr(&node.user_key(&user, "nodes"), me, -1)?;
            bus.hincr(&node.node_key(me, "users"), &user, -1)?;
            let t = now_secs().to_string();
            bus.hset(&node.user_key(&user, "seen"), &[("t", &t)])?;
        }
        RegOp::Barrier(tx) => {
            let _ = tx.send(());
        }
        RegOp::Forget(keys) => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            bus.del(&keys)?;
        }
        RegOp::Resync | RegOp::Leave_ => {}
    }
    Ok(())
}

/// What a node has registered: rooms → members (`gid` → user), users → connections
/// (`gid` → state).
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) rooms: BTreeMap<String, BTreeMap<String, String>>,
    pub(crate) users: BTreeMap<String, BTreeMap<String, String>>,
}

/// Rewrites this node's whole registry from the hub's state: what it registered before
/// (its node indexes) that is gone is removed, what it has now is written. Run on the
/// registry thread (in order with the other writes) after an outage or a store restart.
fn resync(hub: &Hub, node: &ClusterNode) -> Result<(), BusError> {
    let now = hub.cluster_registry();
    unregister(node, &now)?;
    let me = node.node();
    for (room, members) in &now.rooms {
        let f: Vec<(&str, &str)> = members
            .iter()
            .map(|(g, u)| (g.as_str(), u.as_str()))
            .collect();
        node.bus.hset(&node.room_key(room, "m"), &f)?;
        let n = members.len().to_string();
        node.bus.hset(&node.room_key(room, "nodes"), &[(me, &n)])?;
        node.bus.hset(&node.node_key(me, "rooms"), &[(room, &n)])?;
    }
    for (user, conns) in &now.users {
        let f: Vec<(&str, &str)> = conns
            .iter()
            .map(|(g, s)| (g.as_str(), s.as_str()))
            .collect();
        node.bus.hset(&node.user_key(user, "c"), &f)?;
        let n = conns.len().to_string();
        node.bus.hset(&node.user_key(user, "nodes"), &[(me, &n)])?;
        node.bus.hset(&node.node_key(me, "users"), &[(user, &n)])?;
    }
    node.resyncs.fetch_add(1, Ordering::Relaxed);
    node.dirty.store(false, Ordering::Relaxed);
    Ok(())
}

/// Removes from the store what node `dead` registered, but what `keep` lists. Returns the
/// users whose entries it removed, and the rooms it removed members from.
fn remove_node_entries(
    node: &ClusterNode,
    dead: &str,
    keep: &Registry,
) -> Result<(Vec<String>, Vec<String>), BusError> {
    let prefix = format!("{dead}/");
    let bus = &node.bus;
    let mut rooms_touched = Vec::new();
    for (room, _) in bus.hgetall(&node.node_key(dead, "rooms"))? {
        let keep_room = keep.rooms.get(&room);
        let members = bus.hgetall(&node.room_key(&room, "m"))?;
        let gone: Vec<&str> = members
            .iter()
            .filter(|(g, _)| {
                g.starts_with(&prefix) && !keep_room.is_some_and(|k| k.contains_key(g))
            })
            .map(|(g, _)| g.as_str())
            .collect();
        if !gone.is_empty() {
            bus.hdel(&node.room_key(&room, "m"), &gone)?;
            rooms_touched.push(room.clone());
        }
        if keep_room.is_none() {
            bus.hdel(&node.room_key(&room, "nodes"), &[dead])?;
        }
    }
    let mut users_touched = Vec::new();
    for (user, _) in bus.hgetall(&node.node_key(dead, "users"))? {
        let keep_user = keep.users.get(&user);
        let conns = bus.hgetall(&node.user_key(&user, "c"))?;
        let gone: Vec<&str> = conns
            .iter()
            .filter(|(g, _)| {
                g.starts_with(&prefix) && !keep_user.is_some_and(|k| k.contains_key(g))
            })
            .map(|(g, _)| g.as_str())
            .collect();
        if !gone.is_empty() {
            bus.hdel(&node.user_key(&user, "c"), &gone)?;
            users_touched.push(user.clone());
        }
        if keep_user.is_none() {
            bus.hdel(&node.user_key(&user, "nodes"), &[dead])?;
        }
    }
    bus.del(&[&node.node_key(dead, "rooms"), &node.node_key(dead, "users")])?;
    Ok((users_touched, rooms_touched))
}

fn unregister(node: &ClusterNode, keep: &Registry) -> Result<(), BusError> {
    remove_node_entries(node, node.node(), keep).map(|_| ())
}

fn heartbeat_thread(weak: Weak<HubInner>, node: Arc<ClusterNode>) {
    let every = node.heartbeat_every();
    let mut epoch = node.bus.epoch();
    let mut subscribed = !node.dirty.load(Ordering::Relaxed);
    // No reaping until then: after an outage of the store every node's heartbeat is old,
    // and the first node back must not reap the others before they could beat again.
    let mut grace = std::time::Instant::now() + node.cfg.dead_after;
    let mut last_ok = std::time::Instant::now();
    let mut refreshed = std::time::Instant::now();
    loop {
        if node.stopping() || weak.strong_count() == 0 {
            return;
        }
        let beat = now_ms().to_string();
        match node.bus.hset(&node.nodes_key(), &[(node.node(), &beat)]) {
            Ok(()) => {
                node.outage_until.store(0, Ordering::Relaxed);
                // A heartbeat that failed, or took long (the store stalled): the others
                // could not beat either, so give them a `dead_after` to do it.
                if last_ok.elapsed() > every * 2 {
                    grace = std::time::Instant::now() + node.cfg.dead_after;
                }
                last_ok = std::time::Instant::now();
                if node.was_reaped() {
                    // Taken for dead (it could not beat for a while): it registers again.
                    log::warn!(
                        "cluster {}: was reaped while alive; registering again",
                        node.node()
                    );
                    node.queue(RegOp::Resync);
                }
                if !subscribed {
                    subscribed = resubscribe(&weak, &node);
                }
                let e = node.bus.epoch();
                if e != epoch || node.dirty.load(Ordering::Relaxed) {
                    epoch = e;
                    node.queue(RegOp::Resync);
                    if let Some(inner) = weak.upgrade() {
                        // The readers were away: the node's members and its sessions
                        // catch up from the feeds.
                        let hub = Hub { inner };
                        hub.cluster_catch_up_node();
                        hub.cluster_catch_up();
                    }
                }
                node.drop_stale_polls();
                if let Some(inner) = weak.upgrade() {
                    let hub = Hub { inner };
                    if refreshed.elapsed() >= hub.cluster_refresh_every()
                        && !node.refreshing.swap(true, Ordering::AcqRel)
                    {
                        refreshed = std::time::Instant::now();
                        let busy = node.refreshing.clone();
                        let spawned = std::thread::Builder::new()
                            .name("sockloop-cluster-refresh".into())
                            .spawn(move || {
                                hub.cluster_refresh_sessions();
                                busy.store(false, Ordering::Release);
                            });
                        if spawned.is_err() {
                            node.refreshing.store(false, Ordering::Release);
                        }
                    }
                }
                let reap = std::time::Instant::now() >= grace;
                if let Err(e) = sweep(&weak, &node, now_ms(), reap) {
                    log::warn!("cluster {}: sweep: {e}", node.node());
                }
            }
            Err(e) => log::warn!("cluster {}: heartbeat: {e}", node.node()),
        }
        // Sleep in short steps so a stop is seen quickly.
        let until = std::time::Instant::now() + every;
        while std::time::Instant::now() < until {
            if node.stopping() || weak.strong_count() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20).min(every));
        }
    }
}

fn resubscribe(weak: &Weak<HubInner>, node: &Arc<ClusterNode>) -> bool {
    let channels = vec![node.node_channel(node.node()), node.all_channel.clone()];
    let w = weak.clone();
    let inbox: super::Inbox = Arc::new(move |pos, payload: &[u8]| {
        if let Some(inner) = w.upgrade() {
            Hub { inner }.cluster_heard(pos, payload);
        }
    });
    node.bus.subscribe(&channels, inbox).is_ok()
}

/// Reads the nodes' heartbeats: updates who is alive, and reaps the dead (one node wins
/// each reaping).
fn sweep(weak: &Weak<HubInner>, node: &ClusterNode, now: u64, reap: bool) -> Result<(), BusError> {
    let beats = node.bus.hgetall(&node.nodes_key())?;
    let dead_ms = node.cfg.dead_after.as_millis() as u64;
    let mut live = HashSet::new();
    let mut dead = Vec::new();
    for (n, t) in beats {
        let t: u64 = t.parse().unwrap_or(0);
        if n == node.node() || t + dead_ms > now {
            live.insert(n);
        } else {
            dead.push(n);
        }
    }
    live.insert(node.node().to_owned());
    *node.lock_live() = live;
    if !reap {
        return Ok(());
    }
    for d in dead {
        let claim = format!("{}:reap:{d}", node.nodes_key());
        if !node
            .bus
            .claim(&claim, node.node(), node.cfg.dead_after * 2)?
        {
            continue;
        }
        let (users, rooms) = remove_node_entries(node, &d, &Registry::default())?;
        node.bus.hdel(&node.nodes_key(), &[&d])?;
        let t = now.to_string();
        node.bus.hset(&node.reaped_key(), &[(&d, &t)])?;
        node.reaped.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "cluster {}: node {d} is dead: reaped {} users, {} rooms",
            node.node(),
            users.len(),
            rooms.len()
        );
        if let Some(inner) = weak.upgrade() {
            Hub { inner }.cluster_node_died(&users, &rooms);
        }
    }
    Ok(())
}

impl ClusterNode {
    /// Leaves the cluster: this node's registry entries and heartbeat are removed, the
    /// readers stop (after the writes queued before).
    pub(crate) fn leave(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.queue(RegOp::Leave_);
    }

    /// Forwarded polling requests whose answer never came (their node died): dropped
    /// after two minutes (their carriers timed out long before).
    fn drop_stale_polls(&self) {
        let mut m = self.polls.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(120));
    }

    /// Whether `feed` started over below `cur` (the store restarted without its data): a
    /// message at or below a place already heard is then new, not a repeat. One store
    /// read, made only for such a message (a repeat after a gap fill, normally).
    pub(crate) fn feed_restarted(&self, feed: &str, cur: u64) -> bool {
        self.bus
            .read(feed, u64::MAX - 1, 1)
            .is_ok_and(|r| r.head < cur)
    }

    /// This node starts hearing `feed` afresh (its first member of a room, or first
    /// connection of a user), or stops hearing it (its last one left): what came before
    /// is not its members'.
    pub(crate) fn forget_heard(&self, feed: &str) {
        let mut m = self.heard_at.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(feed);
    }

    pub(crate) fn heard(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the seen time of a user who went offline everywhere (after a reaping).
    pub(crate) fn saw(&self, user: &str) {
        let t = now_secs().to_string();
        let _ = self.bus.hset(&self.user_key(user, "seen"), &[("t", &t)]);
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.bus.close();
    }
}
