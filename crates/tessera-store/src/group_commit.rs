//! Group commit for the writes on the token hot paths: event appends (a `client_credentials`
//! token writes one event and nothing else) and refresh-token rotations. Callers queue their
//! write here; one task per store and kind takes whatever has queued, writes it all in one
//! statement or one transaction, and answers every caller with its own outcome. A caller still
//! returns only after its write is durable, so nothing is lost when a node dies; under load
//! many writes share one round trip and one commit, and an idle server pays only a channel hop.
//!
//! ```text
//!   caller ─┐                      ┌─ flush(batch of ≤ max) ─ Ok(outcomes) ─▶ each caller its own
//!   caller ─┼─▶ queue ─▶ writer ───┤
//!   caller ─┘                      ├─ Err(Item) ─▶ one by one again, so one bad item fails alone
//!                                  └─ Err(Batch) ─▶ every caller of the batch gets the error
//! ```

use crate::{StoreError, StoreResult};
use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use tokio::sync::{mpsc, oneshot};

/// Writes waiting beyond this apply back-pressure to their callers.
const QUEUE_CAPACITY: usize = 8192;

/// How many times the writer lets other tasks run while its batch keeps growing.
const SCHEDULER_TURNS: usize = 4;

/// What a caller learns of a failure: a cloneable copy of the store's error (one failed batch
/// may have to tell several callers).
#[derive(Debug, Clone)]
enum Failure {
    Conflict(&'static str),
    Other(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::Conflict(what),
            other => Self::Other(other.to_string()),
        }
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Conflict(what) => StoreError::Conflict(what),
            Failure::Other(message) => StoreError::Database(message.into()),
        }
    }
}

type Ack<O> = oneshot::Sender<Result<O, Failure>>;

/// Why a batch was not written.
#[derive(Debug)]
pub(crate) enum BatchFailure {
    /// One of the items refused it (a unique constraint, a caller's mistake) and the
    /// transaction rolled back before its commit: written again one by one, only that item
    /// fails.
    Item(StoreError),
    /// Anything else — the database failed, or the commit's fate is unknown because the
    /// connection dropped while committing. Every caller of the batch gets the error. Writing
    /// the items again could repeat writes that did land (a rotation repeated after its lost
    /// acknowledgement looks like a replay and would end a customer's sessions), and a failing
    /// database would be waited on once per item while the queue stands still.
    Batch(StoreError),
}

impl BatchFailure {
    /// A unique-constraint refusal is an item's fault; any other error is the batch's.
    pub(crate) fn of(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => Self::Item(e),
            other => Self::Batch(other),
        }
    }

    fn into_error(self) -> StoreError {
        match self {
            Self::Item(e) | Self::Batch(e) => e,
        }
    }
}

/// The queue in front of one batch writer: items `I` in, one outcome `O` per item out.
#[derive(Debug)]
pub(crate) struct GroupCommit<I, O> {
    queue: mpsc::Sender<(I, Ack<O>)>,
}

