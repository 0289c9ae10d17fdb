//! Engine calls (PKCS#11 token work, inventory queries) run on tokio's blocking threads, never
//! on the async workers that serve every connection; each door has its own budget of calls in
//! flight, so one door's load (or a slow token) cannot take every blocking thread from the others.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// One door's budget of blocking engine calls.
#[derive(Debug, Clone)]
pub struct TokenWork {
    door: &'static str,
    permits: Arc<Semaphore>,
}

/// The call could not run to its end (it panicked, or the runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("{door}: the engine call did not complete: {why}")]
pub struct WorkFailed {
    door: &'static str,
    why: String,
}

impl TokenWork {
    pub fn new(door: &'static str, budget: usize) -> TokenWork {
        TokenWork {
            door,
            permits: Arc::new(Semaphore::new(budget.max(1))),
        }
    }

    /// Run `f` on a blocking thread once the door's budget allows; waits (asynchronously) for a
    /// turn while `budget` calls are in flight.
    pub async fn run<F, R>(&self, f: F) -> Result<R, WorkFailed>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| WorkFailed {
                door: self.door,
                why: e.to_string(),
            })?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|e| WorkFailed {
            door: self.door,
            why: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_the_budget_runs_at_once() {
        let work = TokenWork::new("test", 2);
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut calls = Vec::new();
        for _ in 0..6 {
            let (work, now, peak) = (work.clone(), Arc::clone(&now), Arc::clone(&peak));
            calls.push(tokio::spawn(async move {
                work.run(move || {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
                .await
                .is_ok()
            }));
        }
        for c in calls {
            assert!(matches!(c.await, Ok(true)));
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
