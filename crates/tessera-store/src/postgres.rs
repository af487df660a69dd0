//! PostgreSQL through sqlx, for deployments with more than one node. Owns the pool and the
//! retry of transactions that the server aborted to keep them serializable (SQLSTATE 40001,
//! and deadlocks, 40P01), which also keeps the code portable to CockroachDB and YugabyteDB.
//! The SQL itself lives in `sql.rs`.

use crate::migrations::EmbeddedMigration;
use crate::sql::db_err;
use crate::{StoreError, StoreResult};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};
use std::time::Duration;
use time::OffsetDateTime;

const MAX_CONNECTIONS: u32 = 16;

/// A request that cannot get a connection soon fails (and `/readyz` says so) rather than
/// piling up behind a saturated pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A pooled connection idle for longer than this is pinged before it is used again.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(5);

/// The PostgreSQL implementation of [`crate::Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The same pool: PostgreSQL lets writers wait on row locks, not on one database lock.
    writer: PgPool,
    /// Group-committed writes (see `group_commit.rs`).
    events: crate::group_commit::GroupCommit<tessera_core::NewEvent, ()>,
    rotations: crate::group_commit::GroupCommit<crate::sql::PendingRotation, bool>,
    /// None on PostgreSQL (the field exists for the shared constructor).
    _background: Option<std::sync::Arc<crate::sql::Background>>,
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names (one connection is opened now, so
    /// a wrong URL fails here). Does not migrate: call [`crate::Maintenance::migrate`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // sqlx would ping every connection it hands out: a second round trip for every
            // statement. A connection in steady use is known to be alive; one that sat idle
            // (the server may have restarted or a proxy dropped it) is pinged, and replaced if
            // the ping fails.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await
            .map_err(db_err)?;
        Ok(Self::from_pools(pool.clone(), pool))
    }

    const MIGRATIONS: &'static [EmbeddedMigration] = crate::migrations::POSTGRES;

    async fn begin_write_on(writer: &PgPool) -> StoreResult<Transaction<'static, Postgres>> {
        writer.begin().await.map_err(db_err)
    }

    /// Serialization failures and deadlocks abort a transaction that did nothing wrong; the
    /// same transaction run again normally succeeds.
    fn is_retryable(e: &StoreError) -> bool {
        matches!(crate::sql::error_code(e).as_deref(), Some("40001" | "40P01"))
    }

    fn ts(t: OffsetDateTime) -> OffsetDateTime {
        t
    }

    fn get_ts(row: &PgRow, column: &str) -> StoreResult<OffsetDateTime> {
        Self::get(row, column)
    }

    fn get_opt_ts(row: &PgRow, column: &str) -> StoreResult<Option<OffsetDateTime>> {
        Self::get(row, column)
    }
}

crate::sql::impl_store!(PostgresStore, ::sqlx::Postgres);
