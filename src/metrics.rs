//! Metrics: one view over servers, hubs and supervision, with stable names and units, and
//! the Prometheus text exposition an HTTP hook serves at `/metrics` in one line.
//!
//! A [`Metrics`] is a cloneable registry of *sources*: servers ([`add_server`]), hubs
//! ([`add_hub`]), a node's processes ([`add_node`]), supervisors ([`add_supervisor`]) and
//! process lifecycle counts fed from the node's hook ([`record`]). Nothing is counted twice:
//! a scrape reads the counters the library keeps anyway ([`ServerStats`],
//! [`HubStats`](crate::hub::HubStats)), so an idle registry costs nothing. Every metric
//! name, type, unit and label is listed in `docs/METRICS.md` and in the table below; names
//! are stable across releases (a rename would be a breaking change).
//!
//! | metric | type | unit | labels |
//! |---|---|---|---|
//! | `sockloop_server_connections_open` | gauge | connections | `server` |
//! | `sockloop_server_connections_accepted_total` | counter | connections | `server` |
//! | `sockloop_server_connections_rejected_total` | counter | connections | `server` |
//! | `sockloop_server_connections_closed_total` | counter | connections | `server` |
//! | `sockloop_server_socket_received_bytes_total` | counter | bytes | `server` |
//! | `sockloop_server_socket_sent_bytes_total` | counter | bytes | `server` |
//! | `sockloop_server_received_bytes_total` | counter | bytes | `server` |
//! | `sockloop_server_sent_bytes_total` | counter | bytes | `server` |
//! | `sockloop_server_queued_bytes` | gauge | bytes | `server` |
//! | `sockloop_server_dropped_messages_total` | counter | messages | `server` |
//! | `sockloop_server_discarded_bytes_total` | counter | bytes | `server` |
//! | `sockloop_server_datagrams_received_total` | counter | datagrams | `server` |
//! | `sockloop_server_datagrams_sent_total` | counter | datagrams | `server` |
//! | `sockloop_hub_connections` | gauge | connections | `hub` |
//! | `sockloop_hub_users` | gauge | users | `hub` |
//! | `sockloop_hub_rooms` | gauge | rooms | `hub` |
//! | `sockloop_hub_messages_received_total` | counter | messages | `hub` |
//! | `sockloop_hub_messages_sent_total` | counter | messages | `hub` |
//! | `sockloop_hub_dropped_messages_total` | counter | messages | `hub` |
//! | `sockloop_hub_errors_total` | counter | error events | `hub` |
//! | `sockloop_hub_acks_pending` | gauge | recipients | `hub` |
//! | `sockloop_processes` | gauge | processes | `node` |
//! | `sockloop_supervisor_children` | gauge | child specs | `supervisor` |
//! | `sockloop_supervisor_children_active` | gauge | processes | `supervisor` |
//! | `sockloop_process_starts_total` | counter | processes | — |
//! | `sockloop_process_exits_total` | counter | processes | `reason` (`normal`, `abnormal`) |
//! | `sockloop_process_restarts_total` | counter | restarts | — |
//! | `sockloop_supervisor_escalations_total` | counter | escalations | — |
//!
//! [`add_server`]: Metrics::add_server
//! [`add_hub`]: Metrics::add_hub
//! [`add_node`]: Metrics::add_node
//! [`add_supervisor`]: Metrics::add_supervisor
//! [`record`]: Metrics::record
//!
//! # Examples
//!
//! Serving `/metrics` from a WebSocket server's HTTP hook:
//!
//! ```no_run
//! use sockloop::metrics::Metrics;
//! use sockloop::{http::Response, on_message, Listen, Runtime, WsConn, WsMessage, WsServerConfig};
//!
//! let rt = Runtime::new()?;
//! let metrics = Metrics::new();
//! let m = metrics.clone();
//! let cfg = WsServerConfig::new().http(move |req| match req.path() {
//!     "/metrics" => m.response(),
//!     _ => Response::not_found(),
//! });
//! let echo = on_message(|ws: &WsConn, m: WsMessage<'_>| {
//!     if let WsMessage::Text(t) = m {
//!         let _ = ws.send_text(t);
//!     }
//! });
//! let server = rt.serve(Listen::tcp("127.0.0.1:9001")).websocket(cfg, echo)?;
//! metrics.add_server("echo", &server).add_node("main", rt.node());
//! # Ok::<(), sockloop::Error>(())
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::hub::Hub;
use crate::proto::http::Response;
use crate::server::observe::ServerStats;
use crate::server::Server;
use crate::supervise::{Node, SupervisorRef, SystemEvent};

