//! [`OnceBox`]: a write-once boxed value in one pointer (`OnceLock<Box<T>>` takes two words).

use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// A value boxed on first use and set at most once, in 8 bytes; any thread may read it
/// (`get`) or set it (`get_or_init`) through a shared reference. Dropping it frees the box.
pub(crate) struct OnceBox<T> {
    ptr: AtomicPtr<T>,
    /// Owns a `Box<T>` (drop check, and `Send`/`Sync` only as `T` allows).
    _owns: PhantomData<Box<T>>,
}

impl<T> OnceBox<T> {
    /// An empty box.
    pub(crate) const fn new() -> Self {
        OnceBox {
            ptr: AtomicPtr::new(ptr::null_mut()),
            _owns: PhantomData,
        }
    }

    /// The value, if it was set.
    pub(crate) fn get(&self) -> Option<&T> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from `Box::into_raw` in `get_or_init` and was
        // published with Release (the Acquire load sees the initialized value); it is
        // never replaced and is freed only in `drop`, which `&self` rules out meanwhile.
        unsafe { p.as_ref() }
    }

    /// The value, set to `f()` first if it was not set. When threads race, one value wins
    /// and every caller gets it; the losers' values are dropped.
    pub(crate) fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        if let Some(v) = self.get() {
            return v;
        }
        let new = Box::into_raw(Box::new(f()));
        match self
            .ptr
            .compare_exchange(ptr::null_mut(), new, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: `new` is the box just published, valid as said in `get`.
            Ok(_) => unsafe { &*new },
            Err(winner) => {
                // SAFETY: `new` came from `Box::into_raw` above and was never shared.
                drop(unsafe { Box::from_raw(new) });
                // SAFETY: `winner` is non-null (the exchange failed), published by
                // another caller with Release and seen here with Acquire; valid as in `get`.
                unsafe { &*winner }
            }
        }
    }
}

impl<T> Default for OnceBox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> From<T> for OnceBox<T> {
    /// A box already set to `v`.
    fn from(v: T) -> Self {
        OnceBox {
            ptr: AtomicPtr::new(Box::into_raw(Box::new(v))),
            _owns: PhantomData,
        }
    }
}

impl<T> Drop for OnceBox<T> {
    fn drop(&mut self) {
        let p = *self.ptr.get_mut();
        if !p.is_null() {
            // SAFETY: a non-null pointer came from `Box::into_raw` and is owned by this
            // `OnceBox` alone; `&mut self` means no reference from `get` is alive.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for OnceBox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OnceBox").field(&self.get()).finish()
    }
}

// SAFETY: like `OnceLock<T>`: moving the box to another thread moves the `T` (`T: Send`).
unsafe impl<T: Send> Send for OnceBox<T> {}
// SAFETY: like `OnceLock<T>`: a shared reference lets any thread read the `T` (`T: Sync`)
// and set it, which may move a `T` made on one thread to be dropped on another (`T: Send`).
unsafe impl<T: Send + Sync> Sync for OnceBox<T> {}

#[cfg(test)]
mod tests {
    use super::OnceBox;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    /// Counts live values, so a leak or a double free shows.
    struct Counted(usize, Arc<AtomicUsize>);

    impl Counted {
        fn new(v: usize, live: &Arc<AtomicUsize>) -> Self {
            live.fetch_add(1, Ordering::SeqCst);
            Counted(v, live.clone())
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn size_is_one_pointer() {
        assert_eq!(
            std::mem::size_of::<OnceBox<[u64; 8]>>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn empty_then_set_once() {
        let b: OnceBox<String> = OnceBox::new();
        assert!(b.get().is_none());
        assert_eq!(b.get_or_init(|| "a".into()), "a");
        assert_eq!(b.get_or_init(|| unreachable!()), "a");
        assert_eq!(b.get().map(String::as_str), Some("a"));
        let c = OnceBox::from(7u32);
        assert_eq!(c.get(), Some(&7));
        assert_eq!(*c.get_or_init(|| 8), 7);
    }

    #[test]
    fn drop_frees_the_value() {
        let live = Arc::new(AtomicUsize::new(0));
        {
            let b = OnceBox::new();
            b.get_or_init(|| Counted::new(1, &live));
            assert_eq!(live.load(Ordering::SeqCst), 1);
            let _unset: OnceBox<Counted> = OnceBox::new();
        }
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn racing_threads_agree_on_one_value() {
        const THREADS: usize = 8;
        let live = Arc::new(AtomicUsize::new(0));
        for _ in 0..50 {
            let b = Arc::new(OnceBox::new());
            let start = Arc::new(Barrier::new(THREADS));
            let seen: Vec<usize> = (0..THREADS)
                .map(|i| {
                    let (b, start, live) = (b.clone(), start.clone(), live.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        let v = b.get_or_init(|| Counted::new(i, &live));
                        v.0
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            assert!(seen.iter().all(|&v| v == seen[0]), "{seen:?}");
            assert_eq!(b.get().map(|c| c.0), Some(seen[0]));
            assert_eq!(live.load(Ordering::SeqCst), 1, "only the winner stays");
            drop(b);
            assert_eq!(live.load(Ordering::SeqCst), 0, "the winner is freed");
        }
    }
}
