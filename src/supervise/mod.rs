//! Supervision: processes with mailboxes, supervisors, links and monitors.
//!
//! A **process** is a dedicated thread running a [`Process`] (or a closure, [`from_fn`])
//! with a bounded mailbox of typed messages, reached through a cloneable `Send + Sync`
//! [`ProcessRef`], by [`Pid`] or by registered name on its [`Node`]. It handles one
//! message at a time, in order. A panic is caught and becomes [`ExitReason::Panic`].
//!
//! **Links** ([`Context::link`]) are bidirectional: an exit other than `Normal` ends the
//! linked processes too, unless they trap exits ([`Context::trap_exit`]) and receive it in
//! [`Process::handle_exit`]. **Monitors** ([`Context::monitor`], [`Node::monitor`]) are
//! one-way and deliver exactly one [`Down`].
//!
//! A **supervisor** ([`SupervisorSpec::start`]) is a process that traps exits and restarts
//! its children by [`Strategy`] and [`Restart`] type within an [`Intensity`]; beyond it, it
//! stops its children and exits with [`ExitReason::IntensityExceeded`], which its own
//! supervisor sees as an abnormal exit. Stopping a thread that will not stop is impossible:
//! see [`ChildSpec`] for the shutdown contract (signal, wait, detach).
//!
//! Every lifecycle step is a [`SystemEvent`] for the hook set with [`Node::set_hook`].
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use sockloop::supervise::{from_fn, ChildSpec, Control, Node, Strategy, SupervisorSpec};
//!
//! let node = Node::new();
//! let worker = || from_fn(|_ctx, cmd: &'static str| match cmd {
//!     "crash" => Err("asked to crash".into()),
//!     _ => Ok(Control::Continue),
//! });
//! let _sup = SupervisorSpec::new(Strategy::OneForOne)
//!     .child(ChildSpec::worker("w", worker).register_as("w"))
//!     .start(&node)
//!     .unwrap();
//! let first = node.whereis("w").unwrap();
//! let down = node.monitor(first);
//! node.send("w", "crash").unwrap();
//! down.recv_timeout(Duration::from_secs(5)).unwrap();
//! // The supervisor registers the fresh instance under the same name.
//! ```

mod call;
mod children;
mod config;
mod context;
mod current;
mod error;
mod event;
mod intensity;
mod mailbox;
mod node;
mod pid;
mod process;
mod reason;
mod registry;
mod runner;
mod spec;
mod supervisor;
mod timer;

pub use call::{CallError, ReplyTo};
pub use children::{ChildCount, ChildInfo};
pub use config::{NodeConfig, SpawnOptions};
pub use context::Context;
pub use error::{RegisterError, SendError, SpawnError, SupervisorError};
pub use event::SystemEvent;
pub use intensity::Intensity;
pub use mailbox::ProcessRef;
pub use node::{Node, Target};
pub use pid::{MonitorRef, Pid};
pub use process::{from_fn, FnProcess, Process};
pub use reason::{BoxError, Control, Down, ExitReason, Handled};
pub use spec::{ChildKind, ChildSpec, Restart, Strategy, SupervisorSpec};
pub use supervisor::{SupervisorMsg, SupervisorRef, DEFAULT_CALL_TIMEOUT};
pub use timer::TimerRef;
