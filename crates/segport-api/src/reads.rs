//! The bounded pool in which the api process runs the engine for reads (profile look-ups and,
//! later, previews): a few at once, each within a deadline, so that a heavy read never stalls
//! the API (docs/limits.md). A read that finds the pool full is refused at once (503); one past
//! its deadline is answered 504, and its work, which cannot be interrupted midway, keeps its
//! slot until it ends, so the pool's bound holds.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ApiError;

/// Engine reads in flight in the api process.
#[derive(Clone)]
pub struct ReadPool {
    permits: Arc<Semaphore>,
    slots: usize,
    deadline: Duration,
}

impl ReadPool {
    pub fn new(slots: usize, deadline: Duration) -> Self {
        let slots = slots.max(1);
        Self { permits: Arc::new(Semaphore::new(slots)), slots, deadline }
    }

    /// Runs `read` (whose engine part goes through [`ReadSlot::blocking`]) in a slot of the pool
    /// within the deadline.
    pub async fn run<T, F>(&self, read: impl FnOnce(ReadSlot) -> F) -> Result<T, ApiError>
    where
        F: Future<Output = Result<T, ApiError>>,
    {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            ApiError::Busy(format!(
                "{} look-ups are running, as many as this server runs at once; retry shortly",
                self.slots
            ))
        })?;
        let slot = ReadSlot { permit: Arc::new(permit) };
        match tokio::time::timeout(self.deadline, read(slot)).await {
            Ok(answer) => answer,
            Err(_) => Err(ApiError::DeadlineExceeded(format!(
                "the look-up took longer than its deadline of {} ms",
                self.deadline.as_millis()
            ))),
        }
    }
}

/// A read's place in the pool, held until its blocking work ends.
pub struct ReadSlot {
    permit: Arc<OwnedSemaphorePermit>,
}

impl ReadSlot {
    /// Runs `work` on a blocking thread; the slot stays taken until it returns, even when the
    /// read was answered 504 meanwhile.
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self.permit.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            work()
        })
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))
    }
}