/// The content type of the Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a scrape waits for a supervisor to count its children.
const SUPERVISOR_TIMEOUT: Duration = Duration::from_millis(500);

/// Counter or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever grows (until the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One value of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name (stable; see the module's table).
    pub name: &'static str,
    /// What it measures, with its unit.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Label names and values.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

/// Where the samples of one scrape go.
#[derive(Debug, Default)]
pub struct Samples(Vec<Sample>);

impl Samples {
    /// Adds a sample.
    pub fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        let labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self.0.push(Sample {
            name,
            help,
            kind,
            labels,
            value,
        });
    }

    /// The samples, in the order they were added.
    pub fn into_vec(self) -> Vec<Sample> {
        self.0
    }
}

type Source = Arc<dyn Fn(&mut Samples) + Send + Sync>;

/// Process lifecycle counts, fed by [`Metrics::record`].
#[derive(Debug, Default)]
struct Lifecycle {
    starts: AtomicU64,
    exits_normal: AtomicU64,
    exits_abnormal: AtomicU64,
    restarts: AtomicU64,
    escalations: AtomicU64,
}

/// A cloneable registry of metric sources; clones share it. See the [module](self) docs for
/// the metrics and their names.
#[derive(Clone, Default)]
pub struct Metrics {
    sources: Arc<Mutex<Vec<Source>>>,
    lifecycle: Arc<Lifecycle>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("sources", &self.lock().len())
            .finish()
    }
}

impl Metrics {
    /// An empty registry (the process lifecycle counters are always exported).
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Source>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a source: a function called on every scrape with the samples to fill.
    pub fn add_source(&self, f: impl Fn(&mut Samples) + Send + Sync + 'static) -> &Self {
        self.lock().push(Arc::new(f));
        self
    }

    /// Exports a server's counters with the label `server="name"`.
    pub fn add_server(&self, name: &str, server: &Server) -> &Self {
        let (name, server) = (name.to_owned(), server.clone());
        self.add_source(move |s| {
            server_samples(s, &name, &server.stats(), server.open_connections())
        })
    }

    /// Exports a hub's counters with the label `hub="name"`.
    pub fn add_hub(&self, name: &str, hub: &Hub) -> &Self {
        let (name, hub) = (name.to_owned(), hub.clone());
        self.add_source(move |s| hub_samples(s, &name, &hub))
    }

    /// Exports the number of live processes on `node` with the label `node="name"`.
    pub fn add_node(&self, name: &str, node: &Node) -> &Self {
        let (name, node) = (name.to_owned(), node.clone());
        self.add_source(move |s| {
            let n = node.process_count() as f64;
            let help = "Live processes on the node.";
            s.push(
                "sockloop_processes",
                help,
                Kind::Gauge,
                &[("node", &name)],
                n,
            );
        })
    }

    /// Exports a supervisor's child counts with the label `supervisor="name"` (asked at each
    /// scrape; a supervisor that does not answer within 500 ms is left out of that scrape).
    pub fn add_supervisor(&self, name: &str, sup: &SupervisorRef) -> &Self {
        let (name, sup) = (
            name.to_owned(),
            sup.clone().with_timeout(SUPERVISOR_TIMEOUT),
        );
        self.add_source(move |s| {
            let Ok(c) = sup.count_children() else { return };
            let l = [("supervisor", name.as_str())];
            let help = "Child specs of the supervisor, running or not.";
            s.push(
                "sockloop_supervisor_children",
                help,
                Kind::Gauge,
                &l,
                c.specs as f64,
            );
            let help = "Children of the supervisor running now.";
            let active = c.active as f64;
            s.push(
                "sockloop_supervisor_children_active",
                help,
                Kind::Gauge,
                &l,
                active,
            );
        })
    }

