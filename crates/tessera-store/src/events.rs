//! Group commit for the event log. Token issuance writes one event per request and nothing
//! else, so on the hot path the event insert *is* the write. Appends queue here; one task per
//! store inserts whatever has queued as a single multi-row statement and then acknowledges
//! every caller. A caller still returns only after its event is durable, so nothing is lost
//! when a node dies; under load many events share one round trip and one commit, and an idle
//! server pays only a channel hop.

use crate::{StoreError, StoreResult};
use std::future::Future;
use tessera_core::NewEvent;
use tokio::sync::{mpsc, oneshot};

/// The most events one statement carries (11 binds each, far below both databases' limits).
const MAX_BATCH: usize = 512;
/// Appends waiting beyond this apply back-pressure to their callers.
const QUEUE_CAPACITY: usize = 8192;

/// What a caller learns: a cloneable copy of the store's error (one outcome may be sent to
/// many callers).
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

type Ack = oneshot::Sender<Result<(), Failure>>;

#[derive(Debug, Clone)]
pub(crate) struct EventBatcher {
    queue: mpsc::Sender<(NewEvent, Ack)>,
}

impl EventBatcher {
    /// Starts the flushing task on the current runtime; `flush` inserts one batch.
    pub(crate) fn start<F, Fut>(flush: F) -> Self
    where
        F: Fn(Vec<NewEvent>) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<()>> + Send,
    {
        // One bad event must not fail its neighbours: a failed batch is retried one by one.
        let (queue, mut pending) = mpsc::channel::<(NewEvent, Ack)>(QUEUE_CAPACITY);
        tokio::spawn(async move {
            while let Some(first) = pending.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match pending.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (events, acks): (Vec<NewEvent>, Vec<Ack>) = batch.into_iter().unzip();
                let singles = events.len() > 1;
                match flush(events.clone()).await {
                    Ok(()) => {
                        for ack in acks {
                            // A caller that gave up (its request was cancelled) no longer listens.
                            let _ = ack.send(Ok(()));
                        }
                    }
                    Err(e) if !singles => {
                        if let Some(ack) = acks.into_iter().next() {
                            let _ = ack.send(Err(Failure::from(e)));
                        }
                    }
                    Err(_) => {
                        for (event, ack) in events.into_iter().zip(acks) {
                            let _ = ack.send(flush(vec![event]).await.map_err(Failure::from));
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Appends one event and waits until it is stored.
    pub(crate) async fn append(&self, event: NewEvent) -> StoreResult<()> {
        let (ack, done) = oneshot::channel();
        let stopped = || StoreError::Database("the event writer has stopped".into());
        self.queue.send((event, ack)).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?.map_err(|failure| match failure {
            Failure::Conflict(what) => StoreError::Conflict(what),
            Failure::Other(message) => StoreError::Database(message.into()),
        })
    }
}
