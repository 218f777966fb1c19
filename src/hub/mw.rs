//! Middleware: the onion around handlers (recover, logging, auth-required, validation, rate
//! limit, tracing) and how to write one.
//!
//! Middleware runs in registration order, global first, then the route's own; each gets the
//! [`Ctx`] and a [`Next`] and may short-circuit by returning without calling
//! [`Next::run`].

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ctx::Ctx;
use super::envelope::Envelope;
use super::error::{ErrorCode, HubError};

/// An event handler: any `Fn(&mut Ctx) -> Result<(), HubError>`.
pub trait Handler: Send + Sync + 'static {
    /// Handles one envelope; an `Err` becomes an `error` event answering it.
    ///
    /// # Errors
    /// Whatever the handler decides; the hub sends it to the peer.
    fn call(&self, ctx: &mut Ctx) -> Result<(), HubError>;
}

impl<F> Handler for F
where
    F: Fn(&mut Ctx) -> Result<(), HubError> + Send + Sync + 'static,
{
    fn call(&self, ctx: &mut Ctx) -> Result<(), HubError> {
        self(ctx)
    }
}

/// One layer of the onion. Any `Fn(&mut Ctx, Next<'_>) -> Result<(), HubError>` is one.
pub trait Middleware: Send + Sync + 'static {
    /// Runs this layer; call `next.run(ctx)` to go on, or return to short-circuit.
    ///
    /// # Errors
    /// An `Err` stops the chain and becomes an `error` event.
    fn handle(&self, ctx: &mut Ctx, next: Next<'_>) -> Result<(), HubError>;
}

impl<F> Middleware for F
where
    F: Fn(&mut Ctx, Next<'_>) -> Result<(), HubError> + Send + Sync + 'static,
{
    fn handle(&self, ctx: &mut Ctx, next: Next<'_>) -> Result<(), HubError> {
        self(ctx, next)
    }
}

/// The rest of the chain after the current middleware.
pub struct Next<'a> {
    chain: &'a [Arc<dyn Middleware>],
    end: &'a dyn Fn(&mut Ctx) -> Result<(), HubError>,
}

impl<'a> Next<'a> {
    pub(crate) fn new(
        chain: &'a [Arc<dyn Middleware>],
        end: &'a dyn Fn(&mut Ctx) -> Result<(), HubError>,
    ) -> Self {
        Next { chain, end }
    }

    /// Runs the remaining middleware and then the handler.
    ///
    /// # Errors
    /// The first `Err` of the remaining layers or of the handler.
    pub fn run(self, ctx: &mut Ctx) -> Result<(), HubError> {
        match self.chain.split_first() {
            Some((m, rest)) => m.handle(ctx, Next::new(rest, self.end)),
            None => (self.end)(ctx),
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// Catches a panic in the rest of the chain: logs it and answers `internal`; the connection
/// stays. Without it a panic closes the connection with 1011.
pub fn recover() -> impl Middleware {
    |ctx: &mut Ctx, next: Next<'_>| match catch_unwind(AssertUnwindSafe(|| next.run(ctx))) {
        Ok(r) => r,
        Err(p) => {
            let msg = panic_message(&*p);
            log::error!("hub: handler for {:?} panicked: {msg}", ctx.event());
            Err(HubError::internal("the handler failed"))
        }
    }
}

/// Logs every event at `debug` (connection, event, elapsed) and failures at `warn`.
pub fn logging() -> impl Middleware {
    |ctx: &mut Ctx, next: Next<'_>| {
        let start = Instant::now();
        let r = next.run(ctx);
        let (id, ev, el) = (ctx.conn_id(), ctx.event().to_owned(), start.elapsed());
        match &r {
            Ok(()) => log::debug!("hub: conn={id} event={ev:?} ok in {el:?}"),
            Err(e) => log::warn!("hub: conn={id} event={ev:?} failed in {el:?}: {e}"),
        }
        r
    }
}

/// Refuses with `unauthorized` when the connection has no identity.
pub fn auth_required() -> impl Middleware {
    |ctx: &mut Ctx, next: Next<'_>| {
        if ctx.identity().is_none() && ctx.event() != super::INVALID_EVENT {
            return Err(HubError::new(
                ErrorCode::Unauthorized,
                "this event needs an identity",
            ));
        }
        next.run(ctx)
    }
}

