//! Cooperative stopping of long computations.
//!
//! CPU work cannot be interrupted from outside, so the text algorithms call
//! [`Cancellation::check`] between chunks of work and give up with
//! [`Interrupted`] once the caller has gone or its deadline has passed.
//! Plain `std` only: the algorithms that use it stay free of async and gRPC.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Why a computation stopped before finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// Whoever wanted the result no longer does (the call was cancelled).
    Cancelled,
    /// The caller's deadline passed.
    DeadlineExceeded,
}

/// A stop signal shared between the party waiting for a result and the
/// thread computing it.
#[derive(Debug, Default)]
pub struct Cancellation {
    /// Set once by the waiting side; never cleared.
    cancelled: AtomicBool,
    /// When the result stops being useful; `None` means no deadline.
    deadline: Option<Instant>,
}

impl Cancellation {
    /// A signal that fires when [`cancel`](Self::cancel) is called or at
    /// `deadline`, whichever comes first.
    pub fn new(deadline: Option<Instant>) -> Self {
        Self {
            cancelled: AtomicBool::new(false),
            deadline,
        }
    }

    /// A signal that never fires, for callers with nothing to cancel
    /// (tests, benchmarks, tools).
    pub fn never() -> Self {
        Self::default()
    }

    /// Asks the computation to stop at its next check.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// `Err` once the computation should stop. Cheap (an atomic load and,
    /// with a deadline, a clock read), so it can run once per document.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(Interrupted::Cancelled);
        }
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(Interrupted::DeadlineExceeded),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn never_fires_until_cancelled() {
        let signal = Cancellation::never();
        assert_eq!(signal.check(), Ok(()));
        signal.cancel();
        assert_eq!(signal.check(), Err(Interrupted::Cancelled));
    }

    #[test]
    fn fires_at_the_deadline() {
        let past = Instant::now()
            .checked_sub(Duration::from_millis(1))
            .unwrap_or_else(Instant::now);
        assert_eq!(
            Cancellation::new(Some(past)).check(),
            Err(Interrupted::DeadlineExceeded)
        );
        let future = Instant::now() + Duration::from_secs(3600);
        assert_eq!(Cancellation::new(Some(future)).check(), Ok(()));
    }

    #[test]
    fn cancellation_wins_over_the_deadline() {
        let signal = Cancellation::new(Some(Instant::now()));
        signal.cancel();
        assert_eq!(signal.check(), Err(Interrupted::Cancelled));
    }
}
