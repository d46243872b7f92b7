//! The CPU side of the service: a dedicated rayon pool and the one bridge
//! ([`Workers::run`]) through which every handler sends work to it.
//!
//! Text analytics is CPU-bound; running it on tokio's worker threads would
//! stall every other call and the health checks behind it. The bridge gives
//! each job a [`Cancellation`] that fires at the caller's deadline or when
//! the caller stops waiting (the handler future is dropped), and turns a
//! panic inside the job into INTERNAL for that call alone.
//!
//! The bridge also keeps the pool's load ([`PoolLoad`]: jobs queued and
//! running, exported as metrics) and runs each job inside the caller's
//! tracing span, so whatever a job logs, a panic report included, carries
//! the call's request id.

use std::any::Any;
use std::future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
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
    /// How many jobs wait and run right now; read by the metrics.
    load: PoolLoad,
}

/// The load of the pool, as gauges the metrics registry reads at scrape
/// time. Counted per job submitted through [`Workers::run`]: a job that
/// fans out onto several threads (a large batch) counts once.
#[derive(Debug, Clone, Default)]
pub struct PoolLoad {
    /// Jobs submitted and not yet started: the queue depth.
    pub queued: Gauge,
    /// Jobs started and not yet finished: the busy workers.
    pub running: Gauge,
}

impl Workers {
    /// A pool of `threads` threads named `compute-<n>`.
    pub fn new(threads: usize) -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("compute-{index}"))
            .build()?;
        Ok(Self {
            pool,
            load: PoolLoad::default(),
        })
    }

    /// Number of threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The pool's load gauges.
    pub fn load(&self) -> &PoolLoad {
        &self.load
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
        let span = tracing::Span::current();
        let queued = Counted::enter(&self.load.queued);
        let running = self.load.running.clone();
        self.pool.spawn(move || {
            // Moved in, so a job dropped unrun leaves the queue count too.
            drop(queued);
            let running = Counted::enter(&running);
            // A job that waited in the queue past its deadline, or whose
            // caller left, is not started at all.
            let outcome = span.in_scope(|| match cancellation.check() {
                Err(interrupted) => Ok(Err(interrupted.into())),
                Ok(()) => panic::catch_unwind(AssertUnwindSafe(|| work(&cancellation))),
            });
            // Before the answer, so whoever gets it sees the job counted out.
            drop(running);
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

/// One unit of a gauge for as long as it lives.
struct Counted(Gauge);

impl Counted {
    fn enter(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What may be logged of a panic payload: a literal message (`panic!("..")`,
/// `expect("..")`) is the code's own text. A formatted one is withheld,
/// because it may quote request text (a failed string slice quotes the
/// string), and request text is never logged.
pub fn panic_message(payload: &(dyn Any + Send)) -> &'static str {
    match payload.downcast_ref::<&'static str>() {
        Some(literal) => literal,
        None => "(formatted panic message withheld: it may quote request text)",
    }
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

    #[tokio::test]
    async fn the_load_gauges_follow_queued_and_running_jobs() {
        let workers = workers(1);
        let load = workers.load().clone();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel();
        let first = workers.run(None, move |_| {
            let _ = started_tx.send(());
            let _ = released.recv();
            Ok(())
        });
        let second = workers.run(None, |_| Ok(()));
        let both = async { tokio::join!(first, second) };
        let watch = async {
            started_rx.await.expect("the first job starts");
            // The second was submitted before the first started, and the
            // only thread is busy with the first.
            assert_eq!((load.queued.get(), load.running.get()), (1, 1));
            release.send(()).expect("the first job waits");
        };
        let ((first, second), ()) = tokio::join!(both, watch);
        assert_eq!((first, second), (Ok(()), Ok(())));
        assert_eq!((load.queued.get(), load.running.get()), (0, 0));

        // A panicking job is counted out too.
        let result: Result<(), _> = workers.run(None, |_| panic!("boom")).await;
        assert_eq!(result, Err(ComputeError::Internal));
        assert_eq!((load.queued.get(), load.running.get()), (0, 0));
    }

    #[test]
    fn formatted_panic_messages_are_withheld() {
        let literal = panic::catch_unwind(|| panic!("a literal")).expect_err("panics");
        assert_eq!(panic_message(&*literal), "a literal");
        // A failed slice quotes the string it was slicing.
        let text = std::hint::black_box(String::from("\u{e9} zqxjv"));
        let sliced = panic::catch_unwind(|| text[..1].len()).expect_err("panics");
        assert!(!panic_message(&*sliced).contains("zqxjv"));
        let formatted =
            panic::catch_unwind(|| panic!("quoting {}", text.len())).expect_err("panics");
        assert!(panic_message(&*formatted).contains("withheld"));
    }
}
