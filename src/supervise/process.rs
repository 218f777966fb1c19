//! The process behaviour: a trait with defaulted methods and a closure adapter.

use std::marker::PhantomData;

use super::{BoxError, Context, Control, Down, ExitReason, Handled, Pid};

/// The behaviour of a process: state kept across messages, one message at a time, in order.
///
/// Only [`handle`](Process::handle) is required. A panic in any method is caught: the
/// process exits with [`ExitReason::Panic`] and its thread ends cleanly.
///
/// # Examples
///
/// ```
/// use sockloop::supervise::{Context, Control, Handled, Node, Process};
///
/// struct Counter(u64);
///
/// impl Process for Counter {
///     type Msg = u64;
///     fn handle(&mut self, _ctx: &mut Context<u64>, n: u64) -> Handled {
///         self.0 += n;
///         Ok(if self.0 >= 3 { Control::Stop } else { Control::Continue })
///     }
/// }
///
/// let node = Node::new();
/// let counter = node.spawn(Counter(0)).unwrap();
/// counter.send(1).unwrap();
/// counter.send(2).unwrap();
/// ```
pub trait Process: Send + 'static {
    /// The user message type of the mailbox.
    type Msg: Send + 'static;

    /// Runs on the new thread before the first message; `spawn` returns after it.
    ///
    /// # Errors
    ///
    /// An `Err` ends the process with [`ExitReason::Error`] and makes `spawn` fail with
    /// [`SpawnError::Init`](super::SpawnError::Init); `terminate` is not called.
    fn init(&mut self, ctx: &mut Context<Self::Msg>) -> Result<(), BoxError> {
        let _ = ctx;
        Ok(())
    }

    /// Handles one user message.
    ///
    /// # Errors
    ///
    /// An `Err` ends the process with [`ExitReason::Error`] (abnormal).
    fn handle(&mut self, ctx: &mut Context<Self::Msg>, msg: Self::Msg) -> Handled;

    /// An exit signal from a linked process, delivered only while trapping exits
    /// ([`Context::trap_exit`]). The default ignores it.
    ///
    /// # Errors
    ///
    /// As for [`handle`](Process::handle).
    fn handle_exit(
        &mut self,
        ctx: &mut Context<Self::Msg>,
        from: Pid,
        reason: ExitReason,
    ) -> Handled {
        let _ = (ctx, from, reason);
        Ok(Control::Continue)
    }

    /// The DOWN notification of a monitor taken with [`Context::monitor`]. The default
    /// ignores it.
    ///
    /// # Errors
    ///
    /// As for [`handle`](Process::handle).
    fn handle_down(&mut self, ctx: &mut Context<Self::Msg>, down: Down) -> Handled {
        let _ = (ctx, down);
        Ok(Control::Continue)
    }

    /// The receive timeout set with [`Context::set_receive_timeout`] passed without any
    /// message, signal or DOWN (gen_server's `timeout`). It fires again after each further
    /// quiet period of the same length until the timeout is cleared. The default ignores it.
    ///
    /// # Errors
    ///
    /// As for [`handle`](Process::handle).
    fn handle_timeout(&mut self, ctx: &mut Context<Self::Msg>) -> Handled {
        let _ = ctx;
        Ok(Control::Continue)
    }

    /// Runs once after the last message, whatever the reason (also after a panic).
    fn terminate(&mut self, ctx: &mut Context<Self::Msg>, reason: &ExitReason) {
        let _ = (ctx, reason);
    }
}

/// A process made from a closure; see [`from_fn`].
pub struct FnProcess<M, F> {
    f: F,
    _msg: PhantomData<fn(M)>,
}

/// Makes a process from a closure that handles each message.
///
/// # Examples
///
/// ```
/// use sockloop::supervise::{from_fn, Control, Node};
///
/// let node = Node::new();
/// let (tx, rx) = crossbeam_channel::bounded(1);
/// let doubler = node
///     .spawn(from_fn(move |_ctx, n: u32| {
///         tx.send(n * 2)?;
///         Ok(Control::Continue)
///     }))
///     .unwrap();
/// doubler.send(21).unwrap();
/// assert_eq!(rx.recv().unwrap(), 42);
/// ```
pub fn from_fn<M, F>(f: F) -> FnProcess<M, F>
where
    M: Send + 'static,
    F: FnMut(&mut Context<M>, M) -> Handled + Send + 'static,
{
    FnProcess {
        f,
        _msg: PhantomData,
    }
}

impl<M, F> Process for FnProcess<M, F>
where
    M: Send + 'static,
    F: FnMut(&mut Context<M>, M) -> Handled + Send + 'static,
{
    type Msg = M;

    fn handle(&mut self, ctx: &mut Context<M>, msg: M) -> Handled {
        (self.f)(ctx, msg)
    }
}
