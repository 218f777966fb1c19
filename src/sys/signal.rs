//! Waiting for SIGINT / SIGTERM without a signal handler: block them in every thread, then
//! wait for one synchronously.
//!
//! # Examples
//! ```no_run
//! // First thing in main, before any thread starts, so every thread inherits the mask:
//! sockloop::signal::block_termination();
//! // ... start the runtime and servers ...
//! let sig = sockloop::signal::wait_termination();
//! eprintln!("got signal {sig}, draining");
//! ```

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread (and the threads it starts afterwards).
pub fn block_termination() {
    let set = termination_set();
    // SAFETY: a valid set; the old mask is not needed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits until SIGINT or SIGTERM arrives and returns its number. Call
/// [`block_termination`] first, before starting threads.
pub fn wait_termination() -> i32 {
    let set = termination_set();
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: valid set and out-pointer.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 {
            return sig;
        }
    }
}
