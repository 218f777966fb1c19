//! Feature `tracing`: a connection's span and its handler calls' spans, seen by a recording
//! subscriber. It is the process's global subscriber, but it enables nothing outside this
//! test's runtime threads (named `trtest-…`), so other tests stay unobserved.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sockloop::client::{ClientOptions, TcpClient};
use sockloop::handler::on_data;
use sockloop::{Conn, Listen, Runtime};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

use crate::util::WAIT;

const PREFIX: &str = "trtest";

#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    lines: Mutex<Vec<String>>,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={v:?}", f.name());
    }
}

impl Recorder {
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
    }
}

struct Shared(Arc<Recorder>);

impl Subscriber for Shared {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, m: &Metadata<'_>) -> bool {
        let here = std::thread::current();
        m.target() == "sockloop" && here.name().is_some_and(|n| n.starts_with(PREFIX))
    }

    fn new_span(&self, a: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut f = Fields(String::new());
        a.record(&mut f);
        let parent = a.parent().map_or(0, Id::into_u64);
        self.0.push(format!(
            "span {id} {} parent={parent}{}",
            a.metadata().name(),
            f.0
        ));
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, e: &Event<'_>) {
        let mut f = Fields(String::new());
        e.record(&mut f);
        let parent = e.parent().map_or(0, |p| p.into_u64());
        self.0.push(format!("event parent={parent}{}", f.0));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[test]
fn a_connection_and_its_handler_calls_are_spans() {
    let rec = Arc::new(Recorder::default());
    tracing::subscriber::set_global_default(Shared(rec.clone())).expect("the only subscriber");
    let rt = Runtime::builder()
        .name(PREFIX)
        .pollers(1)
        .handler_threads(1)
        .build()
        .unwrap();
    let s = rt
        .serve(Listen::tcp("127.0.0.1:0"))
        .stream(on_data(|c: &Conn, d: &[u8]| {
            let _ = c.send(d);
        }))
        .unwrap();
    let mut c = TcpClient::connect(s.local_addr(), ClientOptions::default()).unwrap();
    assert_eq!(c.once(b"x", WAIT).unwrap(), b"x");
    let local = c.local_addr().unwrap();
    c.close().unwrap();
    assert!(s.shutdown(WAIT));
    let lines = rec.lines.lock().unwrap().clone();
    let text = lines.join("\n");
    let conn = lines
        .iter()
        .find(|l| l.contains("sockloop.conn") && l.contains(&format!("peer={local}")))
        .unwrap_or_else(|| panic!("no connection span in\n{text}"));
    let id: u64 = conn.split(' ').nth(1).unwrap().parse().unwrap();
    for event in ["open", "data", "close"] {
        let want = format!("sockloop.handler parent={id} event={event:?}");
        assert!(
            lines.iter().any(|l| l.contains(&want)),
            "no {want} in\n{text}"
        );
    }
    let closed = format!("event parent={id} message=closed reason=");
    assert!(
        lines.iter().any(|l| l.contains(&closed)),
        "no close event in\n{text}"
    );
    rt.shutdown(WAIT);
}
