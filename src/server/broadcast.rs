//! Fan-out groups: a message framed once, delivered by each poller to its local members.
//!
//! Each poller keeps `group → local members`. [`Broadcaster::send`] frames the message once
//! (and compresses it once), sends one command per poller, and each poller appends the
//! shared bytes to its members' queues, applying their queue bounds and drop policies.

use crate::base::{Delivery, GroupId};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use crate::base::ConnId;
use crate::proto::ws::{encode_shared, OpCode, Scratch, SharedFrames, WsConfig};
use crate::reactor::{Command, PollerShared};
use crate::server::ServerShared;

/// A message framed once, ready to send to many WebSocket connections.
#[derive(Debug, Clone)]
pub struct Frames {
    pub(crate) inner: SharedFrames,
}

impl Frames {
    /// Size of the uncompressed frame in bytes.
    pub fn len(&self) -> usize {
        self.inner.plain.len()
    }

    /// Whether the frame is empty (never: a frame has a header).
    pub fn is_empty(&self) -> bool {
        self.inner.plain.is_empty()
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// Sends framed-once messages to groups. Cloneable, `Send + Sync`; made by
/// [`Server::broadcaster`](crate::Server::broadcaster).
#[derive(Clone)]
pub struct Broadcaster {
    pub(crate) pollers: Arc<[Arc<PollerShared>]>,
    pub(crate) server: Arc<ServerShared>,
}

impl std::fmt::Debug for Broadcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broadcaster({} pollers)", self.pollers.len())
    }
}

/// How long `send` waits for the pollers' counts before reporting what it has.
const REPORT_WAIT: Duration = Duration::from_secs(5);

impl Broadcaster {
    fn ws_config(&self) -> WsConfig {
        self.server
            .ws
            .as_ref()
            .map(|w| w.ws.clone())
            .unwrap_or_default()
    }

    fn frames(&self, op: OpCode, payload: &[u8]) -> Frames {
        let cfg = self.ws_config();
        let compress = cfg.deflate.enabled();
        let inner = SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            encode_shared(op, payload, compress, &cfg, &mut s.tx)
        });
        Frames { inner }
    }

    /// Frames (and compresses, when deflate is on) a text message once.
    pub fn frames_text(&self, text: &str) -> Frames {
        self.frames(OpCode::Text, text.as_bytes())
    }

    /// Frames a binary message once.
    pub fn frames_binary(&self, data: &[u8]) -> Frames {
        self.frames(OpCode::Binary, data)
    }

    /// Sends `frames` to every member of `group` except the connections in `except`, and
    /// waits (up to 5 s) for each poller's counts.
    ///
    /// Called on a poller thread (from an inline handler), `send` never waits — that poller
    /// is busy running the caller, and two pollers waiting on each other would stall both:
    /// the frames go out as with [`send_nowait`](Self::send_nowait) and every poller is
    /// reported in [`Delivery::pending`]. A poller that does not answer within 5 s is
    /// reported there too.
    ///
    /// # Examples
    /// ```no_run
    /// # fn f(server: &sockloop::Server, ws: &sockloop::WsConn) {
    /// use sockloop::GroupId;
    /// ws.join_group(GroupId(7));
    /// let b = server.broadcaster();
    /// let report = b.send(GroupId(7), &b.frames_text("hello room"), &[]);
    /// println!("queued for {} members", report.queued);
    /// # }
    /// ```
    pub fn send(&self, group: GroupId, frames: &Frames, except: &[ConnId]) -> Delivery {
        let n = self.pollers.len();
        if self.pollers.iter().any(|p| p.is_current()) {
            self.dispatch(group, frames, except, None);
            return Delivery {
                pending: n,
                ..Delivery::default()
            };
        }
        let (tx, rx) = crossbeam_channel::bounded(n);
        self.dispatch(group, frames, except, Some(tx));
        let mut total = Delivery::default();
        let mut answered = 0;
        let until = std::time::Instant::now() + REPORT_WAIT;
        while answered < n {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(d) => {
                    total.add(d);
                    answered += 1;
                }
                Err(_) => break,
            }
        }
        total.pending = n - answered;
        total
    }

    /// Sends `frames` to the group without waiting for counts.
    pub fn send_nowait(&self, group: GroupId, frames: &Frames, except: &[ConnId]) {
        self.dispatch(group, frames, except, None);
    }

    fn dispatch(
        &self,
        group: GroupId,
        frames: &Frames,
        except: &[ConnId],
        reply: Option<crossbeam_channel::Sender<Delivery>>,
    ) {
        let except: Arc<[ConnId]> = Arc::from(except);
        for p in self.pollers.iter() {
            p.command(Command::GroupSend {
                group,
                frames: frames.inner.clone(),
                except: except.clone(),
                reply: reply.clone(),
            });
        }
    }
}
