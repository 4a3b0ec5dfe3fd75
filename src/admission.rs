//! Admission: a bounded number of requests in flight, per site and per
//! node. A request over a limit waits a short, bounded time for a place,
//! then is refused (the front end answers `503` with `Retry-After`), so a
//! flood queues nothing without bound and one site cannot take every
//! instance slot from the others.
//!
//! The common case, a free place, is one atomic add to enter and one to
//! leave: no lock (tokio's `Semaphore` takes its waiters' mutex on every
//! release, measurable at a hello's cost per request).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub struct Gate {
    in_flight: AtomicUsize,
    limit: usize,
    /// Requests waiting for a place: a leaving request wakes one only
    /// when there is one.
    waiting: AtomicUsize,
    freed: Notify,
}

/// A place held in a `Gate`, given back on drop.
pub struct Pass<'a>(&'a Gate);

impl Gate {
    pub fn new(limit: usize) -> Gate {
        Gate { in_flight: AtomicUsize::new(0), limit, waiting: AtomicUsize::new(0), freed: Notify::new() }
    }

    /// A place if one is free. A compare-and-swap, not an add undone on
    /// failure: an add would, for a moment, count a place that is not
    /// taken, and turn a concurrent request away from a free one.
    fn try_enter(&self) -> Option<Pass<'_>> {
        self.in_flight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.limit).then_some(n + 1)).ok().map(|_| Pass(self))
    }

    /// A place, waiting at most `wait` for one to free up.
    pub async fn enter(&self, wait: Duration) -> Option<Pass<'_>> {
        if let Some(pass) = self.try_enter() {
            return Some(pass);
        }
        let deadline = Instant::now() + wait;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let pass = async {
            loop {
                let freed = self.freed.notified();
                tokio::pin!(freed);
                // Counted and registered before the second look: a request
                // leaving after it sees this waiter and wakes it; one that
                // left before has freed the place this look finds.
                freed.as_mut().enable();
                if let Some(pass) = self.try_enter() {
                    return Some(pass);
                }
                if Instant::now() >= deadline {
                    return None;
                }
                tokio::time::timeout_at(deadline.into(), freed).await.ok()?;
            }
        }
        .await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        pass
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.0.waiting.load(Ordering::SeqCst) > 0 {
            self.0.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_gate_admits_a_waiter_when_a_place_frees_and_refuses_after_the_wait() {
        let gate = Gate::new(2);
        let (a, b) = (gate.enter(Duration::ZERO).await.unwrap(), gate.enter(Duration::ZERO).await.unwrap());
        assert!(gate.enter(Duration::from_millis(20)).await.is_none(), "a third place in a gate of two");
        let waiter = async { gate.enter(Duration::from_secs(5)).await.is_some() };
        let freer = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(a);
        };
        let (admitted, ()) = tokio::join!(waiter, freer);
        assert!(admitted, "the waiter was not woken by the freed place");
        drop(b);
        assert_eq!(gate.in_flight(), 0, "every pass gives its place back");
    }
}