    /// Counts a node's system event (process starts, exits, restarts, escalations). Call it
    /// from the node's hook: `node.set_hook(move |e| metrics.record(e))`, or from your own.
    pub fn record(&self, event: &SystemEvent) {
        let l = &self.lifecycle;
        let counter = match event {
            SystemEvent::Started { .. } => &l.starts,
            SystemEvent::Exited { reason, .. } if reason.is_normal() => &l.exits_normal,
            SystemEvent::Exited { .. } => &l.exits_abnormal,
            SystemEvent::Restarted { .. } => &l.restarts,
            SystemEvent::SupervisorEscalated { .. } => &l.escalations,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every sample, read now.
    pub fn samples(&self) -> Vec<Sample> {
        let mut out = Samples::default();
        let sources: Vec<Source> = self.lock().clone(); // sources run unlocked
        for f in &sources {
            f(&mut out);
        }
        self.lifecycle_samples(&mut out);
        out.into_vec()
    }

    fn lifecycle_samples(&self, s: &mut Samples) {
        let l = &self.lifecycle;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let c = Kind::Counter;
        s.push(
            "sockloop_process_starts_total",
            "Processes started.",
            c,
            &[],
            g(&l.starts),
        );
        let help = "Processes that exited, by whether the exit was normal.";
        let name = "sockloop_process_exits_total";
        s.push(name, help, c, &[("reason", "normal")], g(&l.exits_normal));
        s.push(
            name,
            help,
            c,
            &[("reason", "abnormal")],
            g(&l.exits_abnormal),
        );
        let help = "Children restarted by their supervisor.";
        s.push(
            "sockloop_process_restarts_total",
            help,
            c,
            &[],
            g(&l.restarts),
        );
        let help = "Supervisors that exceeded their restart intensity and gave up.";
        let name = "sockloop_supervisor_escalations_total";
        s.push(name, help, c, &[], g(&l.escalations));
    }

    /// The Prometheus text exposition (format 0.0.4) of every sample: one `# HELP` and
    /// `# TYPE` per metric, then its samples.
    pub fn prometheus(&self) -> String {
        render(&self.samples())
    }

    /// An HTTP 200 response with [`prometheus`](Self::prometheus) as its body, for an HTTP
    /// hook's `/metrics` route.
    pub fn response(&self) -> Response {
        Response::new(200)
            .header("Content-Type", CONTENT_TYPE)
            .header("Cache-Control", "no-store")
            .body(self.prometheus())
    }
}

/// The text exposition of `samples`, grouped by metric name in order of first appearance.
pub fn render(samples: &[Sample]) -> String {
    let mut names: Vec<&'static str> = Vec::new();
    for s in samples {
        if !names.contains(&s.name) {
            names.push(s.name);
        }
    }
    let mut out = String::new();
    for name in names {
        let mut group = samples.iter().filter(|s| s.name == name).peekable();
        let Some(first) = group.peek() else { continue };
        let _ = writeln!(out, "# HELP {name} {}", first.help);
        let _ = writeln!(out, "# TYPE {name} {}", first.kind.name());
        for s in group {
            out.push_str(name);
            write_labels(&mut out, &s.labels);
            let _ = writeln!(out, " {}", number(s.value));
        }
    }
    out
}

fn write_labels(out: &mut String, labels: &[(&'static str, String)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A value as Prometheus writes it: integers without a fraction.
fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn server_samples(s: &mut Samples, name: &str, st: &ServerStats, open: usize) {
    let l = [("server", name)];
    let (c, g) = (Kind::Counter, Kind::Gauge);
    let rows: [(&'static str, &'static str, Kind, u64); 13] = [
        (
            "sockloop_server_connections_open",
            "Connections open now.",
            g,
            open as u64,
        ),
        (
            "sockloop_server_connections_accepted_total",
            "Connections accepted, rejected ones included.",
            c,
            st.accepted,
        ),
        (
            "sockloop_server_connections_rejected_total",
            "Connections closed at once because the server was at max_connections.",
            c,
            st.rejected,
        ),
        (
            "sockloop_server_connections_closed_total",
            "Connections closed.",
            c,
            st.closed,
        ),
        (
            "sockloop_server_socket_received_bytes_total",
            "Bytes read from sockets (TLS records included).",
            c,
            st.bytes_in,
        ),
        (
            "sockloop_server_socket_sent_bytes_total",
            "Bytes written to sockets (TLS records included).",
            c,
            st.bytes_out,
        ),
        (
            "sockloop_server_received_bytes_total",
            "Application bytes received (after TLS decryption).",
            c,
            st.plain_bytes_in,
        ),
        (
            "sockloop_server_sent_bytes_total",
            "Application bytes sent (before TLS encryption).",
            c,
            st.plain_bytes_out,
        ),
        (
            "sockloop_server_queued_bytes",
            "Bytes queued for peers now.",
            g,
            st.queued_bytes,
        ),
        (
            "sockloop_server_dropped_messages_total",
            "Messages dropped by the drop policy.",
            c,
            st.dropped,
        ),
        (
            "sockloop_server_discarded_bytes_total",
            "Queued bytes thrown away because their connection closed first.",
            c,
            st.discarded_bytes,
        ),
        (
            "sockloop_server_datagrams_received_total",
            "Datagrams received.",
            c,
            st.datagrams_in,
        ),
        (
            "sockloop_server_datagrams_sent_total",
            "Datagrams sent.",
            c,
            st.datagrams_out,
        ),
    ];
    for (metric, help, kind, v) in rows {
        s.push(metric, help, kind, &l, v as f64);
    }
}

fn hub_samples(s: &mut Samples, name: &str, hub: &Hub) {
    let st = hub.stats();
    let l = [("hub", name)];
    let (c, g) = (Kind::Counter, Kind::Gauge);
    let rows: [(&'static str, &'static str, Kind, u64); 8] = [
        (
            "sockloop_hub_connections",
            "Connections open on the hub.",
            g,
            st.connections as u64,
        ),
        (
            "sockloop_hub_users",
            "Distinct users online.",
            g,
            st.users as u64,
        ),
        ("sockloop_hub_rooms", "Rooms.", g, st.rooms as u64),
        (
            "sockloop_hub_messages_received_total",
            "Text and binary messages received.",
            c,
            st.messages_in,
        ),
        (
            "sockloop_hub_messages_sent_total",
            "Messages queued for connections (a broadcast counts once per recipient).",
            c,
            st.messages_out,
        ),
        (
            "sockloop_hub_dropped_messages_total",
            "Messages refused by drop policies.",
            c,
            st.dropped,
        ),
        (
            "sockloop_hub_errors_total",
            "error events sent to clients.",
            c,
            st.errors,
        ),
        (
            "sockloop_hub_acks_pending",
            "Recipients whose acknowledgement is awaited now.",
            g,
            st.acks_pending as u64,
        ),
    ];
    for (metric, help, kind, v) in rows {
        s.push(metric, help, kind, &l, v as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_groups_samples_and_escapes_labels() {
        let mut s = Samples::default();
        s.push("a_total", "A things.", Kind::Counter, &[("x", "1")], 3.0);
        s.push("b", "B now.", Kind::Gauge, &[], 0.5);
        s.push(
            "a_total",
            "A things.",
            Kind::Counter,
            &[("x", "q\"\\\n")],
            4.0,
        );
        let text = render(&s.into_vec());
        assert_eq!(
            text,
            "# HELP a_total A things.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
             a_total{x=\"q\\\"\\\\\\n\"} 4\n# HELP b B now.\n# TYPE b gauge\nb 0.5\n"
        );
    }

    #[test]
    fn numbers_are_written_as_prometheus_reads_them() {
        assert_eq!(number(12.0), "12");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(1e20), "100000000000000000000");
    }

    #[test]
    fn lifecycle_events_are_counted() {
        let m = Metrics::new();
        let text = m.prometheus();
        assert!(
            text.contains("sockloop_process_restarts_total 0\n"),
            "{text}"
        );
        assert!(text.contains("sockloop_process_exits_total{reason=\"abnormal\"} 0\n"));
    }
}