/// Runs `check` over the envelope first; its `Err` is sent instead of running the rest.
pub fn validate(
    check: impl Fn(&Envelope) -> Result<(), HubError> + Send + Sync + 'static,
) -> impl Middleware {
    move |ctx: &mut Ctx, next: Next<'_>| {
        if ctx.event() != super::INVALID_EVENT {
            check(ctx.envelope())?;
        }
        next.run(ctx)
    }
}

/// Calls `hook` with the event name and the time the rest of the chain took.
pub fn trace(hook: impl Fn(&str, Duration) + Send + Sync + 'static) -> impl Middleware {
    move |ctx: &mut Ctx, next: Next<'_>| {
        let start = Instant::now();
        let r = next.run(ctx);
        hook(ctx.event(), start.elapsed());
        r
    }
}

/// Whose budget a [`RateLimit`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Each connection has its own bucket.
    Conn,
    /// Each user (all devices together) has one bucket; connections without an identity
    /// count alone.
    User,
}

/// A token bucket: `burst` events at once, refilled at `burst` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Whose budget it is.
    pub scope: Scope,
    /// Bucket size, and tokens added per `per`.
    pub burst: u32,
    /// The refill period.
    pub per: Duration,
}

impl RateLimit {
    /// `n` events per `per` for each connection.
    pub fn per_conn(n: u32, per: Duration) -> Self {
        RateLimit {
            scope: Scope::Conn,
            burst: n,
            per,
        }
    }

    /// `n` events per `per` for each user, summed over their connections.
    pub fn per_user(n: u32, per: Duration) -> Self {
        RateLimit {
            scope: Scope::User,
            ..Self::per_conn(n, per)
        }
    }
}

/// One token bucket (sans-IO: the caller passes the time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn full(limit: &RateLimit, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(limit.burst),
            last: now,
        }
    }

    fn refill(&mut self, limit: &RateLimit, now: Instant) {
        let per = limit.per.as_secs_f64().max(1e-9);
        let add = now.saturating_duration_since(self.last).as_secs_f64() / per;
        let burst = f64::from(limit.burst);
        self.tokens = (self.tokens + add * burst).min(burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, limit: &RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&mut self, limit: &RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        self.tokens >= f64::from(limit.burst)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Conn(u64),
    User(String),
}

/// Buckets kept before full (idle) ones are pruned.
const PRUNE_AT: usize = 4096;

/// Buckets, and the count at which idle (full) ones are pruned next.
struct Buckets {
    map: HashMap<Key, Bucket>,
    prune_at: usize,
}

impl Buckets {
    /// Drops full buckets once the map has grown past `prune_at`; the next pruning waits
    /// until it doubles again, so pruning costs O(1) amortized per event even when many
    /// buckets stay busy.
    fn prune(&mut self, limit: &RateLimit, now: Instant) {
        if self.map.len() > self.prune_at {
            self.map.retain(|_, v| !v.is_full(limit, now));
            self.prune_at = (self.map.len() * 2).max(PRUNE_AT);
        }
    }
}

/// Refuses with `rate_limited` past `limit`. Buckets of idle connections and users are
/// pruned when more than 4,096 are kept (then whenever their number doubles).
pub fn rate_limit(limit: RateLimit) -> impl Middleware {
    let buckets = Mutex::new(Buckets {
        map: HashMap::new(),
        prune_at: PRUNE_AT,
    });
    move |ctx: &mut Ctx, next: Next<'_>| {
        let key = match (limit.scope, ctx.user()) {
            (Scope::User, Some(u)) => Key::User(u.to_owned()),
            _ => Key::Conn(ctx.conn_id().0),
        };
        let now = Instant::now();
        let allowed = {
            let mut b = buckets.lock().unwrap_or_else(|e| e.into_inner());
            b.prune(&limit, now);
            let bucket = b
                .map
                .entry(key)
                .or_insert_with(|| Bucket::full(&limit, now));
            bucket.take(&limit, now)
        };
        if !allowed {
            return Err(HubError::new(ErrorCode::RateLimited, "too many events"));
        }
        next.run(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let l = RateLimit::per_conn(3, Duration::from_secs(1));
        let t0 = Instant::now();
        let mut b = Bucket::full(&l, t0);
        assert!((0..3).all(|_| b.take(&l, t0)));
        assert!(!b.take(&l, t0));
        let t1 = t0 + Duration::from_millis(340);
        assert!(b.take(&l, t1));
        assert!(!b.take(&l, t1));
        let t2 = t1 + Duration::from_secs(10);
        assert!(b.is_full(&l, t2));
    }
}