impl<I, O> Clone for GroupCommit<I, O> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<I, O> GroupCommit<I, O>
where
    I: Clone + Send + 'static,
    O: Send + 'static,
{
    /// Starts the writer task on the current runtime. `flush` writes one batch of at most
    /// `max_batch` items atomically and returns one outcome per item, in order.
    pub(crate) fn start<F, Fut>(max_batch: usize, flush: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<O>, BatchFailure>> + Send,
    {
        let (queue, mut pending) = mpsc::channel::<(I, Ack<O>)>(QUEUE_CAPACITY);
        tokio::spawn(async move {
            while let Some(first) = pending.recv().await {
                let mut batch = vec![first];
                // A few turns of the scheduler first, so that the requests running right now
                // can queue their writes too: free when the server is idle (nothing else
                // runs), and under load it turns many small commits, each waking the
                // database connection, into a few large ones.
                for _ in 0..SCHEDULER_TURNS {
                    tokio::task::yield_now().await;
                    if drain(&mut pending, &mut batch, max_batch) == 0 || batch.len() == max_batch {
                        break;
                    }
                }
                let (items, acks): (Vec<I>, Vec<Ack<O>>) = batch.into_iter().unzip();
                // Kept for a second try one by one, which only a batch of several can need.
                let singles = (items.len() > 1).then(|| items.clone());
                match (guarded(flush(items)).await, singles) {
                    // An item refused the batch, which rolled back as a whole: write each item
                    // alone, so that only the one at fault fails.
                    (Err(BatchFailure::Item(_)), Some(items)) => {
                        for (item, ack) in items.into_iter().zip(acks) {
                            answer(vec![ack], guarded(flush(vec![item])).await.map_err(BatchFailure::into_error));
                        }
                    }
                    (outcome, _) => answer(acks, outcome.map_err(BatchFailure::into_error)),
                }
            }
        });
        Self { queue }
    }

    /// Queues one item and waits until its batch is written.
    pub(crate) async fn submit(&self, item: I) -> StoreResult<O> {
        let (ack, done) = oneshot::channel();
        let stopped = || StoreError::Database("the batch writer has stopped".into());
        self.queue.send((item, ack)).await.map_err(|_| stopped())?;
        Ok(done.await.map_err(|_| stopped())??)
    }
}

/// Runs one flush. A panic inside it fails its batch — every caller of it gets an error — where
/// it would otherwise end the writer task and leave the store unable to write until a restart.
async fn guarded<O>(flush: impl Future<Output = Result<Vec<O>, BatchFailure>>) -> Result<Vec<O>, BatchFailure> {
    AssertUnwindSafe(flush).catch_unwind().await.unwrap_or_else(|_| {
        tracing::error!("a group-commit flush panicked; its batch failed");
        Err(BatchFailure::Batch(StoreError::Database("the batch writer failed".into())))
    })
}

/// Moves what has queued into `batch`, up to `max_batch` items; how many it moved.
fn drain<T>(pending: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, max_batch: usize) -> usize {
    let before = batch.len();
    while batch.len() < max_batch {
        match pending.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch.len() - before
}

/// Sends each caller its outcome. A caller that gave up (its request was cancelled) no longer
/// listens, which is fine: its write happened or failed all the same.
fn answer<O>(acks: Vec<Ack<O>>, result: StoreResult<Vec<O>>) {
    match result {
        Ok(outcomes) if outcomes.len() == acks.len() => {
            for (ack, outcome) in acks.into_iter().zip(outcomes) {
                let _ = ack.send(Ok(outcome));
            }
        }
        Ok(outcomes) => {
            let failure = Failure::Other(format!("a batch of {} writes returned {} outcomes", acks.len(), outcomes.len()));
            for ack in acks {
                let _ = ack.send(Err(failure.clone()));
            }
        }
        Err(e) => {
            let failure = Failure::from(e);
            for ack in acks {
                let _ = ack.send(Err(failure.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A flush that doubles numbers, refuses 13 (an item's fault), fails on 99 (the batch's),
    /// panics on 1000, and records the batch sizes it saw.
    fn doubler(sizes: Arc<Mutex<Vec<usize>>>) -> GroupCommit<u32, u32> {
        GroupCommit::start(4, move |items: Vec<u32>| {
            let sizes = sizes.clone();
            async move {
                sizes.lock().expect("sizes").push(items.len());
                tokio::task::yield_now().await;
                if items.contains(&13) {
                    return Err(BatchFailure::of(StoreError::Conflict("thirteen")));
                }
                if items.contains(&1000) {
                    panic!("a flush that panics");
                }
                if items.contains(&99) {
                    return Err(BatchFailure::of(StoreError::Database("the connection dropped".into())));
                }
                Ok(items.iter().map(|i| i * 2).collect())
            }
        })
    }

    #[tokio::test]
    async fn concurrent_callers_share_batches_and_each_gets_its_own_outcome() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let writer = doubler(sizes.clone());
        let calls: Vec<_> = (0..20u32)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move { (i, writer.submit(i).await) })
            })
            .collect();
        for call in calls {
            let (i, outcome) = call.await.expect("task");
            match i {
                13 => assert!(matches!(outcome, Err(StoreError::Conflict("thirteen")))),
                _ => assert_eq!(outcome.expect("outcome"), i * 2),
            }
        }
        let sizes = sizes.lock().expect("sizes");
        assert!(sizes.iter().all(|&n| n <= 4), "a batch exceeded the limit: {sizes:?}");
        assert!(sizes.iter().any(|&n| n > 1), "no batch was shared: {sizes:?}");
    }

    #[tokio::test]
    async fn a_failure_of_the_batch_reaches_all_its_callers_and_is_not_written_again() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let writer = doubler(sizes.clone());
        let calls: Vec<_> = [1u32, 99, 2, 3]
            .into_iter()
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move { (i, writer.submit(i).await) })
            })
            .collect();
        let mut failed_with_99 = 0;
        for call in calls {
            let (i, outcome) = call.await.expect("task");
            match outcome {
                Ok(doubled) => assert_eq!(doubled, i * 2),
                Err(StoreError::Database(_)) => failed_with_99 += 1,
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        let sizes = sizes.lock().expect("sizes");
        // However the four were batched, the batch holding 99 was flushed once and failed as a
        // whole: no flush of one item followed it.
        assert!(failed_with_99 >= 1);
        assert_eq!(sizes.iter().sum::<usize>(), 4, "some items were written twice: {sizes:?}");
    }

    #[tokio::test]
    async fn a_panicking_flush_fails_its_batch_and_the_writer_goes_on() {
        let writer = doubler(Arc::new(Mutex::new(Vec::new())));
        assert!(matches!(writer.submit(1000).await, Err(StoreError::Database(_))));
        assert_eq!(writer.submit(4).await.expect("the writer still writes"), 8);
    }
}
