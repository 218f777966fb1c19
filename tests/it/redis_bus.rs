//! RedisBus against real redis-server processes (see `redis_support`): every Bus method with
//! the reference semantics of LocalBus, fan-out, two instances, a restart and a frozen
//! server in the middle of a test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use sockloop::hub::cluster::{Bus, Fanout, RedisBus, RedisBusConfig};

use crate::redis_support::RedisServer;

type Heard = Receiver<(u64, Vec<u8>)>;

/// Subscribes `bus` to `channels`; what it hears comes out of the receiver.
fn listen(bus: &RedisBus, channels: &[&str]) -> Heard {
    let (tx, rx) = unbounded();
    let channels: Vec<String> = channels.iter().map(|c| (*c).to_owned()).collect();
    bus.subscribe(
        &channels,
        Arc::new(move |pos, m: &[u8]| {
            let _ = tx.send((pos, m.to_vec()));
        }),
    )
    .expect("subscribe");
    rx
}

fn take(rx: &Heard, n: usize) -> Vec<(u64, Vec<u8>)> {
    (0..n)
        .map(|i| {
            rx.recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("message {i} of {n} did not arrive"))
        })
        .collect()
}

fn quiet(rx: &Heard) {
    let extra = rx.recv_timeout(Duration::from_millis(300));
    assert!(extra.is_err(), "an unexpected message: {extra:?}");
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Timeouts short enough for tests of outages.
fn fast(urls: &[&str]) -> RedisBusConfig {
    RedisBusConfig::new(urls.iter().copied())
        .timeout(Duration::from_millis(500))
        .ping_every(Duration::from_millis(200))
        .backoff(Duration::from_millis(50), Duration::from_millis(400))
}

/// A direct connection to one server, to look at what the bus wrote.
fn direct(s: &RedisServer) -> redis::Connection {
    let c = redis::Client::open(s.url.as_str()).unwrap();
    c.get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

fn exists(c: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(c).unwrap() == 1
}

#[test]
fn redis_bus_every_method_as_the_local_bus() {
    let server = RedisServer::start();
    let bus = RedisBus::open(&server.url).unwrap();
    let rx = listen(&bus, &["p:a"]);
    assert_eq!(bus.epoch(), 1);
    bus.hset("{r}:nodes", &[("a", "1"), ("b", "1")]).unwrap();
    let to = Fanout::Nodes {
        hash: "{r}:nodes",
        prefix: "p:",
    };
    assert_eq!(bus.publish("{r}:f", to, b"one").unwrap(), 1);
    assert_eq!(bus.publish("{r}:f", to, b"two").unwrap(), 2);
    assert_eq!(
        take(&rx, 2),
        vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
    );
    let r = bus.read("{r}:f", 1, 10).unwrap();
    assert_eq!(r.entries, vec![(2, b"two".to_vec())]);
    assert_eq!((r.head, r.first), (2, 1));
    assert!(r.complete_after(0) && r.complete_after(1));
    let r = bus.read("{r}:f", 0, 1).unwrap();
    assert_eq!(r.entries, vec![(1, b"one".to_vec())], "at most max");
    assert_eq!(bus.read("{r}:f", 2, 10).unwrap().entries, vec![]);
    assert_eq!(bus.read("{r}:f", 0, usize::MAX).unwrap().entries.len(), 2);
    assert_eq!(bus.read("{r}:f", 0, 0).unwrap().entries, vec![]);
    assert_eq!(bus.read("{r}:none", 0, 10).unwrap(), Default::default());

    // hincr: up, down, and a field at zero is gone.
    assert_eq!(bus.hincr("{r}:nodes", "a", 2).unwrap(), 3);
    assert_eq!(bus.hincr("{r}:nodes", "a", -3).unwrap(), 0);
    let mut h = bus.hgetall("{r}:nodes").unwrap();
    h.sort();
    assert_eq!(h, vec![("b".to_owned(), "1".to_owned())]);
    assert_eq!(bus.hincr("{r}:nodes", "b", -5).unwrap(), -4);
    assert!(
        bus.hgetall("{r}:nodes").unwrap().is_empty(),
        "left empty: gone"
    );
    bus.hset("{r}:h", &[("x", "1"), ("y", "2")]).unwrap();
    bus.hdel("{r}:h", &["x"]).unwrap();
    assert_eq!(
        bus.hgetall("{r}:h").unwrap(),
        vec![("y".into(), "2".into())]
    );
    bus.hdel("{r}:h", &["y"]).unwrap();
    assert!(bus.hgetall("{r}:h").unwrap().is_empty());

    // hset_if: a missing field holds "", and of two claims reading one value only the
    // first wins.
    assert!(bus
        .hset_if("{r}:s", "gen", "", &[("gen", "1"), ("node", "a")])
        .unwrap());
    assert!(!bus
        .hset_if("{r}:s", "gen", "", &[("gen", "1"), ("node", "b")])
        .unwrap());
    assert!(bus
        .hset_if("{r}:s", "gen", "1", &[("gen", "2"), ("node", "b")])
        .unwrap());
    assert!(!bus.hset_if("{r}:s", "gen", "1", &[("node", "c")]).unwrap());
    let mut h = bus.hgetall("{r}:s").unwrap();
    h.sort();
    assert_eq!(
        h,
        vec![("gen".into(), "2".into()), ("node".into(), "b".into())]
    );

    // claim: once, until its ttl passes.
    assert!(bus.claim("k", "me", Duration::from_millis(300)).unwrap());
    assert!(!bus.claim("k", "you", Duration::from_secs(5)).unwrap());
    std::thread::sleep(Duration::from_millis(450));
    assert!(bus.claim("k", "you", Duration::from_secs(5)).unwrap());

    // append: bounded, hash set, positions below the last one skipped, then expiry. A
    // fence on a missing hash writes (a new record).
    let ttl = Duration::from_millis(400);
    let wrote = bus.append(
        "{s}:q",
        &[(1, b"m1"), (2, b"m2"), (3, b"m3")],
        2,
        "{s}:h",
        &[("seq", "3")],
        ttl,
        Some(("gen", "")),
    );
    assert!(wrote.unwrap());
    let q = bus.read("{s}:q", 0, 10).unwrap();
    assert_eq!((q.head, q.first, q.entries.len()), (3, 2, 2));
    assert!(!q.complete_after(0) && q.complete_after(1));
    let entries: &[(u64, &[u8])] = &[(2, b"again"), (4, b"m4")];
    let wrote = bus.append("{s}:q", entries, 2, "{s}:h", &[("seq", "4")], ttl, None);
    assert!(wrote.unwrap());
    let q = bus.read("{s}:q", 0, 10).unwrap();
    assert_eq!(q.entries, vec![(3, b"m3".to_vec()), (4, b"m4".to_vec())]);
    assert_eq!(
        bus.hgetall("{s}:h").unwrap(),
        vec![("seq".into(), "4".into())]
    );
    // The fence: once the record's generation moved on, the old one writes nothing.
    assert!(bus.hset_if("{s}:h", "gen", "", &[("gen", "1")]).unwrap());
    let fenced = bus.append(
        "{s}:q",
        &[(5, b"m5")],
        2,
        "{s}:h",
        &[("seq", "5")],
        ttl,
        Some(("gen", "")),
    );
    assert!(!fenced.unwrap(), "a stale generation is refused");
    let q = bus.read("{s}:q", 0, 10).unwrap();
    assert_eq!(q.head, 4, "nothing logged by the refused append");
    let mut h = bus.hgetall("{s}:h").unwrap();
    h.sort();
    assert_eq!(
        h,
        vec![("gen".into(), "1".into()), ("seq".into(), "4".into())]
    );
    let wrote = bus.append(
        "{s}:q",
        &[(5, b"m5")],
        2,
        "{s}:h",
        &[("seq", "5")],
        ttl,
        Some(("gen", "1")),
    );
    assert!(wrote.unwrap(), "the current generation writes");
    assert_eq!(bus.read("{s}:q", 0, 10).unwrap().head, 5);
    wait_until("the session log expires", Duration::from_secs(3), || {
        bus.read("{s}:q", 0, 10).unwrap().head == 0
    });
    assert!(bus.hgetall("{s}:h").unwrap().is_empty());

    // del: the feed and its counter; a feed made again starts at 1.
    bus.del(&["{r}:f", "{r}:h"]).unwrap();
    assert_eq!(bus.read("{r}:f", 0, 10).unwrap(), Default::default());
    bus.hset("{r}:nodes", &[("a", "1")]).unwrap();
    assert_eq!(bus.publish("{r}:f", to, b"three").unwrap(), 1);
    assert_eq!(take(&rx, 1), vec![(1, b"three".to_vec())]);

    // send: position 0, logged nowhere; binary payloads with spaces survive.
    let odd = b"a b\0\xff\r\n c";
    bus.send("p:a", odd).unwrap();
    assert_eq!(take(&rx, 1), vec![(0, odd.to_vec())]);
    assert!(bus.commands() > 20, "{}", bus.commands());
    bus.close();
    bus.close();
}

#[test]
fn redis_bus_trimmed_feed_is_not_complete() {
    let server = RedisServer::start();
    let bus = RedisBus::new(RedisBusConfig::new([server.url.as_str()]).feed_len(10)).unwrap();
    for i in 1..=300u64 {
        let pos = bus
            .publish("{t}:feed", Fanout::Channel("nobody"), &i.to_be_bytes())
            .unwrap();
        assert_eq!(pos, i);
    }
    let r = bus.read("{t}:feed", 0, 1000).unwrap();
    assert_eq!(r.head, 300);
    assert!(
        r.first > 1,
        "MAXLEN ~ 10 trimmed nothing: first {}",
        r.first
    );
    assert!(r.entries.len() < 300 && r.entries.len() >= 10);
    assert_eq!(r.entries.last().unwrap().0, 300);
    assert!(!r.complete_after(0) && !r.complete_after(r.first - 2));
    assert!(r.complete_after(r.first - 1) && r.complete_after(299));
    let r = bus.read("{t}:feed", 295, 1000).unwrap();
    let got: Vec<u64> = r.entries.iter().map(|e| e.0).collect();
    assert_eq!(got, vec![296, 297, 298, 299, 300]);
    assert_eq!(r.entries[0].1, 296u64.to_be_bytes().to_vec());
}

#[test]
fn redis_bus_fanout_reaches_exactly_the_nodes_in_order() {
    let server = RedisServer::start();
    let nodes: Vec<RedisBus> = (0..3)
        .map(|_| RedisBus::open(&server.url).unwrap())
        .collect();
    let heard: Vec<Heard> = ["a", "b", "c"]
        .iter()
        .zip(&nodes)
        .map(|(name, bus)| listen(bus, &[&format!("node:{name}"), "all"]))
        .collect();
    let bus = &nodes[0];
    bus.hset("{room}:nodes", &[("a", "1"), ("b", "1")]).unwrap();
    let to = Fanout::Nodes {
        hash: "{room}:nodes",
        prefix: "node:",
    };
    let sent: Vec<(u64, Vec<u8>)> = (1..=50u64)
        .map(|i| {
            let m = format!("m{i}").into_bytes();
            (bus.publish("{room}:feed", to, &m).unwrap(), m)
        })
        .collect();
    assert_eq!(
        sent.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    assert_eq!(take(&heard[0], 50), sent);
    assert_eq!(take(&heard[1], 50), sent);
    quiet(&heard[2]);

    let pos = nodes[2]
        .publish("{bc}:feed", Fanout::Channel("all"), b"to all")
        .unwrap();
    assert_eq!(pos, 1);
    for rx in &heard {
        assert_eq!(take(rx, 1), vec![(1, b"to all".to_vec())]);
    }
    // An empty nodes hash reaches nobody, and the message is still logged.
    let nobody = Fanout::Nodes {
        hash: "{room}:empty",
        prefix: "node:",
    };
    assert_eq!(bus.publish("{room}:feed", nobody, b"x").unwrap(), 51);
    for rx in &heard {
        quiet(rx);
    }
    assert_eq!(
        bus.read("{room}:feed", 50, 10).unwrap().entries,
        vec![(51, b"x".to_vec())]
    );
    for n in &nodes {
        n.close();
    }
    // Closed: nothing more is heard.
    nodes[1].send("node:a", b"late").unwrap();
    quiet(&heard[0]);
}

/// A tag whose keys the bus places on instance `want`.
fn tag_on(bus: &RedisBus, url: &str) -> String {
    (0..1000)
        .map(|i| format!("room{i}"))
        .find(|t| bus.instance_of(&format!("{{{t}}}")) == url)
        .expect("a tag on each instance")
}

#[test]
fn redis_bus_two_instances_spread_keys_and_every_node_hears_both() {
    let s = [RedisServer::start(), RedisServer::start()];
    let urls = [s[0].url.as_str(), s[1].url.as_str()];
    let node_a = RedisBus::new(RedisBusConfig::new(urls)).unwrap();
    // Another node lists the instances in another order: the same placement.
    let node_b = RedisBus::new(RedisBusConfig::new([urls[1], urls[0]])).unwrap();
    let heard_a = listen(&node_a, &["node:a", "all"]);
    let heard_b = listen(&node_b, &["node:b", "all"]);
    assert_eq!(
        (node_a.epoch(), node_b.epoch()),
        (2, 2),
        "one reader per instance"
    );
    let mut direct = [direct(&s[0]), direct(&s[1])];
    for (i, url) in urls.iter().enumerate() {
        let tag = tag_on(&node_a, url);
        let (feed, hash) = (format!("{{{tag}}}:feed"), format!("{{{tag}}}:nodes"));
        assert_eq!(node_b.instance_of(&feed), *url);
        node_b.hset(&hash, &[("a", "1"), ("b", "1")]).unwrap();
        let to = Fanout::Nodes {
            hash: &hash,
            prefix: "node:",
        };
        let m = format!("via {i}").into_bytes();
        assert_eq!(node_a.publish(&feed, to, &m).unwrap(), 1);
        for key in [&feed, &hash, &format!("{feed}:n")] {
            assert!(exists(&mut direct[i], key), "{key} not on instance {i}");
            assert!(
                !exists(&mut direct[1 - i], key),
                "{key} on instance {}",
                1 - i
            );
        }
        assert_eq!(take(&heard_a, 1), vec![(1, m.clone())]);
        assert_eq!(take(&heard_b, 1), vec![(1, m)]);
        let all = format!("all via {i}").into_bytes();
        assert_eq!(
            node_b.publish(&feed, Fanout::Channel("all"), &all).unwrap(),
            2
        );
        assert_eq!(take(&heard_a, 1), vec![(2, all.clone())]);
        assert_eq!(take(&heard_b, 1), vec![(2, all)]);
        let r = node_b.read(&feed, 0, 10).unwrap();
        assert_eq!((r.head, r.entries.len()), (2, 2));
    }
    // Keys without a tag spread too: some on each instance.
    let on0 = (0..100)
        .filter(|i| node_a.instance_of(&format!("k{i}")) == urls[0])
        .count();
    assert!((20..=80).contains(&on0), "{on0} of 100 on instance 0");
    node_a.close();
    node_b.close();
}

#[test]
fn redis_bus_survives_a_restart_of_redis() {
    let mut server = RedisServer::start();
    let bus = RedisBus::new(fast(&[&server.url])).unwrap();
    let rx = listen(&bus, &["all"]);
    assert_eq!(
        bus.publish("{f}", Fanout::Channel("all"), b"before")
            .unwrap(),
        1
    );
    assert_eq!(take(&rx, 1), vec![(1, b"before".to_vec())]);
    let epoch = bus.epoch();

    server.stop();
    for _ in 0..3 {
        let t = Instant::now();
        let err = bus
            .publish("{f}", Fanout::Channel("all"), b"lost")
            .unwrap_err();
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        assert!(
            err.0.contains(&server.url) && err.0.contains("publish"),
            "{err}"
        );
    }
    assert!(bus.read("{f}", 0, 10).is_err());
    assert!(bus.hset("h", &[("a", "1")]).is_err());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        bus.epoch(),
        epoch,
        "no reader is subscribed while Redis is down"
    );

    server.restart();
    wait_until("the reader resubscribes", Duration::from_secs(5), || {
        bus.epoch() > epoch
    });
    // The data is gone (no persistence): the feed starts again.
    assert_eq!(
        bus.publish("{f}", Fanout::Channel("all"), b"after")
            .unwrap(),
        1
    );
    assert_eq!(take(&rx, 1), vec![(1, b"after".to_vec())]);
    let r = bus.read("{f}", 0, 10).unwrap();
    assert_eq!(r.entries, vec![(1, b"after".to_vec())]);
    assert!(
        !r.complete_after(5),
        "a log that started over is not complete"
    );
    bus.close();
}

#[test]
fn redis_bus_detects_a_frozen_redis() {
    let server = RedisServer::start();
    let bus = RedisBus::new(fast(&[&server.url])).unwrap();
    let rx = listen(&bus, &["all"]);
    assert_eq!(bus.publish("{f}", Fanout::Channel("all"), b"1").unwrap(), 1);
    assert_eq!(take(&rx, 1), vec![(1, b"1".to_vec())]);
    let epoch = bus.epoch();

    server.freeze();
    let t = Instant::now();
    let err = bus
        .publish("{f}", Fanout::Channel("all"), b"2")
        .unwrap_err();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "{took:?}: {err}"
    );
    // Long enough for the reader to miss its pong (200 ms + 500 ms) and give up.
    std::thread::sleep(Duration::from_millis(1500));
    server.thaw();
    wait_until("the reader reconnects", Duration::from_secs(8), || {
        bus.epoch() > epoch
    });
    // The timed-out publish may have run once the server woke up: 2 or 3 now.
    let pos = bus.publish("{f}", Fanout::Channel("all"), b"3").unwrap();
    assert!(pos == 2 || pos == 3, "{pos}");
    // "2" may be heard first, if it ran after the new subscription.
    let mut got = take(&rx, 1);
    if got[0].1 == b"2" {
        got = take(&rx, 1);
    }
    assert_eq!(got, vec![(pos, b"3".to_vec())]);
    bus.close();
}

fn subscribers(c: &mut redis::Connection, channel: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(c)
        .unwrap();
    n
}

#[test]
fn redis_bus_close_and_the_last_drop_unsubscribe_and_a_down_store_fails_fast() {
    let mut server = RedisServer::start();
    let mut c = direct(&server);
    let bus = RedisBus::new(fast(&[&server.url])).unwrap();
    let _rx = listen(&bus, &["all"]);
    assert_eq!(subscribers(&mut c, "all"), 1);
    let other = bus.clone();
    drop(other);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        subscribers(&mut c, "all"),
        1,
        "a clone's drop keeps the bus"
    );
    let t = Instant::now();
    drop(bus);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    wait_until("the reader unsubscribes", Duration::from_secs(3), || {
        subscribers(&mut c, "all") == 0
    });

    let bus = RedisBus::new(fast(&[&server.url])).unwrap();
    let _rx = listen(&bus, &["all"]);
    drop(c);
    server.stop();
    // Readers in their backoff stop at once.
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    bus.close();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A first subscription to a store that is away fails, and quickly.
    let down = RedisBus::new(fast(&[&server.url])).unwrap();
    let t = Instant::now();
    let err = down
        .subscribe(&["all".into()], Arc::new(|_, _| {}))
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(err.0.contains(&server.url), "{err}");
    assert_eq!(down.epoch(), 0);
}
