//! The process running on the current thread: deadlock checks for blocking calls, and the
//! switch that keeps the default panic message of quiet process threads off stderr.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Once, Weak};

use super::mailbox::ProcShared;
use super::node::NodeInner;

thread_local! {
    static CURRENT: RefCell<Option<Arc<ProcShared>>> = const { RefCell::new(None) };
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as running the process `me` until dropped.
pub(crate) struct Running(());

impl Running {
    pub(crate) fn enter(me: &Arc<ProcShared>, quiet: bool) -> Running {
        CURRENT.with(|c| *c.borrow_mut() = Some(Arc::clone(me)));
        if quiet {
            install_quiet_hook();
            QUIET.with(|q| q.set(true));
        }
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.borrow_mut().take());
        let _ = QUIET.try_with(|q| q.set(false));
    }
}

fn current() -> Option<Arc<ProcShared>> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

fn same_node(a: &ProcShared, b: &ProcShared) -> bool {
    Weak::ptr_eq(&a.node, &b.node)
}

/// The pid of the process running on this thread, if it belongs to `node`.
pub(crate) fn pid_on(node: *const NodeInner) -> Option<super::Pid> {
    current()
        .filter(|me| std::ptr::eq(me.node.as_ptr(), node))
        .map(|me| me.pid)
}

/// `true` if blocking this thread until `target` answers can never end: the target is
/// this very process, or it is itself blocked waiting for this process (a supervisor
/// starting or stopping the child that calls it, a process calling back its caller).
pub(crate) fn would_deadlock(target: &ProcShared) -> bool {
    let Some(me) = current() else {
        return false;
    };
    if !same_node(&me, target) {
        return false;
    }
    me.pid == target.pid || target.waiting_on.load(Ordering::Acquire) == me.pid.as_u64()
}

/// Runs `f` with this thread's process recorded as blocked on `target` (same node only).
pub(crate) fn blocked_on<T>(target: &ProcShared, f: impl FnOnce() -> T) -> T {
    let me = current().filter(|me| same_node(me, target));
    let prev = me
        .as_ref()
        .map(|me| me.waiting_on.swap(target.pid.as_u64(), Ordering::AcqRel));
    let out = f();
    if let (Some(me), Some(prev)) = (me, prev) {
        me.waiting_on.store(prev, Ordering::Release);
    }
    out
}

/// Installs, once per program, a panic hook that stays silent on quiet process threads
/// and hands every other panic to the hook that was there before.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.try_with(Cell::get).unwrap_or(false) {
                previous(info);
            }
        }));
    });
}
