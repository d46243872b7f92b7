//! The CPU side of the service: a dedicated rayon pool and the one bridge
//! ([`Workers::run`]) through which every handler sends work to it.
//!
//! Text analytics is CPU-bound; running it on tokio's worker threads would
//! stall every other call and the health checks behind it. The bridge gives
//! each job a [`Cancellation`] that fires at the caller's deadline or when
//! the caller stops waiting (the handler future is dropped), and turns a
//! panic inside the job into INTERNAL for that call alone.

use std::any::Any;
use std::future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::error;

use crate::cancel::Cancellation;
use crate::error::ComputeError;

/// The pool that runs every computation.
#[derive(Debug)]
pub struct Workers {
    /// Owned, not rayon's global pool, so its size is ours to configure and
    /// nothing else in the process competes for it.
    pool: rayon::ThreadPool,
}

impl Workers {
    /// A pool of `threads` threads named `compute-<n>`.
    pub fn new(threads: usize) -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("compute-{index}"))
            .build()?;
        Ok(Self { pool })
    }

    /// Number of threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `work` on the pool and waits for it without blocking the async
    /// runtime.
    ///
    /// `work` gets a [`Cancellation`] to check between chunks. It fires at
    /// `deadline` and when this future is dropped (tonic drops a handler's
    /// future when the caller cancels), so abandoned work stops early. The
    /// answer is DEADLINE_EXCEEDED as soon as `deadline` passes, even if the
    /// job has not noticed yet; a panic in `work` becomes INTERNAL.
    pub async fn run<T, F>(&self, deadline: Option<Instant>, work: F) -> Result<T, ComputeError>
    where
        F: FnOnce(&Cancellation) -> Result<T, ComputeError> + Send + 'static,
        T: Send + 'static,
    {
        let cancellation = Arc::new(Cancellation::new(deadline));
        let _cancel_on_drop = CancelOnDrop(Arc::clone(&cancellation));
        let (sender, receiver) = oneshot::channel();
        self.pool.spawn(move || {
            // A job that waited in the queue past its deadline, or whose
            // caller left, is not started at all.
            let outcome = match cancellation.check() {
                Err(interrupted) => Ok(Err(interrupted.into())),
                Ok(()) => panic::catch_unwind(AssertUnwindSafe(|| work(&cancellation))),
            };
            // The receiver is gone when the caller stopped waiting; then
            // nobody needs the result.
            let _ = sender.send(outcome);
        });

        let deadline_passed = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => future::pending().await,
            }
        };
        tokio::select! {
            outcome = receiver => match outcome {
                Ok(Ok(result)) => result,
                Ok(Err(panic)) => {
                    error!(panic = panic_message(&*panic), "a computation panicked; answering INTERNAL");
                    Err(ComputeError::Internal)
                }
                // The job was dropped unrun, which only happens if the pool
                // itself is going away.
                Err(_) => Err(ComputeError::Internal),
            },
            () = deadline_passed => Err(ComputeError::DeadlineExceeded),
        }
    }
}

/// Fires the cancellation when the waiting side goes away, whether it got
/// its answer or was dropped mid-wait; after an answer it is harmless.
struct CancelOnDrop(Arc<Cancellation>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The text of a panic payload (`panic!` with a literal or a format).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::cancel::Interrupted;

    fn workers(threads: usize) -> Workers {
        Workers::new(threads).expect("build pool")
    }

    #[tokio::test]
    async fn returns_the_result() {
        let workers = workers(2);
        assert_eq!(workers.threads(), 2);
        assert_eq!(workers.run(None, |_| Ok(6 * 7)).await, Ok(42));
        assert_eq!(
            workers
                .run::<(), _>(None, |_| Err(ComputeError::Cancelled))
                .await,
            Err(ComputeError::Cancelled)
        );
    }

    #[tokio::test]
    async fn runs_off_the_async_threads() {
        let workers = workers(1);
        let name = workers
            .run(None, |_| {
                Ok(std::thread::current().name().map(str::to_owned))
            })
            .await;
        assert_eq!(name, Ok(Some("compute-0".to_owned())));
    }

    #[tokio::test]
    async fn a_panic_becomes_internal_and_the_pool_lives_on() {
        // One thread: if the panic killed it, the next job would never run.
        let workers = workers(1);
        for _ in 0..3 {
            let result: Result<(), _> = workers.run(None, |_| panic!("boom")).await;
            assert_eq!(result, Err(ComputeError::Internal));
            let result: Result<(), _> = workers
                .run(None, |_| {
                    // A panic on another rayon thread of the same job too.
                    rayon::scope(|scope| scope.spawn(|_| panic!("nested boom")));
                    Ok(())
                })
                .await;
            assert_eq!(result, Err(ComputeError::Internal));
            assert_eq!(workers.run(None, |_| Ok("alive")).await, Ok("alive"));
        }
    }

    #[tokio::test]
    async fn answers_at_the_deadline_and_stops_the_job() {
        let workers = workers(1);
        let stopped = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&stopped);
        let started = Instant::now();
        let deadline = started + Duration::from_millis(100);
        let result: Result<(), _> = workers
            .run(Some(deadline), move |cancel| {
                loop {
                    if let Err(interrupted) = cancel.check() {
                        seen.store(true, Ordering::SeqCst);
                        return Err(interrupted.into());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .await;
        assert_eq!(result, Err(ComputeError::DeadlineExceeded));
        assert!(started.elapsed() < Duration::from_secs(5));
        // The pool is free again, so the job did stop.
        assert_eq!(workers.run(None, |_| Ok(())).await, Ok(()));
        assert!(stopped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn dropping_the_caller_cancels_the_job() {
        let workers = workers(1);
        let (started_tx, started_rx) = oneshot::channel();
        let (outcome_tx, outcome_rx) = std::sync::mpsc::channel();
        let call = workers.run(None, move |cancel| {
            let _ = started_tx.send(());
            let outcome = loop {
                if let Err(interrupted) = cancel.check() {
                    break interrupted;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            let _ = outcome_tx.send(outcome);
            Ok(())
        });
        // Drive the call until the job runs, then abandon it.
        tokio::select! {
            _ = call => panic!("the job cannot finish on its own"),
            _ = started_rx => {}
        }
        let outcome =
            tokio::task::spawn_blocking(move || outcome_rx.recv_timeout(Duration::from_secs(5)))
                .await
                .expect("join");
        assert_eq!(outcome, Ok(Interrupted::Cancelled));
    }

    #[tokio::test]
    async fn a_job_queued_past_its_deadline_never_starts() {
        let workers = workers(1);
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let past = Instant::now();
        let result = workers
            .run(Some(past), move |_| {
                flag.store(true, Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert_eq!(result, Err(ComputeError::DeadlineExceeded));
        assert_eq!(workers.run(None, |_| Ok(())).await, Ok(()));
        assert!(!ran.load(Ordering::SeqCst));
    }
}
