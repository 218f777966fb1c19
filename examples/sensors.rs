//! A UDP sensor collector: many devices send readings as datagrams, one aggregation process
//! under a supervisor keeps per-sensor statistics, and a summary comes out periodically.
//!
//! ```text
//! cargo run --release --example sensors -- --addr 127.0.0.1:7100 --every 5
//! # a device (any UDP sender; the crate's own line client needs nothing installed):
//! printf 'kitchen.temp 21.5\nkitchen.hum 40\n' | cargo run --example wsc -- udp://127.0.0.1:7100
//! ```
//!
//! A datagram holds one or more lines `SENSOR VALUE` (a name of 1 to 64 bytes without
//! spaces, a finite number). The UDP handler parses them on the runtime's handler threads
//! and sends each reading to the `sensors.aggregator` process; malformed lines are counted
//! and dropped, never a panic. The aggregator is a permanent child of a one-for-one
//! supervisor: if it dies, the supervisor starts a fresh one under the same name and the
//! handler finds it on its next send (the statistics of the dead one are lost; the counts
//! of readings that could not be delivered are kept in [`Counters`]). Every `--every`
//! seconds the aggregator closes its window and publishes a [`Summary`], which `main`
//! prints as one line per sensor. SIGINT / SIGTERM stop it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use sockloop::handler::DatagramHandler;
use sockloop::supervise::{
    ChildSpec, Context, Control, Handled, Node, Process, ProcessRef, ReplyTo, SendError, Strategy,
    SupervisorRef, SupervisorSpec,
};
use sockloop::{Addr, DatagramSender, Listen, Runtime, Server};

/// The aggregator's registered name.
pub const AGGREGATOR: &str = "sensors.aggregator";
/// Longest sensor name, in bytes.
pub const MAX_NAME: usize = 64;

/// Statistics of one sensor over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Readings.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sum of the values (the mean is `sum / count`).
    pub sum: f64,
    /// The latest value.
    pub last: f64,
}

impl Stats {
    fn new(v: f64) -> Stats {
        Stats {
            count: 1,
            min: v,
            max: v,
            sum: v,
            last: v,
        }
    }

    fn add(&mut self, v: f64) {
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.last = v;
    }

    /// The mean value.
    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// One window of readings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    /// Windows closed before this one by this aggregator instance.
    pub window: u64,
    /// Per sensor, by name.
    pub sensors: BTreeMap<String, Stats>,
}

impl Summary {
    /// Readings in the window, over all sensors.
    pub fn readings(&self) -> u64 {
        self.sensors.values().map(|s| s.count).sum()
    }
}

/// The aggregator's mailbox.
pub enum Msg {
    /// A reading from a device.
    Reading(String, f64),
    /// Close the window and publish it (sent by the aggregator's own interval timer).
    Tick,
    /// The current (open) window, without closing it.
    Peek(ReplyTo<Summary>),
}

impl Clone for Msg {
    /// Only `Tick` is ever cloned (by the interval timer).
    fn clone(&self) -> Msg {
        Msg::Tick
    }
}

/// The aggregation process: one open window, published and reset on every tick.
struct Aggregator {
    every: Duration,
    current: Summary,
    publish: Sender<Summary>,
}

impl Process for Aggregator {
    type Msg = Msg;

    fn init(&mut self, ctx: &mut Context<Msg>) -> Result<(), sockloop::supervise::BoxError> {
        ctx.send_interval(self.every, Msg::Tick);
        Ok(())
    }

    fn handle(&mut self, _ctx: &mut Context<Msg>, msg: Msg) -> Handled {
        match msg {
            Msg::Reading(name, v) => match self.current.sensors.get_mut(&name) {
                Some(s) => s.add(v),
                None => {
                    self.current.sensors.insert(name, Stats::new(v));
                }
            },
            Msg::Tick => {
                let next = Summary {
                    window: self.current.window + 1,
                    sensors: BTreeMap::new(),
                };
                let done = std::mem::replace(&mut self.current, next);
                let _ = self.publish.send(done); // nobody listening is fine
            }
            Msg::Peek(reply) => {
                reply.reply(self.current.clone());
            }
        }
        Ok(Control::Continue)
    }
}

/// What the UDP side counted.
#[derive(Debug, Default)]
pub struct Counters {
    /// Readings handed to the aggregator.
    pub accepted: AtomicU64,
    /// Lines that were not `SENSOR VALUE`.
    pub malformed: AtomicU64,
    /// Readings lost because no aggregator was running or its mailbox was full.
    pub undelivered: AtomicU64,
}

/// Parses one line `SENSOR VALUE`.
pub fn parse_reading(line: &str) -> Option<(&str, f64)> {
    let mut parts = line.split_ascii_whitespace();
    let (name, value) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || name.len() > MAX_NAME {
        return None;
    }
    let v: f64 = value.parse().ok()?;
    v.is_finite().then_some((name, v))
}

/// The UDP handler: parses datagrams and forwards readings to the aggregator.
struct Intake {
    node: Node,
    to: Option<ProcessRef<Msg>>,
    counters: Arc<Counters>,
}

impl Intake {
    fn forward(&mut self, name: &str, v: f64) {
        let mut msg = Msg::Reading(name.to_owned(), v);
        for _ in 0..2 {
            let to = match &self.to {
                Some(to) => to,
                None => match self.node.lookup::<Msg>(AGGREGATOR) {
                    Some(r) => self.to.insert(r),
                    None => break,
                },
            };
            match to.send(msg) {
                Ok(()) => {
                    self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // A restarted aggregator has a new mailbox: look it up once more.
                Err(SendError::NoProcess(m)) => {
                    self.to = None;
                    msg = m;
                }
                Err(_) => break,
            }
        }
        self.counters.undelivered.fetch_add(1, Ordering::Relaxed);
    }
}

impl DatagramHandler for Intake {
    fn on_datagram(&mut self, _: &DatagramSender, _: &Addr, data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match parse_reading(line) {
                Some((name, v)) => self.forward(name, v),
                None => {
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A running collector.
pub struct Collector {
    /// The UDP server.
    pub server: Server,
    /// The aggregator's supervisor.
    pub supervisor: SupervisorRef,
    /// The UDP side's counters.
    pub counters: Arc<Counters>,
    /// Every closed window, as the aggregator publishes it.
    pub summaries: Receiver<Summary>,
    node: Node,
}

impl Collector {
    /// The aggregator's open window.
    ///
    /// # Errors
    ///
    /// When no aggregator answers within `timeout`.
    pub fn peek(&self, timeout: Duration) -> Result<Summary, String> {
        self.node
            .call(AGGREGATOR, Msg::Peek, timeout)
            .map_err(|e| e.to_string())
    }
}

/// Starts the aggregator under a supervisor on `rt`'s node, then the UDP server on `addr`.
///
/// # Errors
///
/// When the supervisor cannot start or the address cannot be bound.
pub fn start(rt: &Runtime, addr: &str, every: Duration) -> Result<Collector, String> {
    let node = rt.node().clone();
    let (publish, summaries) = crossbeam_channel::bounded(64);
    let make = move || Aggregator {
        every,
        current: Summary::default(),
        publish: publish.clone(),
    };
    let supervisor = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(10))
        .child(ChildSpec::worker("aggregator", make).register_as(AGGREGATOR))
        .start(&node)
        .map_err(|e| format!("supervisor: {e}"))?;
    let counters = Arc::new(Counters::default());
    let (n, c) = (node.clone(), counters.clone());
    let server = rt
        .serve(Listen::udp(addr))
        .datagram(move || Intake {
            node: n.clone(),
            to: None,
            counters: c.clone(),
        })
        .map_err(|e| e.to_string())?;
    Ok(Collector {
        server,
        supervisor,
        counters,
        summaries,
        node,
    })
}

/// One summary as text: a header line, then a line per sensor.
pub fn render(s: &Summary, c: &Counters) -> String {
    let mut out = format!(
        "window {}: {} readings from {} sensors (malformed so far {}, undelivered {})\n",
        s.window,
        s.readings(),
        s.sensors.len(),
        c.malformed.load(Ordering::Relaxed),
        c.undelivered.load(Ordering::Relaxed),
    );
    for (name, st) in &s.sensors {
        out.push_str(&format!(
            "  {name:<24} n={:<6} min={:<10.3} mean={:<10.3} max={:<10.3} last={:.3}\n",
            st.count,
            st.min,
            st.mean(),
            st.max,
            st.last
        ));
    }
    out
}

#[allow(dead_code)]
fn main() {
    sockloop::signal::block_termination();
    let mut addr = "127.0.0.1:7100".to_owned();
    let mut every = Duration::from_secs(5);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--addr", Some(a)) => addr = a,
            ("--every", Some(s)) => match s.parse() {
                Ok(secs) => every = Duration::from_secs(secs),
                Err(_) => exit_usage("--every takes seconds"),
            },
            _ => exit_usage(&format!("unexpected {flag}")),
        }
    }
    let rt = Runtime::new().unwrap_or_else(|e| exit_usage(&e.to_string()));
    let c = start(&rt, &addr, every).unwrap_or_else(|e| exit_usage(&e));
    println!("sensors: collecting on udp://{}", c.server.local_addr());
    let (stop_tx, stop) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = stop_tx.send(sockloop::signal::wait_termination());
    });
    loop {
        crossbeam_channel::select! {
            recv(c.summaries) -> s => match s {
                Ok(s) => print!("{}", render(&s, &c.counters)),
                Err(_) => break,
            },
            recv(stop) -> sig => {
                println!("signal {}: stopping", sig.unwrap_or_default());
                break;
            }
        }
    }
    c.server.shutdown(Duration::from_secs(2));
    rt.shutdown(Duration::from_secs(2));
}

fn exit_usage(msg: &str) -> ! {
    eprintln!("sensors: {msg}");
    eprintln!("usage: sensors [--addr HOST:PORT] [--every SECS]");
    std::process::exit(2)
}
